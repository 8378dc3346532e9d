//! The classifier: walks a message (and the messages attached to it) once, hands each place
//! to its extractor, and gathers the facts the rules read: marking, signature block,
//! confidentiality statement, attachments, headers.

use std::sync::LazyLock;
use std::time::Instant;

use mailparse::{MailHeaderMap, ParsedMail};
use regex::Regex;

use super::documents;
use super::history::{self, Forwarded};
use super::level::{Marking, Parsed};
use super::places;
use super::render;
use crate::config::ClassifierConfig;
use crate::message::readable::{self, Reading};
use crate::message::skeleton::{self, WalkError};
use crate::message::words as decode;
use crate::message::Spool;

/// An attachment's name and media type, for rules.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
}

/// Everything the rules may ask about a message's content.
#[derive(Debug, Clone, Default)]
pub struct Classification {
    pub marking: Marking,
    pub signature: bool,
    pub confidentiality_statement: bool,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Top-level headers, decoded, in order.
    pub headers: Vec<(String, String)>,
    /// Addresses from To, Cc and Bcc (for `classify` without `--to`).
    pub header_recipients: Vec<String>,
    /// What could not be inspected, each as `place: why` (rules: `opaque: true`).
    pub opaque: Vec<String>,
    /// Sensitivity labels (GUIDs) found in documents that no `classifier.msip_labels`
    /// entry maps, each as `place: guid` (rules: `label_unknown: true`).
    pub unknown_labels: Vec<String>,
    /// Earlier messages this one carries (inline forwards, quoted replies, attached
    /// messages) with their original senders: the rules' `forwards_from`.
    pub forwarded: Vec<Forwarded>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("message cannot be parsed: {0}")]
    Parse(#[from] mailparse::MailParseError),
    #[error("message too complex to classify: {0}")]
    TooComplex(&'static str),
    /// The one MIME walk refused it (structure, size or time).
    #[error(transparent)]
    Walk(#[from] WalkError),
}

/// Headers a mail client shows beside the subject, read like one: Outlook shows `Keywords`
/// as the message's categories and `Thread-Topic` as its conversation's title; `Comments`
/// and `Summary` are shown by clients that list every header (and by Python's `email`).
const TITLE_HEADERS: &[&str] = &["Keywords", "Thread-Topic", "Comments", "Summary"];

/// Distinct original senders read from a message's history.
const MAX_SENDERS: usize = 10_000;

/// Parts visited before a message counts as too complex (and so is never passed blind).
const MAX_PARTS: usize = 5000;

/// The compiled classifier settings (phrases lower-cased once).
#[derive(Debug, Clone)]
pub struct Classifier {
    config: ClassifierConfig,
    phrases: Vec<String>,
}

impl Classifier {
    pub fn new(config: &ClassifierConfig) -> Classifier {
        Classifier {
            phrases: config
                .confidentiality_phrases
                .iter()
                .map(|p| p.to_lowercase())
                .collect(),
            config: config.clone(),
        }
    }

    /// Classifies a message given as bytes. Like every path, it parses only the view the
    /// one MIME walk ([`skeleton`]) produced.
    pub fn classify(&self, raw: &[u8]) -> Result<Classification, ClassifyError> {
        let view = skeleton::view_of(raw, None)?;
        self.classify_view(&view.bytes, view.documents, None)
    }

    /// Classifies a spooled message of any size, within an optional deadline.
    pub fn classify_spool(
        &self,
        spool: &Spool,
        deadline: Option<Instant>,
    ) -> Result<Classification, ClassifyError> {
        let view = skeleton::view(spool, deadline)?;
        self.classify_view(&view.bytes, view.documents, deadline)
    }

    /// The reference for the parity tests and fuzz target only: the parser on the raw bytes,
    /// without the walk. Never used on the path (nothing bounds its recursion).
    #[doc(hidden)]
    pub fn classify_unwalked(&self, raw: &[u8]) -> Result<Classification, ClassifyError> {
        self.classify_view(raw, Vec::new(), None)
    }

    /// The walk has counted the structure (after decoding) and bounded it, so the parser's
    /// recursion is bounded too.
    fn classify_view(
        &self,
        view: &[u8],
        documents: Vec<Vec<u8>>,
        deadline: Option<Instant>,
    ) -> Result<Classification, ClassifyError> {
        let mail = mailparse::parse_mail(view)?;
        let mut out = Classification {
            subject: mail
                .headers
                .iter()
                .find(|h| h.get_key_ref().trim().eq_ignore_ascii_case("Subject"))
                .map(decode::header_value),
            message_id: mail.headers.get_first_value("Message-ID"),
            headers: mail
                .headers
                .iter()
                .map(|h| (h.get_key(), h.get_value()))
                .collect(),
            ..Classification::default()
        };
        for name in ["To", "Cc", "Bcc"] {
            for header in mail.headers.get_all_headers(name) {
                if let Ok(list) = mailparse::addrparse_header(header) {
                    for addr in list.iter() {
                        match addr {
                            mailparse::MailAddr::Single(s) => {
                                out.header_recipients.push(s.addr.clone())
                            }
                            mailparse::MailAddr::Group(g) => out
                                .header_recipients
                                .extend(g.addrs.iter().map(|s| s.addr.clone())),
                        }
                    }
                }
            }
        }
        let mut walk = Walk {
            classifier: self,
            out: &mut out,
            parts: 0,
            first_text: None,
            deadline,
            budget: documents::Budget::new(&self.config, deadline),
            bodies: documents,
            forwarded_seen: Default::default(),
        };
        walk.entity(&mail, "", 0)?;
        if let Some(text) = walk.first_text.take() {
            // The sender's own signature, not one in the history below it.
            out.signature = has_signature(places::new_text(&text));
            out.confidentiality_statement = self.has_statement(&text);
        }
        // The sender's own earlier messages, quoted back in a thread, are not correspondence
        // received from someone else.
        if let Some(own) = mail
            .headers
            .get_first_value("From")
            .and_then(|v| history::sender_address(&v))
        {
            out.forwarded.retain(|f| f.from != own);
        }
        Ok(out)
    }

    fn has_statement(&self, text: &str) -> bool {
        let tail = last_lines(text, 30).to_lowercase();
        self.phrases.iter().any(|p| tail.contains(p.as_str()))
    }
}

struct Walk<'a> {
    classifier: &'a Classifier,
    out: &'a mut Classification,
    parts: usize,
    first_text: Option<String>,
    deadline: Option<Instant>,
    /// What reading attached documents may still cost.
    budget: documents::Budget,
    /// The base64 bodies the walk kept beside the view being read (see `skeleton::View`).
    bodies: Vec<Vec<u8>>,
    forwarded_seen: std::collections::HashSet<String>,
}

impl Walk<'_> {
    /// Each original sender once (a text and an HTML part show the same history), at most
    /// [`MAX_SENDERS`]: past that the history is not all read, which is opaque (held on
    /// the way out), not a reason to keep growing.
    fn forwarded(&mut self, f: Forwarded) {
        if self.forwarded_seen.len() >= MAX_SENDERS {
            if self.forwarded_seen.len() == MAX_SENDERS {
                self.forwarded_seen.insert(String::new());
                self.out.opaque.push(format!(
                    "history: more than {MAX_SENDERS} earlier senders, not all read"
                ));
            }
            return;
        }
        if self.forwarded_seen.insert(f.from.clone()) {
            self.out.forwarded.push(f);
        }
    }

    fn add(&mut self, found: Option<Parsed>, source: &str, text: &str) {
        if let Some(parsed) = found {
            self.out.marking.add(parsed, source, text);
        }
    }

    /// The headers of a message (top-level or attached).
    fn message_headers(&mut self, mail: &ParsedMail, prefix: &str) {
        for header in &mail.headers {
            // `Subject : …` is a Subject to a mail client; so are encoded words the
            // decoder left alone (an RFC 2231 language tag, unpadded base64).
            let key = header.get_key_ref();
            let key = key.trim();
            let value = decode::header_value(header);
            if key.eq_ignore_ascii_case("X-Protective-Marking") {
                let found = places::header_value(&value);
                self.add(found, &format!("{prefix}x-protective-marking"), &value);
            } else if key.eq_ignore_ascii_case("msip_labels") {
                for (parsed, name) in
                    places::msip_labels(&value, &self.classifier.config.msip_labels)
                {
                    self.add(Some(parsed), &format!("{prefix}msip_labels"), &name);
                }
            } else if key.eq_ignore_ascii_case("Sensitivity") {
                let found = places::sensitivity(&value);
                self.add(found, &format!("{prefix}header:Sensitivity"), &value);
            } else if key.eq_ignore_ascii_case("Subject") {
                for (parsed, raw) in places::subject(&value) {
                    self.add(Some(parsed), &format!("{prefix}subject"), &raw);
                }
            } else if TITLE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(key)) {
                for (parsed, raw) in places::subject(&value) {
                    self.add(Some(parsed), &format!("{prefix}header:{key}"), &raw);
                }
            } else if self
                .classifier
                .config
                .headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(key))
            {
                let found = places::header_value(&value);
                self.add(found, &format!("{prefix}header:{key}"), &value);
            }
        }
    }

    fn entity(
        &mut self,
        mail: &ParsedMail,
        prefix: &str,
        depth: usize,
    ) -> Result<(), ClassifyError> {
        self.message_headers(mail, prefix);
        self.part(mail, prefix, depth)
    }

    fn part(&mut self, part: &ParsedMail, prefix: &str, depth: usize) -> Result<(), ClassifyError> {
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(ClassifyError::TooComplex("too many MIME parts"));
        }
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(WalkError::Deadline.into());
        }
        let mimetype = part.ctype.mimetype.to_ascii_lowercase();
        let disposition = part.get_content_disposition();
        let name = readable::file_name(&disposition, &part.ctype);
        if let Some(name) = &name {
            self.out.attachments.push(Attachment {
                name: name.clone(),
                content_type: mimetype.clone(),
            });
            for (parsed, raw) in places::file_name(name) {
                self.add(Some(parsed), &format!("{prefix}attachment"), &raw);
            }
        }
        if mimetype == "multipart/encrypted" {
            // PGP/MIME (RFC 3156): the content is the ciphertext part.
            self.out
                .opaque
                .push(format!("{prefix}body: PGP/MIME-encrypted"));
        }
        match readable::reading(&mimetype, is_attachment(&disposition), name.as_deref()) {
            Reading::Container => {
                for sub in &part.subparts {
                    self.part(sub, prefix, depth)?;
                }
            }
            Reading::Message => self.attached_message(part, prefix, depth)?,
            Reading::Text { html, inline } => {
                let shown = render::text(part, &mimetype, html)?;
                let text = shown.text;
                if let Some(charset) = shown.undecoded {
                    self.out.opaque.push(format!(
                        "{prefix}body: text in a charset markgate does not decode ({charset})"
                    ));
                }
                // An invitation's title is its subject to a reader.
                for title in render::invitation_titles(part, &mimetype)? {
                    for (parsed, raw) in places::subject(&title) {
                        self.add(Some(parsed), &format!("{prefix}calendar:summary"), &raw);
                    }
                }
                if text.contains("-----BEGIN PGP MESSAGE-----") {
                    self.out
                        .opaque
                        .push(format!("{prefix}body: PGP-encrypted text"));
                }
                if text.contains("<?mso-application") {
                    // Word's single-file XML: its marking is in elements, not lines.
                    self.out
                        .opaque
                        .push(format!("{prefix}body: Office XML document, not read"));
                }
                // Text attachments are read like the body; their findings say where.
                let place = match (&name, inline) {
                    (Some(name), false) => format!("{prefix}attachment:{name}:"),
                    _ => prefix.to_string(),
                };
                for (parsed, raw, source) in places::banners(&text) {
                    self.add(Some(parsed), &format!("{place}{source}"), &raw);
                }
                // Flowed lines a client that does not reflow shows on their own.
                if let Some(apart) = &shown.apart {
                    for (parsed, raw, source) in places::banners(apart) {
                        self.add(Some(parsed), &format!("{place}{source}"), &raw);
                    }
                }
                for (parsed, raw, source) in places::history_subjects(&text) {
                    self.add(Some(parsed), &format!("{place}{source}"), &raw);
                }
                for f in history::inline(&text, &place) {
                    self.forwarded(f);
                }
                if inline && prefix.is_empty() && self.first_text.is_none() {
                    self.first_text = Some(text);
                }
                // `text/plain; name=papers.eml`: a client shows its text inline and opens
                // the file as a message (whose headers may carry the marking): both.
                if readable::is_message_name(name.as_deref()) {
                    self.attached_message(part, prefix, depth)?;
                }
            }
            Reading::Document => self.document(part, &mimetype, name.as_deref(), prefix)?,
            Reading::Opaque => {}
        }
        Ok(())
    }

    /// An attached message (or a message file): decoded, then through the same walk as
    /// every message, and read as one.
    fn attached_message(
        &mut self,
        part: &ParsedMail,
        prefix: &str,
        depth: usize,
    ) -> Result<(), ClassifyError> {
        if depth + 1 > self.classifier.config.max_depth {
            return Err(ClassifyError::TooComplex(
                "attached messages nested too deep",
            ));
        }
        // Decoded, then through the same walk as every message. Lines ended by a bare CR
        // (an old Mac file, carried in base64) are lines to Python's parser and to clients
        // opening the file: to the walk and mailparse, only LF ends one.
        let body = crlf_lines(part.get_body_raw()?);
        // One copy at a time: the body itself when the walk keeps it whole.
        let walked = skeleton::view_of(&body, self.deadline)?;
        let inner_bodies = walked.documents;
        let owned = match walked.bytes {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(view) => Some(view),
        };
        let view = owned.unwrap_or(body);
        let inner = mailparse::parse_mail(&view)?;
        let n = self.out.attachments.len();
        let prefix = format!("{prefix}attached[{n}].");
        let to: Vec<String> = ["To", "Cc"]
            .iter()
            .flat_map(|h| inner.headers.get_all_values(h))
            .collect();
        // A message with no From: is still its Sender's (RFC 5322 3.6.2).
        let from = inner
            .headers
            .get_first_value("From")
            .or_else(|| inner.headers.get_first_value("Sender"));
        if let Some(f) = history::attached(from.as_deref(), &to, prefix.trim_end_matches('.')) {
            self.forwarded(f);
        }
        // The attached message's documents are its own walk's.
        let outer = std::mem::replace(&mut self.bodies, inner_bodies);
        let result = self.entity(&inner, &prefix, depth + 1);
        self.bodies = outer;
        result
    }

    /// An attached file that may be a document: S/MIME-encrypted content is opaque; the
    /// rest is read by content (Office, PDF, archives) within the message's budget.
    fn document(
        &mut self,
        part: &ParsedMail,
        mimetype: &str,
        name: Option<&str>,
        prefix: &str,
    ) -> Result<(), ClassifyError> {
        let n = self.out.attachments.len();
        let place = match name {
            Some(name) => format!("{prefix}attachment:{name}:"),
            None => format!("{prefix}attachment[{n}]:"),
        };
        if mimetype.ends_with("pkcs7-mime") {
            let kind = part
                .ctype
                .params
                .get("smime-type")
                .map(|t| t.to_ascii_lowercase())
                .unwrap_or_default();
            let why = if kind == "signed-data" {
                "S/MIME opaque-signed content, not read"
            } else {
                "S/MIME-encrypted"
            };
            self.out.opaque.push(format!("{place} {why}"));
            return Ok(());
        }
        let bytes = decoded_body(part, &self.bodies)?;
        if bytes.starts_with(b"-----BEGIN PGP MESSAGE-----") {
            self.out.opaque.push(format!("{place} PGP-encrypted"));
            return Ok(());
        }
        let mut found = documents::Findings::default();
        documents::inspect(
            &bytes,
            &place,
            readable::declared_document(mimetype, name),
            &self.classifier.config,
            &mut self.budget,
            0,
            &mut found,
        )
        .map_err(|documents::DocumentError::Bound(why)| ClassifyError::TooComplex(why))?;
        for (parsed, source, text) in found.found {
            self.out.marking.add(parsed, &source, &text);
        }
        self.out.opaque.extend(found.opaque);
        self.out.unknown_labels.extend(found.unknown_labels);
        Ok(())
    }
}

