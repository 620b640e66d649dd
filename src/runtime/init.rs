//! Pid 1 of a container: start the command, reap every orphan, forward signals, and exit
//! with the command's status.
//!
//! In a new pid namespace the first process is the one that inherits orphans and that the
//! kernel shields from signals it has no handler for; a shell or a daemon run directly as
//! pid 1 would leave zombies and ignore Ctrl-C. Signals are blocked here and taken with
//! `sigwait`, so no handler ever runs; the command gets the default mask back before exec.

use std::ffi::CString;

use crate::sys::{self, Fork};

/// The command to run, as the kernel wants it.
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: CString,
    /// Run as this uid:gid (no supplementary groups) instead of root.
    pub user: Option<(u32, u32)>,
    /// Capabilities the command may keep (the bounding set); `None` keeps all.
    pub caps: Option<Vec<u32>>,
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
    if let Some((uid, gid)) = cmd.user {
        sys::set_identity(uid, gid)?;
    }
    Ok(())
}
