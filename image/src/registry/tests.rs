//! The client against a scripted HTTP server on 127.0.0.1 (bytes in, bytes out): what the
//! real registry of the e2e tests does not do (bearer tokens, 503s, redirects to storage,
//! a connection dropped mid-blob).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

use super::client::{Client, Options};
use super::Credentials;
use crate::source::Digest;

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// What the script answers: status, headers, body; `cut` sends only that many body bytes
/// and drops the connection.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut: Option<usize>,
}

fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    Answer {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        cut: None,
    }
}

type Script = dyn Fn(&Req, usize) -> Answer + Send + Sync;

/// Serves `script` (given the request and how many requests came before it); returns the
/// port and the log of requests.
fn serve(script: Arc<Script>) -> (u16, Arc<Mutex<Vec<Req>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let (script, log) = (script.clone(), log2.clone());
            std::thread::spawn(move || handle(conn, &*script, &log));
        }
    });
    (port, log)
}

fn handle(conn: TcpStream, script: &Script, log: &Mutex<Vec<Req>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        // A TLS hello to a plain HTTP server: closed, as the client then tries plain HTTP.
        match r.fill_buf() {
            Ok([0x16, ..]) | Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let len: usize = headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let req = Req {
            method,
            path,
            headers,
        };
        let n = {
            let mut l = log.lock().unwrap();
            l.push(req.clone());
            l.len() - 1
        };
        let a = script(&req, n);
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            a.status,
            a.body.len()
        );
        for (k, v) in &a.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = w.write_all(head.as_bytes());
        if req.method == "HEAD" {
            continue;
        }
        match a.cut {
            Some(c) => {
                let _ = w.write_all(&a.body[..c]);
                return;
            }
            None => {
                let _ = w.write_all(&a.body);
            }
        }
    }
}

fn digest(b: &[u8]) -> Digest {
    Digest::of(sha2::Sha256::new_with_prefix(b))
}

fn insecure() -> Options {
    Options {
        tls_verify: Some(false),
        ..Default::default()
    }
}

#[test]
fn bearer_token_then_manifest() {
    let port_cell = Arc::new(Mutex::new(0u16));
    let pc = port_cell.clone();
    let script: Arc<Script> = Arc::new(move |req: &Req, _| {
        let realm = format!("http://127.0.0.1:{}/token", pc.lock().unwrap());
        let challenge = format!(r#"Bearer realm="{realm}",service="svc""#);
        match req.path.as_str() {
            "/v2/" => answer(401, &[("WWW-Authenticate", &challenge)], b""),
            p if p.starts_with("/token?") => {
                // Basic u:p, the scope of the request.
                if req.headers.get("authorization").map(String::as_str) != Some("Basic dTpw") {
                    return answer(401, &[], b"");
                }
                assert!(p.contains("service=svc"), "{p}");
                assert!(p.contains("scope=repository%3Aapp%3Apull"), "{p}");
                answer(200, &[], br#"{"token":"T1"}"#)
            }
            "/v2/app/manifests/1" => {
                if req.headers.get("authorization").map(String::as_str) != Some("Bearer T1") {
                    return answer(401, &[("WWW-Authenticate", &challenge)], b"");
                }
                answer(
                    200,
                    &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                    b"{}",
                )
            }
            _ => answer(404, &[], b""),
        }
    });
    let (port, log) = serve(script);
    *port_cell.lock().unwrap() = port;
    let opts = Options {
        creds: Some(Credentials::parse("u:p").unwrap()),
        ..insecure()
    };
    let c = Client::connect(&format!("127.0.0.1:{port}"), "app", &opts).unwrap();
    let (bytes, mt, d) = c.get_manifest("app", "1").unwrap();
    assert_eq!(bytes, b"{}");
    assert_eq!(mt, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(d, digest(b"{}"));
    // The token is reused: one token request for two manifest requests.
    c.get_manifest("app", "1").unwrap();
    let tokens = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .count();
    assert_eq!(tokens, 1);

    // Without credentials the token server says 401: the error names what was tried.
    let c = Client::connect(&format!("127.0.0.1:{port}"), "app", &insecure()).unwrap();
    let err = format!("{:#}", c.get_manifest("app", "1").unwrap_err());
    assert!(err.contains("credentials tried: none"), "{err}");
}

#[test]
fn retries_redirects_resumes_and_ranges() {
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let d = digest(&blob);
    let b2 = blob.clone();
    let script: Arc<Script> = Arc::new(move |req: &Req, n| match req.path.as_str() {
        "/v2/" => answer(200, &[], b"{}"),
        // Any digest is served from the one blob in storage (a wrong digest must be
        // caught by the client).
        p if p.starts_with("/v2/app/blobs/") => {
            // The first blob request gets a 503, later ones a redirect to storage.
            if n == 1 {
                answer(503, &[], b"")
            } else {
                answer(307, &[("Location", "/storage/blob")], b"")
            }
        }
        "/storage/blob" => {
            assert!(!req.headers.contains_key("authorization"));
            match req.headers.get("range") {
                None => Answer {
                    cut: Some(70_000),
                    ..answer(200, &[], &b2)
                },
                Some(r) => {
                    let r = r.strip_prefix("bytes=").unwrap();
                    let (a, b) = r.split_once('-').unwrap();
                    let a: usize = a.parse().unwrap();
                    let b: usize = if b.is_empty() {
                        b2.len() - 1
                    } else {
                        b.parse().unwrap()
                    };
                    let cr = format!("bytes {a}-{b}/{}", b2.len());
                    answer(206, &[("Content-Range", &cr)], &b2[a..=b])
                }
            }
        }
        _ => answer(404, &[], b""),
    });
    let (port, log) = serve(script);
    let c = Client::connect(&format!("127.0.0.1:{port}"), "app", &insecure()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("blob");
    c.fetch_blob("app", &d, Some(blob.len() as u64), &dst, &|_| {})
        .unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), blob);
    let ranged: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/storage/blob")
        .filter_map(|r| r.headers.get("range").cloned())
        .collect();
    assert_eq!(
        ranged,
        vec!["bytes=70000-".to_string()],
        "resumed where it broke"
    );

    let part = c.fetch_blob_range("app", &d, 1000, 24).unwrap();
    assert_eq!(part, &blob[1000..1024]);

    // A wrong digest: refused naming both, and the file is gone.
    let wrong = digest(b"other");
    let err = c
        .fetch_blob("app", &wrong, None, &dst, &|_| {})
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!("digest mismatch: expected {wrong}, received {d}")),
        "{err}"
    );
    assert!(!dst.exists());
}

