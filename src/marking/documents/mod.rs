//! Markings inside attached documents: Microsoft Purview sensitivity labels stored in the
//! file, and the marking an office template prints in headers and footers. What a reader
//! of the document sees (or what Office shows in its label bar), markgate reads too.
//!
//! A document is recognised by its content, not its name: a zip with `[Content_Types].xml`
//! is Office Open XML, a zip without one is an archive whose members are read one level
//! down, `%PDF-` is a PDF, an OLE compound file is a legacy or encrypted Office file.
//! Everything is read through bounds ([`Budget`]): decompressed bytes per message, entries
//! per archive, nesting depth, and the classifier's deadline. Past a bound the message is
//! unclassifiable (held, never passed). What cannot be read at all (encrypted content) is
//! recorded as opaque, a fact the rules see.

mod archive;
mod ooxml;
mod pdf;
mod pdf_text;
mod text;
mod xml;

use std::time::Instant;

use super::level::Parsed;
use crate::config::ClassifierConfig;

/// Why a document could not be read within the bounds: the message is unclassifiable.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{0}")]
    Bound(&'static str),
}

/// The bounds one message's documents are read within.
#[derive(Debug)]
pub struct Budget {
    /// Decompressed bytes still allowed for this message.
    pub bytes: u64,
    pub max_entries: usize,
    pub max_depth: usize,
    pub deadline: Option<Instant>,
    /// Bytes this message holds of the process-wide allowance ([`IN_FLIGHT`]).
    reserved: u64,
    /// The process-wide allowance.
    global_max: u64,
}

/// Decompressed document bytes being read by all messages at once. A zip bomb is small
/// (64 KiB inflate to 64 MiB), so many can arrive together: past the process-wide
/// allowance a message is unclassifiable (held, never passed) instead of the process
/// growing without bound.
static IN_FLIGHT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The process-wide allowance: 64 MiB (one message's default), or one message's
/// `max_document_bytes` if larger.
const GLOBAL_MAX: u64 = 64 * 1024 * 1024;

impl Drop for Budget {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(self.reserved, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Budget {
    pub fn new(config: &ClassifierConfig, deadline: Option<Instant>) -> Budget {
        Budget {
            bytes: config.max_document_bytes,
            max_entries: config.max_archive_entries,
            max_depth: config.max_depth,
            deadline,
            reserved: 0,
            global_max: GLOBAL_MAX.max(config.max_document_bytes),
        }
    }

    /// Takes `n` bytes from the budget.
    fn spend(&mut self, n: u64) -> Result<(), DocumentError> {
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(DocumentError::Bound(
                "documents took longer than the budget",
            ));
        }
        let left = self.bytes.checked_sub(n).ok_or(DocumentError::Bound(
            "attached documents decompress to more than classifier.max_document_bytes",
        ))?;
        use std::sync::atomic::Ordering;
        let before = IN_FLIGHT.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.global_max {
            IN_FLIGHT.fetch_sub(n, Ordering::Relaxed);
            return Err(DocumentError::Bound(
                "documents being read by concurrent messages exceed markgate's memory allowance",
            ));
        }
        self.reserved += n;
        self.bytes = left;
        Ok(())
    }
}

/// Reads `reader` to its end, taking every chunk from the budget before keeping it, so
/// what a message holds never runs ahead of what it was allowed (a bomb stops at its
/// allowance, however many arrive at once). `Ok(Err(why))`: the data itself is unreadable.
pub fn read_within(
    mut reader: impl std::io::Read,
    budget: &mut Budget,
) -> Result<Result<Vec<u8>, String>, DocumentError> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => return Ok(Err(err.to_string())),
        };
        // What is allocated is what counts: growth doubles the buffer, so the growth is
        // taken from the budget, not only the bytes.
        if out.len() + n > out.capacity() {
            let grown = (out.capacity() * 2).max(out.len() + n);
            budget.spend((grown - out.capacity()) as u64)?;
            out.reserve_exact(grown - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Ok(out))
}

/// What the documents of a message showed.
#[derive(Debug, Default)]
pub struct Findings {
    /// (marking, place, the text it was read from).
    pub found: Vec<(Parsed, String, String)>,
    /// `place: why` for content that could not be inspected.
    pub opaque: Vec<String>,
    /// `place: guid` for labels no mapping names.
    pub unknown_labels: Vec<String>,
}

/// What kind of file `bytes` are, by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Zip,
    Pdf,
    Ole,
    Other,
}

pub fn sniff(bytes: &[u8]) -> Kind {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Kind::Zip
    } else if bytes.len() >= 5
        && bytes[..bytes.len().min(1024)]
            .windows(5)
            .any(|w| w == b"%PDF-")
    {
        // Readers accept a PDF header anywhere in the first kilobyte.
        Kind::Pdf
    } else if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Kind::Ole
    } else {
        Kind::Other
    }
}

