//! Running as root of a new user namespace, for rootless `layerfs run` (see `run.rs`) and
//! the image commands' rootless store (`imagecmd::as_store_owner`).
//!
//! A child creates the user namespace and waits; this process (outside it) maps the
//! caller's full subordinate range from /etc/subuid and /etc/subgid with newuidmap and
//! newgidmap (package `uidmap`), so apt can setgroups, seteuid and chown inside. Without
//! them the child may map only the caller's own id (to 0) itself ([`map_self`]).

use std::io::{Read, Write};
use std::process::Command;

use anyhow::{Context, Result};
use layerfs_base::sys::{self, Fork};

/// The caller's subordinate range in `file` (/etc/subuid or /etc/subgid): start, count.
fn subordinate(file: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let (who, start, count) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        (Some(who) == name || who == id.to_string()).then_some((start, count))
    })
}

/// The caller's user name, from /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

/// Maps `pid`'s user namespace with newuidmap/newgidmap: 0 -> the caller, 1.. -> the
/// subordinate range. Returns why it could not, if it could not.
pub(crate) fn map_full(pid: libc::pid_t, uid: u32, gid: u32) -> std::result::Result<(), String> {
    let name = user_name(uid);
    let subuid = subordinate("/etc/subuid", name.as_deref(), uid).ok_or_else(|| {
        format!(
            "no /etc/subuid entry for {}",
            name.as_deref().unwrap_or("this user")
        )
    })?;
    let subgid = subordinate("/etc/subgid", name.as_deref(), uid).ok_or_else(|| {
        format!(
            "no /etc/subgid entry for {}",
            name.as_deref().unwrap_or("this user")
        )
    })?;
    for (tool, id, (start, count)) in [("newuidmap", uid, subuid), ("newgidmap", gid, subgid)] {
        let status = Command::new(tool)
            .args([
                pid.to_string(),
                "0".into(),
                id.to_string(),
                "1".into(),
                "1".into(),
                start.to_string(),
                count.to_string(),
            ])
            .status()
            .map_err(|e| format!("{tool}: {e} (install the uidmap package)"))?;
        if !status.success() {
            return Err(format!("{tool} failed ({status})"));
        }
    }
    Ok(())
}

/// Maps only the caller's own ids, from inside the namespace (allowed without privilege).
pub(crate) fn map_self(uid: u32, gid: u32) -> std::io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))
}

/// Forks a child into a new user namespace, which the parent maps to the caller (0) and its
/// subordinate ranges (1..) while the child waits on a pipe. The child then runs
/// `f(mapped)` (`mapped`: the full map is in place; else no map yet, for `f` to make one or
/// refuse) and exits with its code, or prints its error after `prefix` and exits with
/// `fail`. Returns the child's pid and the full map's outcome.
pub(crate) fn fork_mapped(
    prefix: &str,
    fail: i32,
    f: impl FnOnce(bool) -> Result<i32>,
) -> Result<(libc::pid_t, std::result::Result<(), String>)> {
    let (uid, gid) = sys::real_ids();
    let (ready_rd, ready_wr) = sys::pipe()?;
    let (go_rd, go_wr) = sys::pipe()?;
    match sys::fork().context("starting the user namespace")? {
        Fork::Child => {
            drop((ready_rd, go_wr));
            let _ = sys::set_parent_death_signal(libc::SIGKILL);
            let code = (|| -> Result<i32> {
                sys::unshare(libc::CLONE_NEWUSER).context("creating a user namespace")?;
                std::fs::File::from(ready_wr).write_all(b"u")?;
                let mut full = [0u8; 1];
                std::fs::File::from(go_rd).read_exact(&mut full)?;
                f(full[0] == b'1')
            })();
            std::process::exit(code.unwrap_or_else(|e| {
                eprintln!("{prefix}: {}", super::one_line(&e));
                fail
            }));
        }
        Fork::Parent(child) => {
            drop((ready_wr, go_rd));
            let mut b = [0u8; 1];
            std::fs::File::from(ready_rd)
                .read_exact(&mut b)
                .context("waiting for the user namespace")?;
            let mapped = map_full(child, uid, gid);
            std::fs::File::from(go_wr).write_all(if mapped.is_ok() { b"1" } else { b"0" })?;
            Ok((child, mapped))
        }
    }
}
