//! The little XML reading documents need: text by element, attributes of named elements.
//! quick-xml underneath; names compared by local name (the `w:` in `w:t` is whatever the
//! file declared). A part that is not well-formed yields what was read before the error.

use quick_xml::events::Event;
use quick_xml::Reader;

/// One step of a walk.
enum Step<'a> {
    Start(&'a str, Vec<(String, String)>),
    Text(&'a str),
    End(&'a str),
}

fn walk(xml: &str, mut f: impl FnMut(Step)) {
    let mut reader = Reader::from_str(xml);
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(_) => return,
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = e.local_name();
                let attrs = e
                    .attributes()
                    .flatten()
                    .map(|a| {
                        let key = a.key.local_name().as_ref().to_string();
                        let value = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map(|v| v.into_owned())
                            .unwrap_or_default();
                        (key, value)
                    })
                    .collect();
                f(Step::Start(name.as_ref(), attrs));
                if empty {
                    f(Step::End(name.as_ref()));
                }
            }
            Event::End(e) => f(Step::End(e.local_name().as_ref())),
            Event::Text(t) => f(Step::Text(&t.xml10_content())),
            Event::CData(t) => f(Step::Text(&t.xml10_content())),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => match r.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        _ => None,
                    },
                };
                if let Some(c) = c {
                    f(Step::Text(c.encode_utf8(&mut [0u8; 4])));
                }
            }
            Event::Eof => return,
            _ => {}
        }
    }
}

