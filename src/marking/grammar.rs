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

/// A level, after an optional introducer (`Protective Marking:`) and up to three national or
/// alliance prefixes (`UK SECRET`, `NATO/EU SECRET`, `UK-SECRET`, `COSMIC TOP SECRET`): a
/// reader sees the level whatever owns it. The EU's French names (`TRES SECRET UE`,
/// `RESTREINT UE`, `CONFIDENTIEL UE`) are its levels too.
static LEVEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?:PROTECTIVE\s+MARKING|SECURITY\s+CLASSIFICATION|CLASSIFICATION|MARKING|SEC)\s*[:=\-]\s*)?(?:(?:UK|U\.K\.|HMG|NATO|EU|UE|COSMIC|US|FVEY)(?:\s*[-/]\s*|\s+)){0,3}(NOT\s+PROTECTIVELY\s+MARKED|NPM|UNCLASSIFIED|TOP[\s_-]*SECRET|TRES\s+SECRET|OFFICIAL\s*[-:_]?\s*SENSITIVE|OFFICIAL|PROTECT|RESTRICTED|RESTREINT|CONFIDENTIAL|CONFIDENTIEL|SECRET|PRIVATE)(?:$|[\s\-:/,_;\[\(])",
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
    Regex::new(r"^(STRAP\s*[1-3]|ATOMAL|NATO|CABINET|UE\s*/\s*EU(?:\s+(?:TOP\s+SECRET|SECRET|CONFIDENTIAL|RESTRICTED))?|UE|SI|TK|HCS|FVEY|UK\s+ONLY|NOFORN|ORCON|DO\s+NOT\s+FORWARD|RELEASABLE\s+TO\s+[A-Z]{2,5}(?:\s*,\s*[A-Z]{2,5})*|REL\s+TO\s+[A-Z]{2,5}(?:\s*,\s*[A-Z]{2,5})*)(?:$|[\s\-:/,_;\])])")
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
        "CONFIDENTIAL" | "CONFIDENTIEL" => Level::Confidential,
        "RESTREINT" => Level::Restricted,
        "TRES SECRET" => Level::TopSecret,
        "SECRET" => Level::Secret,
        t if t.starts_with("TOP") => Level::TopSecret,
        t if t.starts_with("OFFICIAL") => Level::OfficialSensitive,
        _ => return None,
    })
}

/// Parses a text that must be a marking and nothing else: `RESTRICTED - COMMERCIAL`,
/// `OFFICIAL:Sensitive`, `[RESTRICTED - UK EYES ONLY]`, `Protective Marking: NPM`.
pub fn parse(text: &str) -> Option<Parsed> {
    parse_as(text, Pairs::Read)
}

/// A marking that is not EPMS pairs (`SEC=SECRET` alone still is one, as a level after the
/// `SEC=` introducer): for the parts of a text whose whole has been read as pairs already.
pub fn parse_marking(text: &str) -> Option<Parsed> {
    parse_as(text, Pairs::Not)
}

/// Whether a text may be read as EPMS pairs. A pair's own value is read as a marking, never
/// as pairs again: `SEC=SEC=…` must cost one pass, not one nested parse per key.
#[derive(Clone, Copy, PartialEq)]
enum Pairs {
    Read,
    Not,
}

fn parse_as(text: &str, pairs: Pairs) -> Option<Parsed> {
    // Text under a right-to-left override is displayed reversed: read it as displayed too.
    if let Some(shown) = super::normalize::visual(text) {
        if let Some(parsed) = parse_folded(&shown, pairs) {
            return Some(parsed);
        }
    }
    parse_folded(text, pairs)
}

