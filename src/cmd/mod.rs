pub mod build;
pub mod cat;
pub mod ci_rules;
pub mod commit;
pub mod df;
pub mod diff;
pub mod explore;
pub mod helper;
pub mod image_run;
pub mod image_source;
pub mod imagecmd;
pub mod images;
pub mod import;
pub mod inspect;
pub mod lazy;
pub mod lazy_status;
pub mod mount;
pub mod packaging;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod rootless;
pub mod run;
pub mod serve_layers;
pub mod squash;
pub mod supervise;
pub mod umount;
pub mod verify;
pub mod which;

/// An error as one line for a user: each cause once (an error that already quotes its cause
/// is not followed by it again), without the "(os error N)" tails.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = without_os_error(&cause.to_string());
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `text` without io::Error's " (os error N)" suffixes.
fn without_os_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" (os error ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " (os error ".len()..];
        match tail.find(')') {
            Some(j) if tail[..j].bytes().all(|b| b.is_ascii_digit()) => rest = &tail[j + 1..],
            _ => {
                out.push_str(" (os error ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_once_without_os_error_numbers() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = anyhow::Error::new(layerfs_mount::upper::UpperError::Open {
            what: "upperdir",
            path: "/x".into(),
            source: io,
        });
        assert_eq!(
            one_line(&e),
            "upperdir /x: No such file or directory (create it first: mkdir -p /x)"
        );
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EACCES))
            .context("mounting on /m");
        assert_eq!(one_line(&e), "mounting on /m: Permission denied");
        assert_eq!(without_os_error("a (os error x) b"), "a (os error x) b");
    }
}
