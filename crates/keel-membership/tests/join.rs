//! Join verification for `--initial-cluster-state=existing`: the seed's step (2).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns panic on broken fixtures"
)]

use keel_membership::{
    runtime_member_id, verify_join, BootstrapConfig, BootstrapFlags, ChangeRequest, Cluster,
    LogIndex, Member, MemberName, MemberUrl, MembershipError, ReconfigContext, ReconfigRules,
};
use keel_types::{ClusterId, MemberId};
use std::time::Duration;

const THREE: &str = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380";
const FOUR: &str = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380,\
                    n4=http://10.0.0.4:2380";

fn url(s: &str) -> MemberUrl {
    MemberUrl::parse(s).unwrap()
}

/// A running 3-member cluster (bootstrapped from THREE) to which n4 was added at run time.
fn cluster_with_n4_added() -> (Cluster, MemberId) {
    let boot = BootstrapFlags {
        name: "n1".into(),
        initial_cluster: THREE.into(),
        initial_advertise_peer_urls: "http://10.0.0.1:2380".into(),
        ..BootstrapFlags::default()
    };
    let config = BootstrapConfig::from_flags(&boot).unwrap();
    let cluster = config.new_cluster().unwrap();
    let n4_urls = vec![url("http://10.0.0.4:2380")];
    let n4 =
        runtime_member_id(&n4_urls, config.token(), Duration::from_secs(1_700_000_000)).unwrap();
    let leader = config.local_member_id().unwrap();
    let ctx = ReconfigContext::new(leader, LogIndex::new(10)).with_reachable(cluster.voters());
    let plan = ReconfigRules::default()
        .plan(
            &cluster,
            &ctx,
            ChangeRequest::Add {
                id: n4,
                peer_urls: n4_urls,
                is_learner: true,
            },
        )
        .unwrap();
    (plan.next, n4)
}

fn n4_flags(initial_cluster: &str, advertise: &str) -> BootstrapFlags {
    BootstrapFlags {
        name: "n4".into(),
        initial_cluster: initial_cluster.into(),
        initial_cluster_state: "existing".into(),
        initial_advertise_peer_urls: advertise.into(),
        ..BootstrapFlags::default()
    }
}

fn join(
    flags: &BootstrapFlags,
    cluster: &Cluster,
    persisted: Option<ClusterId>,
) -> Result<keel_membership::JoinPlan, MembershipError> {
    let config = BootstrapConfig::from_flags(flags).unwrap();
    let members: Vec<Member> = cluster.members().cloned().collect();
    verify_join(&config, cluster.id(), &members, persisted)
}

#[test]
fn an_added_member_joins_with_the_id_the_cluster_gave_it() {
    let (cluster, n4) = cluster_with_n4_added();
    let plan = join(&n4_flags(FOUR, "http://10.0.0.4:2380"), &cluster, None).unwrap();
    assert_eq!(plan.member_id, n4);
    assert_eq!(
        plan.cluster,
        Cluster::new(
            cluster.id(),
            cluster.members().cloned().collect(),
            Default::default()
        )
        .unwrap()
    );
    // Restarting on its own data dir is fine too.
    join(
        &n4_flags(FOUR, "http://10.0.0.4:2380"),
        &cluster,
        Some(cluster.id()),
    )
    .unwrap();
}

#[test]
fn state_new_is_not_a_join() {
    let (cluster, _) = cluster_with_n4_added();
    let mut flags = n4_flags(FOUR, "http://10.0.0.4:2380");
    flags.initial_cluster_state = "new".into();
    assert_eq!(
        join(&flags, &cluster, None).unwrap_err(),
        MembershipError::JoinRequiresExisting
    );
}

#[test]
fn a_member_that_was_not_added_is_refused() {
    let (cluster, _) = cluster_with_n4_added();
    let ic = format!("{FOUR},n5=http://10.0.0.5:2380");
    let mut flags = n4_flags(&ic, "http://10.0.0.5:2380");
    flags.name = "n5".into();
    let err = join(&flags, &cluster, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "member n5 (peer URLs http://10.0.0.5:2380) has not been added to cluster {}; \
             add it with member add first",
            cluster.id()
        )
    );
}

#[test]
fn a_started_member_keeps_its_name() {
    let (mut cluster, n4) = cluster_with_n4_added();
    let publish = keel_membership::ConfigChange::Publish {
        id: n4,
        name: MemberName::new("infra4").unwrap(),
        client_urls: vec![url("http://10.0.0.4:2379")],
    };
    cluster.apply(&publish).unwrap();
    let err = join(&n4_flags(FOUR, "http://10.0.0.4:2380"), &cluster, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("member {n4} with peer URLs http://10.0.0.4:2380 is named \"infra4\" in the cluster, not \"n4\"")
    );
}

#[test]
fn initial_cluster_must_match_the_cluster() {
    let (cluster, _) = cluster_with_n4_added();
    let cid = cluster.id();
    let missing_one = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n4=http://10.0.0.4:2380";
    assert_eq!(
        join(&n4_flags(missing_one, "http://10.0.0.4:2380"), &cluster, None).unwrap_err().to_string(),
        format!("--initial-cluster does not match the configuration of cluster {cid}: it lists 3 members, the cluster has 4")
    );
    let wrong_url = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.33:2380,\
                     n4=http://10.0.0.4:2380";
    let err = join(&n4_flags(wrong_url, "http://10.0.0.4:2380"), &cluster, None).unwrap_err();
    let n3 = cluster
        .peer_url_owner(&url("http://10.0.0.3:2380"))
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "--initial-cluster does not match the configuration of cluster {cid}: \
             member {n3} with peer URLs http://10.0.0.3:2380 is not listed"
        )
    );
    let wrong_name = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,x3=http://10.0.0.3:2380,\
                      n4=http://10.0.0.4:2380";
    let err = join(
        &n4_flags(wrong_name, "http://10.0.0.4:2380"),
        &cluster,
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "--initial-cluster does not match the configuration of cluster {cid}: \
             member {n3} with peer URLs http://10.0.0.3:2380 is named \"n3\", not \"x3\""
        )
    );
}

#[test]
fn a_data_dir_of_another_cluster_is_refused_before_anything_else() {
    let (cluster, _) = cluster_with_n4_added();
    let err = join(
        &n4_flags(FOUR, "http://10.0.0.4:2380"),
        &cluster,
        Some(ClusterId::new(0xdead)),
    )
    .unwrap_err();
    assert_eq!(
        err,
        MembershipError::ClusterIdMismatch {
            local: ClusterId::new(0xdead),
            remote: cluster.id()
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cluster ID mismatch: local data dir has dead, the cluster has {}",
            cluster.id()
        )
    );
}
