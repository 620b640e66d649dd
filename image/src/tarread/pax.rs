//! PAX extended header records (POSIX `pax`, "extended header"): `"%d %s=%s\n"`, where the
//! decimal length counts the whole record, its own digits and the newline included. The
//! value is raw bytes and may hold newlines, `=` and NULs (xattr values are binary), so a
//! record is found by its length, never by searching for a newline.

use anyhow::{bail, Result};

/// One record: the keyword and its value, borrowed from the header's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The records of one extended header's data, in order. Strict: every byte of `data`
/// belongs to a well-formed record (a length of decimal digits, a space, a non-empty
/// keyword, `=`, the value, a newline; the length within `data`). The error says which
/// record (by its byte offset) and why.
pub fn records(data: &[u8]) -> Result<Vec<Record<'_>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let (rec, len) = record(&data[at..]).map_err(|why| {
            anyhow::anyhow!("malformed PAX record at byte {at} of the extended header: {why}")
        })?;
        out.push(rec);
        at += len;
    }
    Ok(out)
}

/// The record at the start of `rest` and its length.
fn record(rest: &[u8]) -> std::result::Result<(Record<'_>, usize), &'static str> {
    // 19 digits hold any length a usize-sized header could have; more is a lie.
    let digits = rest
        .iter()
        .take(20)
        .position(|&b| b == b' ')
        .ok_or("no space after the length within 20 bytes")?;
    if digits == 0 {
        return Err("empty length");
    }
    if !rest[..digits].iter().all(u8::is_ascii_digit) {
        return Err("the length is not decimal digits");
    }
    let len: usize = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("the length does not fit")?;
    if len > rest.len() {
        return Err("the length runs past the end of the header");
    }
    // Digits, space, at least `k=` and the newline.
    if len < digits + 4 {
        return Err("the length is too short for a record");
    }
    let rec = &rest[..len];
    if rec[len - 1] != b'\n' {
        return Err("the record does not end in a newline where its length says");
    }
    let body = &rec[digits + 1..len - 1];
    let eq = body
        .iter()
        .position(|&b| b == b'=')
        .ok_or("no '=' in the record")?;
    if eq == 0 {
        return Err("empty keyword");
    }
    Ok((
        Record {
            key: &body[..eq],
            value: &body[eq + 1..],
        },
        len,
    ))
}

/// Formats one record (the inverse of [`records`]).
pub fn format_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // The length counts its own digits: grow the digit count until it is stable.
    let rest = key.len() + value.len() + 3;
    let mut digits = 1;
    while (rest + digits).to_string().len() != digits {
        digits += 1;
    }
    let mut out = format!("{} ", rest + digits).into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// The keyword of the record for the xattr `name`: `SCHILY.xattr.` and the name with `%`
/// and `=` escaped as `%25` and `%3D` (a keyword ends at its first `=`), as GNU tar and
/// libarchive write them.
pub fn xattr_keyword(name: &[u8]) -> Vec<u8> {
    let mut k = b"SCHILY.xattr.".to_vec();
    for &b in name {
        match b {
            b'%' => k.extend_from_slice(b"%25"),
            b'=' => k.extend_from_slice(b"%3D"),
            _ => k.push(b),
        }
    }
    k
}

/// The inverse of the escaping in [`xattr_keyword`], and of libarchive's (which escapes
/// more: `%20` for a space...): every `%` and two hex digits is that byte; any other `%`
/// stays as it is.
fn xattr_name(escaped: &[u8]) -> Result<Vec<u8>> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        match escaped[i..] {
            [b'%', h, l, ..] if hex(h).is_some() && hex(l).is_some() => {
                out.push(hex(h).unwrap_or(0) << 4 | hex(l).unwrap_or(0));
                i += 3;
            }
            _ => {
                out.push(escaped[i]);
                i += 1;
            }
        }
    }
    if out.is_empty() || out.contains(&0) {
        bail!(
            "PAX xattr name {:?} is empty or holds a NUL",
            String::from_utf8_lossy(escaped)
        );
    }
    Ok(out)
}

/// Standard base64 (libarchive's xattr values), padding optional.
fn base64(s: &[u8]) -> Result<Vec<u8>> {
    let s = s.strip_suffix(b"==").or(s.strip_suffix(b"=")).unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("PAX xattr value is not base64"),
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        bail!("PAX xattr value is not base64 (its length)");
    }
    Ok(out)
}