#[test]
fn upload_to_another_host_gets_no_credentials() {
    // Blob storage on another host: it answers the upload's PUT.
    let storage: Arc<Script> = Arc::new(|req: &Req, _| {
        if req.method == "PUT" {
            answer(201, &[], b"")
        } else {
            answer(404, &[], b"")
        }
    });
    let (storage_port, storage_log) = serve(storage);
    let location = format!("http://127.0.0.1:{storage_port}/upload?state=x");
    let registry: Arc<Script> = Arc::new(move |req: &Req, _| {
        if req.headers.get("authorization").map(String::as_str) != Some("Basic dTpw") {
            return answer(401, &[("WWW-Authenticate", r#"Basic realm="r""#)], b"");
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v2/app/blobs/uploads/") => answer(202, &[("Location", &location)], b""),
            ("PUT", "/v2/app/manifests/1") => answer(201, &[], b""),
            _ => answer(404, &[], b""),
        }
    });
    let (port, log) = serve(registry);
    let opts = Options {
        creds: Some(Credentials::parse("u:p").unwrap()),
        ..insecure()
    };
    let c = Client::connect(&format!("127.0.0.1:{port}"), "app", &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    std::fs::write(&f, b"layer bytes").unwrap();
    let d = digest(b"layer bytes");
    c.upload_blob("app", &d, &f).unwrap();
    let put = storage_log.lock().unwrap()[0].clone();
    assert_eq!(put.path, format!("/upload?state=x&digest={d}"));
    assert!(!put.headers.contains_key("authorization"), "{put:?}");
    assert_eq!(
        c.put_manifest("app", "1", "application/x", b"{}").unwrap(),
        digest(b"{}")
    );
    assert!(log.lock().unwrap().iter().any(|r| r.method == "POST"));
}

#[test]
fn an_index_resolves_to_this_platform() {
    let config = br#"{"rootfs":{"type":"layers","diff_ids":[]},"config":{"Cmd":["sh"]}}"#.to_vec();
    let cd = digest(&config);
    let manifest = |n: u8| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
               "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},
               "layers":[],"annotations":{{"n":"{n}"}}}}"#,
            config.len()
        )
        .into_bytes()
    };
    let (other, ours) = (manifest(1), manifest(2));
    let (od, ourd) = (digest(&other), digest(&ours));
    let foreign = if crate::oci_write::go_arch() == "s390x" {
        "arm64"
    } else {
        "s390x"
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
           {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{od}","size":{},
             "platform":{{"os":"linux","architecture":"{foreign}"}}}},
           {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{ourd}","size":{},
             "platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
        other.len(),
        ours.len(),
        crate::oci_write::go_arch()
    )
    .into_bytes();
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let (want_manifest, want_config) = (ourd.clone(), cd.clone());
    let script: Arc<Script> = Arc::new(move |req: &Req, _| {
        let p = req.path.as_str();
        if p == "/v2/" {
            answer(200, &[], b"{}")
        } else if p == "/v2/app/manifests/multi" {
            let t = "application/vnd.oci.image.index.v1+json";
            answer(200, &[("Content-Type", t)], &index)
        } else if p == format!("/v2/app/manifests/{od}") {
            answer(200, &[("Content-Type", oci)], &other)
        } else if p == format!("/v2/app/manifests/{ourd}") {
            answer(200, &[("Content-Type", oci)], &ours)
        } else if p == format!("/v2/app/blobs/{cd}") {
            answer(200, &[], &config)
        } else {
            answer(404, &[], b"")
        }
    });
    let (port, _) = serve(script);
    let c = Client::connect(&format!("127.0.0.1:{port}"), "app", &insecure()).unwrap();
    let r =
        super::Reference::parse_qualified(&format!("docker://127.0.0.1:{port}/app:multi")).unwrap();
    let resolved = super::pull::resolve(&c, &r).unwrap();
    assert_eq!(resolved.manifest_digest, want_manifest);
    assert_eq!(resolved.config_digest, want_config);
    assert_eq!(resolved.config.cmd, vec!["sh"]);
}

#[test]
fn content_range() {
    assert_eq!(super::client::range_start("bytes 100-199/1000"), Some(100));
    assert_eq!(super::client::range_start("items 1-2"), None);
}
