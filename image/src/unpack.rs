//! Safe extraction of one layer tar into a directory.
//!
//! The tar is untrusted. Every name is checked (no absolute path, no `..`) and every write
//! goes through fds opened one component at a time with `O_NOFOLLOW`, so a symlink in the
//! layer (or one the same tar created a moment ago) is never followed on the host; a hard
//! link can only name an entry already inside the layer. Sizes, counts and name lengths are
//! bounded ([`Limits`]).
//!
//! OCI whiteouts become the kernel's form (decided in docs/ARCHITECTURE.md "Image store"):
//! `.wh.NAME` a character device 0:0, `.wh..wh..opq` an opaque xattr, so the stored layer is
//! a valid lower for `mount -t overlay` as well as for layerfs; the marks are written by
//! [`crate::format`].

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use log::{debug, warn};

use super::tarread::{self, TarReader};
use crate::format::{self, MarkNs};
use crate::sys;

/// Bounds on what one layer may ask for; beyond them the layer is refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    pub max_file_size: u64,
    pub max_total_size: u64,
    pub max_path: usize,
    pub max_xattr_value: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000_000,
            max_file_size: 1 << 40,
            max_total_size: 4 << 40,
            max_path: libc::PATH_MAX as usize,
            max_xattr_value: 64 * 1024,
        }
    }
}

/// How to write the layer.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The namespace of the opaque mark (`trusted.` as real root, else `user.`).
    pub marks: MarkNs,
    /// Inside a user namespace: device nodes cannot be created and are skipped (as rootless
    /// podman does), `trusted.*` xattrs are dropped.
    pub rootless: bool,
    pub limits: Limits,
}

impl Options {
    /// The options for this process: real root writes `trusted.` marks and device nodes.
    pub fn for_this_process() -> Options {
        let rootless = sys::geteuid() != 0 || sys::in_user_namespace();
        Options {
            marks: if rootless {
                MarkNs::User
            } else {
                MarkNs::Trusted
            },
            rootless,
            limits: Limits::default(),
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes a user namespace could not create, as `/dev/null` (rootless only).
    pub skipped_devices: Vec<String>,
}

/// Metadata applied once everything is written (a directory's mode may forbid writing into
/// it, and writing into it changes its mtime).
struct DirMeta {
    path: Vec<Vec<u8>>,
    meta: Meta,
}

#[derive(Debug, Clone, Default)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Splits an archive name into safe components: refuses absolute names, `..`, NUL bytes and
/// over-long names; drops `.` and empty components. The empty result is the layer's root.
pub fn clean_path(raw: &[u8], limits: &Limits) -> Result<Vec<Vec<u8>>> {
    let shown = String::from_utf8_lossy(raw);
    if raw.len() > limits.max_path {
        bail!("{shown:.80}...: name longer than {} bytes", limits.max_path);
    }
    if raw.starts_with(b"/") {
        bail!("{shown}: absolute name");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!("{shown}: name with a `..` component"),
            c if c.contains(&0) => bail!("{shown}: name with a NUL byte"),
            c if c.len() > 255 => bail!("{shown}: a component longer than 255 bytes"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn c(name: &[u8]) -> Result<CString> {
    Ok(sys::cstr(name)?)
}

fn shown(path: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&path.join(&b'/')).into_owned()
}

/// Opens the directory `path` beneath `root`, one component at a time, never through a
/// symlink; with `create`, missing directories are made (mode 0755, as the runtimes do).
fn open_dir(root: BorrowedFd<'_>, path: &[Vec<u8>], create: bool) -> Result<OwnedFd> {
    let mut cur = sys::reopen(root, libc::O_RDONLY | libc::O_DIRECTORY)?;
    for (i, comp) in path.iter().enumerate() {
        let name = c(comp)?;
        let next = match sys::open_subdir(cur.as_fd(), &name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                sys::mkdirat(cur.as_fd(), &name, 0o755)?;
                sys::open_subdir(cur.as_fd(), &name)
            }
            r => r,
        };
        cur = next.map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::ELOOP) => "is a symlink; refusing to write through it".to_string(),
                Some(libc::ENOTDIR) => "is not a directory".to_string(),
                _ => e.to_string(),
            };
            anyhow!("{} {why}", shown(&path[..=i]))
        })?;
    }
    Ok(cur)
}

