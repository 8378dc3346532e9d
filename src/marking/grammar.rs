//! One grammar for a marking string in all its spellings. `parse` is strict: the whole text
//! must be a marking (with optional decoration), so prose that merely contains a marking word
//! ("access is not restricted after 6pm") never parses.

use std::sync::LazyLock;

use regex::Regex;

use super::epms;
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

/// The national and alliance prefixes a level may follow (`UK SECRET`, `NATO/EU SECRET`):
/// the grammar reads them, and the banner pre-filter skips them, from this one list.
pub const NATIONS: &[&str] = &[
    "UK", "U.K.", "HMG", "NATO", "EU", "UE", "COSMIC", "US", "FVEY",
];

/// A level, after an optional introducer (`Protective Marking:`; the rarer ones, `loud`,
/// only before a level in capitals: `Document Classification: Confidential` is a
/// corporate tool's footer, `Security Marking: SECRET` a banner) and up to three national or
/// alliance prefixes (`UK SECRET`, `NATO/EU SECRET`, `UK-SECRET`, `COSMIC TOP SECRET`): a
/// reader sees the level whatever owns it. The EU's French names (`TRES SECRET UE`,
/// `RESTREINT UE`, `CONFIDENTIEL UE`) are its levels too.
static LEVEL: LazyLock<Regex> = LazyLock::new(|| {
    let nations: Vec<String> = NATIONS.iter().map(|n| regex::escape(n)).collect();
    Regex::new(
        &r"^(?:(?:PROTECTIVE\s+MARKING|SECURITY\s+CLASSIFICATION|CLASSIFICATION|MARKING|SEC|(?P<loud>GOVERNMENT\s+SECURITY\s+CLASSIFICATION|SECURITY\s+(?:MARKING|LEVEL)|DOCUMENT\s+CLASSIFICATION|CLASSIFICATION\s+LEVEL|CLASSIFIED))\s*[:=\-]\s*)?(?:(?:NATIONS)(?:\s*[-/]\s*|\s+)){0,3}(?P<level>NOT\s+PROTECTIVELY\s+MARKED|NPM|UNCLASSIFIED|TOP[\s_-]*SECRET|TRES\s+SECRET|OFFICIAL\s*[-:_]?\s*SENSITIVE|OFFICIAL|PROTECT|RESTRICTED|RESTREINT|CONFIDENTIAL|CONFIDENTIEL|SECRET|PRIVATE)(?:$|[\s\-:/,_;\[\(])"
            .replace("NATIONS", &nations.join("|")),
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
    Regex::new(r"^(STRAP\s*[1-3]|UKEO|ATOMAL|NATO|CABINET|UE\s*/\s*EU(?:\s+(?:TOP\s+SECRET|SECRET|CONFIDENTIAL|RESTRICTED))?|UE|SI|TK|HCS|FVEY|UK\s+ONLY|NOFORN|ORCON|DO\s+NOT\s+FORWARD|RELEASABLE\s+TO\s+[A-Z]{2,5}(?:\s*,\s*[A-Z]{2,5})*|REL\s+TO\s+[A-Z]{2,5}(?:\s*,\s*[A-Z]{2,5})*)(?:$|[\s\-:/,_;\])])")
        .expect("codeword regex")
});

pub(super) static SPACES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s+").expect("spaces regex"));

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
    if pairs == Pairs::Read && epms::has_sec(inner) {
        return epms::in_text(inner, &folded);
    }
    let caps = LEVEL.captures(inner)?;
    let level_match = caps.name("level")?;
    if caps.name("loud").is_some() && !folded.contains(level_match.as_str()) {
        return None;
    }
    let level = level_of(level_match.as_str())?;
    let mut parsed = Parsed {
        level: Some(level),
        ..Parsed::default()
    };
    let rest = &inner[level_match.end()..];
    if qualifiers(rest, &mut parsed).is_none() {
        // SECRET or TOP SECRET, then a dash and words all in capitals: a banner's own
        // wording (`SECRET - OPERATIONAL`, `SECRET - PERSONAL DATA`), which prose is not
        // written as. The closed lists keep `SECRET SANTA` and `SECRET (santa)` prose.
        // Not CONFIDENTIAL, whose lines in capitals are mostly a solicitor's or an HR
        // department's (`CONFIDENTIAL - LEGALLY PRIVILEGED`, `CONFIDENTIAL - HR`), nor a
        // colon, a headline's (`TOP SECRET: THE HISTORY OF BLETCHLEY PARK`).
        let set_off = rest.trim_start().starts_with('-');
        if level.rank() >= 4 && set_off && !folded.chars().any(char::is_lowercase) {
            return Some(Parsed {
                level: Some(level),
                ..Parsed::default()
            });
        }
        return None;
    }
    Some(parsed)
}

/// Reads the descriptors, caveats and codewords after a level, in any order, after `-`,
/// `:`, `//`, a space or in brackets or parentheses; `None` if anything else is there.
fn qualifiers(mut rest: &str, parsed: &mut Parsed) -> Option<()> {
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || "-:/,_;()[]•·|".contains(c));
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
            ("Security Marking: SECRET", "SECRET"),
            ("Government Security Classification: SECRET", "SECRET"),
            ("Classified: SECRET", "SECRET"),
            ("Security level: SECRET", "SECRET"),
            ("Document classification: SECRET", "SECRET"),
            ("Classification level: TOP SECRET", "TOP SECRET"),
            ("SECRET UKEO", "SECRET"),
            ("SECRET \u{2022} UK EYES ONLY", "SECRET"),
            ("SECRET - OPERATIONAL", "SECRET"),
            ("SECRET \u{2013} PERSONAL DATA", "SECRET"),
            ("TOP SECRET - HANDLE VIA SOURCE UNIT", "TOP SECRET"),
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
            "SECRET - the plan",
            "Secret - Santa",
            "RESTRICTED - AREA",
            "SECRET SANTA",
            "CONFIDENTIAL - LEGALLY PRIVILEGED",
            "Document Classification: Confidential",
            "Classified: Confidential",
            "CONFIDENTIAL: NOT FOR PUBLICATION",
            "CONFIDENTIAL - HR",
            "TOP SECRET: THE HISTORY OF BLETCHLEY PARK - 1PM",
        ] {
            assert_eq!(level(text), None, "{text}");
        }
    }
}
