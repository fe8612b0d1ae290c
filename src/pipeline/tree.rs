//! The backing tree as it stands on disk, which trails the namespace while entries wait for
//! their log sync: where each file's backing file is now.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::store::Layout;
use crate::types::{Fid, Kind, ROOT};

/// Where a file is in the backing tree: its first name, and a file's or symlink's further names
/// (hard links), each of which holds its own copy of the bytes (FORMAT.md, "The backing tree").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) dir: Fid,
    pub(super) name: Vec<u8>,
    pub(super) kind: Kind,
    pub(super) links: Vec<(Fid, Vec<u8>)>,
    /// The first name's backing file was written by this process, or read and found to hold
    /// the log's bytes: it need not be checked again (`Pipeline::version`).
    pub(super) verified: bool,
}

impl Placed {
    pub(super) fn names(&self) -> impl Iterator<Item = (Fid, &[u8])> {
        let further = self.links.iter().map(|(d, n)| (*d, n.as_slice()));
        std::iter::once((self.dir, self.name.as_slice())).chain(further)
    }
}

/// fid → its names in the backing tree; the root (`root/`) is not in it. It changes as the
/// namespace does (the same names, the oldest further name taking the first's place when that
/// goes), one applied entry at a time. Boxed, as the namespace's inodes are: a hash table
/// keeps spare slots, and at a million files 72-byte slots cost more than boxes.
#[derive(Default)]
pub(super) struct Tree(HashMap<Fid, Box<Placed>>);

impl Tree {
    /// An empty tree with room for `files` files (a mount places them all at once).
    pub(super) fn with_capacity(files: usize) -> Tree {
        Tree(HashMap::with_capacity(files))
    }

    pub(super) fn get(&self, fid: Fid) -> Option<&Placed> {
        self.0.get(&fid).map(|p| &**p)
    }

    /// A file new to the tree, with one name.
    pub(super) fn place(&mut self, fid: Fid, dir: Fid, name: &[u8], kind: Kind) {
        let placed = Placed {
            dir,
            name: name.to_vec(),
            kind,
            links: Vec::new(),
            verified: false,
        };
        self.0.insert(fid, Box::new(placed));
    }

    /// `fid`'s first backing file holds the log's bytes.
    pub(super) fn set_verified(&mut self, fid: Fid) {
        if let Some(p) = self.0.get_mut(&fid) {
            p.verified = true;
        }
    }

    pub(super) fn add_link(&mut self, fid: Fid, dir: Fid, name: &[u8]) {
        if let Some(p) = self.0.get_mut(&fid) {
            p.links.push((dir, name.to_vec()));
        }
    }

    /// `fid` loses the name `at`; the file leaves the tree with its last name.
    pub(super) fn take_name(&mut self, fid: Fid, at: (Fid, &[u8])) {
        let Some(p) = self.0.get_mut(&fid) else {
            return;
        };
        if (p.dir, p.name.as_slice()) != at {
            p.links.retain(|(d, n)| (*d, n.as_slice()) != at);
        } else if p.links.is_empty() {
            self.0.remove(&fid);
        } else {
            // The copy under the next name was never read: it is checked at its first read.
            (p.dir, p.name) = p.links.remove(0);
            p.verified = false;
        }
    }

    /// The name `from` of `fid` becomes `to`.
    pub(super) fn rename(&mut self, fid: Fid, from: (Fid, &[u8]), (dir, name): (Fid, &[u8])) {
        let Some(p) = self.0.get_mut(&fid) else {
            return;
        };
        if (p.dir, p.name.as_slice()) == from {
            (p.dir, p.name) = (dir, name.to_vec());
        } else if let Some(l) = p.links.iter_mut().find(|(d, n)| (*d, n.as_slice()) == from) {
            *l = (dir, name.to_vec());
        }
    }

    pub(super) fn contains(&self, fid: Fid) -> bool {
        self.0.contains_key(&fid)
    }

    /// The paths of every name of `fid`, its first first.
    pub(super) fn paths(&self, layout: &Layout, fid: Fid) -> Vec<PathBuf> {
        let Some(p) = self.0.get(&fid) else {
            return Vec::new();
        };
        p.names()
            .filter_map(|(dir, name)| self.path_in(layout, dir, name))
            .collect()
    }

    /// The path of `fid` in the backing tree (`root/` for the root), found by walking up its
    /// directories; None if it has no backing file.
    pub(super) fn path(&self, layout: &Layout, fid: Fid) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut at = fid;
        while at != ROOT {
            // Every step goes to a directory placed before: a walk longer than the tree is a
            // circle, which the namespace never makes.
            if names.len() > self.0.len() {
                return None;
            }
            let p = self.0.get(&at)?;
            names.push(&p.name);
            at = p.dir;
        }
        let mut path = layout.root();
        for name in names.iter().rev() {
            path.push(std::ffi::OsStr::from_bytes(name));
        }
        Some(path)
    }

    /// The path a new name `name` in directory `dir` has in the backing tree.
    pub(super) fn path_in(&self, layout: &Layout, dir: Fid, name: &[u8]) -> Option<PathBuf> {
        let mut path = self.path(layout, dir)?;
        path.push(std::ffi::OsStr::from_bytes(name));
        Some(path)
    }
}
