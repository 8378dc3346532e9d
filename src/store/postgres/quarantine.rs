//! Held messages in PostgreSQL: metadata and state in `quarantine`, the bytes in
//! `quarantine_body`. A release or removal claims the row with one conditional UPDATE
//! (`held` → `releasing`, with a lease), so of two instances releasing the same message
//! one wins and the other is told it is taken; a crashed instance's claim lapses with its
//! lease. The end of a claim (`released` or `deleted`) and its audit row are one
//! transaction.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Pg, PgError};
use crate::message::Spool;
use crate::store::{Claim, Done, HeldFilter, Meta, QuarantineStore};

pub struct PgQuarantine {
    pg: Arc<Pg>,
    lease: Duration,
}

impl PgQuarantine {
    pub fn new(pg: Arc<Pg>, lease: Duration) -> PgQuarantine {
        PgQuarantine { pg, lease }
    }
}

impl PgQuarantine {
    /// Copies a held message in (a files store being moved here), with its metadata as it
    /// is; one already here is left alone, so an interrupted import is run again. Whether
    /// it was new.
    pub fn import(&self, meta: &Meta, body: Vec<u8>) -> io::Result<bool> {
        self.insert(meta.clone(), body, true)
    }

    /// Stores a held message and its body in one transaction; `once`: an id already
    /// stored is left as it is (an import run again) rather than an error. Whether it
    /// was new.
    fn insert(&self, meta: Meta, body: Vec<u8>, once: bool) -> io::Result<bool> {
        if let Some(e) = bad_id(&meta.id) {
            return Err(e);
        }
        let value = serde_json::to_value(&meta)?;
        self.pg
            .run(move |mut client| async move {
                let tx = client.transaction().await?;
                let recipients: Vec<String> =
                    meta.recipients.iter().map(|r| r.to_lowercase()).collect();
                let sql = format!(
                    "INSERT INTO quarantine (id, time, sender, recipients, size, meta) \
                     VALUES ($1, ($2::text)::timestamptz, $3, $4, $5, $6){}",
                    if once {
                        " ON CONFLICT (id) DO NOTHING"
                    } else {
                        ""
                    }
                );
                let n = tx
                    .execute(
                        &sql,
                        &[
                            &meta.id,
                            &meta.time,
                            &meta.sender.to_lowercase(),
                            &recipients,
                            &(meta.size as i64),
                            &value,
                        ],
                    )
                    .await?;
                if n == 1 {
                    tx.execute(
                        "INSERT INTO quarantine_body (id, body) VALUES ($1, $2)",
                        &[&meta.id, &body],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(n == 1)
            })
            .map_err(io::Error::from)
    }
}

fn not_held(id: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{id} is not held"))
}

fn bad_id(id: &str) -> Option<io::Error> {
    (id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| io::Error::new(io::ErrorKind::InvalidInput, "bad quarantine id"))
}

/// The first column of the one row `sql` finds for held message `id`; `NotFound` when
/// there is none.
fn one<T>(pg: &Arc<Pg>, id: &str, sql: &'static str) -> io::Result<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a> + Send + 'static,
{
    if let Some(e) = bad_id(id) {
        return Err(e);
    }
    let key = id.to_string();
    let found = pg
        .run(move |client| async move {
            Ok(client
                .query_opt(sql, &[&key])
                .await?
                .map(|r| r.get::<_, T>(0)))
        })
        .map_err(io::Error::from)?;
    found.ok_or_else(|| not_held(id))
}

fn meta_of(v: serde_json::Value) -> Result<Meta, PgError> {
    Ok(serde_json::from_value(v)?)
}

impl QuarantineStore for PgQuarantine {
    fn put(&self, message: &Spool, mut meta: Meta) -> io::Result<()> {
        if let Some(e) = bad_id(&meta.id) {
            return Err(e);
        }
        let mut body = Vec::with_capacity(message.len() as usize);
        let mut hasher = Sha256::new();
        message.for_each_chunk(|chunk| {
            hasher.update(chunk);
            body.extend_from_slice(chunk);
            Ok(())
        })?;
        meta.sha256 = format!("{:x}", hasher.finalize());
        self.insert(meta, body, false).map(|_| ())
    }

    fn get(&self, id: &str) -> io::Result<Meta> {
        let meta = one::<serde_json::Value>(
            &self.pg,
            id,
            "SELECT meta FROM quarantine WHERE id = $1 AND state IN ('held', 'releasing')",
        )?;
        meta_of(meta).map_err(io::Error::from)
    }

    fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        one(
            &self.pg,
            id,
            "SELECT b.body FROM quarantine_body b JOIN quarantine q USING (id) \
             WHERE b.id = $1 AND q.state IN ('held', 'releasing')",
        )
    }

    fn list(&self, filter: &HeldFilter) -> io::Result<Vec<Meta>> {
        let metas = self
            .pg
            .run(|client| async move {
                client
                    .query(
                        "SELECT meta FROM quarantine WHERE state = 'held' ORDER BY time, id",
                        &[],
                    )
                    .await?
                    .into_iter()
                    .map(|r| meta_of(r.get(0)))
                    .collect::<Result<Vec<Meta>, PgError>>()
            })
            .map_err(io::Error::from)?;
        let mut out: Vec<Meta> = metas.into_iter().filter(|m| filter.matches(m)).collect();
        if let Some(limit) = filter.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        Ok(out)
    }

    fn claim(&self, id: &str) -> io::Result<Box<dyn Claim + '_>> {
        if let Some(e) = bad_id(id) {
            return Err(e);
        }
        let token = format!(
            "{}:{}",
            self.pg.instance,
            crate::transaction::new_queue_id()
        );
        let (key, by) = (id.to_string(), token.clone());
        let lease = format!("{} seconds", self.lease.as_secs().max(1));
        let taken = self
            .pg
            .run(move |client| async move {
                let row = client
                    .query_opt(
                        "UPDATE quarantine SET state = 'releasing', claimed_by = $2, \
                         lease_until = now() + ($3::text)::interval \
                         WHERE id = $1 AND (state = 'held' OR (state = 'releasing' AND lease_until < now())) \
                         RETURNING meta",
                        &[&key, &by, &lease],
                    )
                    .await?;
                if let Some(row) = row {
                    return Ok(Ok(meta_of(row.get(0))?));
                }
                let state: Option<String> = client
                    .query_opt("SELECT state FROM quarantine WHERE id = $1", &[&key])
                    .await?
                    .map(|r| r.get(0));
                Ok(Err(state))
            })
            .map_err(io::Error::from)?;
        match taken {
            Ok(meta) => Ok(Box::new(PgClaim {
                pg: self.pg.clone(),
                meta,
                token,
                done: false,
            })),
            Err(Some(state)) if state == "releasing" => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{id} is being released by another command or instance"),
            )),
            Err(_) => Err(not_held(id)),
        }
    }

    fn usage(&self) -> (i64, i64) {
        self.pg
            .run(|client| async move {
                let row = client
                    .query_one(
                        "SELECT count(*), coalesce(sum(size), 0)::bigint FROM quarantine \
                         WHERE state IN ('held', 'releasing')",
                        &[],
                    )
                    .await?;
                Ok((row.get(0), row.get(1)))
            })
            .unwrap_or((0, 0))
    }

    fn recover(&self) -> io::Result<usize> {
        // Nothing half-written can stay behind (a hold is one transaction), and a lapsed
        // claim is taken by the next release.
        Ok(0)
    }
}

