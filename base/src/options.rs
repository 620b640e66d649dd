//! Mount options in the overlayfs / fuse-overlayfs syntax (`-o lowerdir=A:B,upperdir=U,...`).

use std::path::PathBuf;
use std::time::Duration;

use crate::format::OverrideNs;
use crate::idmap::{IdMap, Ids};

/// The generic mount flags of mount(8), honoured as the kernel's flags of the mount (later
/// options win: `ro,rw` is read-write). As root, set-uid programs and device nodes work by
/// default, as on kernel overlayfs; `nosuid` / `nodev` turn them off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub nodiratime: bool,
    /// `strictatime` (every access updates atime) instead of the default `relatime`.
    pub strictatime: bool,
    pub sync: bool,
    pub dirsync: bool,
}

impl MountFlags {
    /// Applies `name` if it is a generic flag; false if it is not one.
    fn set(&mut self, name: &str) -> bool {
        let (field, on) = match name {
            "ro" => (&mut self.read_only, true),
            "rw" => (&mut self.read_only, false),
            "nosuid" => (&mut self.nosuid, true),
            "suid" => (&mut self.nosuid, false),
            "nodev" => (&mut self.nodev, true),
            "dev" => (&mut self.nodev, false),
            "noexec" => (&mut self.noexec, true),
            "exec" => (&mut self.noexec, false),
            "noatime" => (&mut self.noatime, true),
            "atime" => (&mut self.noatime, false),
            "nodiratime" => (&mut self.nodiratime, true),
            "diratime" => (&mut self.nodiratime, false),
            "strictatime" | "norelatime" => (&mut self.strictatime, true),
            "nostrictatime" | "relatime" => (&mut self.strictatime, false),
            "sync" => (&mut self.sync, true),
            "async" => (&mut self.sync, false),
            "dirsync" => (&mut self.dirsync, true),
            _ => return false,
        };
        *field = on;
        true
    }

    /// The kernel's `MS_*` bits for these flags.
    pub fn ms_flags(&self) -> libc::c_ulong {
        [
            (self.read_only, libc::MS_RDONLY),
            (self.nosuid, libc::MS_NOSUID),
            (self.nodev, libc::MS_NODEV),
            (self.noexec, libc::MS_NOEXEC),
            (self.noatime, libc::MS_NOATIME),
            (self.nodiratime, libc::MS_NODIRATIME),
            (self.strictatime, libc::MS_STRICTATIME),
            (self.sync, libc::MS_SYNCHRONOUS),
            (self.dirsync, libc::MS_DIRSYNC),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit)
    }
}

/// Options mount(8), mount.fuse3, fstab and systemd pass that concern them, not the
/// filesystem: accepted and ignored.
fn is_mount_tool_option(key: &str) -> bool {
    matches!(
        key,
        "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "nofail"
            | "_netdev"
            | "comment"
            | "loud"
            | "silent"
            | "mand"
            | "nomand"
            | "iversion"
            | "noiversion"
            | "lazytime"
            | "nolazytime"
            | "subtype"
    ) || key.starts_with("x-")
}

