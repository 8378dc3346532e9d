//! One extractor per place a marking can stand: header values, the Subject, attachment
//! names, banner lines, Microsoft sensitivity labels. Each turns already-decoded text into
//! parsed markings; the MIME walk that finds the places is in `classify`.

use std::collections::HashMap;

use std::sync::LazyLock;

use regex::Regex;

use super::grammar;
use super::level::{Level, Parsed};

/// Separators that may follow a leading marking or precede a trailing one.
const SUBJECT_SEPARATORS: &[&str] = &[":", " - ", " – ", "//", " | ", " • ", " · "];
/// File names also use `_` (`OFFICIAL-SENSITIVE_report.xlsx`).
const NAME_SEPARATORS: &[&str] = &[":", " - ", " – ", "//", " | ", " • ", " · ", "_"];

/// Marks a title sets a marking off with (after folding: full-width `［ ］` and `（ ）` are
/// ASCII by then, every dash `-`): open, close, and whether only SECRET or TOP SECRET in
/// capitals counts between them (asterisks and dashes also set off prose: `*CONFIDENTIAL*
/// waste bins`). Quotes are not among them: a title quotes a marking to talk about it
/// (`Re: handling "SECRET" material`).
const BRACKETS: &[(char, char, bool)] = &[
    ('[', ']', false),
    ('(', ')', false),
    ('{', '}', false),
    ('<', '>', false),
    ('«', '»', false),
    ('‹', '›', false),
    ('【', '】', false),
    ('〔', '〕', false),
    ('〈', '〉', false),
    ('《', '》', false),
    ('「', '」', false),
    ('『', '』', false),
    ('〖', '〗', false),
    ('*', '*', true),
    ('-', '-', true),
];

/// Reply and forward prefixes in the languages mail clients write them (`RE`, `FW`, `FWD`,
/// `AW`, `WG`, `SV`, `VS`, `TR`, `RV`, `ANTW`, `Re[2]`), with or without a space before the
/// colon, and the tags mail systems put in front (`[EXTERNAL]`, `*EXTERNAL*`, `[SPAM]`).
static PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(?:RE|FWD?|AW|WG|SV|VS|TR|RV|ANTW|WTRL|R|I|ENC|REF|ODP|PD|YNT|İLT|ΑΠ|ΣΧΕΤ|ΠΡΘ|回复|答复|转发|回覆|轉寄|返信|転送|Ответ|Отв|Пересл|Переслать|תגובה|הועבר|رد|إعادة توجيه)\s*(?:\[\d+\]|\(\d+\))?\s*:|\*[A-Z ]{1,20}\*|\[[^\]]{0,40}\])")
        .expect("prefix regex")
});

/// Strips any chain of reply/forward prefixes and tags (bracketed markings in front are
/// found separately, so they are skipped here too).
fn strip_reply_prefixes(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        match PREFIX.find(t) {
            Some(m) if m.end() > 0 => s = &t[m.end()..],
            _ => return t,
        }
    }
}

/// The longest part of a title (before, after or between separators) read as a marking: a
/// marking with its qualifiers, or a subject's EPMS pairs, is far shorter, and a megabyte
/// subject then costs one parse, not one per separator.
const MAX_PART: usize = 1000;

