//! The apply thread: synced entries reach the backing tree, in order (write-ahead rule).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{info, warn};

use super::state::{Pipeline, State};
use crate::disk::{EntryKind, FileMeta};
use crate::error::{err, Result};
use crate::limits::MAX_PENDING_BYTES;
use crate::limits::{APPLY_DELAY, APPLY_RETRY, MOOT_LOOKAHEAD};
use crate::log::{Entry, Op};
use crate::store::{self};
use crate::types::{Fid, Kind, Seq};

impl Pipeline {
    /// The apply thread: brings the backing tree up to the synced entries, in order.
    pub(super) fn run_apply(&self) {
        // After the sync thread stops, a stalled apply gets one last try before giving up.
        let mut last_try = false;
        loop {
            {
                let mut st = self.state.lock();
                loop {
                    if st.unapplied.is_empty() || st.fatal.is_some() {
                        if st.sync_done {
                            return;
                        }
                        self.apply_wake.wait(&mut st);
                        continue;
                    }
                    if st.stalled.is_some() {
                        if st.sync_done {
                            if last_try {
                                return;
                            }
                            last_try = true;
                            break;
                        }
                        // Disk full: try again now and then.
                        if self.apply_wake.wait_for(&mut st, APPLY_RETRY).timed_out() {
                            break;
                        }
                        continue;
                    }
                    let due = st.unapplied.front().map(|(t, _)| *t + APPLY_DELAY);
                    let hurry =
                        st.sync_done || st.hurry > 0 || st.pending_bytes > MAX_PENDING_BYTES / 2;
                    match due {
                        Some(due) if !hurry && Instant::now() < due => {
                            self.apply_wake.wait_until(&mut st, due);
                        }
                        _ => break,
                    }
                }
            }
            self.apply_synced();
        }
    }

    /// Applies synced entries to the backing tree, in order, stopping at the first that
    /// cannot be applied (disk full): it is tried again later.
    pub(super) fn apply_synced(&self) {
        loop {
            let entry = {
                let mut st = self.state.lock();
                if moot(&st.unapplied, |fid| st.tree().contains(fid)) {
                    let (_, skipped) = st.unapplied.pop_front().expect("moot");
                    self.moot.fetch_add(1, Ordering::Relaxed);
                    if let Op::Set { fid, .. } | Op::Patch { fid, .. } = skipped.op {
                        // Its version never reaches a backing file: readers have it from
                        // `pending` until a later entry replaces it there or removes the file.
                        if st.pending.get(&fid).is_some_and(|(s, _)| *s == skipped.seq) {
                            let (_, version) = st.pending.remove(&fid).expect("just found");
                            st.pending_bytes -= version.memory_bytes();
                            self.room.notify_all();
                        }
                    }
                    continue;
                }
                if !self.due(&st) {
                    return;
                }
                match st.unapplied.front() {
                    Some((_, e)) if e.seq > st.durable => {
                        let reason = format!(
                            "entry {} would reach the backing tree before it is durable (the \
                             log is durable up to entry {})",
                            e.seq, st.durable
                        );
                        self.broken(&mut st, reason);
                        self.room.notify_all();
                        return;
                    }
                    Some((_, e)) => e.clone(),
                    None => return,
                }
            };
            match self.apply_to_disk(&entry) {
                Ok(()) => {
                    let mut st = self.state.lock();
                    st.unapplied.pop_front();
                    if st.stalled.take().is_some() {
                        info!("backing files can be written again");
                    }
                }
                Err(e) if e.is_no_space() => {
                    let mut st = self.state.lock();
                    if st.stalled.is_none() {
                        warn!(
                            "backing file of entry {} not written, will retry: {e}",
                            entry.seq
                        );
                    }
                    st.stalled = Some(e);
                    self.room.notify_all();
                    return;
                }
                Err(e) => {
                    let mut st = self.state.lock();
                    self.turn_read_only(&mut st, format!("writing a backing file failed: {e}"));
                    self.room.notify_all();
                    return;
                }
            }
        }
    }