fn parse_folded(text: &str, pairs: Pairs) -> Option<Parsed> {
    let folded = super::normalize::fold(text);
    let upper = folded.trim().to_uppercase();
    let inner = upper
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(&upper)
        .trim();
    if pairs == Pairs::Read && has_epms_sec(inner) {
        // `SEC=SECRET` written in capitals is meant wherever it stands (`Case 4411
        // SEC=SECRET`); `sec=secret` is more often a setting or a URL.
        let strictness = if CAPITAL_SEC.is_match(&folded) {
            Strictness::Anywhere
        } else {
            Strictness::Whole
        };
        return epms(inner, strictness);
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

/// A key of an EPMS pair (`SEC=`, `VER =`): a name standing at the start or after a
/// space, comma, semicolon or bracket, then `=`. Found anywhere in a line, so pairs after
/// other `name=value` text (`Ref=12; SEC=SECRET`, `x=1 y=2 SEC=SECRET`) are read too.
static EPMS_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(?:^|[\s,;:\[\(|/&"'{])([A-Z][A-Z0-9_.\-]*)\s*="#).expect("epms key regex")
});

/// The words that introduce a marking: `Protective Marking:`, `Classification:`.
static INTRODUCER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:PROTECTIVE\s+MARKING|SECURITY\s+CLASSIFICATION|CLASSIFICATION|MARKING)\s*:\s*",
    )
    .expect("introducer regex")
});

/// Whether `text` holds an EPMS `SEC` key (`SEC=`, `sec =`) anywhere: such a text is read as
/// EPMS pairs. A byte scan, so every line of a body can be asked.
pub fn has_epms_sec(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = memchr::memchr2(b'S', b's', &b[i..]).map(|at| i + at) {
        i = at + 1;
        if !b
            .get(at..at + 3)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"sec"))
        {
            continue;
        }
        let before_ok = at == 0 || !b[at - 1].is_ascii_alphanumeric();
        let after = b[at + 3..].iter().position(|c| !matches!(c, b' ' | b'\t'));
        if before_ok && after.is_some_and(|n| b[at + 3 + n] == b'=') {
            return true;
        }
    }
    false
}

/// The Email Protective Marking Standard form: `VER=2012.3, NS=gov.uk, SEC=RESTRICTED,
/// CAVEAT=UK EYES ONLY, ORIGIN=a@b`, as a header holds it: any `SEC` in it counts. Only SEC
/// decides the level (the highest, when a text repeats it: a later `SEC=OFFICIAL` must not
/// hide an earlier `SEC=SECRET`; a SEC whose value is no marking, as in `NOTE=see Sec = 4`,
/// hides nothing either); CAVEAT adds caveats and ACCESS adds descriptors. A value runs to
/// the next key or a closing bracket; keys are case-insensitive.
pub fn parse_epms(value: &str) -> Option<Parsed> {
    epms(value, Strictness::Anywhere)
}

/// Where pairs may stand: anywhere in a header made for them, or (a line of a body, a
/// subject) from the start, so prose that ends in `sec=secret` stays prose.
#[derive(Clone, Copy, PartialEq)]
enum Strictness {
    Anywhere,
    Whole,
}

