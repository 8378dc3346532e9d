//! Operations on held messages and the tracking log, as library functions with typed
//! results: the CLI calls them, and a review page can call the same ones. Release is exactly once (a claim that a
//! second, concurrent release loses); release, delete and purge each leave a tracking
//! record naming who did it and why.

use std::io;
use std::time::SystemTime;

use crate::config::Config;
use crate::mailbox::Mailbox;
use crate::message::Spool;
use crate::policy::Action;
use crate::store::record::{NextHopRecord, RecipientRecord, TrackingRecord};
use crate::store::{Done, HeldFilter, Meta, Release, Store};
use crate::timefmt;
use crate::transaction::{Envelope, Origin, Recipient, TransactionBuilder};

/// Who does an operation, and why (both kept in the tracking record).
#[derive(Debug, Clone)]
pub struct Actor {
    pub by: String,
    pub reason: Option<String>,
}

impl Actor {
    /// `by`, else `$USER`, else "unknown"; printable ASCII and single spaces only, so it
    /// can go into a header ("A. Analyst" stays as written, a line break cannot).
    pub fn new(by: Option<String>, reason: Option<String>) -> Actor {
        let by = by
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
        let by = by
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Actor { by, reason }
    }
}

/// Why an operation did not happen; each says whose move it is.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no quarantined message {0}")]
    NotHeld(String),
    #[error("{0} is being released by another command; nothing was sent")]
    InProgress(String),
    #[error(
        "{id} was held by the MTA (milter mode) as queue id {mta}; release it there with \
         `postsuper -H {mta}`, then `markgate quarantine delete {id}`"
    )]
    HeldByMta { id: String, mta: String },
    #[error("the current rules reject this message ({rule}: {reply}); use --force to override")]
    Refused { rule: String, reply: String },
    #[error("the next hop did not take it; still held: {0}")]
    NextHop(String),
    #[error(
        "a release of {0} was interrupted after sending began: it may have been delivered; \
         check the next hop's log, then `quarantine release --force` or `quarantine delete`"
    )]
    MaybeSent(String),
    #[error("{id} was released ({reply}), but {problem}")]
    ReleasedBut {
        id: String,
        reply: String,
        problem: String,
    },
    #[error("the tracking record could not be written: {0}")]
    Tracking(io::Error),
    #[error("{0}")]
    Setup(String),
    #[error("quarantine: {0}")]
    Store(io::Error),
}

fn held(id: &str, err: io::Error) -> OpError {
    match err.kind() {
        io::ErrorKind::NotFound => OpError::NotHeld(id.to_string()),
        io::ErrorKind::WouldBlock => OpError::InProgress(id.to_string()),
        io::ErrorKind::InvalidInput => OpError::NotHeld(id.to_string()),
        _ => OpError::Store(err),
    }
}

/// The tracking record of an operation on a held message: every contract field the held
/// message's metadata knows, and who did it and why.
fn record(
    meta: &Meta,
    action: &str,
    outcome: &str,
    actor: &Actor,
    now: SystemTime,
) -> TrackingRecord {
    TrackingRecord {
        time: timefmt::rfc3339(now),
        queue_id: Some(meta.id.clone()),
        mta_queue_id: meta.mta_queue_id.clone(),
        client: Some(meta.client.clone()),
        sender: meta.sender.clone(),
        recipients: meta
            .recipients
            .iter()
            .map(|a| RecipientRecord {
                address: a.clone(),
                class: None,
            })
            .collect(),
        subject: meta.subject.clone(),
        size: meta.size,
        marking: Some(meta.marking.clone()),
        action: action.to_string(),
        rule: meta.rule.clone(),
        outcome: outcome.to_string(),
        by: Some(actor.by.clone()),
        reason: actor.reason.clone(),
        ..TrackingRecord::default()
    }
}

/// What a release did.
#[derive(Debug)]
pub struct Released {
    pub reply: String,
}

