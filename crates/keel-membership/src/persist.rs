//! Persistence of the membership in [`MEMBERS_CF`], inside the caller's write batch.
//!
//! The node registers [`MEMBERS_CF`] when it opens the engine, adds member records to the
//! same [`WriteBatch`] as the rest of an applied entry (so a membership change and the applied
//! log id commit atomically), and calls [`load`] at open.
//!
//! # Examples
//! ```
//! use keel_membership::{persist, schema::MEMBERS_CF, BootstrapConfig, BootstrapFlags};
//! use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
//! let engine = MemEngine::new(&[MEMBERS_CF]);
//! let cf = engine.column_family(MEMBERS_CF)?;
//! let cluster = BootstrapConfig::from_flags(&BootstrapFlags::default())?.new_cluster()?;
//! let mut batch = WriteBatch::default();
//! persist::write_cluster(&mut batch, cf, &cluster);
//! engine.write(batch, Durability::Synced)?;
//! assert_eq!(persist::load(&*engine.view()?, cf)?, Some(cluster));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::change::ConfigChange;
use crate::cluster::Cluster;
use crate::codec;
use crate::error::{MembershipError, Result};
use crate::limits::{MEMBERS_MAX, REMOVED_IDS_MAX};
use crate::schema::{
    id_key, parse_id_key, CLUSTER_ID_KEY, ID_KEY_LEN, MEMBERS_CF, MEMBER_PREFIX, REMOVED_PREFIX,
};
use keel_storage::engine::{ColumnFamily, ReadView, ScanBounds, WriteBatch};
use keel_types::{ClusterId, MemberId};
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Replace whatever membership is stored with `cluster` (bootstrap, join, snapshot install).
pub fn write_cluster(batch: &mut WriteBatch, cf: ColumnFamily, cluster: &Cluster) {
    for prefix in [MEMBER_PREFIX, REMOVED_PREFIX] {
        batch.delete_range(cf, vec![prefix], vec![prefix + 1]);
    }
    batch.put(cf, CLUSTER_ID_KEY, codec::encode_cluster_id(cluster.id()));
    for member in cluster.members() {
        batch.put(
            cf,
            id_key(MEMBER_PREFIX, member.id()),
            codec::encode_member(member),
        );
    }
    for id in cluster.removed() {
        batch.put(cf, id_key(REMOVED_PREFIX, *id), codec::encode_removed());
    }
}

/// Record the effect of `change`, already applied to `after`, on the members it touched.
pub fn write_change(
    batch: &mut WriteBatch,
    cf: ColumnFamily,
    after: &Cluster,
    change: &ConfigChange,
) {
    let touched: Vec<MemberId> = match change {
        ConfigChange::Add(member) => vec![member.id()],
        ConfigChange::Promote { id }
        | ConfigChange::Remove { id }
        | ConfigChange::UpdatePeerUrls { id, .. }
        | ConfigChange::Publish { id, .. } => vec![*id],
        ConfigChange::Replace { old, learner } => vec![*old, *learner],
    };
    for id in touched {
        if let Some(member) = after.member(id) {
            batch.put(cf, id_key(MEMBER_PREFIX, id), codec::encode_member(member));
        } else if after.is_removed(id) {
            batch.delete(cf, id_key(MEMBER_PREFIX, id));
            batch.put(cf, id_key(REMOVED_PREFIX, id), codec::encode_removed());
        }
    }
}

/// The persisted cluster id, if any (for [`crate::check_data_dir`]).
///
/// # Errors
/// Storage failure or a corrupted record.
pub fn load_cluster_id(view: &dyn ReadView, cf: ColumnFamily) -> Result<Option<ClusterId>> {
    view.get(cf, CLUSTER_ID_KEY)?
        .map(|bytes| codec::decode_cluster_id(&bytes))
        .transpose()
}

/// The persisted membership; `None` for a store that never recorded one.
///
/// # Errors
/// Storage failure, or [`MembershipError::Corrupted`] for undecodable records, records
/// without a cluster id, or a membership that breaks [`Cluster`]'s invariants.
pub fn load(view: &dyn ReadView, cf: ColumnFamily) -> Result<Option<Cluster>> {
    let cluster_id = load_cluster_id(view, cf)?;
    let members = scan_prefix(view, cf, MEMBER_PREFIX, MEMBERS_MAX)?;
    let removed = scan_prefix(view, cf, REMOVED_PREFIX, REMOVED_IDS_MAX)?;
    let Some(cluster_id) = cluster_id else {
        if members.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        return Err(MembershipError::corrupted(
            MEMBERS_CF,
            "member records without a cluster id",
        ));
    };
    let mut decoded = Vec::with_capacity(members.len());
    for (id, value) in members {
        let member = codec::decode_member(&value)?;
        if member.id() != id {
            return Err(MembershipError::corrupted(
                "member record",
                format!("record of member {} stored under {id}", member.id()),
            ));
        }
        decoded.push(member);
    }
    let mut removed_ids = BTreeSet::new();
    for (id, value) in removed {
        codec::decode_removed(&value)?;
        removed_ids.insert(id);
    }
    Cluster::new(cluster_id, decoded, removed_ids)
        .map(Some)
        .map_err(|e| MembershipError::corrupted(MEMBERS_CF, e.to_string()))
}

/// Every `(id, value)` under `prefix`, at most `max` of them.
fn scan_prefix(
    view: &dyn ReadView,
    cf: ColumnFamily,
    prefix: u8,
    max: usize,
) -> Result<Vec<(MemberId, Vec<u8>)>> {
    let (lower, upper) = ([prefix], [prefix + 1]);
    let mut raw = Vec::new();
    let mut too_many = false;
    view.scan(
        cf,
        ScanBounds::forward(&lower, Some(&upper)),
        &mut |key, value| {
            if raw.len() == max {
                too_many = true;
                return Ok(ControlFlow::Break(()));
            }
            raw.push((key.to_vec(), value.to_vec()));
            Ok(ControlFlow::Continue(()))
        },
    )?;
    if too_many {
        return Err(MembershipError::corrupted(
            MEMBERS_CF,
            format!("more than {max} records"),
        ));
    }
    raw.into_iter()
        .map(|(key, value)| {
            let id = parse_id_key(prefix, &key).ok_or_else(|| {
                MembershipError::corrupted(
                    MEMBERS_CF,
                    format!("key {key:?} is not {ID_KEY_LEN} bytes under its prefix"),
                )
            })?;
            Ok((id, value))
        })
        .collect()
}
