//! Id mappings (`uidmapping=` / `gidmapping=`) with the meaning podman and fuse-overlayfs
//! give them, and the squash options.
//!
//! A mapping is a list of triples `DISK:SHOWN:COUNT`: an id `DISK + i` stored in a layer is
//! *shown* by the mount as `SHOWN + i`, and an id `SHOWN + i` that a caller sets (chown, the
//! owner of a new file) is *stored* as `DISK + i`. An id outside every range shows (and is
//! stored) as the overflow id 65534. podman passes the container's view of the image as
//! `DISK` and the id its user namespace knows as `SHOWN` (`CONTAINER:HOST:SIZE`): with
//! `uidmapping=0:100000:65536` a file owned by 0 on disk shows as 100000.
//!
//! Every path that shows or stores an id goes through [`Ids`]: attributes, chown, the owner
//! of a new entry, and the xattrs that carry ids (POSIX ACLs, a v3 `security.capability`'s
//! root id). Copy-up copies the on-disk ids unchanged, so it needs no mapping.

use std::borrow::Cow;

/// The id shown for an id that no range maps (the kernel's default overflow id).
pub const OVERFLOW_ID: u32 = 65534;

/// One `DISK:SHOWN:COUNT` triple. Validated: neither range reaches `u32::MAX`, which is not
/// an id (chown's "leave unchanged"), so no arithmetic on it can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub disk: u32,
    pub shown: u32,
    pub count: u32,
}

/// A parsed `uidmapping=` or `gidmapping=` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdMap {
    ranges: Vec<Range>,
}

impl IdMap {
    /// Parses `DISK:SHOWN:COUNT[:DISK:SHOWN:COUNT...]`. Empty fields are skipped, as
    /// fuse-overlayfs does, so podman's leading colon (`:0:1000:1:1:100000:65536`) and a
    /// doubled separator are accepted.
    pub fn parse(s: &str) -> Result<IdMap, String> {
        let nums: Vec<u32> = s
            .split(':')
            .filter(|f| !f.is_empty())
            .map(|f| {
                f.parse::<u32>()
                    .map_err(|_| format!("id mapping {s:?}: {f:?} is not an id"))
            })
            .collect::<Result<_, _>>()?;
        if nums.is_empty() || !nums.len().is_multiple_of(3) {
            return Err(format!(
                "id mapping {s:?}: expected DISK:SHOWN:COUNT[:DISK:SHOWN:COUNT...]"
            ));
        }
        let mut ranges = Vec::with_capacity(nums.len() / 3);
        for c in nums.chunks(3) {
            let r = Range {
                disk: c[0],
                shown: c[1],
                count: c[2],
            };
            for start in [r.disk, r.shown] {
                if u64::from(start) + u64::from(r.count) > u64::from(u32::MAX) {
                    return Err(format!(
                        "id mapping {s:?}: the range {}:{}:{} goes past the largest id {}",
                        r.disk,
                        r.shown,
                        r.count,
                        u32::MAX - 1
                    ));
                }
            }
            ranges.push(r);
        }
        Ok(IdMap { ranges })
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The id the mount shows for `disk`, an id stored in a layer.
    pub fn show(&self, disk: u32) -> u32 {
        self.find(disk, |r| (r.disk, r.shown))
    }

    /// The id stored on disk for `shown`, an id a caller sets.
    pub fn store(&self, shown: u32) -> u32 {
        self.find(shown, |r| (r.shown, r.disk))
    }

    /// Where ranges overlap, the last one given wins (fuse-overlayfs keeps its ranges in a
    /// list built by prepending, and takes the first match).
    fn find(&self, id: u32, from_to: impl Fn(&Range) -> (u32, u32)) -> u32 {
        for r in self.ranges.iter().rev() {
            let (from, to) = from_to(r);
            // No overflow: `id >= from` is checked first, and `to + count` fits (parse).
            if id >= from && id - from < r.count {
                return to + (id - from);
            }
        }
        OVERFLOW_ID
    }
}

/// How a mount presents ids: the two maps and the squash options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ids {
    pub uid_map: Option<IdMap>,
    pub gid_map: Option<IdMap>,
    /// Show every entry as owned by this uid (`squash_to_uid=`, `squash_to_root`).
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
}

impl Ids {
    /// The owner shown for an on-disk owner.
    pub fn show(&self, uid: u32, gid: u32) -> (u32, u32) {
        let uid = self
            .squash_uid
            .unwrap_or_else(|| self.uid_map.as_ref().map_or(uid, |m| m.show(uid)));
        let gid = self
            .squash_gid
            .unwrap_or_else(|| self.gid_map.as_ref().map_or(gid, |m| m.show(gid)));
        (uid, gid)
    }

