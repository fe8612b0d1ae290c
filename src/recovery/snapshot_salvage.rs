//! `--salvage` of a damaged snapshot: the state from the lines of its chain (the whole
//! snapshot and the layers over it, FORMAT.md "Snapshot layers") that check out and fit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use super::scan::{keep_beside, root_attrs, Finding};
use crate::disk::Disk;
use crate::error::{err, Error, Result};
use crate::limits::MAX_SNAPSHOT_LAYERS;
use crate::log::{self, FileRecord};
use crate::store::Layout;
use crate::types::{Fid, Kind, Seq, ROOT};

/// A line dropped: the snapshot file it is in, its offset and bytes, and why.
type Dropped = (usize, u64, Vec<u8>, String);

/// The snapshot `upto` from the lines of its chain that check out, each file as the newest
/// layer holding it has it; each other line is dropped, named and kept beside its file. A
/// damaged header's fields come from elsewhere: a layer's base is the snapshot before it in
/// `log/` (which holds the chain and nothing else once a compaction is done), the next fid
/// from the files, the root's attributes from the store directory.
pub(super) fn salvaged_snapshot(
    disk: &dyn Disk,
    layout: &Layout,
    upto: Seq,
    findings: &mut Vec<Finding>,
) -> Result<log::Snapshot> {
    let log_dir = layout.log_dir();
    let in_log: Vec<Seq> = disk
        .list(&log_dir)
        .map_err(|e| Error::io(format!("listing {}", log_dir.display()), &e))?
        .iter()
        .filter_map(|n| log::parse_snapshot_name(std::str::from_utf8(n).ok()?))
        .collect();
    // The chain, newest first.
    let mut chain: Vec<(PathBuf, log::SalvagedSnapshot)> = Vec::new();
    let mut at = upto;
    loop {
        let path = log_dir.join(log::snapshot_name(at));
        let bytes = disk
            .read(&path)
            .map_err(|e| Error::io(format!("reading snapshot {}", path.display()), &e))?;
        let read = log::salvage_snapshot(&bytes);
        let base = match &read.head {
            Some(head) => head.base(),
            None => in_log.iter().copied().filter(|s| *s < at).max(),
        };
        chain.push((path, read));
        match base {
            Some(_) if chain.len() >= MAX_SNAPSHOT_LAYERS => {
                return Err(err!(
                    EIO,
                    "snapshot {upto} stands on more than {MAX_SNAPSHOT_LAYERS} snapshots"
                ))
            }
            Some(base) => at = base,
            None => break,
        }
    }

    let mut bad: Vec<Dropped> = Vec::new();
    let mut newest: BTreeMap<Fid, (usize, u64, Vec<u8>, FileRecord)> = BTreeMap::new();
    for (i, (path, read)) in chain.iter_mut().enumerate().rev() {
        let lines = read.files.len() + read.gone.len();
        let lines = lines + read.bad.iter().filter(|(offset, ..)| *offset > 0).count();
        if let Some(head) = &read.head {
            if head.lines() != lines as u64 {
                findings.push(Finding {
                    what: format!(
                        "snapshot {}: its header names {} lines, {lines} follow",
                        path.display(),
                        head.lines()
                    ),
                });
            }
        }
        for fid in &read.gone {
            newest.remove(fid);
        }
        for (offset, line, f) in std::mem::take(&mut read.files) {
            newest.insert(f.fid, (i, offset, line, f));
        }
        bad.extend(
            std::mem::take(&mut read.bad)
                .into_iter()
                .map(|(o, l, w)| (i, o, l, w)),
        );
    }

    let (mut fids, mut names) = (HashSet::new(), HashSet::new());
    let mut fitting = Vec::new();
    for (_, (i, offset, line, f)) in newest {
        let mut all = std::iter::once((f.dir, f.name.to_vec())).chain(f.links.iter().cloned());
        if f.fid <= ROOT || !fids.insert(f.fid) || !all.all(|n| names.insert(n)) {
            let why = "the file does not fit the ones before it".to_string();
            bad.push((i, offset, line, why));
            continue;
        }
        fitting.push((i, offset, line, f));
    }
    // Only what hangs from the root through directories that are kept is kept.
    let mut subdirs: HashMap<u64, Vec<u64>> = Default::default();
    for (.., f) in fitting.iter().filter(|(.., f)| f.kind == Kind::Dir) {
        subdirs.entry(f.dir).or_default().push(f.fid);
    }
    let (mut reached, mut todo) = (HashSet::from([ROOT]), vec![ROOT]);
    while let Some(dir) = todo.pop() {
        for sub in subdirs.remove(&dir).unwrap_or_default() {
            if reached.insert(sub) {
                todo.push(sub);
            }
        }
    }
    let mut files = Vec::new();
    for (i, offset, line, f) in fitting {
        if reached.contains(&f.dir) && f.links.iter().all(|(d, _)| reached.contains(d)) {
            files.push(f);
        } else {
            let why = "its directory is not in the snapshot".to_string();
            bad.push((i, offset, line, why));
        }
    }
    for (i, offset, line, why) in bad {
        let path = &chain[i].0;
        let kept = keep_beside(disk, path, &format!("bad-{offset}"), &line)?;
        findings.push(Finding {
            what: format!(
                "snapshot {}: the line at offset {offset} is dropped ({why}){}",
                path.display(),
                kept.map(|p| format!("; its bytes are in {}", p.display()))
                    .unwrap_or_default()
            ),
        });
    }
    let (next_fid, root, root_xattrs) = match chain[0].1.head.take() {
        Some(head) => (head.next_fid, head.root, head.root_xattrs),
        None => {
            findings.push(Finding {
                what: format!(
                    "snapshot {}: no readable header; the root directory's attributes are new",
                    chain[0].0.display()
                ),
            });
            (ROOT + 1, root_attrs(disk, layout)?, Default::default())
        }
    };
    Ok(log::Snapshot {
        upto,
        next_fid,
        root,
        root_xattrs,
        files,
    })
}
