//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) serving a
//! temporary storage directory on 127.0.0.1 at a free port, optionally with htpasswd basic
//! auth, killed in Drop. And a TCP proxy in front of it that cuts a connection (or kills
//! the registry) once a response has passed a number of bytes: a dropped connection or a
//! registry gone mid-pull, at a chosen point and without sleeps.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::eventually;

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// A free port on 127.0.0.1 (the kernel's choice, released for the server to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// A registry without auth.
    pub fn start() -> Registry {
        Self::start_with(None, None)
    }

    /// A registry; with `user`, only that user and password may use it (htpasswd); with
    /// `tls` (certificate and key files), it speaks HTTPS only.
    pub fn start_with(user: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-reg-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((u, p)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils; scripts/setup installs it)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: layerfs-test\n    path: {}\n",
                file.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Self::spawn(dir.path());
        let mut r = Registry { child, port, dir };
        r.wait_listening();
        r
    }

    /// `docker-registry serve DIR/config.yml`, its output appended to `DIR/log`.
    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (scripts/setup installs it)")
    }

    fn wait_listening(&mut self) {
        let port = self.port;
        eventually("the registry to listen", || {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "docker-registry exited: {}",
                std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
            );
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills the registry (SIGKILL) and reaps it: its port refuses connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again (stopping it first if it runs, reaping it if it was
    /// killed): same port, same storage.
    pub fn start_again(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path());
        self.wait_listening();
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the blob `digest` (`sha256:HEX`).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The registry's log (one access line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The bytes of response bodies the registry's access log shows for requests whose
    /// line contains `needle` (a blob's digest): what a client was sent of it.
    pub fn bytes_sent(&self, needle: &str) -> u64 {
        self.log()
            .lines()
            .filter(|l| l.contains(needle) && l.contains("\"GET "))
            .filter_map(|l| {
                // `... "GET /v2/R/blobs/D HTTP/1.1" 206 1234 "referer" "agent"`
                let after = l.split("HTTP/1.1\" ").nth(1)?;
                after.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `127.0.0.1:upstream` that, the first time a response has carried more
/// than `cut_after` bytes, calls `on_cut` and closes that connection (later connections
/// pass untouched). It records whether a request asked for a byte range.
pub struct Proxy {
    pub port: u16,
    saw_range: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(
        upstream: u16,
        cut_after: u64,
        on_cut: impl Fn() + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let saw_range = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let on_cut: Arc<dyn Fn() + Send + Sync> = Arc::new(on_cut);
        let (sr, c) = (saw_range.clone(), cut.clone());
        // The accepting thread lives as long as the test process (nothing joins it).
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (sr, c, on_cut) = (sr.clone(), c.clone(), on_cut.clone());
                std::thread::spawn(move || serve(client, upstream, cut_after, sr, &c, &*on_cut));
            }
        });
        Proxy {
            port,
            saw_range,
            cut,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn saw_range(&self) -> bool {
        self.saw_range.load(Ordering::SeqCst)
    }

    pub fn did_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    cut_after: u64,
    saw_range: Arc<AtomicBool>,
    cut: &AtomicBool,
    on_cut: &(dyn Fn() + Send + Sync),
) {
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return; // the registry is gone: the client sees its connection closed
    };
    let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
    let requests = std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = c2.read(&mut buf) {
            if n == 0 || u2.write_all(&buf[..n]).is_err() {
                break;
            }
            if String::from_utf8_lossy(&buf[..n])
                .to_ascii_lowercase()
                .contains("\r\nrange: bytes=")
            {
                saw_range.store(true, Ordering::SeqCst);
            }
        }
        let _ = u2.shutdown(Shutdown::Write);
    });
    // Counted per connection: the small answers before a blob (the ping, the manifest,
    // the config) stay far below the cut.
    let mut buf = [0u8; 16384];
    let mut passed = 0u64;
    while let Ok(n) = up.read(&mut buf) {
        if n == 0 {
            break;
        }
        passed += n as u64;
        if passed > cut_after && !cut.swap(true, Ordering::SeqCst) {
            let _ = client.write_all(&buf[..n / 2]);
            on_cut();
            break;
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = requests.join();
}

/// Kills process `pid` with SIGKILL.
pub fn kill(pid: u32) {
    // SAFETY: kill(2) with a pid we started and a valid signal; it touches no memory.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// An auth file (containers-auth.json(5)) giving `user`:`pass` for `host`.
pub fn auth_file(dir: &Path, host: &str, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let f = dir.join("auth.json");
    std::fs::write(
        &f,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{b64}"}}}}}}"#),
    )
    .unwrap();
    f
}

/// A test CA and a certificate it signed for 127.0.0.1, made with openssl in `dir`:
/// `dir/certs/ca.crt` (a cert dir as skopeo and layerfs read it), `dir/leaf.crt`,
/// `dir/leaf.key`.
pub fn test_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("openssl (scripts/setup installs it)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=layerfs test CA",
        "-keyout",
        "ca.key",
        "-out",
        "certs/ca.crt",
    ];
    run(&[&ca[..], &ec[..]].concat());
    let csr = [
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ];
    run(&[&csr[..], &ec[..]].concat());
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "certs/ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "leaf.crt",
    ]);
    (certs, dir.join("leaf.crt"), dir.join("leaf.key"))
}
