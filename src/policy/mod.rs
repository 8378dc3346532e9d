//! Policy: the rule file compiled once (regexes built at load, never per message) and the
//! one `decide` that both front ends call. Nothing here knows about SMTP sessions; a
//! verdict carries the reply a front end should give.

pub mod schema;

use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde::Serialize;

use crate::directory::Class;
use crate::marking::classify::Classification;
use crate::smtp::reply::Reply;
use crate::yaml::{self, YamlError};
use schema::{ActionSpec, Condition, Mode, RecipientClasses, RuleFile};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    pub mode: &'static str,
    /// What the rule would do (or did).
    pub action: &'static str,
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
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Yaml(#[from] YamlError),
    #[error("{file}: rule `{rule}`: {message}")]
    Invalid {
        file: String,
        rule: String,
        message: String,
    },
}

/// The compiled rule set.
#[derive(Debug)]
pub struct Policy {
    pub source: String,
    rules: Vec<CompiledRule>,
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

/// A condition with its regexes built.
#[derive(Debug, Default)]
struct Compiled {
    spec: Condition,
    caveat: Vec<Regex>,
    sender: Vec<Regex>,
    recipient: Vec<Regex>,
    header: Vec<(String, Regex)>,
    subject: Option<Regex>,
    attachment_name: Vec<Regex>,
    attachment_type: Vec<Regex>,
    not: Option<Box<Compiled>>,
    any_of: Vec<Compiled>,
}

fn regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("bad regex `{pattern}`: {e}"))
}

fn regexes(patterns: &Option<Vec<String>>) -> Result<Vec<Regex>, String> {
    patterns.iter().flatten().map(|p| regex(p)).collect()
}

fn compile(spec: &Condition) -> Result<Compiled, String> {
    if let Some(levels) = &spec.level {
        for level in levels {
            if crate::marking::Level::from_name(level).is_none()
                && !level.eq_ignore_ascii_case(crate::marking::UNMARKED)
            {
                return Err(format!("unknown level `{level}`"));
            }
        }
    }
    for rank in [spec.rank_at_least, spec.rank_at_most]
        .into_iter()
        .flatten()
    {
        if rank > 5 {
            return Err(format!("rank {rank} is out of range 0..=5"));
        }
    }
    Ok(Compiled {
        caveat: regexes(&spec.caveat)?,
        sender: regexes(&spec.sender)?,
        recipient: regexes(&spec.recipient)?,
        header: spec
            .header
            .iter()
            .flatten()
            .map(|(k, v)| Ok((k.clone(), regex(v)?)))
            .collect::<Result<_, String>>()?,
        subject: spec.subject.as_deref().map(regex).transpose()?,
        attachment_name: regexes(&spec.attachment_name)?,
        attachment_type: regexes(&spec.attachment_type)?,
        not: spec.not.as_deref().map(compile).transpose()?.map(Box::new),
        any_of: spec
            .any_of
            .iter()
            .flatten()
            .map(compile)
            .collect::<Result<_, String>>()?,
        spec: spec.clone(),
    })
}