/// Markings in a subject line or file name: bracketed anywhere, at the start before a
/// separator (after any reply/forward prefixes and tags), at the end after one, or as a
/// whole upper-case segment between separators. Returns every one found, with its raw text.
fn in_title(text: &str, separators: &[&str]) -> Vec<(Parsed, String)> {
    let mut found = Vec::new();
    // Under a right-to-left override the title is shown reversed: read it as shown too.
    if let Some(shown) = super::normalize::visual(text) {
        found.extend(in_title(&shown, separators));
    }
    // Bracketed anywhere, in any bracket a reader takes as one (full-width ones folded to
    // ASCII first); set off by asterisks or dashes only SECRET and above, in capitals.
    let folded_all = super::normalize::fold(text);
    for &(open, close, capitals) in BRACKETS {
        let mut rest: &str = &folded_all;
        while let Some(at) = rest.find(open) {
            let after = at + open.len_utf8();
            let Some(len) = rest[after..].find(close) else {
                break;
            };
            let inner = &rest[after..after + len];
            let end = after + len + close.len_utf8();
            let loud = |p: &Parsed| {
                !inner.chars().any(char::is_lowercase) && p.level.is_some_and(|l| l.rank() >= 4)
            };
            if let Some(p) = grammar::parse(inner).filter(|p| !capitals || loud(p)) {
                keep(&mut found, p, rest[at..end].to_string());
            }
            // A closing mark that is also an opening one (`*`, `"`) may open the next.
            rest = if open == close {
                &rest[after + len..]
            } else {
                &rest[end..]
            };
        }
    }
    // Prefixes in other scripts are matched before folding turns their letters into Latin
    // look-alikes (`Ответ:` would read `OTBET:`), and again after.
    let folded = super::normalize::fold(strip_reply_prefixes(text));
    let text = strip_reply_prefixes(&folded).trim();
    if let Some(p) = grammar::parse(text) {
        found.push((p, text.to_string()));
        // A whole title of pairs may still hold a higher marking in a part
        // (`SECRET plan - SEC=OFFICIAL`): read the parts too.
        if !super::epms::has_sec(text) {
            return found;
        }
    }
    // A level in capitals at the start, followed by ordinary words: `SECRET plan for Monday`
    // (capitals, so `Secret Santa` stays prose).
    let caps_end = text
        .char_indices()
        .find(|(_, c)| c.is_lowercase())
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let caps = text[..caps_end]
        .trim_end_matches(|c: char| c.is_alphabetic())
        .trim();
    if !caps.is_empty() {
        let caps = undecorate(caps);
        // Above RESTRICTED only: `RESTRICTED area map` stays the prose it usually is, and
        // `NPM update` is no release to send anywhere.
        if let Some(p) = grammar::parse(caps).filter(|p| p.level.is_some_and(|l| l.rank() >= 3)) {
            found.push((p, caps.to_string()));
        }
    }
    // EPMS pairs were read in the whole text above; its parts are read as markings only, so
    // a subject of many pairs and separators costs one pass over its pairs, not one per part.
    let positions = separator_positions(text, separators);
    // Leading: the longest prefix ending at a separator that parses.
    let mut best: Option<(Parsed, &str)> = None;
    for (pos, _) in &positions {
        let head = &text[..*pos];
        if head.len() > MAX_PART {
            break;
        }
        if let Some(p) = grammar::parse_marking(head) {
            best = Some((p, head));
        }
    }
    if let Some((p, raw)) = best.take() {
        found.push((p, raw.trim().to_string()));
    }
    // Trailing: the longest suffix starting after a separator that parses.
    for (pos, sep) in &positions {
        let tail = &text[pos + sep.len()..];
        if tail.len() > MAX_PART {
            continue;
        }
        if let Some(p) = grammar::parse_marking(tail) {
            found.push((p, tail.trim().to_string()));
            break;
        }
    }
    // Between separators: a segment that is a marking in capitals, as markings are written
    // (`Budget // SECRET // draft`); prose in lower case stays prose.
    let mut start = 0;
    for (pos, sep) in positions.iter().chain(std::iter::once(&(text.len(), ""))) {
        let segment = strip_reply_prefixes(&text[start..*pos]).trim();
        start = pos + sep.len();
        if segment.len() > MAX_PART
            || segment.chars().any(|c| c.is_lowercase())
            || segment.is_empty()
        {
            continue;
        }
        if let Some(p) = grammar::parse_marking(segment) {
            found.push((p, segment.to_string()));
        }
    }
    // The same text found by two rules is one finding.
    let mut seen = std::collections::HashSet::new();
    found.retain(|(_, raw)| seen.insert(raw.clone()));
    // And a finding that only repeats a shorter one inside it (`[SEC=SECRET]` and
    // `[SEC=SECRET] plan`) is that one.
    let all = found.clone();
    found.retain(|(p, raw)| {
        !all.iter()
            .any(|(q, r)| q == p && r.len() < raw.len() && raw.contains(r.as_str()))
    });
    found
}

/// Adds a title's finding, keeping their number bounded (a subject of forty thousand
/// bracketed markings): past 64, only one above every finding so far is kept, so the
/// highest is never lost.
fn keep(found: &mut Vec<(Parsed, String)>, p: Parsed, raw: String) {
    if found.len() >= 64 {
        let top = found
            .iter()
            .filter_map(|(q, _)| q.level.map(Level::rank))
            .max();
        if p.level.map(Level::rank) <= top {
            return;
        }
    }
    found.push((p, raw));
}