/// Everything `-o` can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Lower directories, top first, unescaped, not yet resolved.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// No fsync of copied-up data or on request (podman's `volatile`, fuse-overlayfs'
    /// `fsync=0`).
    pub volatile: bool,
    /// POSIX ACLs enforced and kept (off with `noacl`, as fuse-overlayfs).
    pub acl: bool,
    /// `timeout=SECONDS`: how long the kernel caches entries and attributes and the lower
    /// indexes live, so that changes made directly in the lowers show within that time.
    /// `None`: the lowers are immutable (24 h caches, indexes built once).
    pub timeout: Option<Duration>,
    /// `xattr_permissions=1|2`: owners and modes a caller sets are kept in an override_stat
    /// xattr, not on the file (containers/storage's `force_mask`).
    pub xattr_permissions: Option<OverrideNs>,
    /// Renaming a directory with lower content writes a redirect (`redirect_dir=on`, the
    /// default); off, it is EXDEV as on the kernel with `redirect_dir=off|follow`.
    pub redirect_dir: bool,
    /// xattrs readable and settable through the mount (off: fuse-overlayfs' `noxattrs=1`).
    pub xattrs: bool,
    /// A change of metadata copies metadata only (`metacopy=on`, as the kernel).
    pub metacopy: bool,
    /// Marks in `user.overlay.*` instead of `trusted.overlay.*` (kernel's `userxattr`).
    pub userxattr: bool,
    /// `uidmapping=`, `gidmapping=` and the squash options.
    pub ids: Ids,
    /// `ro`, `nosuid`, `nodev`, `noexec`, `noatime`, ...
    pub flags: MountFlags,
    /// `verify`: lower files checked against their layers' hash lists (`verity`).
    pub verify: bool,
    /// `supervise`: the connection kept by a supervisor process that starts a new daemon
    /// on it when the serving one dies or is restarted (`cmd/supervise.rs`).
    pub supervise: bool,
    /// `static_nlink`: every directory shows a link count of 1 (fuse-overlayfs).
    pub static_nlink: bool,
    /// `ino32_t`: inode numbers of at most 32 bits (for 32-bit programs).
    pub ino32: bool,
    /// The transport: FUSE-over-io_uring where the kernel offers it (kernel 6.14+,
    /// `enable_uring` on), `/dev/fuse` reads otherwise (`io_uring=auto`, the default);
    /// `io_uring` insists (a warning when it falls back), `noio_uring` does without.
    pub io_uring: IoUring,
    /// `lower_passthrough`: lower files opened read-only on a writable mount are passed
    /// through (root), so every mount of a layer shares its page cache; an open made before
    /// a copy-up then keeps reading the lower file (docs/SEMANTICS.md).
    pub lower_passthrough: bool,
    /// `lower_direct_io=SIZE|off`: where the kernel does not pass files through (rootless),
    /// lower files of at least SIZE bytes (`K`, `M`, `G` suffixes) opened read-only on a
    /// writable mount are read with direct I/O, so the layer's own page cache is their only
    /// copy (docs/PERFORMANCE.md, "Rootless page cache"). `None` (`off`): FUSE's page cache.
    pub lower_direct_io: Option<u64>,
    /// `fsname=`: the mount's source as /proc/self/mountinfo shows it.
    pub fsname: Option<String>,
    /// Unknown options: accepted with a warning.
    pub ignored: Vec<String>,
    /// Known options layerfs does not honour (or honours differently): the option and what
    /// the mount does instead, each warned about in one line.
    pub not_honoured: Vec<(String, &'static str)>,
}

/// `lower_direct_io`'s default: lower files from this size on (every one) are read with
/// direct I/O on rootless writable mounts. Five rootless containers reading a 287 MiB base
/// hold 317 MiB of page cache so (the kernel's overlay 272), 673 with 64K, 1,090 with 1M,
/// 1,653 without; warm reads pay a round trip each (docs/PERFORMANCE.md, "Rootless page
/// cache").
pub const DEFAULT_LOWER_DIRECT_IO: u64 = 0;

