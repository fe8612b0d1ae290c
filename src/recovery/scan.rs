//! Reading the log back into a namespace: the manifest and snapshot in charge, then every
//! segment line by line; a torn tail is told from corruption, and bytes a cut removes are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::log::info;

use crate::disk::Disk;
use crate::error::{err, Error, Result};
use crate::log::{self, list_segments, scan_segment, Header, Op};
use crate::namespace::{ContentLoc, Namespace};
use crate::store::Layout;
use crate::types::{Attrs, Fid, Seq, Time};

/// One thing found wrong (or repaired) in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

pub struct LogScan {
    pub ns: Namespace,
    /// The last segment, where appends continue, and its good length.
    pub(super) last: Option<(PathBuf, Header, u64)>,
    /// A torn last entry: where it starts, and why it is bad.
    pub(super) torn: Option<(PathBuf, u64, String)>,
    pub(super) segments: usize,
    pub entries: u64,
    /// The last CHECKPOINT: the entry it covers and when it was written.
    pub checkpoint: Option<(Seq, u64)>,
    /// What the entries after it name.
    pub tail: Tail,
    /// The snapshots replay started from, whole one first (none if the store was never
    /// compacted).
    pub chain: Vec<log::Layer>,
}

/// What the entries after the last checkpoint name: all whose bytes a process that died
/// could have left half written in the backing tree. The checkpoint vouches for the bytes of
/// every other backing file (the write-ahead rule: the backing tree changes only for entries
/// durable in the log).
#[derive(Default, Debug)]
pub struct Tail {
    entries: Vec<Touch>,
    /// Each file's entries that changed its bytes, from its last `SET` on (or from the
    /// checkpoint's `upto`, when its bytes since are patches on what the backing file held
    /// then), by sequence number.
    content: HashMap<Fid, Vec<(Seq, ContentLoc)>>,
}

/// One entry of the tail: its sequence number, its file, the directory entries it gives or
/// takes (a SET writes at its place, which it gives when it creates the file).
#[derive(Debug)]
struct Touch {
    seq: Seq,
    fid: Fid,
    places: Vec<(Fid, Vec<u8>)>,
}

impl Tail {
    fn add(&mut self, seq: Seq, op: &Op, loc: ContentLoc) {
        match op {
            Op::Set { fid, .. } => {
                self.content.insert(*fid, vec![(seq, loc)]);
            }
            Op::Patch { fid, .. } => self.content.entry(*fid).or_default().push((seq, loc)),
            // What entries up to `upto` wrote is durable in the backing files; what later
            // ones wrote, before the checkpoint's line or after it, may not be (one written
            // while mounted: FORMAT.md, "CHECKPOINT").
            Op::Checkpoint { upto } => self.content.retain(|_, locs| {
                locs.retain(|(s, _)| s > upto);
                !locs.is_empty()
            }),
            _ => {}
        }
        match (op, op.fid()) {
            (Op::Checkpoint { upto }, _) => self.entries.retain(|t| t.seq > *upto),
            (op, Some(fid)) => {
                // An attribute change names a place but gives or takes none: the file's
                // names are found from the file.
                let names_change = !matches!(op, Op::Attr { .. } | Op::Xattr { .. });
                let places = op
                    .places()
                    .into_iter()
                    .filter(|_| names_change)
                    .map(|(d, n)| (d, n.to_vec()));
                self.entries.push(Touch {
                    seq,
                    fid,
                    places: places.collect(),
                });
            }
            (_, None) => {}
        }
    }

    /// The files the entries name.
    pub fn fids(&self) -> impl Iterator<Item = Fid> + '_ {
        self.entries.iter().map(|t| t.fid)
    }

    /// Where the entries that changed `fid`'s bytes since its last `SET` (or the checkpoint)
    /// stand in the log, oldest first.
    pub fn content_of(&self, fid: Fid) -> Vec<ContentLoc> {
        self.content
            .get(&fid)
            .map(|locs| locs.iter().map(|(_, loc)| *loc).collect())
            .unwrap_or_default()
    }

    /// The directory entries they give or take.
    pub fn places(&self) -> impl Iterator<Item = (Fid, &[u8])> + '_ {
        self.entries
            .iter()
            .flat_map(|t| t.places.iter().map(|(d, n)| (*d, n.as_slice())))
    }
}

/// `log/MANIFEST`, if the store was ever compacted.
pub fn read_manifest(disk: &dyn Disk, layout: &Layout) -> Result<Option<log::Manifest>> {
    let path = layout.log_dir().join(log::MANIFEST);
    match disk.read(&path) {
        Ok(bytes) => log::decode_manifest(&bytes)
            .map(Some)
            .map_err(|e| err!(EIO, "{} is corrupt: {}", path.display(), e.reason)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), &e)),
    }
}

/// Reads the log of a store and replays it, changing nothing (for `recordfs stats`).
pub fn replay(disk: &dyn Disk, layout: &Layout) -> Result<LogScan> {
    scan_log(disk, layout)
}

