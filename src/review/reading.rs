//! A held message as the reviewer's page shows it: each text part as the classifier read it
//! (the same walk, `message::skeleton`, the same parse of its view, the same
//! `readable::of_headers` decision and `marking::render::text`, attached messages opened
//! as the classifier opens them), so the page shows what was judged, not a second parser's
//! idea of it; the marking's evidence marked where it stands; every other part listed as
//! an attachment with its type and size. Nothing of the message's own HTML reaches the
//! page: its text is rendered here and escaped by the template.
//!
//! The view leaves out the bodies of files, so the attachment list and downloads parse the
//! raw message, and only when the view shows a structure whose raw parse is cheap (the
//! parser rescans each multipart's body at every level of nesting, so a deep message with a
//! large body would cost depth × size): at most [`RAW_DEPTH_MAX`] multiparts deep and
//! [`RAW_MAX`] bytes. A message the walk refuses (a MIME bomb held as unclassifiable) is
//! shown only as its raw source.

use std::time::{Duration, Instant};

use mailparse::ParsedMail;

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
    /// `text/plain`, `text/html (as text)`, with the file name of a text attachment and
    /// `in attached message N` inside one.
    pub label: String,
    pub segments: Vec<Segment>,
}

/// A part that is not the message's own text: offered for download by a role that may.
#[derive(Debug)]
pub struct Attachment {
    /// Its place among the message's leaf parts (what the download URL names).
    pub index: usize,
    /// As sent, with invisible and direction-changing characters made visible.
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
    /// Why the attachments are not listed, if so.
    pub unlisted: Option<String>,
}

/// The longest the walks before showing a message may take.
const WALK_BUDGET: Duration = Duration::from_secs(5);
/// The most text shown of one part.
const PART_SHOWN: usize = 256 * 1024;
/// The most of the subject shown.
const SUBJECT_SHOWN: usize = 4096;
/// Distinct evidence texts marked at most (the evidence list itself is unbounded: one
/// entry per banner line).
const NEEDLES_MAX: usize = 64;
/// Attached messages opened inside each other at most (the classifier's default depth).
const ATTACHED_DEPTH_MAX: usize = 8;
/// The largest message whose raw bytes are parsed to list and hand out attachments.
pub const RAW_MAX: usize = 32 * 1024 * 1024;
/// The deepest multipart nesting whose raw bytes are parsed.
pub const RAW_DEPTH_MAX: usize = 8;

/// Reads `raw` for the page. `subject` is the held message's (as the classifier read it);
/// each of `evidence` (the texts that carried the marking) is marked wherever it stands;
/// text sent as an attachment is shown only `with_attached_text` (to a role that may
/// download attachments).
pub fn read(raw: &[u8], subject: &str, evidence: &[&str], with_attached_text: bool) -> Rendered {
    let needles = needles(evidence);
    let mut out = Rendered {
        subject: marked(cut(subject, SUBJECT_SHOWN), &needles),
        ..Rendered::default()
    };
    let deadline = Instant::now() + WALK_BUDGET;
    let view = match skeleton::view_of(raw, Some(deadline)) {
        Ok(view) => view,
        Err(e) => {
            out.refused = Some(format!("its parts are not shown: {e}"));
            return out;
        }
    };
    let Ok(mail) = mailparse::parse_mail(&view.bytes) else {
        out.refused = Some("its parts are not shown: the message could not be parsed".into());
        return out;
    };
    let reader = TextReader {
        needles: &needles,
        with_attached_text,
        deadline,
    };
    reader.walk(&mail, false, "", 0, &mut out.parts);
    let depth = nesting(&mail);
    if raw.len() > RAW_MAX || depth > RAW_DEPTH_MAX {
        out.unlisted = Some(format!(
            "attachments are not listed: the message is {} bytes and {depth} multiparts deep \
             (listed up to {RAW_MAX} bytes and {RAW_DEPTH_MAX} deep); the raw source is below",
            raw.len()
        ));
        return out;
    }
    if let Ok(mail) = mailparse::parse_mail(raw) {
        let mut leaf = 0;
        attachments(&mail, false, &mut leaf, &mut out.attachments);
    }
    out
}

/// How deep multiparts nest in a parsed message.
fn nesting(part: &ParsedMail) -> usize {
    part.subparts
        .iter()
        .map(|p| 1 + nesting(p))
        .max()
        .unwrap_or(0)
}

