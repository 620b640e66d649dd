//! layerfs as mount(8)'s helper: installed (or linked) as `/sbin/mount.fuse.layerfs`,
//! mount(8) runs it as `mount.fuse.layerfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]
//! [-t TYPE]` for `mount -t fuse.layerfs ...` and fstab lines of type `fuse.layerfs`.
//! (Through `mount.fuse3`, layerfs is run as `layerfs SOURCE MOUNTPOINT -o OPTIONS`, which
//! the ordinary command line accepts.)

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// True when the program was started under a mount helper's name (`mount.fuse.layerfs`,
/// `mount.layerfs`).
pub fn invoked_as_helper(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"mount."))
}

/// What mount(8) asked of its helper.
#[derive(Debug, PartialEq, Eq)]
pub struct HelperCall {
    /// The equivalent `layerfs` command line (without the program name).
    pub args: Vec<OsString>,
    /// `-f`: mount(8)'s "fake" mode (check, do not mount).
    pub fake: bool,
}

/// Translates a helper's arguments (without the program name) into layerfs's own.
pub fn translate(args: &[OsString]) -> Result<HelperCall, String> {
    let usage = "usage: mount.fuse.layerfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]";
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let b = a.as_encoded_bytes();
        if b == b"-o" || b == b"-t" {
            let v = it
                .next()
                .ok_or_else(|| format!("{} needs a value ({usage})", a.display()))?;
            if b == b"-o" {
                options.push(v.clone());
            }
        } else if let Some(v) = b.strip_prefix(b"-o").filter(|v| !v.is_empty()) {
            options.push(OsString::from(String::from_utf8_lossy(v).into_owned()));
        } else if b.len() > 1 && b[0] == b'-' && b[1..].iter().all(|c| b"sfnvi".contains(c)) {
            // sloppy, fake, no-mtab, verbose, internal-only: only "fake" changes anything.
            fake |= b.contains(&b'f');
        } else if b.starts_with(b"-") && b.len() > 1 {
            return Err(format!("unknown option {} ({usage})", a.display()));
        } else {
            positional.push(a.clone());
        }
    }
    let [source, mountpoint] = <[OsString; 2]>::try_from(positional).map_err(|p| {
        format!(
            "expected SOURCE and MOUNTPOINT, got {} arguments ({usage})",
            p.len()
        )
    })?;
    let mut out: Vec<OsString> = vec!["mount".into()];
    for o in options {
        out.push("-o".into());
        out.push(o);
    }
    out.push(source);
    out.push(mountpoint);
    Ok(HelperCall { args: out, fake })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn mount8_forms() {
        assert!(invoked_as_helper(OsStr::new("/sbin/mount.fuse.layerfs")));
        assert!(!invoked_as_helper(OsStr::new("/usr/bin/layerfs")));
        let c = translate(&os(&["src", "/mnt", "-o", "rw,lowerdir=/a,nofail"])).unwrap();
        assert_eq!(
            c,
            HelperCall {
                args: os(&["mount", "-o", "rw,lowerdir=/a,nofail", "src", "/mnt"]),
                fake: false
            }
        );
        let c = translate(&os(&["x", "/mnt", "-f", "-v", "-o", "lowerdir=/b"])).unwrap();
        assert!(c.fake);
        let c = translate(&os(&[
            "-sn",
            "-olowerdir=/c",
            "x",
            "/m",
            "-t",
            "fuse.layerfs",
        ]))
        .unwrap();
        assert_eq!(c.args, os(&["mount", "-o", "lowerdir=/c", "x", "/m"]));
        assert!(translate(&os(&["/mnt"])).is_err());
        assert!(translate(&os(&["a", "b", "-o"])).is_err());
        assert!(translate(&os(&["a", "b", "--bogus"])).is_err());
    }
}