/// A held message this instance has claimed.
struct PgClaim {
    pg: Arc<Pg>,
    meta: Meta,
    token: String,
    done: bool,
}

impl Claim for PgClaim {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }
    fn message(&self) -> io::Result<Vec<u8>> {
        one(
            &self.pg,
            &self.meta.id,
            "SELECT body FROM quarantine_body WHERE id = $1",
        )
    }
    fn save(&self) -> io::Result<()> {
        let value = serde_json::to_value(&self.meta)?;
        let (key, by) = (self.meta.id.clone(), self.token.clone());
        let n = self
            .pg
            .run(move |client| async move {
                Ok(client
                    .execute(
                        "UPDATE quarantine SET meta = $3 WHERE id = $1 AND claimed_by = $2",
                        &[&key, &by, &value],
                    )
                    .await?)
            })
            .map_err(io::Error::from)?;
        if n == 1 {
            Ok(())
        } else {
            Err(lost(&self.meta.id))
        }
    }
    fn finish(mut self: Box<Self>, done: &Done) -> io::Result<()> {
        let state = if done.outcome == "released" {
            "released"
        } else {
            "deleted"
        };
        let audit = done.outcome.to_string();
        let by = done.by.to_string();
        let reason = done.reason.map(str::to_string);
        let (key, token, instance) = (
            self.meta.id.clone(),
            self.token.clone(),
            self.pg.instance.clone(),
        );
        let value = serde_json::to_value(&self.meta)?;
        let n = self
            .pg
            .run(move |mut client| async move {
                let tx = client.transaction().await?;
                let n = tx
                    .execute(
                        "UPDATE quarantine SET state = $3, meta = $4, lease_until = NULL \
                         WHERE id = $1 AND claimed_by = $2 AND state = 'releasing'",
                        &[&key, &token, &state, &value],
                    )
                    .await?;
                if n == 1 {
                    tx.execute("DELETE FROM quarantine_body WHERE id = $1", &[&key])
                        .await?;
                    tx.execute(
                        "INSERT INTO audit (state, queue_id, by_whom, reason, instance) VALUES ($1, $2, $3, $4, $5)",
                        &[&audit, &key, &by, &reason, &instance],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(n)
            })
            .map_err(io::Error::from)?;
        self.done = true;
        if n == 1 {
            Ok(())
        } else {
            Err(lost(&self.meta.id))
        }
    }
}

/// The claim lapsed (its lease ran out) and another instance took the message.
fn lost(id: &str) -> io::Error {
    io::Error::other(format!(
        "{id}: the claim lapsed and another instance took the message (store.claim_lease)"
    ))
}

impl Drop for PgClaim {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Not finished: held again as it was (best effort; otherwise the lease lapses).
        let (key, token) = (self.meta.id.clone(), self.token.clone());
        let _ = self.pg.run(move |client| async move {
            client
                .execute(
                    "UPDATE quarantine SET state = 'held', claimed_by = NULL, lease_until = NULL \
                     WHERE id = $1 AND claimed_by = $2 AND state = 'releasing'",
                    &[&key, &token],
                )
                .await?;
            Ok(())
        });
    }
}
