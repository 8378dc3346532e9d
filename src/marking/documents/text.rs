//! A file that is no document format but is text (`notes.log`, `notes.md`, `data.json`,
//! `notes.xml`, a plain text file named `notes.doc`): whatever its name or type says, the
//! program that opens it (Notepad, Word, a browser) shows its words, so they are read as a
//! mail body's are. Markup (XML, HTML) is read as the text a browser shows, JSON as its
//! string values one per line beside the raw text.

/// The text a reader sees in `bytes`, if they are text: UTF-16 with its byte-order mark,
/// else bytes with no NUL in them (UTF-8, lossy).
pub fn shown(bytes: &[u8]) -> Option<String> {
    let raw = if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, u16::from_le_bytes)
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, u16::from_be_bytes)
    } else if bytes.is_empty() || memchr::memchr(0, bytes).is_some() {
        return None;
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    let body = raw.trim_start_matches('\u{FEFF}');
    let start = body.trim_start();
    let mut text = if start.starts_with('<') {
        crate::marking::render::html_to_text(body)
    } else {
        body.to_string()
    };
    if start.starts_with(['{', '[']) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
            text.push('\n');
            strings(&value, &mut text);
        }
    }
    Some(text)
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Every string in a JSON value (keys and values), one per line.
fn strings(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.push_str(k);
                out.push('\n');
                strings(v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_read_as_they_are_shown() {
        assert!(shown(b"SECRET\r\n\r\nSource.")
            .unwrap()
            .contains("SECRET\r\n"));
        let xml = shown(b"<notes><marking>SECRET</marking></notes>").unwrap();
        assert_eq!(xml.trim(), "SECRET");
        let json = shown(br#"{"marking": "SECRET"}"#).unwrap();
        assert!(json.lines().any(|l| l == "SECRET"), "{json}");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("SECRET\r\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert!(shown(&utf16).unwrap().starts_with("SECRET"));
        assert!(shown(b"\x00\x01binary").is_none());
    }
}
