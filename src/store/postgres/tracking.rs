//! The tracking log in PostgreSQL: one row per record, the typed record as `jsonb` with
//! the searched fields beside it, in daily partitions. A record is committed before the
//! reply it stands for; an outcome record removes its intent in the same transaction, so
//! a search never shows both.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Params, Pg, PgError};
use crate::store::files::index::{IndexError, Query};
use crate::store::record::TrackingRecord;
use crate::store::{AddressMatch, Appending, Redacted, TrackingStore};

pub struct PgTracking {
    pg: Arc<Pg>,
    retention_days: u64,
    /// The group committer's queue (started on first use).
    commits: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Waiting>>,
}

impl PgTracking {
    pub fn new(pg: Arc<Pg>, retention_days: u64) -> PgTracking {
        PgTracking {
            pg,
            retention_days,
            commits: std::sync::OnceLock::new(),
        }
    }

    fn commits(&self) -> &tokio::sync::mpsc::UnboundedSender<Waiting> {
        self.commits.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            self.pg.spawn(committer(self.pg.clone(), rx));
            tx
        })
    }

    /// Creates the daily partitions from yesterday to a week ahead and drops those past
    /// the retention, on one instance at a time (an advisory lock; the others skip).
    /// Returns how many days were dropped.
    pub fn upkeep(&self, now: SystemTime) -> Result<usize, PgError> {
        let days: Vec<(String, String)> = (-1i64..=7)
            .map(|d| {
                let at = shift(now, d);
                (crate::timefmt::date(at), crate::timefmt::date(shift(at, 1)))
            })
            .collect();
        let cutoff = crate::timefmt::date(
            now - Duration::from_secs(self.retention_days.saturating_mul(86_400)),
        );
        self.pg.run(move |client| async move {
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&super::schema::LOCK])
                .await?
                .get(0);
            if !locked {
                return Ok(0);
            }
            let result = async {
                for (day, next) in &days {
                    let name = format!("tracking_{}", day.replace('-', ""));
                    let sql = format!(
                        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF tracking \
                         FOR VALUES FROM ('{day}') TO ('{next}')"
                    );
                    if let Err(err) = client.batch_execute(&sql).await {
                        // Rows for that day already sit in the default partition: they
                        // are kept there; nothing is lost.
                        tracing::warn!(partition = %name, error = %err, "tracking partition not created");
                    }
                }
                let names: Vec<String> = client
                    .query(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                         WHERE i.inhparent = 'tracking'::regclass",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut dropped = 0;
                for name in names {
                    let Some(day) = partition_day(&name) else {
                        continue;
                    };
                    if day < cutoff {
                        client
                            .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                            .await?;
                        dropped += 1;
                    }
                }
                for table in ["tracking_default", "tracking_ids", "tracking_intent"] {
                    client
                        .execute(
                            &format!("DELETE FROM {table} WHERE time < ($1::text)::timestamptz"),
                            &[&cutoff],
                        )
                        .await?;
                }
                Ok(dropped)
            }
            .await;
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&super::schema::LOCK])
                .await;
            result
        })
    }

    fn rows(&self, q: &Query) -> Result<Vec<(i64, TrackingRecord)>, PgError> {
        let q = q.clone();
        self.pg.run(move |client| async move {
            // By Message-ID: the days it was tracked on first (an unpartitioned index), so
            // the search reads those days' partitions only, not a year's.
            let times = match &q.message_id {
                Some(id) => {
                    let (angled, bare) = message_ids(id);
                    let rows = client
                        .query(
                            "SELECT DISTINCT time FROM tracking_ids WHERE message_id IN ($1::text, $2::text)",
                            &[&angled, &bare],
                        )
                        .await?;
                    let times: Vec<SystemTime> = rows.iter().map(|r| r.get(0)).collect();
                    if times.is_empty() {
                        return Ok(Vec::new());
                    }
                    Some(times)
                }
                None => None,
            };
            let (sql, args) = search_sql(&q, times);
            let params: Params = args.iter().map(Arg::sql).collect();
            let rows = client.query(&sql, &params).await?;
            rows.iter()
                .map(|r| {
                    let id: i64 = r.get(0);
                    // Parsed straight from the row's JSON into the typed record.
                    let tokio_postgres::types::Json(record) = r.try_get(1)?;
                    Ok((id, record))
                })
                .collect()
        })
    }
}

