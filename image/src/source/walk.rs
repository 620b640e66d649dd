//! Reading a layer's entries: from a tar stream (OCI / docker layers) or from a layer
//! directory (mount stacks, podman's `overlay/<id>/diff`). Both yield the same [`Entry`]
//! values in the same way, through a callback, streaming: memory stays bounded by the
//! bookkeeping below (one small record per directory and per symlink), never by content.
//!
//! Layers are hostile input. The tar walker refuses `..` and absolute names, a path that
//! goes through a symlink of the same layer, a hard link leaving the root, and absurd
//! counts ([`Limits`]); the directory walker never follows a symlink (every call is
//! `*at` on one component with `O_NOFOLLOW`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};

use super::entry::{Entry, Kind, RelPath, Stamp};
use crate::format::{self, OciName};
use crate::sys;
use crate::tarread::TarReader;

/// What the walkers accept before calling a layer absurd.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries in one layer.
    pub layer_entries: u64,
    /// Entries in one directory of one layer.
    pub dir_entries: u32,
    /// Xattrs on one entry, and bytes of one xattr value.
    pub xattrs: usize,
    pub xattr_value: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            layer_entries: 2_000_000,
            dir_entries: 200_000,
            xattrs: 128,
            xattr_value: 64 * 1024,
        }
    }
}

/// The callback a walk calls for each entry, parents before children. `content` is the
/// file's bytes for a [`Kind::File`] when the walk was asked for content, else `None`.
pub type Visit<'a> = dyn FnMut(&Entry, Option<&mut dyn Read>) -> Result<()> + 'a;

/// Counts per layer and per directory against [`Limits`].
struct Counter {
    limits: Limits,
    total: u64,
    per_dir: HashMap<Vec<u8>, u32>,
}

impl Counter {
    fn new(limits: Limits) -> Counter {
        Counter {
            limits,
            total: 0,
            per_dir: HashMap::new(),
        }
    }

    fn add(&mut self, path: &RelPath) -> Result<()> {
        self.total += 1;
        if self.total > self.limits.layer_entries {
            bail!(
                "layer has more than {} entries (at {path})",
                self.limits.layer_entries
            );
        }
        let n = self
            .per_dir
            .entry(path.parent().as_bytes().to_vec())
            .or_default();
        *n += 1;
        if *n > self.limits.dir_entries {
            bail!(
                "directory {} has more than {} entries",
                path.parent(),
                self.limits.dir_entries
            );
        }
        Ok(())
    }
}

/// Walks an uncompressed tar stream. Reads `tar` to its end (so a digest-checking reader
/// underneath sees every byte and can report a mismatch).
pub fn walk_tar(
    tar: &mut dyn Read,
    want_content: bool,
    limits: Limits,
    visit: &mut Visit<'_>,
) -> Result<()> {
    let mut reader = TarReader::new(&mut *tar);
    let mut count = Counter::new(limits);
    // Symlinks of this layer: a later entry below one would be written through it.
    let mut symlinks: HashSet<Vec<u8>> = HashSet::new();
    while let Some(te) = reader.next_entry().context("reading the layer tar")? {
        let path = RelPath::parse(&te.path, false)?;
        if let Some(via) = path.ancestors().find(|a| symlinks.contains(*a)) {
            bail!(
                "{path}: goes through {}, a symlink of the same layer",
                RelPath::from_normalised(via.to_vec())
            );
        }
        let header = &te.header;
        let ty = te.kind;
        let mut e = Entry::new(path.clone(), Kind::File);
        e.mode = te.mode & 0o7777;
        e.uid = u32::try_from(te.uid).with_context(|| format!("{path}: uid beyond 32 bits"))?;
        e.gid = u32::try_from(te.gid).with_context(|| format!("{path}: gid beyond 32 bits"))?;
        e.mtime = te.mtime;
        // The OCI marks live in the last component's name.
        match format::oci_name(path.name()) {
            OciName::Opaque => {
                e.path = path.parent();
                e.kind = Kind::OpaqueMark;
                blank_mark(&mut e);
                count.add(&path)?;
                visit(&e, None)?;
                continue;
            }
            OciName::Whiteout(target) => {
                if target.is_empty() || target == b"." || target == b".." {
                    bail!("{path}: a whiteout naming no entry");
                }
                e.path = path.parent().join(target);
                e.kind = Kind::Whiteout;
                blank_mark(&mut e);
                count.add(&path)?;
                visit(&e, None)?;
                continue;
            }
            OciName::Plain => {}
        }
        e.kind = match ty {
            // GNU sparse files read back with their holes filled: a regular file.
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                Kind::File
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::HardLink,
            tar::EntryType::Char => Kind::CharDev,
            tar::EntryType::Block => Kind::BlockDev,
            tar::EntryType::Fifo => Kind::Fifo,
            // Extension headers (PAX local and global, GNU long names) are consumed by the
            // reader; anything else is unknown.
            other => bail!(
                "{path}: unsupported tar entry type {:?}",
                other.as_byte() as char
            ),
        };
        if path.is_root() && e.kind != Kind::Dir {
            bail!("the layer's root entry is not a directory");
        }
        match e.kind {
            Kind::File => e.size = te.size,
            Kind::Symlink => {
                let target = te
                    .link
                    .clone()
                    .ok_or_else(|| anyhow!("{path}: symlink without a target"))?;
                e.link = Some(target);
                symlinks.insert(path.as_bytes().to_vec());
            }
            Kind::HardLink => {
                let target = te
                    .link
                    .as_deref()
                    .ok_or_else(|| anyhow!("{path}: hard link without a target"))?;
                let target = RelPath::parse(target, false)
                    .with_context(|| format!("{path}: hard link target"))?;
                if target.is_root() || target == path {
                    bail!("{path}: hard link to {target}");
                }
                e.link = Some(target.as_bytes().to_vec());
            }
            Kind::CharDev | Kind::BlockDev => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                e.rdev = libc::makedev(major, minor);
                if e.kind == Kind::CharDev && format::is_whiteout_device(libc::S_IFCHR, e.rdev) {
                    e.kind = Kind::Whiteout;
                }
            }
            _ => {}
        }
        for (name, value) in &te.xattrs {
            push_xattr(&mut e, name, value, &limits)?;
        }
        finish_xattrs(&mut e, None);
        count.add(&path)?;
        if e.kind == Kind::File && want_content {
            visit(&e, Some(&mut reader.data()))?;
        } else {
            visit(&e, None)?;
        }
    }
    let tar = reader.into_inner();
    // Past the end-of-archive blocks: drain padding so digest checks see the whole blob.
    io::copy(tar, &mut io::sink()).context("reading the end of the layer")?;
    Ok(())
}

