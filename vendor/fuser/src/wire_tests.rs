//! Patches 1 to 3 and 8 (PATCHES.md), tested with bytes: requests laid out as the kernel's
//! `include/uapi/linux/fuse.h` lays them out, decoded; replies encoded and read back at
//! that header's offsets. And no byte sequence makes the request decoder panic.

use std::io::IoSlice;
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use crate::ll::{self, AnyRequest, Operation};
use crate::reply::{Reply, ReplySender};
use crate::{FileAttr, FileType, FopenFlags, INodeNo, ReplyCreate, ReplyDirectoryPlus};
use crate::{Generation, ReplyEntry};

/// `struct fuse_in_header` (40 bytes) for `opcode` on node `nodeid`, followed by `args`.
fn request(opcode: u32, nodeid: u64, args: &[u8]) -> Vec<u64> {
    let len = 40 + args.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes()); // len
    b.extend_from_slice(&opcode.to_ne_bytes()); // opcode
    b.extend_from_slice(&7u64.to_ne_bytes()); // unique
    b.extend_from_slice(&nodeid.to_ne_bytes()); // nodeid
    b.extend_from_slice(&1000u32.to_ne_bytes()); // uid
    b.extend_from_slice(&1001u32.to_ne_bytes()); // gid
    b.extend_from_slice(&42u32.to_ne_bytes()); // pid
    b.extend_from_slice(&0u32.to_ne_bytes()); // total_extlen, padding
    b.extend_from_slice(args);
    aligned(&b)
}

/// `bytes` in 8-byte aligned storage, as the kernel's buffers are.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; bytes.len().div_ceil(8)];
    as_bytes_mut(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

fn as_bytes_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: any u64 storage is valid as bytes, and the length covers exactly it.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
}

fn as_bytes(v: &[u64], len: usize) -> &[u8] {
    assert!(len <= v.len() * 8);
    // SAFETY: any u64 storage is valid as bytes, and `len` is within it.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), len) }
}

