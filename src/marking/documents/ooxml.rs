//! Office Open XML (`.docx .xlsx .pptx` and their macro and template kinds): the
//! sensitivity label Office stores in the file, and the marking its templates print.
//!
//! - `docMetadata/LabelInfo.xml` (Office since 2021, with co-authoring of labelled files
//!   on) holds only label GUIDs: mapped through `classifier.msip_labels`, else an unknown
//!   label the rules see.
//! - `docProps/custom.xml` holds `MSIP_Label_<guid>_Enabled` / `_Name`: an enabled label's
//!   name goes through the marking grammar (or the mapping).
//! - Word headers and footers (`word/header*.xml`, `word/footer*.xml`) and the first and
//!   last paragraphs of the body; Excel sheet headers and footers (`&C…`): through the
//!   banner rule, as a mail body's lines are.

use super::archive::Zip;
use super::{xml, Budget, DocumentError, Findings};
use crate::config::ClassifierConfig;

/// Paragraphs read from each end of a Word body.
const BODY_ENDS: usize = 3;

pub fn inspect(
    zip: &mut Zip,
    place: &str,
    config: &ClassifierConfig,
    budget: &mut Budget,
    out: &mut Findings,
) -> Result<(), DocumentError> {
    let text_of = |zip: &mut Zip, name: &str, budget: &mut Budget, out: &mut Findings| {
        Ok::<_, DocumentError>(match zip.read(name, budget)? {
            Some(Ok(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Some(Err(why)) => {
                out.opaque.push(format!("{place}{name} {why}"));
                None
            }
            None => None,
        })
    };
    if let Some(info) = text_of(zip, "docMetadata/LabelInfo.xml", budget, out)? {
        for attrs in xml::elements(&info, "label") {
            let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
            let enabled =
                get("enabled").is_some_and(|e| e == "1" || e.eq_ignore_ascii_case("true"));
            let removed =
                get("removed").is_some_and(|e| e == "1" || e.eq_ignore_ascii_case("true"));
            if let (true, false, Some(id)) = (enabled, removed, get("id")) {
                super::label(id, None, place, "label", config, out);
            }
        }
    }
    if let Some(custom) = text_of(zip, "docProps/custom.xml", budget, out)? {
        let props = xml::custom_properties(&custom);
        let field = |guid: &str, f: &str| {
            props
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&format!("MSIP_Label_{guid}_{f}")))
                .map(|(_, v)| v.trim().to_string())
        };
        let guids: Vec<String> = props
            .iter()
            .filter_map(|(k, _)| {
                k.strip_prefix("MSIP_Label_")?
                    .strip_suffix("_Enabled")
                    .map(str::to_string)
            })
            .collect();
        for guid in guids {
            if field(&guid, "Enabled").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                let name = field(&guid, "Name");
                super::label(&guid, name.as_deref(), place, "label", config, out);
            }
        }
    }
    let names = zip.names();
    for name in &names {
        let lower = name.to_ascii_lowercase();
        let word_part = lower.starts_with("word/header") || lower.starts_with("word/footer");
        if word_part && lower.ends_with(".xml") {
            let what = if lower.starts_with("word/header") {
                "header"
            } else {
                "footer"
            };
            if let Some(text) = text_of(zip, name, budget, out)? {
                super::banners(&xml::paragraphs(&text).join("\n"), place, what, out);
            }
        } else if lower.starts_with("xl/worksheets/sheet") && lower.ends_with(".xml") {
            if let Some(text) = text_of(zip, name, budget, out)? {
                for (element, value) in xml::element_texts(
                    &text,
                    &[
                        "oddHeader",
                        "oddFooter",
                        "evenHeader",
                        "evenFooter",
                        "firstHeader",
                        "firstFooter",
                    ],
                ) {
                    let what = if element.ends_with("Header") {
                        "header"
                    } else {
                        "footer"
                    };
                    super::banners(&excel_header_text(&value), place, what, out);
                }
            }
        }
    }
    if let Some(body) = text_of(zip, "word/document.xml", budget, out)? {
        let paragraphs: Vec<String> = xml::paragraphs(&body)
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .collect();
        let n = paragraphs.len();
        let ends: Vec<&str> = paragraphs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < BODY_ENDS || *i + BODY_ENDS >= n)
            .map(|(_, p)| p.as_str())
            .collect();
        super::banners(&ends.join("\n"), place, "body", out);
    }
    Ok(())
}

/// An Excel header or footer without its codes: `&L`, `&C`, `&R` start sections (each on
/// a line of its own here), `&"font,style"`, `&12` (size), `&K…` (colour) and the field
/// codes (`&P`, `&D`, …) go, `&&` is an ampersand.
fn excel_header_text(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '&' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('&') => out.push('&'),
            Some('L' | 'C' | 'R') => out.push('\n'),
            Some('"') => {
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                }
            }
            Some('K') => {
                for _ in 0..6 {
                    chars.next();
                }
            }
            Some(d) if d.is_ascii_digit() => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn excel_codes_go_and_sections_are_lines() {
        assert_eq!(
            super::excel_header_text("&L&\"Arial,Bold\"&12Page &P&COFFICIAL-SENSITIVE&R&D"),
            "\nPage \nOFFICIAL-SENSITIVE\n"
        );
    }
}
