//! Patch 7 (PATCHES.md), tested with bytes and no mount: ring entries laid out as the kernel's
//! fs/fuse/dev_uring.c fills them (`include/uapi/linux/fuse.h`'s `fuse_uring_req_header`),
//! decoded; replies and commands read back at that header's and `io_uring.h`'s offsets.

use std::sync::mpsc;
use std::time::Duration;

use zerocopy::FromZeros;
use zerocopy::IntoBytes;

use super::*;
use crate::ll::{AnyRequest, Operation};
use crate::reply::{Reply, ReplySender};
use crate::{FileAttr, FileType, Generation, INodeNo, ReplyEntry, ReplyXattr};

const FUSE_LOOKUP: u32 = 1;
const FUSE_WRITE: u32 = 16;
const PAYLOAD: usize = 4096;

/// A ring entry's header as the kernel fills it: `fuse_in_header` (unique 7, node `nodeid`,
/// `len` = header + op header + payload) in `in_out`, `op` in `op_in`, and `payload_sz`.
fn kernel_header(opcode: u32, nodeid: u64, op: &[u8], payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; 288];
    let len = (40 + op.len() + payload) as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..8].copy_from_slice(&opcode.to_ne_bytes());
    b[8..16].copy_from_slice(&7u64.to_ne_bytes()); // unique
    b[16..24].copy_from_slice(&nodeid.to_ne_bytes());
    b[24..28].copy_from_slice(&1000u32.to_ne_bytes()); // uid
    b[28..32].copy_from_slice(&1001u32.to_ne_bytes()); // gid
    b[32..36].copy_from_slice(&42u32.to_ne_bytes()); // pid
    b[128..128 + op.len()].copy_from_slice(op);
    // struct fuse_uring_ent_in_out at 256: flags, commit_id, payload_sz, padding, reserved.
    b[256 + 8..256 + 16].copy_from_slice(&7u64.to_ne_bytes());
    b[256 + 16..256 + 20].copy_from_slice(&(payload as u32).to_ne_bytes());
    b
}

fn header_of(bytes: &[u8]) -> abi::fuse_uring_req_header {
    abi::fuse_uring_req_header::read_from_bytes(bytes).expect("288 bytes")
}

/// A data buffer (`FRONT` + payload) in 8-aligned storage, as the mapped regions are, with
/// `payload` at `FRONT`.
fn data_with(payload: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; (FRONT + PAYLOAD) / 8];
    v.as_mut_bytes()[FRONT..FRONT + payload.len()].copy_from_slice(payload);
    v
}

#[test]
fn the_header_fields_sit_where_fuse_h_puts_them() {
    let h = header_of(&kernel_header(FUSE_WRITE, 5, &[9; 40], 300));
    assert_eq!(h.ring_ent_in_out.commit_id, 7);
    assert_eq!(h.ring_ent_in_out.payload_sz, 300);
    assert_eq!(h.op_in[..40], [9; 40]);
    let in_h = abi::fuse_in_header::read_from_prefix(&h.in_out).unwrap().0;
    assert_eq!(
        (in_h.len, in_h.opcode, in_h.nodeid),
        (40 + 40 + 300, FUSE_WRITE, 5)
    );
}

