//! The Email Protective Marking Standard's `KEY=VALUE` pairs (`VER=2012.3, NS=gov.uk,
//! SEC=RESTRICTED, CAVEAT=UK EYES ONLY`), in a header made for them and in the lines and
//! subjects people write them in. The SEC value is read by the marking grammar, which in turn
//! hands a text holding `SEC=` here: the two meet in one place each way, and a value is never
//! read as pairs again.

use std::sync::LazyLock;

use regex::Regex;

use super::grammar::{self, SPACES};
use super::level::{Level, Parsed};

/// A key of an EPMS pair (`SEC=`, `VER =`): a name standing at the start or after a space,
/// comma, semicolon, colon, bracket, quote, `|`, `/` or `&`, then `=`. Found anywhere in a
/// line, so pairs after other `name=value` text (`Ref=12; SEC=SECRET`, `x=1 y=2
/// SEC=SECRET`) are read too.
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
pub fn has_sec(text: &str) -> bool {
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
pub fn parse(value: &str) -> Option<Parsed> {
    epms(value, Strictness::Anywhere)
}

/// Pairs in a line of a body or a subject (upper-cased `inner`; `folded` as written): they
/// must follow nothing or a label, unless `SEC=` and its level are in capitals — written on
/// purpose wherever they stand (`Case 4411 SEC=SECRET`), where `sec=secret` is more often a
/// setting or a URL.
pub(super) fn in_text(inner: &str, folded: &str) -> Option<Parsed> {
    let strictness = if CAPITAL_SEC.is_match(folded) {
        Strictness::Anywhere
    } else {
        Strictness::Whole
    };
    epms(inner, strictness)
}

/// Where pairs may stand: anywhere in a header made for them, or (a line of a body, a
/// subject) after nothing or a label (`labels_pairs`), so prose that ends in `sec=secret`
/// stays prose.
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
    // A level is letters as a reader sees them (`ＳＥＣＲＥＴ` is letters too): junk (`(`,
    // `4.2`) is refused before any parse.
    let letters = super::normalize::fold(val)
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .count();
    if letters < 3 {
        return None;
    }
    if let Some(parsed) = sec_value_whole(val) {
        return Some(parsed);
    }
    // A remark after it (`SEC=SECRET (by secure post)`), or the rest of a title after a
    // separator (`SEC=SECRET // draft`, `SEC=SECRET - draft`, `SEC=SECRET: bail`), is not the
    // value: the longest part before one of them that is a marking.
    let mut cuts: Vec<usize> = ["(", " - ", "//", ":", " | ", "__", " _"]
        .iter()
        .flat_map(|sep| val.match_indices(sep).take(8).map(|(at, _)| at))
        .filter(|&at| at > 0)
        .collect();
    cuts.sort_unstable_by(|a, b| b.cmp(a));
    cuts.dedup();
    cuts.into_iter().find_map(|at| sec_value_whole(&val[..at]))
}

/// Whether the text before the first pair of a line or subject may stand there: nothing, a
/// bracket, or a label ending in `:`, `-`, `|`, `,`, `;` or `//` (`Case 4411:`,
/// `X-Protective-Marking:`, `Ref 12,`, `Budget //`: a pair after a comma always counted);
/// prose running into the pairs (`The old setting was sec=secret`) or a URL's path
/// (`…/app/sec=secret`) may not.
fn labels_pairs(before: &str) -> bool {
    let t = before.trim().trim_start_matches(['[', '(']).trim_end();
    t.is_empty()
        || t.ends_with([':', '-', '|', ',', ';'])
        || t.ends_with("//")
        || MARKING_LABEL.is_match(t)
}

/// A label that names what follows as a marking, with no separator after it
/// (`Protective Marking SEC=SECRET`).
static MARKING_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:PROTECTIVE\s+MARKING|SECURITY\s+MARKING|CLASSIFICATION|MARKING|EPMS)$")
        .expect("marking label regex")
});

