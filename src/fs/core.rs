//! Starting and stopping the core, committing through the pipeline, and telling the kernel
//! what changed behind its back.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use log::warn;
use parking_lot::Mutex;

use super::rules::show;
use super::state::{Handles, Invalidation, Invalidator, RecordFs, StatFs, Ticket};
use crate::disk::{Disk, RealDisk};
use crate::error::{err, Error, Result};
use crate::limits::{FORGET_WAIT, NAME_MAX};
use crate::log::{Data, Op};
use crate::namespace::{Inode, Namespace};
use crate::options::{Options, SyncMode};
use crate::pipeline::{Pipeline, Waiter};
use crate::recovery::{self, Finding};
use crate::store::Layout;
use crate::types::{Fid, Seq};

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
        crate::memory::tune();
        let layout = Layout::new(store);
        let recovered = recovery::recover(&*disk, &layout, &opts)?;
        let policy = crate::pipeline::CompactPolicy {
            log_limit: opts.log_limit,
            chain: recovered.chain,
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
        // Recovery freed what it read (a million-file snapshot's records among the namespace
        // it built): give the freed pages back rather than keep them resident.
        crate::memory::give_back_freed();
        Ok(RecordFs {
            disk,
            max_path: layout.max_path(),
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

    /// Says in the store's lock which mount point this store is served at (see
    /// `StoreLock::say_serving`).
    pub fn say_serving(&self, mountpoint: &std::path::Path) {
        self.lock.say_serving(mountpoint);
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

    pub(super) fn commit_ticket(&self, seq: Seq) -> Ticket {
        Ticket((self.opts.sync == SyncMode::Always).then_some(seq))
    }

    pub(super) fn fsync_ticket(&self, seq: Seq) -> Ticket {
        Ticket((self.opts.sync != SyncMode::Never).then_some(seq))
    }

    pub(super) fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            return Err(err!(EROFS, "mounted read-only"));
        }
        Ok(())
    }

    pub(super) fn commit(&self, build: impl FnOnce(&mut Namespace) -> Result<Op>) -> Result<Seq> {
        self.commit_keeping(&[], &[], build)
    }

    /// A commit with the bytes of the files in `in_log` in the live log (see
    /// `Pipeline::commit_keeping`).
    pub(super) fn commit_keeping(
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
    pub(super) fn inode(&self, fid: Fid) -> Result<Inode> {
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

    /// Tells the kernel what to forget, if it is listening (a mount's invalidator is set).
    pub fn invalidate(&self, what: Invalidation) {
        if let Some(f) = &*self.invalidator.lock() {
            // A full queue drops it: the kernel's caches expire on their own (1 s).
            let _ = f(what);
        }
    }

    /// Runs `answer` once the kernel has taken every invalidation asked before it; at once
    /// when nobody is listening or the queue is full.
    pub fn after_invalidations(&self, answer: Box<dyn FnOnce() + Send>) {
        let left = match &*self.invalidator.lock() {
            Some(f) => f(Invalidation::Then(answer)),
            None => Some(Invalidation::Then(answer)),
        };
        if let Some(Invalidation::Then(answer)) = left {
            answer();
        }
    }

    /// Makes the kernel forget a name of empty `file` the daemon removed by itself, and waits
    /// (bounded) until it has: a `stat` right after the caller hears of it must not find the
    /// name cached, nor the file's link count.
    pub(super) fn forget_name(&self, dir: Fid, name: &[u8], file: Fid) {
        let (done, forgotten) = std::sync::mpsc::sync_channel(1);
        if let Some(f) = &*self.invalidator.lock() {
            // A full queue drops it: the wait below ends at its bound.
            let _ = f(Invalidation::Entry {
                dir,
                name: name.to_vec(),
                file,
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

    pub fn statfs(&self) -> Result<StatFs> {
        let st = nix::sys::statvfs::statvfs(&self.layout.store)
            .map_err(|e| Error::io("statvfs of the store", &e.into()))?;
        Ok(StatFs {
            blocks: st.blocks(),
            bfree: st.blocks_free(),
            bavail: st.blocks_available(),
            files: st.files(),
            ffree: st.files_free(),
            bsize: st.block_size() as u32,
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

/// What a test runs in the failpoint below.
#[cfg(feature = "failpoints")]
type Between = Box<dyn FnOnce(&RecordFs)>;

#[cfg(feature = "failpoints")]
thread_local! {
    static BETWEEN: std::cell::RefCell<Option<Between>> = const { std::cell::RefCell::new(None) };
}

/// With the `failpoints` feature, `f` runs once on this thread between the next make's or
/// link's commit and its answer: the moment in which another caller's commit may land.
#[cfg(feature = "failpoints")]
pub fn between_commit_and_answer(f: impl FnOnce(&RecordFs) + 'static) {
    BETWEEN.with(|b| *b.borrow_mut() = Some(Box::new(f)));
}

impl RecordFs {
    #[cfg(feature = "failpoints")]
    pub(super) fn failpoint_between_commit_and_answer(&self) {
        if let Some(f) = BETWEEN.with(|b| b.borrow_mut().take()) {
            f(self);
        }
    }

    #[cfg(not(feature = "failpoints"))]
    pub(super) fn failpoint_between_commit_and_answer(&self) {}
}