/// A part's decoded body. Base64 (how documents travel) is decoded here, as mailparse
/// decodes it (every ASCII whitespace byte dropped, then permissive MIME base64), but
/// line by line instead of byte by byte: a 5 MB attachment is most of the work otherwise.
fn decoded_body(part: &ParsedMail, bodies: &[Vec<u8>]) -> Result<Vec<u8>, ClassifyError> {
    let raw = match part.get_body_encoded() {
        mailparse::body::Body::Base64(b) | mailparse::body::Body::QuotedPrintable(b) => b.get_raw(),
        mailparse::body::Body::SevenBit(b) | mailparse::body::Body::EightBit(b) => b.get_raw(),
        mailparse::body::Body::Binary(b) => b.get_raw(),
    };
    // The walk put this part's base64 beside the view; its placeholder says which.
    if let Some(rest) = raw.strip_prefix(skeleton::DOCUMENT_PLACEHOLDER) {
        let digits: Vec<u8> = rest
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        let body = std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
            .and_then(|n| bodies.get(n))
            .ok_or(ClassifyError::TooComplex(
                "a document placeholder markgate's walk did not write",
            ))?;
        return decode_base64(body);
    }
    match part.get_body_encoded() {
        mailparse::body::Body::Base64(body) => decode_base64(body.get_raw()),
        _ => Ok(part.get_body_raw()?),
    }
}

