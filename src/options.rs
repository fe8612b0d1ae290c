//! What a mount is told at start, and the limits that bound it.

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

/// The default for `--max-file-size`: 64 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 20;
/// `--max-file-size` may not exceed 1 GiB: the log holds a file's bytes in one line.
pub const MAX_MAX_FILE_SIZE: u64 = 1 << 30;
/// Longest name in a directory, as on Linux filesystems.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, as PATH_MAX.
pub const SYMLINK_MAX: usize = 4096;
/// Bytes committed but not yet written to their backing files. Past it commits wait for the
/// backing tree to catch up (or fail with ENOSPC while it cannot).
pub const MAX_PENDING_BYTES: u64 = 256 << 20;
/// Open file handles at once; past it open answers ENFILE.
pub const MAX_HANDLES: usize = 65_536;

/// The default for `--log-limit`: the live log is compacted once it passes 1 MiB.
pub const DEFAULT_LOG_LIMIT: u64 = 1 << 20;
/// The smallest `--log-limit`: a segment's header alone is about 130 bytes, and compacting
/// more often than every few entries only costs.
pub const MIN_LOG_LIMIT: u64 = 4096;
/// The default for `--compact-every`: an hour.
pub const DEFAULT_COMPACT_EVERY_SECS: u64 = 3600;

#[derive(Clone, Debug)]
pub struct Options {
    pub sync: SyncMode,
    pub max_file_size: u64,
    pub read_only: bool,
    /// Compact online once the live log segment passes this many bytes.
    pub log_limit: u64,
    /// ... or this long after the last compaction, whichever comes first.
    pub compact_every: std::time::Duration,
    /// Old segments (and snapshots) kept in log/old/.
    pub keep_logs: usize,
    /// Mount a log damaged in the middle anyway, dropping the lines that cannot be used
    /// (`recovery::salvage`).
    pub salvage: bool,
    /// Serve a store that other users can reach (access.rs), knowingly, instead of refusing.
    pub allow_open_store: bool,
    /// Records may hold `NaN`, `Infinity` and `-Infinity` as numbers (record.rs).
    pub allow_nan: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Always,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            read_only: false,
            log_limit: DEFAULT_LOG_LIMIT,
            compact_every: std::time::Duration::from_secs(DEFAULT_COMPACT_EVERY_SECS),
            keep_logs: crate::compact::DEFAULT_KEEP_LOGS,
            salvage: false,
            allow_open_store: false,
            allow_nan: false,
        }
    }
}
