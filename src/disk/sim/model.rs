//! The simulated disk's model: per file and per directory, what is durable and what only in
//! the page cache, and what a crash keeps, drops or tears of the latter.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use crate::disk::FileMeta;
use crate::types::Time;

pub(super) type Ino = u64;

/// The inode of `/`; files and directories are numbered from 1.
pub(super) const ROOT_DIR: Ino = 0;

#[derive(Clone, Debug)]
pub(super) enum Write {
    At(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) symlink: Option<Vec<u8>>,
    pub(super) live: Vec<u8>,
    pub(super) durable: Vec<u8>,
    pub(super) unsynced: Vec<Write>,
    pub(super) meta: FileMeta,
    pub(super) durable_meta: FileMeta,
}

#[derive(Clone, Debug)]
pub(super) enum DirOp {
    Link(Vec<u8>, Ino),
    Unlink(Vec<u8>),
    /// A rename or exchange within one directory: all or nothing, as a journaling filesystem
    /// commits it.
    Swap(Vec<(Vec<u8>, Option<Ino>)>),
}

/// A name operation not yet durable.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) op: DirOp,
    /// The two halves of a rename or exchange between two directories on a disk with a
    /// journal carry one number: the journal commits both or neither, whichever directory is
    /// synced or however a crash falls. Without a journal they are two operations apart.
    pub(super) pair: Option<u64>,
}

#[derive(Clone, Debug)]
pub(super) struct Dir {
    pub(super) live: BTreeMap<Vec<u8>, Ino>,
    pub(super) durable: BTreeMap<Vec<u8>, Ino>,
    pub(super) unsynced: Vec<Pending>,
    /// Permission bits and owner; kept durably, as a directory's are in these tests.
    pub(super) mode: u32,
    pub(super) uid: u32,
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

/// What `fail_next` can fail (`Write`, `Sync`, `Rename`) or `stall_next` hold (all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOn {
    Write,
    Sync,
    Rename,
    /// A new file written whole (`write_file`: a backing file staged, a snapshot).
    Create,
}

#[derive(Clone, Debug)]
pub(super) struct Fault {
    pub(super) on: FaultOn,
    pub(super) countdown: u64,
    pub(super) errno: i32,
}

