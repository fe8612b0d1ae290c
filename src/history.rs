//! A name's versions as the kept log tells them (`recordfs history`, `show`, `restore`): one
//! for each entry that changed what the name holds — a save (SET, or PATCH applied onto the
//! version before it), a file renamed or linked onto the name, the name removed or renamed
//! away. The log reaches back to the oldest segment kept (`--keep-logs`; `recordfs stats`
//! says how far): a version whose bytes were logged before that, or a patch onto such a
//! version, has no bytes here, and says so.

use std::collections::HashMap;
use std::sync::Arc;

use crate::disk::Disk;
use crate::error::Result;
use crate::inspect::{all_segments, files_named, place_of};
use crate::limits::LONGEST_LINE;
use crate::log::{apply_patch, decode_entry, for_each_line, Op};
use crate::store::Layout;
use crate::types::{Fid, Seq};

/// What the name held after one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub seq: Seq,
    /// The entry's commit time, milliseconds since the Unix epoch.
    pub ms: u64,
    /// SET, PATCH, RENAME (a file renamed onto the name, or the name renamed away), LINK or
    /// DELETE.
    pub op: &'static str,
    pub held: Held,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// These bytes.
    Bytes(Arc<Vec<u8>>),
    /// A file whose bytes the kept log does not hold (saved before its oldest segment), of
    /// this size if known.
    Unknown(Option<u64>),
    /// Nothing: the name was removed or renamed away.
    Gone,
}

/// Every version of `path` (names joined by `/`, its directories the ones that hold it now),
/// oldest first.
pub fn versions(disk: &dyn Disk, layout: &Layout, path: &[u8]) -> Result<Vec<Version>> {
    crate::store::require_store(disk, layout)?;
    let place = place_of(disk, layout, path)?;
    let fids = files_named(disk, layout, place)?;
    // The bytes of every file that ever held the name, as far as the log read so far says.
    let mut bytes: HashMap<Fid, Held> = HashMap::new();
    let mut here: Option<Fid> = None;
    let mut out = Vec::new();
    for (_, segment) in all_segments(disk, layout)? {
        for_each_line(disk, &segment, LONGEST_LINE, |offset, line| {
            let Some(e) = (offset > 0).then(|| decode_entry(line).ok()).flatten() else {
                return Ok(());
            };
            let at = |dir: Fid, name: &[u8]| (dir, name) == place;
            let mut changed = false;
            match &e.op {
                Op::Set {
                    fid,
                    dir,
                    name,
                    data,
                    ..
                } if fids.contains(fid) => {
                    bytes.insert(*fid, Held::Bytes(data.bytes.clone()));
                    if at(*dir, name) {
                        here = Some(*fid);
                    }
                    changed = here == Some(*fid);
                }
                Op::Patch {
                    fid, len, ranges, ..
                } if fids.contains(fid) => {
                    let now = match bytes.remove(fid) {
                        Some(Held::Bytes(b)) => {
                            let mut b = Vec::clone(&b);
                            apply_patch(&mut b, *len, ranges);
                            Held::Bytes(Arc::new(b))
                        }
                        _ => Held::Unknown(Some(*len)),
                    };
                    bytes.insert(*fid, now);
                    changed = here == Some(*fid);
                }
                Op::Rename {
                    fid,
                    dir,
                    name,
                    to_dir,
                    to_name,
                    replaced,
                    exchange,
                } => {
                    if at(*to_dir, to_name) {
                        (here, changed) = (Some(*fid), true);
                    } else if at(*dir, name) {
                        here = if *exchange { *replaced } else { None };
                        changed = true;
                    }
                }
                Op::Link { fid, dir, name } if at(*dir, name) => {
                    (here, changed) = (Some(*fid), true);
                }
                Op::Delete { dir, name, .. } if at(*dir, name) => {
                    (here, changed) = (None, true);
                }
                _ => {}
            }
            if changed {
                let held = match here {
                    None => Held::Gone,
                    Some(fid) => bytes.get(&fid).cloned().unwrap_or(Held::Unknown(None)),
                };
                out.push(Version {
                    seq: e.seq,
                    ms: e.ts,
                    op: e.op.name(),
                    held,
                });
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// The version current at entry `seq` (the last at or before it); None before the first.
pub fn at_seq(versions: &[Version], seq: Seq) -> Option<&Version> {
    versions.iter().rev().find(|v| v.seq <= seq)
}

/// The version current at `ms` (the last committed at or before it).
pub fn at_time(versions: &[Version], ms: u64) -> Option<&Version> {
    versions.iter().rev().find(|v| v.ms <= ms)
}
