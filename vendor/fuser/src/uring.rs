//! Patch 7 (PATCHES.md): FUSE-over-io_uring, the transport of kernel 6.14 and later.
//!
//! The kernel offers `FUSE_OVER_IO_URING` in INIT when `/sys/module/fuse/parameters/enable_uring`
//! is on. A session asked for it ([`Config::io_uring`](crate::Config)) sets up one io_uring
//! (`IORING_SETUP_SQE128`) per possible CPU before it answers INIT, claims the flag only when
//! that worked, and then registers [`QUEUE_DEPTH`] entries on each ring, one thread a ring
//! (pinned to its CPU: the kernel queues a request on the ring of the CPU its caller runs on).
//! Once every queue has an entry, the kernel sends each request as the completion of an entry's
//! command, and the entry's next command (`COMMIT_AND_FETCH`) carries the reply and waits for
//! the next request: one `io_uring_enter` per request where `/dev/fuse` needs a `read` and a
//! `writev`. FORGET and INTERRUPT still come through `/dev/fuse` reads (the kernel sends them
//! there), as do notifications; the session's usual workers keep reading it.
//!
//! When the kernel refuses (no flag in INIT, a ring that cannot be set up, a refused
//! registration) the session serves over `/dev/fuse` reads and logs one warning saying why: a
//! refused registration makes the kernel itself fall back (`fc->io_uring = 0`).
//!
//! The request bytes are given to the same decoder as a `/dev/fuse` read's: the entry's data
//! buffer keeps room in front of the payload where the in-header and the per-opcode header are
//! copied back, so a request is one contiguous slice without copying its payload. A reply
//! given while the request is being dispatched (the usual case) is staged and committed by
//! the ring thread once dispatch returned (and no borrow of the request bytes is left); a reply
//! given later, from another thread, is committed there.

use std::io;
use std::io::IoSlice;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::{debug, error, warn};
use parking_lot::Mutex;
use zerocopy::FromBytes;
use zerocopy::FromZeros;
use zerocopy::IntoBytes;

use crate::Filesystem;
use crate::KernelConfig;
use crate::ReplyEmpty;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll::Operation;
use crate::ll::flags::init_flags::InitFlags;
use crate::ll::fuse_abi as abi;
use crate::passthrough::BackingId;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// Entries per ring (libfuse's default queue depth).
pub(crate) const QUEUE_DEPTH: usize = 8;

const IN_HEADER: usize = size_of::<abi::fuse_in_header>();
const OUT_HEADER: usize = size_of::<abi::fuse_out_header>();
/// Room in front of the payload for the in-header and the per-opcode header, so that a
/// request is contiguous (a multiple of 8: the decoder needs the in-header 8-aligned).
const FRONT: usize = (IN_HEADER + abi::FUSE_URING_OP_IN_OUT_SZ).next_multiple_of(64);
/// Offsets in an `io_uring_sqe` (include/uapi/linux/io_uring.h) the io-uring crate has no
/// setter for on a `UringCmd80`.
const SQE_LEN: usize = 24;

/// Requests served over io_uring since the process started (all sessions).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// How many requests came over FUSE-over-io_uring rings in this process (0 when every
/// request came through `/dev/fuse` reads, e.g. after a fallback).
pub fn uring_requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Anonymous memory, backed lazily (a payload buffer is as large as the largest WRITE the
/// kernel may send, most of which most entries never touch).
#[derive(Debug)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is plain memory with no thread affinity; who writes where and when is
// coordinated by the entry's state (see `Entry`).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize) -> io::Result<Region> {
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty region"))?;
        // SAFETY: a new private anonymous mapping, placed by the kernel (no address given), so
        // it aliases nothing of ours.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                size,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        }?;
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }

    fn addr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        // SAFETY: within the mapping (checked above in debug builds; every caller passes an
        // offset it bounded by `len`).
        unsafe { self.ptr.as_ptr().add(offset) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; the ring that could still write into it is
        // closed first (`Queue` drops its ring before its entries).
        if let Err(e) = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) } {
            error!("io_uring: unmapping a ring buffer: {e}");
        }
    }
}

