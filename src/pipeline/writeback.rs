//! Making backing files durable: written back in the background while mounted, and the
//! checkpoint that vouches for all of them at unmount.

use std::path::{Path, PathBuf};

use log::info;

use super::state::{Pipeline, State};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::limits::SYNCFS_ABOVE;
use crate::log::{encode_entry, Entry, LogWriter, Op};
use crate::store::{self};
use crate::types::{Fid, Kind, Time};

impl Pipeline {
    /// Makes every backing file durable, then records that in the log.
    pub(super) fn checkpoint(&self, log: &mut LogWriter, st: &mut State) -> Result<()> {
        if st.changed.is_empty() {
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

    /// fsync of every backing file changed since the last checkpoint, then of `root/`.
    pub(super) fn sync_changed(&self, st: &State) -> Result<()> {
        let (paths, symlink) = self.backing_paths(st, st.changed.iter());
        self.sync_files(&paths, symlink, false)?;
        store::sync_dir(&*self.disk, &self.layout.root())
    }

    /// The backing files of `fids` as they are named now (a deleted one has none: the
    /// directory's fsync covers it), and whether any is a symlink.
    pub(super) fn backing_paths<'a>(
        &self,
        st: &State,
        fids: impl Iterator<Item = &'a Fid>,
    ) -> (Vec<PathBuf>, bool) {
        let mut symlink = false;
        let mut paths = Vec::new();
        for fid in fids {
            let Some(name) = st.disk.get(fid) else {
                continue;
            };
            if st.ns.get(*fid).is_some_and(|i| i.kind == Kind::Symlink) {
                symlink = true;
            } else {
                paths.push(self.layout.backing(name));
            }
        }
        (paths, symlink)
    }

    pub(super) fn sync_files(&self, paths: &[PathBuf], symlink: bool, gone_ok: bool) -> Result<()> {
        sync_files(&*self.disk, &self.layout.root(), paths, symlink, gone_ok)
    }

    /// Writes back at most `at_most` of the backing files owed a sync (changed since the last
    /// checkpoint): in the background a batch of `WRITEBACK_BATCH` a round, so that the
    /// checkpoint at unmount (and the wait of a mount that follows it) costs what changed
    /// since, not the whole store; at a compaction, all of them. A file written or renamed
    /// after its path was taken is marked changed again (a renamed one also has its bytes in
    /// the live log: FORMAT.md, the relog rule). A failed fsync turns the store read-only, as
    /// any.
    pub(super) fn write_back(&self, at_most: usize) -> Result<usize> {
        let (taken, paths, symlink) = {
            let mut st = self.state.lock();
            let taken: Vec<Fid> = st.changed.iter().take(at_most).copied().collect();
            for fid in &taken {
                st.changed.remove(fid);
            }
            let (paths, symlink) = self.backing_paths(&st, taken.iter());
            (taken, paths, symlink)
        };
        if let Err(e) = self.sync_files(&paths, symlink, true) {
            let mut st = self.state.lock();
            st.changed.extend(taken);
            self.turn_read_only(&mut st, e.reason.clone());
            return Err(e);
        }
        Ok(taken.len())
    }
}

/// fsync of each file. A symlink cannot be fsynced by itself; if one changed, syncfs of the
/// tree under `root` covers it (and everything else on that filesystem, which is slower on a
/// busy disk, hence not the default for a few files), as it covers more than `SYNCFS_ABOVE`
/// files. With `gone_ok`, a file renamed or removed since its path was taken is skipped: that
/// change marked it changed again, or the directory's fsync at the checkpoint covers it. Its
/// path may then be missing, or hold a symlink renamed over it, which the no-follow open
/// refuses (ELOOP): neither is the file that was owed a sync.
fn sync_files(
    disk: &dyn Disk,
    root: &Path,
    paths: &[PathBuf],
    symlink: bool,
    gone_ok: bool,
) -> Result<()> {
    // Past a few hundred files one syncfs costs less than their fsyncs.
    let symlink = symlink || paths.len() > SYNCFS_ABOVE;
    for path in paths.iter().filter(|_| !symlink) {
        match disk.sync_file(path) {
            Ok(()) => {}
            Err(e) if gone_ok && is_gone(&e) => {}
            Err(e) => return Err(Error::io(format!("fsync of {}", path.display()), &e)),
        }
    }
    if symlink {
        disk.sync_everything(root)
            .map_err(|e| Error::io("syncfs of the backing tree", &e))?;
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
        let paths = [file.clone(), link.clone(), dir.path().join("removed")];
        assert!(sync_files(&RealDisk, dir.path(), &paths, false, true).is_ok());
        let e = sync_files(&RealDisk, dir.path(), &[link], false, false).unwrap_err();
        assert_eq!(e.errno, libc::ELOOP, "{e}");
    }
}
