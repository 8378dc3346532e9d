//! What is kept beside a held message: who sent it to whom, why it was held, its marking,
//! and (once a release began) who released it. Typed, as the tracking record is, and
//! shared by every quarantine backend.

use serde::{Deserialize, Serialize};

use super::record::{ClientRecord, MarkingRecord};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub time: String,
    pub client: ClientRecord,
    pub sender: String,
    pub recipients: Vec<String>,
    /// The decoded Subject, control characters escaped (older entries have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
    pub level: String,
    pub marking: MarkingRecord,
    pub size: u64,
    pub sha256: String,
    /// Set once a release was attempted: who and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Release>,
    /// The MTA's queue id when the MTA itself holds the message (milter mode): the MTA's
    /// copy is the one to release, and markgate's is the record of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mta_queue_id: Option<String>,
}

/// A release under way: written durably before the first byte is sent, so an interrupted
/// release is not repeated without `--force`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub by: String,
    pub time: String,
    /// `sending` until the next hop answers.
    pub state: String,
}

/// How a claim ended, for the audit: `released`, `deleted` or `purged`, by whom, why.
#[derive(Debug, Clone, Copy)]
pub struct Done<'a> {
    pub outcome: &'a str,
    pub by: &'a str,
    pub reason: Option<&'a str>,
}

/// Which held messages a listing wants; every field given must match.
#[derive(Debug, Clone, Default)]
pub struct HeldFilter {
    /// RFC 3339; held at or after.
    pub since: Option<String>,
    /// RFC 3339; held before.
    pub until: Option<String>,
    pub sender: Option<super::AddressMatch>,
    pub recipient: Option<super::AddressMatch>,
    /// The newest this many (the list stays oldest first).
    pub limit: Option<usize>,
}

impl HeldFilter {
    pub fn matches(&self, m: &Meta) -> bool {
        self.since
            .as_ref()
            .is_none_or(|s| m.time.as_str() >= s.as_str())
            && self
                .until
                .as_ref()
                .is_none_or(|u| m.time.as_str() < u.as_str())
            && self.sender.as_ref().is_none_or(|s| s.matches(&m.sender))
            && self
                .recipient
                .as_ref()
                .is_none_or(|r| m.recipients.iter().any(|a| r.matches(a)))
    }
}
