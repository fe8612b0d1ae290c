//! What the two halves of a mount of etcd share: `replica.rs` ships the mount's commits,
//! `follow.rs` brings in everyone else's. Both need to know which etcd node each node of the
//! cache is, and as of which revision the cache shows each key: a commit's transaction holds
//! only if none of its keys changed since then (FORMAT.md, "Several mounts").

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{err, Error, Result};
use crate::pipeline::Waiter;
use crate::types::{Fid, Seq};

pub struct Shared {
    pub fids: Mutex<Fids>,
    pub seen: Mutex<Seen>,
    /// The cache shows every key not in `Seen::at` as etcd held it at this revision (the
    /// last one the follower took in).
    pub revision: AtomicI64,
    /// Local commits shipped (or refused), up to an entry, and the latest revision this
    /// mount's transactions had made by then: they are settled (`Pipeline::settle_upto`)
    /// once the follower is past it.
    pub unsettled: Mutex<VecDeque<(Seq, i64)>>,
    /// Callers of refused commits, answered once the follower brought the cache back to
    /// what etcd holds (or after `HOLD_AT_MOST`), with when they were refused.
    held: Mutex<Vec<(Instant, Waiter, Error)>>,
}

/// The longest a refused commit's caller waits for the cache to show etcd's state.
const HOLD_AT_MOST: Duration = Duration::from_secs(5);

