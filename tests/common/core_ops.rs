//! The operations of [`super::ops`] run on the union core directly, through its `Core`
//! interface, with no FUSE and no mount: what the kernel's VFS checks before it sends a
//! request (a name that exists for mkdir, a directory for unlink, a symlink for an
//! `O_NOFOLLOW` open...) is done here, in the kernel's order, so the outcomes can be compared
//! with those the kernel's overlayfs gave to the same program.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use layerfs_fuse::{Core, Ctx, SetAttr, SetTime};
use layerfs_mount::Union;

use super::ops::{Op, Outcome, WriteHow};
use super::tree::{Meta, Tree};

const ROOT: u64 = 1;
/// The caller: this process (root; a truncation asks its capabilities through `/proc`).
fn ctx() -> Ctx {
    Ctx {
        uid: 0,
        gid: 0,
        pid: std::process::id(),
        // Modes below come with the umask applied, as without FUSE_DONT_MASK.
        umask: 0,
    }
}

fn fmt(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

fn umask() -> u32 {
    // SAFETY: umask only swaps the process mask; it is put back at once.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

/// What a path resolves to: its parent's node, its name, and the node if it exists.
struct At<'a> {
    parent: u64,
    name: &'a OsStr,
    st: Option<Found>,
}

/// A node found: its id (what later calls name it by) and the attributes it shows.
#[derive(Clone, Copy)]
struct Found {
    node: u64,
    st: libc::stat,
}

impl std::ops::Deref for Found {
    type Target = libc::stat;
    fn deref(&self) -> &libc::stat {
        &self.st
    }
}

impl From<layerfs_fuse::Entry> for Found {
    fn from(e: layerfs_fuse::Entry) -> Found {
        Found {
            node: e.node,
            st: e.attr,
        }
    }
}

/// Resolves `rel` as the kernel's path walk does, never following a symlink: one in a
/// directory position makes the operation `Skipped` (as on the mounted side).
fn resolve<'a>(u: &Union, rel: &'a str) -> Result<At<'a>, Outcome> {
    let comps: Vec<&str> = rel.split('/').collect();
    let mut dir = ROOT;
    for c in &comps[..comps.len() - 1] {
        let st = match u.lookup(dir, OsStr::new(c)) {
            Ok(e) => Found::from(e),
            Err(e) => return Err(Outcome::Errno(e.errno())),
        };
        match fmt(&st) {
            libc::S_IFLNK => return Err(Outcome::Skipped),
            libc::S_IFDIR => dir = st.node,
            _ => return Err(Outcome::Errno(libc::ENOTDIR)),
        }
    }
    let name = OsStr::new(comps[comps.len() - 1]);
    let st = match u.lookup(dir, name) {
        Ok(e) => Some(Found::from(e)),
        Err(e) if e.errno() == libc::ENOENT => None,
        Err(e) => return Err(Outcome::Errno(e.errno())),
    };
    Ok(At {
        parent: dir,
        name,
        st,
    })
}

fn done<T>(r: Result<T, layerfs_mount::Error>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Errno(e.errno()),
    }
}

/// What `open(O_NOFOLLOW|O_NONBLOCK)` of an existing `st` refuses before asking the
/// filesystem: a symlink (ELOOP), a directory opened for writing (EISDIR), a fifo opened
/// for writing with no reader (ENXIO).
fn open_check(st: &libc::stat, write: bool) -> Option<i32> {
    match fmt(st) {
        libc::S_IFLNK => Some(libc::ELOOP),
        libc::S_IFDIR if write => Some(libc::EISDIR),
        libc::S_IFIFO if write => Some(libc::ENXIO),
        _ => None,
    }
}