fn separator_positions<'a>(text: &str, separators: &'a [&'a str]) -> Vec<(usize, &'a str)> {
    let mut positions: Vec<(usize, &str)> = separators
        .iter()
        .flat_map(|sep| text.match_indices(sep).map(move |(i, _)| (i, *sep)))
        .collect();
    positions.sort_by_key(|(i, _)| *i);
    // The first and the last 256: a marking leads or trails a title, or stands near one
    // end, whatever stands between.
    if positions.len() > 512 {
        positions.drain(256..positions.len() - 256);
    }
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
    if super::epms::has_sec(value) {
        super::epms::parse(value)
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

/// Decoration around a banner: `*** Protective Marking: RESTRICTED ***`, `------ OFFICIAL ------`,
/// `// SECRET //`, bullets, emoji, parentheses: anything at either end that is not a
/// letter, a digit or a bracket the grammar reads.
fn undecorate(line: &str) -> &str {
    line.trim_matches(|c: char| !c.is_alphanumeric() && c != '[' && c != ']')
}

/// Banners: lines that are a marking and nothing else (optionally decorated), wherever they
/// stand in a text: at the top, above a signature, between the message and a disclaimer.
/// Prose stays prose because the whole line must parse. A line of quoted history (`> …`)
/// is a place of its own (`quoted:banner`). Returns (parsed, raw line, source).
pub fn banners(text: &str) -> Vec<(Parsed, String, &'static str)> {
    let mut found = Vec::new();
    for line in candidate_lines(text) {
        let (quoted, line) = unquote(line);
        // Folded first: invisible characters neither count towards the length nor hide
        // decoration.
        let folded = super::normalize::fold(line);
        let visible = undecorate(&folded);
        // Banners are short; a long line is a sentence. A line of EPMS pairs may be longer
        // (`VER=…, NS=…, SEC=…, CAVEAT=…, ORIGIN=…`), within reason.
        let pairs = super::epms::has_sec(visible);
        let limit = if pairs { 1000 } else { 120 };
        if visible.is_empty() || visible.chars().count() > limit {
            continue;
        }
        // Pairs are read once, in the undecorated line; the other readings of the same line
        // look for a marking only (else a line of many pairs is read four times over).
        let again: fn(&str) -> Option<Parsed> = if pairs {
            grammar::parse_marking
        } else {
            grammar::parse
        };
        let parsed = grammar::parse(visible)
            .or_else(|| again(line.trim()))
            // A numbered line is another text: its pairs are read (`1. VER=…, SEC=…`).
            .or_else(|| {
                let rest = unnumbered(visible);
                if rest.len() == visible.len() {
                    None
                } else {
                    grammar::parse(rest)
                }
            })
            .or_else(|| letter_spaced(visible).and_then(|s| again(&s)))
            // Decoration around a reversed run (`*** \u{202E}TERCES\u{202C} ***` shows as
            // `*** SECRET ***`): laid out as displayed first, then undecorated.
            .or_else(|| {
                let shown = super::normalize::visual(line)?;
                grammar::parse(undecorate(&super::normalize::fold(&shown)))
            });
        if let Some(p) = parsed {
            let source = if quoted { "quoted:banner" } else { "banner" };
            found.push((p, line.trim().to_string(), source));
        }
    }
    found
}

/// A line that is a marking starts (after its quote marks, decoration and an opening
/// bracket) with a level or one of the words that introduce one; the grammar need not look
/// at any other line. This check costs a few nanoseconds, so every line of a large text can
/// be read.
fn starts_like_marking(line: &str) -> bool {
    const STARTS: &[&str] = &[
        "sec", "res", "off", "con", "pro", "pri", "top", "not", "npm", "unc", "cla", "mar",
        // `Document classification:`, `Government Security Classification:`.
        "doc", "gov",
        // The EU's `TRES SECRET UE`.
        "tre", // EPMS pairs written as a line: `VER=2012.3, NS=gov.uk, SEC=…`.
        "ver", "ns=",
    ];
    // Most lines of prose fail on their first letter.
    let trimmed = line.trim_ascii_start().as_bytes();
    if let Some(first) = trimmed.first() {
        if first.is_ascii_alphabetic() && !b"SsRrOoCcPpTtNnUuMmVvHhEeFfDdGg".contains(first) {
            return false;
        }
    }
    // Or on their first word: a line that starts with an ASCII word of four or more letters
    // (`Please`, `Thanks`) followed by ASCII is the same line folded and undecorated, is no
    // list number nor letters set apart, so its first three letters decide. Only a word
    // followed by other characters (a zero-width space, a look-alike letter), or a national
    // prefix, needs the whole test.
    let word = trimmed
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .unwrap_or(trimmed.len());
    if word >= 4 && trimmed.get(word).is_none_or(u8::is_ascii) {
        let nation = grammar::NATIONS
            .iter()
            .any(|n| trimmed[..word].eq_ignore_ascii_case(n.as_bytes()));
        if !nation {
            // Lower case by the 0x20 bit: no byte but a letter becomes one.
            let key = [trimmed[0] | 0x20, trimmed[1] | 0x20, trimmed[2] | 0x20];
            return STARTS.iter().any(|s| key == s.as_bytes()[..3]);
        }
    }
    let folded = super::normalize::fold(line);
    let visible = undecorate(&folded);
    let head = without_nations(visible.trim_start_matches(['[', '(', ' ']).as_bytes());
    (head.len() >= 3
        && STARTS
            .iter()
            .any(|s| head[..3].eq_ignore_ascii_case(s.as_bytes())))
        // Rarer forms: a list number (`1. SECRET`) or letters set apart (`S E C R E T`).
        // (unnumbered returns the line itself or a shorter tail of it: compare lengths, not
        // the bytes)
        || unnumbered(visible).len() != visible.len()
        || letter_spaced(visible).is_some()
}

/// `head` after up to three national or alliance prefixes (`UK `, `NATO/`, `UK-`,
/// `COSMIC `), the words the grammar reads before a level.
fn without_nations(mut head: &[u8]) -> &[u8] {
    for _ in 0..3 {
        let word = if head.len() >= 4 && head[..4].eq_ignore_ascii_case(b"u.k.") {
            4
        } else {
            head.iter()
                .position(|b| !b.is_ascii_alphabetic())
                .unwrap_or(head.len())
        };
        if !grammar::NATIONS
            .iter()
            .any(|n| head[..word].eq_ignore_ascii_case(n.as_bytes()))
        {
            break;
        }
        // Then a space, `-` or `/` (`UK SECRET`, `UK-SECRET`, `NATO/EU SECRET`).
        let spaced = head[word..].trim_ascii_start();
        let rest = match spaced.first() {
            Some(b'-' | b'/') => spaced[1..].trim_ascii_start(),
            _ if spaced.len() < head.len() - word => spaced,
            _ => break,
        };
        head = rest;
    }
    head
}

/// The lines of `text` that may be a marking.
fn candidate_lines(text: &str) -> impl Iterator<Item = &str> {
    VisualLines { rest: text }.filter_map(|line| {
        let (_, unquoted) = unquote(line.text);
        let candidate = starts_like_marking(unquoted)
            || line.bidi
            || (line.equals && super::epms::has_sec(line.text))
            // A key a reader sees as `SEC=` (`ＳＥＣ＝`, `S\u{200B}EC=`, `SEC\u{A0}=`).
            // (Folding gives `=` only from `=` or the full-width `＝`.)
            || (line.non_ascii
                && (line.equals || line.text.contains('\u{FF1D}'))
                && super::epms::has_sec(&super::normalize::fold(line.text)));
        candidate.then_some(line.text)
    })
}

/// The lines of `text` that hold `byte`, numbered and cut as `str::lines` numbers and cuts
/// them. The walks that only read lines with a colon find those by one vectorised search
/// over the whole text rather than one scan per line.
pub(super) fn lines_holding(text: &str, byte: u8) -> impl Iterator<Item = (usize, &str)> {
    let b = text.as_bytes();
    // `from` is always the start of a line; `index` numbers the line starting at `counted`.
    let (mut from, mut counted, mut index) = (0, 0, 0);
    std::iter::from_fn(move || {
        let at = from + memchr::memchr(byte, b.get(from..)?)?;
        let start = memchr::memrchr(b'\n', &b[from..at]).map_or(from, |n| from + n + 1);
        let end = memchr::memchr(b'\n', &b[at..]).map_or(b.len(), |n| at + n);
        index += memchr::memchr_iter(b'\n', &b[counted..start]).count();
        counted = start;
        from = end + 1;
        let line = &text[start..end];
        // `str::lines` drops the CR of a CRLF only.
        let line = match line.strip_suffix('\r') {
            Some(cut) if end < b.len() => cut,
            _ => line,
        };
        Some((index, line))
    })
}

/// One line a reader sees, with what the candidate test asks of it found by the same scan.
struct VisualLine<'a> {
    text: &'a str,
    /// It holds `=` (an EPMS pair may stand anywhere in it).
    equals: bool,
    /// It holds a right-to-left override (U+202E) or isolate (U+2067): the reader sees it
    /// reversed, so its first letters say nothing.
    bidi: bool,
    /// It holds a character outside ASCII (which folding may turn into `SEC=`).
    non_ascii: bool,
}

/// The lines a reader sees: ended by LF, CRLF, a bare CR, VT, FF, NEL (U+0085) and the
/// Unicode line and paragraph separators (U+2028, U+2029). One pass over the bytes, which
/// also notes what the candidate test needs: the classifier runs this over every text of
/// every message, so it is the loop the gateway's CPU per message is made of.
struct VisualLines<'a> {
    rest: &'a str,
}

