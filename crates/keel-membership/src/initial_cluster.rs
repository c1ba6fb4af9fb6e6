//! [`InitialCluster`]: the parsed `--initial-cluster` flag.

use crate::cluster::Cluster;
use crate::error::{MembershipError, Result};
use crate::ids::{cluster_id_of, static_member_id};
use crate::limits::{INITIAL_CLUSTER_LEN_MAX_BYTES, MEMBERS_MAX};
use crate::member::Member;
use crate::names::{ClusterToken, MemberName};
use crate::url::MemberUrl;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The `--initial-cluster` flag: member names and their peer URLs, e.g.
/// `n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380`. A name may appear several times to list
/// several URLs for one member, as etcd allows; so a repeated name is not an error, while a
/// URL listed twice (under one name or two) is.
///
/// etcd: client/pkg/types/urlsmap.go (`NewURLsMap`), server/config/config.go
/// (`CheckDuplicateURL`).
///
/// # Examples
/// ```
/// use keel_membership::InitialCluster;
/// let ic = InitialCluster::parse("n2=http://b:2380,n1=http://a:2380,n1=http://a2:2380")?;
/// assert_eq!(ic.len(), 2);
/// assert_eq!(ic.to_string(), "n1=http://a2:2380,n1=http://a:2380,n2=http://b:2380");
/// assert_eq!(
///     InitialCluster::parse("n1=http://a:2380,n2=http://a:2380").unwrap_err().to_string(),
///     "initial cluster n1=http://a:2380,n2=http://a:2380 has duplicate url"
/// );
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialCluster {
    members: BTreeMap<MemberName, Vec<MemberUrl>>,
}

impl InitialCluster {
    /// Parse the flag's value.
    ///
    /// # Errors
    /// [`MembershipError::InitialClusterUnset`], [`MembershipError::InitialClusterEntry`],
    /// [`MembershipError::InvalidName`], a URL error, [`MembershipError::DuplicateUrl`],
    /// [`MembershipError::TooLong`] or [`MembershipError::TooMany`].
    pub fn parse(value: &str) -> Result<Self> {
        if value.len() > INITIAL_CLUSTER_LEN_MAX_BYTES {
            return Err(MembershipError::TooLong {
                what: "--initial-cluster",
                len_bytes: value.len(),
                max_bytes: INITIAL_CLUSTER_LEN_MAX_BYTES,
            });
        }
        let mut entries = Vec::new();
        for piece in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, url)) = piece.split_once('=') else {
                return Err(MembershipError::InitialClusterEntry {
                    entry: piece.to_owned(),
                });
            };
            if name.trim().is_empty() || url.trim().is_empty() {
                return Err(MembershipError::InitialClusterEntry {
                    entry: piece.to_owned(),
                });
            }
            entries.push((MemberName::new(name.trim())?, MemberUrl::parse(url)?));
        }
        Self::from_pairs(entries)
    }

    /// Build from `(name, url)` pairs, merging repeated names.
    ///
    /// # Errors
    /// As [`InitialCluster::parse`].
    pub fn from_pairs(pairs: Vec<(MemberName, MemberUrl)>) -> Result<Self> {
        if pairs.is_empty() {
            return Err(MembershipError::InitialClusterUnset);
        }
        let mut seen = BTreeSet::new();
        let duplicate = pairs.iter().any(|(_, url)| !seen.insert(url.clone()));
        let mut members: BTreeMap<MemberName, Vec<MemberUrl>> = BTreeMap::new();
        for (name, url) in pairs {
            members.entry(name).or_default().push(url);
        }
        if duplicate {
            let raw = InitialCluster { members };
            return Err(MembershipError::DuplicateUrl {
                initial_cluster: raw.to_string(),
            });
        }
        if members.len() > MEMBERS_MAX {
            return Err(MembershipError::TooMany {
                what: "members in --initial-cluster",
                count: members.len(),
                max: MEMBERS_MAX,
            });
        }
        for urls in members.values_mut() {
            *urls = MemberUrl::normalize_list(std::mem::take(urls))?;
        }
        Ok(InitialCluster { members })
    }

    /// The peer URLs listed for `name`.
    pub fn peer_urls(&self, name: &MemberName) -> Option<&[MemberUrl]> {
        self.members.get(name).map(Vec::as_slice)
    }

    /// Every `(name, peer URLs)`, by name.
    pub fn members(&self) -> impl Iterator<Item = (&MemberName, &[MemberUrl])> {
        self.members.iter().map(|(n, u)| (n, u.as_slice()))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never true for a parsed value (an empty flag is an error).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The cluster these members bootstrap (all voters, static ids, etcd's cluster id).
    ///
    /// # Errors
    /// [`MembershipError::DuplicateMemberId`] or [`MembershipError::ZeroMemberId`] (hash
    /// collisions).
    pub fn to_cluster(&self, token: &ClusterToken) -> Result<Cluster> {
        let mut members = Vec::with_capacity(self.members.len());
        for (name, urls) in &self.members {
            let id = static_member_id(urls, token)?;
            members.push(Member::new(id, urls.clone(), false)?.with_name(name.clone()));
        }
        let id = cluster_id_of(members.iter().map(Member::id));
        Cluster::new(id, members, BTreeSet::new())
    }
}

impl fmt::Display for InitialCluster {
    /// etcd's `URLsMap.String()`: `name=url` pairs sorted by name, one per URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, urls) in &self.members {
            for url in urls {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{name}={url}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Flag parsing is fed by operators: arbitrary input is an error, never a panic.
        #[test]
        fn arbitrary_input_never_panics(input in "[a-z0-9=,:/.\\[\\] @?#-]{0,80}") {
            let _ = InitialCluster::parse(&input);
            let _ = MemberUrl::parse_list(&input);
        }

        /// What etcd prints parses back to the same value.
        #[test]
        fn display_round_trips(
            members in proptest::collection::btree_map("[a-z][a-z0-9]{0,6}", proptest::collection::btree_set(1u16..60000, 1..3), 1..6)
        ) {
            let mut pairs = Vec::new();
            for (i, (name, ports)) in members.iter().enumerate() {
                for port in ports {
                    let url = MemberUrl::parse(&format!("http://h{i}:{port}")).unwrap();
                    pairs.push((MemberName::new(name.clone()).unwrap(), url));
                }
            }
            let ic = InitialCluster::from_pairs(pairs).unwrap();
            prop_assert_eq!(InitialCluster::parse(&ic.to_string()).unwrap(), ic);
        }
    }

    #[test]
    fn members_without_urls_or_names_are_entries_errors() {
        for bad in ["n1=", "=http://a:1", "n1"] {
            assert!(matches!(
                InitialCluster::parse(bad),
                Err(MembershipError::InitialClusterEntry { .. })
            ));
        }
        assert_eq!(
            InitialCluster::parse(" , ").unwrap_err(),
            MembershipError::InitialClusterUnset
        );
    }
}
