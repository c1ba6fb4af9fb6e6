//! Byte formats of member records (layout drawn in `schema.rs`). Decoders return
//! [`MembershipError::Corrupted`], never panic.

use crate::error::{MembershipError, Result};
use crate::member::Member;
use crate::names::MemberName;
use crate::schema::FORMAT_VERSION;
use crate::url::MemberUrl;
use keel_types::{ClusterId, MemberId};

const LEARNER: u8 = 0b01;
const HAS_NAME: u8 = 0b10;

/// Encode a member record.
pub(crate) fn encode_member(member: &Member) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&member.id().get().to_be_bytes());
    let mut flags = 0;
    if member.is_learner() {
        flags |= LEARNER;
    }
    if member.name().is_some() {
        flags |= HAS_NAME;
    }
    out.push(flags);
    if let Some(name) = member.name() {
        put_str(&mut out, name.as_str());
    }
    for urls in [member.peer_urls(), member.client_urls()] {
        // At most URLS_PER_MEMBER_MAX (16) URLs, so the count fits a byte.
        out.push(u8::try_from(urls.len()).unwrap_or(u8::MAX));
        for url in urls {
            put_str(&mut out, url.as_str());
        }
    }
    out
}

/// Decode a member record.
pub(crate) fn decode_member(bytes: &[u8]) -> Result<Member> {
    let mut r = Reader::new(bytes, "member record")?;
    let id = MemberId::new(r.u64()?);
    let flags = r.u8()?;
    if flags & !(LEARNER | HAS_NAME) != 0 {
        return Err(r.corrupted(format!("unknown flags {flags:#x}")));
    }
    let name = if flags & HAS_NAME != 0 {
        Some(MemberName::new(r.str()?).map_err(|e| r.corrupted(e.to_string()))?)
    } else {
        None
    };
    let peer_urls = r.urls()?;
    let client_urls = r.urls()?;
    r.finish()?;
    let corrupted = |e: MembershipError| MembershipError::corrupted("member record", e.to_string());
    let mut member = Member::new(id, peer_urls, flags & LEARNER != 0)
        .map_err(corrupted)?
        .with_client_urls(client_urls)
        .map_err(corrupted)?;
    if let Some(name) = name {
        member = member.with_name(name);
    }
    Ok(member)
}

/// Encode the cluster id record.
pub(crate) fn encode_cluster_id(id: ClusterId) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&id.get().to_be_bytes());
    out
}

/// Decode the cluster id record.
pub(crate) fn decode_cluster_id(bytes: &[u8]) -> Result<ClusterId> {
    let mut r = Reader::new(bytes, "cluster id record")?;
    let id = ClusterId::new(r.u64()?);
    r.finish()?;
    Ok(id)
}

/// Encode a removed-id record (the id is in the key).
pub(crate) fn encode_removed() -> Vec<u8> {
    vec![FORMAT_VERSION]
}

/// Decode a removed-id record.
pub(crate) fn decode_removed(bytes: &[u8]) -> Result<()> {
    Reader::new(bytes, "removed id record")?.finish()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names and URLs are bounded far below u16::MAX by limits.rs.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Result<Self> {
        let mut r = Reader { bytes, what };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(r.corrupted(format!("unknown format version {version}")));
        }
        Ok(r)
    }

    fn corrupted(&self, detail: impl Into<String>) -> MembershipError {
        MembershipError::corrupted(self.what, detail)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(self.corrupted(format!(
                "truncated: need {n} bytes, have {}",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn str(&mut self) -> Result<&'a str> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        let bytes = self.take(usize::from(u16::from_be_bytes(b)))?;
        std::str::from_utf8(bytes).map_err(|e| self.corrupted(e.to_string()))
    }

    fn urls(&mut self) -> Result<Vec<MemberUrl>> {
        let count = self.u8()?;
        let mut urls = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let text = self.str()?;
            urls.push(MemberUrl::parse(text).map_err(|e| self.corrupted(e.to_string()))?);
        }
        Ok(urls)
    }

    fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.corrupted(format!("{} trailing bytes", self.bytes.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_member() -> impl Strategy<Value = Member> {
        (
            1u64..,
            proptest::option::of("[a-z][a-z0-9-]{0,20}"),
            proptest::collection::btree_set(1u16..10000, 1..4),
            proptest::collection::btree_set(1u16..10000, 0..4),
            any::<bool>(),
        )
            .prop_map(|(id, name, peers, clients, learner)| {
                let url = |p: &u16| MemberUrl::parse(&format!("http://h{p}:{p}")).unwrap();
                let mut m =
                    Member::new(MemberId::new(id), peers.iter().map(url).collect(), learner)
                        .unwrap()
                        .with_client_urls(clients.iter().map(url).collect())
                        .unwrap();
                if let Some(n) = name {
                    m = m.with_name(MemberName::new(n).unwrap());
                }
                m
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn member_round_trip(m in arb_member()) {
            prop_assert_eq!(decode_member(&encode_member(&m)).unwrap(), m);
        }

        #[test]
        fn cluster_id_round_trip(id: u64) {
            let id = ClusterId::new(id);
            prop_assert_eq!(decode_cluster_id(&encode_cluster_id(id)).unwrap(), id);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_member(&bytes);
            let _ = decode_cluster_id(&bytes);
            let _ = decode_removed(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(m in arb_member()) {
            let bytes = encode_member(&m);
            for len in 0..bytes.len() {
                let is_corrupted = matches!(decode_member(&bytes[..len]), Err(MembershipError::Corrupted { .. }));
                prop_assert!(is_corrupted);
            }
        }
    }

    #[test]
    fn wrong_version_and_trailing_bytes_are_corrupt() {
        let mut bytes = encode_cluster_id(ClusterId::new(5));
        bytes[0] = 9;
        assert_eq!(
            decode_cluster_id(&bytes).unwrap_err().to_string(),
            "corrupted cluster id record: unknown format version 9"
        );
        assert!(decode_removed(&[FORMAT_VERSION, 0]).is_err());
        decode_removed(&encode_removed()).unwrap();
    }
}
