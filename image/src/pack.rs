//! Writing a directory tree as a layer tar: the inverse of [`super::unpack`].
//!
//! Two kinds of tree:
//! - [`Mode::Layer`]: a layer in the kernel's format (an upper, or a layer of the store).
//!   Its marks become OCI form: a whiteout device (or xattr whiteout) becomes `.wh.NAME`, an
//!   opaque directory gets a `.wh..wh..opq` entry, a redirected directory is written with its
//!   full merged content (read from a mount of the whole stack) behind an opaque marker (the
//!   kernel already left a whiteout at its old name), and origin/redirect/other union xattrs
//!   are dropped;
//! - [`Mode::Tree`]: a plain tree (a merged view, for `squash`), written as it is.
//!
//! Output is reproducible: entries sorted by name, whole-second times (or all pinned to
//! `--timestamp`), no user or group names; hard links are kept (an inode seen again becomes
//! a link entry), xattrs become PAX `SCHILY.xattr.*` records, files with holes are written
//! in full (holes as zeros: no sparse members, which containers/storage refuses).

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::tarread::pax::xattr_keyword;
use crate::format::{self, Class};
use crate::sys;

/// What kind of tree is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Layer,
    Tree,
}

/// Counts of what was written.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub bytes: u64,
}

pub struct Packer<'a, W: Write> {
    tar: tar::Builder<W>,
    mode: Mode,
    timestamp: Option<i64>,
    /// First path written for each multiply-linked inode (device, inode).
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Root of the merged view, for redirected directories of a layer.
    merged: Option<&'a Path>,
    /// The lowers (top first), for the data of metadata-only copies.
    lowers: &'a [std::path::PathBuf],
    pub stats: PackStats,
    progress: Option<&'a dyn Fn(u64)>,
}

