//! One grammar for a marking string in all its spellings. `parse` is strict: the whole text
//! must be a marking (with optional decoration), so prose that merely contains a marking word
//! ("access is not restricted after 6pm") never parses.

use std::sync::LazyLock;

use regex::Regex;

use super::level::{Level, Parsed};

/// Descriptors of GPMS and GSC, plus the EPMS ACCESS values.
const DESCRIPTORS: &[&str] = &[
    "COMMERCIAL",
    "MANAGEMENT",
    "PERSONAL",
    "STAFF",
    "LOCSEN",
    "APPOINTMENTS",
    "CONTRACTS",
    "INVESTIGATION",
    "MEDICAL",
    "POLICY",
    "PRIVATE",
    "REGULATORY",
    "VISITS",
];

static LEVEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?:PROTECTIVE\s+MARKING|SECURITY\s+CLASSIFICATION|CLASSIFICATION|MARKING|SEC)\s*[:=\-]\s*)?(NOT\s+PROTECTIVELY\s+MARKED|NPM|UNCLASSIFIED|TOP[\s_-]*SECRET|OFFICIAL\s*[-:_]?\s*SENSITIVE|OFFICIAL|PROTECT|RESTRICTED|CONFIDENTIAL|SECRET|PRIVATE)(?:$|[\s\-:/,_;\[\(])",
    )
    .expect("level regex")
});

static CAVEAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^((?:[A-Z][A-Z0-9.]*(?:/[A-Z][A-Z0-9.]*)*\s+){0,3}EYES\s+ONLY)(?:$|[\s\-:,;\])])")
        .expect("caveat regex")
});

static DESCRIPTOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^({})(?:$|[\s\-:/,_;\])])",
        DESCRIPTORS.join("|")
    ))
    .expect("descriptor regex")
});

/// Codewords and national caveats that follow a level (`TOP SECRET STRAP1`); a closed list,
/// so `SECRET SANTA` stays prose.
static CODEWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(STRAP\s*[1-3]|ATOMAL|NATO|CABINET|UK\s+ONLY|NOFORN|ORCON|DO\s+NOT\s+FORWARD|RELEASABLE\s+TO\s+[A-Z]{2,5}(?:\s*,\s*[A-Z]{2,5})*|REL\s+TO\s+[A-Z]{2,5}(?:\s*,\s*[A-Z]{2,5})*)(?:$|[\s\-:/,_;\])])")
        .expect("codeword regex")
});

static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("spaces regex"));

fn level_of(token: &str) -> Option<Level> {
    let t = SPACES.replace_all(token, " ");
    Some(match t.as_ref() {
        "NOT PROTECTIVELY MARKED" | "NPM" => Level::NotProtectivelyMarked,
        "UNCLASSIFIED" => Level::Unclassified,
        "PROTECT" => Level::Protect,
        "OFFICIAL" => Level::Official,
        "PRIVATE" => Level::Private,
        "RESTRICTED" => Level::Restricted,
        "CONFIDENTIAL" => Level::Confidential,
        "SECRET" => Level::Secret,
        t if t.starts_with("TOP") => Level::TopSecret,
        t if t.starts_with("OFFICIAL") => Level::OfficialSensitive,
        _ => return None,
    })
}

/// Parses a text that must be a marking and nothing else: `RESTRICTED - COMMERCIAL`,
/// `OFFICIAL:Sensitive`, `[RESTRICTED - UK EYES ONLY]`, `Protective Marking: NPM`.
pub fn parse(text: &str) -> Option<Parsed> {
    // Text under a right-to-left override is displayed reversed: read it as displayed too.
    if let Some(shown) = super::normalize::visual(text) {
        if let Some(parsed) = parse_folded(&shown) {
            return Some(parsed);
        }
    }
    parse_folded(text)
}

fn parse_folded(text: &str) -> Option<Parsed> {
    let upper = super::normalize::fold(text).trim().to_uppercase();
    let inner = upper
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(&upper)
        .trim();
    if inner.contains("SEC=") {
        return parse_epms(inner);
    }
    let caps = LEVEL.captures(inner)?;
    let level_match = caps.get(1)?;
    let level = level_of(level_match.as_str())?;
    let mut parsed = Parsed {
        level: Some(level),
        ..Parsed::default()
    };
    let rest = &inner[level_match.end()..];
    qualifiers(rest, &mut parsed)?;
    Some(parsed)
}

/// Reads the descriptors, caveats and codewords after a level, in any order, after `-`,
/// `:`, `//`, a space or in brackets or parentheses; `None` if anything else is there.
fn qualifiers(mut rest: &str, parsed: &mut Parsed) -> Option<()> {
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || "-:/,_;()[]".contains(c));
        if rest.is_empty() {
            return Some(());
        }
        if let Some(c) = CODEWORD.captures(rest) {
            let m = c.get(1)?;
            parsed
                .caveats
                .insert(SPACES.replace_all(m.as_str(), " ").into_owned());
            rest = &rest[m.end()..];
        } else if let Some(c) = CAVEAT.captures(rest) {
            let m = c.get(1)?;
            parsed
                .caveats
                .insert(SPACES.replace_all(m.as_str(), " ").into_owned());
            rest = &rest[m.end()..];
        } else if let Some(c) = DESCRIPTOR.captures(rest) {
            let m = c.get(1)?;
            parsed.descriptors.insert(m.as_str().to_string());
            rest = &rest[m.end()..];
        } else {
            return None;
        }
    }
}

