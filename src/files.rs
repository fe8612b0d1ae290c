//! The core of the filesystem: what each operation means, with no FUSE in sight. The FUSE
//! adapter (`fuse.rs`) forwards to `RecordFs`; tests call it directly too.
//!
//! A handle that writes works on its own copy of the file; the copy is committed as a whole
//! at flush (close), fsync, or when the file is renamed. Readers hold the version that was
//! committed when they opened (a `Version`). See README, "Semantics".

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{error, warn};
use parking_lot::Mutex;

use crate::caller::{self, Caller};
use crate::disk::{Disk, RealDisk};
use crate::error::{err, Error, Result};
use crate::limits::{
    FORGET_WAIT, MAX_HANDLES, MAX_OWNERS, MAX_RECENTLY_REMOVED, NAME_MAX, REMOVED_GRACE,
    SYMLINK_MAX,
};
use crate::log::{Data, Op};
use crate::namespace::{Inode, Namespace};
use crate::options::{Options, SyncMode};
use crate::pipeline::{Pipeline, Threads, Version, Waiter};
use crate::record::{check_json, is_record_name, validate_record};
use crate::recovery::{self, Finding};
use crate::store::{self, Layout, StoreLock};
use crate::types::{Attrs, Fid, Kind, Seq, Time, ROOT};

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
    fn of(inode: &Inode) -> Stat {
        Stat {
            ino: inode.fid,
            kind: inode.kind,
            size: match inode.kind {
                Kind::Symlink => inode.target.as_ref().map_or(0, |t| t.len() as u64),
                _ => inode.size,
            },
            attrs: inode.attrs,
            nlink: match inode.kind {
                Kind::Dir => 2,
                _ => 1,
            },
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

/// A handle that writes: its own copy of the file until it commits.
struct Writer {
    fid: Fid,
    /// The committed version it started from; read lazily.
    base: Option<Version>,
    /// Its copy, once read (or from the start with O_TRUNC). Shared with the commit pipeline
    /// after a commit, and copied again only on the next write.
    data: Option<Arc<Vec<u8>>>,
    dirty: bool,
    /// Bytes were written (or ftruncate called) since the last commit: not only O_TRUNC.
    written: bool,
    append: bool,
    readable: bool,
    last_write: Time,
    /// The checksum of the last bytes refused as a record, so a close after a failed fsync
    /// does not keep the same rejected bytes twice.
    rejected: Option<u32>,
    /// The last commit of these bytes failed and the caller was told: release must not commit
    /// them behind its back. A new write earns a new attempt.
    failed: bool,
    /// The processes (by the kernel's lock owner: one per table of open files) whose writes
    /// are not yet committed. close(2) commits only for one of them: a forked child that
    /// closes its inherited copy (at exec, or at exit) must not commit its parent's half-done
    /// writes. With none known (only ftruncate or a mapping's writeback changed the copy: the
    /// kernel names no process for those), or with more than `MAX_OWNERS` (`unowned`), any
    /// close commits.
    owners: Vec<u64>,
    unowned: bool,
    /// This handle's open made the file, and nothing has been committed to it since: a
    /// refused first save then takes the name away again (`undo_creation`).
    created: bool,
    /// The threads whose writes are not yet committed (at most `MAX_OWNERS`): `stat` and
    /// `fstat` by their process show this copy's size and times (see `getattr_as`).
    writing_threads: Vec<u32>,
}

impl Writer {
    fn note_thread(&mut self, tid: u32) {
        if tid != 0
            && !self.writing_threads.contains(&tid)
            && self.writing_threads.len() < MAX_OWNERS
        {
            self.writing_threads.push(tid);
        }
    }

    /// Whether process `pid` has writes in this copy that are not committed.
    fn written_by_process(&self, tid: u32, pid: u32) -> bool {
        self.dirty
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

enum Handle {
    Read { fid: Fid, version: Version },
    Write(Mutex<Writer>),
    Dir { entries: Vec<DirEntry> },
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Fid,
    pub kind: Kind,
    pub name: Vec<u8>,
}

#[derive(Default)]
struct Handles {
    next: u64,
    map: HashMap<u64, Arc<Handle>>,
    /// Open file handles per fid.
    opens: HashMap<Fid, usize>,
    /// The handles open for writing, per fid.
    writers: HashMap<Fid, Vec<u64>>,
    /// Files whose last name is gone while handles are open (`fstat` still works on them),
    /// and for a moment files just removed (see `recently_removed`).
    orphans: HashMap<Fid, Inode>,
    /// Files removed (unlinked, renamed over), newest last. For `REMOVED_GRACE` they stay in
    /// `orphans`, open or not: the kernel may have looked the name up just before the removal
    /// and send the open of the old file just after, which on a local filesystem opens the old
    /// file. Past that, such an open answers ESTALE and the kernel looks the name up again.
    recently_removed: VecDeque<(Instant, Fid)>,
    /// When (wall clock) a file's mtime was last set explicitly: a commit after that keeps it.
    mtime_set: HashMap<Fid, Time>,
}

impl Handles {
    fn forget_removed(&mut self, now: Instant) {
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
pub enum Invalidation {
    /// A file's cached pages and attributes: its committed bytes changed.
    Inode(Fid),
    /// A name the kernel may have cached, removed by the daemon itself; `done` hears when
    /// the kernel has forgotten it.
    Entry {
        dir: Fid,
        name: Vec<u8>,
        done: std::sync::mpsc::SyncSender<()>,
    },
}

type Invalidator = Box<dyn Fn(Invalidation) + Send + Sync>;

pub struct RecordFs {
    disk: Arc<dyn Disk>,
    layout: Layout,
    opts: Options,
    pipeline: Arc<Pipeline>,
    commit_threads: Mutex<Option<Threads>>,
    /// How the shutdown went, once it has run.
    closed: Mutex<Option<Result<()>>>,
    handles: Mutex<Handles>,
    /// Files recovery could not restore: they answer EIO until new content is committed.
    damaged: Mutex<HashSet<Fid>>,
    invalidator: Mutex<Option<Invalidator>>,
    rejected_count: AtomicU64,
    findings: Vec<Finding>,
    notices: Vec<String>,
    lock: StoreLock,
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(err!(
            ENAMETOOLONG,
            "name of {} bytes is longer than {NAME_MAX}",
            name.len()
        ));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(err!(
            EINVAL,
            "{:?} cannot name a file",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

fn check_dir(dir: Fid) -> Result<()> {
    if dir != ROOT {
        return Err(err!(ENOTDIR, "fid {dir} is not a directory"));
    }
    Ok(())
}

/// The entry that gives an existing regular file new bytes.
fn new_content(inode: &Inode, attrs: Attrs, data: Data) -> Op {
    Op::Set {
        fid: inode.fid,
        dir: inode.parent,
        name: inode.name.clone(),
        kind: Kind::File,
        attrs,
        data,
    }
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl RecordFs {
    /// Opens the store (creating it if missing or empty), recovers it, and starts the commit
    /// thread.
    pub fn start(store: &std::path::Path, opts: Options) -> Result<RecordFs> {
        RecordFs::start_on(Arc::new(RealDisk), store, opts)
    }

    /// Like `start`, on any disk (tests use a simulated one).
    pub fn start_on(
        disk: Arc<dyn Disk>,
        store: &std::path::Path,
        opts: Options,
    ) -> Result<RecordFs> {
        let layout = Layout::new(store);
        let recovered = recovery::recover(&*disk, &layout, &opts)?;
        let policy = crate::pipeline::CompactPolicy {
            log_limit: opts.log_limit,
            every: opts.compact_every,
            keep: opts.keep_logs,
        };
        let (pipeline, threads) = Pipeline::start(
            disk.clone(),
            layout.clone(),
            recovered.ns,
            recovered.log,
            policy,
            recovered.backing_durable,
            &recovered.damaged,
        )?;
        Ok(RecordFs {
            disk,
            layout,
            opts,
            pipeline,
            commit_threads: Mutex::new(Some(threads)),
            closed: Mutex::new(None),
            handles: Mutex::new(Handles {
                next: 1,
                ..Handles::default()
            }),
            damaged: Mutex::new(recovered.damaged),
            invalidator: Mutex::new(None),
            rejected_count: AtomicU64::new(0),
            findings: recovered.findings,
            notices: recovered.notices,
            lock: recovered.lock,
        })
    }

    /// What recovery found and repaired when this store was opened.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// What opening changed in the store that the user should hear of once (an upgrade).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Called with a fid whose committed bytes changed, so kernel caches can be dropped.
    pub fn set_invalidator(&self, f: Invalidator) {
        *self.invalidator.lock() = Some(f);
    }

    /// Flushes and syncs everything, writes a checkpoint, stops the commit thread. Handles
    /// still open with uncommitted bytes are committed first.
    /// Runs once; later calls return the first one's result.
    pub fn shutdown(&self) -> Result<()> {
        let mut closed = self.closed.lock();
        if let Some(result) = &*closed {
            return result.clone();
        }
        self.lock.say_unmounting();
        let open: Vec<u64> = self.handles.lock().map.keys().copied().collect();
        for fh in open {
            self.release(fh);
        }
        *self.invalidator.lock() = None;
        let result = match self.commit_threads.lock().take() {
            Some(t) => self.pipeline.shutdown(t),
            None => Ok(()),
        };
        *closed = Some(result.clone());
        result
    }

    /// Whether the store was closed with everything applied and checkpointed.
    pub fn closed_cleanly(&self) -> bool {
        matches!(&*self.closed.lock(), Some(Ok(())))
    }

    /// Calls `done` when the ticket's entry is durable.
    pub fn when_durable(&self, ticket: Ticket, done: Waiter) {
        match ticket.0 {
            None => done(Ok(())),
            Some(seq) => self.pipeline.when_durable(seq, done),
        }
    }

    /// Blocks until the ticket's entry is durable.
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        match ticket.0 {
            None => Ok(()),
            Some(seq) => self.pipeline.wait_durable(seq),
        }
    }

    fn commit_ticket(&self, seq: Seq) -> Ticket {
        Ticket((self.opts.sync == SyncMode::Always).then_some(seq))
    }

    fn fsync_ticket(&self, seq: Seq) -> Ticket {
        Ticket((self.opts.sync != SyncMode::Never).then_some(seq))
    }

    fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            return Err(err!(EROFS, "mounted read-only"));
        }
        Ok(())
    }

    fn commit(&self, build: impl FnOnce(&mut Namespace) -> Result<Op>) -> Result<Seq> {
        self.commit_keeping(&[], &[], build)
    }

    /// A commit with the bytes of the files in `in_log` in the live log (see
    /// `Pipeline::commit_keeping`).
    fn commit_keeping(
        &self,
        in_log: &[Fid],
        relog: &[(Fid, Data)],
        build: impl FnOnce(&mut Namespace) -> Result<Op>,
    ) -> Result<Seq> {
        self.writable()?;
        let committed = self.pipeline.commit_keeping(in_log, relog, build)?;
        if !committed.applied.removed.is_empty() {
            let mut h = self.handles.lock();
            let now = Instant::now();
            for inode in committed.applied.removed {
                h.recently_removed.push_back((now, inode.fid));
                h.orphans.insert(inode.fid, inode);
            }
            h.forget_removed(now);
        }
        Ok(committed.seq)
    }

    /// A file by inode number, also one removed while open or a moment ago. One that is gone
    /// answers ESTALE, not ENOENT: the kernel had the name cached when another process
    /// replaced the file, and on ESTALE it looks the name up again and retries, as open(2)
    /// on a local filesystem never fails with ENOENT for a name that always existed.
    fn inode(&self, fid: Fid) -> Result<Inode> {
        if let Some(i) = self.pipeline.inode(fid) {
            return Ok(i);
        }
        self.handles
            .lock()
            .orphans
            .get(&fid)
            .cloned()
            .ok_or_else(|| err!(ESTALE, "no file with inode {fid}"))
    }

    fn notify_changed(&self, fid: Fid) {
        if let Some(f) = &*self.invalidator.lock() {
            f(Invalidation::Inode(fid));
        }
    }

    /// Makes the kernel forget a name the daemon removed by itself, and waits (bounded) until
    /// it has: a `stat` right after the caller hears of it must not find the name cached.
    fn forget_name(&self, dir: Fid, name: &[u8]) {
        let (done, forgotten) = std::sync::mpsc::sync_channel(1);
        if let Some(f) = &*self.invalidator.lock() {
            f(Invalidation::Entry {
                dir,
                name: name.to_vec(),
                done,
            });
        } else {
            return;
        }
        if forgotten.recv_timeout(FORGET_WAIT).is_err() {
            warn!(
                "{}: the kernel did not forget the name within {} s",
                show(name),
                FORGET_WAIT.as_secs()
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Names

    pub fn lookup(&self, dir: Fid, name: &[u8]) -> Result<Stat> {
        check_dir(dir)?;
        if name.len() > NAME_MAX {
            return Err(err!(ENAMETOOLONG, "name longer than {NAME_MAX} bytes"));
        }
        self.pipeline
            .with_ns(|ns| ns.lookup(dir, name).map(Stat::of))
            .ok_or_else(|| err!(ENOENT, "{} does not exist", show(name)))
    }

    pub fn getattr(&self, fid: Fid, fh: Option<u64>) -> Result<Stat> {
        let mut stat = match self.pipeline.inode(fid) {
            Some(inode) => Stat::of(&inode),
            // Unlinked while open: no name links to it any more, as fstat says elsewhere.
            None => Stat {
                nlink: 0,
                ..Stat::of(&self.inode(fid)?)
            },
        };
        // The handle that writes sees its own size (fstat after write).
        if let Some(Handle::Write(w)) = fh.and_then(|fh| self.handle(fh).ok()).as_deref() {
            let w = w.lock();
            if let (Some(data), true) = (&w.data, w.fid == fid) {
                stat.size = data.len() as u64;
            }
        }
        Ok(stat)
    }

    /// `stat` or `fstat` by `caller`, which reach the daemon without a descriptor: the process
    /// that holds uncommitted writes to the file sees their size and times, as a local
    /// filesystem shows a writer its own writes; every other process sees the committed file.
    pub fn getattr_as(&self, fid: Fid, fh: Option<u64>, caller: &Caller) -> Result<Stat> {
        let mut stat = self.getattr(fid, fh)?;
        if fh.is_some() || caller.pid == 0 {
            return Ok(stat);
        }
        let writers: Vec<Arc<Handle>> = {
            let hs = self.handles.lock();
            let Some(fhs) = hs.writers.get(&fid) else {
                return Ok(stat);
            };
            fhs.iter().filter_map(|f| hs.map.get(f).cloned()).collect()
        };
        // Lock order: writers after the handle table is released (see commit_writers_of).
        let mut process = None;
        for h in writers {
            let Handle::Write(w) = &*h else { continue };
            let w = w.lock();
            let pid = *process.get_or_insert_with(|| caller.process());
            if let (true, Some(data)) = (w.written_by_process(caller.pid, pid), &w.data) {
                stat.size = data.len() as u64;
                // As the commit will have it: a utimes after the last write wins.
                let mtime_set = self.handles.lock().mtime_set.get(&fid).copied();
                if mtime_set.is_none_or(|t| t <= w.last_write) {
                    stat.attrs.mtime = w.last_write;
                }
                stat.attrs.ctime = stat.attrs.ctime.max(w.last_write);
                break;
            }
        }
        Ok(stat)
    }

    pub fn readlink(&self, fid: Fid) -> Result<Vec<u8>> {
        let inode = self.inode(fid)?;
        match (&inode.kind, &inode.target) {
            (Kind::Symlink, Some(t)) => Ok(t.to_vec()),
            _ => Err(err!(EINVAL, "{} is not a symbolic link", show(&inode.name))),
        }
    }

    fn new_attrs(mode: u32, uid: u32, gid: u32) -> Attrs {
        let now = Time::now();
        Attrs {
            mode: mode & 0o7777,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    /// Makes a new empty regular file or symlink, committed as its own entry.
    fn make(
        &self,
        dir: Fid,
        name: &[u8],
        kind: Kind,
        attrs: Attrs,
        data: Data,
    ) -> Result<(Stat, Seq)> {
        check_dir(dir)?;
        check_name(name)?;
        let seq = self.commit(|ns| {
            if ns.lookup(dir, name).is_some() {
                return Err(err!(EEXIST, "{} exists", show(name)));
            }
            Ok(Op::Set {
                fid: ns.allocate_fid(),
                dir,
                name: name.to_vec(),
                kind,
                attrs,
                data,
            })
        })?;
        Ok((self.lookup(dir, name)?, seq))
    }

    /// mknod of a regular file (others answer EPERM in the adapter).
    pub fn mknod(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(Stat, Ticket)> {
        let (stat, seq) = self.make(
            dir,
            name,
            Kind::File,
            Self::new_attrs(mode, uid, gid),
            Data::empty(),
        )?;
        Ok((stat, self.commit_ticket(seq)))
    }

    pub fn symlink(
        &self,
        dir: Fid,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<(Stat, Ticket)> {
        if target.len() > SYMLINK_MAX {
            return Err(err!(
                ENAMETOOLONG,
                "symlink target longer than {SYMLINK_MAX} bytes"
            ));
        }
        let data = Data::new(Arc::new(target.to_vec()));
        let (stat, seq) = self.make(
            dir,
            name,
            Kind::Symlink,
            Self::new_attrs(0o777, uid, gid),
            data,
        )?;
        Ok((stat, self.commit_ticket(seq)))
    }

    /// open(O_CREAT): makes the file, or opens it if it exists and O_EXCL is not set.
    pub fn create(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        flags: i32,
    ) -> Result<(Stat, u64, Ticket)> {
        let caller = Caller { uid, gid, pid: 0 };
        self.create_as(dir, name, mode, flags, &caller)
    }

    /// open(O_CREAT) by `caller`, who owns a file it makes.
    pub fn create_as(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        flags: i32,
        caller: &Caller,
    ) -> Result<(Stat, u64, Ticket)> {
        match self.make(
            dir,
            name,
            Kind::File,
            Self::new_attrs(mode, caller.uid, caller.gid),
            Data::empty(),
        ) {
            Ok((stat, seq)) => {
                let fh =
                    self.add_handle(stat.ino, flags, Some(Version::Memory(Arc::new(Vec::new()))))?;
                if let Ok(Handle::Write(w)) = self.handle(fh).as_deref() {
                    w.lock().created = true;
                }
                Ok((stat, fh, self.commit_ticket(seq)))
            }
            Err(e) if e.errno == libc::EEXIST && flags & libc::O_EXCL == 0 => {
                let ino = self.lookup(dir, name)?.ino;
                let (fh, ticket) = self.open_as(ino, flags, caller)?;
                Ok((self.getattr(ino, Some(fh))?, fh, ticket))
            }
            Err(e) => Err(e),
        }
    }

    pub fn unlink(&self, dir: Fid, name: &[u8]) -> Result<Ticket> {
        check_dir(dir)?;
        let seq = self.commit(|ns| {
            let inode = ns
                .lookup(dir, name)
                .ok_or_else(|| err!(ENOENT, "{} does not exist", show(name)))?;
            if inode.kind == Kind::Dir {
                return Err(err!(EISDIR, "{} is a directory", show(name)));
            }
            Ok(Op::Delete {
                fid: inode.fid,
                dir,
                name: name.to_vec(),
            })
        })?;
        Ok(self.commit_ticket(seq))
    }

    /// rename(2) and renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE. Uncommitted writes
    /// to the file being renamed are committed first; a plain file that becomes a record must
    /// hold valid JSON.
    pub fn rename(
        &self,
        dir: Fid,
        name: &[u8],
        to_dir: Fid,
        to_name: &[u8],
        flags: u32,
    ) -> Result<Ticket> {
        check_dir(dir)?;
        check_dir(to_dir)?;
        check_name(to_name)?;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(err!(EINVAL, "rename flags {flags:#x} are not supported"));
        }
        let src = self.lookup(dir, name)?;
        self.commit_writers_of(src.ino)?;
        // A concurrent commit may change what we validated; then check again.
        for _ in 0..3 {
            // The log must hold the bytes of what is renamed (see `bytes_to_relog`) when the
            // rename commits: a compaction in between is an EAGAIN, and another round.
            let src_fid = self.lookup(dir, name)?.ino;
            let mut in_log = vec![src_fid];
            if exchange {
                in_log.extend(self.lookup(to_dir, to_name).map(|d| d.ino));
            }
            in_log.retain(|fid| !self.damaged.lock().contains(fid));
            let relog = self.bytes_to_relog(&in_log);
            let src = self.inode(src_fid)?;
            let dst = self
                .pipeline
                .with_ns(|ns| ns.lookup(to_dir, to_name).cloned());
            if dst.as_ref().is_some_and(|d| d.fid == src.fid) {
                return Ok(Ticket::NONE);
            }
            // Errors in the order rename(2) gives them: an existing target first.
            if noreplace && dst.is_some() {
                return Err(err!(EEXIST, "{} exists", show(to_name)));
            }
            if exchange && dst.is_none() {
                return Err(err!(ENOENT, "{} does not exist", show(to_name)));
            }
            self.check_becomes_record(&src, to_name)?;
            if let (true, Some(d)) = (exchange, &dst) {
                self.check_becomes_record(d, name)?;
            }
            // What was checked: which files, holding which bytes (a commit of the same bytes
            // again, as `relog` makes, changes nothing that was checked).
            let checked = |i: &Inode| (i.fid, i.size, i.dcrc);
            let seen = (checked(&src), dst.as_ref().map(checked));
            let result = self.commit_keeping(&in_log, &relog, |ns| {
                let s = ns
                    .lookup(dir, name)
                    .ok_or_else(|| err!(ENOENT, "{} does not exist", show(name)))?;
                let d = ns.lookup(to_dir, to_name);
                if (checked(s), d.map(checked)) != seen {
                    return Err(err!(EAGAIN, "changed while checked"));
                }
                if d.is_some() && noreplace {
                    return Err(err!(EEXIST, "{} exists", show(to_name)));
                }
                if d.is_none() && exchange {
                    return Err(err!(ENOENT, "{} does not exist", show(to_name)));
                }
                if d.is_some_and(|d| d.kind == Kind::Dir) {
                    return Err(err!(EISDIR, "{} is a directory", show(to_name)));
                }
                Ok(Op::Rename {
                    fid: s.fid,
                    dir,
                    name: name.to_vec(),
                    to_dir,
                    to_name: to_name.to_vec(),
                    replaced: d.map(|d| d.fid),
                    exchange,
                })
            });
            match result {
                Ok(seq) => return Ok(self.commit_ticket(seq)),
                Err(e) if e.errno == libc::EAGAIN => continue,
                Err(e) => return Err(e),
            }
        }
        Err(err!(
            EAGAIN,
            "{} kept changing during the rename",
            show(name)
        ))
    }

    /// A crash in the middle of a rename of a backing file, on a filesystem without a
    /// journal, can keep neither of its names; recovery then restores the file from the log,
    /// if the log holds its bytes. A file last written before the latest compaction has them
    /// only in its backing file: they are read here and committed again with the rename
    /// (`Pipeline::commit_keeping`). FORMAT.md, "Entries".
    ///
    /// A file that cannot be read is left out: the commit then answers EAGAIN, and the next
    /// round of the rename meets whatever happened to it.
    fn bytes_to_relog(&self, fids: &[Fid]) -> Vec<(Fid, Data)> {
        fids.iter()
            .filter(|fid| !self.pipeline.bytes_in_live_log(**fid))
            .filter_map(|fid| {
                let bytes = self.read_committed(*fid).ok()?;
                Some((*fid, Data::new(Arc::new(bytes))))
            })
            .collect()
    }

    /// A regular file renamed to a record's name must hold valid JSON.
    fn check_becomes_record(&self, inode: &Inode, new_name: &[u8]) -> Result<()> {
        if inode.kind != Kind::File || !is_record_name(new_name) || is_record_name(&inode.name) {
            return Ok(());
        }
        let bytes = self.read_committed(inode.fid)?;
        self.validate(&bytes)
            .map_err(|e| self.reject(new_name, &bytes, e))
    }

    fn read_committed(&self, fid: Fid) -> Result<Vec<u8>> {
        if self.damaged.lock().contains(&fid) {
            return Err(err!(EIO, "the backing file of inode {fid} is damaged"));
        }
        self.pipeline
            .version(fid)?
            .read_all(self.opts.max_file_size)
    }

    /// Keeps refused bytes in `rejected/` and says where, in the error the caller gets.
    /// The rule for a record's bytes on this mount (`--allow-nan`).
    fn validate(&self, bytes: &[u8]) -> Result<()> {
        validate_record(bytes, self.opts.allow_nan)
    }

    fn reject(&self, name: &[u8], bytes: &[u8], e: Error) -> Error {
        let now = Time::now();
        let tag = now.millis() * 1000 + self.rejected_count.fetch_add(1, Ordering::Relaxed) % 1000;
        let invalid = check_json(bytes, self.opts.allow_nan).err();
        let why = store::Refusal {
            time: now.iso8601(),
            name: String::from_utf8_lossy(name).into_owned(),
            error: invalid
                .as_ref()
                .map_or(e.reason.clone(), |i| i.what.clone()),
            line: invalid.as_ref().map(|i| i.line),
            column: invalid.as_ref().map(|i| i.column).filter(|c| *c > 0),
            len: bytes.len() as u64,
            kept: None,
        };
        let kept = match store::keep_rejected(&*self.disk, &self.layout, name, tag, bytes, &why) {
            Ok(path) => format!("the rejected bytes are in {}", path.display()),
            Err(e2) => format!("the rejected bytes could not be kept: {e2}"),
        };
        Error::new(
            e.errno,
            format!(
                "{}: refused, {}; the previous version is kept; {kept}",
                show(name),
                e.reason
            ),
        )
    }

    // -----------------------------------------------------------------------------------------
    // Handles

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .lock()
            .map
            .get(&fh)
            .cloned()
            .ok_or_else(|| err!(EBADF, "no open handle {fh}"))
    }

    fn insert_handle(&self, h: Handle, fid: Option<Fid>) -> Result<u64> {
        let mut hs = self.handles.lock();
        if hs.map.len() >= MAX_HANDLES {
            return Err(err!(ENFILE, "{MAX_HANDLES} handles are open"));
        }
        let fh = hs.next;
        hs.next += 1;
        if let (Handle::Write(_), Some(fid)) = (&h, fid) {
            hs.writers.entry(fid).or_default().push(fh);
        }
        hs.map.insert(fh, Arc::new(h));
        if let Some(fid) = fid {
            *hs.opens.entry(fid).or_default() += 1;
        }
        Ok(fh)
    }

    fn add_handle(&self, fid: Fid, flags: i32, base: Option<Version>) -> Result<u64> {
        let acc = flags & libc::O_ACCMODE;
        if acc == libc::O_RDONLY {
            let version = match base {
                Some(s) => s,
                None => self.version(fid)?,
            };
            return self.insert_handle(Handle::Read { fid, version }, Some(fid));
        }
        self.writable()?;
        let truncate = flags & libc::O_TRUNC != 0;
        let writer = Writer {
            fid,
            base: if truncate { None } else { base },
            data: truncate.then(|| Arc::new(Vec::new())),
            // open(O_TRUNC) empties the file at the commit point, not before: a crash before
            // close keeps the old content.
            dirty: truncate,
            written: false,
            failed: false,
            append: flags & libc::O_APPEND != 0,
            readable: acc == libc::O_RDWR,
            last_write: Time::now(),
            rejected: None,
            owners: Vec::new(),
            unowned: false,
            writing_threads: Vec::new(),
            created: false,
        };
        let writer = match writer.base.is_none() && writer.data.is_none() {
            true => Writer {
                base: Some(self.version(fid)?),
                ..writer
            },
            false => writer,
        };
        self.insert_handle(Handle::Write(Mutex::new(writer)), Some(fid))
    }

    fn version(&self, fid: Fid) -> Result<Version> {
        if self.damaged.lock().contains(&fid) {
            return Err(err!(
                EIO,
                "the backing file of inode {fid} is damaged; see the mount's log"
            ));
        }
        self.pipeline.version(fid).map_err(|e| {
            match (e.errno, self.pipeline.inode(fid)) {
                // Removed, and its backing file gone too: the kernel will look again.
                (libc::ENOENT, None) => err!(ESTALE, "inode {fid} was removed"),
                _ => e,
            }
        })
    }

    pub fn open(&self, fid: Fid, flags: i32) -> Result<(u64, Ticket)> {
        self.open_as(fid, flags, &Caller::UNKNOWN)
    }

    /// open(2) by `caller`: O_TRUNC by an unprivileged process takes set-ID bits away at
    /// once, as truncate(2) does (the kernel leaves it to us when it passes O_TRUNC on).
    pub fn open_as(&self, fid: Fid, flags: i32, caller: &Caller) -> Result<(u64, Ticket)> {
        let inode = self.inode(fid)?;
        match inode.kind {
            Kind::Dir => return Err(err!(EISDIR, "the root is a directory")),
            Kind::Symlink => return Err(err!(ELOOP, "{} is a symlink", show(&inode.name))),
            Kind::File => {}
        }
        // Linux empties the file for open(O_RDONLY | O_TRUNC) too. A reader has no copy to
        // hold the truncation until a commit point, so it commits at once, like truncate(2).
        let mut ticket = Ticket::NONE;
        if flags & libc::O_TRUNC != 0 && !caller.privileged() {
            self.writable()?;
            self.drop_setid(fid, caller)?;
        }
        if flags & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC != 0 {
            ticket = self.commit_ticket(self.truncate_committed(fid, 0)?);
        }
        Ok((self.add_handle(fid, flags, None)?, ticket))
    }

    fn load<'a>(&self, w: &'a mut Writer) -> Result<&'a mut Arc<Vec<u8>>> {
        if w.data.is_none() {
            let base = w.base.take().expect("a writer has a base until it loads");
            match base.read_all(self.opts.max_file_size) {
                Ok(bytes) => w.data = Some(Arc::new(bytes)),
                Err(e) => {
                    w.base = Some(base);
                    return Err(e);
                }
            }
        }
        Ok(w.data.as_mut().expect("loaded above"))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        match &*self.handle(fh)? {
            Handle::Read { version, .. } => version.read_at(offset, size as usize),
            Handle::Write(w) => {
                let w = &mut *w.lock();
                if !w.readable {
                    return Err(err!(EBADF, "handle {fh} is not open for reading"));
                }
                if let (None, Some(base)) = (&w.data, &w.base) {
                    return base.read_at(offset, size as usize);
                }
                let data = self.load(w)?;
                let start = (offset as usize).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                Ok(data[start..end].to_vec())
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
        let append = w.append;
        let data = self.load(w)?;
        // O_APPEND is applied here: the kernel's idea of the size may be the committed one.
        let offset = if append && !who.writeback {
            data.len() as u64
        } else {
            offset
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
        let data = Arc::make_mut(data);
        if data.len() < end as usize {
            data.resize(end as usize, 0);
        }
        data[offset as usize..end as usize].copy_from_slice(bytes);
        w.dirty = true;
        w.written = true;
        w.failed = false;
        w.last_write = Time::now();
        match who.owner {
            Some(o) if w.owners.contains(&o) => {}
            Some(o) if w.owners.len() < MAX_OWNERS => w.owners.push(o),
            Some(_) => w.unowned = true,
            None => {}
        }
        w.note_thread(who.caller.pid);
        if who.kill_setid {
            self.drop_setid(w.fid, &who.caller)?;
        }
        Ok(bytes.len() as u32)
    }

    /// Takes set-user-ID and set-group-ID away from a file an unprivileged process changes,
    /// as a local filesystem does (caller.rs): a commit of its own, logged as an attribute
    /// change, before any commit of the change itself.
    fn drop_setid(&self, fid: Fid, caller: &Caller) -> Result<()> {
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
    /// is remembered (`failed`) so that release does not commit what the caller saw fail.
    fn commit_writer(&self, w: &mut Writer) -> Result<Option<Seq>> {
        let result = self.try_commit_writer(w);
        w.failed = result.is_err();
        result
    }

    fn try_commit_writer(&self, w: &mut Writer) -> Result<Option<Seq>> {
        if !w.dirty {
            return Ok(None);
        }
        let bytes = self.load(w)?.clone();
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
                orphan.size = bytes.len() as u64;
                orphan.attrs.mtime = mtime(orphan.attrs.mtime);
            }
            w.dirty = false;
            self.notify_changed(fid);
            return Ok(None);
        };
        let json = self.validate(&bytes);
        if let (true, Err(e)) = (is_record_name(&inode.name), &json) {
            let dcrc = crate::log::crc32c(&bytes);
            let e = if w.rejected == Some(dcrc) {
                Error::new(
                    e.errno,
                    format!("{}: refused again, {}", show(&inode.name), e.reason),
                )
            } else {
                w.rejected = Some(dcrc);
                self.reject(&inode.name, &bytes, e.clone())
            };
            return Err(e);
        }
        let data = Data::new(bytes);
        let result = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ENOENT, "unlinked during the commit"))?;
            if is_record_name(&inode.name) && json.is_err() {
                return Err(err!(EAGAIN, "renamed to a record's name during the commit"));
            }
            let mut attrs = inode.attrs;
            attrs.mtime = mtime(attrs.mtime);
            attrs.ctime = Time::now();
            Ok(new_content(inode, attrs, data))
        });
        match result {
            Ok(seq) => {
                w.dirty = false;
                w.written = false;
                w.rejected = None;
                w.owners.clear();
                w.unowned = false;
                w.writing_threads.clear();
                w.created = false;
                // New content replaces what could not be restored.
                self.damaged.lock().remove(&fid);
                self.notify_changed(fid);
                Ok(Some(seq))
            }
            Err(e) if e.errno == libc::ENOENT => {
                w.dirty = false;
                Ok(None)
            }
            Err(e) if e.errno == libc::EAGAIN => self.try_commit_writer(w),
            Err(e) => Err(e),
        }
    }

    /// Commits every handle of `fid` that holds uncommitted writes.
    fn commit_writers_of(&self, fid: Fid) -> Result<()> {
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
                let record = || self.inode(w.fid).is_ok_and(|i| is_record_name(&i.name));
                if !w.written && (!w.dirty || record()) {
                    return Ok(Ticket::NONE);
                }
                // A process that did not write closing its copy of the descriptor.
                if let (true, false, Some(o)) = (w.written, w.unowned, owner) {
                    if !w.owners.is_empty() && !w.owners.contains(&o) {
                        return Ok(Ticket::NONE);
                    }
                }
                match self.commit_writer(&mut w) {
                    Ok(Some(seq)) => Ok(self.commit_ticket(seq)),
                    Ok(None) => Ok(Ticket::NONE),
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

    /// A new record whose first save is refused at close: the empty file its open made is
    /// removed again, so a folder scan never meets an empty record nobody meant to keep
    /// (`echo '{bad' > NEW.json`). Only if nothing was committed to it since. The handle goes
    /// on with the file unnamed, as after an unlink; its refused bytes are in `rejected/`.
    fn undo_creation(&self, w: &mut Writer) {
        let fid = w.fid;
        w.created = false;
        let removed = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ENOENT, "inode {fid} is gone"))?;
            if inode.size != 0 || inode.kind != Kind::File {
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
                if w.dirty && !w.failed {
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

    // -----------------------------------------------------------------------------------------
    // Attributes

    pub fn setattr(&self, fid: Fid, fh: Option<u64>, set: SetAttr) -> Result<(Stat, Ticket)> {
        self.setattr_as(fid, fh, set, &Caller::UNKNOWN)
    }

    /// setattr by `caller` (chmod, chown, utimes, truncate, ftruncate). An ftruncate is part
    /// of its handle's next commit, and the caller's process sees the new size until then.
    pub fn setattr_as(
        &self,
        fid: Fid,
        fh: Option<u64>,
        set: SetAttr,
        caller: &Caller,
    ) -> Result<(Stat, Ticket)> {
        self.writable()?;
        let mut last = None;
        if let Some(size) = set.size {
            if size > self.opts.max_file_size {
                return Err(err!(
                    EFBIG,
                    "size {size} passes the limit of {} bytes",
                    self.opts.max_file_size
                ));
            }
            let handle = fh.and_then(|fh| self.handle(fh).ok());
            match handle.as_deref() {
                // ftruncate on a handle that writes: part of that handle's next commit.
                Some(Handle::Write(w)) if w.lock().fid == fid => {
                    let w = &mut *w.lock();
                    Arc::make_mut(self.load(w)?).resize(size as usize, 0);
                    w.dirty = true;
                    w.written = true;
                    w.failed = false;
                    w.last_write = Time::now();
                    w.note_thread(caller.pid);
                }
                _ => last = Some(self.truncate_committed(fid, size)?),
            }
        }
        if set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some()
        {
            let now = Time::now();
            if set.mtime.is_some() {
                self.handles.lock().mtime_set.insert(fid, now);
            }
            let update = |attrs: &mut Attrs| {
                if let Some(m) = set.mode {
                    attrs.mode = m & 0o7777;
                }
                attrs.uid = set.uid.unwrap_or(attrs.uid);
                attrs.gid = set.gid.unwrap_or(attrs.gid);
                attrs.atime = set.atime.unwrap_or(attrs.atime);
                attrs.mtime = set.mtime.unwrap_or(attrs.mtime);
                attrs.ctime = now;
            };
            if self.pipeline.inode(fid).is_none() {
                // Unlinked while open (fchmod, futimens, fchown): the attributes go with the
                // open file, as its bytes do; nothing is left to commit.
                let mut hs = self.handles.lock();
                let orphan = hs
                    .orphans
                    .get_mut(&fid)
                    .ok_or_else(|| err!(ESTALE, "no file with inode {fid}"))?;
                update(&mut orphan.attrs);
            } else {
                last = Some(self.commit(|ns| {
                    let inode = ns
                        .get(fid)
                        .ok_or_else(|| err!(ESTALE, "no file with inode {fid}"))?;
                    let mut attrs = inode.attrs;
                    update(&mut attrs);
                    Ok(Op::Attr {
                        fid,
                        dir: inode.parent,
                        name: inode.name.clone(),
                        attrs,
                    })
                })?);
            }
        }
        let stat = self.getattr(fid, fh)?;
        Ok((
            stat,
            last.map_or(Ticket::NONE, |seq| self.commit_ticket(seq)),
        ))
    }

    /// truncate(2) by path: a commit of its own, so a record must still parse afterwards.
    fn truncate_committed(&self, fid: Fid, size: u64) -> Result<Seq> {
        let inode = self.inode(fid)?;
        if inode.kind != Kind::File {
            return Err(err!(EISDIR, "{} is not a regular file", show(&inode.name)));
        }
        let mut bytes = if size == 0 {
            Vec::new()
        } else {
            self.read_committed(fid)?
        };
        bytes.resize(size as usize, 0);
        if is_record_name(&inode.name) {
            self.validate(&bytes)
                .map_err(|e| self.reject(&inode.name, &bytes, e))?;
        }
        let data = Data::new(Arc::new(bytes));
        let seen = inode.last_seq;
        let seq = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ESTALE, "no file with inode {fid}"))?;
            if inode.last_seq != seen {
                return Err(err!(
                    EAGAIN,
                    "{} changed during truncate; try again",
                    show(&inode.name)
                ));
            }
            let now = Time::now();
            let mut attrs = inode.attrs;
            attrs.mtime = now;
            attrs.ctime = now;
            Ok(new_content(inode, attrs, data))
        })?;
        self.notify_changed(fid);
        Ok(seq)
    }

    // -----------------------------------------------------------------------------------------
    // Directories

    pub fn opendir(&self, fid: Fid) -> Result<u64> {
        check_dir(fid)?;
        let mut entries = vec![
            DirEntry {
                ino: ROOT,
                kind: Kind::Dir,
                name: b".".to_vec(),
            },
            DirEntry {
                ino: ROOT,
                kind: Kind::Dir,
                name: b"..".to_vec(),
            },
        ];
        self.pipeline.with_ns(|ns| {
            entries.extend(ns.list(fid).map(|i| DirEntry {
                ino: i.fid,
                kind: i.kind,
                name: i.name.clone(),
            }))
        });
        self.insert_handle(Handle::Dir { entries }, None)
    }

    /// The entries of an open directory from `offset` on; each one's offset is its index + 1.
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        match &*self.handle(fh)? {
            Handle::Dir { entries } => Ok(entries.iter().skip(offset as usize).cloned().collect()),
            _ => Err(err!(ENOTDIR, "handle {fh} is not a directory")),
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().map.remove(&fh);
    }

    pub fn statfs(&self) -> Result<StatFs> {
        let path = std::ffi::CString::new(self.layout.store.as_os_str().as_bytes())
            .map_err(|_| err!(EINVAL, "NUL in the store's path"))?;
        // SAFETY: statvfs fills the zeroed struct; path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(Error::io(
                "statvfs of the store",
                &std::io::Error::last_os_error(),
            ));
        }
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: NAME_MAX as u32,
        })
    }
}

impl Drop for RecordFs {
    fn drop(&mut self) {
        if self.closed.lock().is_none() {
            if let Err(e) = self.shutdown() {
                warn!("{}: not cleanly closed: {e}", self.layout.store.display());
            }
        }
    }
}

/// For messages: a name as the user typed it.
pub fn display_name(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}
