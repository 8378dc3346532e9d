//! The tracking index: an embedded SQLite database (`STATE/tracking/index.sqlite`) that points
//! at records in the JSONL files by file and byte offset, so a search over a year of records
//! is an index lookup, not a scan. The JSONL files stay the source of truth: the index can be
//! rebuilt from them at any time (`markgate track reindex`). This is the only SQL in markgate.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use rusqlite::{params, params_from_iter, Connection};

pub use crate::store::address_match::AddressMatch;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("tracking index: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("tracking index: {0}")]
    Io(#[from] io::Error),
    /// The index points at a line that is not the record it indexed (a tracking file edited,
    /// restored from backup or replaced): searching on would show the wrong records.
    #[error(
        "tracking index is out of step with {file} at byte {offset}; run `markgate track reindex`"
    )]
    Stale { file: String, offset: u64 },
}

/// What a search asks for; every field given must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// With or without the angle brackets.
    pub message_id: Option<String>,
    pub sender: Option<AddressMatch>,
    pub recipient: Option<AddressMatch>,
    pub action: Option<String>,
    pub rule: Option<String>,
    pub level: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// The newest this many (results stay newest first).
    pub limit: Option<usize>,
    /// Only records indexed after this row id, oldest first (`track search --follow`).
    pub after: Option<i64>,
}

pub struct Index {
    conn: Connection,
    dir: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    queue_id TEXT,
    message_id TEXT,
    sender TEXT,
    action TEXT,
    rule TEXT,
    level TEXT,
    file TEXT NOT NULL,
    offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS recipients (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    address TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
CREATE INDEX IF NOT EXISTS records_sender ON records(sender, time);
CREATE INDEX IF NOT EXISTS records_message_id ON records(message_id);
CREATE INDEX IF NOT EXISTS records_file ON records(file);
CREATE INDEX IF NOT EXISTS recipients_address ON recipients(address);
CREATE INDEX IF NOT EXISTS recipients_record ON recipients(record);
CREATE TABLE IF NOT EXISTS intents (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    queue_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_queue_id ON intents(queue_id);
";

pub use crate::store::record::INTENT;

fn text<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

impl Index {
    /// Opens (creating if needed) the index for the tracking files in `dir`.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        super::create_private_dir(dir)?;
        let path = dir.join("index.sqlite");
        // SQLite creates its files 0644 less the umask, and gives the -wal and -shm files the
        // mode of the database; creating the database 0600 first keeps all three private.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(super::no_follow())
                .open(&path)?;
        }
        let conn = Connection::open(&path)?;
        // The service and a CLI command (reindex, redact) may write at once: wait for the
        // other's transaction rather than fail.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // secure_delete: a redacted address must not live on in freed pages.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA secure_delete = ON;",
        )?;
        conn.execute_batch(SCHEMA)?;
        Ok(Index {
            conn,
            dir: dir.to_path_buf(),
        })
    }