/// Bytes the scan stops at: the ASCII line breaks, `=`, and every non-ASCII byte (where
/// NEL, U+2028/9 and the bidi controls begin). Everything else is skipped by a table lookup.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[0x0B] = true;
    t[0x0C] = true;
    t[b'=' as usize] = true;
    let mut b = 0x80;
    while b < 256 {
        t[b] = true;
        b += 1;
    }
    t
};

/// The index of the first byte at or after `i` that is in `STOPS` (or the length). Eight
/// bytes at a time while none of them can be a stop: a byte below 0x0E (the line breaks are
/// 0x0A–0x0D), `=`, or one with the high bit set; the table decides the rest.
fn next_stop(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const EQUALS: u64 = u64::from_ne_bytes([b'='; 8]);
    loop {
        while let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let w = u64::from_ne_bytes(word);
            // Some byte below 0x0E, some byte equal to `=`, some byte >= 0x80.
            let low = w.wrapping_sub(ONES * 0x0E) & !w;
            let eq = (w ^ EQUALS).wrapping_sub(ONES) & !(w ^ EQUALS);
            if (low | eq | w) & HIGH != 0 {
                break;
            }
            i += 8;
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            if STOPS[bytes[i] as usize] {
                return i;
            }
            i += 1;
        }
        if i == bytes.len() {
            return i;
        }
    }
}

