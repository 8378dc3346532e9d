//! The tracking record of one transaction (DESIGN.md, Contracts), built from what the path
//! learnt about it, and the one log line per message, built from the record so that log
//! and record cannot disagree.

use super::{Evaluation, Outcome, Snapshot};
use crate::config::SubjectPolicy;
use crate::directory::Class;
use crate::marking::Marking;
use crate::reply::Reply;
use crate::store::record::{
    ClientRecord, EvidenceRecord, ForwardedRecord, MarkingRecord, MatchedRecord, NextHopRecord,
    RecipientRecord, TlsRecord, TrackingRecord, INTENT,
};
use crate::timefmt;
use crate::transaction::Transaction;

/// Control characters in attacker-supplied values are escaped before they reach a record.
pub(crate) fn clean(s: &str) -> String {
    // Printable ASCII bar the backslash comes out as it went in (quotes are escaped and
    // restored below); every record carries several such values, so they are copied once.
    if s.bytes().all(|b| (0x20..0x7F).contains(&b) && b != b'\\') {
        return s.to_string();
    }
    s.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
        .replace("\\'", "'")
        .replace("\\\"", "\"")
}

/// The marking as the contracts show it.
pub fn marking_record(m: &Marking) -> MarkingRecord {
    MarkingRecord {
        level: m.level_name().to_string(),
        rank: m.rank(),
        descriptors: m.descriptors.iter().cloned().collect(),
        caveats: m.caveats.iter().cloned().collect(),
        evidence: m
            .evidence
            .iter()
            .map(|e| EvidenceRecord {
                source: e.source.clone(),
                text: e.text.clone(),
                level: e.level.clone(),
            })
            .collect(),
    }
}

/// Every rule hit as a record lists it.
pub fn matched_records(hits: &[crate::policy::Hit]) -> Vec<MatchedRecord> {
    hits.iter()
        .map(|h| MatchedRecord {
            id: h.id.clone(),
            mode: h.mode.name().to_string(),
            action: h.action.name().to_string(),
        })
        .collect()
}

/// The client as a record names it (HELO escaped).
pub fn client_record(txn: &Transaction) -> ClientRecord {
    ClientRecord {
        addr: txn.client.addr.clone(),
        helo: clean(&txn.client.helo),
    }
}

/// The earlier messages a message carried, with their senders' classes: for the record and
/// `classify`. CJSM senders first, then trusted, then external, at most
/// [`MAX_FORWARDED`]: a message of ten thousand quoted blocks must not make a record of
/// megabytes, and what a reviewer needs (the CJSM correspondence) is never cut for it.
pub fn forwarded_records(eval: &Evaluation) -> Vec<ForwardedRecord> {
    let mut found: Vec<_> = eval
        .classification
        .forwarded
        .iter()
        .zip(&eval.forwarded_from)
        .collect();
    found.sort_by_key(|(_, class)| match class {
        Class::Cjsm => 0,
        Class::Trusted => 1,
        Class::External => 2,
    });
    found
        .into_iter()
        .take(MAX_FORWARDED)
        .map(|(f, class)| ForwardedRecord {
            source: clean(&f.source),
            from: clean(&f.from),
            class: class.name().to_string(),
            to: f.to.iter().take(MAX_FORWARDED).map(|t| clean(t)).collect(),
        })
        .collect()
}

/// The most original senders (and recipients of each) a record lists.
pub const MAX_FORWARDED: usize = 50;

