//! The one MIME walk: every message, whatever its size, is read by this walker before the
//! classifier parses it, and the classifier only ever parses what the walker produced (the
//! "view"). Why: a second, hand-written reader for large messages disagreed with the parser
//! used for small ones (a part with only headers swallowed the next boundary, so a SECRET part
//! after it vanished above 1 MiB only). Now there is one walk, and it follows the structure
//! rules of the parser the classifier uses (`mailparse`) exactly:
//!
//! - a boundary is any line that *starts with* `--boundary`, and the boundaries of enclosing
//!   multiparts win over inner ones (mailparse cuts the outer slices first);
//! - a boundary ends whatever is open, even a header block with no blank line after it;
//! - the first boundary of a multipart opens a part even if it looks like a closing one;
//!   later `--boundary--` lines close the multipart, and its epilogue is not parsed;
//! - a part's type is its first `Content-Type`, decoded (RFC 2047) as mailparse decodes it;
//!   inside `multipart/digest` the default is `message/rfc822`.
//!
//! What the view may leave out are bytes the classifier never reads: bodies of non-text
//! parts and of text parts sent as attachments, preambles and epilogues. A text part the
//! classifier reads is kept whole up to [`TEXT_MAX`]: raw lines are not the lines a reader
//! sees once base64, quoted-printable, a charset or HTML are undone, so no cut on raw bytes
//! is safe in general. Past it, only plain text whose raw lines *are* its lines (no transfer
//! encoding, an ASCII-compatible charset) is cut, keeping whole lines at both ends (at
//! least the last [`TAIL_LINES`] non-blank ones, where signatures are); anything else that
//! large, or a view larger than [`VIEW_MAX`], is held as unclassifiable. Lines that
//! start with a boundary declared anywhere are kept too, as a safety net, and counted.
//! A boundary mailparse could match across lines (a CR or LF decoded into it) or one
//! longer than RFC 2046's 70 characters is refused: the first is a parser confusion, the
//! second makes the parser's naive search quadratic.
//! Structure is counted here, after decoding, so a crafted message cannot make the parser
//! recurse without bound, and a deadline is checked as the walk goes, so a cancelled
//! classification stops working instead of burning CPU after its budget.

use std::borrow::Cow;
use std::io;
use std::time::Instant;

use super::readable::{self, Reading};
use super::{params, Spool};

/// The largest text part the classifier reads; a larger one is held as unclassifiable.
pub const TEXT_MAX: usize = 8 * 1024 * 1024;
/// Bytes of whole lines kept from the end of plain text cut past [`TEXT_MAX`] (more when
/// needed for [`TAIL_LINES`]).
const TEXT_TAIL: usize = 1024 * 1024;
/// Non-blank lines always kept at the end of cut plain text: the classifier reads the last
/// 30 for the confidentiality statement.
pub const TAIL_LINES: usize = 30;
/// The largest attached file read as a possible document (as encoded, so about 18 MiB of
/// file in base64); a larger one makes the message unclassifiable (held, never passed).
const DOCUMENT_MAX: usize = 24 * 1024 * 1024;
/// The largest view; a message whose view would be larger is held as unclassifiable.
pub const VIEW_MAX: usize = 32 * 1024 * 1024;
/// RFC 2046 5.1.1: a boundary is 1 to 70 characters.
const BOUNDARY_MAX: usize = 70;
/// Bytes kept of one entity's header block; a longer one is held as unclassifiable.
pub const HEADER_MAX: usize = 1024 * 1024;
/// An attached message with a transfer encoding is kept whole (the classifier decodes it
/// and walks it again); past this size it is held as unclassifiable.
const ENCODED_MESSAGE_MAX: usize = 8 * 1024 * 1024;
/// Multipart containers (and so parser recursion) allowed in one walk.
pub const MAX_MULTIPARTS: usize = 256;
/// Parts allowed in one walk.
pub const MAX_PARTS: usize = 5000;
/// Lines between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;

