//! The physical layout of leases: one column family, three kinds of records.
//!
//! ```text
//! column family "lease"
//! key                                      value
//! 'k' | ordered(id) | user key             [FORMAT_VERSION]
//! 'l' | ordered(id)                        [FORMAT_VERSION][ttl_secs i64][remaining_ms u64][renew_count u32]
//! 'm' | "id_counter"                       [FORMAT_VERSION][counter u64]
//!
//! ordered(id) = (id as u64) XOR 2^63, 8 bytes big-endian: keys sort by signed id.
//! Every integer is fixed-width big-endian.
//! ```
//!
//! Attachments (`'k'`) are persisted rather than rebuilt from the keyspace at open: opening
//! then reads only the lease column family (proportional to leases and leased keys, not to the
//! whole keyspace, in line with the design's "no open-time rebuild proportional to the key
//! count"), the lease crate does not depend on the MVCC layout, and attach/detach land in the
//! same batch as the put/delete that caused them, so they cannot diverge. The cost is one
//! small extra write per put with a lease. A revoke deletes a lease's attachments with one
//! range delete over `'k' | ordered(id)`.

/// The column family of lease records; pass it to the engine at open.
pub const LEASE_CF: &str = "lease";

/// Version byte that starts every value.
pub const FORMAT_VERSION: u8 = 1;

/// Key tag of attachments.
pub const TAG_ATTACHMENT: u8 = b'k';
/// Key tag of lease records.
pub const TAG_LEASE: u8 = b'l';
/// Key tag of meta records.
pub const TAG_META: u8 = b'm';

/// Meta key of the id generator's position (after the tag).
pub const META_ID_COUNTER: &[u8] = b"id_counter";

/// Bytes of a lease record value.
pub const LEASE_VALUE_BYTES: usize = 1 + 8 + 8 + 4;
