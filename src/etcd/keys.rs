//! The keys of a batch of a mount's commits (`replica.rs`): what its transaction puts,
//! deletes and compares, and whether that fits one transaction of etcd's.

use std::collections::{BTreeMap, BTreeSet};

use super::{MAX_TXN_BYTES, MAX_TXN_OPS};
use crate::types::Fid;

/// The keys of some entries: puts, and deletes of names, of nodes and of pieces.
#[derive(Default)]
pub(super) struct Keys {
    pub(super) puts: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Keys deleted with the transaction: names gone, and the `d/` of a file now in pieces.
    pub(super) keys_gone: BTreeSet<Vec<u8>>,
    pub(super) nodes_gone: BTreeSet<Vec<u8>>,
    /// The bytes etcd holds after them, by local fid (None: the file is gone).
    pub(super) shipped: Vec<(Fid, Option<Held>)>,
    /// Nodes made here that etcd has not had: local fid, etcd fid.
    pub(super) new_nodes: Vec<(Fid, Fid)>,
    /// The `i/` keys put of nodes etcd has had: each must still be there (another mount
    /// may have removed the node).
    pub(super) existing: BTreeSet<Vec<u8>>,
    /// The `i/` keys put of directories: whatever another mount put there since, this one's
    /// attributes go over it (the last commit's), so their revision is not compared; every
    /// save in a directory changes its times, and both mounts would keep refusing each other.
    pub(super) dir_infos: BTreeSet<Vec<u8>>,
    /// New pieces of files saved in pieces: put before the transaction (each is too large
    /// to go with others).
    pub(super) pieces: Vec<(Vec<u8>, Vec<u8>)>,
    /// The pieces each `i/` put lists, by local fid: the transaction holds only if they are
    /// all there (another mount's save of the file deletes the pieces it does not list).
    pub(super) listed: Vec<(Fid, Vec<Vec<u8>>)>,
    /// Ranges of keys deleted with the transaction: the other pieces of files it saves
    /// (a version before, or a save cut short), uncompared.
    pub(super) ranges_gone: Vec<(Vec<u8>, Vec<u8>)>,
    /// The pieces of the nodes gone, deleted with them.
    pub(super) pieces_gone: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The ranges of names that must hold none for `deletes` to go in: under each node they
/// remove (a directory has its names under `n/<fid>/`), all but the names they remove too.
/// Checked by etcd itself, so that a directory removed here while another mount made a
/// name in it never leaves that name leading out of the tree.
pub(super) fn emptied(deletes: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for fid in deletes.iter().filter_map(|k| k.strip_prefix(b"i/")) {
        let start = [b"n/", fid, b"/"].concat();
        let end = [b"n/", fid, b"0"].concat();
        let mut gone: Vec<&Vec<u8>> = deletes.iter().filter(|k| k.starts_with(&start)).collect();
        gone.sort();
        let mut from = start;
        for name in gone {
            out.push((from, name.clone()));
            // Names hold no NUL: the next key after this name.
            from = [name.as_slice(), b"\0"].concat();
        }
        out.push((from, end));
    }
    out
}

impl Keys {
    pub(super) fn ops(&self) -> usize {
        self.puts.len() + self.keys_gone.len() + self.ranges_gone.len()
    }
    /// etcd takes at most `MAX_TXN_OPS` compares as it does operations: one per key put or
    /// deleted, one per node that must still be there, one per range that must be empty.
    pub(super) fn compares(&self, with_nodes_gone: bool) -> usize {
        let mut deletes: Vec<Vec<u8>> = self.keys_gone.iter().cloned().collect();
        if with_nodes_gone {
            deletes.extend(self.nodes_gone.iter().cloned());
        }
        self.puts.len()
            + deletes.len()
            + self.existing.len()
            + self.listed.iter().map(|(_, l)| l.len()).sum::<usize>()
            + emptied(&deletes).len()
    }
    /// Each key is also compared and, when the compare fails, read.
    pub(super) fn bytes(&self) -> usize {
        let p: usize = self
            .puts
            .iter()
            .map(|(k, v)| 3 * k.len() + v.len() + 96)
            .sum();
        p + self
            .keys_gone
            .iter()
            .map(|k| 3 * k.len() + 96)
            .sum::<usize>()
    }
    pub(super) fn fits(&self) -> bool {
        self.ops() + self.nodes_gone.len() + self.pieces_gone.len() <= MAX_TXN_OPS
            && self.compares(true) <= MAX_TXN_OPS
            && self.bytes() <= MAX_TXN_BYTES
    }
    /// `fits`, for a part of a batch too large for one transaction (its nodes gone later).
    pub(super) fn part_fits(&self) -> bool {
        self.ops() <= MAX_TXN_OPS
            && self.compares(false) <= MAX_TXN_OPS
            && self.bytes() <= MAX_TXN_BYTES
    }
}

/// A file's bytes as etcd holds them: their size and checksum, and their pieces' ids when
/// they are in pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) size: u64,
    pub(super) crc: u32,
    pub(super) pieces: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_directory_must_hold_no_name_but_those_removed_with_it() {
        let k = |s: &str| s.as_bytes().to_vec();
        let d = "000000000000000d";
        let deletes = vec![
            k(&format!("n/{d}/b")),
            k(&format!("n/{d}/a")),
            k(&format!("i/{d}")),
            k("n/0000000000000001/dir"),
        ];
        let ranges = emptied(&deletes);
        let want = [
            (format!("n/{d}/"), format!("n/{d}/a")),
            (format!("n/{d}/a\0"), format!("n/{d}/b")),
            (format!("n/{d}/b\0"), format!("n/{d}0")),
        ];
        let want: Vec<_> = want.iter().map(|(a, b)| (k(a), k(b))).collect();
        assert_eq!(ranges, want);
        let mut keys = Keys::default();
        for i in 0..64 {
            keys.puts.insert(k(&format!("d/{i:016x}")), Vec::new());
            keys.puts.insert(k(&format!("i/{i:016x}")), Vec::new());
        }
        assert!(keys.ops() <= MAX_TXN_OPS && keys.bytes() <= MAX_TXN_BYTES);
        assert!(keys.fits());
        // Saves over files etcd has: a compare more each, past what one transaction takes.
        keys.existing = keys
            .puts
            .keys()
            .filter(|k| k.starts_with(b"i/"))
            .cloned()
            .collect();
        assert!(!keys.fits());
    }
}
