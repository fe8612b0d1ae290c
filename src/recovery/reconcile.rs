//! Holding the backing tree against the namespace: every backing file checked by length and
//! CRC32C, restored from the log (or from a copy under another name), strays set aside.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::scan::{name_str, Finding, Tail};
use crate::disk::{Disk, EntryKind, FileMeta};
use crate::error::{err, Error, Result};
use crate::log::{self, crc32c, Op};
use crate::namespace::{Inode, Namespace};
use crate::store::{self, Layout};
use crate::types::{Fid, Kind, Time, ROOT};

/// How a backing file (at `rel` under `root/`) differs from what the log says it holds. A
/// regular file's bytes are read and checked against their CRC32C only with `read`; without,
/// its kind and length are.
fn backing_problem(
    disk: &dyn Disk,
    layout: &Layout,
    inode: &Inode,
    rel: &[u8],
    read: bool,
) -> Option<String> {
    let path = layout.backing(rel);
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
            let want = inode.extras.target().map_or(&[][..], |t| t.as_slice());
            (target != want).then(|| "wrong symlink target".into())
        }
        Kind::File => {
            if st.kind != EntryKind::File {
                return Some("not a regular file".into());
            }
            if st.len != inode.size {
                return Some(format!("{} bytes, the log says {}", st.len, inode.size));
            }
            if !read {
                return None;
            }
            match disk.read(&path) {
                Ok(bytes) if crc32c(&bytes) != inode.dcrc => {
                    Some("content differs from the log (checksum)".into())
                }
                Ok(_) => None,
                Err(e) => Some(format!("unreadable: {e}")),
            }
        }
        Kind::Dir => (st.kind != EntryKind::Dir).then(|| "not a directory".into()),
    }
}

/// What `reconcile` looks at.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    /// Every name in the backing tree, every backing file's bytes read (`check`, a salvage,
    /// `--verify`, a log cut short).
    All,
    /// What the entries after the last checkpoint touched (a mount): the checkpoint vouches
    /// for the rest of the tree (the write-ahead rule: the backing tree changes only for
    /// entries durable in the log, and a checkpoint is written once they all reached the
    /// disk), whose bytes are checked at their first read.
    Tail(&'a Tail),
}

impl Scope<'_> {
    /// Every directory, and the paths the tail touched, as the namespace has them now, each
    /// with whether all under it is touched too: every name of every file it names (its
    /// attributes or bytes may be half written), and every directory entry it gives or takes
    /// (a name made, removed or moved; a directory moved there brings everything in it).
    /// None for `All`.
    fn roots(&self, ns: &Namespace) -> Option<BTreeMap<Vec<u8>, bool>> {
        let Scope::Tail(tail) = self else {
            return None;
        };
        let mut roots: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        // Every directory too, by itself: a stat each (a store holds far fewer directories
        // than files), so that one lost from the backing tree is made again before anything
        // is written into it. A file is checked at its first read.
        for dir in ns.files().filter(|i| i.kind == Kind::Dir) {
            roots.extend(ns.paths(dir.fid).into_iter().map(|rel| (rel, false)));
        }
        for fid in tail.fids().filter(|f| *f != ROOT) {
            for rel in ns.paths(fid) {
                roots.entry(rel).or_insert(false);
            }
        }
        for (dir, name) in tail.places().filter(|(_, name)| !name.is_empty()) {
            // A directory gone from the namespace took its entries along: the place of its
            // own removal, in a directory still there (the root at last), is a root.
            let Some(mut rel) = ns.get(dir).and_then(|_| ns.path(dir)) else {
                continue;
            };
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name);
            roots.insert(rel, true);
        }
        Some(roots)
    }

    /// The files whose bytes are read: the tail's files, and what each name it gives or
    /// takes holds now (moved there, or exchanged). None for all.
    fn read(&self, ns: &Namespace) -> Option<HashSet<Fid>> {
        let Scope::Tail(tail) = self else {
            return None;
        };
        let mut fids: HashSet<Fid> = tail.fids().collect();
        fids.extend(
            tail.places()
                .filter_map(|(dir, name)| Some(ns.lookup(dir, name)?.fid)),
        );
        Some(fids)
    }
}

/// The file or directory at `rel` in the namespace.
fn resolve<'a>(ns: &'a Namespace, rel: &[u8]) -> Option<&'a Inode> {
    let mut at = ns.get(ROOT)?;
    for name in rel.split(|b| *b == b'/') {
        at = ns.lookup(at.fid, name)?;
    }
    Some(at)
}

