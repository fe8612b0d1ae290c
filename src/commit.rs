//! The commit pipeline: every change of the store goes through `Pipeline::commit`.
//!
//! Order of events for one commit (FORMAT.md, "Writing and syncing"):
//! 1. under the state lock: check the change against the namespace, give it the next sequence
//!    number, append its line to the log (`write`, page cache only), apply it to the
//!    namespace, keep its bytes in `pending`, queue it;
//! 2. the sync thread takes everything queued, `fdatasync`s the log once for all of it
//!    (group commit), and answers the callers waiting for those sequence numbers;
//! 3. only then does the apply thread change the backing tree (write-ahead rule), and drop
//!    the bytes from `pending`. Until then readers are served from `pending`. The two threads
//!    are separate so that the next sync starts while the last batch is being applied.
//!
//! A failed log sync is fatal for the store: the kernel may have dropped the dirty pages, so a
//! retry that "succeeds" would be a lie. The store turns read-only until remounted.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use parking_lot::{Condvar, Mutex};

use crate::disk::{Disk, EntryKind, FileMeta, ReadAt};
use crate::error::{err, Error, Result};
use crate::limits::MAX_PENDING_BYTES;
use crate::limits::{
    APPLY_DELAY, APPLY_RETRY, COMPACT_RETRY, MAX_LINGER, SYNCFS_ABOVE, WRITEBACK_BATCH,
    WRITEBACK_EVERY,
};
use crate::log::{encode_entry, Data, Entry, LogWriter, Op};
use crate::namespace::{Applied, ContentLoc, Inode, Namespace};
use crate::store::{self, Layout};
use crate::types::{Fid, Kind, Seq, Time};

/// Something to call once a sequence number is durable (or can never be).
pub type Waiter = Box<dyn FnOnce(Result<()>) + Send>;

/// The state every commit changes, guarded by one lock.
pub struct State {
    pub ns: Namespace,
    log: LogWriter,
    /// Bytes committed but not yet in their backing file, with the entry that holds them.
    pending: HashMap<Fid, (Seq, Arc<Vec<u8>>)>,
    pending_bytes: u64,
    /// The backing tree as it stands on disk: fid → name in `root/`. It trails the namespace
    /// while renames and deletes wait for their log sync.
    disk: HashMap<Fid, Vec<u8>>,
    /// Logged, not yet synced.
    unsynced: Vec<Entry>,
    /// Synced, not yet applied to the backing tree, with when they were synced.
    unapplied: VecDeque<(Instant, Entry)>,
    /// Fids whose backing file changed since the last checkpoint.
    changed: HashSet<Fid>,
    /// Set when the store turned read-only after a failure; the reason.
    fatal: Option<String>,
    /// The backing tree cannot be written (disk full); the error.
    stalled: Option<Error>,
    shutting_down: bool,
    /// The sync thread has synced everything and stopped.
    sync_done: bool,
    /// How many waiters (`quiesce`, a compaction) want entries applied at once, without
    /// `APPLY_DELAY`: a count, so that one finishing does not cancel the other's wish.
    hurry: u32,
    /// Someone asked for a compaction now (SIGUSR1, `recordfs compact` on a mounted store).
    compact_requested: bool,
}

/// What a reader reads: the bytes of one committed version, fixed at open.
pub enum Snapshot {
    Memory(Arc<Vec<u8>>),
    Disk(Arc<dyn ReadAt>),
}

impl Snapshot {
    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        match self {
            Snapshot::Memory(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Snapshot::Disk(f) => {
                let mut buf = vec![0; size];
                let mut got = 0;
                while got < size {
                    match f.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => return Err(Error::io("reading a backing file", &e)),
                    }
                }
                buf.truncate(got);
                Ok(buf)
            }
        }
    }

    /// The whole content, refusing more than `limit` bytes.
    pub fn read_all(&self, limit: u64) -> Result<Vec<u8>> {
        let len = match self {
            Snapshot::Memory(b) => b.len() as u64,
            Snapshot::Disk(f) => f
                .size()
                .map_err(|e| Error::io("stat of a backing file", &e))?,
        };
        if len > limit {
            return Err(err!(
                EFBIG,
                "file of {len} bytes exceeds the limit of {limit}"
            ));
        }
        self.read_at(0, len as usize)
    }
}

struct Waiters {
    durable: Seq,
    by_seq: BTreeMap<Seq, Vec<Waiter>>,
    /// Set once a log sync failed: everything not yet durable never will be.
    failed: Option<String>,
}

