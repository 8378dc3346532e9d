//! Conditions compiled for speed: every regex of every rule goes into one `RegexSet` per
//! kind (subject, sender, recipient, distribution list, attachment name and type, caveat), so a message is
//! matched against all of them in one pass per string, however many rules there are. A
//! condition then holds only indices into the per-message match results.

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::schema::{Condition, RecipientClasses};
use super::Facts;
use crate::directory::Class;

fn check_regex(pattern: &str) -> Result<(), String> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| format!("bad regex `{pattern}`: {e}"))
}

/// Collects the patterns of one kind while rules compile.
#[derive(Debug, Default)]
struct Patterns(Vec<String>);

impl Patterns {
    fn add(&mut self, pattern: &str) -> Result<usize, String> {
        check_regex(pattern)?;
        self.0.push(pattern.to_string());
        Ok(self.0.len() - 1)
    }

    fn add_all(&mut self, patterns: &Option<Vec<String>>) -> Result<Vec<usize>, String> {
        patterns.iter().flatten().map(|p| self.add(p)).collect()
    }

    fn build(self) -> Result<RegexSet, String> {
        RegexSetBuilder::new(&self.0)
            .case_insensitive(true)
            .size_limit(BUDGET)
            .build()
            .map_err(|e| format!("rule regexes: {e}"))
    }
}

/// The pattern collections while a rule file compiles.
#[derive(Debug, Default)]
pub struct Builder {
    subject: Patterns,
    sender: Patterns,
    recipient: Patterns,
    recipient_list: Patterns,
    attachment_name: Patterns,
    attachment_type: Patterns,
    caveat: Patterns,
    header: Patterns,
}

/// All regexes of a rule file, one set per kind.
#[derive(Debug)]
pub struct Sets {
    subject: RegexSet,
    sender: RegexSet,
    recipient: RegexSet,
    recipient_list: RegexSet,
    attachment_name: RegexSet,
    attachment_type: RegexSet,
    caveat: RegexSet,
    /// Header patterns; matched per header value of the named header.
    header: Vec<regex::Regex>,
}

/// What all the regexes of one rule file may take, compiled, together: a file of many
/// patterns that are each within the per-pattern limit must not take gigabytes (and tens of
/// seconds) to load.
const BUDGET: usize = 64 << 20;

impl Builder {
    pub fn finish(self) -> Result<Sets, String> {
        // Every pattern of every kind, headers included, in one set first: compiling stops
        // as soon as the budget is spent, so an oversized file fails fast.
        let all: Vec<&String> = [
            &self.subject,
            &self.sender,
            &self.recipient,
            &self.recipient_list,
            &self.attachment_name,
            &self.attachment_type,
            &self.caveat,
            &self.header,
        ]
        .iter()
        .flat_map(|p| p.0.iter())
        .collect();
        RegexSetBuilder::new(all)
            .case_insensitive(true)
            .size_limit(BUDGET)
            .build()
            .map_err(|e| {
                format!(
                    "the rule file's regexes together exceed the {} MiB budget: {e}",
                    BUDGET >> 20
                )
            })?;
        let header = self
            .header
            .0
            .iter()
            .map(|p| {
                RegexBuilder::new(p)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Sets {
            subject: self.subject.build()?,
            sender: self.sender.build()?,
            recipient: self.recipient.build()?,
            recipient_list: self.recipient_list.build()?,
            attachment_name: self.attachment_name.build()?,
            attachment_type: self.attachment_type.build()?,
            caveat: self.caveat.build()?,
            header,
        })
    }
}

/// Which patterns matched this message: computed once per message, read by every rule.
pub struct Hits {
    subject: Vec<bool>,
    sender: Vec<bool>,
    recipient: Vec<bool>,
    recipient_list: Vec<bool>,
    attachment_name: Vec<bool>,
    attachment_type: Vec<bool>,
    caveat: Vec<bool>,
}

fn any_of_set<'a>(set: &RegexSet, values: impl Iterator<Item = &'a str>) -> Vec<bool> {
    let mut hits = vec![false; set.len()];
    if set.is_empty() {
        return hits;
    }
    for value in values {
        for i in set.matches(value).into_iter() {
            hits[i] = true;
        }
    }
    hits
}

impl Sets {
    pub fn hits(&self, f: &Facts) -> Hits {
        let c = f.classification;
        Hits {
            subject: any_of_set(
                &self.subject,
                std::iter::once(c.subject.as_deref().unwrap_or("")),
            ),
            sender: any_of_set(&self.sender, std::iter::once(f.sender)),
            recipient: any_of_set(
                &self.recipient,
                f.recipients.iter().map(|(a, _)| a.as_str()),
            ),
            recipient_list: any_of_set(
                &self.recipient_list,
                f.recipients
                    .iter()
                    .map(|(a, _)| a.as_str())
                    .chain(c.header_recipients.iter().map(String::as_str)),
            ),
            attachment_name: any_of_set(
                &self.attachment_name,
                c.attachments.iter().map(|a| a.name.as_str()),
            ),
            attachment_type: any_of_set(
                &self.attachment_type,
                c.attachments.iter().map(|a| a.content_type.as_str()),
            ),
            caveat: any_of_set(&self.caveat, c.marking.caveats.iter().map(String::as_str)),
        }
    }
}

