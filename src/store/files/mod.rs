//! The default store, for one machine: held messages as files (`quarantine.rs`), the
//! tracking log as daily JSONL files (`tracking.rs`) with a SQLite index over them
//! (`index.rs`), and the privacy duties over those files (`privacy.rs`), all under the
//! state dir, which this module alone knows the layout of:
//!
//! ```text
//! STATE/            0700, markgate's own
//!   quarantine/     ID.eml + ID.json (ID.claim while being released)
//!   tracking/       tracking-YYYY-MM-DD.jsonl, index.sqlite, redaction.key
//!   spool/          messages over the spool threshold while they are received
//! ```

pub mod index;
pub mod privacy;
pub mod quarantine;
pub mod tracking;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use quarantine::Quarantine;
pub use tracking::Tracking;

use super::{Access, Exported};

/// The state dir and the two stores in it.
pub struct Files {
    dir: PathBuf,
    spool: PathBuf,
    pub(crate) quarantine: Arc<Quarantine>,
    pub(crate) tracking: Arc<Tracking>,
}

impl Files {
    pub fn new(state_dir: &Path, retention_days: u64) -> Files {
        Files {
            dir: state_dir.to_path_buf(),
            spool: state_dir.join("spool"),
            quarantine: Arc::new(Quarantine::new(&state_dir.join("quarantine"))),
            tracking: Arc::new(Tracking::new(&state_dir.join("tracking"), retention_days)),
        }
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool
    }

    pub fn describe(&self) -> String {
        format!("state dir {}", self.dir.display())
    }

    pub fn export(&self, address: &str, since: Option<&str>, out: &Path) -> io::Result<Exported> {
        privacy::export(&self.tracking, &self.quarantine, address, since, out)
    }

    /// Start-up's check: the state dir and each subdirectory that exists must be
    /// markgate's own private directories (not symlinks, not shared). `create` makes a
    /// missing state dir; without it a missing one needs only a parent to be made in.
    pub fn prepare(state: &Path, create: bool) -> anyhow::Result<()> {
        if create {
            create_private_dir(state)
                .map_err(|e| anyhow::anyhow!("state dir {}: {e}", state.display()))?;
        } else if std::fs::symlink_metadata(state).is_err() {
            let parent = state
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                anyhow::bail!(
                    "state dir {}: it does not exist, and neither does {} to make it in",
                    state.display(),
                    parent.display()
                );
            }
            return Ok(());
        }
        for sub in ["", "tracking", "quarantine", "spool"] {
            let dir = state.join(sub);
            if sub.is_empty() || std::fs::symlink_metadata(&dir).is_ok() {
                verify_private_dir(&dir).map_err(|e| anyhow::anyhow!("state dir: {e}"))?;
            }
        }
        Ok(())
    }

    /// What the gateway checks before each hand-off, for `/readyz`: the state dir takes a
    /// file and the tracking file system is above its free-space floor.
    pub fn ready(&self) -> bool {
        let tracking = self.tracking.dir();
        let probe = if tracking.is_dir() {
            tracking
        } else {
            self.dir.as_path()
        };
        tempfile::tempfile_in(&self.dir).is_ok() && check_room(probe).is_ok()
    }

    /// The state dir belongs to whoever runs the service. A command run as anyone else
    /// (root, typically) could leave files the service cannot write (a root-owned
    /// `tracking/` made every later message 451 after delivery), so it is refused, saying
    /// how to run it; a read-only command never creates anything, so an absent state dir
    /// is simply empty.
    pub fn check_access(dir: &Path, access: Access) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::symlink_metadata(dir) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return match access {
                    Access::Read => Ok(()),
                    Access::Write => Err(anyhow::anyhow!(
                        "state dir {} does not exist; start markgate (serve or milter) first",
                        dir.display()
                    )),
                };
            }
            Err(err) => return Err(anyhow::anyhow!("state dir {}: {err}", dir.display())),
        };
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            anyhow::bail!(
                "state dir {} belongs to uid {} and this command runs as uid {me}; run it as \
                 the service's user (e.g. `sudo -u {} markgate …`) so that nothing it writes \
                 is owned by anyone else",
                dir.display(),
                meta.uid(),
                user_name(meta.uid()).unwrap_or_else(|| format!("#{}", meta.uid())),
            );
        }
        Ok(())
    }
}

/// The login name of `uid` from /etc/passwd, for a message.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// The file system holding `dir` is writable and has at least [`FREE_FLOOR`] free: what
/// the gateway checks before each hand-off and `/readyz` reports.
pub fn check_room(dir: &Path) -> io::Result<()> {
    let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(io::Error::new(
            io::ErrorKind::ReadOnlyFilesystem,
            "state dir is read-only",
        ));
    }
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < FREE_FLOOR {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "state dir has under 1 MiB free",
        ));
    }
    Ok(())
}

/// Free space below which messages are deferred rather than handed on.
pub const FREE_FLOOR: u64 = 1024 * 1024;

/// `O_NOFOLLOW` for state files: a symlink planted where markgate keeps a file is refused,
/// never written through.
pub fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Checks a state directory markgate found rather than made: a real directory (not a
/// symlink), owned by the user markgate runs as, with no group or other permissions.
/// Anything else is refused: markgate would be writing held mail and tracking records
/// where someone else can read or redirect them.
pub fn verify_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let problem = if meta.file_type().is_symlink() {
        Some("is a symlink".to_string())
    } else if !meta.is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != me {
        Some(format!(
            "belongs to uid {}, not to uid {me} that markgate runs as",
            meta.uid()
        ))
    } else if meta.mode() & 0o7077 != 0 {
        Some(format!("has mode {:o}, not 0700", meta.mode() & 0o7777))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} {problem}; it must be a directory owned by the markgate user with mode 0700",
                dir.display()
            ),
        )),
    }
}

/// Creates a directory (and parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
