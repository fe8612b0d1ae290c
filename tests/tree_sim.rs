//! Directories on the simulated disk (issue 11): the backing tree mirrors the namespace, and a
//! crash at any moment of a directory's move keeps every acknowledged file.
//!
//! Guards against: a move of a directory between directories whose backing names a crash
//! loses (the disk may keep neither: an unlink in one directory and a link in another) while
//! the files under it have their bytes only in their backing files (a compaction took them
//! out of the log); recovery that cannot rebuild a tree; stray backing directories.

mod common;
use common::put;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use recordfs::disk::sim::SimDisk;
use recordfs::fs::{RecordFs, Ticket};
use recordfs::options::Options;
use recordfs::store::Layout;
use recordfs::types::{Fid, Kind, ROOT};

const STORE: &str = "/store";

fn start(disk: &SimDisk) -> RecordFs {
    RecordFs::start_on(Arc::new(disk.clone()), Path::new(STORE), Options::default()).unwrap()
}

fn mkdir(fs: &RecordFs, dir: Fid, name: &str) -> Fid {
    let (st, t) = fs.mkdir(dir, name.as_bytes(), 0o755, 0, 0).unwrap();
    fs.wait(t).unwrap();
    st.ino
}

/// The file at `path` (names joined by `/`), read through the core.
fn read(fs: &RecordFs, path: &str) -> Result<Vec<u8>, String> {
    let mut at = ROOT;
    for name in path.split('/') {
        at = fs
            .lookup(at, name.as_bytes())
            .map_err(|e| e.to_string())?
            .ino;
    }
    let fh = fs.open(at, libc::O_RDONLY).map_err(|e| e.to_string())?.0;
    let bytes = fs.read(fh, 0, 1 << 20).map_err(|e| e.to_string());
    fs.release(fh);
    bytes
}

fn compact(fs: &RecordFs) {
    let before = fs.pipeline().compactions();
    fs.pipeline().request_compaction();
    let until = Instant::now() + Duration::from_secs(10);
    while fs.pipeline().compactions() == before {
        assert!(Instant::now() < until, "the compaction did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The files are made, compacted out of the log (their bytes are then only in their backing
/// files), and their directory moved into another; the machine crashes right after the move
/// is acknowledged, in every way the disk allows for each seed, with and without a journal.
#[test]
fn a_directory_moved_between_directories_survives_every_crash() {
    let files = [
        ("d/a.json", b"{\"a\":1}".to_vec()),
        ("d/sub/notes.txt", b"plain".to_vec()),
    ];
    for no_journal in [false, true] {
        let disk = SimDisk::new();
        if no_journal {
            disk.without_journal();
        }
        let fs = start(&disk);
        let (a, b) = (mkdir(&fs, ROOT, "a"), mkdir(&fs, ROOT, "b"));
        let d = mkdir(&fs, a, "d");
        let sub = mkdir(&fs, d, "sub");
        put(&fs, d, "a.json", &files[0].1);
        put(&fs, sub, "notes.txt", &files[1].1);
        compact(&fs);
        fs.pipeline().quiesce();
        let t: Ticket = fs.rename(a, b"d", b, b"d", 0).unwrap();
        fs.wait(t).unwrap();
        for seed in 0..150 {
            let rebooted = disk.fork().crash(seed);
            let fs2 = start(&rebooted);
            for (path, bytes) in &files {
                let got = read(&fs2, &format!("b/{path}"));
                assert_eq!(
                    got.as_ref(),
                    Ok(bytes),
                    "no_journal={no_journal} seed {seed}: b/{path}"
                );
                assert!(read(&fs2, &format!("a/{path}")).is_err());
            }
            assert_eq!(
                fs2.getattr(b, None).unwrap().nlink,
                3,
                "b holds d: its link count"
            );
            fs2.shutdown().unwrap();
            // What the next mount finds: a tree that `check` passes, with no strays.
            let layout = Layout::new(Path::new(STORE));
            let r = recordfs::recovery::check(&rebooted, &layout).unwrap();
            let problems: Vec<&str> = r.problems.iter().map(|f| f.what.as_str()).collect();
            assert!(problems.is_empty(), "seed {seed}: check found {problems:?}");
        }
        fs.shutdown().unwrap();
    }
}

/// A directory made, filled and removed again, and the tree's shape, all survive a clean
/// stop and a crash: directories come back with their modes and link counts.
#[test]
fn a_tree_comes_back_after_a_crash_with_its_shape() {
    let disk = SimDisk::new();
    let fs = start(&disk);
    let players = mkdir(&fs, ROOT, "players");
    let gone = mkdir(&fs, players, "gone");
    put(&fs, gone, "x.txt", b"x");
    fs.wait(fs.unlink(gone, b"x.txt").unwrap()).unwrap();
    fs.wait(fs.rmdir(players, b"gone").unwrap()).unwrap();
    let logs = mkdir(&fs, mkdir(&fs, ROOT, "data"), "logs");
    put(&fs, logs, "today.log", b"line\n");
    put(
        &fs,
        players,
        "00000000-0000-4000-8000-000000000001.json",
        b"{}",
    );
    for seed in 0..50 {
        let fs2 = start(&disk.fork().crash(seed));
        assert_eq!(read(&fs2, "data/logs/today.log").unwrap(), b"line\n");
        let p = fs2.lookup(ROOT, b"players").unwrap();
        assert_eq!(
            (p.kind, p.nlink, p.attrs.mode & 0o777),
            (Kind::Dir, 2, 0o755)
        );
        assert!(fs2.lookup(p.ino, b"gone").is_err());
        assert_eq!(fs2.getattr(ROOT, None).unwrap().nlink, 4);
        fs2.shutdown().unwrap();
    }
    fs.shutdown().unwrap();
}
