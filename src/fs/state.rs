//! The core's state as types: the filesystem, its open handles, a writer's copy, what stat
//! shows and what a commit makes the caller wait for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::caller::{self, Caller};
use crate::disk::Disk;
use crate::error::Result;
use crate::limits::{MAX_EXTENTS, MAX_OWNERS, MAX_RECENTLY_REMOVED, REMOVED_GRACE};
use crate::namespace::Inode;
use crate::options::Options;
use crate::pipeline::{Pipeline, Threads};
use crate::recovery::Finding;
use crate::store::{Layout, StoreLock};
use crate::types::{Attrs, Fid, Kind, Seq, Time};
use crate::view::{Overlay, Token, Version};

/// What `stat` shows of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: Fid,
    pub kind: Kind,
    pub size: u64,
    pub attrs: Attrs,
    pub nlink: u32,
}

impl Stat {
    pub(super) fn of(inode: &Inode) -> Stat {
        Stat {
            ino: inode.fid,
            kind: inode.kind,
            size: match inode.kind {
                Kind::Symlink => inode.extras.target().map_or(0, |t| t.len() as u64),
                _ => inode.size,
            },
            attrs: inode.attrs,
            nlink: inode.nlink(),
        }
    }
}

/// A commit the caller may have to wait for before answering: `Some(seq)` when the mount's
/// `--sync` mode says the answer must wait until entry `seq` is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Ticket(pub Option<Seq>);

impl Ticket {
    pub const NONE: Ticket = Ticket(None);
}

/// Attribute changes asked by `setattr`; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
}

/// A writer's copy of its file.
pub(super) enum Copy {
    /// Not read yet: the committed version it started from, read at the first write (or
    /// not at all, see `Overlay`).
    Unread(Version),
    /// Its bytes. Shared with the commit pipeline after a commit, and copied again only on
    /// the next write.
    Loaded(Arc<Vec<u8>>),
    /// Its writes over the version it started from, unread: a large plain file's writer
    /// (`Options::patch_min`), whose commits are patches, until it holds too much
    /// (`Overlay::write`) or must commit whole.
    Overlay(Box<Overlay>),
}

/// Where a writer's copy stands against the file's committed version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// Nothing to commit.
    Clean,
    /// Emptied by open(O_TRUNC) alone: a plain file commits it at the first close, a record
    /// at the last (README, Semantics).
    Truncated,
    /// Bytes written (or ftruncate called) since the last commit.
    Written,
    /// Its last commit failed and the caller was told (of what it had: `written`, or the
    /// truncation alone): release must not commit it behind the caller's back; a close or
    /// fsync tries again, and a new write earns a new attempt.
    Failed { written: bool },
}

/// The processes whose writes are in a copy and not yet committed.
pub(super) enum Owners {
    /// By the kernel's lock owner (one per table of open files); empty when none is known
    /// (only ftruncate or a mapping's writeback changed the copy: the kernel names no process
    /// for those).
    Known(Vec<u64>),
    /// More than `MAX_OWNERS`.
    Many,
}

/// What a writer changed since the committed version a `PATCH` of its copy would build on.
#[derive(Debug)]
pub(super) struct Changes {
    /// That version: the file's `last_seq` when it was taken. None: the copy commits whole
    /// (a new file, open(O_TRUNC), bytes served back from the log).
    pub(super) base: Option<Seq>,
    /// Its length, once the copy was read.
    pub(super) base_len: Option<u64>,
    /// The byte ranges written since, in order and apart (at most `MAX_EXTENTS`).
    extents: Vec<(u64, u64)>,
    /// The shortest length an ftruncate gave the copy since.
    cut: u64,
    /// Commit the copy whole, not compared with the committed version (a patch of it just
    /// failed: another commit came between).
    pub(super) whole: bool,
}

impl Changes {
    pub(super) fn since(base: Option<Seq>) -> Changes {
        Changes {
            base,
            base_len: None,
            extents: Vec::new(),
            cut: u64::MAX,
            whole: false,
        }
    }

    /// The copy was committed as entry `seq`, `len` bytes: the next patch builds on it.
    pub(super) fn reset(&mut self, seq: Seq, len: u64) {
        *self = Changes::since(Some(seq));
        self.base_len = Some(len);
    }

