//! Salted password hashes (bcrypt, as etcd stores them).
//!
//! The node hashes a password where the request arrives, before anything is replicated, so
//! the Raft log, snapshots and the auth column family only ever hold the salted hash.

use crate::error::{AuthError, Result};
use crate::limits::PASSWORD_BYTES_MAX;

/// Hash `password` with a fresh random salt at bcrypt `cost` (4..=31; etcd's default is 10).
///
/// # Errors
/// [`AuthError::PasswordTooLong`] beyond 72 bytes; [`AuthError::Hash`] for a cost out of
/// range or no randomness.
///
/// # Examples
/// ```
/// let hash = keel_auth::hash_password("s3cret", 4)?;
/// assert!(keel_auth::verify_password("s3cret", &hash));
/// assert!(!keel_auth::verify_password("guess", &hash));
/// assert!(!hash.contains("s3cret"));
/// # Ok::<(), keel_auth::AuthError>(())
/// ```
pub fn hash_password(password: &str, cost: u32) -> Result<String> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::PasswordTooLong {
            len_bytes: password.len(),
            max_bytes: PASSWORD_BYTES_MAX,
        });
    }
    bcrypt::hash(password, cost).map_err(|e| AuthError::Hash {
        detail: e.to_string(),
    })
}

/// Accept a hash made elsewhere (etcd 3.5's `hashedPassword`) only if it is a well-formed
/// bcrypt hash.
///
/// # Errors
/// [`AuthError::Hash`] for anything else.
pub fn check_hash(hash: &str) -> Result<()> {
    hash.parse::<bcrypt::HashParts>()
        .map(|_| ())
        .map_err(|e| AuthError::Hash {
            detail: format!("not a bcrypt hash: {e}"),
        })
}

/// Whether `password` matches `hash` (a malformed hash matches nothing).
pub fn verify_password(password: &str, hash: &str) -> bool {
    password.len() <= PASSWORD_BYTES_MAX && bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_differ_and_bad_input_is_typed() {
        let a = hash_password("pw", 4).unwrap();
        let b = hash_password("pw", 4).unwrap();
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("pw", &a) && verify_password("pw", &b));
        assert!(!verify_password("pw", "not a hash"));
        assert!(matches!(
            hash_password(&"x".repeat(73), 4),
            Err(AuthError::PasswordTooLong { len_bytes: 73, .. })
        ));
        assert!(matches!(
            hash_password("pw", 2),
            Err(AuthError::Hash { .. })
        ));
    }
}
