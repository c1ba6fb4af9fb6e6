//! The physical layout of member records: one column family, [`MEMBERS_CF`], registered by
//! the node when it opens the engine.
//!
//! ```text
//! key                         value (codec.rs)
//! ------------------------    ---------------------------------------------------------
//! "c"                         [version u8][cluster id u64 BE]
//! "m" ++ member id (u64 BE)   [version u8][member id u64 BE][flags u8]
//!                             [name len u16 BE][name]            (if flags & HAS_NAME)
//!                             [peer URL count u8]([len u16 BE][URL])*
//!                             [client URL count u8]([len u16 BE][URL])*
//! "r" ++ member id (u64 BE)   [version u8]                       (a removed id)
//! ```
//!
//! Keys are fixed-width big-endian, so a prefix scan visits members in id order. Every value
//! starts with [`FORMAT_VERSION`].

use keel_types::MemberId;

/// Name of the membership column family.
pub const MEMBERS_CF: &str = "members";

/// Version byte at the start of every record.
pub const FORMAT_VERSION: u8 = 1;

/// Key of the cluster id record.
pub const CLUSTER_ID_KEY: &[u8] = b"c";

/// First byte of member record keys.
pub const MEMBER_PREFIX: u8 = b'm';

/// First byte of removed-id record keys.
pub const REMOVED_PREFIX: u8 = b'r';

/// Length of a member or removed-id key.
pub const ID_KEY_LEN: usize = 9;

/// The key of `id` under `prefix`.
pub fn id_key(prefix: u8, id: MemberId) -> [u8; ID_KEY_LEN] {
    let mut key = [0u8; ID_KEY_LEN];
    key[0] = prefix;
    key[1..].copy_from_slice(&id.get().to_be_bytes());
    key
}

/// The id in a key under `prefix`, if the key has that shape.
pub fn parse_id_key(prefix: u8, key: &[u8]) -> Option<MemberId> {
    let (&first, rest) = key.split_first()?;
    let bytes: [u8; 8] = rest.try_into().ok()?;
    (first == prefix).then(|| MemberId::new(u64::from_be_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn id_keys_round_trip_and_sort_by_id(a: u64, b: u64) {
            let (ka, kb) = (id_key(MEMBER_PREFIX, MemberId::new(a)), id_key(MEMBER_PREFIX, MemberId::new(b)));
            prop_assert_eq!(parse_id_key(MEMBER_PREFIX, &ka), Some(MemberId::new(a)));
            prop_assert_eq!(parse_id_key(REMOVED_PREFIX, &ka), None);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }
    }
}