/// Why the walk refused a message; each is held as unclassifiable, never passed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("a header block is larger than the classifier reads (1 MiB)")]
    HeaderTooLarge,
    #[error("an encoded attached message is larger than the classifier reads (8 MiB)")]
    EncodedTooLarge,
    #[error("a text part is larger than the classifier reads (8 MiB)")]
    TextTooLarge,
    #[error("the message's readable parts are larger than the classifier reads (32 MiB)")]
    ViewTooLarge,
    #[error("an attached document is larger than the classifier reads (24 MiB encoded)")]
    DocumentTooLarge,
    #[error("message too complex to classify: {0}")]
    TooComplex(&'static str),
    #[error("classification budget exhausted")]
    Deadline,
    #[error("spool unreadable: {0}")]
    Io(#[from] io::Error),
}

/// What the walk produced: the view the parser reads, and beside it the base64 bodies of
/// attached files that may be documents. Those are not in the view (a placeholder line,
/// `markgate-document:N`, stands for body `N`): the parser never scans megabytes of
/// base64 for boundaries, and the document readers decode them straight from here.
#[derive(Debug, Default)]
pub struct View<'a> {
    pub bytes: Cow<'a, [u8]>,
    /// Each document body: its base64 with the line ends removed.
    pub documents: Vec<Vec<u8>>,
    /// Header blocks the walk gave a canonical Content-Type, Content-Disposition or
    /// Content-Transfer-Encoding (where mailparse alone would have read them otherwise).
    pub canonical: usize,
}

/// The placeholder for document body `n` in a view.
pub const DOCUMENT_PLACEHOLDER: &[u8] = b"markgate-document:";

/// Builds the classifier's view of a message held in a spool (in memory or on disk).
pub fn view(spool: &Spool, deadline: Option<Instant>) -> Result<View<'_>, WalkError> {
    if let Some(bytes) = spool.as_bytes() {
        return view_of(bytes, deadline);
    }
    let mut walker = Walker::new(deadline);
    let mut partial = Vec::new();
    let mut cut = false;
    let mut failed = None;
    let read = spool.for_each_chunk(|chunk| {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let result = if partial.is_empty() {
                walker.line(&rest[..=pos], false)
            } else {
                partial.extend_from_slice(&rest[..=pos]);
                let r = walker.line(&partial, cut);
                partial.clear();
                cut = false;
                r
            };
            if let Err(err) = result {
                failed = Some(err);
                return Err(io::Error::other("walk stopped"));
            }
            rest = &rest[pos + 1..];
        }
        // Bound the carry-over: a line longer than a header block is cut, not buffered
        // whole; the walker refuses a cut line where it would matter.
        let room = HEADER_MAX.saturating_sub(partial.len());
        cut |= rest.len() > room;
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
        Ok(())
    });
    if let Some(err) = failed {
        return Err(err);
    }
    read?;
    if !partial.is_empty() {
        walker.line(&partial, cut)?;
    }
    walker.finish()
}

/// The view of a message given as bytes (an attached message after decoding, a test).
pub fn view_of(bytes: &[u8], deadline: Option<Instant>) -> Result<View<'_>, WalkError> {
    if whole_text(bytes) {
        return Ok(View {
            bytes: Cow::Borrowed(bytes),
            documents: Vec::new(),
            canonical: 0,
        });
    }
    let mut walker = Walker::new(deadline);
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        walker.line(line, false)?;
    }
    walker.finish()
}

/// The common case, decided without walking: a message that is one text part within the
/// bounds, whose view the walk would produce byte for byte (a single text part keeps every
/// line, and no boundary applies).
fn whole_text(bytes: &[u8]) -> bool {
    if bytes.len() > TEXT_MAX {
        return false;
    }
    // The header block ends at the first line that is empty, as the walk reads it.
    let mut end = None;
    let mut offset = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            end = Some(offset);
            break;
        }
        offset += line.len();
        if offset > HEADER_MAX {
            return false;
        }
    }
    let Some(end) = end else {
        return false;
    };
    let Ok((headers, _)) = mailparse::parse_headers(&bytes[..end]) else {
        return false;
    };
    known_encoding(&headers)
        && params::canonical_headers(&headers, false).is_ok_and(|c| c.is_empty())
        && matches!(
            readable::of_headers(&headers, false).1,
            Reading::Text { .. }
        )
}

/// A short line that may be a banner (it starts, after decoration, like a level or a word
/// that introduces one, or is not ASCII and may spell one once folded): kept when the
/// middle of a huge text part is left out. A few byte comparisons a line, so a 50 MB part
/// stays cheap.
fn may_be_banner(line: &[u8]) -> bool {
    const STARTS: &[&[u8]] = &[
        b"sec", b"res", b"off", b"con", b"pro", b"pri", b"top", b"not", b"npm", b"unc", b"cla",
        b"mar", b"ver", b"ns=",
    ];
    if line.len() > 512 {
        return false;
    }
    if !line.is_ascii() {
        return true;
    }
    let start = line
        .iter()
        .position(|b| b.is_ascii_alphanumeric())
        .unwrap_or(line.len());
    let head = &line[start..];
    head.first().is_some_and(u8::is_ascii_digit)
        || (head.len() >= 3 && STARTS.iter().any(|s| head[..3].eq_ignore_ascii_case(s)))
        || (head.len() >= 3 && head[1] == b' ' && head[0].is_ascii_alphabetic())
}

