//! A reader's fixed version of a file: the bytes committed when it opened, in memory, in a
//! backing file opened then (a later rename over the path does not change it) or a pending
//! patch over one; and the check of a backing file (or symlink) at its first use, which the
//! mount left to it.

use std::path::PathBuf;
use std::sync::Arc;

use log::warn;

use super::state::Pipeline;
use crate::error::{err, Error, Result};
use crate::limits::MAX_VERIFY_TRIES;
use crate::log::{crc32c, Op};
use crate::namespace::Inode;
use crate::types::{Fid, Kind, Seq};
use crate::view::{Held, Version};

/// A committed version as `Pipeline::version` finds it.
pub enum Read {
    /// A version, with the file's `last_seq` when it was taken: a writer's patch is against
    /// it, and only while no entry changed the file since.
    Fine(Held, Seq),
    /// The backing file differs from the log: these are the file's bytes, to serve and to
    /// commit again (`Pipeline::log_again`) so that its backing files are rewritten.
    Restore(Arc<Vec<u8>>),
}

impl Pipeline {
    /// The committed version of a file, for a reader. The bytes of a backing file that
    /// recovery did not read (the last checkpoint vouched for them) are read whole and checked
    /// against the log's CRC32C at its first read, with the copies its further names hold. One
    /// that differs (bit rot keeps size and mtime) is never served: the bytes come from the
    /// log, or from a copy that holds them (`Read::Restore`: the caller commits them again
    /// and the backing files are rewritten), or the read fails with EIO.
    pub fn version(&self, fid: Fid) -> Result<Read> {
        // A commit between opening the copies and checking them makes them differ from the
        // inode taken with them: look again.
        for _ in 0..MAX_VERIFY_TRIES {
            let (copies, inode, token) = {
                let mut st = self.state.lock();
                let seq = st.ns.get(fid).map_or(0, |i| i.last_seq);
                if let Some((pseq, version)) = st.pending.get(&fid) {
                    // A pending patch over a backing file shows its ranges from memory: the
                    // holder may see that patch applied in place, not a later one.
                    let (pseq, version) = (*pseq, version.clone());
                    // It reads the file below its length at most.
                    let below = version.size()?;
                    let token = version.on_disk().then(|| st.token(fid, pseq, below));
                    return Ok(Read::Fine(Held { version, token }, seq));
                }
                let file = st.ns.get(fid).is_some_and(|i| i.kind == Kind::File);
                // Opened under the lock: the apply thread cannot move the files meanwhile.
                let open = |path: &PathBuf| {
                    self.disk
                        .open_read(path)
                        .and_then(Version::fixed)
                        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))
                };
                // The token is taken under the lock that the backing file is opened under, so
                // the apply thread sees it before it patches the file in place; and no patch
                // of the file is under way (it is in `pending` until applied). A version reads
                // the file below the length it has now.
                if !st.tree().unverified(fid) || !file {
                    let first = st
                        .tree()
                        .path(&self.layout, fid)
                        .ok_or_else(|| err!(ENOENT, "fid {fid} has no backing file"))?;
                    match (open(&first), file) {
                        (Ok(version), _) => {
                            let token = Some(st.token(fid, 0, version.size()?));
                            return Ok(Read::Fine(Held { version, token }, seq));
                        }
                        (Err(e), false) => return Err(e),
                        // A file's backing file gone since it was checked (a rename the
                        // disk did in part before it failed, a hand in STORE) is checked
                        // again below: its bytes come from the log or the read fails with
                        // EIO, never ENOENT for a file that is there.
                        (Err(_), true) => {}
                    }
                }
                let inode = st.ns.get(fid).cloned().expect("a regular file");
                let paths = st.tree().paths(&self.layout, fid);
                if paths.is_empty() {
                    return Err(err!(ENOENT, "fid {fid} has no backing file"));
                }
                let token = st.token(fid, 0, u64::MAX);
                let copies: Vec<(PathBuf, Result<Version>)> = paths
                    .into_iter()
                    .map(|p| {
                        let version = open(&p);
                        (p, version)
                    })
                    .collect();
                (copies, inode, token)
            };
            let mut problems = Vec::new();
            let mut good = None;
            for (path, copy) in &copies {
                let bytes = copy.clone().and_then(|v| v.read_all(u64::MAX));
                match bytes {
                    Ok(b) if b.len() as u64 == inode.size && crc32c(&b) == inode.dcrc => {
                        good.get_or_insert(b);
                    }
                    Ok(b) if b.len() as u64 != inode.size => problems.push(format!(
                        "{}: {} bytes, the log says {}",
                        path.display(),
                        b.len(),
                        inode.size
                    )),
                    Ok(_) => problems.push(format!(
                        "{}: content differs from the log (checksum)",
                        path.display()
                    )),
                    Err(e) => problems.push(format!("{}: {}", path.display(), e.reason)),
                }
            }
            let mut st = self.state.lock();
            let now = st.ns.get(fid);
            if now.is_none_or(|i| i.dcrc != inode.dcrc || i.last_seq != inode.last_seq)
                || st.pending.contains_key(&fid)
            {
                continue;
            }
            if problems.is_empty() {
                st.tree_mut().set_verified(fid);
                // The first copy, checked: the reader reads what was checked.
                let version = copies.into_iter().next().expect("a first copy").1?;
                let token = Some(token);
                return Ok(Read::Fine(Held { version, token }, inode.last_seq));
            }
            drop(st);
            let problems = problems.join("; ");
            let bytes = match good {
                Some(b) => b,
                None => self.bytes_from_log(&inode).map_err(|e| {
                    err!(
                        EIO,
                        "backing file {problems}; it cannot be restored: {}",
                        e.reason
                    )
                })?,
            };
            warn!("backing file {problems}: served from the log or a sound copy, and rewritten");
            return Ok(Read::Restore(Arc::new(bytes)));
        }
        Err(err!(
            EAGAIN,
            "inode {fid} changed {MAX_VERIFY_TRIES} times while its backing file was checked"
        ))
    }

    /// Whether the backing symlinks of symbolic link `fid` point where the namespace says,
    /// checked at its first readlink as a file's bytes are at its first read (the checkpoint
    /// vouched for them; one may be gone since). Each checked once; Ok(false) if one is
    /// missing or points elsewhere: the caller logs the target again (`log_again`).
    pub fn symlink_sound(&self, fid: Fid) -> Result<bool> {
        let (paths, target) = {
            let st = self.state.lock();
            let Some(target) = st.ns.get(fid).and_then(|i| i.extras.target().cloned()) else {
                return Ok(true);
            };
            if !st.tree().unverified(fid) {
                return Ok(true);
            }
            (st.tree().paths(&self.layout, fid), target)
        };
        // A symlink's target never changes (a new one is a new file) and a rename moves the
        // backing symlink whole: what is read here stays true.
        let wrong: Vec<String> = paths
            .iter()
            .filter(|p| self.disk.read_link(p).ok().as_deref() != Some(target.as_slice()))
            .map(|p| p.display().to_string())
            .collect();
        if wrong.is_empty() {
            self.state.lock().tree_mut().set_verified(fid);
            return Ok(true);
        }
        warn!(
            "backing symlink {}: missing or pointing elsewhere; rewritten",
            wrong.join(", ")
        );
        Ok(false)
    }

    /// The bytes of a file's last SET, read back from the log.
    fn bytes_from_log(&self, inode: &Inode) -> Result<Vec<u8>> {
        let Some(loc) = inode.content.get() else {
            return self.bytes_from_patches(inode);
        };
        let segment = self
            .layout
            .log_dir()
            .join(crate::log::segment_name(loc.segment));
        let max_line = self.log.lock().max_line();
        let entry = crate::log::read_entry_at(&*self.disk, &segment, loc.offset, max_line)?;
        match entry.op {
            Op::Set { fid, data, .. } if fid == inode.fid && crc32c(&data.bytes) == inode.dcrc => {
                Ok(data.bytes.to_vec())
            }
            _ => Err(err!(EIO, "the entry at its log position is not its SET")),
        }
    }

    /// The bytes of a file whose last change was a patch: its last SET with the patches after
    /// it replayed, as recovery replays them, from every segment in `log/` (the ones in
    /// charge: after a compaction that failed, or while one runs, several). Reads them whole,
    /// as only a damaged backing file comes here. Fails when the SET is older than them all
    /// (the snapshot before them holds no bytes).
    fn bytes_from_patches(&self, inode: &Inode) -> Result<Vec<u8>> {
        let mut bytes: Option<Vec<u8>> = None;
        for (_, segment) in crate::log::list_segments(&*self.disk, &self.layout.log_dir())? {
            // A line being written as this reads may look torn: what was read before it
            // counts, and the checksum below says whether it was enough.
            crate::log::scan_segment(&*self.disk, &segment, None, |_, entry| {
                match entry.op {
                    _ if entry.seq > inode.last_seq => {}
                    Op::Set { fid, data, .. } if fid == inode.fid => {
                        bytes = Some(data.bytes.to_vec());
                    }
                    Op::Patch {
                        fid, len, ranges, ..
                    } if fid == inode.fid => {
                        if let Some(b) = &mut bytes {
                            crate::log::apply_patch(b, len, &ranges);
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        match bytes {
            Some(b) if b.len() as u64 == inode.size && crc32c(&b) == inode.dcrc => Ok(b),
            Some(_) => Err(err!(
                EIO,
                "its SET and patches in the log do not give its bytes"
            )),
            None => Err(err!(EIO, "the log no longer holds its bytes")),
        }
    }
}
