//! [`MemberUrl`]: a validated peer or client URL.

use crate::error::{MembershipError, Result};
use crate::limits::{URLS_PER_MEMBER_MAX, URL_LEN_MAX_BYTES};
use std::fmt;

/// A member's peer or client URL, validated like etcd's `types.NewURLs`: scheme http, https,
/// unix or unixs; http(s) URLs have a `host:port` address and no path.
///
/// The text is kept as given (trimmed, scheme lower-cased), because member ids hash it.
///
/// Deviation from etcd: the host must not be empty and the port must be a number in 0..=65535
/// (Go's `net.SplitHostPort` accepts `:2380`); a peer must be reachable by its URL.
///
/// etcd: client/pkg/types/urls.go.
///
/// # Examples
/// ```
/// use keel_membership::MemberUrl;
/// let u = MemberUrl::parse(" HTTP://10.0.0.1:2380 ")?;
/// assert_eq!(u.as_str(), "http://10.0.0.1:2380");
/// assert_eq!(
///     MemberUrl::parse("http://10.0.0.1").unwrap_err().to_string(),
///     "URL address does not have the form \"host:port\": http://10.0.0.1"
/// );
/// # Ok::<(), keel_membership::MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberUrl(String);

impl MemberUrl {
    /// Parse and validate one URL.
    ///
    /// # Errors
    /// [`MembershipError::UrlScheme`], [`MembershipError::UrlHostPort`],
    /// [`MembershipError::UrlPath`] or [`MembershipError::TooLong`].
    pub fn parse(input: &str) -> Result<Self> {
        let text = input.trim();
        if text.len() > URL_LEN_MAX_BYTES {
            return Err(MembershipError::TooLong {
                what: "URL",
                len_bytes: text.len(),
                max_bytes: URL_LEN_MAX_BYTES,
            });
        }
        let url = || text.to_owned();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(MembershipError::UrlScheme { url: url() });
        };
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "http" | "https" => {
                let tail_at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(tail_at);
                if !is_host_port(authority) {
                    return Err(MembershipError::UrlHostPort { url: url() });
                }
                if !tail.is_empty() {
                    return Err(MembershipError::UrlPath { url: url() });
                }
            }
            "unix" | "unixs" => {
                if rest.is_empty() {
                    return Err(MembershipError::UrlHostPort { url: url() });
                }
            }
            _ => return Err(MembershipError::UrlScheme { url: url() }),
        }
        Ok(MemberUrl(format!("{scheme}://{rest}")))
    }

    /// Parse a comma-separated list (a URL flag's value), sorted and without duplicates.
    ///
    /// # Errors
    /// [`MembershipError::NoUrls`] for an empty list, [`MembershipError::TooMany`] past
    /// [`URLS_PER_MEMBER_MAX`], or the first URL's error.
    pub fn parse_list(input: &str) -> Result<Vec<MemberUrl>> {
        let urls = input
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(MemberUrl::parse)
            .collect::<Result<Vec<_>>>()?;
        Self::normalize_list(urls)
    }

    /// Sort `urls`, drop duplicates and check the count.
    ///
    /// # Errors
    /// [`MembershipError::NoUrls`] or [`MembershipError::TooMany`].
    pub fn normalize_list(mut urls: Vec<MemberUrl>) -> Result<Vec<MemberUrl>> {
        urls.sort();
        urls.dedup();
        if urls.is_empty() {
            return Err(MembershipError::NoUrls);
        }
        if urls.len() > URLS_PER_MEMBER_MAX {
            return Err(MembershipError::TooMany {
                what: "URLs for one member",
                count: urls.len(),
                max: URLS_PER_MEMBER_MAX,
            });
        }
        Ok(urls)
    }

    /// The URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Comma-separated text of a URL list.
    pub fn join(urls: &[MemberUrl]) -> String {
        urls.iter()
            .map(MemberUrl::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for MemberUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `authority` is `host:port` or `[v6host]:port` with a non-empty host, no user info
/// and a numeric port.
fn is_host_port(authority: &str) -> bool {
    if authority.contains('@') {
        return false;
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return false;
        };
        let Some(port) = after.strip_prefix(':') else {
            return false;
        };
        (host, port)
    } else {
        let Some((host, port)) = authority.rsplit_once(':') else {
            return false;
        };
        if host.contains(':') {
            return false;
        }
        (host, port)
    };
    !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_etcd_forms() {
        for ok in [
            "http://127.0.0.1:2380",
            "https://node-1.example:2380",
            "http://[::1]:2380",
            "unix://localhost:2380",
            "unixs:///tmp/sock",
        ] {
            assert!(MemberUrl::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_with_etcd_texts() {
        let cases = [
            (
                "ftp://a:1",
                "URL scheme must be http, https, unix, or unixs: ftp://a:1",
            ),
            ("a:1", "URL scheme must be http, https, unix, or unixs: a:1"),
            (
                "http://a",
                "URL address does not have the form \"host:port\": http://a",
            ),
            (
                "http://:2380",
                "URL address does not have the form \"host:port\": http://:2380",
            ),
            (
                "http://a:x",
                "URL address does not have the form \"host:port\": http://a:x",
            ),
            (
                "http://a:99999",
                "URL address does not have the form \"host:port\": http://a:99999",
            ),
            (
                "http://u@a:1",
                "URL address does not have the form \"host:port\": http://u@a:1",
            ),
            (
                "http://::1:2380",
                "URL address does not have the form \"host:port\": http://::1:2380",
            ),
            ("http://a:1/p", "URL must not contain a path: http://a:1/p"),
            ("http://a:1/", "URL must not contain a path: http://a:1/"),
        ];
        for (input, want) in cases {
            assert_eq!(MemberUrl::parse(input).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn list_is_sorted_and_deduplicated() {
        let urls = MemberUrl::parse_list("http://b:1, http://a:1,http://b:1").unwrap();
        assert_eq!(MemberUrl::join(&urls), "http://a:1,http://b:1");
        assert_eq!(
            MemberUrl::parse_list(" , ").unwrap_err(),
            MembershipError::NoUrls
        );
    }

    #[test]
    fn too_long_is_refused() {
        let long = format!("http://{}:1", "a".repeat(URL_LEN_MAX_BYTES));
        assert!(matches!(
            MemberUrl::parse(&long),
            Err(MembershipError::TooLong { .. })
        ));
    }
}
