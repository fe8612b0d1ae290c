//! Reading a store without changing it: `recordfs log` (the entries, as they stand in the log)
//! and `recordfs stats`. Both work on a mounted store too: the log is only ever appended to.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::limits::LONGEST_LINE;
use crate::log::{decode_entry, for_each_line, list_segments, Op};
use crate::record::is_record_name;
use crate::recovery;
use crate::store::Layout;
use crate::types::{Fid, Kind, Seq, Time, ROOT};

/// Which entries `print_log` prints.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// The history of this path (names joined by `/`; the directories are the ones that hold
    /// it now, whatever they were called before): every entry of every file that ever held it,
    /// so a save by temp file and rename shows the bytes written under the temp name too.
    pub name: Option<Vec<u8>>,
    pub since: Option<Seq>,
    pub until: Option<Seq>,
}

/// A directory entry: the directory's fid and a name in it.
pub(crate) type Place<'a> = (Fid, &'a [u8]);

impl LogFilter {
    fn keeps(&self, seq: Seq, op: &Op, place: Option<Place>, fids: &HashSet<Fid>) -> bool {
        if self.since.is_some_and(|s| seq < s) || self.until.is_some_and(|u| seq > u) {
            return false;
        }
        match place {
            None => true,
            Some(want) => {
                op.places().contains(&want) || op.fid().is_some_and(|f| fids.contains(&f))
            }
        }
    }
}

/// The directory entry `path` names: its last name in the directory its other names lead to
/// now (the root for a bare name). ENOENT if one of those directories does not exist.
pub(crate) fn place_of<'a>(disk: &dyn Disk, layout: &Layout, path: &'a [u8]) -> Result<Place<'a>> {
    let Some(slash) = path.iter().rposition(|b| *b == b'/') else {
        return Ok((ROOT, path));
    };
    let ns = recovery::replay(disk, layout)?.ns;
    let mut dir = ROOT;
    for name in path[..slash]
        .split(|b| *b == b'/')
        .filter(|n| !n.is_empty())
    {
        dir = ns
            .lookup(dir, name)
            .filter(|i| i.kind == Kind::Dir)
            .map(|i| i.fid)
            .ok_or_else(|| {
                crate::error::err!(
                    ENOENT,
                    "{}: no such directory in the store now",
                    String::from_utf8_lossy(&path[..slash])
                )
            })?;
    }
    Ok((dir, &path[slash + 1..]))
}

/// The kept old segments (log/old/), then the live ones: the whole history there is.
pub(crate) fn all_segments(
    disk: &dyn Disk,
    layout: &Layout,
) -> Result<Vec<(Seq, std::path::PathBuf)>> {
    let mut all = crate::log::old_segments(disk, layout)?;
    all.extend(list_segments(disk, &layout.log_dir())?);
    Ok(all)
}

/// The files that ever held `place` (a first pass over the log).
pub(crate) fn files_named(disk: &dyn Disk, layout: &Layout, place: Place) -> Result<HashSet<Fid>> {
    let mut fids = HashSet::new();
    for (_, path) in all_segments(disk, layout)? {
        for_each_line(disk, &path, LONGEST_LINE, |offset, line| {
            let Some(e) = (offset > 0).then(|| decode_entry(line).ok()).flatten() else {
                return Ok(());
            };
            match &e.op {
                Op::Rename {
                    dir,
                    name: from,
                    to_dir,
                    to_name,
                    replaced,
                    exchange,
                    ..
                } => {
                    if (*to_dir, to_name.as_slice()) == place {
                        fids.extend(e.op.fid());
                    }
                    // An exchange moves the other file to `from`.
                    if *exchange && (*dir, from.as_slice()) == place {
                        fids.extend(*replaced);
                    }
                }
                op if op.places().first() == Some(&place) => fids.extend(op.fid()),
                _ => {}
            }
            Ok(())
        })?;
    }
    Ok(fids)
}

