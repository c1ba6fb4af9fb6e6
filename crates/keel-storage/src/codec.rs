//! Byte formats of the MVCC keyspace: records, history keys, revision keys.
//!
//! Record (value of `kv` and `kv_history`):
//!
//! ```text
//! 0      1      2           10          18         22          30        [38]
//! +------+------+-----------+-----------+----------+-----------+---------+-------+
//! | ver  | flags| create BE | mod main  | mod sub  | version   | lease   | value |
//! | =1   |      | u64       | u64 BE    | u32 BE   | u64 BE    | i64 BE  | ...   |
//! +------+------+-----------+-----------+----------+-----------+---------+-------+
//! flags: bit 0 = tombstone, bit 1 = lease present (the lease field exists only then)
//! ```
//!
//! Decoders return [`StorageError::Corrupted`], never panic.

use crate::error::{Result, StorageError};
use bytes::Bytes;
use keel_types::{LeaseId, Revision};

const RECORD_VERSION: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
const FLAG_LEASE: u8 = 2;
const HEADER_BYTES: usize = 30;

/// One stored version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Revision that created the key (0 for a tombstone).
    pub create_revision: Revision,
    /// Main revision of this version.
    pub mod_revision: Revision,
    /// Sub position inside `mod_revision`.
    pub sub: u32,
    /// Per-key version (0 for a tombstone).
    pub version: u64,
    /// Attached lease.
    pub lease: Option<LeaseId>,
    /// Value (empty for a tombstone).
    pub value: Bytes,
    /// Whether this version is a deletion.
    pub tombstone: bool,
}

impl Record {
    /// Encode (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 8 + self.value.len());
        self.encode_into(&mut out);
        out
    }

    /// Append the encoding ([`Record::encode`]) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.tombstone {
            flags |= FLAG_TOMBSTONE;
        }
        if self.lease.is_some() {
            flags |= FLAG_LEASE;
        }
        out.push(RECORD_VERSION);
        out.push(flags);
        out.extend_from_slice(&self.create_revision.get().to_be_bytes());
        out.extend_from_slice(&self.mod_revision.get().to_be_bytes());
        out.extend_from_slice(&self.sub.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        if let Some(lease) = self.lease {
            out.extend_from_slice(&lease.get().to_be_bytes());
        }
        out.extend_from_slice(&self.value);
    }

    /// Decode (see the module docs).
    ///
    /// # Errors
    /// [`StorageError::Corrupted`] on a short buffer, unknown version or bad flags.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |d: &str| StorageError::corrupted("record", d.to_string());
        if bytes.len() < HEADER_BYTES {
            return Err(bad("too short"));
        }
        if bytes[0] != RECORD_VERSION {
            return Err(bad("unknown record version"));
        }
        let flags = bytes[1];
        if flags & !(FLAG_TOMBSTONE | FLAG_LEASE) != 0 {
            return Err(bad("unknown flags"));
        }
        let create = be_u64(&bytes[2..10])?;
        let main = be_u64(&bytes[10..18])?;
        let sub = be_u32(&bytes[18..22])?;
        let version = be_u64(&bytes[22..30])?;
        let mut rest = &bytes[HEADER_BYTES..];
        let lease = if flags & FLAG_LEASE != 0 {
            if rest.len() < 8 {
                return Err(bad("truncated lease"));
            }
            let id = i64::from_be_bytes(fixed8(&rest[..8])?);
            rest = &rest[8..];
            Some(LeaseId::new(id).ok_or_else(|| bad("zero lease id"))?)
        } else {
            None
        };
        Ok(Record {
            create_revision: Revision::new(create),
            mod_revision: Revision::new(main),
            sub,
            version,
            lease,
            value: Bytes::copy_from_slice(rest),
            tombstone: flags & FLAG_TOMBSTONE != 0,
        })
    }
}

fn fixed8(b: &[u8]) -> Result<[u8; 8]> {
    b.try_into()
        .map_err(|_| StorageError::corrupted("integer", "expected 8 bytes"))
}

/// Big-endian u64 from exactly 8 bytes.
pub(crate) fn be_u64(b: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(fixed8(b)?))
}