    /// Makes the backing tree reflect one synced entry. Bytes are written outside the state
    /// lock; names change under it, so that a reader opening a backing file (`version`) never
    /// finds it moving, and paths are taken from the tree as it stands (`State::disk`).
    pub(super) fn apply_to_disk(&self, entry: &Entry) -> Result<()> {
        let disk = &*self.disk;
        let layout = &self.layout;
        // A path the tree cannot give: an entry for a file whose directory never reached it,
        // which the write-ahead order rules out.
        let unplaced = |fid: Fid| {
            err!(
                EIO,
                "entry {}: fid {fid} is not in the backing tree",
                entry.seq
            )
        };
        match &entry.op {
            Op::Set {
                fid,
                dir,
                name,
                kind,
                attrs,
                data,
            } => {
                let tmp = layout.tmp().join(format!("{fid}.{}", entry.seq));
                let meta = FileMeta::of(attrs);
                match kind {
                    Kind::File => {
                        // Every name of a placed file holds its own copy. Only this thread
                        // changes the tree: the names taken here are the names when the copies
                        // are written in place or renamed into place.
                        let (names, in_place) = {
                            let mut st = self.state.lock();
                            match st.tree().get(*fid) {
                                Some(p) => {
                                    let names: Vec<_> =
                                        p.names().map(|(d, n)| (d, n.to_vec())).collect();
                                    // Readers from now on are served the pending version
                                    // until `settle`; one reading the backing file as it was
                                    // holds a token, and then the new bytes go in a new copy.
                                    let paths = st.tree().paths(layout, *fid);
                                    let held = st.held(*fid, entry.seq, 0);
                                    (names, (!held).then_some(paths))
                                }
                                // A new file is written at its name, without the lock: no
                                // reader opens its backing file before `settle`, nothing else
                                // is under the name with every earlier entry applied, and a
                                // crash that tears it leaves its SET in the log's tail, which
                                // recovery checks it against.
                                None => {
                                    let dest = st
                                        .tree()
                                        .path_in(layout, *dir, name)
                                        .ok_or_else(|| unplaced(*dir))?;
                                    drop(st);
                                    store::write_file(disk, &dest, &data.bytes, &meta)?;
                                    let mut st = self.state.lock();
                                    self.settle(&mut st, *fid, entry.seq, (*dir, name, *kind));
                                    return Ok(());
                                }
                            }
                        };
                        if let Some(paths) = in_place.filter(|p| !p.is_empty()) {
                            let mut overwritten = true;
                            for path in &paths {
                                overwritten &=
                                    store::overwrite_file(disk, path, &data.bytes, &meta)?;
                            }
                            // Otherwise a name lost its backing file: every name gets a new
                            // copy, below.
                            if overwritten {
                                let mut st = self.state.lock();
                                self.settle(&mut st, *fid, entry.seq, (*dir, name, *kind));
                                return Ok(());
                            }
                        }
                        let mut staged = Vec::with_capacity(names.len());
                        for i in 0..names.len() {
                            let s = layout.tmp().join(format!("{fid}.{}.{i}.staged", entry.seq));
                            store::write_file(disk, &s, &data.bytes, &meta)?;
                            staged.push(s);
                        }
                        let dests = {
                            let st = self.state.lock();
                            let dest = |(d, n): &(Fid, Vec<u8>)| {
                                st.tree().path_in(layout, *d, n).ok_or_else(|| unplaced(*d))
                            };
                            names.iter().map(dest).collect::<Result<Vec<_>>>()?
                        };
                        // Renamed under the lock, so that a reader opening one of the file's
                        // backing files never finds it moving.
                        let mut st = self.state.lock();
                        for (s, dest) in staged.iter().zip(&dests) {
                            store::rename(disk, s, dest)?;
                        }
                        for (d, _) in &names {
                            st.changed.insert(*d);
                        }
                        self.settle(&mut st, *fid, entry.seq, (*dir, name, *kind));
                    }
                    // Every name of a symlink, as of a file (a SET logged again to repair one).
                    Kind::Symlink => {
                        let mut st = self.state.lock();
                        let names = match st.tree().get(*fid) {
                            Some(p) => p.names().map(|(d, n)| (d, n.to_vec())).collect(),
                            None => vec![(*dir, name.clone())],
                        };
                        for (d, n) in &names {
                            let dest = st
                                .tree()
                                .path_in(layout, *d, n)
                                .ok_or_else(|| unplaced(*d))?;
                            store::replace_symlink(disk, &tmp, &dest, &data.bytes)?;
                        }
                        self.settle(&mut st, *fid, entry.seq, (*dir, name, *kind));
                    }
                    // A directory's mode and times are the log's; its backing directory only
                    // has to be there.
                    Kind::Dir => {
                        let mut st = self.state.lock();
                        if !st.tree().contains(*fid) {
                            let dest = st
                                .tree()
                                .path_in(layout, *dir, name)
                                .ok_or_else(|| unplaced(*dir))?;
                            store::make_dir(disk, &dest)?;
                            st.tree_mut().place(*fid, *dir, name, Kind::Dir);
                            st.changed.insert(*dir);
                        }
                    }
                }
            }
            Op::Patch {
                fid,
                dir,
                name,
                attrs,
                len,
                ranges,
                ..
            } => {
                let meta = FileMeta::of(attrs);
                let (paths, held) = {
                    let mut st = self.state.lock();
                    // An append leaves alone what holders read (their version's length).
                    let lowest = ranges.iter().map(|r| r.at).min().unwrap_or(*len).min(*len);
                    let held = st.held(*fid, entry.seq, lowest);
                    (st.tree().paths(layout, *fid), held)
                };
                if paths.is_empty() {
                    return Err(unplaced(*fid));
                }
                // Readers from now on are served the pending version until `settle`; one that
                // would see the change holds a token, and gets a whole new copy instead (a
                // rename over the name leaves its version as it was).
                for (i, path) in paths.iter().enumerate() {
                    if held {
                        let mut bytes = disk
                            .read(path)
                            .map_err(|e| err!(EIO, "reading {}: {e}", path.display()))?;
                        crate::log::apply_patch(&mut bytes, *len, ranges);
                        let tmp = layout.tmp().join(format!("{fid}.{}.{i}", entry.seq));
                        store::replace_file(disk, &tmp, path, &bytes, Some(&meta), false)?;
                    } else {
                        store::patch_file(disk, path, *len, ranges, &meta)?;
                    }
                }
                let mut st = self.state.lock();
                self.settle(&mut st, *fid, entry.seq, (*dir, name, Kind::File));
            }
            Op::Attr { fid, attrs, .. } => {
                let st = self.state.lock();
                // A file unlinked since this entry is gone from the namespace but not yet from
                // the backing tree, which then says what it is.
                if st.tree().kind(*fid) == Some(Kind::File) {
                    let meta = FileMeta::of(attrs);
                    for path in st.tree().paths(layout, *fid) {
                        store::set_meta(disk, &path, &meta)?;
                    }
                }
                drop(st);
                self.state.lock().changed.insert(*fid);
            }
            Op::Delete { fid, dir, name } => {
                let mut st = self.state.lock();
                if let Some(path) = st.tree().path_in(layout, *dir, name) {
                    match st.tree().kind(*fid) {
                        Some(Kind::Dir) => store::remove_dir(disk, &path)?,
                        _ => store::remove(disk, &path)?,
                    }
                }
                st.tree_mut().take_name(*fid, (*dir, name));
                st.changed.insert(*fid);
                st.changed.insert(*dir);
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
                let mut st = self.state.lock();
                let from = st
                    .tree()
                    .path_in(layout, *dir, name)
                    .ok_or_else(|| unplaced(*dir))?;
                let to = st
                    .tree()
                    .path_in(layout, *to_dir, to_name)
                    .ok_or_else(|| unplaced(*to_dir))?;
                if !st.tree().contains(*fid) {
                    return Err(unplaced(*fid));
                }
                let (here, there) = ((*dir, name.as_slice()), (*to_dir, to_name.as_slice()));
                if *exchange {
                    store::exchange(disk, &from, &to)?;
                    if let Some(other) = replaced {
                        st.tree_mut().rename(*other, there, here);
                        st.changed.insert(*other);
                    }
                } else {
                    store::rename(disk, &from, &to)?;
                    if let Some(old) = replaced {
                        st.tree_mut().take_name(*old, there);
                        st.changed.insert(*old);
                    }
                }
                st.tree_mut().rename(*fid, here, there);
                st.changed.insert(*fid);
                st.changed.insert(*dir);
                st.changed.insert(*to_dir);
            }
            Op::Link { fid, dir, name } => {
                // A copy of the bytes the file's first name holds now: every entry before
                // this one has reached the backing tree.
                let (from, dest) = {
                    let st = self.state.lock();
                    let from = st.tree().path(layout, *fid).ok_or_else(|| unplaced(*fid))?;
                    let dest = st
                        .tree()
                        .path_in(layout, *dir, name)
                        .ok_or_else(|| unplaced(*dir))?;
                    (from, dest)
                };
                let stat = disk
                    .stat(&from)
                    .map_err(|e| err!(EIO, "stat of {}: {e}", from.display()))?;
                let tmp = layout.tmp().join(format!("{fid}.{}", entry.seq));
                let staged = layout.tmp().join(format!("{fid}.{}.staged", entry.seq));
                if stat.kind == EntryKind::Symlink {
                    let target = disk
                        .read_link(&from)
                        .map_err(|e| err!(EIO, "reading {}: {e}", from.display()))?;
                    store::replace_symlink(disk, &tmp, &staged, &target)?;
                } else {
                    let bytes = disk
                        .read(&from)
                        .map_err(|e| err!(EIO, "reading {}: {e}", from.display()))?;
                    let meta = FileMeta {
                        mode: stat.mode,
                        uid: stat.uid,
                        gid: stat.gid,
                        atime: stat.mtime,
                        mtime: stat.mtime,
                    };
                    store::replace_file(disk, &tmp, &staged, &bytes, Some(&meta), false)?;
                }
                let mut st = self.state.lock();
                store::rename(disk, &staged, &dest)?;
                st.tree_mut().add_link(*fid, *dir, name);
                st.changed.insert(*fid);
                st.changed.insert(*dir);
            }
            // Extended attributes live in the log and snapshots, not on backing files.
            Op::Xattr { .. } | Op::Checkpoint { .. } => {}
        }
        Ok(())
    }