    pub(super) fn wrote(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let at = self.extents.partition_point(|(_, e)| *e < start);
        let mut merged = (start, end);
        while let Some(&(s, e)) = self.extents.get(at).filter(|(s, _)| *s <= end) {
            merged = (merged.0.min(s), merged.1.max(e));
            self.extents.remove(at);
        }
        self.extents.insert(at, merged);
        if self.extents.len() > MAX_EXTENTS {
            // The two ranges with the smallest gap between them become one.
            let i = (1..self.extents.len())
                .min_by_key(|i| self.extents[*i].0 - self.extents[i - 1].1)
                .expect("more than one range");
            self.extents[i - 1].1 = self.extents[i].1;
            self.extents.remove(i);
        }
    }

    pub(super) fn truncated(&mut self, len: u64) {
        self.cut = self.cut.min(len);
    }

    /// The ranges a `PATCH` to `new_len` bytes must carry: those written below the shorter of
    /// the old and the new length (and below any ftruncate since), and every byte past it,
    /// so that what the patch leaves to the old bytes is exactly what is still theirs
    /// (`crate::log::apply_patch`). None without a base, or once the copy must go whole.
    pub(super) fn ranges(&self, new_len: u64) -> Option<Vec<(u64, u64)>> {
        if self.whole {
            return None;
        }
        self.base?;
        let keep = self.cut.min(self.base_len?).min(new_len);
        let mut out: Vec<(u64, u64)> = self
            .extents
            .iter()
            .filter(|(s, _)| *s < keep)
            .map(|(s, e)| (*s, (*e).min(keep)))
            .collect();
        if keep < new_len {
            match out.last_mut() {
                Some(last) if last.1 == keep => last.1 = new_len,
                _ => out.push((keep, new_len)),
            }
        }
        Some(out)
    }
}

/// A handle that writes: its own copy of the file until it commits.
pub(super) struct Writer {
    pub(super) fid: Fid,
    pub(super) copy: Copy,
    pub(super) standing: Standing,
    pub(super) append: bool,
    pub(super) readable: bool,
    pub(super) last_write: Time,
    /// The checksum of the last bytes refused as a record, so a close after a failed fsync
    /// does not keep the same rejected bytes twice.
    pub(super) rejected: Option<u32>,
    /// close(2) commits only for a process that wrote: a forked child that closes its
    /// inherited copy (at exec, or at exit) must not commit its parent's half-done writes.
    /// With none known, or `Many`, any close commits.
    pub(super) owners: Owners,
    /// This handle's open made the file, and nothing has been committed to it since: a
    /// refused first save then takes the name away again (`undo_creation`).
    pub(super) created: bool,
    /// The entry that made the file, when this handle's open made it and no commit point of
    /// the handle has been waited for since: the create rides with the handle's first commit
    /// point (at the latest its close), which waits for it, so that a new file costs one log
    /// sync, not two.
    pub(super) riding: Option<Seq>,
    /// The thread whose open made the file: its own attribute changes to the file (`sed -i`
    /// sets the owner and mode of its temp file) ride as well, until the handle's commit
    /// point.
    pub(super) rider: u32,
    /// The threads whose writes are not yet committed (at most `MAX_OWNERS`): `stat` and
    /// `fstat` by their process show this copy's size and times (see `getattr_as`).
    pub(super) writing_threads: Vec<u32>,
    /// What changed since the version a patch would build on.
    pub(super) changes: Changes,
    /// While the copy reads a backing file (`Unread`, `Overlay`): its holder's token.
    pub(super) token: Option<Token>,
}

impl Writer {
    pub(super) fn note_thread(&mut self, tid: u32) {
        if tid != 0
            && !self.writing_threads.contains(&tid)
            && self.writing_threads.len() < MAX_OWNERS
        {
            self.writing_threads.push(tid);
        }
    }

    /// Something not committed: written, truncated, or failed to commit.
    pub(super) fn dirty(&self) -> bool {
        self.standing != Standing::Clean
    }

    /// Bytes were written (or ftruncate called) and are not committed.
    pub(super) fn written(&self) -> bool {
        matches!(
            self.standing,
            Standing::Written | Standing::Failed { written: true }
        )
    }

    /// The copy's length, once written (before that it is the committed file's).
    pub(super) fn len(&self) -> Option<u64> {
        match &self.copy {
            Copy::Loaded(bytes) => Some(bytes.len() as u64),
            Copy::Overlay(o) => Some(o.len()),
            Copy::Unread(_) => None,
        }
    }