/// Base64 as mailparse decodes it (every ASCII whitespace byte dropped, then permissive
/// MIME base64), line by line rather than byte by byte.
fn decode_base64(encoded: &[u8]) -> Result<Vec<u8>, ClassifyError> {
    let decode = |bytes: &[u8]| data_encoding::BASE64_MIME_PERMISSIVE.decode(bytes);
    // Bodies kept beside the view have no line ends left: most decode as they are.
    if let Ok(decoded) = decode(encoded) {
        return Ok(decoded);
    }
    let mut clean = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while !rest.is_empty() {
        let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        let run = &rest[..end];
        if run.iter().any(|b| matches!(b, b' ' | b'\t' | b'\x0c')) {
            clean.extend(run.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        } else {
            clean.extend_from_slice(run);
        }
        rest = rest.get(end + 1..).unwrap_or(&[]);
    }
    decode(&clean)
        .map_err(|_| ClassifyError::TooComplex("an attachment's base64 cannot be decoded"))
}

fn is_attachment(d: &mailparse::ParsedContentDisposition) -> bool {
    d.disposition == mailparse::DispositionType::Attachment
}

/// The last `n` non-blank lines, read from the end (a long text costs no more than a short
/// one).
fn last_lines(text: &str, n: usize) -> String {
    let mut lines: Vec<&str> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect();
    lines.reverse();
    lines.join("\n")
}

static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d\s().-]{8,}\d").expect("phone regex"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+").expect("email regex")
});

