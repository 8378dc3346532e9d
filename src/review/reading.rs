//! A held message as the reviewer's page shows it: each text part as the classifier read it
//! (the same `readable::of_headers` decision and `marking::render::text`, so the page shows
//! what was judged, not a second parser's idea of it), the marking's evidence marked where it
//! stands, and every other part listed as an attachment with its type and size. Nothing of
//! the message's own HTML reaches the page: its text is rendered here and escaped by the
//! template.
//!
//! The structure is first walked by `message::skeleton` (the classifier's walk, with its
//! limits on nesting, part counts and time), so a message held as unclassifiable because
//! it is a MIME bomb is shown only as its raw source, never parsed without those limits.

use std::time::{Duration, Instant};

use mailparse::{MailHeaderMap, ParsedMail};

use crate::message::readable::{self, Reading};
use crate::message::skeleton;

/// A run of text, marked when it is a piece of the marking's evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub mark: bool,
}

/// One text part as read.
#[derive(Debug)]
pub struct TextPart {
    /// `text/plain`, `text/html (as text)`, with the file name of a text attachment.
    pub label: String,
    pub segments: Vec<Segment>,
}

/// A part that is not shown as text: offered for download by a role that may.
#[derive(Debug)]
pub struct Attachment {
    /// Its place among the message's leaf parts (what the download URL names).
    pub index: usize,
    pub name: String,
    pub mime: String,
    /// Decoded bytes.
    pub size: usize,
}

/// What the page shows of a message.
#[derive(Debug, Default)]
pub struct Rendered {
    pub subject: Vec<Segment>,
    pub parts: Vec<TextPart>,
    pub attachments: Vec<Attachment>,
    /// Why the parts are not shown (the walk refused the structure), if so.
    pub refused: Option<String>,
}

/// The longest the walk before showing a message may take.
const WALK_BUDGET: Duration = Duration::from_secs(5);
/// The most text shown of one part.
const PART_SHOWN: usize = 256 * 1024;

/// Reads `raw` for the page, marking each of `evidence` (the texts that carried the
/// marking) wherever it stands in the subject and the text parts.
pub fn read(raw: &[u8], evidence: &[&str]) -> Rendered {
    let mut out = Rendered::default();
    let mail = match parsed(raw) {
        Ok(mail) => mail,
        Err(why) => {
            out.refused = Some(why);
            return out;
        }
    };
    let mail = mail.parse();
    let Ok(mail) = mail else {
        out.refused = Some("the message could not be parsed".into());
        return out;
    };
    let subject = mail.headers.get_first_value("Subject").unwrap_or_default();
    out.subject = marked(&subject, evidence);
    let mut leaf = 0;
    walk(&mail, false, evidence, &mut leaf, &mut out);
    out
}

/// The message's bytes, once the classifier's walk has accepted their structure.
struct Parsable<'a>(&'a [u8]);

impl<'a> Parsable<'a> {
    fn parse(&self) -> Result<ParsedMail<'a>, mailparse::MailParseError> {
        mailparse::parse_mail(self.0)
    }
}

fn parsed(raw: &[u8]) -> Result<Parsable<'_>, String> {
    skeleton::view_of(raw, Some(Instant::now() + WALK_BUDGET))
        .map(|_| Parsable(raw))
        .map_err(|e| format!("its parts are not shown: {e}"))
}

fn walk(part: &ParsedMail, digest: bool, evidence: &[&str], leaf: &mut usize, out: &mut Rendered) {
    let (ctype, reading) = readable::of_headers(&part.headers, digest);
    let mime = ctype.mimetype.to_ascii_lowercase();
    if reading == Reading::Container {
        let digest = mime == "multipart/digest";
        for sub in &part.subparts {
            walk(sub, digest, evidence, leaf, out);
        }
        return;
    }
    let index = *leaf;
    *leaf += 1;
    let disposition = part.get_content_disposition();
    let name = readable::file_name(&disposition, &ctype);
    if let Reading::Text { html, inline } = reading {
        if let Ok(text) = crate::marking::render::text(part, &mime, html) {
            let mut label = if html {
                format!("{mime} (as text)")
            } else {
                mime.clone()
            };
            if let (false, Some(name)) = (inline, &name) {
                label = format!("{label}, attached as {name}");
            }
            let mut shown: String = cut(&text, PART_SHOWN).to_string();
            if shown.len() < text.len() {
                shown.push_str("\n[… the rest of this part is not shown]");
            }
            out.parts.push(TextPart {
                label,
                segments: marked(&shown, evidence),
            });
            if inline {
                return;
            }
        }
    }
    let size = part.get_body_raw().map(|b| b.len()).unwrap_or(0);
    out.attachments.push(Attachment {
        index,
        name: name.unwrap_or_else(|| format!("part-{index}")),
        mime,
        size,
    });
}

