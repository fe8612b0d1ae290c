//! Every limit recordfs keeps, with its reason: sizes, counts, queue depths, waits. A limit
//! is a constant here; the code that enforces it names it, and a test meets it at its edge
//! (README, "Limits").

use std::time::Duration;

// -------------------------------------------------------------------------------------------
// Files and names

/// The default for `--max-file-size`: 64 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 20;

/// `--max-file-size` may not exceed 1 GiB: the log holds a file's bytes in one line.
pub const MAX_MAX_FILE_SIZE: u64 = 1 << 30;

/// Longest name in a directory, as on Linux filesystems.
pub const NAME_MAX: usize = 255;

/// Longest symlink target, as PATH_MAX.
pub const SYMLINK_MAX: usize = 4096;

/// The deepest a record's arrays and objects may nest: the most serde_json reads by default
/// (its recursion limit, 128, counts the top level too), so that a program reading records
/// with it can read every record (README, Limits).
pub const MAX_JSON_DEPTH: usize = 127;

// -------------------------------------------------------------------------------------------
// The log

/// Everything in an entry but its data: names are at most 255 bytes, so 4 KiB is generous.
pub const ENTRY_OVERHEAD: usize = 4096;

/// A header line is small; this bounds reading it before its `max_line` is known.
pub const MAX_HEADER_LINE: usize = 4096;

/// The default for `--log-limit`: the live log is compacted once it passes 1 MiB, or the last
/// snapshot's size if that is more (`MAX_GROWN_LOG_LIMIT`).
pub const DEFAULT_LOG_LIMIT: u64 = 1 << 20;

/// Without `--log-limit`, the live log may grow to the last snapshot's size (with the layers
/// under it), up to this. A compaction wrote a whole snapshot (263 bytes a record) before
/// snapshot layers (`log::plan_layers`), so compacting after every MiB
/// logged made a growing store's cost quadratic: at 90,000 records a 24 MB snapshot per MiB,
/// and creating a million records would have written about 120 GB of snapshots. Grown with
/// the snapshot, a compaction writes at most as much as was logged since the last. Capped,
/// because after a crash the mount checks every backing file the live log names: a 20 MB tail
/// (25,000 rewrites) took 1.84 s to mount against 0.16 s (cold caches, 100,000 records).
pub const MAX_GROWN_LOG_LIMIT: u64 = 8 << 20;

/// Snapshots in the chain the manifest names, at most: a whole one and the layers over it
/// (`log::plan_layers`). Layers halve in size up the chain, so a million records changed a few
/// at a time make about 18; past this the newest ones are merged.
pub const MAX_SNAPSHOT_LAYERS: usize = 16;

/// A compaction writes a whole snapshot again once its layers would hold more than this
/// fraction (1/N) of the whole one's lines: a mount then decodes at most 1/N more lines than
/// the state holds.
pub const LAYERS_PER_WHOLE: u64 = 4;

/// The smallest `--log-limit`: a segment's header alone is about 130 bytes, and compacting
/// more often than every few entries only costs.
pub const MIN_LOG_LIMIT: u64 = 4096;

/// The default for `--compact-every`: an hour.
pub const DEFAULT_COMPACT_EVERY_SECS: u64 = 3600;

/// How many old segments `compact` keeps by default.
pub const DEFAULT_KEEP_LOGS: usize = 3;

/// The dropped lines a salvage names and keeps one by one; past it, a count per segment (a log
/// damaged throughout must not become a file and a log line per line).
pub const MAX_NAMED_DROPS: usize = 1000;

// -------------------------------------------------------------------------------------------
// Memory and handles

/// Bytes committed but not yet written to their backing files. Past it commits wait for the
/// backing tree to catch up (or fail with ENOSPC while it cannot).
pub const MAX_PENDING_BYTES: u64 = 256 << 20;

/// The most FUSE request threads `--threads` may ask for.
pub const MAX_THREADS: u16 = 64;