/// A condition with its patterns as indices into [`Sets`].
#[derive(Debug, Default)]
pub struct Compiled {
    spec: Condition,
    subject: Option<usize>,
    sender: Vec<usize>,
    recipient: Vec<usize>,
    recipient_list: Vec<usize>,
    attachment_name: Vec<usize>,
    attachment_type: Vec<usize>,
    caveat: Vec<usize>,
    header: Vec<(String, usize)>,
    descriptors: Vec<String>,
    not: Option<Box<Compiled>>,
    any_of: Vec<Compiled>,
}

pub fn compile(spec: &Condition, b: &mut Builder) -> Result<Compiled, String> {
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
            return Err(format!("rank `{rank}` is out of range 0..=5"));
        }
    }
    let header = spec
        .header
        .iter()
        .flatten()
        .map(|(k, v)| Ok((k.clone(), b.header.add(v)?)))
        .collect::<Result<_, String>>()?;
    Ok(Compiled {
        subject: spec
            .subject
            .as_deref()
            .map(|p| b.subject.add(p))
            .transpose()?,
        sender: b.sender.add_all(&spec.sender)?,
        recipient: b.recipient.add_all(&spec.recipient)?,
        recipient_list: b.recipient_list.add_all(&spec.recipient_list)?,
        attachment_name: b.attachment_name.add_all(&spec.attachment_name)?,
        attachment_type: b.attachment_type.add_all(&spec.attachment_type)?,
        caveat: b.caveat.add_all(&spec.caveat)?,
        header,
        descriptors: spec
            .descriptor
            .iter()
            .flatten()
            .map(|d| d.to_uppercase())
            .collect(),
        not: spec
            .not
            .as_deref()
            .map(|n| compile(n, b))
            .transpose()?
            .map(Box::new),
        any_of: spec
            .any_of
            .iter()
            .flatten()
            .map(|c| compile(c, b))
            .collect::<Result<_, String>>()?,
        spec: spec.clone(),
    })
}

fn classes_hold(spec: &RecipientClasses, facts: &Facts) -> bool {
    let mut classes = facts.recipients.iter().map(|(_, c)| *c);
    let any_ok = spec
        .any
        .as_ref()
        .is_none_or(|any| classes.clone().any(|c| any.contains(&c)));
    let all_ok = spec.all.as_ref().is_none_or(|all| {
        !facts.recipients.is_empty() && classes.clone().all(|c| all.contains(&c))
    });
    let none_ok = spec
        .none
        .as_ref()
        .is_none_or(|none| !classes.any(|c: Class| none.contains(&c)));
    any_ok && all_ok && none_ok
}

/// Every condition given must hold. Cheap checks come first.
pub fn holds(c: &Compiled, f: &Facts, hits: &Hits, sets: &Sets) -> bool {
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
        || !check(s.opaque, !f.classification.opaque.is_empty())
        || !check(s.label_unknown, !f.classification.unknown_labels.is_empty())
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
    if s.rank_at_least
        .is_some_and(|min| marking.rank().is_none_or(|r| r < min))
        || s.rank_at_most
            .is_some_and(|max| marking.rank().is_none_or(|r| r > max))
        || s.size_at_least.is_some_and(|min| f.size < min)
        || s.size_at_most.is_some_and(|max| f.size > max)
        || s.recipient_count_at_least
            .is_some_and(|min| f.recipients.len() < min)
        || s.addressed_count_at_least
            .is_some_and(|min| f.classification.header_recipients.len() < min)
    {
        return false;
    }
    if !c.descriptors.is_empty()
        && !c
            .descriptors
            .iter()
            .any(|d| marking.descriptors.contains(d))
    {
        return false;
    }
    let any_hit = |idx: &[usize], hits: &[bool]| idx.is_empty() || idx.iter().any(|&i| hits[i]);
    if !c.subject.is_none_or(|i| hits.subject[i])
        || !any_hit(&c.sender, &hits.sender)
        || !any_hit(&c.recipient, &hits.recipient)
        || !any_hit(&c.recipient_list, &hits.recipient_list)
        || !any_hit(&c.attachment_name, &hits.attachment_name)
        || !any_hit(&c.attachment_type, &hits.attachment_type)
        || !any_hit(&c.caveat, &hits.caveat)
    {
        return false;
    }
    if let Some(classes) = &s.forwards_from {
        if !f.forwarded_from.iter().any(|c| classes.contains(c)) {
            return false;
        }
    }
    if let Some(classes) = &s.recipients {
        if !classes_hold(classes, f) {
            return false;
        }
    }
    for (name, i) in &c.header {
        let re = &sets.header[*i];
        let found = f
            .classification
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && re.is_match(v));
        if !found {
            return false;
        }
    }
    if let Some(not) = &c.not {
        if holds(not, f, hits, sets) {
            return false;
        }
    }
    if s.any_of.is_some() && !c.any_of.iter().any(|sub| holds(sub, f, hits, sets)) {
        return false;
    }
    true
}
