//! Flag parsing and validation: every error of `BootstrapConfig::from_flags`, with its exact
//! message.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns panic on broken fixtures"
)]

use keel_membership::{
    check_data_dir, BootstrapConfig, BootstrapFlags, ClusterState, MembershipError,
};
use keel_types::ClusterId;

fn flags(name: &str, initial_cluster: &str, advertise: &str) -> BootstrapFlags {
    BootstrapFlags {
        name: name.into(),
        initial_cluster: initial_cluster.into(),
        initial_advertise_peer_urls: advertise.into(),
        ..BootstrapFlags::default()
    }
}

fn error_of(f: &BootstrapFlags) -> String {
    BootstrapConfig::from_flags(f).unwrap_err().to_string()
}

const THREE: &str = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380";

#[test]
fn etcd_defaults_bootstrap_etcds_default_ids() {
    let config = BootstrapConfig::from_flags(&BootstrapFlags::default()).unwrap();
    assert_eq!(config.name().as_str(), "default");
    assert_eq!(config.state(), ClusterState::New);
    assert_eq!(
        config.local_member_id().unwrap().to_string(),
        "8e9e05c52164694d"
    );
    let cluster = config.new_cluster().unwrap();
    assert_eq!(cluster.id().to_string(), "cdf818194e3a8c32");
    assert_eq!(config.client_urls()[0].as_str(), "http://localhost:2379");
}

#[test]
fn three_members_agree_on_ids() {
    let configs: Vec<BootstrapConfig> = (1..=3)
        .map(|i| {
            BootstrapConfig::from_flags(&flags(
                &format!("n{i}"),
                THREE,
                &format!("http://10.0.0.{i}:2380"),
            ))
            .unwrap()
        })
        .collect();
    let clusters: Vec<_> = configs.iter().map(|c| c.new_cluster().unwrap()).collect();
    assert!(
        clusters.windows(2).all(|w| w[0] == w[1]),
        "every member derives the same cluster"
    );
    for config in &configs {
        let me = clusters[0]
            .member(config.local_member_id().unwrap())
            .unwrap();
        assert_eq!(me.name(), Some(config.name()));
    }
    assert_eq!(clusters[0].voters().len(), 3);
}

#[test]
fn a_member_may_list_several_urls() {
    let ic = "n1=http://a:2380,n1=http://a2:2380,n2=http://b:2380";
    let config =
        BootstrapConfig::from_flags(&flags("n1", ic, "http://a2:2380,http://a:2380")).unwrap();
    let cluster = config.new_cluster().unwrap();
    let me = cluster.member(config.local_member_id().unwrap()).unwrap();
    assert_eq!(me.peer_urls().len(), 2);
    assert_eq!(cluster.len(), 2);
}

#[test]
fn token_changes_every_id() {
    let a = BootstrapConfig::from_flags(&flags("n1", THREE, "http://10.0.0.1:2380")).unwrap();
    let mut other = flags("n1", THREE, "http://10.0.0.1:2380");
    other.initial_cluster_token = "another".into();
    let b = BootstrapConfig::from_flags(&other).unwrap();
    assert_ne!(a.local_member_id().unwrap(), b.local_member_id().unwrap());
    assert_ne!(a.new_cluster().unwrap().id(), b.new_cluster().unwrap().id());
}

#[test]
fn duplicate_urls_are_refused() {
    assert_eq!(
        error_of(&flags(
            "n1",
            "n1=http://a:2380,n2=http://a:2380",
            "http://a:2380"
        )),
        "initial cluster n1=http://a:2380,n2=http://a:2380 has duplicate url"
    );
    assert_eq!(
        error_of(&flags(
            "n1",
            "n1=http://a:2380,n1=http://a:2380",
            "http://a:2380"
        )),
        "initial cluster n1=http://a:2380,n1=http://a:2380 has duplicate url"
    );
}

