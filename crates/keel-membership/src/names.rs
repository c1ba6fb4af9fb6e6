//! Name newtypes: [`MemberName`] and [`ClusterToken`].

use crate::error::{MembershipError, Result};
use crate::limits::{NAME_LEN_MAX_BYTES, TOKEN_LEN_MAX_BYTES};
use std::fmt;

/// A member's human-readable name (`--name`). Never empty; never holds `,` or `=`, which
/// would break the `name=url,...` syntax of `--initial-cluster`.
///
/// # Examples
/// ```
/// use keel_membership::MemberName;
/// assert_eq!(MemberName::new("infra1")?.as_str(), "infra1");
/// assert!(MemberName::new("a=b").is_err());
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberName(String);

impl MemberName {
    /// A validated name.
    ///
    /// # Errors
    /// [`MembershipError::InvalidName`] or [`MembershipError::TooLong`].
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let invalid = |reason| MembershipError::InvalidName {
            name: name.clone(),
            reason,
        };
        if name.len() > NAME_LEN_MAX_BYTES {
            return Err(MembershipError::TooLong {
                what: "member name",
                len_bytes: name.len(),
                max_bytes: NAME_LEN_MAX_BYTES,
            });
        }
        if name.trim().is_empty() {
            return Err(invalid("a name must not be empty"));
        }
        if name.contains([',', '=']) {
            return Err(invalid("a name must not contain ',' or '='"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("a name must not contain control characters"));
        }
        Ok(MemberName(name))
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `--initial-cluster-token` (or a discovery token): mixed into member ids so that two
/// clusters bootstrapped from the same URLs get different ids. May be empty, as in etcd.
///
/// # Examples
/// ```
/// use keel_membership::ClusterToken;
/// assert_eq!(ClusterToken::new("etcd-cluster")?.as_str(), "etcd-cluster");
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterToken(String);

impl ClusterToken {
    /// A validated token.
    ///
    /// # Errors
    /// [`MembershipError::TooLong`] past [`TOKEN_LEN_MAX_BYTES`].
    pub fn new(token: impl Into<String>) -> Result<Self> {
        let token = token.into();
        if token.len() > TOKEN_LEN_MAX_BYTES {
            return Err(MembershipError::TooLong {
                what: "cluster token",
                len_bytes: token.len(),
                max_bytes: TOKEN_LEN_MAX_BYTES,
            });
        }
        Ok(ClusterToken(token))
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert_eq!(
            MemberName::new("").unwrap_err().to_string(),
            "invalid member name \"\": a name must not be empty"
        );
        assert_eq!(
            MemberName::new("a,b").unwrap_err().to_string(),
            "invalid member name \"a,b\": a name must not contain ',' or '='"
        );
        assert!(MemberName::new("x".repeat(NAME_LEN_MAX_BYTES + 1)).is_err());
        assert!(ClusterToken::new("t".repeat(TOKEN_LEN_MAX_BYTES + 1)).is_err());
        assert!(ClusterToken::new("").is_ok());
    }
}
