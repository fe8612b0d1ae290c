//! The compaction thread: compacts the log online when due, and writes back changed backing
//! files between compactions.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{error, info};

use super::state::Pipeline;
use crate::error::{err, Error, Result};
use crate::limits::{COMPACT_RETRY, TAIL_SYNC_WAIT, WRITEBACK_BATCH, WRITEBACK_EVERY};
use crate::log::{Snapshot, SnapshotDelta};
use crate::store::{self};
use crate::types::Seq;

impl Pipeline {
    /// The compaction thread: compacts the log when due (`CompactPolicy`), and between
    /// compactions writes back changed backing files (`write_back`).
    pub(super) fn run_compact(&self) {
        // SAFETY: gettid has no preconditions.
        self.compact_tid
            .store(unsafe { libc::gettid() }, Ordering::Relaxed);
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
                    // What was logged since the last compaction: the segments commits closed
                    // meanwhile (`roll_if_full`) and the live one. The size counts only once
                    // an entry is there: a limit below a segment's header alone would
                    // otherwise be passed for ever.
                    let has_entries = st.live.start_seq <= st.ns.last_seq() || st.rolled > 0;
                    let logged = st.rolled + st.live.len;
                    let due = st.fatal.is_none()
                        && (st.compact_requested
                            || (logged > self.log_limit() && has_entries)
                            || last.elapsed() >= self.policy.every);
                    if due {
                        st.compact_requested = false;
                        break Work::Compact;
                    }
                    let owed = st.changed.len();
                    let due = owed > 0
                        && (owed >= WRITEBACK_BATCH
                            || last_write_back.elapsed() >= WRITEBACK_EVERY);
                    if st.fatal.is_none() && (due || st.write_back_requested) {
                        st.write_back_requested = false;
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
                self.state.lock().compactor_busy = true;
                let written = self.write_back();
                self.state.lock().compactor_busy = false;
                match written {
                    Ok(upto) => self.vouch(upto),
                    Err(e) => error!("writing back backing files failed: {e}"),
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

    /// For tests: the compaction thread's id, once it runs (its CPU time is in
    /// /proc/self/task/ID/stat, apart from other stores' threads in the same process).
    pub fn compaction_thread(&self) -> Option<i32> {
        Some(self.compact_tid.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// The bytes logged since the last compaction past which the log is compacted, and the
    /// size past which a commit closes the live segment while the compactor is busy
    /// (`CompactPolicy::limit`).
    pub fn log_limit(&self) -> u64 {
        self.policy
            .limit(self.snapshot_bytes.load(Ordering::Relaxed))
    }

    pub(super) fn compact_online(&self) -> Result<Option<crate::log::Compacted>> {
        // The old segment's tail must be durable before the new segment exists
        // (`switch_segment`). Most of it is synced here, holding no lock; then, holding the
        // log (commits wait, lookups do not), only what was appended meanwhile.
        let old = self.state.lock().live.file.clone();
        if let Err(e) = old.sync_data() {
            let e = Error::io("fdatasync of the log", &e);
            self.turn_read_only(&mut self.state.lock(), e.reason.clone());
            return Err(e);
        }
        {
            // What was appended meanwhile: wait (bounded) for the sync thread to make it
            // durable while commits go on, so that the switch below seldom syncs at all.
            // Entries nobody waits for would ride (`run_sync`): the hurry has them synced now.
            let mut st = self.state.lock();
            st.hurry += 1;
            self.wake.notify_all();
            let until = Instant::now() + TAIL_SYNC_WAIT;
            while st.fatal.is_none() && st.durable < st.ns.last_seq() && Instant::now() < until {
                self.room.wait_for(&mut st, Duration::from_millis(1));
            }
            st.hurry -= 1;
        }
        let (next, closed) = {
            let mut log = self.log.lock();
            let mut st = self.state.lock();
            if let Some(reason) = &st.fatal {
                return Err(err!(EROFS, "the store failed earlier: {reason}"));
            }
            let upto = st.ns.last_seq();
            // The live segment is closed here, unless it holds no entry yet: then a commit
            // closed the last one (`roll_if_full`), synced, and there is nothing to close.
            let closed = match log.start_seq() <= upto {
                true => Some(self.switch_segment(&mut log, &mut st)?),
                false if st.rolled > 0 => None,
                false => return Ok(None), // nothing logged since the last compaction
            };
            st.rolled = 0;
            st.kept_from = upto + 1;
            st.compactor_busy = true;
            // Entries up to `upto` not marked durable yet (synced by a close, or riding) are
            // taken by the sync and apply threads at once.
            st.hurry += 1;
            self.wake.notify_all();
            self.apply_wake.notify_all();
            info!(
                "compacting the log up to entry {upto}; appends go to segment {}",
                upto + 1
            );
            let next = match st.ns.take_changes() {
                Some(delta) => Next::Merged(delta),
                None => Next::Whole(st.ns.snapshot()),
            };
            (next, closed)
        };
        super::segments::trim_closed(closed);
        let written = self.write_snapshot(&next);
        self.state.lock().compactor_busy = false;
        let c = match written {
            Ok(c) => c,
            Err(e) => {
                // The next snapshot is taken whole: which one the manifest names is not known.
                let delta = match next {
                    Next::Merged(delta) => Some(delta),
                    Next::Whole(_) => None,
                };
                self.state.lock().ns.give_back(delta);
                return Err(e);
            }
        };
        self.snapshot_bytes
            .store(c.chain.iter().map(|l| l.bytes).sum(), Ordering::Relaxed);
        *self.chain.lock() = c.chain.clone();
        if let Next::Merged(_) = next {
            self.merged_compactions.fetch_add(1, Ordering::Relaxed);
        }
        // The copy of what changed (or of the whole namespace) and its encoding are freed:
        // their pages go back too.
        drop(next);
        crate::memory::give_back_freed();
        self.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(Some(c))
    }

    /// Steps 2 to 5 of an online compaction once the live segment is switched: waits for
    /// every entry up to the snapshot's to reach the backing tree, makes it durable, and writes the
    /// snapshot and the manifest.
    fn write_snapshot(&self, next: &Next) -> Result<crate::log::Compacted> {
        let upto = next.upto();
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
        // Segment upto + 1 durable, header and name, before the manifest names it.
        let live = self.state.lock().live.file.clone();
        let made = live
            .sync_data()
            .map_err(|e| Error::io("fdatasync of the new log segment", &e))
            .and_then(|_| store::sync_dir(&*self.disk, &self.layout.log_dir()));
        if let Err(e) = made {
            self.turn_read_only(&mut self.state.lock(), e.reason.clone());
            return Err(e);
        }
        // Every backing file durable: the ones owed a sync (all of them, after a process that
        // did not end at a checkpoint: `Pipeline::start`), then the names in `root/`.
        self.write_back()?;
        if let Err(e) = store::sync_dir(&*self.disk, &self.layout.root()) {
            self.turn_read_only(&mut self.state.lock(), e.reason.clone());
            return Err(e);
        }
        let (disk, keep) = (&*self.disk, self.policy.keep);
        match next {
            Next::Merged(delta) => {
                let chain = self.chain.lock().clone();
                let from = crate::log::plan_layers(&chain, delta.changed.len() as u64);
                crate::log::commit_layered_snapshot(disk, &self.layout, &chain, from, delta, keep)
            }
            Next::Whole(snap) => crate::log::commit_snapshot(disk, &self.layout, snap, keep),
        }
    }
}

/// The snapshot a compaction writes: from the last one and the files changed since, or
/// (when there is no last one it can count on) from a copy of every file.
enum Next {
    Merged(SnapshotDelta),
    Whole(Snapshot),
}

impl Next {
    fn upto(&self) -> Seq {
        match self {
            Next::Merged(d) => d.upto,
            Next::Whole(s) => s.upto,
        }
    }
}
