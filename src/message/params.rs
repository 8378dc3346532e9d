//! MIME header parameters (`Content-Type: multipart/mixed; boundary="a;b"`) read as mail
//! clients read them: RFC 2045 quoted strings with their `\` escapes (a `;` inside quotes is
//! part of the value), RFC 2231 extended values and continuations (an empty or unknown
//! charset still gives the value, as Python and Thunderbird give it), and a Content-Type
//! that is not `type/subtype` read as `text/plain` (RFC 2045 5.2, Python).
//!
//! Why a reader of our own: the parser the classifier uses (`mailparse`) splits on every `;`,
//! quoted or not, lets the last of two equal names win and drops an extended value whose
//! charset it does not know. A boundary or a file name it read that way was not the one a
//! client shows, and whole parts a reader sees vanished from the classifier. The walk reads
//! every Content-Type, Content-Disposition and Content-Transfer-Encoding with this module,
//! and where `mailparse` would read one differently it writes the canonical form into the
//! view ([`canonical_headers`]) so the two cannot disagree.

use std::collections::BTreeMap;

use mailparse::MailHeaderMap;

/// A parameterised header value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The value before the parameters, trimmed (`multipart/mixed`, `attachment`).
    pub value: String,
    /// Each parameter once, name lower case. An RFC 2231 value wins over a plain one.
    pub params: BTreeMap<String, String>,
    /// Names given more than once with different values: mail clients disagree which one
    /// they show (Python the first plain one, Thunderbird the RFC 2231 one).
    pub conflicting: Vec<String>,
}

/// Parameters whose value decides how a part is read; two different values for one of them
/// make the part ambiguous.
pub const DECIDING: &[&str] = &["boundary", "charset", "name", "filename"];

/// One RFC 2231 section: `name*N` or `name*N*`.
struct Section {
    number: Option<u32>,
    extended: bool,
    value: String,
}

/// Parses a header value the way Python's `email` does (the first `;` ends the value; a `;`
/// inside quotes does not end a parameter).
pub fn parse(header: &str) -> Parsed {
    let (value, rest) = header.split_once(';').unwrap_or((header, ""));
    let mut plain: Vec<(String, String)> = Vec::new();
    let mut sections: BTreeMap<String, Vec<Section>> = BTreeMap::new();
    for piece in split_unquoted(rest) {
        let Some((name, raw)) = piece.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let value = unquote(raw.trim());
        match rfc2231_name(&name) {
            Some((base, number, extended)) => {
                sections.entry(base.to_string()).or_default().push(Section {
                    number,
                    extended,
                    value,
                })
            }
            None => plain.push((name, value)),
        }
    }
    let mut out = Parsed {
        value: value.trim().to_string(),
        ..Parsed::default()
    };
    for (name, value) in plain {
        match out.params.get(&name) {
            Some(first) if *first != value => out.conflicting.push(name),
            Some(_) => {}
            None => {
                out.params.insert(name, value);
            }
        }
    }
    for (name, mut parts) in sections {
        let Some(value) = assemble(&mut parts) else {
            out.conflicting.push(name);
            continue;
        };
        if out.params.get(&name).is_some_and(|plain| *plain != value) {
            out.conflicting.push(name.clone());
        }
        out.params.insert(name, value);
    }
    out.conflicting.sort();
    out.conflicting.dedup();
    out
}

impl Parsed {
    /// The first of [`DECIDING`] given twice with different values, if any.
    pub fn ambiguous(&self) -> Option<&str> {
        self.conflicting
            .iter()
            .map(String::as_str)
            .find(|n| DECIDING.contains(n))
    }
}