/// True when a directory position of `rel` is a symlink (as [`super::ops::apply`] checks
/// on a mount before running anything).
fn crosses_symlink(u: &Union, rel: &str) -> bool {
    let comps: Vec<&str> = rel.split('/').collect();
    let mut dir = ROOT;
    for c in &comps[..comps.len() - 1] {
        match u.lookup(dir, OsStr::new(c)) {
            Ok(e) if fmt(&e.attr) == libc::S_IFLNK => return true,
            Ok(e) if fmt(&e.attr) == libc::S_IFDIR => dir = e.node,
            _ => return false,
        }
    }
    false
}

/// Runs `op` on the core.
pub fn apply(u: &Union, op: &Op) -> Outcome {
    if super::ops::paths(op).iter().any(|p| crosses_symlink(u, p)) {
        return Outcome::Skipped;
    }
    match run(u, op) {
        Ok(o) | Err(o) => o,
    }
}

fn errno(e: layerfs_mount::Error) -> Outcome {
    Outcome::Errno(e.errno())
}

fn run(u: &Union, op: &Op) -> Result<Outcome, Outcome> {
    let mask = umask();
    Ok(match op {
        Op::Write { path, data, how } => {
            let at = resolve(u, path)?;
            let mut flags = libc::O_WRONLY;
            match how {
                WriteHow::Truncate => flags |= libc::O_TRUNC,
                WriteHow::Append => flags |= libc::O_APPEND,
                WriteHow::At(_) => {}
            }
            let (ino, fh) = match at.st {
                Some(st) => {
                    if let Some(e) = open_check(&st, true) {
                        return Err(Outcome::Errno(e));
                    }
                    (
                        st.node,
                        u.open(st.node, flags, false, ctx()).map_err(errno)?.fh,
                    )
                }
                None => {
                    let flags = flags | libc::O_CREAT;
                    let mode = libc::S_IFREG | (0o644 & !mask);
                    let (e, o) = u
                        .create(at.parent, at.name, mode, flags, ctx())
                        .map_err(errno)?;
                    (e.node, o.fh)
                }
            };
            let off = match how {
                WriteHow::At(off) => *off,
                WriteHow::Truncate => 0,
                // The kernel places an append at the size it knows.
                WriteHow::Append => u.getattr(ino).map_err(errno)?.attr.st_size as u64,
            };
            let r = u.write(ino, fh, off, data, ctx(), false);
            u.release(ino, fh);
            done(r)
        }
        Op::Truncate { path, len } => {
            let at = resolve(u, path)?;
            let st = at.st.ok_or(Outcome::Errno(libc::ENOENT))?;
            if let Some(e) = open_check(&st, true) {
                return Err(Outcome::Errno(e));
            }
            let fh = u
                .open(st.node, libc::O_WRONLY, false, ctx())
                .map_err(errno)?
                .fh;
            let set = SetAttr {
                size: Some(*len),
                fh: Some(fh),
                ..SetAttr::default()
            };
            let r = u.setattr(st.node, &set, ctx());
            u.release(st.node, fh);
            done(r)
        }
        Op::Mkdir { path, mode } => {
            let at = resolve(u, path)?;
            if at.st.is_some() {
                return Err(Outcome::Errno(libc::EEXIST));
            }
            done(u.mkdir(at.parent, at.name, mode & !mask, ctx()))
        }
        Op::Rmdir { path } => {
            let at = resolve(u, path)?;
            let st = at.st.ok_or(Outcome::Errno(libc::ENOENT))?;
            if fmt(&st) != libc::S_IFDIR {
                return Err(Outcome::Errno(libc::ENOTDIR));
            }
            done(u.rmdir(at.parent, at.name))
        }
        Op::Unlink { path } => {
            let at = resolve(u, path)?;
            let st = at.st.ok_or(Outcome::Errno(libc::ENOENT))?;
            if fmt(&st) == libc::S_IFDIR {
                return Err(Outcome::Errno(libc::EISDIR));
            }
            done(u.unlink(at.parent, at.name))
        }
        Op::Rename { from, to, flags } => rename(u, from, to, *flags)?,
        Op::Symlink { target, path } => {
            let at = resolve(u, path)?;
            if at.st.is_some() {
                return Err(Outcome::Errno(libc::EEXIST));
            }
            done(u.symlink(at.parent, at.name, target.as_bytes(), ctx()))
        }
        Op::Link { from, to } => {
            let src = resolve(u, from)?;
            let st = src.st.ok_or(Outcome::Errno(libc::ENOENT))?;
            let dst = resolve(u, to)?;
            if dst.st.is_some() {
                return Err(Outcome::Errno(libc::EEXIST));
            }
            if fmt(&st) == libc::S_IFDIR {
                return Err(Outcome::Errno(libc::EPERM));
            }
            done(u.link(st.node, dst.parent, dst.name))
        }
        Op::Mknod { path, kind } => {
            let at = resolve(u, path)?;
            if at.st.is_some() {
                return Err(Outcome::Errno(libc::EEXIST));
            }
            done(u.mknod(at.parent, at.name, kind | (0o640 & !mask), 0, ctx()))
        }
        Op::Chmod { path, mode } => {
            let st = existing(u, path)?;
            if fmt(&st) == libc::S_IFLNK {
                return Err(Outcome::Errno(libc::EOPNOTSUPP));
            }
            let set = SetAttr {
                mode: Some(*mode),
                ..SetAttr::default()
            };
            done(u.setattr(st.node, &set, ctx()))
        }
        Op::Chown { path, uid } => {
            let st = existing(u, path)?;
            let set = SetAttr {
                uid: Some(*uid),
                gid: Some(*uid),
                ..SetAttr::default()
            };
            done(u.setattr(st.node, &set, ctx()))
        }
        Op::Utime { path, secs } => {
            let st = existing(u, path)?;
            let t = std::time::UNIX_EPOCH + std::time::Duration::new(*secs as u64, 5);
            let set = SetAttr {
                atime: Some(SetTime::At(t)),
                mtime: Some(SetTime::At(t)),
                ..SetAttr::default()
            };
            done(u.setattr(st.node, &set, ctx()))
        }
        Op::SetXattr { path, name, value } => {
            let st = existing(u, path)?;
            xattr_check(&st, name)?;
            done(u.setxattr(st.node, OsStr::new(name), value, 0))
        }
        Op::RemoveXattr { path, name } => {
            let st = existing(u, path)?;
            xattr_check(&st, name)?;
            done(u.removexattr(st.node, OsStr::new(name)))
        }
        // Never drawn for the core (`ops::op` has no ACLs; the kernel's VFS applies them).
        Op::SetAcl { .. } => Outcome::Skipped,
        Op::Read { path } => {
            let st = existing(u, path)?;
            if let Some(e) = open_check(&st, false) {
                return Err(Outcome::Errno(e));
            }
            if fmt(&st) != libc::S_IFREG {
                return Ok(Outcome::Ok);
            }
            let fh = u
                .open(st.node, libc::O_RDONLY, false, ctx())
                .map_err(errno)?
                .fh;
            let r = read_all(u, st.node, fh);
            u.release(st.node, fh);
            match r {
                Ok(d) => Outcome::Data(d),
                Err(e) => errno(e),
            }
        }
    })
}

