//! The namespace: which names exist, which file (fid) each names, and every file's attributes
//! — but never its bytes, which live in the backing files (or, briefly, in the commit
//! pipeline). Live commits and recovery change it through the same `apply`, so replaying the
//! log rebuilds exactly the state the mount served.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{err, Result};
use crate::log::{Entry, FileRecord, Op, Snapshot};
use crate::types::{Attrs, Fid, Kind, Seq, Time, ROOT};

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
    pub parent: Fid,
    pub name: Vec<u8>,
    pub kind: Kind,
    pub attrs: Attrs,
    pub size: u64,
    /// CRC32C of the current bytes.
    pub dcrc: u32,
    /// A symlink's target (small, so kept in memory; a file's bytes never are).
    pub target: Option<Arc<Vec<u8>>>,
    /// The last entry that changed this file, bytes or attributes.
    pub last_seq: Seq,
    /// The entry holding the current bytes, if the log read so far has it.
    pub content: Option<ContentLoc>,
    /// For a directory, how many of its entries are directories: its link count is two more
    /// (its name and its own `.`, plus each child's `..`), as ext4 counts.
    pub subdirs: u32,
}

pub struct Namespace {
    inodes: HashMap<Fid, Inode>,
    entries: BTreeMap<(Fid, Vec<u8>), Fid>,
    next_fid: Fid,
    last_seq: Seq,
}