/// Removes `name` in `dir`, a whole tree if it is a directory.
pub fn remove_entry(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let cn = sys::cstr(name)?;
    match sys::unlinkat(dir, &cn, 0) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {
            let sub = sys::open_subdir(dir, &cn)?;
            for ent in sys::read_dir(sub.as_fd())? {
                remove_entry(sub.as_fd(), &ent.name)?;
            }
            sys::unlinkat(dir, &cn, libc::AT_REMOVEDIR)
        }
        r => r,
    }
}

/// Extraction state for one layer.
struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    opts: Options,
    stats: Stats,
    dirs: Vec<DirMeta>,
    /// Kernel whiteouts this layer wrote (from `.wh.` entries).
    whiteouts: HashSet<Vec<Vec<u8>>>,
    /// Directories that hide what is below them.
    opaque: HashSet<Vec<Vec<u8>>>,
    /// The parent directory fd of the last entry, reused by its siblings.
    parent: Option<(Vec<Vec<u8>>, OwnedFd)>,
    /// Regular files are made at their size with no content (a lazy layer's placeholders).
    skeleton: bool,
}

/// Extracts the tar stream `tar` (uncompressed) into the directory `root`.
pub fn unpack(tar: impl Read, root: BorrowedFd<'_>, opts: &Options) -> Result<Stats> {
    let mut u = Unpacker::new(root, opts, false);
    let mut reader = TarReader::new(tar);
    while let Some(entry) = reader.next_entry().context("reading the layer tar")? {
        u.add(&entry, &mut reader)?;
    }
    u.done()
}