pub(super) fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Said with every refusal of a damaged log.
const SALVAGE_HINT: &str = "The store is left as it is; `recordfs mount --salvage` mounts it, dropping the damaged lines and keeping every other commit.";

/// Where replay starts.
struct Start {
    /// The snapshot the manifest names, if the store was compacted, else an empty namespace.
    ns: Namespace,
    /// The segments in charge from there.
    segments: Vec<(Seq, PathBuf)>,
    /// The snapshots it stands on, whole one first (none if none).
    chain: Vec<log::Layer>,
}

fn start_state(disk: &dyn Disk, layout: &Layout) -> Result<Start> {
    let mut segments = list_segments(disk, &layout.log_dir())?;
    let manifest =
        read_manifest(disk, layout).map_err(|e| err!(EIO, "{}. {SALVAGE_HINT}", e.reason))?;
    let Some(m) = manifest else {
        return Ok(Start {
            ns: Namespace::new(),
            segments,
            chain: Vec::new(),
        });
    };
    // Older segments (if a crash left them) are history, not state.
    let (snap, chain) = log::load_snapshot(disk, &layout.log_dir(), m.snapshot)
        .map_err(|e| Error::new(e.errno, format!("{}. {SALVAGE_HINT}", e.reason)))?;
    segments.retain(|(start, _)| *start >= m.first_segment);
    if segments.first().map(|(start, _)| *start) != Some(m.first_segment) {
        return Err(err!(
            EIO,
            "the manifest names log segment {}, which is missing",
            log::segment_name(m.first_segment)
        ));
    }
    Ok(Start {
        ns: Namespace::from_snapshot(&snap)?,
        segments,
        chain,
    })
}

/// Reads every segment, checking each line and replaying the entries. Corruption in the
/// middle of the log is an error naming the segment, offset and last good sequence number.
pub(super) fn scan_log(disk: &dyn Disk, layout: &Layout) -> Result<LogScan> {
    let Start {
        ns,
        segments,
        chain,
    } = start_state(disk, layout)?;
    let mut scan = LogScan {
        checkpoint: (ns.last_seq() > 0).then(|| (ns.last_seq(), 0)),
        ns,
        last: None,
        torn: None,
        segments: 0,
        entries: 0,
        tail: Tail::default(),
        chain,
    };
    let count = segments.len();
    for (i, (start, path)) in segments.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let expect = (scan.ns.last_seq() > 0).then(|| scan.ns.last_seq() + 1);
        if let Some(want) = expect {
            if start != want {
                return Err(err!(
                    EIO,
                    "log segment {} starts at entry {start}, but entry {want} was expected next. {SALVAGE_HINT}",
                    path.display()
                ));
            }
        }
        let ns = &mut scan.ns;
        let entries = &mut scan.entries;
        let checkpoint = &mut scan.checkpoint;
        let tail = &mut scan.tail;
        let seg = scan_segment(disk, &path, expect, |offset, entry| {
            let loc = matches!(entry.op, Op::Set { .. }).then_some(crate::namespace::ContentLoc {
                segment: start,
                offset,
            });
            *entries += 1;
            // One written while mounted may name an entry before the last compaction's.
            if let Op::Checkpoint { upto } = entry.op {
                if checkpoint.is_none_or(|(last, _)| upto >= last) {
                    *checkpoint = Some((upto, entry.ts));
                }
            }
            tail.add(
                entry.seq,
                &entry.op,
                ContentLoc {
                    segment: start,
                    offset,
                },
            );
            ns.apply(&entry, loc).map(|_| ()).map_err(|e| {
                err!(
                    EIO,
                    "log {} offset {offset}: entry {} does not fit the state before it: {}. {SALVAGE_HINT}",
                    path.display(),
                    entry.seq,
                    e.reason
                )
            })
        })?;
        scan.segments += 1;
        // A snapshot holds no time; the segment its compaction started after it does.
        if let (0, Some((upto, ts @ 0)), Some(h)) = (i, &mut scan.checkpoint, &seg.header) {
            if *upto + 1 == h.start_seq {
                *ts = h.created;
            }
        }
        if let Some(first) = seg.bad.first() {
            if (seg.good_after_bad && !seg.hole) || !is_last {
                return Err(err!(
                    EIO,
                    "log {} is corrupt at offset {}: {}; entries after it are intact, so this is not a torn write. Last good entry before it: {}. {SALVAGE_HINT}",
                    path.display(),
                    first.offset,
                    first.reason,
                    first
                        .prev_seq
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "none".into())
                ));
            }
            let reason = if seg.hole {
                format!(
                    "a hole of bytes that never reached the disk{}",
                    if seg.good_after_bad {
                        ", with unsynced entries after it"
                    } else {
                        ""
                    }
                )
            } else {
                first.reason.clone()
            };
            scan.torn = Some((path.clone(), first.offset, reason));
        }
        if is_last {
            let header = match seg.header {
                Some(h) => h,
                None => Header {
                    version: log::FORMAT_VERSION,
                    start_seq: start,
                    max_line: 0,
                    created: 0,
                },
            };
            scan.last = Some((path, header, seg.good_end));
        }
    }
    Ok(scan)
}

