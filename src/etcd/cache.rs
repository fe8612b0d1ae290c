//! Etcd's nodes made in a mount's cache (`follow.rs`, `converge.rs`): a node made at its
//! name, beside the node there if any and moved over it (a reader sees one or the other);
//! a node's bytes and attributes as etcd says; and the temporary names a make cut short by
//! a local commit leaves, removed once the cache shows etcd's state.

use std::collections::HashMap;

use super::follow::{Follower, Forget};
use super::layout::{self, Node};
use crate::error::Result;
use crate::fs::{RecordFs, SetAttr};
use crate::types::{Fid, Kind};

impl Follower {
    /// Makes etcd node `fid` (its `i/` value, its bytes in `data`) at `name` in `dir`,
    /// beside the node `here` if any.
    pub(super) fn make_node(
        &mut self,
        (dir, name): (Fid, &[u8]),
        fid: Fid,
        value: &[u8],
        data: &HashMap<Vec<u8>, Vec<u8>>,
        here: Option<Fid>,
    ) -> Result<()> {
        let fs = self.fs.clone();
        let node = node_of(fid, value, data, None)?;
        let a = node.attrs;
        let (ino, t) = self.beside((dir, name), here, None, |name| match node.kind {
            Kind::Dir => fs.mkdir(dir, name, a.mode, a.uid, a.gid),
            Kind::Symlink => fs.symlink(dir, name, &node.bytes, a.uid, a.gid),
            Kind::File => fs.create_with(dir, name, a.mode, node.bytes.clone()),
        })?;
        fs.wait(t)?;
        self.shared.fids.lock().insert(fid, ino);
        set_attributes(&fs, ino, &node)
    }

    /// Makes a name with `make` at `name` in `dir`, or, when `here` holds another node,
    /// beside it and then moved over it (readers see the old node or the new, never none).
    /// `linking`: the node `make` gives a further name, if it does.
    pub(super) fn beside(
        &mut self,
        (dir, name): (Fid, &[u8]),
        here: Option<Fid>,
        linking: Option<Fid>,
        make: impl Fn(&[u8]) -> Result<(crate::fs::Stat, crate::fs::Ticket)>,
    ) -> Result<(Fid, crate::fs::Ticket)> {
        if here.is_none() {
            let (stat, t) = make(name)?;
            return Ok((stat.ino, t));
        }
        let temp = incoming_name();
        // Left by an attempt cut short (a local commit came first: EINPROGRESS): moved on
        // when it is the node to link (it may have no other name), else removed.
        if let Ok(left) = self.fs.lookup(dir, &temp) {
            if Some(left.ino) == linking {
                let t = self.fs.rename(dir, &temp, dir, name, 0)?;
                self.incoming.remove(&dir);
                return Ok((left.ino, t));
            }
            self.fs.wait(self.fs.unlink(dir, &temp)?)?;
        }
        self.incoming.insert(dir);
        let (stat, t) = make(&temp)?;
        self.fs.wait(t)?;
        let t = self.fs.rename(dir, &temp, dir, name, 0)?;
        self.incoming.remove(&dir);
        Ok((stat.ino, t))
    }

    /// Removes what `beside` left in the cache, once every name shows what etcd holds (no
    /// key is left for later): a temporary name no one moved on is then a name etcd does
    /// not have. A directory where a local commit comes first is kept for the next time.
    pub(super) fn sweep(&mut self) -> Result<()> {
        if self.incoming.is_empty() || !self.shared.seen.lock().dirty.is_empty() {
            return Ok(());
        }
        let temp = incoming_name();
        let mut forget = Forget::default();
        for dir in std::mem::take(&mut self.incoming) {
            let left = self
                .fs
                .pipeline()
                .inode(dir)
                .and_then(|_| self.fs.lookup(dir, &temp).ok());
            let Some(left) = left else { continue };
            let t = self.fs.unlink(dir, &temp).and_then(|t| self.fs.wait(t));
            match t {
                Ok(()) => {
                    forget.names.push((dir, temp.clone()));
                    forget.inodes.push(left.ino);
                }
                Err(e) if e.errno == libc::EINPROGRESS => {
                    self.incoming.insert(dir);
                }
                Err(e) => return Err(e),
            }
        }
        forget.tell(&self.fs);
        Ok(())
    }

