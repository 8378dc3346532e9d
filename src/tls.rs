//! rustls set-up both legs share: the `ring` provider, installed once per process, and
//! reading PEM certificates (the front end's own, the next hop's CA file).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs the `ring` provider as the process default (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        file: path.display().to_string(),
        message: message.to_string(),
    }
}

pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate found"));
    }
    Ok(certs)
}