/// [`unpack`], counting the entries written in `count` as it goes (a lazy layer arriving
/// whole shows how far it is).
pub fn unpack_counting(
    tar: impl Read,
    root: BorrowedFd<'_>,
    opts: &Options,
    count: &std::sync::atomic::AtomicU64,
) -> Result<Stats> {
    let mut u = Unpacker::new(root, opts, false);
    let mut reader = TarReader::new(tar);
    while let Some(entry) = reader.next_entry().context("reading the layer tar")? {
        u.add(&entry, &mut reader)?;
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    u.done()
}

/// Makes a layer's tree from its entries alone, as [`unpack`] would from its tar (marks,
/// hard links, metadata, the same checks), each regular file a placeholder of its size
/// with no content (a hole): a lazy layer's skeleton, whose files get their bytes later.
pub fn unpack_skeleton(
    entries: impl IntoIterator<Item = tarread::Entry>,
    root: BorrowedFd<'_>,
    opts: &Options,
) -> Result<Stats> {
    let mut u = Unpacker::new(root, opts, true);
    let mut none = TarReader::new(io::empty());
    for entry in entries {
        u.add(&entry, &mut none)?;
    }
    u.done()
}

impl<'a> Unpacker<'a> {
    fn new(root: BorrowedFd<'a>, opts: &Options, skeleton: bool) -> Unpacker<'a> {
        Unpacker {
            root,
            opts: *opts,
            stats: Stats::default(),
            dirs: Vec::new(),
            whiteouts: HashSet::new(),
            opaque: HashSet::new(),
            parent: None,
            skeleton,
        }
    }

    fn add<R: Read>(&mut self, entry: &tarread::Entry, reader: &mut TarReader<R>) -> Result<()> {
        let raw = entry.path.clone();
        let path = clean_path(&raw, &self.opts.limits)?;
        self.stats.entries += 1;
        if self.stats.entries > self.opts.limits.max_entries {
            bail!(
                "more than {} entries in one layer",
                self.opts.limits.max_entries
            );
        }
        self.entry(entry, reader, path)
            .with_context(|| format!("entry {:?}", String::from_utf8_lossy(&raw)))
    }

    fn done(mut self) -> Result<Stats> {
        let stats = std::mem::take(&mut self.stats);
        self.finish()?;
        Ok(stats)
    }
}

impl Unpacker<'_> {
    fn parent_fd(&mut self, parent: &[Vec<u8>]) -> Result<BorrowedFd<'_>> {
        let hit = matches!(&self.parent, Some((p, _)) if p.as_slice() == parent);
        if !hit {
            let fd = open_dir(self.root, parent, true)?;
            self.parent = Some((parent.to_vec(), fd));
        }
        Ok(self.parent.as_ref().expect("just set").1.as_fd())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &tarread::Entry,
        reader: &mut TarReader<R>,
        path: Vec<Vec<u8>>,
    ) -> Result<()> {
        use tar::EntryType as T;
        let kind = entry.kind;
        let meta = self.meta(entry)?;
        let Some((name, parent)) = path.split_last() else {
            if kind == T::Directory {
                self.dirs.push(DirMeta { path, meta });
            }
            return Ok(());
        };
        if let Some(hidden) = name.strip_prefix(format::OCI_PREFIX) {
            return self.oci_mark(parent, name, hidden);
        }
        // An entry written after a whiteout of the same name replaces it (OCI: the lower
        // entry is deleted, this one is new); a directory then hides what was below.
        let replaced_whiteout = self.whiteouts.remove(&path);
        let is_dir = kind == T::Directory;
        let existing = {
            let pfd = self.parent_fd(parent)?;
            sys::lstatat(pfd, &c(name)?).ok()
        };
        if let Some(st) = existing {
            let was_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if !(was_dir && is_dir) {
                let pfd = self.parent_fd(parent)?;
                remove_entry(pfd, name)?;
            }
        }
        if replaced_whiteout && is_dir {
            self.opaque.insert(path.clone());
        }
        let cname = c(name)?;
        match kind {
            T::Directory => {
                if existing.is_none_or(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR) {
                    sys::mkdirat(self.parent_fd(parent)?, &cname, 0o700)?;
                }
                self.dirs.push(DirMeta { path, meta });
                return Ok(());
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size;
                let limits = self.opts.limits;
                if size > limits.max_file_size {
                    bail!(
                        "file size {size} exceeds the limit {}",
                        limits.max_file_size
                    );
                }
                self.stats.bytes += size;
                if self.stats.bytes > limits.max_total_size {
                    bail!("layer larger than {} bytes", limits.max_total_size);
                }
                let pfd = self.parent_fd(parent)?;
                let fd = sys::create_excl(pfd, &cname, libc::O_WRONLY, 0o600)?;
                if self.skeleton {
                    sys::ftruncate(fd.as_fd(), size)?;
                } else {
                    write_sparse(&mut reader.data(), fd.as_fd(), size)?;
                }
            }
            T::Symlink => {
                let target = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| anyhow!("symlink without a target"))?;
                let target = c(target)?;
                sys::symlinkat(&target, self.parent_fd(parent)?, &cname)?;
            }
            T::Link => {
                let target = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| anyhow!("hard link without a target"))?;
                let tpath = clean_path(target, &self.opts.limits)?;
                let Some((tname, tparent)) = tpath.split_last() else {
                    bail!("hard link to the layer's root");
                };
                let tdir = open_dir(self.root, tparent, false).with_context(|| {
                    format!("hard link target {}", String::from_utf8_lossy(target))
                })?;
                let pfd = self.parent_fd(parent)?;
                sys::linkat(tdir.as_fd(), &c(tname)?, pfd, &cname)
                    .with_context(|| format!("hard link to {}", String::from_utf8_lossy(target)))?;
                // The link shares the target's inode and metadata.
                return Ok(());
            }
            T::Char | T::Block | T::Fifo => {
                let (fmt, dev) = match kind {
                    T::Char => (libc::S_IFCHR, true),
                    T::Block => (libc::S_IFBLK, true),
                    _ => (libc::S_IFIFO, false),
                };
                let rdev = if dev {
                    let h = &entry.header;
                    let major = h.device_major()?.unwrap_or(0);
                    let minor = h.device_minor()?.unwrap_or(0);
                    libc::makedev(major, minor)
                } else {
                    0
                };
                // A user namespace cannot make devices (char 0:0, a whiteout, excepted):
                // rootless podman skips them the same way.
                if dev && self.opts.rootless && rdev != 0 {
                    let shown = format!("/{}", shown(&path));
                    warn!(
                        "{shown}: device node {}:{} not imported (a user namespace cannot \
                         create device nodes; rootless podman skips them too)",
                        libc::major(rdev),
                        libc::minor(rdev)
                    );
                    self.stats.skipped_devices.push(shown);
                    return Ok(());
                }
                sys::mknodat(self.parent_fd(parent)?, &cname, fmt | 0o600, rdev)?;
            }
            other => bail!("unsupported tar entry type {other:?}"),
        }
        let is_link = kind == T::Symlink;
        let pfd = self.parent_fd(parent)?;
        apply(pfd, name, &meta, is_link)
    }

    /// `.wh..wh..opq` or `.wh.NAME` in the directory `parent`.
    fn oci_mark(&mut self, parent: &[Vec<u8>], name: &[u8], hidden: &[u8]) -> Result<()> {
        if name == format::OCI_OPAQUE {
            self.parent_fd(parent)?; // the directory must exist (and is made if not)
            self.opaque.insert(parent.to_vec());
            return Ok(());
        }
        if hidden.starts_with(format::OCI_PREFIX) || hidden.is_empty() {
            // AUFS-internal names (`.wh..wh.plnk`, ...): meaningless here.
            debug!("ignoring {}", String::from_utf8_lossy(name));
            return Ok(());
        }
        let mut path = parent.to_vec();
        path.push(hidden.to_vec());
        let chidden = c(hidden)?;
        let pfd = self.parent_fd(parent)?;
        match sys::lstatat(pfd, &chidden) {
            // The layer has its own NAME: a directory hides the lower one's content, any
            // other entry hides it by itself.
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                self.opaque.insert(path);
            }
            Ok(_) => {}
            Err(_) => {
                format::write_whiteout(pfd, &chidden)?;
                self.whiteouts.insert(path);
            }
        }
        Ok(())
    }

    fn meta(&self, entry: &tarread::Entry) -> Result<Meta> {
        let mut meta = Meta {
            mode: entry.mode & 0o7777,
            uid: u32::try_from(entry.uid).context("uid beyond 32 bits")?,
            gid: u32::try_from(entry.gid).context("gid beyond 32 bits")?,
            mtime: entry.mtime,
            mtime_nsec: entry.mtime_nsec,
            ..Meta::default()
        };
        for (name, value) in &entry.xattrs {
            let name = std::str::from_utf8(name).context("xattr name not UTF-8")?;
            if let Some(keep) = self.keep_xattr(name, value)? {
                meta.xattrs.push(keep);
            }
        }
        Ok(meta)
    }

    /// Drops the union's own marks (a tar must not forge a redirect or an opaque dir: those
    /// come only from OCI markers) and, rootless, `trusted.*`.
    fn keep_xattr(&self, name: &str, value: &[u8]) -> Result<Option<(CString, Vec<u8>)>> {
        if format::is_overlay_xattr(name.as_bytes()) {
            debug!("dropping the union xattr {name} from a layer tar");
            return Ok(None);
        }
        if self.opts.rootless && name.starts_with("trusted.") {
            debug!("dropping {name}: trusted.* needs real root");
            return Ok(None);
        }
        if value.len() > self.opts.limits.max_xattr_value {
            bail!(
                "xattr {name} larger than {} bytes",
                self.opts.limits.max_xattr_value
            );
        }
        Ok(Some((c(name.as_bytes())?, value.to_vec())))
    }

    fn finish(mut self) -> Result<()> {
        self.parent = None;
        for p in std::mem::take(&mut self.opaque) {
            let (dir, name) = match p.split_last() {
                Some((n, d)) => (open_dir(self.root, d, false)?, n.clone()),
                None => (sys::reopen(self.root, libc::O_RDONLY)?, Vec::new()),
            };
            format::write_opaque(dir.as_fd(), &name, self.opts.marks)
                .with_context(|| format!("marking {} opaque", shown(&p)))?;
        }
        // Children before parents: setting a child's times touches nothing above it, and
        // a read-only parent is made so only once its children are done. The last entry
        // for a directory wins.
        let mut last: HashMap<&[Vec<u8>], usize> = HashMap::new();
        for (i, d) in self.dirs.iter().enumerate() {
            last.insert(&d.path, i);
        }
        let mut order: Vec<usize> = last.into_values().collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.dirs[i].path.len()));
        for i in order {
            let d = &self.dirs[i];
            let (dir, name) = match d.path.split_last() {
                Some((n, p)) => (open_dir(self.root, p, false)?, n.clone()),
                None => (sys::reopen(self.root, libc::O_RDONLY)?, Vec::new()),
            };
            apply(dir.as_fd(), &name, &d.meta, false)
                .with_context(|| format!("directory {}", shown(&d.path)))?;
        }
        Ok(())
    }
}

