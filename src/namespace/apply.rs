//! `apply`: one log entry changes the namespace, the same way for a live commit as for a
//! replay, and an entry that does not fit is refused.

use super::{time_of_millis, Applied, ContentLoc, Extras, Inode, Name, Namespace};
use crate::error::{err, Result};
use crate::log::{Entry, Op};
use crate::types::{no_xattrs, Fid, Kind, Seq, Time, ROOT};

impl Namespace {
    /// Applies one entry. An entry that does not fit the namespace (a rename of an unknown
    /// file, a sequence number out of order) is an error: during recovery it means the log is
    /// damaged; during a live commit it is a bug in the caller.
    pub fn apply(&mut self, entry: &Entry, loc: Option<ContentLoc>) -> Result<Applied> {
        if entry.seq <= self.last_seq {
            return Err(err!(
                EIO,
                "entry {} comes after entry {}",
                entry.seq,
                self.last_seq
            ));
        }
        let ts = time_of_millis(entry.ts);
        let mut applied = Applied::default();
        match &entry.op {
            Op::Set {
                fid,
                dir,
                name,
                kind,
                attrs,
                data,
            } => {
                self.check_dir(*dir)?;
                if *kind == Kind::Dir && !data.is_empty() {
                    return Err(err!(EIO, "entry {} gives a directory bytes", entry.seq));
                }
                let target = (*kind == Kind::Symlink).then(|| data.bytes.clone());
                match self.inodes.get_mut(fid) {
                    Some(inode) => {
                        let named = inode.names().any(|(d, n)| d == *dir && *n == **name);
                        if !named || inode.kind != *kind {
                            return Err(err!(
                                EIO,
                                "entry {} sets fid {fid} under a name or kind it does not have",
                                entry.seq
                            ));
                        }
                        inode.attrs = *attrs;
                        inode.size = data.len();
                        inode.dcrc = data.dcrc;
                        inode.extras.set_target(target);
                        inode.last_seq = entry.seq;
                        inode.content = loc.into();
                    }
                    None => {
                        if *fid <= ROOT {
                            return Err(err!(EIO, "entry {} names fid {fid}", entry.seq));
                        }
                        if self.entry(*dir, name).is_some() {
                            return Err(err!(
                                EIO,
                                "entry {} creates {:?}, which exists",
                                entry.seq,
                                String::from_utf8_lossy(name)
                            ));
                        }
                        self.entries.insert(*dir, name, *fid);
                        self.inodes.insert(
                            *fid,
                            Inode {
                                fid: *fid,
                                parent: *dir,
                                name: Name::new(name),
                                kind: *kind,
                                attrs: *attrs,
                                size: data.len(),
                                dcrc: data.dcrc,
                                last_seq: entry.seq,
                                content: loc.into(),
                                subdirs: 0,
                                extras: Extras::new(Vec::new(), target, no_xattrs()),
                            },
                        );
                        self.next_fid = self.next_fid.max(fid + 1);
                        self.count_subdir(*dir, *kind, 1);
                        self.touch_dir(*dir, ts);
                    }
                }
            }
            Op::Patch {
                fid,
                dir,
                name,
                attrs,
                len,
                dcrc,
                ..
            } => {
                let inode = self.known(*fid, entry.seq)?;
                let named = inode.names().any(|(d, n)| d == *dir && *n == **name);
                if !named || inode.kind != Kind::File {
                    return Err(err!(
                        EIO,
                        "entry {} patches fid {fid}, which is not a file of that name",
                        entry.seq
                    ));
                }
                inode.attrs = *attrs;
                inode.size = *len;
                inode.dcrc = *dcrc;
                inode.last_seq = entry.seq;
                // The log holds the change, not the whole: the bytes are the backing file's
                // (recovery replays the tail's patches onto it).
                inode.content = None.into();
            }
            Op::Attr { fid, attrs, .. } => {
                let inode = self.known(*fid, entry.seq)?;
                inode.attrs = *attrs;
                inode.last_seq = entry.seq;
            }
            Op::Delete { fid, dir, name } => {
                self.expect_entry(*dir, name, *fid, entry.seq)?;
                if self.list(*fid).next().is_some() {
                    return Err(err!(
                        EIO,
                        "entry {} removes directory {fid}, which is not empty",
                        entry.seq
                    ));
                }
                self.entries.remove(*dir, name, *fid);
                applied
                    .removed
                    .extend(self.take_name(*fid, (*dir, name), ts, entry.seq));
                self.touch_dir(*dir, ts);
            }
            Op::Rename {
                fid,
                dir,
                name,
                to_dir,
                to_name,
                replaced,
                exchange,
            } => {
                self.check_dir(*to_dir)?;
                self.expect_entry(*dir, name, *fid, entry.seq)?;
                let at_target = self.entry(*to_dir, to_name);
                if at_target != *replaced {
                    return Err(err!(
                        EIO,
                        "entry {} expects {:?} at the target, the namespace has {:?}",
                        entry.seq,
                        replaced,
                        at_target
                    ));
                }
                if *replaced == Some(*fid) {
                    // rename(2) between two names of one file does nothing, and logs nothing.
                    return Err(err!(EIO, "entry {} renames a file over itself", entry.seq));
                }
                let kind_of = |f: Fid| self.inodes.get(&f).map(|i| i.kind);
                let (kind, replaced_kind) = (kind_of(*fid), replaced.and_then(kind_of));
                let into_itself = |moved: Fid, kind: Option<Kind>, to: Fid| {
                    kind == Some(Kind::Dir) && self.is_within(to, moved)
                };
                let loops = into_itself(*fid, kind, *to_dir)
                    || (*exchange && replaced.is_some_and(|r| into_itself(r, replaced_kind, *dir)));
                let unfit = if loops {
                    Some("moves a directory into itself")
                } else if !*exchange && replaced_kind.is_some() {
                    match (kind, replaced_kind) {
                        (Some(Kind::Dir), Some(Kind::Dir)) => replaced
                            .is_some_and(|r| self.list(r).next().is_some())
                            .then_some("replaces a directory that is not empty"),
                        (Some(Kind::Dir), _) | (_, Some(Kind::Dir)) => {
                            Some("replaces a directory by a file, or a file by a directory")
                        }
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(why) = unfit {
                    return Err(err!(EIO, "entry {} {why}", entry.seq));
                }
                let kind = kind.expect("expect_entry found it");
                if *exchange {
                    let other = replaced
                        .ok_or_else(|| err!(EIO, "entry {} exchanges with nothing", entry.seq))?;
                    self.entries.remove(*dir, name, *fid);
                    self.entries.insert(*dir, name, other);
                    self.entries.remove(*to_dir, to_name, other);
                    self.entries.insert(*to_dir, to_name, *fid);
                    self.rename_inode(other, (*to_dir, to_name), (*dir, name), ts, entry.seq);
                    let other_kind = replaced_kind.expect("at the target");
                    self.count_subdir(*to_dir, other_kind, -1);
                    self.count_subdir(*dir, other_kind, 1);
                } else {
                    self.entries.remove(*dir, name, *fid);
                    if let Some(old) = replaced {
                        let target = (*to_dir, to_name.as_slice());
                        self.entries.remove(*to_dir, to_name, *old);
                        applied
                            .removed
                            .extend(self.take_name(*old, target, ts, entry.seq));
                    }
                    self.entries.insert(*to_dir, to_name, *fid);
                }
                self.count_subdir(*dir, kind, -1);
                self.count_subdir(*to_dir, kind, 1);
                self.rename_inode(*fid, (*dir, name), (*to_dir, to_name), ts, entry.seq);
                self.touch_dir(*dir, ts);
                self.touch_dir(*to_dir, ts);
            }
            Op::Link { fid, dir, name } => {
                self.check_dir(*dir)?;
                if self.entry(*dir, name).is_some() {
                    return Err(err!(
                        EIO,
                        "entry {} links {:?}, which exists",
                        entry.seq,
                        String::from_utf8_lossy(name)
                    ));
                }
                let inode = self.known(*fid, entry.seq)?;
                if inode.kind == Kind::Dir {
                    return Err(err!(EIO, "entry {} links a directory", entry.seq));
                }
                inode.extras.push_link((*dir, name.clone()));
                // As link(2) does on ext4: the file's ctime, and its new directory's times.
                inode.attrs.ctime = ts;
                inode.last_seq = entry.seq;
                self.entries.insert(*dir, name, *fid);
                self.touch_dir(*dir, ts);
            }
            Op::Xattr { fid, xattrs, .. } => {
                let inode = self.known(*fid, entry.seq)?;
                inode.extras.set_xattrs(xattrs.clone());
                // As setxattr and removexattr do on ext4.
                inode.attrs.ctime = ts;
                inode.last_seq = entry.seq;
            }
            Op::Checkpoint { .. } => {}
        }
        self.last_seq = entry.seq;
        Ok(applied)
    }

    fn check_dir(&self, dir: Fid) -> Result<()> {
        match self.inodes.get(&dir) {
            Some(i) if i.kind == Kind::Dir => Ok(()),
            _ => Err(err!(EIO, "directory fid {dir} does not exist")),
        }
    }

    /// A directory entry of `kind` came into `dir` (`by` 1) or left it (-1).
    fn count_subdir(&mut self, dir: Fid, kind: Kind, by: i32) {
        if let (Kind::Dir, Some(d)) = (kind, self.inodes.get_mut(&dir)) {
            d.subdirs = d.subdirs.saturating_add_signed(by);
        }
    }

    fn known(&mut self, fid: Fid, seq: Seq) -> Result<&mut Inode> {
        self.inodes
            .get_mut(&fid)
            .ok_or_else(|| err!(EIO, "entry {seq} names fid {fid}, which does not exist"))
    }

    fn expect_entry(&self, dir: Fid, name: &[u8], fid: Fid, seq: Seq) -> Result<()> {
        match self.entry(dir, name) {
            Some(f) if f == fid => Ok(()),
            other => Err(err!(
                EIO,
                "entry {seq} expects fid {fid} at {:?}, the namespace has {other:?}",
                String::from_utf8_lossy(name)
            )),
        }
    }

    /// The name `from` of `fid` becomes `to`.
    fn rename_inode(
        &mut self,
        fid: Fid,
        from: (Fid, &[u8]),
        (dir, name): (Fid, &[u8]),
        ts: Time,
        seq: Seq,
    ) {
        if let Some(inode) = self.inodes.get_mut(&fid) {
            if inode.parent == from.0 && inode.name == *from.1 {
                (inode.parent, inode.name) = (dir, Name::new(name));
            } else {
                inode.extras.links_mut(|links| {
                    if let Some(link) = links.iter_mut().find(|(d, n)| (*d, n.as_slice()) == from) {
                        *link = (dir, name.to_vec());
                    }
                });
            }
            // A rename changes the inode's ctime, as on ext4 and tmpfs.
            inode.attrs.ctime = ts;
            inode.last_seq = seq;
        }
    }

    /// `fid` loses the name `at` (its directory entry is already gone): the file itself, if
    /// that was its last name, which is returned.
    fn take_name(&mut self, fid: Fid, at: (Fid, &[u8]), ts: Time, seq: Seq) -> Option<Inode> {
        let inode = self.inodes.get_mut(&fid)?;
        if inode.extras.links().is_empty() {
            let removed = self.inodes.remove(&fid)?;
            self.count_subdir(at.0, removed.kind, -1);
            return Some(removed);
        }
        if inode.parent == at.0 && inode.name == *at.1 {
            // The oldest further name (there is one) becomes the first.
            if let Some((dir, name)) = inode.extras.take_oldest_link() {
                (inode.parent, inode.name) = (dir, Name::new(&name));
            }
        } else {
            inode
                .extras
                .links_mut(|links| links.retain(|(d, n)| (*d, n.as_slice()) != at));
        }
        // Its link count changed: so does its ctime, as on ext4.
        inode.attrs.ctime = ts;
        inode.last_seq = seq;
        None
    }

    fn touch_dir(&mut self, dir: Fid, ts: Time) {
        if let Some(d) = self.inodes.get_mut(&dir) {
            d.attrs.mtime = ts;
            d.attrs.ctime = ts;
        }
    }
}
