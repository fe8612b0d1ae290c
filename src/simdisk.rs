//! A simulated disk for tests: it knows, per file and per directory entry, what is durable and
//! what is only in the page cache, and `crash(seed)` loses, keeps or tears what was not synced
//! the way a real disk may (in the spirit of FoundationDB's simulation and ALICE):
//!
//! - a file keeps none, all, a random subset, or a prefix of its unsynced writes, and the last
//!   kept write of a prefix may be torn at a 512-byte or 4 KiB boundary;
//! - a directory keeps a prefix of its unsynced name operations (creates, renames, unlinks), so a
//!   rename between two directories may reach one and not the other; a rename or exchange
//!   within one directory is one operation, all or nothing, as journaling filesystems make it
//!   (or, after `without_journal`, two that a crash keeps or loses apart);
//! - attributes keep their synced value or their latest one.
//!
//! Each file and directory decides independently, which reorders unsynced writes across
//! files. Directories themselves are created durably (the store makes them once, then syncs
//! its parent). `fail_next` makes the Nth write, sync or rename fail with EIO or ENOSPC.
//! Everything is decided by the seed, so every failure replays.
//!
//! After `crash`, the old `SimDisk` value and every handle it gave out answer EIO: the process
//! that used them is dead. The returned value is the disk as the next mount finds it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::disk::{Disk, DiskFile, DiskLock, DiskStat, EntryKind, FileMeta, ReadAt};
use crate::types::Time;

type Ino = u64;

#[derive(Clone, Debug)]
enum Write {
    At(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Clone, Debug)]
struct Node {
    symlink: Option<Vec<u8>>,
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Write>,
    meta: FileMeta,
    durable_meta: FileMeta,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(Vec<u8>, Ino),
    Unlink(Vec<u8>),
    /// A rename or exchange within one directory: all or nothing, as a journaling filesystem
    /// commits it (a rename between directories is an unlink and a link, and can half-persist).
    Swap(Vec<(Vec<u8>, Option<Ino>)>),
}

#[derive(Clone, Debug)]
struct Dir {
    live: BTreeMap<Vec<u8>, Ino>,
    durable: BTreeMap<Vec<u8>, Ino>,
    unsynced: Vec<DirOp>,
    /// Permission bits and owner; kept durably, as a directory's are in these tests.
    mode: u32,
    uid: u32,
}

impl Default for Dir {
    fn default() -> Dir {
        Dir {
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
            unsynced: Vec::new(),
            mode: crate::disk::PRIVATE_DIR,
            // SAFETY: geteuid cannot fail. The process that creates a directory owns it.
            uid: unsafe { libc::geteuid() },
        }
    }
}

/// What `fail_next` can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOn {
    Write,
    Sync,
    Rename,
}

#[derive(Clone, Debug)]
struct Fault {
    on: FaultOn,
    countdown: u64,
    errno: i32,
}

#[derive(Default)]
struct Sim {
    generation: u64,
    nodes: HashMap<Ino, Node>,
    dirs: BTreeMap<PathBuf, Dir>,
    next_ino: Ino,
    faults: Vec<Fault>,
    /// Bytes of live file content allowed in all; past it writes fail with ENOSPC.
    capacity: Option<u64>,
    /// Mutating operations left before the machine "dies" (every later one answers EIO).
    budget: Option<u64>,
    /// A filesystem without a journal: a rename or exchange within one directory is two name
    /// operations, and a crash may keep the first alone (see `without_journal`).
    no_journal: bool,
}

/// Where `crash` takes its decisions from: a seeded `Rng`, or an enumerator that walks every
/// outcome (tests/sim.rs).
pub trait Chooser {
    /// A number below `n` (0 when `n` is 0 or 1).
    fn choose(&mut self, n: u64) -> u64;
}

impl Chooser for Rng {
    fn choose(&mut self, n: u64) -> u64 {
        self.below(n)
    }
}

/// A tiny deterministic generator (xorshift64*), so the crate needs no dependency for it.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn split(path: &Path) -> io::Result<(PathBuf, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let parent = path.parent().ok_or_else(|| errno(libc::EINVAL))?;
    let name = path.file_name().ok_or_else(|| errno(libc::EINVAL))?;
    Ok((parent.to_owned(), name.as_bytes().to_vec()))
}

