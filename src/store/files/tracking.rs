//! The message-tracking log: one JSON object per line per transaction, in daily files
//! (`tracking-YYYY-MM-DD.jsonl`) under the state dir, kept for the retention period (CJSM:
//! one year). A record is written before the final reply; if it cannot be, the transaction
//! fails closed with 451 (DESIGN invariants 2 and 3).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::index::{Index, IndexError, Query};
use super::{check_room, create_private_dir, no_follow};
use crate::store::record::{supersede_intents, TrackingRecord};
use crate::store::{AddressMatch, Redacted, TrackingStore};
use crate::timefmt;

/// The shortest time between two passes of the indexer. Under load a pass catches up about
/// a second of records, in transactions bounded in memory by the index's batch size.
/// Passes every 50 ms cost the gateway a sixth of its pass-path rate in the benchmark with
/// the indexer's own CPU unchanged: its short, frequent bursts took a core just when the
/// sessions and their peers needed it (the idle scheduling class for the thread recovered
/// the rate; nice 10 did not; bench/RESULTS.md, thirteenth session). The idle class is
/// not used: a starved indexer holding SQLite's write lock would stall a search. A search
/// never waits for a pass (it catches up itself), so readers see the same records.
const INDEX_INTERVAL: Duration = Duration::from_millis(1000);