    /// True when a squash option shows every owner (or group) as one id.
    pub fn squashes(&self) -> bool {
        self.squash_uid.is_some() || self.squash_gid.is_some()
    }

    /// The uid stored for a uid a caller gives; `u32::MAX` (chown's "unchanged") stays.
    pub fn store_uid(&self, uid: u32) -> u32 {
        match &self.uid_map {
            Some(m) if uid != u32::MAX => m.store(uid),
            _ => uid,
        }
    }

    /// The gid stored for a gid a caller gives; `u32::MAX` (chown's "unchanged") stays.
    pub fn store_gid(&self, gid: u32) -> u32 {
        match &self.gid_map {
            Some(m) if gid != u32::MAX => m.store(gid),
            _ => gid,
        }
    }

    /// An xattr value as the mount shows it: ids inside POSIX ACLs and a v3 capability's
    /// root id are mapped like owners. Anything else, or a malformed value (layers are
    /// untrusted), is returned unchanged.
    pub fn show_xattr<'a>(&self, name: &[u8], value: &'a [u8]) -> Cow<'a, [u8]> {
        self.map_xattr(name, value, IdMap::show)
    }

    /// An xattr value a caller sets, as it is stored.
    pub fn store_xattr<'a>(&self, name: &[u8], value: &'a [u8]) -> Cow<'a, [u8]> {
        self.map_xattr(name, value, IdMap::store)
    }

    fn map_xattr<'a>(
        &self,
        name: &[u8],
        value: &'a [u8],
        dir: fn(&IdMap, u32) -> u32,
    ) -> Cow<'a, [u8]> {
        if self.uid_map.is_none() && self.gid_map.is_none() {
            return Cow::Borrowed(value);
        }
        let uid = |id| self.uid_map.as_ref().map_or(id, |m| dir(m, id));
        let gid = |id| self.gid_map.as_ref().map_or(id, |m| dir(m, id));
        match name {
            ACL_ACCESS | ACL_DEFAULT => map_acl(value, uid, gid),
            CAPS => map_caps(value, uid),
            _ => None,
        }
        .map_or(Cow::Borrowed(value), Cow::Owned)
    }
}

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
const CAPS: &[u8] = b"security.capability";

/// The kernel's xattr form of a POSIX ACL: a 4-byte version (2), then 8-byte entries
/// (tag u16, perm u16, id u32, little endian). Only `ACL_USER` and `ACL_GROUP` carry ids.
fn map_acl(value: &[u8], uid: impl Fn(u32) -> u32, gid: impl Fn(u32) -> u32) -> Option<Vec<u8>> {
    const VERSION: u32 = 2;
    const ACL_USER: u16 = 0x02;
    const ACL_GROUP: u16 = 0x08;
    let (head, entries) = value.split_at_checked(4)?;
    if u32::from_le_bytes(head.try_into().ok()?) != VERSION || !entries.len().is_multiple_of(8) {
        return None;
    }
    let mut out = value.to_vec();
    for e in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let mapped = match tag {
            ACL_USER => uid(id),
            ACL_GROUP => gid(id),
            _ => continue,
        };
        e[4..8].copy_from_slice(&mapped.to_le_bytes());
    }
    Some(out)
}

