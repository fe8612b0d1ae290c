//! Offline compaction: the log is retired into a snapshot and a new segment, old segments are
//! kept (the newest 3), and a crash at any step of it recovers to the full committed state.

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use recordfs::compact::compact;
use recordfs::disk::sim::SimDisk;
use recordfs::fs::RecordFs;
use recordfs::options::Options;
use recordfs::store::Layout;
use recordfs::types::ROOT;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn compaction_retires_the_log_keeps_the_state_and_three_old_logs() {
    let env = Env::new();
    let store = env.store.to_str().unwrap().to_string();
    for round in 0..5u32 {
        let m = env.mount(&[]);
        for v in 0..20u32 {
            fs::write(
                env.path(&record(1)),
                format!("{{\"round\": {round}, \"v\": {v}}}"),
            )
            .unwrap();
        }
        fs::write(env.path(&format!("plain{round}.txt")), "x").unwrap();
        m.stop();
        let live_before = fs::metadata(env.store.join("log")).is_ok();
        assert!(live_before);
        let (code, out) = run(&["compact", &store]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = run(&["check", &store]);
        assert_eq!(code, 0, "after compaction {round}: {out}");
    }
    // The live log is one header-only segment; three old segments are kept.
    let live: Vec<_> = fs::read_dir(env.store.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let live_len = fs::metadata(env.store.join("log").join(&live[0]))
        .unwrap()
        .len();
    assert!(
        live_len < 300,
        "the live segment holds only its header: {live_len} bytes"
    );
    let old = count_names(&env.store.join("log/old"), |n| n.ends_with(".log"));
    assert_eq!(old, 3);
    let (_, stats) = run(&["stats", "--json", &store]);
    let s: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(s["kept_old_logs"], 3);
    assert_eq!(
        (s["snapshot_layers"].as_u64(), s["snapshot_seq"].is_u64()),
        (Some(0), true)
    );
    assert_eq!(
        (s["records"].as_u64(), s["plain_files"].as_u64()),
        (Some(1), Some(5))
    );
    // The state is intact, and writes continue after a compaction.
    let m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path(&record(1))).unwrap(),
        "{\"round\": 4, \"v\": 19}"
    );
    fs::write(env.path(&record(2)), "[2]").unwrap();
    m.kill9();
    let _m = env.mount(&[]);
    assert_eq!(fs::read_to_string(env.path(&record(2))).unwrap(), "[2]");
    // The history in the kept old logs is still readable.
    let (_, hist) = run(&["log", &store, "--name", &record(1)]);
    assert!(
        hist.lines().count() >= 3 * 20,
        "{} lines",
        hist.lines().count()
    );
}

fn state(fs: &RecordFs) -> Vec<(Vec<u8>, Vec<u8>, u32)> {
    let dh = fs.opendir(ROOT).unwrap();
    let entries = fs.readdir(dh, 2).unwrap();
    fs.releasedir(dh);
    entries
        .into_iter()
        .map(|e| {
            let fh = fs.open(e.ino, libc::O_RDONLY).unwrap().0;
            let bytes = fs.read(fh, 0, 1 << 20).unwrap();
            fs.release(fh);
            (e.name, bytes, fs.getattr(e.ino, None).unwrap().attrs.mode)
        })
        .collect()
}

/// Guards against: a crash during compaction (before the manifest, after it, while old
/// segments move) that loses or changes committed state.
#[test]
fn a_crash_at_any_step_of_compaction_recovers_the_full_state() {
    crash_at_every_step_of_compaction(true);
}

/// The same on a disk without a journal, where a crash mid-rename may keep neither name (of
/// the manifest, of a backing file).
#[test]
fn a_crash_at_any_step_of_compaction_recovers_the_full_state_without_a_journal() {
    crash_at_every_step_of_compaction(false);
}