pub(super) fn record(
    snap: &Snapshot,
    txn: &Transaction,
    eval: &Evaluation,
    outcome: &Outcome,
    reply: &Reply,
) -> TrackingRecord {
    use sha2::Digest;
    let c = &eval.classification;
    let subject = c
        .subject
        .as_deref()
        .and_then(|s| match snap.config.tracking.subject {
            SubjectPolicy::Keep => Some(clean(s)),
            SubjectPolicy::Hash => Some(format!("sha256:{:x}", sha2::Sha256::digest(s.as_bytes()))),
            SubjectPolicy::Drop => None,
        });
    let recipients: Vec<RecipientRecord> = if eval.recipients.is_empty() {
        txn.envelope
            .recipients
            .iter()
            .map(|r| RecipientRecord {
                address: clean(r.address()),
                class: None,
            })
            .collect()
    } else {
        eval.recipients
            .iter()
            .map(|(a, class)| RecipientRecord {
                address: clean(a),
                class: Some(class.name().to_string()),
            })
            .collect()
    };
    let (next_hop, error) = match outcome {
        Outcome::Delivered(d) => (
            Some(NextHopRecord {
                reply: d.reply.clone(),
                queue_id: d.queue_id.clone(),
            }),
            None,
        ),
        Outcome::Deferred(e) => (None, Some(clean(&e.to_string()))),
        _ => (None, None),
    };
    TrackingRecord {
        time: timefmt::rfc3339(txn.received),
        queue_id: Some(txn.id.clone()),
        mta_queue_id: txn.mta_queue_id.clone(),
        front_end: Some(txn.front_end.name().to_string()),
        client: Some(client_record(txn)),
        tls: txn.tls.as_ref().map(|t| TlsRecord {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
        }),
        sender: clean(txn.envelope.sender_str()),
        recipients,
        message_id: c.message_id.as_deref().map(clean),
        subject,
        size: txn.message.len(),
        marking: Some(marking_record(&c.marking)),
        signature: Some(c.signature),
        confidentiality_statement: Some(c.confidentiality_statement),
        opaque: c.opaque.iter().map(|o| clean(o)).collect(),
        unknown_labels: c.unknown_labels.iter().map(|o| clean(o)).collect(),
        forwarded: forwarded_records(eval),
        matched: matched_records(&eval.verdict.matched),
        tags: eval.verdict.tags.clone(),
        action: eval.verdict.action.name().to_string(),
        rule: eval.verdict.rule.clone(),
        reply: Some(reply.to_string()),
        outcome: outcome.name().to_string(),
        next_hop,
        error,
        ..TrackingRecord::default()
    }
}

/// The one log line per message, in the shape Postfix operators grep for:
/// `QUEUEID: from=<…>, to=<…>, message-id=<…>, action=…, rule=…, level=…, relay=…,
/// status=… (reply)`. Values were escaped when the record was built.
pub(crate) fn log_line(record: &TrackingRecord, next_hop: &str) -> String {
    let to: Vec<&str> = record.addresses().collect();
    let relay = match record.outcome.as_str() {
        "delivered" | INTENT => next_hop,
        "held" => "quarantine",
        "accepted" => "mta",
        _ => "none",
    };
    format!(
        "{}: from=<{}>, to=<{}>, message-id={}, action={}, rule={}, level={}, relay={relay}, status={} ({})",
        record.queue_id.as_deref().unwrap_or_default(),
        record.sender,
        to.join(">,<"),
        record.message_id.as_deref().unwrap_or("<>"),
        record.action,
        record.rule.as_deref().unwrap_or(crate::metrics::NO_RULE),
        record.level(),
        record.outcome,
        record.reply.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::clean;

    /// `clean` without its fast path.
    fn escaped(s: &str) -> String {
        s.chars()
            .flat_map(char::escape_default)
            .collect::<String>()
            .replace("\\'", "'")
            .replace("\\\"", "\"")
    }

    #[test]
    fn the_fast_path_gives_what_escaping_gives() {
        let mut cases: Vec<String> = (0u8..=0x7F).map(|b| format!("a{}b", b as char)).collect();
        cases.extend(
            [
                "",
                "jane@police.cjsm.net",
                "it's \"quoted\"",
                "\\'",
                "\\\"",
                "a\\b",
                "tab\there",
                "caf\u{e9}",
                "\u{202E}x",
                "line\r\nbreak",
            ]
            .map(String::from),
        );
        for s in &cases {
            assert_eq!(clean(s), escaped(s), "{s:?}");
        }
    }
}
