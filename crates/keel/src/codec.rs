//! The node's byte formats: every replicated request and persisted record is one format
//! version byte followed by the value in postcard (a compact, stable binary serde format).
//!
//! ```text
//! +---------+----------------------------+
//! | ver = 2 | postcard(value)            |
//! +---------+----------------------------+
//! ```
//!
//! Records: replicated [`crate::Request`]s (inside log entries), log entries, the vote, the
//! purged log id, the applied-state marker (applied log id + last membership), the cluster id
//! and peer messages. Decoding never panics: an empty buffer, an unknown version or malformed
//! bytes are [`NodeError::Codec`].

use crate::error::NodeError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Current format version of every record written by this crate.
///
/// 2: openraft's standard leader ids (a log id's leader is its term alone; a vote names the
/// term and the member voted for). Version 1 wrote the "advanced" ids (term and member in
/// every log id), which version 2 would misread, so a version-1 record is refused.
pub(crate) const FORMAT_VERSION: u8 = 2;

/// Encode `value` as a versioned record.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, NodeError> {
    let out = vec![FORMAT_VERSION];
    postcard::to_extend(value, out).map_err(|e| NodeError::Codec {
        what,
        detail: e.to_string(),
    })
}

/// Decode a versioned record written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, NodeError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(NodeError::Codec {
            what,
            detail: "empty record".into(),
        });
    };
    if version != FORMAT_VERSION {
        return Err(NodeError::Codec {
            what,
            detail: format!("unknown format version {version}"),
        });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| NodeError::Codec {
        what,
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(NodeError::Codec {
            what,
            detail: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

/// Encode for storage: an encoding failure becomes an I/O error for openraft.
pub(crate) fn encode_io<T: Serialize>(what: &'static str, value: &T) -> std::io::Result<Vec<u8>> {
    encode(what, value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decode from storage: corruption becomes an I/O error for openraft.
pub(crate) fn decode_io<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> std::io::Result<T> {
    decode(what, bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(
            decode::<u64>("x", &[]),
            Err(NodeError::Codec { .. })
        ));
        assert!(matches!(
            decode::<u64>("x", &[9, 1]),
            Err(NodeError::Codec { .. })
        ));
        assert!(matches!(
            decode::<u64>("x", &[FORMAT_VERSION]),
            Err(NodeError::Codec { .. })
        ));
        assert!(matches!(
            decode::<u8>("x", &[FORMAT_VERSION, 1, 2]),
            Err(NodeError::Codec { .. })
        ));
        assert_eq!(decode::<u64>("x", &encode("x", &7u64).unwrap()).unwrap(), 7);
    }

    /// A record of format 1 (openraft's "advanced" leader ids: a log id's leader carried the
    /// member id too) is refused with the version, not misread as a standard one.
    #[test]
    fn records_of_format_1_are_refused() {
        // Log id (term 3, leader 2, index 7) as format 1 wrote it.
        let old = [1u8, 3, 2, 7];
        let err = decode::<(u64, u64)>("log id", &old).unwrap_err();
        assert!(
            err.to_string().contains("unknown format version 1"),
            "{err}"
        );
    }
}