/// The pieces after the value, split on each `;` outside a quoted string.
fn split_unquoted(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A quoted string's content with its escapes undone; anything else as it stands.
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"') else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            // The closing quote; whatever follows it is not part of the value.
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

/// `name*`, `name*N` or `name*N*`: the base name, the section number and whether the
/// value is extended (`charset'language'percent-encoded`).
fn rfc2231_name(name: &str) -> Option<(&str, Option<u32>, bool)> {
    let (base, rest) = name.split_once('*')?;
    if base.is_empty() {
        return None;
    }
    if rest.is_empty() {
        return Some((base, None, true));
    }
    let (digits, extended) = match rest.strip_suffix('*') {
        Some(d) => (d, true),
        None => (rest, false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, digits.parse().ok(), extended))
}

/// The value of one RFC 2231 parameter from its sections, in section order; `None` when
/// the sections contradict each other (a single `name*` beside numbered ones, a number
/// given twice).
fn assemble(parts: &mut [Section]) -> Option<String> {
    parts.sort_by_key(|s| s.number);
    let numbered = parts.iter().filter(|s| s.number.is_some()).count();
    if numbered != 0 && numbered != parts.len() {
        return None;
    }
    if parts.windows(2).any(|w| w[0].number == w[1].number) {
        return None;
    }
    let mut charset = String::new();
    let mut bytes = Vec::new();
    for (i, section) in parts.iter().enumerate() {
        if !section.extended {
            bytes.extend_from_slice(section.value.as_bytes());
            continue;
        }
        let mut value = section.value.as_str();
        if i == 0 {
            let mut fields = value.splitn(3, '\'');
            if let (Some(cs), Some(_language), Some(rest)) =
                (fields.next(), fields.next(), fields.next())
            {
                charset = cs.trim().to_ascii_lowercase();
                value = rest;
            }
        }
        bytes.extend(percent_decode(value));
    }
    Some(decode_charset(&bytes, &charset))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Bytes in a named charset; UTF-8 (lossy) when the charset is empty or unknown, as a
/// client still shows the name.
fn decode_charset(bytes: &[u8], charset: &str) -> String {
    match encoding_rs::Encoding::for_label_no_replacement(charset.as_bytes()) {
        Some(enc) if enc != encoding_rs::UTF_8 => enc.decode_without_bom_handling(bytes).0.into(),
        Some(_) => String::from_utf8_lossy(bytes).into_owned(),
        // UTF-32, EBCDIC, Python's spellings: what a client decodes the name in.
        None => match super::charsets::Decoder::for_label(charset) {
            Some(decoder) => decoder.decode(bytes),
            None => String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

/// A part's Content-Type as a client reads it: the first `Content-Type` header (RFC 2047
/// words decoded, as mailparse decodes them), else `text/plain` (`message/rfc822` inside a
/// digest). A value with no `type/` or no `/subtype` is `text/plain` (RFC 2045 5.2).
pub fn content_type(headers: &[mailparse::MailHeader], digest: bool) -> Parsed {
    let mut parsed = match headers.get_first_value("Content-Type") {
        Some(value) => parse(&value),
        None => Parsed::default(),
    };
    parsed.value = parsed.value.to_ascii_lowercase();
    let essence = parsed
        .value
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    if headers.get_first_value("Content-Type").is_none() {
        parsed.value = if digest {
            "message/rfc822"
        } else {
            "text/plain"
        }
        .to_string();
    } else if !essence.contains('/') || essence.starts_with('/') || essence.ends_with('/') {
        // (`a/b/c` stays as it is: Thunderbird reads `multipart/x/y` as a multipart.)
        parsed.value = "text/plain".to_string();
    }
    parsed
}

/// A part's Content-Disposition, if it has one (the first).
pub fn content_disposition(headers: &[mailparse::MailHeader]) -> Option<Parsed> {
    let mut parsed = parse(&headers.get_first_value("Content-Disposition")?);
    parsed.value = parsed.value.to_ascii_lowercase();
    Some(parsed)
}

/// Characters written as they are in a canonical value; every other byte is
/// percent-encoded, so no parser can split or unquote it differently.
fn plain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'+' | b'/')
}

fn canonical_line(name: &str, value: &str, params: &BTreeMap<String, String>) -> String {
    let mut line = format!("{name}: {value}");
    for (k, v) in params {
        if !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            continue;
        }
        line.push_str("; ");
        line.push_str(k);
        line.push_str("*=utf-8''");
        for b in v.bytes() {
            if plain_char(b) {
                line.push(b as char);
            } else {
                line.push_str(&format!("%{b:02X}"));
            }
        }
    }
    line.push_str("\r\n");
    line
}

/// The header lines to put before a header block so that `mailparse`, which reads the
/// first of each header, reads these three as a client does; empty when it already does
/// (nearly every message: the block then stays byte for byte as sent). An error when
/// clients themselves disagree (a deciding parameter given twice with different values).
pub fn canonical_headers(
    headers: &[mailparse::MailHeader],
    digest: bool,
) -> Result<String, Ambiguous> {
    let mut out = String::new();
    if let Some(raw) = headers.get_first_value("Content-Type") {
        let ours = content_type(headers, digest);
        if let Some(name) = ours.ambiguous() {
            return Err(Ambiguous(name.to_string()));
        }
        let theirs = mailparse::parse_content_type(&raw);
        if ours.value != theirs.mimetype || ours.params != theirs.params {
            out.push_str(&canonical_line("Content-Type", &ours.value, &ours.params));
        }
    }
    if let Some(raw) = headers.get_first_value("Content-Disposition") {
        let theirs = mailparse::parse_content_disposition(&raw);
        if let Some(ours) = content_disposition(headers) {
            if let Some(name) = ours.ambiguous() {
                return Err(Ambiguous(name.to_string()));
            }
            let same_type = match &theirs.disposition {
                mailparse::DispositionType::Inline => ours.value == "inline",
                mailparse::DispositionType::Attachment => ours.value == "attachment",
                mailparse::DispositionType::FormData => ours.value == "form-data",
                mailparse::DispositionType::Extension(e) => *e == ours.value,
            };
            if !same_type || ours.params != theirs.params {
                out.push_str(&canonical_line(
                    "Content-Disposition",
                    &ours.value,
                    &ours.params,
                ));
            }
        }
    }
    if let Some(raw) = headers.get_first_value("Content-Transfer-Encoding") {
        let trimmed = raw.trim().to_ascii_lowercase();
        if trimmed != raw.to_lowercase() && !trimmed.is_empty() {
            out.push_str(&format!("Content-Transfer-Encoding: {trimmed}\r\n"));
        }
    }
    Ok(out)
}

/// A parameter that decides how a part is read, given twice with different values.
#[derive(Debug, thiserror::Error)]
#[error("the MIME parameter {0:?} is given twice with different values (mail clients differ on which they show)")]
pub struct Ambiguous(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parsed {
        parse(s)
    }

    #[test]
    fn quoted_semicolons_and_escapes_stay_in_the_value() {
        let c = p("multipart/mixed; boundary=\"pt;1\"; x-note=\"a;boundary=decoy;b\"");
        assert_eq!(c.params["boundary"], "pt;1");
        assert!(c.conflicting.is_empty());
        assert_eq!(p("a/b; boundary=\"a\\\"b\"").params["boundary"], "a\"b");
        assert_eq!(
            p("attachment; filename=\"v2; [SECRET] plan.png\"").params["filename"],
            "v2; [SECRET] plan.png"
        );
    }

    #[test]
    fn rfc2231_values_with_any_charset_are_read() {
        assert_eq!(
            p("attachment; filename*=''%5BSECRET%5D%20plan.png").params["filename"],
            "[SECRET] plan.png"
        );
        assert_eq!(
            p("attachment; filename*=x-foo''%5BSECRET%5D").params["filename"],
            "[SECRET]"
        );
        assert_eq!(
            p("attachment; filename*0*=utf-8''%C3%A9t; filename*1=\"e.pdf\"").params["filename"],
            "\u{e9}te.pdf"
        );
        assert_eq!(
            p("a; name*=iso-8859-1'en'caf%E9").params["name"],
            "caf\u{e9}"
        );
    }

    #[test]
    fn two_values_for_one_name_are_ambiguous() {
        assert_eq!(
            p("multipart/mixed; boundary=\"first\"; boundary=\"second\"").ambiguous(),
            Some("boundary")
        );
        assert_eq!(
            p("multipart/mixed; boundary=\"decoy\"; boundary*=us-ascii''real").ambiguous(),
            Some("boundary")
        );
        assert_eq!(p("a/b; boundary=x; boundary=\"x\"").ambiguous(), None);
        assert_eq!(p("a/b; format=a; format=b").ambiguous(), None);
    }

    #[test]
    fn a_type_that_is_not_type_slash_subtype_is_text_plain() {
        for v in ["textplain", "", "  ", "/plain", "text/"] {
            let line = format!("Content-Type: {v}");
            let (h, _) = mailparse::parse_header(line.as_bytes()).unwrap();
            assert_eq!(content_type(&[h], false).value, "text/plain", "{v:?}");
        }
    }

    #[test]
    fn the_canonical_form_reads_the_same_in_mailparse() {
        for v in [
            "multipart/mixed; boundary=\"pt;1\"",
            "attachment; filename=\"v2; [SECRET] plan.png\"",
            "text/plain; charset=\"utf-8\"; name*=''%27a%27%22%3B.txt",
        ] {
            let ours = p(v);
            let line = canonical_line("X", &ours.value, &ours.params);
            let value = line.trim_end().strip_prefix("X: ").unwrap();
            assert_eq!(
                mailparse::parse_content_type(value).params,
                ours.params,
                "{v}"
            );
        }
    }
}
