//! What the pipeline's threads share: the state every commit changes under one lock, the
//! waiters for durability, and the pipeline itself.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::tree::{Edit, Tree, View};
use crate::disk::{Disk, DiskFile};
use crate::error::{Error, Result};
use crate::limits::{
    DEFAULT_LOG_LIMIT, MAX_GROWN_LOG_LIMIT, MAX_PENDING_BYTES, READERS_PRUNE_ABOVE,
};
use crate::log::{Entry, Layer, LogWriter};
use crate::namespace::{Applied, Namespace};
use crate::store::Layout;
use crate::types::{Fid, Kind, Seq};
use crate::view::{Hold, Token, Version};

/// Where commits are made durable, beyond the local log.
pub trait Replica: Send + Sync {
    /// Makes the changes of `batch` (entries logged locally, in order) durable in the
    /// replica, reading what they left from `pipeline`. After an error, part of them may be
    /// there: the batch is shipped again whole, so shipping must say what the changes left,
    /// not replay them. An error with errno ESTALE means the store is no longer this mount's
    /// to change: fatal. Ok: the entries the replica refused (another mount changed what
    /// they change first), each with the error its caller gets; every other one is in.
    fn ship(&self, batch: &[Entry], pipeline: &Pipeline) -> Result<Vec<(Seq, Error)>>;

    /// Answers the callers of refused entries (each with its error) once the local store
    /// shows what the replica holds instead: a caller that goes on from the error (removes
    /// its temporary file, tries again) must find what the replica has. At once by default.
    fn answer_refused(&self, refused: Vec<(Waiter, Error)>) {
        for (done, e) in refused {
            done(Err(e));
        }
    }
}

pub struct Shipping {
    pub(super) replica: Arc<dyn Replica>,
    /// Entries up to this one were in the replica already (the local store was built from it).
    pub(super) after: Seq,
}

/// Something to call once a sequence number is durable (or can never be).
pub type Waiter = Box<dyn FnOnce(Result<()>) + Send>;

/// The state every commit changes, guarded by one lock.
pub struct State {
    pub ns: Namespace,
    /// The live segment as the threads that do not write it need to know it.
    pub(super) live: Live,
    /// Versions committed but not yet in their backing file, with the entry that made them:
    /// the bytes, or a writer's patch over the version it started from.
    pub(super) pending: HashMap<Fid, (Seq, Version)>,
    /// The bytes they hold in memory.
    pub(super) pending_bytes: u64,
    /// The holders of versions that read backing files (readers, writers' unread copies and
    /// overlays), a token each (`view::Token`). A `PATCH` changes a backing file in place
    /// only when no holder would see it change; else it replaces it whole.
    pub(super) readers: HashMap<Fid, Vec<Weak<Hold>>>,
    /// The backing tree as it stands on disk. It trails the namespace while renames and
    /// deletes wait for their log sync.
    pub(super) disk: Tree,
    /// Logged, not yet synced.
    pub(super) unsynced: Vec<Entry>,
    /// Synced, not yet applied to the backing tree, with when they were synced.
    pub(super) unapplied: VecDeque<(Instant, Entry)>,
    /// Fids whose backing file changed since the last checkpoint, and directories whose
    /// entries did.
    pub(super) changed: HashSet<Fid>,
    /// Set when the store turned read-only after a failure; the reason.
    pub(super) fatal: Option<String>,
    /// The backing tree cannot be written (disk full); the error.
    pub(super) stalled: Option<Error>,
    pub(super) shutting_down: bool,
    /// The sync thread has synced everything and stopped.
    pub(super) sync_done: bool,
    /// The log directory holds a new segment whose name is not yet durable: the sync thread
    /// syncs it (outside the lock) before it acknowledges any entry in that segment.
    pub(super) log_dir_unsynced: bool,
    /// Every entry up to this one has its changes durable in the backing tree by a checkpoint
    /// logged since the mount (`Pipeline::vouch`), or had them at the mount.
    pub(super) covered: Seq,
    /// The log is durable up to this entry. Invariants: it never goes backwards, never passes
    /// the last entry appended, and no entry after it reaches the backing tree (applied ≤
    /// durable ≤ appended). A broken one stops the store (`Pipeline::broken`).
    pub(super) durable: Seq,
    /// How many waiters (`quiesce`, a compaction) want entries applied at once, without
    /// `APPLY_DELAY`: a count, so that one finishing does not cancel the other's wish.
    pub(super) hurry: u32,
    /// Someone asked for a compaction now (SIGUSR1, `recordfs compact` on a mounted store).
    pub(super) compact_requested: bool,
    /// A write-back (and the checkpoint after it) was asked for (`request_write_back`).
    pub(super) write_back_requested: bool,
    /// The compaction thread is compacting or writing back, and cannot close the live segment
    /// when it passes the limit: a commit does (`Pipeline::roll_if_full`).
    pub(super) compactor_busy: bool,
    /// The sync thread lets entries ride (`run_sync`): a new entry changes nothing for it
    /// unless its bytes fill memory, so an append does not wake it.
    pub(super) riding: bool,
    /// Bytes of the segments commits closed since the last compaction closed one: with the
    /// live segment's, what the next compaction takes in.
    pub(super) rolled: u64,
    /// The first segment after the last compaction's snapshot (or the live one at the mount):
    /// the bytes of a SET from there on are in the log until a compaction makes its backing
    /// file durable (`bytes_in_log`).
    pub(super) kept_from: Seq,
    /// When the store caches a replica: the last entry made here (not `from_replica`) that
    /// changed each node, until it is settled...
    pub(super) made_here: HashMap<Fid, Seq>,
    /// ...which it is once `settled` reaches it: the replica took it and the changes that
    /// come in from the replica are past it, or the replica refused it (`Pipeline::settle_upto`).
    pub(super) settled: Seq,
    /// Entries the replica's own changes made (`replica::from_replica`): not shipped back.
    pub(super) from_replica: HashSet<Seq>,
}

