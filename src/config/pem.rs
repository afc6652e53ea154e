//! PEM certificate files, read the same way by config validation (a CA file
//! that holds no certificate is a config error naming its key) and by the
//! TLS set-up that later trusts it.

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// The file cannot be read or is not PEM: fix the path or the file.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file.
        file: PathBuf,
        /// OS or parser message.
        reason: String,
    },
    /// The file holds no PEM certificate: point the key at a certificate file.
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// The file holds no PEM private key: point the key at the key file.
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
}

/// Every PEM certificate in `path`; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let read_error = |reason: String| PemError::Read {
        file: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The first PEM private key in `path`.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let read_error = |reason: String| PemError::Read {
        file: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| read_error(e.to_string()))?
        .ok_or_else(|| PemError::NoKey(path.to_path_buf()))
}
