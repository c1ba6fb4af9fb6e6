//! Byte formats of lease records (layout in [`crate::schema`]). Decoders return
//! `StorageError::Corrupted`, never panic.

use crate::lease::{LeaseRecord, RenewCount};
use crate::schema::{
    FORMAT_VERSION, LEASE_VALUE_BYTES, META_ID_COUNTER, TAG_ATTACHMENT, TAG_LEASE, TAG_META,
};
use bytes::Bytes;
use keel_storage::StorageError;
use keel_types::LeaseId;
use std::time::Duration;

type Result<T> = std::result::Result<T, StorageError>;

fn corrupted(what: &'static str, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupted {
        what,
        detail: detail.into(),
    }
}

/// The 8 ordered bytes of a lease id.
pub fn ordered_id(id: LeaseId) -> [u8; 8] {
    ((id.get() as u64) ^ (1 << 63)).to_be_bytes()
}

fn id_from_ordered(bytes: &[u8]) -> Result<LeaseId> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupted("lease key", format!("id of {} bytes", bytes.len())))?;
    let id = (u64::from_be_bytes(raw) ^ (1 << 63)) as i64;
    LeaseId::new(id).ok_or_else(|| corrupted("lease key", "lease id 0"))
}

/// Key of a lease record.
pub fn lease_key(id: LeaseId) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(TAG_LEASE);
    key.extend_from_slice(&ordered_id(id));
    key
}

/// The id of a lease record key.
///
/// # Errors
/// `Corrupted` when the key is not a lease record key.
pub fn decode_lease_key(key: &[u8]) -> Result<LeaseId> {
    match key.split_first() {
        Some((&TAG_LEASE, rest)) => id_from_ordered(rest),
        _ => Err(corrupted("lease key", format!("unexpected key {key:?}"))),
    }
}

/// Value of a lease record.
pub fn encode_lease(record: &LeaseRecord) -> Vec<u8> {
    let mut value = Vec::with_capacity(LEASE_VALUE_BYTES);
    value.push(FORMAT_VERSION);
    value.extend_from_slice(&record.ttl_secs.to_be_bytes());
    let remaining_ms = u64::try_from(record.remaining.as_millis()).unwrap_or(u64::MAX);
    value.extend_from_slice(&remaining_ms.to_be_bytes());
    value.extend_from_slice(&record.renew_count.get().to_be_bytes());
    value
}

fn version(what: &'static str, value: &[u8]) -> Result<()> {
    match value.first() {
        Some(&FORMAT_VERSION) => Ok(()),
        Some(v) => Err(corrupted(what, format!("unknown format version {v}"))),
        None => Err(corrupted(what, "empty value")),
    }
}

/// Decode a lease record value.
///
/// # Errors
/// `Corrupted` on a wrong version or length.
pub fn decode_lease(id: LeaseId, value: &[u8]) -> Result<LeaseRecord> {
    version("lease record", value)?;
    if value.len() != LEASE_VALUE_BYTES {
        return Err(corrupted(
            "lease record",
            format!("{} bytes, expected {LEASE_VALUE_BYTES}", value.len()),
        ));
    }
    let ttl = value.get(1..9).and_then(|b| b.try_into().ok());
    let remaining = value.get(9..17).and_then(|b| b.try_into().ok());
    let count = value.get(17..21).and_then(|b| b.try_into().ok());
    match (ttl, remaining, count) {
        (Some(ttl), Some(remaining), Some(count)) => Ok(LeaseRecord {
            id,
            ttl_secs: i64::from_be_bytes(ttl),
            remaining: Duration::from_millis(u64::from_be_bytes(remaining)),
            renew_count: RenewCount::new(u32::from_be_bytes(count)),
        }),
        _ => Err(corrupted("lease record", "truncated")),
    }
}

/// Key of an attachment.
pub fn attachment_key(id: LeaseId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(TAG_ATTACHMENT);
    out.extend_from_slice(&ordered_id(id));
    out.extend_from_slice(key);
    out
}

/// `[start, end)` covering every attachment of a lease.
pub fn attachment_range(id: LeaseId) -> (Vec<u8>, Vec<u8>) {
    let start = attachment_key(id, b"");
    let ordered = u64::from_be_bytes(ordered_id(id));
    let end = match ordered.checked_add(1) {
        Some(next) => {
            let mut end = vec![TAG_ATTACHMENT];
            end.extend_from_slice(&next.to_be_bytes());
            end
        }
        None => vec![TAG_ATTACHMENT + 1],
    };
    (start, end)
}

