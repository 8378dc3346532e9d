//! The PostgreSQL store: quarantine and tracking shared by several markgate instances, so
//! an analyst searches and releases across all of them and a message is released once,
//! whichever instance held it. Chosen by `store.backend: postgres`.
//!
//! The store traits are synchronous (the files backend is synchronous file I/O). This
//! backend runs its own small tokio runtime with the connection pool on it; each trait
//! call hands its query to that runtime and waits for the answer, at most `store.timeout`.
//! A call from a session therefore blocks one worker as an fsync of the files backend
//! does, and a database that does not answer costs a session `store.timeout`, then 451
//! 4.3.0 — never a pass without its record.

mod quarantine;
mod schema;
mod tracking;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;

use crate::config::{PgTls, StoreConfig};

pub use quarantine::PgQuarantine;
pub use schema::{LATEST as SCHEMA_VERSION, MIGRATIONS};
pub use tracking::PgTracking;

/// Why the PostgreSQL store could not do something; each says whose problem it is.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("store.url: {0}")]
    Url(String),
    #[error("store TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("PostgreSQL store unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL store: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("PostgreSQL store did not answer within {0:?} (store.timeout)")]
    Timeout(Duration),
    #[error("PostgreSQL store: {0}")]
    Schema(String),
    #[error("PostgreSQL store: a stored record does not read: {0}")]
    Json(#[from] serde_json::Error),
    #[error("PostgreSQL store: {0}")]
    Runtime(String),
}

impl From<PgError> for io::Error {
    fn from(e: PgError) -> io::Error {
        let kind = match &e {
            PgError::Timeout(_) => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The tokio runtime the pool lives on; shut down without waiting when the store goes
/// (dropping a runtime inside another one's worker would panic).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A connection pool and the runtime it runs on; shared by the quarantine and the tracking
/// halves of the store.
pub struct Pg {
    runtime: Runtime,
    handle: tokio::runtime::Handle,
    pub(crate) pool: Pool,
    pub(crate) timeout: Duration,
    /// This instance's name in claims (host and process), so a claim names who holds it.
    pub(crate) instance: String,
    /// `markgate_store_errors_total`, once the gateway attaches it.
    pub(crate) errors: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
}

impl Pg {
    /// A pool for `config` (nothing is connected until first use).
    pub fn open(config: &StoreConfig, hostname: &str) -> Result<Arc<Pg>, PgError> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| PgError::Url("not set".into()))?;
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
        pg.ssl_mode(match config.tls {
            PgTls::Required => SslMode::Require,
            PgTls::Prefer => SslMode::Prefer,
            PgTls::Disable => SslMode::Disable,
        });
        pg.connect_timeout(config.timeout);
        pg.application_name("markgate");
        // NOTICEs (a partition that already exists) are not the operator's business.
        pg.options("-c client_min_messages=warning");
        let tls = tls_connector(config)?;
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("markgate-store")
            .enable_all()
            .build()
            .map_err(|e| PgError::Runtime(e.to_string()))?;
        let handle = runtime.handle().clone();
        let pool = {
            let _entered = handle.enter();
            Pool::builder(manager)
                .max_size(config.pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(config.timeout))
                .create_timeout(Some(config.timeout))
                .recycle_timeout(Some(config.timeout))
                .build()
                .map_err(|e| PgError::Runtime(e.to_string()))?
        };
        Ok(Arc::new(Pg {
            runtime: Runtime(Some(runtime)),
            handle,
            pool,
            timeout: config.timeout,
            instance: format!("{hostname}:{}", std::process::id()),
            errors: std::sync::OnceLock::new(),
        }))
    }

    /// Runs `work` with a pooled connection on the store's runtime and waits for it, at
    /// most `store.timeout`.
    pub(crate) fn run<T, F, Fut>(&self, work: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send,
    {
        let _ = &self.runtime;
        let pool = self.pool.clone();
        let timeout = self.timeout;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let result = tokio::time::timeout(timeout, async move {
                let client = pool.get().await?;
                work(client).await
            })
            .await
            .unwrap_or(Err(PgError::Timeout(timeout)));
            let _ = tx.send(result);
        });
        // The task answers within the timeout; a little more covers a busy runtime.
        let result = match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(result) => result,
            Err(_) => Err(PgError::Timeout(timeout)),
        };
        if result.is_err() {
            if let Some(counter) = self.errors.get() {
                counter.inc();
            }
        }
        result
    }

    /// Whether the database answers and takes writes: for `/readyz`.
    pub fn ping(&self) -> Result<(), PgError> {
        self.run(|client| async move {
            let ro: String = client
                .query_one("SELECT current_setting('transaction_read_only')", &[])
                .await?
                .get(0);
            if ro == "on" {
                return Err(PgError::Schema(
                    "the database is read-only (a standby?): nothing can be tracked".into(),
                ));
            }
            Ok(())
        })
    }

    /// Runs `task` on the store's runtime, for as long as the store lives.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(task);
    }

    /// Pool use: (connections open, connections idle, callers waiting).
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.pool.status();
        (s.size, s.available, s.waiting)
    }
}

/// rustls with the `ring` provider, roots from `store.ca_file` or the system.
fn tls_connector(
    config: &StoreConfig,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    use crate::tls::{file_error, load_certs, provider};
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(crate::tls::TlsError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

/// Parameters for `tokio_postgres` queries, as the slice it takes.
pub(crate) type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
