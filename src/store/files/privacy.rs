//! The two privacy duties that reach whoever runs the gateway (the CJSM privacy notice):
//! a subject access request (`track export`: every tracking record and held message that
//! names an address) and an erasure request (`track redact`: the address replaced, in
//! records older than a date and not under a legal hold, by a keyed hash, with an audit
//! record of the redaction). Retention stays as configured.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::quarantine::Quarantine;
use super::tracking::Tracking;
use crate::store::address_match::AddressMatch;
use crate::store::{Exported, Redacted};

/// Every address a record names: its sender and recipients, and the original senders and
/// recipients of the correspondence it carried (`forwarded`).
pub(crate) fn addresses(record: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = record.get("sender").and_then(|s| s.as_str()) {
        out.push(s.to_lowercase());
    }
    if let Some(list) = record.get("recipients").and_then(|r| r.as_array()) {
        for r in list {
            if let Some(a) = r.get("address").and_then(|a| a.as_str()) {
                out.push(a.to_lowercase());
            }
        }
    }
    for f in record
        .get("forwarded")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
    {
        let to = f.get("to").and_then(|t| t.as_array()).into_iter().flatten();
        for a in std::iter::once(f.get("from")).flatten().chain(to) {
            if let Some(a) = a.as_str() {
                out.push(a.to_lowercase());
            }
        }
    }
    out
}

/// The tracking files (names), oldest first.
fn tracking_files(dir: &Path) -> io::Result<Vec<String>> {
    super::index::tracking_files(dir).map_err(|e| match e {
        super::index::IndexError::Io(e) => e,
        other => io::Error::other(other),
    })
}

fn day_of(name: &str) -> &str {
    name.trim_start_matches("tracking-")
        .trim_end_matches(".jsonl")
}

/// Writes every record naming `address` (as sender or recipient), from `since` (RFC 3339)
/// on, to `out/tracking.json`, and every held message naming it to `out/quarantine/` as
/// `ID.eml` and `ID.json`. `out` must not exist: it is made 0700.
pub fn export(
    tracking: &Tracking,
    quarantine: &Quarantine,
    address: &str,
    since: Option<&str>,
    out: &Path,
) -> io::Result<Exported> {
    let wanted = address.trim().to_lowercase();
    let since_day = since.map(|s| s.get(..10).unwrap_or(s).to_string());
    std::fs::DirBuilder::new().mode(0o700).create(out)?;
    let mut records = Vec::new();
    for name in tracking_files(tracking.dir())? {
        if since_day.as_deref().is_some_and(|d| day_of(&name) < d) {
            continue;
        }
        for line in BufReader::new(File::open(tracking.dir().join(&name))?).lines() {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(&line?) else {
                continue;
            };
            let time = record.get("time").and_then(|t| t.as_str()).unwrap_or("");
            if since.is_some_and(|s| time < s) {
                continue;
            }
            if addresses(&record).contains(&wanted) {
                records.push(record);
            }
        }
    }
    let matcher = AddressMatch::Exact(wanted.clone());
    let mut held = Vec::new();
    for meta in quarantine
        .list()?
        .into_iter()
        .filter(|m| since.is_none_or(|s| m.time.as_str() >= s))
        .filter(|m| matcher.matches(&m.sender) || m.recipients.iter().any(|r| matcher.matches(r)))
    {
        let bytes = quarantine.message(&meta.id)?;
        held.push((meta, bytes));
    }
    write_export(out, &records, held)
}

/// Writes an export (made 0700 beforehand by the caller): `tracking.json`, and each held
/// message as `quarantine/ID.eml` and `ID.json`. Shared by both store backends.
pub(crate) fn write_export(
    out: &Path,
    records: &[serde_json::Value],
    held: Vec<(crate::store::Meta, Vec<u8>)>,
) -> io::Result<Exported> {
    let mut exported = Exported {
        records: records.len(),
        held: 0,
    };
    write_private(
        &out.join("tracking.json"),
        &serde_json::to_vec_pretty(records)?,
    )?;
    if !held.is_empty() {
        let dir = out.join("quarantine");
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        for (meta, bytes) in held {
            write_private(&dir.join(format!("{}.eml", meta.id)), &bytes)?;
            write_private(
                &dir.join(format!("{}.json", meta.id)),
                &serde_json::to_vec_pretty(&meta)?,
            )?;
            exported.held += 1;
        }
    }
    Ok(exported)
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The key redaction hashes with: 32 random bytes in `tracking/redaction.key` (0600),
/// made on first use. Without the key a hash cannot be turned back into an address by
/// guessing; with it, the same address always gives the same hash, so records stay
/// comparable.
fn redaction_key(dir: &Path) -> io::Result<Vec<u8>> {
    let path = dir.join("redaction.key");
    match std::fs::read(&path) {
        Ok(key) if key.len() == 32 => return Ok(key),
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is not a 32-byte key",
                path.display()
            )))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut key = vec![0u8; 32];
    io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut key)?;
    // Whole or not at all: a crash mid-write must not leave a short key behind.
    let tmp = dir.join(".tmp-redaction.key");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, &key)?;
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

