//! Namespace changes of a writable mount: new entries, removal, rename, hard links. Each
//! runs under the exclusive namespace lock and leaves the upper in the kernel's format at
//! every step a crash could interrupt. Attribute changes are in `attrs.rs`.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use layerfs_fuse::{Ctx, Entry};

use super::inode::Node;
use super::{is_whiteout, Union};
use crate::error::{Error, Result};
use crate::format;
use crate::sys::{self, Stat};

fn name_of(name: &OsStr) -> Result<&[u8]> {
    if !sys::is_component(name) {
        return Err(Error::Invalid);
    }
    Ok(name.as_bytes())
}

/// A name a new entry is to take: `.wh.*` names are the OCI format's and would hide
/// another entry, so they are refused (as fuse-overlayfs does).
fn new_name_of(name: &OsStr) -> Result<&[u8]> {
    let name = name_of(name)?;
    if format::is_reserved(name) {
        return Err(Error::Invalid);
    }
    Ok(name)
}

pub(super) fn cname(name: &[u8]) -> Result<std::ffi::CString> {
    sys::cstr(name).map_err(Error::io("name"))
}

/// A directory's default ACL: what its new entries inherit.
const ACL_DEFAULT: &CStr = c"system.posix_acl_default";

/// What to make for a new entry.
pub(super) enum Make<'a> {
    File {
        flags: i32,
    },
    Node {
        rdev: u64,
    },
    /// A device 0:0 made through the mount: a nested overlay's whiteout (`nested.rs`).
    NestedWhiteout,
    Dir,
    Symlink {
        target: &'a [u8],
    },
}

/// The mode a new entry of `mode` gets in upper directory `pfd`, and the directory's
/// default ACL: one replaces the umask (the upper filesystem applies it, our own umask being
/// 0); otherwise the caller's umask applies, as in the VFS.
pub(super) fn new_mode(pfd: BorrowedFd<'_>, mode: u32, ctx: Ctx) -> Result<(u32, Option<Vec<u8>>)> {
    let default_acl = match sys::fgetxattr(pfd, ACL_DEFAULT) {
        Ok(v) => Some(v),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => None,
        Err(e) => return Err(Error::io("getxattr default ACL")(e)),
    };
    let mode = match default_acl {
        Some(_) => mode,
        None => mode & !(ctx.umask & 0o777),
    };
    Ok((mode, default_acl))
}