/// FUSE request threads without `--threads`. A thread that answers a request wakes its
/// caller, which often takes the thread's CPU at once: with as many threads as CPUs, requests
/// then wait with no thread reading them. With 8 against 2 (on 2 CPUs, one run, both orders,
/// 3 s rounds): 8 writers' durable creates +8 to +25%, updates +12 to +15%; 10,000 creates by
/// one process without durability 2.13 s against 2.62 s (means); one writer's durable updates
/// 2.6% slower (2,639/s against 2,712/s, within the rounds' spread), and 10,000 warm
/// open+read+close by one process 1.16 s against 1.06 s (each request wakes another thread).
pub const DEFAULT_THREADS: u16 = 8;

/// Open file handles at once; past it open answers ENFILE.
pub const MAX_HANDLES: usize = 65_536;

/// More distinct writing processes than this on one handle count as `unowned`.
pub const MAX_OWNERS: usize = 8;

/// How long a removed file can still be opened through a name the kernel had cached: more
/// than the entry TTL (1 s) the adapter gives the kernel.
pub const REMOVED_GRACE: Duration = Duration::from_secs(3);

/// The most removed files kept for `REMOVED_GRACE` at once.
pub const MAX_RECENTLY_REMOVED: usize = 1024;

/// How many rejected saves are kept; the oldest go first.
pub const MAX_REJECTED_KEPT: usize = 256;

// -------------------------------------------------------------------------------------------
// Writing back and compacting

/// How long the commit thread waits before trying again to write a backing file after the
/// disk was full.
pub const APPLY_RETRY: Duration = Duration::from_millis(100);

/// How long a synced entry waits before the apply thread writes its backing file. Within it,
/// a SET that a later SET of the same file supersedes is skipped: a create's empty file is
/// usually replaced by its content a millisecond later. Readers are served from `pending`
/// meanwhile, so this changes what reaches the disk, not what anyone sees.
pub const APPLY_DELAY: Duration = Duration::from_millis(20);

/// How many queued entries the apply thread looks ahead for one that makes the first moot
/// (`pipeline::apply::moot`): bounded, as the look is taken for every entry applied.
pub const MOOT_LOOKAHEAD: usize = 1024;

/// Log segments are written into space already zero-filled, up to this much ahead of the
/// lines (and at most a quarter of `--log-limit`, which bounds the live log on disk too): an
/// fdatasync after overwriting allocated blocks leaves the file's size alone and so does not
/// commit the filesystem's journal (on ext4 here: 0.31 ms against 0.95 ms after an append);
/// a size change then comes once per this many bytes. An all-zero tail is free space to the
/// readers (FORMAT.md, "The log").
pub const LOG_PREALLOC: u64 = 64 << 10;

/// The longest a sync waits for a batch to form (see `run_sync`).
pub const MAX_LINGER: Duration = Duration::from_millis(2);

/// Entries no caller waits for (`--sync never`, `--sync fsync` before its fsync, a create
/// before its close) ride with the next sync someone waits for, or are synced this long after
/// they were logged: the most a crash can take of commits nobody was told were durable.
pub const SYNC_RIDE: Duration = Duration::from_millis(50);

/// How long the compaction thread waits after a failed compaction before trying again.
pub const COMPACT_RETRY: Duration = Duration::from_secs(5);

/// Backing files written back (fsynced) in the background once this many are owed ...
pub const WRITEBACK_BATCH: usize = 1024;

/// ... or this long after the last write-back, whichever comes first.
pub const WRITEBACK_EVERY: Duration = Duration::from_secs(5);

/// Names one file may have: one more is EMLINK. Fewer than ext4's 65,000, because each name
/// holds its own copy of the bytes in the backing tree and every save writes them under each.
pub const MAX_LINKS: usize = 1024;

/// A directory moved between directories takes the bytes of the files under it into the
/// live log (FORMAT.md, the relog rule), for a disk that may lose both its names in a crash;
/// past this many bytes or files that are not there yet, the move answers EXDEV, and `mv`
/// copies and removes instead, as between filesystems.
pub const MAX_RELOG_BYTES: u64 = 64 << 20;
pub const MAX_RELOG_FILES: usize = 10_000;

