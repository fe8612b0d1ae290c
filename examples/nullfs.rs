//! The least a FUSE filesystem can do for the requests recordfs is sent: a yardstick for the
//! benchmarks (scripts/bench-peers.sh, bench-files.sh), not a filesystem to keep data in.
//!
//! It makes the kernel the same choices recordfs does (`default_permissions`, names and settled
//! attributes cached for a second, a new file's attributes from its create, direct I/O on every
//! handle, no FLUSH for read-only handles, atomic `open(O_TRUNC)`, extended attributes asked
//! for), so the kernel sends it the same requests; it answers them from memory, and checks,
//! validates and writes through nothing. With `--sync LOGFILE` each FLUSH of a handle that
//! wrote appends the file's bytes to LOGFILE, into zeros written ahead (as recordfs's log does),
//! and is answered after an `fdatasync` that concurrent flushes share, from a thread of its
//! own. What a save through recordfs costs beyond a save through this is recordfs's own work;
//! what this cannot reach, no filesystem behind FUSE on the same machine reaches. With
//! `--backing DIR` too, each synced file's bytes are then written, by a thread of its own, to
//! a file of its own in DIR (a new one made, an old one written in place; its length and mode
//! set where they differ, its times always), as recordfs's apply thread writes backing files:
//! what any filesystem that keeps a file per record on the same disk costs at the least.
//!
//!   cargo build --release --example nullfs
//!   target/release/examples/nullfs MOUNTPOINT [--sync LOGFILE [--backing DIR]]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, WriteFlags,
};
use parking_lot::{Condvar, Mutex};

const TTL: Duration = Duration::from_secs(1);
/// Zeros written ahead of the log's end, so that a flush's sync overwrites blocks.
const AHEAD: u64 = 1 << 20;

struct Node {
    attr: FileAttr,
    data: Vec<u8>,
    /// Written since its last flush.
    dirty: bool,
}

#[derive(Default)]
struct Tree {
    nodes: HashMap<u64, Node>,
    names: HashMap<(u64, Vec<u8>), u64>,
    next: u64,
}

/// A file's bytes, synced, on their way to its backing file: (inode, bytes).
type Synced = (u64, Vec<u8>);

/// The log and the flushes waiting for its next sync, with the bytes each flushed.
struct Log {
    file: File,
    end: Mutex<(u64, u64)>,
    waiting: Mutex<Vec<(ReplyEmpty, u64, Vec<u8>)>>,
    wake: Condvar,
    /// Where synced bytes go to be written to their files (`--backing`).
    backing: Option<Mutex<Sender<Synced>>>,
}

struct NullFs {
    tree: Mutex<Tree>,
    log: Option<Arc<Log>>,
}

fn node(ino: u64, kind: FileType, perm: u16, (uid, gid): (u32, u32)) -> Node {
    let now = SystemTime::now();
    let attr = FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    };
    Node {
        attr,
        data: Vec::new(),
        dirty: false,
    }
}

impl NullFs {
    fn make(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let mut t = self.tree.lock();
        let key = (parent, name.as_bytes().to_vec());
        if t.names.contains_key(&key) {
            return Err(Errno::EEXIST);
        }
        t.next += 1;
        let ino = t.next;
        let n = node(ino, kind, (mode & 0o7777) as u16, (req.uid(), req.gid()));
        let attr = n.attr;
        t.nodes.insert(ino, n);
        t.names.insert(key, ino);
        Ok(attr)
    }

    /// Appends `data` to the log, writing zeros ahead when it runs out of them.
    fn append(log: &Log, data: &[u8]) -> std::io::Result<()> {
        let mut end = log.end.lock();
        let (at, zeros) = *end;
        if at + data.len() as u64 > zeros {
            let more = (data.len() as u64).max(AHEAD);
            log.file.write_all_at(&vec![0; more as usize], zeros)?;
            log.file.sync_data()?;
            end.1 = zeros + more;
        }
        log.file.write_all_at(data, at)?;
        end.0 = at + data.len() as u64;
        Ok(())
    }
}

fn sync_thread(log: Arc<Log>) {
    loop {
        let batch = {
            let mut w = log.waiting.lock();
            while w.is_empty() {
                log.wake.wait(&mut w);
            }
            std::mem::take(&mut *w)
        };
        let synced = log.file.sync_data();
        for (reply, ino, bytes) in batch {
            match &synced {
                Ok(()) => reply.ok(),
                Err(_) => reply.error(Errno::EIO),
            }
            if let Some(backing) = &log.backing {
                let _ = backing.lock().send((ino, bytes));
            }
        }
    }
}