    /// Adds one record that starts at `offset` in `file` (a name inside the tracking dir).
    pub fn add(
        &mut self,
        record: &serde_json::Value,
        file: &str,
        offset: u64,
    ) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        insert(&tx, record, file, offset)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds many records in one transaction (reindexing, benchmarks).
    pub fn add_batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a serde_json::Value, &'a str, u64)>,
    ) -> Result<usize, IndexError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for (record, file, offset) in records {
            insert(&tx, record, file, offset)?;
            n += 1;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Forgets the records of a deleted tracking file.
    pub fn forget_file(&mut self, file: &str) -> Result<(), IndexError> {
        self.conn
            .execute("DELETE FROM records WHERE file = ?1", params![file])?;
        Ok(())
    }

    /// Rebuilds the index from every tracking file; returns how many records it holds.
    pub fn rebuild(&mut self) -> Result<usize, IndexError> {
        let mut files: Vec<String> = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("tracking-") && n.ends_with(".jsonl"))
            .collect();
        files.sort();
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM intents", [])?;
        tx.execute("DELETE FROM recipients", [])?;
        tx.execute("DELETE FROM records", [])?;
        for name in files {
            index_file(&tx, &self.dir, &name)?;
        }
        tx.commit()?;
        // Records, not lines: an intent completed by a later record is not one.
        self.count()
    }

    /// Indexes one tracking file afresh (after it was rewritten: its offsets moved), and
    /// checkpoints the write-ahead log so the old rows are gone from it too.
    pub fn reindex_file(&mut self, name: &str) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM records WHERE file = ?1", params![name])?;
        index_file(&tx, &self.dir, name)?;
        tx.commit()?;
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok(())
    }

    /// The records matching `q`, newest first, read back from the JSONL files.
    pub fn search(&self, q: &Query) -> Result<Vec<serde_json::Value>, IndexError> {
        Ok(self.search_rows(q)?.into_iter().map(|(_, r)| r).collect())
    }

    /// Like [`Index::search`], with each record's row id (what `after` continues from).
    pub fn search_rows(&self, q: &Query) -> Result<Vec<(i64, serde_json::Value)>, IndexError> {
        let mut sql = String::from(
            "SELECT DISTINCT r.file, r.offset, r.time, r.queue_id, r.id FROM records r",
        );
        let mut args: Vec<String> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        if let Some(rcpt) = &q.recipient {
            sql.push_str(" JOIN recipients p ON p.record = r.id");
            let (cond, arg) = rcpt.sql("p.address", args.len() + 1);
            args.push(arg);
            conds.push(cond);
        }
        if let Some(sender) = &q.sender {
            let (cond, arg) = sender.sql("r.sender", args.len() + 1);
            args.push(arg);
            conds.push(cond);
        }
        if let Some(id) = &q.message_id {
            // Stored as the header has it, normally `<…>`; people paste either form.
            let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
            args.push(format!("<{bare}>"));
            args.push(bare.to_string());
            conds.push(format!(
                "r.message_id IN (?{}, ?{})",
                args.len() - 1,
                args.len()
            ));
        }
        for (col, val) in [
            ("r.action", &q.action),
            ("r.rule", &q.rule),
            ("r.level", &q.level.as_ref().map(|s| s.to_uppercase())),
        ] {
            if let Some(v) = val {
                args.push(v.clone());
                conds.push(format!("{col} = ?{}", args.len()));
            }
        }
        if let Some(since) = &q.since {
            args.push(since.clone());
            conds.push(format!("r.time >= ?{}", args.len()));
        }
        if let Some(until) = &q.until {
            args.push(until.clone());
            conds.push(format!("r.time < ?{}", args.len()));
        }
        if let Some(after) = q.after {
            conds.push(format!("r.id > {after}"));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        if q.after.is_some() {
            sql.push_str(" ORDER BY r.id");
        } else {
            sql.push_str(" ORDER BY r.time DESC, r.id DESC");
        }
        if let Some(limit) = q.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        let rows: Vec<(String, i64, String, Option<String>, i64)> =
            rows.collect::<Result<_, _>>()?;
        // Read grouped by file, each file opened once and read in offset order (a year's
        // search touches hundreds of files and thousands of lines), then put back in the
        // order the index gave.
        let mut by_file: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, row) in rows.iter().enumerate() {
            by_file.entry(row.0.as_str()).or_default().push(i);
        }
        let mut lines: Vec<Option<String>> = vec![None; rows.len()];
        for (file, mut wanted) in by_file {
            let handle = match File::open(self.dir.join(file)) {
                Ok(f) => f,
                // Expired meanwhile: its records are gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            wanted.sort_by_key(|&i| rows[i].1);
            for i in wanted {
                lines[i] = Some(line_at(&handle, rows[i].1 as u64)?);
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for ((file, offset, time, queue_id, id), line) in rows.into_iter().zip(lines) {
            let Some(line) = line else { continue };
            let offset = offset as u64;
            // Cheap insurance: the line must be the record that was indexed.
            let record = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .filter(|r| {
                    text(r, "time").unwrap_or("") == time
                        && text(r, "queue_id") == queue_id.as_deref()
                })
                .ok_or(IndexError::Stale { file, offset })?;
            out.push((id, record));
        }
        Ok(out)
    }

    /// The newest row id (0 when empty): where `--follow` starts.
    pub fn last_row(&self) -> Result<i64, IndexError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM records", [], |r| r.get(0))?)
    }

    pub fn count(&self) -> Result<usize, IndexError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get::<_, i64>(0))?
            as usize)
    }
}

