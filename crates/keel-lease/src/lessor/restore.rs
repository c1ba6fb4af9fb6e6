//! Rebuilding a lessor from persisted records (open, snapshot install).

use super::{Lessor, Slot};
use crate::config::LessorConfig;
use crate::error::{LeaseError, Result};
use crate::id_gen::IdGenerator;
use crate::lease::LeaseRecord;
use crate::limits::{LEASE_COUNT_MAX, TTL_MAX_SECS};
use bytes::Bytes;
use keel_types::LeaseId;

/// Everything persisted about leases, as [`crate::LeaseStore::load`] reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistedLeases {
    /// Lease records, in id order.
    pub leases: Vec<LeaseRecord>,
    /// Attachments `(lease, key)`, in lease then key order.
    pub attachments: Vec<(LeaseId, Bytes)>,
    /// The id generator's position.
    pub id_counter: u64,
}

impl Lessor {
    /// A lessor (not primary) holding `persisted`. Records granted under another minimum TTL
    /// are kept as they are.
    ///
    /// # Errors
    /// [`LeaseError::InvalidConfig`]; `Storage(Corrupted)` when the records contradict
    /// themselves (duplicate id, TTL out of range, remaining above TTL, attachment to an
    /// unknown lease, more than [`LEASE_COUNT_MAX`] leases).
    pub fn restore(config: LessorConfig, persisted: PersistedLeases) -> Result<Self> {
        let mut lessor = Lessor::new(config)?;
        lessor.ids = IdGenerator::new(lessor.config.id_seed, persisted.id_counter);
        if persisted.leases.len() > LEASE_COUNT_MAX {
            return Err(LeaseError::corrupted("lease records", "too many leases"));
        }
        for record in persisted.leases {
            let slot = Slot {
                id: record.id,
                ttl_secs: record.ttl_secs,
                remaining_ms: super::ceil_ms(record.remaining),
                expiry_ms: 0,
                renew_count: record.renew_count,
            };
            if !(1..=TTL_MAX_SECS).contains(&slot.ttl_secs) || slot.remaining_ms > slot.ttl_ms() {
                return Err(LeaseError::corrupted(
                    "lease record",
                    format!(
                        "lease {} has ttl {}s, remaining {:?}",
                        record.id, record.ttl_secs, record.remaining
                    ),
                ));
            }
            if lessor.index.contains(&lessor.wheel, record.id) {
                return Err(LeaseError::corrupted(
                    "lease record",
                    format!("duplicate lease {}", record.id),
                ));
            }
            let handle = lessor
                .wheel
                .insert(slot)
                .ok_or_else(|| LeaseError::corrupted("lease records", "too many leases"))?;
            lessor.index.insert(&lessor.wheel, record.id, handle);
        }
        for (id, key) in persisted.attachments {
            if !lessor.index.contains(&lessor.wheel, id) {
                return Err(LeaseError::corrupted(
                    "lease attachment",
                    format!("key attached to unknown lease {id}"),
                ));
            }
            lessor.keys.entry(id).or_default().insert(key);
        }
        lessor.debug_check();
        Ok(lessor)
    }

    /// Everything persisted about the leases, as [`Lessor::restore`] takes it (for model tests
    /// and snapshot checks).
    pub fn to_persisted(&self) -> PersistedLeases {
        let ids = self.leases();
        let mut persisted = PersistedLeases {
            leases: Vec::with_capacity(ids.len()),
            attachments: Vec::new(),
            id_counter: self.ids.counter(),
        };
        for id in ids {
            if let Some(record) = self.lease(id) {
                persisted.leases.push(record);
            }
            if let Some(keys) = self.keys.get(&id) {
                persisted
                    .attachments
                    .extend(keys.iter().map(|key| (id, key.clone())));
            }
        }
        persisted
    }
}
