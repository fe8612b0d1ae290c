//! Snapshot layers (FORMAT.md, "Snapshot layers"): a compaction writes the files changed
//! since the last snapshot as a layer over it, not the whole state again, so that its cost
//! follows what changed and not the store's size. A layer holds one line per file changed
//! since the snapshot under it: the file's line as a whole snapshot has it, or a `GONE` line
//! (both encoded in snapshot.rs).
//! The snapshot the manifest names is the top of a chain: a whole snapshot, then layers, each
//! over the one before.

use std::path::Path;

use crate::disk::Disk;
use crate::error::{err, Error, Result};
use crate::limits::{LAYERS_PER_WHOLE, MAX_SNAPSHOT_LAYERS};
use crate::types::{Fid, Seq};

use super::line::corrupt;
use super::merge::open_snapshot;
use super::snapshot::{
    decode_layer_line, decode_lines, decode_snapshot, decode_snapshot_head, snapshot_name,
    split_snapshot, FileRecord, Snapshot,
};

/// One snapshot of the chain: the state after entry `upto`, in `lines` lines after its
/// header (a whole snapshot's are its files), `bytes` in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub upto: Seq,
    pub lines: u64,
    pub bytes: u64,
}

/// Which snapshots of `chain` (the whole one first, the one the manifest names last) a
/// compaction that changed `changed` files merges with its changes: `chain[from..]`, the
/// result taking their place. 0 means a whole snapshot; `chain.len()`, a new layer alone.
///
/// A layer is merged with the changes after it unless it holds more than twice as many lines,
/// so sizes halve up the chain and a line is rewritten about log2(chain) times before a whole
/// snapshot takes it in: what a compaction writes follows what changed. A whole one is written
/// when the layers would hold more than 1/`LAYERS_PER_WHOLE` of its lines.
pub fn plan_layers(chain: &[Layer], changed: u64) -> usize {
    let Some(whole) = chain.first() else {
        return 0;
    };
    let mut from = chain.len();
    let mut merged = changed;
    while from > 1 && (chain[from - 1].lines <= 2 * merged || from >= MAX_SNAPSHOT_LAYERS) {
        from -= 1;
        merged += chain[from].lines;
    }
    let layered: u64 = chain[1..from].iter().map(|l| l.lines).sum::<u64>() + merged;
    match layered * LAYERS_PER_WHOLE > whole.lines {
        true => 0,
        false => from,
    }
}

/// The state snapshot `upto` in `log_dir` holds, read with the snapshots under it, and the
/// chain (whole one first).
pub fn load_snapshot(disk: &dyn Disk, log_dir: &Path, upto: Seq) -> Result<(Snapshot, Vec<Layer>)> {
    let mut read: Vec<(std::path::PathBuf, Vec<u8>)> = Vec::new();
    let mut at = upto;
    loop {
        let path = log_dir.join(snapshot_name(at));
        let bytes = disk.read(&path).map_err(|e| match read.last() {
            Some((over, _)) => err!(
                EIO,
                "{} lies over snapshot {at}, which cannot be read: {e}",
                over.display()
            ),
            None => Error::io(format!("reading snapshot {}", path.display()), &e),
        })?;
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let head = decode_snapshot_head(first).map_err(|e| in_file(&path, e))?;
        if head.upto != at {
            return Err(in_file(
                &path,
                corrupt(format!("holds entry {}", head.upto)),
            ));
        }
        read.push((path, bytes));
        match head.base() {
            None => break,
            Some(_) if read.len() >= MAX_SNAPSHOT_LAYERS => {
                return Err(in_file(
                    &read[0].0,
                    corrupt(format!(
                        "a chain of more than {MAX_SNAPSHOT_LAYERS} snapshots"
                    )),
                ))
            }
            Some(base) => at = base,
        }
    }
    let (path, bytes) = read.pop().expect("one at least");
    let mut snap = decode_snapshot(&bytes).map_err(|e| in_file(&path, e))?;
    let mut chain = vec![Layer {
        upto: snap.upto,
        lines: snap.files.len() as u64,
        bytes: bytes.len() as u64,
    }];
    drop(bytes);
    while let Some((path, bytes)) = read.pop() {
        let (head, lines) = split_snapshot(&bytes).map_err(|e| in_file(&path, e))?;
        let changes = decode_lines(&lines, decode_layer_line).map_err(|e| in_file(&path, e))?;
        snap.files =
            apply_layer(std::mem::take(&mut snap.files), changes).map_err(|e| in_file(&path, e))?;
        if snap.files.len() as u64 != head.files {
            return Err(in_file(
                &path,
                corrupt(format!(
                    "{} files where it says {}",
                    snap.files.len(),
                    head.files
                )),
            ));
        }
        chain.push(Layer {
            upto: head.upto,
            lines: head.lines(),
            bytes: bytes.len() as u64,
        });
        snap.upto = head.upto;
        snap.next_fid = head.next_fid;
        snap.root = head.root;
        snap.root_xattrs = head.root_xattrs;
    }
    Ok((snap, chain))
}