#[derive(Default)]
pub(super) struct Sim {
    pub(super) generation: u64,
    pub(super) nodes: HashMap<Ino, Node>,
    /// Directories by inode (`ROOT_DIR` is `/`); a directory's name is an entry of its
    /// parent like a file's, made and removed by the parent's name operations.
    pub(super) dirs: BTreeMap<Ino, Dir>,
    pub(super) next_ino: Ino,
    pub(super) faults: Vec<Fault>,
    /// Bytes of live file content allowed in all; past it writes fail with ENOSPC.
    pub(super) capacity: Option<u64>,
    /// Mutating operations left before the machine "dies" (every later one answers EIO).
    pub(super) budget: Option<u64>,
    /// A filesystem without a journal: a rename or exchange within one directory is two name
    /// operations, and a crash may keep the first alone (see `without_journal`).
    pub(super) no_journal: bool,
    /// The last number given to a pair of name operations.
    pub(super) pairs: u64,
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

pub(super) fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

pub(super) fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

pub(super) fn split(path: &Path) -> io::Result<(PathBuf, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let parent = path.parent().ok_or_else(|| errno(libc::EINVAL))?;
    let name = path.file_name().ok_or_else(|| errno(libc::EINVAL))?;
    Ok((parent.to_owned(), name.as_bytes().to_vec()))
}

pub(super) fn apply_write(buf: &mut Vec<u8>, w: &Write) {
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

pub(super) fn apply_dir_op(entries: &mut BTreeMap<Vec<u8>, Ino>, op: &DirOp) {
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

pub(super) fn default_meta() -> FileMeta {
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
    pub(super) fn spend(&mut self) -> io::Result<()> {
        match &mut self.budget {
            Some(0) => Err(eio()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(super) fn fault(&mut self, on: FaultOn) -> io::Result<()> {
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

    pub(super) fn used(&self) -> u64 {
        self.nodes.values().map(|n| n.live.len() as u64).sum()
    }

    /// The inode a path names, following the live entries from `/`.
    pub(super) fn resolve(&self, path: &Path) -> io::Result<Ino> {
        use std::path::Component;
        let mut at = ROOT_DIR;
        for c in path.components() {
            match c {
                Component::RootDir => at = ROOT_DIR,
                Component::Normal(name) => {
                    use std::os::unix::ffi::OsStrExt;
                    let dir = self.dirs.get(&at).ok_or_else(|| errno(libc::ENOTDIR))?;
                    at = *dir
                        .live
                        .get(name.as_bytes())
                        .ok_or_else(|| errno(libc::ENOENT))?;
                }
                _ => return Err(errno(libc::EINVAL)),
            }
        }
        Ok(at)
    }

    pub(super) fn dir(&mut self, path: &Path) -> io::Result<&mut Dir> {
        let ino = self.resolve(path)?;
        self.dirs.get_mut(&ino).ok_or_else(|| errno(libc::ENOTDIR))
    }

    /// What a path names: a file, a symlink or a directory.
    pub(super) fn lookup_any(&self, path: &Path) -> io::Result<Ino> {
        let (parent, name) = split(path)?;
        let dir = self.resolve(&parent)?;
        let dir = self.dirs.get(&dir).ok_or_else(|| errno(libc::ENOTDIR))?;
        dir.live
            .get(&name)
            .copied()
            .ok_or_else(|| errno(libc::ENOENT))
    }

    /// The file or symlink a path names; EISDIR for a directory.
    pub(super) fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let ino = self.lookup_any(path)?;
        match self.dirs.contains_key(&ino) {
            true => Err(errno(libc::EISDIR)),
            false => Ok(ino),
        }
    }

    pub(super) fn is_dir(&self, ino: Ino) -> bool {
        self.dirs.contains_key(&ino)
    }

    pub(super) fn node(&mut self, ino: Ino) -> &mut Node {
        self.nodes.get_mut(&ino).expect("linked nodes exist")
    }

    pub(super) fn link(&mut self, path: &Path, ino: Ino) -> io::Result<()> {
        self.spend()?;
        self.name_op(path, Some(ino), None).map(|_| ())
    }

    /// Changes names in one directory at once (a rename or exchange within it).
    pub(super) fn swap(
        &mut self,
        dir: &Path,
        changes: Vec<(Vec<u8>, Option<Ino>)>,
    ) -> io::Result<()> {
        self.spend()?;
        let d = self.dir(dir)?;
        apply_dir_op(&mut d.live, &DirOp::Swap(changes.clone()));
        d.unsynced.push(Pending {
            op: DirOp::Swap(changes),
            pair: None,
        });
        Ok(())
    }

    pub(super) fn unlink(&mut self, path: &Path) -> io::Result<Ino> {
        self.spend()?;
        Ok(self
            .name_op(path, None, None)?
            .expect("an unlink names what it removed"))
    }

    /// Two name changes in two directories that a crash keeps both or neither of (a rename
    /// or exchange between directories under a journal). The caller has checked that both
    /// can be made.
    pub(super) fn paired(&mut self, changes: [(&Path, Option<Ino>); 2]) -> io::Result<()> {
        self.spend()?;
        self.pairs += 1;
        let pair = Some(self.pairs);
        for (path, ino) in changes {
            self.name_op(path, ino, pair)?;
        }
        Ok(())
    }

    /// Links `path` to `ino`, or unlinks it (returning what it named) when `ino` is None.
    fn name_op(
        &mut self,
        path: &Path,
        ino: Option<Ino>,
        pair: Option<u64>,
    ) -> io::Result<Option<Ino>> {
        let (parent, name) = split(path)?;
        let dir = self.dir(&parent)?;
        let (op, was) = match ino {
            Some(ino) => {
                dir.live.insert(name.clone(), ino);
                (DirOp::Link(name, ino), None)
            }
            None => {
                let was = dir.live.remove(&name).ok_or_else(|| errno(libc::ENOENT))?;
                (DirOp::Unlink(name), Some(was))
            }
        };
        dir.unsynced.push(Pending { op, pair });
        Ok(was)
    }

    /// Makes the first `keep[dir]` unsynced name operations of each directory durable,
    /// after moving each count to a pair's boundary: up to take the other half of a pair
    /// along (`take_pairs`, a sync: the journal commits the transaction), or down to leave
    /// both out (a crash).
    pub(super) fn make_durable(&mut self, mut keep: BTreeMap<Ino, usize>, take_pairs: bool) {
        let mut halves: BTreeMap<u64, Vec<(Ino, usize)>> = BTreeMap::new();
        for (ino, dir) in &self.dirs {
            for (i, p) in dir.unsynced.iter().enumerate() {
                if let Some(pair) = p.pair {
                    halves.entry(pair).or_default().push((*ino, i));
                }
            }
        }
        let kept = |keep: &BTreeMap<Ino, usize>, (dir, i): (Ino, usize)| i < keep[&dir];
        let mut moved = true;
        while moved {
            moved = false;
            for halves in halves.values() {
                let n = halves.iter().filter(|h| kept(&keep, **h)).count();
                if n == 0 || n == halves.len() {
                    continue;
                }
                for &(dir, i) in halves {
                    let k = keep.get_mut(&dir).expect("every directory has a count");
                    *k = match take_pairs {
                        true => (*k).max(i + 1),
                        false => (*k).min(i),
                    };
                }
                moved = true;
            }
        }
        for (ino, dir) in self.dirs.iter_mut() {
            for p in dir.unsynced.drain(..keep[ino]) {
                apply_dir_op(&mut dir.durable, &p.op);
            }
        }
    }

    pub(super) fn new_dir(&mut self) -> Ino {
        self.next_ino += 1;
        self.dirs.insert(self.next_ino, Dir::default());
        self.next_ino
    }

    pub(super) fn new_node(&mut self, symlink: Option<Vec<u8>>) -> Ino {
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

    pub(super) fn write(&mut self, ino: Ino, w: Write) -> io::Result<()> {
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

    pub(super) fn sync_node(&mut self, ino: Ino) -> io::Result<()> {
        self.fault(FaultOn::Sync)?;
        let node = self.node(ino);
        node.durable = node.live.clone();
        node.durable_meta = node.meta;
        node.unsynced.clear();
        Ok(())
    }

    pub(super) fn crash(&mut self, rng: &mut dyn Chooser) {
        let keep = self
            .dirs
            .iter()
            .map(|(ino, dir)| (*ino, rng.choose(dir.unsynced.len() as u64 + 1) as usize))
            .collect();
        self.make_durable(keep, false);
        for dir in self.dirs.values_mut() {
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
        self.fsck(rng);
        // Whatever no durable name reaches from `/` is gone: a directory whose name was
        // lost takes everything in it along (fsck would put it in lost+found; nothing of
        // recordfs looks there for what it needs).
        let (mut reached, mut todo) = (std::collections::HashSet::from([ROOT_DIR]), vec![ROOT_DIR]);
        while let Some(dir) = todo.pop() {
            for ino in self.dirs[&dir].live.values() {
                if reached.insert(*ino) && self.dirs.contains_key(ino) {
                    todo.push(*ino);
                }
            }
        }
        self.nodes.retain(|ino, _| reached.contains(ino));
        self.dirs.retain(|ino, _| reached.contains(ino));
        self.faults.clear();
        self.budget = None;
        self.generation += 1;
    }

    /// A directory a crash left with more than one name (its move between directories half
    /// kept, possible only without a journal) keeps one of them, as fsck leaves it: no
    /// filesystem serves one directory under two names.
    fn fsck(&mut self, rng: &mut dyn Chooser) {
        let mut names: BTreeMap<Ino, Vec<(Ino, Vec<u8>)>> = BTreeMap::new();
        for (parent, dir) in &self.dirs {
            for (name, ino) in &dir.live {
                if self.dirs.contains_key(ino) {
                    names.entry(*ino).or_default().push((*parent, name.clone()));
                }
            }
        }
        for mut names in names.into_values().filter(|n| n.len() > 1) {
            names.remove(rng.choose(names.len() as u64) as usize);
            for (parent, name) in names {
                let dir = self.dirs.get_mut(&parent).expect("listed");
                dir.durable.remove(&name);
                dir.live.remove(&name);
            }
        }
    }
}
