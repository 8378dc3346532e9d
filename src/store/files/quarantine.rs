//! The quarantine store: each held message byte for byte (`ID.eml`) with its metadata
//! (`ID.json`) under `STATE/quarantine`. A message is stored durably before the client is
//! told 250: written to a temp name, fsync'd, renamed into place, directory fsync'd; the
//! metadata goes last, so a message is listed only once both files are whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::create_private_dir;
use crate::message::Spool;
use crate::store::{Claim as HeldClaim, HeldFilter, Meta, QuarantineStore};

pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    /// The quarantine in `dir` (the state dir's `quarantine/`).
    pub fn new(dir: &Path) -> Quarantine {
        Quarantine {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str, ext: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad quarantine id",
            ));
        }
        Ok(self.dir.join(format!("{id}.{ext}")))
    }

    /// Stores the message and its metadata durably; on error nothing is left behind.
    pub fn put(&self, spool: &Spool, mut meta: Meta) -> io::Result<()> {
        create_private_dir(&self.dir)?;
        let eml = self.path(&meta.id, "eml")?;
        let mut hasher = Sha256::new();
        write_atomic(&eml, |f| {
            spool.for_each_chunk(|chunk| {
                hasher.update(chunk);
                f.write_all(chunk)
            })
        })?;
        meta.sha256 = format!("{:x}", hasher.finalize());
        let json = serde_json::to_vec_pretty(&meta)?;
        if let Err(err) = write_atomic(&self.path(&meta.id, "json")?, |f| f.write_all(&json)) {
            let _ = std::fs::remove_file(&eml);
            return Err(err);
        }
        sync_dir(&self.dir)
    }

    pub fn get(&self, id: &str) -> io::Result<Meta> {
        let text = std::fs::read(self.path(id, "json")?)?;
        serde_json::from_slice(&text).map_err(io::Error::other)
    }

    /// The held message, byte for byte.
    pub fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id, "eml")?)
    }

    pub fn update(&self, meta: &Meta) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(meta)?;
        write_atomic(&self.path(&meta.id, "json")?, |f| f.write_all(&json))?;
        sync_dir(&self.dir)
    }

    /// All held messages, oldest first.
    pub fn list(&self) -> io::Result<Vec<Meta>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut out: Vec<Meta> = entries
            .flatten()
            // Not a write in progress (or one a crash left, cleared at start-up).
            .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Takes a held message for release, exactly once: its metadata is renamed to
    /// `ID.claim` (an atomic rename a second release loses), which also takes it off the
    /// list while it is sent. [`Claim::finish`] removes it once sent; dropping the claim
    /// unfinished (the send failed) puts it back.
    pub fn claim(&self, id: &str) -> io::Result<Claim<'_>> {
        let json = self.path(id, "json")?;
        let claim = self.path(id, "claim")?;
        match std::fs::rename(&json, &claim) {
            Ok(()) => {
                // A rename keeps the file's time: stamp the claim, so start-up recovery
                // (which restores claims over an hour old) sees when it was taken.
                let _ = File::options()
                    .write(true)
                    .open(&claim)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && claim.exists() => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{id} is being released by another command"),
                ))
            }
            Err(err) => return Err(err),
        }
        let meta = std::fs::read(&claim)
            .and_then(|b| serde_json::from_slice::<Meta>(&b).map_err(io::Error::other));
        match meta {
            Ok(meta) => Ok(Claim {
                quarantine: self,
                meta,
                done: false,
            }),
            Err(err) => {
                let _ = std::fs::rename(&claim, &json);
                Err(err)
            }
        }
    }

    /// Removes a message: metadata first, so a crash leaves at worst an unlisted body.
    pub fn delete(&self, id: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(id, "json")?)?;
        match std::fs::remove_file(self.path(id, "eml")?) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        sync_dir(&self.dir)
    }

    /// Deletes messages held since before `cutoff`; returns their ids.
    pub fn purge(&self, cutoff: SystemTime) -> io::Result<Vec<String>> {
        let cutoff = crate::timefmt::rfc3339(cutoff);
        let mut gone = Vec::new();
        for meta in self.list()? {
            if meta.time < cutoff {
                self.delete(&meta.id)?;
                gone.push(meta.id);
            }
        }
        Ok(gone)
    }

    /// Clears what a crash can leave: temp files from an interrupted write and message
    /// files whose metadata never landed (the client was never told 250 for those).
    pub fn recover(&self) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Only files markgate writes, by their names, and only regular files: never
            // something another program put here, never through a symlink.
            let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            let ours = |n: &str| {
                n.strip_suffix(".eml")
                    .or_else(|| n.strip_suffix(".json"))
                    .is_some_and(is_queue_id)
            };
            let temp = name.strip_prefix(".tmp-").is_some_and(ours);
            // A release interrupted long ago (a crash): held again. A recent one may still
            // be sending.
            let stale_claim = name.strip_suffix(".claim").is_some_and(is_queue_id)
                && std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
            if regular && stale_claim {
                std::fs::rename(&path, path.with_extension("json"))?;
                continue;
            }
            let orphan = name.ends_with(".eml")
                && ours(&name)
                && !path.with_extension("json").exists()
                && !path.with_extension("claim").exists();
            if regular && (temp || orphan) {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// How many messages are held and their bytes, from file names and sizes alone (no
    /// metadata is parsed), so a metrics scrape can afford it.
    pub fn usage(&self) -> (i64, i64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        let (mut n, mut bytes) = (0i64, 0i64);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_queue_id(id) {
                continue;
            }
            if let Ok(meta) = std::fs::metadata(self.dir.join(format!("{id}.eml"))) {
                n += 1;
                bytes += meta.len() as i64;
            }
        }
        (n, bytes)
    }
}

