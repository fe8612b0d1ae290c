//! Arbitrary bytes where recordfs reads its own files: the log, snapshot and manifest readers,
//! and recovery, `check` and salvage of a whole store on the simulated disk. Whatever the
//! damage, the answer is an error or a store, never a panic and never a hang; lines are
//! bounded by the segment's limit, so no input makes a reader allocate beyond its file.
//!
//! Two kinds of input: raw bytes, which the checksum turns away early, and mutations that are
//! sealed again with a correct checksum, which reach the decoders and recovery's logic with
//! numbers such as 0, 2^62 + 1 and u64::MAX (`+ 1` on a sequence number of u64::MAX, and
//! `start - 1` of a segment named 00000000000000000000.log, used to panic).
//! Cases in CI: 2,000 per decoder, 300 damaged stores; `RECORDFS_SOAK=N` runs N times more.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use recordfs::disk::sim::SimDisk;
use recordfs::disk::Disk;
use recordfs::fs::RecordFs;
use recordfs::log::{self};
use recordfs::options::Options;
use recordfs::recovery;
use recordfs::store::Layout;
use recordfs::types::ROOT;

const STORE: &str = "/store";

fn soak() -> u32 {
    std::env::var("RECORDFS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn config(cases: u32) -> Config {
    Config {
        cases: cases * soak(),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Seals `fields` (minus any crc) as a line the way the log does: the CRC32C of the line
/// without its crc field, then that field last.
fn seal(fields: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut body = fields.clone();
    body.remove("crc");
    let mut line = serde_json::to_vec(&Value::Object(body)).unwrap();
    let crc = log::crc32c(&line);
    line.pop(); // the closing brace
    if line.len() > 1 {
        line.push(b',');
    }
    line.extend_from_slice(format!("\"crc\":\"{crc:08x}\"}}").as_bytes());
    line
}

/// Values that have broken readers: the ends of the ranges, and the wrong types.
fn nasty() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(0u64)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(u64::MAX - 1)),
        Just(Value::from(recordfs::types::MAX_ID)),
        Just(Value::from(recordfs::types::MAX_ID + 1)),
        Just(Value::from(-1i64)),
        Just(Value::from(1.5f64)),
        Just(Value::from(1e300f64)),
        Just(Value::Null),
        Just(Value::from("x")),
        Just(Value::from(vec![1, 2])),
        any::<u64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        "[a-z0-9/.]{0,300}".prop_map(Value::from),
    ]
}

/// A line with one field replaced by a nasty value (or a field removed), sealed again.
fn resealed(line: &[u8], pick: usize, v: Option<Value>) -> Vec<u8> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(line) else {
        return line.to_vec();
    };
    let keys: Vec<String> = fields.keys().filter(|k| *k != "crc").cloned().collect();
    if keys.is_empty() {
        return line.to_vec();
    }
    let key = keys[pick % keys.len()].clone();
    match v {
        Some(v) => fields.insert(key, v),
        None => fields.remove(&key),
    };
    seal(&fields)
}

/// Good lines of every kind the log, snapshots and manifests hold, from a real store.
fn sample_lines(disk: &SimDisk, layout: &Layout) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let dirs = [layout.log_dir(), layout.old_logs()];
    for dir in dirs {
        for name in disk.list(&dir).unwrap_or_default() {
            let path = dir.join(std::str::from_utf8(&name).unwrap());
            if let Ok(bytes) = (disk as &dyn Disk).read(&path) {
                lines.extend(bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec));
            }
        }
    }
    lines.retain(|l| !l.is_empty());
    assert!(lines.len() >= 20, "only {} sample lines", lines.len());
    lines
}

