//! The kernel may cache a file's attributes while they are settled (no handle open to write
//! the file) and a new file's from its create (`fuse::kernel`): what that saves, and that
//! every change made through the mount still shows at once to every process.
//!
//! Guards against: a cache that shows another process an old size, mode, link count or time
//! after the change returned (a writer's close, chmod, link, truncate, utimes), or a writer's
//! own uncommitted size; and against losing the saving (a GETATTR of a new file before its
//! first write, or of a settled file at each open).

mod common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What another process sees of `p`: `stat -c FORMAT`, which asks only for the fields FORMAT
/// shows and takes them from the kernel's cache while it holds them valid. It must be what
/// the daemon says when asked (`--cached=never`).
fn seen_elsewhere(p: &Path, format: &str) -> String {
    let stat = |how: &str| {
        let (code, out) = sh(&format!("stat {how} -c {format} {}", p.display()));
        assert_eq!(code, 0, "{out}");
        out.trim().to_owned()
    };
    let cached = stat("");
    assert_eq!(
        cached,
        stat("--cached=never"),
        "{format} of {}",
        p.display()
    );
    cached
}

#[test]
fn every_change_shows_at_once_to_other_processes() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("notes.txt");
    fs::write(&p, "12").unwrap();
    // Each check follows a stat that let the kernel keep the settled attributes.
    assert_eq!(seen_elsewhere(&p, "%s"), "2");

    // A writer opens: its own size is shown to it, never to others through the cache.
    let mut w = fs::OpenOptions::new().write(true).open(&p).unwrap();
    assert_eq!(seen_elsewhere(&p, "%s"), "2", "opened, nothing written");
    w.write_all(b"0123456789").unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 10, "the writer's own stat");
    assert_eq!(seen_elsewhere(&p, "%s"), "2", "written, not committed");
    drop(w);
    assert_eq!(seen_elsewhere(&p, "%s"), "10", "after the writer's close");
    assert_eq!(fs::metadata(&p).unwrap().len(), 10);

    // Changes by path, each seen at once by the process that made it and by another.
    let (code, out) = sh(&format!("chmod 600 {}", p.display()));
    assert_eq!(code, 0, "{out}");
    assert_eq!(seen_elsewhere(&p, "%a"), "600");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    fs::hard_link(&p, env.path("second")).unwrap();
    assert_eq!(seen_elsewhere(&p, "%h"), "2", "link count after link");
    fs::remove_file(env.path("second")).unwrap();
    assert_eq!(seen_elsewhere(&p, "%h"), "1", "link count after unlink");
    let (code, out) = sh(&format!("truncate -s 3 {}", p.display()));
    assert_eq!(code, 0, "{out}");
    assert_eq!(seen_elsewhere(&p, "%s"), "3", "after truncate by path");
    assert_eq!(fs::read(&p).unwrap(), b"012");
    let (code, out) = sh(&format!("touch -m -d @1000000000 {}", p.display()));
    assert_eq!(code, 0, "{out}");
    assert_eq!(seen_elsewhere(&p, "%Y"), "1000000000", "mtime after utimes");
    seen_elsewhere(&p, "%Z");
    let (code, out) = sh(&format!("setfattr -n user.a -v 1 {}", p.display()));
    assert_eq!(code, 0, "{out}");
    seen_elsewhere(&p, "%Z"); // ctime after setxattr

    // O_TRUNC, then nothing written: the close commits an empty file.
    let w = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    drop(w);
    assert_eq!(seen_elsewhere(&p, "%s"), "0", "after the close of O_TRUNC");

    // A rename over the name: the name's attributes are the other file's.
    fs::write(env.path("other"), "abcdef").unwrap();
    assert_eq!(seen_elsewhere(&env.path("other"), "%s"), "6");
    fs::rename(env.path("other"), &p).unwrap();
    assert_eq!(seen_elsewhere(&p, "%s"), "6", "after a rename over it");

    // A new file: its creator writes and closes within the time its create's attributes
    // may be kept.
    let n = env.path("new.txt");
    let mut f = fs::File::create(&n).unwrap();
    assert_eq!(seen_elsewhere(&n, "%s"), "0");
    f.write_all(b"hello").unwrap();
    assert_eq!(seen_elsewhere(&n, "%s"), "0", "written, not committed");
    drop(f);
    assert_eq!(seen_elsewhere(&n, "%s"), "5", "after the creator's close");
}

/// The GETATTR requests for inode `ino` among fuser's request lines in `log`.
fn getattrs_of(log: &str, ino: u64) -> usize {
    let needle = format!("ino {ino:#018x} GETATTR");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// Runs `step` until one run of it took less than `within` (the kernel's cache of 1 s is
/// then surely alive throughout): returns the daemon's log lines that run wrote and the
/// step's result. A slower run proves nothing either way and is done again (at most 20).
fn within<T>(m: &Mount, within: Duration, mut step: impl FnMut() -> T) -> (String, T) {
    for _ in 0..20 {
        let before = m.daemon_log().len();
        let start = Instant::now();
        let out = step();
        if start.elapsed() < within {
            return (m.daemon_log()[before..].to_owned(), out);
        }
    }
    panic!("20 runs each took {within:?} or longer: the machine is too slow for this test");
}

#[test]
fn a_new_file_and_a_settled_one_are_opened_without_asking_their_attributes() {
    let env = Env::new();
    let m = env.mount_tracing_requests(&[]);
    let mut n = 0;
    // create + write + close: the create's attributes serve open's permission check.
    let (log, p) = within(&m, Duration::from_millis(800), || {
        n += 1;
        let p = env.path(&format!("new-{n}.txt"));
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(b"hello").unwrap();
        drop(f);
        p
    });
    let ino = fs::metadata(&p).unwrap().ino();
    assert!(
        log.contains("CREATE"),
        "fuser's request lines are in the log"
    );
    assert_eq!(getattrs_of(&log, ino), 0, "requests of the create:\n{log}");
    // The kernel sends RELEASE after close returned: until the daemon has done it, the file
    // has a handle open to write it and its attributes are not settled (a stat before then
    // is answered with no time to keep them, and the open asks again: seen about once in
    // 30 runs beside CPU burners, and once in a fresh-clone CI run).
    let released = format!("inode {ino}: handle");
    assert!(
        wait_until(Duration::from_secs(5), || m
            .daemon_log()
            .contains(&released)),
        "the new file's handle was not released within 5 s"
    );

    // stat, then open + read + close: the attributes the stat brought serve the open.
    let (_, (from, to)) = within(&m, Duration::from_millis(800), || {
        fs::metadata(&p).unwrap();
        let from = m.daemon_log().len();
        let mut text = String::new();
        let mut f = fs::File::open(&p).unwrap();
        f.read_to_string(&mut text).unwrap();
        drop(f);
        assert_eq!(text, "hello");
        (from, m.daemon_log().len())
    });
    let log = &m.daemon_log()[from..to];
    assert!(log.contains("OPEN"), "{log}");
    assert_eq!(getattrs_of(log, ino), 0, "requests of the open:\n{log}");
}
