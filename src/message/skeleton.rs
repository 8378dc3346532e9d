//! The classifier's view of a large message: every header and MIME boundary, the head and
//! tail of each text part, and nothing of binary attachment bodies. Markings live in
//! headers, subjects, file names and the first and last lines of text, so this view loses
//! no place a marking can be, while a 50 MB message with a 49 MB attachment classifies in a
//! few hundred kilobytes of memory.
//!
//! Messages that fit in memory are classified as they are; only spooled ones are reduced.

use std::collections::VecDeque;
use std::io;

use super::Spool;

/// Bytes kept from the start of each text part.
const TEXT_HEAD: usize = 256 * 1024;
/// Bytes kept from the end of each text part.
const TEXT_TAIL: usize = 64 * 1024;
/// Bytes kept of one entity's header block; a longer one is held as unclassifiable.
pub const HEADER_MAX: usize = 1024 * 1024;

/// Builds the reduced view of a spooled message (or returns its bytes when in memory).
pub fn view(spool: &Spool) -> io::Result<std::borrow::Cow<'_, [u8]>> {
    if let Some(bytes) = spool.as_bytes() {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut reducer = Reducer::default();
    let mut partial = Vec::new();
    spool.for_each_chunk(|chunk| {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            if partial.is_empty() {
                reducer.line(&rest[..=pos]);
            } else {
                partial.extend_from_slice(&rest[..=pos]);
                reducer.line(&partial);
                partial.clear();
            }
            rest = &rest[pos + 1..];
        }
        // Bound the carry-over: a line longer than the text head is cut, not buffered whole.
        let room = TEXT_HEAD.saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
        Ok(())
    })?;
    if !partial.is_empty() {
        reducer.line(&partial);
    }
    if reducer.headers_cut {
        // A marking could hide past the cut: fail closed rather than classify blind.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a header block is larger than the classifier reads (1 MiB)",
        ));
    }
    Ok(std::borrow::Cow::Owned(reducer.finish()))
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Body {
    /// Text (or an unknown type, kept as text to be safe): head and tail kept.
    Text,
    /// Attachment bodies: skipped.
    Skip,
}

#[derive(Default)]
struct Reducer {
    out: Vec<u8>,
    boundaries: Vec<Vec<u8>>,
    /// Header lines of the entity being read; `None` while in a body.
    headers: Option<Vec<u8>>,
    body: Option<Body>,
    kept: usize,
    tail: VecDeque<Vec<u8>>,
    tail_len: usize,
    /// A header block was longer than HEADER_MAX.
    headers_cut: bool,
}

impl Reducer {
    fn line(&mut self, line: &[u8]) {
        if self.out.is_empty() && self.headers.is_none() && self.body.is_none() {
            self.headers = Some(Vec::new());
        }
        if let Some(headers) = &mut self.headers {
            if line == b"\r\n" || line == b"\n" {
                let block = std::mem::take(headers);
                self.headers = None;
                self.out.extend_from_slice(&block);
                self.out.extend_from_slice(line);
                self.start_body(&block);
            } else if headers.len() + line.len() <= HEADER_MAX {
                headers.extend_from_slice(line);
            } else {
                self.headers_cut = true;
            }
            return;
        }
        if line.starts_with(b"--") {
            let trimmed = trim_crlf(&line[2..]);
            if let Some(depth) = self
                .boundaries
                .iter()
                .rposition(|b| trimmed.starts_with(b.as_slice()))
            {
                self.flush_tail();
                let closing = trimmed[self.boundaries[depth].len()..].starts_with(b"--");
                self.out.extend_from_slice(line);
                if closing {
                    self.boundaries.truncate(depth);
                    self.body = Some(Body::Skip);
                } else {
                    self.boundaries.truncate(depth + 1);
                    self.headers = Some(Vec::new());
                    self.body = None;
                }
                return;
            }
        }
        if self.body == Some(Body::Text) {
            // Once the head is full, every later line is tail, however short.
            if self.kept + line.len() <= TEXT_HEAD {
                self.kept += line.len();
                self.out.extend_from_slice(line);
            } else {
                self.kept = usize::MAX / 2;
                self.tail_len += line.len();
                self.tail.push_back(line.to_vec());
                while self.tail_len > TEXT_TAIL {
                    match self.tail.pop_front() {
                        Some(old) => self.tail_len -= old.len(),
                        None => break,
                    }
                }
            }
        }
    }

    fn start_body(&mut self, headers: &[u8]) {
        self.kept = 0;
        let content_type = content_type(headers);
        let ct = content_type.as_deref().unwrap_or("text/plain");
        if ct.starts_with("multipart/") {
            if let Some(b) = boundary(headers) {
                self.boundaries.push(b);
            }
            self.body = Some(Body::Skip);
        } else if ct.starts_with("message/rfc822") || ct.starts_with("message/global") {
            self.headers = Some(Vec::new());
            self.body = None;
        } else if ct.starts_with("text/") {
            self.body = Some(Body::Text);
        } else {
            self.body = Some(Body::Skip);
        }
    }

    fn flush_tail(&mut self) {
        for line in self.tail.drain(..) {
            self.out.extend_from_slice(&line);
        }
        self.tail_len = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        if let Some(headers) = self.headers.take() {
            self.out.extend_from_slice(&headers);
        }
        self.flush_tail();
        self.out
    }
}

fn trim_crlf(s: &[u8]) -> &[u8] {
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    s.strip_suffix(b"\r").unwrap_or(s)
}

/// The lower-cased media type of a header block, unfolded.
fn content_type(headers: &[u8]) -> Option<String> {
    let value = header_value(headers, "content-type")?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    Some(media)
}

fn boundary(headers: &[u8]) -> Option<Vec<u8>> {
    let value = header_value(headers, "content-type")?;
    let parsed = mailparse::parse_content_type(&value);
    parsed.params.get("boundary").map(|b| b.as_bytes().to_vec())
}

fn header_value(headers: &[u8], name: &str) -> Option<String> {
    let (parsed, _) = mailparse::parse_headers(headers).ok()?;
    parsed
        .iter()
        .find(|h| h.get_key_ref().eq_ignore_ascii_case(name))
        .map(|h| h.get_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_body_is_dropped_and_text_and_names_are_kept() {
        let mut msg = String::from(
            "Subject: [RESTRICTED] big\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nHello\r\nRESTRICTED\r\n\
             --b1\r\nContent-Type: application/pdf; name=\"SECRET plan.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n",
        );
        for _ in 0..20000 {
            msg.push_str("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n");
        }
        msg.push_str("--b1--\r\n");
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(1024, dir.path());
        spool.write(msg.as_bytes()).unwrap();
        let view = view(&spool).unwrap();
        let text = String::from_utf8_lossy(&view);
        assert!(view.len() < 4096, "view is {} bytes", view.len());
        assert!(text.contains("[RESTRICTED] big"));
        assert!(text.contains("SECRET plan.pdf"));
        assert!(text.contains("Hello\r\nRESTRICTED\r\n"));
        assert!(text.ends_with("--b1--\r\n"));
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
        let view = view(&spool).unwrap();
        let text = String::from_utf8_lossy(&view);
        assert!(
            text.ends_with("Jane Doe\r\nTel: 020 7946 0018\r\n"),
            "{}",
            &text[text.len() - 200..]
        );
    }
}