#[derive(Debug, Default)]
struct EntryState {
    /// The ring thread is dispatching the entry's request: a reply now is staged.
    dispatching: bool,
    /// A reply given while dispatching (its bytes), committed when dispatch returns.
    staged: Option<Vec<u8>>,
    /// A reused buffer for staged replies.
    spare: Vec<u8>,
    /// The request the entry holds (0: none yet, the last command was REGISTER).
    commit_id: u64,
    /// Registration refused or the entry lost: it gets no more commands.
    dead: bool,
}

/// One ring entry: the header buffer, the data buffer (`FRONT` bytes, then the payload the
/// kernel knows), and the iovecs REGISTER gave the kernel. The kernel writes the buffers
/// between a command and its completion; between a completion and the next command they are
/// the daemon's: the ring thread reads the request, then (under `state`) whoever commits
/// writes the reply.
#[derive(Debug)]
struct Entry {
    header: Region,
    data: Region,
    iov: Box<[libc::iovec; 2]>,
    state: Mutex<EntryState>,
}

// SAFETY: the iovecs only point into the entry's own regions (see Region's Send/Sync).
unsafe impl Send for Entry {}
// SAFETY: as above; the iovecs are never written after construction.
unsafe impl Sync for Entry {}

impl Entry {
    fn new(payload: usize) -> io::Result<Entry> {
        let page = page_size::get();
        let header = Region::new(size_of::<abi::fuse_uring_req_header>().next_multiple_of(page))?;
        let data = Region::new(FRONT + payload)?;
        let iov = Box::new([
            libc::iovec {
                iov_base: header.addr(0).cast(),
                iov_len: size_of::<abi::fuse_uring_req_header>(),
            },
            libc::iovec {
                iov_base: data.addr(FRONT).cast(),
                iov_len: payload,
            },
        ]);
        Ok(Entry {
            header,
            data,
            iov,
            state: Mutex::new(EntryState::default()),
        })
    }

    fn read_header(&self) -> abi::fuse_uring_req_header {
        let mut h = abi::fuse_uring_req_header::new_zeroed();
        // SAFETY: the header region holds at least one fuse_uring_req_header; the kernel
        // completed the entry's command, so it is not writing the buffer now.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.header.addr(0),
                h.as_mut_bytes().as_mut_ptr(),
                size_of::<abi::fuse_uring_req_header>(),
            );
        }
        h
    }
}

/// One ring, served by one thread.
pub(crate) struct Queue {
    // Declared first so it is dropped (the ring closed, the kernel's commands cancelled)
    // before the buffers they point into are unmapped.
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    qid: u16,
    ch: Channel,
    /// Serialises pushes to the submission queue (the ring thread's and other repliers').
    sq: Mutex<()>,
    payload: usize,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("qid", &self.qid)
            .field("entries", &self.entries.len())
            .field("payload", &self.payload)
            .finish()
    }
}

/// Where a reply to a request that came over a ring goes.
#[derive(Debug, Clone)]
pub(crate) struct RingReply {
    queue: Arc<Queue>,
    entry: usize,
}

impl RingReply {
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        self.queue.reply(self.entry, data)
    }

    pub(crate) fn sender(&self) -> ChannelSender {
        self.queue.ch.sender()
    }

    pub(crate) fn open_backing(&self, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<BackingId> {
        self.sender().open_backing(fd)
    }
}

/// The number of queues the kernel wants: one per possible CPU (`num_possible_cpus()`).
fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim())
        .ok_or_else(|| io::Error::other(format!("cannot parse the possible CPUs {text:?}")))
}

/// Counts the CPUs of a kernel CPU list ("0-3,8").
pub(crate) fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// The payload size the kernel requires of each entry (fs/fuse/dev_uring.c,
/// `fuse_uring_create`: the largest of FUSE_MIN_READ_BUFFER, max_write and max_pages pages).
pub(crate) fn payload_size(config: &KernelConfig) -> usize {
    const FUSE_MIN_READ_BUFFER: usize = 8192;
    FUSE_MIN_READ_BUFFER
        .max(config.max_write as usize)
        .max(usize::from(config.max_pages()) * page_size::get())
}

