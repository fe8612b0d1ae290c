//! The backing tree as it stands on disk, which trails the namespace while entries wait for
//! their log sync: where each file's backing file is now.
//!
//! Once the apply thread has caught up, the backing tree holds exactly the namespace's names,
//! so it is kept as its differences from the namespace: only the files that a committed but
//! unapplied entry named, renamed, linked or removed have a placement of their own here. A
//! store of a million files costs no second copy of every name.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::log::Op;
use crate::namespace::{Links, NameBytes, Namespace};
use crate::store::Layout;
use crate::types::{Fid, Kind, ROOT};

/// Where a file is in the backing tree: its first name, and a file's or symlink's further names
/// (hard links), each of which holds its own copy of the bytes (FORMAT.md, "The backing tree").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) dir: Fid,
    pub(super) name: Vec<u8>,
    pub(super) kind: Kind,
    pub(super) links: Links,
}

impl Placed {
    pub(super) fn names(&self) -> impl Iterator<Item = (Fid, &[u8])> {
        let further = self.links.iter().map(|(d, n)| (*d, n.as_slice()));
        std::iter::once((self.dir, self.name.as_slice())).chain(further)
    }

    /// Where the namespace places `fid` (the root, `root/` itself, is not placed).
    fn in_namespace(ns: &Namespace, fid: Fid) -> Option<Placed> {
        let inode = ns.get(fid).filter(|_| fid != ROOT)?;
        Some(Placed {
            dir: inode.parent,
            name: inode.name.to_vec(),
            kind: inode.kind,
            links: inode.extras.links().to_vec().into(),
        })
    }
}

/// What the backing tree holds that the namespace does not say; the root (`root/`) is not in
/// it. It changes one applied entry at a time, as the namespace did (the same names, the
/// oldest further name taking the first's place when that goes).
#[derive(Default)]
pub(super) struct Tree {
    /// fid → where it is on disk (None: nowhere), for each file whose placement differs from
    /// the namespace's: an entry that changes names records the old placement before the
    /// namespace takes it (`Tree::before`), and applying it brings the two together again.
    differs: HashMap<Fid, Option<Placed>>,
    /// The files whose first backing file was written by this process, or read and found to
    /// hold the log's bytes: they need not be checked again (`Pipeline::version`).
    verified: HashSet<Fid>,
}

impl Tree {
    /// The files whose names `op` changes keep, here, the placement they have on disk now;
    /// called before the namespace applies it.
    pub(super) fn before(&mut self, ns: &Namespace, op: &Op) {
        let fids = match op {
            // A SET names a file only when it makes it.
            Op::Set { fid, .. } if ns.get(*fid).is_some() => return,
            Op::Set { fid, .. } | Op::Delete { fid, .. } | Op::Link { fid, .. } => [*fid, ROOT],
            Op::Rename { fid, replaced, .. } => [*fid, replaced.unwrap_or(ROOT)],
            Op::Patch { .. } | Op::Attr { .. } | Op::Xattr { .. } | Op::Checkpoint { .. } => return,
        };
        for fid in fids.into_iter().filter(|f| *f != ROOT) {
            self.differs
                .entry(fid)
                .or_insert_with(|| Placed::in_namespace(ns, fid));
        }
    }

    /// How many files' placements differ from the namespace's.
    pub(super) fn differences(&self) -> usize {
        self.differs.len()
    }
}

/// The backing tree read: the namespace's names where it holds none of its own.
pub(super) struct View<'a> {
    pub(super) ns: &'a Namespace,
    pub(super) tree: &'a Tree,
}