impl Shared {
    pub fn new(fids: Fids, revision: i64) -> Shared {
        Shared {
            fids: Mutex::new(fids),
            seen: Mutex::new(Seen::default()),
            revision: AtomicI64::new(revision),
            unsettled: Mutex::new(VecDeque::new()),
            held: Mutex::new(Vec::new()),
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub fn hold(&self, refused: Vec<(Waiter, Error)>) {
        let now = Instant::now();
        let mut held = self.held.lock();
        held.extend(refused.into_iter().map(|(w, e)| (now, w, e)));
    }

    /// Answers the held callers: all of them once the cache shows what etcd holds (no key
    /// is dirty) or when `all` (the follower ends), else those held too long.
    pub fn release(&self, all: bool) {
        let due: Vec<(Instant, Waiter, Error)> = {
            let mut held = self.held.lock();
            if held.is_empty() {
                return;
            }
            // Looked at under `held`: a refusal marks its keys dirty before its callers are
            // held, so the keys of every caller held here are dirty here until the catch-up
            // brought them back. (Looked at before, a refusal could come in between, and its
            // caller be answered while the cache still showed the refused change.)
            let all = all || self.seen.lock().dirty.is_empty();
            let (due, keep) = std::mem::take(&mut *held)
                .into_iter()
                .partition(|(at, _, _)| all || at.elapsed() > HOLD_AT_MOST);
            *held = keep;
            due
        };
        if !due.is_empty() {
            log::debug!("answering {} refused callers", due.len());
        }
        for (_, done, e) in due {
            done(Err(e));
        }
    }

    /// The last entry whose commits are settled now, if that moved.
    pub fn settled(&self) -> Option<Seq> {
        let at = self.revision();
        let mut unsettled = self.unsettled.lock();
        let mut upto = None;
        while let Some(&(seq, rev)) = unsettled.front() {
            if rev > at {
                break;
            }
            upto = Some(seq);
            unsettled.pop_front();
        }
        upto
    }
}

/// Which etcd node each node of the cache is.
pub struct Fids {
    to_local: HashMap<Fid, Fid>,
    to_etcd: HashMap<Fid, Fid>,
    /// A node this mount makes is `base` + its local fid in etcd (`meta`'s block).
    base: Fid,
}

impl Fids {
    /// `made`: etcd fid → local fid of the nodes the cache was built with.
    pub fn new(made: &HashMap<Fid, Fid>, base: Fid) -> Fids {
        Fids {
            to_local: made.clone(),
            to_etcd: made.iter().map(|(e, l)| (*l, *e)).collect(),
            base,
        }
    }

    /// The first fid of this mount's block: no other mount has it.
    pub fn base(&self) -> Fid {
        self.base
    }

    pub fn local(&self, etcd: Fid) -> Option<Fid> {
        self.to_local.get(&etcd).copied()
    }

    /// The etcd fid of a node of the cache: known, or one this mount made.
    pub fn etcd(&self, local: Fid) -> Result<Fid> {
        if let Some(e) = self.to_etcd.get(&local) {
            return Ok(*e);
        }
        match local < super::FID_BLOCK {
            true => Ok(self.base + local),
            false => Err(err!(ENOSPC, "this mount has given out every fid it took")),
        }
    }

    /// Whether etcd has had the node (it was read, shipped or brought in).
    pub fn known(&self, local: Fid) -> bool {
        self.to_etcd.contains_key(&local)
    }

    /// One node to one node: a pair either fid was in before goes.
    pub fn insert(&mut self, etcd: Fid, local: Fid) {
        if let Some(was) = self.to_local.insert(etcd, local) {
            self.to_etcd.remove(&was);
        }
        if let Some(was) = self.to_etcd.insert(local, etcd) {
            if was != etcd {
                self.to_local.remove(&was);
            }
        }
    }

    pub fn remove(&mut self, etcd: Fid) {
        if let Some(l) = self.to_local.remove(&etcd) {
            self.to_etcd.remove(&l);
        }
    }
}

/// Keys the cache shows as of a revision other than `Shared::revision`.
#[derive(Default)]
pub struct Seen {
    /// Later for keys this mount wrote since (its transaction's revision); earlier for keys
    /// whose changes the cache does not show yet (`dirty`).
    pub at: HashMap<Vec<u8>, i64>,
    /// Keys whose latest value in etcd the cache may not show: changes the follower left
    /// for later (they touched nodes with local commits not settled yet), and the keys of
    /// commits etcd refused. The follower brings them in once nothing local waits on them.
    /// Each with the number of the time it was marked: a catch-up clears a key only if no
    /// refusal marked it again while the catch-up ran (it saw the cache from before).
    pub dirty: HashMap<Vec<u8>, u64>,
    marks: u64,
}

impl Seen {
    /// The revision as of which the cache shows `key`.
    pub fn bound(&self, key: &[u8], revision: i64) -> i64 {
        self.at.get(key).copied().unwrap_or(revision)
    }

    /// `key` changed at `rev`, and the cache does not show it yet (unless this mount wrote
    /// it since: then the cache shows what it wrote).
    pub fn defer(&mut self, key: &[u8], rev: i64) {
        let at = self.at.entry(key.to_vec()).or_insert(rev - 1);
        if *at < rev {
            *at = (*at).min(rev - 1);
            self.mark(key);
        }
    }

    /// The cache shows `key` otherwise than etcd holds it (a commit etcd refused), as of
    /// `bound` at the latest.
    pub fn refused(&mut self, key: &[u8], bound: i64) {
        self.at.entry(key.to_vec()).or_insert(bound);
        self.mark(key);
    }

    fn mark(&mut self, key: &[u8]) {
        self.marks += 1;
        self.dirty.insert(key.to_vec(), self.marks);
    }

    /// The dirty keys with their marks, for `clear`.
    pub fn marked(&self) -> Vec<(Vec<u8>, u64)> {
        self.dirty.iter().map(|(k, m)| (k.clone(), *m)).collect()
    }

    /// `key` is brought in as `marked` showed it, unless it was marked again since.
    pub fn clear(&mut self, key: &[u8], marked: u64) {
        if self.dirty.get(key) == Some(&marked) {
            self.dirty.remove(key);
        }
    }

    /// Forgets what `revision` covers now.
    pub fn prune(&mut self, revision: i64) {
        let dirty = &self.dirty;
        self.at
            .retain(|k, r| *r > revision || dirty.contains_key(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_paired_again_leaves_no_pair_behind() {
        let mut fids = Fids::new(&HashMap::from([(0x100, 2)]), 0x1000);
        // Local node 2 taken for etcd node 0x200: 0x100 no longer leads to it.
        fids.insert(0x200, 2);
        assert_eq!(fids.local(0x100), None);
        assert_eq!((fids.local(0x200), fids.etcd(2).unwrap()), (Some(2), 0x200));
        // Etcd node 0x200 made again as local 3: local 2 is no longer it.
        fids.insert(0x200, 3);
        assert!(!fids.known(2));
        assert_eq!(fids.etcd(2).unwrap(), 0x1002);
        assert_eq!(fids.local(0x200), Some(3));
    }

    #[test]
    fn a_key_refused_again_during_a_catch_up_stays_dirty() {
        let mut seen = Seen::default();
        seen.defer(b"n/1/a", 5);
        seen.defer(b"n/1/b", 5);
        let marked = seen.marked();
        // A local commit refused while the catch-up ran, on a key it had read already.
        seen.refused(b"n/1/a", 7);
        for (key, mark) in &marked {
            seen.clear(key, *mark);
        }
        assert!(seen.dirty.contains_key(b"n/1/a".as_slice()));
        assert!(!seen.dirty.contains_key(b"n/1/b".as_slice()));
    }
}
