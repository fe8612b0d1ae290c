//! Reading and writing through a handle, and its commit points: close, fsync and the last
//! close (release). A handle that writes works on its own copy until it commits.

use std::sync::Arc;

use log::{error, warn};

use super::rules::{is_record, show};
use super::state::{Copy, Handle, RecordFs, SetAttr, Standing, Ticket, WriteBy, Writer};
use crate::caller::{self, Caller};
use crate::error::{err, Result};
use crate::log::Op;
use crate::types::{Fid, Kind, Seq};
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
            if inode.size != 0 || inode.kind != Kind::File || !inode.extras.links().is_empty() {
                return Err(err!(
                    EEXIST,
                    "{} holds content now",
                    show(&inode.name.bytes())
                ));
            }
            Ok(Op::Delete {
                fid,
                dir: inode.parent,
                name: inode.name.to_vec(),
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
            error!(
                "{}: removing the refused new record: {e}",
                show(&name.bytes())
            );
        }
        self.forget_name(dir, &name.bytes(), fid);
        warn!(
            "{}: its first save was refused, so the new empty record is removed again",
            show(&name.bytes())
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
        drop(hs);
        // When this is done matters: until then the file is not settled (a writer is open).
        log::debug!(target: "recordfs::handles", "inode {fid}: handle {fh} released");
    }

    /// A file's committed bytes, whole (for the commands that copy stores).
    pub fn read_whole(&self, fid: Fid) -> Result<Vec<u8>> {
        let (fh, _) = self.open(fid, libc::O_RDONLY)?;
        let bytes = self
            .getattr(fid, Some(fh))
            .and_then(|s| self.read(fh, 0, s.size as u32));
        self.release(fh);
        bytes
    }
}
