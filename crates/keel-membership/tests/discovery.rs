//! Discovery against an in-memory, thread-safe implementation of `DiscoveryKv`.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns panic on broken fixtures"
)]

use keel_membership::{
    ClusterToken, Discovery, DiscoveryEntry, DiscoveryKv, DiscoveryStatus, InitialCluster,
    MemberName, MemberUrl, MembershipError,
};
use keel_types::{LeaseId, Revision};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// An etcd-like store: revisions count every write, keys may be bound to leases.
#[derive(Default)]
struct MemKv {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, Revision, Option<LeaseId>)>,
    revision: u64,
    last_lease: i64,
}

impl MemKv {
    fn put(&self, key: &[u8], value: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.revision += 1;
        let rev = Revision::new(s.revision);
        s.entries.insert(key.to_vec(), (value.to_vec(), rev, None));
    }

    /// Expire a lease: its keys go away.
    fn expire(&self, lease: LeaseId) {
        let mut s = self.state.lock().unwrap();
        s.revision += 1;
        s.entries.retain(|_, (_, _, l)| *l != Some(lease));
    }
}

impl DiscoveryKv for MemKv {
    fn get(&self, key: &[u8]) -> keel_membership::Result<Option<DiscoveryEntry>> {
        let s = self.state.lock().unwrap();
        Ok(s.entries.get(key).map(|(value, rev, _)| DiscoveryEntry {
            key: key.to_vec(),
            value: value.clone(),
            create_revision: *rev,
        }))
    }

    fn range_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> keel_membership::Result<Vec<DiscoveryEntry>> {
        let s = self.state.lock().unwrap();
        Ok(s.entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, (v, rev, _))| DiscoveryEntry {
                key: k.clone(),
                value: v.clone(),
                create_revision: *rev,
            })
            .collect())
    }

    fn grant_lease(&self, _ttl: Duration) -> keel_membership::Result<LeaseId> {
        let mut s = self.state.lock().unwrap();
        s.last_lease += 1;
        LeaseId::new(s.last_lease).ok_or(MembershipError::DiscoveryKv {
            detail: "lease 0".into(),
        })
    }

    fn create_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> keel_membership::Result<bool> {
        let mut s = self.state.lock().unwrap();
        if s.entries.contains_key(key) {
            return Ok(false);
        }
        s.revision += 1;
        let rev = Revision::new(s.revision);
        s.entries.insert(key.to_vec(), (value.to_vec(), rev, lease));
        Ok(true)
    }
}

const TTL: Duration = Duration::from_secs(60);

fn token() -> ClusterToken {
    ClusterToken::new("17fad13-6ee2-4d2a-8de7-1305d4c6d3e2").unwrap()
}

fn member(i: usize) -> Discovery {
    Discovery::new(
        token(),
        MemberName::new(format!("infra{i}")).unwrap(),
        vec![MemberUrl::parse(&format!("http://10.0.1.{i}:2380")).unwrap()],
    )
    .unwrap()
}

fn complete(status: DiscoveryStatus) -> InitialCluster {
    match status {
        DiscoveryStatus::Complete(ic) => ic,
        other => panic!("expected a complete cluster, got {other:?}"),
    }
}

#[test]
fn missing_or_bad_size_is_refused() {
    let kv = MemKv::default();
    assert_eq!(
        member(1).poll(&kv).unwrap_err().to_string(),
        "discovery: size key not found"
    );
    assert_eq!(
        member(1).register(&kv, TTL).unwrap_err(),
        MembershipError::DiscoverySizeNotFound
    );
    assert!(
        kv.range_prefix(b"/", 10).unwrap().is_empty(),
        "nothing registered without a size"
    );
    for bad in ["0", "-3", "three", "100000"] {
        kv.put(&Discovery::size_key(&token()), bad.as_bytes());
        assert_eq!(
            member(1).poll(&kv).unwrap_err().to_string(),
            "discovery: size key is bad",
            "{bad}"
        );
    }
    assert!(Discovery::configure_size(&kv, &token(), 0).is_err());
}