#[test]
fn a_write_comes_back_whole_with_its_data_in_place() {
    // struct fuse_write_in { fh; offset; size; write_flags; lock_owner; flags; padding; }
    let mut write_in = Vec::new();
    write_in.extend_from_slice(&3u64.to_ne_bytes());
    write_in.extend_from_slice(&4096u64.to_ne_bytes());
    write_in.extend_from_slice(&5u32.to_ne_bytes());
    write_in.extend_from_slice(&0u32.to_ne_bytes());
    write_in.extend_from_slice(&0u64.to_ne_bytes());
    write_in.extend_from_slice(&0u32.to_ne_bytes());
    write_in.extend_from_slice(&0u32.to_ne_bytes());
    assert_eq!(write_in.len(), 40);
    let header = header_of(&kernel_header(FUSE_WRITE, 5, &write_in, 5));
    let mut data = data_with(b"hello");
    let payload_at = data.as_bytes().as_ptr() as usize + FRONT;
    let bytes = put_back(&header, data.as_mut_bytes()).expect("consistent sizes");
    assert_eq!(bytes.len(), 40 + 40 + 5);
    assert_eq!(
        bytes.as_ptr() as usize % 8,
        0,
        "the in-header stays 8-aligned"
    );
    // The payload was not moved: the request ends with it where the kernel wrote it.
    assert_eq!(bytes.as_ptr() as usize + 80, payload_at);
    let req = AnyRequest::try_from(bytes).expect("a request");
    assert_eq!(req.nodeid(), INodeNo(5));
    let Operation::Write(w) = req.operation().expect("an operation") else {
        panic!("not a WRITE")
    };
    assert_eq!((w.offset(), w.data()), (Ok(4096), &b"hello"[..]));
}

#[test]
fn a_lookup_has_an_empty_op_header_and_its_name_in_the_payload() {
    // LOOKUP's first argument is the kernel's zero-size arg0 (fuse_set_zero_arg0).
    let header = header_of(&kernel_header(FUSE_LOOKUP, 1, &[], 5));
    let mut data = data_with(b"name\0");
    let bytes = put_back(&header, data.as_mut_bytes()).expect("consistent sizes");
    let req = AnyRequest::try_from(bytes).expect("a request");
    let Operation::Lookup(l) = req.operation().expect("an operation") else {
        panic!("not a LOOKUP")
    };
    assert_eq!(l.name(), "name");
}

#[test]
fn sizes_that_do_not_add_up_are_refused() {
    let mut data = data_with(b"");
    // in_header.len smaller than the header and the payload.
    let mut h = kernel_header(FUSE_LOOKUP, 1, &[], 5);
    h[0..4].copy_from_slice(&20u32.to_ne_bytes());
    assert!(put_back(&header_of(&h), data.as_mut_bytes()).is_none());
    // An op header longer than op_in.
    let mut h = kernel_header(FUSE_LOOKUP, 1, &[], 5);
    h[0..4].copy_from_slice(&(40 + 129 + 5u32).to_ne_bytes());
    assert!(put_back(&header_of(&h), data.as_mut_bytes()).is_none());
    // A payload larger than the buffer.
    let h = kernel_header(FUSE_LOOKUP, 1, &[], PAYLOAD + 1);
    assert!(put_back(&header_of(&h), data.as_mut_bytes()).is_none());
}

/// The bytes a reply of type `R` sends (to request 0xdead).
fn reply<R: Reply>() -> (R, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    (
        R::new(crate::ll::RequestId(0xdead), ReplySender::Capture(tx)),
        rx,
    )
}

