//! Where markgate keeps what outlives a transaction: held messages (the quarantine) and
//! the tracking log. Everything else sees only the traits here. [`files`] (the default)
//! keeps them as files, JSONL and a SQLite index under the state dir, for one machine;
//! [`postgres`] keeps them in PostgreSQL, shared by several instances. Nothing outside
//! `store` knows a path or a table. Either way the state dir holds the spool of large
//! messages being received.

pub mod address_match;
pub mod files;
pub mod held;
pub mod postgres;
pub mod record;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub use address_match::AddressMatch;
pub use files::index::{IndexError as SearchError, Query};
pub use held::{Done, HeldFilter, Meta, Release};
pub use record::TrackingRecord;

use crate::config::{Config, StoreBackend};
use crate::message::Spool;

/// Held messages. Every write is durable before it returns (the client is told 250 on
/// the strength of it).
pub trait QuarantineStore: Send + Sync {
    /// Stores the message and its metadata (the digest is filled in); on error nothing is
    /// left behind.
    fn put(&self, message: &Spool, meta: Meta) -> io::Result<()>;
    /// `NotFound` (or `InvalidInput` for an id that cannot be one) when not held.
    fn get(&self, id: &str) -> io::Result<Meta>;
    /// The held message, byte for byte.
    fn message(&self, id: &str) -> io::Result<Vec<u8>>;
    /// Held messages matching `filter`, oldest first.
    fn list(&self, filter: &HeldFilter) -> io::Result<Vec<Meta>>;
    /// Takes a held message for release or removal, exactly once: a second claim fails
    /// with `WouldBlock` until the first is finished or dropped.
    fn claim(&self, id: &str) -> io::Result<Box<dyn Claim + '_>>;
    /// (messages, bytes) held, cheaply (a metrics scrape reads it).
    fn usage(&self) -> (i64, i64);
    /// Clears what a crash can leave; how many pieces went.
    fn recover(&self) -> io::Result<usize>;
}

/// A held message taken by [`QuarantineStore::claim`]. Dropped unfinished, it is held
/// again as it was.
pub trait Claim {
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    fn message(&self) -> io::Result<Vec<u8>>;
    /// Writes the claim's metadata durably (e.g. that sending has begun).
    fn save(&self) -> io::Result<()>;
    /// Done with it (sent, deleted or purged): it leaves the quarantine; `done` is the
    /// audit of who did it and why (a shared store keeps it with the state change).
    fn finish(self: Box<Self>, done: &Done) -> io::Result<()>;
}

/// The tracking log.
pub trait TrackingStore: Send + Sync {
    /// Appends one record; returns once it is written (the record is the log: an index
    /// that could not be updated is repaired by `reindex`, not an error here).
    fn append(&self, record: &TrackingRecord, now: SystemTime) -> io::Result<()>;
    /// `append` for a session: a shared store's commit is awaited (see [`Appending`]) rather
    /// than waited for on the session's thread. The files store writes it here and now.
    fn append_async(&self, record: &TrackingRecord, now: SystemTime) -> Appending {
        Appending::done(self.append(record, now))
    }
    /// `append_async` for a record no reply waits on (a delivered message's outcome): a
    /// shared store may hold it a few milliseconds to ride with the next commit a session
    /// does wait on, rather than pay a commit of its own.
    fn append_later(&self, record: &TrackingRecord, now: SystemTime) -> Appending {
        self.append_async(record, now)
    }
    /// Whether a record written now would have room (checked before a hand-off).
    fn preflight(&self) -> io::Result<()>;
    /// Records matching `q`, newest first (oldest first with `q.after`).
    fn search(&self, q: &Query) -> Result<Vec<TrackingRecord>, SearchError>;
    /// Like `search`, with each record's position, for following new records.
    fn search_rows(&self, q: &Query) -> Result<Vec<(i64, TrackingRecord)>, SearchError>;
    /// The newest position (0 with none).
    fn last_row(&self) -> Result<i64, SearchError>;
    /// Deletes records past the retention; how many days' worth went.
    fn purge_older_than(&self, now: SystemTime) -> io::Result<usize>;
    /// Rebuilds the search index from the records; how many were indexed.
    fn reindex(&self) -> Result<usize, SearchError>;
    /// Every record, oldest first, an intent left out once its outcome is recorded.
    fn records(&self) -> io::Result<Vec<TrackingRecord>>;
    /// Replaces a whole address by a keyed hash in records before `before_day` (outside the
    /// legal holds; `today`'s records are left until tomorrow); what was touched.
    fn redact(
        &self,
        address: &str,
        before_day: &str,
        today: &str,
        holds: &[AddressMatch],
    ) -> io::Result<Redacted>;
}