/// A small store with every kind of entry, compacted once, then changed again.
fn base_store() -> (SimDisk, Layout) {
    let disk = SimDisk::new();
    let layout = Layout::new(Path::new(STORE));
    let start = || RecordFs::start_on(Arc::new(disk.clone()), Path::new(STORE), Options::default());
    let save = |fs: &RecordFs, name: &str, bytes: &[u8]| {
        let (_, fh, t) = fs
            .create(
                ROOT,
                name.as_bytes(),
                0o644,
                0,
                0,
                libc::O_WRONLY | libc::O_TRUNC,
            )
            .unwrap();
        fs.wait(t).unwrap();
        fs.write(fh, 0, bytes).unwrap();
        let t = fs.flush(fh).unwrap();
        fs.wait(t).unwrap();
        fs.release(fh);
    };
    let fs = start().unwrap();
    save(
        &fs,
        "00000001-0000-4000-8000-000000000000.json",
        b"{\"a\": 1}",
    );
    save(&fs, "notes.txt", b"plain");
    save(&fs, "gone.txt", b"x");
    let t = fs.symlink(ROOT, b"link", b"notes.txt", 0, 0).unwrap().1;
    fs.wait(t).unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    recordfs::compact::compact(&disk, &layout, &Options::default(), 3).unwrap();
    let fs = start().unwrap();
    save(&fs, "00000002-0000-4000-8000-000000000000.json", b"[2]");
    let t = fs
        .rename(ROOT, b"notes.txt", ROOT, b"renamed.txt", 0)
        .unwrap();
    fs.wait(t).unwrap();
    let t = fs.unlink(ROOT, b"gone.txt").unwrap();
    fs.wait(t).unwrap();
    let t = fs
        .rename(
            ROOT,
            b"00000001-0000-4000-8000-000000000000.json",
            ROOT,
            b"00000002-0000-4000-8000-000000000000.json",
            libc::RENAME_EXCHANGE,
        )
        .unwrap();
    fs.wait(t).unwrap();
    fs.shutdown().unwrap();
    (disk, layout)
}

#[test]
fn the_readers_answer_any_bytes_with_an_entry_or_an_error() {
    let (disk, layout) = base_store();
    let lines = sample_lines(&disk, &layout);
    let decode_all = |bytes: &[u8]| {
        let _ = log::decode_entry(bytes);
        let _ = log::decode_header(bytes);
        let _ = log::decode_snapshot(bytes);
        let _ = log::salvage_snapshot(bytes);
        let _ = log::decode_manifest(bytes);
    };
    let mut runner = TestRunner::new(config(2000));
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..2000), |bytes| {
            decode_all(&bytes);
            Ok(())
        })
        .unwrap();
    let mut runner = TestRunner::new(config(2000));
    let n = lines.len();
    runner
        .run(
            &(
                0..n,
                any::<usize>(),
                proptest::option::weighted(0.9, nasty()),
            ),
            |(i, pick, v)| {
                let line = resealed(&lines[i], pick, v);
                decode_all(&line);
                // A snapshot whose header or file line is damaged, as a whole file.
                let mut file = lines[i].clone();
                file.push(b'\n');
                file.extend_from_slice(&line);
                decode_all(&file);
                Ok(())
            },
        )
        .unwrap();
    for name in [
        "00000000000000000000.log",
        "18446744073709551615.log",
        "1.log",
    ] {
        assert_eq!(log::parse_segment_name(name), None, "{name}");
    }
}

#[derive(Clone, Debug)]
enum Damage {
    /// Bytes overwritten at these offsets (modulo the file's length).
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// One line's field replaced (or removed), sealed again with a good checksum.
    Field {
        line: usize,
        pick: usize,
        value: Option<Value>,
    },
    /// The file renamed to another number.
    Rename(String),
    Replace(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Damage::Flip),
        any::<usize>().prop_map(Damage::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(at, b)| Damage::Insert(at, b)),
        (
            any::<usize>(),
            any::<usize>(),
            proptest::option::weighted(0.9, nasty())
        )
            .prop_map(|(line, pick, value)| Damage::Field { line, pick, value }),
        prop_oneof![
            Just("00000000000000000000".to_string()),
            Just("18446744073709551615".to_string()),
            Just(format!("{:020}", recordfs::types::MAX_ID)),
            Just(format!("{:020}", recordfs::types::MAX_ID + 1)),
            (0u64..40).prop_map(|n| format!("{n:020}")),
        ]
        .prop_map(Damage::Rename),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Damage::Replace),
    ]
}

