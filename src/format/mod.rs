//! Every on-disk form of "this name is deleted" and "this directory hides what is below".
//!
//! One module knows all of them, so the mount, `inspect` and `commit` agree:
//! - kernel whiteout: a character device 0:0 named like the hidden entry;
//! - kernel xattr whiteout (kernel >= 6.7): an empty regular file carrying
//!   `{trusted,user}.overlay.whiteout`, honoured only in a directory marked
//!   `{trusted,user}.overlay.opaque=x` (what kernel 6.18 checks) or carrying the older
//!   `*.overlay.whiteouts` marker;
//! - OCI/AUFS whiteout: an entry `.wh.NAME`, hiding NAME in lower layers only;
//! - opaque directory: `{trusted,user}.overlay.opaque=y`, fuse-overlayfs'
//!   `user.fuseoverlayfs.opaque=y`, or an OCI `.wh..wh..opq` entry.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::{self, RawDirent};

/// Prefix of OCI whiteout names; every name with it is reserved and never shown.
pub const OCI_PREFIX: &[u8] = b".wh.";
/// The OCI opaque-directory marker entry.
pub const OCI_OPAQUE: &[u8] = b".wh..wh..opq";

const OPAQUE_XATTRS: [&[u8]; 3] = [
    b"trusted.overlay.opaque",
    b"user.overlay.opaque",
    b"user.fuseoverlayfs.opaque",
];
const DIR_WHITEOUTS_XATTRS: [&[u8]; 2] = [b"trusted.overlay.whiteouts", b"user.overlay.whiteouts"];
const FILE_WHITEOUT_XATTRS: [&CStr; 2] = [c"trusted.overlay.whiteout", c"user.overlay.whiteout"];

/// True for xattr names that belong to the union machinery and never show in the merged view.
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.fuseoverlayfs.")
}

/// True for the xattr the kernel puts on a renamed directory (`*.overlay.redirect`): its
/// content below lives under another name.
pub fn is_redirect_xattr(name: &[u8]) -> bool {
    name == b"trusted.overlay.redirect" || name == b"user.overlay.redirect"
}

/// What a layer's directory says about itself through its xattrs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirMarks {
    /// Hides every entry of the same directory in lower layers.
    pub opaque: bool,
    /// May contain kernel xattr whiteouts (regular files carrying `*.overlay.whiteout`).
    pub xattr_whiteouts: bool,
}

/// Reads a layer directory's marks with one `flistxattr` (plus a `fgetxattr` only when an
/// overlay name is present).
pub fn dir_marks(dir: BorrowedFd<'_>) -> io::Result<DirMarks> {
    let list = match sys::flistxattr(dir) {
        Ok(l) => l,
        // A filesystem without xattrs simply carries no marks.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(DirMarks::default()),
        Err(e) => return Err(e),
    };
    let mut marks = DirMarks::default();
    for name in sys::split_xattr_list(&list) {
        if OPAQUE_XATTRS.contains(&name) {
            let value = sys::fgetxattr(dir, &sys::cstr(name)?)?;
            match value.as_slice() {
                b"y" => marks.opaque = true,
                b"x" => marks.xattr_whiteouts = true,
                _ => {}
            }
        } else if DIR_WHITEOUTS_XATTRS.contains(&name) {
            marks.xattr_whiteouts = true;
        }
    }
    Ok(marks)
}

/// What one raw directory entry of a layer means for the union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class<'a> {
    /// An ordinary entry, visible unless something above hides it.
    Entry,
    /// A kernel whiteout (device 0:0 or xattr form) hiding this same name below.
    Whiteout,
    /// An OCI `.wh.NAME` hiding NAME (the payload) below this layer.
    OciWhiteout(&'a [u8]),
    /// The OCI `.wh..wh..opq` marker: the directory is opaque.
    OciOpaque,
}