impl<'a> Iterator for VisualLines<'a> {
    type Item = VisualLine<'a>;

    fn next(&mut self) -> Option<VisualLine<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let bytes = self.rest.as_bytes();
        let (mut equals, mut bidi, mut non_ascii) = (false, false, false);
        let mut i = 0;
        // (end of the line, start of the next)
        let (end, next) = loop {
            i = next_stop(bytes, i);
            let Some(&b) = bytes.get(i) else {
                break (i, i);
            };
            let after = |n: usize| bytes.get(i + n).copied();
            match b {
                b'\r' if after(1) == Some(b'\n') => break (i, i + 2),
                b'\n' | b'\r' | 0x0B | 0x0C => break (i, i + 1),
                b'=' => equals = true,
                0xC2 if after(1) == Some(0x85) => break (i, i + 2),
                0xE2 => match (after(1), after(2)) {
                    (Some(0x80), Some(0xA8 | 0xA9)) => break (i, i + 3),
                    (Some(0x80), Some(0xAE)) | (Some(0x81), Some(0xA7)) => bidi = true,
                    _ => non_ascii = true,
                },
                _ => non_ascii |= b >= 0x80,
            }
            i += 1;
        };
        // The stops are ASCII bytes or the lead byte of a whole UTF-8 sequence, so both
        // indices fall on character boundaries.
        let text = self.rest.get(..end).unwrap_or_default();
        self.rest = self.rest.get(next..).unwrap_or_default();
        Some(VisualLine {
            text,
            equals,
            bidi,
            non_ascii,
        })
    }
}

/// A list number in front: `1. SECRET`, `a) SECRET`.
fn unnumbered(line: &str) -> &str {
    let rest = line.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    if rest.len() < line.len() && line.len() - rest.len() <= 3 && rest.starts_with(['.', ')']) {
        undecorate(&rest[1..])
    } else {
        line
    }
}

/// `S E C R E T`, `S.E.C.R.E.T`: letters set apart, read as the word.
fn letter_spaced(line: &str) -> Option<String> {
    // Cheap refusal first: in ordinary words the second character is a letter too.
    if line.chars().nth(1).is_none_or(char::is_alphanumeric) {
        return None;
    }
    let letters: String = line.chars().filter(|c| c.is_alphanumeric()).collect();
    let apart = line
        .chars()
        .collect::<Vec<_>>()
        .windows(2)
        .all(|w| !(w[0].is_alphanumeric() && w[1].is_alphanumeric()));
    (apart && letters.len() >= 3).then_some(letters)
}

/// A line of quoted history without its `>` marks.
fn unquote(line: &str) -> (bool, &str) {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('>') {
        return (false, line);
    }
    (true, trimmed.trim_start_matches(['>', ' ']))
}

/// The `Subject:` line of a forwarded or replied-to message written inline (Outlook's
/// `From: … Sent: … To: … Subject:` block, in English, German, French, Spanish, Dutch and
/// more; Gmail, Apple Mail and Thunderbird forwards): only when a `From:`/`Sent:`/`Date:`
/// line of the same block is within a few lines, so running text is not read as one.
static HISTORY_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:>\s*)*\*{0,2}(?:subject|betreff|objet|asunto|onderwerp|oggetto|assunto|emne|ämne|aihe|temat|tárgy|předmět|predmet|konu|тема|件名|主题|主旨|제목|θέμα|subiect|naslov)\*{0,2}\s*:\s*(.*)$")
        .expect("history subject regex")
});
static HISTORY_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:>\s*)*\*{0,2}(?:from|von|de|van|da|fra|från|od|sent|gesendet|envoyé|enviado|verzonden|inviato|date|datum|fecha|to|an|à|a|para|aan|cc|lähettäjä|lähetetty|vastaanottaja|feladó|elküldve|címzett|odesláno|komu|kimden|gönderildi|kime|tarih|от|отправлено|кому|дата|差出人|送信日時|宛先|发件人|发送时间|收件人|寄件者|收件者|보낸\s*사람|받는\s*사람|wysłano|do|skickat|till|sendt|til|lähetetty|enviada|trimis|către|από|προς|poslano|šalje)\*{0,2}\s*:")
        .expect("history header regex")
});

