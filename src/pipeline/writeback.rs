//! Making backing files durable: written back in the background while mounted, and the
//! checkpoint that vouches for all of them at unmount.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use log::info;

use super::state::{Pipeline, State};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::limits::SYNCFS_ABOVE;
use crate::log::{encode_entry, Entry, LogWriter, Op};
use crate::store::{self};
use crate::types::{Fid, Kind, Seq, Time, ROOT};

impl Pipeline {
    /// Makes every backing file durable, then records that in the log.
    pub(super) fn checkpoint(&self, log: &mut LogWriter, st: &mut State) -> Result<()> {
        if st.changed.is_empty() && st.covered >= st.ns.last_seq() {
            return Ok(());
        }
        if let Err(e) = self.sync_changed(st) {
            self.turn_read_only(st, e.reason.clone());
            return Err(e);
        }
        let upto = st.ns.last_seq();
        let entry = Entry {
            seq: upto + 1,
            ts: Time::now().millis(),
            op: Op::Checkpoint { upto },
        };
        log.append(&encode_entry(&entry))?;
        st.live.len = log.len();
        st.ns.apply(&entry, None)?;
        let synced = log
            .sync()
            .and_then(|_| match std::mem::take(&mut st.log_dir_unsynced) {
                true => store::sync_dir(&*self.disk, &self.layout.log_dir()),
                false => Ok(()),
            });
        synced.inspect_err(|e| self.turn_read_only(st, e.reason.clone()))?;
        let synced = st.changed.len();
        st.changed.clear();
        info!(
            "checkpoint: synced {synced} backing files; they hold every commit up to entry {upto}"
        );
        Ok(())
    }

    /// fsync of every backing file and directory changed since the last checkpoint, then of
    /// `root/`.
    pub(super) fn sync_changed(&self, st: &State) -> Result<()> {
        let owed = self.owed(st, st.changed.iter().copied());
        sync_owed(
            &*self.disk,
            &self.layout.root(),
            owed,
            false,
            |fid, which| self.resolve(st, fid, which),
        )?;
        store::sync_dir(&*self.disk, &self.layout.root())
    }

    /// Where each name of the backing file or directory of `fid` is now, its first first, and
    /// what it is; none for one deleted (its directory's fsync covers it).
    fn placed(&self, st: &State, fid: Fid) -> (Vec<PathBuf>, Kind) {
        if fid == ROOT {
            return (vec![self.layout.root()], Kind::Dir);
        }
        match st.tree().get(fid) {
            Some(p) => (st.tree().paths(&self.layout, fid), p.kind),
            None => (Vec::new(), Kind::File),
        }
    }

    /// Where name `which` (0 for the first) of `fid` is now (see `placed`).
    fn resolve(&self, st: &State, fid: Fid, which: usize) -> Option<(PathBuf, Kind)> {
        let (paths, kind) = self.placed(st, fid);
        Some((paths.into_iter().nth(which)?, kind))
    }

    /// One `Owed` for each name of each of `fids` (each name of a file is its own copy); the
    /// paths of a file's names are taken once, not once per name. None past `SYNCFS_ABOVE`
    /// files: one syncfs covers them (`sync_owed`), and no path need be taken.
    fn owed(&self, st: &State, fids: impl ExactSizeIterator<Item = Fid>) -> Option<Vec<Owed>> {
        if fids.len() > SYNCFS_ABOVE {
            return None;
        }
        let mut owed = Vec::new();
        for fid in fids {
            let (paths, kind) = self.placed(st, fid);
            owed.extend(paths.into_iter().enumerate().map(|(which, path)| Owed {
                fid,
                which,
                path,
                kind,
            }));
        }
        Some(owed)
    }

    /// Writes back every backing file owed a sync (changed since the last checkpoint): in
    /// the background once `WRITEBACK_BATCH` are owed or `WRITEBACK_EVERY` has passed, so that
    /// the checkpoint at unmount (and the wait of a mount that follows it) costs what changed
    /// since, not the whole store; and at a compaction. A file written or renamed after its
    /// path was taken is marked changed again (a renamed one also has its bytes in the live
    /// log: FORMAT.md, the relog rule). A failed fsync turns the store read-only, as any.
    /// Returns the last entry whose changes, and every earlier one's, are now durable in the
    /// backing tree (`vouch` says so in the log).
    pub(super) fn write_back(&self) -> Result<Seq> {
        let (taken, owed, upto) = {
            let mut st = self.state.lock();
            // Every entry before the first not yet applied is in the backing tree, and each
            // backing file one of them changed is owed a sync now or was synced since.
            let first_unapplied = st
                .unapplied
                .front()
                .map(|(_, e)| e.seq)
                .or_else(|| st.unsynced.first().map(|e| e.seq))
                .unwrap_or(st.ns.last_seq() + 1);
            let taken: Vec<Fid> = std::mem::take(&mut st.changed).into_iter().collect();
            let owed = self.owed(&st, taken.iter().copied());
            (taken, owed, first_unapplied - 1)
        };
        let synced = sync_owed(
            &*self.disk,
            &self.layout.root(),
            owed,
            true,
            |fid, which| self.resolve(&self.state.lock(), fid, which),
        );
        if let Err(e) = synced {
            let mut st = self.state.lock();
            st.changed.extend(taken);
            self.turn_read_only(&mut st, e.reason.clone());
            return Err(e);
        }
        Ok(upto)
    }

