//! Member records through the storage engine: MemEngine (including a simulated crash) and a
//! real RocksDB directory.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns panic on broken fixtures"
)]

use keel_membership::{
    persist, runtime_member_id, schema::MEMBERS_CF, BootstrapConfig, BootstrapFlags, ChangeRequest,
    Cluster, ConfigChange, LogIndex, MemberName, MemberUrl, MembershipError, ReconfigContext,
    ReconfigRules,
};
use keel_storage::engine::{Durability, Engine, MemEngine, RocksEngine, RocksOptions, WriteBatch};
use std::time::Duration;

const THREE: &str = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380";

fn bootstrap() -> (BootstrapConfig, Cluster) {
    let flags = BootstrapFlags {
        name: "n1".into(),
        initial_cluster: THREE.into(),
        initial_advertise_peer_urls: "http://10.0.0.1:2380".into(),
        ..BootstrapFlags::default()
    };
    let config = BootstrapConfig::from_flags(&flags).unwrap();
    let cluster = config.new_cluster().unwrap();
    (config, cluster)
}

/// Bootstrap, then a history of changes, each written as its own batch; returns the final
/// cluster.
fn exercise(engine: &dyn Engine) -> Cluster {
    let cf = engine.column_family(MEMBERS_CF).unwrap();
    assert_eq!(
        persist::load(&*engine.view().unwrap(), cf).unwrap(),
        None,
        "a fresh store has no membership"
    );
    let (config, mut cluster) = bootstrap();
    let mut batch = WriteBatch::default();
    persist::write_cluster(&mut batch, cf, &cluster);
    engine.write(batch, Durability::Synced).unwrap();

    let leader = config.local_member_id().unwrap();
    let n4_urls = vec![MemberUrl::parse("http://10.0.0.4:2380").unwrap()];
    let n4 = runtime_member_id(&n4_urls, config.token(), Duration::from_secs(42)).unwrap();
    let n3 = cluster
        .peer_url_owner(&MemberUrl::parse("http://10.0.0.3:2380").unwrap())
        .unwrap();
    let ctx = ReconfigContext::new(leader, LogIndex::new(10))
        .with_reachable(cluster.voters())
        .with_reachable([n4])
        .with_matched(n4, LogIndex::new(10));
    let rules = ReconfigRules::default();
    let requests = [
        ChangeRequest::Add {
            id: n4,
            peer_urls: n4_urls,
            is_learner: true,
        },
        ChangeRequest::Replace {
            old: n3,
            learner: n4,
        },
    ];
    let mut changes: Vec<ConfigChange> = requests
        .into_iter()
        .map(|r| {
            let plan = rules.plan(&cluster, &ctx, r).unwrap();
            cluster = plan.next.clone();
            plan.change
        })
        .collect();
    let publish = ConfigChange::Publish {
        id: n4,
        name: MemberName::new("n4").unwrap(),
        client_urls: vec![MemberUrl::parse("http://10.0.0.4:2379").unwrap()],
    };
    cluster.apply(&publish).unwrap();
    changes.push(publish);
    // Replay the changes from the bootstrapped state, persisting each one.
    let mut replay = bootstrap().1;
    for change in &changes {
        replay.apply(change).unwrap();
        let mut batch = WriteBatch::default();
        persist::write_change(&mut batch, cf, &replay, change);
        engine.write(batch, Durability::Synced).unwrap();
        assert_eq!(
            persist::load(&*engine.view().unwrap(), cf)
                .unwrap()
                .as_ref(),
            Some(&replay)
        );
    }
    assert_eq!(replay, cluster);
    assert!(cluster.is_removed(n3));
    cluster
}

#[test]
fn mem_engine_round_trip_survives_a_crash() {
    let engine = MemEngine::new(&[MEMBERS_CF]);
    let cluster = exercise(&engine);
    let restarted = engine.crash();
    let cf = restarted.column_family(MEMBERS_CF).unwrap();
    let view = restarted.view().unwrap();
    assert_eq!(persist::load(&*view, cf).unwrap(), Some(cluster.clone()));
    assert_eq!(
        persist::load_cluster_id(&*view, cf).unwrap(),
        Some(cluster.id())
    );
}

#[test]
fn unsynced_membership_is_lost_by_a_crash_not_half_applied() {
    let engine = MemEngine::new(&[MEMBERS_CF]);
    let cf = engine.column_family(MEMBERS_CF).unwrap();
    let (_, cluster) = bootstrap();
    let mut batch = WriteBatch::default();
    persist::write_cluster(&mut batch, cf, &cluster);
    engine.write(batch, Durability::Buffered).unwrap();
    assert!(engine.has_unsynced());
    let crashed = engine.crash();
    let crashed_cf = crashed.column_family(MEMBERS_CF).unwrap();
    assert_eq!(
        persist::load(&*crashed.view().unwrap(), crashed_cf).unwrap(),
        None
    );
    assert_eq!(
        persist::load(&*engine.view().unwrap(), cf).unwrap(),
        Some(cluster)
    );
}

#[test]
fn rocksdb_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = {
        let engine = RocksEngine::open(dir.path(), &RocksOptions::new(&[MEMBERS_CF])).unwrap();
        exercise(&engine)
    };
    let engine = RocksEngine::open(dir.path(), &RocksOptions::new(&[MEMBERS_CF])).unwrap();
    let cf = engine.column_family(MEMBERS_CF).unwrap();
    assert_eq!(
        persist::load(&*engine.view().unwrap(), cf).unwrap(),
        Some(cluster)
    );
}

#[test]
fn write_cluster_replaces_stale_records() {
    let engine = MemEngine::new(&[MEMBERS_CF]);
    let cf = engine.column_family(MEMBERS_CF).unwrap();
    exercise(&engine);
    let (_, fresh) = bootstrap();
    let mut batch = WriteBatch::default();
    persist::write_cluster(&mut batch, cf, &fresh);
    engine.write(batch, Durability::Synced).unwrap();
    assert_eq!(
        persist::load(&*engine.view().unwrap(), cf).unwrap(),
        Some(fresh)
    );
}

#[test]
fn corrupted_records_are_reported_not_panicked_on() {
    let engine = MemEngine::new(&[MEMBERS_CF]);
    let cf = engine.column_family(MEMBERS_CF).unwrap();
    let (_, cluster) = bootstrap();
    let mut batch = WriteBatch::default();
    persist::write_cluster(&mut batch, cf, &cluster);
    engine.write(batch, Durability::Synced).unwrap();

    let member_key = |id: keel_types::MemberId| {
        keel_membership::schema::id_key(keel_membership::schema::MEMBER_PREFIX, id)
    };
    let first = cluster.members().next().unwrap().id();
    let mut batch = WriteBatch::default();
    batch.put(cf, member_key(first), vec![1, 2, 3]);
    engine.write(batch, Durability::Synced).unwrap();
    let err = persist::load(&*engine.view().unwrap(), cf).unwrap_err();
    assert!(matches!(err, MembershipError::Corrupted { .. }), "{err}");
    assert!(err.is_fatal());

    // Members without a cluster id.
    let engine = MemEngine::new(&[MEMBERS_CF]);
    let cf = engine.column_family(MEMBERS_CF).unwrap();
    let mut batch = WriteBatch::default();
    batch.put(cf, member_key(first), vec![1]);
    engine.write(batch, Durability::Synced).unwrap();
    assert_eq!(
        persist::load(&*engine.view().unwrap(), cf)
            .unwrap_err()
            .to_string(),
        "corrupted members: member records without a cluster id"
    );
}
