//! The database schema, embedded and versioned: `markgate store migrate` applies what is
//! missing, in one transaction per step; start-up refuses a schema newer than the binary
//! and asks for `migrate` when it is older, so two instances of different versions never
//! write one database in two shapes.
//!
//! Tracking records are partitioned by day (retention drops whole days), with the typed
//! record as `jsonb` beside the columns searches filter on; intents wait for their
//! outcomes in a small table of their own, and searches read both (`tracking_all`). Held
//! messages keep their metadata and state apart from the bodies, so listings never read a
//! body.

use super::{Pg, PgError};

/// Each migration, in order; the schema's version is how many have been applied.
pub const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE markgate_schema (
    version integer NOT NULL,
    applied timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tracking (
    id bigint GENERATED ALWAYS AS IDENTITY,
    time timestamptz NOT NULL,
    queue_id text,
    message_id text,
    sender text NOT NULL,
    recipients text[] NOT NULL,
    action text NOT NULL,
    rule text,
    level text NOT NULL,
    outcome text NOT NULL,
    record jsonb NOT NULL,
    -- sha256 of the record as written: a record imported twice is stored once.
    digest text NOT NULL,
    PRIMARY KEY (time, id),
    UNIQUE (time, digest)
) PARTITION BY RANGE (time);
-- Rows no daily partition takes (a clock far off): kept, never refused.
CREATE TABLE tracking_default PARTITION OF tracking DEFAULT;
CREATE INDEX tracking_time ON tracking (time DESC, id DESC);
CREATE INDEX tracking_sender ON tracking (sender, time DESC);
CREATE INDEX tracking_recipients ON tracking USING gin (recipients) WITH (fastupdate = off);
CREATE INDEX tracking_message_id ON tracking (message_id);
CREATE INDEX tracking_queue_id ON tracking (queue_id);
CREATE INDEX tracking_id ON tracking (id);
CREATE TABLE quarantine (
    id text PRIMARY KEY,
    time timestamptz NOT NULL,
    sender text NOT NULL,
    recipients text[] NOT NULL,
    state text NOT NULL DEFAULT 'held'
        CHECK (state IN ('held', 'releasing', 'released', 'deleted')),
    claimed_by text,
    lease_until timestamptz,
    size bigint NOT NULL,
    meta jsonb NOT NULL
);
CREATE INDEX quarantine_held ON quarantine (time) WHERE state IN ('held', 'releasing');
CREATE TABLE quarantine_body (
    id text PRIMARY KEY REFERENCES quarantine (id) ON DELETE CASCADE,
    body bytea NOT NULL
);
-- Which times a Message-ID was tracked at: a lookup by Message-ID (no time to prune by)
-- reads this small index, then only those days' partitions.
CREATE TABLE tracking_ids (
    message_id text NOT NULL,
    time timestamptz NOT NULL
);
CREATE INDEX tracking_ids_message_id ON tracking_ids (message_id);
CREATE INDEX tracking_ids_time ON tracking_ids (time);
-- Keys markgate makes once and every instance shares (the redaction key).
CREATE TABLE markgate_secret (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL,
    queue_id text NOT NULL,
    by_whom text,
    reason text,
    instance text NOT NULL
);
",
    r"
-- Intents (a pass's record, written before the hand-off) apart from the history: each is
-- replaced by its outcome a few milliseconds later, and a row in tracking cost eight index
-- entries written and deleted for nothing. Its ids come from tracking's sequence, so the
-- two order as one log; searches read both through tracking_all.
-- The same columns as tracking (so the view's two halves cannot drift apart).
CREATE TABLE tracking_intent (LIKE tracking);
ALTER TABLE tracking_intent
    ALTER COLUMN id SET DEFAULT nextval('tracking_id_seq'),
    ADD PRIMARY KEY (queue_id);
-- Intents already in tracking stay there (a stopped instance's in-flight messages have
-- their outcomes by now, so these are a crash's leftovers): searches still find them
-- through tracking_all, and nothing scans a year of partitions to move them.
-- Newest first is the primary key (time, id) read backwards: this copy of it was one more
-- index for every record to update.
DROP INDEX IF EXISTS tracking_time;
CREATE VIEW tracking_all AS
    SELECT id, time, queue_id, message_id, sender, recipients, action, rule, level, outcome, record, digest
    FROM tracking
    UNION ALL
    SELECT id, time, queue_id, message_id, sender, recipients, action, rule, level, outcome, record, digest
    FROM tracking_intent;
",
];

/// The version this binary writes.
pub const LATEST: i32 = MIGRATIONS.len() as i32;

/// Serialises migrations and housekeeping across instances (`pg_advisory_lock` key).
pub(crate) const LOCK: i64 = 0x6d61_726b_6761_7465; // "markgate"

/// The schema's version: 0 for a database markgate has never set up.
pub(crate) async fn version(client: &tokio_postgres::Client) -> Result<i32, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('markgate_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one("SELECT max(version) FROM markgate_schema", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

impl Pg {
    /// Applies the migrations the database lacks; returns (from, to) versions.
    pub fn migrate(&self) -> Result<(i32, i32), PgError> {
        self.run(|mut client| async move {
            client
                .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
                .await?;
            let result = async {
                let from = version(&client).await?;
                if from > LATEST {
                    return Err(newer(from));
                }
                for (i, step) in MIGRATIONS.iter().enumerate().skip(from as usize) {
                    let tx = client.transaction().await?;
                    tx.batch_execute(step).await?;
                    tx.execute(
                        "INSERT INTO markgate_schema (version) VALUES ($1)",
                        &[&(i as i32 + 1)],
                    )
                    .await?;
                    tx.commit().await?;
                }
                Ok((from, LATEST))
            }
            .await;
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
                .await;
            result
        })
    }

    /// Start-up's check: the database answers and has this binary's schema.
    pub fn check_schema(&self) -> Result<(), PgError> {
        self.run(|client| async move {
            match version(&client).await? {
                v if v == LATEST => Ok(()),
                v if v > LATEST => Err(newer(v)),
                0 => Err(PgError::Schema(
                    "the database has no markgate schema yet: run `markgate store migrate`"
                        .into(),
                )),
                v => Err(PgError::Schema(format!(
                    "the database's schema is version {v}, this markgate writes {LATEST}: run `markgate store migrate`"
                ))),
            }
        })
    }
}

fn newer(v: i32) -> PgError {
    PgError::Schema(format!(
        "the database's schema is version {v}, newer than this markgate ({LATEST}): upgrade markgate, do not write it with an older one"
    ))
}
