//! One normalisation before the grammar, for every place: what a reader sees as
//! `SECRET – UK EYES ONLY` must parse whatever characters spell it. Dashes and hyphens of
//! every kind become `-`; soft hyphens and zero-width characters go; non-breaking and
//! other spaces become a space; full-width forms become ASCII; and Cyrillic and Greek
//! letters that look like Latin capitals are folded to them, so `ЅЕСRЕТ` typed with
//! Cyrillic letters is SECRET. Evidence keeps the original text; only the grammar sees this.
//!
//! Plain ASCII (nearly every marking) is returned borrowed, without a copy.

use std::borrow::Cow;

/// Soft hyphen, zero-width space/joiners, word joiner, BOM, and other invisible format
/// characters a reader never sees.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{AD}'
        | '\u{034F}'
        | '\u{061C}'
        | '\u{115F}'
        | '\u{1160}'
        | '\u{17B4}'
        | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200A}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// The text without its invisible characters (borrowed when it has none): what a reader
/// sees of an address or a header line.
pub fn without_invisible(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || !text.chars().any(is_invisible) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter(|c| !is_invisible(*c)).collect())
}

/// The text as the grammar reads it.
pub fn fold(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if is_invisible(c) => {}
            // Combining marks (an underline or accent drawn on a letter): the letter is what
            // is read.
            '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}' => {}
            // Every dash and hyphen.
            '\u{2010}'..='\u{2015}'
            | '\u{2212}'
            | '\u{FE58}'
            | '\u{FE63}'
            | '\u{FF0D}'
            | '\u{2043}'
            | '\u{2E3A}'
            | '\u{2E3B}' => out.push('-'),
            // Full-width ASCII.
            '\u{FF01}'..='\u{FF5E}' => {
                out.push(char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c));
            }
            c if c.is_whitespace() => out.push(' '),
            c => out.push(latin_lookalike(c).unwrap_or(c)),
        }
    }
    Cow::Owned(out)
}

/// Text as it is displayed when it holds a right-to-left override (U+202E, or an RLI
/// isolate U+2067): the overridden run is shown reversed, so `\u{202E}TERCES` reads SECRET.
/// `None` when there is no override.
pub fn visual(text: &str) -> Option<String> {
    if !text.contains(['\u{202E}', '\u{2067}']) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut run: Option<Vec<char>> = None;
    for c in text.chars() {
        match c {
            '\u{202E}' | '\u{2067}' => {
                if let Some(r) = run.take() {
                    out.extend(r.into_iter().rev());
                }
                run = Some(Vec::new());
            }
            '\u{202C}' | '\u{2069}' => {
                if let Some(r) = run.take() {
                    out.extend(r.into_iter().rev());
                }
            }
            c => match &mut run {
                Some(r) => r.push(c),
                None => out.push(c),
            },
        }
    }
    if let Some(r) = run {
        out.extend(r.into_iter().rev());
    }
    Some(out)
}