impl View<'_> {
    pub(super) fn get(&self, fid: Fid) -> Option<Placed> {
        match self.tree.differs.get(&fid) {
            Some(p) => p.clone(),
            None => Placed::in_namespace(self.ns, fid),
        }
    }

    pub(super) fn contains(&self, fid: Fid) -> bool {
        match self.tree.differs.get(&fid) {
            Some(p) => p.is_some(),
            None => fid != ROOT && self.ns.get(fid).is_some(),
        }
    }

    pub(super) fn kind(&self, fid: Fid) -> Option<Kind> {
        match self.tree.differs.get(&fid) {
            Some(p) => p.as_ref().map(|p| p.kind),
            None => self.ns.get(fid).filter(|_| fid != ROOT).map(|i| i.kind),
        }
    }

    /// Whether `fid` is placed and its first backing file not yet known to hold the log's
    /// bytes.
    pub(super) fn unverified(&self, fid: Fid) -> bool {
        self.contains(fid) && !self.tree.verified.contains(&fid)
    }

    /// `fid`'s first name, borrowed from wherever it is kept.
    fn first(&self, fid: Fid) -> Option<(Fid, NameBytes<'_>)> {
        match self.tree.differs.get(&fid) {
            Some(p) => p.as_ref().map(|p| (p.dir, NameBytes::Slice(&p.name))),
            None => self
                .ns
                .get(fid)
                .filter(|_| fid != ROOT)
                .map(|i| (i.parent, i.name.bytes())),
        }
    }

    /// The paths of every name of `fid`, its first first.
    pub(super) fn paths(&self, layout: &Layout, fid: Fid) -> Vec<PathBuf> {
        let Some(p) = self.get(fid) else {
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
            if names.len() > self.ns.file_count() + self.tree.differs.len() {
                return None;
            }
            let (dir, name) = self.first(at)?;
            names.push(name);
            at = dir;
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

/// The backing tree changed by the apply thread, one applied entry at a time.
pub(super) struct Edit<'a> {
    pub(super) ns: &'a Namespace,
    pub(super) tree: &'a mut Tree,
}

impl Edit<'_> {
    pub(super) fn view(&self) -> View<'_> {
        View {
            ns: self.ns,
            tree: self.tree,
        }
    }

    /// Changes `fid`'s placement on disk; once it is the namespace's again, nothing of it is
    /// kept here.
    fn change(&mut self, fid: Fid, f: impl FnOnce(&mut Option<Placed>)) {
        let ns = Placed::in_namespace(self.ns, fid);
        let mut placed = match self.tree.differs.remove(&fid) {
            Some(own) => own,
            None => ns.clone(),
        };
        f(&mut placed);
        if placed.is_none() {
            self.tree.verified.remove(&fid);
        }
        if placed != ns {
            self.tree.differs.insert(fid, placed);
        }
    }

    /// A file new to the tree, with one name.
    pub(super) fn place(&mut self, fid: Fid, dir: Fid, name: &[u8], kind: Kind) {
        self.change(fid, |p| {
            *p = Some(Placed {
                dir,
                name: name.to_vec(),
                kind,
                links: Links::default(),
            })
        });
        self.tree.verified.remove(&fid);
    }

    /// `fid`'s first backing file holds the log's bytes.
    pub(super) fn set_verified(&mut self, fid: Fid) {
        if self.view().contains(fid) {
            self.tree.verified.insert(fid);
        }
    }

    pub(super) fn add_link(&mut self, fid: Fid, dir: Fid, name: &[u8]) {
        self.change(fid, |p| {
            if let Some(p) = p {
                p.links.push((dir, name.to_vec()));
            }
        });
    }

    /// `fid` loses the name `at`; the file leaves the tree with its last name.
    pub(super) fn take_name(&mut self, fid: Fid, at: (Fid, &[u8])) {
        let mut first_went = false;
        self.change(fid, |slot| {
            let Some(p) = slot else {
                return;
            };
            if (p.dir, p.name.as_slice()) != at {
                p.links.retain(|(d, n)| (*d, n.as_slice()) != at);
            } else if let Some(oldest) = p.links.take_oldest() {
                (p.dir, p.name) = oldest;
                first_went = true;
            } else {
                *slot = None;
            }
        });
        if first_went {
            // The copy under the next name was never read: it is checked at its first read.
            self.tree.verified.remove(&fid);
        }
    }

    /// The name `from` of `fid` becomes `to`.
    pub(super) fn rename(&mut self, fid: Fid, from: (Fid, &[u8]), (dir, name): (Fid, &[u8])) {
        self.change(fid, |p| {
            let Some(p) = p else {
                return;
            };
            if (p.dir, p.name.as_slice()) == from {
                (p.dir, p.name) = (dir, name.to_vec());
            } else if let Some(l) = p.links.iter_mut().find(|(d, n)| (*d, n.as_slice()) == from) {
                *l = (dir, name.to_vec());
            }
        });
    }
}