/// During INIT, before the reply: when the session asked for io_uring (`Auto` or `On`) and
/// the kernel offers it, sets up the rings and claims `FUSE_OVER_IO_URING`. `None` means
/// serving over `/dev/fuse` reads, after one line naming the reason: a warning when the
/// session insisted (`On`), at info level when it only took the rings where offered (`Auto`).
pub(crate) fn offer(
    wanted: crate::IoUring,
    kernel: InitFlags,
    config: &mut KernelConfig,
    ch: &Channel,
) -> Option<Vec<Arc<Queue>>> {
    let fall_back = |why: &str| {
        let level = match wanted {
            crate::IoUring::On => log::Level::Warn,
            _ => log::Level::Info,
        };
        log::log!(level, "io_uring: {why}: serving over /dev/fuse reads");
    };
    if wanted == crate::IoUring::Off {
        return None;
    }
    if !kernel.contains(InitFlags::FUSE_OVER_IO_URING) {
        fall_back(&not_offered_reason(
            std::fs::read_to_string(ENABLE_URING).ok().as_deref(),
        ));
        return None;
    }
    let payload = payload_size(config);
    let queues = possible_cpus().and_then(|n| {
        (0..n)
            .map(|qid| Queue::new(qid, payload, ch).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()
    });
    match queues {
        Ok(queues) => {
            config.requested |= InitFlags::FUSE_OVER_IO_URING;
            debug!(
                "io_uring: {} rings of {QUEUE_DEPTH} entries, payload {payload} bytes",
                queues.len()
            );
            Some(queues)
        }
        Err(e) => {
            fall_back(&format!("cannot set up the rings ({e})"));
            None
        }
    }
}

/// The kernel's switch for FUSE-over-io_uring (kernel 6.14+ built with `CONFIG_FUSE_IO_URING`).
pub(crate) const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Why the kernel's INIT did not offer FUSE-over-io_uring, from `enable_uring`'s content
/// (`None`: the parameter does not exist).
pub(crate) fn not_offered_reason(enable_uring: Option<&str>) -> String {
    match enable_uring.map(str::trim) {
        None => format!(
            "the kernel has no FUSE-over-io_uring (before 6.14, or built without \
             CONFIG_FUSE_IO_URING: no {ENABLE_URING})"
        ),
        Some("N" | "0") => {
            format!("the kernel's FUSE-over-io_uring is switched off ({ENABLE_URING} is N)")
        }
        Some(v) => {
            format!("the kernel did not offer FUSE-over-io_uring at INIT ({ENABLE_URING} is {v})")
        }
    }
}

/// Starts one thread per ring, serving `fs`.
pub(crate) fn spawn<FS: Filesystem>(
    queues: Vec<Arc<Queue>>,
    event_loop: impl Fn(String) -> SessionEventLoop<FS>,
) -> io::Result<Vec<thread::JoinHandle<io::Result<()>>>> {
    queues
        .into_iter()
        .map(|queue| {
            let name = format!("fuser-ring-{}", queue.qid);
            let se = event_loop(name.clone());
            thread::Builder::new()
                .name(name)
                .spawn(move || queue.serve(&se))
        })
        .collect()
}

impl Queue {
    fn new(qid: usize, payload: usize, ch: &Channel) -> io::Result<Queue> {
        let qid = u16::try_from(qid).map_err(|_| io::Error::other("too many CPUs"))?;
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize(2 * QUEUE_DEPTH as u32)
            .build(QUEUE_DEPTH as u32)?;
        let entries = (0..QUEUE_DEPTH)
            .map(|_| Entry::new(payload))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Queue {
            ring,
            qid,
            ch: ch.clone(),
            sq: Mutex::new(()),
            payload,
            entries,
        })
    }

    /// A ring command on /dev/fuse for entry `idx`.
    fn command(&self, idx: usize, cmd_op: u32, commit_id: u64) -> squeue::Entry128 {
        let iov = self.entries[idx].iov.as_ptr() as u64;
        command_sqe(
            self.ch.as_fd().as_raw_fd(),
            self.qid,
            idx,
            cmd_op,
            commit_id,
            iov,
        )
    }

    /// Queues a command; `submit` also enters the kernel (a replier other than the ring
    /// thread, whose loop submits what it queued when it next waits).
    fn push(&self, sqe: &squeue::Entry128, submit: bool) -> io::Result<()> {
        let _sq = self.sq.lock();
        loop {
            // SAFETY: pushes are serialised by `sq`; the SQE's buffers (the entry's iovecs
            // and regions) live as long as the ring (see `Queue`'s field order).
            let pushed = unsafe { self.ring.submission_shared().push(sqe) };
            if pushed.is_ok() {
                break;
            }
            // Full: cannot happen with one command per entry and as many slots as entries,
            // but submitting makes room.
            self.ring.submit()?;
        }
        if submit {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// A reply from the filesystem for the request in entry `idx`.
    fn reply(&self, idx: usize, data: &[IoSlice<'_>]) -> io::Result<()> {
        let entry = &self.entries[idx];
        let mut state = entry.state.lock();
        if state.dispatching {
            let mut buf = std::mem::take(&mut state.spare);
            buf.clear();
            for d in data {
                buf.extend_from_slice(d);
            }
            state.staged = Some(buf);
            return Ok(());
        }
        let bytes: Vec<u8> = data.iter().flat_map(|d| d.iter().copied()).collect();
        self.commit(idx, &state, &bytes, true)
    }

    /// Writes a reply (a `fuse_out_header`, then the arguments) into entry `idx` and queues
    /// its COMMIT_AND_FETCH.
    fn commit(&self, idx: usize, state: &EntryState, reply: &[u8], submit: bool) -> io::Result<()> {
        let entry = &self.entries[idx];
        // SAFETY: the entry's request was completed to us and not yet committed (callers hold
        // the entry's state and commit once), so neither the kernel nor the ring thread uses
        // its buffers now (the ring thread's view of the request ended with its dispatch);
        // the slices are within the regions (one fuse_uring_req_header; the payload the
        // kernel was given); `reply` is in neither (it is staged or collected in a Vec).
        let (header, payload) = unsafe {
            (
                abi::fuse_uring_req_header::mut_from_bytes(std::slice::from_raw_parts_mut(
                    entry.header.addr(0),
                    size_of::<abi::fuse_uring_req_header>(),
                ))
                .map_err(|_| io::Error::other("misaligned ring header"))?,
                std::slice::from_raw_parts_mut(entry.data.addr(FRONT), self.payload),
            )
        };
        if let Err(e) = encode_reply(reply, header, payload) {
            error!("io_uring: ring {}: {e}", self.qid);
            if reply.len() < OUT_HEADER {
                return Ok(());
            }
        }
        let sqe = self.command(
            idx,
            abi::FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
            state.commit_id,
        );
        self.push(&sqe, submit)
    }

    /// The ring thread: registers the entries, then serves requests until the connection ends.
    fn serve<FS: Filesystem>(self: Arc<Self>, se: &SessionEventLoop<FS>) -> io::Result<()> {
        let mut cpu = nix::sched::CpuSet::new();
        if cpu.set(usize::from(self.qid)).is_ok() {
            if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu) {
                debug!("io_uring: ring {} not pinned to its CPU: {e}", self.qid);
            }
        }
        for idx in 0..self.entries.len() {
            self.push(
                &self.command(idx, abi::FUSE_IO_URING_CMD_REGISTER, 0),
                false,
            )?;
        }
        let mut done = Vec::with_capacity(2 * QUEUE_DEPTH);
        let mut scratch: Vec<u64> = Vec::new();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            done.clear();
            // SAFETY: only this thread reads the completion queue.
            done.extend(
                unsafe { self.ring.completion_shared() }.map(|c| (c.user_data(), c.result())),
            );
            for &(idx, res) in &done {
                let idx = idx as usize;
                if idx >= self.entries.len() {
                    continue;
                }
                match -res {
                    0 => self.handle(idx, se, &mut scratch),
                    libc::EINTR | libc::EAGAIN => {
                        let commit_id = self.entries[idx].state.lock().commit_id;
                        let op = if commit_id == 0 {
                            abi::FUSE_IO_URING_CMD_REGISTER
                        } else {
                            abi::FUSE_IO_URING_CMD_COMMIT_AND_FETCH
                        };
                        self.push(&self.command(idx, op, commit_id), false)?;
                    }
                    // The connection ended (unmount, abort) or the ring is going away.
                    libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED => return Ok(()),
                    err => {
                        let mut state = self.entries[idx].state.lock();
                        state.dead = true;
                        if state.commit_id == 0 {
                            warn!(
                                "io_uring: the kernel refused to register ring {} ({}): \
                                 serving over /dev/fuse reads",
                                self.qid,
                                io::Error::from_raw_os_error(err)
                            );
                        } else {
                            error!(
                                "io_uring: ring {} lost an entry: {}",
                                self.qid,
                                io::Error::from_raw_os_error(err)
                            );
                        }
                    }
                }
            }
            if self.entries.iter().all(|e| e.state.lock().dead) {
                // Nothing of ours is left in the kernel: the buffers may go.
                return Ok(());
            }
        }
    }

    /// Serves the request the kernel put in entry `idx`.
    fn handle<FS: Filesystem>(
        self: &Arc<Self>,
        idx: usize,
        se: &SessionEventLoop<FS>,
        scratch: &mut Vec<u64>,
    ) {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let entry = &self.entries[idx];
        let header = entry.read_header();
        let commit_id = header.ring_ent_in_out.commit_id;
        {
            let mut state = entry.state.lock();
            state.commit_id = commit_id;
            state.dispatching = true;
        }
        // SAFETY: the kernel completed the entry's command, so until it is committed the data
        // region is ours and nothing else refers to it (a reply given during the dispatch
        // below is staged, not written there); the slice is the whole region.
        let data: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(entry.data.addr(0), FRONT + self.payload) };
        let Some(bytes) = put_back(&header, data) else {
            error!(
                "io_uring: ring {}: a request with inconsistent sizes",
                self.qid
            );
            self.finish(idx, Some(error_reply(commit_id, libc::EIO)));
            return;
        };
        let len = bytes.len();
        let start = FRONT - (len - header.ring_ent_in_out.payload_sz as usize);
        // The decoder wants the in-header 8-aligned: an odd per-opcode header size (none
        // known) moves the request to an aligned copy.
        let bytes = if start % align_of::<abi::fuse_in_header>() == 0 {
            bytes
        } else {
            scratch.clear();
            scratch.resize(len.div_ceil(8), 0);
            let s = &mut scratch.as_mut_bytes()[..len];
            s.copy_from_slice(bytes);
            &*s
        };
        let ring = RingReply {
            queue: self.clone(),
            entry: idx,
        };
        match RequestWithSender::with_ring(se.ch.sender(), ring, bytes) {
            Some(req) => match req.request.operation() {
                Ok(Operation::Destroy(_)) => req.reply::<ReplyEmpty>().ok(),
                // No reply is expected: the entry is handed back with an empty one.
                Ok(Operation::Forget(_) | Operation::BatchForget(_)) => {
                    req.dispatch(se);
                    self.finish(idx, Some(error_reply(commit_id, 0)));
                    return;
                }
                _ => req.dispatch(se),
            },
            None => {
                self.finish(idx, Some(error_reply(commit_id, libc::EIO)));
                return;
            }
        }
        self.finish(idx, None);
    }

    /// Dispatch of entry `idx` returned: commits a staged reply (or `fallback`); a reply not
    /// given yet will be committed by whoever gives it.
    fn finish(&self, idx: usize, fallback: Option<Vec<u8>>) {
        let mut state = self.entries[idx].state.lock();
        state.dispatching = false;
        let Some(reply) = state.staged.take().or(fallback) else {
            return;
        };
        if let Err(e) = self.commit(idx, &state, &reply, false) {
            error!("io_uring: ring {}: committing a reply: {e}", self.qid);
        }
        state.spare = reply;
    }
}

