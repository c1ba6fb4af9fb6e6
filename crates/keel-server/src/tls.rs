//! TLS for client and peer traffic (rustls through tonic), from etcd's flags: `--cert-file`,
//! `--key-file`, `--trusted-ca-file`, `--client-cert-auth` and their `--peer-*` twins.
//!
//! A listener serves TLS when its URL is `https://`; such URLs need the certificate and key
//! of their side, and a side's URLs are all `https://` or all `http://`. With
//! `--client-cert-auth` (or `--peer-client-cert-auth`) a client must present a certificate
//! signed by the trusted CA; with only a trusted CA, a certificate is checked when given.
//! Members dial each other with the peer certificate as their client identity and trust the
//! peer CA. The TLS handshake must finish within [`HANDSHAKE_TIMEOUT`].

use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One side's TLS material, read and checked when the flags are validated.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: Vec<u8>,
    /// The private key (PEM).
    pub key: Vec<u8>,
    /// The CA that signs the other side's certificates (PEM), if any.
    pub trusted_ca: Option<Vec<u8>>,
    /// Require a certificate signed by `trusted_ca` from every client of this side.
    pub client_cert_auth: bool,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("trusted_ca", &self.trusted_ca.is_some())
            .field("client_cert_auth", &self.client_cert_auth)
            .finish_non_exhaustive()
    }
}

/// The flags of one side, as given.
#[derive(Clone, Copy, Debug)]
pub struct TlsFlags<'a> {
    /// `--cert-file` or `--peer-cert-file`.
    pub cert_file: Option<&'a Path>,
    /// `--key-file` or `--peer-key-file`.
    pub key_file: Option<&'a Path>,
    /// `--trusted-ca-file` or `--peer-trusted-ca-file`.
    pub trusted_ca_file: Option<&'a Path>,
    /// `--client-cert-auth` or `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// The flag prefix for messages: `""` or `"peer-"`.
    pub prefix: &'static str,
}

fn read_pem(flag: String, path: &Path, what: &str) -> Result<Vec<u8>, (String, String)> {
    let bytes =
        std::fs::read(path).map_err(|e| (flag.clone(), format!("{}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        return Err((flag, format!("{}: not a PEM {what}", path.display())));
    }
    Ok(bytes)
}

impl TlsFlags<'_> {
    /// Read the files: `None` when no certificate is configured.
    ///
    /// # Errors
    /// `(flag, reason)`: a certificate without its key (or the reverse), client-cert-auth
    /// without a trusted CA, an unreadable or non-PEM file.
    pub fn load(&self) -> Result<Option<TlsFiles>, (String, String)> {
        let flag = |name: &str| format!("{}{name}", self.prefix);
        let (cert, key) = match (self.cert_file, self.key_file) {
            (None, None) => {
                if self.client_cert_auth {
                    return Err((
                        flag("client-cert-auth"),
                        "needs a certificate and a trusted CA".into(),
                    ));
                }
                return Ok(None);
            }
            (Some(_), None) => {
                return Err((
                    flag("key-file"),
                    "missing: the certificate needs its key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    flag("cert-file"),
                    "missing: the key needs its certificate".into(),
                ))
            }
            (Some(c), Some(k)) => (c, k),
        };
        let trusted_ca = match self.trusted_ca_file {
            Some(p) => Some(read_pem(flag("trusted-ca-file"), p, "certificate")?),
            None if self.client_cert_auth => {
                return Err((
                    flag("trusted-ca-file"),
                    "missing: client-cert-auth needs the CA that signs client certificates".into(),
                ))
            }
            None => None,
        };
        Ok(Some(TlsFiles {
            cert: read_pem(flag("cert-file"), cert, "certificate")?,
            key: read_pem(flag("key-file"), key, "private key")?,
            trusted_ca,
            client_cert_auth: self.client_cert_auth,
        }))
    }
}

impl TlsFiles {
    /// The server side of a listener.
    pub fn server(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.trusted_ca {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(!self.client_cert_auth);
        }
        config
    }

    /// The client side of a member dialing another: this member's certificate as its
    /// identity, the trusted CA as the only root.
    pub fn client(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.trusted_ca {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        config
    }
}

/// The subject common name of the first certificate a client presented on a TLS connection
/// (already verified against the trusted CA by the handshake); `None` without TLS, without a
/// certificate, or when the certificate has no CN.
pub fn peer_common_name<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    common_name(certs.first()?.as_ref())
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod cn_tests {
    #[test]
    fn garbage_is_no_name() {
        assert_eq!(super::common_name(b"not a certificate"), None);
        assert_eq!(super::common_name(&[]), None);
    }
}
