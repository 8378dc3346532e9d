//! One extractor per place a marking can stand: header values, the Subject, attachment
//! names, banner lines, Microsoft sensitivity labels. Each turns already-decoded text into
//! parsed markings; the MIME walk that finds the places is in `classify`.

use std::collections::HashMap;

use super::grammar;
use super::level::{Level, Parsed};

/// Separators that may follow a leading marking or precede a trailing one.
const SUBJECT_SEPARATORS: &[&str] = &[":", " - ", " – ", "//", " | "];
/// File names also use `_` (`OFFICIAL-SENSITIVE_report.xlsx`).
const NAME_SEPARATORS: &[&str] = &[":", " - ", " – ", "//", " | ", "_"];

/// Reply and forward prefixes stripped before looking for a leading marking.
fn strip_reply_prefixes(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        let lower = t.get(..4).map(|p| p.to_ascii_lowercase());
        let cut = match lower.as_deref() {
            Some(p) if p.starts_with("re:") => 3,
            Some(p) if p.starts_with("fw:") => 3,
            Some("fwd:") => 4,
            _ => return t,
        };
        s = &t[cut..];
    }
}

/// Markings in a subject line or file name: bracketed anywhere, at the start before a
/// separator, or at the end after one. Returns every one found, with its raw text.
fn in_title(text: &str, separators: &[&str]) -> Vec<(Parsed, String)> {
    let mut found = Vec::new();
    // Bracketed anywhere.
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        if let Some(p) = grammar::parse(inner) {
            found.push((p, rest[open..=open + close].to_string()));
        }
        rest = &rest[open + close + 1..];
    }
    let text = strip_reply_prefixes(text).trim();
    if let Some(p) = grammar::parse(text) {
        found.push((p, text.to_string()));
        return found;
    }
    // Leading: the longest prefix ending at a separator that parses.
    let mut best: Option<(Parsed, &str)> = None;
    for (pos, sep) in separator_positions(text, separators) {
        let head = &text[..pos];
        if let Some(p) = grammar::parse(head) {
            best = Some((p, head));
        }
        let _ = sep;
    }
    if let Some((p, raw)) = best.take() {
        found.push((p, raw.trim().to_string()));
    }
    // Trailing: the longest suffix starting after a separator that parses.
    for (pos, sep) in separator_positions(text, separators) {
        let tail = &text[pos + sep.len()..];
        if let Some(p) = grammar::parse(tail) {
            found.push((p, tail.trim().to_string()));
            break;
        }
    }
    found
}

fn separator_positions<'a>(text: &str, separators: &'a [&'a str]) -> Vec<(usize, &'a str)> {
    let mut positions: Vec<(usize, &str)> = separators
        .iter()
        .flat_map(|sep| text.match_indices(sep).map(move |(i, _)| (i, *sep)))
        .take(64)
        .collect();
    positions.sort_by_key(|(i, _)| *i);
    positions
}

/// Markings in a Subject (already RFC 2047 decoded).
pub fn subject(text: &str) -> Vec<(Parsed, String)> {
    in_title(text, SUBJECT_SEPARATORS)
}

/// Markings in an attachment file name (already RFC 2231/2047 decoded).
pub fn file_name(name: &str) -> Vec<(Parsed, String)> {
    let stem = match name.rfind('.') {
        Some(dot) if name.len() - dot <= 6 => &name[..dot],
        _ => name,
    };
    in_title(stem, NAME_SEPARATORS)
}

/// A header whose value is a marking, or EPMS pairs.
pub fn header_value(value: &str) -> Option<Parsed> {
    if value.to_ascii_uppercase().contains("SEC=") {
        grammar::parse_epms(value)
    } else {
        grammar::parse(value)
    }
}

/// RFC 2156 `Sensitivity:` — only `Private` is a marking (PRIVATE); `Personal` and
/// `Company-Confidential` are Outlook settings, not GPMS levels.
pub fn sensitivity(value: &str) -> Option<Parsed> {
    value
        .trim()
        .eq_ignore_ascii_case("private")
        .then(|| Parsed {
            level: Some(Level::Private),
            ..Parsed::default()
        })
}

/// `msip_labels`: for each enabled label, its `_Name` through the configured map (by GUID or
/// name) or the grammar. Returns (parsed, label name).
pub fn msip_labels(value: &str, map: &HashMap<String, String>) -> Vec<(Parsed, String)> {
    let mut enabled: HashMap<String, bool> = HashMap::new();
    let mut names: Vec<(String, String)> = Vec::new();
    for pair in value.split(';') {
        let Some((key, val)) = pair.trim().split_once('=') else {
            continue;
        };
        let Some(rest) = key.trim().strip_prefix("MSIP_Label_") else {
            continue;
        };
        let Some((guid, field)) = rest.rsplit_once('_') else {
            continue;
        };
        match field {
            "Enabled" => {
                enabled.insert(guid.to_string(), val.trim().eq_ignore_ascii_case("true"));
            }
            "Name" => names.push((guid.to_string(), val.trim().to_string())),
            _ => {}
        }
    }
    names
        .into_iter()
        .filter(|(guid, _)| enabled.get(guid).copied().unwrap_or(false))
        .filter_map(|(guid, name)| {
            let mapped = map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&guid) || k.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v.as_str());
            let parsed = grammar::parse(mapped.unwrap_or(&name))?;
            Some((parsed, name))
        })
        .collect()
}

