//! The INIT handshake: what the adapter asks of the kernel (capabilities, limits,
//! passthrough, the writeback cache), from what the core says of its files.

use fuser::{InitFlags, KernelConfig};
use log::debug;

use crate::{Adapter, Core, FileIo};

impl<C: Core> Adapter<C> {
    /// Takes the capabilities this adapter and its core want from those `config` offers,
    /// and records what was granted.
    pub(crate) fn negotiate(&mut self, config: &mut KernelConfig) {
        // READDIRPLUS for every chunk of a listing, not READDIRPLUS_AUTO: with it the kernel
        // asks with attributes only at offset 0, and a program that lists a whole
        // directory before it stats the names (tar, du, containers/storage's diff walk)
        // then costs a LOOKUP per name past the first chunk (2,850 per walk of a Debian
        // base by podman). A listing of names alone (`find -name` over the same base:
        // 1,583 requests against 1,582) costs the daemon the attributes, which come from
        // the lower index, read once, and the kernel an inode per name.
        let want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_SPLICE_READ
            | InitFlags::FUSE_SPLICE_WRITE
            | InitFlags::FUSE_SPLICE_MOVE
            // The kernel then caches ACLs per inode: `ls -l` asks for
            // system.posix_acl_access on every file, and only the first ask per inode
            // reaches us.
            | InitFlags::FUSE_POSIX_ACL
            // The umask comes apart from the mode, so a default ACL can replace it (the
            // kernel would otherwise cut the mode with it first).
            | InitFlags::FUSE_DONT_MASK
            // O_TRUNC comes with OPEN, not as a separate SETATTR.
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            // SETXATTR then says when a POSIX ACL change must drop the set-gid bit (a caller
            // outside the file's group), which the daemon cannot tell itself.
            | InitFlags::FUSE_SETXATTR_EXT;
        // Set-id bits are the core's to drop: the kernel then stops asking for
        // security.capability before every write (and for attributes before a chown).
        let want = if self.opts.acl {
            want
        } else {
            want - InitFlags::FUSE_POSIX_ACL
        };
        let want = if self.core.changes_behind() {
            want | InitFlags::FUSE_AUTO_INVAL_DATA
        } else {
            want
        };
        let want = if !self.core.files_immutable() && self.core.drops_setid_bits() {
            want | InitFlags::FUSE_HANDLE_KILLPRIV_V2
        } else {
            want
        };
        let _ = config.add_capabilities(want & config.capabilities());
        self.dont_mask = config.capabilities().contains(InitFlags::FUSE_DONT_MASK);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        // Passthrough where the kernel grants it, for both kinds of mount: the kernel then
        // reads and writes the real files itself. It refuses passthrough together with the
        // writeback cache (fs/fuse/inode.c), which a writable mount takes otherwise.
        let passthrough = self.opts.file_io == FileIo::Passthrough
            && config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.passthrough.set_enabled(passthrough);
        self.core.passthrough_granted(passthrough);
        if !passthrough && !self.core.files_immutable() && !self.core.changes_behind() {
            // Files change: the kernel gathers small writes into large WRITEs and keeps
            // size and times itself. Every data change goes through it, so its cache is the
            // truth; fsync still reaches the core (after the kernel wrote its pages back).
            self.writeback = config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE & config.capabilities())
                .is_ok()
                && config
                    .capabilities()
                    .contains(InitFlags::FUSE_WRITEBACK_CACHE);
        }
        if !passthrough && self.opts.lower_direct_io.is_some() && !self.core.files_immutable() {
            // Direct-I/O opens of lower files (rootless): shared mappings of them need the
            // kernel's leave (6.6+), which also writes dirty pages back before a direct read.
            self.lower_direct = config
                .capabilities()
                .contains(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
                && config
                    .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
                    .is_ok();
        }
        debug!(
            "init: passthrough {}, writeback cache {}, lower files direct {}, set-id bits ours {}",
            self.passthrough.enabled(),
            self.writeback,
            self.lower_direct,
            config
                .capabilities()
                .contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                && want.contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
        );
    }
}