/// The request a ring entry holds, as one slice of its data buffer (`FRONT` bytes, then the
/// payload the kernel filled): the in-header and the per-opcode header (the request's first
/// argument, `in_header.len` less the header and the payload) are put back in front of the
/// payload, so the request reads as a `/dev/fuse` read would have given it. `None` when the
/// sizes the kernel gave do not add up.
fn put_back<'a>(header: &abi::fuse_uring_req_header, data: &'a mut [u8]) -> Option<&'a [u8]> {
    let in_h = abi::fuse_in_header::read_from_prefix(&header.in_out)
        .ok()?
        .0;
    let payload_sz = header.ring_ent_in_out.payload_sz as usize;
    if payload_sz > data.len().checked_sub(FRONT)? {
        return None;
    }
    let len = in_h.len as usize;
    let op_len = len.checked_sub(IN_HEADER + payload_sz)?;
    if op_len > abi::FUSE_URING_OP_IN_OUT_SZ {
        return None;
    }
    let start = FRONT - IN_HEADER - op_len;
    data[start..start + IN_HEADER].copy_from_slice(&header.in_out[..IN_HEADER]);
    data[start + IN_HEADER..FRONT].copy_from_slice(&header.op_in[..op_len]);
    Some(&data[start..start + len])
}

/// Lays a reply (a `fuse_out_header`, then the reply's arguments) out in a ring entry: the
/// header in `in_out`, the arguments in the payload, their size in `payload_sz`. A reply
/// larger than the payload becomes EIO (and an error).
fn encode_reply(
    reply: &[u8],
    header: &mut abi::fuse_uring_req_header,
    payload: &mut [u8],
) -> Result<(), String> {
    if reply.len() < OUT_HEADER {
        return Err(format!(
            "a reply shorter than its header ({} bytes)",
            reply.len()
        ));
    }
    let (out, body) = reply.split_at(OUT_HEADER);
    header.in_out[..OUT_HEADER].copy_from_slice(out);
    let mut result = Ok(());
    let body = if body.len() > payload.len() {
        result = Err(format!(
            "a reply of {} bytes does not fit the {} byte payload",
            body.len(),
            payload.len()
        ));
        header.in_out[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
        &[][..]
    } else {
        body
    };
    payload[..body.len()].copy_from_slice(body);
    header.ring_ent_in_out = abi::fuse_uring_ent_in_out {
        payload_sz: body.len() as u32,
        ..Default::default()
    };
    result
}

/// A reply with only a header: `error` (an errno, 0 for success) for request `unique`.
fn error_reply(unique: u64, error: i32) -> Vec<u8> {
    let out = abi::fuse_out_header {
        len: OUT_HEADER as u32,
        error: -error,
        unique,
    };
    out.as_bytes().to_vec()
}

/// The SQE of a ring command: `IORING_OP_URING_CMD` on the /dev/fuse fd `fd`, a
/// `fuse_uring_cmd_req` in its command area, the entry index as user data; a REGISTER also
/// gives the entry's two iovecs (`iov`: header, payload).
fn command_sqe(
    fd: std::os::fd::RawFd,
    qid: u16,
    idx: usize,
    cmd_op: u32,
    commit_id: u64,
    iov: u64,
) -> squeue::Entry128 {
    let req = abi::fuse_uring_cmd_req {
        flags: 0,
        commit_id,
        qid,
        padding: [0; 6],
    };
    let mut cmd = [0u8; 80];
    cmd[..size_of::<abi::fuse_uring_cmd_req>()].copy_from_slice(req.as_bytes());
    let mut sqe = opcode::UringCmd80::new(types::Fd(fd), cmd_op).cmd(cmd);
    if cmd_op == abi::FUSE_IO_URING_CMD_REGISTER {
        sqe = sqe.addr(Some(iov));
    }
    let sqe = sqe.build().user_data(idx as u64);
    if cmd_op == abi::FUSE_IO_URING_CMD_REGISTER {
        // The kernel wants the iovec count in the SQE's `len` (FUSE_URING_IOV_SEGS), which
        // the io-uring crate's UringCmd80 cannot set.
        with_len(sqe, 2)
    } else {
        sqe
    }
}

/// Sets an SQE's `len` field.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const _: () = assert!(size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is repr(C) over the kernel's 128-byte `io_uring_sqe` (integers and
    // unions of integers: every byte pattern is a valid value), so it round-trips through
    // bytes; `len` is the u32 at offset 24 of `io_uring_sqe`.
    unsafe {
        let mut bytes: [u8; 128] = std::mem::transmute(sqe);
        bytes[SQE_LEN..SQE_LEN + 4].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes)
    }
}

#[cfg(test)]
#[path = "uring_tests.rs"]
mod tests;