/// Reads one document (an attachment, or a member of an archive) found at `place` (ends
/// with `:`), `depth` archives down.
/// `declared`: the file's name or type says it is a document, so content markgate does
/// not recognise is opaque rather than nothing.
pub fn inspect(
    bytes: &[u8],
    place: &str,
    declared: bool,
    config: &ClassifierConfig,
    budget: &mut Budget,
    depth: usize,
    out: &mut Findings,
) -> Result<(), DocumentError> {
    match sniff(bytes) {
        Kind::Zip => archive::inspect(bytes, place, config, budget, depth, out),
        Kind::Pdf => pdf::inspect(bytes, place, config, budget, out),
        Kind::Ole => {
            let why = if ole_is_encrypted(bytes) {
                "encrypted Office document (rights management or a password)"
            } else {
                "legacy (pre-2007) Office document, not read"
            };
            out.opaque.push(format!("{place} {why}"));
            Ok(())
        }
        Kind::Other => {
            let head = &bytes[..bytes.len().min(1024)];
            let why = if head.starts_with(b"{\\rtf") {
                Some("RTF document, not read")
            } else if head.starts_with(&[0x78, 0x9F, 0x3E, 0x22]) {
                Some("TNEF (winmail.dat) attachment, not read")
            } else if memchr::memmem::find(head, b"<?mso-application").is_some() {
                Some("Office XML document, not read")
            } else if let Some(shown) = text::shown(bytes) {
                // No document format, but text: what the program that opens it shows.
                budget.spend(shown.len() as u64)?;
                banners(&shown, place, "text", out);
                None
            } else if declared {
                Some("named or typed as a document, but not a format markgate reads")
            } else {
                None
            };
            if let Some(why) = why {
                out.opaque.push(format!("{place} {why}"));
            }
            Ok(())
        }
    }
}

/// An OLE compound file holding an `EncryptedPackage` stream: an Office Open XML file
/// encrypted with a password or by rights management. The stream name is stored in the
/// directory in UTF-16LE.
fn ole_is_encrypted(bytes: &[u8]) -> bool {
    let name: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    memchr::memmem::find(bytes, &name).is_some()
}

/// Banner lines of a document's text (a header, a footer, the first and last paragraphs,
/// a PDF's title) through the same rule as mail bodies.
fn banners(text: &str, place: &str, what: &str, out: &mut Findings) {
    for (parsed, raw, _) in super::places::banners(text) {
        out.found.push((parsed, format!("{place}{what}"), raw));
    }
}

/// `banners` for readings that make lines of single words out of prose, tables and
/// letterheads (a PDF page's text set apart at every jump, a header split at its tabs, a
/// spreadsheet's cells, a comment): SECRET and TOP SECRET only, written in capitals.
/// `PRIVATE & CONFIDENTIAL` spread across a letterhead, a court list's "Confidential"
/// column, a sticky note "CONFIDENTIAL?" are none of them a marking.
fn grave_banners(text: &str, place: &str, what: &str, out: &mut Findings) {
    banners_in_capitals(text, 4, place, what, out);
}

/// `banners` for places where a word alone is often only laid out so (a PDF page's bold
/// word in a text object of its own): a level written in capitals counts, as a banner is
/// typed (`Classification: SECRET`, not `Confidential?`).
fn loud_banners(text: &str, place: &str, what: &str, out: &mut Findings) {
    banners_in_capitals(text, 0, place, what, out);
}

fn banners_in_capitals(text: &str, rank: u8, place: &str, what: &str, out: &mut Findings) {
    for (parsed, raw, _) in super::places::banners(text) {
        if in_capitals(&parsed, &raw, rank) {
            out.found.push((parsed, format!("{place}{what}"), raw));
        }
    }
}

/// Whether a finding's level is at least `rank` and written in capitals in its raw text
/// (its first word: `TOP` of TOP SECRET, `OFFICIAL` of OFFICIAL-SENSITIVE).
pub(super) fn in_capitals(parsed: &Parsed, raw: &str, rank: u8) -> bool {
    parsed.level.filter(|l| l.rank() >= rank).is_some_and(|l| {
        let word = l.name().split([' ', '-']).next().unwrap_or("");
        super::normalize::fold(raw).contains(word)
    })
}

/// A label name or GUID read from a document: mapped by `classifier.msip_labels` (by GUID
/// or name), else the name through the marking grammar. A GUID with no name and no mapping
/// is an unknown label.
fn label(
    guid: &str,
    name: Option<&str>,
    place: &str,
    what: &str,
    config: &ClassifierConfig,
    out: &mut Findings,
) {
    let guid = guid.trim().trim_start_matches('{').trim_end_matches('}');
    let mapped = config
        .msip_labels
        .iter()
        .find(|(k, _)| {
            let k = k.trim().trim_start_matches('{').trim_end_matches('}');
            k.eq_ignore_ascii_case(guid) || name.is_some_and(|n| k.eq_ignore_ascii_case(n.trim()))
        })
        .map(|(_, v)| v.as_str());
    let text = name.unwrap_or(guid).to_string();
    match mapped.or(name).and_then(super::grammar::parse) {
        Some(parsed) => out.found.push((parsed, format!("{place}{what}"), text)),
        // Office shows a label by its GUID from the tenant's policy, not by the name
        // stored in the file: an unmapped GUID whose stored name is no marking ("General")
        // may be anything, so the rules see it.
        None => out.unknown_labels.push(format!(
            "{place}{what} {guid} ({})",
            name.unwrap_or("no name")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many small bombs at once stop at the process-wide allowance, and what a message
    /// held is given back when it is done.
    #[test]
    fn concurrent_messages_share_one_allowance() {
        let config = ClassifierConfig::default();
        let mut first = Budget::new(&config, None);
        let mut second = Budget::new(&config, None);
        assert!(first.spend(40 * 1024 * 1024).is_ok());
        assert!(
            second.spend(30 * 1024 * 1024).is_err(),
            "past 64 MiB together"
        );
        drop(first);
        assert!(second.spend(30 * 1024 * 1024).is_ok(), "given back");
        // And one message alone stops at its own bound.
        assert!(second.spend(40 * 1024 * 1024).is_err());
    }

    #[test]
    fn a_bomb_is_read_only_as_far_as_its_allowance() {
        let config = ClassifierConfig {
            max_document_bytes: 1024 * 1024,
            ..ClassifierConfig::default()
        };
        let mut budget = Budget::new(&config, None);
        let endless = std::io::repeat(0);
        assert!(read_within(endless, &mut budget).is_err());
    }
}