#[test]
fn three_members_derive_the_same_cluster_and_a_fourth_is_refused() {
    let kv = MemKv::default();
    assert!(Discovery::configure_size(&kv, &token(), 3).unwrap());
    assert!(
        !Discovery::configure_size(&kv, &token(), 5).unwrap(),
        "the first size stays"
    );
    let (_, s1) = member(1).register(&kv, TTL).unwrap();
    assert_eq!(
        s1,
        DiscoveryStatus::Waiting {
            registered_count: 1,
            size: 3
        }
    );
    let (_, s2) = member(2).register(&kv, TTL).unwrap();
    assert_eq!(
        s2,
        DiscoveryStatus::Waiting {
            registered_count: 2,
            size: 3
        }
    );
    let (_, s3) = member(3).register(&kv, TTL).unwrap();
    let ic = complete(s3);
    assert_eq!(
        ic.to_string(),
        "infra1=http://10.0.1.1:2380,infra2=http://10.0.1.2:2380,infra3=http://10.0.1.3:2380"
    );
    for i in 1..=3 {
        assert_eq!(complete(member(i).poll(&kv).unwrap()), ic);
        let cluster = ic.to_cluster(&token()).unwrap();
        assert!(
            cluster.member(member(i).member_id()).is_some(),
            "ids agree with the static derivation"
        );
    }
    assert_eq!(
        member(4).register(&kv, TTL).unwrap_err().to_string(),
        "discovery: cluster is full"
    );
    assert_eq!(
        kv.range_prefix(&Discovery::members_prefix(&token()), 10)
            .unwrap()
            .len(),
        3
    );
    // A restarted member registers again and keeps its place.
    let (_, again) = member(2).register(&kv, TTL).unwrap();
    assert_eq!(complete(again), ic);
}

#[test]
fn concurrent_registrations_admit_exactly_size_members() {
    const SIZE: usize = 5;
    const CANDIDATES: usize = 9;
    let kv = MemKv::default();
    Discovery::configure_size(&kv, &token(), SIZE).unwrap();
    let results: Vec<(usize, Result<DiscoveryStatus, MembershipError>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=CANDIDATES)
                .map(|i| {
                    let kv = &kv;
                    scope.spawn(move || (i, member(i).register(kv, TTL).map(|(_, s)| s)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
    let admitted: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    let refused: Vec<&MembershipError> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert_eq!(admitted.len(), SIZE, "{results:?}");
    assert!(refused
        .iter()
        .all(|e| matches!(e, MembershipError::DiscoveryFull { size: SIZE })));
    let clusters: Vec<InitialCluster> = admitted
        .iter()
        .map(|i| complete(member(*i).poll(&kv).unwrap()))
        .collect();
    assert!(
        clusters.windows(2).all(|w| w[0] == w[1]),
        "every admitted member derives the same cluster"
    );
    assert_eq!(clusters[0].len(), SIZE);
    for i in &admitted {
        assert!(clusters[0]
            .peer_urls(&MemberName::new(format!("infra{i}")).unwrap())
            .is_some());
    }
}

#[test]
fn an_expired_registration_frees_its_place() {
    let kv = MemKv::default();
    Discovery::configure_size(&kv, &token(), 2).unwrap();
    let (lease1, _) = member(1).register(&kv, TTL).unwrap();
    kv.expire(lease1);
    member(2).register(&kv, TTL).unwrap();
    let (_, s3) = member(3).register(&kv, TTL).unwrap();
    let ic = complete(s3);
    assert_eq!(
        ic.to_string(),
        "infra2=http://10.0.1.2:2380,infra3=http://10.0.1.3:2380"
    );
}

#[test]
fn duplicate_names_and_invalid_registrations_are_refused() {
    let kv = MemKv::default();
    Discovery::configure_size(&kv, &token(), 2).unwrap();
    let twin = Discovery::new(
        token(),
        MemberName::new("infra1").unwrap(),
        vec![MemberUrl::parse("http://10.0.9.9:2380").unwrap()],
    )
    .unwrap();
    member(1).register(&kv, TTL).unwrap();
    assert_eq!(
        twin.register(&kv, TTL).unwrap_err().to_string(),
        "discovery: found duplicate name"
    );

    let kv = MemKv::default();
    Discovery::configure_size(&kv, &token(), 2).unwrap();
    member(1).register(&kv, TTL).unwrap();
    let mut bogus = Discovery::members_prefix(&token());
    bogus.extend_from_slice(b"abc");
    kv.put(&bogus, b"not a registration");
    assert_eq!(
        member(1).poll(&kv).unwrap_err().to_string(),
        "discovery: invalid peer URL"
    );
}
