//! The text a PDF prints on its pages, as a viewer shows it, for the banner rule: a page
//! headed `SECRET` in 36 pt was read by nothing before this (only the metadata was).
//!
//! Content streams are read without resolving which font each string is shown in (that
//! needs the page tree and the object graph, which a damaged file does not have): every
//! string is read in the simple fonts' one byte a character (Word's and most
//! generators' WinAnsi text: `(SECRET) Tj`, `[(SE) 12 (CRET)] TJ`) and through every
//! `ToUnicode` map in the file (LibreOffice, Chrome and others show glyph numbers,
//! `<0036002800260035> Tj`, through one). Each reading is a text of its own; a string
//! that a map does not wholly cover adds nothing to that map's reading. Lines break where
//! the page moves to a new line (`T*`, `'`, `"`, a `Td`/`TD` with a vertical move, a `Tm`
//! to another height, the end of a text object); strings on one line run together, a gap
//! in a `TJ` wider than a quarter of an em is a space, and a jump along the line (a `Td`
//! across, a `TJ` gap of two em) is a new line in one reading of its own.

use std::collections::HashMap;

/// A `ToUnicode` map: codes of `width` bytes to text. A simple font's `/Differences`
/// is one too, whose codes not named keep the base encoding (`fallback`).
pub struct CMap {
    width: usize,
    codes: HashMap<u32, String>,
    fallback: bool,
}

/// The most codes one map's ranges may add (a map is a few hundred for a font subset).
const MAX_CODES: usize = 1 << 16;

impl CMap {
    /// Reads a `ToUnicode` stream's `bfchar` and `bfrange` sections; `None` when it has
    /// neither.
    pub fn parse(stream: &[u8]) -> Option<CMap> {
        let text = String::from_utf8_lossy(stream);
        let mut codes = HashMap::new();
        let mut width = 0;
        for section in text.split("beginbfchar").skip(1) {
            let body = section.split("endbfchar").next().unwrap_or("");
            let hexes = hex_strings(body);
            for pair in hexes.chunks_exact(2) {
                width = width.max(pair[0].len());
                codes.insert(code(&pair[0]), utf16(&pair[1]));
            }
        }
        for section in text.split("beginbfrange").skip(1) {
            let body = section.split("endbfrange").next().unwrap_or("");
            for line in body.lines() {
                let hexes = hex_strings(line);
                let (Some(lo), Some(hi)) = (hexes.first(), hexes.get(1)) else {
                    continue;
                };
                width = width.max(lo.len());
                let (lo, hi) = (code(lo), code(hi));
                if hi < lo || (hi - lo) as usize > MAX_CODES || codes.len() > MAX_CODES {
                    continue;
                }
                if line.contains('[') {
                    // `<lo> <hi> [<d1> <d2> …]`: one destination per code.
                    for (i, dst) in hexes[2..].iter().enumerate().take(MAX_CODES) {
                        codes.insert(lo.wrapping_add(i as u32), utf16(dst));
                    }
                } else if let Some(dst) = hexes.get(2) {
                    // `<lo> <hi> <dst>`: consecutive codes, the destination's last unit
                    // counting up.
                    let base = utf16_units(dst);
                    for (i, c) in (lo..=hi).enumerate() {
                        let mut units = base.clone();
                        if let Some(last) = units.last_mut() {
                            *last = last.wrapping_add(i as u16);
                        }
                        codes.insert(c, String::from_utf16_lossy(&units));
                    }
                }
            }
        }
        (!codes.is_empty()).then_some(CMap {
            width: width.clamp(1, 4),
            codes,
            fallback: false,
        })
    }

    /// A simple font's `/Differences` array (`[ 65 /S /E 70 /C … ]`, its text after the
    /// `[`): codes renamed to glyphs, read by the glyph's name (`S`, `hyphen`, `uni0053`).
    /// `None` when it renames nothing markgate can name.
    pub fn differences(array: &[u8]) -> Option<CMap> {
        let text = String::from_utf8_lossy(array);
        let body = text.split(']').next().unwrap_or("");
        let mut codes = HashMap::new();
        let mut code = 0u32;
        for word in body
            .split(|c: char| c.is_whitespace() || c == '/')
            .filter(|w| !w.is_empty())
        {
            if let Ok(n) = word.parse::<u32>() {
                code = n;
                continue;
            }
            if let Some(c) = glyph(word) {
                codes.insert(code, c.to_string());
            }
            code = code.wrapping_add(1);
            if codes.len() > 256 {
                break;
            }
        }
        (!codes.is_empty()).then_some(CMap {
            width: 1,
            codes,
            fallback: true,
        })
    }

