//! Commits that go beyond the local log: a store in etcd (`etcd::mount`) is served from a
//! local store that caches it, and every batch the sync thread logs is shipped to the
//! replica before the callers waiting for it are answered. The local log is then a cache's:
//! it is not synced, since the replica is what a crash is recovered from.
//!
//! A batch the replica does not take (no quorum, no answer in time) stays in `backlog`: its
//! waiters are answered with the error, and it is shipped again, first, with the next batch
//! or after `RETRY`; commits are refused once `MAX_UNSHIPPED` wait. A replica that says the
//! store is no longer this mount's (ESTALE) turns it read-only.
//!
//! Others change the replica too (other mounts of a prefix): their changes come into the
//! local store as commits made `from_replica`, which are not shipped back. Such a commit
//! fails with EINPROGRESS when it would change a node that has a local commit not settled yet
//! (`settle_upto`): one not shipped yet ships what the node holds then, so the local change
//! would be lost under the replica's; one shipped but not yet back from the replica is
//! newer than what the replica's changes come in with.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use log::{error, warn};

use super::state::{Pipeline, Replica, Shipping, State, Waiter};
use crate::error::{err, Error, Result};
use crate::log::{Entry, Op};
use crate::types::{Fid, Seq};

/// How long a batch the replica did not take waits before it is shipped again, when no new
/// commit comes first.
pub(super) const RETRY: Duration = Duration::from_millis(500);
/// The most entries that may wait for the replica: past it, commits fail (ETIMEDOUT) until
/// it takes them.
const MAX_UNSHIPPED: usize = 10_000;
/// How many refused entries are remembered for callers that ask about them late.
const MAX_REFUSED_KEPT: usize = 10_000;

thread_local! {
    static FROM_REPLICA: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as the replica's own changes coming in: the commits it makes on this thread are
/// not shipped back, and fail with EINPROGRESS where a local commit not settled yet would be
/// lost.
pub fn from_replica<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            FROM_REPLICA.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(FROM_REPLICA.with(|c| c.replace(true)));
    f()
}

pub(super) fn made_by_replica() -> bool {
    FROM_REPLICA.with(Cell::get)
}

impl Pipeline {
    /// From now on, every entry after the last one logged is shipped to `replica`, and the
    /// local log is no longer synced. Set once, before anything is served.
    pub fn ship_to(&self, replica: Arc<dyn Replica>) {
        let mut st = self.state.lock();
        let after = st.ns.last_seq();
        st.settled = after;
        *self.replica.lock() = Some(Shipping { replica, after });
        self.shipping.store(true, Ordering::Relaxed);
    }

    /// Local commits up to `upto` are settled: the replica refused them, or took them and
    /// the changes coming in from it are past them.
    pub fn settle_upto(&self, upto: Seq) {
        let mut st = self.state.lock();
        st.settled = st.settled.max(upto);
        let settled = st.settled;
        st.made_here.retain(|_, seq| *seq > settled);
    }

    /// Whether any of `fids` has a local commit not settled yet.
    pub fn made_here(&self, fids: &[Fid]) -> bool {
        let st = self.state.lock();
        fids.iter().any(|f| made_here(&st, *f))
    }

    /// Refuses a commit from the replica that would change a node with a local commit not
    /// settled yet (called under the state lock).
    pub(super) fn check_not_made_here(&self, st: &State, op: &Op) -> Result<()> {
        match op.fids().into_iter().find(|f| made_here(st, *f)) {
            // Not EAGAIN, which callers in the core take as "try again now".
            Some(fid) => Err(err!(
                EINPROGRESS,
                "node {fid} has local changes the replica has not settled"
            )),
            None => Ok(()),
        }
    }

    /// Serves the local store as a cache of a replica: its log is not synced.
    pub fn cache_only(&self) {
        self.local_sync.store(false, Ordering::Relaxed);
    }

    pub(super) fn syncs_locally(&self) -> bool {
        self.local_sync.load(Ordering::Relaxed)
    }

    pub fn unshipped(&self) -> usize {
        self.unshipped.load(Ordering::Relaxed)
    }