fn apply_write(buf: &mut Vec<u8>, w: &Write) {
    match w {
        Write::At(off, bytes) => {
            let end = *off as usize + bytes.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*off as usize..end].copy_from_slice(bytes);
        }
        Write::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

fn apply_dir_op(entries: &mut BTreeMap<Vec<u8>, Ino>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Swap(changes) => {
            for (name, ino) in changes {
                match ino {
                    Some(ino) => entries.insert(name.clone(), *ino),
                    None => entries.remove(name),
                };
            }
        }
    }
}

fn default_meta() -> FileMeta {
    let t = Time { secs: 0, nsecs: 0 };
    FileMeta {
        mode: 0o600,
        uid: 0,
        gid: 0,
        atime: t,
        mtime: t,
    }
}

impl Sim {
    fn spend(&mut self) -> io::Result<()> {
        match &mut self.budget {
            Some(0) => Err(eio()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn fault(&mut self, on: FaultOn) -> io::Result<()> {
        self.spend()?;
        let mut hit = None;
        for (i, f) in self.faults.iter_mut().enumerate() {
            if f.on == on {
                if f.countdown == 0 {
                    hit = Some(i);
                    break;
                }
                f.countdown -= 1;
            }
        }
        match hit {
            Some(i) => Err(errno(self.faults.remove(i).errno)),
            None => Ok(()),
        }
    }

    fn used(&self) -> u64 {
        self.nodes.values().map(|n| n.live.len() as u64).sum()
    }

    fn dir(&mut self, path: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(path).ok_or_else(|| errno(libc::ENOENT))
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let (parent, name) = split(path)?;
        let dir = self.dirs.get(&parent).ok_or_else(|| errno(libc::ENOENT))?;
        dir.live
            .get(&name)
            .copied()
            .ok_or_else(|| errno(libc::ENOENT))
    }

    fn node(&mut self, ino: Ino) -> &mut Node {
        self.nodes.get_mut(&ino).expect("linked nodes exist")
    }

    fn link(&mut self, path: &Path, ino: Ino) -> io::Result<()> {
        self.spend()?;
        let (parent, name) = split(path)?;
        let dir = self.dir(&parent)?;
        dir.live.insert(name.clone(), ino);
        dir.unsynced.push(DirOp::Link(name, ino));
        Ok(())
    }

    /// Changes names in one directory at once (a rename or exchange within it).
    fn swap(&mut self, dir: &Path, changes: Vec<(Vec<u8>, Option<Ino>)>) -> io::Result<()> {
        self.spend()?;
        let d = self.dir(dir)?;
        apply_dir_op(&mut d.live, &DirOp::Swap(changes.clone()));
        d.unsynced.push(DirOp::Swap(changes));
        Ok(())
    }

    fn unlink(&mut self, path: &Path) -> io::Result<Ino> {
        self.spend()?;
        let (parent, name) = split(path)?;
        let dir = self.dir(&parent)?;
        let ino = dir.live.remove(&name).ok_or_else(|| errno(libc::ENOENT))?;
        dir.unsynced.push(DirOp::Unlink(name));
        Ok(ino)
    }

    fn new_node(&mut self, symlink: Option<Vec<u8>>) -> Ino {
        self.next_ino += 1;
        let content = symlink.clone().unwrap_or_default();
        self.nodes.insert(
            self.next_ino,
            Node {
                symlink,
                live: content.clone(),
                durable: content,
                unsynced: Vec::new(),
                meta: default_meta(),
                durable_meta: default_meta(),
            },
        );
        self.next_ino
    }

    fn write(&mut self, ino: Ino, w: Write) -> io::Result<()> {
        self.fault(FaultOn::Write)?;
        if let (Some(cap), Write::At(off, bytes)) = (self.capacity, &w) {
            let node = &self.nodes[&ino];
            let grows = (*off as usize + bytes.len()).saturating_sub(node.live.len()) as u64;
            if self.used() + grows > cap {
                return Err(errno(libc::ENOSPC));
            }
        }
        let node = self.node(ino);
        apply_write(&mut node.live, &w);
        node.unsynced.push(w);
        Ok(())
    }

    fn sync_node(&mut self, ino: Ino) -> io::Result<()> {
        self.fault(FaultOn::Sync)?;
        let node = self.node(ino);
        node.durable = node.live.clone();
        node.durable_meta = node.meta;
        node.unsynced.clear();
        Ok(())
    }

    fn crash(&mut self, rng: &mut dyn Chooser) {
        for dir in self.dirs.values_mut() {
            let keep = rng.choose(dir.unsynced.len() as u64 + 1) as usize;
            for op in &dir.unsynced[..keep] {
                apply_dir_op(&mut dir.durable, op);
            }
            dir.unsynced.clear();
            dir.live = dir.durable.clone();
        }
        let mut inos: Vec<Ino> = self.nodes.keys().copied().collect();
        inos.sort();
        for ino in inos {
            let node = self.nodes.get_mut(&ino).expect("listed");
            let writes = std::mem::take(&mut node.unsynced);
            let mut content = node.durable.clone();
            match rng.choose(4) {
                0 => {}
                1 => writes.iter().for_each(|w| apply_write(&mut content, w)),
                2 => writes
                    .iter()
                    .filter(|_| rng.choose(2) == 0)
                    .for_each(|w| apply_write(&mut content, w)),
                _ => {
                    let keep = rng.choose(writes.len() as u64 + 1) as usize;
                    for (i, w) in writes[..keep].iter().enumerate() {
                        match w {
                            Write::At(off, bytes) if i + 1 == keep && bytes.len() > 512 => {
                                let unit = if rng.choose(2) == 0 { 512 } else { 4096 };
                                let cut =
                                    (rng.choose(bytes.len() as u64 / unit + 1) * unit) as usize;
                                let torn = Write::At(*off, bytes[..cut.min(bytes.len())].to_vec());
                                apply_write(&mut content, &torn);
                            }
                            w => apply_write(&mut content, w),
                        }
                    }
                }
            }
            node.durable = content.clone();
            node.live = content;
            if rng.choose(2) == 0 {
                node.durable_meta = node.meta;
            }
            node.meta = node.durable_meta;
        }
        // Nodes no directory names are gone.
        let linked: std::collections::HashSet<Ino> = self
            .dirs
            .values()
            .flat_map(|d| d.live.values().copied())
            .collect();
        self.nodes.retain(|ino, _| linked.contains(ino));
        self.faults.clear();
        self.budget = None;
        self.generation += 1;
    }
}

/// A view of the simulated disk, as one process sees it.
#[derive(Clone)]
pub struct SimDisk {
    sim: Arc<Mutex<Sim>>,
    generation: u64,
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
        sim.dirs.insert(PathBuf::from("/"), Dir::default());
        SimDisk {
            sim: Arc::new(Mutex::new(sim)),
            generation: 0,
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
            })),
            generation: 0,
        }
    }

    /// Lets `ops` more mutating operations succeed; every one after fails with EIO, as if the
    /// machine died there (then `crash` to reboot).
    pub fn fail_after(&self, ops: u64) {
        self.sim.lock().budget = Some(ops);
    }

    /// From now on a rename within one directory is an unlink then a link, and an exchange two
    /// links, each kept or lost by a crash on its own: a filesystem without a journal (ext2,
    /// ext4 made without one), where a crash mid-rename may keep neither name.
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
        self.disk
            .live()?
            .write(self.ino, Write::At(offset, bytes.to_vec()))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.live()?.write(self.ino, Write::SetLen(len))
    }
    fn sync_data(&self) -> io::Result<()> {
        self.disk.live()?.sync_node(self.ino)
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
        let mut sim = self.live()?;
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
        sim.sync_node(ino)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.fault(FaultOn::Sync)?;
        let dir = sim.dir(path)?;
        dir.durable = dir.live.clone();
        dir.unsynced.clear();
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
        let mut sim = self.live()?;
        sim.fault(FaultOn::Rename)?;
        let ino = sim.lookup(from)?;
        if from == to {
            return Ok(());
        }
        let ((from_parent, from_name), (to_parent, to_name)) = (split(from)?, split(to)?);
        sim.dir(&to_parent)?;
        if from_parent == to_parent && !sim.no_journal {
            return sim.swap(&from_parent, vec![(from_name, None), (to_name, Some(ino))]);
        }
        sim.unlink(from)?;
        sim.link(to, ino)
    }

    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.fault(FaultOn::Rename)?;
        let (ia, ib) = (sim.lookup(a)?, sim.lookup(b)?);
        let ((pa, na), (pb, nb)) = (split(a)?, split(b)?);
        if pa == pb && !sim.no_journal {
            return sim.swap(&pa, vec![(na, Some(ib)), (nb, Some(ia))]);
        }
        sim.link(a, ib)?;
        sim.link(b, ia)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.live()?.unlink(path).map(|_| ())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Vec<u8>>> {
        let mut sim = self.live()?;
        let mut names: Vec<Vec<u8>> = sim.dir(dir)?.live.keys().cloned().collect();
        // Subdirectories are listed too, as a real directory would.
        let subdirs: Vec<Vec<u8>> = sim
            .dirs
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| split(p).ok().map(|(_, n)| n))
            .collect();
        names.extend(subdirs);
        names.sort();
        Ok(names)
    }

    fn stat(&self, path: &Path) -> io::Result<DiskStat> {
        let mut sim = self.live()?;
        if let Some(dir) = sim.dirs.get(path) {
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
        if sim.lookup(path).is_ok() {
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
        if sim.dirs.contains_key(path) {
            return Err(errno(libc::EEXIST));
        }
        let parent = path.parent().ok_or_else(|| errno(libc::EINVAL))?;
        if !sim.dirs.contains_key(parent) {
            return Err(errno(libc::ENOENT));
        }
        sim.dirs.insert(path.to_owned(), Dir::default());
        Ok(())
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let mut sim = self.live()?;
        if let Some(dir) = sim.dirs.get_mut(path) {
            dir.mode = mode & 0o7777;
            return Ok(());
        }
        let ino = sim.lookup(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loses_only_what_was_not_synced() {
        let d = SimDisk::new();
        let (dir, f) = (Path::new("/"), Path::new("/f"));
        d.write_file(f, b"synced", None).unwrap();
        d.sync_file(f).unwrap();
        d.sync_dir(dir).unwrap();
        // Overwritten in place, as the log's segments are.
        let file = d.open_file(f, false).unwrap();
        file.set_len(0).unwrap();
        file.write_at(0, b"later").unwrap();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64 {
            // Each seed crashes a fresh copy of the same history.
            let copy = d.fork();
            let rebooted = copy.crash(seed);
            assert!(
                copy.write_file(f, b"x", None).is_err(),
                "the old view is dead"
            );
            let got = (&rebooted as &dyn Disk).read(f).unwrap();
            seen.insert(got);
        }
        // The synced version, the new one, and torn mixes (the file was truncated, then
        // written): never anything else.
        for s in &seen {
            assert!(
                [b"synced".as_slice(), b"later", b"", b"later\0"].contains(&s.as_slice())
                    || b"synced".starts_with(s)
                    || s.starts_with(b"later"),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
        assert!(seen.contains(b"synced".as_slice()) && seen.contains(b"later".as_slice()));
    }

    #[test]
    fn write_file_replaces_the_name_so_a_crash_may_keep_old_new_or_none() {
        let d = SimDisk::new();
        let (dir, f) = (Path::new("/"), Path::new("/f"));
        d.write_file(f, b"synced", None).unwrap();
        d.sync_file(f).unwrap();
        d.sync_dir(dir).unwrap();
        d.write_file(f, b"later", None).unwrap();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64 {
            let rebooted = d.fork().crash(seed);
            seen.insert((&rebooted as &dyn Disk).read(f).ok());
        }
        for s in &seen {
            assert!(
                match s {
                    None => true,
                    Some(s) => s == b"synced" || b"later".starts_with(s),
                },
                "{s:?}"
            );
        }
        assert!(seen.contains(&Some(b"synced".to_vec())) && seen.contains(&None));
    }

    #[test]
    fn an_unsynced_rename_may_be_lost_a_synced_one_is_not() {
        let d = SimDisk::new();
        d.create_dir(Path::new("/a")).unwrap();
        d.write_file(Path::new("/a/t"), b"1", None).unwrap();
        d.sync_file(Path::new("/a/t")).unwrap();
        d.sync_dir(Path::new("/a")).unwrap();
        d.rename(Path::new("/a/t"), Path::new("/a/x")).unwrap();
        d.sync_dir(Path::new("/a")).unwrap();
        d.write_file(Path::new("/a/u"), b"2", None).unwrap();
        let r = d.crash(7);
        assert_eq!((&r as &dyn Disk).read(Path::new("/a/x")).unwrap(), b"1");
        assert!(r.stat(Path::new("/a/t")).is_err());
    }

    #[test]
    fn faults_fail_the_chosen_operation_once() {
        let d = SimDisk::new();
        d.fail_next(FaultOn::Sync, 1, libc::EIO);
        d.write_file(Path::new("/f"), b"x", None).unwrap();
        d.sync_file(Path::new("/f")).unwrap();
        let e = d.sync_file(Path::new("/f")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        d.sync_file(Path::new("/f")).unwrap();
        d.set_capacity(Some(4));
        let e = d.write_file(Path::new("/g"), b"12345", None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }
}
