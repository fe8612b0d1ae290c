//! Commits that go beyond the local log: a store in etcd (`etcd::mount`) is served from a
//! local store that caches it, and every batch the sync thread logs is shipped to the
//! replica before the callers waiting for it are answered. The local log is then a cache's:
//! it is not synced, since the replica is what a crash is recovered from.
//!
//! A batch the replica does not take (no quorum, no answer in time) stays in `backlog`: its
//! waiters are answered with the error, and it is shipped again, first, with the next batch
//! or after `RETRY`; commits are refused once `MAX_UNSHIPPED` wait. A replica that says the
//! store is no longer this mount's (ESTALE) turns it read-only.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use log::{error, warn};

use super::state::{Pipeline, Replica, Shipping, Waiter};
use crate::error::{err, Error, Result};
use crate::log::Entry;
use crate::types::{Fid, Seq};

/// How long a batch the replica did not take waits before it is shipped again, when no new
/// commit comes first.
pub(super) const RETRY: Duration = Duration::from_millis(500);
/// The most entries that may wait for the replica: past it, commits fail (ETIMEDOUT) until
/// it takes them.
const MAX_UNSHIPPED: usize = 10_000;

impl Pipeline {
    /// From now on, every entry after the last one logged is shipped to `replica`, and the
    /// local log is no longer synced. Set once, before anything is served.
    pub fn ship_to(&self, replica: Arc<dyn Replica>) {
        let after = self.last_seq();
        *self.replica.lock() = Some(Shipping { replica, after });
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
            Ok(()) => {
                backlog.clear();
                self.unshipped.store(0, Ordering::Relaxed);
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