fn be_u32(b: &[u8]) -> Result<u32> {
    let a: [u8; 4] = b
        .try_into()
        .map_err(|_| StorageError::corrupted("integer", "expected 4 bytes"))?;
    Ok(u32::from_be_bytes(a))
}

/// Order-preserving, prefix-free escape of a user key (see `schema`).
pub fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    escape_into(key, &mut out);
    out
}

fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    if key.contains(&0) {
        for &b in key {
            out.push(b);
            if b == 0 {
                out.push(0xff);
            }
        }
    } else {
        out.extend_from_slice(key);
    }
    out.extend_from_slice(&[0, 1]);
}

/// Split `esc(key) ++ suffix` into the user key and the suffix.
///
/// # Errors
/// [`StorageError::Corrupted`] when the escape is malformed or unterminated.
pub fn unescape_key(bytes: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != 0 {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(0xff) => {
                out.push(0);
                i += 2;
            }
            Some(1) => return Ok((out, &bytes[i + 2..])),
            _ => return Err(StorageError::corrupted("history key", "bad escape")),
        }
    }
    Err(StorageError::corrupted("history key", "unterminated"))
}

/// `kv_history` key of `key` at main revision `main`.
pub fn history_key(key: &[u8], main: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    history_key_into(key, main, &mut out);
    out
}

/// Append the `kv_history` key of `key` at `main` ([`history_key`]) to `out`.
pub fn history_key_into(key: &[u8], main: Revision, out: &mut Vec<u8>) {
    escape_into(key, out);
    out.extend_from_slice(&(!main.get()).to_be_bytes());
}

/// Exclusive upper bound of every `kv_history` entry of `key`.
pub fn history_key_end(key: &[u8]) -> Vec<u8> {
    let mut out = escape_key(key);
    if let Some(last) = out.last_mut() {
        *last = 2;
    }
    out
}

/// Parse a `kv_history` key into (user key, main revision).
///
/// # Errors
/// [`StorageError::Corrupted`].
pub fn parse_history_key(bytes: &[u8]) -> Result<(Vec<u8>, Revision)> {
    let (key, rest) = unescape_key(bytes)?;
    let inv = be_u64(rest)?;
    Ok((key, Revision::new(!inv)))
}

/// `kv_revs` key of main revision `main`: its entry lists every key the revision changed.
pub fn revs_key(main: Revision) -> [u8; 8] {
    main.get().to_be_bytes()
}

/// Append one changed key to a `kv_revs` value (4-byte BE length, then the key). The value
/// lists the revision's changes in sub order, so a key's sub position is its place in it.
pub fn push_revs_key(key: &[u8], out: &mut Vec<u8>) {
    // keys are bounded by the request limit (1.5 MiB by default), far below u32::MAX
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
}

/// The changes a `kv_revs` entry lists, as (sub position, user key).
pub type RevsChanges<'v> = Vec<(u32, &'v [u8])>;

/// Parse a `kv_revs` entry into its main revision and its changes as (sub, user key).
///
/// Format 2 keys are the 8-byte main revision with the list of [`push_revs_key`] as value;
/// format 1 had one entry per change, keyed by main and sub (12 bytes), the user key as value.
/// Both are read, so a format 1 store opens without rewriting its index.
///
/// # Errors
/// [`StorageError::Corrupted`].
pub fn parse_revs_entry<'v>(key: &[u8], value: &'v [u8]) -> Result<(Revision, RevsChanges<'v>)> {
    match key.len() {
        8 => {
            let main = Revision::new(be_u64(key)?);
            let mut changes = Vec::new();
            let mut rest = value;
            while !rest.is_empty() {
                let len = be_u32(rest.get(..4).unwrap_or(rest))? as usize;
                let truncated = || StorageError::corrupted("revision entry", "truncated key");
                let end = len.checked_add(4).ok_or_else(truncated)?;
                let body = rest.get(4..end).ok_or_else(truncated)?;
                let sub = u32::try_from(changes.len())
                    .map_err(|_| StorageError::corrupted("revision entry", "too many keys"))?;
                changes.push((sub, body));
                rest = rest.get(end..).unwrap_or_default();
            }
            Ok((main, changes))
        }
        12 => Ok((
            Revision::new(be_u64(&key[..8])?),
            vec![(be_u32(&key[8..])?, value)],
        )),
        _ => Err(StorageError::corrupted(
            "revision key",
            "expected 8 or 12 bytes",
        )),
    }
}

