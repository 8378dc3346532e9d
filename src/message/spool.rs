//! Holds one message's bytes while it is being judged: in memory up to a threshold, then in
//! an unnamed temp file (0600, gone when dropped), so that memory per connection is bounded
//! whatever the message size (DESIGN invariant 6).
//!
//! The bytes are the message as the client meant it: dot-unstuffed, CRLF line endings,
//! ending with the last line's CRLF.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes read from a file-backed spool per step when streaming it out.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    len: u64,
    threshold: usize,
    dir: PathBuf,
}

impl Spool {
    /// A spool that moves to a temp file under `dir` once it holds more than `threshold` bytes.
    pub fn new(threshold: usize, dir: &Path) -> Spool {
        Spool {
            mem: Vec::new(),
            file: None,
            len: 0,
            threshold,
            dir: dir.to_path_buf(),
        }
    }

    /// A spool over bytes already in memory (classify, release, tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Spool {
        Spool {
            len: bytes.len() as u64,
            threshold: usize::MAX,
            mem: bytes,
            file: None,
            dir: PathBuf::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the message went to disk.
    pub fn is_spooled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends bytes; the move to disk happens here, transparently to the caller.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.file.is_none() && self.mem.len() + bytes.len() > self.threshold {
            {
                // The spool holds message bodies: readable by markgate alone.
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)?;
            }
            let mut file = tempfile::tempfile_in(&self.dir)?;
            file.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(bytes)?,
            None => self.mem.extend_from_slice(bytes),
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The whole message when it is in memory; `None` when it is on disk.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self.file {
            None => Some(&self.mem),
            Some(_) => None,
        }
    }

    /// Calls `f` with successive chunks of the message, without reading it whole.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        match &self.file {
            None => f(&self.mem),
            Some(file) => {
                let mut buf = vec![0u8; CHUNK];
                let mut offset = 0u64;
                while offset < self.len {
                    let n = file.read_at(&mut buf, offset)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "spool file shorter than written",
                        ));
                    }
                    f(&buf[..n])?;
                    offset += n as u64;
                }
                Ok(())
            }
        }
    }

    /// Reads `buf.len()` bytes (or fewer at the end) from `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match &self.file {
            None => {
                let start = (offset as usize).min(self.mem.len());
                let n = buf.len().min(self.mem.len() - start);
                buf[..n].copy_from_slice(&self.mem[start..start + n]);
                Ok(n)
            }
            Some(file) => file.read_at(buf, offset),
        }
    }

    /// Copies the message into `out` (quarantine, release).
    pub fn copy_to(&self, out: &mut impl Write) -> io::Result<()> {
        self.for_each_chunk(|chunk| out.write_all(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_message_stays_in_memory_and_large_one_goes_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(10, dir.path());
        spool.write(b"12345").unwrap();
        assert!(!spool.is_spooled());
        spool.write(b"6789012345").unwrap();
        assert!(spool.is_spooled());
        let mut out = Vec::new();
        spool.copy_to(&mut out).unwrap();
        assert_eq!(out, b"123456789012345");
        assert_eq!(spool.len(), 15);
        // The temp file is unnamed: nothing is left in the directory to leak or clean up.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