    /// A node's bytes when they changed (not one `made` in this revision: it has them),
    /// then its attributes.
    pub(super) fn refresh(
        &self,
        fid: Fid,
        l: Fid,
        info: &[u8],
        data: &HashMap<Vec<u8>, Vec<u8>>,
        made: bool,
        forget: &mut Forget,
    ) -> Result<()> {
        let fs = &self.fs;
        let node = node_of(fid, info, data, Some((fs, l)))?;
        if node.kind == Kind::File && !made && brings_bytes(fid, info, data) {
            let (fh, t) = fs.open(l, libc::O_WRONLY | libc::O_TRUNC)?;
            let saved = fs
                .wait(t)
                .and_then(|_| fs.write(fh, 0, &node.bytes))
                .and_then(|_| fs.flush(fh));
            fs.release(fh);
            fs.wait(saved?)?;
        }
        forget.inodes.push(l);
        set_attributes(fs, l, &node)
    }
}

/// The name `beside` makes a node under before moving it over the name it is for (a user's
/// own file of that name, in a directory the follower changes, would be taken for one).
fn incoming_name() -> Vec<u8> {
    format!(".recordfs-incoming.{}", std::process::id()).into_bytes()
}

/// Whether `data` holds the bytes the `i/` value `info` says (its `d/` key, or every piece
/// it lists): they changed.
fn brings_bytes(fid: Fid, info: &[u8], data: &HashMap<Vec<u8>, Vec<u8>>) -> bool {
    let keys = layout::bytes_keys(fid, info);
    !keys.is_empty() && keys.iter().all(|k| data.contains_key(k))
}

/// The node an `i/` value describes, its bytes from `data` (this revision's `d/` keys, or
/// the pieces a catch-up read), else (a node the cache has) from the cache.
fn node_of(
    fid: Fid,
    info: &[u8],
    data: &HashMap<Vec<u8>, Vec<u8>>,
    cached: Option<(&RecordFs, Fid)>,
) -> Result<Node> {
    let key = layout::info_key(fid);
    if !brings_bytes(fid, info, data) {
        if let Some((fs, l)) = cached {
            let have = match fs.getattr(l, None)?.kind {
                Kind::File => Some(fs.read_whole(l)?),
                Kind::Symlink => Some(fs.readlink(l)?),
                Kind::Dir => None,
            };
            if let Some(have) = have {
                return layout::node_holding(fid, &key, info, have);
            }
        }
    }
    layout::node(fid, &key, info, &|k: &[u8]| data.get(k))
}

/// Gives the cache's file `l` the owner, mode, times and extended attributes `node` says.
pub(super) fn set_attributes(fs: &RecordFs, l: Fid, node: &Node) -> Result<()> {
    let a = &node.attrs;
    let want: HashMap<&[u8], &[u8]> = node
        .xattrs
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let listed = fs.listxattr(l)?;
    for name in listed.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !want.contains_key(name) {
            fs.wait(fs.setxattr(l, name, None, 0)?)?;
        }
    }
    for (k, v) in &want {
        if fs.getxattr(l, k).ok().as_deref() != Some(*v) {
            fs.wait(fs.setxattr(l, k, Some(v), 0)?)?;
        }
    }
    let set = SetAttr {
        mode: (node.kind != Kind::Symlink).then_some(a.mode),
        uid: Some(a.uid),
        gid: Some(a.gid),
        size: None,
        atime: Some(a.atime),
        mtime: Some(a.mtime),
    };
    fs.wait(fs.setattr(l, None, set)?.1)
}
