//! Reading /proc/self/mountinfo: is a path a mount point, and of what type.

use std::path::Path;

/// Decodes the octal escapes (`\040` for a space, ...) mountinfo uses in paths.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type of the topmost mount at exactly `path`, if any.
pub fn mount_type(mountinfo: &str, path: &Path) -> Option<String> {
    Some(topmost(mountinfo, path)?.first()?.to_string())
}

/// The source (the name mount(8) shows first) of the topmost mount at exactly `path`.
pub fn mount_source(mountinfo: &str, path: &Path) -> Option<String> {
    Some(unescape(topmost(mountinfo, path)?.get(1)?))
}

/// The fields after the separator (type, source, super options) of the topmost mount at
/// exactly `path`.
fn topmost<'a>(mountinfo: &'a str, path: &Path) -> Option<Vec<&'a str>> {
    let want = path.to_string_lossy();
    let mut found = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 5 || sep + 1 >= fields.len() {
            continue;
        }
        if unescape(fields[4]) == want {
            found = Some(fields[sep + 1..].to_vec());
        }
    }
    found
}

/// The device (`MAJOR:MINOR`) of the topmost mount at exactly `path` now, if any; read from
/// /proc/self/mountinfo only, so a mount whose daemon is gone is never asked.
pub fn current_mount_device(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() > 4 && unescape(fields[4]) == want {
            found = Some(fields[2].to_string());
        }
    }
    found
}

/// The type of the mount at `path` now. One statx says whether anything is mounted there
/// (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8); only then, or when the kernel cannot say, is
/// /proc/self/mountinfo read (a mount's start-up cost on hosts with thousands of mounts).
pub fn current_mount_type(path: &Path) -> Option<String> {
    if is_mount_root(path) == Some(false) {
        return None;
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_type(&info, path)
}

/// Whether `path` (followed if a symlink) is the root of a mount; `None` when statx fails or
/// the kernel does not report the attribute.
fn is_mount_root(path: &Path) -> Option<bool> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    let stx = statx(CWD, path, AtFlags::empty(), StatxFlags::empty()).ok()?;
    let bit = StatxAttributes::MOUNT_ROOT;
    (stx.stx_attributes_mask.contains(bit)).then_some(stx.stx_attributes.contains(bit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_topmost_mount() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    40 30 0:50 / /tmp/a\\040b rw - tmpfs tmpfs rw\n\
                    41 40 0:51 / /tmp/a\\040b rw - fuse.layerfs layerfs rw\n";
        assert_eq!(
            mount_type(info, Path::new("/tmp/a b")).as_deref(),
            Some("fuse.layerfs")
        );
        assert_eq!(
            mount_type(info, Path::new("/proc")).as_deref(),
            Some("proc")
        );
        assert_eq!(mount_type(info, Path::new("/tmp")), None);
    }

    #[test]
    fn mount_roots() {
        // "/" and /proc are mount roots on every Linux system; /proc/self/fd is not.
        assert_eq!(is_mount_root(Path::new("/")), Some(true));
        assert_eq!(is_mount_root(Path::new("/proc")), Some(true));
        assert_eq!(is_mount_root(Path::new("/proc/self/fd")), Some(false));
        assert_eq!(is_mount_root(Path::new("/no/such/path")), None);
    }
}