    /// A write (or ftruncate) changed the copy.
    pub(super) fn wrote(&mut self, owner: Option<u64>) {
        self.standing = Standing::Written;
        self.last_write = Time::now();
        if let (Owners::Known(known), Some(o)) = (&mut self.owners, owner) {
            if !known.contains(&o) {
                match known.len() < MAX_OWNERS {
                    true => known.push(o),
                    false => self.owners = Owners::Many,
                }
            }
        }
    }

    /// Whether a close by the process with lock owner `owner` commits: not one that wrote
    /// nothing into a copy other processes wrote.
    pub(super) fn closes_for(&self, owner: Option<u64>) -> bool {
        match (&self.owners, owner) {
            (Owners::Known(known), Some(o)) if self.written() => {
                known.is_empty() || known.contains(&o)
            }
            _ => true,
        }
    }

    /// The copy is committed (or there is nothing left to commit it to).
    pub(super) fn committed(&mut self) {
        self.standing = Standing::Clean;
        self.rejected = None;
        self.owners = Owners::Known(Vec::new());
        self.writing_threads.clear();
        self.created = false;
    }

    /// Whether process `pid` has writes in this copy that are not committed.
    pub(super) fn written_by_process(&self, tid: u32, pid: u32) -> bool {
        self.dirty()
            && (self.writing_threads.contains(&tid)
                || (pid != 0
                    && self
                        .writing_threads
                        .iter()
                        .any(|t| caller::process_of(*t) == pid)))
    }
}

/// Who made a write (see `RecordFs::write_as`).
#[derive(Clone, Copy, Debug)]
pub struct WriteBy {
    pub owner: Option<u64>,
    pub writeback: bool,
    pub caller: Caller,
    /// The kernel asks for set-ID bits to go (the writer lacks CAP_FSETID).
    pub kill_setid: bool,
}

impl WriteBy {
    /// A write whose process and kind are not known (the core driven without FUSE).
    pub const UNKNOWN: WriteBy = WriteBy {
        owner: None,
        writeback: false,
        caller: Caller::UNKNOWN,
        kill_setid: false,
    };
}

pub(super) enum Handle {
    Read {
        fid: Fid,
        version: Version,
        _token: Option<Token>,
    },
    Write(Mutex<Writer>),
    /// An open directory: its entries as they were at the last read from offset 0 (the first
    /// read, or one after rewinddir), which readdir's offsets index; None before that.
    Dir {
        fid: Fid,
        entries: Mutex<Option<Listing>>,
    },
}