/// The text of an XML part (or a text file): UTF-16 when it starts with a byte order mark
/// (Office Open XML allows it), else UTF-8.
pub fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |le: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks(2)
            .map(|c| {
                let pair = [c[0], *c.get(1).unwrap_or(&0)];
                if le {
                    u16::from_le_bytes(pair)
                } else {
                    u16::from_be_bytes(pair)
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(true),
        [0xFE, 0xFF, ..] => utf16(false),
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The local name of the first element of a part (what the part is, whatever its name).
pub fn root(xml: &str) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                return Some(e.local_name().as_ref().to_string())
            }
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// Every `string` of a VML `textpath` (Word's watermark: "SECRET" across the page).
pub fn watermarks(xml: &str) -> Vec<String> {
    elements(xml, "textpath")
        .into_iter()
        .filter_map(|attrs| {
            attrs
                .into_iter()
                .find(|(k, _)| k == "string")
                .map(|(_, v)| v)
        })
        .collect()
}

/// The paragraphs of a WordprocessingML part (`w:p`), their text from `w:t` runs, tabs
/// and breaks as spaces and line ends.
pub fn paragraphs(xml: &str) -> Vec<String> {
    blocks(xml, &["p"], &["t"], Tabs::Space)
}

/// A header's or footer's paragraphs: its tabs set the left, centre and right parts apart
/// (`<tab>SECRET<tab>Page 1 of 3` is three places on the page, not one line).
pub fn header_paragraphs(xml: &str) -> Vec<String> {
    blocks(xml, &["p"], &["t"], Tabs::Apart)
}

/// What a tab is in a block's text.
#[derive(Clone, Copy, PartialEq)]
pub enum Tabs {
    Space,
    Apart,
}

/// The text of each `block` element, from the `texts` elements inside it, breaks as line
/// ends and tabs as `tabs` says: Word's paragraphs (`p`, `t`), Excel's shared strings
/// (`si`, `t`) and inline strings (`is`, `t`), and OpenDocument's paragraphs and headings,
/// whose text stands in the element itself (`texts` empty: all text inside, `text:s` a
/// space). A block inside a block (a frame's paragraph in a paragraph, a note, a comment)
/// is a text of its own, and the outer one's text goes on around it.
pub fn blocks(xml: &str, block: &[&str], texts: &[&str], tabs: Tabs) -> Vec<String> {
    let mut out = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut in_text = false;
    walk(xml, |step| match step {
        Step::Start(name, _) if block.contains(&name) => open.push(String::new()),
        Step::Start(name, _) if texts.contains(&name) => in_text = true,
        Step::Start("s", _) => {
            if let Some(p) = open.last_mut() {
                p.push(' ');
            }
        }
        // Word's non-breaking hyphen is an element, not a character.
        Step::Start("noBreakHyphen", _) => {
            if let Some(p) = open.last_mut() {
                p.push('-');
            }
        }
        Step::Start("tab" | "ptab", _) if tabs == Tabs::Space => {
            if let Some(p) = open.last_mut() {
                p.push(' ');
            }
        }
        Step::Start("tab" | "ptab" | "br" | "cr" | "line-break", _) => {
            if let Some(p) = open.last_mut() {
                p.push('\n');
            }
        }
        Step::End(name) if texts.contains(&name) => in_text = false,
        Step::End(name) if block.contains(&name) => out.extend(open.pop()),
        Step::Text(t) if in_text || texts.is_empty() => {
            if let Some(p) = open.last_mut() {
                p.push_str(t);
            }
        }
        _ => {}
    });
    out
}

/// The cells of a worksheet's first `rows` rows that show anything (empty rows above a
/// banner, and hidden ones, are skipped: the first rows a reader sees are the banner's):
/// each cell's type (`t`: `s` a shared string's index, `inlineStr`, `str`, none a number)
/// and its value or inline text.
pub fn first_cells(xml: &str, rows: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut shown = 0u32;
    let mut row: Vec<(String, String)> = Vec::new();
    let mut hidden = false;
    let mut cell: Option<(String, String)> = None;
    let mut in_value = false;
    walk(xml, |step| match step {
        Step::Start("row", attrs) => {
            row.clear();
            hidden = attrs
                .iter()
                .any(|(k, v)| k == "hidden" && (v == "1" || v == "true"));
        }
        Step::End("row")
            if shown < rows && !hidden && row.iter().any(|(_, v)| !v.trim().is_empty()) =>
        {
            shown += 1;
            out.append(&mut row);
        }
        Step::Start("c", attrs) if shown < rows => {
            let t = attrs.into_iter().find(|(k, _)| k == "t").map(|(_, v)| v);
            cell = Some((t.unwrap_or_default(), String::new()));
        }
        Step::Start("v" | "t", _) => in_value = true,
        Step::End("v" | "t") => in_value = false,
        Step::Text(t) if in_value => {
            if let Some((_, value)) = cell.as_mut() {
                value.push_str(t);
            }
        }
        Step::End("c") => row.extend(cell.take()),
        _ => {}
    });
    out
}

/// OpenDocument's paragraphs and headings (`text:p`, `text:h`) of `content.xml` (the body)
/// or `styles.xml` (page headers and footers); a frame, comment or note anchored in one
/// (with its author, date, citation) is a text of its own.
pub fn odf_paragraphs(xml: &str) -> Vec<String> {
    blocks(
        xml,
        &["p", "h", "frame", "annotation", "note"],
        &[],
        Tabs::Space,
    )
}

/// The text of every element with one of `names` (local names), with its name.
pub fn element_texts(xml: &str, names: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    walk(xml, |step| match step {
        Step::Start(name, _) if open.is_none() && names.contains(&name) => {
            open = Some((name.to_string(), String::new()));
        }
        Step::Text(t) => {
            if let Some((_, text)) = open.as_mut() {
                text.push_str(t);
            }
        }
        Step::End(name) if open.as_ref().is_some_and(|(n, _)| n == name) => {
            out.extend(open.take());
        }
        _ => {}
    });
    out
}

/// The attributes of every element named `name`.
pub fn elements(xml: &str, name: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    walk(xml, |step| {
        if let Step::Start(n, attrs) = step {
            if n == name {
                out.push(attrs);
            }
        }
    });
    out
}

/// The custom document properties (`docProps/custom.xml`): each `property`'s `name` and
/// the text of its value element.
pub fn custom_properties(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    walk(xml, |step| match step {
        Step::Start("property", attrs) => {
            let name = attrs
                .into_iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v)
                .unwrap_or_default();
            open = Some((name, String::new()));
        }
        Step::Text(t) => {
            if let Some((_, value)) = open.as_mut() {
                value.push_str(t);
            }
        }
        Step::End("property") => out.extend(open.take()),
        _ => {}
    });
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn word_paragraphs_and_entities() {
        let xml = r#"<w:document xmlns:w="x"><w:body><w:p><w:r><w:t>OFFICIAL</w:t></w:r><w:r><w:t xml:space="preserve">&#x2013;SENSITIVE &amp; more</w:t></w:r></w:p><w:p/></w:body></w:document>"#;
        assert_eq!(super::paragraphs(xml), ["OFFICIAL–SENSITIVE & more", ""]);
    }

    #[test]
    fn custom_properties_read_names_and_values() {
        let xml = r#"<Properties><property fmtid="{x}" pid="2" name="MSIP_Label_abc_Enabled"><vt:lpwstr>true</vt:lpwstr></property><property name="MSIP_Label_abc_Name"><vt:lpwstr>OFFICIAL-SENSITIVE</vt:lpwstr></property></Properties>"#;
        assert_eq!(
            super::custom_properties(xml),
            [
                ("MSIP_Label_abc_Enabled".to_string(), "true".to_string()),
                (
                    "MSIP_Label_abc_Name".to_string(),
                    "OFFICIAL-SENSITIVE".to_string()
                )
            ]
        );
    }
}
