//! Every inode, kept in one array sorted by fid rather than each in an allocation of its own
//! behind a hash table: at a million files the table's slots and the allocator's headers
//! cost as much as a fifth of the inodes themselves.
//!
//! Fids are given out in increasing order under the commit lock, and a snapshot lists them
//! in order, so a new inode nearly always goes at the end. A removed one leaves a hole that
//! keeps its fid (so the fids stay sorted for the binary search); the holes are squeezed out
//! once they outnumber the inodes, which keeps the cost of removing one constant on average.
//!
//! Every change to an inode goes through here, so here is where the fids changed since the
//! last snapshot are noted: a compaction writes the next snapshot from the last one and
//! those alone, not from a copy of every inode.

use std::collections::HashSet;

use super::Inode;
use crate::types::Fid;

/// Holes are squeezed out once there are more of them than this and than inodes.
const HOLES_KEPT: usize = 4096;

#[derive(Default)]
pub(super) struct Inodes {
    /// The fid of each slot, increasing: a binary search over eight bytes a slot stays in
    /// the cache where one over the slots would not.
    fids: Vec<Fid>,
    slots: Vec<Option<Inode>>,
    holes: usize,
    /// Fids whose inode was changed, put in or taken out since `take_touched`.
    touched: HashSet<Fid>,
}

impl Inodes {
    pub(super) fn from_root(root: Inode) -> Inodes {
        Inodes {
            fids: vec![root.fid],
            slots: vec![Some(root)],
            holes: 0,
            touched: HashSet::new(),
        }
    }

    fn slot(&self, fid: Fid) -> Result<usize, usize> {
        let (Some(&first), Some(&last)) = (self.fids.first(), self.fids.last()) else {
            return Err(0);
        };
        if fid > last {
            return Err(self.fids.len());
        }
        if fid < first {
            return Err(0);
        }
        // The fids are distinct and increasing, so `fid` is at most `fid - first` slots in,
        // and exactly there while no fid below it is missing (fids are given out one after
        // another, and a removed inode keeps its slot until a squeeze). Look there first,
        // then back in doubling steps, and search only the bracket found: a listing of a
        // million files asks for each at random, and a search of the whole array costs
        // twenty reads that miss the cache.
        let guess = usize::try_from(fid - first)
            .map_or(self.fids.len() - 1, |g| g.min(self.fids.len() - 1));
        let (mut hi, mut step) = (guess + 1, 1);
        let lo = loop {
            let at = hi.saturating_sub(step);
            if at == 0 || self.fids[at] <= fid {
                break at;
            }
            hi = at + 1;
            step *= 2;
        };
        self.fids[lo..hi]
            .binary_search(&fid)
            .map(|i| lo + i)
            .map_err(|i| lo + i)
    }

    pub(super) fn get(&self, fid: &Fid) -> Option<&Inode> {
        self.slots[self.slot(*fid).ok()?].as_ref()
    }

    pub(super) fn get_mut(&mut self, fid: &Fid) -> Option<&mut Inode> {
        let at = self.slot(*fid).ok()?;
        let inode = self.slots[at].as_mut()?;
        self.touched.insert(*fid);
        Some(inode)
    }

    pub(super) fn contains_key(&self, fid: &Fid) -> bool {
        self.get(fid).is_some()
    }

    /// Puts `inode` under `fid`, returning the one it replaces.
    pub(super) fn insert(&mut self, fid: Fid, inode: Inode) -> Option<Inode> {
        self.touched.insert(fid);
        match self.slot(fid) {
            Ok(at) => {
                let old = self.slots[at].replace(inode);
                if old.is_none() {
                    self.holes -= 1;
                }
                old
            }
            Err(at) => {
                // Only out of order (never in a mount's own commits) does this move slots.
                self.fids.insert(at, fid);
                self.slots.insert(at, Some(inode));
                None
            }
        }
    }

    pub(super) fn remove(&mut self, fid: &Fid) -> Option<Inode> {
        let at = self.slot(*fid).ok()?;
        let old = self.slots[at].take()?;
        self.touched.insert(*fid);
        self.holes += 1;
        if self.holes > HOLES_KEPT && self.holes > self.len() {
            self.squeeze();
        }
        Some(old)
    }

    fn squeeze(&mut self) {
        let mut kept = self.slots.iter().map(Option::is_some);
        self.fids.retain(|_| kept.next() == Some(true));
        self.slots.retain(Option::is_some);
        self.holes = 0;
    }

    /// The fids touched since the last call, which starts the count again.
    pub(super) fn take_touched(&mut self) -> HashSet<Fid> {
        std::mem::take(&mut self.touched)
    }

    /// Counts `fids` as touched again (a snapshot that took them was not written).
    pub(super) fn touch(&mut self, fids: impl IntoIterator<Item = Fid>) {
        self.touched.extend(fids);
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.holes
    }

    pub(super) fn reserve(&mut self, more: usize) {
        self.fids.reserve(more);
        self.slots.reserve(more);
    }

    /// Every inode, in fid order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Inode> {
        self.slots.iter().flatten()
    }

    pub(super) fn max_fid(&self) -> Option<Fid> {
        let last = self.slots.iter().rposition(Option::is_some)?;
        Some(self.fids[last])
    }
}

impl std::ops::Index<&Fid> for Inodes {
    type Output = Inode;

    fn index(&self, fid: &Fid) -> &Inode {
        self.get(fid).expect("the inode exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::Namespace;

    fn inode(fid: Fid) -> Inode {
        let mut i = Namespace::new().get(crate::types::ROOT).unwrap().clone();
        i.fid = fid;
        i
    }

    /// Random inserts (mostly increasing, some out of order), replacements and removals,
    /// enough to squeeze the holes out several times, must match a plain map.
    #[test]
    fn inodes_behave_as_a_map_through_holes_and_squeezes() {
        let mut map = std::collections::BTreeMap::new();
        let mut inodes = Inodes::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut top, mut squeezed) = (10, 0);
        for step in 0..60_000 {
            let r = next();
            let fid = match r % 10 {
                0 => r % (top + 20),
                _ => {
                    top += 1;
                    top
                }
            };
            // A third of the way removing most of what there is, so holes outnumber inodes.
            let removing = if (20_000..40_000).contains(&step) {
                9
            } else {
                3
            };
            if r % 10 < removing {
                // Mostly an inode that exists (the first at or after a random fid).
                let at = next() % (top + 1);
                let gone = map.range(at..).next().map_or(at, |(f, _)| *f);
                let holes = inodes.holes;
                assert_eq!(inodes.remove(&gone).map(|i| i.fid), map.remove(&gone));
                squeezed += usize::from(inodes.holes < holes);
            } else {
                assert_eq!(
                    inodes.insert(fid, inode(fid)).map(|i| i.fid),
                    map.insert(fid, fid)
                );
            }
            if step % 1000 == 0 {
                assert_eq!(inodes.len(), map.len());
                let have: Vec<Fid> = inodes.values().map(|i| i.fid).collect();
                assert_eq!(have, map.keys().copied().collect::<Vec<_>>());
                assert_eq!(inodes.max_fid(), map.keys().next_back().copied());
                for probe in 0..top + 5 {
                    assert_eq!(inodes.contains_key(&probe), map.contains_key(&probe));
                }
            }
        }
        assert!(squeezed > 0, "the holes were never squeezed out");
        assert!(inodes.holes <= HOLES_KEPT.max(inodes.len()));
    }
}