/// A held message taken for release (see [`Quarantine::claim`]).
pub struct Claim<'a> {
    quarantine: &'a Quarantine,
    pub meta: Meta,
    done: bool,
}

impl Claim<'_> {
    pub fn message(&self) -> io::Result<Vec<u8>> {
        self.quarantine.message(&self.meta.id)
    }

    /// Writes the claim's metadata (durably), e.g. that sending has begun.
    pub fn save(&self) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.meta)?;
        write_atomic(&self.quarantine.path(&self.meta.id, "claim")?, |f| {
            f.write_all(&json)
        })?;
        sync_dir(&self.quarantine.dir)
    }

    /// The message was sent: it leaves the quarantine.
    pub fn finish(mut self) -> io::Result<()> {
        self.done = true;
        let q = self.quarantine;
        std::fs::remove_file(q.path(&self.meta.id, "claim")?)?;
        match std::fs::remove_file(q.path(&self.meta.id, "eml")?) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        sync_dir(&q.dir)
    }
}

impl Drop for Claim<'_> {
    /// Not sent: the message is held again, as it was.
    fn drop(&mut self) {
        if !self.done {
            if let (Ok(claim), Ok(json)) = (
                self.quarantine.path(&self.meta.id, "claim"),
                self.quarantine.path(&self.meta.id, "json"),
            ) {
                let _ = std::fs::rename(claim, json);
            }
        }
    }
}

impl QuarantineStore for Quarantine {
    fn put(&self, message: &Spool, meta: Meta) -> io::Result<()> {
        Quarantine::put(self, message, meta)
    }
    fn get(&self, id: &str) -> io::Result<Meta> {
        Quarantine::get(self, id)
    }
    fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        Quarantine::message(self, id)
    }
    fn list(&self, filter: &HeldFilter) -> io::Result<Vec<Meta>> {
        let mut all: Vec<Meta> = Quarantine::list(self)?
            .into_iter()
            .filter(|m| filter.matches(m))
            .collect();
        if let Some(limit) = filter.limit {
            all.drain(..all.len().saturating_sub(limit));
        }
        Ok(all)
    }
    fn claim(&self, id: &str) -> io::Result<Box<dyn HeldClaim + '_>> {
        Ok(Box::new(Quarantine::claim(self, id)?))
    }
    fn usage(&self) -> (i64, i64) {
        Quarantine::usage(self)
    }
    fn recover(&self) -> io::Result<usize> {
        Quarantine::recover(self)
    }
}

impl HeldClaim for Claim<'_> {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }
    fn message(&self) -> io::Result<Vec<u8>> {
        Claim::message(self)
    }
    fn save(&self) -> io::Result<()> {
        Claim::save(self)
    }
    fn finish(self: Box<Self>, _done: &crate::store::Done) -> io::Result<()> {
        // The tracking record written beside it is the audit here.
        Claim::finish(*self)
    }
}

/// markgate's queue ids: 16 upper-case hex digits.
fn is_queue_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Writes `path` via a temp file in the same directory: fsync, then rename into place.
fn write_atomic(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("message");
    let tmp = dir.join(format!(".tmp-{name}"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .custom_flags(super::no_follow())
            .open(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, time: &str) -> Meta {
        Meta {
            id: id.into(),
            time: time.into(),
            client: Default::default(),
            sender: "a@b".into(),
            recipients: vec!["c@d".into()],
            subject: None,
            rule: Some("r".into()),
            reason: "held".into(),
            level: "UNMARKED".into(),
            marking: Default::default(),
            size: 5,
            sha256: String::new(),
            released: None,
            mta_queue_id: None,
        }
    }

    #[test]
    fn put_list_get_delete_purge() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(&dir.path().join("quarantine"));
        let spool = Spool::from_bytes(b"hello".to_vec());
        q.put(&spool, meta("A1", "2026-01-01T00:00:00Z")).unwrap();
        q.put(&spool, meta("B2", "2026-06-01T00:00:00Z")).unwrap();
        // A metadata write in progress is not a held message yet.
        std::fs::write(
            q.dir().join(".tmp-C3.json"),
            serde_json::to_vec(&meta("C3", "2026-07-01T00:00:00Z")).unwrap(),
        )
        .unwrap();
        let listed = q.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0].sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(q.message("A1").unwrap(), b"hello");
        let gone = q
            .purge(crate::timefmt::parse("2026-03-01").unwrap())
            .unwrap();
        assert_eq!(gone, vec!["A1".to_string()]);
        q.delete("B2").unwrap();
        assert!(q.list().unwrap().is_empty());
        assert!(q.get("../etc").is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(q.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
