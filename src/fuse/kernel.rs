//! What the adapter tells the kernel: how long it may cache names and attributes, and the
//! kernel's forms of a file's attributes, kind, times and caller.

use std::time::Duration;

use fuser::{FileAttr, FileType, INodeNo, Request, TimeOrNow};

use crate::caller::Caller;
use crate::fs::Stat;
use crate::types::{Kind, Time};

/// Names change only through this mount, and the kernel updates its dentries itself on
/// unlink and rename, so names may be cached.
pub(super) const ENTRY_TTL: Duration = Duration::from_secs(1);
/// The attributes of a file that a handle may change unseen are not cached: a commit at
/// close changes the size and times, and the writing process is shown its own (uncommitted)
/// size (`RecordFs::getattr_as`), which must not reach anyone else through the kernel's cache.
pub(super) const ATTR_TTL: Duration = Duration::ZERO;
/// Settled attributes may be cached: a directory's, a symlink's, and a file's while no handle
/// is open to write it (`RecordFs::settled`). They change only through this mount, by
/// requests whose replies carry the new attributes or after which the kernel forgets them
/// itself (a write marks the size and times stale there and then, a name made, removed or
/// moved a directory's), and the kernel is told to when the daemon removes a name
/// (`Invalidation::Entry`). Otherwise every path walked costs a GETATTR of each directory on it
/// and every open one of the file, for the kernel's permission checks.
pub(super) const SETTLED_TTL: Duration = Duration::from_secs(1);
/// A file just made by `create` is settled although its maker's handle may write it: that
/// handle has not written yet, and its first write marks the size and times stale in the
/// kernel. (The kernel applies a create's attributes unconditionally, but holds the
/// directory locked meanwhile: nobody else can reach the new file before it has them.)
/// Without it the kernel asked for the new file's attributes before the first write to it
/// (`open`'s permission check): one of a new file's seven requests.
pub(super) const NEW_FILE_TTL: Duration = SETTLED_TTL;

/// How long the kernel may keep the attributes in `stat`, not known to be settled: a
/// directory's always are (no handle writes one).
pub(super) fn attr_ttl(stat: &Stat) -> &'static Duration {
    match stat.kind {
        Kind::Dir => &SETTLED_TTL,
        _ => &ATTR_TTL,
    }
}

pub(super) fn attr(s: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(s.ino),
        size: s.size,
        blocks: s.size.div_ceil(512),
        atime: s.attrs.atime.to_system(),
        mtime: s.attrs.mtime.to_system(),
        ctime: s.attrs.ctime.to_system(),
        crtime: s.attrs.ctime.to_system(),
        kind: file_type(s.kind),
        perm: s.attrs.mode as u16,
        nlink: s.nlink,
        uid: s.attrs.uid,
        gid: s.attrs.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Dir => FileType::Directory,
    }
}

pub(super) fn time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::now(),
        TimeOrNow::SpecificTime(t) => Time::from_system(t),
    }
}

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}
