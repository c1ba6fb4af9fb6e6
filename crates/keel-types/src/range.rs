//! Key ranges with etcd's `key` / `range_end` rules.
//!
//! etcd: api/etcdserverpb/rpc.proto (RangeRequest.range_end) and clientv3's `GetPrefixRangeEnd`.

use bytes::Bytes;

/// A set of keys, as etcd's `(key, range_end)` pair describes it:
///
/// | `range_end`          | keys                           | variant                |
/// |----------------------|--------------------------------|------------------------|
/// | empty                | exactly `key`                  | [`KeyRange::Key`]      |
/// | `"\0"`               | every key `>= key`             | [`KeyRange::FromKey`]  |
/// | anything else        | `key <= k < range_end`         | [`KeyRange::Span`]     |
///
/// A span whose end sorts at or before its start holds no key; that is not an error (etcd
/// returns an empty result).
///
/// # Examples
/// ```
/// use keel_types::KeyRange;
/// let all = KeyRange::from_etcd(b"\0".to_vec(), b"\0".to_vec());
/// assert!(all.contains(b"anything"));
/// let p = KeyRange::prefix(b"a\xff".to_vec());
/// assert_eq!(p.to_etcd(), (b"a\xff".to_vec().into(), b"b".to_vec().into()));
/// assert!(KeyRange::from_etcd(b"b".to_vec(), b"a".to_vec()).is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KeyRange {
    /// Exactly one key.
    Key(Bytes),
    /// Every key from `start` (inclusive) to `end` (exclusive).
    Span {
        /// First key in the range (inclusive).
        start: Bytes,
        /// First key after the range (exclusive).
        end: Bytes,
    },
    /// Every key at or after the given one.
    FromKey(Bytes),
}

impl KeyRange {
    /// The range etcd means by `(key, range_end)`.
    pub fn from_etcd(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> Self {
        let key = key.into();
        let end = range_end.into();
        if end.is_empty() {
            KeyRange::Key(key)
        } else if end.as_ref() == b"\0" {
            KeyRange::FromKey(key)
        } else {
            KeyRange::Span { start: key, end }
        }
    }

    /// A single key.
    pub fn key(key: impl Into<Bytes>) -> Self {
        KeyRange::Key(key.into())
    }

    /// Every key that starts with `prefix` (etcdctl `--prefix`). An empty prefix, or one made
    /// only of `0xff` bytes, has no finite end and becomes "every key from the prefix".
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return KeyRange::FromKey(Bytes::from_static(b"\0"));
        }
        match prefix_end(&prefix) {
            Some(end) => KeyRange::Span {
                start: prefix,
                end: Bytes::from(end),
            },
            None => KeyRange::FromKey(prefix),
        }
    }

    /// Every key.
    pub fn all() -> Self {
        KeyRange::FromKey(Bytes::from_static(b"\0"))
    }

    /// The first key of the range (inclusive).
    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Key(k) | KeyRange::FromKey(k) => k,
            KeyRange::Span { start, .. } => start,
        }
    }

    /// The exclusive end of the range; `None` when unbounded. For a single key this is the
    /// key followed by a zero byte (the smallest key after it).
    pub fn end(&self) -> Option<Vec<u8>> {
        match self {
            KeyRange::Key(k) => {
                let mut e = k.to_vec();
                e.push(0);
                Some(e)
            }
            KeyRange::Span { end, .. } => Some(end.to_vec()),
            KeyRange::FromKey(_) => None,
        }
    }

    /// Whether the range holds no key at all.
    pub fn is_empty(&self) -> bool {
        match self {
            KeyRange::Key(_) | KeyRange::FromKey(_) => false,
            KeyRange::Span { start, end } => end <= start,
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_ref() == key,
            KeyRange::Span { start, end } => start.as_ref() <= key && key < end.as_ref(),
            KeyRange::FromKey(k) => k.as_ref() <= key,
        }
    }

    /// Whether the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let a_before_b_end = match other.end() {
            Some(e) => self.start() < e.as_slice(),
            None => true,
        };
        let b_before_a_end = match self.end() {
            Some(e) => other.start() < e.as_slice(),
            None => true,
        };
        a_before_b_end && b_before_a_end
    }

    /// Whether this is a single key.
    pub fn is_single_key(&self) -> bool {
        matches!(self, KeyRange::Key(_))
    }

    /// etcd's `(key, range_end)` pair for this range.
    pub fn to_etcd(&self) -> (Bytes, Bytes) {
        match self {
            KeyRange::Key(k) => (k.clone(), Bytes::new()),
            KeyRange::Span { start, end } => (start.clone(), end.clone()),
            KeyRange::FromKey(k) => (k.clone(), Bytes::from_static(b"\0")),
        }
    }
}