/// A record as a row: the searched fields beside the record itself.
struct Row {
    record: TrackingRecord,
    value: JsonText,
    digest: String,
    recipients: Vec<String>,
    sender: String,
    level: String,
}

impl Row {
    fn of(record: &TrackingRecord) -> io::Result<Row> {
        use sha2::Digest;
        let text = serde_json::to_string(record)?;
        Ok(Row {
            digest: format!("{:x}", sha2::Sha256::digest(text.as_bytes())),
            value: JsonText(text),
            recipients: record
                .recipients
                .iter()
                .map(|x| x.address.to_lowercase())
                .collect(),
            sender: record.sender.to_lowercase(),
            level: record.level().to_string(),
            record: record.clone(),
        })
    }

    /// Inserts the rows in one transaction (each once: the same record again is a no-op),
    /// an intent in `tracking_intent`, and for an outcome removes its intent in the same
    /// statement; what became of each. `BEGIN` and the rows' statements are pipelined (all
    /// sent, then all answered), and `COMMIT` goes only once every row has answered: a
    /// batch cut short (an error, or `store.timeout`) then never commits, as its connection
    /// closes with the transaction open and the server rolls it back. (With `COMMIT` sent
    /// beside the rows, only the closed connection stopped a batch that timed out from
    /// committing after its callers were told it failed; the round trip this costs did not
    /// show in the benchmark.)
    async fn commit_all(
        rows: &[&Row],
        client: deadpool_postgres::Object,
    ) -> Result<Vec<Written>, PgError> {
        const COLUMNS: &str = "(time, queue_id, message_id, sender, recipients, action, rule, level, outcome, record, digest) \
             VALUES (($1::text)::timestamptz, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        // A record with no queue id (nothing of it to wait for).
        const PLAIN: &str = "WITH ids AS (INSERT INTO tracking_ids (message_id, time) \
             SELECT $3, ($1::text)::timestamptz WHERE $3::text IS NOT NULL) \
             INSERT INTO tracking ";
        // An intent: in the small table, once per queue id.
        const INTENT: &str = "WITH ids AS (INSERT INTO tracking_ids (message_id, time) \
             SELECT $3, ($1::text)::timestamptz WHERE $3::text IS NOT NULL) \
             INSERT INTO tracking_intent ";
        // An outcome takes its intent's place (whose Message-ID is already in tracking_ids).
        const OUTCOME: &str =
            "WITH intent AS (DELETE FROM tracking_intent WHERE queue_id = $2 RETURNING 1), \
             ids AS (INSERT INTO tracking_ids (message_id, time) \
             SELECT $3, ($1::text)::timestamptz WHERE $3::text IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM intent)) \
             INSERT INTO tracking ";
        let client = Discard(Some(client));
        let tx = client
            .0
            .as_deref()
            .ok_or_else(|| PgError::Runtime("no connection".into()))?;
        // No conflict target: "any unique index". Naming (time, digest) made PostgreSQL
        // look up, per row, which of the day partition's seven indexes descends from it
        // (a catalog scan for each): a tenth of the database's CPU per message
        // (measured). The other unique index, the primary key, takes its ids from the
        // sequence; a row skipped on it is caught below, not taken as written.
        const ONCE: &str = "ON CONFLICT DO NOTHING";
        let plain = tx
            .prepare_cached(&format!("{PLAIN}{COLUMNS} {ONCE}"))
            .await?;
        let intent = tx
            .prepare_cached(&format!(
                "{INTENT}{COLUMNS} ON CONFLICT (queue_id) DO NOTHING"
            ))
            .await?;
        let outcome = tx
            .prepare_cached(&format!("{OUTCOME}{COLUMNS} {ONCE}"))
            .await?;
        let c: &tokio_postgres::Client = tx;
        let inserts = futures_util::future::try_join_all(rows.iter().map(|row| {
            let r = &row.record;
            let statement = match (r.queue_id.is_some(), r.is_intent()) {
                (false, _) => &plain,
                (true, true) => &intent,
                (true, false) => &outcome,
            };
            async move {
                c.execute(
                    statement,
                    &[
                        &r.time,
                        &r.queue_id,
                        &r.message_id,
                        &row.sender,
                        &row.recipients,
                        &r.action,
                        &r.rule,
                        &row.level,
                        &r.outcome,
                        &row.value,
                        &row.digest,
                    ],
                )
                .await
            }
        }));
        let (_, counts) = futures_util::future::try_join(c.batch_execute("BEGIN"), inserts).await?;
        let mut written = Vec::with_capacity(rows.len());
        for (row, n) in rows.iter().zip(counts) {
            written.push(match n {
                1 => Written::New,
                _ if row.record.is_intent() && row.record.queue_id.is_some() => {
                    // An intent already held under this queue id: this one again (an
                    // import run twice), or another message's (two instances that made
                    // the same id), which must not pass as written.
                    let held: Option<String> = c
                        .query_opt(
                            "SELECT digest FROM tracking_intent WHERE queue_id = $1",
                            &[&row.record.queue_id],
                        )
                        .await?
                        .map(|r| r.get(0));
                    if held.as_deref() == Some(row.digest.as_str()) {
                        Written::Known
                    } else {
                        Written::Clash
                    }
                }
                _ => {
                    // Skipped by `ON CONFLICT DO NOTHING`: the same record already there
                    // (an import run twice), or, were the id sequence ever set back, a
                    // clash on (time, id) that must not pass as written.
                    let same = c
                        .query_opt(
                            "SELECT 1 FROM tracking WHERE time = ($1::text)::timestamptz AND digest = $2",
                            &[&row.record.time, &row.digest],
                        )
                        .await?;
                    if same.is_some() {
                        Written::Known
                    } else {
                        Written::Taken
                    }
                }
            });
        }
        c.batch_execute("COMMIT").await?;
        client.keep();
        Ok(written)
    }
}