/// A size in bytes with an optional `K`, `M` or `G` suffix (powers of 1024).
fn parse_size(v: &str) -> Option<u64> {
    let (digits, shift) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 10),
        (i, 'M' | 'm') => (&v[..i], 20),
        (i, 'G' | 'g') => (&v[..i], 30),
        _ => (v, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Which transport a mount asks for (`io_uring[=on|auto|off]`, `noio_uring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoUring {
    /// FUSE-over-io_uring when the kernel offers it, `/dev/fuse` otherwise (one info line).
    #[default]
    Auto,
    /// FUSE-over-io_uring asked for: a warning when the kernel does not offer it.
    On,
    /// `/dev/fuse` reads only.
    Off,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            lowers: Vec::new(),
            upper: None,
            work: None,
            volatile: false,
            acl: true,
            timeout: None,
            xattr_permissions: None,
            redirect_dir: true,
            xattrs: true,
            metacopy: false,
            userxattr: false,
            ids: Ids::default(),
            flags: MountFlags::default(),
            verify: false,
            supervise: false,
            static_nlink: false,
            ino32: false,
            io_uring: IoUring::Auto,
            lower_passthrough: false,
            lower_direct_io: Some(DEFAULT_LOWER_DIRECT_IO),
            fsname: None,
            ignored: Vec::new(),
            not_honoured: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("no lowerdir= given (expected -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W])")]
    NoLower,
    #[error("lowerdir= has an empty layer path in {0:?}")]
    EmptyLayer(String),
    #[error("upperdir= needs workdir= too (and workdir= needs upperdir=)")]
    UpperWithoutWork,
    #[error("option {0:?} needs a value")]
    MissingValue(String),
    #[error("{0}")]
    Value(String),
    #[error("option {0:?} ends with a lone backslash")]
    TrailingEscape(String),
}

/// The error for option `key` given the value `v`, which should be `want`.
fn bad(key: &str, v: &str, want: &str) -> OptionError {
    OptionError::Value(format!("{key}={v}: expected {want}"))
}

/// Splits on `sep` where it is not escaped by a backslash; keeps escapes for a later pass.
fn split_unescaped(s: &str, sep: char) -> Result<Vec<String>, OptionError> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let next = chars
                .next()
                .ok_or_else(|| OptionError::TrailingEscape(s.to_string()))?;
            let cur = out.last_mut().expect("never empty");
            cur.push('\\');
            cur.push(next);
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("never empty").push(c);
        }
    }
    Ok(out)
}

/// Removes escapes: `\X` becomes `X` (so `\:` `\,` `\\` give `:` `,` `\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl MountOptions {
    /// Parses every `-o` argument, in order (later values win, as with mount(8)).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, OptionError> {
        Self::parse_inner(args, true)
    }

    /// Parses a stack for the layer tools, which only read it: an `upperdir` needs no
    /// `workdir` there.
    pub fn parse_layers<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, OptionError> {
        Self::parse_inner(args, false)
    }

    fn parse_inner<S: AsRef<str>>(
        args: &[S],
        need_work: bool,
    ) -> Result<MountOptions, OptionError> {
        let mut o = MountOptions::default();
        for arg in args {
            for item in split_unescaped(arg.as_ref(), ',')? {
                if item.is_empty() {
                    continue; // podman writes `work,,volatile`
                }
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item.clone(), None),
                };
                let need =
                    |v: Option<String>| v.ok_or_else(|| OptionError::MissingValue(key.clone()));
                let num = |v: Option<String>| -> Result<u32, OptionError> {
                    let v = need(v)?;
                    v.parse()
                        .map_err(|_| OptionError::Value(format!("{key}={v}: not a number")))
                };
                if value.is_none() && o.flags.set(&key) {
                    continue;
                }
                if is_mount_tool_option(&key) {
                    continue;
                }
                match key.as_str() {
                    "lowerdir" => {
                        let v = need(value)?;
                        let mut lowers = Vec::new();
                        // `::` separates data-only lowers in newer kernels; treat as ':'.
                        for p in split_unescaped(&v, ':')? {
                            if p.is_empty() {
                                if v.contains("::") {
                                    continue;
                                }
                                return Err(OptionError::EmptyLayer(v.clone()));
                            }
                            lowers.push(PathBuf::from(unescape(&p)));
                        }
                        o.lowers = lowers;
                    }
                    "upperdir" => o.upper = Some(PathBuf::from(unescape(&need(value)?))),
                    "workdir" => o.work = Some(PathBuf::from(unescape(&need(value)?))),
                    "volatile" => o.volatile = true,
                    "verify" => o.verify = true,
                    "supervise" => o.supervise = true,
                    "fsname" => o.fsname = Some(unescape(&need(value)?)),
                    "userxattr" => o.userxattr = true,
                    "uidmapping" => {
                        o.ids.uid_map =
                            Some(IdMap::parse(&need(value)?).map_err(OptionError::Value)?)
                    }
                    "gidmapping" => {
                        o.ids.gid_map =
                            Some(IdMap::parse(&need(value)?).map_err(OptionError::Value)?)
                    }
                    "squash_to_uid" => o.ids.squash_uid = Some(num(value)?),
                    "squash_to_gid" => o.ids.squash_gid = Some(num(value)?),
                    "squash_to_root" => {
                        o.ids.squash_uid = Some(0);
                        o.ids.squash_gid = Some(0);
                    }
                    "fsync" => match value.as_deref() {
                        Some("0") => o.volatile = true,
                        Some("1") | None => {}
                        Some(v) => return Err(bad(&key, v, "0 or 1")),
                    },
                    "noacl" => o.acl = false,
                    "acl" => o.acl = true,
                    "timeout" => {
                        let v = need(value)?;
                        let secs: f64 = v
                            .parse()
                            .ok()
                            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                            .ok_or_else(|| bad(&key, &v, "a number of seconds"))?;
                        o.timeout = Some(Duration::from_secs_f64(secs.min(1e9)));
                    }
                    "xattr_permissions" => {
                        o.xattr_permissions = match need(value)?.as_str() {
                            "0" => None,
                            "1" => Some(OverrideNs::Privileged),
                            "2" => Some(OverrideNs::User),
                            v => return Err(bad(&key, v, "0, 1 or 2")),
                        }
                    }
                    // fuse-overlayfs': every directory shows a link count of 1.
                    "static_nlink" => o.static_nlink = true,
                    "xino" => match value.as_deref() {
                        Some("auto" | "on") => {}
                        Some("off") => o.not_honoured.push((
                            item.clone(),
                            "inode numbers stay unique over the layers (as xino=on)",
                        )),
                        v => return Err(bad(&key, v.unwrap_or(""), "auto, on or off")),
                    },
                    "metacopy" => match value.as_deref() {
                        Some("on") => o.metacopy = true,
                        Some("off") => o.metacopy = false,
                        v => return Err(bad(&key, v.unwrap_or(""), "on or off")),
                    },
                    // As the kernel: `on` writes redirects; `follow` and `off` write none
                    // (renaming a lower directory is EXDEV) and follow those found.
                    "redirect_dir" => match value.as_deref() {
                        Some("on") => o.redirect_dir = true,
                        Some("follow" | "off") => o.redirect_dir = false,
                        // Not following the redirects the layers hold would show renamed
                        // directories without their lower content: refused (as
                        // fuse-overlayfs refuses it), not mounted differently.
                        v => {
                            return Err(bad(
                                &key,
                                v.unwrap_or(""),
                                "on, follow or off (nofollow is not supported)",
                            ))
                        }
                    },
                    "index" | "nfs_export" => match value.as_deref() {
                        Some("off") => {}
                        _ => o
                            .not_honoured
                            .push((item.clone(), "no index directory is kept")),
                    },
                    "ino32_t" => o.ino32 = true,
                    "io_uring" => {
                        o.io_uring = match value.as_deref() {
                            None | Some("on") => IoUring::On,
                            Some("auto") => IoUring::Auto,
                            Some("off") => IoUring::Off,
                            Some(v) => return Err(bad(&key, v, "on, auto or off")),
                        }
                    }
                    "noio_uring" => o.io_uring = IoUring::Off,
                    "lower_passthrough" => o.lower_passthrough = true,
                    "lower_direct_io" => {
                        o.lower_direct_io = match need(value)?.as_str() {
                            "off" => None,
                            v => Some(parse_size(v).ok_or_else(|| bad(&key, v, "a size or off"))?),
                        }
                    }
                    "context" | "fscontext" | "defcontext" | "rootcontext" => o
                        .not_honoured
                        .push((item.clone(), "no SELinux label is set on the mount")),
                    "noxattrs" => match value.as_deref() {
                        Some("0") => o.xattrs = true,
                        Some("1") | None => o.xattrs = false,
                        Some(v) => return Err(bad(&key, v, "0 or 1")),
                    },
                    // Daemon and kernel-connection knobs of fuse-overlayfs and FUSE: they do
                    // not change what the mount shows (layerfs always allows other users as
                    // root, checks permissions in the kernel, and is multi-threaded).
                    "default_permissions"
                    | "allow_other"
                    | "allow_root"
                    | "auto_unmount"
                    | "threaded"
                    | "plugins"
                    | "fast_ino"
                    | "writeback" => {}
                    _ => o.ignored.push(item.clone()),
                }
            }
        }
        if o.lowers.is_empty() {
            return Err(OptionError::NoLower);
        }
        if need_work && o.upper.is_some() != o.work.is_some() {
            return Err(OptionError::UpperWithoutWork);
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_read_write_form() {
        let o = MountOptions::parse(&[
            "lowerdir=l/A:l/B,upperdir=/s/x/diff,workdir=/s/x/work,,volatile",
        ])
        .unwrap();
        assert_eq!(o.lowers, vec![PathBuf::from("l/A"), PathBuf::from("l/B")]);
        assert_eq!(o.upper, Some(PathBuf::from("/s/x/diff")));
        assert_eq!(o.work, Some(PathBuf::from("/s/x/work")));
        assert!(o.volatile);
        assert!(o.ignored.is_empty());
    }

    #[test]
    fn escapes() {
        let o = MountOptions::parse(&[r"lowerdir=/a\:b:/c\,d:/e\\f"]).unwrap();
        assert_eq!(
            o.lowers,
            vec![
                PathBuf::from("/a:b"),
                PathBuf::from("/c,d"),
                PathBuf::from(r"/e\f")
            ]
        );
    }

    #[test]
    fn several_dash_o_and_mappings() {
        let o = MountOptions::parse(&[
            "lowerdir=/a",
            "uidmapping=:0:1000:1:1:100000:65536,gidmapping=0:1000:1",
        ])
        .unwrap();
        let m = o.ids.uid_map.unwrap();
        assert_eq!(m.show(0), 1000);
        assert_eq!(m.show(1), 100_000);
        assert_eq!(m.show(6), 100_005);
        assert_eq!(m.show(70_000), crate::idmap::OVERFLOW_ID);
        assert_eq!(o.ids.gid_map.unwrap().store(1000), 0);
    }

    #[test]
    fn errors() {
        assert_eq!(
            MountOptions::parse(&["upperdir=/u"]),
            Err(OptionError::NoLower)
        );
        assert_eq!(
            MountOptions::parse(&["lowerdir=/a,upperdir=/u"]),
            Err(OptionError::UpperWithoutWork)
        );
        assert!(matches!(
            MountOptions::parse(&["lowerdir=/a:"]),
            Err(OptionError::EmptyLayer(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["lowerdir"]),
            Err(OptionError::MissingValue(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["lowerdir=/a,uidmapping=1:2"]),
            Err(OptionError::Value(_))
        ));
        assert!(matches!(
            MountOptions::parse(&[r"lowerdir=/a\"]),
            Err(OptionError::TrailingEscape(_))
        ));
    }

    #[test]
    fn generic_flags_later_ones_win_and_mount_tool_options_are_ignored() {
        let o = MountOptions::parse(&[
            "rw,lowerdir=/a,nosuid,nodev,noexec,ro,noatime,nofail,_netdev,defaults,user,auto",
            "x-systemd.automount,x-systemd.requires=foo.mount,comment=x,dev,exec,rw,dirsync",
        ])
        .unwrap();
        assert!(o.ignored.is_empty(), "{:?}", o.ignored);
        assert_eq!(
            o.flags,
            MountFlags {
                nosuid: true,
                noatime: true,
                dirsync: true,
                ..MountFlags::default()
            }
        );
        assert_eq!(
            o.flags.ms_flags(),
            libc::MS_NOSUID | libc::MS_NOATIME | libc::MS_DIRSYNC
        );
        let o = MountOptions::parse(&["lowerdir=/a,ro,relatime,strictatime"]).unwrap();
        assert_eq!(o.flags.ms_flags(), libc::MS_RDONLY | libc::MS_STRICTATIME);
    }

    #[test]
    fn fuse_overlayfs_and_containers_storage_options() {
        let o = MountOptions::parse(&[
            "lowerdir=/a,fsync=0,noacl,timeout=2.5,xattr_permissions=2,static_nlink,xino=auto",
        ])
        .unwrap();
        assert!(o.volatile && !o.acl);
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(o.xattr_permissions, Some(OverrideNs::User));
        assert!(o.ignored.is_empty() && o.not_honoured.is_empty(), "{o:?}");
        let o = MountOptions::parse(&["lowerdir=/a,fsync=1,xattr_permissions=1"]).unwrap();
        assert!(!o.volatile && o.acl && o.timeout.is_none());
        assert_eq!(o.xattr_permissions, Some(OverrideNs::Privileged));
        for bad in [
            "fsync=2",
            "timeout=soon",
            "timeout=-1",
            "xattr_permissions=3",
            "xino=x",
        ] {
            let r = MountOptions::parse(&[format!("lowerdir=/a,{bad}")]);
            assert!(matches!(r, Err(OptionError::Value(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn options_not_honoured_are_named_with_what_happens_instead() {
        let o = MountOptions::parse(&[
            "lowerdir=/a,metacopy=on,ino32_t,static_nlink,xino=off,redirect_dir=off,index=on,context=x,noxattrs=1",
        ])
        .unwrap();
        let named: Vec<&str> = o.not_honoured.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(named, ["xino=off", "index=on", "context=x"]);
        assert!(o.ignored.is_empty() && !o.xattrs && !o.redirect_dir);
        assert!(o.ino32 && o.static_nlink);
        let r = MountOptions::parse(&["lowerdir=/a,redirect_dir=nofollow".to_string()]);
        assert!(matches!(r, Err(OptionError::Value(_))), "{r:?}");
    }

    #[test]
    fn wire_options_are_named_options() {
        let o = MountOptions::parse(&["lowerdir=/a,io_uring,lower_passthrough"]).unwrap();
        assert!(o.io_uring == IoUring::On && o.lower_passthrough && o.ignored.is_empty());
        let o = MountOptions::parse(&["lowerdir=/a"]).unwrap();
        assert!(o.io_uring == IoUring::Auto && !o.lower_passthrough);
        for (opt, want) in [
            ("io_uring=on", IoUring::On),
            ("io_uring=auto", IoUring::Auto),
            ("io_uring=off", IoUring::Off),
            ("noio_uring", IoUring::Off),
            ("io_uring,noio_uring", IoUring::Off),
        ] {
            let o = MountOptions::parse(&[format!("lowerdir=/a,{opt}")]).unwrap();
            assert_eq!(o.io_uring, want, "{opt}");
        }
        let o = MountOptions::parse(&["lowerdir=/a"]).unwrap();
        assert_eq!(o.lower_direct_io, Some(DEFAULT_LOWER_DIRECT_IO));
        for (opt, want) in [
            ("lower_direct_io=off", None),
            ("lower_direct_io=0", Some(0)),
            ("lower_direct_io=4096", Some(4096)),
            ("lower_direct_io=64K", Some(64 << 10)),
            ("lower_direct_io=2M", Some(2 << 20)),
        ] {
            let o = MountOptions::parse(&[format!("lowerdir=/a,{opt}")]).unwrap();
            assert_eq!(o.lower_direct_io, want, "{opt}");
        }
        for opt in ["lower_direct_io", "lower_direct_io=x", "lower_direct_io=1T"] {
            let r = MountOptions::parse(&[format!("lowerdir=/a,{opt}")]);
            assert!(r.is_err(), "{opt}: {r:?}");
        }
        let r = MountOptions::parse(&["lowerdir=/a,io_uring=yes".to_string()]);
        assert!(matches!(r, Err(OptionError::Value(_))), "{r:?}");
    }

    #[test]
    fn unknown_options_are_kept_for_a_warning() {
        let o =
            MountOptions::parse(&["lowerdir=/a,frobnicate=3,squash_to_root,xattr_permissions=2"])
                .unwrap();
        assert_eq!(o.ignored, vec!["frobnicate=3".to_string()]);
        assert_eq!(o.ids.squash_uid, Some(0));
    }
}
