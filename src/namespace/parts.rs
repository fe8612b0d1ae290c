//! The parts of an inode kept small: where its bytes stand in the log (`Content`), and what
//! few files have (`Extras`: further names, a symlink's target, extended attributes), so that
//! a million inodes of records cost 144 bytes each. `Links` is a placement's further names
//! (the backing tree's, `pipeline::tree`).

use std::sync::Arc;

use super::ContentLoc;
use crate::types::{no_xattrs, Fid, Xattrs};
/// Where a file's current bytes stand in the log, or nowhere: an `Option<ContentLoc>` in
/// 16 bytes rather than 24 (no entry starts at offset u64::MAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Content(ContentLoc);

const NOWHERE: ContentLoc = ContentLoc {
    segment: 0,
    offset: u64::MAX,
};

impl Content {
    pub fn get(self) -> Option<ContentLoc> {
        (self.0 != NOWHERE).then_some(self.0)
    }
}

impl From<Option<ContentLoc>> for Content {
    fn from(loc: Option<ContentLoc>) -> Content {
        Content(loc.unwrap_or(NOWHERE))
    }
}

/// What few files have: further names (hard links, oldest first; when the first name goes,
/// the oldest of these takes its place), a symlink's target (small, so kept in memory; a
/// file's bytes never are) and extended attributes. One pointer in each inode, allocated
/// only for a file that has any of them.
#[derive(Clone, Debug, Default)]
pub struct Extras(Option<Box<ExtraParts>>);

#[derive(Clone, Debug)]
struct ExtraParts {
    links: Vec<Link>,
    target: Option<Arc<Vec<u8>>>,
    xattrs: Xattrs,
}

impl Extras {
    pub fn links(&self) -> &[Link] {
        self.0.as_ref().map_or(&[], |e| &e.links)
    }

    pub fn target(&self) -> Option<&Arc<Vec<u8>>> {
        self.0.as_ref()?.target.as_ref()
    }

    pub fn xattrs(&self) -> &Xattrs {
        static NONE: std::sync::OnceLock<Xattrs> = std::sync::OnceLock::new();
        match &self.0 {
            Some(e) => &e.xattrs,
            None => NONE.get_or_init(no_xattrs),
        }
    }

    pub(crate) fn set_target(&mut self, target: Option<Arc<Vec<u8>>>) {
        self.change(|e| e.target = target);
    }

    pub(crate) fn set_xattrs(&mut self, xattrs: Xattrs) {
        self.change(|e| e.xattrs = xattrs);
    }

    pub(super) fn push_link(&mut self, link: Link) {
        self.change(|e| e.links.push(link));
    }

    /// The oldest further name, taken out. None if there is none.
    pub(super) fn take_oldest_link(&mut self) -> Option<Link> {
        let mut oldest = None;
        self.change(|e| oldest = (!e.links.is_empty()).then(|| e.links.remove(0)));
        oldest
    }

    pub(super) fn links_mut(&mut self, change: impl FnOnce(&mut Vec<Link>)) {
        self.change(|e| change(&mut e.links));
    }

    /// Changes the parts, then keeps the allocation only if any part holds something.
    fn change(&mut self, change: impl FnOnce(&mut ExtraParts)) {
        let mut parts = self.0.take().unwrap_or_else(|| {
            Box::new(ExtraParts {
                links: Vec::new(),
                target: None,
                xattrs: no_xattrs(),
            })
        });
        change(&mut parts);
        if !parts.links.is_empty() || parts.target.is_some() || !parts.xattrs.is_empty() {
            self.0 = Some(parts);
        }
    }

    pub(super) fn new(links: Vec<Link>, target: Option<Arc<Vec<u8>>>, xattrs: Xattrs) -> Extras {
        let mut extras = Extras::default();
        extras.change(|e| {
            *e = ExtraParts {
                links,
                target,
                xattrs,
            }
        });
        extras
    }
}

/// A file's further names: none for nearly every file, so none costs one pointer, not an
/// empty Vec's three words in each of a million inodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
// A Box<Vec>: one word in the inode where a Vec would take three.
#[allow(clippy::box_collection)]
pub struct Links(Option<Box<Vec<Link>>>);

/// A further name: the directory, and the name in it.
pub type Link = (Fid, Vec<u8>);

impl Links {
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.len())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (Fid, Vec<u8>)> {
        self.0.as_deref().map_or([].iter(), |l| l.iter())
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, (Fid, Vec<u8>)> {
        self.0
            .as_deref_mut()
            .map_or([].iter_mut(), |l| l.iter_mut())
    }

    pub fn push(&mut self, link: (Fid, Vec<u8>)) {
        self.0.get_or_insert_with(Default::default).push(link);
    }

    /// The oldest further name, taken out. None if there is none.
    pub fn take_oldest(&mut self) -> Option<(Fid, Vec<u8>)> {
        let links = self.0.as_mut()?;
        let oldest = links.remove(0);
        if links.is_empty() {
            self.0 = None;
        }
        Some(oldest)
    }

    pub fn retain(&mut self, keep: impl FnMut(&(Fid, Vec<u8>)) -> bool) {
        if let Some(links) = &mut self.0 {
            links.retain(keep);
            if links.is_empty() {
                self.0 = None;
            }
        }
    }

    pub fn to_vec(&self) -> Vec<(Fid, Vec<u8>)> {
        self.iter().cloned().collect()
    }
}

impl From<Vec<(Fid, Vec<u8>)>> for Links {
    fn from(links: Vec<(Fid, Vec<u8>)>) -> Links {
        Links((!links.is_empty()).then(|| Box::new(links)))
    }
}
