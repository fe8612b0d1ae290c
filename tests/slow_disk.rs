//! The core on a simulated disk that is slow at one chosen moment: a log write or a log sync
//! held back until the test lets it go.
//!
//! Guards against: lookups and getattrs that wait behind the log's I/O because it runs under
//! the state lock (a commit's write of its line, a compaction's sync of the old segment's
//! tail). Each test holds the operation, asks a lookup and a getattr from another thread, and
//! fails if they are not answered within a bound while the operation is held.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use recordfs::disk::sim::{FaultOn, Gate, SimDisk};
use recordfs::disk::Disk;
use recordfs::fs::RecordFs;
use recordfs::options::Options;
use recordfs::types::{Fid, ROOT};

/// Far more than a lookup in memory takes, even on a loaded machine.
const BOUND: Duration = Duration::from_secs(5);

fn start(disk: &SimDisk) -> RecordFs {
    RecordFs::start_on(
        Arc::new(disk.clone()),
        Path::new("/store"),
        Options::default(),
    )
    .unwrap()
}

/// Creates `name` with some bytes and waits until it is durable; its inode.
fn save(fs: &RecordFs, name: &str) -> Fid {
    let (st, fh, t) = fs
        .create(ROOT, name.as_bytes(), 0o644, 0, 0, libc::O_WRONLY)
        .unwrap();
    fs.write(fh, 0, b"some bytes").unwrap();
    let t2 = fs.flush(fh).unwrap();
    fs.release(fh);
    fs.wait(t).unwrap();
    fs.wait(t2).unwrap();
    st.ino
}

/// While `gates` hold their operations: a lookup and a getattr of `a.txt` (inode `ino`),
/// asked from another thread, must be answered within `BOUND`. The gates are opened either way,
/// so that every thread ends.
fn answered_while_held(fs: &RecordFs, ino: Fid, gates: &[&Gate]) {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        s.spawn(move || {
            let looked_up = fs.lookup(ROOT, b"a.txt").map(|st| st.ino);
            let got = fs.getattr(ino, None).map(|st| st.size);
            let _ = tx.send((looked_up, got));
        });
        let answer = rx.recv_timeout(BOUND);
        gates.iter().for_each(|g| g.open());
        let (looked_up, got) = answer.unwrap_or_else(|_| {
            panic!("a lookup and a getattr waited more than {BOUND:?} behind the held log I/O")
        });
        assert_eq!(looked_up.unwrap(), ino);
        assert_eq!(got.unwrap(), 10);
    });
}

#[test]
fn a_commit_writing_its_log_line_does_not_hold_up_lookups() {
    let disk = SimDisk::new();
    let fs = start(&disk);
    let ino = save(&fs, "a.txt");
    fs.pipeline().quiesce();
    let write = disk.stall_next(FaultOn::Write, 0);
    std::thread::scope(|s| {
        let committer = s.spawn(|| save(&fs, "b.txt"));
        assert!(
            write.wait_entered(BOUND),
            "the commit never wrote to the log"
        );
        answered_while_held(&fs, ino, &[&write]);
        committer.join().unwrap();
    });
    fs.shutdown().unwrap();
}

#[test]
fn a_compaction_syncing_the_old_segment_s_tail_does_not_hold_up_lookups() {
    let disk = SimDisk::new();
    let fs = start(&disk);
    let ino = save(&fs, "a.txt");
    fs.pipeline().quiesce();
    // The sync thread's sync of b.txt's entry is held, so that entry is not durable when the
    // compaction switches segments: the compaction syncs it itself (its second log sync; the
    // first, of most of the tail, runs before it takes any lock).
    let sync_thread = disk.stall_next(FaultOn::Sync, 0);
    std::thread::scope(|s| {
        let committer = s.spawn(|| save(&fs, "b.txt"));
        assert!(
            sync_thread.wait_entered(BOUND),
            "the commit was never synced"
        );
        let tail = disk.stall_next(FaultOn::Sync, 1);
        fs.pipeline().request_compaction();
        let reached = tail.wait_entered(BOUND);
        if !reached {
            sync_thread.open();
            tail.open();
        }
        assert!(
            reached,
            "the compaction never synced the old segment's tail"
        );
        answered_while_held(&fs, ino, &[&tail, &sync_thread]);
        committer.join().unwrap();
    });
    let until = Instant::now() + BOUND;
    while fs.pipeline().compactions() == 0 {
        assert!(Instant::now() < until, "the compaction did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
    fs.shutdown().unwrap();
}

/// A file made and removed while the apply thread is busy (SQLite's journal, an editor's
/// temporary file) never reaches the backing tree: its entries are moot once its DELETE is
/// queued behind them. Fails if the apply thread writes them anyway.
#[test]
fn a_file_removed_before_its_bytes_reach_the_disk_is_never_written() {
    use std::sync::atomic::Ordering;
    let disk = SimDisk::new();
    let fs = start(&disk);
    fs.pipeline().quiesce();
    // The apply thread holds at its next rename: the backing file of a.txt.
    let rename = disk.stall_next(FaultOn::Rename, 0);
    let ino = save(&fs, "a.txt");
    assert!(rename.wait_entered(BOUND), "a.txt was never applied");
    let before = fs.pipeline().moot.load(Ordering::Relaxed);
    let (_, fh, t) = fs
        .create(ROOT, b"journal", 0o644, 0, 0, libc::O_WRONLY)
        .unwrap();
    fs.wait(t).unwrap();
    fs.write(fh, 0, &vec![7; 100_000]).unwrap();
    fs.wait(fs.fsync(fh).unwrap()).unwrap();
    fs.write(fh, 0, b"header").unwrap();
    fs.wait(fs.fsync(fh).unwrap()).unwrap();
    fs.release(fh);
    fs.wait(fs.unlink(ROOT, b"journal").unwrap()).unwrap();
    rename.open();
    fs.pipeline().quiesce();
    // The create, the two saves (the second a patch) and nothing else.
    assert_eq!(fs.pipeline().moot.load(Ordering::Relaxed) - before, 3);
    assert!(disk.list(Path::new("/store/root")).unwrap() == vec![b"a.txt".to_vec()]);
    assert_eq!(fs.lookup(ROOT, b"a.txt").unwrap().ino, ino);
    fs.shutdown().unwrap();
    let fs = start(&disk);
    assert_eq!(fs.lookup(ROOT, b"journal").unwrap_err().errno, libc::ENOENT);
    fs.shutdown().unwrap();
}
