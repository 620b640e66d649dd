//! What a layer keeps for an overlay stacked on the mount (the kernel's "Nesting overlayfs
//! mounts"): the overlay's own names escaped one level, and the whiteouts such an overlay
//! makes through the mount.
//!
//! - An xattr `trusted.overlay.overlay.X` in a layer shows through the mount as
//!   `trusted.overlay.X`, and `trusted.overlay.X` set through the mount is kept as
//!   `trusted.overlay.overlay.X` (the same for `user.overlay.`): each overlay removes one
//!   escape, so stacks nest to any depth. Escaped names are never the union's own marks.
//! - A nested whiteout: a character device 0:0 made through the mount (`mknod`,
//!   `RENAME_WHITEOUT`; a kernel overlay whose upper is on the mount makes its whiteouts
//!   so) is kept as the kernel's alternative whiteout, escaped: an empty regular file
//!   carrying `*.overlay.overlay.whiteout`, in a directory marked
//!   `*.overlay.overlay.opaque=x` (or `*.overlay.overlay.whiteouts` where the directory
//!   already has another escaped opaque value). The mount shows it as a device 0:0 again;
//!   a kernel overlay of the layer shows it as a regular file with `*.overlay.whiteout` in a
//!   directory marked `*.overlay.opaque=x`, which an overlay stacked on that honours as a
//!   whiteout, so the nested stack reads the same either way. Not so in a directory with
//!   another escaped opaque value (`y`: the nested overlay made it opaque), which gets the
//!   `whiteouts` marker: kernel 6.18's overlay stacked on a kernel overlay of the layer
//!   hides the name at lookup but still lists it (`ls` shows `?????????`), where the same
//!   stack on layerfs lists nothing (docs/SEMANTICS.md; the kernel's side tried by hand). A device 0:0 itself
//!   would be the layer's own whiteout.

use std::borrow::Cow;
use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use super::MarkNs;
use crate::sys::{self, Stat};

/// The prefixes of the overlay's own xattrs (`trusted.overlay.`, and `user.overlay.` of the
/// kernel's `userxattr` mode); layerfs reads both in every mode.
const OWN_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// What an overlay puts after its own prefix to keep a name for the overlay stacked on it.
const XATTR_ESCAPE: &[u8] = b"overlay.";

/// A nested whiteout's mark on an empty regular file.
pub(super) const WHITEOUT_XATTRS: [&CStr; 2] = [
    c"trusted.overlay.overlay.whiteout",
    c"user.overlay.overlay.whiteout",
];
/// A directory's escaped opaque mark; `x` there: it holds nested whiteouts.
pub(super) const OPAQUE_XATTRS: [&[u8]; 2] = [
    b"trusted.overlay.overlay.opaque",
    b"user.overlay.overlay.opaque",
];
/// The older directory marker for whiteout files, escaped.
pub(super) const DIR_WHITEOUTS_XATTRS: [&[u8]; 2] = [
    b"trusted.overlay.overlay.whiteouts",
    b"user.overlay.overlay.whiteouts",
];

/// The own prefix `name` starts with and the rest after it.
fn own_xattr(name: &[u8]) -> Option<(&'static [u8], &[u8])> {
    OWN_XATTR_PREFIXES
        .into_iter()
        .find_map(|p| name.strip_prefix(p).map(|rest| (p, rest)))
}

/// True for xattr names that belong to the union machinery and never show in the merged
/// view: the overlay's own names, unless escaped for a nested overlay
/// (`*.overlay.overlay.*`, which show one level unescaped, see [`xattr_shown`]), and
/// fuse-overlayfs' `user.fuseoverlayfs.*`. The kernel's `ovl_is_private_xattr`.
pub fn is_private_xattr(name: &[u8]) -> bool {
    match own_xattr(name) {
        Some((_, rest)) => !rest.starts_with(XATTR_ESCAPE),
        None => name.starts_with(b"user.fuseoverlayfs."),
    }
}

/// True for every overlay xattr name, escaped for a nested overlay or not (`*.overlay.*`),
/// and fuse-overlayfs' `user.fuseoverlayfs.*`: what the image tools drop from layer tars
/// they read and write. A tar is untrusted and OCI layers carry their whiteouts and opaque
/// directories as `.wh.` entries, so a tar's overlay marks, a nested overlay's included
/// (which a mount would show as devices 0:0), are never kept.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    own_xattr(name).is_some() || name.starts_with(b"user.fuseoverlayfs.")
}

