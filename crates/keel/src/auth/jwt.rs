//! JWT tokens (etcd's `--auth-token jwt,...`): signed by the member that authenticates, and
//! checked by signature and expiry on any member, so nothing about them is replicated.

use keel_auth::AuthError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a JWT is signed and checked.
///
/// # Examples
/// ```
/// let secret = b"a shared secret of the cluster".to_vec();
/// let jwt = keel::JwtConfig::new("HS256", secret, None, std::time::Duration::from_secs(300))?;
/// assert_eq!(jwt.ttl(), std::time::Duration::from_secs(300));
/// # Ok::<(), keel::AuthError>(())
/// ```
#[derive(Clone)]
pub struct JwtConfig {
    algorithm: jsonwebtoken::Algorithm,
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The claims of keel's (and etcd's) tokens.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

fn bad_key(detail: impl std::fmt::Display) -> AuthError {
    AuthError::TokenKey {
        detail: detail.to_string(),
    }
}

impl JwtConfig {
    /// `sign_method` is one of etcd's: `RS256/384/512`, `PS256/384/512`, `ES256/384`
    /// (`private_key` and `public_key` in PEM), or `HS256/384/512` (`private_key` is the
    /// shared secret, `public_key` unused). Tokens expire `ttl` after they are issued.
    ///
    /// # Errors
    /// An unknown method, a missing public key for an asymmetric method, a key that does
    /// not parse, a public key that does not match the private one, a zero `ttl`.
    pub fn new(
        sign_method: &str,
        private_key: Vec<u8>,
        public_key: Option<Vec<u8>>,
        ttl: Duration,
    ) -> Result<Self, AuthError> {
        use jsonwebtoken::{Algorithm as A, DecodingKey, EncodingKey};
        let algorithm: A = sign_method.parse().map_err(bad_key)?;
        let public = || {
            public_key
                .clone()
                .ok_or_else(|| bad_key("the method needs pub-key"))
        };
        let (encoding, decoding) = match algorithm {
            A::HS256 | A::HS384 | A::HS512 => (
                EncodingKey::from_secret(&private_key),
                DecodingKey::from_secret(&private_key),
            ),
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => (
                EncodingKey::from_rsa_pem(&private_key).map_err(bad_key)?,
                DecodingKey::from_rsa_pem(&public()?).map_err(bad_key)?,
            ),
            A::ES256 | A::ES384 => (
                EncodingKey::from_ec_pem(&private_key).map_err(bad_key)?,
                DecodingKey::from_ec_pem(&public()?).map_err(bad_key)?,
            ),
            A::EdDSA => (
                EncodingKey::from_ed_pem(&private_key).map_err(bad_key)?,
                DecodingKey::from_ed_pem(&public()?).map_err(bad_key)?,
            ),
        };
        if ttl.is_zero() {
            return Err(bad_key("ttl must be positive"));
        }
        let config = JwtConfig {
            algorithm,
            encoding,
            decoding,
            ttl,
        };
        // A key pair that does not match is found now, not at the first authentication.
        let probe = config.sign("probe", 0)?;
        config
            .verify(&probe)
            .map_err(|_| bad_key("pub-key does not match priv-key"))?;
        Ok(config)
    }

    /// How long a token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` at auth revision `revision`, expiring `ttl` from now (wall-clock
    /// Unix seconds, as JWT's `exp` is).
    pub(crate) fn sign(&self, user: &str, revision: u64) -> Result<String, AuthError> {
        let claims = Claims {
            username: user.to_owned(),
            revision,
            exp: jsonwebtoken::get_current_timestamp().saturating_add(self.ttl.as_secs().max(1)),
        };
        let header = jsonwebtoken::Header::new(self.algorithm);
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(bad_key)
    }

    /// The user and auth revision of a valid, unexpired token.
    pub(crate) fn verify(&self, token: &str) -> Result<(String, u64), AuthError> {
        let mut validation = jsonwebtoken::Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| AuthError::InvalidAuthToken)?;
        Ok((data.claims.username, data.claims.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_forgeries_are_refused() {
        let ttl = Duration::from_secs(60);
        let jwt = JwtConfig::new("HS256", b"k1".to_vec(), None, ttl).unwrap();
        let token = jwt.sign("alice", 7).unwrap();
        assert_eq!(jwt.verify(&token).unwrap(), ("alice".to_owned(), 7));
        let other = JwtConfig::new("HS256", b"k2".to_vec(), None, ttl).unwrap();
        assert_eq!(other.verify(&token), Err(AuthError::InvalidAuthToken));
        assert_eq!(jwt.verify("a.b.c"), Err(AuthError::InvalidAuthToken));
        assert!(JwtConfig::new("XX999", b"k".to_vec(), None, ttl).is_err());
        assert!(JwtConfig::new("RS256", b"not pem".to_vec(), None, ttl).is_err());
        assert!(JwtConfig::new("HS256", b"k".to_vec(), None, Duration::ZERO).is_err());
    }
}
