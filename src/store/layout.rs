//! Where a store keeps each of its parts (FORMAT.md, "Layout of STORE"), and what makes a
//! directory a store: its marker.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::disk::Disk;
use crate::error::{err, Error, Result};

pub const MARKER: &str = "recordfs.store";
pub(super) const LOCK: &str = "lock";

/// Paths of a store's parts. See FORMAT.md, "Layout of STORE".
#[derive(Clone, Debug)]
pub struct Layout {
    pub store: PathBuf,
}

impl Layout {
    pub fn new(store: &Path) -> Layout {
        Layout {
            store: store.to_owned(),
        }
    }
    pub fn marker(&self) -> PathBuf {
        self.store.join(MARKER)
    }
    pub fn log_dir(&self) -> PathBuf {
        self.store.join("log")
    }
    pub fn root(&self) -> PathBuf {
        self.store.join("root")
    }
    pub fn tmp(&self) -> PathBuf {
        self.store.join("tmp")
    }
    pub fn rejected(&self) -> PathBuf {
        self.store.join("rejected")
    }
    pub fn lost_found(&self) -> PathBuf {
        self.store.join("lost+found")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.store.join("daemon.log")
    }
    pub fn lock(&self) -> PathBuf {
        self.store.join(LOCK)
    }
    /// Where compaction retires old segments and snapshots.
    pub fn old_logs(&self) -> PathBuf {
        self.log_dir().join("old")
    }
    /// The backing file of a name in the root directory.
    /// The longest path (under the mount) whose backing file's path fits in PATH_MAX.
    pub fn max_path(&self) -> usize {
        (libc::PATH_MAX as usize - 1).saturating_sub(self.root().as_os_str().len() + 1)
    }

    pub fn backing(&self, name: &[u8]) -> PathBuf {
        self.root().join(OsStr::from_bytes(name))
    }
    /// The directories every store has (`log/old/` comes with the first compaction).
    pub fn dirs(&self) -> [PathBuf; 5] {
        [
            self.log_dir(),
            self.root(),
            self.tmp(),
            self.rejected(),
            self.lost_found(),
        ]
    }
    /// The files recordfs keeps for itself at the top of STORE.
    pub fn own_files(&self) -> [PathBuf; 3] {
        [self.marker(), self.lock(), self.daemon_log()]
    }
}

/// For the tools that read a store without opening it (`log`, `stats`): a directory that is
/// not a store is named as such, not as a missing log.
pub fn require_store(disk: &dyn Disk, layout: &Layout) -> Result<()> {
    match disk.stat(&layout.marker()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(err!(
            ENOENT,
            "{} is not a recordfs store (it has no {MARKER})",
            layout.store.display()
        )),
        Err(e) => Err(Error::io(
            format!("opening store {}", layout.store.display()),
            &e,
        )),
    }
}