fn push_xattr(e: &mut Entry, name: &[u8], value: &[u8], limits: &Limits) -> Result<()> {
    if e.xattrs.len() >= limits.xattrs || value.len() > limits.xattr_value {
        bail!("{}: too many or too large xattrs", e.path);
    }
    e.xattrs.push((name.to_vec(), value.to_vec()));
    Ok(())
}

/// Decodes the union's marks from the xattrs and keeps only the public ones. `dir_holds`
/// says whether the entry's directory may hold kernel xattr whiteouts.
fn finish_xattrs(e: &mut Entry, dir_holds: Option<bool>) {
    if matches!(e.kind, Kind::Whiteout | Kind::OpaqueMark) {
        blank_mark(e);
        return;
    }
    let marks = format::entry_marks(e.xattrs.iter().map(|(n, v)| (&n[..], &v[..])));
    if e.kind == Kind::Dir {
        e.opaque = marks.opaque;
        if let Some(r) = marks.redirect {
            e.redirect = format::redirect_target(e.path.parent().as_bytes(), &r)
                .map(RelPath::from_normalised);
        }
    }
    // In a tar, a regular file carrying the whiteout xattr has no directory context the
    // mount would check; follow the kernel rule when the walker knows the directory.
    if e.kind == Kind::File && marks.whiteout_xattr && dir_holds.unwrap_or(false) && e.size == 0 {
        e.kind = Kind::Whiteout;
    }
    if e.kind == Kind::Whiteout {
        blank_mark(e);
    }
    e.xattrs.retain(|(n, _)| !format::is_overlay_xattr(n));
    e.xattrs.sort();
}

/// A whiteout or opaque mark carries no metadata of its own: every form reads the same.
fn blank_mark(e: &mut Entry) {
    let (path, kind) = (std::mem::take(&mut e.path), e.kind);
    *e = Entry::new(path, kind);
}

