//! The override_stat xattr: the owner and mode a file is meant to have, kept beside the
//! real ones where those cannot be set (containers/storage's `force_mask`: a shared or
//! rootless store writes every file with a fixed mode and the store owner's ids).
//!
//! Its value is `UID:GID:MODE[:TYPE]`, ids in decimal and the permission bits in octal
//! (containers/storage writes `0755`, fuse-overlayfs `755`; a fourth field naming the file
//! type is ignored). Every name either writer uses is read, the privileged one first:
//! `security.containers.override_stat`, `security.fuseoverlayfs.override_stat`,
//! `user.containers.override_stat`, `user.fuseoverlayfs.override_stat`. layerfs writes the
//! containers/storage names (`user.containers.override_stat` with `xattr_permissions=2`,
//! `security.containers.override_stat` with `xattr_permissions=1`), which both
//! containers/storage and fuse-overlayfs read back.

use std::ffi::CStr;

/// Every name an override is read from, most trusted first.
pub const OVERRIDE_XATTRS: [&CStr; 4] = [
    c"security.containers.override_stat",
    c"security.fuseoverlayfs.override_stat",
    c"user.containers.override_stat",
    c"user.fuseoverlayfs.override_stat",
];

/// Which override xattr a mount writes (`xattr_permissions=1|2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideNs {
    /// `security.containers.override_stat` (`xattr_permissions=1`): only a privileged
    /// daemon may set it, so a user of the files cannot forge it.
    Privileged,
    /// `user.containers.override_stat` (`xattr_permissions=2`): what containers/storage
    /// writes with `force_mask` and reads back.
    User,
}

impl OverrideNs {
    /// The name this mount writes.
    pub fn name(self) -> &'static CStr {
        match self {
            OverrideNs::Privileged => OVERRIDE_XATTRS[0],
            OverrideNs::User => OVERRIDE_XATTRS[2],
        }
    }
}

/// True for the override xattrs: the mount's own bookkeeping, never shown or set through
/// it when overrides are on.
pub fn is_override_xattr(name: &[u8]) -> bool {
    OVERRIDE_XATTRS.iter().any(|x| x.to_bytes() == name)
}

/// An owner and permission bits (`0o7777`) read from or written to an override xattr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Override {
    /// Parses `UID:GID:MODE[:TYPE]`; `None` for anything else (layers are untrusted).
    pub fn parse(v: &[u8]) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?;
        let s = s.trim_end_matches('\0');
        let mut f = s.split(':');
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let mode = u32::from_str_radix(f.next()?, 8).ok()?;
        (mode <= 0o7777).then_some(Override { uid, gid, mode })
    }

    /// The value containers/storage writes: `UID:GID:0MODE`.
    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{}:0{:o}", self.uid, self.gid, self.mode & 0o7777).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_writers_forms_parse() {
        let o = Override {
            uid: 5,
            gid: 6,
            mode: 0o4755,
        };
        assert_eq!(Override::parse(b"5:6:04755"), Some(o));
        assert_eq!(Override::parse(b"5:6:4755"), Some(o));
        assert_eq!(Override::parse(b"5:6:4755:file"), Some(o));
        assert_eq!(Override::parse(&o.encode()), Some(o));
        assert_eq!(o.encode(), b"5:6:04755");
        for bad in [&b""[..], b"5:6", b"a:6:755", b"5:6:9", b"5:6:17777"] {
            assert_eq!(Override::parse(bad), None, "{bad:?}");
        }
    }
}
