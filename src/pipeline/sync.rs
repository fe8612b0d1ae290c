//! The sync thread: one `fdatasync` of the log for every batch of appended entries (group
//! commit), then the callers waiting for them are answered.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::replica::RETRY;
use super::state::{Pipeline, Waiter};
use crate::error::{err, Error, Result};
use crate::limits::{MAX_LINGER, SYNC_RIDE};
use crate::log::Entry;
use crate::store;
use crate::types::Seq;

impl Pipeline {
    // -----------------------------------------------------------------------------------------
    // The commit thread

    /// The sync thread: one `fdatasync` for everything logged since the last one.
    ///
    /// Group commit needs a batch to form: when every committer waits on the running sync,
    /// the first one to commit again would otherwise start the next sync alone. So before
    /// syncing, the thread waits until as many entries as the last batch had are queued, for
    /// at most half as long as the last sync took (PostgreSQL's commit_delay, adaptively). A
    /// lone committer makes batches of one and never waits.
    pub(super) fn run_sync(&self) {
        let mut last_batch = 1usize;
        let mut last_sync = Duration::ZERO;
        // Entries the replica has not taken yet (`replica.rs`), oldest first.
        let mut backlog: Vec<Entry> = Vec::new();
        loop {
            let (end, handle, dir_unsynced) = {
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
                // quiesce or the shutdown needs them applied.
                let ride_until = Instant::now() + SYNC_RIDE;
                st.riding = true;
                while !st.shutting_down
                    && st.hurry == 0
                    && !st.too_heavy_to_ride()
                    && self.waiters.lock().by_seq.is_empty()
                {
                    if self.wake.wait_until(&mut st, ride_until).timed_out() {
                        break;
                    }
                }
                st.riding = false;
                let deadline = Instant::now() + (last_sync / 2).min(MAX_LINGER);
                while st.unsynced.len() < last_batch && !st.shutting_down {
                    if self.wake.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                last_batch = st.unsynced.len().max(1);
                match st.unsynced.last() {
                    Some(last) => (
                        last.seq,
                        st.live.file.clone(),
                        std::mem::take(&mut st.log_dir_unsynced),
                    ),
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
            last_sync = started.elapsed();
            self.sync_nanos
                .fetch_add(last_sync.as_nanos() as u64, Ordering::Relaxed);
            self.syncs.fetch_add(1, Ordering::Relaxed);
            let mut st = self.state.lock();
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
                    self.ship_and_answer(&mut backlog, &to_ship, end);
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

    pub(super) fn mark_durable(&self, upto: Seq) {
        let ready: Vec<Waiter> = {
            let mut w = self.waiters.lock();
            w.durable = upto;
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