/// What the records of one entry's extended header say about it (later records of the same
/// keyword win, as POSIX has it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pax {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    /// Seconds and nanoseconds.
    pub mtime: Option<(i64, i64)>,
    /// `SCHILY.xattr.NAME` records: (NAME, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pax {
    /// Reads the records of `data` into a summary.
    pub fn parse(data: &[u8]) -> Result<Pax> {
        let mut p = Pax::default();
        for r in records(data)? {
            let num = || -> Result<u64> {
                std::str::from_utf8(r.value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "PAX {}={:?} is not a number",
                            String::from_utf8_lossy(r.key),
                            String::from_utf8_lossy(r.value)
                        )
                    })
            };
            match r.key {
                b"path" => p.path = Some(r.value.to_vec()),
                b"linkpath" => p.linkpath = Some(r.value.to_vec()),
                b"size" => p.size = Some(num()?),
                b"uid" => p.uid = Some(num()?),
                b"gid" => p.gid = Some(num()?),
                // A time that does not parse is dropped (the header's whole seconds stay).
                b"mtime" => p.mtime = time(r.value).or(p.mtime),
                // PAX sparse files keep their map in these records (0.x) or in the data
                // (1.0), under a made-up name: read as a plain member they would unpack
                // wrong, silently (`GNUSparseFile.N/NAME` holding the map).
                k if k.starts_with(b"GNU.sparse.") => bail!(
                    "PAX sparse file ({} record, as GNU tar --format=posix --sparse writes): \
                     not supported",
                    String::from_utf8_lossy(k)
                ),
                k => {
                    // libarchive writes each xattr twice, as SCHILY (raw value) and as
                    // LIBARCHIVE (base64 value): both give the same pair.
                    let xattr = if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        Some((xattr_name(name)?, r.value.to_vec()))
                    } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                        Some((xattr_name(name)?, base64(r.value)?))
                    } else {
                        None
                    };
                    if let Some((name, value)) = xattr {
                        p.xattrs.retain(|(n, _)| *n != name);
                        p.xattrs.push((name, value));
                    }
                }
            }
        }
        Ok(p)
    }
}