fn epms(value: &str, strictness: Strictness) -> Option<Parsed> {
    let mut parsed = Parsed::default();
    // Quotes or braces around the whole (`"SEC=SECRET"`, `{SEC=SECRET}`) are not text.
    let value = value.trim_matches(|c: char| c.is_whitespace() || "\"'{}".contains(c));
    // An introducer may stand in front, as before a level (`Marking: SEC=SECRET`).
    let value = INTRODUCER.find(value).map_or(value, |m| &value[m.end()..]);
    let keys: Vec<_> = EPMS_KEY.captures_iter(value).collect();
    if strictness == Strictness::Whole
        && keys
            .first()
            .and_then(|k| k.get(1))
            .is_none_or(|k| !labels_pairs(&value[..k.start()]))
    {
        return None;
    }
    // A value written again and again (`SEC=(SEC=(…`) is read once.
    let mut seen = std::collections::HashSet::new();
    for (n, caps) in keys.iter().enumerate() {
        let (Some(whole), Some(key)) = (caps.get(0), caps.get(1)) else {
            continue;
        };
        let end = keys
            .get(n + 1)
            .and_then(|next| next.get(0))
            .map_or(value.len(), |m| m.start());
        // No value holds `]`: in `[SEC=SECRET] plan` the pairs end at the bracket.
        let val = &value[whole.end()..end];
        let val = val[..val.find(']').unwrap_or(val.len())]
            .trim()
            .trim_end_matches([',', ';', ')', '.', '|', '&', '/'])
            .trim_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'');
        match key.as_str().to_ascii_uppercase().as_str() {
            "SEC" => {
                if !seen.insert(val) {
                    continue;
                }
                let Some(sec) = sec_value(val) else {
                    continue;
                };
                if parsed.level.map(Level::rank) < sec.level.map(Level::rank) {
                    parsed.level = sec.level;
                }
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

/// A SEC value: a marking, after any `SEC=` written again in front of it (`SEC=SEC=SECRET`),
/// and never read as pairs itself.
fn sec_value(val: &str) -> Option<Parsed> {
    // A level is letters: junk (`(`, `4.2`) is refused before any parse.
    if val.bytes().filter(u8::is_ascii_alphabetic).count() < 3 {
        return None;
    }
    // A remark in parentheses after it (`SEC=SECRET (by secure post)`) is not the value.
    sec_value_whole(val).or_else(|| {
        val.split_once('(')
            .filter(|(v, _)| !v.trim().is_empty())
            .and_then(|(v, _)| sec_value_whole(v))
    })
}

/// Whether the text before the first pair of a line or subject may stand there: nothing, a
/// bracket, or a label ending in a separator (`Case 4411:`, `X-Protective-Marking:`,
/// `Classification -`, `Budget //`); prose running into the pairs (`The old setting was
/// sec=secret`) may not.
fn labels_pairs(before: &str) -> bool {
    let t = before.trim().trim_start_matches(['[', '(']).trim_end();
    t.is_empty() || t.ends_with([':', '-', ',', ';', '/', '|']) || MARKING_LABEL.is_match(t)
}

/// A label that names what follows as a marking, with no separator after it
/// (`Protective Marking SEC=SECRET`).
static MARKING_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:PROTECTIVE\s+MARKING|SECURITY\s+MARKING|CLASSIFICATION|MARKING|EPMS)$")
        .expect("marking label regex")
});

/// `SEC=` and a level in capitals, as a sender writes a marking on purpose.
static CAPITAL_SEC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[^A-Za-z0-9])SEC\s*=\s*["']?[A-Z]{3}"#).expect("capital sec regex")
});

