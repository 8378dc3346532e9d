//! Character sets as the reader's software decodes them. mailparse (and encoding_rs under
//! it) knows the WHATWG list, which is what browsers decode; Python's `email`, Outlook and
//! the scripts that write mail also decode what that list leaves out, so a part in one of
//! those was shown to a reader and read by markgate as ASCII with every other byte lost:
//! Python's spellings of the common labels (`utf_8`, `u8`, `cp65001`, `windows_1252`),
//! UTF-32, and EBCDIC (IBM 037, 500, 1140: a mainframe's mail, and an old trick).

/// A decoder for a charset label.
#[derive(Clone, Copy)]
pub enum Decoder {
    /// The WHATWG list, UTF-7 too (the `charset` crate mailparse decodes with).
    Whatwg(charset::Charset),
    /// UTF-32, big-endian or not; a byte-order mark decides when the label does not.
    Utf32 { big_endian: Option<bool> },
    /// A single-byte EBCDIC code page: IBM 037, with the bytes where another differs.
    Ebcdic(&'static [(u8, char)]),
}

/// IBM 037 (EBCDIC, US/Canada), byte by byte, as Python's `cp037` decodes it.
const CP037: &str = "\u{0}\u{1}\u{2}\u{3}\u{9c}\u{9}\u{86}\u{7f}\u{97}\u{8d}\u{8e}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{9d}\u{85}\u{8}\u{87}\u{18}\u{19}\u{92}\u{8f}\u{1c}\u{1d}\u{1e}\u{1f}\u{80}\u{81}\u{82}\u{83}\u{84}\u{a}\u{17}\u{1b}\u{88}\u{89}\u{8a}\u{8b}\u{8c}\u{5}\u{6}\u{7}\u{90}\u{91}\u{16}\u{93}\u{94}\u{95}\u{96}\u{4}\u{98}\u{99}\u{9a}\u{9b}\u{14}\u{15}\u{9e}\u{1a} \u{a0}âäàáãåçñ¢.<(+|&éêëèíîïìß!$*);¬-/ÂÄÀÁÃÅÇÑ¦,%_>?øÉÊËÈÍÎÏÌ`:#@'=\"Øabcdefghi«»ðýþ±°jklmnopqrªºæ¸Æ¤µ~stuvwxyz¡¿ÐÝÞ®^£¥·©§¶¼½¾[]¯¨´×{ABCDEFGHI\u{ad}ôöòóõ}JKLMNOPQR¹ûüùúÿ\\÷STUVWXYZ²ÔÖÒÓÕ0123456789³ÛÜÙÚ\u{9f}";
static CP037_CHARS: std::sync::LazyLock<Vec<char>> =
    std::sync::LazyLock::new(|| CP037.chars().collect());

/// Where IBM 500 (EBCDIC, international) differs from 037.
const CP500: &[(u8, char)] = &[
    (74, '['),
    (79, '!'),
    (90, ']'),
    (95, '^'),
    (176, '¢'),
    (186, '¬'),
    (187, '|'),
];
/// Where IBM 1140 (037 with the euro) differs from 037.
const CP1140: &[(u8, char)] = &[(159, '€')];

impl Decoder {
    /// The decoder a label names, if markgate knows it.
    pub fn for_label(label: &str) -> Option<Decoder> {
        // A label with junk after it (`utf-8,`, `ISO-8859-1, utf-8`, `"utf-8 "`): its first
        // word, as clients read it.
        let label = label
            .trim_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '"' | '\''))
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if let Some(c) = charset::Charset::for_label_no_replacement(label.as_bytes()) {
            return Some(Decoder::Whatwg(c));
        }
        let python = label.replace('_', "-");
        let whatwg = match python.as_str() {
            "u8" | "utf" | "utf8" | "cp65001" | "utf-8-sig" | "utf8mb4" | "utf8mb3" => "utf-8",
            "latin-1" => "iso-8859-1",
            "latin9" | "latin-9" => "iso-8859-15",
            "cp932" | "ms-kanji" | "mskanji" => "shift_jis",
            "cp949" | "uhc" | "ks-c-5601" | "ksc5601" => "euc-kr",
            "euc-cn" | "euccn" | "gb2312-80" => "gbk",
            other => other,
        };
        if let Some(c) = charset::Charset::for_label_no_replacement(whatwg.as_bytes()) {
            return Some(Decoder::Whatwg(c));
        }
        Some(match python.as_str() {
            "utf-32" | "utf32" | "u32" => Decoder::Utf32 { big_endian: None },
            "utf-32be" | "utf-32-be" => Decoder::Utf32 {
                big_endian: Some(true),
            },
            "utf-32le" | "utf-32-le" => Decoder::Utf32 {
                big_endian: Some(false),
            },
            "cp037" | "ibm037" | "ibm-037" | "ibm039" | "csibm037" | "ebcdic-cp-us"
            | "ebcdic-cp-ca" | "ebcdic-cp-wt" | "ebcdic-cp-nl" => Decoder::Ebcdic(&[]),
            "cp500" | "ibm500" | "ibm-500" | "csibm500" | "ebcdic-cp-be" | "ebcdic-cp-ch" => {
                Decoder::Ebcdic(CP500)
            }
            "cp1140" | "ibm1140" | "ibm-1140" => Decoder::Ebcdic(CP1140),
            _ => return None,
        })
    }

    pub fn decode(self, bytes: &[u8]) -> String {
        match self {
            Decoder::Whatwg(c) => c.decode(bytes).0.into_owned(),
            Decoder::Utf32 { big_endian } => utf32(bytes, big_endian),
            Decoder::Ebcdic(differs) => bytes
                .iter()
                .map(|&b| {
                    differs
                        .iter()
                        .find(|(at, _)| *at == b)
                        .map(|(_, c)| *c)
                        .unwrap_or(CP037_CHARS[b as usize])
                })
                .collect(),
        }
    }
}

