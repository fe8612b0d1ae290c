//! The log's syncs: one `fdatasync` for every batch of appended entries (group commit), then
//! the callers waiting for them are answered. The sync thread makes them, or a lone committer
//! makes its own (`Pipeline::when_durable`); one at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::replica::RETRY;
use super::state::{Pipeline, State, Waiter};
use crate::disk::DiskFile;
use crate::error::{err, Error, Result};
use crate::limits::{MAX_LINGER, SYNC_RIDE};
use crate::log::Entry;
use crate::store;
use crate::types::Seq;

/// What one sync covers: `(last entry, live segment, whether the log directory needs a sync
/// too)`.
pub(super) type Batch = (Seq, Arc<dyn DiskFile>, bool);

impl Pipeline {
    // -----------------------------------------------------------------------------------------
    // The commit thread

    /// The sync thread: one `fdatasync` for everything logged since the last one.
    ///
    /// Group commit needs a batch to form: when every committer waits on the running sync,
    /// the first one to commit again would otherwise start the next sync alone. So before
    /// syncing, the thread waits until as many entries as the last batch had are queued, for
    /// at most half as long as the last sync took (PostgreSQL's commit_delay, adaptively). A
    /// lone committer makes batches of one and never waits: it syncs them itself, and this
    /// thread syncs what nobody waits for.
    pub(super) fn run_sync(&self) {
        // Entries the replica has not taken yet (`replica.rs`), oldest first.
        let mut backlog: Vec<Entry> = Vec::new();
        loop {
            let batch = {
                let mut st = self.state.lock();
                while st.unsynced.is_empty() && !st.shutting_down {
                    if backlog.is_empty() {
                        self.wake.wait(&mut st);
                    } else if self.wake.wait_for(&mut st, RETRY).timed_out() {
                        break;
                    }
                }
                if st.unsynced.is_empty() && !backlog.is_empty() {
                    let (end, last_try) = (st.durable, st.shutting_down);
                    drop(st);
                    self.ship_and_answer(&mut backlog, &[], end);
                    if last_try {
                        self.give_up_shipping(&backlog);
                        backlog.clear();
                    }
                    continue;
                }
                // Entries nobody waits for ride with the next sync that someone does, so that
                // a commit that does not wait costs no sync of its own; at the latest after
                // `SYNC_RIDE`, or sooner when their bytes fill memory or a compaction, a
                // quiesce or the shutdown needs them applied. A lone committer's sync
                // (`when_durable`) takes them along: while it runs, they ride on, and appends
                // wake nobody.
                let ride_until = Instant::now() + SYNC_RIDE;
                st.riding = true;
                while !st.shutting_down
                    && st.hurry == 0
                    && !st.too_heavy_to_ride()
                    && (st.syncing || self.waiters.lock().by_seq.is_empty())
                {
                    if self.wake.wait_until(&mut st, ride_until).timed_out() {
                        break;
                    }
                }
                st.riding = false;
                while st.syncing {
                    // What the committer's sync leaves is ours after it.
                    st.awaiting_sync = true;
                    self.wake.wait(&mut st);
                }
                st.awaiting_sync = false;
                if st.unsynced.is_empty() && !st.shutting_down {
                    continue;
                }
                let deadline = Instant::now() + (st.last_sync / 2).min(MAX_LINGER);
                while st.unsynced.len() < st.last_batch && !st.shutting_down {
                    if self.wake.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                if st.syncing {
                    // A lone committer took the batch while it formed.
                    continue;
                }
                match self.take_batch(&mut st) {
                    Some(batch) => batch,
                    // A lone committer synced it all while it formed.
                    None if !st.shutting_down => continue,
                    None => {
                        st.sync_done = true;
                        self.apply_wake.notify_all();
                        drop(st);
                        // Nothing can be synced from now on: whoever waits, or comes to
                        // wait, hears so rather than wait forever.
                        self.fail_waiters_with("the store has shut down");
                        return;
                    }
                }
            };
            self.sync_batch(batch, &mut backlog);
        }
    }

    /// The entries logged so far, to sync, taken under the state lock by the one who syncs
    /// them: `(last entry, live segment, whether the log directory needs a sync too)`.
    pub(super) fn take_batch(&self, st: &mut State) -> Option<Batch> {
        let end = st.unsynced.last()?.seq;
        st.last_batch = st.unsynced.len();
        st.syncing = true;
        Some((
            end,
            st.live.file.clone(),
            std::mem::take(&mut st.log_dir_unsynced),
        ))
    }

    /// Syncs a batch, hands its entries to the apply thread and the replica, and answers its
    /// waiters; then lets the next sync begin.
    pub(super) fn sync_batch(&self, (end, handle, dir_unsynced): Batch, backlog: &mut Vec<Entry>) {
        let started = Instant::now();
        // The live segment, then the name of a new one (created unsynced by a compaction,
        // or by a commit that closed the last one).
        let local = self.syncs_locally();
        let synced = failpoint_log_sync(self.syncs.load(Ordering::Relaxed))
            .and_then(|_| match local {
                true => handle
                    .sync_data()
                    .map_err(|e| Error::io("fdatasync of the log", &e)),
                false => Ok(()),
            })
            .and_then(|_| match dir_unsynced && local {
                true => store::sync_dir(&*self.disk, &self.layout.log_dir()),
                false => Ok(()),
            });
        let took = started.elapsed();
        self.sync_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        st.last_sync = took;
        let end = failpoint_stale_end(end, st.durable, self.syncs.load(Ordering::Relaxed));
        let (durable, appended) = (st.durable, st.ns.last_seq());
        let synced = synced.and_then(|()| match end >= durable && end <= appended {
            true => Ok(()),
            false => Err(self.broken(
                &mut st,
                format!(
                    "the log synced up to entry {end}, but entry {durable} was durable \
                     already and {appended} is the last appended"
                ),
            )),
        });
        match synced {
            Ok(()) => {
                st.durable = end;
                // Entries committed after `end` were not surely covered by this sync:
                // they wait for the next one.
                let n = st.unsynced.iter().take_while(|e| e.seq <= end).count();
                let synced: Vec<Entry> = st.unsynced.drain(..n).collect();
                // The replica's own changes are not shipped back to it.
                let to_ship: Vec<Entry> = match self.replica.lock().is_some() {
                    true => synced
                        .iter()
                        .filter(|e| !st.from_replica.remove(&e.seq))
                        .cloned()
                        .collect(),
                    false => {
                        if !st.from_replica.is_empty() {
                            for e in &synced {
                                st.from_replica.remove(&e.seq);
                            }
                        }
                        Vec::new()
                    }
                };
                let now = Instant::now();
                st.unapplied.extend(synced.into_iter().map(|e| (now, e)));
                self.apply_wake.notify_one();
                drop(st);
                let answered = self.ship_and_answer(backlog, &to_ship, end);
                let mut st = self.state.lock();
                st.lone = answered <= 1;
                self.end_sync(&mut st);
            }
            Err(e) => {
                self.turn_read_only(&mut st, e.reason.clone());
                st.unsynced.clear();
                self.end_sync(&mut st);
                drop(st);
                self.fail_waiters(&e.reason);
            }
        }
    }

    /// Lets the next sync begin, and wakes the sync thread if it waits for that, or if it
    /// lets entries ride that this sync left (someone may be waiting for them).
    fn end_sync(&self, st: &mut State) {
        st.syncing = false;
        if st.awaiting_sync || (st.riding && !st.unsynced.is_empty()) {
            self.wake.notify_all();
        }
    }

    /// Answers the waiters of entries up to `upto`; returns how many there were.
    pub(super) fn mark_durable(&self, upto: Seq) -> usize {
        let ready: Vec<Waiter> = {
            let mut w = self.waiters.lock();
            w.durable = upto;
            let later = w.by_seq.split_off(&(upto + 1));
            std::mem::replace(&mut w.by_seq, later)
                .into_values()
                .flatten()
                .collect()
        };
        let answered = ready.len();
        for done in ready {
            done(Ok(()));
        }
        answered
    }

    pub(super) fn fail_waiters(&self, reason: &str) {
        self.fail_waiters_with(&format!("the log could not be synced: {reason}"));
    }

    /// Answers every waiter, and every later one, with EIO and `why`.
    pub(super) fn fail_waiters_with(&self, why: &str) {
        let (all, why): (Vec<Waiter>, String) = {
            let mut w = self.waiters.lock();
            let why = w.failed.get_or_insert_with(|| why.to_string()).clone();
            let all = std::mem::take(&mut w.by_seq)
                .into_values()
                .flatten()
                .collect();
            (all, why)
        };
        for done in all {
            done(Err(err!(EIO, "{why}")));
        }
    }
}

/// With the `failpoints` feature, fails the log sync after the Nth (RECORDFS_FAIL_LOG_SYNC_AFTER).
#[cfg(feature = "failpoints")]
pub(super) fn failpoint_log_sync(done: u64) -> Result<()> {
    let after = std::env::var("RECORDFS_FAIL_LOG_SYNC_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match after {
        Some(n) if done >= n => Err(err!(EIO, "fdatasync of the log: injected failure")),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn failpoint_log_sync(_done: u64) -> Result<()> {
    Ok(())
}

/// With the `failpoints` feature, a sync after the Nth (RECORDFS_FAIL_STALE_SYNC_AFTER)
/// reports an end older than the durable mark, as a bug in the sync thread would.
#[cfg(feature = "failpoints")]
pub(super) fn failpoint_stale_end(end: Seq, durable: Seq, done: u64) -> Seq {
    let after = std::env::var("RECORDFS_FAIL_STALE_SYNC_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match after {
        Some(n) if done >= n && durable > 0 => durable - 1,
        _ => end,
    }
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn failpoint_stale_end(end: Seq, _durable: Seq, _done: u64) -> Seq {
    end
}