/// What an applied entry took out of the namespace: files that lost their last name.
#[derive(Debug, Default)]
pub struct Applied {
    pub removed: Vec<Inode>,
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
            name: Vec::new(),
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
            target: None,
            last_seq: 0,
            content: None,
            subdirs: 0,
        };
        Namespace {
            inodes: HashMap::from([(ROOT, root)]),
            entries: BTreeMap::new(),
            next_fid: ROOT + 1,
            last_seq: 0,
        }
    }

    /// The namespace a snapshot describes. The files' bytes are in their backing files, not
    /// in the log: `content` is None, so a damaged one cannot be restored (and says so).
    pub fn from_snapshot(snap: &Snapshot) -> Result<Namespace> {
        let mut ns = Namespace::new();
        ns.inodes.get_mut(&ROOT).expect("the root exists").attrs = snap.root;
        let doesnt_fit = |fid: Fid| err!(EIO, "snapshot {}: file {fid} does not fit", snap.upto);
        for f in &snap.files {
            if f.fid <= ROOT || ns.inodes.contains_key(&f.fid) {
                return Err(doesnt_fit(f.fid));
            }
            if ns.entries.insert((f.dir, f.name.clone()), f.fid).is_some() {
                return Err(err!(EIO, "snapshot {}: a name is used twice", snap.upto));
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
                    target: f.target.clone().map(Arc::new),
                    last_seq: snap.upto,
                    content: None,
                    subdirs: 0,
                },
            );
        }
        // Every file hangs from a directory, and every one is reached from the root: a file
        // that is not sits in a circle of directories, or under one that does not exist.
        for f in &snap.files {
            let parent = ns.inodes.get_mut(&f.dir).filter(|d| d.kind == Kind::Dir);
            let parent = parent.ok_or_else(|| doesnt_fit(f.fid))?;
            parent.subdirs += u32::from(f.kind == Kind::Dir);
        }
        let (mut reached, mut dirs) = (1, vec![ROOT]);
        while let Some(dir) = dirs.pop() {
            for inode in ns.list(dir) {
                reached += 1;
                if inode.kind == Kind::Dir {
                    dirs.push(inode.fid);
                }
            }
        }
        if reached != ns.inodes.len() {
            return Err(err!(
                EIO,
                "snapshot {}: {} files are not reached from the root",
                snap.upto,
                ns.inodes.len() - reached
            ));
        }
        ns.next_fid = snap
            .next_fid
            .max(ns.inodes.keys().max().copied().unwrap_or(ROOT) + 1);
        ns.last_seq = snap.upto;
        Ok(ns)
    }

    /// The snapshot of the current state (names and attributes; no bytes).
    pub fn snapshot(&self) -> Snapshot {
        let mut files: Vec<FileRecord> = self
            .files()
            .map(|i| FileRecord {
                fid: i.fid,
                dir: i.parent,
                name: i.name.clone(),
                kind: i.kind,
                attrs: i.attrs,
                len: i.size,
                dcrc: i.dcrc,
                target: i.target.as_ref().map(|t| t.to_vec()),
            })
            .collect();
        files.sort_by_key(|f| f.fid);
        Snapshot {
            upto: self.last_seq,
            next_fid: self.next_fid,
            root: self.inodes[&ROOT].attrs,
            files,
        }
    }

    pub fn get(&self, fid: Fid) -> Option<&Inode> {
        self.inodes.get(&fid)
    }

    pub fn lookup(&self, dir: Fid, name: &[u8]) -> Option<&Inode> {
        self.entries
            .get(&(dir, name.to_vec()))
            .and_then(|fid| self.inodes.get(fid))
    }

    /// The path of `fid` from the root, its names joined by `/` (empty for the root).
    pub fn path(&self, fid: Fid) -> Option<Vec<u8>> {
        let mut names = Vec::new();
        let mut at = fid;
        while at != ROOT {
            let inode = self.inodes.get(&at)?;
            names.push(inode.name.as_slice());
            at = inode.parent;
        }
        names.reverse();
        Some(names.join(&b'/'))
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
            for i in self.list(d) {
                let here = len + usize::from(len > 0) + i.name.len();
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

    /// The entries of a directory, in name order.
    pub fn list(&self, dir: Fid) -> impl Iterator<Item = &Inode> {
        self.entries
            .range((dir, Vec::new())..)
            .take_while(move |((d, _), _)| *d == dir)
            .filter_map(|(_, fid)| self.inodes.get(fid))
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
        self.entries.remove(&(inode.parent, inode.name.clone()));
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

    /// Applies one entry. An entry that does not fit the namespace (a rename of an unknown
    /// file, a sequence number out of order) is an error: during recovery it means the log is
    /// damaged; during a live commit it is a bug in the caller.
    pub fn apply(&mut self, entry: &Entry, loc: Option<ContentLoc>) -> Result<Applied> {
        if entry.seq <= self.last_seq {
            return Err(err!(
                EIO,
                "entry {} comes after entry {}",
                entry.seq,
                self.last_seq
            ));
        }
        let ts = time_of_millis(entry.ts);
        let mut applied = Applied::default();
        match &entry.op {
            Op::Set {
                fid,
                dir,
                name,
                kind,
                attrs,
                data,
            } => {
                self.check_dir(*dir)?;
                if *kind == Kind::Dir && !data.is_empty() {
                    return Err(err!(EIO, "entry {} gives a directory bytes", entry.seq));
                }
                let target = (*kind == Kind::Symlink).then(|| data.bytes.clone());
                match self.inodes.get_mut(fid) {
                    Some(inode) => {
                        if inode.parent != *dir || inode.name != *name || inode.kind != *kind {
                            return Err(err!(
                                EIO,
                                "entry {} sets fid {fid} under a name or kind it does not have",
                                entry.seq
                            ));
                        }
                        inode.attrs = *attrs;
                        inode.size = data.len();
                        inode.dcrc = data.dcrc;
                        inode.target = target;
                        inode.last_seq = entry.seq;
                        inode.content = loc;
                    }
                    None => {
                        if *fid <= ROOT {
                            return Err(err!(EIO, "entry {} names fid {fid}", entry.seq));
                        }
                        if self.entries.contains_key(&(*dir, name.clone())) {
                            return Err(err!(
                                EIO,
                                "entry {} creates {:?}, which exists",
                                entry.seq,
                                String::from_utf8_lossy(name)
                            ));
                        }
                        self.entries.insert((*dir, name.clone()), *fid);
                        self.inodes.insert(
                            *fid,
                            Inode {
                                fid: *fid,
                                parent: *dir,
                                name: name.clone(),
                                kind: *kind,
                                attrs: *attrs,
                                size: data.len(),
                                dcrc: data.dcrc,
                                target,
                                last_seq: entry.seq,
                                content: loc,
                                subdirs: 0,
                            },
                        );
                        self.next_fid = self.next_fid.max(fid + 1);
                        self.count_subdir(*dir, *kind, 1);
                        self.touch_dir(*dir, ts);
                    }
                }
            }
            Op::Attr { fid, attrs, .. } => {
                let inode = self.known(*fid, entry.seq)?;
                inode.attrs = *attrs;
                inode.last_seq = entry.seq;
            }
            Op::Delete { fid, dir, name } => {
                self.expect_entry(*dir, name, *fid, entry.seq)?;
                if self.list(*fid).next().is_some() {
                    return Err(err!(
                        EIO,
                        "entry {} removes directory {fid}, which is not empty",
                        entry.seq
                    ));
                }
                self.entries.remove(&(*dir, name.clone()));
                let removed = self.inodes.remove(fid).expect("an entry names an inode");
                self.count_subdir(*dir, removed.kind, -1);
                applied.removed.push(removed);
                self.touch_dir(*dir, ts);
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
                self.check_dir(*to_dir)?;
                self.expect_entry(*dir, name, *fid, entry.seq)?;
                let at_target = self.entries.get(&(*to_dir, to_name.clone())).copied();
                if at_target != *replaced {
                    return Err(err!(
                        EIO,
                        "entry {} expects {:?} at the target, the namespace has {:?}",
                        entry.seq,
                        replaced,
                        at_target
                    ));
                }
                let kind_of = |f: Fid| self.inodes.get(&f).map(|i| i.kind);
                let (kind, replaced_kind) = (kind_of(*fid), replaced.and_then(kind_of));
                let into_itself = |moved: Fid, kind: Option<Kind>, to: Fid| {
                    kind == Some(Kind::Dir) && self.is_within(to, moved)
                };
                let loops = into_itself(*fid, kind, *to_dir)
                    || (*exchange && replaced.is_some_and(|r| into_itself(r, replaced_kind, *dir)));
                let unfit = if loops {
                    Some("moves a directory into itself")
                } else if !*exchange && replaced_kind.is_some() {
                    match (kind, replaced_kind) {
                        (Some(Kind::Dir), Some(Kind::Dir)) => replaced
                            .is_some_and(|r| self.list(r).next().is_some())
                            .then_some("replaces a directory that is not empty"),
                        (Some(Kind::Dir), _) | (_, Some(Kind::Dir)) => {
                            Some("replaces a directory by a file, or a file by a directory")
                        }
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(why) = unfit {
                    return Err(err!(EIO, "entry {} {why}", entry.seq));
                }
                let kind = kind.expect("expect_entry found it");
                if *exchange {
                    let other = replaced
                        .ok_or_else(|| err!(EIO, "entry {} exchanges with nothing", entry.seq))?;
                    self.entries.insert((*dir, name.clone()), other);
                    self.entries.insert((*to_dir, to_name.clone()), *fid);
                    self.rename_inode(other, *dir, name, ts, entry.seq);
                    let other_kind = replaced_kind.expect("at the target");
                    self.count_subdir(*to_dir, other_kind, -1);
                    self.count_subdir(*dir, other_kind, 1);
                } else {
                    self.entries.remove(&(*dir, name.clone()));
                    if let Some(old) = replaced {
                        let removed = self.inodes.remove(old).expect("at the target");
                        self.count_subdir(*to_dir, removed.kind, -1);
                        applied.removed.push(removed);
                    }
                    self.entries.insert((*to_dir, to_name.clone()), *fid);
                }
                self.count_subdir(*dir, kind, -1);
                self.count_subdir(*to_dir, kind, 1);
                self.rename_inode(*fid, *to_dir, to_name, ts, entry.seq);
                self.touch_dir(*dir, ts);
                self.touch_dir(*to_dir, ts);
            }
            Op::Checkpoint { .. } => {}
        }
        self.last_seq = entry.seq;
        Ok(applied)
    }

    fn check_dir(&self, dir: Fid) -> Result<()> {
        match self.inodes.get(&dir) {
            Some(i) if i.kind == Kind::Dir => Ok(()),
            _ => Err(err!(EIO, "directory fid {dir} does not exist")),
        }
    }

    /// A directory entry of `kind` came into `dir` (`by` 1) or left it (-1).
    fn count_subdir(&mut self, dir: Fid, kind: Kind, by: i32) {
        if let (Kind::Dir, Some(d)) = (kind, self.inodes.get_mut(&dir)) {
            d.subdirs = d.subdirs.saturating_add_signed(by);
        }
    }

    fn known(&mut self, fid: Fid, seq: Seq) -> Result<&mut Inode> {
        self.inodes
            .get_mut(&fid)
            .ok_or_else(|| err!(EIO, "entry {seq} names fid {fid}, which does not exist"))
    }

    fn expect_entry(&self, dir: Fid, name: &[u8], fid: Fid, seq: Seq) -> Result<()> {
        match self.entries.get(&(dir, name.to_vec())) {
            Some(f) if *f == fid => Ok(()),
            other => Err(err!(
                EIO,
                "entry {seq} expects fid {fid} at {:?}, the namespace has {other:?}",
                String::from_utf8_lossy(name)
            )),
        }
    }

    fn rename_inode(&mut self, fid: Fid, dir: Fid, name: &[u8], ts: Time, seq: Seq) {
        if let Some(inode) = self.inodes.get_mut(&fid) {
            inode.parent = dir;
            inode.name = name.to_vec();
            // A rename changes the inode's ctime, as on ext4 and tmpfs.
            inode.attrs.ctime = ts;
            inode.last_seq = seq;
        }
    }

    fn touch_dir(&mut self, dir: Fid, ts: Time) {
        if let Some(d) = self.inodes.get_mut(&dir) {
            d.attrs.mtime = ts;
            d.attrs.ctime = ts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Data;

    fn attrs() -> Attrs {
        let t = Time { secs: 1, nsecs: 0 };
        Attrs {
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: t,
            mtime: t,
            ctime: t,
        }
    }

    fn set(seq: Seq, fid: Fid, name: &str, bytes: &[u8]) -> Entry {
        Entry {
            seq,
            ts: 5000,
            op: Op::Set {
                fid,
                dir: ROOT,
                name: name.into(),
                kind: Kind::File,
                attrs: attrs(),
                data: Data::new(Arc::new(bytes.to_vec())),
            },
        }
    }

    #[test]
    fn rename_over_removes_the_target_and_exchange_swaps() {
        let mut ns = Namespace::new();
        ns.apply(&set(1, 2, "a", b"A"), None).unwrap();
        ns.apply(&set(2, 3, "b", b"BB"), None).unwrap();
        let rename = |seq, replaced, exchange| Entry {
            seq,
            ts: 6000,
            op: Op::Rename {
                fid: 2,
                dir: ROOT,
                name: b"a".to_vec(),
                to_dir: ROOT,
                to_name: b"b".to_vec(),
                replaced,
                exchange,
            },
        };
        ns.apply(&rename(3, Some(3), true), None).unwrap();
        assert_eq!(ns.lookup(ROOT, b"a").unwrap().fid, 3);
        assert_eq!(ns.lookup(ROOT, b"b").unwrap().fid, 2);
        ns.apply(&set(4, 3, "a", b"AAA"), None).unwrap();
        // Fid 2 is at "b" now, so a rename of fid 2 from "a" does not fit.
        assert!(ns.apply(&rename(5, Some(3), false), None).is_err());
        let back = Entry {
            seq: 5,
            ts: 7000,
            op: Op::Rename {
                fid: 3,
                dir: ROOT,
                name: b"a".to_vec(),
                to_dir: ROOT,
                to_name: b"b".to_vec(),
                replaced: Some(2),
                exchange: false,
            },
        };
        let applied = ns.apply(&back, None).unwrap();
        assert_eq!(applied.removed.len(), 1);
        assert_eq!(applied.removed[0].fid, 2);
        assert_eq!(ns.list(ROOT).count(), 1);
        assert_eq!(ns.lookup(ROOT, b"b").unwrap().size, 3);
        assert_eq!(ns.get(ROOT).unwrap().attrs.mtime.secs, 7);
    }

    #[test]
    fn entries_out_of_order_or_unknown_are_refused() {
        let mut ns = Namespace::new();
        ns.apply(&set(2, 2, "a", b""), None).unwrap();
        assert!(ns.apply(&set(2, 3, "b", b""), None).is_err());
        assert!(ns.apply(&set(3, 4, "a", b""), None).is_err());
        let del = Entry {
            seq: 4,
            ts: 0,
            op: Op::Delete {
                fid: 9,
                dir: ROOT,
                name: b"a".to_vec(),
            },
        };
        assert!(ns.apply(&del, None).is_err());
        assert_eq!(ns.allocate_fid(), 3);
    }

    fn mkdir(seq: Seq, fid: Fid, dir: Fid, name: &str) -> Entry {
        Entry {
            seq,
            ts: 5000,
            op: Op::Set {
                fid,
                dir,
                name: name.into(),
                kind: Kind::Dir,
                attrs: attrs(),
                data: Data::empty(),
            },
        }
    }

    fn mv(fid: Fid, (dir, name): (Fid, &str), (to_dir, to_name): (Fid, &str)) -> Op {
        Op::Rename {
            fid,
            dir,
            name: name.into(),
            to_dir,
            to_name: to_name.into(),
            replaced: None,
            exchange: false,
        }
    }

    fn at(seq: Seq, op: Op) -> Entry {
        Entry { seq, ts: 6000, op }
    }

    /// Issue 11: directories hold entries, count their subdirectories as ext4 does, refuse
    /// to go away while not empty, and never move into themselves.
    #[test]
    fn directories_nest_count_their_links_and_keep_their_shape() {
        let mut ns = Namespace::new();
        ns.apply(&mkdir(1, 2, ROOT, "players"), None).unwrap();
        ns.apply(&mkdir(2, 3, 2, "archive"), None).unwrap();
        let mut rec = set(3, 4, "p.json", b"{}");
        if let Op::Set { dir, .. } = &mut rec.op {
            *dir = 3;
        }
        ns.apply(&rec, None).unwrap();
        assert_eq!(ns.lookup(3, b"p.json").unwrap().fid, 4);
        assert_eq!(ns.get(ROOT).unwrap().subdirs, 1);
        assert_eq!(ns.get(2).unwrap().subdirs, 1);
        assert!(ns.is_within(4, 2) && !ns.is_within(2, 4));
        // A file under a file, a directory into itself or under its own child: refused.
        let mut under_file = set(4, 5, "x", b"");
        if let Op::Set { dir, .. } = &mut under_file.op {
            *dir = 4;
        }
        assert!(ns.apply(&under_file, None).is_err());
        assert!(ns
            .apply(&at(4, mv(2, (ROOT, "players"), (3, "loop"))), None)
            .is_err());
        assert!(ns
            .apply(&at(4, mv(2, (ROOT, "players"), (2, "self"))), None)
            .is_err());
        // Removing a directory that is not empty is refused; an empty one goes.
        let rmdir = |seq, fid, dir, name: &str| {
            at(
                seq,
                Op::Delete {
                    fid,
                    dir,
                    name: name.into(),
                },
            )
        };
        assert!(ns.apply(&rmdir(4, 3, 2, "archive"), None).is_err());
        // Moving the subtree up keeps what is in it and moves the link counts with it.
        ns.apply(&at(4, mv(3, (2, "archive"), (ROOT, "archive"))), None)
            .unwrap();
        assert_eq!(ns.get(ROOT).unwrap().subdirs, 2);
        assert_eq!(ns.get(2).unwrap().subdirs, 0);
        assert_eq!(ns.lookup(3, b"p.json").unwrap().fid, 4);
        // A directory over an empty one replaces it; over one that is not empty, refused.
        let mut over = mv(2, (ROOT, "players"), (ROOT, "archive"));
        if let Op::Rename { replaced, .. } = &mut over {
            *replaced = Some(3);
        }
        assert!(ns.apply(&at(5, over.clone()), None).is_err());
        ns.apply(&rmdir(5, 4, 3, "p.json"), None).unwrap();
        let applied = ns.apply(&at(6, over), None).unwrap();
        assert_eq!(applied.removed[0].fid, 3);
        assert_eq!(ns.get(ROOT).unwrap().subdirs, 1);
        ns.apply(&rmdir(7, 2, ROOT, "archive"), None).unwrap();
        assert_eq!(ns.get(ROOT).unwrap().subdirs, 0);
        assert_eq!(ns.list(ROOT).count(), 0);
    }

    /// A snapshot of a tree comes back whole, whatever the order of fids; one whose files do
    /// not all hang from the root is refused.
    #[test]
    fn a_tree_survives_its_snapshot_and_a_broken_one_is_refused() {
        let mut ns = Namespace::new();
        ns.apply(&set(1, 2, "later.json", b"{}"), None).unwrap();
        ns.apply(&mkdir(2, 3, ROOT, "d"), None).unwrap();
        // Fid 2 now lives under fid 3: a child with a smaller fid than its directory.
        ns.apply(&at(3, mv(2, (ROOT, "later.json"), (3, "in.json"))), None)
            .unwrap();
        let snap = ns.snapshot();
        let back = Namespace::from_snapshot(&snap).unwrap();
        assert_eq!(back.lookup(3, b"in.json").unwrap().fid, 2);
        assert_eq!(back.get(ROOT).unwrap().subdirs, 1);
        let mut circle = snap.clone();
        for f in &mut circle.files {
            if f.fid == 3 {
                f.dir = 2; // the directory under the file it holds
            }
        }
        assert!(Namespace::from_snapshot(&circle).is_err());
        let mut loop_of_dirs = snap;
        loop_of_dirs.files.retain(|f| f.fid == 3);
        loop_of_dirs.files[0].dir = 3; // its own parent
        assert!(Namespace::from_snapshot(&loop_of_dirs).is_err());
    }
}