impl<'a, W: Write> Packer<'a, W> {
    pub fn new(out: W, mode: Mode, timestamp: Option<i64>) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        Packer {
            tar,
            mode,
            timestamp,
            links: HashMap::new(),
            merged: None,
            lowers: &[],
            stats: PackStats::default(),
            progress: None,
        }
    }

    /// The merged view of the whole stack, needed when a layer has redirected directories.
    pub fn with_merged(mut self, merged: Option<&'a Path>) -> Self {
        self.merged = merged;
        self
    }

    /// The lowers under a layer (top first): where metadata-only copies keep their data.
    pub fn with_lowers(mut self, lowers: &'a [std::path::PathBuf]) -> Self {
        self.lowers = lowers;
        self
    }

    /// Called with the number of file bytes written so far.
    pub fn with_progress(mut self, f: &'a dyn Fn(u64)) -> Self {
        self.progress = Some(f);
        self
    }

    /// Writes the tree at `root` (the root itself as `./` in tree mode only: a layer's root
    /// belongs to the image below it).
    pub fn add_tree(&mut self, root: &Path) -> Result<()> {
        let fd = sys::open_host_dir(root).with_context(|| format!("opening {}", root.display()))?;
        if self.mode == Mode::Tree {
            let st = sys::fstat(fd.as_fd())?;
            let xattrs = xattrs(fd.as_fd(), b"")?;
            self.header(b"./", &st, tar::EntryType::Directory, &xattrs)?;
        }
        self.dir(fd.as_fd(), b"", self.mode)
    }

    /// Finishes the archive and returns the writer.
    pub fn finish(self) -> Result<W> {
        Ok(self.tar.into_inner()?)
    }

    fn dir(&mut self, dir: BorrowedFd<'_>, prefix: &[u8], mode: Mode) -> Result<()> {
        let marks = if mode == Mode::Layer {
            format::dir_marks(dir)?
        } else {
            format::DirMarks::default()
        };
        let mut ents = sys::read_dir(dir)?;
        ents.sort_by(|a, b| a.name.cmp(&b.name));
        let oci_opaque = mode == Mode::Layer && ents.iter().any(|e| *e.name == *format::OCI_OPAQUE);
        if marks.opaque || oci_opaque {
            self.marker(dir, prefix, format::OCI_OPAQUE)?;
        }
        for ent in &ents {
            let path = join(prefix, &ent.name);
            let class = if mode == Mode::Layer {
                format::classify(dir, &marks, ent)?
            } else {
                Class::Entry
            };
            match class {
                Class::Whiteout => {
                    let mut name = format::OCI_PREFIX.to_vec();
                    name.extend_from_slice(&ent.name);
                    self.marker(dir, prefix, &name)?;
                }
                // Already in OCI form (a layer made by other tools): written as markers.
                Class::OciOpaque => {}
                Class::OciWhiteout(_) => self.marker(dir, prefix, &ent.name)?,
                Class::Entry => self
                    .entry(dir, &ent.name, &path, mode)
                    .with_context(|| String::from_utf8_lossy(&path).into_owned())?,
            }
        }
        Ok(())
    }

    /// An empty marker file `prefix/name`, owned like its directory.
    fn marker(&mut self, dir: BorrowedFd<'_>, prefix: &[u8], name: &[u8]) -> Result<()> {
        let mut st = sys::fstat(dir)?;
        st.st_mode = libc::S_IFREG;
        st.st_size = 0;
        self.stats.whiteouts += 1;
        self.header(&join(prefix, name), &st, tar::EntryType::Regular, &[])
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, name: &[u8], path: &[u8], mode: Mode) -> Result<()> {
        let cname = sys::cstr(name)?;
        let st = sys::lstatat(dir, &cname)?;
        let fmt = st.st_mode & libc::S_IFMT;
        let xattrs = xattrs(dir, name)?;
        self.stats.entries += 1;
        if fmt != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.base_header(&st);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                self.tar.append_link(&mut h, os(path), os(&first))?;
                return Ok(());
            }
            self.links.insert(key, path.to_vec());
        }
        match fmt {
            libc::S_IFDIR => {
                let mut dpath = path.to_vec();
                dpath.push(b'/');
                self.header(&dpath, &st, tar::EntryType::Directory, &xattrs)?;
                let sub = sys::open_subdir(dir, &cname)?;
                if mode == Mode::Layer && redirected(sub.as_fd())? {
                    return self.redirected(path);
                }
                self.dir(sub.as_fd(), path, mode)
            }
            libc::S_IFREG if mode == Mode::Layer && metacopy(dir, name)? => {
                // Metadata here, data below: at the path the redirect names, else at the
                // same path, in the topmost lower that has it.
                let origin = match format::redirect_of(dir, name) {
                    Some(r) if r.starts_with(b"/") => r[1..].to_vec(),
                    _ => path.to_vec(),
                };
                let data = self.lower_file(&origin)?;
                let mut mst = sys::fstat(data.as_fd())?;
                mst.st_mode = st.st_mode;
                (mst.st_uid, mst.st_gid, mst.st_mtime) = (st.st_uid, st.st_gid, st.st_mtime);
                self.file_fd(data, path, &mst, &xattrs)
            }
            libc::S_IFREG => self.file(dir, &cname, path, &st, &xattrs),
            libc::S_IFLNK => {
                let target = sys::readlinkat(dir, &cname)?;
                self.pax(&xattrs)?;
                let mut h = self.base_header(&st);
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                self.tar.append_link(&mut h, os(path), os(&target))?;
                Ok(())
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let kind = match fmt {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                self.pax(&xattrs)?;
                let mut h = self.base_header(&st);
                h.set_entry_type(kind);
                h.set_size(0);
                if fmt != libc::S_IFIFO {
                    h.set_device_major(libc::major(st.st_rdev))?;
                    h.set_device_minor(libc::minor(st.st_rdev))?;
                }
                self.tar.append_data(&mut h, os(path), io::empty())?;
                Ok(())
            }
            // Sockets have no tar form; the runtimes skip them too.
            _ => {
                log::debug!("skipping socket {}", String::from_utf8_lossy(path));
                Ok(())
            }
        }
    }

    /// A redirected directory: its whole merged content, hiding whatever lies below its new
    /// name.
    fn redirected(&mut self, path: &[u8]) -> Result<()> {
        let Some(merged) = self.merged else {
            bail!(
                "a renamed directory (redirect xattr): its content lies in the lower layers, \
                 give them with -o lowerdir=..."
            );
        };
        let mroot = sys::open_host_dir(merged)?;
        let sub = sys::open_beneath(
            mroot.as_fd(),
            &sys::cstr(path)?,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
        .with_context(|| format!("the merged view of {}", String::from_utf8_lossy(path)))?;
        self.marker(sub.as_fd(), path, format::OCI_OPAQUE)?;
        self.dir(sub.as_fd(), path, Mode::Tree)
    }

    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        cname: &CString,
        path: &[u8],
        st: &sys::Stat,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let fd = sys::openat(dir, cname, libc::O_RDONLY)?;
        self.file_fd(fd, path, st, xattrs)
    }

    /// The topmost lower's regular file at `rel`.
    fn lower_file(&self, rel: &[u8]) -> Result<OwnedFd> {
        if self.lowers.is_empty() {
            bail!(
                "a metadata-only copy-up (metacopy xattr): its data lies in the lower \
                 layers, give them with -o lowerdir=..."
            );
        }
        let crel = sys::cstr(rel)?;
        for l in self.lowers {
            let root = sys::open_host_dir(l)?;
            match sys::open_beneath(root.as_fd(), &crel, libc::O_RDONLY) {
                Ok(fd) if sys::fstat(fd.as_fd())?.st_mode & libc::S_IFMT == libc::S_IFREG => {
                    return Ok(fd)
                }
                _ => continue,
            }
        }
        bail!("the data of this metadata-only copy is in none of the lowers")
    }

    /// A regular file, holes included: a hole is written as zeros. GNU sparse members
    /// (type `S`) are refused by containers/storage ("unhandled tar header type 83"), and
    /// PAX sparse ones are not taken by every consumer (docs/LAYER-TOOLS.md, "Holes");
    /// compression makes the zeros cheap, and [`super::unpack`] turns all-zero blocks back
    /// into holes.
    fn file_fd(
        &mut self,
        fd: OwnedFd,
        path: &[u8],
        st: &sys::Stat,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let size = st.st_size as u64;
        self.stats.bytes += size;
        self.pax(xattrs)?;
        let mut h = self.base_header(st);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        let reader = FdReader {
            fd: &fd,
            off: 0,
            end: size,
        };
        self.tar.append_data(&mut h, os(path), reader)?;
        if let Some(p) = self.progress {
            p(self.stats.bytes);
        }
        Ok(())
    }

    fn header(
        &mut self,
        path: &[u8],
        st: &sys::Stat,
        kind: tar::EntryType,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        self.pax(xattrs)?;
        let mut h = self.base_header(st);
        h.set_entry_type(kind);
        h.set_size(0);
        self.tar.append_data(&mut h, os(path), io::empty())?;
        Ok(())
    }

    fn pax(&mut self, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| {
                let key = xattr_keyword(k.as_bytes());
                // Escaping keeps the name's UTF-8 intact: only ASCII bytes are replaced.
                (
                    String::from_utf8(key).expect("UTF-8 in, UTF-8 out"),
                    v.as_slice(),
                )
            })
            .collect();
        self.tar
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))?;
        Ok(())
    }

    fn base_header(&self, st: &sys::Stat) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(self.timestamp.unwrap_or(st.st_mtime).max(0) as u64);
        h
    }
}

