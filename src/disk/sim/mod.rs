//! A simulated disk for tests: it knows, per file and per directory entry, what is durable and
//! what is only in the page cache, and `crash(seed)` loses, keeps or tears what was not synced
//! the way a real disk may (in the spirit of FoundationDB's simulation and ALICE):
//!
//! - a file keeps none, all, a random subset, or a prefix of its unsynced writes, and the last
//!   kept write of a prefix may be torn at a 512-byte or 4 KiB boundary;
//! - a directory keeps a prefix of its unsynced name operations (creates, renames, unlinks).
//!   A rename or exchange is all or nothing, as a journal commits it: within one directory it
//!   is one operation, between two it is two operations that a sync of either directory, or
//!   a crash, keeps together. After `without_journal` each is two operations kept or lost
//!   apart, so a rename between two directories may reach one and not the other; a directory
//!   a crash leaves under two names then keeps one, as fsck would leave it;
//! - attributes keep their synced value or their latest one.
//!
//! Each file and directory decides independently, which reorders unsynced writes across
//! files. A directory's name is an entry of its parent like a file's: made, renamed and removed
//! by the parent's name operations, durable once the parent is synced; a crash that loses it
//! loses everything under it. `fail_next` makes the Nth write, sync or rename fail with EIO or
//! ENOSPC.
//! Everything is decided by the seed, so every failure replays.
//!
//! After `crash`, the old `SimDisk` value and every handle it gave out answer EIO: the process
//! that used them is dead. The returned value is the disk as the next mount finds it.

mod gate;
mod model;
#[cfg(test)]
mod tests;

pub use gate::Gate;
pub use model::{Chooser, FaultOn, Rng};

use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::disk::{Disk, DiskFile, DiskLock, DiskStat, EntryKind, FileMeta, ReadAt};
use crate::types::Time;
use model::{eio, errno, split, Dir, Fault, Ino, Sim, Write, ROOT_DIR};

/// A view of the simulated disk, as one process sees it.
#[derive(Clone)]
pub struct SimDisk {
    sim: Arc<Mutex<Sim>>,
    generation: u64,
    stalls: Arc<gate::Stalls>,
}

impl Default for SimDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl SimDisk {
    /// An empty disk holding the directory `/`.
    pub fn new() -> SimDisk {
        let mut sim = Sim::default();
        sim.dirs.insert(ROOT_DIR, Dir::default());
        SimDisk {
            sim: Arc::new(Mutex::new(sim)),
            generation: 0,
            stalls: Arc::default(),
        }
    }

    fn live(&self) -> io::Result<parking_lot::MutexGuard<'_, Sim>> {
        let sim = self.sim.lock();
        if sim.generation != self.generation {
            return Err(eio());
        }
        Ok(sim)
    }

    /// Crashes the machine: what was not synced is lost, kept or torn as `seed` decides. This
    /// view and its handles are dead from now on; the returned one is the disk after reboot.
    pub fn crash(&self, seed: u64) -> SimDisk {
        self.crash_with(&mut Rng::new(seed))
    }

    /// Like `crash`, with every decision taken from `chooser`.
    pub fn crash_with(&self, chooser: &mut dyn Chooser) -> SimDisk {
        let mut sim = self.sim.lock();
        sim.crash(chooser);
        SimDisk {
            sim: self.sim.clone(),
            generation: sim.generation,
            stalls: Arc::default(),
        }
    }

    /// Makes the `n`th next operation of kind `on` (0 = the very next) fail with `errno`.
    pub fn fail_next(&self, on: FaultOn, n: u64, errno: i32) {
        self.sim.lock().faults.push(Fault {
            on,
            countdown: n,
            errno,
        });
    }

    /// Holds the `n`th next write or sync of a file open for writing (the log), rename (a
    /// backing file put in place) or new file written whole (a new backing file, a staged one,
    /// a snapshot), as `on` says (0 = the very next), at the returned gate until it is opened:
    /// a disk slow at that moment.
    pub fn stall_next(&self, on: FaultOn, n: u64) -> Arc<Gate> {
        self.stalls.add(on, n)
    }

    /// An independent copy of the disk as it is now, to crash the same history many ways.
    pub fn fork(&self) -> SimDisk {
        let sim = self.sim.lock();
        SimDisk {
            sim: Arc::new(Mutex::new(Sim {
                generation: 0,
                nodes: sim.nodes.clone(),
                dirs: sim.dirs.clone(),
                next_ino: sim.next_ino,
                faults: sim.faults.clone(),
                capacity: sim.capacity,
                budget: sim.budget,
                no_journal: sim.no_journal,
                pairs: sim.pairs,
            })),
            generation: 0,
            stalls: Arc::default(),
        }
    }

    /// Lets `ops` more mutating operations succeed; every one after fails with EIO, as if the
    /// machine died there (then `crash` to reboot).
    pub fn fail_after(&self, ops: u64) {
        self.sim.lock().budget = Some(ops);
    }

    /// From now on a rename is an unlink then a link, and an exchange two links, each kept or
    /// lost by a crash on its own: a filesystem without a journal (ext2, ext4 made without
    /// one), where a crash mid-rename may keep neither name, or both.
    pub fn without_journal(&self) {
        self.sim.lock().no_journal = true;
    }

    /// Limits the bytes of file content the disk holds; `None` lifts the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.sim.lock().capacity = bytes;
    }

    /// How many operations were not yet synced: a measure of the crash states possible.
    pub fn unsynced_ops(&self) -> usize {
        let sim = self.sim.lock();
        sim.dirs.values().map(|d| d.unsynced.len()).sum::<usize>()
            + sim.nodes.values().map(|n| n.unsynced.len()).sum::<usize>()
    }
}