/// The Email Protective Marking Standard form: `VER=2012.3, NS=gov.uk, SEC=RESTRICTED,
/// CAVEAT=UK EYES ONLY, ORIGIN=a@b`. Only SEC decides the level; CAVEAT adds caveats and
/// ACCESS adds descriptors. Keys are case-insensitive (the caller may upper-case).
pub fn parse_epms(value: &str) -> Option<Parsed> {
    let mut parsed = Parsed::default();
    for pair in value.split(',') {
        let Some((key, val)) = pair.split_once('=') else {
            continue;
        };
        let val = val.trim();
        match key.trim().to_ascii_uppercase().as_str() {
            "SEC" => {
                let sec = parse(val)?;
                parsed.level = sec.level;
                parsed.descriptors.extend(sec.descriptors);
                parsed.caveats.extend(sec.caveats);
            }
            "CAVEAT" => {
                parsed
                    .caveats
                    .insert(SPACES.replace_all(&val.to_uppercase(), " ").into_owned());
            }
            "ACCESS" => {
                parsed.descriptors.insert(val.to_uppercase());
            }
            _ => {}
        }
    }
    parsed.level.map(|_| parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(s: &str) -> Option<&'static str> {
        parse(s).and_then(|p| p.level).map(Level::name)
    }

    #[test]
    fn every_spelling_parses_to_its_level() {
        for (text, want) in [
            ("OFFICIAL-SENSITIVE", "OFFICIAL-SENSITIVE"),
            ("OFFICIAL SENSITIVE", "OFFICIAL-SENSITIVE"),
            ("OFFICIAL:Sensitive", "OFFICIAL-SENSITIVE"),
            ("official: sensitive", "OFFICIAL-SENSITIVE"),
            ("NPM", "NOT PROTECTIVELY MARKED"),
            ("Not Protectively Marked", "NOT PROTECTIVELY MARKED"),
            ("RESTRICTED - COMMERCIAL", "RESTRICTED"),
            ("RESTRICTED-MANAGEMENT", "RESTRICTED"),
            ("[RESTRICTED - UK EYES ONLY]", "RESTRICTED"),
            ("Top Secret", "TOP SECRET"),
            ("Protective Marking: PROTECT", "PROTECT"),
            ("Classification: SECRET", "SECRET"),
            ("SEC=OFFICIAL:Sensitive", "OFFICIAL-SENSITIVE"),
            ("PRIVATE", "PRIVATE"),
            ("UNCLASSIFIED", "UNCLASSIFIED"),
            ("SECRET \u{2013} UK EYES ONLY", "SECRET"),
            ("OFFICIAL \u{2013} SENSITIVE", "OFFICIAL-SENSITIVE"),
            ("OFFICIAL-SENSITIVE [PERSONAL]", "OFFICIAL-SENSITIVE"),
            ("RESTRICTED (COMMERCIAL)", "RESTRICTED"),
            ("TOP SECRET STRAP1", "TOP SECRET"),
            ("SECRET UK EYES ONLY", "SECRET"),
            ("ЅЕСRЕТ", "SECRET"),
            ("ＳＥＣＲＥＴ", "SECRET"),
            ("SE\u{AD}CRET", "SECRET"),
        ] {
            assert_eq!(level(text), Some(want), "{text}");
        }
    }

    #[test]
    fn descriptors_and_caveats_are_read() {
        let p = parse("OFFICIAL-SENSITIVE: PERSONAL").unwrap();
        assert!(p.descriptors.contains("PERSONAL"));
        let p = parse("RESTRICTED - UK/US EYES ONLY").unwrap();
        assert!(p.caveats.contains("UK/US EYES ONLY"), "{p:?}");
        let p = parse("RESTRICTED - JOHN SMITH EYES ONLY").unwrap();
        assert!(p.caveats.contains("JOHN SMITH EYES ONLY"));
    }

    #[test]
    fn prose_and_lookalikes_are_not_markings() {
        for text in [
            "Secret Santa draw",
            "Secretary availability",
            "restricted parking",
            "access is not restricted after 6pm",
            "PROTECTED",
            "Officially yours",
            "Confidentiality",
            "RESTRICTED area map",
            "SECRET (santa)",
            "R v Secret",
            "Top secret recipe",
        ] {
            assert_eq!(level(text), None, "{text}");
        }
    }

    #[test]
    fn epms_header_gives_level_caveat_and_access() {
        let p = parse_epms(
            "VER=2012.3, NS=gov.uk, SEC=OFFICIAL-SENSITIVE, CAVEAT=UK EYES ONLY, ACCESS=Legal-Privilege",
        )
        .unwrap();
        assert_eq!(p.level, Some(Level::OfficialSensitive));
        assert!(p.caveats.contains("UK EYES ONLY"));
        assert!(p.descriptors.contains("LEGAL-PRIVILEGE"));
        assert!(parse_epms("VER=2012.3, NS=gov.uk").is_none());
    }
}
