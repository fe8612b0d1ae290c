//! What a mount costs (issue 12): it looks at the backing files the log's tail touched, not at
//! the whole store.
//!
//! Guards against: a mount that walks, stats or reads every backing file, so that its time
//! grows with the store instead of with what the last process left unfinished. The backing
//! tree is looked at through a disk that counts every stat, listing, open to read and
//! readlink under `root/`.

mod common;
use common::put;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use recordfs::disk::sim::SimDisk;
use recordfs::disk::{Disk, DiskFile, DiskLock, DiskStat, FileMeta, ReadAt};
use recordfs::fs::RecordFs;
use recordfs::options::Options;
use recordfs::types::ROOT;

const STORE: &str = "/store";
const FILES: u32 = 300;

/// A disk that counts the looks at what is in the backing tree.
struct Looking {
    inner: SimDisk,
    root: PathBuf,
    looks: AtomicU64,
    /// The first paths looked at, to say what they were.
    seen: Mutex<Vec<PathBuf>>,
}

impl Looking {
    fn new(inner: SimDisk) -> Arc<Looking> {
        Arc::new(Looking {
            inner,
            root: Path::new(STORE).join("root"),
            looks: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn look(&self, path: &Path) {
        // `root/` itself is looked at by any opening of the store.
        if path.starts_with(&self.root) && path != self.root {
            self.looks.fetch_add(1, Ordering::Relaxed);
            let mut seen = self.seen.lock().unwrap();
            if seen.len() < 40 {
                seen.push(path.to_owned());
            }
        }
    }

    fn looks(&self) -> u64 {
        self.looks.load(Ordering::Relaxed)
    }
}

impl Disk for Looking {
    fn open_file(&self, path: &Path, create_new: bool) -> io::Result<Arc<dyn DiskFile>> {
        self.inner.open_file(path, create_new)
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        self.look(path);
        self.inner.open_read(path)
    }
    fn write_file(&self, path: &Path, bytes: &[u8], meta: Option<&FileMeta>) -> io::Result<()> {
        self.inner.write_file(path, bytes, meta)
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn sync_everything(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_everything(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.inner.exchange(a, b)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<Vec<u8>>> {
        self.look(dir);
        self.inner.list(dir)
    }
    fn stat(&self, path: &Path) -> io::Result<DiskStat> {
        self.look(path);
        self.inner.stat(path)
    }
    fn symlink(&self, target: &[u8], path: &Path) -> io::Result<()> {
        self.inner.symlink(target, path)
    }
    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.look(path);
        self.inner.read_link(path)
    }
    fn set_meta(&self, path: &Path, meta: &FileMeta) -> io::Result<()> {
        self.inner.set_meta(path, meta)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir(path)
    }
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.inner.set_mode(path, mode)
    }
    fn lock(&self, path: &Path, holder: &str) -> io::Result<Box<dyn DiskLock>> {
        self.inner.lock(path, holder)
    }
}

fn record(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000.json")
}

/// A store of `FILES` records in three folders and the root, stopped cleanly.
fn store_of_many() -> SimDisk {
    let disk = SimDisk::new();
    let fs =
        RecordFs::start_on(Arc::new(disk.clone()), Path::new(STORE), Options::default()).unwrap();
    let mut dirs = vec![ROOT];
    for d in ["a", "b", "c"] {
        let (stat, t) = fs.mkdir(ROOT, d.as_bytes(), 0o755, 0, 0).unwrap();
        fs.wait(t).unwrap();
        dirs.push(stat.ino);
    }
    for n in 0..FILES {
        put(
            &fs,
            dirs[n as usize % 4],
            &record(n),
            format!("[{n}]").as_bytes(),
        );
    }
    fs.shutdown().unwrap();
    disk
}

/// Mounts `disk`, returning how often the backing tree was looked at and the findings.
fn mount_looks(disk: SimDisk, opts: Options) -> (u64, RecordFs, Arc<Looking>) {
    let looking = Looking::new(disk);
    let fs = RecordFs::start_on(looking.clone(), Path::new(STORE), opts).unwrap();
    (looking.looks(), fs, looking)
}

/// After a clean stop a mount looks at the backing tree's directories (a stat or two each, so
/// that one lost is made again before anything is written into it) and at no file.
#[test]
fn a_mount_after_a_clean_stop_looks_at_no_backing_file() {
    let disk = store_of_many();
    let (looks, fs, looking) = mount_looks(disk.clone(), Options::default());
    let dirs: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|d| Path::new(STORE).join("root").join(d))
        .collect();
    let seen = looking.seen.lock().unwrap().clone();
    assert!(
        looks <= 2 * dirs.len() as u64 && seen.iter().all(|p| dirs.contains(p)),
        "{looks} looks at the backing tree of a store stopped cleanly: {seen:?}"
    );
    fs.shutdown().unwrap();
    // The counter sees a mount that looks at everything.
    let verify = Options {
        verify: true,
        ..Options::default()
    };
    let (looks, fs, _) = mount_looks(disk, verify);
    assert!(
        looks > 2 * FILES as u64,
        "--verify looked only {looks} times"
    );
    fs.shutdown().unwrap();
}

#[test]
fn a_mount_after_a_crash_looks_at_what_the_log_s_tail_touched() {
    let disk = store_of_many();
    let fs =
        RecordFs::start_on(Arc::new(disk.clone()), Path::new(STORE), Options::default()).unwrap();
    let a = fs.lookup(ROOT, b"a").unwrap().ino;
    put(&fs, a, &record(1_000), b"[\"new\"]");
    put(&fs, ROOT, &record(0), b"[\"changed\"]");
    fs.wait(
        fs.rename(a, record(1).as_bytes(), ROOT, b"moved.json", 0)
            .unwrap(),
    )
    .unwrap();
    let rebooted = disk.crash(7);
    drop(fs); // the dead process
    let (looks, fs, looking) = mount_looks(rebooted, Options::default());
    assert!(
        looks <= 30,
        "{looks} looks at the backing tree for a tail of three changes in a store of {FILES} files: {:?}",
        looking.seen.lock().unwrap()
    );
    // What the tail touched is right, and so is what it did not (checked at first read).
    let want = [
        (a, record(1_000), "[\"new\"]".to_string()),
        (ROOT, record(0), "[\"changed\"]".to_string()),
        (ROOT, "moved.json".to_string(), "[1]".to_string()),
        (a, record(5), "[5]".to_string()),
    ];
    reads_back_then_checks_clean(fs, &looking, &want);
}

/// Each of `want` (directory, name, bytes) reads back through `fs`, which then stops, and
/// `recordfs check` of the store finds nothing wrong.
fn reads_back_then_checks_clean(fs: RecordFs, looking: &Looking, want: &[(u64, String, String)]) {
    for (dir, name, bytes) in want {
        let ino = fs.lookup(*dir, name.as_bytes()).unwrap().ino;
        let (fh, _) = fs.open(ino, libc::O_RDONLY).unwrap();
        assert_eq!(fs.read(fh, 0, 100).unwrap(), bytes.as_bytes(), "{name}");
        fs.release(fh);
    }
    fs.shutdown().unwrap();
    drop(fs);
    let report = recordfs::recovery::check(
        looking as &dyn Disk,
        &recordfs::store::Layout::new(Path::new(STORE)),
    )
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Issue 12: a checkpoint logged while mounted, once the background write-back has made the
/// backing files durable, bounds what a mount after a crash checks: the 300 rewrites before
/// it are not looked at, the three changes after it are; the simulated disk loses everything
/// not synced, and every record still reads back as committed.
#[test]
fn a_checkpoint_logged_while_mounted_bounds_what_a_mount_after_a_crash_checks() {
    let disk = store_of_many();
    let fs =
        RecordFs::start_on(Arc::new(disk.clone()), Path::new(STORE), Options::default()).unwrap();
    let dirs: Vec<u64> = std::iter::once(ROOT)
        .chain(
            ["a", "b", "c"]
                .iter()
                .map(|d| fs.lookup(ROOT, d.as_bytes()).unwrap().ino),
        )
        .collect();
    for n in 0..FILES {
        put(
            &fs,
            dirs[n as usize % 4],
            &record(n),
            format!("[{n}, \"again\"]").as_bytes(),
        );
    }
    // The write-back runs every few seconds; it logs the checkpoint after it.
    let rewritten = fs.pipeline().last_seq();
    let start = std::time::Instant::now();
    while fs.pipeline().checkpointed() < rewritten
        && start.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        fs.pipeline().checkpointed() >= rewritten,
        "no checkpoint of entry {rewritten} logged: {}",
        fs.pipeline().checkpointed()
    );
    put(&fs, dirs[1], &record(1_000), b"[\"new\"]");
    put(&fs, ROOT, &record(0), b"[\"changed\", 0]");
    fs.wait(
        fs.rename(dirs[1], record(1).as_bytes(), ROOT, b"moved.json", 0)
            .unwrap(),
    )
    .unwrap();
    let rebooted = disk.crash(11);
    drop(fs); // the dead process
    let (looks, fs, looking) = mount_looks(rebooted, Options::default());
    let seen = looking.seen.lock().unwrap().clone();
    assert!(
        looks <= 30,
        "{looks} looks at the backing tree after a checkpoint and three changes, the first: {:?}",
        &seen[..seen.len().min(20)]
    );
    let mut want: Vec<(u64, String, String)> = (2..FILES)
        .map(|n| {
            let dir = dirs[n as usize % 4];
            (dir, record(n), format!("[{n}, \"again\"]"))
        })
        .collect();
    want.push((dirs[1], record(1_000), "[\"new\"]".into()));
    want.push((ROOT, record(0), "[\"changed\", 0]".into()));
    want.push((ROOT, "moved.json".into(), "[1, \"again\"]".into()));
    reads_back_then_checks_clean(fs, &looking, &want);
}