pub struct Pipeline {
    disk: Arc<dyn Disk>,
    layout: Layout,
    state: Mutex<State>,
    /// Wakes the sync thread (entries logged), the apply thread (entries synced), and
    /// committers waiting for room in `pending`.
    wake: Condvar,
    apply_wake: Condvar,
    room: Condvar,
    /// Wakes the compaction thread.
    compact_wake: Condvar,
    policy: CompactPolicy,
    waiters: Mutex<Waiters>,
    /// Counts log syncs and commits, for the figures in benchmarks and tests.
    pub syncs: AtomicU64,
    pub commits: AtomicU64,
    pub compactions: AtomicU64,
    sync_nanos: AtomicU64,
}

/// The pipeline's threads, joined at shutdown.
pub struct Threads {
    sync: JoinHandle<()>,
    apply: JoinHandle<()>,
    compact: JoinHandle<()>,
}

/// When the mount compacts its log (README, "Compaction").
#[derive(Clone, Copy, Debug)]
pub struct CompactPolicy {
    pub log_limit: u64,
    pub every: Duration,
    pub keep: usize,
}

pub struct Committed {
    pub seq: Seq,
    pub applied: Applied,
}

impl Pipeline {
    /// `disk` says where each file's backing file is; recovery makes it match `ns`.
    pub fn start(
        disk: Arc<dyn Disk>,
        layout: Layout,
        ns: Namespace,
        log: LogWriter,
        policy: CompactPolicy,
        backing_durable: bool,
        damaged: &HashSet<Fid>,
    ) -> Result<(Arc<Pipeline>, Threads)> {
        let durable = ns.last_seq();
        let on_disk: HashMap<Fid, Vec<u8>> = ns.files().map(|i| (i.fid, i.name.clone())).collect();
        let on_disk_fids: HashSet<Fid> = on_disk.keys().copied().collect();
        let pipeline = Arc::new(Pipeline {
            disk,
            layout,
            state: Mutex::new(State {
                ns,
                log,
                pending: HashMap::new(),
                pending_bytes: 0,
                disk: on_disk,
                unsynced: Vec::new(),
                unapplied: VecDeque::new(),
                // Until proven durable, every backing file is owed a sync at the next checkpoint;
                // not a damaged one, which may not even exist: it is not served either.
                changed: match backing_durable {
                    true => HashSet::new(),
                    false => &on_disk_fids - damaged,
                },
                fatal: None,
                stalled: None,
                shutting_down: false,
                sync_done: false,
                hurry: 0,
                compact_requested: false,
            }),
            wake: Condvar::new(),
            apply_wake: Condvar::new(),
            room: Condvar::new(),
            compact_wake: Condvar::new(),
            policy,
            waiters: Mutex::new(Waiters {
                durable,
                by_seq: BTreeMap::new(),
                failed: None,
            }),
            syncs: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            sync_nanos: AtomicU64::new(0),
        });
        let spawn = |name: &str, f: fn(&Pipeline)| {
            let p = pipeline.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&p))
                .map_err(|e| Error::io(format!("starting thread {name}"), &e))
        };
        let sync = spawn("recordfs-sync", Pipeline::run_sync)?;
        let apply = spawn("recordfs-apply", Pipeline::run_apply);
        let compact = spawn("recordfs-compact", Pipeline::run_compact);
        match (apply, compact) {
            (Ok(apply), Ok(compact)) => Ok((
                pipeline,
                Threads {
                    sync,
                    apply,
                    compact,
                },
            )),
            (apply, compact) => {
                // Stop what started: nothing was committed yet, so there is nothing to lose.
                pipeline.state.lock().shutting_down = true;
                pipeline.wake.notify_all();
                pipeline.apply_wake.notify_all();
                pipeline.compact_wake.notify_all();
                let _ = sync.join();
                let failed = [apply, compact].into_iter().find_map(|t| match t {
                    Ok(t) => {
                        let _ = t.join();
                        None
                    }
                    Err(e) => Some(e),
                });
                Err(failed.expect("one of the two failed"))
            }
        }
    }

    /// Reads the namespace.
    pub fn with_ns<T>(&self, f: impl FnOnce(&Namespace) -> T) -> T {
        f(&self.state.lock().ns)
    }

    pub fn fatal(&self) -> Option<String> {
        self.state.lock().fatal.clone()
    }

    /// Commits one change. `build` runs under the state lock: it checks the change against the
    /// namespace and returns the op to log, or an error that leaves everything unchanged.
    pub fn commit(&self, build: impl FnOnce(&mut Namespace) -> Result<Op>) -> Result<Committed> {
        self.commit_keeping(&[], &[], build)
    }

    /// Like `commit`, with the current bytes of every regular file in `in_log` in the live
    /// segment when the entry is (see `bytes_in_live_log`): for a file whose bytes are not,
    /// `relog` must bring them (read by the caller), and they are committed again first, under
    /// the same lock, so that no compaction comes between. EAGAIN if they are missing or stale.
    pub fn commit_keeping(
        &self,
        in_log: &[Fid],
        relog: &[(Fid, Data)],
        build: impl FnOnce(&mut Namespace) -> Result<Op>,
    ) -> Result<Committed> {
        let mut st = self.state.lock();
        self.wait_for_room(&mut st)?;
        let missing: Vec<Fid> = in_log
            .iter()
            .copied()
            .filter(|f| !bytes_in_log(&st, *f))
            .collect();
        for fid in &missing {
            let again = relog.iter().find(|(f, _)| f == fid).and_then(|(_, data)| {
                let inode = st.ns.get(*fid)?;
                (inode.dcrc == crate::log::crc32c(&data.bytes)).then(|| Op::Set {
                    fid: *fid,
                    dir: inode.parent,
                    name: inode.name.clone(),
                    kind: Kind::File,
                    attrs: inode.attrs,
                    data: data.clone(),
                })
            });
            let op = again.ok_or_else(|| err!(EAGAIN, "inode {fid} has left the live log"))?;
            self.append(&mut st, op)?;
        }
        let op = build(&mut st.ns)?;
        self.append(&mut st, op)
    }

    fn wait_for_room(&self, st: &mut parking_lot::MutexGuard<'_, State>) -> Result<()> {
        loop {
            if let Some(reason) = &st.fatal {
                return Err(err!(
                    EROFS,
                    "the store is read-only after a failure: {reason}"
                ));
            }
            if st.pending_bytes <= MAX_PENDING_BYTES {
                break;
            }
            if let Some(e) = &st.stalled {
                return Err(Error::new(
                    e.errno,
                    format!("backing files cannot be written: {}", e.reason),
                ));
            }
            self.room.wait(st);
        }
        Ok(())
    }

    /// Appends one entry for `op` and applies it to the namespace (the state lock held).
    fn append(&self, st: &mut parking_lot::MutexGuard<'_, State>, op: Op) -> Result<Committed> {
        let entry = Entry {
            seq: st.ns.last_seq() + 1,
            ts: Time::now().millis(),
            op,
        };
        let line = encode_entry(&entry);
        let offset = st.log.append(&line).inspect_err(|e| {
            if !e.is_no_space() && e.errno != libc::EFBIG {
                self.turn_read_only(st, format!("log append failed: {e}"));
            }
        })?;
        let loc = matches!(entry.op, Op::Set { .. }).then_some(ContentLoc {
            segment: st.log.start_seq(),
            offset,
        });
        let applied = match st.ns.apply(&entry, loc) {
            Ok(a) => a,
            Err(e) => {
                // The entry is in the log but the namespace refused it: a bug. Nothing more
                // may be written on top of it.
                let reason = format!("entry {} does not fit the namespace: {e}", entry.seq);
                self.turn_read_only(st, reason.clone());
                return Err(err!(EIO, "{reason}"));
            }
        };
        if let Op::Set { fid, data, .. } = &entry.op {
            let previous = st.pending.insert(*fid, (entry.seq, data.bytes.clone()));
            st.pending_bytes += data.len();
            if let Some((_, old)) = previous {
                st.pending_bytes -= old.len() as u64;
            }
        }
        let seq = entry.seq;
        st.unsynced.push(entry);
        self.commits.fetch_add(1, Ordering::Relaxed);
        if st.log.len() > self.policy.log_limit {
            self.compact_wake.notify_one();
        }
        self.wake.notify_one();
        Ok(Committed { seq, applied })
    }

    /// The bytes of a file's committed version, as a reader opening it now must see them.
    pub fn snapshot(&self, fid: Fid) -> Result<Snapshot> {
        let st = self.state.lock();
        if let Some((_, bytes)) = st.pending.get(&fid) {
            return Ok(Snapshot::Memory(bytes.clone()));
        }
        let name = st
            .disk
            .get(&fid)
            .ok_or_else(|| err!(ENOENT, "fid {fid} has no backing file"))?;
        let path = self.layout.backing(name);
        // Opened under the lock: the apply thread cannot move the file meanwhile.
        self.disk
            .open_read(&path)
            .map(Snapshot::Disk)
            .map_err(|e| Error::io(format!("opening {}", path.display()), &e))
    }

    /// Calls `done` once `seq` is durable in the log (at once if it is already).
    pub fn when_durable(&self, seq: Seq, done: Waiter) {
        let mut w = self.waiters.lock();
        if seq <= w.durable {
            drop(w);
            return done(Ok(()));
        }
        if let Some(reason) = &w.failed {
            let e = err!(EIO, "the log could not be synced: {reason}");
            drop(w);
            return done(Err(e));
        }
        w.by_seq.entry(seq).or_default().push(done);
    }

    /// Blocks until `seq` is durable: for tests and for the command line.
    pub fn wait_durable(&self, seq: Seq) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.when_durable(
            seq,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(err!(EIO, "the commit thread is gone")))
    }

    pub fn last_seq(&self) -> Seq {
        self.state.lock().ns.last_seq()
    }

    /// Stops the commit thread after it has synced and applied everything, then makes the
    /// backing tree durable and writes a checkpoint.
    pub fn shutdown(&self, threads: Threads) -> Result<()> {
        self.state.lock().shutting_down = true;
        // A compaction under way finishes first: it needs the other two threads.
        self.compact_wake.notify_all();
        let compacted = threads.compact.join();
        self.wake.notify_all();
        if compacted.is_err() || threads.sync.join().is_err() || threads.apply.join().is_err() {
            return Err(err!(EIO, "a commit pipeline thread panicked"));
        }
        let (commits, syncs) = (
            self.commits.load(Ordering::Relaxed),
            self.syncs.load(Ordering::Relaxed),
        );
        info!(
            "stats: {commits} commits, {syncs} log syncs ({:.2} commits per sync, {:.0} µs per sync)",
            commits as f64 / syncs.max(1) as f64,
            self.sync_nanos.load(Ordering::Relaxed) as f64 / syncs.max(1) as f64 / 1000.0
        );
        let mut st = self.state.lock();
        if let Some(reason) = &st.fatal {
            return Err(err!(
                EIO,
                "not checkpointed: the store failed earlier: {reason}"
            ));
        }
        if !st.unapplied.is_empty() {
            let e = st.stalled.clone().unwrap_or_else(|| err!(EIO, "unknown"));
            return Err(Error::new(
                e.errno,
                format!(
                    "{} committed entries are in the log but not in the backing files ({}); the next mount applies them",
                    st.unapplied.len(),
                    e.reason
                ),
            ));
        }
        self.checkpoint(&mut st)
    }

    /// Makes every backing file durable, then records that in the log.
    fn checkpoint(&self, st: &mut State) -> Result<()> {
        if st.changed.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.sync_changed(st) {
            self.turn_read_only(st, e.reason.clone());
            return Err(e);
        }
        let upto = st.ns.last_seq();
        let entry = Entry {
            seq: upto + 1,
            ts: Time::now().millis(),
            op: Op::Checkpoint { upto },
        };
        st.log.append(&encode_entry(&entry))?;
        st.ns.apply(&entry, None)?;
        st.log
            .sync()
            .inspect_err(|e| self.turn_read_only(st, e.reason.clone()))?;
        let synced = st.changed.len();
        st.changed.clear();
        info!(
            "checkpoint: synced {synced} backing files; they hold every commit up to entry {upto}"
        );
        Ok(())
    }

    /// fsync of every backing file changed since the last checkpoint, then of `root/`.
    fn sync_changed(&self, st: &State) -> Result<()> {
        let (paths, symlink) = self.backing_paths(st, st.changed.iter());
        self.sync_files(&paths, symlink, false)?;
        store::sync_dir(&*self.disk, &self.layout.root())
    }

    /// The backing files of `fids` as they are named now (a deleted one has none: the
    /// directory's fsync covers it), and whether any is a symlink.
    fn backing_paths<'a>(
        &self,
        st: &State,
        fids: impl Iterator<Item = &'a Fid>,
    ) -> (Vec<PathBuf>, bool) {
        let mut symlink = false;
        let mut paths = Vec::new();
        for fid in fids {
            let Some(name) = st.disk.get(fid) else {
                continue;
            };
            if st.ns.get(*fid).is_some_and(|i| i.kind == Kind::Symlink) {
                symlink = true;
            } else {
                paths.push(self.layout.backing(name));
            }
        }
        (paths, symlink)
    }

    /// fsync of each file. A symlink cannot be fsynced by itself; if one changed, syncfs
    /// covers it (and everything else on that filesystem, which is slower on a busy disk,
    /// hence not the default for a few files), as it covers more than `SYNCFS_ABOVE` files. With `gone_ok`, a file renamed or removed since its path was
    /// taken is skipped: that change marked it changed again, or the directory's fsync at the
    /// checkpoint covers it.
    fn sync_files(&self, paths: &[PathBuf], symlink: bool, gone_ok: bool) -> Result<()> {
        // Past a few hundred files one syncfs costs less than their fsyncs.
        let symlink = symlink || paths.len() > SYNCFS_ABOVE;
        for path in paths.iter().filter(|_| !symlink) {
            match self.disk.sync_file(path) {
                Ok(()) => {}
                Err(e) if gone_ok && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("fsync of {}", path.display()), &e)),
            }
        }
        if symlink {
            self.disk
                .sync_everything(&self.layout.root())
                .map_err(|e| Error::io("syncfs of the backing tree", &e))?;
        }
        Ok(())
    }

    /// Writes back, in the background, backing files changed since the last checkpoint:
    /// at most `WRITEBACK_BATCH` a round, so that the checkpoint at unmount (and the wait of a
    /// mount that follows it) costs what changed since, not the whole store. A failed fsync
    /// turns the store read-only, as any.
    fn write_back(&self) -> Result<usize> {
        let (taken, paths, symlink) = {
            let mut st = self.state.lock();
            let taken: Vec<Fid> = st.changed.iter().take(WRITEBACK_BATCH).copied().collect();
            for fid in &taken {
                st.changed.remove(fid);
            }
            let (paths, symlink) = self.backing_paths(&st, taken.iter());
            (taken, paths, symlink)
        };
        if let Err(e) = self.sync_files(&paths, symlink, true) {
            let mut st = self.state.lock();
            st.changed.extend(taken);
            self.turn_read_only(&mut st, e.reason.clone());
            return Err(e);
        }
        Ok(taken.len())
    }

    fn turn_read_only(&self, st: &mut State, reason: String) {
        if st.fatal.is_none() {
            error!(
                "store {} is now read-only until remounted: {reason}",
                self.layout.store.display()
            );
            st.fatal = Some(reason);
        }
    }

    // -----------------------------------------------------------------------------------------
    // The commit thread

    /// The sync thread: one `fdatasync` for everything logged since the last one.
    ///
    /// Group commit needs a batch to form: when every committer waits on the running sync,
    /// the first one to commit again would otherwise start the next sync alone. So before
    /// syncing, the thread waits until as many entries as the last batch had are queued, for
    /// at most half as long as the last sync took (PostgreSQL's commit_delay, adaptively). A
    /// lone committer makes batches of one and never waits.
    fn run_sync(&self) {
        let mut last_batch = 1usize;
        let mut last_sync = Duration::ZERO;
        loop {
            let (end, handle) = {
                let mut st = self.state.lock();
                while st.unsynced.is_empty() && !st.shutting_down {
                    self.wake.wait(&mut st);
                }
                let deadline = Instant::now() + (last_sync / 2).min(MAX_LINGER);
                while st.unsynced.len() < last_batch && !st.shutting_down {
                    if self.wake.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                last_batch = st.unsynced.len().max(1);
                match st.unsynced.last() {
                    Some(last) => (last.seq, st.log.sync_handle()),
                    None => {
                        st.sync_done = true;
                        self.apply_wake.notify_all();
                        return;
                    }
                }
            };
            let started = Instant::now();
            let synced = failpoint_log_sync(self.syncs.load(Ordering::Relaxed)).and_then(|_| {
                handle
                    .sync_data()
                    .map_err(|e| Error::io("fdatasync of the log", &e))
            });
            last_sync = started.elapsed();
            self.sync_nanos
                .fetch_add(last_sync.as_nanos() as u64, Ordering::Relaxed);
            self.syncs.fetch_add(1, Ordering::Relaxed);
            let mut st = self.state.lock();
            match synced {
                Ok(()) => {
                    // Entries committed after `end` were not surely covered by this sync:
                    // they wait for the next one.
                    let n = st.unsynced.iter().take_while(|e| e.seq <= end).count();
                    let synced: Vec<Entry> = st.unsynced.drain(..n).collect();
                    let now = Instant::now();
                    st.unapplied.extend(synced.into_iter().map(|e| (now, e)));
                    self.apply_wake.notify_one();
                    drop(st);
                    self.mark_durable(end);
                }
                Err(e) => {
                    self.turn_read_only(&mut st, e.reason.clone());
                    st.unsynced.clear();
                    drop(st);
                    self.fail_waiters(&e.reason);
                }
            }
        }
    }

    /// The apply thread: brings the backing tree up to the synced entries, in order.
    fn run_apply(&self) {
        // After the sync thread stops, a stalled apply gets one last try before giving up.
        let mut last_try = false;
        loop {
            {
                let mut st = self.state.lock();
                loop {
                    if st.unapplied.is_empty() || st.fatal.is_some() {
                        if st.sync_done {
                            return;
                        }
                        self.apply_wake.wait(&mut st);
                        continue;
                    }
                    if st.stalled.is_some() {
                        if st.sync_done {
                            if last_try {
                                return;
                            }
                            last_try = true;
                            break;
                        }
                        // Disk full: try again now and then.
                        if self.apply_wake.wait_for(&mut st, APPLY_RETRY).timed_out() {
                            break;
                        }
                        continue;
                    }
                    let due = st.unapplied.front().map(|(t, _)| *t + APPLY_DELAY);
                    let hurry =
                        st.sync_done || st.hurry > 0 || st.pending_bytes > MAX_PENDING_BYTES / 2;
                    match due {
                        Some(due) if !hurry && Instant::now() < due => {
                            self.apply_wake.wait_until(&mut st, due);
                        }
                        _ => break,
                    }
                }
            }
            self.apply_synced();
        }
    }

    fn mark_durable(&self, upto: Seq) {
        let ready: Vec<Waiter> = {
            let mut w = self.waiters.lock();
            w.durable = w.durable.max(upto);
            let later = w.by_seq.split_off(&(upto + 1));
            std::mem::replace(&mut w.by_seq, later)
                .into_values()
                .flatten()
                .collect()
        };
        for done in ready {
            done(Ok(()));
        }
    }

    fn fail_waiters(&self, reason: &str) {
        let all: Vec<Waiter> = {
            let mut w = self.waiters.lock();
            w.failed = Some(reason.to_string());
            std::mem::take(&mut w.by_seq)
                .into_values()
                .flatten()
                .collect()
        };
        for done in all {
            done(Err(err!(EIO, "the log could not be synced: {reason}")));
        }
    }

    /// Applies synced entries to the backing tree, in order, stopping at the first that
    /// cannot be applied (disk full): it is tried again later.
    fn apply_synced(&self) {
        loop {
            let entry = {
                let mut st = self.state.lock();
                if superseded(&st.unapplied) {
                    st.unapplied.pop_front();
                    continue;
                }
                if !self.due(&st) {
                    return;
                }
                match st.unapplied.front() {
                    Some((_, e)) => e.clone(),
                    None => return,
                }
            };
            match self.apply_to_disk(&entry) {
                Ok(()) => {
                    let mut st = self.state.lock();
                    st.unapplied.pop_front();
                    if st.stalled.take().is_some() {
                        info!("backing files can be written again");
                    }
                }
                Err(e) if e.is_no_space() => {
                    let mut st = self.state.lock();
                    if st.stalled.is_none() {
                        warn!(
                            "backing file of entry {} not written, will retry: {e}",
                            entry.seq
                        );
                    }
                    st.stalled = Some(e);
                    self.room.notify_all();
                    return;
                }
                Err(e) => {
                    let mut st = self.state.lock();
                    self.turn_read_only(&mut st, format!("writing a backing file failed: {e}"));
                    self.room.notify_all();
                    return;
                }
            }
        }
    }

    /// Makes the backing tree reflect one synced entry.
    fn apply_to_disk(&self, entry: &Entry) -> Result<()> {
        let disk = &*self.disk;
        let root = |name: &[u8]| self.layout.backing(name);
        match &entry.op {
            Op::Set {
                fid,
                name,
                kind,
                attrs,
                data,
                ..
            } => {
                let tmp = self.layout.tmp().join(format!("{fid}.{}", entry.seq));
                let meta = FileMeta {
                    mode: attrs.mode,
                    uid: attrs.uid,
                    gid: attrs.gid,
                    atime: attrs.atime,
                    mtime: attrs.mtime,
                };
                if *kind == Kind::File {
                    // The bytes are written outside the lock; only the rename needs it.
                    let staged = self
                        .layout
                        .tmp()
                        .join(format!("{fid}.{}.staged", entry.seq));
                    store::replace_file(disk, &tmp, &staged, &data.bytes, Some(&meta), false)?;
                    let mut st = self.state.lock();
                    store::rename(disk, &staged, &root(name))?;
                    self.settle(&mut st, *fid, entry.seq, name, data.len());
                } else {
                    let mut st = self.state.lock();
                    store::replace_symlink(disk, &tmp, &root(name), &data.bytes)?;
                    self.settle(&mut st, *fid, entry.seq, name, data.len());
                }
            }
            Op::Attr {
                fid, name, attrs, ..
            } => {
                let st = self.state.lock();
                if st.disk.get(fid).map(Vec::as_slice) == Some(name.as_slice()) {
                    // A file unlinked since this entry is gone from the namespace but not
                    // yet from the backing tree, which then says what it is.
                    let is_link = match st.ns.get(*fid) {
                        Some(inode) => inode.kind == Kind::Symlink,
                        None => disk
                            .stat(&root(name))
                            .is_ok_and(|s| s.kind == EntryKind::Symlink),
                    };
                    if !is_link {
                        store::set_meta(
                            disk,
                            &root(name),
                            &FileMeta {
                                mode: attrs.mode,
                                uid: attrs.uid,
                                gid: attrs.gid,
                                atime: attrs.atime,
                                mtime: attrs.mtime,
                            },
                        )?;
                    }
                }
                drop(st);
                self.state.lock().changed.insert(*fid);
            }
            Op::Delete { fid, name, .. } => {
                let mut st = self.state.lock();
                store::remove(disk, &root(name))?;
                st.disk.remove(fid);
                st.changed.insert(*fid);
            }
            Op::Rename {
                fid,
                name,
                to_name,
                replaced,
                exchange,
                ..
            } => {
                let mut st = self.state.lock();
                if *exchange {
                    store::exchange(disk, &root(name), &root(to_name))?;
                    if let Some(other) = replaced {
                        st.disk.insert(*other, name.clone());
                        st.changed.insert(*other);
                    }
                } else {
                    store::rename(disk, &root(name), &root(to_name))?;
                    if let Some(old) = replaced {
                        st.disk.remove(old);
                    }
                }
                st.disk.insert(*fid, to_name.clone());
                st.changed.insert(*fid);
            }
            Op::Checkpoint { .. } => {}
        }
        Ok(())
    }

    /// Entries synced less than `APPLY_DELAY` ago wait, unless the store is shutting down
    /// or `pending` is filling up.
    fn due(&self, st: &State) -> bool {
        st.unapplied.front().is_some_and(|(t, _)| {
            st.sync_done
                || st.hurry > 0
                || st.pending_bytes > MAX_PENDING_BYTES / 2
                || t.elapsed() >= APPLY_DELAY
        })
    }

    /// A file's bytes reached its backing file: readers may read them there now.
    fn settle(&self, st: &mut State, fid: Fid, seq: Seq, name: &[u8], len: u64) {
        st.disk.insert(fid, name.to_vec());
        st.changed.insert(fid);
        if st.pending.get(&fid).is_some_and(|(s, _)| *s == seq) {
            st.pending.remove(&fid);
            st.pending_bytes -= len;
            self.room.notify_all();
        }
    }

    /// Asks the compaction thread to compact now.
    pub fn request_compaction(&self) {
        self.state.lock().compact_requested = true;
        self.compact_wake.notify_one();
    }

    /// The compaction thread: compacts when the live log passes the limit, when the interval
    /// has passed, or when asked.
    /// The compaction thread: compacts the log when due (`CompactPolicy`), and between
    /// compactions writes back changed backing files (`write_back`).
    fn run_compact(&self) {
        enum Work {
            Compact,
            WriteBack,
        }
        let (mut last, mut last_write_back) = (Instant::now(), Instant::now());
        loop {
            let work = {
                let mut st = self.state.lock();
                loop {
                    if st.shutting_down {
                        return;
                    }
                    // The size counts only once the live segment holds an entry: a limit
                    // below a segment's header alone would otherwise be passed for ever.
                    let has_entries = st.log.start_seq() <= st.ns.last_seq();
                    let due = st.fatal.is_none()
                        && (st.compact_requested
                            || (st.log.len() > self.policy.log_limit && has_entries)
                            || last.elapsed() >= self.policy.every);
                    if due {
                        st.compact_requested = false;
                        break Work::Compact;
                    }
                    let owed = st.changed.len();
                    if st.fatal.is_none()
                        && owed > 0
                        && (owed >= WRITEBACK_BATCH || last_write_back.elapsed() >= WRITEBACK_EVERY)
                    {
                        break Work::WriteBack;
                    }
                    let left = self
                        .policy
                        .every
                        .saturating_sub(last.elapsed())
                        .min(WRITEBACK_EVERY.saturating_sub(last_write_back.elapsed()));
                    self.compact_wake
                        .wait_for(&mut st, left.max(Duration::from_millis(10)));
                }
            };
            if let Work::WriteBack = work {
                last_write_back = Instant::now();
                if let Err(e) = self.write_back() {
                    error!("writing back backing files failed: {e}");
                }
                continue;
            }
            last = Instant::now();
            match self.compact_online() {
                Ok(Some(c)) => info!(
                    "compacted the log up to entry {}: {} segments retired to log/old/",
                    c.upto, c.retired
                ),
                Ok(None) => {}
                Err(e) => {
                    error!("compaction failed; the log stays as it was and grows: {e}");
                    // Not in a loop: try again after a pause, or when asked.
                    let mut st = self.state.lock();
                    if !st.shutting_down {
                        self.compact_wake.wait_for(&mut st, COMPACT_RETRY);
                    }
                }
            }
        }
    }

    fn compact_online(&self) -> Result<Option<crate::log::Compacted>> {
        let snapshot = {
            let mut st = self.state.lock();
            if let Some(reason) = &st.fatal {
                return Err(err!(EROFS, "the store failed earlier: {reason}"));
            }
            let upto = st.ns.last_seq();
            if st.log.start_seq() > upto {
                return Ok(None); // the live segment holds no entry yet
            }
            // The sync thread syncs only the live segment: the old one is synced here, before
            // appends move on, so that its last entries become durable too.
            if let Err(e) = st.log.sync() {
                self.turn_read_only(&mut st, e.reason.clone());
                return Err(e);
            }
            let next = LogWriter::create(
                &*self.disk,
                &self.layout.log_dir(),
                upto + 1,
                st.log.max_line(),
            )?;
            st.log = next;
            st.hurry += 1;
            self.apply_wake.notify_all();
            info!("compacting the log up to entry {upto}; appends go to a new segment");
            st.ns.snapshot()
        };
        let upto = snapshot.upto;
        {
            let mut st = self.state.lock();
            loop {
                let waiting = st.unsynced.first().is_some_and(|e| e.seq <= upto)
                    || st.unapplied.front().is_some_and(|(_, e)| e.seq <= upto);
                if !waiting {
                    break;
                }
                if let Some(reason) = st.fatal.clone() {
                    st.hurry -= 1;
                    return Err(err!(EROFS, "the store failed during compaction: {reason}"));
                }
                if let Some(e) = st.stalled.clone() {
                    st.hurry -= 1;
                    return Err(Error::new(
                        e.errno,
                        format!("backing files cannot be written: {}", e.reason),
                    ));
                }
                self.room.wait_for(&mut st, Duration::from_millis(1));
            }
            st.hurry -= 1;
        }
        // Every backing file durable, whatever process wrote it: syncfs, not the changed set.
        // Whatever was written before it starts is covered, so the files owed a sync so far
        // are owed none after it; one written later is marked changed again.
        let owed = std::mem::take(&mut self.state.lock().changed);
        let synced = self
            .disk
            .sync_everything(&self.layout.root())
            .map_err(|e| Error::io("syncfs of the backing tree", &e))
            .and_then(|_| store::sync_dir(&*self.disk, &self.layout.root()));
        if let Err(e) = synced {
            let mut st = self.state.lock();
            st.changed.extend(owed);
            self.turn_read_only(&mut st, e.reason.clone());
            return Err(e);
        }
        let c =
            crate::log::commit_snapshot(&*self.disk, &self.layout, &snapshot, self.policy.keep)?;
        self.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(Some(c))
    }

    /// Waits until everything committed is synced and in the backing files (or cannot be):
    /// tests crash the disk at such points so that what it holds does not depend on timing.
    pub fn quiesce(&self) {
        let mut st = self.state.lock();
        st.hurry += 1;
        self.apply_wake.notify_all();
        while !(st.unsynced.is_empty()
            && (st.unapplied.is_empty() || st.fatal.is_some() || st.stalled.is_some()))
        {
            self.room.wait_for(&mut st, Duration::from_millis(1));
        }
        st.hurry -= 1;
    }

    /// For reporting and tests: backing files changed and not yet synced (the checkpoint at
    /// unmount syncs these; the write-back keeps it small).
    pub fn owed_syncs(&self) -> usize {
        self.state.lock().changed.len()
    }

    /// For reporting and tests: online compactions finished since the mount.
    pub fn compactions(&self) -> u64 {
        self.compactions.load(Ordering::Relaxed)
    }

    /// For reporting and tests: bytes waiting for their backing files.
    pub fn pending_bytes(&self) -> u64 {
        self.state.lock().pending_bytes
    }

    /// The inode of a fid, cloned (for answers built outside the lock).
    pub fn inode(&self, fid: Fid) -> Option<Inode> {
        self.state.lock().ns.get(fid).cloned()
    }

    /// Whether the live log segment holds the current bytes of regular file `fid`. A file
    /// last written before the latest compaction (or in an earlier segment) has them only in
    /// its backing file.
    pub fn bytes_in_live_log(&self, fid: Fid) -> bool {
        bytes_in_log(&self.state.lock(), fid)
    }
}

