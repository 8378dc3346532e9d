//! Operations on held messages, as library functions with typed results: the CLI calls
//! them, and a review page can call the same ones. Release is exactly once (a claim that a
//! second, concurrent release loses); release, delete and purge each leave a tracking
//! record naming who did it and why.

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;

use crate::config::Config;
use crate::mailbox::Mailbox;
use crate::message::Spool;
use crate::policy::Action;
use crate::quarantine::{Meta, Quarantine};
use crate::timefmt;
use crate::tracking::Tracking;
use crate::transaction::{ClientInfo, Envelope, Recipient, Transaction};

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

/// The tracking record of an operation on a held message.
fn record(
    meta: &Meta,
    action: &str,
    outcome: &str,
    actor: &Actor,
    now: SystemTime,
) -> serde_json::Value {
    json!({
        "time": timefmt::rfc3339(now),
        "queue_id": meta.id,
        "action": action,
        "rule": meta.rule,
        "by": actor.by,
        "reason": actor.reason,
        "sender": meta.sender,
        "recipients": meta.recipients.iter().map(|a| json!({"address": a})).collect::<Vec<_>>(),
        "subject": meta.subject,
        "marking": meta.marking,
        "size": meta.size,
        "outcome": outcome,
    })
}

fn tracking(config: &Config) -> Tracking {
    Tracking::new(&config.state_dir, config.tracking.retention_days)
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
    config: &Config,
    id: &str,
    force: bool,
    actor: &Actor,
) -> Result<Released, OpError> {
    crate::smtp::tls::install_provider();
    let q = Quarantine::new(&config.state_dir);
    // Claimed first: a second release of the same message is told so, not "not held".
    let mut claim = q.claim(id).map_err(|e| held(id, e))?;
    let interrupted = claim
        .meta
        .released
        .as_ref()
        .is_some_and(|r| r.get("state").and_then(|s| s.as_str()) == Some("sending"));
    if interrupted && !force {
        return Err(OpError::MaybeSent(id.to_string()));
    }
    if let Some(mta) = &claim.meta.mta_queue_id {
        // Sending markgate's copy would deliver the message a second time once the MTA's
        // held copy is released, and past the MTA's own queue and logs. (Dropping the
        // claim holds it again.)
        return Err(OpError::HeldByMta {
            id: id.to_string(),
            mta: mta.clone(),
        });
    }
    let raw =
        std::fs::read(claim.message_path().map_err(OpError::Store)?).map_err(OpError::Store)?;
    let snapshot =
        crate::runtime::load_snapshot(config).map_err(|e| OpError::Setup(e.to_string()))?;
    let meta = claim.meta.clone();
    let text = |k: &str| {
        meta.client
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    // The transaction as it arrived, so the released copy carries the headers a passed
    // message gets.
    let txn = Transaction {
        id: id.to_string(),
        received: timefmt::parse(&meta.time).unwrap_or_else(SystemTime::now),
        client: ClientInfo {
            addr: text("addr"),
            helo: text("helo"),
        },
        tls: None,
        envelope: Envelope {
            sender: Mailbox::lenient(&meta.sender),
            params: Default::default(),
            recipients: meta
                .recipients
                .iter()
                .filter_map(|a| Mailbox::lenient(a))
                .map(Recipient::plain)
                .collect(),
        },
        message: Arc::new(Spool::from_bytes(raw)),
        front_end: "release",
        mta_queue_id: None,
    };
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
    let next_hop = crate::smtp::next_hop::NextHop::new(&config.upstream, &config.hostname)
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
    claim.meta.released =
        Some(json!({"by": actor.by, "time": timefmt::rfc3339(now), "state": "sending"}));
    claim.save().map_err(OpError::Store)?;
    let sent = next_hop
        .send(&txn.envelope, header.as_bytes(), &txn.message)
        .await;
    let delivered = match sent {
        Ok(d) => d,
        Err(err) => {
            // Refused or unreachable: not sent, held again as it was.
            claim.meta.released = None;
            let _ = claim.save();
            return Err(OpError::NextHop(err.to_string()));
        }
    };
    let now = SystemTime::now();
    let mut rec = record(&meta, "pass", "released", actor, now);
    rec["released_by"] = json!(actor.by);
    rec["reply"] = json!(delivered.reply);
    rec["next_hop"] = json!({"reply": delivered.reply, "queue_id": delivered.queue_id});
    rec["recipients"] = json!(meta
        .recipients
        .iter()
        .map(|a| json!({"address": a, "class": snapshot.directory.classify(a).name()}))
        .collect::<Vec<_>>());
    // Sent: whatever happens now, it must not be sent again, and must not be reported as
    // not released.
    let finished = claim.finish();
    let recorded = tracking(config).append(&rec, now);
    let problem = match (finished, recorded) {
        (Ok(()), Ok(())) => None,
        (Err(err), _) => Some(format!("removing it from the quarantine failed: {err}")),
        (_, Err(err)) => Some(format!("its tracking record could not be written: {err}")),
    };
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

/// Deletes a held message without sending it, and says so in the tracking log.
pub fn delete(config: &Config, id: &str, actor: &Actor) -> Result<Meta, OpError> {
    let q = Quarantine::new(&config.state_dir);
    remove(&q, &tracking(config), id, "delete", "deleted", actor)
}

/// Claims a held message (so a release in progress wins, and says so), records its removal,
/// then removes it.
fn remove(
    q: &Quarantine,
    tracking: &Tracking,
    id: &str,
    action: &str,
    outcome: &str,
    actor: &Actor,
) -> Result<Meta, OpError> {
    let claim = q.claim(id).map_err(|e| held(id, e))?;
    let meta = claim.meta.clone();
    let now = SystemTime::now();
    tracking
        .append(&record(&meta, action, outcome, actor, now), now)
        .map_err(OpError::Tracking)?;
    claim.finish().map_err(OpError::Store)?;
    Ok(meta)
}

/// Deletes every message held since before `cutoff` (or only lists them, `dry_run`); each
/// deletion is a tracking record.
pub fn purge(
    config: &Config,
    cutoff: SystemTime,
    actor: &Actor,
    dry_run: bool,
) -> Result<Vec<Meta>, OpError> {
    let q = Quarantine::new(&config.state_dir);
    let cutoff = timefmt::rfc3339(cutoff);
    let old: Vec<Meta> = q
        .list()
        .map_err(OpError::Store)?
        .into_iter()
        .filter(|m| m.time < cutoff)
        .collect();
    if dry_run {
        return Ok(old);
    }
    let tracking = tracking(config);
    let mut gone = Vec::new();
    for meta in old {
        match remove(&q, &tracking, &meta.id, "purge", "purged", actor) {
            Ok(meta) => gone.push(meta),
            // Released, being released or deleted meanwhile by another command.
            Err(OpError::NotHeld(_) | OpError::InProgress(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(gone)
}
