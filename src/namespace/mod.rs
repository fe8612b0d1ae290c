//! The namespace: which names exist, which file (fid) each names, and every file's attributes
//! — but never its bytes, which live in the backing files (or, briefly, in the commit
//! pipeline). Live commits and recovery change it through the same `apply`, so replaying the
//! log rebuilds exactly the state the mount served.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{err, Result};
use crate::log::{FileRecord, Snapshot, SnapshotDelta};
use crate::types::{Attrs, Fid, Kind, Seq, Time, ROOT};

mod apply;
mod entries;
mod inodes;
mod parts;

pub use crate::name::{Name, NameBytes};
use entries::Entries;
use inodes::Inodes;
pub use parts::{Content, Extras, Link, Links};

/// Where the bytes of a file's current version stand in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentLoc {
    /// The segment's first sequence number (names the segment).
    pub segment: Seq,
    pub offset: u64,
}

#[derive(Clone, Debug)]
pub struct Inode {
    pub fid: Fid,
    /// The file's first name: `name` in directory `parent`. A directory has only this one.
    pub parent: Fid,
    pub name: Name,
    pub kind: Kind,
    pub attrs: Attrs,
    pub size: u64,
    /// CRC32C of the current bytes.
    pub dcrc: u32,
    /// The last entry that changed this file, bytes or attributes.
    pub last_seq: Seq,
    /// The entry holding the current bytes, if the log read so far has it.
    pub content: Content,
    /// For a directory, how many of its entries are directories: its link count is two more
    /// (its name and its own `.`, plus each child's `..`), as ext4 counts.
    pub subdirs: u32,
    /// Further names, a symlink's target, extended attributes.
    pub extras: Extras,
}

impl Inode {
    /// Every name of the file: its first, then its further names.
    pub fn names(&self) -> impl Iterator<Item = (Fid, NameBytes<'_>)> {
        let further = self
            .extras
            .links()
            .iter()
            .map(|(d, n)| (*d, NameBytes::Slice(n)));
        std::iter::once((self.parent, self.name.bytes())).chain(further)
    }

    /// Its link count, as ext4 counts: a file's names; for a directory its name, its `.` and
    /// each child directory's `..`.
    pub fn nlink(&self) -> u32 {
        match self.kind {
            Kind::Dir => 2 + self.subdirs,
            _ => 1 + self.extras.links().len() as u32,
        }
    }
}

pub struct Namespace {
    inodes: Inodes,
    entries: Entries,
    next_fid: Fid,
    last_seq: Seq,
    /// The snapshot the files touched (`Inodes`) are counted from: the one this namespace
    /// was built from, or the one its changes were last taken for (`take_changes`).
    since: Option<Seq>,
}

/// What an applied entry took out of the namespace: files that lost their last name.
#[derive(Debug, Default)]
pub struct Applied {
    pub removed: Vec<Inode>,
}

/// How a snapshot lists a file.
fn record(i: &Inode) -> FileRecord {
    FileRecord {
        fid: i.fid,
        dir: i.parent,
        name: i.name.clone(),
        kind: i.kind,
        attrs: i.attrs,
        len: i.size,
        dcrc: i.dcrc,
        target: i.extras.target().map(|t| t.to_vec()),
        xattrs: i.extras.xattrs().clone(),
        links: i.extras.links().to_vec(),
    }
}

