//! Zip files: Office Open XML documents (a zip with `[Content_Types].xml`) and archives
//! (`.zip`) whose members are read like attachments, one level further down. Every entry
//! is read through a length limit taken from the message's budget: the sizes a zip
//! declares are not trusted. Names are compared as Office compares part names: without
//! case, `\` as `/`.

use std::io::Cursor;

use super::{Budget, DocumentError, Findings};
use crate::config::ClassifierConfig;

/// An open zip whose entries are read within the budget.
pub struct Zip<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Entries the end-of-central-directory record declares (the zip crate keeps one
    /// entry per name, so more declared than listed means duplicates).
    declared: Option<usize>,
    /// (normalised name, name as stored, index) of every entry.
    names: Vec<(String, String, usize)>,
}

/// A part name as Office compares it.
pub fn normalise(name: &str) -> String {
    name.replace('\\', "/")
        .trim_start_matches('/')
        .to_ascii_lowercase()
}

impl<'a> Zip<'a> {
    /// Opens `bytes`; `None` when it is not a readable zip (the caller records it as
    /// opaque). Too many entries is past a bound.
    fn open(bytes: &'a [u8], budget: &Budget) -> Result<Option<Zip<'a>>, DocumentError> {
        let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
            return Ok(None);
        };
        if archive.len() > budget.max_entries {
            return Err(DocumentError::Bound(
                "an attached archive has more entries than classifier.max_archive_entries",
            ));
        }
        let mut names = Vec::with_capacity(archive.len());
        for i in 0..archive.len() {
            if let Ok(Ok(name)) = archive
                .by_index_raw(i)
                .map(|e| e.name().map(|n| n.into_owned()))
            {
                names.push((normalise(&name), name, i));
            }
        }
        Ok(Some(Zip {
            declared: declared_entries(bytes),
            archive,
            names,
        }))
    }

    /// (normalised, as stored) entry names, in archive order.
    pub fn names(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .map(|(n, o, _)| (n.clone(), o.clone()))
            .collect()
    }

    /// Two entries with one name (tools disagree about which one is "the" file).
    pub fn has_duplicates(&self) -> bool {
        let mut seen = std::collections::HashSet::new();
        !self.names.iter().all(|(n, _, _)| seen.insert(n.as_str()))
            || self.declared.is_some_and(|d| d > self.names.len())
    }

    pub fn has(&self, name: &str) -> bool {
        let want = normalise(name);
        self.names.iter().any(|(n, _, _)| *n == want)
    }

    /// The decompressed bytes of `name` (normalised comparison): `Ok(None)` when absent,
    /// `Err` past the budget, `Ok(Some(Err(why)))` when the entry cannot be read
    /// (encrypted, corrupt).
    pub fn read(
        &mut self,
        name: &str,
        budget: &mut Budget,
    ) -> Result<Option<Result<Vec<u8>, String>>, DocumentError> {
        self.read_named(name, budget, false)
    }

    /// Like [`Zip::read`], but only the first kilobyte of a member that is no document,
    /// archive or PDF (by its first bytes): a bomb of zeros is never inflated.
    pub fn read_if_document(
        &mut self,
        name: &str,
        budget: &mut Budget,
    ) -> Result<Option<Result<Vec<u8>, String>>, DocumentError> {
        self.read_named(name, budget, true)
    }

    fn read_named(
        &mut self,
        name: &str,
        budget: &mut Budget,
        sniff_first: bool,
    ) -> Result<Option<Result<Vec<u8>, String>>, DocumentError> {
        let want = normalise(name);
        let index = self
            .names
            .iter()
            .find(|(n, _, _)| *n == want)
            .map(|(_, _, i)| *i);
        match index {
            Some(index) => self.read_index(index, budget, sniff_first).map(Some),
            None => Ok(None),
        }
    }

    fn read_index(
        &mut self,
        index: usize,
        budget: &mut Budget,
        sniff_first: bool,
    ) -> Result<Result<Vec<u8>, String>, DocumentError> {
        let mut entry = match self.archive.by_index(index) {
            Ok(e) => e,
            Err(zip::result::ZipError::UnsupportedArchive(why)) => return Ok(Err(why.to_string())),
            Err(err) => return Ok(Err(err.to_string())),
        };
        if entry.encrypted() {
            return Ok(Err("password-protected".to_string()));
        }
        if !sniff_first {
            return super::read_within(entry, budget);
        }
        let head = match super::read_within(std::io::Read::take(&mut entry, 1024), budget)? {
            Ok(head) => head,
            Err(why) => return Ok(Err(why)),
        };
        if super::sniff(&head) == super::Kind::Other {
            return Ok(Ok(head));
        }
        let rest = match super::read_within(entry, budget)? {
            Ok(rest) => rest,
            Err(why) => return Ok(Err(why)),
        };
        let mut whole = head;
        whole.extend_from_slice(&rest);
        Ok(Ok(whole))
    }
}

