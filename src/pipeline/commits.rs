//! The front of the pipeline: starting it, committing a change under the state lock, what
//! readers see, waiting for durability, and the clean shutdown.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{error, info};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::state::{
    bytes_in_log, Committed, CompactPolicy, Live, Pipeline, State, Threads, Waiter, Waiters,
};
use super::tree::Tree;
use crate::disk::Disk;
use crate::error::{err, Error, Result};
use crate::limits::MAX_PENDING_BYTES;
use crate::log::{crc32c, encode_entry, Data, Entry, LogWriter, Op};
use crate::namespace::{ContentLoc, Inode, Namespace};
use crate::store::Layout;
use crate::types::{Fid, Kind, Seq, Time};
use crate::view::Version;

impl Pipeline {
    /// `disk` says where each file's backing file is; recovery makes it match `ns`.
    pub fn start(
        disk: Arc<dyn Disk>,
        layout: Layout,
        ns: Namespace,
        mut log: LogWriter,
        mut policy: CompactPolicy,
        backing_durable: bool,
        damaged: &HashSet<Fid>,
    ) -> Result<(Arc<Pipeline>, Threads)> {
        log.write_ahead(policy.write_ahead());
        let chain = std::mem::take(&mut policy.chain);
        let durable = ns.last_seq();
        // Until proven durable, every backing file is owed a sync at the next checkpoint; not
        // a damaged one, which may not even exist: it is not served either.
        let changed: HashSet<Fid> = match backing_durable {
            true => HashSet::new(),
            false => ns
                .files()
                .map(|i| i.fid)
                .filter(|f| !damaged.contains(f))
                .collect(),
        };
        let pipeline = Arc::new(Pipeline {
            disk,
            layout,
            state: Mutex::new(State {
                ns,
                live: Live::of(&log),
                pending: HashMap::new(),
                pending_bytes: 0,
                readers: HashMap::new(),
                // Recovery left the backing tree holding the namespace's names.
                disk: Tree::default(),
                unsynced: Vec::new(),
                unapplied: VecDeque::new(),
                changed,
                fatal: None,
                stalled: None,
                shutting_down: false,
                sync_done: false,
                log_dir_unsynced: false,
                covered: if backing_durable { durable } else { 0 },
                durable,
                hurry: 0,
                compact_requested: false,
                write_back_requested: false,
                compactor_busy: false,
                riding: false,
                rolled: 0,
                kept_from: log.start_seq(),
                made_here: HashMap::new(),
                settled: durable,
                from_replica: HashSet::new(),
            }),
            log: Mutex::new(log),
            wake: Condvar::new(),
            apply_wake: Condvar::new(),
            room: Condvar::new(),
            compact_wake: Condvar::new(),
            policy,
            waiters: Mutex::new(Waiters {
                durable,
                by_seq: BTreeMap::new(),
                failed: None,
                refused: BTreeMap::new(),
            }),
            syncs: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            merged_compactions: AtomicU64::new(0),
            moot: AtomicU64::new(0),
            sync_nanos: AtomicU64::new(0),
            replica: Mutex::new(None),
            local_sync: AtomicBool::new(true),
            unshipped: AtomicUsize::new(0),
            shipping: AtomicBool::new(false),
            snapshot_bytes: AtomicU64::new(chain.iter().map(|l| l.bytes).sum()),
            chain: Mutex::new(chain),
            compact_tid: AtomicI32::new(0),
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
    /// log when the entry is (see `bytes_in_live_log`): for a file whose bytes are not,
    /// `relog` must bring them (read by the caller), and they are committed again first, holding
    /// the log, so that no compaction comes between. EAGAIN if they are missing or stale.
    pub fn commit_keeping(
        &self,
        in_log: &[Fid],
        relog: &[(Fid, Data)],
        build: impl FnOnce(&mut Namespace) -> Result<Op>,
    ) -> Result<Committed> {
        self.holding_log(|log, st| {
            let missing: Vec<Fid> = in_log
                .iter()
                .copied()
                .filter(|f| !bytes_in_log(st, *f))
                .collect();
            for fid in &missing {
                let again = relog
                    .iter()
                    .find(|(f, _)| f == fid)
                    .and_then(|(_, data)| set_again(&st.ns, *fid, data));
                let op = again.ok_or_else(|| err!(EAGAIN, "inode {fid} has left the live log"))?;
                self.append(log, st, op)?;
            }
            let op = build(&mut st.ns)?;
            self.append(log, st, op)
        })
    }

    pub(super) fn wait_for_room(&self, st: &mut MutexGuard<'_, State>) -> Result<()> {
        loop {
            // The commit thread may be gone: a commit now would never be synced, nor its
            // caller answered.
            if st.shutting_down {
                return Err(err!(EROFS, "the store is shutting down"));
            }
            if let Some(reason) = &st.fatal {
                return Err(err!(
                    EROFS,
                    "the store is read-only after a failure: {reason}"
                ));
            }
            self.check_unshipped()?;
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

    /// Appends one entry for `op`, checked against the namespace by the caller, and applies it
    /// to the namespace. The state lock is released while the line is encoded and written:
    /// holding `log` keeps every other change out meanwhile, so `op` still fits when applied.
    fn append(
        &self,
        log: &mut LogWriter,
        st: &mut MutexGuard<'_, State>,
        op: Op,
    ) -> Result<Committed> {
        let entry = Entry {
            seq: st.ns.last_seq() + 1,
            ts: Time::now().millis(),
            op,
        };
        let replicas = super::replica::made_by_replica();
        if replicas {
            self.check_not_made_here(st, &entry.op)?;
        }
        let written = MutexGuard::unlocked(st, || log.append(&encode_entry(&entry)));
        let offset = written.inspect_err(|e| {
            if !e.is_no_space() && e.errno != libc::EFBIG {
                self.turn_read_only(st, format!("log append failed: {e}"));
            }
        })?;
        st.live.len = log.len();
        if let Some(reason) = &st.fatal {
            // The store failed while the line was written (a log sync, a backing file's
            // write): nothing after the failure may be acknowledged, so the entry is not
            // queued for a sync. It is in the log, unacknowledged, as an entry written just
            // before a crash is, and may be there after a remount: EIO, not EROFS, which would
            // tell the caller nothing was done.
            return Err(err!(
                EIO,
                "the store turned read-only while this change was logged (it may or may not \
                 be there after a remount): {reason}"
            ));
        }
        let loc = matches!(entry.op, Op::Set { .. }).then_some(ContentLoc {
            segment: st.live.start_seq,
            offset,
        });
        let state = &mut **st;
        state.disk.before(&state.ns, &entry.op);
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
        let shown = match &entry.op {
            Op::Set { fid, data, .. } => Some((*fid, Version::Memory(data.bytes.clone()))),
            Op::Patch { fid, shown, .. } => shown.as_ref().map(|p| {
                // The writer's overlay holds this patch's ranges: it may see it applied in
                // place.
                if let Some(token) = &p.token {
                    token.shows(entry.seq);
                }
                (*fid, p.version.clone())
            }),
            _ => None,
        };
        if let Some((fid, version)) = shown {
            st.pending_bytes += version.memory_bytes();
            let previous = st.pending.insert(fid, (entry.seq, version));
            if let Some((_, old)) = previous {
                st.pending_bytes -= old.memory_bytes();
            }
        }
        let seq = entry.seq;
        if replicas {
            st.from_replica.insert(seq);
        } else if self.shipping.load(Ordering::Relaxed) {
            for fid in entry.op.fids() {
                st.made_here.insert(fid, seq);
            }
        }
        st.unsynced.push(entry);
        self.commits.fetch_add(1, Ordering::Relaxed);
        if st.live.len > self.log_limit() {
            self.compact_wake.notify_one();
        }
        // A wake-up per commit would cost a context switch per commit, for nothing.
        if !st.riding || st.too_heavy_to_ride() {
            self.wake.notify_one();
        }
        Ok(Committed { seq, applied })
    }

    /// Logs a file's bytes again, unchanged (a SET with the same attributes), so that the
    /// apply thread rewrites its backing file: one found to differ from the log. Nothing if
    /// a commit changed the file since `bytes` were read.
    pub fn log_again(&self, fid: Fid, bytes: Arc<Vec<u8>>) -> Result<()> {
        self.holding_log(|log, st| match set_again(&st.ns, fid, &Data::new(bytes)) {
            Some(op) => self.append(log, st, op).map(|_| ()),
            None => Ok(()),
        })
    }

    /// Calls `done` once `seq` is durable in the log (at once if it is already).
    pub fn when_durable(&self, seq: Seq, done: Waiter) {
        let mut w = self.waiters.lock();
        if let Some(e) = w.refused.get(&seq).cloned() {
            drop(w);
            return self.refused_answer(vec![(done, e)]);
        }
        if seq <= w.durable {
            drop(w);
            return done(Ok(()));
        }
        if let Some(reason) = &w.failed {
            let e = err!(EIO, "{reason}");
            drop(w);
            return done(Err(e));
        }
        w.by_seq.entry(seq).or_default().push(done);
        drop(w);
        // The sync thread may be letting entries ride (`run_sync`): someone waits now. Taken
        // under the state lock, so that the thread is either waiting (and woken) or has yet to
        // look at the waiters (and sees this one).
        let _st = self.state.lock();
        self.wake.notify_all();
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
        let mut log = self.log.lock();
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
        self.checkpoint(&mut log, &mut st)?;
        // At rest a segment is exactly its lines: the zeros written ahead go.
        log.trim()
    }

    /// An invariant of the pipeline does not hold: a bug. The store stops (read-only until
    /// remounted) rather than go on from a state nobody reasoned about; the error says which.
    pub(super) fn broken(&self, st: &mut State, what: String) -> Error {
        let reason = format!("internal invariant broken: {what}");
        self.turn_read_only(st, reason.clone());
        err!(EIO, "{reason}")
    }

    pub(super) fn turn_read_only(&self, st: &mut State, reason: String) {
        if st.fatal.is_none() {
            error!(
                "store {} is now read-only until remounted: {reason}",
                self.layout.store.display()
            );
            st.fatal = Some(reason);
        }
    }

    /// Asks the compaction thread to compact now.
    pub fn request_compaction(&self) {
        self.state.lock().compact_requested = true;
        self.compact_wake.notify_one();
    }

    /// Asks the compaction thread to write back the backing files owed a sync now, and to log
    /// the checkpoint after it (tests run it between commits, so that crashes find one at any
    /// point).
    pub fn request_write_back(&self) {
        self.state.lock().write_back_requested = true;
        self.compact_wake.notify_one();
    }

    /// Waits until everything committed is synced and in the backing files (or cannot be):
    /// tests crash the disk at such points so that what it holds does not depend on timing.
    pub fn quiesce(&self) {
        let mut st = self.state.lock();
        st.hurry += 1;
        self.apply_wake.notify_all();
        self.wake.notify_all();
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

    /// For reporting and tests: files whose names in the backing tree differ from the
    /// namespace's, as entries wait to be applied (none once they all are).
    pub fn placements_apart(&self) -> usize {
        self.state.lock().disk.differences()
    }

    /// For reporting and tests: the entries in the live segment (none right after a
    /// compaction, when there is nothing to compact).
    pub fn live_entries(&self) -> u64 {
        let st = self.state.lock();
        (st.ns.last_seq() + 1).saturating_sub(st.live.start_seq)
    }

    /// For reporting and tests: online compactions finished since the mount.
    pub fn compactions(&self) -> u64 {
        self.compactions.load(Ordering::Relaxed)
    }

    /// For reporting and tests: of those, the ones that wrote their snapshot from the last
    /// one and the files changed since.
    pub fn merged_compactions(&self) -> u64 {
        self.merged_compactions.load(Ordering::Relaxed)
    }

    /// For reporting and tests: every entry up to this one has its changes durable in the
    /// backing tree, as a checkpoint logged since the mount says (or as they were at it).
    pub fn checkpointed(&self) -> Seq {
        self.state.lock().covered
    }

    /// For reporting and tests: bytes waiting for their backing files.
    pub fn pending_bytes(&self) -> u64 {
        self.state.lock().pending_bytes
    }

    /// The inode of a fid, cloned (for answers built outside the lock).
    pub fn inode(&self, fid: Fid) -> Option<Inode> {
        self.state.lock().ns.get(fid).cloned()
    }

    /// Of `fids`, the regular files whose current bytes the live log does not hold, with
    /// their sizes.
    pub fn not_in_live_log(&self, fids: &[Fid]) -> Vec<(Fid, u64)> {
        let st = self.state.lock();
        fids.iter()
            .filter(|f| !bytes_in_log(&st, **f))
            .filter_map(|f| st.ns.get(*f).map(|i| (*f, i.size)))
            .collect()
    }

    /// Whether the live log (the segments since the latest compaction's snapshot) holds the
    /// current bytes of regular file `fid`. A file last written before that snapshot has them
    /// only in its backing file.
    pub fn bytes_in_live_log(&self, fid: Fid) -> bool {
        bytes_in_log(&self.state.lock(), fid)
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::disk::sim::SimDisk;
    use crate::options::Options;

    /// Issue 9 (item 10): quiesce and compaction each hurry the apply thread; with one flag, the
    /// first to finish cleared it for the other. A count: each takes back only its own.
    #[test]
    fn a_quiesce_does_not_cancel_a_compaction_s_hurry() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        let layout = Layout::new(std::path::Path::new("/store"));
        let opts = Options::default();
        let r = crate::recovery::recover(&*disk, &layout, &opts).unwrap();
        let policy = CompactPolicy {
            log_limit: opts.log_limit,
            chain: r.chain,
            every: opts.compact_every,
            keep: opts.keep_logs,
        };
        let (p, threads) = Pipeline::start(
            disk,
            layout,
            r.ns,
            r.log,
            policy,
            r.backing_durable,
            &r.damaged,
        )
        .unwrap();
        p.state.lock().hurry += 1; // as a compaction under way does
        p.quiesce();
        assert_eq!(
            p.state.lock().hurry,
            1,
            "the compaction's hurry was taken back"
        );
        p.state.lock().hurry -= 1;
        p.shutdown(threads).unwrap();
    }

    /// Issue 12: without `--log-limit`, the live log grows to the last snapshot's size between
    /// 1 MiB and 8 MiB before it is compacted; with it, the limit is the one given.
    #[test]
    fn the_log_limit_grows_with_the_snapshot_between_its_bounds() {
        use crate::limits::{DEFAULT_LOG_LIMIT, MAX_GROWN_LOG_LIMIT};
        let policy = |log_limit| CompactPolicy {
            log_limit,
            every: Duration::from_secs(3600),
            keep: 1,
            chain: Vec::new(),
        };
        assert_eq!(policy(None).limit(0), DEFAULT_LOG_LIMIT);
        assert_eq!(policy(None).limit(5 << 20), 5 << 20);
        assert_eq!(policy(None).limit(1 << 30), MAX_GROWN_LOG_LIMIT);
        assert_eq!(policy(Some(4096)).limit(5 << 20), 4096);
        assert_eq!(policy(Some(1 << 30)).limit(0), 1 << 30);
    }
}

/// A SET of a file's current bytes `data` with its current attributes: the file committed
/// again, unchanged. None if `data` are not its bytes (or it is gone).
fn set_again(ns: &Namespace, fid: Fid, data: &Data) -> Option<Op> {
    let inode = ns.get(fid)?;
    let sound = inode.dcrc == crc32c(&data.bytes) && inode.kind != Kind::Dir;
    sound.then(|| Op::Set {
        fid,
        dir: inode.parent,
        name: inode.name.to_vec(),
        kind: inode.kind,
        attrs: inode.attrs,
        data: data.clone(),
    })
}