/// Checks that each snapshot of `chain` (whole one first) is in `log_dir` and over the one
/// before it, by their headers: a layer written over a chain with a snapshot gone would leave
/// a manifest no mount can read.
pub(super) fn check_chain(disk: &dyn Disk, log_dir: &Path, chain: &[Layer]) -> Result<()> {
    let mut under = None;
    for layer in chain {
        let path = log_dir.join(snapshot_name(layer.upto));
        let (head, _) = open_snapshot(disk, &path)?;
        if head.upto != layer.upto || head.base() != under {
            let found = (head.upto, head.base());
            let why = format!(
                "holds {found:?} where {:?} was written",
                (layer.upto, under)
            );
            return Err(in_file(&path, corrupt(why)));
        }
        under = Some(layer.upto);
    }
    Ok(())
}

fn in_file(path: &Path, e: Error) -> Error {
    err!(EIO, "snapshot {} is corrupt: {}", path.display(), e.reason)
}

/// `files` (in fid order) with a layer's changes (in fid order) made.
pub(super) fn apply_layer(
    mut files: Vec<FileRecord>,
    changes: Vec<(Fid, Option<FileRecord>)>,
) -> Result<Vec<FileRecord>> {
    let mut last = 0;
    let (mut at, mut gone, mut added) = (0, 0, Vec::new());
    for (fid, record) in changes {
        if fid <= last {
            return Err(corrupt(format!("fid {fid} after fid {last}")));
        }
        last = fid;
        while at < files.len() && files[at].fid < fid {
            at += 1;
        }
        match (at < files.len() && files[at].fid == fid, record) {
            (true, Some(r)) => files[at] = r,
            (true, None) => {
                files[at].fid = 0; // taken out below
                gone += 1;
            }
            (false, Some(r)) => added.push(r),
            // Made and removed since the snapshot under it: in neither.
            (false, None) => {}
        }
    }
    if gone > 0 {
        files.retain(|f| f.fid != 0);
    }
    // Files made since the snapshot under the layer have fids past all of its own.
    let in_order = added
        .first()
        .is_none_or(|a| files.last().is_none_or(|f| f.fid < a.fid));
    files.extend(added);
    if !in_order {
        files.sort_unstable_by_key(|f| f.fid);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::line::seal;
    use crate::log::snapshot::encode_gone_line;

    fn chain(lines: &[u64]) -> Vec<Layer> {
        lines
            .iter()
            .enumerate()
            .map(|(i, &lines)| Layer {
                upto: i as Seq + 1,
                lines,
                bytes: lines * 263,
            })
            .collect()
    }

    #[test]
    fn layers_halve_up_the_chain_and_a_whole_snapshot_takes_them_in() {
        // A new layer alone while it is less than half the one under it.
        assert_eq!(plan_layers(&chain(&[1000]), 10), 1);
        assert_eq!(plan_layers(&chain(&[1000, 100]), 10), 2);
        // Merged with the layers it is about as large as, down the chain.
        assert_eq!(plan_layers(&chain(&[1000, 100, 10]), 10), 2);
        assert_eq!(plan_layers(&chain(&[1000, 40, 20, 10]), 10), 1);
        // Layers past a quarter of the whole one: whole.
        assert_eq!(plan_layers(&chain(&[1000, 200]), 60), 0);
        assert_eq!(plan_layers(&chain(&[1000]), 251), 0);
        assert_eq!(plan_layers(&chain(&[1000]), 250), 1);
        // No chain, or an empty whole one: whole.
        assert_eq!(plan_layers(&[], 5), 0);
        assert_eq!(plan_layers(&chain(&[0]), 1), 0);
        // Never more than MAX_SNAPSHOT_LAYERS in the chain.
        let long: Vec<u64> = std::iter::once(1 << 42)
            .chain((1..MAX_SNAPSHOT_LAYERS as u32).map(|i| 1 << (40 - 2 * i)))
            .collect();
        assert_eq!(long.len(), MAX_SNAPSHOT_LAYERS);
        assert_eq!(plan_layers(&chain(&long), 1), MAX_SNAPSHOT_LAYERS - 1);
    }

    /// A chain grown by many small compactions stays short, and what it rewrote stays within a
    /// small multiple of what changed.
    #[test]
    fn what_layers_rewrite_follows_what_changed() {
        let mut layers = chain(&[1_000_000]);
        let (mut written, mut changed, mut longest) = (0, 0, 0);
        for _ in 0..10_000 {
            let from = plan_layers(&layers, 100);
            let lines = match from {
                0 => layers.iter().map(|l| l.lines).sum::<u64>() + 100,
                _ => layers[from..].iter().map(|l| l.lines).sum::<u64>() + 100,
            };
            layers.truncate(from);
            layers.push(Layer {
                upto: 0,
                lines,
                bytes: 0,
            });
            written += lines;
            changed += 100;
            longest = longest.max(layers.len());
        }
        assert!(longest <= MAX_SNAPSHOT_LAYERS);
        // A whole snapshot every quarter million lines changed, each line of a layer rewritten
        // up to log2 times on the way: far below the 10^10 lines of a whole snapshot each time.
        assert!(
            written < 20 * changed,
            "{written} lines written for {changed} changed"
        );
    }

    fn record(fid: Fid, name: &str) -> FileRecord {
        FileRecord {
            fid,
            dir: 1,
            name: crate::name::Name::new(name.as_bytes()),
            kind: crate::types::Kind::File,
            attrs: crate::types::test_attrs(),
            len: 1,
            dcrc: 7,
            target: None,
            xattrs: crate::types::no_xattrs(),
            links: Vec::new(),
        }
    }

    #[test]
    fn a_layer_changes_removes_and_adds_files() {
        let files = vec![record(2, "a"), record(4, "b"), record(6, "c")];
        let changes = vec![
            (3, None), // made and removed since
            (4, None),
            (6, Some(record(6, "c2"))),
            (9, Some(record(9, "d"))),
        ];
        let names = |f: &[FileRecord]| -> Vec<(Fid, Vec<u8>)> {
            f.iter().map(|f| (f.fid, f.name.bytes().to_vec())).collect()
        };
        let out = apply_layer(files.clone(), changes).unwrap();
        assert_eq!(
            names(&out),
            vec![(2, b"a".to_vec()), (6, b"c2".to_vec()), (9, b"d".to_vec())]
        );
        // Out of order: refused.
        let e = apply_layer(files, vec![(6, None), (4, None)]).unwrap_err();
        assert!(e.reason.contains("fid 4 after fid 6"), "{e}");
        // A GONE line reads back; anything else under its name does not.
        let line = encode_gone_line(12);
        assert_eq!(
            decode_layer_line(&line[..line.len() - 1]).unwrap(),
            (12, None)
        );
        let mut other = br#"{"op":"GONE","fid":12,"x":1"#.to_vec();
        other = seal(other);
        assert!(decode_layer_line(&other).is_err());
    }
}