/// What the namespace holds at each of `roots`, and under those marked so; every inode with
/// each of its paths for `None` (all).
fn expected<'a>(
    ns: &'a Namespace,
    roots: Option<&BTreeMap<Vec<u8>, bool>>,
) -> Vec<(&'a Inode, Vec<u8>)> {
    let Some(roots) = roots else {
        return ns
            .files()
            .flat_map(|i| ns.paths(i.fid).into_iter().map(move |rel| (i, rel)))
            .collect();
    };
    let mut out = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for (rel, under) in roots {
        let Some(inode) = resolve(ns, rel) else {
            continue;
        };
        let mut todo = vec![(inode, rel.clone())];
        while let Some((inode, rel)) = todo.pop() {
            if !seen.insert(rel.clone()) {
                continue;
            }
            if *under && inode.kind == Kind::Dir {
                for (name, child) in ns.list(inode.fid) {
                    todo.push((child, [rel.as_slice(), b"/", &name].concat()));
                }
            }
            out.push((inode, rel));
        }
    }
    out
}

/// What the backing tree holds at each of `roots`, and under those marked so; every name in
/// it for `None` (all).
fn found(
    disk: &dyn Disk,
    layout: &Layout,
    roots: Option<&BTreeMap<Vec<u8>, bool>>,
) -> Result<Vec<(Vec<u8>, EntryKind)>> {
    let Some(roots) = roots else {
        return walk(disk, layout, Vec::new());
    };
    let mut out = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for (rel, under) in roots {
        let kind = match disk.stat(&layout.backing(rel)) {
            Ok(st) => st.kind,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                let path = layout.backing(rel);
                return Err(Error::io(format!("stat of {}", path.display()), &e));
            }
        };
        let mut here = vec![(rel.clone(), kind)];
        if *under && kind == EntryKind::Dir {
            here.extend(walk(disk, layout, rel.clone())?);
        }
        out.extend(here.into_iter().filter(|(rel, _)| seen.insert(rel.clone())));
    }
    out.sort_by_key(|(rel, _)| rel.iter().filter(|b| **b == b'/').count());
    Ok(out)
}

/// Whether a backing file's mode, owner and mtime are the log's.
fn meta_matches(disk: &dyn Disk, layout: &Layout, inode: &Inode, rel: &[u8]) -> bool {
    disk.stat(&layout.backing(rel)).is_ok_and(|st| {
        st.mode == inode.attrs.mode
            && (st.uid, st.gid) == (inode.attrs.uid, inode.attrs.gid)
            && st.mtime == inode.attrs.mtime
    })
}

/// Rewrites a backing file from the entry that holds its bytes; makes a directory.
fn restore(
    disk: &dyn Disk,
    layout: &Layout,
    inode: &Inode,
    rel: &[u8],
    max_line: u64,
) -> Result<()> {
    if inode.kind == Kind::Dir {
        if disk.stat(&layout.backing(rel)).is_ok() {
            set_aside(disk, layout, rel)?;
        }
        return store::make_dir(disk, &layout.backing(rel));
    }
    // A symlink's target is in the namespace itself (snapshots keep it): no log needed.
    if let (Kind::Symlink, Some(target)) = (inode.kind, inode.extras.target()) {
        return write_back(disk, layout, inode, rel, target);
    }
    let loc = inode
        .content
        .get()
        .ok_or_else(|| err!(EIO, "the log no longer holds its bytes"))?;
    let segment = layout.log_dir().join(log::segment_name(loc.segment));
    let entry = log::read_entry_at(disk, &segment, loc.offset, max_line)?;
    let Op::Set { data, .. } = entry.op else {
        return Err(err!(EIO, "the entry at its log position is not a SET"));
    };
    write_back(disk, layout, inode, rel, &data.bytes)
}

/// Puts `bytes` in place as the backing file (or symlink) of `inode`, with its attributes.
fn write_back(
    disk: &dyn Disk,
    layout: &Layout,
    inode: &Inode,
    rel: &[u8],
    bytes: &[u8],
) -> Result<()> {
    let dest = layout.backing(rel);
    if disk.stat(&dest).is_ok_and(|st| st.kind == EntryKind::Dir) {
        // A file is owed this name: set the directory aside rather than delete what is in it.
        set_aside(disk, layout, rel)?;
    }
    let tmp = layout.tmp().join(format!("restore.{}", inode.fid));
    match inode.kind {
        Kind::Symlink => store::replace_symlink(disk, &tmp, &dest, bytes),
        _ => store::replace_file(
            disk,
            &tmp,
            &dest,
            bytes,
            Some(&FileMeta::of(&inode.attrs)),
            false,
        ),
    }
}

