//! `*.overlay.origin`: the kernel's record of the lower file an upper file was copied from
//! (`struct ovl_fb`): version 0, magic 0xfb, total length, flags (0: little-endian, a lower
//! file), the handle type, the lower filesystem's uuid (null: what the kernel records when
//! every layer shares one filesystem, and what layerfs always writes), then the file handle
//! (`name_to_handle_at`'s bytes).

/// Bytes before the file handle.
const HEADER: usize = 21;

/// The record of a copy of the file whose handle is `handle` (of type `handle_type`).
pub fn record(handle_type: i32, handle: &[u8]) -> Vec<u8> {
    let mut fb = vec![
        0u8,
        0xfb,
        (HEADER + handle.len()) as u8,
        0,
        handle_type as u8,
    ];
    fb.extend_from_slice(&[0u8; 16]);
    fb.extend_from_slice(handle);
    fb
}

/// The handle type and bytes a record (as [`record`] writes it, and the kernel) holds, for
/// `open_by_handle_at`. `None` for anything else, and for a record with a uuid (written for
/// a lower on another filesystem by a kernel mounted with `uuid=on`, which we do not match
/// to a filesystem).
pub fn handle(record: &[u8]) -> Option<(i32, &[u8])> {
    if record.len() < HEADER
        || record[1] != 0xfb
        || usize::from(record[2]) != record.len()
        || record[5..HEADER].iter().any(|&b| b != 0)
    {
        return None;
    }
    Some((i32::from(record[4]), &record[HEADER..]))
}

/// The inode number a record names, if the file is on a filesystem of type `fs_magic` with a
/// handle layout we know (ext2/3/4, tmpfs, xfs, btrfs: type and length must both fit), read
/// from the handle's bytes without opening it. `None` otherwise.
pub fn ino(record: &[u8], fs_magic: i64) -> Option<u64> {
    let (kind, h) = handle(record)?;
    let word = |i: usize| -> u64 {
        u64::from(u32::from_ne_bytes(
            h[i * 4..i * 4 + 4].try_into().expect("4 bytes"),
        ))
    };
    const EXT: i64 = 0xEF53;
    const TMPFS: i64 = 0x0102_1994;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    match (fs_magic, kind, h.len()) {
        // struct fid.i32: ino, gen[, parent ino, parent gen]
        (EXT | XFS, 1, 8) | (EXT | XFS, 2, 16) => Some(word(0)),
        // shmem_encode_fh: gen, ino low, ino high
        (TMPFS, 1, 12) => Some(word(1) | word(2) << 32),
        // xfs 64-bit inodes: ino low, ino high, gen[, parent's]
        (XFS, 0x81, 12) | (XFS, 0x82, 24) => Some(word(0) | word(1) << 32),
        // btrfs_fid: objectid (u64) first; 5, 8 or 10 words
        (BTRFS, 0x4d, 20) | (BTRFS, 0x4e, 32) | (BTRFS, 0x4f, 40) => Some(word(0) | word(1) << 32),
        _ => None,
    }
}