/// HMAC-SHA256 (RFC 2104).
pub(crate) fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The address-shaped stand-in for a redacted address.
pub fn redacted_token(key: &[u8], address: &str) -> String {
    let mac = hmac(key, address.trim().to_lowercase().as_bytes());
    let hex: String = mac[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("redacted-{hex}@redacted.invalid")
}

/// Replaces `address` in every record before `before_day` (YYYY-MM-DD) that names it and
/// is not under a legal hold (`holds`: addresses or `@domain`s). Only whole days before
/// today are rewritten (today's file is the one the service appends to); each rewritten
/// file is written beside the old one, fsynced, renamed into place and re-indexed.
pub fn redact(
    tracking: &Tracking,
    address: &str,
    before_day: &str,
    today: &str,
    holds: &[AddressMatch],
) -> io::Result<Redacted> {
    let wanted = address.trim().to_lowercase();
    // One redaction at a time: two would each rewrite from the same original, and the
    // last rename would undo the other.
    super::create_private_dir(tracking.dir())?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(tracking.dir().join("redact.lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let key = redaction_key(tracking.dir())?;
    let token = redacted_token(&key, &wanted);
    let mut done = Redacted {
        token: token.clone(),
        ..Redacted::default()
    };
    for name in tracking_files(tracking.dir())? {
        let day = day_of(&name).to_string();
        if day.as_str() >= before_day {
            continue;
        }
        let path = tracking.dir().join(&name);
        let text = std::fs::read_to_string(&path)?;
        let mut changed = 0;
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let record = serde_json::from_str::<serde_json::Value>(line).ok();
            let names = record
                .as_ref()
                .is_some_and(|r| addresses(r).contains(&wanted));
            if !names {
                out.push_str(line);
                continue;
            }
            let held = record.as_ref().is_some_and(|r| {
                addresses(r)
                    .iter()
                    .any(|a| holds.iter().any(|h| h.matches(a)))
            });
            if held {
                done.held_back += 1;
                out.push_str(line);
            } else if day.as_str() >= today {
                done.too_recent += 1;
                out.push_str(line);
            } else {
                changed += 1;
                out.push_str(&replace_ignoring_case(line, &wanted, &token));
            }
        }
        if changed == 0 {
            continue;
        }
        let tmp = tracking.dir().join(format!(".tmp-{name}"));
        let _ = std::fs::remove_file(&tmp);
        if let Err(err) =
            write_private(&tmp, out.as_bytes()).and_then(|_| std::fs::rename(&tmp, &path))
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        File::open(tracking.dir())?.sync_all()?;
        done.records += changed;
        done.files += 1;
        // The file is the record; an index left behind is repaired by `track reindex`.
        if let Err(err) = tracking.reindex_file(&name) {
            tracing::warn!(error = %err, file = %name, "index not updated after redaction; run `markgate track reindex`");
        }
    }
    Ok(done)
}

/// `text` with every ASCII-case-insensitive occurrence of the address `needle` (lower
/// case) replaced: whole addresses only (`bob@x.test` is not inside `jimbob@x.test` or
/// `bob@x.test.uk`).
pub(crate) fn replace_ignoring_case(text: &str, needle: &str, with: &str) -> String {
    let in_address =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || "._%+-@".contains(c));
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find(needle) {
        let start = from + i;
        let end = start + needle.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        // `.` after is a longer domain unless it ends the sentence.
        let longer = after == Some('.')
            && text[end + 1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        let after_ok = !in_address(after) || (after == Some('.') && !longer);
        if !in_address(before) && after_ok {
            out.push_str(&text[at..start]);
            out.push_str(with);
            at = end;
        }
        from = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = super::hmac(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn replacement_ignores_case_only_in_ascii() {
        assert_eq!(
            super::replace_ignoring_case("To: <Bob@X.test>, bob@x.test", "bob@x.test", "R"),
            "To: <R>, R"
        );
    }

    #[test]
    fn only_whole_addresses_are_replaced() {
        let text =
            r#"{"a":"jimbob@x.test","b":"bob@x.test.uk","c":"bob@x.test","d":"to bob@x.test."}"#;
        assert_eq!(
            super::replace_ignoring_case(text, "bob@x.test", "R"),
            r#"{"a":"jimbob@x.test","b":"bob@x.test.uk","c":"R","d":"to R."}"#
        );
    }
}