/// Whether what follows `--boundary` on a line makes it a delimiter as every client reads
/// one: nothing, or `--`, then only blanks (RFC 2046 5.1.1; Python and Thunderbird match the
/// whole line). A line that merely starts with the boundary (`--b1-notes`, `--b1---`) is a
/// delimiter to RFC 2046's note and to mailparse but text to Python and Thunderbird: clients
/// differ, so the walk refuses it rather than choose.
fn exact_delimiter(rest: &[u8]) -> bool {
    let rest = rest.strip_prefix(b"--").unwrap_or(rest);
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// A part's Content-Transfer-Encoding, as markgate reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// None, or 7bit/8bit/binary: the raw bytes are the content.
    Identity,
    /// Quoted-printable or base64: undone by the parser.
    Decodable,
    /// Anything else (`x-uuencode`, a typo): text a client may still show, so the part is
    /// held rather than read as gibberish.
    Unknown,
}

fn encoding(headers: &[mailparse::MailHeader]) -> Encoding {
    use mailparse::MailHeaderMap;
    let value = headers
        .get_first_value("Content-Transfer-Encoding")
        .map(|e| e.trim().to_ascii_lowercase());
    match value.as_deref() {
        None | Some("" | "7bit" | "8bit" | "binary") => Encoding::Identity,
        Some("quoted-printable" | "base64") => Encoding::Decodable,
        Some(_) => Encoding::Unknown,
    }
}

fn known_encoding(headers: &[mailparse::MailHeader]) -> bool {
    encoding(headers) != Encoding::Unknown
}

