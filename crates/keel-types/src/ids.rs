//! Identifier and counter newtypes.

use std::fmt;

/// A store-wide main revision (etcd's `revision`): one per write request that changes the
/// keyspace. A new store is at revision 1, like etcd's.
///
/// # Examples
/// ```
/// use keel_types::Revision;
/// let r = Revision::new(1);
/// assert_eq!(r.get(), 1);
/// assert_eq!(r.next().get(), 2);
/// assert!(Revision::from_etcd(-1).is_none());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Revision(u64);

impl Revision {
    /// The revision of a newly created store (etcd starts at 1).
    pub const FIRST: Revision = Revision(1);

    /// A revision from its number.
    pub const fn new(value: u64) -> Self {
        Revision(value)
    }

    /// The revision number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The following revision (saturating at `u64::MAX`).
    pub const fn next(self) -> Self {
        Revision(self.0.saturating_add(1))
    }

    /// The previous revision (saturating at 0).
    pub const fn prev(self) -> Self {
        Revision(self.0.saturating_sub(1))
    }

    /// A revision from etcd's signed wire value; `None` when negative.
    pub fn from_etcd(value: i64) -> Option<Self> {
        u64::try_from(value).ok().map(Revision)
    }

    /// The signed wire value etcd uses (saturating at `i64::MAX`).
    pub fn to_etcd(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A lease identifier. Never zero: zero is etcd's "no lease" on the wire, which keel spells
/// `Option::<LeaseId>::None`.
///
/// # Examples
/// ```
/// use keel_types::LeaseId;
/// assert!(LeaseId::new(0).is_none());
/// let id = LeaseId::new(0x018f_6d7b_d032_c117).unwrap();
/// assert_eq!(id.to_string(), "18f6d7bd032c117");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "i64", into = "i64")
)]
pub struct LeaseId(i64);

/// Decoding refuses 0, which is not a lease id.
#[cfg(feature = "serde")]
impl TryFrom<i64> for LeaseId {
    type Error = &'static str;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        LeaseId::new(value).ok_or("lease id 0 means no lease")
    }
}

#[cfg(feature = "serde")]
impl From<LeaseId> for i64 {
    fn from(id: LeaseId) -> i64 {
        id.0
    }
}

impl LeaseId {
    /// A lease id; `None` for 0 ("no lease").
    pub const fn new(value: i64) -> Option<Self> {
        if value == 0 {
            None
        } else {
            Some(LeaseId(value))
        }
    }

    /// The id as etcd's signed wire value (never 0).
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Wire value of an optional lease: 0 for none.
    pub fn option_to_etcd(lease: Option<LeaseId>) -> i64 {
        lease.map_or(0, LeaseId::get)
    }
}

impl fmt::Display for LeaseId {
    /// Lower-case hex, as etcdctl prints lease ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A cluster member's identifier (etcd's 64-bit member id).
///
/// # Examples
/// ```
/// use keel_types::MemberId;
/// assert_eq!(MemberId::new(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MemberId(u64);

impl MemberId {
    /// A member id from its number.
    pub const fn new(value: u64) -> Self {
        MemberId(value)
    }

    /// The id number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MemberId {
    /// Lower-case hex, as etcd prints member ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A cluster's identifier (etcd's 64-bit cluster id).
///
/// # Examples
/// ```
/// use keel_types::ClusterId;
/// assert_eq!(ClusterId::new(255).to_string(), "ff");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClusterId(u64);

impl ClusterId {
    /// A cluster id from its number.
    pub const fn new(value: u64) -> Self {
        ClusterId(value)
    }

    /// The id number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClusterId {
    /// Lower-case hex, as etcd prints cluster ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_etcd_round_trip() {
        assert_eq!(Revision::from_etcd(7), Some(Revision::new(7)));
        assert_eq!(Revision::from_etcd(-3), None);
        assert_eq!(Revision::new(u64::MAX).to_etcd(), i64::MAX);
        assert_eq!(Revision::new(0).prev(), Revision::new(0));
    }

    #[test]
    fn lease_zero_is_none() {
        assert_eq!(LeaseId::new(0), None);
        assert_eq!(LeaseId::option_to_etcd(None), 0);
        assert_eq!(LeaseId::option_to_etcd(LeaseId::new(-5)), -5);
    }
}
