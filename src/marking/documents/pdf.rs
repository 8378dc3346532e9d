//! PDF: the sensitivity label Office writes into an exported PDF (`MSIP_Label_<guid>_*`
//! keys of the document Info dictionary, and the same in the XMP metadata packet), and the
//! Info dictionary's `/Title`, `/Subject` and `/Keywords` through the banner rule. Read
//! from the bytes (and from inflated object and metadata streams), so a PDF with a broken
//! cross-reference table is read as well as a sound one. An encrypted PDF is opaque.
//!
//! The text printed on the pages is read too (`pdf_text`).

use std::collections::BTreeMap;

use super::{Budget, DocumentError, Findings};
use crate::config::ClassifierConfig;

pub fn inspect(
    bytes: &[u8],
    place: &str,
    config: &ClassifierConfig,
    budget: &mut Budget,
    out: &mut Findings,
) -> Result<(), DocumentError> {
    if memchr::memmem::find(bytes, b"/Encrypt").is_some() {
        out.opaque.push(format!("{place} encrypted PDF"));
        return Ok(());
    }
    // Names may escape any byte as `#xx` (`/MSIP#5FLabel…`, `/T#69tle`): read them as
    // the reader does.
    let unescaped = unescape_names(bytes);
    let bytes = unescaped.as_deref().unwrap_or(bytes);
    // The file's streams, found once: the metadata's and the pages' readers both walk them.
    let all = streams(bytes);
    let (streams, unread) = metadata_streams(&all);
    if unread {
        out.opaque.push(format!(
            "{place} PDF metadata in a stream encoding markgate does not read"
        ));
    }
    let mut texts: Vec<Vec<u8>> = Vec::new();
    for stream in streams {
        match super::read_within(flate2::read::ZlibDecoder::new(stream), budget)? {
            Ok(inflated) => texts.push(inflated),
            Err(_) => out.opaque.push(format!(
                "{place} a PDF metadata stream that does not inflate"
            )),
        }
    }
    let mut labels: BTreeMap<String, (Option<bool>, Option<String>)> = BTreeMap::new();
    for (what, text) in
        std::iter::once(("info", bytes)).chain(texts.iter().map(|t| ("xmp", t.as_slice())))
    {
        for (guid, field, value) in msip_fields(text) {
            let Some(value) = value else {
                // An indirect reference (`9 0 R`) or a form not read: say so.
                out.opaque.push(format!(
                    "{place} a PDF label value markgate cannot read ({field})"
                ));
                continue;
            };
            let entry = labels.entry(guid).or_default();
            match field.to_ascii_lowercase().as_str() {
                // Any value saying enabled counts: a later "false" (a comment, a stale
                // copy) does not undo it.
                "enabled" => {
                    entry.0 =
                        Some(entry.0 == Some(true) || value.trim().eq_ignore_ascii_case("true"))
                }
                "name" => entry.1 = Some(value),
                _ => {}
            }
        }
        for key in ["Title", "Subject", "Keywords"] {
            for value in info_strings(text, key) {
                super::banners(&value, place, what, out);
                if key != "Title" {
                    continue;
                }
                // A title (the document's, in the viewer's title bar, or a bookmark's, in
                // its side bar) is read as a subject line is: `SECRET - Operation
                // Nightjar`; the gravest only, in capitals: `Confidential - Pay review` is
                // a title.
                for (parsed, raw) in crate::marking::places::subject(&value) {
                    if super::in_capitals(&parsed, &raw, 4) {
                        out.found.push((parsed, format!("{place}title"), raw));
                    }
                }
            }
        }
        // What a viewer shows of annotations and form fields without drawing them from
        // an appearance: a note's or a FreeText box's `/Contents`, a field's value `/V`
        // (one word of it is often data: the level in capitals only).
        for key in ["Contents", "V", "RC"] {
            for value in info_strings(text, key) {
                let value = if key == "RC" {
                    crate::marking::render::html_to_text(&value)
                } else {
                    value
                };
                super::grave_banners(&value, place, "annotation", out);
            }
        }
    }
    for (guid, (enabled, name)) in labels {
        if enabled == Some(true) {
            super::label(&guid, name.as_deref(), place, "info", config, out);
        }
    }
    page_text(bytes, &all, &texts, place, budget, out)
}

/// `bytes` with `#xx` escapes in names decoded, when there are any.
fn unescape_names(bytes: &[u8]) -> Option<Vec<u8>> {
    memchr::memchr(b'#', bytes)?;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'#' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = h * 16 + l;
                // Only characters that belong in a name: letters, digits, `_`, `-`.
                if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
                    out.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(out)
}