/// True if some directory under `root` carries a redirect (was renamed from elsewhere in
/// the lowers): committing it needs the merged view.
pub fn needs_merged(root: &Path) -> Result<bool> {
    fn walk(dir: BorrowedFd<'_>) -> Result<bool> {
        for ent in sys::read_dir(dir)? {
            if ent.d_type == libc::DT_DIR {
                let sub = sys::open_subdir(dir, &sys::cstr(&ent.name)?)?;
                if redirected(sub.as_fd())? || walk(sub.as_fd())? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
    let fd = sys::open_host_dir(root).with_context(|| format!("opening {}", root.display()))?;
    walk(fd.as_fd())
}

/// True for a file whose data is still below (`*.overlay.metacopy`).
fn metacopy(dir: BorrowedFd<'_>, name: &[u8]) -> Result<bool> {
    let list = match sys::listxattr_at(dir, name) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let found = sys::split_xattr_list(&list).any(format::is_metacopy_xattr);
    Ok(found)
}

/// True for a directory the kernel redirected (renamed from elsewhere in the lowers).
fn redirected(dir: BorrowedFd<'_>) -> Result<bool> {
    let list = match sys::flistxattr(dir) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let found = sys::split_xattr_list(&list).any(format::is_redirect_xattr);
    Ok(found)
}

/// The xattrs worth keeping, sorted: everything but the union's own marks.
fn xattrs(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let list = match sys::listxattr_at(dir, name) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for x in sys::split_xattr_list(&list) {
        if format::is_overlay_xattr(x) {
            continue;
        }
        let Ok(key) = std::str::from_utf8(x) else {
            continue;
        };
        let value = match sys::getxattr_at(dir, name, &sys::cstr(x)?) {
            Ok(v) => v,
            // trusted.* is invisible without CAP_SYS_ADMIN; it vanished meanwhile.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EPERM)) => continue,
            Err(e) => return Err(e.into()),
        };
        out.push((key.to_string(), value));
    }
    out.sort();
    Ok(out)
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        return name.to_vec();
    }
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn os(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Reads a file through `pread` from `off` to `end`, failing if it shrinks meanwhile (the
/// header already promised the size).
struct FdReader<'a> {
    fd: &'a OwnedFd,
    off: u64,
    end: u64,
}

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.off) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = sys::pread_full(self.fd.as_fd(), &mut buf[..want], self.off)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.off += n as u64;
        Ok(n)
    }
}
