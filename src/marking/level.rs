//! The marking model: canonical levels with the ranking the default rules use, and the
//! combined marking of a message with the evidence for it.

use std::collections::BTreeSet;

use serde::Serialize;

/// A protective marking level, GPMS and GSC together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    NotProtectivelyMarked,
    Unclassified,
    Protect,
    Official,
    Private,
    Restricted,
    OfficialSensitive,
    Confidential,
    Secret,
    TopSecret,
}

impl Level {
    pub const ALL: [Level; 10] = [
        Level::NotProtectivelyMarked,
        Level::Unclassified,
        Level::Protect,
        Level::Official,
        Level::Private,
        Level::Restricted,
        Level::OfficialSensitive,
        Level::Confidential,
        Level::Secret,
        Level::TopSecret,
    ];

    /// Higher is more sensitive (DESIGN.md, Markings).
    pub fn rank(self) -> u8 {
        match self {
            Level::NotProtectivelyMarked | Level::Unclassified => 0,
            Level::Protect | Level::Official | Level::Private => 1,
            Level::Restricted | Level::OfficialSensitive => 2,
            Level::Confidential => 3,
            Level::Secret => 4,
            Level::TopSecret => 5,
        }
    }

    /// The canonical name used in JSON, logs and rules.
    pub fn name(self) -> &'static str {
        match self {
            Level::NotProtectivelyMarked => "NOT PROTECTIVELY MARKED",
            Level::Unclassified => "UNCLASSIFIED",
            Level::Protect => "PROTECT",
            Level::Official => "OFFICIAL",
            Level::Private => "PRIVATE",
            Level::Restricted => "RESTRICTED",
            Level::OfficialSensitive => "OFFICIAL-SENSITIVE",
            Level::Confidential => "CONFIDENTIAL",
            Level::Secret => "SECRET",
            Level::TopSecret => "TOP SECRET",
        }
    }

    pub fn from_name(name: &str) -> Option<Level> {
        let upper = name.trim().to_ascii_uppercase();
        Level::ALL.into_iter().find(|l| l.name() == upper)
    }
}

/// The name used for a message with no marking anywhere.
pub const UNMARKED: &str = "UNMARKED";

/// One place a marking was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Where: `x-protective-marking`, `msip_labels`, `header:X-Classification`, `subject`,
    /// `banner`, `attachment`, each prefixed `attached[N].` inside forwarded messages.
    pub source: String,
    /// The raw text that carried it (truncated to 200 characters).
    pub text: String,
    /// The level it gave.
    pub level: String,
}

/// Distinct pieces of evidence kept (more only when one raises the level).
pub const EVIDENCE_MAX: usize = 64;

/// What one marking string says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub level: Option<Level>,
    pub descriptors: BTreeSet<String>,
    pub caveats: BTreeSet<String>,
}

/// A message's marking: the highest level found anywhere, with every finding.
#[derive(Debug, Clone, Default)]
pub struct Marking {
    /// `None` is UNMARKED.
    pub level: Option<Level>,
    pub descriptors: BTreeSet<String>,
    pub caveats: BTreeSet<String>,
    pub evidence: Vec<Evidence>,
}

impl Marking {
    /// Adds one finding: the highest rank wins (the first found among equals); descriptors
    /// and caveats accumulate. The evidence keeps each distinct finding once, at most
    /// [`EVIDENCE_MAX`] of them, and past that only a finding that raises the level (so the
    /// level found always has its evidence): every banner line is a finding, and a message
    /// of a million banner lines must not make a tracking record, a held message's
    /// metadata and the console's pages of a million entries.
    pub fn add(&mut self, parsed: Parsed, source: &str, text: &str) {
        let Some(level) = parsed.level else { return };
        let raises = self.level.is_none_or(|l| level.rank() > l.rank());
        if raises {
            self.level = Some(level);
        }
        self.descriptors.extend(parsed.descriptors);
        self.caveats.extend(parsed.caveats);
        if self.evidence.len() >= EVIDENCE_MAX && !raises {
            return;
        }
        let text: String = text.chars().take(200).collect();
        let seen = self
            .evidence
            .iter()
            .any(|e| e.source == source && e.text == text && e.level == level.name());
        if !seen {
            self.evidence.push(Evidence {
                source: source.to_string(),
                text,
                level: level.name().to_string(),
            });
        }
    }

    pub fn level_name(&self) -> &'static str {
        self.level.map(Level::name).unwrap_or(UNMARKED)
    }

    /// Rank, with UNMARKED as `None` (it is not rank 0: it must be protected).
    pub fn rank(&self) -> Option<u8> {
        self.level.map(Level::rank)
    }

    /// Marked as sensitive: anything but NOT PROTECTIVELY MARKED / UNCLASSIFIED / UNMARKED.
    pub fn is_sensitive(&self) -> bool {
        self.rank().is_some_and(|r| r > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Parsed {
        crate::marking::grammar::parse(text).expect("a marking")
    }

    #[test]
    fn evidence_is_kept_once_and_bounded_but_the_winning_level_always_has_its_own() {
        let mut m = Marking::default();
        for _ in 0..10_000 {
            m.add(parsed("OFFICIAL"), "banner", "OFFICIAL");
        }
        assert_eq!(m.evidence.len(), 1, "the same finding once");
        for n in 0..10_000 {
            m.add(
                parsed("OFFICIAL"),
                &format!("attachment:{n}.txt:banner"),
                "OFFICIAL",
            );
        }
        assert_eq!(m.evidence.len(), EVIDENCE_MAX);
        m.add(parsed("SECRET"), "banner", "SECRET");
        assert_eq!(m.level_name(), "SECRET");
        assert_eq!(m.evidence.last().map(|e| e.level.as_str()), Some("SECRET"));
        m.add(parsed("SECRET"), "subject", "[SECRET]");
        assert_eq!(
            m.evidence.len(),
            EVIDENCE_MAX + 1,
            "past the bound only a raise"
        );
    }
}