fn crash_at_every_step_of_compaction(journal: bool) {
    let store = Path::new("/store");
    let disk = SimDisk::new();
    if !journal {
        disk.without_journal();
    }
    {
        let fs = RecordFs::start_on(Arc::new(disk.clone()), store, Options::default()).unwrap();
        for (i, name) in [
            "a.txt",
            "b.txt",
            "00000001-0000-4000-8000-000000000000.json",
        ]
        .iter()
        .enumerate()
        {
            let (_, fh, t) = fs
                .create(ROOT, name.as_bytes(), 0o640, 0, 0, libc::O_WRONLY)
                .unwrap();
            fs.wait(t).unwrap();
            fs.write(
                fh,
                0,
                format!("[{i}, \"{}\"]", "z".repeat(700 * i)).as_bytes(),
            )
            .unwrap();
            fs.wait(fs.flush(fh).unwrap()).unwrap();
            fs.release(fh);
        }
        fs.wait(fs.unlink(ROOT, b"b.txt").unwrap()).unwrap();
        fs.shutdown().unwrap();
    }
    let expected = {
        let fs = RecordFs::start_on(Arc::new(disk.clone()), store, Options::default()).unwrap();
        let s = state(&fs);
        fs.shutdown().unwrap();
        s
    };
    let layout = Layout::new(store);
    let mut steps = 0;
    for budget in 0.. {
        let copy = disk.fork();
        copy.fail_after(budget);
        let finished = compact(&copy, &layout, &Options::default(), 3).is_ok();
        for seed in 0..16 {
            let rebooted = copy.fork().crash(budget * 100 + seed);
            let fs = RecordFs::start_on(Arc::new(rebooted.clone()), store, Options::default())
                .unwrap_or_else(|e| panic!("crash after {budget} operations of compaction: {e}"));
            assert_eq!(
                state(&fs),
                expected,
                "crash after {budget} operations of compaction, seed {seed}"
            );
            fs.shutdown().unwrap();
            let report = recordfs::recovery::check(&rebooted, &layout).unwrap();
            assert!(
                report.problems.is_empty(),
                "budget {budget}: {:?}",
                report.problems
            );
        }
        steps += 1;
        if finished {
            break;
        }
        assert!(budget < 500, "compaction never finished");
    }
    eprintln!("compaction: crashed at each of {steps} disk operations, 16 crash outcomes each");
}

fn log_bytes(dir: &Path) -> (u64, u64, usize) {
    let (mut live, mut old, mut old_logs) = (0, 0, 0);
    for e in fs::read_dir(dir.join("log")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            live += e.metadata().unwrap().len();
        }
    }
    if let Ok(rd) = fs::read_dir(dir.join("log/old")) {
        for e in rd {
            let e = e.unwrap();
            old += e.metadata().unwrap().len();
            old_logs += usize::from(e.file_name().to_string_lossy().ends_with(".log"));
        }
    }
    (live, old, old_logs)
}

#[test]
fn online_compaction_keeps_the_log_bounded_under_a_long_update_loop() {
    const LIMIT: u64 = 16 * 1024;
    let env = Env::new();
    let m = env.mount(&["--log-limit", &LIMIT.to_string(), "--keep-logs", "3"]);
    for i in 0..1500u32 {
        let body = format!("{{\"i\": {i}, \"pad\": \"{}\"}}", "p".repeat(400));
        fs::write(env.path(&record(i % 10)), body).unwrap();
        if i % 100 == 0 {
            fs::remove_file(env.path(&record(i % 10))).unwrap();
        }
    }
    // Compaction runs beside the writers; give the last one time to finish.
    let bounded = wait_until(std::time::Duration::from_secs(20), || {
        let (live, old, old_logs) = log_bytes(&env.store);
        live <= LIMIT + 8192 && old_logs <= 3 && old <= 3 * (LIMIT + 8192) + 64 * 1024
    });
    let (live, old, old_logs) = log_bytes(&env.store);
    assert!(
        bounded,
        "log not bounded: live {live} bytes, old {old} bytes in {old_logs} segments"
    );
    for i in 1490..1500u32 {
        assert!(fs::read_to_string(env.path(&record(i % 10)))
            .unwrap()
            .contains(&format!("\"i\": {i},")));
    }
    assert!(m.daemon_log().contains("compacted the log up to entry"));
    m.stop();
    let (code, out) = run(&["check", env.store.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let _m = env.mount(&[]);
    assert!(fs::read_to_string(env.path(&record(9)))
        .unwrap()
        .contains("\"i\": 1499,"));
}

#[test]
fn recordfs_compact_on_a_mounted_store_asks_its_daemon() {
    let env = Env::new();
    let m = env.mount(&[]);
    for v in 0..50u32 {
        fs::write(env.path(&record(1)), format!("[{v}]")).unwrap();
    }
    let (code, out) = run(&["compact", env.store.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("asked its daemon"), "{out}");
    assert!(wait_until(std::time::Duration::from_secs(20), || env
        .store
        .join("log/MANIFEST")
        .exists()));
    fs::write(env.path(&record(1)), "[\"after\"]").unwrap();
    m.kill9();
    let m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path(&record(1))).unwrap(),
        "[\"after\"]"
    );
    m.stop();
    assert_eq!(run(&["check", env.store.to_str().unwrap()]).0, 0);
}