/// `bytes` with every bare CR (one not followed by LF) made CRLF.
fn crlf_lines(bytes: Vec<u8>) -> Vec<u8> {
    let bare = |i: usize| bytes.get(i + 1) != Some(&b'\n');
    if !memchr::memchr_iter(b'\r', &bytes).any(bare) {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for (i, &b) in bytes.iter().enumerate() {
        out.push(b);
        if b == b'\r' && bare(i) {
            out.push(b'\n');
        }
    }
    out
}

/// A signature block: a telephone number (10+ digits) or an e-mail address within the last
/// 15 non-blank lines.
pub fn has_signature(text: &str) -> bool {
    let tail = last_lines(text, 15);
    // Each search needs what the tail may lack (an `@`; ten ASCII digits in all): most
    // messages are decided without running a regex over the tail.
    if tail.contains('@') && EMAIL.is_match(&tail) {
        return true;
    }
    if tail.bytes().filter(u8::is_ascii_digit).count() < 10 {
        return false;
    }
    PHONE
        .find_iter(&tail)
        .any(|m| m.as_str().chars().filter(char::is_ascii_digit).count() >= 10)
}

/// HTML as a browser shows it (see `render`).
pub fn html_to_text(html: &str) -> String {
    render::html_to_text(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(raw: &str) -> Classification {
        Classifier::new(&ClassifierConfig::default())
            .classify(raw.as_bytes())
            .unwrap()
    }

    /// `has_signature` without the checks that skip its searches.
    fn signature_by_regex(text: &str) -> bool {
        let tail = last_lines(text, 15);
        EMAIL.is_match(&tail)
            || PHONE
                .find_iter(&tail)
                .any(|m| m.as_str().chars().filter(char::is_ascii_digit).count() >= 10)
    }

    #[test]
    fn signature_checks_agree_with_the_searches() {
        for text in [
            "Regards\nJane",
            "Regards\njane@police.cjsm.net",
            "Regards\njane@localhost",
            "Tel: 020 7946 0018",
            "Tel: 020 7946 001",
            "Tel: 020\n7946\n0018",
            "Tel: \u{661}\u{662}\u{663}\u{664}\u{665}\u{666}\u{667}\u{668}\u{669}\u{660}",
            "Ref 12345 and 67890",
            "12345\n\n67890",
            "+44 (0)20 7946-0018",
            "",
        ] {
            assert_eq!(has_signature(text), signature_by_regex(text), "{text:?}");
        }
    }

    #[test]
    fn highest_marking_wins_and_evidence_is_kept() {
        let c = classify(
            "X-Protective-Marking: VER=2012.3, NS=gov.uk, SEC=PROTECT\r\nSubject: [SECRET] x\r\n\r\nNOT PROTECTIVELY MARKED\r\nbody\r\n",
        );
        assert_eq!(c.marking.level_name(), "SECRET");
        assert_eq!(c.marking.evidence.len(), 3);
    }

    #[test]
    fn quoted_printable_split_banner_is_found() {
        let c = classify(
            "Subject: hi\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSEC=\r\nRET\r\n\r\nHello\r\n",
        );
        assert_eq!(c.marking.level_name(), "SECRET");
    }

    #[test]
    fn html_banner_and_signature() {
        let c = classify(
            "Subject: hi\r\nContent-Type: text/html\r\n\r\n<p><b>RESTRICTED</b></p><p>Hello</p><p>Jane Doe<br>Tel: 020 7946 0018</p>\r\n",
        );
        assert_eq!(c.marking.level_name(), "RESTRICTED");
        assert!(c.signature);
    }

    #[test]
    fn nothing_found_is_unmarked() {
        let c = classify("Subject: lunch\r\n\r\nSee you at noon.\r\n");
        assert_eq!(c.marking.level_name(), "UNMARKED");
        assert!(!c.signature);
    }
}