/// Keeps what a cut removes beside the segment (`<segment>.cut-<offset>`): nothing the log held
/// is destroyed, even what was never acknowledged.
pub(super) fn keep_cut_bytes(disk: &dyn Disk, path: &Path, offset: u64) -> Result<()> {
    let bytes = disk
        .read(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?;
    let tail = &bytes[(offset as usize).min(bytes.len())..];
    // Zeros written ahead of the lines (`LOG_PREALLOC`) are not part of what was cut.
    let tail = &tail[..tail.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)];
    if let Some(dest) = keep_beside(disk, path, &format!("cut-{offset}"), tail)? {
        info!(
            "the {} bytes cut off are kept in {}",
            tail.len(),
            dest.display()
        );
    }
    Ok(())
}

/// Writes bytes the log stops using beside their segment, as `<segment>.<suffix>`, durably.
/// Zeros (blocks that never reached the disk) hold nothing and are not kept.
pub(super) fn keep_beside(
    disk: &dyn Disk,
    segment: &Path,
    suffix: &str,
    bytes: &[u8],
) -> Result<Option<PathBuf>> {
    if bytes.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let mut name = segment.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    let dest = PathBuf::from(name);
    disk.write_file(&dest, bytes, None)
        .and_then(|_| disk.sync_file(&dest))
        .map_err(|e| {
            Error::io(
                format!("keeping dropped log bytes in {}", dest.display()),
                &e,
            )
        })?;
    Ok(Some(dest))
}

pub(super) fn cut(disk: &dyn Disk, path: &Path, offset: u64) -> Result<()> {
    let f = disk
        .open_file(path, false)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    f.set_len(offset)
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io(format!("cutting {}", path.display()), &e))
}

/// A new root directory's attributes: 0755, owned as the store is, times now.
pub(super) fn root_attrs(disk: &dyn Disk, layout: &Layout) -> Result<Attrs> {
    let md = disk
        .stat(&layout.store)
        .map_err(|e| Error::io(format!("stat of {}", layout.store.display()), &e))?;
    let now = Time::now();
    Ok(Attrs {
        mode: 0o755,
        uid: md.uid,
        gid: md.gid,
        atime: now,
        mtime: now,
        ctime: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Data, Range};
    use crate::types::{test_attrs as attrs, Kind, ROOT};
    use std::sync::Arc;

    fn set(fid: Fid) -> Op {
        Op::Set {
            fid,
            dir: ROOT,
            name: format!("f{fid}").into_bytes(),
            kind: Kind::File,
            attrs: attrs(),
            data: Data::new(Arc::new(b"[1]".to_vec())),
        }
    }

    fn patch(fid: Fid) -> Op {
        Op::Patch {
            fid,
            dir: ROOT,
            name: format!("f{fid}").into_bytes(),
            attrs: attrs(),
            len: 3,
            dcrc: 0,
            ranges: vec![Range {
                at: 1,
                data: Data::new(Arc::new(b"2".to_vec())),
            }],
            shown: None,
        }
    }

    fn loc(offset: u64) -> ContentLoc {
        ContentLoc { segment: 1, offset }
    }

    /// A checkpoint vouches for the entries up to its `upto`, not for those between that and
    /// its own line (one logged while mounted): their files stay in the tail, with the bytes
    /// to rebuild them.
    #[test]
    fn a_checkpoint_leaves_in_the_tail_the_entries_after_its_upto() {
        let mut tail = Tail::default();
        tail.add(1, &set(2), loc(10));
        tail.add(2, &set(3), loc(20));
        tail.add(3, &patch(2), loc(30)); // vouched for
        tail.add(4, &patch(3), loc(40)); // after `upto`, before the checkpoint's line
        tail.add(5, &set(4), loc(50)); // likewise
        tail.add(6, &Op::Checkpoint { upto: 3 }, loc(60));
        tail.add(7, &patch(4), loc(70));
        assert_eq!(tail.content_of(2), []);
        // The patch goes onto what the backing file held at the checkpoint.
        assert_eq!(tail.content_of(3), [loc(40)]);
        assert_eq!(tail.content_of(4), [loc(50), loc(70)]);
        let mut fids: Vec<Fid> = tail.fids().collect();
        fids.sort();
        assert_eq!(fids, [3, 4, 4]);
        // One at the end vouches for everything before it.
        tail.add(8, &Op::Checkpoint { upto: 7 }, loc(80));
        assert_eq!(tail.content_of(4), []);
        assert_eq!(tail.fids().count(), 0);
    }
}
