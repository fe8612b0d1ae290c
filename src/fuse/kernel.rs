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
/// A file's attributes are never cached: a commit by one process changes the size another
/// process reads up to (the kernel clamps cached reads to the size it holds).
pub(super) const ATTR_TTL: Duration = Duration::ZERO;
/// A directory's may be: they change only through this mount, and the kernel forgets them
/// itself when a name in the directory is made, removed or moved (and is told to when the
/// daemon removes one: `Invalidation::Entry`). Otherwise every path walked costs a GETATTR
/// of each directory on it (the kernel checks its permissions): three of the eleven requests
/// a new file cost.
const DIR_ATTR_TTL: Duration = Duration::from_secs(1);

/// How long the kernel may keep `stat`'s attributes.
pub(super) fn attr_ttl(stat: &Stat) -> &'static Duration {
    match stat.kind {
        Kind::Dir => &DIR_ATTR_TTL,
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