/// Applies `d` to `path` on `disk`.
fn apply(disk: &SimDisk, path: &Path, d: &Damage) {
    let mut bytes = (disk as &dyn Disk).read(path).unwrap();
    let len = bytes.len().max(1);
    match d {
        Damage::Flip(at) => {
            for (i, b) in at {
                if let Some(x) = bytes.get_mut(i % len) {
                    *x = *b;
                }
            }
        }
        Damage::Truncate(at) => bytes.truncate(at % len),
        Damage::Insert(at, b) => {
            let at = (at % len).min(bytes.len());
            bytes.splice(at..at, b.iter().copied());
        }
        Damage::Field { line, pick, value } => {
            let mut lines: Vec<Vec<u8>> =
                bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            let i = line % lines.len();
            lines[i] = resealed(&lines[i], *pick, value.clone());
            bytes = lines.join(&b'\n');
        }
        Damage::Rename(number) => {
            let name = path.file_name().unwrap().to_str().unwrap();
            let suffix = &name[name.find('.').unwrap_or(name.len())..];
            let to = path.with_file_name(format!("{number}{suffix}"));
            if disk.stat(&to).is_err() {
                disk.rename(path, &to).unwrap();
            }
            return;
        }
        Damage::Replace(b) => bytes = b.clone(),
    }
    disk.write_file(path, &bytes, None).unwrap();
}

/// Runs `f` on a thread of its own: a panic is reported as such, a hang after 30 s.
fn bounded<T: Send + 'static>(what: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: panicked: {why}")
        }
        Err(_) => panic!("{what}: no answer within 30 s (a hang)"),
    }
}

#[test]
fn recovery_check_and_salvage_answer_any_damage_without_panic_or_hang() {
    let (disk, layout) = base_store();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [layout.log_dir(), layout.old_logs()] {
        for name in disk.list(&dir).unwrap() {
            let p = dir.join(std::str::from_utf8(&name).unwrap());
            if disk
                .stat(&p)
                .is_ok_and(|s| s.kind == recordfs::disk::EntryKind::File)
            {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    let (mounted, salvaged) = (
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    );
    let mut runner = TestRunner::new(config(300));
    let n = files.len();
    runner
        .run(
            &(proptest::collection::vec((0..n, damage()), 1..3)),
            |damages| {
                let d = disk.fork();
                for (i, dmg) in &damages {
                    if d.stat(&files[*i]).is_ok() {
                        apply(&d, &files[*i], dmg);
                    }
                }
                let what = format!("{damages:?}");
                let (m, s) = bounded(what, move || {
                    let layout = Layout::new(Path::new(STORE));
                    let _ = recovery::check(&d, &layout);
                    let try_mount = |opts: Options| {
                        let fs = RecordFs::start_on(Arc::new(d.fork()), Path::new(STORE), opts);
                        fs.map(|fs| {
                            let _ = fs.statfs();
                            let listed = fs.opendir(ROOT).and_then(|h| fs.readdir(h, 0));
                            for e in listed.unwrap_or_default() {
                                if let Ok((h, _)) = fs.open(e.ino, libc::O_RDONLY) {
                                    let _ = fs.read(h, 0, 4096);
                                    fs.release(h);
                                }
                            }
                            let shut = fs.shutdown();
                            assert!(
                                shut.as_ref()
                                    .err()
                                    .is_none_or(|e| !e.reason.contains("panicked")),
                                "{shut:?}"
                            );
                        })
                    };
                    let mounted = try_mount(Options::default()).is_ok();
                    let salvaged = try_mount(Options {
                        salvage: true,
                        ..Options::default()
                    })
                    .is_ok();
                    (mounted, salvaged)
                });
                let relaxed = std::sync::atomic::Ordering::Relaxed;
                mounted.fetch_add(usize::from(m), relaxed);
                salvaged.fetch_add(usize::from(s), relaxed);
                Ok(())
            },
        )
        .unwrap();
    // Not a vacuous run: some damage is mended, some refused and then salvaged.
    let (mounted, salvaged) = (mounted.into_inner(), salvaged.into_inner());
    eprintln!("mounted {mounted}, salvaged {salvaged} of the damaged stores");
    assert!(mounted > 0 && salvaged > mounted, "{mounted} {salvaged}");
}