/// What became of one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    New,
    /// The same record was already there.
    Known,
    /// Another intent holds its queue id: this one was not written.
    Clash,
    /// Another history row holds its key: this one was not written.
    Taken,
}

/// Why a clashing intent was refused.
const CLASH: &str = "PostgreSQL store: another message's intent record holds this queue id";

/// Why a history row whose key was taken was refused.
const TAKEN: &str = "PostgreSQL store: another record holds this record's key in tracking (was tracking_id_seq set back?)";

impl Written {
    fn answer(self) -> Result<(), String> {
        match self {
            Written::New | Written::Known => Ok(()),
            Written::Clash => Err(CLASH.into()),
            Written::Taken => Err(TAKEN.into()),
        }
    }
}

/// A pooled connection that leaves the pool (and closes, so the server rolls back) unless
/// its batch finished: one cut short by an error or by `store.timeout` may have left a
/// transaction open on it.
struct Discard(Option<deadpool_postgres::Object>);

impl Discard {
    /// The batch finished: back to the pool.
    fn keep(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Discard {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

/// A record's JSON text, bound as `json`/`jsonb` as it is: serialized once from the typed
/// record. (Binding a `serde_json::Value` meant parsing the text into a tree only for the
/// driver to serialize it again: a tenth of markgate's CPU per message with this store.)
#[derive(Debug)]
struct JsonText(String);

impl tokio_postgres::types::ToSql for JsonText {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == tokio_postgres::types::Type::JSONB {
            // jsonb's binary format: a version byte, then the text.
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(
            *ty,
            tokio_postgres::types::Type::JSON | tokio_postgres::types::Type::JSONB
        )
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A record waiting for the next group commit, and where to say how it went.
struct Waiting {
    row: Row,
    answer: Answer,
    /// No reply waits on it: it may wait for a commit that one does.
    lazy: bool,
}

/// Where the committer says how a record went: a thread waiting (`append`) or a session's
/// task awaiting (`append_async`).
enum Answer {
    Blocking(std::sync::mpsc::SyncSender<Result<(), String>>),
    Async(tokio::sync::oneshot::Sender<Result<(), String>>),
}

impl Answer {
    fn send(self, result: Result<(), String>) {
        // A caller that gave up (timed out) is not waiting any more: nothing to tell.
        let _ = match self {
            Answer::Blocking(tx) => tx.send(result).map_err(drop),
            Answer::Async(tx) => tx.send(result).map_err(drop),
        };
    }
}

/// Group commit: concurrent sessions' records go to the database in one transaction, so
/// a busy gateway pays one WAL flush for many messages; each caller is answered only
/// after the commit that holds its record (the record is durable before the reply).
/// A record no reply waits on (a delivered message's outcome) waits up to [`LAZY_WITHIN`]
/// for one that a reply does wait on, and goes in that commit: a fifth of the batches
/// were outcomes alone, each a commit (a WAL flush, two round trips) that no session
/// needed (measured). Runs on the store's runtime for as long as the store lives.
async fn committer(pg: Arc<Pg>, mut queue: tokio::sync::mpsc::UnboundedReceiver<Waiting>) {
    // One batch at a time: with four in flight (each on its own connection) the batches
    // were smaller, the database's CPU per message higher and the rate lower (measured).
    let mut held: Vec<Waiting> = Vec::new();
    let mut held_until = tokio::time::Instant::now();
    loop {
        let next = if held.is_empty() {
            queue.recv().await
        } else {
            match tokio::time::timeout_at(held_until, queue.recv()).await {
                Ok(next) => next,
                // Nothing a reply waits on came in time: the held records go alone.
                Err(_) => {
                    commit(&pg, std::mem::take(&mut held)).await;
                    continue;
                }
            }
        };
        let Some(first) = next else {
            // The store is going: what is held is committed, not dropped.
            if !held.is_empty() {
                commit(&pg, held).await;
            }
            return;
        };
        if held.is_empty() {
            held_until = tokio::time::Instant::now() + LAZY_WITHIN;
        }
        let mut batch = std::mem::take(&mut held);
        batch.push(first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if batch.len() < BATCH && batch.iter().all(|w| w.lazy) {
            held = batch;
        } else {
            commit(&pg, batch).await;
        }
    }
}

/// Records in one transaction at most.
const BATCH: usize = 256;

/// How long a record no reply waits on may wait for a commit that one does.
const LAZY_WITHIN: Duration = Duration::from_millis(5);

/// Commits one batch and tells each of its callers how it went.
async fn commit(pg: &Pg, batch: Vec<Waiting>) {
    let rows: Vec<&Row> = batch.iter().map(|w| &w.row).collect();
    let result = tokio::time::timeout(pg.timeout, async {
        Row::commit_all(&rows, pg.pool.get().await?).await
    })
    .await
    .unwrap_or(Err(PgError::Timeout(pg.timeout)));
    // An error counts once for its batch; a clash once for its record.
    let (answers, failed): (Vec<Result<(), String>>, u64) = match result {
        Ok(written) => {
            let answers: Vec<_> = written.into_iter().map(Written::answer).collect();
            let clashes = answers.iter().filter(|a| a.is_err()).count() as u64;
            (answers, clashes)
        }
        Err(err) => (vec![Err(err.to_string()); batch.len()], 1),
    };
    if let Some(counter) = pg.errors.get() {
        counter.inc_by(failed);
    }
    for (waiting, answer) in batch.into_iter().zip(answers) {
        waiting.answer.send(answer);
    }
}

impl PgTracking {
    /// Hands `record` to the group committer, which answers `answer` after its commit.
    fn queue(&self, record: &TrackingRecord, answer: Answer, lazy: bool) -> io::Result<()> {
        let row = Row::of(record)?;
        self.commits()
            .send(Waiting { row, answer, lazy })
            .map_err(|_| io::Error::other("PostgreSQL store: the committer has stopped"))
    }

    /// Queues `record` for a session to await; `lazy`: no reply waits on it.
    fn queue_async(&self, record: &TrackingRecord, lazy: bool) -> Appending {
        let (done, answer) = tokio::sync::oneshot::channel();
        match self.queue(record, Answer::Async(done), lazy) {
            Ok(()) => Appending::waiting(answer, self.answer_within()),
            Err(err) => Appending::done(Err(err)),
        }
    }

    /// How long a caller waits for the committer: it answers within store.timeout of taking
    /// the batch, and a batch queued behind a slow one may wait for that one too.
    fn answer_within(&self) -> Duration {
        self.pg.timeout * 2 + Duration::from_secs(1)
    }

    /// Copies records in (a files store being moved here), a thousand to a transaction;
    /// a record already here is skipped, so an interrupted import is run again. How many
    /// were new.
    pub fn import(&self, records: &[TrackingRecord]) -> io::Result<usize> {
        let mut added = 0;
        for chunk in records.chunks(1000) {
            let rows = chunk.iter().map(Row::of).collect::<io::Result<Vec<_>>>()?;
            added += self
                .pg
                .run(move |client| async move {
                    let rows: Vec<&Row> = rows.iter().collect();
                    Row::commit_all(&rows, client).await
                })
                .map_err(io::Error::from)?
                .into_iter()
                .map(|w| {
                    w.answer()
                        .map(|()| usize::from(w == Written::New))
                        .map_err(io::Error::other)
                })
                .sum::<io::Result<usize>>()?;
        }
        Ok(added)
    }
}

/// `tracking_20261202` → `2026-12-02`.
fn partition_day(name: &str) -> Option<String> {
    let d = name.strip_prefix("tracking_")?;
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]))
}

fn shift(t: SystemTime, days: i64) -> SystemTime {
    let d = Duration::from_secs(days.unsigned_abs() * 86_400);
    if days < 0 {
        t - d
    } else {
        t + d
    }
}

/// An address condition on a text column, or on any element of a text[] column (an exact
/// address there uses the GIN index), with its one argument as parameter `$n`.
fn address_sql(m: &AddressMatch, column: &str, array: bool, n: usize) -> (String, String) {
    let p = format!("${n}::text");
    let (test, arg) = match m {
        AddressMatch::Exact(e) if array => return (format!("{column} @> ARRAY[{p}]"), e.clone()),
        AddressMatch::Exact(e) => (format!("= {p}"), e.clone()),
        AddressMatch::Domain(d) => (
            format!("LIKE {p} ESCAPE '\\'"),
            crate::store::address_match::domain_pattern(d),
        ),
        AddressMatch::Contains(s) => (
            format!("LIKE '%' || {p} || '%'"),
            s.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_"),
        ),
    };
    if array {
        (
            format!("EXISTS (SELECT 1 FROM unnest({column}) a WHERE a {test})"),
            arg,
        )
    } else {
        (format!("{column} {test}"), arg)
    }
}

/// The query for `q`: the same filters as the files store's index, newest first (oldest
/// first by row with `after`).
/// A query parameter: text, or times bound as `timestamptz` values (so the planner prunes
/// the daily partitions while planning, rather than planning all of them).
enum Arg {
    Text(String),
    Time(SystemTime),
    Times(Vec<SystemTime>),
}

impl Arg {
    fn sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Arg::Text(t) => t,
            Arg::Time(t) => t,
            Arg::Times(t) => t,
        }
    }
}

/// The query for `q`: the same filters as the files store's index, newest first (oldest
/// first by row with `after`). `times`: the times a Message-ID was tracked at (from
/// `tracking_ids`), which confine the search to their days' partitions.
fn search_sql(q: &Query, times: Option<Vec<SystemTime>>) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    if let Some(r) = &q.recipient {
        let (c, a) = address_sql(r, "recipients", true, args.len() + 1);
        args.push(Arg::Text(a));
        conds.push(c);
    }
    if let Some(s) = &q.sender {
        let (c, a) = address_sql(s, "sender", false, args.len() + 1);
        args.push(Arg::Text(a));
        conds.push(c);
    }
    if let Some(id) = &q.message_id {
        let (angled, bare) = message_ids(id);
        args.push(Arg::Text(angled));
        args.push(Arg::Text(bare));
        conds.push(format!(
            "message_id IN (${}::text, ${}::text)",
            args.len() - 1,
            args.len()
        ));
    }
    if let Some(times) = times {
        args.push(Arg::Times(times));
        conds.push(format!("time = ANY(${})", args.len()));
    }
    for (col, val) in [
        ("action", &q.action),
        ("rule", &q.rule),
        ("level", &q.level.as_ref().map(|s| s.to_uppercase())),
    ] {
        if let Some(v) = val {
            args.push(Arg::Text(v.clone()));
            conds.push(format!("{col} = ${}::text", args.len()));
        }
    }
    // A time that does not parse matches nothing, as a text comparison would not.
    let never = SystemTime::UNIX_EPOCH;
    if let Some(since) = &q.since {
        args.push(Arg::Time(
            crate::timefmt::parse(since)
                .unwrap_or(SystemTime::now() + Duration::from_secs(1 << 40)),
        ));
        conds.push(format!("time >= ${}", args.len()));
    }
    if let Some(until) = &q.until {
        args.push(Arg::Time(crate::timefmt::parse(until).unwrap_or(never)));
        conds.push(format!("time < ${}", args.len()));
    }
    if let Some(after) = q.after {
        conds.push(format!("id > {after}"));
    }
    let mut sql = String::from("SELECT id, record FROM tracking_all");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    if q.after.is_some() {
        sql.push_str(" ORDER BY id");
    } else {
        sql.push_str(" ORDER BY time DESC, id DESC");
    }
    if let Some(limit) = q.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    (sql, args)
}