/// The smallest key greater than every key with the given prefix: the prefix with its last
/// byte that is not `0xff` incremented and everything after it dropped. `None` when every
/// byte is `0xff` (no finite end exists).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn etcd_rules() {
        assert_eq!(
            KeyRange::from_etcd(&b"a"[..], &b""[..]),
            KeyRange::key(&b"a"[..])
        );
        assert!(matches!(
            KeyRange::from_etcd(&b"a"[..], &b"\0"[..]),
            KeyRange::FromKey(_)
        ));
        let r = KeyRange::from_etcd(&b"a"[..], &b"c"[..]);
        assert!(r.contains(b"a") && r.contains(b"b\xff") && !r.contains(b"c"));
        assert!(KeyRange::from_etcd(&b"c"[..], &b"a"[..]).is_empty());
        assert!(!KeyRange::from_etcd(&b"c"[..], &b"a"[..]).contains(b"b"));
    }

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert!(matches!(
            KeyRange::prefix(&b"\xff"[..]),
            KeyRange::FromKey(_)
        ));
        assert_eq!(KeyRange::prefix(&b""[..]), KeyRange::all());
    }

    #[test]
    fn overlaps_cases() {
        let a = KeyRange::from_etcd(&b"a"[..], &b"c"[..]);
        assert!(a.overlaps(&KeyRange::key(&b"b"[..])));
        assert!(!a.overlaps(&KeyRange::key(&b"c"[..])));
        assert!(a.overlaps(&KeyRange::from_etcd(&b"b"[..], &b"\0"[..])));
        assert!(!a.overlaps(&KeyRange::from_etcd(&b"c"[..], &b"\0"[..])));
        assert!(KeyRange::key(&b"x"[..]).overlaps(&KeyRange::key(&b"x"[..])));
    }

    proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn prefix_contains_exactly_prefixed(p in proptest::collection::vec(any::<u8>(), 1..4),
                                            k in proptest::collection::vec(any::<u8>(), 0..6)) {
            let r = KeyRange::prefix(p.clone());
            prop_assert_eq!(r.contains(&k), k.starts_with(&p));
        }

        #[test]
        fn etcd_round_trip(k in proptest::collection::vec(any::<u8>(), 1..4),
                           e in proptest::collection::vec(any::<u8>(), 0..4)) {
            let r = KeyRange::from_etcd(k.clone(), e.clone());
            let (k2, e2) = r.to_etcd();
            prop_assert_eq!(k2.to_vec(), k);
            prop_assert_eq!(e2.to_vec(), e);
        }

        #[test]
        fn overlaps_matches_brute_force(a in 0u8..6, b in 0u8..7, c in 0u8..6, d in 0u8..7, x in 0u8..8) {
            let r1 = KeyRange::from_etcd(vec![a], vec![b]);
            let r2 = KeyRange::from_etcd(vec![c], vec![d]);
            if r1.contains(&[x]) && r2.contains(&[x]) {
                prop_assert!(r1.overlaps(&r2));
            }
        }
    }
}