/// Sends a held message to the next hop with its original envelope, markgate's `Received`
/// and `X-Markgate-Marking`, and `X-Markgate-Released`; refused when the current rules
/// reject it (unless `force`). Exactly once: the message is claimed first.
pub async fn release(
    store: &Store,
    config: &Config,
    id: &str,
    force: bool,
    actor: &Actor,
) -> Result<Released, OpError> {
    crate::tls::install_provider();
    // Claimed first: a second release of the same message is told so, not "not held".
    let mut claim = store.quarantine.claim(id).map_err(|e| held(id, e))?;
    let interrupted = claim
        .meta()
        .released
        .as_ref()
        .is_some_and(|r| r.state == "sending");
    if interrupted && !force {
        return Err(OpError::MaybeSent(id.to_string()));
    }
    if let Some(mta) = &claim.meta().mta_queue_id {
        // Sending markgate's copy would deliver the message a second time once the MTA's
        // held copy is released, and past the MTA's own queue and logs. (Dropping the
        // claim holds it again.)
        return Err(OpError::HeldByMta {
            id: id.to_string(),
            mta: mta.clone(),
        });
    }
    let raw = claim.message().map_err(OpError::Store)?;
    let snapshot =
        crate::runtime::load_snapshot(config).map_err(|e| OpError::Setup(e.to_string()))?;
    let meta = claim.meta().clone();
    // The transaction as it arrived, so the released copy carries the headers a passed
    // message gets.
    let envelope = Envelope {
        sender: Mailbox::lenient(&meta.sender),
        params: Default::default(),
        recipients: meta
            .recipients
            .iter()
            .filter_map(|a| Mailbox::lenient(a))
            .map(Recipient::plain)
            .collect(),
    };
    let txn = TransactionBuilder::new(Origin::Release)
        .client(meta.client.addr.clone(), meta.client.helo.clone())
        .as_received(
            id,
            timefmt::parse(&meta.time).unwrap_or_else(SystemTime::now),
        )
        .build(envelope, Spool::from_bytes(raw));
    let eval = snapshot.evaluate(&txn);
    // The rule that held it does not count against its own release; a reject does.
    if !force && eval.verdict.action == Action::Reject {
        return Err(OpError::Refused {
            rule: eval
                .verdict
                .rule
                .clone()
                .unwrap_or_else(|| crate::metrics::NO_RULE.into()),
            reply: eval
                .verdict
                .reply
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default(),
        });
    }
    let next_hop = crate::delivery::NextHop::new(&config.upstream, &config.hostname)
        .map_err(|e| OpError::Setup(e.to_string()))?;
    let now = SystemTime::now();
    let header = format!(
        "{}X-Markgate-Released: by {} at {} (held as {id})\r\n",
        crate::gateway::added_headers(&snapshot, &txn, &eval),
        actor.by,
        timefmt::rfc5322(now)
    );
    // Said durably before the first byte goes: a crash from here on leaves a claim that a
    // later release will not send again without --force.
    claim.meta_mut().released = Some(Release {
        by: actor.by.clone(),
        time: timefmt::rfc3339(now),
        state: "sending".into(),
    });
    claim.save().map_err(OpError::Store)?;
    let sent = next_hop
        .send(&txn.envelope, header.as_bytes(), &txn.message)
        .await;
    let delivered = match sent {
        Ok(d) => d,
        Err(err) => {
            // Refused or unreachable: not sent, held again as it was.
            claim.meta_mut().released = None;
            let _ = claim.save();
            return Err(OpError::NextHop(err.to_string()));
        }
    };
    let now = SystemTime::now();
    let mut rec = record(&meta, "pass", "released", actor, now);
    rec.front_end = Some(Origin::Release.name().to_string());
    rec.released_by = Some(actor.by.clone());
    rec.reply = Some(delivered.reply.clone());
    rec.next_hop = Some(NextHopRecord {
        reply: delivered.reply.clone(),
        queue_id: delivered.queue_id.clone(),
    });
    for r in &mut rec.recipients {
        r.class = Some(snapshot.directory.classify(&r.address).name().to_string());
    }
    // What the rules make of it now: the release record says what was sent, as a pass's
    // record does.
    let c = &eval.classification;
    rec.message_id = c.message_id.clone();
    rec.signature = Some(c.signature);
    rec.confidentiality_statement = Some(c.confidentiality_statement);
    rec.matched = crate::gateway::matched_records(&eval.verdict.matched);
    rec.forwarded = crate::gateway::forwarded_records(&eval);
    // Sent: whatever happens now, it must not be sent again, and must not be reported as
    // not released.
    let finished = claim.finish(&Done {
        outcome: "released",
        by: &actor.by,
        reason: actor.reason.as_deref(),
    });
    let recorded = store.tracking.append(&rec, now);
    let problem = match (finished, recorded) {
        (Ok(()), Ok(())) => None,
        (Err(err), _) => Some(format!("removing it from the quarantine failed: {err}")),
        (_, Err(err)) => Some(format!("its tracking record could not be written: {err}")),
    };
    let description = meta
        .rule
        .as_deref()
        .and_then(|r| snapshot.policy.description(r))
        .unwrap_or_default();
    if let Some(notice) =
        crate::notify::prepare(config, &meta, &description, crate::notify::Event::Released)
    {
        crate::notify::deliver(&next_hop, notice).await;
    }
    match problem {
        None => Ok(Released {
            reply: delivered.reply,
        }),
        Some(problem) => Err(OpError::ReleasedBut {
            id: id.to_string(),
            reply: delivered.reply,
            problem,
        }),
    }
}

/// Deletes a held message without sending it, says so in the tracking log, and tells its
/// sender (`notify:`).
pub fn delete(store: &Store, config: &Config, id: &str, actor: &Actor) -> Result<Meta, OpError> {
    let meta = remove(store, id, "delete", "deleted", actor)?;
    crate::notify::send_blocking(config, &meta, "", crate::notify::Event::Deleted);
    Ok(meta)
}