fn attr() -> FileAttr {
    let t = std::time::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(12),
        size: 3,
        blocks: 1,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: FileType::RegularFile,
        perm: 0o644,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[test]
fn a_reply_goes_to_in_out_and_its_arguments_to_the_payload() {
    let (r, rx) = reply::<ReplyEntry>();
    r.entry_node(INodeNo(99), Generation(0), &Duration::from_secs(1), &attr());
    let sent = rx.recv().unwrap();
    let mut header = abi::fuse_uring_req_header::new_zeroed();
    let mut payload = vec![0u8; PAYLOAD];
    encode_reply(&sent, &mut header, &mut payload).unwrap();
    let h = header.as_bytes();
    // fuse_out_header { len, error, unique } at in_out.
    assert_eq!(i32::from_ne_bytes(h[4..8].try_into().unwrap()), 0);
    assert_eq!(u64::from_ne_bytes(h[8..16].try_into().unwrap()), 0xdead);
    // payload_sz at ring_ent_in_out + 16: a fuse_entry_out (128 bytes), node id first.
    assert_eq!(u32::from_ne_bytes(h[272..276].try_into().unwrap()), 128);
    assert_eq!(u64::from_ne_bytes(payload[0..8].try_into().unwrap()), 99);
    assert_eq!(payload[..128], sent[16..]);
}

#[test]
fn an_error_reply_has_an_empty_payload_and_one_too_large_becomes_eio() {
    let (r, rx) = reply::<ReplyEntry>();
    r.error(crate::Errno::ENOENT);
    let sent = rx.recv().unwrap();
    let mut header = abi::fuse_uring_req_header::new_zeroed();
    let mut payload = vec![0u8; 64];
    encode_reply(&sent, &mut header, &mut payload).unwrap();
    let h = header.as_bytes();
    assert_eq!(
        i32::from_ne_bytes(h[4..8].try_into().unwrap()),
        -libc::ENOENT
    );
    assert_eq!(u32::from_ne_bytes(h[272..276].try_into().unwrap()), 0);

    let (r, rx) = reply::<ReplyXattr>();
    r.data(&[7; 100]);
    let sent = rx.recv().unwrap();
    assert!(encode_reply(&sent, &mut header, &mut payload).is_err());
    let h = header.as_bytes();
    assert_eq!(i32::from_ne_bytes(h[4..8].try_into().unwrap()), -libc::EIO);
    assert_eq!(u32::from_ne_bytes(h[272..276].try_into().unwrap()), 0);
}

fn sqe_bytes(sqe: squeue::Entry128) -> [u8; 128] {
    // SAFETY: Entry128 is repr(C) over the kernel's 128-byte io_uring_sqe, plain integers.
    unsafe { std::mem::transmute(sqe) }
}

#[test]
fn commands_are_uring_cmds_carrying_a_fuse_uring_cmd_req() {
    const IORING_OP_URING_CMD: u8 = 46;
    let reg = sqe_bytes(command_sqe(
        17,
        1,
        3,
        abi::FUSE_IO_URING_CMD_REGISTER,
        0,
        0x1000,
    ));
    // struct io_uring_sqe: opcode @0, fd @4, cmd_op @8, addr @16, len @24, user_data @32,
    // cmd @48 (struct fuse_uring_cmd_req: flags, commit_id @8, qid @16).
    assert_eq!(reg[0], IORING_OP_URING_CMD);
    assert_eq!(i32::from_ne_bytes(reg[4..8].try_into().unwrap()), 17);
    assert_eq!(u32::from_ne_bytes(reg[8..12].try_into().unwrap()), 1);
    assert_eq!(u64::from_ne_bytes(reg[16..24].try_into().unwrap()), 0x1000);
    assert_eq!(u32::from_ne_bytes(reg[24..28].try_into().unwrap()), 2);
    assert_eq!(u64::from_ne_bytes(reg[32..40].try_into().unwrap()), 3);
    assert_eq!(u64::from_ne_bytes(reg[56..64].try_into().unwrap()), 0);
    assert_eq!(u16::from_ne_bytes(reg[64..66].try_into().unwrap()), 1);

    let commit = sqe_bytes(command_sqe(
        17,
        1,
        3,
        abi::FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
        0xfeed,
        0x1000,
    ));
    assert_eq!(u32::from_ne_bytes(commit[8..12].try_into().unwrap()), 2);
    assert_eq!(u64::from_ne_bytes(commit[16..24].try_into().unwrap()), 0);
    assert_eq!(u32::from_ne_bytes(commit[24..28].try_into().unwrap()), 0);
    assert_eq!(
        u64::from_ne_bytes(commit[56..64].try_into().unwrap()),
        0xfeed
    );
}

#[test]
fn possible_cpu_lists_are_counted() {
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list("0-1"), Some(2));
    assert_eq!(parse_cpu_list("0-3,8-9,12"), Some(7));
    assert_eq!(parse_cpu_list("x"), None);
    assert_eq!(parse_cpu_list("3-1"), None);
}

#[test]
fn the_reason_for_no_rings_names_the_kernel_or_its_switch() {
    assert!(not_offered_reason(None).contains("before 6.14"));
    assert!(not_offered_reason(Some("N\n")).contains("switched off"));
    assert!(not_offered_reason(Some("Y\n")).contains("did not offer"));
}