/// How a layer's xattr name shows through the mount: `None` for a private one, an escaped
/// overlay name with one escape removed (`trusted.overlay.overlay.X` shows as
/// `trusted.overlay.X`), any other name as it is.
pub fn xattr_shown(stored: &[u8]) -> Option<Cow<'_, [u8]>> {
    if is_private_xattr(stored) {
        return None;
    }
    Some(match own_xattr(stored) {
        Some((prefix, rest)) => [prefix, &rest[XATTR_ESCAPE.len()..]].concat().into(),
        None => stored.into(),
    })
}

/// Why an xattr name given through the mount has no name in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrRefused {
    /// A name the union keeps for itself (`user.fuseoverlayfs.*`).
    Private,
    /// An overlay prefix with nothing after it (`trusted.overlay.`): EINVAL on the kernel.
    Empty,
}

/// The name a layer stores for `shown`, a name given through the mount (get, set, remove):
/// an overlay name is escaped one level (`trusted.overlay.X` is kept as
/// `trusted.overlay.overlay.X`, as the kernel's overlay keeps it for a nested overlay), any
/// other name is itself. The inverse of [`xattr_shown`].
pub fn xattr_stored(shown: &[u8]) -> Result<Cow<'_, [u8]>, XattrRefused> {
    match own_xattr(shown) {
        Some((_, b"")) => Err(XattrRefused::Empty),
        Some((prefix, rest)) => Ok([prefix, XATTR_ESCAPE, rest].concat().into()),
        None if shown.starts_with(b"user.fuseoverlayfs.") => Err(XattrRefused::Private),
        None => Ok(shown.into()),
    }
}

/// True when `name` in layer directory `dir`, whose `lstat` is `st`, is a nested whiteout:
/// an empty regular file carrying the escaped whiteout mark, in a directory whose marks
/// say it holds such files (`holds`). Costs a syscall only for empty regular files there.
pub fn is_nested_whiteout(
    dir: BorrowedFd<'_>,
    name: &[u8],
    st: &Stat,
    holds: bool,
) -> io::Result<bool> {
    if !holds || st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size != 0 {
        return Ok(false);
    }
    super::has_any_xattr(dir, name, &WHITEOUT_XATTRS)
}

/// `st` of a nested whiteout as the mount shows it: a character device 0:0 with the file's
/// permissions, owner and times.
pub fn show_nested_whiteout(mut st: Stat) -> Stat {
    st.st_mode = libc::S_IFCHR | (st.st_mode & 0o7777);
    st.st_rdev = 0;
    st
}

/// Makes `name` in `dir` a nested whiteout with permissions `mode`: an empty file carrying
/// the escaped whiteout mark. Its directory must be marked ([`mark_holds_nested`]).
pub fn write_nested_whiteout(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    ns: MarkNs,
) -> io::Result<()> {
    drop(sys::create_excl(dir, name, libc::O_WRONLY, mode & 0o7777)?);
    if let Err(e) = sys::setxattr_at(dir, name.to_bytes(), whiteout_xattr(ns), b"y", 0) {
        let _ = sys::unlinkat(dir, name, 0);
        return Err(e);
    }
    Ok(())
}

/// True for the escaped whiteout mark, which a nested whiteout carries as its form, not as
/// an xattr to show (it shows as a device 0:0).
pub fn is_nested_whiteout_xattr(stored: &[u8]) -> bool {
    WHITEOUT_XATTRS.iter().any(|x| x.to_bytes() == stored)
}

/// True for the escaped opaque mark, which says (`x`) that a directory holds nested
/// whiteouts.
pub fn is_nested_opaque_xattr(stored: &[u8]) -> bool {
    OPAQUE_XATTRS.contains(&stored)
}

fn whiteout_xattr(ns: MarkNs) -> &'static CStr {
    match ns {
        MarkNs::Trusted => WHITEOUT_XATTRS[0],
        MarkNs::User => WHITEOUT_XATTRS[1],
    }
}

/// Marks layer directory `dir` as holding nested whiteouts: the escaped opaque mark `x`
/// (what kernel 6.18 checks), or, where the directory has another escaped opaque value (an
/// overlay on the mount set it), the escaped `whiteouts` marker beside it.
pub fn mark_holds_nested(dir: BorrowedFd<'_>, ns: MarkNs) -> io::Result<()> {
    let i = match ns {
        MarkNs::Trusted => 0,
        MarkNs::User => 1,
    };
    let opaque = sys::cstr(OPAQUE_XATTRS[i])?;
    match sys::fgetxattr(dir, &opaque) {
        Ok(v) if v == b"x" => Ok(()),
        Ok(_) => sys::setxattr_at(dir, b"", &sys::cstr(DIR_WHITEOUTS_XATTRS[i])?, b"y", 0),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
            sys::setxattr_at(dir, b"", &opaque, b"x", 0)
        }
        Err(e) => Err(e),
    }
}