struct SimFile {
    disk: SimDisk,
    ino: Ino,
}

impl DiskFile for SimFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.disk.stalls.pass(FaultOn::Write);
        self.disk
            .live()?
            .write(self.ino, Write::At(offset, bytes.to_vec()))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.live()?.write(self.ino, Write::SetLen(len))
    }
    fn sync_data(&self) -> io::Result<()> {
        self.disk.stalls.pass(FaultOn::Sync);
        self.disk.live()?.sync_node(self.ino)
    }
    fn set_len_and_meta(&self, len: u64, meta: &FileMeta) -> io::Result<()> {
        self.set_len(len)?;
        self.disk.live()?.node(self.ino).meta = *meta;
        Ok(())
    }
}

struct Frozen(Vec<u8>);

impl ReadAt for Frozen {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = (offset as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

struct NoLock;

impl DiskLock for NoLock {
    fn say(&self, _holder: &str) -> io::Result<()> {
        Ok(())
    }
}

impl Disk for SimDisk {
    fn open_file(&self, path: &Path, create_new: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut sim = self.live()?;
        let ino = match sim.lookup(path) {
            Ok(_) if create_new => return Err(errno(libc::EEXIST)),
            Ok(ino) => ino,
            Err(_) if create_new => {
                let ino = sim.new_node(None);
                sim.link(path, ino)?;
                ino
            }
            Err(e) => return Err(e),
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            ino,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        let mut sim = self.live()?;
        let ino = sim.lookup(path)?;
        let node = sim.node(ino);
        if node.symlink.is_some() {
            return Err(errno(libc::ELOOP));
        }
        Ok(Arc::new(Frozen(node.live.clone())))
    }

    fn write_file(&self, path: &Path, bytes: &[u8], meta: Option<&FileMeta>) -> io::Result<()> {
        self.stalls.pass(FaultOn::Create);
        let mut sim = self.live()?;
        if sim.lookup_any(path).is_ok_and(|ino| sim.is_dir(ino)) {
            return Err(errno(libc::EISDIR));
        }
        if sim.lookup(path).is_ok() {
            sim.unlink(path)?;
        }
        let ino = sim.new_node(None);
        sim.link(path, ino)?;
        sim.write(ino, Write::At(0, bytes.to_vec()))?;
        if let Some(m) = meta {
            sim.node(ino).meta = *m;
        }
        Ok(())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        let ino = sim.lookup(path)?;
        // As the real disk's no-follow open: a symlink cannot be opened to be synced.
        if sim.node(ino).symlink.is_some() {
            return Err(errno(libc::ELOOP));
        }
        sim.sync_node(ino)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.fault(FaultOn::Sync)?;
        let synced = sim.resolve(path)?;
        sim.dir(path)?;
        let keep = sim
            .dirs
            .iter()
            .map(|(ino, dir)| {
                (
                    *ino,
                    if *ino == synced {
                        dir.unsynced.len()
                    } else {
                        0
                    },
                )
            })
            .collect();
        sim.make_durable(keep, true);
        Ok(())
    }

    fn sync_everything(&self, _path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.fault(FaultOn::Sync)?;
        for dir in sim.dirs.values_mut() {
            dir.durable = dir.live.clone();
            dir.unsynced.clear();
        }
        for node in sim.nodes.values_mut() {
            node.durable = node.live.clone();
            node.durable_meta = node.meta;
            node.unsynced.clear();
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.stalls.pass(FaultOn::Rename);
        let mut sim = self.live()?;
        sim.fault(FaultOn::Rename)?;
        let ino = sim.lookup_any(from)?;
        if from == to {
            return Ok(());
        }
        let ((from_parent, from_name), (to_parent, to_name)) = (split(from)?, split(to)?);
        sim.dir(&to_parent)?;
        if sim.is_dir(ino) {
            // rename(2)'s rules for a directory: not into itself, only over an empty one.
            if to.starts_with(from) {
                return Err(errno(libc::EINVAL));
            }
            match sim.lookup_any(to) {
                Ok(over) if !sim.is_dir(over) => return Err(errno(libc::ENOTDIR)),
                Ok(over) if !sim.dirs[&over].live.is_empty() => return Err(errno(libc::ENOTEMPTY)),
                _ => {}
            }
        } else if sim.lookup_any(to).is_ok_and(|over| sim.is_dir(over)) {
            return Err(errno(libc::EISDIR));
        }
        if from_parent == to_parent && !sim.no_journal {
            return sim.swap(&from_parent, vec![(from_name, None), (to_name, Some(ino))]);
        }
        if !sim.no_journal {
            return sim.paired([(from, None), (to, Some(ino))]);
        }
        sim.unlink(from)?;
        sim.link(to, ino)
    }

    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.fault(FaultOn::Rename)?;
        let (ia, ib) = (sim.lookup_any(a)?, sim.lookup_any(b)?);
        if (sim.is_dir(ia) && b.starts_with(a)) || (sim.is_dir(ib) && a.starts_with(b)) {
            return Err(errno(libc::EINVAL));
        }
        let ((pa, na), (pb, nb)) = (split(a)?, split(b)?);
        if pa == pb && !sim.no_journal {
            return sim.swap(&pa, vec![(na, Some(ib)), (nb, Some(ia))]);
        }
        if !sim.no_journal {
            return sim.paired([(a, Some(ib)), (b, Some(ia))]);
        }
        sim.link(a, ib)?;
        sim.link(b, ia)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.lookup(path)?;
        sim.unlink(path).map(|_| ())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Vec<u8>>> {
        let mut sim = self.live()?;
        Ok(sim.dir(dir)?.live.keys().cloned().collect())
    }

    fn stat(&self, path: &Path) -> io::Result<DiskStat> {
        let mut sim = self.live()?;
        let ino = sim.resolve(path)?;
        if let Some(dir) = sim.dirs.get(&ino) {
            return Ok(DiskStat {
                kind: EntryKind::Dir,
                len: 0,
                mode: dir.mode,
                uid: dir.uid,
                gid: 0,
                mtime: Time { secs: 0, nsecs: 0 },
            });
        }
        let ino = sim.lookup(path)?;
        let node = sim.node(ino);
        Ok(DiskStat {
            kind: if node.symlink.is_some() {
                EntryKind::Symlink
            } else {
                EntryKind::File
            },
            len: node.live.len() as u64,
            mode: node.meta.mode & 0o7777,
            uid: node.meta.uid,
            gid: node.meta.gid,
            mtime: node.meta.mtime,
        })
    }

    fn symlink(&self, target: &[u8], path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        if sim.lookup_any(path).is_ok() {
            return Err(errno(libc::EEXIST));
        }
        let ino = sim.new_node(Some(target.to_vec()));
        sim.link(path, ino)
    }

    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut sim = self.live()?;
        let ino = sim.lookup(path)?;
        sim.node(ino)
            .symlink
            .clone()
            .ok_or_else(|| errno(libc::EINVAL))
    }

    fn set_meta(&self, path: &Path, meta: &FileMeta) -> io::Result<()> {
        let mut sim = self.live()?;
        let ino = sim.lookup(path)?;
        sim.node(ino).meta = *meta;
        Ok(())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        if sim.lookup_any(path).is_ok() {
            return Err(errno(libc::EEXIST));
        }
        sim.dir(path.parent().ok_or_else(|| errno(libc::EINVAL))?)?;
        let ino = sim.new_dir();
        sim.link(path, ino)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        let ino = sim.lookup_any(path)?;
        match sim.dirs.get(&ino) {
            None => Err(errno(libc::ENOTDIR)),
            Some(d) if !d.live.is_empty() => Err(errno(libc::ENOTEMPTY)),
            Some(_) => sim.unlink(path).map(|_| ()),
        }
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let mut sim = self.live()?;
        let ino = sim.resolve(path)?;
        if let Some(dir) = sim.dirs.get_mut(&ino) {
            dir.mode = mode & 0o7777;
            return Ok(());
        }
        let node = sim.node(ino);
        if node.symlink.is_some() {
            return Err(errno(libc::ELOOP));
        }
        node.meta.mode = mode & 0o7777;
        Ok(())
    }

    fn lock(&self, _path: &Path, _holder: &str) -> io::Result<Box<dyn DiskLock>> {
        drop(self.live()?);
        Ok(Box::new(NoLock))
    }
}
