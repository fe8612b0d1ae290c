//! The backing tree as it stands on disk, which trails the namespace while entries wait for
//! their log sync: where each file's backing file is now.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::store::Layout;
use crate::types::{Fid, Kind, ROOT};

/// One name in the backing tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) dir: Fid,
    pub(super) name: Vec<u8>,
    pub(super) kind: Kind,
}

/// fid → its name in the backing tree; the root (`root/`) is not in it.
#[derive(Default)]
pub(super) struct Tree(HashMap<Fid, Placed>);

impl Tree {
    pub(super) fn get(&self, fid: Fid) -> Option<&Placed> {
        self.0.get(&fid)
    }

    pub(super) fn place(&mut self, fid: Fid, dir: Fid, name: &[u8], kind: Kind) {
        let placed = Placed {
            dir,
            name: name.to_vec(),
            kind,
        };
        self.0.insert(fid, placed);
    }

    pub(super) fn remove(&mut self, fid: Fid) -> Option<Placed> {
        self.0.remove(&fid)
    }

    pub(super) fn contains(&self, fid: Fid) -> bool {
        self.0.contains_key(&fid)
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