fn existing(u: &Union, path: &str) -> Result<Found, Outcome> {
    resolve(u, path)?.st.ok_or(Outcome::Errno(libc::ENOENT))
}

/// `user.*` xattrs exist only on regular files and directories (the VFS refuses others).
fn xattr_check(st: &libc::stat, name: &str) -> Result<(), Outcome> {
    let f = fmt(st);
    if name.starts_with("user.") && f != libc::S_IFREG && f != libc::S_IFDIR {
        return Err(Outcome::Errno(libc::EPERM));
    }
    Ok(())
}

fn read_all(u: &Union, ino: u64, fh: u64) -> Result<Vec<u8>, layerfs_mount::Error> {
    let mut out = Vec::new();
    loop {
        let d = u.read(ino, fh, out.len() as u64, 1 << 16)?;
        if d.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&d);
    }
}

/// `renameat2` with the VFS's checks, in its order (`do_renameat2`, `vfs_rename`).
fn rename(u: &Union, from: &str, to: &str, flags: u32) -> Result<Outcome, Outcome> {
    let exchange = flags & libc::RENAME_EXCHANGE != 0;
    let src = resolve(u, from)?;
    let dst = resolve(u, to)?;
    let sst = src.st.ok_or(Outcome::Errno(libc::ENOENT))?;
    if flags & libc::RENAME_NOREPLACE != 0 && dst.st.is_some() {
        return Err(Outcome::Errno(libc::EEXIST));
    }
    if exchange && dst.st.is_none() {
        return Err(Outcome::Errno(libc::ENOENT));
    }
    // The source an ancestor of the target, or the target of the source.
    let inside =
        |a: &str, b: &str| a.len() > b.len() && a.starts_with(b) && a[b.len()..].starts_with('/');
    if inside(to, from) {
        return Err(Outcome::Errno(libc::EINVAL));
    }
    if inside(from, to) {
        let e = if exchange {
            libc::EINVAL
        } else {
            libc::ENOTEMPTY
        };
        return Err(Outcome::Errno(e));
    }
    if let Some(dst_st) = dst.st {
        // The same inode (the kernel's, a node): nothing to do.
        if dst_st.node == sst.node {
            return Ok(Outcome::Ok);
        }
        if !exchange {
            let (sd, dd) = (fmt(&sst) == libc::S_IFDIR, fmt(&dst_st) == libc::S_IFDIR);
            if sd && !dd {
                return Err(Outcome::Errno(libc::ENOTDIR));
            }
            if !sd && dd {
                return Err(Outcome::Errno(libc::EISDIR));
            }
        }
    }
    Ok(done(
        u.rename(src.parent, src.name, dst.parent, dst.name, flags),
    ))
}

