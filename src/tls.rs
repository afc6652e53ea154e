//! rustls set-up for both sides of the data path: the listener's certificate
//! (ALPN h2 and http/1.1) and the roots an `https://` upstream is checked
//! against (system roots, the webpki roots, and an app's `upstream_ca_file`).
//! Always the ring provider: the lock builds rustls with ring only, and a
//! second provider would make rustls' default builders panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::pem::PemError;

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file.
        file: PathBuf,
        /// OS message.
        reason: String,
    },
    /// The file holds no PEM certificate.
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// The file holds no PEM private key.
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    /// rustls refused the certificate, key or protocol set.
    #[error("{0}")]
    Rustls(String),
}

/// The crypto provider every rustls config here is built with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every PEM certificate in `path`; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(crate::config::pem::read_certificates(path)?)
}

impl From<PemError> for TlsError {
    fn from(e: PemError) -> Self {
        match e {
            PemError::Read { file, reason } => TlsError::Read { file, reason },
            PemError::NoCertificate(file) => TlsError::NoCertificate(file),
            PemError::NoKey(file) => TlsError::NoKey(file),
        }
    }
}

/// The chain and key in these files, checked to belong together.
pub fn certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let certs = read_certificates(cert_file)?;
    let key: PrivateKeyDer<'static> = crate::config::pem::read_private_key(key_file)?;
    rustls::sign::CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

/// The listener's certificate, replaceable while it serves: a reload swaps
/// in the renewed files, new handshakes present them, open connections keep
/// the session they negotiated.
#[derive(Debug)]
pub struct Certificate {
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
}

impl Certificate {
    /// Reads the chain and key from these files.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        Ok(Certificate {
            current: arc_swap::ArcSwap::from_pointee(certified_key(cert_file, key_file)?),
        })
    }

    /// Serves `key` on new handshakes from now on.
    pub fn set(&self, key: rustls::sign::CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl rustls::server::ResolvesServerCert for Certificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listener's TLS config: `certificate` (reloadable), ALPN h2 then http/1.1.
pub fn server_config(certificate: Arc<Certificate>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The roots every upstream is checked against: the system's and webpki's.
pub fn base_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // A system without a trust store still has the webpki roots.
    if let Ok(native) = rustls_native_certs::load_native_certs() {
        let _ = roots.add_parsable_certificates(native);
    }
    roots
}

/// The client config for upstreams: `roots` plus the CA in `extra`, if any.
pub fn client_config(
    mut roots: rustls::RootCertStore,
    extra: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    if let Some(file) = extra {
        for cert in read_certificates(file)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Rustls(format!("{}: {e}", file.display())))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