/// Decode an attachment key into `(lease, user key)`.
///
/// # Errors
/// `Corrupted` when the key is not an attachment key.
pub fn decode_attachment_key(key: &[u8]) -> Result<(LeaseId, Bytes)> {
    match key.split_first() {
        Some((&TAG_ATTACHMENT, rest)) if rest.len() > 8 => {
            let (id, user_key) = rest.split_at(8);
            Ok((id_from_ordered(id)?, Bytes::copy_from_slice(user_key)))
        }
        _ => Err(corrupted(
            "lease attachment",
            format!("unexpected key {key:?}"),
        )),
    }
}

/// The value of an attachment (the version byte alone).
pub fn encode_attachment() -> Vec<u8> {
    vec![FORMAT_VERSION]
}

/// Check an attachment value.
///
/// # Errors
/// `Corrupted` on a wrong version or length.
pub fn decode_attachment(value: &[u8]) -> Result<()> {
    version("lease attachment", value)?;
    if value.len() != 1 {
        return Err(corrupted("lease attachment", "trailing bytes"));
    }
    Ok(())
}

/// Key of the id generator's position.
pub fn id_counter_key() -> Vec<u8> {
    let mut key = vec![TAG_META];
    key.extend_from_slice(META_ID_COUNTER);
    key
}

/// Value of the id generator's position.
pub fn encode_id_counter(counter: u64) -> Vec<u8> {
    let mut value = vec![FORMAT_VERSION];
    value.extend_from_slice(&counter.to_be_bytes());
    value
}

/// Decode the id generator's position.
///
/// # Errors
/// `Corrupted` on a wrong version or length.
pub fn decode_id_counter(value: &[u8]) -> Result<u64> {
    version("lease id counter", value)?;
    value
        .get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupted("lease id counter", format!("{} bytes", value.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lease_id() -> impl Strategy<Value = LeaseId> {
        any::<i64>().prop_filter_map("non-zero", LeaseId::new)
    }

    proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn lease_record_round_trip(
            id in lease_id(),
            ttl in any::<i64>(),
            remaining_ms in any::<u64>(),
            count in any::<u32>(),
        ) {
            let record = LeaseRecord {
                id,
                ttl_secs: ttl,
                remaining: Duration::from_millis(remaining_ms),
                renew_count: RenewCount::new(count),
            };
            prop_assert_eq!(decode_lease_key(&lease_key(id))?, id);
            prop_assert_eq!(decode_lease(id, &encode_lease(&record))?, record);
        }

        #[test]
        fn attachment_round_trip_and_range(id in lease_id(), key in proptest::collection::vec(any::<u8>(), 1..40)) {
            let encoded = attachment_key(id, &key);
            let (decoded_id, decoded_key) = decode_attachment_key(&encoded)?;
            prop_assert_eq!(decoded_id, id);
            prop_assert_eq!(&decoded_key[..], &key[..]);
            let (start, end) = attachment_range(id);
            prop_assert!(start <= encoded && encoded < end);
            decode_attachment(&encode_attachment())?;
        }

        #[test]
        fn ordered_ids_sort_like_ids(a in lease_id(), b in lease_id()) {
            prop_assert_eq!(a.cmp(&b), lease_key(a).cmp(&lease_key(b)));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let id = LeaseId::new(1).unwrap();
            let _ = decode_lease(id, &bytes);
            let _ = decode_lease_key(&bytes);
            let _ = decode_attachment_key(&bytes);
            let _ = decode_attachment(&bytes);
            let _ = decode_id_counter(&bytes);
        }

        #[test]
        fn id_counter_round_trip(counter in any::<u64>()) {
            prop_assert_eq!(decode_id_counter(&encode_id_counter(counter))?, counter);
        }
    }

    #[test]
    fn wrong_version_and_length_are_corrupted() {
        let id = LeaseId::new(5).unwrap();
        let record = LeaseRecord {
            id,
            ttl_secs: 10,
            remaining: Duration::from_secs(10),
            renew_count: RenewCount::default(),
        };
        let mut value = encode_lease(&record);
        value[0] = 9;
        assert!(matches!(
            decode_lease(id, &value),
            Err(StorageError::Corrupted { .. })
        ));
        assert!(decode_lease(id, &encode_lease(&record)[..20]).is_err());
        assert!(decode_lease_key(&lease_key(id)[..8]).is_err());
        assert!(
            decode_lease_key(&[TAG_LEASE, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err(),
            "id 0"
        );
        let max = LeaseId::new(i64::MAX).unwrap();
        assert_eq!(attachment_range(max).1, vec![TAG_ATTACHMENT + 1]);
    }
}
