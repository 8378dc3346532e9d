//! One normalisation before the grammar, for every place: what a reader sees as
//! `SECRET – UK EYES ONLY` must parse whatever characters spell it. Dashes and hyphens of
//! every kind become `-`; soft hyphens and zero-width characters go; non-breaking and
//! other spaces become a space; full-width forms become ASCII; and Cyrillic and Greek
//! letters that look like Latin capitals are folded to them, so `ЅЕСRЕТ` typed with
//! Cyrillic letters is SECRET. Evidence keeps the original text; only the grammar sees this.
//!
//! Plain ASCII (nearly every marking) is returned borrowed, without a copy.

use std::borrow::Cow;

/// The text as the grammar reads it.
pub fn fold(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            // Soft hyphen, zero-width space/joiners, word joiner, BOM, and other invisible
            // format characters a reader never sees.
            '\u{AD}'
            | '\u{034F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}' => {}
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

/// The Latin letter a Cyrillic or Greek letter is drawn like, upper or lower case.
fn latin_lookalike(c: char) -> Option<char> {
    Some(match c {
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
    }
}