/// A record on its way into the tracking log: [`Appending::wait`] returns once it is
/// written (or could not be). A session awaits it, so while a database commits the record
/// the session's thread serves other sessions, whose records then join the same commit;
/// blocking the thread instead (`block_in_place`) handed the thread's other sessions to
/// another one twice a message.
pub struct Appending(AppendingState);

enum AppendingState {
    Done(io::Result<()>),
    Waiting {
        answer: tokio::sync::oneshot::Receiver<Result<(), String>>,
        within: std::time::Duration,
    },
}

impl Appending {
    /// Already written (or failed).
    pub fn done(result: io::Result<()>) -> Appending {
        Appending(AppendingState::Done(result))
    }

    /// Written when `answer` says so; a store that says nothing `within` that long has
    /// failed (a timeout, so the message fails closed).
    pub fn waiting(
        answer: tokio::sync::oneshot::Receiver<Result<(), String>>,
        within: std::time::Duration,
    ) -> Appending {
        Appending(AppendingState::Waiting { answer, within })
    }

    /// The result if it is already known (the files store's), or this to wait on.
    pub fn finished(self) -> Result<io::Result<()>, Appending> {
        match self.0 {
            AppendingState::Done(result) => Ok(result),
            state => Err(Appending(state)),
        }
    }

    pub async fn wait(self) -> io::Result<()> {
        match self.0 {
            AppendingState::Done(result) => result,
            AppendingState::Waiting { answer, within } => {
                match tokio::time::timeout(within, answer).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(io::Error::other(e)),
                    Ok(Err(_)) => Err(io::Error::other(
                        "tracking store: the committer stopped before answering",
                    )),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("tracking store: no answer within {within:?}"),
                    )),
                }
            }
        }
    }
}

/// What an export wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Exported {
    pub records: usize,
    pub held: usize,
}

/// What a redaction changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Redacted {
    pub records: usize,
    pub files: usize,
    /// Records naming the address kept as they are: under a legal hold.
    pub held_back: usize,
    /// Records naming the address not rewritten: today's, still being appended to.
    pub too_recent: usize,
    pub token: String,
}

/// The store a process uses, as the config names it.
#[derive(Clone)]
pub struct Store {
    pub quarantine: Arc<dyn QuarantineStore>,
    pub tracking: Arc<dyn TrackingStore>,
    files: Arc<files::Files>,
    /// The database, when the store is PostgreSQL.
    pg: Option<Arc<postgres::Pg>>,
}