struct TextReader<'a> {
    needles: &'a [&'a str],
    with_attached_text: bool,
    deadline: Instant,
}

impl TextReader<'_> {
    /// The text parts of `part`, as the classifier reads them, opening attached messages.
    fn walk(
        &self,
        part: &ParsedMail,
        digest: bool,
        place: &str,
        depth: usize,
        out: &mut Vec<TextPart>,
    ) {
        if Instant::now() > self.deadline {
            return;
        }
        let (ctype, reading) = readable::of_headers(&part.headers, digest);
        let mime = ctype.mimetype.to_ascii_lowercase();
        let name =
            readable::file_name(&part.get_content_disposition(), &ctype).map(|n| visible(&n));
        match reading {
            Reading::Container => {
                let digest = mime == "multipart/digest";
                for sub in &part.subparts {
                    self.walk(sub, digest, place, depth, out);
                }
            }
            Reading::Message if depth < ATTACHED_DEPTH_MAX => {
                // Decoded, then through the same walk as every message (as the classifier).
                let Ok(body) = part.get_body_raw() else {
                    return;
                };
                let Ok(view) = skeleton::view_of(&body, Some(self.deadline)) else {
                    return;
                };
                let Ok(inner) = mailparse::parse_mail(&view.bytes) else {
                    return;
                };
                let place = match name {
                    Some(name) => format!("{place} in attached message {name}"),
                    None => format!("{place} in an attached message"),
                };
                self.walk(&inner, false, &place, depth + 1, out);
            }
            Reading::Text { html, inline } => {
                if !inline && !self.with_attached_text {
                    return;
                }
                let Ok(text) = crate::marking::render::text(part, &mime, html).map(|s| s.text)
                else {
                    return;
                };
                let mut label = if html {
                    format!("{mime} (as text)")
                } else {
                    mime.clone()
                };
                if let (false, Some(name)) = (inline, &name) {
                    label = format!("{label}, attached as {name}");
                }
                label.push_str(place);
                let mut shown = cut(&text, PART_SHOWN).to_string();
                if shown.len() < text.len() {
                    shown.push_str("\n[… the rest of this part is not shown]");
                }
                out.push(TextPart {
                    label,
                    segments: marked(&shown, self.needles),
                });
            }
            _ => {}
        }
    }
}

/// The message's leaf parts that are not its own text, numbered as [`attachment`] finds them.
fn attachments(part: &ParsedMail, digest: bool, leaf: &mut usize, out: &mut Vec<Attachment>) {
    let (ctype, reading) = readable::of_headers(&part.headers, digest);
    let mime = ctype.mimetype.to_ascii_lowercase();
    if reading == Reading::Container {
        let digest = mime == "multipart/digest";
        for sub in &part.subparts {
            attachments(sub, digest, leaf, out);
        }
        return;
    }
    let index = *leaf;
    *leaf += 1;
    if matches!(reading, Reading::Text { inline: true, .. }) {
        return;
    }
    let name = readable::file_name(&part.get_content_disposition(), &ctype)
        .map(|n| visible(&n))
        .unwrap_or_else(|| format!("part-{index}"));
    out.push(Attachment {
        index,
        name,
        mime,
        size: part.get_body_raw().map(|b| b.len()).unwrap_or(0),
    });
}

/// The decoded bytes, file name and type of attachment `index`, if the message has one
/// there (and is within the limits its list is made under).
pub fn attachment(raw: &[u8], index: usize) -> Option<(String, String, Vec<u8>)> {
    let view = skeleton::view_of(raw, Some(Instant::now() + WALK_BUDGET)).ok()?;
    let depth = nesting(&mailparse::parse_mail(&view.bytes).ok()?);
    if raw.len() > RAW_MAX || depth > RAW_DEPTH_MAX {
        return None;
    }
    let mail = mailparse::parse_mail(raw).ok()?;
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
    if here != index || matches!(reading, Reading::Text { inline: true, .. }) {
        return None;
    }
    let name = readable::file_name(&part.get_content_disposition(), &ctype)
        .unwrap_or_else(|| format!("part-{index}"));
    Some((name, mime, part.get_body_raw().ok()?))
}

