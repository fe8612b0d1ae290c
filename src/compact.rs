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

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::log::{self, list_segments, LogWriter, Manifest, Seq};
use crate::options::Options;
use crate::recovery;
use crate::store::{self, Layout};

/// How many old segments `compact` keeps by default.
pub const DEFAULT_KEEP_LOGS: usize = 3;

#[derive(Debug, PartialEq, Eq)]
pub struct Compacted {
    /// The snapshot holds the state after this entry.
    pub upto: Seq,
    /// Segments moved to `log/old/` now.
    pub retired: usize,
    /// Old segments and snapshots deleted beyond `keep`.
    pub deleted: usize,
}

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

/// Steps 2, 4 and 5: writes the snapshot, then the manifest naming it and segment `upto + 1`
/// (which must exist), then retires what came before. The backing files must be durable.
pub fn commit_snapshot(
    disk: &dyn Disk,
    layout: &Layout,
    snapshot: &log::Snapshot,
    keep: usize,
) -> Result<Compacted> {
    let log_dir = layout.log_dir();
    let upto = snapshot.upto;
    let next = upto + 1;
    let snap = log_dir.join(log::snapshot_name(upto));
    let tmp = layout.tmp().join("snapshot");
    store::replace_file(
        disk,
        &tmp,
        &snap,
        &log::encode_snapshot(snapshot),
        None,
        true,
    )?;

    // 4. The commit point.
    let manifest = Manifest {
        snapshot: upto,
        first_segment: next,
    };
    let tmp = layout.tmp().join("manifest");
    store::replace_file(
        disk,
        &tmp,
        &log_dir.join(log::MANIFEST),
        &log::encode_manifest(&manifest),
        None,
        true,
    )?;

    // 5. Retire what came before; keep the newest `keep` old segments and snapshots.
    let old = layout.old_logs();
    if disk.stat(&old).is_err() {
        disk.create_dir(&old)
            .map_err(|e| Error::io(format!("creating {}", old.display()), &e))?;
    }
    let mut retired = 0;
    for name in disk
        .list(&log_dir)
        .map_err(|e| Error::io("listing the log", &e))?
    {
        let Some(seq) = history_seq(&name) else {
            continue;
        };
        if seq < next && !(name.ends_with(b".snapshot") && seq == upto) {
            let from = log_dir.join(OsStr::from_bytes(&name));
            store::rename(disk, &from, &old.join(OsStr::from_bytes(&name)))?;
            retired += usize::from(name.ends_with(b".log"));
        }
    }
    store::sync_dir(disk, &old)?;
    store::sync_dir(disk, &log_dir)?;
    let mut deleted = 0;
    for suffix in [".log", ".snapshot"] {
        let mut kept: Vec<(Seq, Vec<u8>)> = disk
            .list(&old)
            .map_err(|e| Error::io("listing old logs", &e))?
            .into_iter()
            .filter(|n| n.ends_with(suffix.as_bytes()))
            .filter_map(|n| Some((history_seq(&n)?, n)))
            .collect();
        kept.sort();
        let excess = kept.len().saturating_sub(keep);
        for (_, name) in &kept[..excess] {
            store::remove(disk, &old.join(OsStr::from_bytes(name)))?;
            deleted += 1;
        }
    }
    store::sync_dir(disk, &old)?;
    Ok(Compacted {
        upto,
        retired,
        deleted,
    })
}

/// The sequence number naming a segment (`<seq>.log`) or a snapshot (`<seq>.snapshot`).
fn history_seq(name: &[u8]) -> Option<Seq> {
    let name = std::str::from_utf8(name).ok()?;
    log::parse_segment_name(name).or_else(|| log::parse_snapshot_name(name))
}

/// The old segments kept in `log/old/`, oldest first.
pub fn old_segments(disk: &dyn Disk, layout: &Layout) -> Result<Vec<(Seq, std::path::PathBuf)>> {
    match disk.stat(&layout.old_logs()) {
        Ok(_) => list_segments(disk, &layout.old_logs()),
        Err(_) => Ok(Vec::new()),
    }
}
