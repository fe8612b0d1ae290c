//! Mounting after any crash, and checking a store offline. Both read the log the same way
//! (`scan_log`) and hold the backing tree against it the same way (`reconcile`); recovery
//! repairs what it finds, `check` only reports. FORMAT.md, "Recovery", is the procedure.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ::log::{info, warn};

use crate::disk::{Disk, EntryKind, FileMeta};
use crate::error::{err, Error, Result};
use crate::limits::{max_line_for, MAX_NAMED_DROPS};
use crate::log::{
    self, crc32c, encode_entry, list_segments, scan_segment, Entry, Header, LogWriter, Op,
};
use crate::namespace::{Inode, Namespace};
use crate::options::Options;
use crate::store::{self, Layout, StoreLock};
use crate::types::{Attrs, Fid, Kind, Seq, Time, ROOT};

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
    last: Option<(PathBuf, Header, u64)>,
    /// A torn last entry: where it starts, and why it is bad.
    torn: Option<(PathBuf, u64, String)>,
    segments: usize,
    pub entries: u64,
    /// The last CHECKPOINT: the entry it covers and when it was written.
    pub checkpoint: Option<(Seq, u64)>,
}

/// `log/MANIFEST`, if the store was ever compacted.
pub fn read_manifest(disk: &dyn Disk, layout: &Layout) -> Result<Option<log::Manifest>> {
    let path = layout.log_dir().join(log::MANIFEST);
    match disk.read(&path) {
        Ok(bytes) => log::decode_manifest(&bytes)
            .map(Some)
            .map_err(|e| err!(EIO, "{} is corrupt: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), &e)),
    }
}

/// Reads the log of a store and replays it, changing nothing (for `recordfs stats`).
pub fn replay(disk: &dyn Disk, layout: &Layout) -> Result<LogScan> {
    scan_log(disk, layout)
}

fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Said with every refusal of a damaged log.
const SALVAGE_HINT: &str = "The store is left as it is; `recordfs mount --salvage` mounts it, dropping the damaged lines and keeping every other commit.";

/// Where replay starts: the snapshot the manifest names, if the store was compacted, else an
/// empty namespace; and the segments in charge from there.
fn start_state(disk: &dyn Disk, layout: &Layout) -> Result<(Namespace, Vec<(Seq, PathBuf)>)> {
    let mut segments = list_segments(disk, &layout.log_dir())?;
    let manifest =
        read_manifest(disk, layout).map_err(|e| err!(EIO, "{}. {SALVAGE_HINT}", e.reason))?;
    let Some(m) = manifest else {
        return Ok((Namespace::new(), segments));
    };
    // Older segments (if a crash left them) are history, not state.
    let path = layout.log_dir().join(log::snapshot_name(m.snapshot));
    let bytes = disk
        .read(&path)
        .map_err(|e| Error::io(format!("reading snapshot {}", path.display()), &e))?;
    let snap = log::decode_snapshot(&bytes).map_err(|e| {
        err!(
            EIO,
            "snapshot {} is corrupt: {e}. {SALVAGE_HINT}",
            path.display()
        )
    })?;
    segments.retain(|(start, _)| *start >= m.first_segment);
    if segments.first().map(|(start, _)| *start) != Some(m.first_segment) {
        return Err(err!(
            EIO,
            "the manifest names log segment {}, which is missing",
            log::segment_name(m.first_segment)
        ));
    }
    Ok((Namespace::from_snapshot(&snap)?, segments))
}

/// Reads every segment, checking each line and replaying the entries. Corruption in the
/// middle of the log is an error naming the segment, offset and last good sequence number.
fn scan_log(disk: &dyn Disk, layout: &Layout) -> Result<LogScan> {
    let mut scan = LogScan {
        ns: Namespace::new(),
        last: None,
        torn: None,
        segments: 0,
        entries: 0,
        checkpoint: None,
    };
    let (ns, segments) = start_state(disk, layout)?;
    if ns.last_seq() > 0 {
        scan.checkpoint = Some((ns.last_seq(), 0));
    }
    scan.ns = ns;
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
        let seg = scan_segment(disk, &path, expect, |offset, entry| {
            let loc = matches!(entry.op, Op::Set { .. }).then_some(crate::namespace::ContentLoc {
                segment: start,
                offset,
            });
            *entries += 1;
            if let Op::Checkpoint { upto } = entry.op {
                *checkpoint = Some((upto, entry.ts));
            }
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

/// `--salvage`: brings a store whose log is damaged in the middle back to a sound state with
/// every commit the log still holds. Each line that cannot be used is dropped, named, and its
/// bytes kept in `log/<segment>.bad-<offset>`: a line that does not check out, an entry out of
/// order or one that does not fit the state before it (it built on a dropped one), and in the
/// last segment everything after a hole (never synced, as for a torn tail). The backing tree is
/// brought to the salvaged state, keeping aside whatever differs, and the state is compacted
/// into a snapshot, so the damaged segments are retired to `log/old/` and the store mounts
/// without `--salvage` from then on. A store that needs no salvage is left alone.
fn salvage(disk: &dyn Disk, layout: &Layout, opts: &Options) -> Result<Vec<Finding>> {
    let Err(refusal) = scan_log(disk, layout) else {
        return Ok(Vec::new());
    };
    let mut findings = Vec::new();
    let (ns, segments) = salvage_start(disk, layout, &mut findings)?;
    let mut s = Salvage {
        seen: ns.last_seq(),
        ns,
        max_line: max_line_for(opts.max_file_size),
        findings,
        dropped: 0,
    };
    for (i, (start, path)) in segments.iter().enumerate() {
        s.read_segment(disk, *start, path, i + 1 == segments.len())?;
    }
    let Salvage {
        mut ns,
        seen,
        max_line,
        mut findings,
        ..
    } = s;
    if findings.is_empty() {
        // Every line reads, yet the whole did not: say what the strict reading found.
        findings.push(Finding {
            what: refusal.reason,
        });
    }
    let reconciled = reconcile(disk, layout, &ns, max_line, Repair::KeepingWhatDiffers)?;
    findings.extend(reconciled.findings);
    // A file whose bytes are nowhere any more leaves the mount rather than answer EIO for
    // good: what the backing tree held for it is in lost+found/, with the strays.
    for fid in &reconciled.damaged {
        if let Some(inode) = ns.forget(*fid) {
            findings.push(Finding {
                what: format!(
                    "{}: taken out of the store, since no version of it can be restored",
                    name_str(&inode.name)
                ),
            });
        }
    }
    for f in &findings {
        warn!("salvage: {f}");
    }
    // The salvaged state becomes a snapshot (compaction's steps, FORMAT.md): every backing file
    // durable, a new segment after every sequence number seen and every segment's first (a
    // segment may hold no usable entry), the snapshot and manifest.
    let last_start = segments.last().map_or(0, |(start, _)| *start);
    ns.reserve(seen.max(last_start), None);
    disk.sync_everything(&layout.root())
        .map_err(|e| Error::io("syncfs of the backing tree", &e))?;
    store::sync_dir(disk, &layout.root())?;
    store::sync_dir(disk, &layout.lost_found())?;
    drop(LogWriter::create(
        disk,
        &layout.log_dir(),
        ns.last_seq() + 1,
        max_line,
    )?);
    crate::log::commit_snapshot(disk, layout, &ns.snapshot(), opts.keep_logs)?;
    info!(
        "salvage: {} kept in a snapshot of entry {}; the damaged log is in {}",
        layout.store.display(),
        ns.last_seq(),
        layout.old_logs().display()
    );
    Ok(findings)
}

/// A salvage's reading of the segments: the state so far and what it dropped.
struct Salvage {
    ns: Namespace,
    /// The highest sequence number seen or implied: the new segment starts after it.
    seen: Seq,
    /// The longest line any segment's header allows (to restore files from them).
    max_line: u64,
    findings: Vec<Finding>,
    /// Lines dropped so far (counted up to `MAX_NAMED_DROPS`, then per segment).
    dropped: usize,
}

impl Salvage {
    fn read_segment(&mut self, disk: &dyn Disk, start: Seq, path: &Path, last: bool) -> Result<()> {
        let size = disk
            .stat(path)
            .map_err(|e| Error::io(format!("stat of {}", path.display()), &e))?
            .len;
        if start > self.seen + 1 && self.seen > 0 {
            self.note(format!(
                "log {}: entries {} to {} are missing before it",
                path.display(),
                self.seen + 1,
                start - 1
            ));
        }
        // Segment names start at 1 (log::parse_segment_name); saturating all the same.
        self.seen = self.seen.max(start.saturating_sub(1));
        let mut after_hole = false;
        let mut dropped_since_good = false;
        log::for_each_line(disk, path, crate::limits::LONGEST_LINE, |offset, line| {
            let why = if after_hole {
                Some("after a hole of bytes that never reached the disk: never synced".into())
            } else if offset + line.len() as u64 >= size {
                Some("no newline (torn write)".into())
            } else {
                // A hole ends the last segment as in recovery; not at the header, which is
                // synced when the segment is made.
                after_hole = last && offset > 0 && line.contains(&0);
                self.line(path, start, offset, line, !dropped_since_good)
            };
            dropped_since_good = why.is_some();
            let Some(why) = why else {
                return Ok(());
            };
            self.dropped += 1;
            if self.dropped > MAX_NAMED_DROPS {
                return Ok(());
            }
            let kept = match keep_beside(disk, path, &format!("bad-{offset}"), line)? {
                Some(dest) => format!("; its bytes are in {}", dest.display()),
                None => String::new(),
            };
            self.note(format!(
                "log {}: the line at offset {offset} is dropped ({why}){kept}",
                path.display()
            ));
            Ok(())
        })?;
        if self.dropped > MAX_NAMED_DROPS {
            self.note(format!(
                "log {}: {} more lines dropped, not named or kept one by one; the segment itself is kept in log/old/",
                path.display(),
                self.dropped - MAX_NAMED_DROPS
            ));
            self.dropped = MAX_NAMED_DROPS;
        }
        Ok(())
    }

    /// Replays one line if it can be used; otherwise says why it is dropped. A gap in the
    /// sequence numbers is named when no dropped line explains it.
    fn line(
        &mut self,
        path: &Path,
        segment: Seq,
        offset: u64,
        line: &[u8],
        name_gaps: bool,
    ) -> Option<String> {
        let header = (offset == 0).then(|| log::decode_header(line));
        if let Some(Ok(h)) = &header {
            self.max_line = self.max_line.max(h.max_line);
            return None;
        }
        // A first line that is no header may be an entry whose header was lost.
        let entry = match (log::decode_entry(line), header) {
            (Ok(entry), _) => entry,
            (Err(_), Some(Err(h))) => return Some(format!("segment header: {h}")),
            (Err(e), _) => return Some(e),
        };
        if entry.seq <= self.seen {
            return Some(format!(
                "entry {} after entry {}: a duplicate or out of order",
                entry.seq, self.seen
            ));
        }
        if offset == 0 {
            self.note(format!(
                "log {}: the segment has no header; its entries are read without it",
                path.display()
            ));
        }
        if entry.seq > self.seen + 1 && name_gaps {
            self.note(format!(
                "log {}: entries {} to {} are missing before offset {offset}",
                path.display(),
                self.seen + 1,
                entry.seq - 1
            ));
        }
        self.seen = entry.seq;
        let loc = matches!(entry.op, Op::Set { .. })
            .then_some(crate::namespace::ContentLoc { segment, offset });
        let why = self.ns.apply(&entry, loc).err()?;
        // Neither its sequence number nor its file is given out again.
        self.ns.reserve(entry.seq, entry.op.fid());
        Some(format!(
            "entry {} does not fit the state before it: {}",
            entry.seq, why.reason
        ))
    }

    fn note(&mut self, what: String) {
        self.findings.push(Finding { what });
    }
}

fn meta_of(a: &Attrs) -> FileMeta {
    FileMeta {
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        atime: a.atime,
        mtime: a.mtime,
    }
}

/// How a backing file differs from what the log says it holds.
fn backing_problem(disk: &dyn Disk, layout: &Layout, inode: &Inode) -> Option<String> {
    let path = layout.backing(&inode.name);
    let st = match disk.stat(&path) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some("missing".into()),
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    match inode.kind {
        Kind::Symlink => {
            if st.kind != EntryKind::Symlink {
                return Some("not a symlink".into());
            }
            let target = disk.read_link(&path).ok()?;
            let want = inode.target.as_deref().map(Vec::as_slice).unwrap_or(&[]);
            (target != want).then(|| "wrong symlink target".into())
        }
        Kind::File => {
            if st.kind != EntryKind::File {
                return Some("not a regular file".into());
            }
            if st.len != inode.size {
                return Some(format!("{} bytes, the log says {}", st.len, inode.size));
            }
            match disk.read(&path) {
                Ok(bytes) if crc32c(&bytes) != inode.dcrc => {
                    Some("content differs from the log (checksum)".into())
                }
                Ok(_) => None,
                Err(e) => Some(format!("unreadable: {e}")),
            }
        }
        Kind::Dir => None,
    }
}

/// Whether a backing file's mode, owner and mtime are the log's.
fn meta_matches(disk: &dyn Disk, layout: &Layout, inode: &Inode) -> bool {
    disk.stat(&layout.backing(&inode.name)).is_ok_and(|st| {
        st.mode == inode.attrs.mode
            && (st.uid, st.gid) == (inode.attrs.uid, inode.attrs.gid)
            && st.mtime == inode.attrs.mtime
    })
}

/// Rewrites a backing file from the entry that holds its bytes.
fn restore(disk: &dyn Disk, layout: &Layout, inode: &Inode, max_line: u64) -> Result<()> {
    let loc = inode
        .content
        .ok_or_else(|| err!(EIO, "the log no longer holds its bytes"))?;
    let segment = layout.log_dir().join(log::segment_name(loc.segment));
    let entry = log::read_entry_at(disk, &segment, loc.offset, max_line)?;
    let Op::Set { data, .. } = entry.op else {
        return Err(err!(EIO, "the entry at its log position is not a SET"));
    };
    write_back(disk, layout, inode, &data.bytes)
}

/// Puts `bytes` in place as the backing file (or symlink) of `inode`, with its attributes.
fn write_back(disk: &dyn Disk, layout: &Layout, inode: &Inode, bytes: &[u8]) -> Result<()> {
    let dest = layout.backing(&inode.name);
    if disk.stat(&dest).is_ok_and(|st| st.kind == EntryKind::Dir) {
        // Nothing of ours is a directory: set it aside rather than delete what is in it.
        set_aside(disk, layout, &inode.name)?;
    }
    let tmp = layout.tmp().join(format!("restore.{}", inode.fid));
    match inode.kind {
        Kind::Symlink => store::replace_symlink(disk, &tmp, &dest, bytes),
        _ => store::replace_file(
            disk,
            &tmp,
            &dest,
            bytes,
            Some(&meta_of(&inode.attrs)),
            false,
        ),
    }
}

/// A regular file in the backing tree holding exactly the bytes `inode` should have.
fn find_copy(
    disk: &dyn Disk,
    layout: &Layout,
    inode: &Inode,
    names: &[Vec<u8>],
) -> Option<PathBuf> {
    if inode.kind != Kind::File {
        return None;
    }
    names.iter().map(|n| layout.backing(n)).find(|p| {
        disk.stat(p)
            .is_ok_and(|st| st.kind == EntryKind::File && st.len == inode.size)
            && disk.read(p).is_ok_and(|b| crc32c(&b) == inode.dcrc)
    })
}

fn copy_into_place(disk: &dyn Disk, layout: &Layout, inode: &Inode, from: &Path) -> Result<()> {
    let bytes = disk
        .read(from)
        .map_err(|e| Error::io(format!("reading {}", from.display()), &e))?;
    write_back(disk, layout, inode, &bytes)
}

/// Moves something in the backing tree to `lost+found/`, returning where.
fn set_aside(disk: &dyn Disk, layout: &Layout, name: &[u8]) -> Result<PathBuf> {
    let mut moved = name.to_vec();
    moved.extend_from_slice(format!(".{}", Time::now().millis()).as_bytes());
    let dest = layout.lost_found().join(OsStr::from_bytes(&moved));
    store::rename(disk, &layout.backing(name), &dest)?;
    Ok(dest)
}

/// What `reconcile` found and did.
#[derive(Default, Debug)]
pub struct Reconciled {
    pub findings: Vec<Finding>,
    /// Files whose backing file is wrong and could not be restored.
    pub damaged: HashSet<Fid>,
    /// Backing files written (to be synced), and whether the tree's names changed.
    pub restored: Vec<(PathBuf, Kind)>,
    pub changed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// Only report (`check`, and read-only mounts).
    No,
    /// Restore what differs from the log, which is the truth.
    FromTheLog,
    /// The same, but a backing file that differs is first moved to `lost+found/`: after a
    /// salvage the log is known to miss entries, and the file may hold the only copy of one.
    KeepingWhatDiffers,
}

/// Holds `root/` against the namespace: restores from the log and moves unknown files to
/// `lost+found/`, or only reports.
fn reconcile(
    disk: &dyn Disk,
    layout: &Layout,
    ns: &Namespace,
    max_line: u64,
    repair: Repair,
) -> Result<Reconciled> {
    let (repair, keep_differing) = match repair {
        Repair::No => (false, false),
        Repair::FromTheLog => (true, false),
        Repair::KeepingWhatDiffers => (true, true),
    };
    let mut out = Reconciled::default();
    let root = layout.root();
    let names = disk
        .list(&root)
        .map_err(|e| Error::io(format!("listing {}", root.display()), &e))?;
    let strays: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| ns.lookup(ROOT, n).is_none())
        .cloned()
        .collect();
    let mut files: Vec<&Inode> = ns.files().collect();
    files.sort_by_key(|i| i.fid);
    let mut progress = crate::progress::Progress::new("checking backing files", files.len() as u64);
    for inode in files {
        progress.tick();
        let Some(problem) = backing_problem(disk, layout, inode) else {
            if repair && inode.kind == Kind::File && !meta_matches(disk, layout, inode) {
                // An attribute change whose entry had not reached the backing file.
                let path = layout.backing(&inode.name);
                store::set_meta(disk, &path, &meta_of(&inode.attrs))?;
                out.restored.push((path, inode.kind));
            }
            continue;
        };
        let name = name_str(&inode.name);
        if !repair {
            out.findings.push(Finding {
                what: format!("{name}: backing file {problem}"),
            });
            continue;
        }
        let mut kept = String::new();
        if keep_differing && disk.stat(&layout.backing(&inode.name)).is_ok() {
            let dest = set_aside(disk, layout, &inode.name)?;
            kept = format!(" (what was there is in {})", dest.display());
        }
        let restored = restore(disk, layout, inode, max_line).or_else(|e| {
            // The log no longer holds the bytes (they were compacted into a snapshot), but a
            // rename or exchange that had not reached the disk may have left them under
            // another name: take them from there.
            match find_copy(disk, layout, inode, &names) {
                Some(from) => copy_into_place(disk, layout, inode, &from),
                None => Err(e),
            }
        });
        match restored {
            Ok(()) => {
                out.changed = true;
                out.restored.push((layout.backing(&inode.name), inode.kind));
                out.findings.push(Finding {
                    what: format!("{name}: backing file {problem}; restored{kept}"),
                });
            }
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => {
                out.damaged.insert(inode.fid);
                out.findings.push(Finding {
                    what: format!(
                        "{name}: backing file {problem} and cannot be restored: {}; reads answer EIO{kept}",
                        e.reason
                    ),
                });
            }
        }
    }
    for name in strays {
        let shown = name_str(&name);
        if repair {
            let dest = set_aside(disk, layout, &name)?;
            out.changed = true;
            out.findings.push(Finding {
                what: format!(
                    "{shown}: in the backing tree but not in the log; moved to {}",
                    dest.display()
                ),
            });
        } else {
            out.findings.push(Finding {
                what: format!("{shown}: in the backing tree but not in the log"),
            });
        }
    }
    Ok(out)
}

/// A store brought to its last committed state, ready to serve.
pub struct Recovered {
    pub lock: StoreLock,
    pub ns: Namespace,
    pub log: LogWriter,
    pub damaged: HashSet<Fid>,
    pub findings: Vec<Finding>,
    /// What opening changed in the store, for the user to hear once (an upgrade).
    pub notices: Vec<String>,
    /// The log ends at a checkpoint or a snapshot: every backing file is durable. If not (the
    /// last process died), files it wrote may sit only in the page cache, even those recovery
    /// found right, and the next checkpoint must sync them all.
    pub backing_durable: bool,
}

/// Opens (or creates) a store and recovers it. See FORMAT.md, "Recovery".
pub fn recover(disk: &dyn Disk, layout: &Layout, opts: &Options) -> Result<Recovered> {
    let opened = store::open_store(
        disk,
        layout,
        store::Purpose::Serve {
            writable: !opts.read_only,
            allow_open: opts.allow_open_store,
        },
    )?;
    let lock = opened.lock;
    for e in &opened.exposures {
        warn!("--allow-open-store: {e}");
    }
    for n in &opened.notices {
        warn!("{n}");
    }
    let mut findings = Vec::new();
    if !opts.read_only {
        let n = store::clear_tmp(disk, layout)?;
        if n > 0 {
            info!("removed {n} temp files left by an interrupted write");
        }
    }
    if opts.salvage && !opts.read_only {
        findings.extend(salvage(disk, layout, opts)?);
    }
    let scan = scan_log(disk, layout)?;
    let max_line = max_line_for(opts.max_file_size);
    let mut ns = scan.ns;
    let log = match scan.last {
        None if opts.read_only => {
            return Err(err!(
                EROFS,
                "{} has no log; mount it writable once",
                layout.store.display()
            ))
        }
        None => new_log(disk, layout, &mut ns, max_line)?,
        Some((path, header, good_end)) => {
            if let Some((torn_path, offset, reason)) = &scan.torn {
                let what = format!(
                    "log {}: torn last entry at offset {offset} ({reason}); cut off",
                    torn_path.display()
                );
                warn!("{what}");
                findings.push(Finding { what });
                if !opts.read_only {
                    keep_cut_bytes(disk, torn_path, *offset)?;
                    cut(disk, torn_path, *offset)?;
                }
            }
            if header.max_line == 0 {
                // Even the header was torn: the segment never held an entry.
                store::remove(disk, &path)?;
                new_log(disk, layout, &mut ns, max_line)?
            } else {
                LogWriter::open(disk, &path, &header, good_end)?
            }
        }
    };
    // Every backing file is read and checked against its CRC32C in the log: bit rot keeps
    // size and mtime, and a corrupt file must never be served as if it were fine.
    let repair = if opts.read_only {
        Repair::No
    } else {
        Repair::FromTheLog
    };
    let reconciled = reconcile(disk, layout, &ns, log.max_line().max(max_line), repair)?;
    if opts.read_only && (!reconciled.findings.is_empty() || scan.torn.is_some()) {
        // Read-only, nothing can be repaired, and the backing files are not what the log
        // says: serving them would show a state that was never committed.
        return Err(err!(
            EROFS,
            "{} needs recovery ({}); mount it once without --read-only",
            layout.store.display(),
            reconciled
                .findings
                .first()
                .map(|f| f.what.clone())
                .unwrap_or_else(|| "the log ends in a torn entry".into())
        ));
    }
    for f in &reconciled.findings {
        warn!("recovery: {f}");
    }
    if reconciled.changed || !reconciled.restored.is_empty() {
        sync_restored(disk, layout, &reconciled.restored)?;
    }
    findings.extend(reconciled.findings);
    info!(
        "recovered {}: {} entries in {} log segments, {} files",
        layout.store.display(),
        scan.entries,
        scan.segments,
        ns.file_count()
    );
    let backing_durable = scan
        .checkpoint
        .is_some_and(|(upto, _)| ns.last_seq() <= upto + 1);
    Ok(Recovered {
        lock,
        ns,
        log,
        damaged: reconciled.damaged,
        findings,
        notices: opened.notices,
        backing_durable,
    })
}

/// Where a salvage starts: as `start_state`, but a damaged manifest gives way to the newest
/// snapshot whose next segment is there (any snapshot with its following segments is a whole
/// state: compaction writes both before its manifest), and a damaged snapshot gives the files
/// its good lines name (the backing files of the others are then strays, kept in `lost+found/`).
fn salvage_start(
    disk: &dyn Disk,
    layout: &Layout,
    findings: &mut Vec<Finding>,
) -> Result<(Namespace, Vec<(Seq, PathBuf)>)> {
    let log_dir = layout.log_dir();
    let mut segments = list_segments(disk, &log_dir)?;
    let upto = match read_manifest(disk, layout) {
        Ok(None) => return Ok((Namespace::new(), segments)),
        Ok(Some(m)) => m.snapshot,
        Err(e) => {
            let path = log_dir.join(log::MANIFEST);
            let bytes = disk
                .read(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?;
            let kept = keep_beside(disk, &path, "bad", &bytes)?;
            let names = disk
                .list(&log_dir)
                .map_err(|e| Error::io(format!("listing {}", log_dir.display()), &e))?;
            let newest = names
                .iter()
                .filter_map(|n| log::parse_snapshot_name(std::str::from_utf8(n).ok()?))
                .filter(|n| segments.iter().any(|(start, _)| *start == n + 1))
                .max()
                .ok_or_else(|| err!(EIO, "{}; and no snapshot can take its place", e.reason))?;
            findings.push(Finding {
                what: format!(
                    "{}; snapshot {newest} is used instead{}",
                    e.reason,
                    kept.map(|p| format!(", and its bytes are in {}", p.display()))
                        .unwrap_or_default()
                ),
            });
            newest
        }
    };
    let path = log_dir.join(log::snapshot_name(upto));
    let bytes = disk
        .read(&path)
        .map_err(|e| Error::io(format!("reading snapshot {}", path.display()), &e))?;
    let snap = match log::decode_snapshot(&bytes) {
        Ok(snap) => snap,
        Err(_) => salvaged_snapshot(disk, layout, &path, upto, &bytes, findings)?,
    };
    segments.retain(|(start, _)| *start > upto);
    if segments.first().map(|(start, _)| *start) != Some(upto + 1) {
        return Err(err!(
            EIO,
            "log segment {}, which follows snapshot {upto}, is missing",
            log::segment_name(upto + 1)
        ));
    }
    Ok((Namespace::from_snapshot(&snap)?, segments))
}

/// The snapshot `upto` from the lines of it that check out; each other line is dropped, named
/// and kept beside it. A damaged header's fields come from elsewhere: `upto` from the name,
/// the next fid from the files, the root's attributes from the store directory.
fn salvaged_snapshot(
    disk: &dyn Disk,
    layout: &Layout,
    path: &Path,
    upto: Seq,
    bytes: &[u8],
    findings: &mut Vec<Finding>,
) -> Result<log::Snapshot> {
    let read = log::salvage_snapshot(bytes);
    let mut bad = read.bad;
    let (mut fids, mut names) = (HashSet::new(), HashSet::new());
    let mut files = Vec::new();
    for (offset, line, f) in read.files {
        if f.fid <= ROOT || f.dir != ROOT || !fids.insert(f.fid) || !names.insert(f.name.clone()) {
            let why = "the file does not fit the ones before it".to_string();
            bad.push((offset, line, why));
            continue;
        }
        files.push(f);
    }
    // The lines after the header: the header's count of files should match them.
    let lines = files.len() + bad.iter().filter(|(offset, ..)| *offset > 0).count();
    for (offset, line, why) in bad {
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
    let (next_fid, root) = match read.head {
        Some((_, next_fid, root, count)) => {
            if count != lines as u64 {
                findings.push(Finding {
                    what: format!(
                        "snapshot {}: its header names {count} files, {lines} lines follow",
                        path.display()
                    ),
                });
            }
            (next_fid, root)
        }
        None => {
            findings.push(Finding {
                what: format!(
                    "snapshot {}: no readable header; the root directory's attributes are new",
                    path.display()
                ),
            });
            (ROOT + 1, root_attrs(disk, layout)?)
        }
    };
    Ok(log::Snapshot {
        upto,
        next_fid,
        root,
        files,
    })
}

/// Keeps what a cut removes beside the segment (`<segment>.cut-<offset>`): nothing the log held
/// is destroyed, even what was never acknowledged.
fn keep_cut_bytes(disk: &dyn Disk, path: &Path, offset: u64) -> Result<()> {
    let bytes = disk
        .read(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?;
    let tail = &bytes[(offset as usize).min(bytes.len())..];
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
fn keep_beside(
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

fn cut(disk: &dyn Disk, path: &Path, offset: u64) -> Result<()> {
    let f = disk
        .open_file(path, false)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    f.set_len(offset)
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io(format!("cutting {}", path.display()), &e))
}

/// A new store's first segment, holding the root directory's attributes as its first entry.
fn new_log(
    disk: &dyn Disk,
    layout: &Layout,
    ns: &mut Namespace,
    max_line: u64,
) -> Result<LogWriter> {
    let start = ns.last_seq() + 1;
    let mut log = LogWriter::create(disk, &layout.log_dir(), start, max_line)?;
    let entry = Entry {
        seq: start,
        ts: Time::now().millis(),
        op: Op::Attr {
            fid: ROOT,
            dir: ROOT,
            name: Vec::new(),
            attrs: root_attrs(disk, layout)?,
        },
    };
    log.append(&encode_entry(&entry))?;
    log.sync()?;
    ns.apply(&entry, None)?;
    Ok(log)
}

/// A new root directory's attributes: 0755, owned as the store is, times now.
fn root_attrs(disk: &dyn Disk, layout: &Layout) -> Result<Attrs> {
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

/// Makes every restored backing file and the tree's names durable. A symlink cannot be
/// fsynced by itself: if one was restored, everything is synced.
fn sync_restored(disk: &dyn Disk, layout: &Layout, restored: &[(PathBuf, Kind)]) -> Result<()> {
    for (path, kind) in restored {
        if *kind == Kind::Symlink {
            disk.sync_everything(&layout.root())
                .map_err(|e| Error::io("syncfs of the backing tree", &e))?;
        } else {
            disk.sync_file(path)
                .map_err(|e| Error::io(format!("fsync of {}", path.display()), &e))?;
        }
    }
    store::sync_dir(disk, &layout.root())?;
    store::sync_dir(disk, &layout.lost_found())
}

/// The result of `recordfs check`.
pub struct CheckReport {
    pub problems: Vec<Finding>,
    pub entries: u64,
    pub segments: usize,
    pub files: usize,
}

/// Verifies a store offline without changing it: every log line's checksum and every backing
/// file's bytes against the log.
pub fn check(disk: &dyn Disk, layout: &Layout) -> Result<CheckReport> {
    let opened = store::open_store(disk, layout, store::Purpose::Check)?;
    let mut problems: Vec<Finding> = opened
        .exposures
        .iter()
        .map(|e| Finding {
            what: format!("{e} (the log holds every file's bytes, whatever its mode)"),
        })
        .collect();
    let scan = match scan_log(disk, layout) {
        Ok(s) => s,
        Err(e) => {
            problems.push(Finding { what: e.reason });
            return Ok(CheckReport {
                problems,
                entries: 0,
                segments: 0,
                files: 0,
            });
        }
    };
    if let Some((path, offset, reason)) = &scan.torn {
        problems.push(Finding {
            what: format!(
                "log {}: torn last entry at offset {offset} ({reason}); the next mount cuts it",
                path.display()
            ),
        });
    }
    if scan.last.is_none() {
        problems.push(Finding {
            what: "the store has no log".into(),
        });
    }
    let max_line = scan.last.as_ref().map(|(_, h, _)| h.max_line).unwrap_or(0);
    let reconciled = reconcile(disk, layout, &scan.ns, max_line, Repair::No)?;
    problems.extend(reconciled.findings);
    let leftovers = disk.list(&layout.tmp()).map(|d| d.len()).unwrap_or(0);
    if leftovers > 0 {
        problems.push(Finding {
            what: format!("{leftovers} temp files in tmp/ (the next mount removes them)"),
        });
    }
    Ok(CheckReport {
        problems,
        entries: scan.entries,
        segments: scan.segments,
        files: scan.ns.file_count(),
    })
}