impl State {
    /// Committed bytes not yet in their backing files fill half their bound: entries stop
    /// riding (`run_sync`) and are synced, so that they can be applied.
    pub(super) fn too_heavy_to_ride(&self) -> bool {
        self.pending_bytes > MAX_PENDING_BYTES / 2
    }

    /// The backing tree as it stands on disk.
    pub(super) fn tree(&self) -> View<'_> {
        View {
            ns: &self.ns,
            tree: &self.disk,
        }
    }

    /// The backing tree, to change as an entry is applied.
    pub(super) fn tree_mut(&mut self) -> Edit<'_> {
        Edit {
            ns: &self.ns,
            tree: &mut self.disk,
        }
    }

    /// A new holder's token for `fid`'s backing file, showing patches up to `shown` itself
    /// and reading no further than `reads_below` bytes of it (`view::Hold`).
    pub(super) fn token(&mut self, fid: Fid, shown: Seq, reads_below: u64) -> Token {
        if self.readers.len() > READERS_PRUNE_ABOVE {
            self.readers
                .retain(|_, ts| ts.iter().any(|t| t.strong_count() > 0));
        }
        let token = Hold::new(shown, reads_below);
        let tokens = self.readers.entry(fid).or_default();
        tokens.retain(|t| t.strong_count() > 0);
        tokens.push(Arc::downgrade(&token));
        token
    }

    /// Whether a holder of `fid`'s backing file would see patch `seq`, which changes nothing
    /// below `lowest`, applied in place.
    pub(super) fn held(&mut self, fid: Fid, seq: Seq, lowest: u64) -> bool {
        let Some(tokens) = self.readers.get_mut(&fid) else {
            return false;
        };
        tokens.retain(|t| t.strong_count() > 0);
        if tokens.is_empty() {
            self.readers.remove(&fid);
            return false;
        }
        tokens
            .iter()
            .filter_map(Weak::upgrade)
            .any(|t| t.sees(seq, lowest))
    }
}

/// The live segment, seen from under the state lock: the writer itself is `Pipeline::log`,
/// and whoever changes it updates this too, holding both locks.
pub(super) struct Live {
    pub(super) start_seq: Seq,
    /// Bytes written, through the last entry applied to the namespace.
    pub(super) len: u64,
    /// The segment, for syncing it without holding the writer.
    pub(super) file: Arc<dyn DiskFile>,
}

impl Live {
    pub(super) fn of(log: &LogWriter) -> Live {
        Live {
            start_seq: log.start_seq(),
            len: log.len(),
            file: log.sync_handle(),
        }
    }
}

pub(super) struct Waiters {
    pub(super) durable: Seq,
    pub(super) by_seq: BTreeMap<Seq, Vec<Waiter>>,
    /// Set once a log sync failed: everything not yet durable never will be.
    pub(super) failed: Option<String>,
    /// Entries the replica refused, with why: durable they are not, though `durable` is
    /// past them. The last `MAX_REFUSED_KEPT` (a caller asks right after its commit).
    pub(super) refused: BTreeMap<Seq, Error>,
}