/// The entry count of the end-of-central-directory record (not for zip64, whose count
/// lives elsewhere).
fn declared_entries(bytes: &[u8]) -> Option<usize> {
    let from = bytes.len().saturating_sub(65_557);
    let at = from + memchr::memmem::rfind(&bytes[from..], b"PK\x05\x06")?;
    let count = u16::from_le_bytes(bytes.get(at + 10..at + 12)?.try_into().ok()?);
    (count != 0xFFFF).then_some(count as usize)
}

/// A zip attachment (or member) at `place`.
pub fn inspect(
    bytes: &[u8],
    place: &str,
    config: &ClassifierConfig,
    budget: &mut Budget,
    depth: usize,
    out: &mut Findings,
) -> Result<(), DocumentError> {
    let Some(mut zip) = Zip::open(bytes, budget)? else {
        out.opaque
            .push(format!("{place} a zip file that cannot be read"));
        return Ok(());
    };
    if zip.has_duplicates() {
        out.opaque
            .push(format!("{place} an archive with two entries of one name"));
    }
    let office = zip.has("[Content_Types].xml");
    if office {
        super::ooxml::inspect(&mut zip, place, config, budget, out)?;
    }
    // OpenDocument (LibreOffice's .odt .ods .odp): the body in content.xml, page headers
    // and footers in styles.xml, their text in paragraphs and headings.
    let odf = zip.has("META-INF/manifest.xml") && zip.has("content.xml");
    // A password-protected OpenDocument file keeps its manifest readable and says there
    // which parts are encrypted.
    let encrypted = odf
        && matches!(zip.read("META-INF/manifest.xml", budget)?,
            Some(Ok(m)) if memchr::memmem::find(&m, b"encryption-data").is_some());
    if encrypted {
        out.opaque
            .push(format!("{place} a password-protected OpenDocument file"));
    } else if odf {
        for (part, what) in [("content.xml", "body"), ("styles.xml", "header")] {
            match zip.read(part, budget)? {
                Some(Ok(bytes)) => {
                    let text = super::xml::decode_text(&bytes);
                    let lines = super::xml::odf_paragraphs(&text).join("\n");
                    // A spreadsheet's paragraphs are its cells: data, as in Excel.
                    if text.contains("<office:spreadsheet") {
                        super::grave_banners(&lines, place, what, out);
                    } else {
                        super::banners(&lines, place, what, out);
                    }
                    // A spreadsheet's sheet names, on its tabs.
                    let names: Vec<String> = super::xml::elements(&text, "table")
                        .into_iter()
                        .filter_map(|a| a.into_iter().find(|(k, _)| k == "name").map(|(_, v)| v))
                        .collect();
                    super::grave_banners(&names.join("\n"), place, "sheet name", out);
                }
                Some(Err(why)) => out.opaque.push(format!("{place}{part} {why}")),
                None => {}
            }
        }
    }
    if depth + 1 > budget.max_depth {
        return Err(DocumentError::Bound(
            "archives nested deeper than classifier.max_depth",
        ));
    }
    // Every member a reader could open: all of an archive's, and the files embedded in
    // an Office document (`word/embeddings/…`), whose XML parts were read above.
    for (name, shown) in zip.names() {
        let part = name.ends_with(".xml") || name.ends_with(".rels") || name.ends_with('/');
        if name.ends_with('/') || ((office || odf) && part) || (odf && name == "mimetype") {
            continue;
        }
        let member = format!("{place}{shown}:");
        // The member's own name is a place, as an attachment's is.
        for (parsed, raw) in crate::marking::places::file_name(&shown) {
            out.found.push((parsed, format!("{place}{shown}"), raw));
        }
        let text = [".txt", ".csv", ".htm", ".html", ".xml"]
            .iter()
            .any(|e| name.ends_with(e));
        let read = if text {
            zip.read(&name, budget)?
        } else {
            zip.read_if_document(&name, budget)?
        };
        let bytes = match read {
            Some(Ok(b)) => b,
            Some(Err(why)) => {
                out.opaque.push(format!("{member} {why}"));
                continue;
            }
            None => continue,
        };
        if text {
            let mut text = super::xml::decode_text(&bytes);
            // Markup as a browser shows it (a page's `<p><b>SECRET</b></p>` is one line
            // of it), beside its raw lines.
            if text.trim_start().starts_with('<') {
                let shown = crate::marking::render::html_to_text(&text);
                text.push('\n');
                text.push_str(&shown);
            }
            super::banners(&text, &member, "text", out);
        } else if name.ends_with(".eml") {
            // A message in an archive is not walked as a message here: say so.
            out.opaque
                .push(format!("{member} a message inside an archive, not read"));
        } else {
            let ext = name.rsplit_once('.').map(|(_, e)| e);
            let declared = crate::message::readable::is_document_name(ext);
            super::inspect(&bytes, &member, declared, config, budget, depth + 1, out)?;
        }
    }
    Ok(())
}
