//! The one path every message takes, whichever front end received it:
//!
//! ```text
//! spool ─▶ classify ─▶ decide ─▶ act (forward │ quarantine │ reject) ─▶ track ─▶ reply
//! ```
//!
//! A front end builds a [`Transaction`] and calls [`Gateway::process`]; it only turns the
//! returned reply into its protocol. The running rules, directory and config live in a
//! [`Snapshot`] that a reload swaps atomically; a session keeps the one it started with.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

mod record;
mod snapshot;

pub use record::{client_record, forwarded_records, marking_record, matched_records};
pub use snapshot::{Evaluation, Snapshot, Unclassifiable};

use crate::delivery::{Delivered, NextHop, NextHopError};
use crate::marking::classify::Classification;
use crate::message::Spool;
use crate::metrics::{DecisionLabels, Metrics};
use crate::policy::{Action, Mode, Verdict};
use crate::reply::Reply;
use crate::store::{Appending, Meta, Store};
use crate::timefmt;
use crate::transaction::Transaction;

/// Who delivers a passed message: markgate's next hop (smarthost mode), or the MTA that
/// asked (milter mode), which then adds the headers markgate returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    NextHop,
    Mta,
}

/// What the front end turns into its protocol's answer.
#[derive(Debug, Clone)]
pub struct Processed {
    pub action: Action,
    pub reply: Reply,
    /// Headers for the MTA to add (milter mode; empty unless passed or held).
    pub headers: Vec<(String, String)>,
    pub rule: Option<String>,
}

/// What acting on a verdict came to.
pub(crate) enum Outcome {
    Delivered(Delivered),
    /// Accepted for the MTA to deliver (milter mode).
    Accepted,
    Held,
    Refused,
    /// Could not be done; the client retries.
    Deferred(Deferred),
    /// About to be handed to the next hop (the intent record; see `finish`).
    HandingOff,
}

impl Outcome {
    /// The record's `outcome`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "delivered",
            Outcome::Accepted => "accepted",
            Outcome::Held => "held",
            Outcome::Refused => "refused",
            Outcome::Deferred(_) => "deferred",
            Outcome::HandingOff => crate::store::record::INTENT,
        }
    }
}

/// Whose fault a deferral is (pingora's `ErrorSource`): it decides the reply (the next
/// hop's own 4xx mirrored, or 451 4.3.0 for ours) and what an operator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next hop refused or could not be reached.
    Upstream,
    /// markgate could not keep its promise (tracking, quarantine, the classifier).
    Internal,
}

/// Why a message the rules would let through or hold was deferred instead.
#[derive(Debug, thiserror::Error)]
pub enum Deferred {
    #[error("{0}")]
    NextHop(#[from] NextHopError),
    #[error("tracking: {0}")]
    Tracking(std::io::Error),
    #[error("quarantine: {0}")]
    Quarantine(std::io::Error),
}

impl Deferred {
    pub fn fault(&self) -> Fault {
        match self {
            Deferred::NextHop(_) => Fault::Upstream,
            Deferred::Tracking(_) | Deferred::Quarantine(_) => Fault::Internal,
        }
    }

    /// What the client is told: the next hop's own refusal mirrored (or 451 4.4.1 when it
    /// could not be reached), 451 4.3.0 for ours.
    pub fn reply(&self) -> Reply {
        match self {
            Deferred::NextHop(err) => err.reply(),
            Deferred::Tracking(_) | Deferred::Quarantine(_) => Reply::temp_failure(),
        }
    }
}

impl Fault {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Upstream => "upstream",
            Fault::Internal => "internal",
        }
    }
}

pub struct Gateway {
    current: RwLock<Arc<Snapshot>>,
    /// Swapped whole on reload (upstream); a transaction keeps what it took.
    next_hop: RwLock<Arc<NextHop>>,
    pub metrics: Arc<Metrics>,
    /// Held messages and the tracking log, whichever backend the config names.
    pub store: Store,
    /// Delivered messages' records still being completed (see `finish`); waited for at
    /// shutdown.
    completing: tokio_util::task::TaskTracker,
}

