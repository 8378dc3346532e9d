//! Where console connections come from: plain TCP behind the proxy, or TLS terminated by
//! markgate itself (`review.tls`), with the client certificate's subject when `client_ca`
//! asks for one. Either way connections are bounded in number and closed when idle
//! (`limits.http_max_connections`, `limits.http_idle_timeout`, as the metrics listener),
//! so clients that connect and stop cannot use up the descriptors the mail listeners
//! share; handshakes run off the accept loop, each under a deadline, so a client that
//! connects and says nothing cannot hold the listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use x509_cert::der::Decode;

use crate::config::ReviewTls;
use crate::idle::{Backoff, Idle};
use crate::limiter::Limiter;
use crate::tls::{file_error, load_certs, provider, TlsError};

/// How many connections at once, and how long one may be idle.
#[derive(Clone, Copy)]
pub struct Bounds {
    pub max_connections: usize,
    pub idle: Duration,
}

/// Who is on the other end of a console connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client certificate's subject (RFC 4514), when `client_ca` is set.
    pub subject: Option<String>,
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// Plain TCP connections (behind the proxy), bounded.
pub struct PlainListener {
    listener: TcpListener,
    slots: Arc<Limiter>,
    idle: Duration,
    backoff: Backoff,
}

impl PlainListener {
    pub fn new(listener: TcpListener, bounds: Bounds) -> PlainListener {
        PlainListener {
            listener,
            // One client (the proxy) may hold them all.
            slots: Limiter::new(bounds.max_connections, bounds.max_connections),
            idle: bounds.idle,
            backoff: Backoff::default(),
        }
    }
}

impl Listener for PlainListener {
    type Io = Idle<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    self.backoff.succeeded();
                    // Past the bound the connection is closed at once.
                    if let Ok(slot) = self.slots.acquire(addr.ip()) {
                        let peer = Peer {
                            addr,
                            subject: None,
                        };
                        return (Idle::new(stream, self.idle, Some(slot)), peer);
                    }
                }
                Err(err) => self.backoff.failed("review console", &err).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.listener.local_addr()?,
            subject: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// The longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; past it new connections wait in the kernel's backlog.
const HANDSHAKES_MAX: usize = 64;

/// Accepted, handshaken TLS connections.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<Idle<TcpStream>>, Peer)>,
    local: SocketAddr,
}

/// The acceptor for `review.tls`: the console's certificate, and the client CA when set
/// (a client certificate is then required).
pub fn acceptor(tls: &ReviewTls) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| file_error(&tls.key, e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| file_error(ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        bounds: Bounds,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES_MAX);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let connections = Limiter::new(bounds.max_connections, bounds.max_connections);
        tokio::spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(accepted) => {
                        backoff.succeeded();
                        accepted
                    }
                    Err(err) => {
                        backoff.failed("review console", &err).await;
                        continue;
                    }
                };
                // Past the bound the connection is closed at once; the idle limit covers
                // the handshake too (a client that sends no ClientHello is closed then).
                let Ok(connection) = connections.acquire(addr.ip()) else {
                    continue;
                };
                let stream = Idle::new(stream, bounds.idle, Some(connection));
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let subject = subject_of(&tls);
                            let _ = tx.send((tls, Peer { addr, subject })).await;
                        }
                        Ok(Err(err)) => {
                            tracing::info!(client = %addr, error = %err, "review console TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::info!(client = %addr, "review console TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

/// The subject of the certificate the client presented (verified by the handshake).
fn subject_of(tls: &TlsStream<Idle<TcpStream>>) -> Option<String> {
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

impl Listener for TlsListener {
    type Io = TlsStream<Idle<TcpStream>>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (the runtime is shutting down): wait to be dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            subject: None,
        })
    }
}