/// Writes every entry the filter keeps, one per line exactly as in the log (JSON, jq-ready),
/// oldest first. Lines that do not check out are reported on stderr and skipped. Returns how
/// many were written.
pub fn print_log(
    disk: &dyn Disk,
    layout: &Layout,
    filter: &LogFilter,
    out: &mut dyn Write,
) -> Result<u64> {
    crate::store::require_store(disk, layout)?;
    let place = match &filter.name {
        Some(path) => Some(place_of(disk, layout, path)?),
        None => None,
    };
    let fids = match place {
        Some(place) => files_named(disk, layout, place)?,
        None => HashSet::new(),
    };
    let mut printed = 0;
    for (_, path) in all_segments(disk, layout)? {
        for_each_line(disk, &path, LONGEST_LINE, |offset, line| {
            if offset == 0 {
                return Ok(()); // the segment's header
            }
            match decode_entry(line) {
                Ok(e) if filter.keeps(e.seq, &e.op, place, &fids) => {
                    out.write_all(line)
                        .and_then(|_| out.write_all(b"\n"))
                        .map_err(|e| Error::io("writing the output", &e))?;
                    printed += 1;
                }
                Ok(_) => {}
                Err(why) => eprintln!(
                    "recordfs log: {} offset {offset}: skipped: {}",
                    path.display(),
                    why.reason
                ),
            }
            Ok(())
        })?;
    }
    Ok(printed)
}

/// The files under one directory at the top of the tree.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Collection {
    pub records: u64,
    pub record_bytes: u64,
    pub plain_files: u64,
    pub plain_bytes: u64,
}

/// What `recordfs stats` reports.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub records: u64,
    pub record_bytes: u64,
    pub plain_files: u64,
    pub plain_bytes: u64,
    pub symlinks: u64,
    pub directories: u64,
    /// Per directory at the top of the tree (a collection): what is anywhere under it.
    pub collections: std::collections::BTreeMap<String, Collection>,
    pub log_segments: u64,
    pub log_bytes: u64,
    pub log_entries: u64,
    pub last_seq: Seq,
    pub last_checkpoint_seq: Option<Seq>,
    /// Milliseconds since the Unix epoch (for a compaction: when its new segment began).
    pub last_checkpoint_time: Option<u64>,
    /// The same, as ISO 8601 in UTC.
    pub last_checkpoint_at: Option<String>,
    /// The snapshot the manifest names (none before the first compaction), the layers in its
    /// chain (FORMAT.md, "Snapshot layers"; 0 for a whole one), and the bytes of the chain.
    pub snapshot_seq: Option<Seq>,
    pub snapshot_layers: u64,
    pub snapshot_bytes: u64,
    /// Old segments kept in log/old/, and the bytes of everything there.
    pub kept_old_logs: u64,
    pub kept_old_log_bytes: u64,
    /// The first entry of the oldest segment kept, and its time: `history`, `show` and
    /// `restore` reach back to it. It moves forward only when a compaction retires a segment
    /// past `--keep-logs`.
    pub history_from_seq: Option<Seq>,
    pub history_from_time: Option<u64>,
    pub history_from_at: Option<String>,
}