impl Policy {
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
        let mut seen = std::collections::HashSet::new();
        for rule in &file.rules {
            let invalid = |message: String| {
                // Point at the rule's line so the error reads file:line:column.
                let line = text
                    .lines()
                    .position(|l| {
                        l.trim_start().trim_start_matches("- ").trim_start()
                            == format!("id: {}", rule.id)
                    })
                    .map(|i| i + 1)
                    .unwrap_or(1);
                PolicyError::Invalid {
                    file: format!("{name}:{line}:1"),
                    rule: rule.id.clone(),
                    message,
                }
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
                let status_ok = r
                    .status
                    .split('.')
                    .map(|p| p.parse::<u16>().is_ok())
                    .filter(|ok| *ok)
                    .count()
                    == 3
                    && r.status.starts_with(&(r.code / 100).to_string());
                if !class_ok || !status_ok {
                    return Err(invalid(format!(
                        "reject needs a 4xx/5xx code with a matching status, got {} {}",
                        r.code, r.status
                    )));
                }
            }
            for name in rule.add_headers.keys() {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(invalid(format!("bad header name `{name}`")));
                }
            }
            let when = compile(&rule.when).map_err(invalid)?;
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
        Ok(Policy {
            source: name.to_string(),
            rules,
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
        for rule in &self.rules {
            if !holds(&rule.when, facts) {
                continue;
            }
            let action = match &rule.action {
                ActionSpec::Pass => Action::Pass,
                ActionSpec::Quarantine => Action::Quarantine,
                ActionSpec::Reject(_) => Action::Reject,
            };
            matched.push(Hit {
                id: rule.id.clone(),
                mode: rule.mode.name(),
                action: action.name(),
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

fn classes_hold(spec: &RecipientClasses, facts: &Facts) -> bool {
    let classes: Vec<Class> = facts.recipients.iter().map(|(_, c)| *c).collect();
    if let Some(any) = &spec.any {
        if !classes.iter().any(|c| any.contains(c)) {
            return false;
        }
    }
    if let Some(all) = &spec.all {
        if classes.is_empty() || !classes.iter().all(|c| all.contains(c)) {
            return false;
        }
    }
    if let Some(none) = &spec.none {
        if classes.iter().any(|c| none.contains(c)) {
            return false;
        }
    }
    true
}

/// Every condition given must hold. Cheap checks come first.
fn holds(c: &Compiled, f: &Facts) -> bool {
    let s = &c.spec;
    let marking = &f.classification.marking;
    let check = |want: Option<bool>, have: bool| want.is_none_or(|w| w == have);
    if !check(s.unmarked, marking.level.is_none())
        || !check(s.marked, marking.is_sensitive())
        || !check(s.null_sender, f.sender.is_empty())
        || !check(s.signature, f.classification.signature)
        || !check(
            s.confidentiality_statement,
            f.classification.confidentiality_statement,
        )
        || !check(s.tls, f.tls)
    {
        return false;
    }
    if let Some(levels) = &s.level {
        if !levels
            .iter()
            .any(|l| l.eq_ignore_ascii_case(marking.level_name()))
        {
            return false;
        }
    }
    if let Some(min) = s.rank_at_least {
        if marking.rank().is_none_or(|r| r < min) {
            return false;
        }
    }
    if let Some(max) = s.rank_at_most {
        if marking.rank().is_none_or(|r| r > max) {
            return false;
        }
    }
    if let Some(min) = s.size_at_least {
        if f.size < min {
            return false;
        }
    }
    if let Some(max) = s.size_at_most {
        if f.size > max {
            return false;
        }
    }
    if let Some(descriptors) = &s.descriptor {
        if !descriptors
            .iter()
            .any(|d| marking.descriptors.contains(&d.to_uppercase()))
        {
            return false;
        }
    }
    if !c.caveat.is_empty()
        && !marking
            .caveats
            .iter()
            .any(|cv| c.caveat.iter().any(|r| r.is_match(cv)))
    {
        return false;
    }
    if let Some(classes) = &s.recipients {
        if !classes_hold(classes, f) {
            return false;
        }
    }
    if !c.sender.is_empty() && !c.sender.iter().any(|r| r.is_match(f.sender)) {
        return false;
    }
    if !c.recipient.is_empty()
        && !f
            .recipients
            .iter()
            .any(|(a, _)| c.recipient.iter().any(|r| r.is_match(a)))
    {
        return false;
    }
    if let Some(re) = &c.subject {
        if !re.is_match(f.classification.subject.as_deref().unwrap_or("")) {
            return false;
        }
    }
    for (name, re) in &c.header {
        let found = f
            .classification
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && re.is_match(v));
        if !found {
            return false;
        }
    }
    let attachments = &f.classification.attachments;
    if !c.attachment_name.is_empty()
        && !attachments
            .iter()
            .any(|a| c.attachment_name.iter().any(|r| r.is_match(&a.name)))
    {
        return false;
    }
    if !c.attachment_type.is_empty()
        && !attachments.iter().any(|a| {
            c.attachment_type
                .iter()
                .any(|r| r.is_match(&a.content_type))
        })
    {
        return false;
    }
    if let Some(not) = &c.not {
        if holds(not, f) {
            return false;
        }
    }
    if s.any_of.is_some() && !c.any_of.iter().any(|sub| holds(sub, f)) {
        return false;
    }
    true
}