fn time_of_millis(ms: u64) -> Time {
    Time {
        secs: (ms / 1000) as i64,
        nsecs: ((ms % 1000) * 1_000_000) as u32,
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Namespace {
    /// An empty root directory. Its real attributes come from the log's first entry.
    pub fn new() -> Namespace {
        let epoch = Time { secs: 0, nsecs: 0 };
        let root = Inode {
            fid: ROOT,
            parent: ROOT,
            name: Name::new(b""),
            kind: Kind::Dir,
            attrs: Attrs {
                mode: 0o755,
                uid: 0,
                gid: 0,
                atime: epoch,
                mtime: epoch,
                ctime: epoch,
            },
            size: 0,
            dcrc: 0,
            last_seq: 0,
            content: None.into(),
            subdirs: 0,
            extras: Extras::default(),
        };
        Namespace {
            inodes: Inodes::from_root(root),
            entries: Entries::default(),
            next_fid: ROOT + 1,
            last_seq: 0,
            since: None,
        }
    }

    /// The namespace a snapshot describes. The files' bytes are in their backing files, not
    /// in the log: `content` is None, so a damaged one cannot be restored (and says so).
    pub fn from_snapshot(snap: &Snapshot) -> Result<Namespace> {
        let mut ns = Namespace::new();
        let root = ns.inodes.get_mut(&ROOT).expect("the root exists");
        root.attrs = snap.root;
        root.extras.set_xattrs(snap.root_xattrs.clone());
        let doesnt_fit = |fid: Fid| err!(EIO, "snapshot {}: file {fid} does not fit", snap.upto);
        ns.inodes.reserve(snap.files.len());
        // The names, sorted and then built into the tree in one pass: a million inserts in
        // fid order, each finding its place, cost several times more.
        let mut keys: Vec<(Fid, u64, Fid)> = Vec::with_capacity(snap.files.len());
        // Snapshots list files by fid, so each inode goes at the end; one that does not is
        // taken in that order anyway rather than inserted in the middle each time.
        let mut files: Vec<&FileRecord> = snap.files.iter().collect();
        if !files.is_sorted_by_key(|f| f.fid) {
            files.sort_by_key(|f| f.fid);
        }
        for f in files {
            if f.fid <= ROOT || ns.inodes.contains_key(&f.fid) {
                return Err(doesnt_fit(f.fid));
            }
            if !f.links.is_empty() && f.kind == Kind::Dir {
                return Err(doesnt_fit(f.fid));
            }
            for (dir, name) in std::iter::once((f.dir, f.name.bytes()))
                .chain(f.links.iter().map(|(d, n)| (*d, NameBytes::Slice(n))))
            {
                keys.push((dir, entries::hash(&name), f.fid));
            }
            ns.inodes.insert(
                f.fid,
                Inode {
                    fid: f.fid,
                    parent: f.dir,
                    name: f.name.clone(),
                    kind: f.kind,
                    attrs: f.attrs,
                    size: f.len,
                    dcrc: f.dcrc,

                    last_seq: snap.upto,
                    content: None.into(),
                    subdirs: 0,
                    extras: Extras::new(
                        f.links.clone(),
                        f.target.clone().map(Arc::new),
                        f.xattrs.clone(),
                    ),
                },
            );
        }
        keys.sort_unstable();
        // Names that share a hash in one directory (rare) are compared whole.
        let mut at = 0;
        while at < keys.len() {
            let (dir, h, _) = keys[at];
            let end = at + keys[at..].partition_point(|k| (k.0, k.1) == (dir, h));
            if end - at > 1 {
                let mut names: Vec<Vec<u8>> = keys[at..end]
                    .iter()
                    .flat_map(|k| ns.inodes[&k.2].names())
                    .filter(|(d, n)| *d == dir && entries::hash(n) == h)
                    .map(|(_, n)| n.to_vec())
                    .collect();
                names.sort_unstable();
                names.dedup();
                if names.len() != end - at {
                    return Err(err!(EIO, "snapshot {}: a name is used twice", snap.upto));
                }
            }
            at = end;
        }
        ns.entries = Entries::from_sorted(keys);
        // Every file hangs from a directory, and every one is reached from the root: a file
        // that is not sits in a circle of directories, or under one that does not exist.
        for f in &snap.files {
            for dir in std::iter::once(f.dir).chain(f.links.iter().map(|(d, _)| *d)) {
                let parent = ns.inodes.get_mut(&dir).filter(|d| d.kind == Kind::Dir);
                let parent = parent.ok_or_else(|| doesnt_fit(f.fid))?;
                parent.subdirs += u32::from(f.kind == Kind::Dir);
            }
        }
        // Counted by names (a file's further names are reached like its first): a name is
        // reached when its directory is. Found from the directories' parents, without
        // walking the entries, whose order (their hashes) is not the inodes'.
        let parent: HashMap<Fid, Fid> = snap
            .files
            .iter()
            .filter(|f| f.kind == Kind::Dir)
            .map(|f| (f.fid, f.dir))
            .collect();
        let (mut reached_dirs, mut lost) = (HashSet::from([ROOT]), HashSet::new());
        for &dir in parent.keys() {
            let (mut chain, mut at) = (Vec::new(), dir);
            // A walk longer than there are directories is a circle.
            while !reached_dirs.contains(&at) && !lost.contains(&at) && chain.len() <= parent.len()
            {
                chain.push(at);
                match parent.get(&at) {
                    Some(p) => at = *p,
                    None => break,
                }
            }
            match reached_dirs.contains(&at) {
                true => reached_dirs.extend(chain),
                false => lost.extend(chain),
            }
        }
        let names = ns.entries.len();
        let reached = ns.entries.named_in(|dir| reached_dirs.contains(&dir));
        if reached != names {
            return Err(err!(
                EIO,
                "snapshot {}: {} names are not reached from the root",
                snap.upto,
                names - reached
            ));
        }
        ns.next_fid = snap.next_fid.max(ns.inodes.max_fid().unwrap_or(ROOT) + 1);
        ns.last_seq = snap.upto;
        ns.inodes.take_touched();
        ns.since = Some(snap.upto);
        Ok(ns)
    }

    /// The snapshot of the current state (names and attributes; no bytes).
    pub fn snapshot(&self) -> Snapshot {
        let mut files: Vec<FileRecord> = self.files().map(record).collect();
        files.sort_by_key(|f| f.fid);
        Snapshot {
            upto: self.last_seq,
            next_fid: self.next_fid,
            root: self.inodes[&ROOT].attrs,
            root_xattrs: self.inodes[&ROOT].extras.xattrs().clone(),
            files,
        }
    }

    /// The snapshot of the current state as the changes since the one this namespace was
    /// built from or last took changes for; none if there is no such snapshot (a store
    /// never compacted, or one whose last snapshot was not written: `give_back`), whose
    /// snapshot is then taken whole. Changes are counted anew from here.
    pub fn take_changes(&mut self) -> Option<SnapshotDelta> {
        let touched = self.inodes.take_touched();
        let since = self.since.replace(self.last_seq)?;
        let mut fids: Vec<Fid> = touched.into_iter().filter(|f| *f != ROOT).collect();
        fids.sort_unstable();
        let changed = fids
            .into_iter()
            .map(|fid| (fid, self.inodes.get(&fid).map(record)))
            .collect();
        let root = &self.inodes[&ROOT];
        Some(SnapshotDelta {
            since,
            upto: self.last_seq,
            next_fid: self.next_fid,
            root: root.attrs,
            root_xattrs: root.extras.xattrs().clone(),
            files: self.file_count() as u64,
            changed,
        })
    }

    /// The snapshot changes were taken for (`take_changes`) was not written, or not named by
    /// the manifest: the next one is taken whole, as nothing says which snapshot is there.
    pub fn give_back(&mut self, delta: Option<SnapshotDelta>) {
        if let Some(d) = delta {
            self.inodes.touch(d.changed.into_iter().map(|(fid, _)| fid));
        }
        self.since = None;
    }

    pub fn get(&self, fid: Fid) -> Option<&Inode> {
        self.inodes.get(&fid)
    }

    pub fn lookup(&self, dir: Fid, name: &[u8]) -> Option<&Inode> {
        self.inodes.get(&self.entry(dir, name)?)
    }

    /// The file `name` names in `dir`.
    fn entry(&self, dir: Fid, name: &[u8]) -> Option<Fid> {
        self.entries
            .candidates(dir, entries::hash(name))
            .find(|fid| {
                self.inodes
                    .get(fid)
                    .is_some_and(|i| i.names().any(|(d, n)| d == dir && *n == *name))
            })
    }

    /// The path of `fid` from the root, its names joined by `/` (empty for the root).
    pub fn path(&self, fid: Fid) -> Option<Vec<u8>> {
        let mut names = Vec::new();
        let mut at = fid;
        while at != ROOT {
            let inode = self.inodes.get(&at)?;
            names.push(inode.name.bytes());
            at = inode.parent;
        }
        let mut path = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for name in names.iter().rev() {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
        }
        Some(path)
    }

    /// The path of each name of `fid`, its first first.
    pub fn paths(&self, fid: Fid) -> Vec<Vec<u8>> {
        let Some(inode) = self.inodes.get(&fid) else {
            return Vec::new();
        };
        inode
            .names()
            .filter_map(|(dir, name)| {
                let mut path = self.path(dir)?;
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&name);
                Some(path)
            })
            .collect()
    }

    /// The length in bytes of `fid`'s path from the root (names and the `/` between them).
    pub fn path_len(&self, fid: Fid) -> usize {
        let (mut len, mut at) = (0, fid);
        while let Some(i) = self.inodes.get(&at).filter(|_| at != ROOT) {
            len += i.name.len() + usize::from(len > 0);
            at = i.parent;
        }
        len
    }

    /// The length of the longest path under directory `dir`, from `dir` (0 if it is empty).
    pub fn longest_under(&self, dir: Fid) -> usize {
        let (mut longest, mut todo) = (0, vec![(dir, 0)]);
        while let Some((d, len)) = todo.pop() {
            for (name, i) in self.list(d) {
                let here = len + usize::from(len > 0) + name.len();
                longest = longest.max(here);
                if i.kind == Kind::Dir {
                    todo.push((i.fid, here));
                }
            }
        }
        longest
    }

    /// Whether `fid` is `dir` or lies somewhere under it.
    pub fn is_within(&self, fid: Fid, dir: Fid) -> bool {
        let mut at = fid;
        loop {
            if at == dir {
                return true;
            }
            match self.inodes.get(&at) {
                Some(i) if at != ROOT => at = i.parent,
                _ => return false,
            }
        }
    }

    /// The entries of a directory, in the order of their names' hashes (the same at every
    /// mount): each name with the file it names (a file with several names in the directory
    /// comes once for each).
    pub fn list(&self, dir: Fid) -> impl Iterator<Item = (NameBytes<'_>, &Inode)> {
        self.entries.of_dir(dir).flat_map(move |(h, fid)| {
            self.inodes.get(&fid).into_iter().flat_map(move |i| {
                let one = i.extras.links().is_empty();
                i.names()
                    .filter(move |(d, n)| *d == dir && (one || entries::hash(n) == h))
                    .map(move |(_, n)| (n, i))
            })
        })
    }

    /// What an open directory keeps of its entries (16 bytes a name, not the names): each
    /// name's hash and file, one per name, in listing order. `named` finds a name again.
    pub fn listing(&self, dir: Fid) -> Vec<(u64, Fid)> {
        let mut keys = Vec::new();
        for (h, fid, names) in self.entries.of_dir_counted(dir) {
            keys.extend(std::iter::repeat_n((h, fid), names as usize));
        }
        keys
    }

    /// The `nth` (from 0) of `fid`'s names in `dir` whose hash is `hash`, as it is now: None
    /// if the file no longer has one there.
    pub fn named(
        &self,
        dir: Fid,
        hash: u64,
        fid: Fid,
        nth: usize,
    ) -> Option<(NameBytes<'_>, &Inode)> {
        let i = self.inodes.get(&fid)?;
        let mut names = i
            .names()
            .filter(|(d, n)| *d == dir && entries::hash(n) == hash);
        names.nth(nth).map(|(_, n)| (n, i))
    }

    /// Every file and directory but the root.
    pub fn files(&self) -> impl Iterator<Item = &Inode> {
        self.inodes.values().filter(|i| i.fid != ROOT)
    }

    pub fn file_count(&self) -> usize {
        self.inodes.len() - 1
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Takes a file out of the namespace outside any entry (a salvage giving up on a file whose
    /// bytes are lost); the next snapshot no longer names it.
    pub fn forget(&mut self, fid: Fid) -> Option<Inode> {
        let inode = self.inodes.remove(&fid)?;
        for (dir, name) in inode.names() {
            self.entries.remove(dir, &name, fid);
        }
        Some(inode)
    }

    /// Marks a sequence number and a fid as used though their entry was not applied (a salvage
    /// dropped it): neither is ever given out again.
    pub fn reserve(&mut self, seq: Seq, fid: Option<Fid>) {
        self.last_seq = self.last_seq.max(seq);
        if let Some(fid) = fid {
            self.next_fid = self.next_fid.max(fid + 1);
        }
    }

    /// Takes a fid that has never named a file in this store.
    pub fn allocate_fid(&mut self) -> Fid {
        let fid = self.next_fid;
        self.next_fid += 1;
        fid
    }
}

#[cfg(test)]
mod tests;
