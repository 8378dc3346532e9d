//! The rule file as security teams write it. Every struct denies unknown keys: a misspelt
//! condition must be an error, never a condition silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::directory::Class;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub rules: Vec<Rule>,
    /// Examples that `markgate check --run-tests` runs against these rules.
    #[serde(default)]
    pub tests: Vec<RuleTest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Record what the rule would have done; let the next rule decide.
    Audit,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub when: Condition,
    pub action: ActionSpec,
    /// Headers added to the message when it passes (or is quarantined).
    #[serde(default)]
    pub add_headers: BTreeMap<String, String>,
    /// Labels recorded in the tracking log.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ActionSpec {
    Pass,
    Quarantine,
    Reject(RejectSpec),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectSpec {
    #[serde(default = "default_code")]
    pub code: u16,
    #[serde(default = "default_status")]
    pub status: String,
    /// May use `{level}`, `{rule}`, `{external}` (the external recipients).
    pub text: String,
}

fn default_code() -> u16 {
    550
}
fn default_status() -> String {
    "5.7.1".to_string()
}

/// Recipient-class tests: any / all / none of the recipients are in these classes.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientClasses {
    pub any: Option<Vec<Class>>,
    pub all: Option<Vec<Class>>,
    pub none: Option<Vec<Class>>,
}

/// Conditions of a rule; every one given must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The message's level is one of these (canonical names, or `UNMARKED`).
    pub level: Option<Vec<String>>,
    pub rank_at_least: Option<u8>,
    pub rank_at_most: Option<u8>,
    /// No marking anywhere.
    pub unmarked: Option<bool>,
    /// Marked as sensitive (rank 1 or more).
    pub marked: Option<bool>,
    /// Any of these descriptors present.
    pub descriptor: Option<Vec<String>>,
    /// Any caveat matching one of these regexes (case-insensitive).
    pub caveat: Option<Vec<String>>,
    pub recipients: Option<RecipientClasses>,
    /// Envelope sender matches any of these regexes (case-insensitive).
    pub sender: Option<Vec<String>>,
    /// Any envelope recipient matches any of these regexes (case-insensitive).
    pub recipient: Option<Vec<String>>,
    /// Need to know: at least this many envelope recipients (in this transaction; a
    /// client that splits one message over several transactions is counted per
    /// transaction).
    pub recipient_count_at_least: Option<usize>,
    /// Need to know: at least this many addresses in To, Cc and Bcc (a message *addressed*
    /// to a crowd, whatever its envelope).
    pub addressed_count_at_least: Option<usize>,
    /// Need to know: an envelope recipient or an address in To, Cc or Bcc matches one of
    /// these regexes (case-insensitive): distribution lists such as `^all-staff@`.
    pub recipient_list: Option<Vec<String>>,
    /// Forwarded correspondence: the message carries an earlier message (an inline
    /// forward, a quoted reply with its attribution, an attached message) whose original
    /// sender is in one of these classes, by the directory.
    pub forwards_from: Option<Vec<Class>>,
    pub null_sender: Option<bool>,
    /// Header name → regex on its decoded value; each must match some header of that name.
    pub header: Option<BTreeMap<String, String>>,
    /// Regex on the decoded Subject.
    pub subject: Option<String>,
    /// Any attachment name matches any of these regexes (case-insensitive).
    pub attachment_name: Option<Vec<String>>,
    /// Any attachment media type matches any of these regexes (case-insensitive).
    pub attachment_type: Option<Vec<String>>,
    pub size_at_least: Option<u64>,
    pub size_at_most: Option<u64>,
    /// A signature block (phone number or e-mail address) is present.
    pub signature: Option<bool>,
    pub confidentiality_statement: Option<bool>,
    /// Some content could not be inspected: an encrypted Office file, a password-protected
    /// zip, an encrypted PDF, an S/MIME-enveloped or PGP-encrypted body, a legacy Office
    /// file.
    pub opaque: Option<bool>,
    /// A document carries a sensitivity label whose GUID `classifier.msip_labels` does
    /// not map to a marking.
    pub label_unknown: Option<bool>,
    /// The client connection used TLS.
    pub tls: Option<bool>,
    pub not: Option<Box<Condition>>,
    pub any_of: Option<Vec<Condition>>,
}

/// One example in a rule file's `tests:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    pub name: String,
    /// A message file, relative to the rule file.
    pub file: Option<PathBuf>,
    /// Or the message inline.
    pub message: Option<String>,
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default)]
    pub to: Vec<String>,
    pub expect: Expectation,
}

fn default_from() -> String {
    "sender@example.cjsm.net".to_string()
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `pass`, `reject` or `quarantine`.
    pub action: super::Action,
    #[serde(default)]
    pub rule: Option<String>,
}