fn identity_encoding(headers: &[mailparse::MailHeader]) -> bool {
    encoding(headers) == Encoding::Identity
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Body {
    /// Text the classifier reads: kept whole up to `TEXT_MAX`; past it, cut to its ends
    /// when `cuttable`, else refused.
    Text { cuttable: bool },
    /// Bodies the classifier does not read as structure: skipped.
    Skip,
    /// An attached message with a transfer encoding: kept whole (bounded).
    Encoded,
    /// A file that may be a document: kept whole (bounded), for the document readers.
    Document,
    /// A file that may be a document, in base64: kept beside the view (see [`View`]).
    Beside,
}

/// One open multipart: its `--boundary` and where it stands.
struct Level {
    dashed: Vec<u8>,
    digest: bool,
    /// mailparse does not check the first boundary for `--`: it always opens a part.
    seen_first: bool,
    closed: bool,
}

struct Walker {
    out: Vec<u8>,
    levels: Vec<Level>,
    /// Every `--boundary` declared so far (the safety net).
    declared: Vec<Vec<u8>>,
    /// The header block being read (`None` while in a body), and whether its default type
    /// is `message/rfc822` (inside a digest).
    headers: Option<(Vec<u8>, bool)>,
    body: Body,
    kept: usize,
    /// Lines kept from the end of cut plain text, their bytes and non-blank count.
    tail: std::collections::VecDeque<Vec<u8>>,
    tail_len: usize,
    tail_nonblank: usize,
    multiparts: usize,
    parts: usize,
    deadline: Option<Instant>,
    lines: u32,
    /// Base64 bodies of possible documents, kept beside the view (see [`View`]).
    documents: Vec<Vec<u8>>,
    /// Their bytes in all.
    documents_len: usize,
    /// Header blocks given a canonical form.
    canonical: usize,
}

impl Walker {
    fn new(deadline: Option<Instant>) -> Walker {
        Walker {
            out: Vec::new(),
            levels: Vec::new(),
            declared: Vec::new(),
            headers: Some((Vec::new(), false)),
            body: Body::Skip,
            kept: 0,
            tail: std::collections::VecDeque::new(),
            tail_len: 0,
            tail_nonblank: 0,
            multiparts: 0,
            parts: 1,
            deadline,
            lines: 0,
            documents: Vec::new(),
            documents_len: 0,
            canonical: 0,
        }
    }

    fn line(&mut self, line: &[u8], cut: bool) -> Result<(), WalkError> {
        self.lines += 1;
        if self.lines.is_multiple_of(CLOCK_EVERY) {
            if let Some(deadline) = self.deadline {
                if Instant::now() > deadline {
                    return Err(WalkError::Deadline);
                }
            }
        }
        if line.starts_with(b"--") {
            // Outer boundaries first: mailparse cuts the enclosing slices before the inner.
            if let Some(depth) = self
                .levels
                .iter()
                .position(|l| !l.closed && line.starts_with(&l.dashed))
            {
                if !exact_delimiter(&line[self.levels[depth].dashed.len()..]) {
                    return Err(WalkError::TooComplex(
                        "a line starts with a MIME boundary but is not one (mail clients differ on it)",
                    ));
                }
                return self.boundary(depth, line);
            }
        }
        if self.headers.is_some() && (line == b"\r\n" || line == b"\n") {
            return self.end_of_headers(line);
        }
        if let Some((headers, _)) = &mut self.headers {
            if cut || headers.len() + line.len() > HEADER_MAX {
                return Err(WalkError::HeaderTooLarge);
            }
            headers.extend_from_slice(line);
            return Ok(());
        }
        match self.body {
            Body::Text { cuttable } => self.text(line, cut, cuttable)?,
            Body::Encoded => {
                self.keep(line, cut, ENCODED_MESSAGE_MAX, WalkError::EncodedTooLarge)?
            }
            Body::Document => self.keep(line, cut, DOCUMENT_MAX, WalkError::DocumentTooLarge)?,
            Body::Beside => {
                if cut || self.kept + line.len() > DOCUMENT_MAX {
                    return Err(WalkError::DocumentTooLarge);
                }
                self.kept += line.len();
                // A declared boundary that does not end this part is in the part's body to
                // the parser: it stays visible in the view, as everywhere.
                if line.starts_with(b"--") && self.declared.iter().any(|d| line.starts_with(d)) {
                    self.out.extend_from_slice(line);
                }
                let content = line
                    .strip_suffix(b"\n")
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .unwrap_or(line);
                self.documents_len += content.len();
                if let Some(doc) = self.documents.last_mut() {
                    doc.extend_from_slice(content);
                }
            }
            Body::Skip => {
                if line.starts_with(b"--") && self.declared.iter().any(|d| line.starts_with(d)) {
                    self.out.extend_from_slice(line);
                }
            }
        }
        if self.out.len() + self.documents_len > VIEW_MAX {
            return Err(WalkError::ViewTooLarge);
        }
        Ok(())
    }

    fn text(&mut self, line: &[u8], cut: bool, cuttable: bool) -> Result<(), WalkError> {
        if cut {
            return Err(WalkError::TextTooLarge);
        }
        if self.kept + line.len() <= TEXT_MAX {
            self.kept += line.len();
            self.out.extend_from_slice(line);
            return Ok(());
        }
        if !cuttable {
            return Err(WalkError::TextTooLarge);
        }
        // Once cut, every later line is tail, however short.
        self.kept = usize::MAX / 2;
        let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
        self.tail_len += line.len();
        self.tail_nonblank += usize::from(!blank(line));
        self.tail.push_back(line.to_vec());
        while self.tail_len > TEXT_TAIL {
            let Some(front) = self.tail.front() else {
                break;
            };
            let front_nonblank = !blank(front);
            if front_nonblank && self.tail_nonblank <= TAIL_LINES {
                break;
            }
            self.tail_len -= front.len();
            self.tail_nonblank -= usize::from(front_nonblank);
            if let Some(dropped) = self.tail.pop_front() {
                // A line from the middle that could be a banner stays in the view (in its
                // order): a marking line counts wherever it stands.
                if may_be_banner(&dropped) {
                    self.out.extend_from_slice(&dropped);
                }
            }
        }
        if self.tail_len > VIEW_MAX {
            return Err(WalkError::ViewTooLarge);
        }
        Ok(())
    }

    /// Keeps a body line whole, within the part's bound.
    fn keep(
        &mut self,
        line: &[u8],
        cut: bool,
        max: usize,
        too_large: WalkError,
    ) -> Result<(), WalkError> {
        if cut || self.kept + line.len() > max {
            return Err(too_large);
        }
        self.kept += line.len();
        self.out.extend_from_slice(line);
        Ok(())
    }

    fn boundary(&mut self, depth: usize, line: &[u8]) -> Result<(), WalkError> {
        self.flush_open();
        self.levels.truncate(depth + 1);
        self.out.extend_from_slice(line);
        let level = &mut self.levels[depth];
        let closing = level.seen_first && line[level.dashed.len()..].starts_with(b"--");
        if closing {
            level.closed = true;
            self.body = Body::Skip;
        } else {
            level.seen_first = true;
            let digest = level.digest;
            self.parts += 1;
            if self.parts > MAX_PARTS {
                return Err(WalkError::TooComplex("too many MIME parts"));
            }
            self.headers = Some((Vec::new(), digest));
        }
        Ok(())
    }

    /// Writes out a header block left open when a boundary cut it short, or the kept end
    /// of cut plain text.
    fn flush_open(&mut self) {
        if let Some((headers, _)) = self.headers.take() {
            self.out.extend_from_slice(&headers);
        }
        for line in self.tail.drain(..) {
            self.out.extend_from_slice(&line);
        }
        self.tail_len = 0;
        self.tail_nonblank = 0;
        self.body = Body::Skip;
    }

    fn end_of_headers(&mut self, blank: &[u8]) -> Result<(), WalkError> {
        let Some((block, digest)) = self.headers.take() else {
            return Ok(());
        };
        let (headers, _) = mailparse::parse_headers(&block)
            .map_err(|_| WalkError::TooComplex("a header block cannot be parsed"))?;
        let canonical = params::canonical_headers(&headers, digest).map_err(|_| {
            WalkError::TooComplex(
                "a MIME parameter is given twice with different values (mail clients differ on it)",
            )
        })?;
        // Where mailparse would read the part's type, disposition or encoding otherwise than
        // a client does, the client's reading goes first: mailparse reads the first of each.
        if !canonical.is_empty() {
            self.canonical += 1;
            self.out.extend_from_slice(canonical.as_bytes());
        }
        self.out.extend_from_slice(&block);
        self.out.extend_from_slice(blank);
        self.kept = 0;
        let (ctype, reading) = readable::of_headers(&headers, digest);
        let mime = ctype.mimetype.to_ascii_lowercase();
        match reading {
            Reading::Container => {
                self.body = Body::Skip;
                if let Some(boundary) = ctype.params.get("boundary") {
                    if boundary.len() > BOUNDARY_MAX || boundary.chars().any(char::is_control) {
                        return Err(WalkError::TooComplex("a MIME boundary that is not valid"));
                    }
                    // RFC 2046 forbids it; Python's `email` strips it and finds the parts,
                    // mailparse keeps it and finds none.
                    if boundary.ends_with(char::is_whitespace) {
                        return Err(WalkError::TooComplex(
                            "a MIME boundary ending in white space (mail clients differ on it)",
                        ));
                    }
                    self.multiparts += 1;
                    if self.multiparts > MAX_MULTIPARTS {
                        return Err(WalkError::TooComplex("too many multipart containers"));
                    }
                    let mut dashed = b"--".to_vec();
                    dashed.extend_from_slice(boundary.as_bytes());
                    if boundary.is_empty() {
                        return Err(WalkError::TooComplex("a multipart with an empty boundary"));
                    }
                    self.declared.push(dashed.clone());
                    self.levels.push(Level {
                        dashed,
                        digest: mime == "multipart/digest",
                        seen_first: false,
                        closed: false,
                    });
                }
            }
            Reading::Message => {
                if !known_encoding(&headers) {
                    return Err(WalkError::TooComplex(
                        "an attached message in a transfer encoding markgate does not read",
                    ));
                }
                if identity_encoding(&headers) {
                    // The attached message's own header block starts on the next line.
                    self.parts += 1;
                    if self.parts > MAX_PARTS {
                        return Err(WalkError::TooComplex("too many MIME parts"));
                    }
                    self.headers = Some((Vec::new(), false));
                } else {
                    self.body = Body::Encoded;
                }
            }
            Reading::Text { html, .. } => {
                if !known_encoding(&headers) {
                    return Err(WalkError::TooComplex(
                        "a text part in a transfer encoding markgate does not read",
                    ));
                }
                // Plain text whose raw lines are its lines may be cut past TEXT_MAX.
                let charset = ctype.charset.to_ascii_lowercase();
                let flowed = ctype
                    .params
                    .get("format")
                    .is_some_and(|f| f.eq_ignore_ascii_case("flowed"));
                let cuttable = !html
                    && mime != "text/enriched"
                    && !flowed
                    && identity_encoding(&headers)
                    && (matches!(charset.as_str(), "us-ascii" | "ascii" | "utf-8" | "utf8")
                        || charset.starts_with("iso-8859-")
                        || charset.starts_with("windows-125"));
                self.body = Body::Text { cuttable };
            }
            Reading::Document => {
                if !known_encoding(&headers) {
                    return Err(WalkError::TooComplex(
                        "an attached file in a transfer encoding markgate does not read",
                    ));
                }
                use mailparse::MailHeaderMap;
                let base64 = headers
                    .get_first_value("Content-Transfer-Encoding")
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
                if base64 {
                    self.out.extend_from_slice(DOCUMENT_PLACEHOLDER);
                    self.out
                        .extend_from_slice(format!("{}\r\n", self.documents.len()).as_bytes());
                    self.documents.push(Vec::new());
                    self.body = Body::Beside;
                } else {
                    self.body = Body::Document;
                }
            }
            Reading::Opaque => self.body = Body::Skip,
        }
        Ok(())
    }

    fn finish(mut self) -> Result<View<'static>, WalkError> {
        self.flush_open();
        Ok(View {
            bytes: Cow::Owned(self.out),
            documents: self.documents,
            canonical: self.canonical,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_body_is_dropped_and_text_and_names_are_kept() {
        let mut msg = String::from(
            "Subject: [RESTRICTED] big\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nHello\r\nRESTRICTED\r\n\
             --b1\r\nContent-Type: image/png; name=\"SECRET plan.png\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n",
        );
        for _ in 0..20000 {
            msg.push_str("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n");
        }
        msg.push_str("--b1--\r\n");
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(1024, dir.path());
        spool.write(msg.as_bytes()).unwrap();
        let view = view(&spool, None).unwrap().bytes;
        let text = String::from_utf8_lossy(&view);
        assert!(view.len() < 4096, "view is {} bytes", view.len());
        assert!(text.contains("[RESTRICTED] big"));
        assert!(text.contains("SECRET plan.png"));
        assert!(text.contains("Hello\r\nRESTRICTED\r\n"));
        assert!(text.ends_with("--b1--\r\n"));
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn a_text_part_over_the_bound_is_refused_not_cut() {
        let mut msg = String::from("Subject: big\r\nContent-Type: text/html\r\n\r\n");
        let line = "z".repeat(78) + "\r\n";
        while msg.len() <= TEXT_MAX + 100 {
            msg.push_str(&line);
        }
        assert!(matches!(
            view_of(msg.as_bytes(), None),
            Err(WalkError::TextTooLarge)
        ));
        // A picture that size is skipped, not refused.
        let attached = msg.replacen("text/html", "image/jpeg", 1);
        assert!(view_of(attached.as_bytes(), None).unwrap().bytes.len() < 200);
        // A file that may be a document is kept for the document readers.
        let file = msg.replacen("text/html", "application/octet-stream", 1);
        assert!(view_of(file.as_bytes(), None).unwrap().bytes.len() > TEXT_MAX);
    }

    #[test]
    fn boundaries_with_line_breaks_or_over_70_characters_are_refused() {
        for ct in [
            "multipart/mixed; boundary*=us-ascii''x%0D%0A--y",
            "multipart/mixed; boundary=\"=?us-ascii?Q?x=0D=0A--y?=\"",
        ] {
            let msg = format!("Content-Type: {ct}\r\n\r\n--x\r\n--y\r\n\r\nSECRET\r\n");
            assert!(view_of(msg.as_bytes(), None).is_err(), "{ct}");
        }
        let long = "-".repeat(71);
        let msg = format!("Content-Type: multipart/mixed; boundary=\"{long}\"\r\n\r\n");
        assert!(view_of(msg.as_bytes(), None).is_err());
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    #[test]
    fn last_lines_of_a_huge_text_part_are_kept() {
        let mut msg = String::from("Subject: big\r\n\r\n");
        for _ in 0..100_000 {
            msg.push_str(
                "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\r\n",
            );
        }
        msg.push_str("\r\nJane Doe\r\nTel: 020 7946 0018\r\n");
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(1024, dir.path());
        spool.write(msg.as_bytes()).unwrap();
        let view = view(&spool, None).unwrap().bytes;
        let text = String::from_utf8_lossy(&view);
        assert!(
            text.ends_with("Jane Doe\r\nTel: 020 7946 0018\r\n"),
            "{}",
            &text[text.len() - 200..]
        );
    }
}