fn sec_value_whole(mut val: &str) -> Option<Parsed> {
    loop {
        let t = val.trim_start();
        let Some(rest) = t
            .get(..3)
            .filter(|k| k.eq_ignore_ascii_case("SEC"))
            .map(|_| &t[3..])
        else {
            break;
        };
        let Some(after) = rest.trim_start().strip_prefix('=') else {
            break;
        };
        val = after;
    }
    parse_as(val.trim(), Pairs::Not)
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
            ("UK SECRET", "SECRET"),
            ("NATO SECRET", "SECRET"),
            ("EU RESTRICTED", "RESTRICTED"),
            ("COSMIC TOP SECRET", "TOP SECRET"),
            ("NATO COSMIC TOP SECRET", "TOP SECRET"),
            ("HMG Secret", "SECRET"),
            (
                "Classification: UK OFFICIAL-SENSITIVE",
                "OFFICIAL-SENSITIVE",
            ),
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
            "UK secret recipe",
            "NATO summit",
            "Restreint aux membres",
            "US secret service",
            "EU restricted area",
            "UK",
        ] {
            assert_eq!(level(text), None, "{text}");
        }
    }

    #[test]
    fn nested_sec_keys_cost_one_pass_not_a_stack_each() {
        // Each `SEC=` once parsed the rest as pairs again: 3,500 of them overflowed the
        // stack (an abort no thread survives).
        let text = format!("{}SECRET", "SEC=".repeat(50_000));
        assert_eq!(parse_epms(&text).and_then(|p| p.level), Some(Level::Secret));
        assert_eq!(parse(&text).and_then(|p| p.level), Some(Level::Secret));
        let bracketed = format!("[{}SECRET]", "SEC=".repeat(50_000));
        assert_eq!(parse(&bracketed).and_then(|p| p.level), Some(Level::Secret));
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

    #[test]
    fn epms_pairs_after_other_pairs_and_spaced_keys_are_read() {
        for text in [
            "x=1 y=2 SEC=SECRET",
            "Ref=12; SEC=TOP-SECRET",
            "Ref=12;SEC=SECRET",
            "VER=2012.3 NS=gov.uk SEC=SECRET",
            "SEC = SECRET",
            "ver=2012.3, ns=gov.uk, sec=secret",
            // A later, lower SEC must not hide the first.
            "SEC=SECRET, SEC=OFFICIAL",
            "SEC=OFFICIAL, NOTE=x, SEC=SECRET",
        ] {
            let got = parse(text).and_then(|p| p.level);
            assert!(
                matches!(got, Some(Level::Secret | Level::TopSecret)),
                "{text}: {got:?}"
            );
            let header = parse_epms(text).and_then(|p| p.level);
            assert_eq!(header, got, "{text}");
        }
        // A later key in free text, or a SEC that is no marking, hides nothing.
        for text in [
            "VER=2012.3, NS=gov.uk, SEC=SECRET, NOTE=Handling per Sec = 4.2 of policy, ORIGIN=j@x",
            "SEC=SECRET, NOTE=handling per sec=4",
            "SEC=SECRET, SEC=n/a",
            "SEC=SECRET, SEC=",
            "SEC=\"SECRET\"",
            "SEC='SECRET'",
            "\"SEC=SECRET\"",
            "{SEC=SECRET}",
            "VER=2012.3|SEC=SECRET",
            "VER=2012.3/SEC=SECRET",
            "x=1 SEC=SECRET.",
            "SEC=SEC=SECRET",
            "Marking: SEC=SECRET",
            "Marking:SEC=SECRET",
            "SEC=SECRET (handle via secure post)",
        ] {
            let got = parse(text).and_then(|p| p.level);
            assert_eq!(got, Some(Level::Secret), "{text}");
            assert_eq!(parse_epms(text).and_then(|p| p.level), got, "{text}");
        }
        // In a line or a subject the pairs follow nothing or a label, or are in capitals:
        // prose ending in one stays prose.
        for text in [
            "The old setting was sec=secret",
            "Witness statement for Monday sec=secret",
            "export SEC=secret",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        for text in [
            "X-Protective-Marking: VER=2012.3, NS=gov.uk, SEC=SECRET, ORIGIN=a@b",
            "Security marking: SEC=SECRET",
            "EPMS: sec=secret",
            "Classification - sec=secret",
            "Protective Marking sec=secret",
            "Case 4411: sec=secret",
            "Case 4411 SEC=SECRET",
            "Case 4411, SEC=SECRET",
            "[Case 4411 SEC=SECRET]",
            "Case 12 Ref=12; SEC=SECRET",
        ] {
            assert_eq!(
                parse(text).and_then(|p| p.level),
                Some(Level::Secret),
                "{text}"
            );
        }
        let p = parse_epms("Ref=12; SEC=RESTRICTED; CAVEAT=UK EYES ONLY; ORIGIN=a@b").unwrap();
        assert_eq!(p.level, Some(Level::Restricted));
        assert!(p.caveats.contains("UK EYES ONLY"), "{p:?}");
        assert!(has_epms_sec("a SEC =x") && has_epms_sec("sec=") && !has_epms_sec("BSEC=1"));
        assert!(!has_epms_sec("SECTION=4") && !has_epms_sec("sec") && !has_epms_sec("SEC x=1"));
    }
}