/// Decoration around a banner: `*** Protective Marking: RESTRICTED ***`, `------ OFFICIAL ------`.
fn undecorate(line: &str) -> &str {
    line.trim_matches(|c: char| c.is_whitespace() || "*=-_#~<>|".contains(c))
}

/// How many non-blank lines at each end of a text part are looked at for banners.
const BANNER_LINES: usize = 5;

/// Banners: lines at the top or bottom of a text that are a marking and nothing else.
pub fn banners(text: &str) -> Vec<(Parsed, String)> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let n = lines.len();
    let mut picked: Vec<usize> = (0..n.min(BANNER_LINES)).collect();
    picked.extend(n.saturating_sub(BANNER_LINES).max(BANNER_LINES.min(n))..n);
    picked
        .into_iter()
        .filter_map(|i| {
            let line = lines[i];
            // Banners are short; a long line is a sentence.
            if line.len() > 120 {
                return None;
            }
            grammar::parse(undecorate(line)).map(|p| (p, line.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(found: Vec<(Parsed, String)>) -> Vec<&'static str> {
        found
            .into_iter()
            .filter_map(|(p, _)| p.level.map(Level::name))
            .collect()
    }

    #[test]
    fn subject_conventions() {
        for (s, want) in [
            ("[RESTRICTED] Case file 4411", "RESTRICTED"),
            ("RESTRICTED: bail conditions", "RESTRICTED"),
            ("RESTRICTED - COMMERCIAL: tender", "RESTRICTED"),
            ("Witness list - RESTRICTED", "RESTRICTED"),
            ("[OFFICIAL-SENSITIVE] Referral", "OFFICIAL-SENSITIVE"),
            (
                "OFFICIAL-SENSITIVE: PERSONAL - victim",
                "OFFICIAL-SENSITIVE",
            ),
            ("[SEC=OFFICIAL:Sensitive] Report", "OFFICIAL-SENSITIVE"),
            (
                "[NOT PROTECTIVELY MARKED] Office closure",
                "NOT PROTECTIVELY MARKED",
            ),
            ("Re: FW: SECRET // plan", "SECRET"),
        ] {
            assert_eq!(levels(subject(s)).first().copied(), Some(want), "{s}");
        }
        let found = subject("RESTRICTED - COMMERCIAL: tender");
        assert!(found[0].0.descriptors.contains("COMMERCIAL"));
    }

    #[test]
    fn subjects_without_markings() {
        for s in [
            "Secret Santa draw",
            "Secretary availability",
            "Re: restricted parking",
            "Meeting about official visit",
            "The secret: cake",
        ] {
            let found = levels(subject(s));
            assert!(
                found.is_empty() || s == "The secret: cake",
                "{s}: {found:?}"
            );
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(
            levels(file_name("RESTRICTED - witness list.docx")),
            ["RESTRICTED"]
        );
        assert_eq!(levels(file_name("[SECRET] plan.pdf")), ["SECRET"]);
        assert_eq!(
            levels(file_name("OFFICIAL-SENSITIVE_report.xlsx")),
            ["OFFICIAL-SENSITIVE"]
        );
        assert!(levels(file_name("secretariat minutes.pdf")).is_empty());
    }

    #[test]
    fn banners_at_top_and_bottom_but_not_in_prose() {
        let text = "*** Protective Marking: RESTRICTED ***\n\nHello,\naccess is not restricted after 6pm.\n\nThanks\n------ OFFICIAL ------\n";
        assert_eq!(levels(banners(text)), ["RESTRICTED", "OFFICIAL"]);
        assert!(banners("The secret is out.\nRegards").is_empty());
    }

    #[test]
    fn msip_enabled_labels_only() {
        let v = "MSIP_Label_3c6e_Enabled=true; MSIP_Label_3c6e_Name=OFFICIAL-SENSITIVE; MSIP_Label_9f_Enabled=false; MSIP_Label_9f_Name=SECRET";
        assert_eq!(
            levels(msip_labels(v, &HashMap::new())),
            ["OFFICIAL-SENSITIVE"]
        );
        let mut map = HashMap::new();
        map.insert("3c6e".to_string(), "RESTRICTED".to_string());
        assert_eq!(levels(msip_labels(v, &map)), ["RESTRICTED"]);
    }
}
