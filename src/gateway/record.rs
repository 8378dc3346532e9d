//! The tracking record: the JSON contract scripts rely on (DESIGN.md, Contracts), built
//! from what the path learnt about one transaction.

use serde_json::json;

use super::{Evaluation, Outcome, Snapshot};
use crate::config::SubjectPolicy;
use crate::smtp::reply::Reply;
use crate::timefmt;
use crate::transaction::Transaction;

/// Control characters in attacker-supplied values are escaped before they reach a record.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
        .replace("\\'", "'")
        .replace("\\\"", "\"")
}

pub(super) fn record(
    snap: &Snapshot,
    txn: &Transaction,
    eval: &Evaluation,
    outcome: &Outcome,
    reply: &Reply,
) -> serde_json::Value {
    use sha2::Digest;
    let c = &eval.classification;
    let subject = c
        .subject
        .as_deref()
        .map(|s| match snap.config.tracking.subject {
            SubjectPolicy::Keep => json!(clean(s)),
            SubjectPolicy::Hash => {
                json!(format!("sha256:{:x}", sha2::Sha256::digest(s.as_bytes())))
            }
            SubjectPolicy::Drop => serde_json::Value::Null,
        });
    let recipients: Vec<_> = if eval.recipients.is_empty() {
        txn.envelope
            .recipients
            .iter()
            .map(|r| json!({"address": clean(r.address()), "class": null}))
            .collect()
    } else {
        eval.recipients
            .iter()
            .map(|(a, class)| json!({"address": clean(a), "class": class.name()}))
            .collect()
    };
    let (outcome_name, next_hop, error) = match outcome {
        Outcome::Delivered(d) => (
            "delivered",
            json!({"reply": d.reply, "queue_id": d.queue_id}),
            None,
        ),
        Outcome::Accepted => ("accepted", serde_json::Value::Null, None),
        Outcome::Held => ("held", serde_json::Value::Null, None),
        Outcome::Refused => ("refused", serde_json::Value::Null, None),
        Outcome::Deferred(e) => ("deferred", serde_json::Value::Null, Some(clean(e))),
        Outcome::HandingOff => (crate::store::index::INTENT, serde_json::Value::Null, None),
    };
    json!({
        "time": timefmt::rfc3339(txn.received),
        "queue_id": txn.id,
        "mta_queue_id": txn.mta_queue_id,
        "front_end": txn.front_end,
        "client": {"addr": txn.client.addr, "helo": clean(&txn.client.helo)},
        "tls": txn.tls,
        "sender": clean(txn.envelope.sender_str()),
        "recipients": recipients,
        "message_id": c.message_id.as_deref().map(clean),
        "subject": subject,
        "size": txn.message.len(),
        "marking": c.marking.to_json(),
        "signature": c.signature,
        "confidentiality_statement": c.confidentiality_statement,
        "matched": eval.verdict.matched,
        "tags": eval.verdict.tags,
        "action": eval.verdict.action.name(),
        "rule": eval.verdict.rule,
        "reply": reply.to_string(),
        "outcome": outcome_name,
        "next_hop": next_hop,
        "error": error,
    })
}
