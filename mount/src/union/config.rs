//! How the merged view is presented: id mappings and kernel cache times.

use std::time::Duration;

use crate::format::OverrideNs;
use crate::idmap::Ids;
use crate::stack::Ino;
use crate::sys::Stat;

/// How ids and caching are presented; everything that is not the layers themselves.
#[derive(Debug, Clone)]
pub struct Config {
    /// How on-disk ids are shown and callers' ids stored (`uidmapping=`, squash options).
    pub ids: Ids,
    /// How long the kernel may cache entries, negative entries and attributes. The lowers
    /// are immutable and every change to the upper goes through the mount (the kernel then
    /// drops what it saw change, the core tells it the rest), so both mount kinds afford a
    /// long time. `timeout=SECONDS` sets it, for lowers changed behind the mount's back.
    pub ttl: Duration,
    /// How long a lower directory's index is trusted before it is read again (`timeout=`);
    /// `None`: the lowers are immutable and each index is built once.
    pub lowers_max_age: Option<Duration>,
    /// Owners and modes kept in override_stat xattrs (`xattr_permissions=1|2`).
    pub overrides: Option<OverrideNs>,
    /// Write a redirect when a directory with lower content is renamed (`redirect_dir=on`);
    /// without, such a rename is EXDEV, as on the kernel.
    pub redirects: bool,
    /// xattrs readable and settable through the mount (off with `noxattrs=1`).
    pub xattrs: bool,
    /// A change of metadata copies metadata only (`metacopy=on`).
    pub metacopy: bool,
    /// Every directory shows a link count of 1 (`static_nlink`, as fuse-overlayfs).
    pub static_nlink: bool,
}

impl Config {
    /// The attributes the merged view shows for a real `st` with merged number `ino`.
    pub fn present(&self, mut st: Stat, ino: Ino) -> Stat {
        st.st_ino = ino.0;
        (st.st_uid, st.st_gid) = self.ids.show(st.st_uid, st.st_gid);
        if self.static_nlink && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            st.st_nlink = 1;
        }
        st
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ids: Ids::default(),
            ttl: Duration::from_secs(24 * 3600),
            lowers_max_age: None,
            overrides: None,
            redirects: true,
            xattrs: true,
            metacopy: false,
            static_nlink: false,
        }
    }
}