/// Writes each file's synced bytes to DIR/<inode>: made new (`O_EXCL`), or written in place.
fn backing_thread(dir: PathBuf, files: Receiver<Synced>) {
    use std::os::unix::fs::OpenOptionsExt;
    for (ino, bytes) in files {
        let path = dir.join(ino.to_string());
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .or_else(|_| std::fs::OpenOptions::new().write(true).open(&path))
            .and_then(|f| {
                use std::os::unix::fs::MetadataExt;
                f.write_all_at(&bytes, 0)?;
                // As recordfs does: a truncate or chmod only where the file differs.
                let has = f.metadata()?;
                if has.len() != bytes.len() as u64 {
                    f.set_len(bytes.len() as u64)?;
                }
                if has.mode() & 0o7777 != 0o644 {
                    nix::sys::stat::fchmod(&f, nix::sys::stat::Mode::from_bits_truncate(0o644))?;
                }
                let now = nix::sys::time::TimeSpec::from(std::time::UNIX_EPOCH.elapsed().unwrap());
                nix::sys::stat::futimens(&f, &now, &now)?;
                Ok(())
            });
        if let Err(e) = written {
            eprintln!("nullfs: {}: {e}", path.display());
        }
    }
}

impl Filesystem for NullFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = self.tree.lock();
        match t.names.get(&(parent.0, name.as_bytes().to_vec())) {
            Some(ino) => reply.entry(&TTL, &t.nodes[ino].attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.lock().nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &n.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.make(req, parent.0, name, FileType::Directory, mode) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(req, parent.0, name, FileType::RegularFile, mode) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(attr.ino.0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut t = self.tree.lock();
        let Some(n) = t.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if flags.0 & libc::O_TRUNC != 0 {
            n.data.clear();
            n.attr.size = 0;
            n.dirty = true;
        }
        let fopen = match flags.0 & libc::O_ACCMODE {
            libc::O_RDONLY => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            _ => FopenFlags::FOPEN_DIRECT_IO,
        };
        reply.opened(FileHandle(ino.0), fopen);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let t = self.tree.lock();
        let data = t.nodes.get(&ino.0).map_or(&[][..], |n| &n.data[..]);
        let from = (offset as usize).min(data.len());
        let to = (from + size as usize).min(data.len());
        reply.data(&data[from..to]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut t = self.tree.lock();
        let Some(n) = t.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset as usize + data.len();
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[offset as usize..end].copy_from_slice(data);
        n.attr.size = n.data.len() as u64;
        n.attr.mtime = SystemTime::now();
        n.dirty = true;
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        let Some(log) = &self.log else {
            return reply.ok();
        };
        let bytes = {
            let mut t = self.tree.lock();
            match t.nodes.get_mut(&ino.0) {
                Some(n) if n.dirty => {
                    n.dirty = false;
                    n.data.clone()
                }
                _ => return reply.ok(),
            }
        };
        if Self::append(log, &bytes).is_err() {
            return reply.error(Errno::EIO);
        }
        log.waiting.lock().push((reply, ino.0, bytes));
        log.wake.notify_one();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let t = self.tree.lock();
        let mut names: Vec<(&Vec<u8>, u64)> = t
            .names
            .iter()
            .filter(|((p, _), _)| *p == ino.0)
            .map(|((_, n), i)| (n, *i))
            .collect();
        names.sort_unstable();
        for (i, (name, child)) in names.into_iter().enumerate().skip(offset as usize) {
            let kind = t.nodes[&child].attr.kind;
            if reply.add(INodeNo(child), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // As recordfs: extended attributes exist, so the kernel asks (for security.capability
        // at each open(O_TRUNC)).
        reply.error(Errno::ENODATA);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mountpoint, log, backing) = match &args[1..] {
        [m] => (m.clone(), None, None),
        [m, flag, file] if flag == "--sync" => (m.clone(), Some(file.clone()), None),
        [m, flag, file, flag2, dir] if flag == "--sync" && flag2 == "--backing" => {
            (m.clone(), Some(file.clone()), Some(PathBuf::from(dir)))
        }
        _ => {
            eprintln!("usage: nullfs MOUNTPOINT [--sync LOGFILE [--backing DIR]]");
            std::process::exit(2);
        }
    };
    let log = log.map(|path| {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| {
                eprintln!("nullfs: {path}: {e}");
                std::process::exit(1);
            });
        let log = Arc::new(Log {
            file,
            end: Mutex::new((0, 0)),
            waiting: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            backing: backing.map(|dir| {
                let (tx, rx) = channel();
                std::thread::spawn(move || backing_thread(dir, rx));
                Mutex::new(tx)
            }),
        });
        let l = log.clone();
        std::thread::spawn(move || sync_thread(l));
        log
    });
    let mut tree = Tree {
        next: 1,
        ..Tree::default()
    };
    tree.nodes
        .insert(1, node(1, FileType::Directory, 0o777, (0, 0)));
    let fs = NullFs {
        tree: Mutex::new(tree),
        log,
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("nullfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        fuser::MountOption::RW,
    ];
    // As many request threads as recordfs has without `--threads`: the same yardstick.
    config.n_threads = Some(usize::from(recordfs::limits::DEFAULT_THREADS));
    if let Err(e) = fuser::mount(fs, &mountpoint, &config) {
        eprintln!("nullfs: {mountpoint}: {e}");
        std::process::exit(1);
    }
}