/// The bytes of a file whose last change is a `PATCH`: its patches since its last `SET`
/// replayed onto that `SET`'s bytes, or (none since the checkpoint) onto its backing file as
/// a crash left it, or onto a copy a lost rename left elsewhere; whatever gives the log's
/// CRC32C (`apply_patch` says why a copy left part way between versions does).
fn rebuild(
    disk: &dyn Disk,
    layout: &Layout,
    inode: &Inode,
    candidates: &[&[u8]],
    chain: &[crate::namespace::ContentLoc],
    max_line: u64,
) -> Result<Vec<u8>> {
    let mut base: Option<Vec<u8>> = None;
    let mut patches = Vec::new();
    for loc in chain {
        let segment = layout.log_dir().join(log::segment_name(loc.segment));
        match log::read_entry_at(disk, &segment, loc.offset, max_line)?.op {
            Op::Set { data, .. } => {
                base = Some(data.bytes.to_vec());
                patches.clear();
            }
            Op::Patch { len, ranges, .. } => patches.push((len, ranges)),
            _ => {
                return Err(err!(
                    EIO,
                    "the entry at a log position is not its SET or PATCH"
                ))
            }
        }
    }
    if patches.is_empty() {
        return Err(err!(EIO, "the log no longer holds its bytes"));
    }
    let replay = |mut bytes: Vec<u8>| {
        for (len, ranges) in &patches {
            log::apply_patch(&mut bytes, *len, ranges);
        }
        (bytes.len() as u64 == inode.size && crc32c(&bytes) == inode.dcrc).then_some(bytes)
    };
    let found = match base {
        Some(bytes) => replay(bytes),
        None => candidates
            .iter()
            .filter(|rel| {
                disk.stat(&layout.backing(rel))
                    .is_ok_and(|st| st.kind == EntryKind::File)
            })
            .find_map(|rel| disk.read(&layout.backing(rel)).ok().and_then(replay)),
    };
    found.ok_or_else(|| {
        err!(
            EIO,
            "its last versions are patches, and no copy in the backing tree gives its bytes"
        )
    })
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

fn copy_into_place(
    disk: &dyn Disk,
    layout: &Layout,
    inode: &Inode,
    rel: &[u8],
    from: &Path,
) -> Result<()> {
    let bytes = disk
        .read(from)
        .map_err(|e| Error::io(format!("reading {}", from.display()), &e))?;
    write_back(disk, layout, inode, rel, &bytes)
}

/// Moves something in the backing tree (a file, or a directory with all in it) to
/// `lost+found/`, returning where: its path there is its path in the tree with `/` written
/// `%2F` (and `%` written `%25`), and the time.
fn set_aside(disk: &dyn Disk, layout: &Layout, name: &[u8]) -> Result<PathBuf> {
    let mut moved = Vec::with_capacity(name.len() + 16);
    for b in name {
        match b {
            b'/' => moved.extend_from_slice(b"%2F"),
            b'%' => moved.extend_from_slice(b"%25"),
            b => moved.push(*b),
        }
    }
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
pub(super) enum Repair {
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
pub(super) fn reconcile(
    disk: &dyn Disk,
    layout: &Layout,
    ns: &Namespace,
    max_line: u64,
    repair: Repair,
    scope: Scope,
    tail: Option<&Tail>,
) -> Result<Reconciled> {
    let (repair, keep_differing) = match repair {
        Repair::No => (false, false),
        Repair::FromTheLog => (true, false),
        Repair::KeepingWhatDiffers => (true, true),
    };
    let mut out = Reconciled::default();
    let roots = scope.roots(ns);
    let found = found(disk, layout, roots.as_ref())?;
    // Every inode in scope with its path; directories before what is in them.
    let mut files = expected(ns, roots.as_ref());
    files.sort_by_key(|(i, rel)| (rel.iter().filter(|b| **b == b'/').count(), i.fid));
    let expected: HashSet<&[u8]> = files.iter().map(|(_, rel)| rel.as_slice()).collect();
    // Regular files found anywhere, where a rename that had not reached the disk may have
    // left the bytes some file needs.
    let copies: Vec<Vec<u8>> = found
        .iter()
        .filter(|(_, kind)| *kind == EntryKind::File)
        .map(|(rel, _)| rel.clone())
        .collect();
    let read = scope.read(ns);
    let mut progress = crate::progress::Progress::new("checking backing files", files.len() as u64);
    for (inode, rel) in &files {
        progress.tick();
        let read_it = read.as_ref().is_none_or(|fids| fids.contains(&inode.fid));
        let Some(problem) = backing_problem(disk, layout, inode, rel, read_it) else {
            if repair && inode.kind == Kind::File && !meta_matches(disk, layout, inode, rel) {
                // An attribute change whose entry had not reached the backing file.
                let path = layout.backing(rel);
                store::set_meta(disk, &path, &FileMeta::of(&inode.attrs))?;
                out.restored.push((path, inode.kind));
            }
            continue;
        };
        let name = name_str(rel);
        if !repair {
            out.findings.push(Finding {
                what: format!("{name}: backing file {problem}"),
            });
            continue;
        }
        let mut kept = String::new();
        if keep_differing && inode.kind != Kind::Dir && disk.stat(&layout.backing(rel)).is_ok() {
            let dest = set_aside(disk, layout, rel)?;
            kept = format!(" (what was there is in {})", dest.display());
        }
        let patched = || -> Result<()> {
            let chain = tail.map(|t| t.content_of(inode.fid)).unwrap_or_default();
            let mut candidates: Vec<&[u8]> = vec![rel.as_slice()];
            candidates.extend(copies.iter().map(Vec::as_slice));
            let bytes = rebuild(disk, layout, inode, &candidates, &chain, max_line)?;
            write_back(disk, layout, inode, rel, &bytes)
        };
        let restored = restore(disk, layout, inode, rel, max_line).or_else(|e| {
            if inode.kind == Kind::File && patched().is_ok() {
                return Ok(());
            }
            // The log no longer holds the bytes (they were compacted into a snapshot), but a
            // rename or exchange that had not reached the disk may have left them under
            // another name: take them from there.
            match find_copy(disk, layout, inode, &copies) {
                Some(from) => copy_into_place(disk, layout, inode, rel, &from),
                None => Err(e),
            }
        });
        match restored {
            Ok(()) => {
                out.changed = true;
                out.restored.push((layout.backing(rel), inode.kind));
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
    // What the log does not name, outermost first: a directory goes aside with all in it.
    let mut aside: Vec<&[u8]> = Vec::new();
    for (rel, _) in &found {
        let under_aside = aside
            .iter()
            .any(|a| rel.starts_with(a) && rel.get(a.len()) == Some(&b'/'));
        // Gone already: in a directory set aside to make room for a file the log names.
        let gone = || disk.stat(&layout.backing(rel)).is_err();
        if expected.contains(rel.as_slice()) || under_aside || gone() {
            continue;
        }
        let shown = name_str(rel);
        if repair {
            let dest = set_aside(disk, layout, rel)?;
            aside.push(rel);
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

/// Every name under directory `from` in the backing tree (`root/` itself if empty) as a path
/// under `root/`, with what it is, each directory before what is in it. A directory's
/// contents are listed only if it is one the walk may enter (never through a symlink: `stat`
/// does not follow one).
fn walk(disk: &dyn Disk, layout: &Layout, from: Vec<u8>) -> Result<Vec<(Vec<u8>, EntryKind)>> {
    let mut out = Vec::new();
    let mut dirs: Vec<Vec<u8>> = vec![from];
    while let Some(dir) = dirs.pop() {
        let path = layout.backing(&dir);
        let names = disk
            .list(&path)
            .map_err(|e| Error::io(format!("listing {}", path.display()), &e))?;
        for name in names {
            let rel = match dir.is_empty() {
                true => name,
                false => [dir.as_slice(), b"/", &name].concat(),
            };
            let kind = disk
                .stat(&layout.backing(&rel))
                .map_err(|e| Error::io(format!("stat of {}", layout.backing(&rel).display()), &e))?
                .kind;
            if kind == EntryKind::Dir {
                dirs.push(rel.clone());
            }
            out.push((rel, kind));
        }
    }
    // Outermost first, so that a directory set aside takes what is in it along.
    out.sort_by_key(|(rel, _)| rel.iter().filter(|b| **b == b'/').count());
    Ok(out)
}

/// Makes every restored backing file and the tree's names durable. A symlink cannot be
/// fsynced by itself: if one was restored, everything is synced.
pub(super) fn sync_restored(
    disk: &dyn Disk,
    layout: &Layout,
    restored: &[(PathBuf, Kind)],
) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (path, kind) in restored {
        match kind {
            Kind::Symlink => disk
                .sync_everything(&layout.root())
                .map_err(|e| Error::io("syncfs of the backing tree", &e))?,
            Kind::Dir => store::sync_dir(disk, path)?,
            Kind::File => disk
                .sync_file(path)
                .map_err(|e| Error::io(format!("fsync of {}", path.display()), &e))?,
        }
        if let Some(parent) = path.parent().filter(|p| *p != layout.root()) {
            if !dirs.iter().any(|d| d == parent) {
                dirs.push(parent.to_owned());
            }
        }
    }
    // Deepest first: a directory's own name is synced by its parent after it.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        store::sync_dir(disk, &dir)?;
    }
    store::sync_dir(disk, &layout.root())?;
    store::sync_dir(disk, &layout.lost_found())
}