/// A Message-ID as stored (normally `<…>`) and bare: people paste either form.
fn message_ids(id: &str) -> (String, String) {
    let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
    (format!("<{bare}>"), bare.to_string())
}

fn store_error(e: PgError) -> IndexError {
    IndexError::Store(e.into())
}

impl TrackingStore for PgTracking {
    fn append(&self, record: &TrackingRecord, _now: SystemTime) -> io::Result<()> {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.queue(record, Answer::Blocking(done), false)?;
        match answer.recv_timeout(self.answer_within()) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(PgError::Timeout(self.pg.timeout).into()),
        }
    }

    fn append_async(&self, record: &TrackingRecord, _now: SystemTime) -> Appending {
        self.queue_async(record, false)
    }

    fn append_later(&self, record: &TrackingRecord, _now: SystemTime) -> Appending {
        self.queue_async(record, true)
    }

    fn preflight(&self) -> io::Result<()> {
        // Nothing to check per message: the intent record is written (and committed)
        // before any hand-off, and fails the message closed if the database cannot take
        // it. Readiness asks the database itself (`Pg::ping`).
        Ok(())
    }

    fn search(&self, q: &Query) -> Result<Vec<TrackingRecord>, IndexError> {
        Ok(self
            .rows(q)
            .map_err(store_error)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    fn search_rows(&self, q: &Query) -> Result<Vec<(i64, TrackingRecord)>, IndexError> {
        self.rows(q).map_err(store_error)
    }

    fn last_row(&self) -> Result<i64, IndexError> {
        self.pg
            .run(|client| async move {
                let id: Option<i64> = client
                    .query_one("SELECT max(id) FROM tracking_all", &[])
                    .await?
                    .get(0);
                Ok(id.unwrap_or(0))
            })
            .map_err(store_error)
    }

    fn purge_older_than(&self, now: SystemTime) -> io::Result<usize> {
        self.upkeep(now).map_err(io::Error::from)
    }

    fn reindex(&self) -> Result<usize, IndexError> {
        // The rows are the index: nothing to rebuild; say how many there are.
        self.pg
            .run(|client| async move {
                let n: i64 = client
                    .query_one("SELECT count(*) FROM tracking_all", &[])
                    .await?
                    .get(0);
                Ok(n as usize)
            })
            .map_err(store_error)
    }

    fn records(&self) -> io::Result<Vec<TrackingRecord>> {
        let mut rows = self
            .rows(&Query {
                after: Some(0),
                ..Query::default()
            })
            .map_err(io::Error::from)?;
        rows.sort_by_key(|(id, _)| *id);
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    fn redact(
        &self,
        address: &str,
        before_day: &str,
        today: &str,
        holds: &[AddressMatch],
    ) -> io::Result<Redacted> {
        self.redact_rows(address, before_day, today, holds)
    }
}

impl PgTracking {
    /// Every record naming `address` (sender, recipient, or in the correspondence a message
    /// carried), from `since` on, oldest first: for a subject access request.
    pub fn naming(&self, address: &str, since: Option<&str>) -> io::Result<Vec<serde_json::Value>> {
        let wanted = address.trim().to_lowercase();
        let (w, since) = (wanted.clone(), since.map(str::to_string));
        let rows = self
            .pg
            .run(move |client| async move {
                let rows = client
                    .query(
                        "SELECT record FROM tracking_all \
                         WHERE ($2::text IS NULL OR time >= ($2::text)::timestamptz) \
                           AND (sender = $1 OR recipients @> ARRAY[$1::text] \
                                OR strpos(lower(record->>'forwarded'), $1) > 0) \
                         ORDER BY id",
                        &[&w, &since],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| r.get::<_, serde_json::Value>(0))
                    .collect::<Vec<_>>())
            })
            .map_err(io::Error::from)?;
        Ok(rows
            .into_iter()
            .filter(|r| crate::store::files::privacy::addresses(r).contains(&wanted))
            .collect())
    }

    /// The shared redaction key: made once (by whichever instance asks first), kept in the
    /// database so every instance hashes an address alike.
    fn redaction_key(&self) -> io::Result<Vec<u8>> {
        let mut fresh = vec![0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut fresh)?;
        self.pg
            .run(move |client| async move {
                client
                    .execute(
                        "INSERT INTO markgate_secret (name, value) VALUES ('redaction', $1) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&fresh],
                    )
                    .await?;
                Ok(client
                    .query_one(
                        "SELECT value FROM markgate_secret WHERE name = 'redaction'",
                        &[],
                    )
                    .await?
                    .get::<_, Vec<u8>>(0))
            })
            .map_err(io::Error::from)
    }

    /// `track redact` on this store: the files store's rules (whole addresses, legal holds
    /// kept, nothing from today on), each changed row rewritten with its searched fields.
    fn redact_rows(
        &self,
        address: &str,
        before_day: &str,
        today: &str,
        holds: &[AddressMatch],
    ) -> io::Result<Redacted> {
        use crate::store::files::privacy::{addresses, redacted_token, replace_ignoring_case};
        let wanted = address.trim().to_lowercase();
        let token = redacted_token(&self.redaction_key()?, &wanted);
        let mut done = Redacted {
            token: token.clone(),
            ..Redacted::default()
        };
        let (w, before) = (wanted.clone(), before_day.to_string());
        let rows: Vec<(i64, String, serde_json::Value)> = self
            .pg
            .run(move |client| async move {
                let rows = client
                    .query(
                        "SELECT id, time::text, record FROM tracking_all \
                         WHERE time < ($2::text)::date::timestamptz \
                           AND (sender = $1 OR recipients @> ARRAY[$1::text] \
                                OR strpos(lower(record::text), $1) > 0)",
                        &[&w, &before],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect())
            })
            .map_err(io::Error::from)?;
        let mut changed = Vec::new();
        let mut days = std::collections::BTreeSet::new();
        for (id, time, record) in rows {
            let names = addresses(&record);
            if !names.contains(&wanted) {
                continue;
            }
            if names.iter().any(|a| holds.iter().any(|h| h.matches(a))) {
                done.held_back += 1;
                continue;
            }
            let day = record
                .get("time")
                .and_then(|t| t.as_str())
                .and_then(|t| t.get(..10))
                .unwrap_or("")
                .to_string();
            if day.as_str() >= today {
                done.too_recent += 1;
                continue;
            }
            let text = replace_ignoring_case(&record.to_string(), &wanted, &token);
            let typed: TrackingRecord = serde_json::from_str(&text)?;
            changed.push((id, time, Row::of(&typed)?));
            days.insert(day);
        }
        done.records = changed.len();
        done.files = days.len();
        let mut changed = changed.into_iter().peekable();
        while changed.peek().is_some() {
            let chunk: Vec<(i64, String, Row)> = changed.by_ref().take(500).collect();
            self.pg
                .run(move |mut client| async move {
                    let tx = client.transaction().await?;
                    for (id, time, row) in &chunk {
                        // The row is in one of the two (an intent whose outcome never came).
                        for table in ["tracking", "tracking_intent"] {
                            tx.execute(
                                &format!(
                                    "UPDATE {table} SET record = $3, sender = $4, recipients = $5, digest = $6 \
                                     WHERE id = $1 AND time = ($2::text)::timestamptz"
                                ),
                                &[id, time, &row.value, &row.sender, &row.recipients, &row.digest],
                            )
                            .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                })
                .map_err(io::Error::from)?;
        }
        Ok(done)
    }
}
