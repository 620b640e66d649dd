//! COPY and ADD into a writable mount of the stage (so the union's copy-up keeps every
//! lower directory's mode, owner and times): paths resolve inside the container's root as
//! they would in the container (`openat2(RESOLVE_IN_ROOT)`: an image's absolute symlink
//! stays inside), entries are made fd-relative, never by host path.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerfs_base::sys;

/// Owner and mode a COPY imposes (`--chown`, `--chmod`); `None` keeps the source's owner
/// only when `keep_owner` (COPY --from), else root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
    pub keep_owner: bool,
}

fn c(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} contains a NUL byte"))
}

/// The directory `path` (absolute in the container) under `root`, made (0755, owned by
/// `owner` or root: a COPY --chown owns the directories it makes, as buildah's) with its
/// missing parents.
pub fn mkdir_p(root: BorrowedFd<'_>, path: &str, owner: Option<(u32, u32)>) -> Result<OwnedFd> {
    let mut dir = sys::open_in_root(root, c(".")?.as_c_str(), libc::O_DIRECTORY | libc::O_RDONLY)?;
    let mut sofar = String::from("/");
    for comp in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if !sofar.ends_with('/') {
            sofar.push('/');
        }
        sofar.push_str(comp);
        let rel = c(&format!(".{sofar}"))?;
        match sys::open_in_root(root, &rel, libc::O_DIRECTORY | libc::O_RDONLY) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                sys::mkdirat(dir.as_fd(), &c(comp)?, 0o755)
                    .with_context(|| format!("creating {sofar}"))?;
                sys::chmodat(dir.as_fd(), &c(comp)?, 0o755)?;
                if let Some((uid, gid)) = owner {
                    sys::lchownat(dir.as_fd(), &c(comp)?, uid, gid)?;
                }
                dir = sys::open_in_root(root, &rel, libc::O_DIRECTORY | libc::O_RDONLY)
                    .with_context(|| format!("opening {sofar}"))?;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                bail!("{sofar} is not a directory in the image")
            }
            Err(e) => return Err(e).with_context(|| format!("opening {sofar}")),
        }
    }
    Ok(dir)
}

/// True when `path` is a directory in the container (symlinks followed inside the root).
pub fn is_dir(root: BorrowedFd<'_>, path: &str) -> bool {
    c(&format!(".{}", normalize(path)))
        .ok()
        .and_then(|rel| sys::open_in_root(root, &rel, libc::O_DIRECTORY | libc::O_RDONLY).ok())
        .is_some()
}

/// The parent directory of `rel` (relative to `root`, resolved inside it, symlinks
/// followed) as `/proc/self/fd/N`, and the last component (empty for the root itself):
/// that path joined with the name reaches the entry without following anything on the
/// host, for as long as the returned fd lives.
pub fn in_root(root: BorrowedFd<'_>, rel: &str) -> Result<(OwnedFd, PathBuf, String)> {
    let norm = normalize(rel);
    let (parent, name) = norm.rsplit_once('/').unwrap_or(("", &norm));
    let dir = sys::open_in_root(
        root,
        &c(&format!(".{parent}/."))?,
        libc::O_DIRECTORY | libc::O_RDONLY,
    )
    .with_context(|| format!("{rel}: not found"))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if std::fs::symlink_metadata(path.join(name)).is_err() {
        bail!("{rel}: not found");
    }
    Ok((dir, path, name.to_string()))
}

/// `/a//b/` → `/a/b`.
pub fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Leaves out a path (relative to the source root) when true: the ignore rules.
pub type Skip<'a> = &'a dyn Fn(&str) -> bool;

