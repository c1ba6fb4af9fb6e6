//! Deterministic member and cluster ids, computed like etcd's.
//!
//! etcd: server/etcdserver/api/membership/member.go (`computeMemberID`) and cluster.go
//! (`genID`): SHA-1, first 8 bytes big-endian.

use crate::error::{MembershipError, Result};
use crate::names::ClusterToken;
use crate::url::MemberUrl;
use keel_types::{ClusterId, MemberId};
use std::time::Duration;

/// The id of a member listed in `--initial-cluster` (static bootstrap or discovery): SHA-1 over
/// the sorted peer URLs concatenated, then the cluster token.
///
/// # Errors
/// [`MembershipError::ZeroMemberId`] in the (2^-64) case the hash starts with eight zero bytes.
///
/// # Examples
/// ```
/// use keel_membership::{static_member_id, ClusterToken, MemberUrl};
/// // etcd's default single member: `etcd` with no flags is member 8e9e05c52164694d.
/// let urls = [MemberUrl::parse("http://localhost:2380")?];
/// let id = static_member_id(&urls, &ClusterToken::new("etcd-cluster")?)?;
/// assert_eq!(id.to_string(), "8e9e05c52164694d");
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
pub fn static_member_id(peer_urls: &[MemberUrl], token: &ClusterToken) -> Result<MemberId> {
    member_id(peer_urls, token, None)
}

/// The id of a member added at run time: like [`static_member_id`] with the time of the
/// request appended, so that a member re-added with a removed member's URLs gets a new id.
/// `now` is injected by the caller and never read here: etcd uses wall-clock time since the
/// Unix epoch; any value that differs between two requests (such as an injected
/// `keel_types::Clock::now()`) keeps ids unique. The leader computes the id once and
/// replicates it inside the change, so replicas never recompute it.
///
/// Deviation from etcd: etcd appends Unix *seconds*; keel appends nanoseconds so that a
/// remove-then-add of the same URLs within one second does not produce the removed id.
///
/// # Errors
/// [`MembershipError::ZeroMemberId`] as for [`static_member_id`].
pub fn runtime_member_id(
    peer_urls: &[MemberUrl],
    token: &ClusterToken,
    now: Duration,
) -> Result<MemberId> {
    member_id(peer_urls, token, Some(now))
}

fn member_id(
    peer_urls: &[MemberUrl],
    token: &ClusterToken,
    time: Option<Duration>,
) -> Result<MemberId> {
    let mut sorted: Vec<&str> = peer_urls.iter().map(MemberUrl::as_str).collect();
    sorted.sort_unstable();
    let mut hasher = sha1_smol::Sha1::new();
    for url in sorted {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_str().as_bytes());
    if let Some(time) = time {
        hasher.update(time.as_nanos().to_string().as_bytes());
    }
    let id = first_u64(&hasher.digest().bytes());
    if id == 0 {
        return Err(MembershipError::ZeroMemberId);
    }
    Ok(MemberId::new(id))
}

/// The cluster id of a newly bootstrapped cluster: SHA-1 over the sorted member ids, each
/// 8 bytes big-endian.
///
/// # Examples
/// ```
/// use keel_membership::cluster_id_of;
/// use keel_types::MemberId;
/// // etcd's default single-member cluster is cdf818194e3a8c32.
/// let id = cluster_id_of([MemberId::new(0x8e9e05c52164694d)]);
/// assert_eq!(id.to_string(), "cdf818194e3a8c32");
/// ```
pub fn cluster_id_of(member_ids: impl IntoIterator<Item = MemberId>) -> ClusterId {
    let mut ids: Vec<u64> = member_ids.into_iter().map(MemberId::get).collect();
    ids.sort_unstable();
    let mut hasher = sha1_smol::Sha1::new();
    for id in ids {
        hasher.update(&id.to_be_bytes());
    }
    ClusterId::new(first_u64(&hasher.digest().bytes()))
}

fn first_u64(digest: &[u8; 20]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<MemberUrl> {
        list.iter().map(|u| MemberUrl::parse(u).unwrap()).collect()
    }

    #[test]
    fn order_of_urls_does_not_matter() {
        let t = ClusterToken::new("tok").unwrap();
        let a = static_member_id(&urls(&["http://a:1", "http://b:1"]), &t).unwrap();
        let b = static_member_id(&urls(&["http://b:1", "http://a:1"]), &t).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn token_and_time_change_the_id() {
        let u = urls(&["http://a:1"]);
        let t1 = ClusterToken::new("t1").unwrap();
        let t2 = ClusterToken::new("t2").unwrap();
        let s = static_member_id(&u, &t1).unwrap();
        assert_ne!(s, static_member_id(&u, &t2).unwrap());
        let r1 = runtime_member_id(&u, &t1, Duration::from_nanos(1)).unwrap();
        let r2 = runtime_member_id(&u, &t1, Duration::from_nanos(2)).unwrap();
        assert_ne!(s, r1);
        assert_ne!(r1, r2);
    }

    #[test]
    fn cluster_id_ignores_order() {
        let a = cluster_id_of([MemberId::new(1), MemberId::new(2)]);
        let b = cluster_id_of([MemberId::new(2), MemberId::new(1)]);
        assert_eq!(a, b);
        assert_ne!(a, cluster_id_of([MemberId::new(1)]));
    }
}