/// The Latin letter a look-alike is drawn like: Cyrillic, Greek, Cherokee and Lisu letters,
/// small capitals, circled letters, Roman numerals and the mathematical alphanumerics.
fn latin_lookalike(c: char) -> Option<char> {
    let n = c as u32;
    // Mathematical alphanumerics: runs of A–Z, a–z; digits at the end.
    if (0x1D400..=0x1D6A3).contains(&n) {
        let i = (n - 0x1D400) % 52;
        return char::from_u32(if i < 26 { 0x41 + i } else { 0x61 + i - 26 });
    }
    if (0x1D7CE..=0x1D7FF).contains(&n) {
        return char::from_u32(0x30 + (n - 0x1D7CE) % 10);
    }
    // Circled and parenthesised letters.
    if (0x24B6..=0x24CF).contains(&n) {
        return char::from_u32(0x41 + n - 0x24B6);
    }
    if (0x24D0..=0x24E9).contains(&n) {
        return char::from_u32(0x61 + n - 0x24D0);
    }
    if (0x1F130..=0x1F149).contains(&n)
        || (0x1F150..=0x1F169).contains(&n)
        || (0x1F170..=0x1F189).contains(&n)
    {
        return char::from_u32(0x41 + (n - 0x1F130) % 32 % 26);
    }
    Some(match c {
        // Small capitals.
        'ᴀ' => 'A',
        'ʙ' => 'B',
        'ᴄ' => 'C',
        'ᴅ' => 'D',
        'ᴇ' => 'E',
        'ꜰ' => 'F',
        'ɢ' => 'G',
        'ʜ' => 'H',
        'ɪ' => 'I',
        'ᴊ' => 'J',
        'ᴋ' => 'K',
        'ʟ' => 'L',
        'ᴍ' => 'M',
        'ɴ' => 'N',
        'ᴏ' => 'O',
        'ᴘ' => 'P',
        'ʀ' => 'R',
        'ꜱ' => 'S',
        'ᴛ' => 'T',
        'ᴜ' => 'U',
        'ᴠ' => 'V',
        'ᴡ' => 'W',
        'ʏ' => 'Y',
        'ᴢ' => 'Z',
        // Roman numerals drawn as letters.
        'Ⅰ' | 'ⅰ' => 'I',
        'Ⅴ' | 'ⅴ' => 'V',
        'Ⅹ' | 'ⅹ' => 'X',
        'Ⅼ' | 'ⅼ' => 'L',
        'Ⅽ' | 'ⅽ' => 'C',
        'Ⅾ' | 'ⅾ' => 'D',
        'Ⅿ' | 'ⅿ' => 'M',
        // Lisu.
        'ꓐ' => 'B',
        'ꓑ' => 'P',
        'ꓓ' => 'D',
        'ꓔ' => 'T',
        'ꓖ' => 'G',
        'ꓗ' => 'K',
        'ꓙ' => 'J',
        'ꓚ' => 'C',
        'ꓜ' => 'Z',
        'ꓝ' => 'F',
        'ꓟ' => 'M',
        'ꓠ' => 'N',
        'ꓡ' => 'L',
        'ꓢ' => 'S',
        'ꓣ' => 'R',
        'ꓦ' => 'V',
        'ꓧ' => 'H',
        'ꓪ' => 'W',
        'ꓫ' => 'X',
        'ꓬ' => 'Y',
        'ꓮ' => 'A',
        'ꓰ' => 'E',
        'ꓲ' => 'I',
        'ꓳ' => 'O',
        'ꓴ' => 'U',
        // Cherokee.
        'Ꭺ' => 'A',
        'Ᏼ' => 'B',
        'Ꮯ' => 'C',
        'Ꭼ' => 'E',
        'Ꮋ' => 'H',
        'Ꭻ' => 'J',
        'Ꮶ' => 'K',
        'Ꮮ' => 'L',
        'Ꮇ' => 'M',
        'Ꮲ' => 'P',
        'Ꮪ' => 'S',
        'Ꭲ' => 'T',
        'Ꮩ' => 'V',
        'Ꮃ' => 'W',
        'Ꮓ' => 'Z',
        'Ꭱ' => 'R',
        // Cyrillic capitals and small letters.
        'А' | 'а' => 'A',
        'В' | 'в' => 'B',
        'С' | 'с' => 'C',
        'Е' | 'е' | 'Ё' | 'ё' => 'E',
        'Н' | 'н' => 'H',
        'І' | 'і' | 'Ї' | 'ї' | 'Ӏ' => 'I',
        'Ј' | 'ј' => 'J',
        'К' | 'к' => 'K',
        'М' | 'м' => 'M',
        'О' | 'о' => 'O',
        'Р' | 'р' => 'P',
        'Ѕ' | 'ѕ' => 'S',
        'Т' | 'т' => 'T',
        'Х' | 'х' => 'X',
        'У' | 'у' | 'Ү' | 'ү' => 'Y',
        'Ԁ' | 'ԁ' => 'D',
        'Ԍ' | 'ԍ' => 'G',
        'Ԛ' | 'ԛ' => 'Q',
        'Ԝ' | 'ԝ' => 'W',
        // Greek capitals and the small letters drawn like Latin ones.
        'Α' | 'α' => 'A',
        'Β' | 'β' => 'B',
        'Ε' | 'ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' | 'ι' => 'I',
        'Κ' | 'κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' | 'ο' => 'O',
        'Ρ' | 'ρ' => 'P',
        'Τ' | 'τ' => 'T',
        'Υ' | 'υ' => 'Y',
        'Χ' | 'χ' => 'X',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_reader_sees_as_a_marking_folds_to_ascii() {
        assert_eq!(
            fold("SECRET \u{2013} UK EYES ONLY"),
            "SECRET - UK EYES ONLY"
        );
        assert_eq!(fold("OFFICIAL\u{2011}SENSITIVE"), "OFFICIAL-SENSITIVE");
        assert_eq!(fold("ＳＥＣＲＥＴ"), "SECRET");
        assert_eq!(fold("ЅЕСRЕТ"), "SECRET");
        assert_eq!(fold("SE\u{AD}CR\u{200B}ET"), "SECRET");
        assert_eq!(
            fold("RESTRICTED\u{A0}-\u{A0}COMMERCIAL"),
            "RESTRICTED - COMMERCIAL"
        );
        assert!(matches!(fold("plain ascii"), Cow::Borrowed(_)));
        assert_eq!(fold("𝐒𝐄𝐂𝐑𝐄𝐓"), "SECRET");
        assert_eq!(fold("ꓢꓰꓚꓣꓰꓔ"), "SECRET");
        assert_eq!(fold("ꜱᴇᴄʀᴇᴛ"), "SECRET");
        assert_eq!(fold("S\u{332}E\u{332}CRET\u{FE0F}"), "SECRET");
        assert_eq!(visual("\u{202E}TERCES"), Some("SECRET".to_string()));
    }
}
