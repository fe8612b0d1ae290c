//! Compaction, offline: the log before a snapshot is retired, so the log stops growing with
//! the store's history.
//!
//! Order, each step durable before the next (FORMAT.md, "Compaction"):
//! 1. recover the store as a mount does, then make every backing file durable;
//! 2. write `log/<N>.snapshot`: names and attributes of the state after the last entry N;
//! 3. start segment N+1 (its header only, synced);
//! 4. write `log/MANIFEST` naming snapshot N and segment N+1: the commit point;
//! 5. move older segments and snapshots to `log/old/`, keeping the newest `keep` of each.
//!
//! A crash before step 4 leaves the old manifest (or none) in charge, and the new files change
//! nothing: without a manifest the empty segment N+1 simply continues the log. From step 4 on
//! the snapshot is in charge, and the old segments are history.

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::log::{commit_snapshot, list_segments, Compacted, LogWriter};
use crate::options::Options;
use crate::recovery;
use crate::store::{self, Layout};

/// Compacts a store that is not mounted (it takes the store's lock).
pub fn compact(disk: &dyn Disk, layout: &Layout, opts: &Options, keep: usize) -> Result<Compacted> {
    let rec = recovery::recover(disk, layout, opts)?;
    let log_dir = layout.log_dir();
    let upto = rec.ns.last_seq();
    let max_line = rec.log.max_line();
    drop(rec.log);

    // 1. Every backing file durable: after step 4 the log no longer holds their bytes.
    disk.sync_everything(&layout.root())
        .map_err(|e| Error::io("syncfs of the backing tree", &e))?;
    store::sync_dir(disk, &layout.root())?;

    // 3. The next segment (it may exist: an empty segment from an interrupted compaction).
    let next = upto + 1;
    if !list_segments(disk, &log_dir)?
        .iter()
        .any(|(s, _)| *s == next)
    {
        LogWriter::create(disk, &log_dir, next, max_line)?;
    }
    // 2, 4 and 5.
    commit_snapshot(disk, layout, &rec.ns.snapshot(), keep)
}
