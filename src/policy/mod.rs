//! Policy: the rule file compiled once (regexes built at load, never per message) and the
//! one `decide` that both front ends call. Nothing here knows about SMTP sessions; a
//! verdict carries the reply a front end should give.

pub mod condition;
pub mod schema;

use std::path::Path;

use serde::Serialize;

use crate::directory::Class;
use crate::marking::classify::Classification;
use crate::reply::Reply;
use crate::yaml::{self, YamlError};
use condition::{Compiled, Sets};
pub use schema::Mode;
use schema::{ActionSpec, RuleFile};

/// JSON Schemas for the files people edit, generated from the types that read them, so an
/// editor (VS Code's YAML extension) validates and completes exactly what markgate accepts.
pub fn json_schema(which: SchemaKind) -> String {
    let schema = match which {
        SchemaKind::Rules => schemars::schema_for!(RuleFile),
        SchemaKind::Directory => schemars::schema_for!(crate::directory::DirectoryFile),
    };
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemaKind {
    Rules,
    Directory,
}

/// The default CJSM ruleset, compiled into the binary.
pub const DEFAULT_RULES: &str = include_str!("../../rules/cjsm.yaml");
pub const DEFAULT_RULES_NAME: &str = "rules/cjsm.yaml (embedded)";

/// What happens to the message.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pass,
    Reject,
    Quarantine,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Reject => "reject",
            Action::Quarantine => "quarantine",
        }
    }
}

/// A rule that matched, enforce or audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub id: String,
    pub mode: Mode,
    /// What the rule would do (or did).
    pub action: Action,
}

/// The one decision for a whole transaction.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub action: Action,
    /// The deciding rule; `None` for the default pass.
    pub rule: Option<String>,
    /// For rejects: the rule's reply.
    pub reply: Option<Reply>,
    pub add_headers: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub matched: Vec<Hit>,
}

/// What `decide` reads about a transaction.
pub struct Facts<'a> {
    pub sender: &'a str,
    /// Each envelope recipient with its directory class.
    pub recipients: &'a [(String, Class)],
    pub classification: &'a Classification,
    pub size: u64,
    pub tls: bool,
    /// The directory class of each original sender in `classification.forwarded`, in
    /// its order.
    pub forwarded_from: &'a [Class],
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error("{file}: rule `{rule}`: {message}")]
    Invalid {
        file: String,
        rule: String,
        message: String,
    },
}

/// The placeholders a reject text may use.
const PLACEHOLDERS: [&str; 3] = ["{level}", "{rule}", "{external}"];

/// The first `{…}` in a reject text that is not a placeholder (a typo like `{levl}` would
/// otherwise reach senders as written).
fn unknown_placeholder(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start..];
        let end = after.find('}').map(|e| e + 1).unwrap_or(after.len());
        let found = &after[..end];
        if !PLACEHOLDERS.contains(&found) {
            return Some(found.to_string());
        }
        rest = &after[end..];
    }
    None
}

/// `file:line:column` for an error in rule `id`: the first `quoted` value of `message`
/// within the rule's lines (from its `id:` line to the next rule), else the `id:` line.
fn locate(text: &str, file: &str, id: &str, message: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    fn is_id_line(l: &str) -> Option<&str> {
        let body = l.trim_start();
        let body = body.strip_prefix("- ").unwrap_or(body).trim_start();
        body.strip_prefix("id:").map(str::trim)
    }
    let Some(start) = lines.iter().position(|l| is_id_line(l) == Some(id)) else {
        return format!("{file}:1:1");
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| is_id_line(l).is_some() || (!l.starts_with(' ') && !l.is_empty()))
        .map(|i| start + 1 + i)
        .unwrap_or(lines.len());
    let id_column = lines[start].find("id:").map(|c| c + 1).unwrap_or(1);
    let wanted = message.split('`').nth(1).filter(|w| !w.is_empty());
    if let Some(w) = wanted {
        for (i, line) in lines.iter().enumerate().take(end).skip(start) {
            if let Some(col) = line.find(w) {
                return format!("{file}:{}:{}", i + 1, col + 1);
            }
        }
    }
    format!("{file}:{}:{id_column}", start + 1)
}

/// The compiled rule set.
#[derive(Debug)]
pub struct Policy {
    pub source: String,
    rules: Vec<CompiledRule>,
    sets: Sets,
    pub file: RuleFile,
}

#[derive(Debug)]
struct CompiledRule {
    id: String,
    mode: Mode,
    when: Compiled,
    action: ActionSpec,
    add_headers: Vec<(String, String)>,
    tags: Vec<String>,
}

