//! The apply thread: synced entries reach the backing tree, in order (write-ahead rule).

use std::collections::VecDeque;
use std::time::Instant;

use log::{info, warn};

use super::state::{Pipeline, State};
use crate::disk::{EntryKind, FileMeta};
use crate::error::Result;
use crate::limits::MAX_PENDING_BYTES;
use crate::limits::{APPLY_DELAY, APPLY_RETRY};
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
                if superseded(&st.unapplied) {
                    st.unapplied.pop_front();
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

    /// Makes the backing tree reflect one synced entry.
    pub(super) fn apply_to_disk(&self, entry: &Entry) -> Result<()> {
        let disk = &*self.disk;
        let root = |name: &[u8]| self.layout.backing(name);
        match &entry.op {
            Op::Set {
                fid,
                name,
                kind,
                attrs,
                data,
                ..
            } => {
                let tmp = self.layout.tmp().join(format!("{fid}.{}", entry.seq));
                let meta = FileMeta {
                    mode: attrs.mode,
                    uid: attrs.uid,
                    gid: attrs.gid,
                    atime: attrs.atime,
                    mtime: attrs.mtime,
                };
                if *kind == Kind::File {
                    // The bytes are written outside the lock; only the rename needs it.
                    let staged = self
                        .layout
                        .tmp()
                        .join(format!("{fid}.{}.staged", entry.seq));
                    store::replace_file(disk, &tmp, &staged, &data.bytes, Some(&meta), false)?;
                    let mut st = self.state.lock();
                    store::rename(disk, &staged, &root(name))?;
                    self.settle(&mut st, *fid, entry.seq, name, data.len());
                } else {
                    let mut st = self.state.lock();
                    store::replace_symlink(disk, &tmp, &root(name), &data.bytes)?;
                    self.settle(&mut st, *fid, entry.seq, name, data.len());
                }
            }
            Op::Attr {
                fid, name, attrs, ..
            } => {
                let st = self.state.lock();
                if st.disk.get(fid).map(Vec::as_slice) == Some(name.as_slice()) {
                    // A file unlinked since this entry is gone from the namespace but not
                    // yet from the backing tree, which then says what it is.
                    let is_link = match st.ns.get(*fid) {
                        Some(inode) => inode.kind == Kind::Symlink,
                        None => disk
                            .stat(&root(name))
                            .is_ok_and(|s| s.kind == EntryKind::Symlink),
                    };
                    if !is_link {
                        store::set_meta(
                            disk,
                            &root(name),
                            &FileMeta {
                                mode: attrs.mode,
                                uid: attrs.uid,
                                gid: attrs.gid,
                                atime: attrs.atime,
                                mtime: attrs.mtime,
                            },
                        )?;
                    }
                }
                drop(st);
                self.state.lock().changed.insert(*fid);
            }
            Op::Delete { fid, name, .. } => {
                let mut st = self.state.lock();
                store::remove(disk, &root(name))?;
                st.disk.remove(fid);
                st.changed.insert(*fid);
            }
            Op::Rename {
                fid,
                name,
                to_name,
                replaced,
                exchange,
                ..
            } => {
                let mut st = self.state.lock();
                if *exchange {
                    store::exchange(disk, &root(name), &root(to_name))?;
                    if let Some(other) = replaced {
                        st.disk.insert(*other, name.clone());
                        st.changed.insert(*other);
                    }
                } else {
                    store::rename(disk, &root(name), &root(to_name))?;
                    if let Some(old) = replaced {
                        st.disk.remove(old);
                    }
                }
                st.disk.insert(*fid, to_name.clone());
                st.changed.insert(*fid);
            }
            Op::Checkpoint { .. } => {}
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

    /// A file's bytes reached its backing file: readers may read them there now.
    pub(super) fn settle(&self, st: &mut State, fid: Fid, seq: Seq, name: &[u8], len: u64) {
        st.disk.insert(fid, name.to_vec());
        st.changed.insert(fid);
        if st.pending.get(&fid).is_some_and(|(s, _)| *s == seq) {
            st.pending.remove(&fid);
            st.pending_bytes -= len;
            self.room.notify_all();
        }
    }
}

/// Whether the first queued entry is a SET that a later SET of the same file replaces, with
/// no rename or delete of that file between them: writing it would be undone at once.
pub(super) fn superseded(queue: &VecDeque<(Instant, Entry)>) -> bool {
    let Some((_, first)) = queue.front() else {
        return false;
    };
    let Op::Set {
        fid,
        kind: Kind::File,
        ..
    } = &first.op
    else {
        return false;
    };
    for (_, e) in queue.iter().skip(1) {
        match &e.op {
            Op::Set { fid: f, .. } if f == fid => return true,
            Op::Rename {
                fid: f, replaced, ..
            } if f == fid || *replaced == Some(*fid) => return false,
            Op::Delete { fid: f, .. } if f == fid => return false,
            _ => {}
        }
    }
    false
}
