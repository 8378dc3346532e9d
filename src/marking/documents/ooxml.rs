//! Office Open XML (`.docx .xlsx .pptx` and their macro and template kinds): the
//! sensitivity label Office stores in the file, and the marking its templates print.
//! Every XML part is read (within the budget) and routed by what it is (its root
//! element), not by its name: a part can be called anything its relationships say.
//!
//! - `labelList` (`docMetadata/LabelInfo.xml`, Office since 2021): label GUIDs only,
//!   mapped through `classifier.msip_labels`, else an unknown label the rules see.
//! - `Properties` (`docProps/custom.xml`): `MSIP_Label_<guid>_Enabled` / `_Name`.
//! - `hdr`, `ftr`, `document` (Word), `sld`, `sldMaster`, `sldLayout`, `notes`
//!   (PowerPoint): every paragraph through the banner rule, and watermarks.
//! - `footnotes`, `endnotes`, `comments` (Word): as the body.
//! - `worksheet` (Excel): the sheet's headers and footers (`&C…`), and the cells of its
//!   first two rows that show anything, where a sheet's banner stands (a cell further down is data: a
//!   register's "SECRET" column says what other things are); `sst`: the shared strings
//!   those cells name; `workbook`: the sheet names on the tabs.
//!
//! Footnotes, comments, cells, sheet names and a header's tab-separated parts count
//! only for SECRET and TOP SECRET in capitals: one word is all such places often hold
//! ("Confidential?", a drop-down of "Public / Internal / Secret", a "CONFIDENTIAL"
//! column).

use super::archive::Zip;
use super::{xml, Budget, DocumentError, Findings};
use crate::config::ClassifierConfig;

pub fn inspect(
    zip: &mut Zip,
    place: &str,
    config: &ClassifierConfig,
    budget: &mut Budget,
    out: &mut Findings,
) -> Result<(), DocumentError> {
    // The first rows' cells: their own text, and the shared strings they name (the
    // strings part may come before or after the sheets).
    let mut cells: Vec<String> = Vec::new();
    let mut shared: Vec<usize> = Vec::new();
    let mut strings: Vec<String> = Vec::new();
    for (name, shown) in zip.names() {
        if !name.ends_with(".xml") || name == "[content_types].xml" {
            continue;
        }
        let text = match zip.read(&name, budget)? {
            Some(Ok(bytes)) => xml::decode_text(&bytes),
            Some(Err(why)) => {
                out.opaque.push(format!("{place}{shown} {why}"));
                continue;
            }
            None => continue,
        };
        match xml::root(&text).as_deref() {
            Some("labelList") => label_info(&text, place, config, out),
            Some("Properties") => custom_properties(&text, place, config, out),
            Some(
                root @ ("hdr" | "ftr" | "document" | "footnotes" | "endnotes" | "comments" | "sld"
                | "sldMaster" | "sldLayout" | "notes"),
            ) => {
                let what = match root {
                    "hdr" => "header",
                    "ftr" => "footer",
                    "document" => "body",
                    "footnotes" | "endnotes" => "note",
                    "comments" => "comment",
                    _ => "slide",
                };
                let mut lines = xml::paragraphs(&text);
                lines.extend(xml::watermarks(&text));
                if matches!(what, "note" | "comment") {
                    super::grave_banners(&lines.join("\n"), place, what, out);
                } else {
                    super::banners(&lines.join("\n"), place, what, out);
                }
                // A header's parts set apart at its tabs (`<tab>SECRET<tab>Page 1 of 3`);
                // a part alone is often a word (`R v Smith<tab>Confidential`).
                if matches!(what, "header" | "footer") {
                    let parts = xml::header_paragraphs(&text).join("\n");
                    super::grave_banners(&parts, place, what, out);
                }
            }
            Some("worksheet") => {
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
                for (kind, value) in xml::first_cells(&text, 2) {
                    match kind.as_str() {
                        "s" => shared.extend(value.trim().parse::<usize>().ok()),
                        _ => cells.push(value),
                    }
                }
            }
            Some("sst") => strings = xml::blocks(&text, &["si"], &["t"], xml::Tabs::Space),
            Some("workbook") => {
                let names: Vec<String> = xml::elements(&text, "sheet")
                    .into_iter()
                    .filter_map(|attrs| {
                        attrs.into_iter().find(|(k, _)| k == "name").map(|(_, v)| v)
                    })
                    .collect();
                super::grave_banners(&names.join("\n"), place, "sheet name", out);
            }
            _ => {}
        }
    }
    cells.extend(shared.iter().filter_map(|&i| strings.get(i).cloned()));
    super::grave_banners(&cells.join("\n"), place, "cell", out);
    Ok(())
}

fn truthy(v: &str) -> bool {
    let v = v.trim();
    v == "1" || v.eq_ignore_ascii_case("true")
}

fn label_info(text: &str, place: &str, config: &ClassifierConfig, out: &mut Findings) {
    for attrs in xml::elements(text, "label") {
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let enabled = get("enabled").is_some_and(truthy);
        let removed = get("removed").is_some_and(truthy);
        if let (true, false, Some(id)) = (enabled, removed, get("id")) {
            super::label(id, None, place, "label", config, out);
        }
    }
}

fn custom_properties(text: &str, place: &str, config: &ClassifierConfig, out: &mut Findings) {
    let props = xml::custom_properties(text);
    let split = |k: &str| -> Option<(String, String)> {
        let lower = k.to_ascii_lowercase();
        let rest = lower.strip_prefix("msip_label_")?;
        let (guid, field) = rest.rsplit_once('_')?;
        Some((guid.to_string(), field.to_string()))
    };
    let mut labels: std::collections::BTreeMap<String, (bool, Option<String>)> =
        std::collections::BTreeMap::new();
    for (key, value) in &props {
        let Some((guid, field)) = split(key) else {
            continue;
        };
        let entry = labels.entry(guid).or_default();
        match field.as_str() {
            // Any value saying enabled counts (a later "false" does not undo it).
            "enabled" => entry.0 |= truthy(value),
            "name" => entry.1 = Some(value.trim().to_string()),
            _ => {}
        }
    }
    for (guid, (enabled, name)) in labels {
        if enabled {
            super::label(&guid, name.as_deref(), place, "label", config, out);
        }
    }
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