pub struct Pipeline {
    pub(super) disk: Arc<dyn Disk>,
    pub(super) layout: Layout,
    /// The live segment's writer. A committer holds it from checking its change to applying
    /// it, so commits are ordered while the line is encoded and written outside `state`:
    /// lookups and getattrs never wait behind the log's I/O. A compaction holds it to switch
    /// segments. Lock order: `log`, then `state`; never `log` while holding `state`.
    pub(super) log: Mutex<LogWriter>,
    pub(super) state: Mutex<State>,
    /// Wakes the sync thread (entries logged), the apply thread (entries synced), and
    /// committers waiting for room in `pending`.
    pub(super) wake: Condvar,
    pub(super) apply_wake: Condvar,
    pub(super) room: Condvar,
    /// Wakes the compaction thread.
    pub(super) compact_wake: Condvar,
    pub(super) policy: CompactPolicy,
    pub(super) waiters: Mutex<Waiters>,
    /// Counts log syncs and commits, for the figures in benchmarks and tests.
    pub syncs: AtomicU64,
    pub commits: AtomicU64,
    pub compactions: AtomicU64,
    /// Of those, the ones whose snapshot was written from the last one (`Next::Merged`).
    pub merged_compactions: AtomicU64,
    /// Entries the apply thread skipped, as a later one undoes them (`apply::moot`).
    pub moot: AtomicU64,
    pub(super) sync_nanos: AtomicU64,
    /// Where commits go beyond the local log, if anywhere (`replica.rs`).
    pub(super) replica: Mutex<Option<Shipping>>,
    /// Whether the log is synced: not when the store caches a replica.
    pub(super) local_sync: AtomicBool,
    /// Entries logged that the replica has not taken.
    pub(super) unshipped: AtomicUsize,
    /// Whether `replica` is set: looked at by every commit, without taking its lock.
    pub(super) shipping: AtomicBool,
    /// The size of the chain of snapshots the manifest names (0 if none): the state's. Kept
    /// apart from `chain`, whose lock every commit would take (`log_limit`).
    pub(super) snapshot_bytes: AtomicU64,
    /// That chain, whole snapshot first (`log::plan_layers`); the compaction thread's.
    pub(super) chain: Mutex<Vec<Layer>>,
    /// The compaction thread's id (0 until it runs): `compaction_thread`.
    pub(super) compact_tid: AtomicI32,
}

/// The pipeline's threads, joined at shutdown.
pub struct Threads {
    pub(super) sync: JoinHandle<()>,
    pub(super) apply: JoinHandle<()>,
    pub(super) compact: JoinHandle<()>,
}

/// When the mount compacts its log (README, "Compaction").
#[derive(Clone, Debug)]
pub struct CompactPolicy {
    /// `--log-limit`; without it, the limit grows with the snapshot (`CompactPolicy::limit`).
    pub log_limit: Option<u64>,
    /// The snapshots the mount started from, whole one first (none if none): what the first
    /// compaction's layer goes over, and where the limit starts. Taken by `Pipeline::start`.
    pub chain: Vec<Layer>,
    pub every: Duration,
    pub keep: usize,
}

impl CompactPolicy {
    /// The zeros written ahead of a segment's lines (FORMAT.md): a quarter of the limit, at
    /// most 64 KiB (`LogWriter::write_ahead`).
    pub(super) fn write_ahead(&self) -> u64 {
        self.log_limit.unwrap_or(DEFAULT_LOG_LIMIT) / 4
    }

    /// The bytes logged past which the log is compacted, after a snapshot of
    /// `snapshot_bytes` (`MAX_GROWN_LOG_LIMIT` says why it grows).
    pub(super) fn limit(&self, snapshot_bytes: u64) -> u64 {
        self.log_limit
            .unwrap_or_else(|| snapshot_bytes.clamp(DEFAULT_LOG_LIMIT, MAX_GROWN_LOG_LIMIT))
    }
}

pub struct Committed {
    pub seq: Seq,
    pub applied: Applied,
}

/// Whether the log holds the current bytes of `fid` (not a regular file: nothing to hold) in
/// a segment that stays in charge until a compaction makes its backing file durable: one
/// logged since the last compaction's snapshot, whichever segment since then.
pub(super) fn bytes_in_log(st: &State, fid: Fid) -> bool {
    st.ns.get(fid).is_some_and(|i| {
        i.kind != Kind::File || i.content.get().is_some_and(|c| c.segment >= st.kept_from)
    })
}