pub fn stats(disk: &dyn Disk, layout: &Layout) -> Result<Stats> {
    crate::store::require_store(disk, layout)?;
    let scan = recovery::replay(disk, layout)?;
    let mut s = Stats {
        log_entries: scan.entries,
        last_seq: scan.ns.last_seq(),
        last_checkpoint_seq: scan.checkpoint.map(|(seq, _)| seq),
        last_checkpoint_time: scan.checkpoint.map(|(_, ts)| ts),
        last_checkpoint_at: scan
            .checkpoint
            .map(|(_, ts)| Time::from_millis(ts).iso8601()),
        snapshot_seq: scan.chain.last().map(|l| l.upto),
        snapshot_layers: scan.chain.len().saturating_sub(1) as u64,
        snapshot_bytes: scan.chain.iter().map(|l| l.bytes).sum(),
        ..Stats::default()
    };
    for inode in scan.ns.files() {
        let record = is_record_name(&inode.name.bytes());
        match inode.kind {
            Kind::Symlink => s.symlinks += 1,
            Kind::Dir => s.directories += 1,
            Kind::File if record => {
                (s.records, s.record_bytes) = (s.records + 1, s.record_bytes + inode.size)
            }
            Kind::File => {
                (s.plain_files, s.plain_bytes) = (s.plain_files + 1, s.plain_bytes + inode.size)
            }
        }
        // The directory at the top of the tree that this file is under, if any.
        let mut top = inode;
        while let Some(parent) = scan.ns.get(top.parent).filter(|p| p.fid != ROOT) {
            top = parent;
        }
        if inode.kind != Kind::File || top.fid == inode.fid {
            continue;
        }
        let c = s
            .collections
            .entry(String::from_utf8_lossy(&top.name.bytes()).into_owned())
            .or_default();
        match record {
            true => (c.records, c.record_bytes) = (c.records + 1, c.record_bytes + inode.size),
            false => {
                (c.plain_files, c.plain_bytes) = (c.plain_files + 1, c.plain_bytes + inode.size)
            }
        }
    }
    s.kept_old_logs = crate::log::old_segments(disk, layout)?.len() as u64;
    if let Ok(names) = disk.list(&layout.old_logs()) {
        for n in names {
            let path = layout.old_logs().join(std::ffi::OsStr::from_bytes(&n));
            s.kept_old_log_bytes += disk.stat(&path).map(|st| st.len).unwrap_or(0);
        }
    }
    if let Some((_, oldest)) = all_segments(disk, layout)?.first() {
        for_each_line(disk, oldest, LONGEST_LINE, |offset, line| {
            if offset > 0 && s.history_from_seq.is_none() {
                if let Ok(e) = decode_entry(line) {
                    s.history_from_seq = Some(e.seq);
                    s.history_from_time = Some(e.ts);
                    s.history_from_at = Some(Time::from_millis(e.ts).iso8601());
                }
            }
            Ok(())
        })?;
    }
    for (_, path) in list_segments(disk, &layout.log_dir())? {
        s.log_segments += 1;
        s.log_bytes += disk
            .stat(&path)
            .map_err(|e| Error::io(format!("stat of {}", path.display()), &e))?
            .len;
    }
    Ok(s)
}

impl Stats {
    /// The report for people.
    pub fn text(&self, store: &std::path::Path) -> String {
        let checkpoint = match (self.last_checkpoint_seq, &self.last_checkpoint_at) {
            (Some(seq), Some(at)) => format!("entry {seq} at {at} (UTC)"),
            _ => "none yet".into(),
        };
        let history = match (self.history_from_seq, &self.history_from_at) {
            (Some(seq), Some(at)) => format!("from entry {seq} at {at} (UTC), the oldest kept"),
            _ => "none yet".into(),
        };
        let snapshot = match self.snapshot_seq {
            Some(seq) => {
                let chain = match self.snapshot_layers {
                    0 => "whole".to_string(),
                    1 => "a layer over a whole one".to_string(),
                    n => format!("{n} layers over a whole one"),
                };
                format!("entry {seq}, {chain}, {} bytes", self.snapshot_bytes)
            }
            None => "none yet".into(),
        };
        let mut collections = String::new();
        for (name, c) in &self.collections {
            collections += &format!(
                "    {name}/  {} records ({} bytes), {} plain files ({} bytes)\n",
                c.records, c.record_bytes, c.plain_files, c.plain_bytes
            );
        }
        format!(
            "store {}\n  records      {} ({} bytes)\n  plain files  {} ({} bytes)\n  symlinks     {}\n  directories  {}\n{collections}  log          {} segments, {} bytes, {} entries, last entry {}\n  checkpoint   {checkpoint}\n  snapshot     {snapshot}\n  old logs     {} segments, {} bytes in log/old/\n  history      {history}\n",
            String::from_utf8_lossy(store.as_os_str().as_bytes()),
            self.records,
            self.record_bytes,
            self.plain_files,
            self.plain_bytes,
            self.symlinks,
            self.directories,
            self.log_segments,
            self.log_bytes,
            self.log_entries,
            self.last_seq,
            self.kept_old_logs,
            self.kept_old_log_bytes
        )
    }
}
