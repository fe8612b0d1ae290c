//! Retiring the log before a snapshot: steps 2, 4 and 5 of a compaction (FORMAT.md,
//! "Compaction"), shared by offline compaction, the online compactor and salvage.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::store::{self, Layout};
use crate::types::Seq;

use super::layers::{check_chain, Layer};
use super::merge::{write_merged_snapshot, SnapshotDelta};
use super::segment::{list_segments, parse_segment_name, parse_snapshot_name};
use super::snapshot::{
    encode_manifest, encode_snapshot, snapshot_name, Manifest, Snapshot, MANIFEST,
};

#[derive(Debug, PartialEq, Eq)]
pub struct Compacted {
    /// The snapshot holds the state after this entry.
    pub upto: Seq,
    /// Segments moved to `log/old/` now.
    pub retired: usize,
    /// Old segments and snapshots deleted beyond `keep`.
    pub deleted: usize,
    /// The snapshot's size.
    pub bytes: u64,
    /// The snapshots the manifest's stands on, whole one first, and itself last.
    pub chain: Vec<Layer>,
}

/// Steps 2, 4 and 5: writes the snapshot, then the manifest naming it and segment `upto + 1`
/// (which must exist), then retires what came before. The backing files must be durable.
pub fn commit_snapshot(
    disk: &dyn Disk,
    layout: &Layout,
    snapshot: &Snapshot,
    keep: usize,
) -> Result<Compacted> {
    let snap = layout.log_dir().join(snapshot_name(snapshot.upto));
    let tmp = layout.tmp().join("snapshot");
    let encoded = encode_snapshot(snapshot);
    store::replace_file(disk, &tmp, &snap, &encoded, None, true)?;
    let chain = vec![Layer {
        upto: snapshot.upto,
        lines: snapshot.files.len() as u64,
        bytes: encoded.len() as u64,
    }];
    drop(encoded);
    publish(disk, layout, chain, keep)
}

/// As `commit_snapshot`, the snapshot written from the chain the manifest names now (which
/// stays in `log/` until the manifest names another) and the changes since: `chain[from..]`
/// merged with them, a whole snapshot if `from` is 0, else a layer over `chain[from - 1]`
/// (`layers::plan_layers`).
pub fn commit_layered_snapshot(
    disk: &dyn Disk,
    layout: &Layout,
    chain: &[Layer],
    from: usize,
    delta: &SnapshotDelta,
    keep: usize,
) -> Result<Compacted> {
    let log_dir = layout.log_dir();
    check_chain(disk, &log_dir, &chain[..from])?;
    let tmp = layout.tmp().join("snapshot");
    let inputs: Vec<_> = chain[from..]
        .iter()
        .map(|l| log_dir.join(snapshot_name(l.upto)))
        .collect();
    let base = from.checked_sub(1).map(|under| chain[under].upto);
    let written = write_merged_snapshot(disk, &inputs, base, delta, &tmp).inspect_err(|_| {
        let _ = disk.remove(&tmp);
    })?;
    store::rename(disk, &tmp, &log_dir.join(snapshot_name(delta.upto)))?;
    store::sync_dir(disk, &log_dir)?;
    let mut chain = chain[..from].to_vec();
    chain.push(Layer {
        upto: delta.upto,
        lines: written.lines,
        bytes: written.bytes,
    });
    publish(disk, layout, chain, keep)
}

/// Steps 4 and 5, once the last snapshot of `chain` is durable in `log/`: the others of the
/// chain stay there, every other snapshot is retired.
fn publish(disk: &dyn Disk, layout: &Layout, chain: Vec<Layer>, keep: usize) -> Result<Compacted> {
    let top = *chain.last().expect("a snapshot at least");
    let (upto, bytes) = (top.upto, top.bytes);
    let log_dir = layout.log_dir();
    let next = upto + 1;

    // 4. The commit point.
    let manifest = Manifest {
        snapshot: upto,
        first_segment: next,
    };
    let tmp = layout.tmp().join("manifest");
    store::replace_file(
        disk,
        &tmp,
        &log_dir.join(MANIFEST),
        &encode_manifest(&manifest),
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
        let in_chain = name.ends_with(b".snapshot") && chain.iter().any(|l| l.upto == seq);
        if seq < next && !in_chain {
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
        bytes,
        chain,
    })
}

/// The sequence number naming a segment (`<seq>.log`) or a snapshot (`<seq>.snapshot`).
pub(super) fn history_seq(name: &[u8]) -> Option<Seq> {
    let name = std::str::from_utf8(name).ok()?;
    parse_segment_name(name).or_else(|| parse_snapshot_name(name))
}

/// The old segments kept in `log/old/`, oldest first.
pub fn old_segments(disk: &dyn Disk, layout: &Layout) -> Result<Vec<(Seq, std::path::PathBuf)>> {
    match disk.stat(&layout.old_logs()) {
        Ok(_) => list_segments(disk, &layout.old_logs()),
        Err(_) => Ok(Vec::new()),
    }
}