    /// Entries synced less than `APPLY_DELAY` ago wait, unless the store is shutting down
    /// or `pending` is filling up.
    pub(super) fn due(&self, st: &State) -> bool {
        st.unapplied.front().is_some_and(|(t, _)| {
            st.sync_done
                || st.hurry > 0
                || st.pending_bytes > MAX_PENDING_BYTES / 2
                || t.elapsed() >= APPLY_DELAY
        })
    }

    /// A file's bytes reached its backing file: readers may read them there now. A new
    /// backing file was written or renamed into `dir`, replacing any old one: the directory is
    /// owed a sync as much as the file, or a crash after a compaction may keep the old file
    /// under the name while the log no longer holds the new bytes.
    pub(super) fn settle(
        &self,
        st: &mut State,
        fid: Fid,
        seq: Seq,
        (dir, name, kind): (Fid, &[u8], Kind),
    ) {
        st.changed.insert(dir);
        if !st.tree().contains(fid) {
            st.tree_mut().place(fid, dir, name, kind);
        }
        st.tree_mut().set_verified(fid);
        st.changed.insert(fid);
        if st.pending.get(&fid).is_some_and(|(s, _)| *s == seq) {
            let (_, version) = st.pending.remove(&fid).expect("just found");
            st.pending_bytes -= version.memory_bytes();
            self.room.notify_all();
        }
    }
}