    /// Refuses a commit while too many wait for the replica (called under the state lock).
    pub(super) fn check_unshipped(&self) -> Result<()> {
        match self.unshipped() > MAX_UNSHIPPED {
            true => Err(err!(
                ETIMEDOUT,
                "{} commits wait for the replica to take them",
                self.unshipped()
            )),
            false => Ok(()),
        }
    }

    /// After the sync thread logged `synced` (the local log now holds everything up to
    /// `end`): ships them, with what waits from before, and answers the waiters up to `end`.
    pub(super) fn ship_and_answer(&self, backlog: &mut Vec<Entry>, synced: &[Entry], end: Seq) {
        let shipping = self
            .replica
            .lock()
            .as_ref()
            .map(|s| (s.replica.clone(), s.after));
        let Some((replica, after)) = shipping else {
            return self.mark_durable(end);
        };
        backlog.extend(synced.iter().filter(|e| e.seq > after).cloned());
        self.unshipped.store(backlog.len(), Ordering::Relaxed);
        if backlog.is_empty() {
            return self.mark_durable(end);
        }
        match replica.ship(backlog, self) {
            Ok(refused) => {
                backlog.clear();
                self.unshipped.store(0, Ordering::Relaxed);
                self.answer_refused(&*replica, refused);
                self.mark_durable(end);
            }
            Err(e) if e.errno == libc::ESTALE => {
                let reason = format!("the replica refused a commit: {}", e.reason);
                self.turn_read_only(&mut self.state.lock(), reason.clone());
                self.fail_waiters(&reason);
            }
            Err(e) => {
                warn!(
                    "{} commits are not in the replica yet, tried again in {RETRY:?}: {}",
                    backlog.len(),
                    e.reason
                );
                self.fail_upto(end, &e);
            }
        }
    }

    /// Answers the waiters of entries the replica refused with why.
    fn answer_refused(&self, replica: &dyn Replica, refused: Vec<(Seq, Error)>) {
        let mut held = Vec::new();
        let mut w = self.waiters.lock();
        for (seq, e) in refused {
            let waiting = w.by_seq.remove(&seq);
            held.extend(waiting.into_iter().flatten().map(|done| (done, e.clone())));
            // For callers that ask after this.
            w.refused.insert(seq, e);
        }
        while w.refused.len() > MAX_REFUSED_KEPT {
            w.refused.pop_first();
        }
        drop(w);
        if !held.is_empty() {
            replica.answer_refused(held);
        }
    }

    /// Answers callers of refused entries through the replica (`Replica::answer_refused`).
    pub(super) fn refused_answer(&self, refused: Vec<(Waiter, Error)>) {
        let replica = self.replica.lock().as_ref().map(|s| s.replica.clone());
        match replica {
            Some(r) => r.answer_refused(refused),
            None => {
                for (done, e) in refused {
                    done(Err(e));
                }
            }
        }
    }

    /// Answers the waiters up to `upto` with `e`, without giving up on them: what they wait
    /// for is shipped again later.
    fn fail_upto(&self, upto: Seq, e: &Error) {
        let failed: Vec<Waiter> = {
            let mut w = self.waiters.lock();
            let later = w.by_seq.split_off(&(upto + 1));
            std::mem::replace(&mut w.by_seq, later)
                .into_values()
                .flatten()
                .collect()
        };
        for done in failed {
            done(Err(e.clone()));
        }
    }

    /// At shutdown, what the replica never took is said once: those commits are in the
    /// local cache only, and were never acknowledged as durable.
    pub(super) fn give_up_shipping(&self, backlog: &[Entry]) {
        if !backlog.is_empty() {
            let fids: Vec<Fid> = backlog.iter().filter_map(|e| e.op.fid()).collect();
            error!(
                "{} commits (files {fids:?}) never reached the replica; they are lost with the cache",
                backlog.len()
            );
        }
    }
}

fn made_here(st: &State, fid: Fid) -> bool {
    st.made_here.get(&fid).is_some_and(|seq| *seq > st.settled)
}
