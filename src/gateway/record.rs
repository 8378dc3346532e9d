//! The tracking record: the JSON contract scripts rely on (DESIGN.md, Contracts), built
//! from what the path learnt about one transaction.

use serde_json::json;

use super::{Evaluation, Outcome, Snapshot};
use crate::config::SubjectPolicy;
use crate::smtp::reply::Reply;
use crate::timefmt;
use crate::transaction::Transaction;

/// Control characters in attacker-supplied values are escaped before they reach a record.
pub(crate) fn clean(s: &str) -> String {
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
        "opaque": c.opaque.iter().map(|o| clean(o)).collect::<Vec<_>>(),
        "unknown_labels": c.unknown_labels.iter().map(|o| clean(o)).collect::<Vec<_>>(),
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

/// The one log line per message, in the shape Postfix operators grep for:
/// `QUEUEID: from=<…>, to=<…>, message-id=<…>, action=…, rule=…, level=…, relay=…,
/// status=… (reply)`. Built from the record, so log and record cannot disagree; values were
/// escaped when the record was built.
pub(crate) fn log_line(record: &serde_json::Value, next_hop: &str) -> String {
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let to: Vec<String> = record
        .get("recipients")
        .and_then(|r| r.as_array())
        .map(|list| list.iter().map(|r| text(r, "address")).collect())
        .unwrap_or_default();
    let outcome = text(record, "outcome");
    let relay = match outcome.as_str() {
        "delivered" | crate::store::index::INTENT => next_hop,
        "held" => "quarantine",
        "accepted" => "mta",
        _ => "none",
    };
    let rule = record
        .get("rule")
        .and_then(|r| r.as_str())
        .unwrap_or(crate::metrics::NO_RULE);
    let level = record
        .get("marking")
        .map(|m| text(m, "level"))
        .unwrap_or_default();
    format!(
        "{}: from=<{}>, to=<{}>, message-id={}, action={}, rule={rule}, level={level}, relay={relay}, status={outcome} ({})",
        text(record, "queue_id"),
        text(record, "sender"),
        to.join(">,<"),
        record
            .get("message_id")
            .and_then(|m| m.as_str())
            .unwrap_or("<>"),
        text(record, "action"),
        text(record, "reply"),
    )
}
