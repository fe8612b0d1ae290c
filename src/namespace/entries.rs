//! Directory entries: which file each name in a directory names, kept without a second copy
//! of the name. An entry is keyed by its directory, a hash of its name and the file; the
//! name itself is the inode's (its first name or one of its links), and a lookup compares
//! it there. At a million files this halves what the names cost.
//!
//! A directory lists in the order of its names' hashes, as ext4's hashed directories do;
//! the order is the same at every mount (the hash's key is fixed).

use std::collections::BTreeMap;
use std::hash::Hasher;

use crate::types::Fid;

/// The hash that orders a directory's entries. Two names of one directory may share it:
/// lookups compare names, and an entry counts the names of its file that share it.
pub(super) fn hash(name: &[u8]) -> u64 {
    // Made by `new`, every DefaultHasher has the same keys.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(name);
    #[cfg(test)]
    return h.finish() & COLLIDE.with(|mask| mask.get());
    #[cfg(not(test))]
    h.finish()
}

#[cfg(test)]
thread_local! {
    /// Unit tests narrow the hash (a mask of 1: two values) so that names collide often.
    pub(super) static COLLIDE: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

#[derive(Default)]
pub(super) struct Entries {
    /// (directory, hash of a name, file) → how many of the file's names in the directory
    /// have that hash (1 unless two of them collide).
    map: BTreeMap<(Fid, u64, Fid), u32>,
    /// How many names in all.
    names: usize,
}

impl Entries {
    /// Built from every name's key, sorted (a snapshot's names, built in one pass).
    pub(super) fn from_sorted(keys: Vec<(Fid, u64, Fid)>) -> Entries {
        let names = keys.len();
        let mut counted: Vec<((Fid, u64, Fid), u32)> = Vec::with_capacity(keys.len());
        for key in keys {
            match counted.last_mut() {
                Some((last, n)) if *last == key => *n += 1,
                _ => counted.push((key, 1)),
            }
        }
        Entries {
            map: counted.into_iter().collect(),
            names,
        }
    }

    /// The files that may be named `hash` in `dir`: the caller compares their names.
    pub(super) fn candidates(&self, dir: Fid, hash: u64) -> impl Iterator<Item = Fid> + '_ {
        self.map
            .range((dir, hash, 0)..=(dir, hash, Fid::MAX))
            .map(|((_, _, fid), _)| *fid)
    }

    /// Every entry of `dir`: its hash and file, in hash order.
    pub(super) fn of_dir(&self, dir: Fid) -> impl Iterator<Item = (u64, Fid)> + '_ {
        self.of_dir_counted(dir).map(|(h, fid, _)| (h, fid))
    }

    /// Every entry of `dir` with how many of the file's names it stands for, in hash order.
    pub(super) fn of_dir_counted(&self, dir: Fid) -> impl Iterator<Item = (u64, Fid, u32)> + '_ {
        self.map
            .range((dir, 0, 0)..=(dir, u64::MAX, Fid::MAX))
            .map(|((_, h, fid), n)| (*h, *fid, *n))
    }

    pub(super) fn insert(&mut self, dir: Fid, name: &[u8], fid: Fid) {
        *self.map.entry((dir, hash(name), fid)).or_insert(0) += 1;
        self.names += 1;
    }

    pub(super) fn remove(&mut self, dir: Fid, name: &[u8], fid: Fid) {
        let key = (dir, hash(name), fid);
        if let Some(n) = self.map.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.map.remove(&key);
            }
            self.names -= 1;
        }
    }

    /// How many names are in the directories `dir` says yes to.
    pub(super) fn named_in(&self, dir: impl Fn(Fid) -> bool) -> usize {
        let counts = self.map.iter().filter(|((d, _, _), _)| dir(*d));
        counts.map(|(_, n)| *n as usize).sum()
    }

    /// How many names in all.
    pub(super) fn len(&self) -> usize {
        self.names
    }
}