impl Policy {
    /// A rule's description, as the rule file gives it (for the people reviewing what it
    /// held).
    pub fn description(&self, id: &str) -> Option<String> {
        self.file
            .rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.description.clone())
            .filter(|d| !d.is_empty())
    }

    /// The embedded default ruleset.
    pub fn builtin() -> Result<Policy, PolicyError> {
        Policy::from_str(DEFAULT_RULES, DEFAULT_RULES_NAME)
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| YamlError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Policy::from_str(&text, &path.display().to_string())
    }

    pub fn from_str(text: &str, name: &str) -> Result<Policy, PolicyError> {
        let file: RuleFile = yaml::from_str(text, name)?;
        let mut rules = Vec::with_capacity(file.rules.len());
        let mut patterns = condition::Builder::default();
        let mut seen = std::collections::HashSet::new();
        for rule in &file.rules {
            // Point at the field the message names (its first `quoted` value, found
            // within this rule's lines), else at the rule's own line.
            let invalid = |message: String| PolicyError::Invalid {
                file: locate(text, name, &rule.id, &message),
                rule: rule.id.clone(),
                message,
            };
            if rule.id.is_empty()
                || !rule
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid("id must be letters, digits, - or _".into()));
            }
            if !seen.insert(rule.id.clone()) {
                return Err(invalid("duplicate rule id".into()));
            }
            if let ActionSpec::Reject(r) = &rule.action {
                let class_ok = (400..600).contains(&r.code);
                let status_ok = crate::reply::Status::parse(&r.status)
                    .is_some_and(|s| u16::from(s.class) == r.code / 100);
                if !class_ok {
                    return Err(invalid(format!(
                        "reject code `{}` must be 4xx or 5xx",
                        r.code
                    )));
                }
                if !status_ok {
                    return Err(invalid(format!(
                        "reject status `{}` must be an enhanced status of the same class as \
                         the code {} (e.g. {}.7.1)",
                        r.status,
                        r.code,
                        r.code / 100
                    )));
                }
                if let Some(unknown) = unknown_placeholder(&r.text) {
                    return Err(invalid(format!(
                        "reject text has `{unknown}`; it may use {{level}}, {{rule}} and \
                         {{external}}"
                    )));
                }
            }
            for name in rule.add_headers.keys() {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(invalid(format!("bad header name `{name}`")));
                }
            }
            let when = condition::compile(&rule.when, &mut patterns).map_err(invalid)?;
            rules.push(CompiledRule {
                id: rule.id.clone(),
                mode: rule.mode,
                when,
                action: rule.action.clone(),
                add_headers: rule
                    .add_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.chars().filter(|c| !c.is_control()).collect()))
                    .collect(),
                tags: rule.tags.clone(),
            });
        }
        let sets = patterns.finish().map_err(|message| PolicyError::Invalid {
            file: name.to_string(),
            rule: "(all)".to_string(),
            message,
        })?;
        Ok(Policy {
            source: name.to_string(),
            rules,
            sets,
            file,
        })
    }

    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// First enforce rule whose conditions hold decides; audit rules are recorded and
    /// evaluation goes on; no match is a pass.
    pub fn decide(&self, facts: &Facts) -> Verdict {
        let mut matched = Vec::new();
        let mut tags = Vec::new();
        // Every pattern of every rule, matched once for this message.
        let hits = self.sets.hits(facts);
        for rule in &self.rules {
            if !condition::holds(&rule.when, facts, &hits, &self.sets) {
                continue;
            }
            let action = match &rule.action {
                ActionSpec::Pass => Action::Pass,
                ActionSpec::Quarantine => Action::Quarantine,
                ActionSpec::Reject(_) => Action::Reject,
            };
            matched.push(Hit {
                id: rule.id.clone(),
                mode: rule.mode,
                action,
            });
            tags.extend(rule.tags.iter().cloned());
            if rule.mode == Mode::Audit {
                continue;
            }
            let reply = match &rule.action {
                ActionSpec::Reject(r) => Some(Reply::new(
                    r.code,
                    &r.status,
                    render(&r.text, &rule.id, facts),
                )),
                _ => None,
            };
            return Verdict {
                action,
                rule: Some(rule.id.clone()),
                reply,
                add_headers: rule.add_headers.clone(),
                tags,
                matched,
            };
        }
        Verdict {
            action: Action::Pass,
            rule: None,
            reply: None,
            add_headers: Vec::new(),
            tags,
            matched,
        }
    }
}

fn render(text: &str, rule: &str, facts: &Facts) -> String {
    let external: Vec<&str> = facts
        .recipients
        .iter()
        .filter(|(_, c)| *c == Class::External)
        .map(|(a, _)| a.as_str())
        .take(5)
        .collect();
    text.replace("{level}", facts.classification.marking.level_name())
        .replace("{rule}", rule)
        .replace("{external}", &external.join(", "))
}
