//! Reading and writing through a handle, and its commit points: close, fsync and the last
//! close (release). A handle that writes works on its own copy until it commits.

use std::sync::Arc;

use log::{error, warn};

use super::rules::{is_record, new_content, new_patch, show};
use super::state::{Copy, Handle, RecordFs, SetAttr, Standing, Ticket, WriteBy, Writer};
use crate::caller::{self, Caller};
use crate::error::{err, Result};
use crate::log::{Data, Op, Range, Shown};
use crate::namespace::Inode;
use crate::types::{Fid, Kind, Seq, Time};
use crate::view::{Overlay, Version};

impl RecordFs {
    /// The writer's bytes, read from the version it started from (or through its overlay)
    /// the first time.
    pub(super) fn load<'a>(&self, w: &'a mut Writer) -> Result<&'a mut Arc<Vec<u8>>> {
        let read = match &w.copy {
            Copy::Unread(version) => Some(version.clone()),
            Copy::Overlay(o) => Some(Version::Overlay(Arc::new((**o).clone()))),
            Copy::Loaded(_) => None,
        };
        if let Some(version) = read {
            let bytes = version.read_all(self.opts.max_file_size)?;
            if let Copy::Unread(_) = w.copy {
                w.changes.base_len = Some(bytes.len() as u64);
            }
            w.copy = Copy::Loaded(Arc::new(bytes));
            // It no longer reads a backing file.
            w.token = None;
        }
        match &mut w.copy {
            Copy::Loaded(bytes) => Ok(bytes),
            _ => unreachable!("loaded above"),
        }
    }

    /// Before a writer's first change: a large plain file's writer keeps its writes over the
    /// file unread (`Copy::Overlay`), any other reads it.
    fn ready(&self, w: &mut Writer) -> Result<()> {
        let Copy::Unread(version) = &w.copy else {
            return Ok(());
        };
        let size = version.size()?;
        let plain = self.pipeline.inode(w.fid).is_some_and(|i| !is_record(&i));
        if plain && size >= self.opts.patch_min && w.changes.base.is_some() {
            w.copy = Copy::Overlay(Box::new(Overlay::over(version)?));
            w.changes.base_len = Some(size);
        } else {
            self.load(w)?;
        }
        Ok(())
    }

    /// ftruncate through a writer: part of its next commit.
    pub(super) fn truncate_copy(&self, w: &mut Writer, size: u64) -> Result<()> {
        self.ready(w)?;
        match &mut w.copy {
            Copy::Overlay(o) => o.truncate(size),
            _ => Arc::make_mut(self.load(w)?).resize(size as usize, 0),
        }
        w.changes.truncated(size);
        Ok(())
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        match &*self.handle(fh)? {
            Handle::Read { version, .. } => version.read_at(offset, size as usize),
            Handle::Write(w) => {
                let w = &mut *w.lock();
                if !w.readable {
                    return Err(err!(EBADF, "handle {fh} is not open for reading"));
                }
                match &w.copy {
                    Copy::Unread(version) => version.read_at(offset, size as usize),
                    Copy::Overlay(o) => o.read_at(offset, size as usize),
                    Copy::Loaded(data) => {
                        let start = (offset as usize).min(data.len());
                        let end = start.saturating_add(size as usize).min(data.len());
                        Ok(data[start..end].to_vec())
                    }
                }
            }
            Handle::Dir { .. } => Err(err!(EISDIR, "handle {fh} is a directory")),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, bytes: &[u8]) -> Result<u32> {
        self.write_as(fh, offset, bytes, WriteBy::UNKNOWN)
    }

    /// A write by `who`: the process (lock owner) that made it, if the kernel names it, and
    /// whether it is a mapping's pages written back (which land at their offset even with
    /// O_APPEND, as on a local filesystem).
    pub fn write_as(&self, fh: u64, offset: u64, bytes: &[u8], who: WriteBy) -> Result<u32> {
        let handle = self.handle(fh)?;
        let Handle::Write(w) = &*handle else {
            return Err(err!(EBADF, "handle {fh} is not open for writing"));
        };
        let w = &mut *w.lock();
        let max = self.opts.max_file_size;
        self.ready(w)?;
        // O_APPEND is applied here: the kernel's idea of the size may be the committed one.
        let offset = match w.append && !who.writeback {
            true => w.len().expect("ready"),
            false => offset,
        };
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|end| *end <= max)
            .ok_or_else(|| {
                err!(
                    EFBIG,
                    "a write to {offset} would pass the file size limit of {max} bytes"
                )
            })?;
        match &mut w.copy {
            Copy::Overlay(o) => {
                if !o.write(offset, bytes) {
                    self.load(w)?;
                }
            }
            _ => {
                let data = Arc::make_mut(self.load(w)?);
                if data.len() < end as usize {
                    data.resize(end as usize, 0);
                }
                data[offset as usize..end as usize].copy_from_slice(bytes);
            }
        }
        w.changes.wrote(offset, end);
        w.wrote(who.owner);
        w.note_thread(who.caller.pid);
        if who.kill_setid {
            self.drop_setid(w.fid, &who.caller)?;
        }
        Ok(bytes.len() as u32)
    }

    /// Takes set-user-ID and set-group-ID away from a file an unprivileged process changes,
    /// as a local filesystem does (caller.rs): a commit of its own, logged as an attribute
    /// change, before any commit of the change itself.
    pub(super) fn drop_setid(&self, fid: Fid, caller: &Caller) -> Result<()> {
        let setid = libc::S_ISUID | libc::S_ISGID;
        let Some((mode, gid)) = self.pipeline.with_ns(|ns| {
            ns.get(fid)
                .filter(|i| i.attrs.mode & setid != 0)
                .map(|i| (i.attrs.mode, i.attrs.gid))
        }) else {
            // An open file unlinked since: its bits go with it.
            if let Some(orphan) = self.handles.lock().orphans.get_mut(&fid) {
                let a = &mut orphan.attrs;
                a.mode = caller::mode_after_change(a.mode, a.gid, caller);
            }
            return Ok(());
        };
        let kept = caller::mode_after_change(mode, gid, caller);
        if kept != mode {
            let set = SetAttr {
                mode: Some(kept),
                ..SetAttr::default()
            };
            // Not waited for: it is in the log before the change's own commit.
            let _ = self.setattr(fid, None, set)?;
        }
        Ok(())
    }

    /// Commits a writer's copy if it changed. Returns the entry, if one was written. A failure
    /// is remembered (`Standing::Failed`) so that release does not commit what the caller saw
    /// fail.
    pub(super) fn commit_writer(&self, w: &mut Writer) -> Result<Option<Seq>> {
        let result = self.try_commit_writer(w);
        if result.is_err() {
            w.standing = Standing::Failed {
                written: w.written(),
            };
        }
        result
    }

    pub(super) fn try_commit_writer(&self, w: &mut Writer) -> Result<Option<Seq>> {
        if !w.dirty() {
            return Ok(None);
        }
        let fid = w.fid;
        let last_write = w.last_write;
        // A utimes after the last write wins over the write's time, as on ext4.
        let mtime_set = self.handles.lock().mtime_set.get(&fid).copied();
        let mtime = |old: Time| match mtime_set.is_none_or(|t| t <= last_write) {
            true => last_write,
            false => old,
        };
        let Some(inode) = self.pipeline.inode(fid) else {
            // Unlinked while open: as on a local filesystem, the bytes go with the file, and
            // fstat of the open file shows them until its last close.
            if let Some(orphan) = self.handles.lock().orphans.get_mut(&fid) {
                orphan.size = w.len().unwrap_or(orphan.size);
                orphan.attrs.mtime = mtime(orphan.attrs.mtime);
            }
            w.standing = Standing::Clean;
            return Ok(None);
        };
        let (content, checked) = match self.overlay_patch(w, &inode)? {
            Some(patch) => (patch, false),
            None => (self.whole_or_patch(w, &inode)?, true),
        };
        let len = content.len();
        let result = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ENOENT, "unlinked during the commit"))?;
            // The JSON rule was checked on whole bytes only (a record's are always).
            if is_record(inode) && !checked {
                return Err(err!(EAGAIN, "renamed to a record's name during the commit"));
            }
            let mut attrs = inode.attrs;
            attrs.mtime = mtime(attrs.mtime);
            attrs.ctime = Time::now();
            Ok(match content {
                Content::Whole(data) => new_content(inode, attrs, data),
                // Only onto the version the copy started from.
                Content::Patch { base, .. } if Some(inode.last_seq) != base => {
                    return Err(err!(EAGAIN, "the file changed since this copy was read"));
                }
                Content::Patch {
                    dcrc,
                    ranges,
                    shown,
                    len,
                    ..
                } => {
                    let dcrc = match dcrc {
                        Dcrc::Whole(dcrc) => dcrc,
                        // An append: the checksum goes on from the old one.
                        Dcrc::Appended { to } if to == inode.size => {
                            let tail = ranges.first().map_or(&[][..], |r| &r.data.bytes[..]);
                            crc32c::crc32c_append(inode.dcrc, tail)
                        }
                        Dcrc::Appended { .. } => {
                            return Err(err!(EIO, "a patch's base has another length (a bug)"))
                        }
                    };
                    new_patch(inode, attrs, (len, dcrc), ranges, shown)
                }
            })
        });
        match result {
            Ok(seq) => {
                w.committed();
                w.changes.reset(seq, len);
                // A large plain file's next writes go over the bytes just committed, which the
                // pipeline shares until they reach the disk: copying them at the next write
                // would cost the whole file per save of a file kept open (a log, a journal).
                if let Copy::Loaded(bytes) = &w.copy {
                    if len >= self.opts.patch_min && !is_record(&inode) {
                        let committed = Version::Memory(bytes.clone());
                        w.copy = Copy::Overlay(Box::new(Overlay::over(&committed)?));
                    }
                }
                // New content replaces what could not be restored.
                self.damaged.lock().remove(&fid);
                Ok(Some(seq))
            }
            Err(e) if e.errno == libc::ENOENT => {
                w.standing = Standing::Clean;
                Ok(None)
            }
            Err(e) if e.errno == libc::EAGAIN => {
                // Whole, this time.
                w.changes.whole = true;
                self.try_commit_writer(w)
            }
            Err(e) => Err(e),
        }
    }

    /// The patch of a writer that kept its writes over the file unread (`Copy::Overlay`): its
    /// changed ranges read through the overlay, and the CRC32C of the whole, which for an
    /// append goes on from the old one at the commit. None when it must commit whole (it
    /// changed too much, or must not be compared, or the file is a record).
    fn overlay_patch(&self, w: &Writer, inode: &Inode) -> Result<Option<Content>> {
        let Copy::Overlay(o) = &w.copy else {
            return Ok(None);
        };
        let len = o.len();
        let Some(ranges) = w.changes.ranges(len) else {
            return Ok(None);
        };
        if is_record(inode) || len < self.opts.patch_min || 2 * covered(&ranges) >= len {
            return Ok(None);
        }
        let version = Version::Overlay(Arc::new((**o).clone()));
        let dcrc = match w.changes.base_len {
            Some(to) if ranges == [(to, len)] || (ranges.is_empty() && to == len) => {
                Dcrc::Appended { to }
            }
            _ => Dcrc::Whole(version.crc32c()?),
        };
        let ranges = ranges
            .iter()
            .map(|(s, e)| {
                let data = o.read_at(*s, (e - s) as usize)?;
                Ok(Range {
                    at: *s,
                    data: Data::new(Arc::new(data)),
                })
            })
            .collect::<Result<Vec<Range>>>()?;
        let token = w.token.clone();
        Ok(Some(Content::Patch {
            base: w.changes.base,
            dcrc,
            ranges,
            shown: Shown { version, token },
            len,
        }))
    }

    /// A writer's whole bytes, refused if the file is a record and they are not JSON, as a
    /// patch when the file is large and the save changed less than half of it: the ranges the
    /// writer touched, or for a rewrite (open(O_TRUNC)) what differs from the version it
    /// replaces.
    fn whole_or_patch(&self, w: &mut Writer, inode: &Inode) -> Result<Content> {
        let bytes = self.load(w)?.clone();
        if is_record(inode) {
            if let Err(invalid) = self.validate(&bytes) {
                let dcrc = crate::log::crc32c(&bytes);
                let e = if w.rejected == Some(dcrc) {
                    // The first refusal was logged (at warn) with where its bytes are kept.
                    err!(EINVAL, "{}: refused again, {invalid}", show(&inode.name))
                        .at(log::Level::Debug)
                } else {
                    w.rejected = Some(dcrc);
                    self.reject(&inode.name, &bytes, &invalid)
                };
                return Err(e);
            }
        }
        let len = bytes.len() as u64;
        let (ranges, base) = match w.changes.ranges(len) {
            Some(r) => (Some(r), w.changes.base),
            None if len >= self.opts.patch_min && !w.changes.whole => {
                self.diff_committed(inode.fid, &bytes)
            }
            None => (None, None),
        };
        let ranges = ranges.filter(|r| len >= self.opts.patch_min && 2 * covered(r) < len);
        Ok(match ranges {
            Some(ranges) => {
                let (dcrc, ranges) = patch_of(&bytes, &ranges);
                let version = Version::Memory(bytes);
                Content::Patch {
                    base,
                    dcrc: Dcrc::Whole(dcrc),
                    ranges,
                    shown: Shown {
                        version,
                        token: None,
                    },
                    len,
                }
            }
            None => Content::Whole(Data::new(bytes)),
        })
    }

    /// The range of `new` that differs from `fid`'s committed bytes (from the first byte that
    /// differs; to the last one that does when the lengths match, else to the end), and the
    /// `last_seq` of the version compared with. Nothing if that version cannot be read.
    fn diff_committed(&self, fid: Fid, new: &[u8]) -> (Option<Vec<(u64, u64)>>, Option<Seq>) {
        let Ok((old, Some(seq))) = self.version(fid) else {
            return (None, None);
        };
        let Ok(old) = old.version.read_all(self.opts.max_file_size) else {
            return (None, None);
        };
        let start = old.iter().zip(new).take_while(|(a, b)| a == b).count();
        let end = match old.len() == new.len() {
            true => {
                let same = old[start..].iter().rev().zip(new[start..].iter().rev());
                new.len() - same.take_while(|(a, b)| a == b).count()
            }
            false => new.len(),
        };
        let ranges = match start < end {
            true => vec![(start as u64, end as u64)],
            false => Vec::new(),
        };
        (Some(ranges), Some(seq))
    }

    /// Commits every handle of `fid` that holds uncommitted writes.
    pub(super) fn commit_writers_of(&self, fid: Fid) -> Result<()> {
        // Lock order is writer, then the handle table (commit_writer takes the table): so
        // the writers are collected first and locked only after the table is released.
        let handles: Vec<Arc<Handle>> = self
            .handles
            .lock()
            .map
            .values()
            .filter(|h| matches!(&***h, Handle::Write(_)))
            .cloned()
            .collect();
        for h in handles {
            if let Handle::Write(w) = &*h {
                let mut w = w.lock();
                if w.fid == fid {
                    self.commit_writer(&mut w)?;
                }
            }
        }
        Ok(())
    }

    /// close(2) of a descriptor: the commit point of a handle that wrote.
    ///
    /// A record's handle that was only truncated by open(O_TRUNC) and never written does not
    /// commit here but at its last close (release) or fsync: the shell's `> file` opens,
    /// dup2()s and closes the first descriptor before writing, and committing the empty
    /// record at that close would lose its content if the JSON that follows is refused. A
    /// plain file is emptied here, as on a local filesystem: the kernel sends the release
    /// after close(2) has returned, and a `stat` right after `: > file` must see it empty.
    pub fn flush(&self, fh: u64) -> Result<Ticket> {
        self.flush_as(fh, None)
    }

    /// close(2) by the process with lock owner `owner` (None: unknown, which commits).
    pub fn flush_as(&self, fh: u64, owner: Option<u64>) -> Result<Ticket> {
        match &*self.handle(fh)? {
            Handle::Write(w) => {
                let mut w = w.lock();
                let record = || self.inode(w.fid).is_ok_and(|i| is_record(&i));
                if !w.written() && (!w.dirty() || record()) {
                    return Ok(self.ride_ends(&mut w, None));
                }
                // A process that did not write closing its copy of the descriptor.
                if !w.closes_for(owner) {
                    return Ok(Ticket::NONE);
                }
                match self.commit_writer(&mut w) {
                    Ok(seq) => Ok(self.ride_ends(&mut w, seq)),
                    Err(e) => {
                        if w.created && w.rejected.is_some() {
                            self.undo_creation(&mut w);
                        }
                        Err(e)
                    }
                }
            }
            _ => Ok(Ticket::NONE),
        }
    }

    /// The ticket of a commit point of a handle: for the entry `seq` it committed, or else
    /// for the create still riding on the handle (see `Writer::riding`).
    fn ride_ends(&self, w: &mut Writer, seq: Option<Seq>) -> Ticket {
        match seq.or(w.riding).inspect(|_| w.riding = None) {
            Some(seq) => self.commit_ticket(seq),
            None => Ticket::NONE,
        }
    }

    /// The ticket of an attribute change `seq` to `fid` by `caller`: none if `caller` is the
    /// thread whose open made the file and that create still rides (`Writer::rider`), for the
    /// change then rides with it, to the handle's commit point.
    pub(super) fn ride_or_ticket(&self, fid: Fid, seq: Seq, caller: &Caller) -> Ticket {
        if caller.pid != 0 {
            for h in self.writers_of(fid) {
                let Handle::Write(w) = &*h else { continue };
                let mut w = w.lock();
                if w.riding.is_some() && w.rider == caller.pid {
                    w.riding = Some(seq);
                    return Ticket::NONE;
                }
            }
        }
        self.commit_ticket(seq)
    }

    /// A new record whose first save is refused at close: the empty file its open made is
    /// removed again, so a folder scan never meets an empty record nobody meant to keep
    /// (`echo '{bad' > NEW.json`). Only if nothing was committed to it since. The handle goes
    /// on with the file unnamed, as after an unlink; its refused bytes are in `rejected/`.
    pub(super) fn undo_creation(&self, w: &mut Writer) {
        let fid = w.fid;
        w.created = false;
        let removed = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ENOENT, "inode {fid} is gone"))?;
            if inode.size != 0 || inode.kind != Kind::File || !inode.links.is_empty() {
                return Err(err!(EEXIST, "{} holds content now", show(&inode.name)));
            }
            Ok(Op::Delete {
                fid,
                dir: inode.parent,
                name: inode.name.clone(),
            })
        });
        let Ok(seq) = removed else {
            return; // renamed, unlinked or written by another: theirs to keep
        };
        let Some((dir, name)) = self
            .handles
            .lock()
            .orphans
            .get(&fid)
            .map(|i| (i.parent, i.name.clone()))
        else {
            return;
        };
        // Durable before the caller hears of the refusal, like the create it takes back.
        if let Err(e) = self.wait(self.commit_ticket(seq)) {
            error!("{}: removing the refused new record: {e}", show(&name));
        }
        self.forget_name(dir, &name);
        warn!(
            "{}: its first save was refused, so the new empty record is removed again",
            show(&name)
        );
    }

    /// fsync/fdatasync: commits the handle's writes and waits for everything this file has
    /// committed (in `--sync fsync` and `always`).
    pub fn fsync(&self, fh: u64) -> Result<Ticket> {
        let handle = self.handle(fh)?;
        let fid = match &*handle {
            Handle::Write(w) => {
                let mut w = w.lock();
                self.commit_writer(&mut w)?;
                w.fid
            }
            Handle::Read { fid, .. } => *fid,
            Handle::Dir { .. } => return self.fsyncdir(),
        };
        let seq = self.inode(fid)?.last_seq;
        Ok(self.fsync_ticket(seq))
    }

    pub fn fsyncdir(&self) -> Result<Ticket> {
        Ok(self.fsync_ticket(self.pipeline.last_seq()))
    }

    /// The last close of a handle. A handle still holding writes (its flush failed or never
    /// came) is committed here; there is nobody left to tell of an error but the log.
    pub fn release(&self, fh: u64) {
        let Some(handle) = self.handles.lock().map.remove(&fh) else {
            return;
        };
        let fid = match &*handle {
            Handle::Write(w) => {
                let mut w = w.lock();
                if matches!(w.standing, Standing::Truncated | Standing::Written) {
                    if let Err(e) = self.commit_writer(&mut w) {
                        error!("inode {}: uncommitted writes lost at release: {e}", w.fid);
                    }
                }
                w.fid
            }
            Handle::Read { fid, .. } => *fid,
            Handle::Dir { .. } => return,
        };
        let mut hs = self.handles.lock();
        if let Some(fhs) = hs.writers.get_mut(&fid) {
            fhs.retain(|f| *f != fh);
            if fhs.is_empty() {
                hs.writers.remove(&fid);
            }
        }
        let n = hs.opens.get_mut(&fid).map(|n| {
            *n -= 1;
            *n
        });
        if n == Some(0) {
            hs.opens.remove(&fid);
            // A file removed a moment ago stays openable until `forget_removed` drops it.
            if hs.orphans.contains_key(&fid) && !hs.recently_removed.iter().any(|(_, f)| *f == fid)
            {
                hs.orphans.remove(&fid);
            }
            hs.mtime_set.remove(&fid);
        }
    }
}

/// A writer's new bytes, as its commit logs them.
enum Content {
    Whole(Data),
    /// The changed ranges of the version `base` (the file's `last_seq` then), the CRC32C
    /// of the whole, and the new version for readers meanwhile.
    Patch {
        base: Option<Seq>,
        dcrc: Dcrc,
        ranges: Vec<Range>,
        shown: Shown,
        len: u64,
    },
}

enum Dcrc {
    Whole(u32),
    /// An append to a version of `to` bytes: its checksum goes on from that version's.
    Appended {
        to: u64,
    },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Whole(data) => data.len(),
            Content::Patch { len, .. } => *len,
        }
    }
}

fn covered(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(s, e)| e - s).sum()
}

/// The CRC32C of `bytes` and the ranges of them a `PATCH` carries.
fn patch_of(bytes: &[u8], ranges: &[(u64, u64)]) -> (u32, Vec<Range>) {
    let ranges = ranges
        .iter()
        .map(|(s, e)| Range {
            at: *s,
            data: Data::new(Arc::new(bytes[*s as usize..*e as usize].to_vec())),
        })
        .collect();
    (crate::log::crc32c(bytes), ranges)
}