impl Gateway {
    pub fn new(
        snapshot: Snapshot,
        next_hop: NextHop,
        metrics: Arc<Metrics>,
        store: Store,
    ) -> Gateway {
        store.count_errors(metrics.store_errors.clone());
        Gateway {
            store,
            current: RwLock::new(Arc::new(snapshot)),
            next_hop: RwLock::new(Arc::new(next_hop)),
            metrics,
            completing: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Waits, at most `within`, for the delivered messages' records still being completed
    /// (at shutdown: otherwise their intents would stand for messages that were delivered).
    pub async fn complete_records(&self, within: Duration) {
        self.completing.close();
        if tokio::time::timeout(within, self.completing.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.completing.len(),
                "stopping with delivered messages' records not completed; their intents stand"
            );
        }
    }

    /// A store call from a session that has no awaitable form (a hold). A shared store's
    /// call waits on the network: it runs with `block_in_place`, so the runtime moves this
    /// worker's other sessions to another thread meanwhile. The files store's calls are
    /// local and short, and run as they are. (Tracking records are awaited instead:
    /// [`crate::store::Appending`].)
    fn store_call<T>(&self, f: impl FnOnce() -> T) -> T {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let multi =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        if multi && self.store.postgres().is_some() {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }

    /// The running rules; a session keeps this for its whole life.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs new rules; sessions in flight keep theirs.
    pub fn swap(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// The next hop as configured now.
    pub fn next_hop(&self) -> Arc<NextHop> {
        self.next_hop
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs a reloaded next hop.
    pub fn swap_next_hop(&self, next_hop: NextHop) {
        *self.next_hop.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next_hop);
    }

    /// A message refused before it could be judged (bad data): tracked as a reject.
    pub async fn refuse(&self, snap: &Snapshot, txn: &Transaction, reply: Reply) -> Reply {
        let verdict = Verdict {
            action: Action::Reject,
            rule: None,
            reply: Some(reply.clone()),
            add_headers: Vec::new(),
            tags: vec!["protocol".to_string()],
            matched: Vec::new(),
        };
        let eval = Evaluation {
            classification: Classification::default(),
            recipients: Vec::new(),
            forwarded_from: Vec::new(),
            verdict,
        };
        self.finish(snap, txn, &eval, Outcome::Refused, reply).await
    }

    /// Runs the whole path and returns what the front end answers.
    pub async fn process(
        &self,
        snap: &Arc<Snapshot>,
        txn: Transaction,
        hand_off: HandOff,
    ) -> Processed {
        let started = Instant::now();
        let eval = snap.decide(&txn, classify_within_budget(snap, &txn.message).await);
        self.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut notice = None;
        let (outcome, reply) = self.act(snap, &txn, &eval, hand_off, &mut notice).await;
        let reply = self.finish(snap, &txn, &eval, outcome, reply).await;
        // The sender is told only of a hold the client was told of (a 451 after the hold,
        // when its record could not be written, is retried: one notice per retry otherwise).
        if let Some(notice) = notice.filter(|_| reply.is_positive()) {
            crate::notify::spawn(self.next_hop(), notice);
        }
        self.metrics
            .transaction_seconds
            .observe(started.elapsed().as_secs_f64());
        let headers = if reply.is_positive() {
            header_fields(&eval)
        } else {
            Vec::new()
        };
        Processed {
            action: eval.verdict.action,
            reply,
            headers,
            rule: eval.verdict.rule.clone(),
        }
    }

    async fn act(
        &self,
        snap: &Snapshot,
        txn: &Transaction,
        eval: &Evaluation,
        hand_off: HandOff,
        notice: &mut Option<crate::notify::Notice>,
    ) -> (Outcome, Reply) {
        let verdict = &eval.verdict;
        if verdict.action != Action::Reject {
            // Local and short in either store (a statvfs, or nothing): no store_call.
            if let Err(err) = self.store.tracking.preflight() {
                self.metrics.tracking_write_error();
                tracing::error!(queue_id = %txn.id, error = %err, "no room to track this message; deferring");
                return (
                    Outcome::Deferred(Deferred::Tracking(err)),
                    Reply::temp_failure(),
                );
            }
        }
        match verdict.action {
            Action::Reject => {
                let reply = verdict.reply.clone().unwrap_or_else(Reply::temp_failure);
                (Outcome::Refused, reply)
            }
            Action::Quarantine => {
                let meta = Meta {
                    id: txn.id.clone(),
                    time: timefmt::rfc3339(txn.received),
                    client: client_record(txn),
                    sender: txn.envelope.sender_str().to_string(),
                    recipients: txn
                        .envelope
                        .recipients
                        .iter()
                        .map(|r| r.address().to_string())
                        .collect(),
                    subject: eval.classification.subject.as_deref().map(record::clean),
                    rule: verdict.rule.clone(),
                    reason: verdict
                        .rule
                        .as_ref()
                        .map(|r| format!("held by rule {r}"))
                        .unwrap_or_default(),
                    level: eval.classification.marking.level_name().to_string(),
                    marking: marking_record(&eval.classification.marking),
                    size: txn.message.len(),
                    sha256: String::new(),
                    released: None,
                    mta_queue_id: match hand_off {
                        HandOff::Mta => txn.mta_queue_id.clone(),
                        HandOff::NextHop => None,
                    },
                };
                // Told through the next hop once held (in smarthost mode: in milter mode
                // the MTA holds the message and markgate has no way out of its own).
                let prepared = match hand_off {
                    HandOff::NextHop => crate::notify::prepare(
                        &snap.config,
                        &meta,
                        &verdict
                            .rule
                            .as_deref()
                            .and_then(|r| snap.policy.description(r))
                            .unwrap_or_default(),
                        crate::notify::Event::Held,
                    ),
                    HandOff::Mta => None,
                };
                match self.store_call(|| self.store.quarantine.put(&txn.message, meta)) {
                    Ok(()) => {
                        *notice = prepared;
                        // Counted here; a scrape recounts from the directory, as releases
                        // and deletes happen in other processes.
                        self.metrics.quarantine_messages.inc();
                        self.metrics
                            .quarantine_bytes
                            .inc_by(txn.message.len() as i64);
                        (Outcome::Held, Reply::quarantined(&txn.id))
                    }
                    Err(err) => {
                        tracing::error!(queue_id = %txn.id, error = %err, "quarantine write failed");
                        (
                            Outcome::Deferred(Deferred::Quarantine(err)),
                            Reply::temp_failure(),
                        )
                    }
                }
            }
            Action::Pass if hand_off == HandOff::Mta => (Outcome::Accepted, Reply::ok()),
            Action::Pass => {
                // The intent record: if the record of how it went cannot be written once
                // the next hop has the message, this one stands and the reply stays 250.
                let intent = record::record(snap, txn, eval, &Outcome::HandingOff, &Reply::ok());
                if let Err(err) = self
                    .store
                    .tracking
                    .append_async(&intent, SystemTime::now())
                    .wait()
                    .await
                {
                    self.metrics.tracking_write_error();
                    tracing::error!(queue_id = %txn.id, error = %err, "intent record not written; deferring");
                    return (
                        Outcome::Deferred(Deferred::Tracking(err)),
                        Reply::temp_failure(),
                    );
                }
                let headers = added_headers(snap, txn, eval);
                let started = Instant::now();
                let sent = self
                    .next_hop()
                    .send(&txn.envelope, headers.as_bytes(), &txn.message)
                    .await;
                self.metrics
                    .upstream_seconds
                    .observe(started.elapsed().as_secs_f64());
                match sent {
                    Ok(delivered) => {
                        self.metrics.upstream_ok();
                        let reply = Reply::queued(&txn.id, &delivered.reply);
                        (Outcome::Delivered(delivered), reply)
                    }
                    Err(err) => {
                        self.metrics.upstream_error(err.kind());
                        if matches!(err, NextHopError::Refused(_)) {
                            self.metrics.upstream_ok();
                        }
                        tracing::warn!(queue_id = %txn.id, error = %err, "next hop did not take the message");
                        deferred(Deferred::NextHop(err))
                    }
                }
            }
        }
    }

    /// Tracks and counts the transaction; a record that cannot be written turns the reply
    /// into 451 (fail closed).
    async fn finish(
        &self,
        snap: &Snapshot,
        txn: &Transaction,
        eval: &Evaluation,
        outcome: Outcome,
        reply: Reply,
    ) -> Reply {
        let record = record::record(snap, txn, eval, &outcome, &reply);
        let delivered = matches!(outcome, Outcome::Delivered(_));
        if let Outcome::Deferred(why) = &outcome {
            self.metrics.deferred(why.fault().name());
        }
        let level = eval.classification.marking.level_name();
        for hit in eval
            .verdict
            .matched
            .iter()
            .filter(|h| h.mode == Mode::Audit)
        {
            self.metrics.audit_hit(DecisionLabels {
                action: hit.action.name().to_string(),
                rule: hit.id.clone(),
                level: level.to_string(),
            });
        }
        let rule = eval
            .verdict
            .rule
            .as_deref()
            .unwrap_or(crate::metrics::NO_RULE);
        self.metrics.decision(DecisionLabels {
            action: eval.verdict.action.name().to_string(),
            rule: rule.to_string(),
            level: level.to_string(),
        });
        for (_, class) in &eval.recipients {
            self.metrics.recipient(class.name());
        }
        self.metrics.message_size(txn.message.len());
        tracing::info!(
            queue_id = %txn.id,
            action = eval.verdict.action.name(),
            rule,
            level,
            reply = %reply,
            "{}",
            record::log_line(&record, self.next_hop().address())
        );
        let completing = if delivered {
            self.store.tracking.append_later(&record, SystemTime::now())
        } else {
            self.store.tracking.append_async(&record, SystemTime::now())
        };
        let completing = match completing.finished() {
            Ok(result) => Appending::done(result),
            Err(waiting) if delivered => {
                // The reply to a delivered message is 250 whatever becomes of this record
                // (invariant 3: its intent is already written), so it does not wait for a
                // shared store's commit; a session then waits for one commit a message, not
                // two. A failure is counted as always.
                let metrics = self.metrics.clone();
                let id = txn.id.clone();
                self.completing.spawn(async move {
                    if let Err(err) = waiting.wait().await {
                        incomplete(&metrics, &id, &err);
                    }
                });
                return reply;
            }
            Err(waiting) => waiting,
        };
        if let Err(err) = completing.wait().await {
            if delivered {
                // A 4xx now would make the sender deliver a second copy (invariant 3).
                incomplete(&self.metrics, &txn.id, &err);
                return reply;
            }
            self.metrics.tracking_write_error();
            tracing::error!(queue_id = %txn.id, error = %err, "tracking record not written; deferring");
            return Reply::temp_failure();
        }
        reply
    }
}

/// A delivered message whose record could not be completed: counted and logged; its intent
/// record stands.
fn incomplete(metrics: &Metrics, queue_id: &str, err: &std::io::Error) {
    metrics.tracking_write_error();
    metrics.tracking_incomplete();
    tracing::error!(queue_id, error = %err, "delivered, but its tracking record could not be completed; the intent record stands");
}

/// A deferral and the reply its fault decides.
fn deferred(why: Deferred) -> (Outcome, Reply) {
    let reply = why.reply();
    (Outcome::Deferred(why), reply)
}

/// Messages up to this size are classified on the session's own task.
const INLINE_CLASSIFY_MAX: u64 = 64 * 1024;

/// Messages over this size are classified one at a time (see `classify_within_budget`).
const LARGE_MESSAGE: u64 = 1024 * 1024;

static LARGE_MESSAGES: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(1)));

/// Classification runs off the async workers and within the configured budget; a message
/// that takes longer (a MIME bomb) is unclassifiable, so it is held, never passed.
async fn classify_within_budget(
    snap: &Arc<Snapshot>,
    message: &Arc<Spool>,
) -> Result<Classification, Unclassifiable> {
    // Small messages classify in microseconds (parts and nesting are capped before
    // parsing); a thread hand-off would cost more than the work.
    let budget = snap.config.classifier.budget;
    if message.len() <= INLINE_CLASSIFY_MAX {
        return snap.classify_by(message, Some(Instant::now() + budget));
    }
    // A large message may hold tens of megabytes while it is read (its view, a decoded
    // attachment, decompressed document parts, up to classifier.max_document_bytes): one
    // at a time, so concurrent large messages cannot take the process past its memory
    // goal. The budget starts once it is this message's turn.
    let permit = if message.len() > LARGE_MESSAGE {
        Some(
            LARGE_MESSAGES
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Unclassifiable::Unavailable)?,
        )
    } else {
        None
    };
    let deadline = Instant::now() + budget;
    let (snap, message) = (snap.clone(), message.clone());
    let task = tokio::task::spawn_blocking(move || {
        // Held until the work stops, even when the session stopped waiting for it.
        let _turn = permit;
        snap.classify_by(&message, Some(deadline))
    });
    match tokio::time::timeout(budget, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(Unclassifiable::Failed(join.to_string())),
        Err(_) => Err(Unclassifiable::TookTooLong(budget)),
    }
}

/// The header fields markgate adds to a message it lets through: the marking it found and
/// any the deciding rule names.
pub fn header_fields(eval: &Evaluation) -> Vec<(String, String)> {
    let mut fields = vec![(
        "X-Markgate-Marking".to_string(),
        eval.classification.marking.level_name().to_string(),
    )];
    fields.extend(eval.verdict.add_headers.iter().cloned());
    fields
}

/// What markgate prepends when it forwards: its Received line, then [`header_fields`].
pub fn added_headers(snap: &Snapshot, txn: &Transaction, eval: &Evaluation) -> String {
    let with = if txn.tls.is_some() { "ESMTPS" } else { "ESMTP" };
    let helo: String = txn
        .client
        .helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let mut out = format!(
        "Received: from {helo} ([{}])\r\n\tby {} (markgate) with {with} id {};\r\n\t{}\r\n",
        txn.client.addr,
        snap.config.hostname,
        txn.id,
        timefmt::rfc5322(txn.received)
    );
    for (name, value) in header_fields(eval) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out
}
