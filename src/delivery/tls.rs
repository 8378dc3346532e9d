//! TLS to the next hop: verified (`required`) or opportunistic.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tokio_rustls::TlsConnector;

use crate::config::TlsMode;
use crate::tls::{file_error, load_certs, provider, TlsError};

/// The connector for the next hop. `required` verifies the certificate (against `ca_file`
/// or the system roots); `opportunistic` encrypts without verifying, as Postfix's `may`
/// does, because refusing an unverifiable peer would only push the mail to plaintext.
pub fn connector(mode: TlsMode, ca_file: Option<&Path>) -> Result<Option<TlsConnector>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let config = match mode {
        TlsMode::None => return Ok(None),
        TlsMode::Opportunistic => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
            .with_no_client_auth(),
        TlsMode::Required => {
            let mut roots = RootCertStore::empty();
            match ca_file {
                Some(path) => {
                    for cert in load_certs(path)? {
                        roots.add(cert).map_err(|e| file_error(path, e))?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    for cert in native.certs {
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
