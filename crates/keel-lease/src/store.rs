//! Lease persistence: writing the lessor's changes into the caller's batch, and loading.

use crate::codec;
use crate::config::LessorConfig;
use crate::error::Result;
use crate::lease::Change;
use crate::lessor::{Lessor, PersistedLeases};
use crate::limits::LEASE_COUNT_MAX;
use crate::schema::{LEASE_CF, TAG_ATTACHMENT, TAG_LEASE};
use keel_storage::engine::{ColumnFamily, Engine, ReadView, ScanBounds, WriteBatch};
use keel_storage::StorageError;
use std::ops::ControlFlow;

/// The lease column family of one engine. Holds no state besides the handle: writes go into
/// the caller's [`WriteBatch`] (one applied entry = one batch, written by the node).
///
/// # Examples
/// ```
/// use keel_lease::{LeaseStore, Lessor, LessorConfig, LEASE_CF};
/// use keel_storage::engine::{Durability, Engine, MemEngine, WriteBatch};
/// use keel_types::LeaseId;
/// use std::time::Duration;
///
/// let engine = MemEngine::new(&[LEASE_CF]);
/// let store = LeaseStore::open(&engine)?;
/// let mut lessor = Lessor::new(LessorConfig::default())?;
/// lessor.grant(LeaseId::new(1), 60, Duration::ZERO)?;
/// let mut batch = WriteBatch::default();
/// store.stage(&mut batch, lessor.drain_changes());
/// engine.write(batch, Durability::Synced)?;
///
/// let reopened = store.load_lessor(&*engine.crash().view()?, LessorConfig::default())?;
/// assert_eq!(reopened.leases(), lessor.leases());
/// # Ok::<(), keel_lease::LeaseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseStore {
    cf: ColumnFamily,
}

impl LeaseStore {
    /// The store of a column family handle.
    pub fn new(cf: ColumnFamily) -> Self {
        LeaseStore { cf }
    }

    /// The store of `engine`'s [`LEASE_CF`].
    ///
    /// # Errors
    /// `UnknownColumnFamily` when the engine was opened without [`LEASE_CF`].
    pub fn open<E: Engine + ?Sized>(engine: &E) -> Result<Self> {
        Ok(LeaseStore::new(engine.column_family(LEASE_CF)?))
    }

    /// The column family.
    pub fn column_family(&self) -> ColumnFamily {
        self.cf
    }

    /// Add `changes` (from [`Lessor::drain_changes`]) to `batch`, in order.
    pub fn stage(&self, batch: &mut WriteBatch, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            match change {
                Change::Put(record) => batch.put(
                    self.cf,
                    codec::lease_key(record.id),
                    codec::encode_lease(&record),
                ),
                Change::Delete(id) => {
                    batch.delete(self.cf, codec::lease_key(id));
                    let (start, end) = codec::attachment_range(id);
                    batch.delete_range(self.cf, start, end);
                }
                Change::Attach(id, key) => batch.put(
                    self.cf,
                    codec::attachment_key(id, &key),
                    codec::encode_attachment(),
                ),
                Change::Detach(id, key) => batch.delete(self.cf, codec::attachment_key(id, &key)),
                Change::IdCounter(counter) => batch.put(
                    self.cf,
                    codec::id_counter_key(),
                    codec::encode_id_counter(counter),
                ),
            }
        }
    }

    /// Read every lease record, attachment and the id counter.
    ///
    /// # Errors
    /// Storage errors; `Corrupted` for a record that does not decode or more than
    /// [`LEASE_COUNT_MAX`] leases.
    pub fn load(&self, view: &dyn ReadView) -> Result<PersistedLeases> {
        let mut persisted = PersistedLeases::default();
        let (lease_lo, lease_hi) = ([TAG_LEASE], [TAG_LEASE + 1]);
        view.scan(
            self.cf,
            ScanBounds::forward(&lease_lo, Some(&lease_hi)),
            &mut |key, value| {
                if persisted.leases.len() >= LEASE_COUNT_MAX {
                    return Err(StorageError::Corrupted {
                        what: "lease records",
                        detail: "more than the lease count limit".into(),
                    });
                }
                let id = codec::decode_lease_key(key)?;
                persisted.leases.push(codec::decode_lease(id, value)?);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        let (attach_lo, attach_hi) = ([TAG_ATTACHMENT], [TAG_ATTACHMENT + 1]);
        view.scan(
            self.cf,
            ScanBounds::forward(&attach_lo, Some(&attach_hi)),
            &mut |key, value| {
                codec::decode_attachment(value)?;
                persisted
                    .attachments
                    .push(codec::decode_attachment_key(key)?);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if let Some(value) = view.get(self.cf, &codec::id_counter_key())? {
            persisted.id_counter = codec::decode_id_counter(&value)?;
        }
        Ok(persisted)
    }

    /// [`LeaseStore::load`] then [`Lessor::restore`]: the lessor a replica starts with.
    ///
    /// # Errors
    /// As both.
    pub fn load_lessor(&self, view: &dyn ReadView, config: LessorConfig) -> Result<Lessor> {
        Lessor::restore(config, self.load(view)?)
    }
}

impl From<LeaseStore> for ColumnFamily {
    fn from(store: LeaseStore) -> Self {
        store.cf
    }
}
