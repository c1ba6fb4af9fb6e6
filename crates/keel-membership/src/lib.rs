//! keel-membership: who is in a keel cluster, and how that may change.
//!
//! What it is:
//! - [`Member`] and [`Cluster`] (members, cluster id, removed ids), with ids derived like
//!   etcd's ([`static_member_id`], [`runtime_member_id`], [`cluster_id_of`]);
//! - etcd's reconfiguration rules as a pure function ([`ReconfigRules::plan`]) that answers
//!   with etcd's error texts or with the [`Step`]s for the Raft layer to execute;
//! - bootstrap flag parsing and validation ([`BootstrapFlags`] → [`BootstrapConfig`]), join
//!   verification for `--initial-cluster-state=existing` ([`verify_join`]) and discovery
//!   against a small key-value trait ([`Discovery`], [`DiscoveryKv`]);
//! - persistence of member records in their own column family ([`schema::MEMBERS_CF`]) inside
//!   the caller's write batch ([`persist`]).
//!
//! What it is not: it does no I/O of its own, reads no clock and knows nothing of openraft or
//! the network. The node supplies the leader's view ([`ReconfigContext`]), executes the steps
//! through openraft (joint consensus), fetches member lists and talks to discovery.
//!
//! Limits: see [`limits`].
//!
//! The seed's two-step runtime reconfiguration: (1) `member add` is planned here and executed
//! by the node (as a learner by default); (2) the new member starts with
//! `--initial-cluster-state=existing`, calls [`verify_join`] with the member list fetched from
//! the cluster, then catches up and is promoted once [`ReconfigRules`] finds it in sync.
//!
//! # Examples
//! ```
//! use keel_membership::{BootstrapConfig, BootstrapFlags};
//! let flags = BootstrapFlags {
//!     name: "n1".into(),
//!     initial_cluster: "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380".into(),
//!     initial_advertise_peer_urls: "http://10.0.0.1:2380".into(),
//!     ..BootstrapFlags::default()
//! };
//! let config = BootstrapConfig::from_flags(&flags)?;
//! let cluster = config.new_cluster()?;
//! assert_eq!(cluster.voters().len(), 2);
//! assert!(cluster.member(config.local_member_id()?).is_some());
//! # Ok::<(), keel_membership::MembershipError>(())
//! ```

mod bootstrap;
mod change;
mod cluster;
mod codec;
mod config;
mod context;
mod discovery;
mod error;
mod ids;
mod initial_cluster;
mod join;
pub mod limits;
mod member;
mod names;
pub mod persist;
mod rules;
pub mod schema;
mod step;
mod url;

pub use bootstrap::{check_data_dir, BootstrapConfig, BootstrapFlags, ClusterState};
pub use change::ConfigChange;
pub use cluster::Cluster;
pub use config::ReconfigConfig;
pub use context::{LogIndex, ReconfigContext};
pub use discovery::{Discovery, DiscoveryEntry, DiscoveryKv, DiscoveryStatus};
pub use error::{MembershipError, Result};
pub use ids::{cluster_id_of, runtime_member_id, static_member_id};
pub use initial_cluster::InitialCluster;
pub use join::{verify_join, JoinPlan};
pub use member::Member;
pub use names::{ClusterToken, MemberName};
pub use rules::{ChangeRequest, Plan, ReconfigRules};
pub use step::Step;
pub use url::MemberUrl;
