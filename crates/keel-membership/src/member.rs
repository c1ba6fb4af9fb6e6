//! [`Member`]: one member of a cluster.

use crate::error::{MembershipError, Result};
use crate::names::MemberName;
use crate::url::MemberUrl;
use keel_types::MemberId;
use std::fmt;

/// One member: its id, name, peer and client URLs, and whether it is a learner.
///
/// The name and client URLs are unknown until the member starts and publishes them (etcd's
/// `Attributes`); a member added at run time has only its id and peer URLs (etcd's
/// `RaftAttributes`).
///
/// Invariants:
/// 1. `peer_urls` is non-empty, sorted, without duplicates, at most
///    [`crate::limits::URLS_PER_MEMBER_MAX`] long.
/// 2. `client_urls` is sorted, without duplicates, at most that long (it may be empty).
/// 3. The id is not 0.
///
/// # Examples
/// ```
/// use keel_membership::{Member, MemberName, MemberUrl};
/// use keel_types::MemberId;
/// let m = Member::new(MemberId::new(7), vec![MemberUrl::parse("http://10.0.0.7:2380")?], true)?
///     .with_name(MemberName::new("n7")?);
/// assert!(m.is_learner());
/// assert_eq!(m.to_string(), "7 n7 learner http://10.0.0.7:2380");
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    id: MemberId,
    name: Option<MemberName>,
    peer_urls: Vec<MemberUrl>,
    client_urls: Vec<MemberUrl>,
    is_learner: bool,
}

impl Member {
    /// A member with peer URLs only (not started yet: no name, no client URLs).
    ///
    /// # Errors
    /// [`MembershipError::ZeroMemberId`], or [`MembershipError::BadMemberUrls`] for an empty
    /// or oversized URL list.
    pub fn new(id: MemberId, peer_urls: Vec<MemberUrl>, is_learner: bool) -> Result<Self> {
        if id.get() == 0 {
            return Err(MembershipError::ZeroMemberId);
        }
        let peer_urls =
            MemberUrl::normalize_list(peer_urls).map_err(|e| MembershipError::BadMemberUrls {
                detail: e.to_string(),
            })?;
        Ok(Member {
            id,
            name: None,
            peer_urls,
            client_urls: Vec::new(),
            is_learner,
        })
    }

    /// This member with its name set.
    pub fn with_name(mut self, name: MemberName) -> Self {
        self.name = Some(name);
        self
    }

    /// This member with its client URLs set (sorted, duplicates dropped).
    ///
    /// # Errors
    /// [`MembershipError::TooMany`] past the per-member URL limit.
    pub fn with_client_urls(mut self, mut client_urls: Vec<MemberUrl>) -> Result<Self> {
        client_urls.sort();
        client_urls.dedup();
        if client_urls.len() > crate::limits::URLS_PER_MEMBER_MAX {
            return Err(MembershipError::TooMany {
                what: "URLs for one member",
                count: client_urls.len(),
                max: crate::limits::URLS_PER_MEMBER_MAX,
            });
        }
        self.client_urls = client_urls;
        Ok(self)
    }

    /// The member id.
    pub fn id(&self) -> MemberId {
        self.id
    }

    /// The name, once the member has started and published it.
    pub fn name(&self) -> Option<&MemberName> {
        self.name.as_ref()
    }

    /// Peer URLs, sorted.
    pub fn peer_urls(&self) -> &[MemberUrl] {
        &self.peer_urls
    }

    /// Client URLs, sorted (empty until published).
    pub fn client_urls(&self) -> &[MemberUrl] {
        &self.client_urls
    }

    /// Whether the member is a learner (receives the log, does not vote).
    pub fn is_learner(&self) -> bool {
        self.is_learner
    }

    /// Whether the member has started (published its name).
    pub fn is_started(&self) -> bool {
        self.name.is_some()
    }

    pub(crate) fn set_learner(&mut self, is_learner: bool) {
        self.is_learner = is_learner;
    }

    pub(crate) fn set_peer_urls(&mut self, peer_urls: Vec<MemberUrl>) {
        self.peer_urls = peer_urls;
    }

    /// Check the numbered invariants above.
    ///
    /// # Errors
    /// [`MembershipError::Invariant`] naming the first that fails.
    pub fn check_invariants(&self) -> Result<()> {
        let sorted_unique = |urls: &[MemberUrl]| urls.windows(2).all(|w| w[0] < w[1]);
        let max = crate::limits::URLS_PER_MEMBER_MAX;
        if self.peer_urls.is_empty() || self.peer_urls.len() > max {
            return Err(MembershipError::invariant(
                1,
                format!("member {} peer URL count", self.id),
            ));
        }
        if !sorted_unique(&self.peer_urls) {
            return Err(MembershipError::invariant(
                1,
                format!("member {} peer URLs", self.id),
            ));
        }
        if self.client_urls.len() > max || !sorted_unique(&self.client_urls) {
            return Err(MembershipError::invariant(
                2,
                format!("member {} client URLs", self.id),
            ));
        }
        if self.id.get() == 0 {
            return Err(MembershipError::invariant(3, "member id 0"));
        }
        Ok(())
    }
}

impl fmt::Display for Member {
    /// `id name role peer-urls`, with `-` for an unpublished name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.as_ref().map_or("-", MemberName::as_str);
        let role = if self.is_learner { "learner" } else { "voter" };
        write!(
            f,
            "{} {} {} {}",
            self.id,
            name,
            role,
            MemberUrl::join(&self.peer_urls)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized_and_required() {
        let u = |s| MemberUrl::parse(s).unwrap();
        let m = Member::new(
            MemberId::new(1),
            vec![u("http://b:1"), u("http://a:1"), u("http://a:1")],
            false,
        )
        .unwrap();
        assert_eq!(MemberUrl::join(m.peer_urls()), "http://a:1,http://b:1");
        m.check_invariants().unwrap();
        assert_eq!(
            Member::new(MemberId::new(1), vec![], false)
                .unwrap_err()
                .to_string(),
            "etcdserver: given member URLs are invalid"
        );
        assert_eq!(
            Member::new(MemberId::new(0), vec![u("http://a:1")], false).unwrap_err(),
            MembershipError::ZeroMemberId
        );
    }
}