fn u32s(xs: &[u32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn decode(buf: &[u64]) -> Operation<'_> {
    let len = u32::from_ne_bytes(as_bytes(buf, 4).try_into().unwrap()) as usize;
    let req = AnyRequest::try_from(as_bytes(buf, len)).expect("a request");
    req.operation().expect("an operation")
}

/// `struct fuse_setattr_in` (88 bytes) with `valid` and a size.
fn setattr_in(valid: u32, size: u64) -> Vec<u8> {
    let mut b = u32s(&[valid, 0]);
    b.extend_from_slice(&0u64.to_ne_bytes()); // fh
    b.extend_from_slice(&size.to_ne_bytes()); // size
    b.extend_from_slice(&[0; 88 - 24]); // lock_owner .. unused5
    b
}

const FUSE_SETATTR: u32 = 4;
const FUSE_OPEN: u32 = 14;
const FUSE_CREATE: u32 = 35;
const FUSE_TMPFILE: u32 = 51;
const FATTR_SIZE: u32 = 1 << 3;
const FATTR_KILL_SUIDGID: u32 = 1 << 11;
const FUSE_OPEN_KILL_SUIDGID: u32 = 1;

#[test]
fn setattr_carries_fattr_kill_suidgid() {
    let marked = request(
        FUSE_SETATTR,
        5,
        &setattr_in(FATTR_SIZE | FATTR_KILL_SUIDGID, 3),
    );
    let Operation::SetAttr(x) = decode(&marked) else {
        panic!("not a SETATTR")
    };
    assert!(x.kill_suidgid());
    assert_eq!(x.size(), Some(3));
    let plain = request(FUSE_SETATTR, 5, &setattr_in(FATTR_SIZE, 3));
    let Operation::SetAttr(x) = decode(&plain) else {
        panic!("not a SETATTR")
    };
    assert!(!x.kill_suidgid());
}

#[test]
fn open_carries_fuse_open_kill_suidgid() {
    // struct fuse_open_in { uint32_t flags; uint32_t open_flags; }
    let flags = (libc::O_WRONLY | libc::O_TRUNC) as u32;
    for (open_flags, kill) in [(FUSE_OPEN_KILL_SUIDGID, true), (0, false)] {
        let buf = request(FUSE_OPEN, 9, &u32s(&[flags, open_flags]));
        let Operation::Open(x) = decode(&buf) else {
            panic!("not an OPEN")
        };
        assert_eq!(x.flags().0, flags as i32);
        assert_eq!(x.kill_suidgid(), kill);
    }
}

#[test]
fn create_and_tmpfile_carry_their_open_flags() {
    // struct fuse_create_in { flags; mode; umask; open_flags; } then the name.
    let flags = (libc::O_RDWR | libc::O_TRUNC) as u32;
    let mut args = u32s(&[flags, 0o100644, 0o022, FUSE_OPEN_KILL_SUIDGID]);
    args.extend_from_slice(b"new\0");
    let buf = request(FUSE_CREATE, 1, &args);
    let Operation::Create(x) = decode(&buf) else {
        panic!("not a CREATE")
    };
    assert_eq!(
        (x.mode(), x.umask(), x.flags()),
        (0o100644, 0o022, flags as i32)
    );
    assert_eq!(x.name().as_os_str(), "new");
    assert!(x.kill_suidgid());

    // O_TMPFILE: the same arguments, with the kernel's placeholder name "/".
    let mut args = u32s(&[libc::O_RDWR as u32, 0o100600, 0, 0]);
    args.extend_from_slice(b"/\0");
    let buf = request(FUSE_TMPFILE, 1, &args);
    let Operation::Tmpfile(x) = decode(&buf) else {
        panic!("not a TMPFILE")
    };
    assert_eq!((x.mode(), x.flags()), (0o100600, libc::O_RDWR));
    assert!(!x.kill_suidgid());
}

const FUSE_SETXATTR: u32 = 21;
const FUSE_SETXATTR_ACL_KILL_SGID: u32 = 1;

/// Patch 8: SETXATTR in both layouts (`struct fuse_setxattr_in` of 8 bytes, or of 16 with
/// `FUSE_SETXATTR_EXT`: `setxattr_flags`, padding), for names of 1 to 40 bytes (short
/// names are where the two could be mistaken) and values with NULs in them.
#[test]
fn setxattr_is_read_in_both_layouts_and_carries_acl_kill_sgid() {
    for name in [
        "a",
        "ab",
        "abc",
        "user.x",
        "system.posix_acl_access",
        &"n".repeat(40),
    ] {
        for value in [
            &b""[..],
            &b"\0\0\0\0"[..],
            &b"v\0lue"[..],
            &[2u8, 0, 0, 0, 1, 0, 7, 0][..],
        ] {
            for ext in [None, Some(0), Some(FUSE_SETXATTR_ACL_KILL_SGID)] {
                let mut args = u32s(&[value.len() as u32, 1]);
                if let Some(f) = ext {
                    args.extend_from_slice(&u32s(&[f, 0]));
                }
                args.extend_from_slice(name.as_bytes());
                args.push(0);
                args.extend_from_slice(value);
                let buf = request(FUSE_SETXATTR, 3, &args);
                let Operation::SetXAttr(x) = decode(&buf) else {
                    panic!("not a SETXATTR")
                };
                let what = format!("{name:?} {value:?} {ext:?}");
                assert_eq!(x.name(), name, "{what}");
                assert_eq!(x.value(), value, "{what}");
                assert_eq!(x.flags(), 1, "{what}");
                assert_eq!(
                    x.kill_sgid(),
                    ext == Some(FUSE_SETXATTR_ACL_KILL_SGID),
                    "{what}"
                );
            }
        }
    }
}

/// A reply of type `R`, and the bytes it sends.
fn reply<R: Reply>() -> (R, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    (R::new(ll::RequestId(0xdead), ReplySender::Capture(tx)), rx)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn attr(ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 5,
        blocks: 1,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0o644,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

// fuse_out_header is 16 bytes; then struct fuse_entry_out: nodeid @0, generation @8,
// entry_valid @16, attr_valid @24, entry_valid_nsec @32, attr_valid_nsec @36, and
// struct fuse_attr @40 (ino first), 128 bytes in all.
const OUT: usize = 16;
const ENTRY_OUT: usize = 128;
const ATTR_INO: usize = 40;

#[test]
fn entry_node_keeps_the_node_id_apart_from_the_inode_number() {
    let (r, rx) = reply::<ReplyEntry>();
    r.entry_node(
        INodeNo(77),
        Generation(3),
        &Duration::from_secs(9),
        &attr(1234),
    );
    let b = rx.recv().unwrap();
    assert_eq!(b.len(), OUT + ENTRY_OUT);
    assert_eq!(u32_at(&b, 0) as usize, b.len());
    assert_eq!(u64_at(&b, OUT), 77, "nodeid");
    assert_eq!(u64_at(&b, OUT + 8), 3, "generation");
    assert_eq!(u64_at(&b, OUT + 16), 9, "entry_valid");
    assert_eq!(u64_at(&b, OUT + ATTR_INO), 1234, "attr.ino");
}

#[test]
fn created_node_keeps_the_node_id_apart_and_says_passthrough_only_with_a_backing_id() {
    let (r, rx) = reply::<ReplyCreate>();
    let fl = FopenFlags::FOPEN_KEEP_CACHE;
    r.created_node(
        INodeNo(78),
        Generation(4),
        &Duration::ZERO,
        &attr(99),
        crate::FileHandle(5),
        fl,
        None,
    );
    let b = rx.recv().unwrap();
    // then struct fuse_open_out { fh; open_flags; backing_id; }
    assert_eq!(b.len(), OUT + ENTRY_OUT + 16);
    assert_eq!(u64_at(&b, OUT), 78, "nodeid");
    assert_eq!(u64_at(&b, OUT + 8), 4, "generation");
    assert_eq!(u64_at(&b, OUT + ATTR_INO), 99, "attr.ino");
    assert_eq!(u64_at(&b, OUT + ENTRY_OUT), 5, "fh");
    assert_eq!(u32_at(&b, OUT + ENTRY_OUT + 8), fl.bits(), "open_flags");
    assert_eq!(u32_at(&b, OUT + ENTRY_OUT + 12), 0, "backing_id");
}

#[test]
fn readdirplus_add_node_keeps_the_node_id_apart_and_the_dirent_shows_the_number() {
    let (tx, rx) = mpsc::channel();
    let mut r = ReplyDirectoryPlus::new(ll::RequestId(1), ReplySender::Capture(tx), 4096);
    let ttl = Duration::from_secs(1);
    assert!(!r.add_node(INodeNo(79), Generation(6), 17, "ab", &ttl, &attr(555)));
    r.ok();
    let b = rx.recv().unwrap();
    // struct fuse_direntplus { fuse_entry_out; struct fuse_dirent { ino; off; namelen;
    // type; name[] } }, padded to 8 bytes.
    let d = OUT + ENTRY_OUT;
    assert_eq!(b.len(), d + 24 + 8);
    assert_eq!(u64_at(&b, OUT), 79, "nodeid");
    assert_eq!(u64_at(&b, OUT + 8), 6, "generation");
    assert_eq!(u64_at(&b, OUT + ATTR_INO), 555, "attr.ino");
    assert_eq!(u64_at(&b, d), 555, "dirent.ino");
    assert_eq!(u64_at(&b, d + 8), 17, "dirent.off");
    assert_eq!(u32_at(&b, d + 16), 2, "namelen");
    assert_eq!(u32_at(&b, d + 20), libc::DT_REG as u32, "type");
    assert_eq!(&b[d + 24..d + 26], b"ab");
}

#[test]
fn the_unpatched_replies_still_use_the_inode_number_as_node_id() {
    let (r, rx) = reply::<ReplyEntry>();
    r.entry(&Duration::ZERO, &attr(31), Generation(0));
    assert_eq!(u64_at(&rx.recv().unwrap(), OUT), 31);
}

/// Decodes `buf` as the session does, and formats it as its debug log would.
fn decode_any(buf: &[u8]) {
    if let Ok(req) = AnyRequest::try_from(buf) {
        if let Ok(op) = req.operation() {
            let _ = format!("{op} {req}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// No byte sequence panics the decoder: arbitrary bytes, and well-formed headers
    /// (every opcode, a consistent or inconsistent length) over arbitrary arguments.
    #[test]
    fn no_request_bytes_panic_the_decoder(
        opcode in 0u32..64,
        claimed in proptest::option::of(0u32..400),
        args in proptest::collection::vec(any::<u8>(), 0..320),
        raw in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut buf = request(opcode, 1, &args);
        if let Some(len) = claimed {
            as_bytes_mut(&mut buf)[..4].copy_from_slice(&len.to_ne_bytes());
        }
        decode_any(as_bytes(&buf, 40 + args.len()));
        decode_any(as_bytes(&aligned(&raw), raw.len()));
    }
}

#[test]
fn capture_sender_sees_every_slice() {
    // The capture joins the slices a reply is written with, as writev would.
    let (tx, rx) = mpsc::channel();
    ReplySender::Capture(tx)
        .send(&[IoSlice::new(b"ab"), IoSlice::new(b"c")])
        .unwrap();
    assert_eq!(rx.recv().unwrap(), b"abc");
}
