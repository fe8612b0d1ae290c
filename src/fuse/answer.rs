//! How the adapter answers the kernel: once a request's commit is durable (from the commit
//! thread if need be: no FUSE thread waits for a sync), with the attributes the kernel may
//! keep, and each error logged once, where it is answered.

use std::time::Duration;

use fuser::{Errno, FopenFlags, Generation, ReplyEmpty, ReplyEntry};

use super::kernel::{attr, attr_ttl, ATTR_TTL, ENTRY_TTL, SETTLED_TTL};
use super::Adapter;
use crate::error::{Error, Result};
use crate::fs::{Stat, Ticket};
use crate::types::Kind;

/// Logs an error once, where it is answered, at the level it carries.
pub(super) fn logged(op: &str, what: &str, e: &Error) -> Errno {
    log::log!(e.level, "{op} {what}: {e}");
    Errno::from_i32(e.errno)
}

impl Adapter {
    /// Answers once the ticket's commit is durable, from the commit thread if need be: no
    /// FUSE thread waits for a sync.
    pub(super) fn after(
        &self,
        ticket: Ticket,
        op: &'static str,
        what: String,
        answer: impl FnOnce(std::result::Result<(), Errno>) + Send + 'static,
    ) {
        self.fs.when_durable(
            ticket,
            Box::new(move |r: Result<()>| answer(r.map_err(|e| logged(op, &what, &e)))),
        );
    }

    pub(super) fn empty(
        &self,
        op: &'static str,
        what: String,
        r: Result<Ticket>,
        reply: ReplyEmpty,
    ) {
        self.empty_as(op, what, r, reply, false)
    }

    /// `empty` for a close or an fsync: an error comes after the kernel has taken the
    /// invalidations asked before it. A save another mount's change or a full etcd refused is
    /// answered once the cache shows etcd's state again (a file this handle made may be gone),
    /// and the kernel must not go on showing what that state lacks to the caller who hears
    /// of it. Neither holds a directory's lock, which an invalidation may wait for.
    pub(super) fn closed(
        &self,
        op: &'static str,
        what: String,
        r: Result<Ticket>,
        reply: ReplyEmpty,
    ) {
        self.empty_as(op, what, r, reply, true)
    }

    fn empty_as(
        &self,
        op: &'static str,
        what: String,
        r: Result<Ticket>,
        reply: ReplyEmpty,
        error_after_invalidations: bool,
    ) {
        let fs = error_after_invalidations.then(|| self.fs.clone());
        match r {
            Ok(t) => self.after(t, op, what, move |r| match (r, fs) {
                (Ok(()), _) => reply.ok(),
                (Err(e), Some(fs)) => fs.after_invalidations(Box::new(move || reply.error(e))),
                (Err(e), None) => reply.error(e),
            }),
            Err(e) => reply.error(logged(op, &what, &e)),
        }
    }

    pub(super) fn entry(
        &self,
        op: &'static str,
        what: String,
        r: Result<(Stat, Ticket)>,
        reply: ReplyEntry,
    ) {
        match r {
            Ok((stat, t)) => {
                let (stat, ttl) = self.cacheable(stat);
                self.after(t, op, what, move |r| match r {
                    Ok(()) => reply.entry_with_ttls(ttl, &ENTRY_TTL, &attr(&stat), Generation(0)),
                    Err(e) => reply.error(e),
                })
            }
            Err(e) => reply.error(logged(op, &what, &e)),
        }
    }

    /// The attributes to answer after an operation that returned `stat` (which may be a
    /// writer's own view), and how long the kernel may keep them: a file's settled ones, read
    /// again (`RecordFs::settled`), may be kept; otherwise `stat` as it is, not kept.
    pub(super) fn cacheable(&self, stat: Stat) -> (Stat, &'static Duration) {
        if stat.kind != Kind::File {
            let ttl = attr_ttl(&stat);
            return (stat, ttl);
        }
        match self.fs.settled(stat.ino) {
            Some(settled) => (settled, &SETTLED_TTL),
            None => (stat, &ATTR_TTL),
        }
    }

    /// Every file handle bypasses the page cache. The cache belongs to the inode, not the
    /// handle: a handle that writes would show its uncommitted bytes to readers through it,
    /// and a reader that opened an older version could get pages of a newer one cached by a
    /// later opener — a torn read across a commit. Each handle reads its own snapshot.
    ///
    /// A handle that cannot write has nothing to commit at close: the kernel is told not to
    /// send its FLUSH (one round trip less for open, read, close).
    pub(super) fn open_flags(&self, flags: i32) -> FopenFlags {
        match flags & libc::O_ACCMODE {
            libc::O_RDONLY => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            _ => FopenFlags::FOPEN_DIRECT_IO,
        }
    }
}