/// Decode an 8-byte big-endian revision stored in `meta`.
///
/// # Errors
/// [`StorageError::Corrupted`].
pub fn decode_revision(bytes: &[u8]) -> Result<Revision> {
    be_u64(bytes)
        .map(Revision::new)
        .map_err(|_| StorageError::corrupted("meta revision", "expected 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            proptest::option::of(any::<i64>().prop_filter("nonzero", |v| *v != 0)),
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<bool>(),
        )
            .prop_map(|(c, m, s, v, l, val, t)| Record {
                create_revision: Revision::new(c),
                mod_revision: Revision::new(m),
                sub: s,
                version: v,
                lease: l.and_then(LeaseId::new),
                value: Bytes::from(val),
                tombstone: t,
            })
    }

    proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn record_round_trip(r in arb_record()) {
            prop_assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn record_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&b);
        }

        #[test]
        fn history_key_round_trip(k in proptest::collection::vec(any::<u8>(), 0..12), m in any::<u64>()) {
            let enc = history_key(&k, Revision::new(m));
            let (k2, m2) = parse_history_key(&enc).unwrap();
            prop_assert_eq!(k2, k.clone());
            prop_assert_eq!(m2, Revision::new(m));
            prop_assert!(enc.as_slice() < history_key_end(&k).as_slice());
            prop_assert!(enc.as_slice() >= escape_key(&k).as_slice());
        }

        #[test]
        fn history_order_is_key_asc_rev_desc(a in proptest::collection::vec(0u8..3, 0..5),
                                             b in proptest::collection::vec(0u8..3, 0..5),
                                             ra in 0u64..5, rb in 0u64..5) {
            let ea = history_key(&a, Revision::new(ra));
            let eb = history_key(&b, Revision::new(rb));
            let expected = a.cmp(&b).then(rb.cmp(&ra));
            prop_assert_eq!(ea.cmp(&eb), expected);
        }

        #[test]
        fn unescape_never_panics(b in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse_history_key(&b);
        }

        #[test]
        fn revs_entry_round_trip(
            main in any::<u64>(),
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..6),
        ) {
            let mut value = Vec::new();
            for k in &keys {
                push_revs_key(k, &mut value);
            }
            let (rev, changes) = parse_revs_entry(&revs_key(Revision::new(main)), &value).unwrap();
            prop_assert_eq!(rev.get(), main);
            prop_assert_eq!(changes.len(), keys.len());
            for (i, ((sub, key), expected)) in changes.iter().zip(&keys).enumerate() {
                prop_assert_eq!(*sub as usize, i);
                prop_assert_eq!(*key, expected.as_slice());
            }
        }

        #[test]
        fn revs_entry_decode_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..14),
            value in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let _ = parse_revs_entry(&key, &value);
        }
    }

    #[test]
    fn format_1_revs_entries_still_parse() {
        let mut key = 9u64.to_be_bytes().to_vec();
        key.extend_from_slice(&3u32.to_be_bytes());
        let (rev, changes) = parse_revs_entry(&key, b"user-key").unwrap();
        assert_eq!(rev.get(), 9);
        assert_eq!(changes, vec![(3, &b"user-key"[..])]);
        assert!(parse_revs_entry(&key[..11], b"user-key").is_err());
        // a length running past the value is corruption, not a panic
        assert!(parse_revs_entry(&key[..8], &[0, 0, 0, 9, b'a']).is_err());
        assert!(parse_revs_entry(&key[..8], &[0, 0]).is_err());
    }

    #[test]
    fn corrupted_records_are_errors() {
        assert!(Record::decode(&[]).is_err());
        let mut r = Record {
            create_revision: Revision::new(1),
            mod_revision: Revision::new(1),
            sub: 0,
            version: 1,
            lease: LeaseId::new(7),
            value: Bytes::from_static(b"v"),
            tombstone: false,
        }
        .encode();
        r[0] = 9;
        assert!(matches!(
            Record::decode(&r),
            Err(StorageError::Corrupted { .. })
        ));
    }
}