/// An open directory's entries: its parent (for `..`) and the keys of its names
/// (`Namespace::listing`). A name is read from the namespace when readdir reaches it, so that
/// a directory of a million names costs 16 MB while it is listed, not a copy of every name.
pub(super) struct Listing {
    pub(super) parent: Fid,
    pub(super) keys: Vec<(u64, Fid)>,
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Fid,
    pub kind: Kind,
    pub name: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Handles {
    pub(super) next: u64,
    pub(super) map: HashMap<u64, Arc<Handle>>,
    /// Open file handles per fid.
    pub(super) opens: HashMap<Fid, usize>,
    /// The handles open for writing, per fid.
    pub(super) writers: HashMap<Fid, Vec<u64>>,
    /// Files whose last name is gone while handles are open (`fstat` still works on them),
    /// and for a moment files just removed (see `recently_removed`).
    pub(super) orphans: HashMap<Fid, Inode>,
    /// Files removed (unlinked, renamed over), newest last. For `REMOVED_GRACE` they stay in
    /// `orphans`, open or not: the kernel may have looked the name up just before the removal
    /// and send the open of the old file just after, which on a local filesystem opens the old
    /// file. Past that, such an open answers ESTALE and the kernel looks the name up again.
    pub(super) recently_removed: VecDeque<(Instant, Fid)>,
    /// When (wall clock) a file's mtime was last set explicitly: a commit after that keeps it.
    pub(super) mtime_set: HashMap<Fid, Time>,
}

impl Handles {
    pub(super) fn forget_removed(&mut self, now: Instant) {
        while let Some(&(at, fid)) = self.recently_removed.front() {
            if now.duration_since(at) < REMOVED_GRACE
                && self.recently_removed.len() <= MAX_RECENTLY_REMOVED
            {
                break;
            }
            self.recently_removed.pop_front();
            if !self.opens.contains_key(&fid) {
                self.orphans.remove(&fid);
            }
        }
    }
}

pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// What the kernel must forget (see `set_invalidator`).
///
/// Never a file's inode after a commit: the kernel counts an inode invalidation as newer than
/// any attribute reply in flight and drops that reply's size, while `stat` still hands the size
/// to the caller; a program that maps the file at that size then gets SIGBUS beyond the stale
/// one. Nothing needs it either: the kernel keeps a file's attributes only while no handle may
/// change them unseen (`RecordFs::settled`), every handle uses direct I/O, and the kernel
/// empties a direct-I/O file's page cache at each `mmap`. (A directory's attributes are
/// cached, and forgotten with the name.)
pub enum Invalidation {
    /// A name the kernel may have cached, removed by the daemon itself; `done` hears when
    /// the kernel has forgotten it. `file`, the empty file it named, whose link count the
    /// kernel may hold from its create.
    Entry {
        dir: Fid,
        name: Vec<u8>,
        file: Fid,
        done: std::sync::mpsc::SyncSender<()>,
    },
    /// Names and attributes changed by another mount (a read-only mount of etcd following
    /// the prefix, `etcd::follow`): the kernel forgets the names and the inodes' attributes.
    Changed {
        names: Vec<(Fid, Vec<u8>)>,
        inodes: Vec<Fid>,
    },
    /// An answer to give once the kernel has taken every invalidation asked before it
    /// (`RecordFs::after_invalidations`).
    Then(Box<dyn FnOnce() + Send>),
}

/// Queues an invalidation for the kernel; gives it back when it cannot (the queue is full).
pub(super) type Invalidator = Box<dyn Fn(Invalidation) -> Option<Invalidation> + Send + Sync>;

pub struct RecordFs {
    pub(super) disk: Arc<dyn Disk>,
    pub(super) layout: Layout,
    /// The longest path a file of the mount may have (`Layout::max_path`).
    pub(super) max_path: usize,
    pub(super) opts: Options,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) commit_threads: Mutex<Option<Threads>>,
    /// How the shutdown went, once it has run.
    pub(super) closed: Mutex<Option<Result<()>>>,
    pub(super) handles: Mutex<Handles>,
    /// Files recovery could not restore: they answer EIO until new content is committed.
    pub(super) damaged: Mutex<HashSet<Fid>>,
    pub(super) invalidator: Mutex<Option<Invalidator>>,
    pub(super) rejected_count: AtomicU64,
    pub(super) findings: Vec<Finding>,
    pub(super) notices: Vec<String>,
    pub(super) lock: StoreLock,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writers_ranges_cover_its_writes_and_all_past_what_the_old_bytes_keep() {
        let mut c = Changes::since(Some(3));
        c.base_len = Some(100);
        c.wrote(10, 20);
        c.wrote(15, 30);
        c.wrote(50, 51);
        assert_eq!(c.ranges(100), Some(vec![(10, 30), (50, 51)]));
        // An append: what it adds.
        c.wrote(100, 120);
        assert_eq!(c.ranges(120), Some(vec![(10, 30), (50, 51), (100, 120)]));
        // Cut to 40, written at 60: everything from 40 on.
        c.truncated(40);
        c.wrote(60, 61);
        assert_eq!(c.ranges(61), Some(vec![(10, 30), (40, 61)]));
        // Written up to the cut: one range.
        let mut c = Changes::since(Some(3));
        c.base_len = Some(100);
        c.wrote(30, 40);
        c.truncated(40);
        assert_eq!(c.ranges(50), Some(vec![(30, 50)]));
        // No base, no patch.
        assert_eq!(Changes::since(None).ranges(10), None);
    }

    #[test]
    fn a_writer_keeps_at_most_max_extents_ranges() {
        let mut c = Changes::since(Some(1));
        c.base_len = Some(1 << 20);
        for i in 0..(MAX_EXTENTS as u64 + 10) {
            c.wrote(i * 100, i * 100 + 1);
        }
        let r = c.ranges(1 << 20).unwrap();
        assert!(r.len() <= MAX_EXTENTS);
        for i in 0..(MAX_EXTENTS as u64 + 10) {
            assert!(r.iter().any(|(s, e)| *s <= i * 100 && i * 100 < *e));
        }
    }
}
