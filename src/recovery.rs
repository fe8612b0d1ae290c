//! Mounting after any crash, and checking a store offline. Both read the log the same way
//! (`scan_log`) and hold the backing tree against it the same way (`reconcile`); recovery
//! repairs what it finds, `check` only reports. FORMAT.md, "Recovery", is the procedure.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ::log::{info, warn};

use crate::error::{err, Error, Result};
use crate::log::{
    self, crc32c, encode_entry, list_segments, max_line_for, scan_segment, Attrs, Entry, Fid,
    Header, Kind, LogWriter, Op, Time, ROOT,
};
use crate::namespace::{Inode, Namespace};
use crate::options::Options;
use crate::store::{self, FileMeta, Layout, StoreLock};

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

struct LogScan {
    ns: Namespace,
    /// The last segment, where appends continue, and its good length.
    last: Option<(PathBuf, Header, u64)>,
    /// A torn last entry: where it starts, and why it is bad.
    torn: Option<(PathBuf, u64, String)>,
    segments: usize,
    entries: u64,
}

fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Reads every segment, checking each line and replaying the entries. Corruption in the
/// middle of the log is an error naming the segment, offset and last good sequence number.
fn scan_log(layout: &Layout) -> Result<LogScan> {
    let mut scan = LogScan {
        ns: Namespace::new(),
        last: None,
        torn: None,
        segments: 0,
        entries: 0,
    };
    let segments = list_segments(&layout.log_dir())?;
    let count = segments.len();
    for (i, (start, path)) in segments.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let expect = (scan.ns.last_seq() > 0).then(|| scan.ns.last_seq() + 1);
        if let Some(want) = expect {
            if start != want {
                return Err(err!(
                    EIO,
                    "log segment {} starts at entry {start}, but entry {want} was expected next",
                    path.display()
                ));
            }
        }
        let ns = &mut scan.ns;
        let entries = &mut scan.entries;
        let seg = scan_segment(&path, expect, |offset, entry| {
            let loc = matches!(entry.op, Op::Set { .. }).then_some(crate::namespace::ContentLoc {
                segment: start,
                offset,
            });
            *entries += 1;
            ns.apply(&entry, loc).map(|_| ()).map_err(|e| {
                err!(
                    EIO,
                    "log {} offset {offset}: entry {} does not fit the state before it: {}",
                    path.display(),
                    entry.seq,
                    e.reason
                )
            })
        })?;
        scan.segments += 1;
        if let Some(first) = seg.bad.first() {
            if seg.good_after_bad || !is_last {
                return Err(err!(
                    EIO,
                    "log {} is corrupt at offset {}: {}; entries after it are intact, so this is not a torn write. Last good entry before it: {}. The store is left as it is.",
                    path.display(),
                    first.offset,
                    first.reason,
                    first
                        .prev_seq
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "none".into())
                ));
            }
            scan.torn = Some((path.clone(), first.offset, first.reason.clone()));
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
fn backing_problem(layout: &Layout, inode: &Inode) -> Option<String> {
    let path = layout.backing(&inode.name);
    let md = match fs::symlink_metadata(&path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some("missing".into()),
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    match inode.kind {
        Kind::Symlink => {
            if !md.file_type().is_symlink() {
                return Some("not a symlink".into());
            }
            let target = fs::read_link(&path).ok()?;
            let want = inode.target.as_deref().map(Vec::as_slice).unwrap_or(&[]);
            (target.as_os_str().as_bytes() != want).then(|| "wrong symlink target".into())
        }
        Kind::File => {
            if !md.file_type().is_file() {
                return Some("not a regular file".into());
            }
            if md.len() != inode.size {
                return Some(format!("{} bytes, the log says {}", md.len(), inode.size));
            }
            match fs::read(&path) {
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
fn meta_matches(layout: &Layout, inode: &Inode) -> bool {
    fs::symlink_metadata(layout.backing(&inode.name)).is_ok_and(|md| {
        md.mode() & 0o7777 == inode.attrs.mode
            && (md.uid(), md.gid()) == (inode.attrs.uid, inode.attrs.gid)
            && (md.mtime(), md.mtime_nsec() as u32)
                == (inode.attrs.mtime.secs, inode.attrs.mtime.nsecs)
    })
}

/// Rewrites a backing file from the entry that holds its bytes.
fn restore(layout: &Layout, inode: &Inode, max_line: u64) -> Result<()> {
    let loc = inode
        .content
        .ok_or_else(|| err!(EIO, "the log no longer holds its bytes"))?;
    let segment = layout.log_dir().join(log::segment_name(loc.segment));
    let entry = log::read_entry_at(&segment, loc.offset, max_line)?;
    let Op::Set { data, .. } = entry.op else {
        return Err(err!(EIO, "the entry at its log position is not a SET"));
    };
    let dest = layout.backing(&inode.name);
    let tmp = layout.tmp().join(format!("restore.{}", inode.fid));
    match inode.kind {
        Kind::Symlink => {
            let _ = fs::remove_dir_all(&dest);
            store::replace_symlink(&tmp, &dest, &data.bytes, &meta_of(&inode.attrs))
        }
        _ => {
            if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&dest).map_err(|e| Error::io("removing a directory", &e))?;
            }
            store::replace_file(
                &tmp,
                &dest,
                &data.bytes,
                Some(&meta_of(&inode.attrs)),
                false,
            )
        }
    }
}

/// What `reconcile` found and did.
#[derive(Default, Debug)]
pub struct Reconciled {
    pub findings: Vec<Finding>,
    /// Files whose backing file is wrong and could not be restored.
    pub damaged: HashSet<Fid>,
    pub changed: bool,
}

/// Holds `root/` against the namespace. With `repair`, restores from the log and moves
/// unknown files to `lost+found/`; without, only reports.
fn reconcile(layout: &Layout, ns: &Namespace, max_line: u64, repair: bool) -> Result<Reconciled> {
    let mut out = Reconciled::default();
    let root = layout.root();
    for ent in
        fs::read_dir(&root).map_err(|e| Error::io(format!("listing {}", root.display()), &e))?
    {
        let ent = ent.map_err(|e| Error::io(format!("listing {}", root.display()), &e))?;
        let name = ent.file_name();
        if ns.lookup(ROOT, name.as_bytes()).is_some() {
            continue;
        }
        if repair {
            let mut moved = name.as_bytes().to_vec();
            moved.extend_from_slice(format!(".{}", Time::now().millis()).as_bytes());
            let dest = layout.lost_found().join(OsStr::from_bytes(&moved));
            store::rename(&ent.path(), &dest)?;
            out.changed = true;
            out.findings.push(Finding {
                what: format!(
                    "{}: in the backing tree but not in the log; moved to {}",
                    name.to_string_lossy(),
                    dest.display()
                ),
            });
        } else {
            out.findings.push(Finding {
                what: format!(
                    "{}: in the backing tree but not in the log",
                    name.to_string_lossy()
                ),
            });
        }
    }
    let mut files: Vec<&Inode> = ns.files().collect();
    files.sort_by_key(|i| i.fid);
    for inode in files {
        let Some(problem) = backing_problem(layout, inode) else {
            if repair && inode.kind == Kind::File && !meta_matches(layout, inode) {
                // An attribute change whose entry had not reached the backing file.
                store::set_meta(&layout.backing(&inode.name), &meta_of(&inode.attrs))?;
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
        match restore(layout, inode, max_line) {
            Ok(()) => {
                out.changed = true;
                out.findings.push(Finding {
                    what: format!("{name}: backing file {problem}; restored from the log"),
                });
            }
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => {
                out.damaged.insert(inode.fid);
                out.findings.push(Finding {
                    what: format!(
                        "{name}: backing file {problem} and cannot be restored: {}; reads answer EIO",
                        e.reason
                    ),
                });
            }
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
}

/// Opens (or creates) a store and recovers it. See FORMAT.md, "Recovery".
pub fn recover(layout: &Layout, opts: &Options) -> Result<Recovered> {
    let lock = store::open_store(layout, !opts.read_only)?;
    let mut findings = Vec::new();
    if !opts.read_only {
        let n = store::clear_tmp(layout)?;
        if n > 0 {
            info!("removed {n} temp files left by an interrupted write");
        }
    }
    let scan = scan_log(layout)?;
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
        None => new_log(layout, &mut ns, max_line)?,
        Some((path, header, good_end)) => {
            if let Some((torn_path, offset, reason)) = &scan.torn {
                let what = format!(
                    "log {}: torn last entry at offset {offset} ({reason}); cut off",
                    torn_path.display()
                );
                warn!("{what}");
                findings.push(Finding { what });
                if !opts.read_only {
                    cut(torn_path, *offset)?;
                }
            }
            if header.max_line == 0 {
                // Even the header was torn: the segment never held an entry.
                store::remove(&path)?;
                new_log(layout, &mut ns, max_line)?
            } else {
                LogWriter::open(&path, &header, good_end)?
            }
        }
    };
    // Every backing file is read and checked against its CRC32C in the log: bit rot keeps
    // size and mtime, and a corrupt file must never be served as if it were fine.
    let reconciled = reconcile(layout, &ns, log.max_line().max(max_line), !opts.read_only)?;
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
    if reconciled.changed {
        sync_tree(layout)?;
    }
    findings.extend(reconciled.findings);
    info!(
        "recovered {}: {} entries in {} log segments, {} files",
        layout.store.display(),
        scan.entries,
        scan.segments,
        ns.file_count()
    );
    Ok(Recovered {
        lock,
        ns,
        log,
        damaged: reconciled.damaged,
        findings,
    })
}

fn cut(path: &Path, offset: u64) -> Result<()> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    f.set_len(offset)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("cutting {}", path.display()), &e))
}

/// A new store's first segment, holding the root directory's attributes as its first entry.
fn new_log(layout: &Layout, ns: &mut Namespace, max_line: u64) -> Result<LogWriter> {
    let start = ns.last_seq() + 1;
    let mut log = LogWriter::create(&layout.log_dir(), start, max_line)?;
    let md = fs::metadata(&layout.store)
        .map_err(|e| Error::io(format!("stat of {}", layout.store.display()), &e))?;
    let now = Time::now();
    let entry = Entry {
        seq: start,
        ts: now.millis(),
        op: Op::Attr {
            fid: ROOT,
            dir: ROOT,
            name: Vec::new(),
            attrs: Attrs {
                mode: 0o755,
                uid: md.uid(),
                gid: md.gid(),
                atime: now,
                mtime: now,
                ctime: now,
            },
        },
    };
    log.append(&encode_entry(&entry))?;
    log.sync()?;
    ns.apply(&entry, None)?;
    Ok(log)
}

/// Makes every restored backing file and the tree's names durable.
pub fn sync_tree(layout: &Layout) -> Result<()> {
    let root =
        fs::File::open(layout.root()).map_err(|e| Error::io("opening the backing tree", &e))?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: valid descriptor.
    if unsafe { libc::syncfs(root.as_raw_fd()) } != 0 {
        return Err(Error::io(
            "syncfs of the backing tree",
            &std::io::Error::last_os_error(),
        ));
    }
    store::sync_dir(&layout.root())
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
pub fn check(layout: &Layout) -> Result<CheckReport> {
    let _lock = store::open_store(layout, false)?;
    let mut problems = Vec::new();
    let scan = match scan_log(layout) {
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
    let reconciled = reconcile(layout, &scan.ns, max_line, false)?;
    problems.extend(reconciled.findings);
    let leftovers = fs::read_dir(layout.tmp()).map(|d| d.count()).unwrap_or(0);
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