#[test]
fn malformed_urls_are_refused_with_etcds_texts() {
    let cases = [
        (
            "n1=ftp://a:2380",
            "URL scheme must be http, https, unix, or unixs: ftp://a:2380",
        ),
        (
            "n1=http://a",
            "URL address does not have the form \"host:port\": http://a",
        ),
        (
            "n1=http://a:2380/x",
            "URL must not contain a path: http://a:2380/x",
        ),
    ];
    for (ic, want) in cases {
        assert_eq!(error_of(&flags("n1", ic, "http://a:2380")), want, "{ic}");
    }
    assert_eq!(
        error_of(&flags("n1", "n1=http://a:2380", "a:2380")),
        "URL scheme must be http, https, unix, or unixs: a:2380"
    );
    let mut f = flags("n1", "n1=http://a:2380", "http://a:2380");
    f.advertise_client_urls = "http://c".into();
    assert_eq!(
        error_of(&f),
        "URL address does not have the form \"host:port\": http://c"
    );
    f.advertise_client_urls = "".into();
    assert_eq!(error_of(&f), "no valid URLs given");
}

#[test]
fn malformed_entries_and_names_are_refused() {
    assert_eq!(
        error_of(&flags("n1", "n1", "http://a:2380")),
        "--initial-cluster entry \"n1\" is not of the form name=url"
    );
    assert_eq!(
        error_of(&flags("n1", "=http://a:2380", "http://a:2380")),
        "--initial-cluster entry \"=http://a:2380\" is not of the form name=url"
    );
    assert_eq!(
        error_of(&flags("n1", "", "http://a:2380")),
        "initial cluster unset and no discovery URL found"
    );
    assert_eq!(
        error_of(&flags("", "n1=http://a:2380", "http://a:2380")),
        "invalid member name \"\": a name must not be empty"
    );
    assert_eq!(
        error_of(&flags("n,1", "n1=http://a:2380", "http://a:2380")),
        "invalid member name \"n,1\": a name must not contain ',' or '='"
    );
}

#[test]
fn this_member_must_be_listed() {
    assert_eq!(
        error_of(&flags("n4", THREE, "http://10.0.0.4:2380")),
        "couldn't find local name \"n4\" in the initial cluster configuration"
    );
}

#[test]
fn advertised_urls_must_match_the_entry() {
    assert_eq!(
        error_of(&flags("n1", THREE, "http://10.0.0.9:2380")),
        "--initial-cluster has n1=http://10.0.0.1:2380 but missing from \
         --initial-advertise-peer-urls=http://10.0.0.9:2380"
    );
    assert_eq!(
        error_of(&flags(
            "n1",
            THREE,
            "http://10.0.0.1:2380,http://10.0.0.9:2380"
        )),
        "--initial-advertise-peer-urls has http://10.0.0.9:2380 but missing from \
         --initial-cluster=n1=http://10.0.0.1:2380,n1=http://10.0.0.9:2380"
    );
}

#[test]
fn cluster_state_is_new_or_existing() {
    let mut f = flags("n1", THREE, "http://10.0.0.1:2380");
    f.initial_cluster_state = "existing".into();
    assert_eq!(
        BootstrapConfig::from_flags(&f).unwrap().state(),
        ClusterState::Existing
    );
    f.initial_cluster_state = "old".into();
    assert_eq!(
        error_of(&f),
        "invalid value \"old\" for --initial-cluster-state: valid values are \"new\", \"existing\""
    );
}

#[test]
fn oversized_values_are_refused() {
    let mut f = flags("n1", THREE, "http://10.0.0.1:2380");
    f.initial_cluster_token = "t".repeat(300);
    assert_eq!(
        error_of(&f),
        "cluster token is too long: 300 bytes exceeds 256"
    );
    let many: Vec<String> = (0..200).map(|i| format!("m{i}=http://h{i}:2380")).collect();
    let f = flags("m0", &many.join(","), "http://h0:2380");
    assert_eq!(
        error_of(&f),
        "too many members in --initial-cluster: 200 exceeds 128"
    );
}

#[test]
fn data_dir_of_another_cluster_is_refused() {
    let config = BootstrapConfig::from_flags(&flags("n1", THREE, "http://10.0.0.1:2380")).unwrap();
    let id = config.new_cluster().unwrap().id();
    check_data_dir(None, id).unwrap();
    check_data_dir(Some(id), id).unwrap();
    let err = check_data_dir(Some(ClusterId::new(0xabc)), id).unwrap_err();
    assert_eq!(
        err,
        MembershipError::DataDirClusterMismatch {
            persisted: ClusterId::new(0xabc),
            expected: id
        }
    );
    assert_eq!(
        err.to_string(),
        format!("data dir belongs to cluster abc, but the configuration is for cluster {id}")
    );
}