/// The start of the dictionary that ends just before `end` (`<< … >>` matched by depth,
/// so nested dictionaries and long ones are read whole).
fn dict_before(bytes: &[u8], end: usize) -> Option<&[u8]> {
    let close = memchr::memmem::rfind(&bytes[..end], b">>")?;
    let mut depth = 0usize;
    let mut i = close + 2;
    while i >= 2 {
        let pair = &bytes[i - 2..i];
        if pair == b">>" {
            depth += 1;
            i -= 2;
        } else if pair == b"<<" {
            depth -= 1;
            i -= 2;
            if depth == 0 {
                return Some(&bytes[i..close + 2]);
            }
        } else {
            i -= 1;
        }
        if close + 2 - i > 64 * 1024 {
            return None;
        }
    }
    None
}

/// Every stream of the file as stored: its dictionary and its data.
fn streams(bytes: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&bytes[at..], b"stream") {
        let start = at + i;
        at = start + 6;
        // `endstream` also contains "stream".
        if start >= 3 && &bytes[start - 3..start] == b"end" {
            continue;
        }
        // The keyword, not the word in a string (`(Workstream 3)`, `/URI (…upstream…)`):
        // right after a dictionary, and a line end after it.
        let after_dict = bytes[..start]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace());
        let keyword = after_dict.is_some_and(|i| i >= 1 && &bytes[i - 1..=i] == b">>")
            && matches!(bytes.get(start + 6), Some(b'\r' | b'\n'));
        if !keyword {
            continue;
        }
        let Some(dict) = dict_before(bytes, start) else {
            continue;
        };
        let mut data = start + 6;
        if bytes.get(data) == Some(&b'\r') {
            data += 1;
        }
        if bytes.get(data) == Some(&b'\n') {
            data += 1;
        }
        let Some(end) = memchr::memmem::find(&bytes[data..], b"endstream") else {
            break;
        };
        out.push((dict, &bytes[data..data + end]));
        at = data + end;
    }
    out
}

/// The names that follow `key` at the top level of a dictionary (`/Subtype /Image`:
/// `Image`), wherever it stands; nested dictionaries' keys are included, which only adds.
fn names_after(dict: &[u8], key: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for at in memchr::memmem::find_iter(dict, key) {
        let rest = &dict[at + key.len()..];
        // `/Type` and not `/TypeX`.
        if rest.first().is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        let rest = rest.trim_ascii_start();
        if let Some(name) = rest.strip_prefix(b"/") {
            let end = name
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'))
                .unwrap_or(name.len());
            out.push(name[..end].to_vec());
        }
    }
    out
}

/// How a stream is encoded, as far as markgate reads it.
#[derive(PartialEq)]
enum Encoding {
    Plain,
    Flate,
    /// Any other filter (or Flate with parameters): not read.
    Other,
}

fn encoding(dict: &[u8]) -> Encoding {
    let has = |w: &[u8]| memchr::memmem::find(dict, w).is_some();
    let other = has(b"DecodeParms")
        || [
            &b"ASCIIHex"[..],
            b"ASCII85",
            b"LZW",
            b"RunLength",
            b"Crypt",
            b"DCT",
            b"JBIG2",
            b"JPX",
            b"CCITT",
        ]
        .iter()
        .any(|f| has(f));
    match (has(b"/Filter"), has(b"FlateDecode"), other) {
        (false, _, _) => Encoding::Plain,
        (true, true, false) => Encoding::Flate,
        _ => Encoding::Other,
    }
}

/// The data of streams that may hold the Info dictionary or the XMP packet (object
/// streams, metadata streams), and whether one of them is in an encoding not read (any
/// filter but a plain FlateDecode).
fn metadata_streams<'a>(all: &[(&'a [u8], &'a [u8])]) -> (Vec<&'a [u8]>, bool) {
    let mut out = Vec::new();
    let mut unread = false;
    for &(dict, data) in all {
        let has = |w: &[u8]| memchr::memmem::find(dict, w).is_some();
        if !(has(b"ObjStm") || has(b"Metadata")) {
            continue;
        }
        match encoding(dict) {
            Encoding::Flate => out.push(data),
            Encoding::Other => unread = true,
            Encoding::Plain => {}
        }
    }
    (out, unread)
}

/// The most `ToUnicode` maps read from one file (a file has one per font).
const MAX_MAPS: usize = 128;

