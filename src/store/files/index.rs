//! The tracking index: an embedded SQLite database (`STATE/tracking/index.sqlite`) that points
//! at records in the JSONL files by file and byte offset, so a search over a year of records
//! is an index lookup, not a scan. The JSONL files stay the source of truth: the index can be
//! rebuilt from them at any time (`markgate track reindex`). This is the only SQL in markgate.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::{params, params_from_iter, Connection};

pub use crate::store::address_match::AddressMatch;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("tracking index: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("tracking index: {0}")]
    Io(#[from] io::Error),
    /// The shared store (PostgreSQL) could not answer; its error says why.
    #[error("{0}")]
    Store(#[source] io::Error),
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
CREATE INDEX IF NOT EXISTS records_file_offset ON records(file, offset);
CREATE INDEX IF NOT EXISTS records_queue_id ON records(queue_id);
CREATE INDEX IF NOT EXISTS recipients_address ON recipients(address);
CREATE INDEX IF NOT EXISTS recipients_record ON recipients(record);
CREATE TABLE IF NOT EXISTS intents (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    queue_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_queue_id ON intents(queue_id);
DROP INDEX IF EXISTS records_file;
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY,
    indexed_to INTEGER NOT NULL
);
";

use crate::store::record::TrackingRecord;
pub use crate::store::record::INTENT;

/// A line as a record; `None` for one that is no record (torn, or not JSON).
fn parse(line: &[u8]) -> Option<TrackingRecord> {
    serde_json::from_slice(line).ok()
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
        // Turning a new database to WAL and creating its tables take the write lock in ways
        // SQLite answers with SQLITE_BUSY at once, without its busy handler, when another
        // connection opens the new database at the same moment (the indexer thread and a
        // search): wait and try again, within the same 10 s.
        let started = std::time::Instant::now();
        loop {
            let made = conn
                .execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
                )
                .and_then(|()| conn.execute_batch(SCHEMA));
            match made {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                made => break made?,
            }
        }
        let index = Index {
            conn,
            dir: dir.to_path_buf(),
        };
        Ok(index)
    }

    /// Indexes every whole line the tracking files hold past what is indexed: how records
    /// reach the index. The service's indexer runs it after appends (in batches, off the
    /// sessions' path), and every search runs it first, so a search sees every record
    /// written before it, whichever process wrote it. Each file's tail is indexed in one
    /// transaction that re-reads how far the file is indexed, so two processes catching
    /// up at once never index a line twice. Returns how many lines were indexed.
    ///
    /// Only the two newest files can grow (markgate appends to today's; a record written
    /// just before midnight may land in yesterday's), so older files are looked at only
    /// when the index has never seen them (a restore): a search over a year costs a
    /// directory listing, one query and two `stat`s before it starts.
    pub fn catch_up(&mut self) -> Result<usize, IndexError> {
        let names = tracking_files(&self.dir)?;
        let known: std::collections::HashMap<String, u64> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT name, indexed_to FROM files")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            rows.map(|r| r.map(|(n, i)| (n, i as u64)))
                .collect::<Result<_, _>>()?
        };
        // Today's and yesterday's by the clock too, whatever else the directory holds (a
        // file dated ahead by a clock that ran fast must not hide today's).
        let now = std::time::SystemTime::now();
        let by_clock: Vec<String> = [now, now - std::time::Duration::from_secs(86_400)]
            .iter()
            .map(|t| format!("tracking-{}.jsonl", crate::timefmt::date(*t)))
            .collect();
        let newest = names.len().saturating_sub(2);
        let (mut n, mut failed) = (0, None);
        for (i, name) in names.iter().enumerate() {
            if i >= newest || !known.contains_key(name) || by_clock.contains(name) {
                // One unreadable file (restored with the wrong owner) must not stop the
                // others from being indexed; its error is reported once they are.
                match self.catch_up_file(name) {
                    Ok(k) => n += k,
                    Err(err) => failed = failed.or(Some(err)),
                }
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(n),
        }
    }

    /// [`Index::catch_up`] for one file. Indexing resumes past the file's mark and past
    /// the last line indexed from it (so an index whose mark was never kept — made by an
    /// earlier version, or by one still running — does not index a line twice). A file
    /// that shrank, or whose bytes no longer end a line where indexing would resume
    /// (rewritten, truncated, replaced), is indexed afresh from its start.
    pub fn catch_up_file(&mut self, name: &str) -> Result<usize, IndexError> {
        self.catch_up_file_by(name, MAX_BATCH_BYTES)
    }

    /// [`Index::catch_up_file`] reading at most `batch` bytes per transaction (more only
    /// for a line longer than that): what a pass holds in memory stays bounded however far
    /// behind the index is.
    fn catch_up_file_by(&mut self, name: &str, batch: u64) -> Result<usize, IndexError> {
        let mut n = 0;
        loop {
            let (k, more) = self.catch_up_part(name, batch)?;
            n += k;
            if !more {
                return Ok(n);
            }
        }
    }

    /// One transaction of [`Index::catch_up_file_by`]; true when the file holds more.
    fn catch_up_part(&mut self, name: &str, batch: u64) -> Result<(usize, bool), IndexError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(name);
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, false)),
            Err(e) => return Err(e.into()),
        };
        if size == self.indexed_to(name)? {
            return Ok((0, false));
        }
        let tx =
            rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)?;
        let mark: u64 = tx
            .query_row(
                "SELECT indexed_to FROM files WHERE name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as u64)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                e => Err(e),
            })?;
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        let last: Option<i64> = tx.query_row(
            "SELECT MAX(offset) FROM records WHERE file = ?1",
            params![name],
            |r| r.get(0),
        )?;
        let mut from = mark;
        if let Some(last) = last {
            let end = last as u64 + line_at(&file, last as u64)?.len() as u64 + 1;
            from = from.max(end);
        }
        let ends_a_line = |at: u64| {
            let mut byte = [0u8; 1];
            at == 0 || (file.read_exact_at(&mut byte, at - 1).is_ok() && byte[0] == b'\n')
        };
        if size < from || !ends_a_line(from) {
            tx.execute("DELETE FROM records WHERE file = ?1", params![name])?;
            from = 0;
        }
        let rest = size.saturating_sub(from);
        let mut tail = vec![0u8; rest.min(batch) as usize];
        file.read_exact_at(&mut tail, from)?;
        if (tail.len() as u64) < rest && memchr::memchr(b'\n', &tail).is_none() {
            // A line longer than a batch: the rest of the file in one.
            tail = vec![0u8; rest as usize];
            file.read_exact_at(&mut tail, from)?;
        }
        // Each batch cut short holds a whole line, so the next starts further on.
        let more = (tail.len() as u64) < rest;
        let (n, offset) = index_lines(&tx, name, &tail, from)?;
        tx.execute(
            "INSERT OR REPLACE INTO files (name, indexed_to) VALUES (?1, ?2)",
            params![name, offset as i64],
        )?;
        tx.commit()?;
        Ok((n, more))
    }

    /// How far `name` is indexed (0: not at all).
    fn indexed_to(&self, name: &str) -> Result<u64, IndexError> {
        match self.conn.query_row(
            "SELECT indexed_to FROM files WHERE name = ?1",
            params![name],
            |r| r.get::<_, i64>(0),
        ) {
            Ok(v) => Ok(v as u64),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets the records of a deleted tracking file.
    pub fn forget_file(&mut self, file: &str) -> Result<(), IndexError> {
        let tx =
            rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM records WHERE file = ?1", params![file])?;
        tx.execute("DELETE FROM files WHERE name = ?1", params![file])?;
        tx.commit()?;
        Ok(())
    }

    /// Rebuilds the index from every tracking file; returns how many records it holds.
    pub fn rebuild(&mut self) -> Result<usize, IndexError> {
        // One transaction: a search meanwhile sees the old index whole, then the new one,
        // never a part (and the service's indexer waits rather than interleave).
        let tx =
            rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM intents", [])?;
        tx.execute("DELETE FROM recipients", [])?;
        tx.execute("DELETE FROM records", [])?;
        tx.execute("DELETE FROM files", [])?;
        for name in tracking_files(&self.dir)? {
            let bytes = match std::fs::read(self.dir.join(&name)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let (_, end) = index_lines(&tx, &name, &bytes, 0)?;
            tx.execute(
                "INSERT OR REPLACE INTO files (name, indexed_to) VALUES (?1, ?2)",
                params![name, end as i64],
            )?;
        }
        tx.commit()?;
        // Records, not lines: an intent completed by a later record is not one.
        self.count()
    }

    /// Indexes one tracking file afresh (after it was rewritten: its offsets moved), and
    /// checkpoints the write-ahead log so the old rows are gone from it too.
    pub fn reindex_file(&mut self, name: &str) -> Result<(), IndexError> {
        // One transaction: a search in between sees the old rows or the new, never none.
        let tx =
            rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM records WHERE file = ?1", params![name])?;
        tx.execute("DELETE FROM files WHERE name = ?1", params![name])?;
        let text = std::fs::read(self.dir.join(name))?;
        let (_, offset) = index_lines(&tx, name, &text, 0)?;
        tx.execute(
            "INSERT OR REPLACE INTO files (name, indexed_to) VALUES (?1, ?2)",
            params![name, offset as i64],
        )?;
        tx.commit()?;
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok(())
    }

    /// The records matching `q`, newest first, read back from the JSONL files.
    pub fn search(&self, q: &Query) -> Result<Vec<TrackingRecord>, IndexError> {
        Ok(self.search_rows(q)?.into_iter().map(|(_, r)| r).collect())
    }

    /// Like [`Index::search`], with each record's row id (what `after` continues from).
    pub fn search_rows(&self, q: &Query) -> Result<Vec<(i64, TrackingRecord)>, IndexError> {
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
            let record = parse(line.as_bytes())
                .filter(|r| r.time == time && r.queue_id == queue_id)
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

/// The most a catch-up reads into memory for one transaction (about a thousand records).
/// A pass under load takes several: 8 MiB took markgate's peak RSS in the benchmark from
/// 25 to 63 MB, 1 MiB left it at 25 MB and the rate where it was.
const MAX_BATCH_BYTES: u64 = 1024 * 1024;

/// Indexes the whole lines of `bytes`, which start at `from` in `name`; returns how many
/// records it indexed and where the last whole line ended. A line still being written is
/// left for next time; a torn one (a restored copy's last) is skipped, as readers skip it.
fn index_lines(
    conn: &Connection,
    name: &str,
    bytes: &[u8],
    from: u64,
) -> Result<(usize, u64), IndexError> {
    let whole = memchr::memrchr(b'\n', bytes).map_or(0, |i| i + 1);
    let mut records = Vec::new();
    let mut offset = from;
    for line in bytes[..whole].split_inclusive(|b| *b == b'\n') {
        if let Some(record) = parse(line) {
            records.push((offset, record));
        }
        offset += line.len() as u64;
    }
    // An intent whose outcome is in the same batch (nearly every one: the indexer runs a
    // few milliseconds behind the sessions) would be inserted only to be deleted by its
    // outcome: it is never written. Half the index's work per message was that.
    let only: Vec<&TrackingRecord> = records.iter().map(|(_, r)| r).collect();
    let superseded = crate::store::record::superseded_intents(&only);
    let mut n = 0;
    for ((at, record), gone) in records.iter().zip(superseded) {
        if !gone {
            insert(conn, record, name, *at)?;
            n += 1;
        }
    }
    Ok((n, offset))
}

/// The tracking files in `dir` (names), oldest first.
pub(crate) fn tracking_files(dir: &Path) -> Result<Vec<String>, IndexError> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("tracking-") && n.ends_with(".jsonl"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    Ok(names)
}

fn insert(
    conn: &Connection,
    record: &TrackingRecord,
    file: &str,
    offset: u64,
) -> Result<(), IndexError> {
    let level = record.marking.as_ref().map(|m| m.level.to_uppercase());
    if let (true, Some(queue_id)) = (record.is_intent(), &record.queue_id) {
        // An intent whose outcome is indexed already (a file indexed afresh after the
        // next day's file, which holds the outcome) is superseded before it is shown.
        let done: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM records WHERE queue_id = ?1 AND id NOT IN \
                 (SELECT record FROM intents WHERE queue_id = ?1))",
            )?
            .query_row(params![queue_id], |r| r.get(0))?;
        if done {
            return Ok(());
        }
    }
    conn.prepare_cached(
        "INSERT INTO records (time, queue_id, message_id, sender, action, rule, level, file, offset)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        record.time,
        record.queue_id,
        record.message_id,
        record.sender.to_lowercase(),
        record.action,
        record.rule,
        level,
        file,
        offset as i64,
    ])?;
    let id = conn.last_insert_rowid();
    // A record for a queue id supersedes that queue id's intent records: deleted after the
    // new row is in, so the new row never takes a deleted row's id (`--follow` continues
    // from the highest id it has shown).
    if let Some(queue_id) = &record.queue_id {
        conn.prepare_cached(
            "DELETE FROM records WHERE id IN (SELECT record FROM intents WHERE queue_id = ?1)",
        )?
        .execute(params![queue_id])?;
        if record.is_intent() {
            conn.prepare_cached("INSERT INTO intents (record, queue_id) VALUES (?1, ?2)")?
                .execute(params![id, queue_id])?;
        }
    }
    let mut stmt =
        conn.prepare_cached("INSERT INTO recipients (record, address) VALUES (?1, ?2)")?;
    for a in record.addresses() {
        stmt.execute(params![id, a.to_lowercase()])?;
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
        assert_eq!(
            index.search(&by_tom).unwrap()[0].queue_id.as_deref(),
            Some("B2")
        );

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

    fn lines(n: usize, from: usize) -> String {
        (from..from + n)
            .map(|i| format!("{}\n", record(&format!("{i:016X}"), "jane@x")))
            .collect()
    }

    #[test]
    fn connections_opening_a_new_index_at_once_all_open() {
        // The indexer thread and a search open a new database at the same moment.
        for _ in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (dir.path().to_path_buf(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Index::open(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for open in opens {
                assert_eq!(open.join().unwrap(), Ok(()));
            }
        }
    }

    #[test]
    fn two_writers_catching_up_at_once_index_each_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tracking-2026-11-24.jsonl");
        std::fs::write(&file, lines(200, 0)).unwrap();
        // The service's indexer and a CLI search, each with its own connection.
        let catch_up = || {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || Index::open(&path).unwrap().catch_up().unwrap())
        };
        let (a, b) = (catch_up(), catch_up());
        assert_eq!(a.join().unwrap() + b.join().unwrap(), 200);
        // A line still being written is left for next time; once whole, it is indexed.
        let mut more = lines(1, 200);
        let half = more.split_off(more.len() / 2);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(more.as_bytes()).unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        assert_eq!(index.catch_up().unwrap(), 0);
        f.write_all(half.as_bytes()).unwrap();
        assert_eq!(index.catch_up().unwrap(), 1);
        assert_eq!(index.count().unwrap(), 201);
    }

    #[test]
    fn an_index_from_before_it_kept_file_ends_is_not_indexed_twice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tracking-2026-11-24.jsonl"), lines(50, 0)).unwrap();
        {
            let mut index = Index::open(dir.path()).unwrap();
            assert_eq!(index.catch_up().unwrap(), 50);
            // As the version before this one left it: no marks kept.
            index.conn.execute_batch("DELETE FROM files").unwrap();
        }
        let mut index = Index::open(dir.path()).unwrap();
        assert_eq!(index.catch_up().unwrap(), 0);
        assert_eq!(index.count().unwrap(), 50);
    }

    fn outcome(queue_id: &str, outcome: &str) -> String {
        let mut r = record(queue_id, "jane@x");
        r["outcome"] = outcome.into();
        format!("{r}\n")
    }

    #[test]
    fn a_file_rewritten_shorter_under_the_index_is_indexed_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tracking-2026-11-24.jsonl");
        std::fs::write(&file, lines(10, 0)).unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        assert_eq!(index.catch_up().unwrap(), 10);
        // Restored from an older copy: three other records, shorter than the mark.
        std::fs::write(&file, lines(3, 100)).unwrap();
        assert_eq!(index.catch_up().unwrap(), 3);
        assert_eq!(index.count().unwrap(), 3);
        let all = index.search(&Query::default()).unwrap();
        assert!(all
            .iter()
            .all(|r| r.queue_id.as_deref() >= Some("0000000000000064")));
    }

    #[test]
    fn an_outcome_takes_a_new_row_id_so_follow_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tracking-2026-11-24.jsonl");
        std::fs::write(&file, outcome("A1", INTENT)).unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        index.catch_up().unwrap();
        let shown = index.last_row().unwrap();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(outcome("A1", "delivered").as_bytes()).unwrap();
        index.catch_up().unwrap();
        let after = Query {
            after: Some(shown),
            ..Query::default()
        };
        let new = index.search(&after).unwrap();
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0].outcome, "delivered");
    }

    #[test]
    fn a_catch_up_in_small_batches_indexes_what_one_batch_does() {
        let file = "tracking-2026-11-24.jsonl";
        let mut lines = [
            outcome("A1", INTENT),
            outcome("B2", INTENT),
            outcome("A1", "delivered"),
            outcome("C3", "delivered"),
        ]
        .concat();
        // A record still being written: never indexed, and no batch waits on it forever.
        lines.push_str("{\"time\":");
        let found = |batch: u64| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(file), &lines).unwrap();
            let mut index = Index::open(dir.path()).unwrap();
            index.catch_up_file_by(file, batch).unwrap();
            let mut all: Vec<_> = index
                .search(&Query::default())
                .unwrap()
                .into_iter()
                .map(|r| (r.queue_id, r.outcome))
                .collect();
            all.sort();
            (index.count().unwrap(), all)
        };
        let whole = found(u64::MAX);
        assert_eq!(whole.0, 3, "{whole:?}");
        // 1 and 40 bytes: every line is longer than a batch.
        for batch in [1, 40, lines.len() as u64 / 3, lines.len() as u64 - 5] {
            assert_eq!(found(batch), whole, "batch of {batch} bytes");
        }
    }

    #[test]
    fn an_intent_completed_in_the_same_batch_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = "tracking-2026-11-24.jsonl";
        let lines = [
            outcome("A1", INTENT),
            outcome("B2", INTENT),
            outcome("A1", "delivered"),
        ]
        .concat();
        std::fs::write(dir.path().join(file), lines).unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        assert_eq!(index.catch_up_file(file).unwrap(), 2);
        // A1's intent took no row: the two rows are B2's intent (still in flight) and A1's
        // outcome.
        assert_eq!((index.count().unwrap(), index.last_row().unwrap()), (2, 2));
        let all = index.search(&Query::default()).unwrap();
        let mut outcomes: Vec<_> = all.iter().map(|r| r.outcome.as_str()).collect();
        outcomes.sort();
        assert_eq!(outcomes, ["delivered", INTENT]);
        // B2's outcome in the next batch supersedes the intent written in the first.
        let mut more = std::fs::read(dir.path().join(file)).unwrap();
        more.extend_from_slice(outcome("B2", "delivered").as_bytes());
        std::fs::write(dir.path().join(file), more).unwrap();
        assert_eq!(index.catch_up_file(file).unwrap(), 1);
        let all = index.search(&Query::default()).unwrap();
        assert!(all.iter().all(|r| r.outcome == "delivered"), "{all:?}");
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn an_intent_indexed_after_its_outcome_stays_superseded() {
        let dir = tempfile::tempdir().unwrap();
        // Handed off before midnight, delivered after; yesterday's file indexed afresh
        // (after a redaction) once today's is in.
        std::fs::write(
            dir.path().join("tracking-2026-11-25.jsonl"),
            outcome("B2", "delivered"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tracking-2026-11-24.jsonl"),
            outcome("B2", INTENT),
        )
        .unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        index.catch_up_file("tracking-2026-11-25.jsonl").unwrap();
        index.reindex_file("tracking-2026-11-24.jsonl").unwrap();
        let all = index.search(&Query::default()).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].outcome, "delivered");
    }
}