fn utf32(bytes: &[u8], big_endian: Option<bool>) -> String {
    let (big, body) = match (big_endian, bytes) {
        (None, [0, 0, 0xFE, 0xFF, rest @ ..]) => (true, rest),
        (None, [0xFF, 0xFE, 0, 0, rest @ ..]) => (false, rest),
        (None, _) => (false, bytes),
        (Some(big), _) => (big, bytes),
    };
    body.chunks_exact(4)
        .map(|c| {
            let unit = [c[0], c[1], c[2], c[3]];
            let n = if big {
                u32::from_be_bytes(unit)
            } else {
                u32::from_le_bytes(unit)
            };
            char::from_u32(n).unwrap_or(char::REPLACEMENT_CHARACTER)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_python_decodes_is_decoded() {
        let ebcdic = [0xE2, 0xC5, 0xC3, 0xD9, 0xC5, 0xE3]; // SECRET
        for label in ["cp500", "IBM037", "cp1140", "ebcdic-cp-us"] {
            assert_eq!(Decoder::for_label(label).unwrap().decode(&ebcdic), "SECRET");
        }
        assert_eq!(
            Decoder::for_label("cp500").unwrap().decode(&[0x4A, 0x5A]),
            "[]"
        );
        let utf32: Vec<u8> = "SECRET"
            .chars()
            .flat_map(|c| (c as u32).to_be_bytes())
            .collect();
        assert_eq!(
            Decoder::for_label("utf-32be").unwrap().decode(&utf32),
            "SECRET"
        );
        for label in [
            "utf_8",
            "u8",
            "cp65001",
            "windows_1252",
            "latin_1",
            "ansi_x3.4-1968",
        ] {
            assert!(Decoder::for_label(label).is_some(), "{label}");
        }
        assert!(Decoder::for_label("x-unknown").is_none());
        assert_eq!(CP037.chars().count(), 256);
    }
}