/// The text printed on the pages (`pdf_text`): every content stream, plain or inflated,
/// read through every `ToUnicode` map of the file. Pictures, fonts, embedded files and
/// metadata are not content and are not inflated; content in an encoding markgate does
/// not read is opaque.
fn page_text(
    bytes: &[u8],
    all: &[(&[u8], &[u8])],
    objects: &[Vec<u8>],
    place: &str,
    budget: &mut Budget,
    out: &mut Findings,
) -> Result<(), DocumentError> {
    let mut contents = Vec::new();
    let mut maps = Vec::new();
    let mut unread = false;
    let mut too_many = false;
    for &(dict, data) in all {
        let has = |w: &[u8]| memchr::memmem::find(dict, w).is_some();
        // A stream's own kind, by its keys: not a word anywhere in its dictionary (a form's
        // resources may name `/ImageB` or `/Image7`, or carry `/Metadata`).
        let own = |key: &[u8], values: &[&[u8]]| {
            names_after(dict, key)
                .iter()
                .any(|v| values.contains(&v.as_slice()))
        };
        let not_content = own(
            b"/Subtype",
            &[b"Image", b"Type1C", b"CIDFontType0C", b"OpenType"],
        ) || own(
            b"/Type",
            &[b"Metadata", b"ObjStm", b"XRef", b"EmbeddedFile"],
            // A picture by its keys too (a page thumbnail has no /Subtype).
        ) || [
            &b"/Length1"[..],
            b"/Length2",
            b"/Length3",
            b"/BitsPerComponent",
        ]
        .iter()
        .any(|w| has(w));
        if not_content {
            continue;
        }
        let stream = match encoding(dict) {
            Encoding::Plain => data.to_vec(),
            Encoding::Flate => {
                match super::read_within(flate2::read::ZlibDecoder::new(data), budget)? {
                    Ok(inflated) => inflated,
                    Err(_) => {
                        unread = true;
                        continue;
                    }
                }
            }
            Encoding::Other => {
                unread = true;
                continue;
            }
        };
        if memchr::memmem::find(&stream, b"begincmap").is_some()
            && memchr::memmem::find(&stream, b"endcmap").is_some()
        {
            if maps.len() < MAX_MAPS {
                maps.extend(super::pdf_text::CMap::parse(&stream));
            } else {
                too_many = true;
            }
        } else if [&b"BT"[..], b"Tj", b"TJ", b"ET"]
            .iter()
            .any(|op| memchr::memmem::find(&stream, op).is_some())
        {
            // Text, or the rest of a text object begun in the stream before it.
            contents.push(stream);
        }
    }
    if unread {
        out.opaque.push(format!(
            "{place} PDF page content in a stream encoding markgate does not read"
        ));
    }
    if too_many {
        out.opaque
            .push(format!("{place} PDF with more fonts than markgate reads"));
    }
    // Glyph-numbered text with no map to letters anywhere in the file: shown, not read.
    let glyph_numbers = contents.iter().any(|c| {
        [&b">Tj"[..], b"> Tj", b">]TJ", b">] TJ"]
            .iter()
            .any(|op| memchr::memmem::find(c, op).is_some())
    });
    if glyph_numbers && maps.is_empty() && memchr::memmem::find(bytes, b"/Identity-H").is_some() {
        out.opaque.push(format!(
            "{place} PDF text in a font with no ToUnicode map, not read"
        ));
    }
    // Simple fonts that rename their codes (`/Differences`), wherever their dictionaries
    // stand (in the file or in an object stream's inflated text).
    for text in std::iter::once(bytes).chain(objects.iter().map(Vec::as_slice)) {
        for at in memchr::memmem::find_iter(text, b"/Differences") {
            let rest = &text[at + b"/Differences".len()..];
            let Some(open) = rest.iter().position(|b| !b.is_ascii_whitespace()) else {
                continue;
            };
            if rest[open] == b'[' && maps.len() < MAX_MAPS {
                maps.extend(super::pdf_text::CMap::differences(&rest[open + 1..]));
            }
        }
    }
    // The page's content streams as one (a page's `/Contents` may be an array whose parts
    // split a text object, even a string's run of glyphs, between them).
    let content = contents.join(&b'\n');
    let (page, apart) = super::pdf_text::readings(&content, &maps);
    // A page's banner is typed in capitals; a word alone on a line of a PDF is often only
    // laid out so (a bold word in a text object of its own).
    super::loud_banners(&page, place, "page", out);
    super::grave_banners(&apart, place, "page", out);
    Ok(())
}

