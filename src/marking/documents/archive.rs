//! Zip files: Office Open XML documents (a zip with `[Content_Types].xml`) and archives
//! (`.zip`) whose members are read like attachments, one level further down. Every entry
//! is read through a length limit taken from the message's budget: the sizes a zip
//! declares are not trusted.

use std::io::{Cursor, Read};

use super::{Budget, DocumentError, Findings};
use crate::config::ClassifierConfig;

/// An open zip whose entries are read within the budget.
pub struct Zip<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
}

impl<'a> Zip<'a> {
    /// Opens `bytes`; `None` when it is not a readable zip (the caller records it as
    /// opaque). Too many entries is past a bound.
    fn open(bytes: &'a [u8], budget: &Budget) -> Result<Option<Zip<'a>>, DocumentError> {
        let Ok(archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
            return Ok(None);
        };
        if archive.len() > budget.max_entries {
            return Err(DocumentError::Bound(
                "an attached archive has more entries than classifier.max_archive_entries",
            ));
        }
        Ok(Some(Zip { archive }))
    }

    pub fn names(&self) -> Vec<String> {
        self.archive
            .file_names()
            .flatten()
            .map(|n| n.into_owned())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// The decompressed bytes of `name`: `Ok(None)` when absent, `Err` past the budget,
    /// `Ok(Some(Err(why)))` when the entry cannot be read (encrypted, corrupt).
    pub fn read(
        &mut self,
        name: &str,
        budget: &mut Budget,
    ) -> Result<Option<Result<Vec<u8>, String>>, DocumentError> {
        let Some(index) = self.archive.index_for_name(name) else {
            return Ok(None);
        };
        self.read_index(index, budget).map(Some)
    }

    fn read_index(
        &mut self,
        index: usize,
        budget: &mut Budget,
    ) -> Result<Result<Vec<u8>, String>, DocumentError> {
        let entry = match self.archive.by_index(index) {
            Ok(e) => e,
            Err(zip::result::ZipError::UnsupportedArchive(why)) => return Ok(Err(why.to_string())),
            Err(err) => return Ok(Err(err.to_string())),
        };
        if entry.encrypted() {
            return Ok(Err("password-protected".to_string()));
        }
        // One byte more than the budget allows shows that it was exceeded.
        let mut out = Vec::new();
        let limit = budget.bytes.saturating_add(1);
        match entry.take(limit).read_to_end(&mut out) {
            Ok(_) => {}
            Err(err) => return Ok(Err(err.to_string())),
        }
        budget.spend(out.len() as u64)?;
        Ok(Ok(out))
    }
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
    if zip.has("[Content_Types].xml") {
        return super::ooxml::inspect(&mut zip, place, config, budget, out);
    }
    if depth + 1 > budget.max_depth {
        return Err(DocumentError::Bound(
            "archives nested deeper than classifier.max_depth",
        ));
    }
    for name in zip.names() {
        if name.ends_with('/') {
            continue;
        }
        let member = format!("{place}{name}:");
        // The member's own name is a place, as an attachment's is.
        for (parsed, raw) in crate::marking::places::file_name(&name) {
            out.found.push((parsed, format!("{place}{name}"), raw));
        }
        let bytes = match zip.read(&name, budget)? {
            Some(Ok(b)) => b,
            Some(Err(why)) => {
                out.opaque.push(format!("{member} {why}"));
                continue;
            }
            None => continue,
        };
        let lower = name.to_ascii_lowercase();
        if [".txt", ".csv", ".htm", ".html", ".eml"]
            .iter()
            .any(|e| lower.ends_with(e))
        {
            let text = String::from_utf8_lossy(&bytes);
            super::banners(&text, &member, "text", out);
        } else {
            super::inspect(&bytes, &member, config, budget, depth + 1, out)?;
        }
    }
    Ok(())
}
