//! The tracking record, typed: the JSON contract scripts rely on (DESIGN.md, Contracts).
//! The gateway writes one per transaction, every operation (release, delete, purge,
//! redact) one per act, and search and the tests read them back as this type. Field names
//! are the contract; a field a record of another kind does not carry is `null` (or, for the
//! operation-only fields, absent), never renamed. Every field has a default, so records
//! written by earlier versions (and by the tracking bench) still read.

use serde::{Deserialize, Serialize};

/// The `outcome` of an intent record: written before a message is handed to the next hop
/// and superseded by the record that says how it went. If that one could not be written,
/// the intent is what search shows.
pub const INTENT: &str = "handing-off";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackingRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// markgate's queue id; `null` only for records about no message (a redaction).
    pub queue_id: Option<String>,
    pub mta_queue_id: Option<String>,
    /// `smtp`, `milter`, `release`; `null` for the operations.
    pub front_end: Option<String>,
    pub client: Option<ClientRecord>,
    pub tls: Option<TlsRecord>,
    pub sender: String,
    pub recipients: Vec<RecipientRecord>,
    pub message_id: Option<String>,
    /// Kept, hashed (`sha256:…`) or `null`, as `tracking.subject` says.
    pub subject: Option<String>,
    pub size: u64,
    pub marking: Option<MarkingRecord>,
    pub signature: Option<bool>,
    pub confidentiality_statement: Option<bool>,
    pub opaque: Vec<String>,
    pub unknown_labels: Vec<String>,
    /// Earlier messages the message carried (inline forwards, quoted replies, attached
    /// messages): where, the original sender and its class, the original recipients.
    pub forwarded: Vec<ForwardedRecord>,
    /// Every rule that matched, enforce or audit.
    pub matched: Vec<MatchedRecord>,
    pub tags: Vec<String>,
    /// `pass`, `reject`, `quarantine`, or an operation: `delete`, `purge`, `redact`.
    pub action: String,
    /// The deciding rule, or `null`.
    pub rule: Option<String>,
    pub reply: Option<String>,
    /// `delivered`, `accepted`, `held`, `refused`, `deferred`, `handing-off`, `released`,
    /// `deleted`, `purged`, `redacted`.
    pub outcome: String,
    pub next_hop: Option<NextHopRecord>,
    pub error: Option<String>,
    /// Who did an operation, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// A redaction's audit: the keyed hash that replaced the address, the day it
    /// redacted before, and how many records and files it rewrote or left alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted_as: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub too_recent: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientRecord {
    pub addr: String,
    pub helo: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsRecord {
    pub version: String,
    pub cipher: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecipientRecord {
    pub address: String,
    /// `cjsm`, `trusted` or `external`; `null` when the message was refused before the
    /// directory was asked.
    pub class: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MarkingRecord {
    /// The canonical name (`RESTRICTED`, `UNMARKED`, …).
    pub level: String,
    /// `null` for UNMARKED (it is not rank 0).
    pub rank: Option<u8>,
    pub descriptors: Vec<String>,
    pub caveats: Vec<String>,
    pub evidence: Vec<EvidenceRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvidenceRecord {
    pub source: String,
    pub text: String,
    pub level: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForwardedRecord {
    /// `inline-forward`, `quoted`, `attached[N]`, prefixed like marking evidence.
    pub source: String,
    pub from: String,
    /// `cjsm`, `trusted` or `external`.
    pub class: String,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchedRecord {
    pub id: String,
    /// `enforce` or `audit`.
    pub mode: String,
    pub action: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NextHopRecord {
    pub reply: String,
    pub queue_id: Option<String>,
}

impl TrackingRecord {
    /// The envelope recipients' addresses.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.recipients.iter().map(|r| r.address.as_str())
    }

    /// The marking's level name (`UNMARKED` without one).
    pub fn level(&self) -> &str {
        self.marking
            .as_ref()
            .map(|m| m.level.as_str())
            .unwrap_or("UNMARKED")
    }

    pub fn is_intent(&self) -> bool {
        self.outcome == INTENT
    }
}

/// Drops each intent record that a later record of the same queue id completes.
pub fn supersede_intents(records: Vec<TrackingRecord>) -> Vec<TrackingRecord> {
    let superseded = superseded_intents(&records);
    records
        .into_iter()
        .zip(superseded)
        .filter(|(_, gone)| !gone)
        .map(|(r, _)| r)
        .collect()
}

/// For each record in order, whether it is an intent that a later record of the same queue
/// id completes (so a reader, or the index, leaves it out).
pub fn superseded_intents<R: std::borrow::Borrow<TrackingRecord>>(records: &[R]) -> Vec<bool> {
    use std::collections::HashMap;
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(q) = &r.borrow().queue_id {
            last.insert(q, i);
        }
    }
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r.borrow();
            r.is_intent()
                && r.queue_id
                    .as_deref()
                    .is_some_and(|q| last.get(q) != Some(&i))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the gateway and the operations wrote them before the record was typed
    /// (taken from a run of that version): each reads, and a gateway record writes back
    /// exactly as it was, bar the fields added since (empty: `forwarded`).
    const OLD_PASS: &str = include_str!("record_fixtures/pass.json");
    const OLD_REJECT: &str = include_str!("record_fixtures/reject.json");
    const OLD_RELEASE: &str = include_str!("record_fixtures/release.json");
    const OLD_REDACT: &str = include_str!("record_fixtures/redact.json");

    #[test]
    fn a_record_written_by_the_untyped_code_round_trips() {
        for old in [OLD_PASS, OLD_REJECT] {
            let value: serde_json::Value = serde_json::from_str(old.trim()).unwrap();
            let typed: TrackingRecord = serde_json::from_value(value.clone()).unwrap();
            let mut again = serde_json::to_value(&typed).unwrap();
            assert_eq!(again["forwarded"], serde_json::json!([]));
            again.as_object_mut().unwrap().remove("forwarded");
            assert_eq!(again, value);
        }
    }

    #[test]
    fn operation_records_of_the_untyped_code_read_and_keep_their_fields() {
        let release: TrackingRecord = serde_json::from_str(OLD_RELEASE.trim()).unwrap();
        assert_eq!(release.outcome, "released");
        assert!(release.released_by.is_some() && release.by.is_some());
        assert!(release.next_hop.is_some());
        let redact: TrackingRecord = serde_json::from_str(OLD_REDACT.trim()).unwrap();
        assert_eq!(redact.action, "redact");
        assert_eq!(redact.queue_id, None);
        for old in [OLD_RELEASE, OLD_REDACT] {
            let value: serde_json::Value = serde_json::from_str(old.trim()).unwrap();
            let typed: TrackingRecord = serde_json::from_value(value.clone()).unwrap();
            let back = serde_json::to_value(&typed).unwrap();
            for (key, v) in value.as_object().unwrap() {
                assert_eq!(&back[key], v, "{key}");
            }
        }
    }
}