/// Whether writing the first queued entry would be undone by a later one (looking at most
/// `MOOT_LOOKAHEAD` entries ahead):
/// - a SET of a file that a later SET replaces, with no patch, rename, delete or link of that
///   file between them (a create's empty file, replaced by its content a moment later);
/// - any change of a file or symlink that has no backing file yet (`placed` says) and that a
///   later entry deletes, with no rename or link of it between (a temporary file: SQLite's
///   journal, an editor's, a build's): its bytes never reach the disk, and the DELETE removes
///   nothing.
pub(super) fn moot(queue: &VecDeque<(Instant, Entry)>, placed: impl Fn(Fid) -> bool) -> bool {
    let Some((_, first)) = queue.front() else {
        return false;
    };
    let (fid, mut replaceable) = match &first.op {
        // A directory's entries may reach the disk before its removal does.
        Op::Set {
            kind: Kind::Dir, ..
        } => return false,
        Op::Set { fid, kind, .. } => (*fid, *kind == Kind::File),
        Op::Patch { fid, .. } | Op::Attr { fid, .. } | Op::Xattr { fid, .. } => (*fid, false),
        _ => return false,
    };
    // Asked once: the tree only changes by applying entries, which waits for this answer.
    let unplaced = !placed(fid);
    for (_, e) in queue.iter().skip(1).take(MOOT_LOOKAHEAD) {
        match &e.op {
            Op::Set { fid: f, .. } if *f == fid && replaceable => return true,
            // A patch builds on the bytes this one writes.
            Op::Patch { fid: f, .. } if *f == fid => {
                replaceable = false;
                if !unplaced {
                    return false;
                }
            }
            Op::Delete { fid: f, .. } if *f == fid => return unplaced,
            Op::Rename {
                fid: f, replaced, ..
            } if *f == fid || *replaced == Some(fid) => return false,
            // A new name copies the bytes the file holds then.
            Op::Link { fid: f, .. } if *f == fid => return false,
            _ => {}
        }
    }
    false
}