    /// A shown string through this map, if every code of it is mapped.
    fn decode(&self, bytes: &[u8]) -> Option<String> {
        if !bytes.len().is_multiple_of(self.width) {
            return None;
        }
        let mut out = String::new();
        for chunk in bytes.chunks(self.width) {
            let c = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b));
            match self.codes.get(&c) {
                Some(text) => out.push_str(text),
                None if self.fallback => out.push_str(
                    &encoding_rs::WINDOWS_1252
                        .decode_without_bom_handling(chunk)
                        .0,
                ),
                None => return None,
            }
        }
        Some(out)
    }
}

/// The character a glyph name stands for (the Adobe Glyph List's names for what a marking
/// is written in: letters, digits, spaces and punctuation, and `uniXXXX`).
fn glyph(name: &str) -> Option<char> {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return c.is_ascii_alphabetic().then_some(c);
    }
    if let Some(hex) = name.strip_prefix("uni").filter(|h| h.len() == 4) {
        return u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
    }
    Some(match name {
        "space" | "nbspace" => ' ',
        "hyphen" | "minus" => '-',
        "endash" => '\u{2013}',
        "emdash" => '\u{2014}',
        "period" => '.',
        "comma" => ',',
        "colon" => ':',
        "semicolon" => ';',
        "slash" => '/',
        "parenleft" => '(',
        "parenright" => ')',
        "bracketleft" => '[',
        "bracketright" => ']',
        "zero" => '0',
        "one" => '1',
        "two" => '2',
        "three" => '3',
        "four" => '4',
        "five" => '5',
        "six" => '6',
        "seven" => '7',
        "eight" => '8',
        "nine" => '9',
        _ => return None,
    })
}

/// The hex strings (`<…>`) of `text`, their digits only.
fn hex_strings(text: &str) -> Vec<Vec<u8>> {
    text.split('<')
        .skip(1)
        .filter_map(|piece| piece.split_once('>'))
        .map(|(hex, _)| hex_bytes(hex.as_bytes()))
        .collect()
}

/// The bytes a hex string's digits spell (anything else in it skipped; an odd last digit
/// is its byte's high half, as PDF reads it).
pub(super) fn hex_bytes(hex: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = hex.iter().copied().filter(u8::is_ascii_hexdigit).collect();
    let v = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
    digits
        .chunks(2)
        .map(|p| v(p[0]) << 4 | p.get(1).map_or(0, |&d| v(d)))
        .collect()
}

fn code(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .fold(0u32, |a, &b| (a << 8) | u32::from(b))
}

fn utf16_units(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect()
}

fn utf16(bytes: &[u8]) -> String {
    String::from_utf16_lossy(&utf16_units(bytes))
}

/// One token of a content stream.
enum Token {
    Str(Vec<u8>),
    Num(f64),
    ArrayStart,
    ArrayEnd,
    Op(Vec<u8>),
    Other,
}

/// The content stream's tokens, in order (one at a time: a large drawing's stream is
/// millions of them); inline images' data skipped.
struct Tokens<'a> {
    content: &'a [u8],
    at: usize,
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let content = self.content;
        let n = content.len();
        loop {
            let i = self.at;
            let b = *content.get(i)?;
            match b {
                b'%' => {
                    let end = content[i..]
                        .iter()
                        .position(|&c| c == b'\n' || c == b'\r')
                        .map_or(n, |p| i + p);
                    self.at = end;
                }
                b'(' => {
                    let (s, end) = literal(content, i);
                    self.at = end;
                    return Some(Token::Str(s));
                }
                b'<' if content.get(i + 1) == Some(&b'<') => {
                    self.at = i + 2;
                    return Some(Token::Other);
                }
                b'<' => {
                    let end = content[i..]
                        .iter()
                        .position(|&c| c == b'>')
                        .map_or(n, |p| i + p);
                    let text = String::from_utf8_lossy(&content[i..(end + 1).min(n)]).into_owned();
                    self.at = end + 1;
                    return Some(Token::Str(hex_strings(&text).pop().unwrap_or_default()));
                }
                b'>' => {
                    self.at = i + if content.get(i + 1) == Some(&b'>') {
                        2
                    } else {
                        1
                    };
                    return Some(Token::Other);
                }
                b'[' => {
                    self.at = i + 1;
                    return Some(Token::ArrayStart);
                }
                b']' => {
                    self.at = i + 1;
                    return Some(Token::ArrayEnd);
                }
                b'/' => {
                    let end = content[i + 1..]
                        .iter()
                        .position(|&c| is_delimiter(c))
                        .map_or(n, |p| i + 1 + p);
                    self.at = end;
                    return Some(Token::Other);
                }
                b'{' | b'}' => {
                    self.at = i + 1;
                    return Some(Token::Other);
                }
                _ if b.is_ascii_whitespace() => self.at = i + 1,
                _ => {
                    let end = content[i..]
                        .iter()
                        .position(|&c| is_delimiter(c))
                        .map_or(n, |p| i + p)
                        .max(i + 1);
                    self.at = end;
                    let word = &content[i..end];
                    if let Some(v) = std::str::from_utf8(word).ok().and_then(|w| w.parse().ok()) {
                        return Some(Token::Num(v));
                    }
                    if word == b"ID" {
                        // Inline image data runs to `EI` after white space.
                        self.at = memchr::memmem::find_iter(&content[end..], b"EI")
                            .find(|&p| p > 0 && content[end + p - 1].is_ascii_whitespace())
                            .map_or(n, |p| end + p + 2);
                        return Some(Token::Other);
                    }
                    return Some(Token::Op(word.to_vec()));
                }
            }
        }
    }
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace() || b"()<>[]{}/%".contains(&b)
}