/// The decoded bytes, file name and type of leaf part `index`, if the message has it.
pub fn attachment(raw: &[u8], index: usize) -> Option<(String, String, Vec<u8>)> {
    let parsable = parsed(raw).ok()?;
    let mail = parsable.parse().ok()?;
    let mut leaf = 0;
    find(&mail, false, index, &mut leaf)
}

fn find(
    part: &ParsedMail,
    digest: bool,
    index: usize,
    leaf: &mut usize,
) -> Option<(String, String, Vec<u8>)> {
    let (ctype, reading) = readable::of_headers(&part.headers, digest);
    let mime = ctype.mimetype.to_ascii_lowercase();
    if reading == Reading::Container {
        let digest = mime == "multipart/digest";
        return part
            .subparts
            .iter()
            .find_map(|sub| find(sub, digest, index, leaf));
    }
    let here = *leaf;
    *leaf += 1;
    if here != index {
        return None;
    }
    let name = readable::file_name(&part.get_content_disposition(), &ctype)
        .unwrap_or_else(|| format!("part-{index}"));
    Some((name, mime, part.get_body_raw().ok()?))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` split into runs, each occurrence of an evidence text (ASCII case ignored, as
/// the grammar reads markings) marked.
pub fn marked(text: &str, evidence: &[&str]) -> Vec<Segment> {
    let needles: Vec<&str> = evidence
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut plain = 0;
    let mut at = 0;
    while at < bytes.len() {
        let hit = needles
            .iter()
            .filter(|n| {
                bytes.len() - at >= n.len()
                    && bytes[at..at + n.len()].eq_ignore_ascii_case(n.as_bytes())
            })
            .map(|n| n.len())
            .max();
        match hit {
            // A needle is whole UTF-8 and non-ASCII bytes match only themselves, so a hit
            // starts and ends on character boundaries.
            Some(len) => {
                if plain < at {
                    out.push(Segment {
                        text: text[plain..at].to_string(),
                        mark: false,
                    });
                }
                out.push(Segment {
                    text: text[at..at + len].to_string(),
                    mark: true,
                });
                at += len;
                plain = at;
            }
            None => at += 1,
        }
    }
    if plain < bytes.len() {
        out.push(Segment {
            text: text[plain..].to_string(),
            mark: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(segments: &[Segment]) -> Vec<&str> {
        segments
            .iter()
            .filter(|s| s.mark)
            .map(|s| s.text.as_str())
            .collect()
    }

    #[test]
    fn evidence_is_marked_wherever_it_stands_and_nothing_else_is_lost() {
        let text = "Intro\nofficial-sensitive\nthé OFFICIAL-SENSITIVE end";
        let segments = marked(text, &["OFFICIAL-SENSITIVE", "OFFICIAL", " "]);
        assert_eq!(
            marks(&segments),
            ["official-sensitive", "OFFICIAL-SENSITIVE"]
        );
        let whole: String = segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(whole, text);
        assert_eq!(marked("", &["x"]), []);
    }

    #[test]
    fn text_parts_are_shown_as_read_and_the_rest_listed() {
        let raw = b"Subject: [SECRET] plan\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>&#83;ECRET</p><script>x()</script>\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"case.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let r = read(raw, &["SECRET"]);
        assert!(r.refused.is_none());
        assert_eq!(marks(&r.subject), ["SECRET"]);
        assert_eq!(r.parts.len(), 1);
        assert_eq!(r.parts[0].label, "text/html (as text)");
        assert_eq!(marks(&r.parts[0].segments), ["SECRET"]);
        let shown: String = r.parts[0]
            .segments
            .iter()
            .map(|s| s.text.as_str())
            .collect();
        assert!(
            !shown.contains("<script>") && !shown.contains("x()"),
            "{shown}"
        );
        assert_eq!(r.attachments.len(), 1);
        let a = &r.attachments[0];
        assert_eq!(
            (a.index, a.name.as_str(), a.mime.as_str(), a.size),
            (1, "case.pdf", "application/pdf", 5)
        );
        let (name, mime, bytes) = attachment(raw, 1).unwrap();
        assert_eq!(
            (name.as_str(), mime.as_str(), bytes.as_slice()),
            ("case.pdf", "application/pdf", &b"%PDF-"[..])
        );
        assert!(attachment(raw, 2).is_none());
    }

    #[test]
    fn a_structure_the_walk_refuses_is_not_parsed() {
        let mut raw = String::from("Subject: bomb\r\n");
        for n in 0..300 {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{n}\r\n\r\n--b{n}\r\n"
            ));
        }
        let r = read(raw.as_bytes(), &[]);
        assert!(r.refused.is_some_and(|why| why.contains("not shown")));
        assert!(attachment(raw.as_bytes(), 0).is_none());
    }
}
