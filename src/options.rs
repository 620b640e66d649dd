//! Mount options in the overlayfs / fuse-overlayfs syntax (`-o lowerdir=A:B,upperdir=U,...`).

use std::path::PathBuf;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Lower directories, top first, unescaped, not yet resolved.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// No fsync of copied-up data (podman's `volatile`).
    pub volatile: bool,
    /// Marks in `user.overlay.*` instead of `trusted.overlay.*` (kernel's `userxattr`).
    pub userxattr: bool,
    /// `uidmapping=`, `gidmapping=` and the squash options.
    pub ids: Ids,
    /// `ro`, `nosuid`, `nodev`, `noexec`, `noatime`, ...
    pub flags: MountFlags,
    /// `verify`: lower files checked against their layers' hash lists (`verity`).
    pub verify: bool,
    /// `fsname=`: the mount's source as /proc/self/mountinfo shows it.
    pub fsname: Option<String>,
    /// Unknown options: accepted with a warning.
    pub ignored: Vec<String>,
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
                    // Accepted for compatibility; they do not change what the mount shows.
                    "xattr_permissions"
                    | "context"
                    | "fscontext"
                    | "defcontext"
                    | "rootcontext"
                    | "redirect_dir"
                    | "metacopy"
                    | "index"
                    | "xino"
                    | "nfs_export"
                    | "fsync"
                    | "default_permissions"
                    | "allow_other"
                    | "allow_root"
                    | "auto_unmount"
                    | "threaded"
                    | "noacl"
                    | "plugins"
                    | "fast_ino"
                    | "static_nlink"
                    | "timeout" => {}
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
    fn unknown_options_are_kept_for_a_warning() {
        let o =
            MountOptions::parse(&["lowerdir=/a,frobnicate=3,squash_to_root,xattr_permissions=2"])
                .unwrap();
        assert_eq!(o.ignored, vec!["frobnicate=3".to_string()]);
        assert_eq!(o.ids.squash_uid, Some(0));
    }
}
