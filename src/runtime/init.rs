//! Pid 1 of a container: start the command, reap every orphan, forward signals, and exit
//! with the command's status.
//!
//! In a new pid namespace the first process is the one that inherits orphans and that the
//! kernel shields from signals it has no handler for; a shell or a daemon run directly as
//! pid 1 would leave zombies and ignore Ctrl-C. Signals are blocked here and taken with
//! `sigwait`, so no handler ever runs; the command gets the default mask back before exec.

use std::ffi::CString;

use layerfs_base::sys::{self, Fork};

/// The command to run, as the kernel wants it.
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: CString,
    /// Run as this user (no supplementary groups) instead of root.
    pub user: Option<User>,
    /// Capabilities the command may keep (the bounding set); `None` keeps all.
    pub caps: Option<Vec<u32>>,
    /// The file mode creation mask the command starts with (podman and runc: 0022).
    pub umask: u32,
}

/// `--user`: a user and optional group, each a number or a name looked up in the image's
/// /etc/passwd and /etc/group (inside the container, after the switch of root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user: String,
    pub group: Option<String>,
}

impl User {
    pub fn parse(s: &str) -> User {
        match s.split_once(':') {
            Some((u, g)) => User {
                user: u.into(),
                group: Some(g.into()),
            },
            None => User {
                user: s.into(),
                group: None,
            },
        }
    }

    /// Resolves against passwd and group file contents: (uid, gid). Without a group, the
    /// user's primary group (or the uid, for a number not in passwd).
    pub fn resolve(&self, passwd: &str, group: &str) -> Result<(u32, u32), String> {
        let entry = |text: &str, name: &str| -> Option<Vec<String>> {
            text.lines()
                .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == name)
        };
        let (uid, primary) = match self.user.parse::<u32>() {
            Ok(n) => {
                let pw = passwd
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 3 && f[2] == n.to_string());
                (n, pw.and_then(|f| f[3].parse().ok()).unwrap_or(n))
            }
            Err(_) => {
                let f = entry(passwd, &self.user).ok_or_else(|| {
                    format!("user {:?} is not in the image's /etc/passwd", self.user)
                })?;
                let uid = f[2]
                    .parse()
                    .map_err(|_| format!("bad uid for {:?} in /etc/passwd", self.user))?;
                let gid = f[3]
                    .parse()
                    .map_err(|_| format!("bad gid for {:?} in /etc/passwd", self.user))?;
                (uid, gid)
            }
        };
        let gid = match &self.group {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => entry(group, g)
                    .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?[2]
                    .parse()
                    .map_err(|_| format!("bad gid for {g:?} in /etc/group"))?,
            },
        };
        Ok((uid, gid))
    }
}

/// podman's default capability set: chown, dac_override, fowner, fsetid, kill, setgid,
/// setuid, setpcap, net_bind_service, sys_chroot, setfcap (bounding mask 0x800405fb).
pub const PODMAN_DEFAULT_CAPS: [u32; 11] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31];

/// Exit statuses of the runtime itself, as podman uses them.
pub const EXIT_RUNTIME: i32 = 125;
pub const EXIT_CANNOT_EXEC: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Runs `cmd` as pid 1 and returns the status to exit with: the command's code, or 128 + the
/// signal that killed it.
pub fn pid1(cmd: &Command) -> i32 {
    let mut waited: Vec<libc::c_int> = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    if let Err(e) = sys::block_signals(&waited) {
        eprintln!("layerfs run: blocking signals: {e}");
        return EXIT_RUNTIME;
    }
    let child = match sys::fork() {
        Ok(Fork::Child) => exec_command(cmd),
        Ok(Fork::Parent(pid)) => pid,
        Err(e) => {
            eprintln!("layerfs run: starting the command: {e}");
            return EXIT_RUNTIME;
        }
    };
    loop {
        let sig = match sys::wait_signal(&waited) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("layerfs run: waiting for signals: {e}");
                return EXIT_RUNTIME;
            }
        };
        if sig != libc::SIGCHLD {
            let _ = sys::kill(child, sig);
            continue;
        }
        // Reap everything that ended: the command, and orphans re-parented to us.
        while let Ok(Some((pid, exit))) = sys::waitpid(-1, libc::WNOHANG) {
            if pid == child {
                return exit.status();
            }
        }
    }
}

/// In the command's process: restore signals, enter the working directory, exec.
fn exec_command(cmd: &Command) -> ! {
    let _ = sys::unblock_all_signals();
    // Our own umask is 0 (the mount daemon's, inherited): the command gets its own.
    sys::umask(cmd.umask);
    let name = cmd.argv[0].to_string_lossy().into_owned();
    if let Err(e) = restrict(cmd) {
        eprintln!("layerfs run: dropping privileges: {e}");
        std::process::exit(EXIT_RUNTIME);
    }
    if let Err(e) = sys::chdir(&cmd.cwd) {
        eprintln!(
            "layerfs run: working directory {}: {e}",
            cmd.cwd.to_string_lossy()
        );
        std::process::exit(EXIT_CANNOT_EXEC);
    }
    let e = sys::exec(&cmd.argv, &cmd.env);
    let code = if e.raw_os_error() == Some(libc::ENOENT) {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_EXEC
    };
    if code == EXIT_NOT_FOUND {
        eprintln!("layerfs run: {name}: command not found in the container's PATH");
    } else {
        eprintln!("layerfs run: {name}: cannot execute: {e}");
    }
    std::process::exit(code)
}

/// Narrows the bounding set (before setuid, while CAP_SETPCAP is still ours), then switches
/// identity.
fn restrict(cmd: &Command) -> std::io::Result<()> {
    if let Some(keep) = &cmd.caps {
        for cap in 0..=sys::cap_last_cap()? {
            if !keep.contains(&cap) {
                sys::capbset_drop(cap)?;
            }
        }
    }
    if let Some(user) = &cmd.user {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let (uid, gid) = user
            .resolve(&read("/etc/passwd"), &read("/etc/group"))
            .map_err(std::io::Error::other)?;
        sys::set_identity(uid, gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::User;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:34::/var/www:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nwww:x:34:\nstaff:x:50:\n";

    #[test]
    fn users_resolve_by_name_or_number() {
        let r = |s: &str| User::parse(s).resolve(PASSWD, GROUP);
        assert_eq!(r("www-data"), Ok((33, 34)));
        assert_eq!(r("www-data:staff"), Ok((33, 50)));
        assert_eq!(r("33"), Ok((33, 34)), "a known uid takes its primary group");
        assert_eq!(
            r("1000"),
            Ok((1000, 1000)),
            "an unknown uid is its own group"
        );
        assert_eq!(r("1000:7"), Ok((1000, 7)));
        assert!(r("nosuch").unwrap_err().contains("nosuch"));
        assert!(r("root:nogroup").unwrap_err().contains("nogroup"));
    }
}