/// Owner, mode, xattrs and times of `name` in `dir` (empty `name`: `dir` itself).
fn apply(dir: BorrowedFd<'_>, name: &[u8], m: &Meta, is_link: bool) -> Result<()> {
    let self_fd;
    let (at, cname) = if name.is_empty() {
        self_fd = sys::reopen(dir, libc::O_RDONLY)?;
        (self_fd.as_fd(), None)
    } else {
        (dir, Some(c(name)?))
    };
    let chown = match &cname {
        Some(n) => sys::lchownat(at, n, m.uid, m.gid),
        None => sys::fchown(at, m.uid, m.gid),
    };
    chown.map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => anyhow!(
            "owner {}:{} is outside this user namespace's id range",
            m.uid,
            m.gid
        ),
        _ => anyhow!("chown {}:{}: {e}", m.uid, m.gid),
    })?;
    if !is_link {
        match &cname {
            Some(n) => sys::chmodat(at, n, m.mode)?,
            None => sys::fchmod(at, m.mode)?,
        }
    }
    for (x, v) in &m.xattrs {
        match sys::setxattr_at(at, name, x, v, 0) {
            // user.* xattrs are refused on symlinks by the kernel.
            Err(e) if is_link && e.raw_os_error() == Some(libc::EPERM) => {}
            r => r.with_context(|| format!("setting xattr {}", x.to_string_lossy()))?,
        }
    }
    let t = libc::timespec {
        tv_sec: m.mtime,
        tv_nsec: m.mtime_nsec,
    };
    match &cname {
        Some(n) => sys::lutimesat(at, n, t, t)?,
        None => sys::futimens(at, t, t)?,
    }
    Ok(())
}

/// Copies the entry's data, leaving all-zero blocks as holes (so sparse entries stay sparse).
fn write_sparse(data: &mut impl Read, fd: BorrowedFd<'_>, size: u64) -> Result<()> {
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut off = 0u64;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            match data.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading file data"),
            }
        }
        if filled == 0 {
            break;
        }
        // Holes at the filesystem's granularity: only 4 KiB blocks with data are written.
        for (i, chunk) in buf[..filled].chunks(4096).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                sys::pwrite_all(fd, chunk, off + (i * 4096) as u64)?;
            }
        }
        off += filled as u64;
    }
    if off != size {
        bail!("file data ends after {off} of {size} bytes");
    }
    sys::ftruncate(fd, size)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let l = Limits::default();
        assert_eq!(
            clean_path(b"./a//b/.", &l).unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(clean_path(b"./", &l).unwrap().is_empty());
        assert!(clean_path(b"/etc/passwd", &l).is_err());
        assert!(clean_path(b"a/../../x", &l).is_err());
        assert!(clean_path(&[b'a'; 5000], &l).is_err());
    }
}