/// A literal string from `(` at `at` (escapes undone, balanced parentheses kept): its
/// bytes and the index after its `)`.
pub(super) fn literal(s: &[u8], at: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut i = at + 1;
    while i < s.len() {
        let b = s[i];
        match b {
            b'\\' => {
                i += 1;
                match s.get(i).copied() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'b') => out.push(8),
                    Some(b'f') => out.push(12),
                    Some(d @ b'0'..=b'7') => {
                        let mut v = u32::from(d - b'0');
                        for _ in 0..2 {
                            match s.get(i + 1) {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push((v & 0xff) as u8);
                    }
                    Some(b'\r') => {
                        if s.get(i + 1) == Some(&b'\n') {
                            i += 1;
                        }
                    }
                    Some(b'\n') | None => {}
                    Some(other) => out.push(other),
                }
            }
            b'(' => {
                depth += 1;
                out.push(b);
            }
            b')' if depth == 0 => return (out, i + 1),
            b')' => {
                depth -= 1;
                out.push(b);
            }
            _ => out.push(b),
        }
        i += 1;
    }
    (out, i)
}

/// The first two readings: one byte a character with the page's lines, and the same
/// with every horizontal jump a line of its own (a header's `SECRET` at the left and its
/// `Page 1 of 3` at the right are two things to a reader).
const JOINED: usize = 0;
const APART: usize = 1;

/// A `TJ` gap (thousandths of an em) that is a space, and one that sets text apart.
const SPACE: f64 = -250.0;
const JUMP: f64 = -3000.0;
/// A `Td` across that sets text apart, in ems of the font's size: further than a long word
/// and its space (a letter that places each word, `PRIVATE` `&` `CONFIDENTIAL`, stays one
/// line; a header's page number at the right margin does not).
const FAR: f64 = 8.0;

/// A character's width in ems, roughly as Helvetica and Arial draw it.
fn em_width(c: char) -> f64 {
    match c {
        ' ' => 0.28,
        'A'..='Z' => 0.7,
        'a'..='z' => 0.5,
        '0'..='9' => 0.56,
        _ => 0.5,
    }
}

