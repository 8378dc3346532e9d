//! Header decoding as lenient as mail clients: RFC 2047 encoded words that the MIME parser
//! leaves as they are (an RFC 2231 language tag `=?utf-8*en?b?…?=`, base64 without its
//! padding, an unknown charset) are decoded here, UTF-8 where the bytes are UTF-8 and
//! Latin-1 otherwise, never skipped: a client shows them decoded, so markgate must read
//! them decoded.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

static WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=").expect("encoded word regex")
});

/// `value` with any encoded words still in it decoded.
pub fn leftover_words(value: &str) -> Cow<'_, str> {
    if !value.contains("=?") {
        return Cow::Borrowed(value);
    }
    WORD.replace_all(value, |caps: &regex::Captures| {
        let charset = caps[1].to_ascii_lowercase();
        let bytes = if caps[2].eq_ignore_ascii_case("b") {
            base64(&caps[3])
        } else {
            quoted(&caps[3])
        };
        match bytes {
            Some(bytes) => text(&bytes, &charset),
            None => caps[0].to_string(),
        }
    })
}

/// A header's value as a client shows it. mailparse decodes UTF-16 words as UTF-16LE
/// whatever their byte-order mark says (`=?utf-16?b?/v8AWwBT…?=`, big-endian, came out as
/// CJK characters); a header with such words is decoded here from its raw value instead.
pub fn header_value(header: &mailparse::MailHeader) -> String {
    let raw = header.get_value_raw();
    let utf16 = memchr::memmem::find_iter(raw, b"=?").any(|i| {
        raw[i + 2..]
            .get(..6)
            .is_some_and(|c| c.eq_ignore_ascii_case(b"utf-16"))
    });
    if utf16 {
        let unfolded: String = String::from_utf8_lossy(raw).split(['\r', '\n']).collect();
        return leftover_words(unfolded.trim()).into_owned();
    }
    leftover_words(&header.get_value()).into_owned()
}

fn text(bytes: &[u8], charset: &str) -> String {
    if let Some(endian) = charset.strip_prefix("utf-16") {
        let (units, big) = match bytes {
            [0xFE, 0xFF, rest @ ..] => (rest, true),
            [0xFF, 0xFE, rest @ ..] => (rest, false),
            _ => (bytes, endian == "be"),
        };
        let units = units.chunks_exact(2).map(|c| {
            if big {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        });
        return char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
    }
    // A charset mailparse refused (UTF-32, EBCDIC) or one it never saw (the word had a
    // language tag) that a client still decodes.
    if let Some(decoder) = super::charsets::Decoder::for_label(charset) {
        return decoder.decode(bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        // Latin-1 (and windows-1252's printable range) maps byte for byte.
        Err(_) if charset != "utf-8" => bytes.iter().map(|&b| b as char).collect(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Base64, padding optional, stopping at the first character that is not base64.
fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// RFC 2047 Q: `_` is a space, `=XX` a byte.
fn quoted(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_the_parser_leaves_are_decoded() {
        // "SECRET: plan" with a language tag, and unpadded.
        assert_eq!(
            leftover_words("=?utf-8*en?b?U0VDUkVUOiBwbGFu?="),
            "SECRET: plan"
        );
        assert_eq!(leftover_words("=?utf-8?b?U0VDUkVU?= x"), "SECRET x");
        assert_eq!(
            leftover_words("=?iso-8859-1*en?q?SECRET=3A_plan?="),
            "SECRET: plan"
        );
        assert!(matches!(leftover_words("plain"), Cow::Borrowed(_)));
        // UTF-16 by its byte-order mark, big-endian here.
        let (h, _) =
            mailparse::parse_header(b"Subject: x =?utf-16?b?/v8AWwBTAEUAQwBSAEUAVABd?=").unwrap();
        assert_eq!(header_value(&h), "x [SECRET]");
    }
}
