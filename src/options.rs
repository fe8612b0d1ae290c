//! What a mount is told at start, and the limits that bound it.

use crate::limits::{DEFAULT_COMPACT_EVERY_SECS, DEFAULT_KEEP_LOGS, DEFAULT_MAX_FILE_SIZE};

/// When a commit is durable. See CONTRACT section 3 and README "Durability".
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// Every commit's syscall returns after the log is synced (group commit).
    Always,
    /// fsync/fdatasync of a file, or fsync of the directory, waits for the log sync.
    Fsync,
    /// Only a clean unmount syncs; a crash may lose recent commits, never tear one.
    Never,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub sync: SyncMode,
    pub max_file_size: u64,
    pub read_only: bool,
    /// Compact online once the live log segment passes this many bytes; by default
    /// (`None`) 1 MiB, or the last snapshot's size up to 8 MiB (`MAX_GROWN_LOG_LIMIT`).
    pub log_limit: Option<u64>,
    /// ... or this long after the last compaction, whichever comes first.
    pub compact_every: std::time::Duration,
    /// Old segments (and snapshots) kept in log/old/.
    pub keep_logs: usize,
    /// Mount a log damaged in the middle anyway, dropping the lines that cannot be used
    /// (`recovery::salvage`).
    pub salvage: bool,
    /// Read every backing file at mount to check its bytes, not only those the log names
    /// since its last checkpoint (`recovery::reconcile`).
    pub verify: bool,
    /// Serve a store that other users can reach (access.rs), knowingly, instead of refusing.
    pub allow_open_store: bool,
    /// Records may hold `NaN`, `Infinity` and `-Infinity` as numbers (record.rs).
    pub allow_nan: bool,
    /// A commit of a file of at least this many bytes logs the ranges it changed (`PATCH`)
    /// when they are less than half the file.
    pub patch_min: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Always,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            patch_min: crate::limits::PATCH_MIN,
            read_only: false,
            log_limit: None,
            compact_every: std::time::Duration::from_secs(DEFAULT_COMPACT_EVERY_SECS),
            keep_logs: DEFAULT_KEEP_LOGS,
            salvage: false,
            verify: false,
            allow_open_store: false,
            allow_nan: false,
        }
    }
}