    /// Logs a `CHECKPOINT` of `upto` after a write-back made every change up to it durable,
    /// unless an earlier one covers it: a mount after a crash then checks only what the
    /// entries after `upto` touched (FORMAT.md, "CHECKPOINT"). Not for a log that is not
    /// synced (a replica's cache, which etcd restores). A checkpoint not written (the store
    /// stopping, or read-only) only leaves that check larger.
    pub(super) fn vouch(&self, upto: Seq) {
        if !self.local_sync.load(Ordering::Relaxed) || self.replica.lock().is_some() {
            return;
        }
        if upto <= self.state.lock().covered {
            return;
        }
        match self.commit(|_| Ok(Op::Checkpoint { upto })) {
            Ok(c) => {
                let mut st = self.state.lock();
                // The checkpoint's own entry changes nothing: with none between, it is
                // covered as well.
                let covered = if c.seq == upto + 1 { c.seq } else { upto };
                st.covered = st.covered.max(covered);
            }
            Err(e) => log::debug!("no checkpoint of entry {upto} logged: {e}"),
        }
    }
}

/// A backing file or directory owed a sync, where the tree had it when it was taken.
struct Owed {
    fid: Fid,
    /// Which of the file's names.
    which: usize,
    path: PathBuf,
    kind: Kind,
}

/// How often one file's path is taken again because a rename moved it (or a directory above
/// it) between taking its path and syncing it: each time needs another rename meanwhile.
const RESOLVE_TRIES: usize = 100;

/// fsync of each file and directory. A symlink cannot be fsynced by itself; if one changed,
/// syncfs of the tree under `root` covers it (and everything else on that filesystem, which is
/// slower on a busy disk, hence not the default for a few files), as it covers more than
/// `SYNCFS_ABOVE` files, and all of them when none are given (`Pipeline::owed`). With `gone_ok`, a file renamed or removed since its path was taken is
/// looked up again (`resolve`): it syncs under its new path, or not at all once it is gone (its
/// directory's fsync covers a removal). Its old path may then be missing, or hold a symlink
/// renamed over it, which the no-follow open refuses (ELOOP): neither is the file owed a sync.
fn sync_owed(
    disk: &dyn Disk,
    root: &Path,
    owed: Option<Vec<Owed>>,
    gone_ok: bool,
    mut resolve: impl FnMut(Fid, usize) -> Option<(PathBuf, Kind)>,
) -> Result<()> {
    // Past a few hundred files one syncfs costs less than their fsyncs.
    let owed = match owed {
        Some(o) if o.len() <= SYNCFS_ABOVE && o.iter().all(|o| o.kind != Kind::Symlink) => o,
        _ => {
            return disk
                .sync_everything(root)
                .map_err(|e| Error::io("syncfs of the backing tree", &e))
        }
    };
    for Owed {
        fid,
        which,
        path,
        kind,
    } in owed
    {
        let (mut path, mut kind) = (path, kind);
        for tries in 1.. {
            let synced = match kind {
                Kind::Dir => disk.sync_dir(&path),
                _ => disk.sync_file(&path),
            };
            match synced {
                Ok(()) => break,
                Err(e) if gone_ok && is_gone(&e) && tries < RESOLVE_TRIES => {
                    match resolve(fid, which) {
                        Some((now, k)) if now != path => (path, kind) = (now, k),
                        _ => break,
                    }
                }
                Err(e) => return Err(Error::io(format!("fsync of {}", path.display()), &e)),
            }
        }
    }
    Ok(())
}

fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::RealDisk;

    /// Found by the differential test under load: compaction took a file's path, then a symlink
    /// was renamed over it before the fsync, whose ELOOP turned the store read-only.
    #[test]
    fn a_path_taken_by_a_symlink_since_is_gone_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (file, link) = (dir.path().join("file"), dir.path().join("a"));
        std::fs::write(&file, b"x").unwrap();
        std::os::unix::fs::symlink("file", &link).unwrap();
        let owed = |paths: &[&std::path::PathBuf]| -> Option<Vec<Owed>> {
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| Owed {
                    fid: i as Fid + 2,
                    which: 0,
                    path: p.to_path_buf(),
                    kind: Kind::File,
                })
                .collect::<Vec<_>>()
                .into()
        };
        let removed = dir.path().join("removed");
        let gone = |_, _| None;
        assert!(sync_owed(
            &RealDisk,
            dir.path(),
            owed(&[&file, &link, &removed]),
            true,
            gone
        )
        .is_ok());
        let e = sync_owed(&RealDisk, dir.path(), owed(&[&link]), false, gone).unwrap_err();
        assert_eq!(e.errno, libc::ELOOP, "{e}");
    }
}