/// The page's lines (the joined one-byte reading and every map's) and, apart, the lines
/// of the reading that sets every jump along a line apart: that one turns a table's
/// headings and a letterhead's spread words into lines of one word, so it is read for the
/// gravest markings only.
pub fn readings(content: &[u8], maps: &[CMap]) -> (String, String) {
    let mut texts: Vec<String> = vec![String::new(); 2 + maps.len()];
    // How far the text shown since the line's origin reaches, in ems (estimated from its
    // letters: no glyph widths are read), to tell a `Td` past its end (a space: `SECRET`
    // then `UK EYES ONLY`) from one onto the next glyph (`SEC` then `RET`).
    let mut reach = 0.0f64;
    let show = |texts: &mut Vec<String>, reach: &mut f64, bytes: &[u8]| {
        let one_byte = encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0;
        *reach += one_byte.chars().map(em_width).sum::<f64>();
        texts[JOINED].push_str(&one_byte);
        texts[APART].push_str(&one_byte);
        for (map, text) in maps.iter().zip(texts.iter_mut().skip(2)) {
            if let Some(s) = map.decode(bytes) {
                text.push_str(&s);
            }
        }
    };
    let break_in = |t: &mut String| {
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
    };
    let newline = |texts: &mut Vec<String>| texts.iter_mut().for_each(break_in);
    // A move along the line: apart in the second reading; in the others a `TJ` gap is a
    // space, and a `Td` across glues (without the glyphs' widths a move cannot be told
    // from the next glyph's place: `(SEC) Tj 78 0 Td (RET) Tj` is one word on the page).
    let jump = |texts: &mut Vec<String>, space: bool| {
        for (i, t) in texts.iter_mut().enumerate() {
            if i == APART {
                break_in(t);
            } else if space && !t.is_empty() && !t.ends_with([' ', '\n']) {
                t.push(' ');
            }
        }
    };
    let mut operands: Vec<Token> = Vec::new();
    let mut array: Option<Vec<Token>> = None;
    // The line matrix's last vertical position (`Tm`): a matrix per glyph on one line is
    // one line.
    let mut line_y: Option<f64> = None;
    // The font size (`Tf`), for how far a move across is.
    let mut size = 12.0f64;
    for token in (Tokens { content, at: 0 }) {
        match token {
            Token::ArrayStart => array = Some(Vec::new()),
            Token::ArrayEnd => {
                if let Some(items) = array.take() {
                    operands.push(Token::Other);
                    operands.extend(items);
                }
            }
            t if array.is_some() => {
                if let Some(items) = array.as_mut() {
                    items.push(t);
                }
            }
            Token::Op(op) => {
                match op.as_slice() {
                    b"Tj" => {
                        if let Some(Token::Str(s)) = operands.last() {
                            show(&mut texts, &mut reach, s);
                        }
                    }
                    b"'" | b"\"" => {
                        newline(&mut texts);
                        reach = 0.0;
                        if let Some(Token::Str(s)) = operands.last() {
                            show(&mut texts, &mut reach, s);
                        }
                    }
                    b"TJ" => {
                        for item in &operands {
                            match item {
                                Token::Str(s) => show(&mut texts, &mut reach, s),
                                // Thousandths of an em, against the writing direction.
                                Token::Num(gap) if *gap < JUMP => {
                                    reach -= gap / 1000.0;
                                    jump(&mut texts, true)
                                }
                                Token::Num(gap) if *gap < SPACE => {
                                    reach -= gap / 1000.0;
                                    for t in texts.iter_mut() {
                                        t.push(' ');
                                    }
                                }
                                Token::Num(gap) => reach -= gap / 1000.0,
                                _ => {}
                            }
                        }
                    }
                    b"Td" | b"TD" => match operands.as_slice() {
                        [.., Token::Num(dx), Token::Num(dy)] if dy.abs() < 0.5 => {
                            let gap = dx / size - reach;
                            if dx.abs() > FAR * size {
                                jump(&mut texts, gap > 0.25);
                            } else if gap > 0.25 {
                                for (i, t) in texts.iter_mut().enumerate() {
                                    if i != APART && !t.ends_with([' ', '\n']) {
                                        t.push(' ');
                                    }
                                }
                            }
                            reach = 0.0;
                        }
                        _ => {
                            newline(&mut texts);
                            reach = 0.0;
                        }
                    },
                    b"Tm" => {
                        let y = match operands.as_slice() {
                            [.., Token::Num(y)] => Some(*y),
                            _ => None,
                        };
                        match (line_y, y) {
                            (Some(last), Some(y)) if (last - y).abs() < 0.5 => {
                                break_in(&mut texts[APART]);
                            }
                            _ => newline(&mut texts),
                        }
                        line_y = y;
                        reach = 0.0;
                    }
                    b"Tf" => {
                        if let [.., Token::Num(n)] = operands.as_slice() {
                            size = n.abs().max(1.0);
                        }
                    }
                    b"T*" | b"ET" | b"BT" => {
                        newline(&mut texts);
                        reach = 0.0;
                    }
                    _ => {}
                }
                operands.clear();
            }
            t => operands.push(t),
        }
    }
    let apart = std::mem::take(&mut texts[APART]);
    let mut page = String::new();
    for t in texts {
        page.push_str(&t);
        page.push('\n');
    }
    (page, apart)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reading's lines.
    fn lines(content: &[u8], maps: &[CMap]) -> String {
        let (page, apart) = readings(content, maps);
        page + "\n" + &apart
    }

    #[test]
    fn simple_fonts_and_glyph_maps_read_as_shown() {
        let content = b"BT /F1 36 Tf 72 720 Td (SECRET) Tj 0 -40 Td [(Op) -300 (Nightjar)] TJ ET\n\
            BT /F2 12 Tf [(TOP ) 20 (SEC) -5 (RET)] TJ T* <00530045> Tj ET";
        let text = lines(content, &[]);
        let shown: Vec<&str> = text.lines().collect();
        assert!(shown.contains(&"SECRET"), "{shown:?}");
        assert!(shown.contains(&"Op Nightjar"), "{shown:?}");
        assert!(shown.contains(&"TOP SECRET"), "{shown:?}");
        // A header: the marking at the left, the page number far to the right; Word's
        // en dash is WinAnsi 0x96; one matrix a glyph on one line is one line.
        let header = b"BT 72 800 Td (SECRET) Tj 400 0 Td (Page 1 of 3) Tj ET\n\
            BT [(SECRET \\226 UK EYES ONLY)] TJ ET\n\
            BT 1 0 0 1 72 700 Tm (S) Tj 1 0 0 1 80 700 Tm (E) Tj 1 0 0 1 88 700 Tm (C) Tj \
            1 0 0 1 96 700 Tm (RET) Tj ET";
        let text = lines(header, &[]);
        let shown: Vec<&str> = text.lines().collect();
        assert!(shown.contains(&"SECRET"), "{shown:?}");
        assert!(shown.contains(&"SECRET \u{2013} UK EYES ONLY"), "{shown:?}");
        assert!(
            shown.iter().filter(|l| **l == "SECRET").count() >= 2,
            "{shown:?}"
        );
        // A letterhead that places each word is one line in every reading; words placed
        // past each other's end are spaced.
        let letter =
            b"BT /F1 24 Tf 72 800 Td (PRIVATE) Tj 130 0 Td (&) Tj 30 0 Td (CONFIDENTIAL) Tj ET\n\
            BT /F1 14 Tf 72 760 Td (SECRET) Tj 70 0 Td (UK EYES ONLY) Tj ET";
        let text = lines(letter, &[]);
        assert!(
            !text.lines().any(|l| l.trim() == "CONFIDENTIAL"),
            "{text:?}"
        );
        assert!(text.lines().any(|l| l == "SECRET UK EYES ONLY"), "{text:?}");
        let map = CMap::parse(
            b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
              2 beginbfchar <0036> <0053> <0028> <0045> endbfchar\n\
              1 beginbfrange <0026> <0027> <0043> endbfrange\n\
              2 beginbfrange <0035> <0035> [<0052>]\n<0037> <0038> [<0054> <0020>] endbfrange\n\
              endcmap",
        )
        .unwrap();
        let glyphs = b"BT /F3 20 Tf <0036002800260035002800370038> Tj ET";
        let text = lines(glyphs, &[map]);
        assert!(text.lines().any(|l| l == "SECRET "), "{text:?}");
        // A simple font whose /Differences renames the codes: read by the glyphs' names.
        let renamed = CMap::differences(b"1 /S /E /C /R /E /T 32 /space ]").unwrap();
        let text = lines(b"BT <01020304050620> Tj ET", &[renamed]);
        assert!(text.lines().any(|l| l == "SECRET "), "{text:?}");
        // A string with a code the map lacks adds nothing to its reading.
        let map = CMap::parse(b"beginbfchar <01> <0041> endbfchar").unwrap();
        assert_eq!(map.decode(&[1, 2]), None);
        assert_eq!(map.decode(&[1, 1]).as_deref(), Some("AA"));
    }

    #[test]
    fn crafted_codes_at_the_top_of_their_range_do_not_overflow() {
        assert!(
            CMap::parse(b"beginbfrange <FFFFFFFF> <FFFFFFFF> [<0041> <0042>] endbfrange").is_some()
        );
        assert!(CMap::differences(b"4294967295 /A /B ]").is_some());
    }

    #[test]
    fn inline_images_and_comments_are_not_text() {
        let content = b"BI /W 2 /H 2 ID \x00(SECRET) Tj\xff EI\n% (SECRET) Tj\nBT (plan) Tj ET";
        let text = lines(content, &[]);
        assert!(
            text.lines().all(|l| l.is_empty() || l == "plan"),
            "{text:?}"
        );
    }
}