/// Claims a held message (so a release in progress wins, and says so), records its removal,
/// then removes it.
fn remove(
    store: &Store,
    id: &str,
    action: &str,
    outcome: &str,
    actor: &Actor,
) -> Result<Meta, OpError> {
    let claim = store.quarantine.claim(id).map_err(|e| held(id, e))?;
    let meta = claim.meta().clone();
    let now = SystemTime::now();
    store
        .tracking
        .append(&record(&meta, action, outcome, actor, now), now)
        .map_err(OpError::Tracking)?;
    claim
        .finish(&Done {
            outcome,
            by: &actor.by,
            reason: actor.reason.as_deref(),
        })
        .map_err(OpError::Store)?;
    Ok(meta)
}

/// Deletes every message held since before `cutoff` (or only lists them, `dry_run`); each
/// deletion is a tracking record.
pub fn purge(
    store: &Store,
    cutoff: SystemTime,
    actor: &Actor,
    dry_run: bool,
) -> Result<Vec<Meta>, OpError> {
    let old: Vec<Meta> = store
        .quarantine
        .list(&HeldFilter {
            until: Some(timefmt::rfc3339(cutoff)),
            ..HeldFilter::default()
        })
        .map_err(OpError::Store)?;
    if dry_run {
        return Ok(old);
    }
    let mut gone = Vec::new();
    for meta in old {
        match remove(store, &meta.id, "purge", "purged", actor) {
            Ok(meta) => gone.push(meta),
            // Released, being released or deleted meanwhile by another command.
            Err(OpError::NotHeld(_) | OpError::InProgress(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(gone)
}

/// Held messages matching `filter`, oldest first.
pub fn list(store: &Store, filter: &HeldFilter) -> Result<Vec<Meta>, OpError> {
    store.quarantine.list(filter).map_err(OpError::Store)
}

/// One held message: its metadata and its bytes.
#[derive(Debug)]
pub struct Shown {
    pub meta: Meta,
    pub message: Vec<u8>,
}

pub fn show(store: &Store, id: &str) -> Result<Shown, OpError> {
    let meta = store.quarantine.get(id).map_err(|e| held(id, e))?;
    let message = store.quarantine.message(id).map_err(|e| held(id, e))?;
    Ok(Shown { meta, message })
}

/// Records that someone took a copy of part of a held message's content (`what`: the
/// console's attachment download), before the copy is handed over, so the audit shows who
/// took what even if the copy never arrives.
pub fn downloaded(store: &Store, meta: &Meta, what: &str, actor: &Actor) -> Result<(), OpError> {
    let now = SystemTime::now();
    let mut done = record(meta, "download", "downloaded", actor, now);
    done.reason = Some(what.to_string());
    store.tracking.append(&done, now).map_err(OpError::Tracking)
}

/// Tracking records matching `q`, newest first.
pub fn search(
    store: &Store,
    q: &crate::store::Query,
) -> Result<Vec<TrackingRecord>, crate::store::SearchError> {
    store.tracking.search(q)
}

/// Writes every record and held message naming `address` into `out` (a new directory).
pub fn export(
    store: &Store,
    address: &str,
    since: Option<&str>,
    out: &std::path::Path,
) -> Result<crate::store::Exported, OpError> {
    store
        .export(address, since, out)
        .map_err(|e| OpError::Setup(format!("exporting into {}: {e}", out.display())))
}

/// Replaces `address` by a keyed hash in records before `before_day` (YYYY-MM-DD) outside
/// `tracking.legal_holds`, and records that it did (naming the hash, not the address).
pub fn redact(
    store: &Store,
    config: &Config,
    address: &str,
    before_day: &str,
    actor: &Actor,
) -> Result<crate::store::Redacted, OpError> {
    let now = SystemTime::now();
    let holds: Vec<crate::store::AddressMatch> = config
        .tracking
        .legal_holds
        .iter()
        .map(|h| crate::store::AddressMatch::parse(h))
        .collect();
    let done = store
        .tracking
        .redact(address, before_day, &timefmt::date(now), &holds)
        .map_err(OpError::Store)?;
    let audit = TrackingRecord {
        time: timefmt::rfc3339(now),
        action: "redact".into(),
        outcome: "redacted".into(),
        by: Some(actor.by.clone()),
        reason: actor.reason.clone(),
        redacted_as: Some(done.token.clone()),
        before: Some(before_day.to_string()),
        records: Some(done.records),
        files: Some(done.files),
        held_back: Some(done.held_back),
        too_recent: Some(done.too_recent),
        ..TrackingRecord::default()
    };
    store
        .tracking
        .append(&audit, now)
        .map_err(OpError::Tracking)?;
    Ok(done)
}