/// Walks a layer directory (parents before children, names sorted), without following
/// any symlink. With `want_content`, regular files are opened (`O_NOFOLLOW`) and passed.
pub fn walk_dir(
    root_fd: OwnedFd,
    want_content: bool,
    limits: Limits,
    visit: &mut Visit<'_>,
) -> Result<()> {
    let mut count = Counter::new(limits);
    let mut links: HashMap<(u64, u64), RelPath> = HashMap::new();
    let st = sys::fstat(root_fd.as_fd())?;
    let mut root_entry = Entry::new(RelPath::root(), Kind::Dir);
    fill_stat(&mut root_entry, &st);
    read_xattrs(root_fd.as_fd(), b"", &mut root_entry, &limits)?;
    let root_marks = format::entry_marks(root_entry.xattrs.iter().map(|(n, v)| (&n[..], &v[..])));
    finish_xattrs(&mut root_entry, None);
    visit(&root_entry, None)?;
    let mut stack: Vec<(OwnedFd, RelPath, bool)> =
        vec![(root_fd, RelPath::root(), root_marks.holds_xattr_whiteouts)];
    while let Some((dir, dpath, holds)) = stack.pop() {
        let mut ents = sys::read_dir(dir.as_fd()).with_context(|| format!("reading {dpath}"))?;
        ents.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subdirs = Vec::new();
        for ent in ents {
            let path = dpath.join(&ent.name);
            count.add(&path)?;
            let mut e = Entry::new(path.clone(), Kind::File);
            match format::oci_name(&ent.name) {
                OciName::Opaque => {
                    e.path = dpath.clone();
                    e.kind = Kind::OpaqueMark;
                    visit(&e, None)?;
                    continue;
                }
                OciName::Whiteout(target) => {
                    e.path = dpath.join(target);
                    e.kind = Kind::Whiteout;
                    visit(&e, None)?;
                    continue;
                }
                OciName::Plain => {}
            }
            let cname = sys::cstr(&ent.name)?;
            let st = sys::lstatat(dir.as_fd(), &cname).with_context(|| format!("stat {path}"))?;
            fill_stat(&mut e, &st);
            read_xattrs(dir.as_fd(), &ent.name, &mut e, &limits)?;
            let marks = format::entry_marks(e.xattrs.iter().map(|(n, v)| (&n[..], &v[..])));
            match e.kind {
                Kind::Symlink => {
                    e.link = Some(
                        sys::readlinkat(dir.as_fd(), &cname)
                            .with_context(|| format!("readlink {path}"))?,
                    );
                }
                Kind::CharDev if format::is_whiteout_device(st.st_mode, st.st_rdev) => {
                    e.kind = Kind::Whiteout;
                }
                Kind::File if st.st_nlink > 1 => {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = links.get(&key) {
                        e.kind = Kind::HardLink;
                        e.size = 0;
                        e.link = Some(first.as_bytes().to_vec());
                    } else {
                        links.insert(key, path.clone());
                    }
                }
                _ => {}
            }
            finish_xattrs(&mut e, Some(holds));
            if e.kind == Kind::Dir {
                let fd = sys::open_subdir(dir.as_fd(), &cname)
                    .with_context(|| format!("opening {path}"))?;
                visit(&e, None)?;
                subdirs.push((fd, path, marks.holds_xattr_whiteouts));
            } else if e.kind == Kind::File && want_content {
                let fd = sys::openat(dir.as_fd(), &cname, libc::O_RDONLY)
                    .with_context(|| format!("opening {path}"))?;
                let mut f = File::from(fd);
                visit(&e, Some(&mut f))?;
            } else {
                visit(&e, None)?;
            }
        }
        // Depth first, in name order: push in reverse so the first name is popped first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn fill_stat(e: &mut Entry, st: &sys::Stat) {
    e.kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFCHR => Kind::CharDev,
        libc::S_IFBLK => Kind::BlockDev,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => Kind::Socket,
        _ => Kind::File,
    };
    e.mode = st.st_mode & 0o7777;
    e.stamp = Some(Stamp {
        dev: st.st_dev,
        ino: st.st_ino,
        ctime_sec: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec,
        size: st.st_size as u64,
    });
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime = st.st_mtime;
    if e.kind == Kind::File {
        e.size = st.st_size as u64;
    }
    if matches!(e.kind, Kind::CharDev | Kind::BlockDev) {
        e.rdev = st.st_rdev;
    }
}

fn read_xattrs(dir: BorrowedFd<'_>, name: &[u8], e: &mut Entry, limits: &Limits) -> Result<()> {
    let list = match sys::listxattr_at(dir, name) {
        Ok(l) => l,
        Err(err) if err.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("listing xattrs of {}", e.path)),
    };
    for xname in sys::split_xattr_list(&list) {
        let value = match sys::getxattr_at(dir, name, &sys::cstr(xname)?) {
            Ok(v) => v,
            // Gone between list and get, or a namespace we may not read (trusted.* as a
            // user): not part of what this walker can see.
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENODATA | libc::EPERM)) => continue,
            Err(err) => return Err(err).with_context(|| format!("reading xattrs of {}", e.path)),
        };
        push_xattr(e, xname, &value, limits)?;
    }
    Ok(())
}