fn bytes_in_log(st: &State, fid: Fid) -> bool {
    st.ns.get(fid).is_some_and(|i| {
        i.kind != Kind::File || i.content.is_some_and(|c| c.segment >= st.log.start_seq())
    })
}

/// Whether the first queued entry is a SET that a later SET of the same file replaces, with
/// no rename or delete of that file between them: writing it would be undone at once.
fn superseded(queue: &VecDeque<(Instant, Entry)>) -> bool {
    let Some((_, first)) = queue.front() else {
        return false;
    };
    let Op::Set {
        fid,
        kind: Kind::File,
        ..
    } = &first.op
    else {
        return false;
    };
    for (_, e) in queue.iter().skip(1) {
        match &e.op {
            Op::Set { fid: f, .. } if f == fid => return true,
            Op::Rename {
                fid: f, replaced, ..
            } if f == fid || *replaced == Some(*fid) => return false,
            Op::Delete { fid: f, .. } if f == fid => return false,
            _ => {}
        }
    }
    false
}

/// With the `failpoints` feature, fails the log sync after the Nth (RECORDFS_FAIL_LOG_SYNC_AFTER).
#[cfg(feature = "failpoints")]
fn failpoint_log_sync(done: u64) -> Result<()> {
    let after = std::env::var("RECORDFS_FAIL_LOG_SYNC_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match after {
        Some(n) if done >= n => Err(err!(EIO, "fdatasync of the log: injected failure")),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint_log_sync(_done: u64) -> Result<()> {
    Ok(())
}