/// A PAX time: `[-]SECONDS[.FRACTION]`.
pub fn time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut ns = 0i64;
    for (i, d) in frac.bytes().take(9).enumerate() {
        ns += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if neg {
        if ns == 0 {
            (-secs, 0)
        } else {
            (-secs - 1, 1_000_000_000 - ns)
        }
    } else {
        (secs, ns)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(key: &[u8], value: &[u8]) -> Vec<u8> {
        format_record(key, value)
    }

    #[test]
    fn values_with_newline_equals_and_nul() {
        let v: &[u8] = b"a\nb=c\0d\n";
        let mut data = one(b"SCHILY.xattr.user.x", v);
        data.extend(one(b"path", b"dir/f"));
        let recs = records(&data).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].key, b"SCHILY.xattr.user.x");
        assert_eq!(recs[0].value, v);
        assert_eq!(recs[1].value, b"dir/f");
        let p = Pax::parse(&data).unwrap();
        assert_eq!(p.xattrs, vec![(b"user.x".to_vec(), v.to_vec())]);
        assert_eq!(p.path.as_deref(), Some(&b"dir/f"[..]));
    }

    #[test]
    fn a_value_cannot_forge_a_record() {
        // Split at newlines, this value would read as a `path` record of its own.
        let v: &[u8] = b"x\n13 path=evil\n";
        let data = one(b"SCHILY.xattr.user.x", v);
        let p = Pax::parse(&data).unwrap();
        assert_eq!(p.path, None);
        assert_eq!(p.xattrs[0].1, v);
    }

    #[test]
    fn lengths_of_several_digits() {
        for n in [
            0usize, 1, 2, 3, 4, 5, 6, 80, 85, 86, 87, 88, 989, 990, 991, 9990, 100_000,
        ] {
            let v = vec![b'\n'; n];
            let data = one(b"k", &v);
            let digits = data.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&data[..digits])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, data.len(), "value of {n} bytes");
            assert_eq!(records(&data).unwrap()[0].value, &v[..]);
        }
    }

    #[test]
    fn lying_lengths_fail() {
        let good = b"12 uid=1000\n".to_vec();
        assert_eq!(Pax::parse(&good).unwrap().uid, Some(1000));
        for bad in [
            &b"11 uid=1000\n"[..],            // too short: no newline where it ends
            b"13 uid=1000\n",                 // too long: past the end
            b"13 uid=1000\n\n",               // too long: the newline is the value's
            b"12 uid=1000\nx",                // trailing garbage
            b"12 uid=1000",                   // truncated
            b"12 uid=10",                     // truncated
            b"1",                             // truncated in the length
            b"99999999999999999999999 a=b\n", // huge
            b"18446744073709551616 a=b\n",    // past u64
            b"12uid=10000\n",                 // no space
            b" 12 uid=100\n",                 // empty length
            b"+9 uid=1\n",                    // not digits
            b"9 uid 1\n\n",                   // no '='
            b"6 =ab\n",                       // empty keyword
            b"3 \n",                          // too short
            b"12 uid=12ab\n",                 // not a number
            b"7 uid=\n",                      // empty number
            b"20 SCHILY.xattr.=ab\n",         // xattr without a name
        ] {
            assert!(
                Pax::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn xattr_names_with_percent_and_equals() {
        for name in [
            &b"user.a=b"[..],
            b"user.50%",
            b"user.%3D=%25%",
            b"user.plain",
        ] {
            let k = xattr_keyword(name);
            assert!(!k.contains(&b'='), "{k:?}");
            let p = Pax::parse(&format_record(&k, b"v")).unwrap();
            assert_eq!(p.xattrs, vec![(name.to_vec(), b"v".to_vec())]);
        }
        // As GNU tar writes it; a `%` not followed by two hex digits stays.
        let p = Pax::parse(&format_record(b"SCHILY.xattr.user.a%3Db%4%zz%", b"v")).unwrap();
        assert_eq!(p.xattrs[0].0, b"user.a=b%4%zz%");
        // As bsdtar writes it: both records, the same pair.
        let mut data = Vec::new();
        data.extend(format_record(
            b"LIBARCHIVE.xattr.user.a%3Db%2050%25",
            b"AApl",
        ));
        data.extend(format_record(b"SCHILY.xattr.user.a%3Db%2050%25", b"\0\ne"));
        let p = Pax::parse(&data).unwrap();
        assert_eq!(
            p.xattrs,
            vec![(b"user.a=b 50%".to_vec(), b"\0\ne".to_vec())]
        );
        for bad in [
            &b"SCHILY.xattr.%00"[..],
            b"LIBARCHIVE.xattr.",
            b"SCHILY.xattr.",
        ] {
            assert!(Pax::parse(&format_record(bad, b"")).is_err());
        }
        assert!(Pax::parse(&format_record(b"LIBARCHIVE.xattr.user.x", b"a*")).is_err());
    }

    #[test]
    fn base64_values() {
        for (enc, dec) in [
            (&b""[..], &b""[..]),
            (b"YQ==", b"a"),
            (b"YQ", b"a"),
            (b"YQpi", b"a\nb"),
            (b"ZXE=", b"eq"),
            (b"AAD/", b"\0\0\xff"),
        ] {
            assert_eq!(base64(enc).unwrap(), dec, "{enc:?}");
        }
        assert!(base64(b"Y").is_err());
        assert!(base64(b"Y!").is_err());
    }

    #[test]
    fn later_records_win() {
        let mut data = one(b"SCHILY.xattr.user.a", b"1");
        data.extend(one(b"mtime", b"5.25"));
        data.extend(one(b"SCHILY.xattr.user.a", b"2"));
        data.extend(one(b"size", b"123"));
        data.extend(one(b"comment", b"ignored"));
        let p = Pax::parse(&data).unwrap();
        assert_eq!(p.xattrs, vec![(b"user.a".to_vec(), b"2".to_vec())]);
        assert_eq!(p.mtime, Some((5, 250_000_000)));
        assert_eq!(p.size, Some(123));
    }

    #[test]
    fn times() {
        assert_eq!(time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(time(b"7"), Some((7, 0)));
        assert_eq!(time(b"1.0000000019"), Some((1, 1)));
        assert_eq!(time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(time(b"x"), None);
        assert_eq!(time(b".5"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Pax::parse(&data);
        }

        #[test]
        fn near_records_never_panic(
            recs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..12), proptest::collection::vec(any::<u8>(), 0..40)), 1..4),
            cut in any::<usize>(),
            flip in any::<(usize, u8)>(),
        ) {
            let mut data: Vec<u8> = recs.iter().flat_map(|(k, v)| format_record(k, v)).collect();
            let n = data.len();
            data[flip.0 % n] = flip.1;
            let _ = Pax::parse(&data);
            data.truncate(cut % (n + 1));
            let _ = Pax::parse(&data);
        }

        #[test]
        fn records_round_trip(
            recs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>().prop_filter("no =", |b| *b != b'='), 1..12),
                 proptest::collection::vec(any::<u8>(), 0..300)),
                0..5),
        ) {
            let data: Vec<u8> = recs.iter().flat_map(|(k, v)| format_record(k, v)).collect();
            let back = records(&data).unwrap();
            prop_assert_eq!(back.len(), recs.len());
            for (r, (k, v)) in back.iter().zip(&recs) {
                prop_assert_eq!(r.key, &k[..]);
                prop_assert_eq!(r.value, &v[..]);
            }
        }
    }
}