/// `(guid, field, value)` for every `MSIP_Label_<guid>_<field>` with a value, in the Info
/// dictionary's syntax (`/MSIP_Label_…_Name (OFFICIAL)`) or XMP's (`<pdfx:MSIP_Label_…_Name>
/// OFFICIAL</…>` or `pdfx:MSIP_Label_…_Name="OFFICIAL"`).
fn msip_fields(text: &[u8]) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&text[at..], b"MSIP_Label_") {
        let found = at + i;
        let start = found + b"MSIP_Label_".len();
        at = start;
        // `</pdfx:MSIP_Label_…>` closes an element: its value was read at the opening.
        let before = &text[found.saturating_sub(64)..found];
        if let Some(lt) = before.iter().rposition(|b| *b == b'<') {
            let tag = &before[lt + 1..];
            let closing =
                tag.starts_with(b"/") && !tag.iter().any(|b| b.is_ascii_whitespace() || *b == b'>');
            if closing {
                continue;
            }
        }
        let key_end = text[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
            .map(|p| start + p)
            .unwrap_or(text.len());
        let key = String::from_utf8_lossy(&text[start..key_end]).into_owned();
        let Some((guid, field)) = key.rsplit_once('_') else {
            continue;
        };
        let value = value_after(&text[key_end..]);
        if value.is_none() && !reference_after(&text[key_end..]) {
            // A mention in running text, not a key with a value.
            continue;
        }
        out.push((guid.to_string(), field.to_string(), value));
    }
    out
}

/// Whether an indirect reference (`12 0 R`) follows a key.
fn reference_after(rest: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&rest[..rest.len().min(32)]).into_owned();
    let mut words = text.split_whitespace();
    matches!(
        (words.next(), words.next(), words.next()),
        (Some(a), Some(b), Some(r)) if a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok() && r.starts_with('R')
    )
}

/// The value that follows a key: a PDF string, an XML element's text, or an attribute.
fn value_after(rest: &[u8]) -> Option<String> {
    let skip = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &rest[skip..];
    match rest.first()? {
        b'(' | b'<'
            if rest.get(1) != Some(&b'<')
                && (rest[0] == b'('
                    || rest.get(1).is_some_and(u8::is_ascii_hexdigit)
                    || rest.get(1) == Some(&b'>')) =>
        {
            pdf_string(rest)
        }
        b'>' => {
            let end = rest[1..].iter().position(|b| *b == b'<')?;
            Some(xml_text(&rest[1..1 + end]))
        }
        b'=' => {
            let quote = *rest.get(1)?;
            if quote != b'"' && quote != b'\'' {
                return None;
            }
            let end = rest[2..].iter().position(|b| *b == quote)?;
            Some(xml_text(&rest[2..2 + end]))
        }
        _ => None,
    }
}

fn xml_text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Every value of `/key` in Info-dictionary syntax.
fn info_strings(text: &[u8], key: &str) -> Vec<String> {
    let needle = format!("/{key}");
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&text[at..], needle.as_bytes()) {
        let after = at + i + needle.len();
        at = after;
        // `/Title` and not `/TitleX`.
        if text.get(after).is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        let rest = &text[after..];
        let skip = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        if let Some(s) = pdf_string(&rest[skip..]) {
            out.push(s);
        }
    }
    out
}

/// A PDF string at the start of `s`: `(literal)` with escapes and nesting, or `<hex>`;
/// UTF-16BE when it starts with a byte order mark, else PDFDocEncoding (read as Latin-1).
fn pdf_string(s: &[u8]) -> Option<String> {
    let bytes = match s.first()? {
        b'(' => super::pdf_text::literal(s, 0).0,
        b'<' => {
            let end = s.iter().position(|b| *b == b'>')?;
            super::pdf_text::hex_bytes(&s[1..end])
        }
        _ => return None,
    };
    if bytes.starts_with(&[0xFE, 0xFF]) {
        let units: Vec<u16> = bytes[2..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        return Some(String::from_utf16_lossy(&units));
    }
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Some(String::from_utf8_lossy(&bytes[3..]).into_owned());
    }
    Some(bytes.iter().map(|&b| b as char).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_and_xmp_label_syntaxes() {
        let pdf = b"<< /MSIP_Label_abc-1_Enabled (true) /MSIP_Label_abc-1_Name <FEFF004F004600460049004300490041004C> >>";
        let f = super::msip_fields(pdf);
        assert_eq!(
            f[0],
            ("abc-1".into(), "Enabled".into(), Some("true".into()))
        );
        assert_eq!(
            f[1],
            ("abc-1".into(), "Name".into(), Some("OFFICIAL".into()))
        );
        let xmp = b"<pdfx:MSIP_Label_g_Name>OFFICIAL-SENSITIVE</pdfx:MSIP_Label_g_Name> pdfx:MSIP_Label_g_Enabled=\"true\"";
        let f = super::msip_fields(xmp);
        assert_eq!(f[0].2.as_deref(), Some("OFFICIAL-SENSITIVE"));
        assert_eq!(f[1], ("g".into(), "Enabled".into(), Some("true".into())));
    }

    #[test]
    fn literal_strings_unescape() {
        assert_eq!(
            super::pdf_string(b"(SECRET \\(draft\\) \\101)").as_deref(),
            Some("SECRET (draft) A")
        );
    }
}