impl Union {
    /// The owner of a new entry in a directory with attributes `pst`: the caller (as the
    /// host sees it), the group of a setgid directory.
    pub(super) fn new_owner(&self, ctx: Ctx, pst: &Stat) -> (u32, u32) {
        let uid = self.cfg.ids.store_uid(ctx.uid);
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            self.cfg.ids.store_gid(ctx.gid)
        };
        (uid, gid)
    }

    /// Creates `name` in `dir` (an upper directory fd) as `what`, owned by `owner`.
    fn make_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        what: &Make<'_>,
        mode: u32,
        owner: (u32, u32),
        pst: &Stat,
    ) -> io::Result<Option<OwnedFd>> {
        let fd = match what {
            Make::File { flags } => Some(sys::create_excl(dir, name, *flags, mode & 0o7777)?),
            Make::Node { rdev } => {
                sys::mknodat(dir, name, mode, *rdev)?;
                None
            }
            Make::NestedWhiteout => {
                format::write_nested_whiteout(
                    dir,
                    name,
                    mode,
                    self.upper().map_or(format::MarkNs::Trusted, |u| u.ns),
                )?;
                None
            }
            Make::Dir => {
                sys::mkdirat(dir, name, mode & 0o7777)?;
                None
            }
            Make::Symlink { target } => {
                sys::symlinkat(&sys::cstr(target)?, dir, name)?;
                None
            }
        };
        let fs_gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            sys::getegid()
        };
        let finish = || -> io::Result<()> {
            if self.overrides() && super::overrides::takes_override(mode) {
                return self.override_new(dir, name, owner, mode);
            }
            if owner != (sys::geteuid(), fs_gid) {
                // The mode the filesystem gave it (the request cut by a default ACL, set-gid
                // inherited by a directory), which chown's clearing of set-id bits must
                // not change.
                let made = sys::lstatat(dir, name)?.st_mode & 0o7777;
                match sys::lchownat(dir, name, owner.0, owner.1) {
                    // Squashed owners: the new entry shows the same owned by the daemon.
                    Err(e) if self.cfg.ids.squashes() && e.raw_os_error() == Some(libc::EPERM) => {
                        return Ok(())
                    }
                    r => r?,
                }
                if made & (libc::S_ISUID | libc::S_ISGID) != 0
                    && !matches!(what, Make::Symlink { .. })
                {
                    sys::chmodat(dir, name, made)?;
                }
            }
            Ok(())
        };
        if let Err(e) = finish() {
            let flags = if matches!(what, Make::Dir) {
                libc::AT_REMOVEDIR
            } else {
                0
            };
            let _ = sys::unlinkat(dir, name, flags);
            return Err(e);
        }
        Ok(fd)
    }

    /// Creates a new entry `name` in directory `parent`: in place, or over a whiteout by
    /// building it in the workdir and swapping it in (a directory made over a whiteout is
    /// opaque, as with the kernel).
    pub(super) fn make_entry(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        what: Make<'_>,
        ctx: Ctx,
    ) -> Result<(Entry, Option<OwnedFd>)> {
        let name = new_name_of(name)?;
        let _g = self.exclusive();
        let (dir, dloc) = self.live_dir(parent)?;
        if self.resolve(&dir, &dloc, name)?.is_some() {
            return Err(Error::Exists);
        }
        if matches!(what, Make::NestedWhiteout) {
            self.mark_nested(&dir)?;
        }
        let pfd = self.ensure_upper_dir(&dir)?;
        let pst = sys::fstat(pfd.as_fd()).map_err(Error::io("fstat"))?;
        let owner = self.new_owner(ctx, &pst);
        let (mode, default_acl) = new_mode(pfd.as_fd(), mode, ctx)?;
        let c = cname(name)?;
        self.kernel_whiteout_for(pfd.as_fd(), &c)?;
        let over_whiteout = matches!(sys::lstatat(pfd.as_fd(), &c), Ok(st) if is_whiteout(&st));
        let fd = if over_whiteout {
            // Built in a private directory of the workdir that passes on what the parent
            // would (its default ACL, its set-gid group), then swapped in.
            let tmp = self.upper()?.work.temp_name();
            let (work, up) = (self.work()?, self.upper()?);
            sys::mkdirat(work, &tmp, 0o700).map_err(Error::io("mkdir"))?;
            let made = (|| {
                let tdir = sys::open_subdir(work, &tmp)?;
                if let Some(acl) = &default_acl {
                    sys::setxattr_at(tdir.as_fd(), b"", ACL_DEFAULT, acl, 0)?;
                }
                if pst.st_mode & libc::S_ISGID != 0 {
                    sys::fchown(tdir.as_fd(), u32::MAX, pst.st_gid)?;
                    sys::fchmod(tdir.as_fd(), 0o700 | libc::S_ISGID)?;
                }
                let fd = self.make_at(tdir.as_fd(), &c, &what, mode, owner, &pst)?;
                if matches!(what, Make::Dir) {
                    up.write_opaque(tdir.as_fd(), name)?;
                }
                if up.rename_flags {
                    sys::renameat2(tdir.as_fd(), &c, pfd.as_fd(), &c, libc::RENAME_EXCHANGE)?;
                } else {
                    // No exchange on this filesystem: the whiteout goes, then the entry
                    // comes (under the namespace lock; a crash between shows the lower).
                    sys::unlinkat(pfd.as_fd(), &c, 0)?;
                    sys::renameat2(tdir.as_fd(), &c, pfd.as_fd(), &c, 0)?;
                }
                Ok(fd)
            })();
            // Either the new entry (failed) or the whiteout (swapped) is left in it.
            self.discard(&tmp);
            made.map_err(Error::io("create over whiteout"))?
        } else {
            self.make_at(pfd.as_fd(), &c, &what, mode, owner, &pst)
                .map_err(Error::io("create"))?
        };
        let (node, st) = self
            .child(&dir, &dir.loc(), name, true)?
            .ok_or(Error::Bug("created entry not found"))?;
        Ok((self.entry_of(&node, st), fd))
    }

    /// Turns a whiteout of another form (OCI `.wh.NAME`, kernel xattr form) hiding name `c`
    /// of upper directory `pfd` into the kernel's, before a new entry takes the name: the
    /// upper we write stays in the kernel's format.
    fn kernel_whiteout_for(&self, pfd: BorrowedFd<'_>, c: &CStr) -> Result<()> {
        let tmp = self.upper()?.work.temp_name();
        format::kernel_whiteout_for(pfd, c, self.work()?, &tmp).map_err(Error::io("whiteout"))
    }

    /// `unlink` (`rmdir: false`) or `rmdir`: removes the upper entry, and leaves a whiteout
    /// where a lower entry of that name would show again.
    pub(super) fn remove(&self, parent: u64, name: &OsStr, rmdir: bool) -> Result<()> {
        let name = name_of(name)?;
        let _g = self.exclusive();
        let dir = self.node(parent)?;
        let dloc = dir.loc();
        let (node, _, at) = self
            .child_at(&dir, &dloc, name, false)?
            .ok_or(Error::NotFound)?;
        let r = self.remove_node(&dir, name, &node, &at, rmdir);
        self.table.drop_unreferenced(node.id);
        r
    }

    fn remove_node(
        &self,
        dir: &Arc<Node>,
        name: &[u8],
        node: &Arc<Node>,
        at: &super::Loc,
        rmdir: bool,
    ) -> Result<()> {
        match (rmdir, node.is_dir) {
            (true, false) => return Err(Error::NotDir),
            (false, true) => return Err(Error::IsDir),
            _ => {}
        }
        if rmdir && !self.list(node)?.is_empty() {
            return Err(Error::NotEmpty);
        }
        let dloc = dir.loc();
        let c = cname(name)?;
        let lower_visible = self.lower_has(&dloc, name)?;
        if at.upper {
            let pfd = self.upper_dir(dir)?;
            self.keep_alive(node, dir, pfd.as_fd(), &c)?;
            if lower_visible {
                let tmp = self.swap_for_whiteout(pfd.as_fd(), name)?;
                self.discard(&tmp);
            } else if rmdir {
                match sys::unlinkat(pfd.as_fd(), &c, libc::AT_REMOVEDIR) {
                    Ok(()) => {}
                    // Whiteouts inside: move it out of sight, then clear it.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                        let tmp = self.upper()?.work.temp_name();
                        sys::renameat2(pfd.as_fd(), &c, self.work()?, &tmp, 0)
                            .map_err(Error::io("rename to workdir"))?;
                        self.discard(&tmp);
                    }
                    Err(e) => return Err(Error::io("rmdir")(e)),
                }
            } else {
                sys::unlinkat(pfd.as_fd(), &c, 0).map_err(Error::io("unlink"))?;
            }
        } else {
            let pfd = self.ensure_upper_dir(dir)?;
            format::write_whiteout(pfd.as_fd(), &c).map_err(Error::io("mknod whiteout"))?;
        }
        node.forget_name(dir, name);
        Ok(())
    }

    /// Before upper entry `c` of `pfd` (directory `dir`, node `node`) leaves the tree: when
    /// it is the last name the node knows, keep its inode open while the kernel holds the
    /// node (open files keep working, and the number cannot be reused for a new file);
    /// forget its number's mapping once the inode has no name left.
    fn keep_alive(
        &self,
        node: &Node,
        dir: &Arc<Node>,
        pfd: BorrowedFd<'_>,
        c: &CStr,
    ) -> Result<()> {
        if node.is_dir {
            let _ = self.upper_dir(node);
            return Ok(());
        }
        let st = sys::lstatat(pfd, c).map_err(Error::io("lstat"))?;
        if st.st_nlink <= 1 {
            self.upper_inos.remove(&st.st_ino);
        }
        if node.only_name(dir, c.to_bytes()) && node.detached.get().is_none() {
            let fd = sys::openat(pfd, c, libc::O_PATH).map_err(Error::io("open O_PATH"))?;
            self.orphan(node, fd.as_fd())?;
            let _ = node.detached.set(fd);
        }
        Ok(())
    }

    /// Marks how a directory about to move finds its lower content at the new place: a
    /// redirect to where that content is, or opaque for a pure upper directory landing on a
    /// name where a lower directory would otherwise merge.
    fn prepare_moved_dir(
        &self,
        node: &Node,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        new_dloc: &super::Loc,
        new_name: &[u8],
    ) -> Result<()> {
        if !node.is_dir {
            return Ok(());
        }
        match &node.loc().lower {
            Some(rel) => {
                let natural = new_dloc.lower.as_ref().map(|l| super::join(l, new_name));
                if natural.as_deref() == Some(rel) {
                    match sys::removexattr_at(pfd, name, self.upper()?.ns.redirect()) {
                        Ok(()) => Ok(()),
                        Err(e)
                            if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(Error::io("removexattr redirect")(e)),
                    }
                } else if !self.upper()?.xattrs {
                    Err(Error::CrossDevice(
                        "a lower directory, on an upper without xattrs",
                    ))
                } else if !self.cfg.redirects {
                    Err(Error::CrossDevice(
                        "a lower directory, without redirect_dir=on",
                    ))
                } else {
                    let mut v = b"/".to_vec();
                    if rel.as_ref() != b"." {
                        v.extend_from_slice(rel);
                    }
                    sys::setxattr_at(pfd, name, self.upper()?.ns.redirect(), &v, 0)
                        .map_err(Error::io("setxattr redirect"))
                }
            }
            None if self.lower_has_dir(new_dloc, new_name)? => self
                .upper()?
                .write_opaque(pfd, name)
                .map_err(Error::io("mark opaque")),
            None => Ok(()),
        }
    }

    /// Gives upper directory `name` of `dir` (`node`, with lower content) a redirect to the
    /// lower directory it merges where it is, unless it has one: the same view, written as
    /// the kernel writes it for a rename that then fails.
    fn redirect_in_place(&self, node: &Node, dir: &Arc<Node>, name: &[u8]) -> Result<()> {
        let Some(rel) = node.loc().lower.filter(|_| node.is_dir) else {
            return Ok(());
        };
        let (up, pfd) = (self.upper()?, self.upper_dir(dir)?);
        if !up.xattrs || !self.cfg.redirects {
            return Ok(());
        }
        match sys::getxattr_at(pfd.as_fd(), name, up.ns.redirect()) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
                let v = [b"/".as_slice(), &rel].concat();
                sys::setxattr_at(pfd.as_fd(), name, up.ns.redirect(), &v, 0)
                    .map_err(Error::io("setxattr redirect"))
            }
            Err(e) => Err(Error::io("getxattr redirect")(e)),
        }
    }

    /// Removes the whiteouts an (otherwise empty) upper directory holds.
    fn clear_whiteouts(&self, dir: &Node) -> Result<()> {
        let fd = self.upper_dir(dir)?;
        let d = sys::open_subdir(fd.as_fd(), c".").map_err(Error::io("open upper"))?;
        for e in sys::read_dir(d.as_fd()).map_err(Error::io("getdents"))? {
            sys::unlinkat(d.as_fd(), &cname(&e.name)?, 0).map_err(Error::io("unlink whiteout"))?;
        }
        Ok(())
    }

    pub(super) fn rename(
        &self,
        p1: u64,
        n1: &OsStr,
        p2: u64,
        n2: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let whiteout = flags & libc::RENAME_WHITEOUT != 0;
        let known = libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE | libc::RENAME_WHITEOUT;
        if flags & !known != 0 || (exchange && (noreplace || whiteout)) {
            return Err(Error::Invalid);
        }
        if whiteout {
            // The whiteout left at the old name is a nested overlay's (`nested.rs`).
            self.nested_upper()?;
        }
        let (n1, n2) = (name_of(n1)?, new_name_of(n2)?);
        let _g = self.exclusive();
        let (d1, d2) = (self.node(p1)?, self.node(p2)?);
        if !d1.is_dir || !d2.is_dir {
            return Err(Error::NotDir);
        }
        let (src, _) = self
            .child(&d1, &d1.loc(), n1, false)?
            .ok_or(Error::NotFound)?;
        let dst = self.child(&d2, &d2.loc(), n2, false)?.map(|(n, _)| n);
        // Each node acts through the name being renamed (copy-up and rename use it).
        src.focus(&d1, n1);
        if let Some(d) = &dst {
            d.focus(&d2, n2);
        }
        let r = self.rename_nodes(&d1, n1, &src, &d2, n2, dst.as_ref(), flags);
        self.table.drop_unreferenced(src.id);
        if let Some(d) = dst {
            self.table.drop_unreferenced(d.id);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn rename_nodes(
        &self,
        d1: &Arc<Node>,
        n1: &[u8],
        src: &Arc<Node>,
        d2: &Arc<Node>,
        n2: &[u8],
        dst: Option<&Arc<Node>>,
        flags: u32,
    ) -> Result<()> {
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        if exchange && dst.is_none() {
            return Err(Error::NotFound);
        }
        if noreplace && dst.is_some() {
            return Err(Error::Exists);
        }
        if Arc::ptr_eq(d1, d2) && n1 == n2 {
            return Ok(());
        }
        if let (Some(dn), false) = (dst, exchange) {
            match (src.is_dir, dn.is_dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                _ => {}
            }
            if Arc::ptr_eq(src, dn) {
                return Ok(()); // two names of one file: nothing to do
            }
            // A target with lower content is checked before anything is copied up, as the
            // kernel checks it (`ovl_check_empty_dir`); an upper-only one only once the
            // source is copied up (below): the kernel leaves that case to the rename in its
            // upper, and the copy stays when it fails.
            if dn.is_dir && dn.loc().lower.is_some() && !self.list(dn)?.is_empty() {
                return Err(Error::NotEmpty);
            }
        }
        // A directory with lower content that cannot get a redirect: EXDEV before anything
        // is copied up, as the kernel (`ovl_can_move`).
        let (l1, l2) = (d1.loc(), d2.loc());
        let unmovable = |n: &Node, to: &super::Loc, name: &[u8]| -> Result<bool> {
            let Some(rel) = n.loc().lower.filter(|_| n.is_dir) else {
                return Ok(false);
            };
            let natural = to.lower.as_ref().map(|l| super::join(l, name));
            let redirects = self.cfg.redirects && self.upper()?.xattrs;
            Ok(!redirects && natural.as_deref() != Some(&rel))
        };
        if unmovable(src, &l2, n2)?
            || (exchange && dst.is_some_and(|d| unmovable(d, &l1, n1).unwrap_or(true)))
        {
            return Err(Error::CrossDevice(
                "a directory with lower content, no redirect",
            ));
        }
        // Whether a nested whiteout moves (a nested overlay moves the ones it makes in its
        // workdir into place): the directory it lands in is marked as holding one.
        let nested = (
            self.is_nested(src),
            exchange && dst.is_some_and(|d| self.is_nested(d)),
        );
        self.copy_up(src, true)?;
        self.fill_metacopy(src, true)?;
        if let (Some(dn), false) = (dst, exchange) {
            if dn.is_dir && dn.loc().lower.is_none() && !self.list(dn)?.is_empty() {
                // The kernel has given a directory with lower content its redirect by
                // then (`ovl_set_redirect`, naming where it is) when the upper refuses.
                self.redirect_in_place(src, d1, n1)?;
                return Err(Error::NotEmpty);
            }
        }
        if let (Some(dn), true) = (dst, exchange) {
            self.copy_up(dn, true)?;
            self.fill_metacopy(dn, true)?;
        }
        // Validated: the marks for moved nested whiteouts; one left at the old name
        // (`RENAME_WHITEOUT`) is built in the workdir now, so that nothing after the rename
        // allocates (`nested.rs`).
        if nested.0 {
            self.mark_nested(d2)?;
        }
        if nested.1 {
            self.mark_nested(d1)?;
        }
        let left = match flags & libc::RENAME_WHITEOUT {
            0 => None,
            _ => Some(self.nested_whiteout_in_work(d1)?),
        };
        let r = self.move_upper(d1, n1, src, d2, n2, dst, exchange);
        match (left, r) {
            (Some(tmp), Ok(())) => self.nested_whiteout_into(&tmp, d1, n1),
            (Some(tmp), Err(e)) => {
                self.discard(&tmp);
                Err(e)
            }
            (None, r) => r,
        }
    }

    /// The rename itself, in the upper, once validated and copied up.
    #[allow(clippy::too_many_arguments)]
    fn move_upper(
        &self,
        d1: &Arc<Node>,
        n1: &[u8],
        src: &Arc<Node>,
        d2: &Arc<Node>,
        n2: &[u8],
        dst: Option<&Arc<Node>>,
        exchange: bool,
    ) -> Result<()> {
        let pf1 = self.upper_dir(d1)?;
        let pf2 = self.ensure_upper_dir(d2)?;
        let (l1, l2) = (d1.loc(), d2.loc());
        let (c1, c2) = (cname(n1)?, cname(n2)?);
        self.prepare_moved_dir(src, pf1.as_fd(), n1, &l2, n2)?;
        if let (Some(dn), true) = (dst, exchange) {
            self.prepare_moved_dir(dn, pf2.as_fd(), n2, &l1, n1)?;
            sys::renameat2(pf1.as_fd(), &c1, pf2.as_fd(), &c2, libc::RENAME_EXCHANGE)
                .map_err(Error::io("rename exchange"))?;
            src.renamed((d1, n1), (d2, n2));
            dn.renamed((d2, n2), (d1, n1));
            return Ok(());
        }
        if let Some(dn) = dst {
            if dn.loc().upper {
                self.keep_alive(dn, d2, pf2.as_fd(), &c2)?;
                if dn.is_dir {
                    self.clear_whiteouts(dn)?;
                }
            }
        }
        if dst.is_none() {
            self.kernel_whiteout_for(pf2.as_fd(), &c2)?;
        }
        let need_whiteout = self.lower_has(&l1, n1)?;
        let dst_is_whiteout = matches!(sys::lstatat(pf2.as_fd(), &c2), Ok(st) if is_whiteout(&st));
        if dst_is_whiteout && src.is_dir {
            // A directory cannot replace a non-directory: swap, then drop or keep the
            // whiteout now at the old name.
            if self.upper()?.rename_flags {
                sys::renameat2(pf1.as_fd(), &c1, pf2.as_fd(), &c2, libc::RENAME_EXCHANGE)
                    .map_err(Error::io("rename exchange"))?;
                if !need_whiteout {
                    sys::unlinkat(pf1.as_fd(), &c1, 0).map_err(Error::io("unlink whiteout"))?;
                }
            } else {
                // No exchange here: drop the whiteout, move, whiteout the old name.
                sys::unlinkat(pf2.as_fd(), &c2, 0).map_err(Error::io("unlink whiteout"))?;
                sys::renameat2(pf1.as_fd(), &c1, pf2.as_fd(), &c2, 0)
                    .map_err(Error::io("rename"))?;
                if need_whiteout {
                    format::write_whiteout(pf1.as_fd(), &c1)
                        .map_err(Error::io("mknod whiteout"))?;
                }
            }
        } else if need_whiteout {
            match sys::renameat2(pf1.as_fd(), &c1, pf2.as_fd(), &c2, libc::RENAME_WHITEOUT) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) => {
                    sys::renameat2(pf1.as_fd(), &c1, pf2.as_fd(), &c2, 0)
                        .map_err(Error::io("rename"))?;
                    format::write_whiteout(pf1.as_fd(), &c1)
                        .map_err(Error::io("mknod whiteout"))?;
                }
                Err(e) => return Err(Error::io("rename")(e)),
            }
        } else {
            sys::renameat2(pf1.as_fd(), &c1, pf2.as_fd(), &c2, 0).map_err(Error::io("rename"))?;
        }
        src.renamed((d1, n1), (d2, n2));
        if let Some(dn) = dst {
            dn.forget_name(d2, n2);
        }
        Ok(())
    }

    pub(super) fn link(&self, ino: u64, parent: u64, name: &OsStr) -> Result<Entry> {
        let name = new_name_of(name)?;
        let _g = self.exclusive();
        let node = self.node(ino)?;
        if node.is_dir {
            return Err(Error::NotPermitted("link to a directory"));
        }
        let dir = self.node(parent)?;
        if self.resolve(&dir, &dir.loc(), name)?.is_some() {
            return Err(Error::Exists);
        }
        if self.is_nested(&node) {
            // A nested overlay shares one whiteout among names (`nested.rs`).
            self.mark_nested(&dir)?;
        }
        self.copy_up(&node, true)?;
        self.fill_metacopy(&node, true)?;
        let loc = node.loc();
        // A node with no name (an `O_TMPFILE` file; the kernel checked it may be linked)
        // is linked through its own fd.
        let pf1 = match (loc.unlinked, node.detached.get()) {
            (false, _) => Some(self.upper_dir(loc.parent.as_ref().ok_or(Error::Invalid)?)?),
            (true, Some(_)) => None,
            (true, None) => return Err(Error::NotFound),
        };
        let pf2 = self.ensure_upper_dir(&dir)?;
        let (c1, c2) = (cname(&loc.name)?, cname(name)?);
        let link = |d: BorrowedFd<'_>, n: &CStr| match (&pf1, node.detached.get()) {
            (Some(p), _) => sys::linkat(p.as_fd(), &c1, d, n),
            (None, Some(fd)) => sys::link_fd(fd.as_fd(), d, n),
            (None, None) => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        self.kernel_whiteout_for(pf2.as_fd(), &c2)?;
        if matches!(sys::lstatat(pf2.as_fd(), &c2), Ok(st) if is_whiteout(&st)) {
            let tmp = self.upper()?.work.temp_name();
            link(self.work()?, &tmp).map_err(Error::io("link"))?;
            if let Err(e) = sys::renameat2(self.work()?, &tmp, pf2.as_fd(), &c2, 0) {
                self.discard(&tmp);
                return Err(Error::io("rename over whiteout")(e));
            }
        } else {
            link(pf2.as_fd(), &c2).map_err(Error::io("link"))?;
        }
        // Same inode as the first name: its origin (or remembered number) is shared.
        let st = sys::lstatat(pf2.as_fd(), &c2).map_err(Error::io("lstat"))?;
        let st = self.shown_upper(pf2.as_fd(), name, st)?;
        node.seen_at(super::Loc {
            parent: Some(dir.clone()),
            name: name.into(),
            upper: true,
            lower: loc.lower.clone(),
            unlinked: false,
        });
        self.table.count(node.id);
        Ok(self.entry_of(
            &node,
            self.cfg.present(self.overridden(&node, st), node.ino()),
        ))
    }

    /// Moves upper entry `name` of `pfd` into the workdir, leaving a whiteout in its place
    /// in one step; returns the workdir name of what was moved.
    fn swap_for_whiteout(&self, pfd: BorrowedFd<'_>, name: &[u8]) -> Result<std::ffi::CString> {
        let cname = sys::cstr(name).map_err(Error::io("name"))?;
        let tmp = self.upper()?.work.temp_name();
        match sys::renameat2(pfd, &cname, self.work()?, &tmp, libc::RENAME_WHITEOUT) {
            Ok(()) => return Ok(tmp),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) => {}
            Err(e) => return Err(Error::io("rename whiteout")(e)),
        }
        if !self.upper()?.rename_flags {
            // Nor RENAME_EXCHANGE: move it out, then the whiteout in (under the lock).
            sys::renameat2(pfd, &cname, self.work()?, &tmp, 0).map_err(Error::io("rename"))?;
            format::write_whiteout(pfd, &cname).map_err(Error::io("mknod whiteout"))?;
            return Ok(tmp);
        }
        // No RENAME_WHITEOUT here: build the whiteout in the workdir and swap it in.
        format::write_whiteout(self.work()?, &tmp).map_err(Error::io("mknod whiteout"))?;
        sys::renameat2(self.work()?, &tmp, pfd, &cname, libc::RENAME_EXCHANGE)
            .map_err(Error::io("rename exchange"))?;
        Ok(tmp)
    }

    /// Removes a workdir temporary (a file, or a directory with its whiteouts).
    fn discard(&self, tmp: &std::ffi::CStr) {
        let Ok(work) = self.work() else { return };
        if let Err(e) = crate::upper::copyup::remove_tree(work, tmp.to_bytes()) {
            log::warn!("workdir: could not remove {tmp:?}: {e}");
        }
    }
}