/// `SEC=` in capitals and a level starting with one (`SEC=SECRET`, `SEC=Secret`), as a sender
/// writes a marking on purpose (not another key's tail: `X_SEC=YES`, `AUTH_SEC=TLS`).
static CAPITAL_SEC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[^A-Za-z0-9_])SEC\s*=\s*["']?[A-Z](?i:OP[\s_-]*SECRET|ECRET|ONFIDENTIAL|ESTRICTED|FFICIAL|ROTECT|RIVATE|OT\s+PROTECTIVELY|NCLASSIFIED|PM)"#)
        .expect("capital sec regex")
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
    grammar::parse_marking(val.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sec_keys_cost_one_pass_not_a_stack_each() {
        // Each `SEC=` once parsed the rest as pairs again: 3,500 of them overflowed the
        // stack (an abort no thread survives).
        let text = format!("{}SECRET", "SEC=".repeat(50_000));
        assert_eq!(
            grammar::parse(&text).and_then(|p| p.level),
            Some(Level::Secret)
        );
        assert_eq!(
            grammar::parse(&text).and_then(|p| p.level),
            Some(Level::Secret)
        );
        let bracketed = format!("[{}SECRET]", "SEC=".repeat(50_000));
        assert_eq!(
            grammar::parse(&bracketed).and_then(|p| p.level),
            Some(Level::Secret)
        );
    }

    #[test]
    fn epms_header_gives_level_caveat_and_access() {
        let p = parse(
            "VER=2012.3, NS=gov.uk, SEC=OFFICIAL-SENSITIVE, CAVEAT=UK EYES ONLY, ACCESS=Legal-Privilege",
        )
        .unwrap();
        assert_eq!(p.level, Some(Level::OfficialSensitive));
        assert!(p.caveats.contains("UK EYES ONLY"));
        assert!(p.descriptors.contains("LEGAL-PRIVILEGE"));
        assert!(parse("VER=2012.3, NS=gov.uk").is_none());
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
            let got = grammar::parse(text).and_then(|p| p.level);
            assert!(
                matches!(got, Some(Level::Secret | Level::TopSecret)),
                "{text}: {got:?}"
            );
            let header = parse(text).and_then(|p| p.level);
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
            let got = grammar::parse(text).and_then(|p| p.level);
            assert_eq!(got, Some(Level::Secret), "{text}");
            assert_eq!(parse(text).and_then(|p| p.level), got, "{text}");
        }
        // In a line or a subject the pairs follow nothing or a label, or are in capitals:
        // prose ending in one stays prose.
        for text in [
            "The old setting was sec=secret",
            "Witness statement for Monday sec=secret",
            "export SEC=secret",
            "SEC=SECRET_KEY_BASE",
            "The old setting was sec=secret; X_SEC=YES",
            "Old value sec=secret, AUTH_SEC=TLS",
            "http://intranet/app/sec=secret",
        ] {
            assert_eq!(grammar::parse(text), None, "{text}");
        }
        // In a header the value is read as a reader sees it.
        for value in [
            "SEC= \u{FF33}\u{FF25}\u{FF23}\u{FF32}\u{FF25}\u{FF34}",
            "SEC=\u{A731}\u{1D07}\u{1D04}\u{280}\u{1D07}\u{1D1B}",
        ] {
            assert_eq!(
                parse(value).and_then(|p| p.level),
                Some(Level::Secret),
                "{value}"
            );
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
            "Budget // VER=1, SEC=SECRET // draft",
            "VER=2012.3, NS=gov.uk, SEC=SECRET - draft",
            "NS=gov.uk, SEC=SECRET: bail hearing",
            "RE: NS=gov.uk, SEC=SECRET | Case 1",
            "SEC=\u{FF33}\u{FF25}\u{FF23}\u{FF32}\u{FF25}\u{FF34}",
            "SEC= \u{405}\u{415}\u{421}R\u{415}\u{422}",
            "Ref 12, sec=secret",
            "Case 4411, Sec=Secret",
            "Our ref: CPS/123, sec=secret",
            "URN 01AB2345678, SEC=Secret",
            "Budget // ver=2012.3, sec=secret",
            "R v Smith, SEC=Secret, CAVEAT=UK EYES ONLY",
        ] {
            assert_eq!(
                parse(text).and_then(|p| p.level),
                Some(Level::Secret),
                "{text}"
            );
        }
        let p = parse("Ref=12; SEC=RESTRICTED; CAVEAT=UK EYES ONLY; ORIGIN=a@b").unwrap();
        assert_eq!(p.level, Some(Level::Restricted));
        assert!(p.caveats.contains("UK EYES ONLY"), "{p:?}");
        assert!(has_sec("a SEC =x") && has_sec("sec=") && !has_sec("BSEC=1"));
        assert!(!has_sec("SECTION=4") && !has_sec("sec") && !has_sec("SEC x=1"));
    }
}
