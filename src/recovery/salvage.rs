//! `--salvage`: a log damaged in the middle replayed with every line that can be used; the
//! rest named and kept aside, and the result compacted (FORMAT.md, "Salvage").

use std::path::{Path, PathBuf};

use ::log::{info, warn};

use super::reconcile::{reconcile, Repair, Scope};
use super::scan::{keep_beside, name_str, read_manifest, scan_log, Finding};
use super::snapshot_salvage::salvaged_snapshot;
use crate::disk::Disk;
use crate::error::{err, Error, Result};
use crate::limits::{max_line_for, MAX_NAMED_DROPS};
use crate::log::{self, list_segments, LogWriter, Op};
use crate::namespace::Namespace;
use crate::options::Options;
use crate::store::{self, Layout};
use crate::types::Seq;

/// `--salvage`: brings a store whose log is damaged in the middle back to a sound state with
/// every commit the log still holds. Each line that cannot be used is dropped, named, and its
/// bytes kept in `log/<segment>.bad-<offset>`: a line that does not check out, an entry out of
/// order or one that does not fit the state before it (it built on a dropped one), and in the
/// last segment everything after a hole (never synced, as for a torn tail). The backing tree is
/// brought to the salvaged state, keeping aside whatever differs, and the state is compacted
/// into a snapshot, so the damaged segments are retired to `log/old/` and the store mounts
/// without `--salvage` from then on. A store that needs no salvage is left alone.
pub(super) fn salvage(disk: &dyn Disk, layout: &Layout, opts: &Options) -> Result<Vec<Finding>> {
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
    let reconciled = reconcile(
        disk,
        layout,
        &ns,
        max_line,
        Repair::KeepingWhatDiffers,
        Scope::All,
        // A salvage's log is known to miss entries: patches are not replayed onto what
        // the backing tree holds (a file whose bytes no copy holds leaves the state).
        None,
    )?;
    findings.extend(reconciled.findings);
    // A file whose bytes are nowhere any more leaves the mount rather than answer EIO for
    // good: what the backing tree held for it is in lost+found/, with the strays.
    for fid in &reconciled.damaged {
        if let Some(inode) = ns.forget(*fid) {
            findings.push(Finding {
                what: format!(
                    "{}: taken out of the store, since no version of it can be restored",
                    name_str(&inode.name.bytes())
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
            (Err(_), Some(Err(h))) => return Some(format!("segment header: {}", h.reason)),
            (Err(e), _) => return Some(e.reason),
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
    let snap = match log::load_snapshot(disk, &log_dir, upto) {
        Ok((snap, _)) => snap,
        Err(_) => salvaged_snapshot(disk, layout, upto, findings)?,
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