/// How often a reader checks a backing file's bytes again when commits of the file keep
/// coming while it reads them (`Pipeline::version`); after that, EAGAIN.
pub const MAX_VERIFY_TRIES: usize = 8;

/// Threads that decode a snapshot's lines at mount, at most (one per core, up to this), and
/// the fewest lines worth a thread of their own.
pub const SNAPSHOT_DECODE_THREADS: usize = 8;
pub const SNAPSHOT_DECODE_RUN: usize = 16_384;

/// Extended attributes, as Linux bounds them: a name (XATTR_NAME_MAX), a value
/// (XATTR_SIZE_MAX), and all of one file's names and values together (ext4 and tmpfs keep
/// less or about as much; past it setxattr answers ENOSPC, as ext4 does when a file's are full).
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_VALUE_MAX: usize = 64 << 10;
pub const XATTR_TOTAL_MAX: usize = 64 << 10;

/// More files than this owed a sync are synced by one syncfs instead of an fsync each.
pub const SYNCFS_ABOVE: usize = 256;

// -------------------------------------------------------------------------------------------
// Waits

/// How long a refused first save waits for the kernel to forget the name it removes.
pub const FORGET_WAIT: Duration = Duration::from_secs(1);

/// How long an online compaction waits for the sync thread to make the old segment's last
/// entries durable before it switches segments; past it (commits that keep coming), it syncs
/// the rest itself, holding the log writer: commits wait for that sync, lookups do not. A few
/// log syncs.
pub const TAIL_SYNC_WAIT: Duration = Duration::from_millis(50);

/// How long a mount waits for the daemon of its store to finish unmounting.
pub const UNMOUNT_WAIT: std::time::Duration = Duration::from_secs(60);

/// How long a stop waits for a busy mount point to come free before detaching it.
pub const UNMOUNT_GRACE: Duration = Duration::from_secs(5);

// -------------------------------------------------------------------------------------------
// Reports

/// How many paths a refusal names one by one; the rest are counted.
pub const MAX_NAMED: usize = 8;

// -------------------------------------------------------------------------------------------
// Log lines

/// The longest line an entry with `max_file_size` bytes of data can need: base64 is 4/3 of the
/// data and the utf8 encoding is chosen only when it at most doubles it.
pub const fn max_line_for(max_file_size: u64) -> u64 {
    max_file_size * 2 + ENTRY_OVERHEAD as u64
}

/// The longest line any writer may write: the bound for reading a segment whose header (and
/// so its own bound) is unreadable.
pub const LONGEST_LINE: u64 = max_line_for(MAX_MAX_FILE_SIZE);

/// Tokens of backing files held open by readers (`State::readers`) are pruned of those no
/// reader holds any more once there are this many.
pub const READERS_PRUNE_ABOVE: usize = 4096;

/// Plain files of at least this many bytes commit the ranges a save changed (`PATCH`), not
/// their whole bytes; smaller ones keep a whole version per save in the log, as records
/// always do (the JSON rule reads them whole). A page: SQLite's rollback journal (a header and
/// a few pages) then logs its second sync's change of the header, not itself again.
pub const PATCH_MIN: u64 = 4 * 1024;

/// A writer keeps at most this many separate changed ranges; past it the two closest merge.
pub const MAX_EXTENTS: usize = 64;

/// A writer keeps at most this many written bytes over a file it has not read
/// (`view::Overlay`), in at most this many extents; past either, it reads the file whole.
pub const MAX_OVERLAY_BYTES: u64 = 8 << 20;
pub const MAX_OVERLAY_EXTENTS: usize = 1024;

/// An overlay's extent grows by appends up to this size; past it a new one begins (so that
/// an append after a commit, which shares the extents, copies at most this much).
pub const OVERLAY_PIECE: usize = 64 << 10;
