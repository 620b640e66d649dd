//! Failpoints for tests (feature `failpoints` only; nothing here exists in a normal build).
//!
//! Every wrapper that changes the upper or the workdir (and `openat`) starts with
//! `fault!("sys::NAME")`; a failpoint configured with `return(ERRNO)` makes it fail with
//! that errno (EIO when none is given) without making the call. A daemon started with
//! `LAYERFS_FAULTS=SOCKET` serves a control socket there, one command per connection:
//!
//! - `set NAME ACTIONS`: configures a failpoint (the `fail` crate's syntax, e.g.
//!   `5%return(28)` fails 5% of calls with ENOSPC);
//! - `kill NAME[,NAME...] N`: the process SIGKILLs itself at the Nth call of any of the
//!   named failpoints (a `kill -9` landing exactly between two syscalls of a copy-up, a
//!   rename, ...);
//! - `off`: removes every failpoint set so far;
//! - `count`: answers the number of faults injected since start;
//! - `fds`: answers the number of fds the process has open;
//! - `threads`: answers the number of its threads, then their names.
//!
//! Each command is answered with one line, `ok [N]` or `error: ...`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static INJECTED: AtomicU64 = AtomicU64::new(0);
static SET: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The error a failpoint returns (`return(ERRNO)`), counted.
pub fn injected(arg: Option<String>) -> io::Error {
    INJECTED.fetch_add(1, Ordering::Relaxed);
    let errno = arg.and_then(|a| a.trim().parse().ok()).unwrap_or(libc::EIO);
    io::Error::from_raw_os_error(errno)
}

/// Faults injected so far.
pub fn count() -> u64 {
    INJECTED.load(Ordering::Relaxed)
}

/// Starts the control socket when `LAYERFS_FAULTS` names one (in the daemon, after the
/// fork).
pub fn serve_from_env() {
    let Some(path) = std::env::var_os("LAYERFS_FAULTS") else {
        return;
    };
    let path = Path::new(&path).to_path_buf();
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            log::error!("failpoints: binding {}: {e}", path.display());
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("failpoints".into())
        .spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let reply = command(line.trim());
                let _ = writeln!(&conn, "{reply}");
            }
        });
    if let Err(e) = spawned {
        log::error!("failpoints: starting the control thread: {e}");
    }
}

fn command(line: &str) -> String {
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("set"), Some(name), Some(actions)) => match fail::cfg(name, actions) {
            Ok(()) => {
                SET.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name.to_string());
                "ok".into()
            }
            Err(e) => format!("error: {e}"),
        },
        (Some("kill"), Some(name), Some(n)) => {
            let Ok(n) = n.parse::<u64>() else {
                return format!("error: {n:?} is not a count");
            };
            let left = std::sync::Arc::new(AtomicU64::new(n));
            for name in name.split(',') {
                let left = left.clone();
                let at_nth = move || {
                    if left.fetch_sub(1, Ordering::SeqCst) == 1 {
                        let _ = super::kill(std::process::id() as libc::pid_t, libc::SIGKILL);
                    }
                };
                if let Err(e) = fail::cfg_callback(name, at_nth) {
                    return format!("error: {e}");
                }
                SET.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name.to_string());
            }
            "ok".into()
        }
        (Some("off"), None, None) => {
            for name in SET.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                fail::remove(name);
            }
            "ok".into()
        }
        (Some("count"), None, None) => format!("ok {}", count()),
        (Some("fds"), None, None) => match std::fs::read_dir("/proc/self/fd") {
            Ok(d) => format!("ok {}", d.count()),
            Err(e) => format!("error: {e}"),
        },
        (Some("threads"), None, None) => match std::fs::read_dir("/proc/self/task") {
            Ok(d) => {
                let names: Vec<String> = d
                    .filter_map(Result::ok)
                    .map(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .unwrap_or_default()
                            .trim()
                            .to_string()
                    })
                    .collect();
                format!("ok {} {}", names.len(), names.join(","))
            }
            Err(e) => format!("error: {e}"),
        },
        _ => format!("error: unknown command {line:?}"),
    }
}