/// A name with what would hide or reorder its characters on screen (controls, bidi
/// overrides and isolates, zero-width characters) written as `<U+202E>`, so
/// `invoice\u{202e}fdp.exe` cannot pass for `invoiceexe.pdf`.
pub fn visible(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let hidden = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{061c}' | '\u{feff}');
        if hidden {
            out.push_str(&format!("<U+{:04X}>", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The distinct evidence texts to mark, longest first, at most [`NEEDLES_MAX`].
fn needles<'a>(evidence: &[&'a str]) -> Vec<&'a str> {
    let mut needles: Vec<&str> = evidence
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    needles.sort_by_key(|n| n.to_ascii_lowercase());
    needles.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    needles.truncate(NEEDLES_MAX);
    needles
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

/// `text` split into runs, each occurrence of a needle (ASCII case ignored, as the grammar
/// reads markings; the longest where several start at one place) marked. At most
/// [`NEEDLES_MAX`] needles, so the cost is bounded by the text's length.
fn marked(text: &str, needles: &[&str]) -> Vec<Segment> {
    let needles = &needles[..needles.len().min(NEEDLES_MAX)];
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
        let segments = marked(text, &needles(&["OFFICIAL-SENSITIVE", "OFFICIAL", " "]));
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
        let r = read(raw, "[SECRET] plan", &["SECRET"], true);
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
        let r = read(raw.as_bytes(), "bomb", &[], true);
        assert!(r.refused.is_some_and(|why| why.contains("not shown")));
        assert!(attachment(raw.as_bytes(), 0).is_none());
    }

    #[test]
    fn a_deep_message_with_a_large_file_is_not_parsed_raw() {
        // Nine multiparts deep around a 4 MB picture whose lines look like boundaries: the
        // raw parse would rescan the picture at every level, so it is not done.
        let mut raw = String::from("Subject: deep\r\n");
        for n in 0..9 {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary={:-<60}{n}\r\n\r\n--{:-<60}{n}\r\n",
                "", ""
            ));
        }
        raw.push_str("Content-Type: image/png\r\n\r\n");
        for _ in 0..40_000 {
            raw.push_str(&"-".repeat(98));
            raw.push_str("\r\n");
        }
        let started = Instant::now();
        let r = read(raw.as_bytes(), "deep", &[], true);
        assert!(r
            .unlisted
            .is_some_and(|why| why.contains("9 multiparts deep")));
        assert!(r.attachments.is_empty());
        assert!(attachment(raw.as_bytes(), 0).is_none());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn attached_messages_are_opened_and_attached_text_shown_only_when_asked() {
        let raw = b"Subject: fwd\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"orig.eml\"\r\n\r\nSubject: x\r\n\r\nOFFICIAL-SENSITIVE\r\n--b\r\nContent-Type: text/csv; name=\"list.csv\"\r\nContent-Disposition: attachment; filename=\"list.csv\"\r\n\r\nname,case\r\n--b--\r\n";
        let r = read(raw, "fwd", &["OFFICIAL-SENSITIVE"], true);
        let labels: Vec<&str> = r.parts.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "text/plain",
                "text/plain in attached message orig.eml",
                "text/csv, attached as list.csv"
            ]
        );
        assert_eq!(marks(&r.parts[1].segments), ["OFFICIAL-SENSITIVE"]);
        let names: Vec<(usize, &str)> = r
            .attachments
            .iter()
            .map(|a| (a.index, a.name.as_str()))
            .collect();
        assert_eq!(names, [(1, "orig.eml"), (2, "list.csv")]);
        let r = read(raw, "fwd", &[], false);
        assert_eq!(
            r.parts.len(),
            2,
            "the csv's text is not shown: {:?}",
            r.parts
        );
        assert!(
            attachment(raw, 0).is_none(),
            "the message's own text is not an attachment"
        );
    }

    #[test]
    fn many_evidence_lines_make_few_needles_and_names_show_what_hides() {
        let evidence = vec!["SECRET"; 20_000];
        let mut all = evidence.clone();
        all.push("secret");
        all.push("OFFICIAL");
        assert_eq!(needles(&all), ["OFFICIAL", "SECRET"]);
        assert_eq!(visible("invoice\u{202e}fdp.exe"), "invoice<U+202E>fdp.exe");
        assert_eq!(visible("a\u{0}b\u{200b}"), "a<U+0000>b<U+200B>");
    }
}