pub struct Tracking {
    dir: PathBuf,
    retention: Duration,
    /// Today's day and its file.
    current: Mutex<Option<(String, File)>>,
    index: Mutex<Option<Index>>,
    /// Wakes the indexer thread (started on the first append) to catch the index up.
    indexer: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl Tracking {
    /// The tracking log in `dir` (the state dir's `tracking/`).
    pub fn new(dir: &Path, retention_days: u64) -> Tracking {
        Tracking {
            dir: dir.to_path_buf(),
            retention: Duration::from_secs(retention_days * 86_400),
            current: Mutex::new(None),
            index: Mutex::new(None),
            indexer: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record to the file of `now`'s day. Returns once the line has been
    /// handed to the kernel in one write: the JSONL line is the record. The index follows
    /// off this path: the indexer thread is woken to catch up (one transaction for
    /// whatever has been appended meanwhile, shared by every session), and a search
    /// catches up before it reads, so it never misses a record written before it.
    pub fn append_value(&self, record: &serde_json::Value, now: SystemTime) -> io::Result<()> {
        self.append_line(serde_json::to_vec(record)?, now)
    }

    fn append_line(&self, line: Vec<u8>, now: SystemTime) -> io::Result<()> {
        self.write_line(line, now)?;
        self.wake_indexer();
        Ok(())
    }

    /// Wakes (starting it the first time) the thread that catches the index up.
    fn wake_indexer(&self) {
        let mut guard = self.indexer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = guard.as_ref() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("tracking-indexer".into())
            .spawn(move || {
                let mut index: Option<Index> = None;
                while rx.recv().is_ok() {
                    // Whatever arrived meanwhile is caught up in the same pass.
                    while rx.try_recv().is_ok() {}
                    let caught_up = match index.as_mut() {
                        Some(i) => i.catch_up(),
                        None => Index::open(&dir).and_then(|mut i| {
                            let n = i.catch_up();
                            index = Some(i);
                            n
                        }),
                    };
                    if let Err(err) = caught_up {
                        // The records are in the files; the next pass or search retries.
                        tracing::warn!(error = %err, "tracking index not caught up yet");
                        index = None;
                    }
                    // At most one pass per interval: under load a pass takes hundreds of
                    // records in one transaction. (A search never waits for this: it
                    // catches up itself.)
                    std::thread::sleep(INDEX_INTERVAL);
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(());
                *guard = Some(tx);
            }
            Err(err) => {
                tracing::warn!(error = %err, "tracking indexer not started; searches catch up")
            }
        }
    }

    fn with_index<T>(
        &self,
        f: impl FnOnce(&mut Index) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let mut guard = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(Index::open(&self.dir)?);
        }
        match guard.as_mut() {
            Some(index) => f(index),
            None => Err(IndexError::Io(io::Error::other("index not open"))),
        }
    }

    /// Records matching `q`, from the index, caught up first.
    pub fn search_records(&self, q: &Query) -> Result<Vec<TrackingRecord>, IndexError> {
        self.with_index(|index| {
            index.catch_up()?;
            index.search(q)
        })
    }

    /// Whether there is anything to search: with no tracking file yet there is nothing
    /// to find, and a search creates nothing.
    fn anything(&self) -> Result<bool, IndexError> {
        // An index means something was tracked; only without one is the directory listed
        // (the catch-up that follows lists it anyway).
        Ok(self.dir.join("index.sqlite").is_file()
            || !super::index::tracking_files(&self.dir)?.is_empty())
    }

    /// Like `search`, but creates nothing where nothing was ever tracked.
    pub fn search_existing(&self, q: &Query) -> Result<Vec<TrackingRecord>, IndexError> {
        if !self.anything()? {
            return Ok(Vec::new());
        }
        self.search_records(q)
    }

    /// Like `search_existing`, with row ids (for `--follow`).
    pub fn search_rows_existing(
        &self,
        q: &Query,
    ) -> Result<Vec<(i64, TrackingRecord)>, IndexError> {
        if !self.anything()? {
            return Ok(Vec::new());
        }
        self.with_index(|index| {
            index.catch_up()?;
            index.search_rows(q)
        })
    }

    /// The newest indexed row (0 when nothing was ever tracked).
    pub fn last_row(&self) -> Result<i64, IndexError> {
        if !self.anything()? {
            return Ok(0);
        }
        self.with_index(|index| {
            index.catch_up()?;
            index.last_row()
        })
    }

    /// Re-indexes one rewritten tracking file.
    pub fn reindex_file(&self, name: &str) -> Result<(), IndexError> {
        self.with_index(|index| index.reindex_file(name))
    }

    /// Rebuilds the index from the JSONL files.
    pub fn reindex(&self) -> Result<usize, IndexError> {
        self.with_index(|index| index.rebuild())
    }

    fn write_line(&self, mut line: Vec<u8>, now: SystemTime) -> io::Result<()> {
        line.push(b'\n');
        let day = timefmt::date(now);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_none_or(|(d, _)| *d != day) {
            create_private_dir(&self.dir)?;
            let path = path_of(&self.dir, &day);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(no_follow())
                .open(path)?;
            if file.metadata()?.len() > 0 && !ends_with_newline(&path_of(&self.dir, &day))? {
                // A file restored from a copy taken mid-write ends in part of a line: end it
                // there, so the next record starts a line of its own (the part is skipped
                // when read; the copy's source holds the whole record).
                file.write_all(b"\n")?;
            }
            *current = Some((day, file));
        }
        let Some((_, file)) = current.as_mut() else {
            return Err(io::Error::other("tracking file not open"));
        };
        // Writers in other processes (a `quarantine release`) take the same lock, so a
        // failed write cut back by what it wrote never takes another writer's record with
        // it. A record costs the lock, one write and the unlock: where it landed is only
        // asked when a write fails.
        let written = rustix::fs::flock(&*file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(io::Error::from)
            .and_then(|_| append_whole(file, &line));
        let _ = rustix::fs::flock(&*file, rustix::fs::FlockOperation::Unlock);
        if written.is_err() {
            // Reopen next time: the file may have been rotated away or the disk freed.
            *current = None;
        }
        written
    }

    /// Checks, before a message is handed on, that its record will have room: the tracking
    /// file system is writable and has at least 1 MiB free. A pass whose record then failed
    /// would be delivered yet answered 451 (a duplicate on retry); this makes that a
    /// race with the disk filling in between, not the normal way a full disk shows.
    pub fn preflight(&self) -> io::Result<()> {
        match check_room(&self.dir) {
            // Not made yet (the first message, or the directory was removed): make it.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                create_private_dir(&self.dir)?;
                check_room(&self.dir)
            }
            other => other,
        }
    }

    /// Deletes daily files older than the retention; returns how many went.
    pub fn expire(&self, now: SystemTime) -> io::Result<usize> {
        let cutoff = timefmt::date(
            now.checked_sub(self.retention)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let mut removed = 0;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(day) = name
                .to_str()
                .and_then(|n| n.strip_prefix("tracking-"))
                .and_then(|n| n.strip_suffix(".jsonl"))
            else {
                continue;
            };
            if day < cutoff.as_str() {
                let name = format!("tracking-{day}.jsonl");
                std::fs::remove_file(entry.path())?;
                if let Err(err) = self.with_index(|index| index.forget_file(&name)) {
                    tracing::warn!(error = %err, "tracking index not pruned");
                }
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every line as a value, oldest file first.
    pub fn record_values(&self) -> io::Result<Vec<serde_json::Value>> {
        self.all_lines()
    }

    /// Every line as written.
    fn all_lines(&self) -> io::Result<Vec<serde_json::Value>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        files.sort();
        let mut out = Vec::new();
        for path in files {
            let reader = io::BufReader::new(File::open(&path)?);
            for line in reader.lines() {
                let line = line?;
                if let Ok(value) = serde_json::from_str(&line) {
                    out.push(value);
                }
            }
        }
        Ok(out)
    }
}

fn typed(value: serde_json::Value) -> TrackingRecord {
    // Every field has a default: a line of an older shape still reads.
    serde_json::from_value(value).unwrap_or_default()
}

/// Appends `line` to `file` (opened with O_APPEND, under the writers' lock) whole or not at
/// all: a full disk can take part of the line, which is then cut off again (shrinking needs
/// no room), so the file never holds half a record.
fn append_whole(file: &mut File, line: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < line.len() {
        match file.write(&line[written..]) {
            Ok(0) => {
                return cut_back(file, written, io::ErrorKind::WriteZero.into());
            }
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return cut_back(file, written, err),
        }
    }
    Ok(())
}

/// Removes the `written` bytes of a failed record from the end of `file`, then returns `err`.
fn cut_back(file: &mut File, written: usize, err: io::Error) -> io::Result<()> {
    if written > 0 {
        use std::io::Seek;
        // With O_APPEND the position is the end of what this write put there.
        if let Ok(end) = file.stream_position() {
            let _ = file.set_len(end.saturating_sub(written as u64));
        }
    }
    Err(err)
}

impl TrackingStore for Tracking {
    fn append(&self, record: &TrackingRecord, now: SystemTime) -> io::Result<()> {
        // Serialized once, straight from the type.
        self.append_line(serde_json::to_vec(record)?, now)
    }
    fn preflight(&self) -> io::Result<()> {
        Tracking::preflight(self)
    }
    fn search(&self, q: &Query) -> Result<Vec<TrackingRecord>, IndexError> {
        self.search_existing(q)
    }
    fn search_rows(&self, q: &Query) -> Result<Vec<(i64, TrackingRecord)>, IndexError> {
        self.search_rows_existing(q)
    }
    fn last_row(&self) -> Result<i64, IndexError> {
        Tracking::last_row(self)
    }
    fn purge_older_than(&self, now: SystemTime) -> io::Result<usize> {
        self.expire(now)
    }
    fn reindex(&self) -> Result<usize, IndexError> {
        Tracking::reindex(self)
    }
    fn records(&self) -> io::Result<Vec<TrackingRecord>> {
        Ok(supersede_intents(
            self.all_lines()?.into_iter().map(typed).collect(),
        ))
    }
    fn redact(
        &self,
        address: &str,
        before_day: &str,
        today: &str,
        holds: &[AddressMatch],
    ) -> io::Result<Redacted> {
        super::privacy::redact(self, address, before_day, today, holds)
    }
}

fn path_of(dir: &Path, day: &str) -> PathBuf {
    dir.join(format!("tracking-{day}.jsonl"))
}

/// Whether the file's last byte is a line end.
fn ends_with_newline(path: &Path) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.seek(SeekFrom::End(-1)).is_err() {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_restored_mid_line_gets_its_next_record_on_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = Tracking::new(&dir.path().join("tracking"), 365);
        t.append_value(&serde_json::json!({"n": 1}), start).unwrap();
        let path = path_of(t.dir(), &timefmt::date(start));
        // The copy: a whole record and part of the next.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"n\": 2, \"cut");
        std::fs::write(&path, text).unwrap();
        let restarted = Tracking::new(&dir.path().join("tracking"), 365);
        restarted
            .append_value(&serde_json::json!({"n": 3}), start)
            .unwrap();
        assert_eq!(
            restarted.record_values().unwrap(),
            vec![serde_json::json!({"n": 1}), serde_json::json!({"n": 3})]
        );
    }

    #[test]
    fn records_rotate_daily_and_expire_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracking::new(&dir.path().join("tracking"), 365);
        let day = Duration::from_secs(86_400);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        t.append_value(&serde_json::json!({"n": 1}), start).unwrap();
        t.append_value(&serde_json::json!({"n": 2}), start + day)
            .unwrap();
        t.append_value(&serde_json::json!({"n": 3}), start + day * 400)
            .unwrap();
        let jsonl = |t: &Tracking| {
            std::fs::read_dir(t.dir())
                .unwrap()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
                .count()
        };
        assert_eq!(jsonl(&t), 3);
        assert_eq!(t.search_records(&Query::default()).unwrap().len(), 3);
        assert_eq!(t.expire(start + day * 400).unwrap(), 2);
        let left = t.record_values().unwrap();
        assert_eq!(left, vec![serde_json::json!({"n": 3})]);
        assert_eq!(
            t.search_records(&Query::default()).unwrap().len(),
            left.len(),
            "index pruned too"
        );
    }
}
