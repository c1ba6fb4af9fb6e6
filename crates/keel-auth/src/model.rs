//! Users, roles and key-range permissions.

use keel_types::KeyRange;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The name of the superuser and of the role that grants everything.
pub const ROOT: &str = "root";

/// What a permission allows (etcd's `READ`, `WRITE`, `READWRITE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PermissionKind {
    /// Range, watch, txn compares, `prev_kv`.
    Read,
    /// Put, delete, lease revoke of attached keys.
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionKind {
    /// Whether this kind allows `access`.
    pub fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (PermissionKind::ReadWrite, _)
                | (PermissionKind::Read, Access::Read)
                | (PermissionKind::Write, Access::Write)
        )
    }
}

/// The kind of access a request needs on a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading.
    Read,
    /// Writing.
    Write,
}

/// A key-range permission of a role.
///
/// # Examples
/// ```
/// use keel_auth::{Access, Permission, PermissionKind};
/// use keel_types::KeyRange;
/// let p = Permission::new(PermissionKind::Read, KeyRange::prefix(&b"/cfg/"[..]));
/// assert!(p.kind.allows(Access::Read) && !p.kind.allows(Access::Write));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub kind: PermissionKind,
    /// The keys it covers (etcd's `key`/`range_end`).
    pub range: KeyRange,
}

impl Permission {
    /// A permission of `kind` on `range`.
    pub fn new(kind: PermissionKind, range: KeyRange) -> Self {
        Permission { kind, range }
    }
}

/// A user: name, salted password hash, granted roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The name.
    pub name: String,
    /// The bcrypt hash; `None` for a user added with `--no-password` (it cannot authenticate
    /// with a password; a client certificate's common name can name it).
    pub password_hash: Option<String>,
    /// Granted roles, sorted.
    pub roles: BTreeSet<String>,
}

/// A role: name and key-range permissions (sorted by range start, one per range).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The name.
    pub name: String,
    /// The permissions.
    pub permissions: Vec<Permission>,
}

/// Whether `ranges` (each allowing the access asked) together cover every key of `wanted`.
///
/// Sort by start, then sweep a cursor from `wanted`'s start while the next range begins at
/// or before it; covered once the cursor passes `wanted`'s end (or a range is unbounded).
pub(crate) fn covers<'a>(ranges: impl Iterator<Item = &'a KeyRange>, wanted: &KeyRange) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let mut spans: Vec<(&[u8], Option<Vec<u8>>)> = ranges
        .filter(|r| !r.is_empty())
        .map(|r| (r.start(), r.end()))
        .collect();
    spans.sort_by(|a, b| a.0.cmp(b.0));
    let wanted_end = wanted.end();
    let mut cursor: Vec<u8> = wanted.start().to_vec();
    for (start, end) in spans {
        if start > cursor.as_slice() {
            break;
        }
        match end {
            None => return true,
            Some(end) if end > cursor => cursor = end,
            Some(_) => {}
        }
        if wanted_end.as_ref().is_some_and(|w| cursor >= *w) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(a: &[u8], b: &[u8]) -> KeyRange {
        KeyRange::Span {
            start: a.to_vec().into(),
            end: b.to_vec().into(),
        }
    }

    #[test]
    fn coverage_joins_adjacent_ranges_and_sees_gaps() {
        let granted = [span(b"a", b"c"), span(b"c", b"f")];
        assert!(covers(granted.iter(), &span(b"b", b"e")));
        assert!(covers(granted.iter(), &KeyRange::key(&b"e"[..])));
        assert!(!covers(granted.iter(), &span(b"b", b"g")));
        assert!(!covers(
            granted.iter(),
            &KeyRange::FromKey((&b"b"[..]).into())
        ));
        let gap = [span(b"a", b"c"), span(b"d", b"f")];
        assert!(!covers(gap.iter(), &span(b"b", b"e")));
        assert!(covers(
            [KeyRange::all()].iter(),
            &KeyRange::FromKey((&b"x"[..]).into())
        ));
        assert!(!covers(std::iter::empty(), &KeyRange::key(&b"k"[..])));
    }

    proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..proptest::test_runner::Config::default()
        })]
        /// The sweep agrees with checking every key of a small alphabet one by one.
        #[test]
        fn coverage_matches_key_by_key(
            granted in prop::collection::vec((0u8..6, 0u8..7), 0..5),
            wanted in (0u8..6, 0u8..7),
        ) {
            let to_range = |(a, b): (u8, u8)| {
                if b == 6 { KeyRange::FromKey(vec![a].into()) } else { span(&[a], &[b]) }
            };
            let granted: Vec<KeyRange> = granted.into_iter().map(to_range).collect();
            let wanted = to_range(wanted);
            // Keys: single bytes 0..6 and those bytes followed by one more byte, which the
            // ranges' bounds (single bytes) split exactly like longer keys.
            let keys: Vec<Vec<u8>> = (0u8..6)
                .flat_map(|a| [vec![a], vec![a, 0], vec![a, 200]])
                .collect();
            let naive = keys
                .iter()
                .filter(|k| wanted.contains(k))
                .all(|k| granted.iter().any(|g| g.contains(k)));
            // Unbounded wanted ranges also need a grant past the alphabet.
            let naive = naive
                && (wanted.end().is_some() || granted.iter().any(|g| g.end().is_none()));
            prop_assert_eq!(covers(granted.iter(), &wanted), naive);
        }
    }
}