/// The merged tree as the core shows it, in the form [`super::tree::snapshot`] gives for
/// a mount.
pub fn snapshot(u: &Union) -> Tree {
    let mut t = Tree::default();
    let root = u.getattr(ROOT).unwrap().attr;
    walk(u, ROOT, root, Path::new(""), &mut t);
    t
}

fn walk(u: &Union, ino: u64, st: libc::stat, rel: &Path, t: &mut Tree) {
    let f = fmt(&st);
    let is_dir = f == libc::S_IFDIR;
    let content = (f == libc::S_IFREG).then(|| {
        let fh = u.open(ino, libc::O_RDONLY, false, ctx()).unwrap().fh;
        let d = read_all(u, ino, fh).unwrap();
        u.release(ino, fh);
        d
    });
    let target =
        (f == libc::S_IFLNK).then(|| PathBuf::from(OsStr::from_bytes(&u.readlink(ino).unwrap())));
    let mut xattrs = std::collections::BTreeMap::new();
    let list = u.listxattr(ino).unwrap();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("security.") {
            let v = u.getxattr(ino, OsStr::new(&name)).unwrap();
            xattrs.insert(name, v);
        }
    }
    let meta = Meta {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: (!is_dir).then_some(st.st_size as u64),
        nlink: (!is_dir).then_some(st.st_nlink),
        rdev: st.st_rdev,
        content,
        target,
        xattrs,
    };
    t.meta.insert(rel.to_path_buf(), meta);
    t.ino.insert(rel.to_path_buf(), st.st_ino);
    if !is_dir {
        return;
    }
    let mut names = Vec::new();
    u.readdir(ino, 0, false, &mut |d| {
        if d.name != b"." && d.name != b".." {
            names.push(d.name.to_vec());
        }
        false
    })
    .unwrap();
    names.sort();
    for n in names {
        let name = OsStr::from_bytes(&n);
        let child = u.lookup(ino, name).unwrap();
        walk(u, child.node, child.attr, &rel.join(name), t);
    }
}