/// Copies the host entry `root/rel` (file, symlink or directory tree) to `name` in `dir`. A
/// directory merges into an existing one; anything else replaces what was there.
pub fn copy_entry(
    root: &Path,
    rel: &str,
    dir: BorrowedFd<'_>,
    name: &str,
    attrs: Attrs,
    skip: Skip<'_>,
) -> Result<()> {
    let src = &root.join(rel);
    let md =
        std::fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let cname = c(name)?;
    let (uid, gid) = match (attrs.owner, attrs.keep_owner) {
        (Some(o), _) => o,
        (None, true) => (md.uid(), md.gid()),
        (None, false) => (0, 0),
    };
    let existing = sys::lstatat(dir, &cname).ok();
    let existing_dir = existing
        .as_ref()
        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    let ft = md.file_type();
    if !(ft.is_dir() && existing_dir) && existing.is_some() {
        let flags = if existing_dir { libc::AT_REMOVEDIR } else { 0 };
        sys::unlinkat(dir, &cname, flags).with_context(|| {
            format!("replacing {name} (a directory must be empty to be replaced)")
        })?;
    }
    let mode = attrs.mode.unwrap_or(md.permissions().mode() & 0o7777);
    let mtime = libc::timespec {
        tv_sec: md.mtime(),
        tv_nsec: md.mtime_nsec(),
    };
    if ft.is_dir() {
        if !existing_dir {
            sys::mkdirat(dir, &cname, 0o700).with_context(|| format!("creating {name}"))?;
        }
        let sub = sys::openat(dir, &cname, libc::O_DIRECTORY | libc::O_RDONLY)?;
        let mut names: Vec<_> = std::fs::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let n = n.to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            if !skip(&child) {
                copy_entry(root, &child, sub.as_fd(), &n, attrs, skip)?;
            }
        }
        sys::lchownat(dir, &cname, uid, gid)?;
        sys::chmodat(dir, &cname, mode)?;
        sys::lutimesat(dir, &cname, mtime, mtime)?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src)?;
        let target = CString::new(target.as_os_str().as_encoded_bytes())?;
        sys::symlinkat(&target, dir, &cname).with_context(|| format!("creating {name}"))?;
        sys::lchownat(dir, &cname, uid, gid)?;
        sys::lutimesat(dir, &cname, mtime, mtime)?;
    } else if ft.is_file() {
        let out = sys::create_excl(dir, &cname, libc::O_WRONLY, 0o600)
            .with_context(|| format!("creating {name}"))?;
        let mut out = std::fs::File::from(out);
        let mut input =
            std::fs::File::open(src).with_context(|| format!("reading {}", src.display()))?;
        std::io::copy(&mut input, &mut out).with_context(|| format!("writing {name}"))?;
        sys::fchown(out.as_fd(), uid, gid)?;
        sys::fchmod(out.as_fd(), mode)?;
        sys::futimens(out.as_fd(), mtime, mtime)?;
    } else {
        log::warn!(
            "{}: not a file, directory or symlink; skipped",
            src.display()
        );
    }
    Ok(())
}

/// `--chown=USER[:GROUP]`, names resolved in the image's /etc/passwd and /etc/group.
pub fn owner(root: BorrowedFd<'_>, spec: &str) -> Result<(u32, u32)> {
    let read = |p: &str| -> String {
        c(p).ok()
            .and_then(|rel| sys::open_in_root(root, &rel, libc::O_RDONLY).ok())
            .and_then(|fd| std::io::read_to_string(std::fs::File::from(fd)).ok())
            .unwrap_or_default()
    };
    crate::runtime::init::User::parse(spec)
        .resolve(&read("./etc/passwd"), &read("./etc/group"))
        .map_err(|e| anyhow::anyhow!("--chown={spec}: {e}"))
}

/// Unpacks a local tar (plain, gzip, zstd: by magic) into `dir` (ADD's archive case).
pub fn extract(archive: &Path, dir: BorrowedFd<'_>) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let f =
        std::fs::File::open(archive).with_context(|| format!("reading {}", archive.display()))?;
    let mut r = BufReader::new(f);
    let magic = r.fill_buf()?.to_vec();
    let reader: Box<dyn std::io::Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    };
    layerfs_image::unpack::unpack(
        reader,
        dir,
        &layerfs_image::unpack::Options::for_this_process(),
    )
    .with_context(|| format!("extracting {}", archive.display()))?;
    Ok(())
}

/// True when ADD should extract `path`: a tar, plain or compressed, by its first bytes.
pub fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}
