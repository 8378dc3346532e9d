//! Inbound STARTTLS: the acceptor built from the configured certificate and key, and the
//! handle a reload swaps it through (a session keeps the acceptor it took).

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use tokio_rustls::TlsAcceptor;

use crate::tls::{file_error, load_certs, provider, TlsError};

/// The acceptor in force; swapped whole on reload.
#[derive(Default)]
pub struct Acceptor(RwLock<Option<TlsAcceptor>>);

impl Acceptor {
    pub fn new(acceptor: Option<TlsAcceptor>) -> Arc<Acceptor> {
        Arc::new(Acceptor(RwLock::new(acceptor)))
    }

    /// The acceptor now, if STARTTLS is offered.
    pub fn current(&self) -> Option<TlsAcceptor> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs a reloaded certificate; sessions in flight keep theirs.
    pub fn swap(&self, acceptor: Option<TlsAcceptor>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
    }
}

/// When the first certificate in `cert` expires (seconds since the epoch), if it can be read.
pub fn certificate_expiry(cert: &Path) -> Option<i64> {
    let certs = load_certs(cert).ok()?;
    super::cert_expiry::not_after(certs.first()?.as_ref())
}

/// The acceptor for inbound STARTTLS.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
