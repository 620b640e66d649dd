//! How the merged view is presented: id mappings and kernel cache times.

use std::time::Duration;

use crate::options::IdMap;
use crate::stack::Ino;
use crate::sys::Stat;

/// How ids and caching are presented; everything that is not the layers themselves.
#[derive(Debug, Clone)]
pub struct Config {
    pub uid_map: Option<IdMap>,
    pub gid_map: Option<IdMap>,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// How long the kernel may cache entries, negative entries and attributes. The lowers
    /// are immutable and every change to the upper goes through the mount (the kernel then
    /// drops what it saw change, the core tells it the rest), so both mount kinds afford a
    /// long time.
    pub ttl: Duration,
}

impl Config {
    /// The attributes the merged view shows for a real `st` with merged number `ino`.
    pub fn present(&self, mut st: Stat, ino: Ino) -> Stat {
        st.st_ino = ino.0;
        if let Some(m) = &self.uid_map {
            st.st_uid = m.to_container(st.st_uid);
        }
        if let Some(m) = &self.gid_map {
            st.st_gid = m.to_container(st.st_gid);
        }
        if let Some(u) = self.squash_uid {
            st.st_uid = u;
        }
        if let Some(g) = self.squash_gid {
            st.st_gid = g;
        }
        st
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            uid_map: None,
            gid_map: None,
            squash_uid: None,
            squash_gid: None,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}