/// How a command means to use the store (the CLI checks it can before it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Store {
    /// Opens the store the config names; creates nothing until something is written (a
    /// database is connected on first use).
    pub fn open(config: &Config) -> Result<Store, postgres::PgError> {
        let files = Arc::new(files::Files::new(
            &config.state_dir,
            config.tracking.retention_days,
        ));
        match config.store.backend {
            StoreBackend::Files => Ok(Store {
                quarantine: files.quarantine.clone(),
                tracking: files.tracking.clone(),
                files,
                pg: None,
            }),
            StoreBackend::Postgres => {
                let pg = postgres::Pg::open(&config.store, &config.hostname)?;
                Ok(Store {
                    quarantine: Arc::new(postgres::PgQuarantine::new(
                        pg.clone(),
                        config.store.claim_lease,
                    )),
                    tracking: Arc::new(postgres::PgTracking::new(
                        pg.clone(),
                        config.tracking.retention_days,
                    )),
                    files,
                    pg: Some(pg),
                })
            }
        }
    }

    /// Opens the store and, for PostgreSQL, checks that the database answers and has this
    /// binary's schema: what `serve`, `milter` and every command that reads or writes the
    /// store do first.
    pub fn connect(config: &Config) -> Result<Store, postgres::PgError> {
        let store = Store::open(config)?;
        if let Some(pg) = &store.pg {
            pg.check_schema()?;
        }
        Ok(store)
    }

    /// Copies a files store (a state dir's tracking history and held messages) into this
    /// PostgreSQL store; idempotent, so an interrupted import is simply run again.
    /// (records new, held messages new).
    pub fn import_files(
        &self,
        state_dir: &Path,
        retention_days: u64,
    ) -> anyhow::Result<(usize, usize)> {
        use anyhow::Context;
        let Some(pg) = &self.pg else {
            anyhow::bail!("store.backend is files: import copies a state dir into PostgreSQL");
        };
        files::Files::check_access(state_dir, Access::Read)?;
        let from = files::Files::new(state_dir, retention_days);
        let records = from
            .tracking
            .records()
            .with_context(|| format!("reading the tracking log in {}", state_dir.display()))?;
        let tracking = postgres::PgTracking::new(pg.clone(), retention_days);
        // Partitions for the days being copied are made as the rows arrive (the default
        // partition takes any day housekeeping has not made).
        let added = tracking.import(&records)?;
        let quarantine =
            postgres::PgQuarantine::new(pg.clone(), std::time::Duration::from_secs(600));
        let mut held = 0;
        for meta in from.quarantine.list()? {
            let body = from.quarantine.message(&meta.id)?;
            held += quarantine.import(&meta, body)? as usize;
        }
        Ok((added, held))
    }

    /// The connection pool's (open, idle, waiting), for PostgreSQL.
    pub fn pool_status(&self) -> Option<(usize, usize, usize)> {
        self.pg.as_ref().map(|pg| pg.pool_status())
    }

    /// Counts the shared store's failed operations in `counter` from now on.
    pub fn count_errors(&self, counter: prometheus_client::metrics::counter::Counter) {
        if let Some(pg) = &self.pg {
            let _ = pg.errors.set(counter);
        }
    }

    /// The database, when the store is PostgreSQL (`store migrate`, start-up's check).
    pub fn postgres(&self) -> Option<&postgres::Pg> {
        self.pg.as_deref()
    }

    /// Where a message larger than the spool threshold is written while it is received.
    pub fn spool_dir(&self) -> &Path {
        self.files.spool_dir()
    }

    /// Start-up's check (shared with `check`): the state is markgate's own and private.
    /// `create` makes it (serve); without it (check) a missing one only needs a parent.
    pub fn prepare(config: &Config, create: bool) -> anyhow::Result<()> {
        files::Files::prepare(&config.state_dir, create)
    }

    /// Whether a message could be tracked now: for `/readyz`.
    pub fn ready(&self) -> bool {
        self.files.ready() && self.pg.as_ref().is_none_or(|pg| pg.ping().is_ok())
    }

    /// Refuses a command that would leave files the service cannot use (run as another
    /// user) or that cannot read what it needs.
    pub fn check_access(config: &Config, access: Access) -> anyhow::Result<()> {
        files::Files::check_access(&config.state_dir, access)
    }

    /// Exports every record and held message naming `address` (since `since`) to `out`.
    pub fn export(&self, address: &str, since: Option<&str>, out: &Path) -> io::Result<Exported> {
        let Some(pg) = &self.pg else {
            return self.files.export(address, since, out);
        };
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(out)?;
        let records = postgres::PgTracking::new(pg.clone(), 0).naming(address, since)?;
        let wanted = AddressMatch::Exact(address.trim().to_lowercase());
        let mut held = Vec::new();
        for meta in self.quarantine.list(&HeldFilter::default())? {
            if since.is_some_and(|s| meta.time.as_str() < s) {
                continue;
            }
            if wanted.matches(&meta.sender) || meta.recipients.iter().any(|r| wanted.matches(r)) {
                let bytes = self.quarantine.message(&meta.id)?;
                held.push((meta, bytes));
            }
        }
        files::privacy::write_export(out, &records, held)
    }

    /// Describes where the store is, for messages to an operator.
    pub fn describe(&self) -> String {
        match &self.pg {
            Some(_) => "the PostgreSQL store (store.url)".to_string(),
            None => self.files.describe(),
        }
    }
}

#[cfg(test)]
mod appending_tests {
    use super::Appending;
    use std::io;
    use std::time::Duration;

    #[tokio::test]
    async fn a_store_that_never_answers_fails_the_record_in_time() {
        let (_keep, answer) = tokio::sync::oneshot::channel();
        let err = Appending::waiting(answer, Duration::from_millis(20))
            .wait()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_committer_gone_before_answering_is_an_error_not_a_write() {
        let (gone, answer) = tokio::sync::oneshot::channel::<Result<(), String>>();
        drop(gone);
        let appending = Appending::waiting(answer, Duration::from_secs(5));
        assert!(appending.wait().await.is_err());
    }

    #[tokio::test]
    async fn the_answer_is_passed_on() {
        let (tx, answer) = tokio::sync::oneshot::channel();
        tx.send(Err("disk full".to_string())).unwrap();
        let err = Appending::waiting(answer, Duration::from_secs(5))
            .wait()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk full"));
    }
}