/// Classifies `ent`, an entry of the layer directory `dir` whose marks are `marks`.
/// Costs a syscall only for character devices, entries of unknown type, and regular files
/// in a directory marked as holding xattr whiteouts.
pub fn classify<'a>(
    dir: BorrowedFd<'_>,
    marks: DirMarks,
    ent: &'a RawDirent,
) -> io::Result<Class<'a>> {
    if let Some(rest) = ent.name.strip_prefix(OCI_PREFIX) {
        return Ok(if ent.name.as_ref() == OCI_OPAQUE {
            Class::OciOpaque
        } else {
            Class::OciWhiteout(rest)
        });
    }
    match ent.d_type {
        libc::DT_CHR | libc::DT_UNKNOWN => {
            let st = sys::lstatat(dir, &sys::cstr(&ent.name)?)?;
            let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
            if is_chr && st.st_rdev == 0 {
                return Ok(Class::Whiteout);
            }
            if marks.xattr_whiteouts && st.st_mode & libc::S_IFMT == libc::S_IFREG {
                return xattr_whiteout(dir, &ent.name);
            }
            Ok(Class::Entry)
        }
        libc::DT_REG if marks.xattr_whiteouts => xattr_whiteout(dir, &ent.name),
        _ => Ok(Class::Entry),
    }
}

fn xattr_whiteout<'a>(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Class<'a>> {
    for x in FILE_WHITEOUT_XATTRS {
        match sys::getxattr_at(dir, name, x) {
            Ok(_) => return Ok(Class::Whiteout),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENODATA | libc::ENOTSUP | libc::EPERM)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Class::Entry)
}

/// Which xattr namespace the union's own marks are written in: `trusted.` (the kernel's
/// default, needs CAP_SYS_ADMIN) or `user.` (the kernel's `userxattr` mode, for rootless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkNs {
    Trusted,
    User,
}

impl MarkNs {
    pub(crate) fn opaque(self) -> &'static CStr {
        match self {
            MarkNs::Trusted => c"trusted.overlay.opaque",
            MarkNs::User => c"user.overlay.opaque",
        }
    }

    /// Where a renamed merged directory came from (`*.overlay.redirect`, redirect_dir=on).
    pub(crate) fn redirect(self) -> &'static CStr {
        match self {
            MarkNs::Trusted => c"trusted.overlay.redirect",
            MarkNs::User => c"user.overlay.redirect",
        }
    }

    pub(crate) fn origin(self) -> &'static CStr {
        match self {
            MarkNs::Trusted => c"trusted.overlay.origin",
            MarkNs::User => c"user.overlay.origin",
        }
    }
}

/// Writes a whiteout for `name` in the upper directory `dir`, in the kernel's form: a
/// character device 0:0 (which an unprivileged user may create on this kernel). Never a
/// marker file the kernel would show as a regular file.
pub fn write_whiteout(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    sys::mknodat(dir, name, libc::S_IFCHR, 0)
}

/// Marks the upper directory `name` inside `dir` opaque (`*.overlay.opaque=y`).
pub fn write_opaque(dir: BorrowedFd<'_>, name: &[u8], ns: MarkNs) -> io::Result<()> {
    sys::setxattr_at(dir, name, ns.opaque(), b"y", 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_xattrs() {
        assert!(is_private_xattr(b"trusted.overlay.opaque"));
        assert!(is_private_xattr(b"user.overlay.redirect"));
        assert!(is_private_xattr(b"user.fuseoverlayfs.opaque"));
        assert!(!is_private_xattr(b"user.mime_type"));
        assert!(!is_private_xattr(b"trusted.overlayx"));
        assert!(!is_private_xattr(b"security.capability"));
    }

    #[test]
    fn oci_names_classify_without_syscalls() {
        let dir = std::fs::File::open("/").unwrap();
        use std::os::fd::AsFd;
        let wh = RawDirent {
            name: (*b".wh.foo").into(),
            ino: 1,
            d_type: libc::DT_REG,
        };
        let opq = RawDirent {
            name: OCI_OPAQUE.into(),
            ino: 1,
            d_type: libc::DT_REG,
        };
        let plain = RawDirent {
            name: (*b"foo").into(),
            ino: 1,
            d_type: libc::DT_REG,
        };
        let m = DirMarks::default();
        assert_eq!(
            classify(dir.as_fd(), m, &wh).unwrap(),
            Class::OciWhiteout(b"foo")
        );
        assert_eq!(classify(dir.as_fd(), m, &opq).unwrap(), Class::OciOpaque);
        assert_eq!(classify(dir.as_fd(), m, &plain).unwrap(), Class::Entry);
    }
}