/// `security.capability` revision 3 (namespaced file capabilities): 20 bytes as revision 2,
/// then the root id (u32 LE) of the user namespace the capabilities belong to.
fn map_caps(value: &[u8], uid: impl Fn(u32) -> u32) -> Option<Vec<u8>> {
    const REVISION_MASK: u32 = 0xff00_0000;
    const REVISION_3: u32 = 0x0300_0000;
    const SIZE_3: usize = 24;
    if value.len() != SIZE_3 {
        return None;
    }
    let magic = u32::from_le_bytes(value[0..4].try_into().ok()?);
    if magic & REVISION_MASK != REVISION_3 {
        return None;
    }
    let root = u32::from_le_bytes(value[20..24].try_into().ok()?);
    let mut out = value.to_vec();
    out[20..24].copy_from_slice(&uid(root).to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_is_disk_to_shown() {
        let m = IdMap::parse("0:100000:65536").unwrap();
        assert_eq!(m.show(0), 100_000);
        assert_eq!(m.show(65_535), 165_535);
        assert_eq!(m.show(100_000), OVERFLOW_ID);
        assert_eq!(m.store(100_000), 0);
        assert_eq!(m.store(165_535), 65_535);
        assert_eq!(m.store(0), OVERFLOW_ID);
    }

    #[test]
    fn podman_keep_id_form() {
        // Rootless `podman run --userns=keep-id` for uid 1001 with 65536 subordinate ids.
        let m = IdMap::parse(":0:1:1001:1001:0:1:1002:1002:64535").unwrap();
        assert_eq!(m.show(0), 1, "image root shows as 1, the container's root");
        assert_eq!(m.show(1001), 0);
        assert_eq!(m.show(5), 6);
        assert_eq!(m.show(2000), 2000);
        assert_eq!(m.store(0), 1001);
        assert_eq!(m.store(1), 0);
        for id in 0..70_000 {
            if m.show(id) != OVERFLOW_ID {
                assert_eq!(m.store(m.show(id)), id);
            }
        }
    }

    #[test]
    fn empty_fields_are_skipped_and_the_last_overlapping_range_wins() {
        let m = IdMap::parse("0::10:5::0:20:5:").unwrap();
        assert_eq!(m.ranges().len(), 2);
        assert_eq!(m.show(0), 20);
        assert_eq!(m.store(10), 0);
    }

    #[test]
    fn ranges_near_the_top_are_checked_at_parse_time() {
        assert!(IdMap::parse("4294967290:0:5").is_ok());
        let m = IdMap::parse("4294967290:0:5").unwrap();
        assert_eq!(m.show(4_294_967_294), 4);
        assert_eq!(m.show(u32::MAX), OVERFLOW_ID);
        assert_eq!(m.store(4), 4_294_967_294);
        assert!(IdMap::parse("4294967290:0:6").is_err());
        assert!(IdMap::parse("0:4294967295:1").is_err());
        assert!(IdMap::parse("0:0:4294967295").is_ok());
        assert!(IdMap::parse("1:0:4294967295").is_err());
        assert!(IdMap::parse("1:2").is_err());
        assert!(IdMap::parse("").is_err());
        assert!(IdMap::parse("1:x:3").is_err());
        assert!(IdMap::parse("-1:0:3").is_err());
    }

    #[test]
    fn chown_unchanged_is_not_mapped_and_squash_only_shows() {
        let ids = Ids {
            uid_map: Some(IdMap::parse("0:1000:10").unwrap()),
            gid_map: Some(IdMap::parse("0:2000:10").unwrap()),
            squash_uid: None,
            squash_gid: Some(7),
        };
        assert_eq!(ids.store_uid(u32::MAX), u32::MAX);
        assert_eq!(ids.store_gid(u32::MAX), u32::MAX);
        assert_eq!(ids.store_uid(1003), 3);
        assert_eq!(ids.show(3, 3), (1003, 7));
    }

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn acl_ids_are_mapped_both_ways() {
        let ids = Ids {
            uid_map: Some(IdMap::parse("0:100000:65536").unwrap()),
            gid_map: Some(IdMap::parse("0:200000:65536").unwrap()),
            ..Ids::default()
        };
        let disk = acl(&[
            (0x01, 7, u32::MAX),
            (0x02, 6, 33),
            (0x04, 5, u32::MAX),
            (0x08, 4, 44),
            (0x10, 7, u32::MAX),
            (0x20, 0, u32::MAX),
        ]);
        let shown = acl(&[
            (0x01, 7, u32::MAX),
            (0x02, 6, 100_033),
            (0x04, 5, u32::MAX),
            (0x08, 4, 200_044),
            (0x10, 7, u32::MAX),
            (0x20, 0, u32::MAX),
        ]);
        for name in [ACL_ACCESS, ACL_DEFAULT] {
            assert_eq!(&*ids.show_xattr(name, &disk), &shown[..]);
            assert_eq!(&*ids.store_xattr(name, &shown), &disk[..]);
        }
        assert_eq!(&*ids.show_xattr(b"user.x", &disk), &disk[..]);
        // Malformed values pass unchanged, never panic.
        for bad in [&b""[..], b"\x02\0\0", b"\x02\0\0\0\x02\0", b"\x01\0\0\0"] {
            assert_eq!(&*ids.show_xattr(ACL_ACCESS, bad), bad);
        }
    }

    #[test]
    fn v3_capability_root_id_is_mapped_v2_is_not() {
        let ids = Ids {
            uid_map: Some(IdMap::parse("0:100000:65536").unwrap()),
            ..Ids::default()
        };
        let mut v3 = 0x0300_0001u32.to_le_bytes().to_vec();
        v3.extend_from_slice(&[0xff; 16]);
        let mut shown = v3.clone();
        v3.extend_from_slice(&0u32.to_le_bytes());
        shown.extend_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(&*ids.show_xattr(CAPS, &v3), &shown[..]);
        assert_eq!(&*ids.store_xattr(CAPS, &shown), &v3[..]);
        let v2 = &v3[..20];
        let mut v2 = v2.to_vec();
        v2[3] = 0x02;
        assert_eq!(&*ids.show_xattr(CAPS, &v2), &v2[..]);
    }
}