/// Markings in the subjects of inline history: (parsed, raw subject, source).
pub fn history_subjects(text: &str) -> Vec<(Parsed, String, &'static str)> {
    let mut found = Vec::new();
    let mut lines: Option<Vec<&str>> = None;
    for (i, line) in lines_holding(text, b':') {
        let Some(caps) = HISTORY_SUBJECT.captures(line) else {
            continue;
        };
        // Only now (rare) are the neighbouring lines needed.
        let lines = lines.get_or_insert_with(|| text.lines().collect());
        let near = lines[i.saturating_sub(5)..(i + 6).min(lines.len())]
            .iter()
            .filter(|l| HISTORY_HEADER.is_match(l))
            .count();
        if near == 0 {
            continue;
        }
        let quoted = line.trim_start().starts_with('>');
        let value = caps.get(1).map(|m| m.as_str()).unwrap_or("");
        for (parsed, raw) in subject(value) {
            let source = if quoted {
                "quoted:subject"
            } else {
                "inline-forward:subject"
            };
            found.push((parsed, raw, source));
        }
    }
    found
}

/// The new text of a message: what comes before its inline history (a forward or reply
/// separator, an `On … wrote:` attribution, an Outlook header block, quoted lines). The
/// sender's signature is looked for here only.
pub fn new_text(text: &str) -> &str {
    let mut offset = 0;
    // The lines as `split_inclusive('\n')` cuts them, found by a vectorised search.
    let b = text.as_bytes();
    let ends = memchr::memchr_iter(b'\n', b)
        .map(|n| n + 1)
        .chain((b.last() != Some(&b'\n') && !b.is_empty()).then_some(b.len()));
    let mut start = 0;
    let mut lines = ends
        .map(move |end| {
            let line = &text[start..end];
            start = end;
            line
        })
        .peekable();
    while let Some(line) = lines.next() {
        let l = line.trim();
        // Cheap tests first: most lines start with none of these.
        let separator = match l.as_bytes().first() {
            Some(b'>') => true,
            Some(b'-') => {
                l.starts_with("-----Original Message")
                    || l.starts_with("---------- Forwarded message")
                    || l.starts_with("-------- Forwarded Message")
                    || l.starts_with("-------- Original Message")
            }
            Some(b'B' | b'b') => l.eq_ignore_ascii_case("Begin forwarded message:"),
            _ => false,
        } || (l.ends_with("wrote:") && l.len() < 200)
            || (l.len() > 5
                && l.is_char_boundary(4)
                && l[..4].eq_ignore_ascii_case("from")
                && HISTORY_HEADER.is_match(l)
                && lines
                    .clone()
                    .take(4)
                    .any(|n| HISTORY_HEADER.is_match(n) || HISTORY_SUBJECT.is_match(n)));
        if separator {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
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
            ("NATO SECRET: exercise plan", "SECRET"),
            ("AW: [UK SECRET] Quelle", "SECRET"),
            ("COSMIC TOP SECRET plan", "TOP SECRET"),
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

    fn banner_levels(found: Vec<(Parsed, String, &str)>) -> Vec<&'static str> {
        found
            .into_iter()
            .filter_map(|(p, _, _)| p.level.map(Level::name))
            .collect()
    }

    fn lines(text: &str) -> Vec<&str> {
        VisualLines { rest: text }.map(|l| l.text).collect()
    }

    #[test]
    fn visual_lines_end_where_a_reader_sees_them_end() {
        assert_eq!(
            lines("a\nb\r\nc\rd\x0Be\x0Cf"),
            ["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(lines("é\u{85}ü\u{2028}x\u{2029}y"), ["é", "ü", "x", "y"]);
        // A break at either end, doubled breaks, a lone CR before CRLF.
        assert_eq!(lines("\na\r\r\nb\n\n"), ["", "a", "", "b", ""]);
        // Other three-byte characters that begin like U+2028 are text.
        assert_eq!(lines("a\u{2026}b\u{2030}c"), ["a\u{2026}b\u{2030}c"]);
        assert!(lines("").is_empty());
        let flags: Vec<(bool, bool)> = VisualLines {
            rest: "x=1\n\u{202E}TERCES\n\u{2067}a\nplain",
        }
        .map(|l| (l.equals, l.bidi))
        .collect();
        assert_eq!(
            flags,
            [(true, false), (false, true), (false, true), (false, false)]
        );
    }

    #[test]
    fn banners_after_every_kind_of_line_break() {
        for text in [
            "Hello\rSECRET\rBye",
            "Hello\u{0B}SECRET",
            "Hello\u{0C}SECRET\u{0C}",
            "Hello\u{85}SECRET",
            "Hello\u{2028}SECRET\u{2029}Bye",
            "Dear Bob, note=1 \u{2029}SEC=SECRET",
            "Hello\nx=1 y=2 SEC=SECRET\nBye",
            "Hello\nRef=12; SEC = SECRET\n",
            "Hello\nNATO SECRET\nBye",
            "Hi\nx=1 \u{FF33}\u{FF25}\u{FF23}=SECRET\n",
            "Hi\nx=1 S\u{200B}EC=SECRET\n",
            "Hi\nx=1 SEC\u{A0}=SECRET\n",
            "Hi\nx=1 SEC\u{FF1D}SECRET\n",
            "Hi\nRef=12;\u{A0}SEC\u{A0}=\u{A0}SECRET\n",
            "Hi\nx=1 \u{405}\u{415}\u{421}=SECRET\n",
            "Hi\nNATO \u{2013} SECRET\n",
            "UK-SECRET",
            "[NATO/EU SECRET]",
            "SECRET UE/EU SECRET",
            "Hi\n1. VER=2012.3, NS=gov.uk, SEC=Secret\n",
            "Hi\na) NS=gov.uk, sec=secret\n",
            "*** UK SECRET ***",
            "Hi\n[EU SECRET]",
            "Hi\n\u{202E}TERCES\u{202C}",
            "*** \u{202E}TERCES\u{202C} ***",
            "\u{202E}*** TERCES ***\u{202C}",
            "\u{202E}TERCES \u{2022}",
            "\u{202E}TERCES\u{2026}",
            "*** \u{202E}TERCES ***",
        ] {
            assert_eq!(banner_levels(banners(text)), ["SECRET"], "{text:?}");
        }
    }

    #[test]
    fn next_stop_finds_what_the_table_finds() {
        let mut texts: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain ascii text with no stop at all".to_vec(),
        ];
        for stop in [b'\n', b'\r', 0x0B, 0x0C, b'=', 0x80, 0xC2, 0xE2, 0xFF] {
            for at in 0..20 {
                let mut t = b"abc\tdef ghi jkl mno pqr".to_vec();
                t.insert(at, stop);
                texts.push(t);
            }
        }
        texts.push((0u8..=255).collect());
        for t in &texts {
            for from in 0..=t.len() {
                let want = (from..t.len())
                    .find(|&i| STOPS[t[i] as usize])
                    .unwrap_or(t.len());
                assert_eq!(next_stop(t, from), want, "{t:?} from {from}");
            }
        }
    }

    #[test]
    fn new_text_ends_at_the_history() {
        for (text, want) in [
            ("", ""),
            ("Hi Bob\r\nJane\r\n", "Hi Bob\r\nJane\r\n"),
            ("Hi\n> quoted\n", "Hi\n"),
            (
                "Hi\r\n\r\n-----Original Message-----\r\nFrom: x",
                "Hi\r\n\r\n",
            ),
            ("Hi\nOn Mon, Bob wrote:\n> x", "Hi\n"),
            ("Hi\nBegin forwarded message:", "Hi\n"),
            (
                "Hi\nFrom: Bob <b@x>\nSent: Monday\nTo: a@x\nSubject: s\n",
                "Hi\n",
            ),
            ("Hi\nFrom: the team, regards", "Hi\nFrom: the team, regards"),
            ("> all quoted", ""),
            ("no newline at the end", "no newline at the end"),
        ] {
            assert_eq!(new_text(text), want, "{text:?}");
        }
    }

    #[test]
    fn lines_holding_numbers_and_cuts_as_str_lines() {
        for text in [
            "",
            "a:b",
            "a\nb:c\r\nd\n:e:f\n\ng:",
            "x:\r",
            ":\n:\n\n\r\n:x\r\n",
            "no colon\nat all\n",
            "\u{e9}:\u{2028}\n\u{ff1a}: x",
        ] {
            let want: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains(':'))
                .collect();
            assert_eq!(
                lines_holding(text, b':').collect::<Vec<_>>(),
                want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn long_pair_lines_and_huge_subjects() {
        let padded = format!("Hello\n{}SEC=SECRET\nBye", "x=1 ".repeat(30));
        assert_eq!(banner_levels(banners(&padded)), ["SECRET"]);
        // One parse of pairs for the whole subject, none for its 125,000 separators' parts;
        // the marking at its end is found.
        let huge = format!("{}SECRET", "SEC=x - ".repeat(125_000));
        assert!(levels(subject(&huge)).contains(&"SECRET"));
        // A trailing marking after a hundred separators of another kind.
        let trailing = format!("{}SEC=SECRET", "Ref: 4411 - ".repeat(100));
        assert!(levels(subject(&trailing)).contains(&"SECRET"));
        let trailing = format!("{}SECRET", "Ref: 4411 - ".repeat(100));
        assert!(levels(subject(&trailing)).contains(&"SECRET"));
    }

    #[test]
    fn a_low_pair_never_hides_a_higher_marking_in_a_title() {
        for title in [
            "SECRET plan - SEC=OFFICIAL",
            "SECRET: SEC=OFFICIAL",
            "Budget // SEC=OFFICIAL, ORIGIN=a@b.gov.uk // SECRET",
            "TOP SECRET STRAP1 // SEC=OFFICIAL",
        ] {
            let found = levels(subject(title));
            assert!(
                found.contains(&"SECRET") || found.contains(&"TOP SECRET"),
                "{title}: {found:?}"
            );
        }
        assert!(levels(file_name("SECRET_report SEC=OFFICIAL.pdf")).contains(&"SECRET"));
        // Forty thousand bracketed findings keep the highest, in linear time.
        let many = format!(
            "{}[SECRET]",
            "[SEC=OFFICIAL, CAVEAT=A EYES ONLY]".repeat(40_000)
        );
        assert!(levels(subject(&many)).contains(&"SECRET"));
    }

    #[test]
    fn epms_header_pairs_after_other_pairs() {
        for value in [
            "Ref=12; SEC=TOP-SECRET",
            "x=1 y=2 SEC=SECRET",
            "SEC = SECRET",
        ] {
            let level = header_value(value).and_then(|p| p.level);
            assert!(
                matches!(level, Some(Level::Secret | Level::TopSecret)),
                "{value}: {level:?}"
            );
        }
    }

    #[test]
    fn banners_anywhere_but_not_in_prose() {
        let text = "*** Protective Marking: RESTRICTED ***\n\nHello,\naccess is not restricted after 6pm.\n\nThanks\n------ OFFICIAL ------\n";
        assert_eq!(banner_levels(banners(text)), ["RESTRICTED", "OFFICIAL"]);
        assert!(banners("The secret is out.\nRegards").is_empty());
        let middle = "Dear Bob,\n\nSECRET \u{2013} UK EYES ONLY\n\nThe plan.\nline\nline\nline\nline\nline\nline\n";
        assert_eq!(banner_levels(banners(middle)), ["SECRET"]);
        let epms = banners("Hello\nVER=2012.3, NS=gov.uk, SEC=SECRET\nBye\n");
        assert_eq!(banner_levels(epms), ["SECRET"]);
        let quoted = banners("Thanks\n\nOn Mon, Bob wrote:\n> SECRET\n> the plan\n");
        assert_eq!(quoted[0].2, "quoted:banner");
    }

    #[test]
    fn inline_history_subjects_in_several_languages() {
        for block in [
            "From: Bob\nSent: Monday\nTo: Jane\nSubject: SECRET: plan\n",
            "Von: Bob\nGesendet: Montag\nAn: Jane\nBetreff: AW: SECRET: Plan\n",
            "De : Bob\nEnvoyé : lundi\nÀ : Jane\nObjet : TR: [SECRET] plan\n",
            "---------- Forwarded message ---------\nFrom: Bob\nDate: Mon\nSubject: SECRET - plan\n",
        ] {
            let found = history_subjects(&format!("Please see below.\n\n{block}\nbody\n"));
            assert_eq!(found.first().map(|f| f.0.level.map(Level::name)), Some(Some("SECRET")), "{block}");
        }
        assert!(history_subjects("Subject: SECRET plan is in the diary\n").is_empty());
    }

    #[test]
    fn subject_prefix_chains_and_tags() {
        for s in [
            "RE: [EXTERNAL] OFFICIAL-SENSITIVE: bail address",
            "AW: WG: SV: TR: Re[2]: OFFICIAL-SENSITIVE: bail",
            "*EXTERNAL* FW : OFFICIAL-SENSITIVE - bail",
            "[NOT PROTECTIVELY MARKED] AW: OFFICIAL-SENSITIVE: bail",
        ] {
            let found = levels(subject(s));
            assert!(found.contains(&"OFFICIAL-SENSITIVE"), "{s}: {found:?}");
        }
        assert!(levels(subject("Budget // SECRET // draft")).contains(&"SECRET"));
        assert!(levels(subject("SECRET plan for Monday")).contains(&"SECRET"));
        assert!(levels(subject("NPM update for the site")).is_empty());
        assert!(levels(subject("Secret Santa")).is_empty());
        assert!(levels(subject("Party - secret - tell nobody")).is_empty());
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