/// Adds every record line of `name` (unreadable lines, such as a torn last one, skipped).
fn index_file(conn: &Connection, dir: &Path, name: &str) -> Result<(), IndexError> {
    let mut reader = BufReader::new(File::open(dir.join(name))?);
    let mut offset = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            break;
        }
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) {
            insert(conn, &record, name, offset)?;
        }
        offset += n as u64;
    }
    Ok(())
}

fn insert(
    conn: &Connection,
    record: &serde_json::Value,
    file: &str,
    offset: u64,
) -> Result<(), IndexError> {
    let level = record
        .get("marking")
        .and_then(|m| text(m, "level"))
        .map(str::to_uppercase);
    // A record for a queue id supersedes that queue id's intent record.
    if let Some(queue_id) = text(record, "queue_id") {
        conn.prepare_cached(
            "DELETE FROM records WHERE id IN (SELECT record FROM intents WHERE queue_id = ?1)",
        )?
        .execute(params![queue_id])?;
    }
    conn.prepare_cached(
        "INSERT INTO records (time, queue_id, message_id, sender, action, rule, level, file, offset)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
            text(record, "time").unwrap_or(""),
            text(record, "queue_id"),
            text(record, "message_id"),
            text(record, "sender").map(str::to_lowercase),
            text(record, "action"),
            text(record, "rule"),
            level,
            file,
            offset as i64,
        ])?;
    let id = conn.last_insert_rowid();
    if let (Some(INTENT), Some(queue_id)) = (text(record, "outcome"), text(record, "queue_id")) {
        conn.prepare_cached("INSERT INTO intents (record, queue_id) VALUES (?1, ?2)")?
            .execute(params![id, queue_id])?;
    }
    if let Some(list) = record.get("recipients").and_then(|r| r.as_array()) {
        let mut stmt =
            conn.prepare_cached("INSERT INTO recipients (record, address) VALUES (?1, ?2)")?;
        for r in list {
            if let Some(a) = text(r, "address") {
                stmt.execute(params![id, a.to_lowercase()])?;
            }
        }
    }
    Ok(())
}

/// The line that starts at `offset` (without its line end), read with `pread` so one open
/// file serves every record in it: a first read of a typical record's size, more only for
/// a longer line (at most 16 MiB).
fn line_at(file: &File, offset: u64) -> Result<String, IndexError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 2048];
    let mut have = 0;
    loop {
        let n = file.read_at(&mut buf[have..], offset + have as u64)?;
        if let Some(end) = memchr::memchr(b'\n', &buf[have..have + n]) {
            buf.truncate(have + end);
            break;
        }
        have += n;
        if n == 0 || have >= 16 * 1024 * 1024 {
            buf.truncate(have);
            break;
        }
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
    String::from_utf8(buf)
        .map_err(|e| IndexError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(queue_id: &str, sender: &str) -> serde_json::Value {
        serde_json::json!({
            "time": "2026-11-24T10:00:00Z",
            "queue_id": queue_id,
            "sender": sender,
            "action": "pass",
            "recipients": [{"address": "bob@cps.cjsm.net"}],
        })
    }

    #[test]
    fn a_search_refuses_an_index_out_of_step_with_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = "tracking-2026-11-24.jsonl";
        let lines: Vec<String> = [record("A1", "jane@x"), record("B2", "tom@x")]
            .iter()
            .map(|r| format!("{r}\n"))
            .collect();
        std::fs::write(dir.path().join(file), lines.concat()).unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        assert_eq!(index.rebuild().unwrap(), 2);
        let by_tom = Query {
            sender: Some(AddressMatch::parse("tom@x")),
            ..Query::default()
        };
        assert_eq!(index.search(&by_tom).unwrap()[0]["queue_id"], "B2");

        // The file replaced by one whose lines differ (restored from another day's backup):
        // the offsets now land on other records, which must not be shown as tom's.
        let other: Vec<String> = [record("C3", "eve@x"), record("D4", "eve@x")]
            .iter()
            .map(|r| format!("{r}\n"))
            .collect();
        std::fs::write(dir.path().join(file), other.concat()).unwrap();
        let err = index.search(&by_tom).unwrap_err();
        assert!(matches!(err, IndexError::Stale { .. }), "{err}");
        assert!(err.to_string().contains("markgate track reindex"), "{err}");
        index.rebuild().unwrap();
        assert!(index.search(&by_tom).unwrap().is_empty());
    }
}
