//! Corruption sweep.
//!
//! Guards against: damage to the log or the backing files that `recordfs check` misses, that
//! makes recovery panic, or that recovery "repairs" into a store that is still unsound. Every
//! line of a real store's log (header, middle, last) gets a flipped bit, a cut, a duplicate, a
//! deletion and a zeroed 512-byte block; every backing file a flipped bit (mtime kept, as bit
//! rot), a cut, a zeroed block, a deletion and an extra byte. For each: `check` must report it;
//! opening the store must refuse it (damage in the middle of the log) or recover, never panic;
//! every file must then read its committed bytes or answer EIO (a damaged backing file is
//! found at its first read, restored from the log if it holds the bytes; a symlink at its
//! first readlink); and a recovered store must then pass `check` (where the damage left the
//! log ending early, as a log whose last lines were never written looks, the files those lines
//! made are strays the mount does not look for: after a mount with `--verify`). A refused store must then mount with
//! `--salvage`, keeping every commit the damage did not take. The same is done to every line of
//! a compacted store's manifest, snapshot and live segment.

mod common;
use common::*;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use recordfs::fs::RecordFs;
use recordfs::log::{decode_entry, Entry, Op};
use recordfs::options::Options;
use recordfs::types::{Kind, ROOT};

fn build_template(env: &Env) {
    let m = env.mount(&[]);
    for i in 0..6u32 {
        fs::write(
            env.path(&record(i)),
            format!(
                "{{\"i\": {i}, \"text\": \"{}\"}}",
                "t".repeat(600 * i as usize)
            ),
        )
        .unwrap();
    }
    fs::write(env.path("notes.txt"), "plain\n").unwrap();
    fs::write(env.path("blob.bin"), [0u8, 1, 2, 255, 254]).unwrap();
    std::os::unix::fs::symlink("target", env.path("lock-link")).unwrap();
    fs::rename(env.path(&record(5)), env.path(&record(9))).unwrap();
    fs::remove_file(env.path(&record(4))).unwrap();
    m.stop();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"i\": 1, \"second\": true}").unwrap();
    fs::write(env.path("notes.txt"), "plain, edited\n").unwrap();
    fs::write(env.path(&record(7)), "[7]").unwrap();
    // Let the backing files catch up (the apply thread writes them after the log sync, in
    // order: the last one written means all are), then crash.
    let caught_up = wait_until(std::time::Duration::from_secs(10), || {
        fs::read(env.backing(&record(7))).ok().as_deref() == Some(b"[7]".as_slice())
    });
    assert!(caught_up, "the backing files did not catch up");
    m.kill9();
}

/// Byte ranges of the log's lines, newline included.
fn lines(log: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in log.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    out
}

/// Where the damage falls within each line: `RECORDFS_SEED` moves it (the lines damaged and
/// the kinds of damage stay all of them).
fn seed(default: u64) -> u64 {
    std::env::var("RECORDFS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(default, |s| default ^ s.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

enum Target {
    /// A file of the log (segment, snapshot, manifest), relative to the store.
    Log(PathBuf),
    Backing(String),
}

/// Changes the bytes of the damaged file.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

struct Case {
    label: String,
    target: Target,
    mutate: Mutation,
    keep_mtime: bool,
    /// The lines of the damaged file that the damage takes away.
    lost_lines: Vec<Vec<u8>>,
}

/// Every line of a log file (`rel` in the store) damaged five ways.
fn log_cases(rel: &Path, log: &[u8], rng: &mut Rng) -> Vec<Case> {
    let ls = lines(log);
    let line = |j: usize| log[ls[j].0..ls[j].1 - 1].to_vec();
    let mut cases = Vec::new();
    for (i, &(s, e)) in ls.iter().enumerate() {
        let where_ = if i == 0 {
            format!("{} first line", rel.display())
        } else if i + 1 == ls.len() {
            format!("{} last line {i}", rel.display())
        } else {
            format!("{} line {i}", rel.display())
        };
        let bit = s + rng.below((e - s - 1) as u64) as usize;
        let mask = 1u8 << rng.below(8);
        cases.push(Case {
            label: format!("{where_}: flip bit at {bit}"),
            target: Target::Log(rel.to_owned()),
            keep_mtime: false,
            lost_lines: vec![line(i)],
            mutate: Box::new(move |b| b[bit] ^= mask),
        });
        let cut = s + 1 + rng.below((e - s - 2) as u64) as usize;
        cases.push(Case {
            label: format!("{where_}: cut at {cut}"),
            target: Target::Log(rel.to_owned()),
            keep_mtime: false,
            lost_lines: (i..ls.len()).map(line).collect(),
            mutate: Box::new(move |b| b.truncate(cut)),
        });
        cases.push(Case {
            label: format!("{where_}: duplicated"),
            target: Target::Log(rel.to_owned()),
            keep_mtime: false,
            lost_lines: vec![],
            mutate: Box::new(move |b| {
                let line = b[s..e].to_vec();
                b.splice(e..e, line);
            }),
        });
        cases.push(Case {
            label: format!("{where_}: dropped"),
            target: Target::Log(rel.to_owned()),
            keep_mtime: false,
            lost_lines: vec![line(i)],
            mutate: Box::new(move |b| {
                b.drain(s..e);
            }),
        });
        cases.push(Case {
            label: format!("{where_}: 512 bytes zeroed"),
            target: Target::Log(rel.to_owned()),
            keep_mtime: false,
            lost_lines: (i..ls.len())
                .filter(|&j| ls[j].0 < s + 512)
                .map(line)
                .collect(),
            mutate: Box::new(move |b| {
                let end = (s + 512).min(b.len());
                b[s..end].fill(0);
            }),
        });
    }
    cases
}

fn backing_cases(names: &[String], rng: &mut Rng, store: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for name in names {
        let len = fs::read(store.join("root").join(name)).unwrap().len();
        let t = || Target::Backing(name.clone());
        if len > 0 {
            let bit = rng.below(len as u64) as usize;
            let mask = 1u8 << rng.below(8);
            cases.push(Case {
                label: format!("backing {name}: flip bit at {bit} (mtime kept)"),
                target: t(),
                keep_mtime: true,
                lost_lines: vec![],
                mutate: Box::new(move |b| b[bit] ^= mask),
            });
            cases.push(Case {
                label: format!("backing {name}: cut to {}", len / 2),
                target: t(),
                keep_mtime: false,
                lost_lines: vec![],
                mutate: Box::new(move |b| b.truncate(len / 2)),
            });
            cases.push(Case {
                label: format!("backing {name}: 512 bytes zeroed (mtime kept)"),
                target: t(),
                keep_mtime: true,
                lost_lines: vec![],
                mutate: Box::new(move |b| {
                    let end = b.len().min(512);
                    b[..end].fill(0);
                }),
            });
        }
        cases.push(Case {
            label: format!("backing {name}: deleted"),
            target: t(),
            keep_mtime: false,
            lost_lines: vec![],
            mutate: Box::new(|_| {}),
        });
        cases.push(Case {
            label: format!("backing {name}: one byte appended"),
            target: t(),
            keep_mtime: false,
            lost_lines: vec![],
            mutate: Box::new(|b| b.push(b'\n')),
        });
    }
    cases
}

/// The undamaged store, to judge what a salvage keeps.
struct Template {
    /// Its backing tree: each name's bytes (a symlink's target).
    tree: BTreeMap<String, Vec<u8>>,
    /// Every entry its log ever held, retired segments included.
    history: Vec<Entry>,
    /// Every version it ever committed (file bytes and symlink targets).
    versions: HashSet<Vec<u8>>,
}

impl Template {
    fn of(store: &Path) -> Template {
        let mut history = Vec::new();
        for dir in [store.join("log").join("old"), store.join("log")] {
            let mut segments: Vec<PathBuf> = fs::read_dir(&dir)
                .map(|d| d.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default();
            segments.retain(|p| p.extension().is_some_and(|x| x == "log"));
            segments.sort();
            for segment in segments {
                let log = fs::read(segment).unwrap();
                history.extend(
                    lines(&log)
                        .into_iter()
                        .filter_map(|(s, e)| decode_entry(&log[s..e - 1]).ok()),
                );
            }
        }
        let versions = history
            .iter()
            .filter_map(|entry| match &entry.op {
                Op::Set { data, .. } => Some(data.bytes.to_vec()),
                _ => None,
            })
            .collect();
        Template {
            tree: tree(&store.join("root")),
            history,
            versions,
        }
    }

    /// The names the lost lines touch: their own, and every name their files ever had. A lost
    /// line is a log entry or a snapshot's file line.
    fn touched(&self, lost: &[Vec<u8>]) -> HashSet<String> {
        let mut names = HashSet::new();
        let mut fids = HashSet::new();
        for line in lost {
            if let Ok(entry) = decode_entry(line) {
                fids.extend(entry.op.fid());
                names.extend(entry.op.names().into_iter().map(text));
            } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                fids.extend(v["fid"].as_u64());
                names.extend(v["name"].as_str().map(String::from));
            }
        }
        for entry in &self.history {
            if entry.op.fid().is_some_and(|f| fids.contains(&f)) {
                names.extend(entry.op.names().into_iter().map(text));
            }
        }
        names
    }
}

fn text(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            let path = e.path();
            let bytes = match fs::read_link(&path) {
                Ok(target) => target.into_os_string().into_encoded_bytes(),
                Err(_) => fs::read(&path).unwrap(),
            };
            (e.file_name().into_string().unwrap(), bytes)
        })
        .collect()
}

/// `--salvage` on a store a case damaged: it mounts; the store is then sound; every file that
/// no lost line touches is exactly as before; the others (and whatever was set aside) hold
/// versions that were committed; a damaged segment or snapshot is retired, not deleted.
fn salvage_keeps_every_commit_it_can(case: &Case, store: &Path, template: &Template) {
    let opts = Options {
        salvage: true,
        ..Options::default()
    };
    let fs = RecordFs::start(store, opts)
        .unwrap_or_else(|e| panic!("{}: --salvage refused: {e}", case.label));
    fs.shutdown()
        .unwrap_or_else(|e| panic!("{}: {e}", case.label));
    drop(fs);
    let (code, report) = check(store);
    assert_eq!(
        code, 0,
        "{}: the salvaged store is not sound: {report}",
        case.label
    );
    let touched = template.touched(&case.lost_lines);
    let got = tree(&store.join("root"));
    for (name, bytes) in &template.tree {
        if !touched.contains(name) {
            assert!(
                got.get(name) == Some(bytes),
                "{}: {name}, which no lost line touches, changed",
                case.label
            );
        }
    }
    for (name, bytes) in got.iter().chain(&tree(&store.join("lost+found"))) {
        assert!(
            template.versions.contains(bytes),
            "{}: {name} holds bytes that were never committed",
            case.label
        );
    }
    if let Target::Log(rel) = &case.target {
        if rel
            .extension()
            .is_some_and(|x| x == "log" || x == "snapshot")
        {
            assert!(
                store
                    .join("log")
                    .join("old")
                    .join(rel.file_name().unwrap())
                    .exists(),
                "{}: the damaged file is kept in log/old/",
                case.label
            );
        }
    }
}

/// Writes a file anew through an O_TRUNC descriptor, as `echo > file` does; it must then read
/// back what was written.
fn rewrite(fs: &RecordFs, name: &str, label: &str) {
    let bytes = b"[\"written anew\"]";
    let fid = fs.lookup(ROOT, name.as_bytes()).unwrap().ino;
    let (fh, _) = fs
        .open(fid, libc::O_WRONLY | libc::O_TRUNC)
        .unwrap_or_else(|e| panic!("{label}: opening {name} to write it anew: {e}"));
    fs.write(fh, 0, bytes).unwrap();
    let ticket = fs
        .flush(fh)
        .unwrap_or_else(|e| panic!("{label}: {name}: {e}"));
    fs.wait(ticket).unwrap();
    fs.release(fh);
    let (fh, _) = fs
        .open(fid, libc::O_RDONLY)
        .unwrap_or_else(|e| panic!("{label}: {name} written anew, yet: {e}"));
    assert_eq!(fs.read(fh, 0, 100).unwrap(), bytes, "{label}: {name}");
    fs.release(fh);
}

/// Whether damage to a log segment left it ending early: its lines up to some line, then
/// zeros or nothing, as a segment whose last lines were never written looks (zeros are
/// written ahead of the lines).
fn ends_log_early(path: &Path, before: &[u8], after: &[u8]) -> bool {
    let kept = &after[..after.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)];
    path.extension().is_some_and(|x| x == "log")
        && kept.len() < before.len()
        && before.starts_with(kept)
        && kept.last() == Some(&b'\n')
}

/// Whether every problem `check` reports is a name in the backing tree that the log lacks.
fn only_strays(report: &str) -> bool {
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("PROBLEM"))
        .collect();
    !problems.is_empty()
        && problems
            .iter()
            .all(|p| p.contains("in the backing tree but not in the log"))
}

fn only_checkpoints(lost: &[Vec<u8>]) -> bool {
    !lost.is_empty()
        && lost
            .iter()
            .all(|line| decode_entry(line).is_ok_and(|e| matches!(e.op, Op::Checkpoint { .. })))
}

/// The files not served: those recovery named as impossible to restore, and those found so
/// at their first read (a backing file the last checkpoint vouched for is checked when first
/// read). Each answers EIO when opened; every other file opens and reads. Reading them all is
/// also what has every damaged backing file that the log can restore rewritten.
fn not_served(fs: &RecordFs, label: &str) -> Vec<String> {
    let named: Vec<String> = fs
        .findings()
        .iter()
        .filter(|f| f.what.contains("cannot be restored"))
        .map(|f| f.what.split(": ").next().unwrap().to_string())
        .collect();
    let dir = fs.opendir(ROOT).unwrap();
    let entries = fs.readdir(dir, 0).unwrap();
    fs.releasedir(dir);
    let mut eio = Vec::new();
    for e in entries.iter().filter(|e| e.kind == Kind::Symlink) {
        // A backing symlink is checked at its first readlink, as a file at its first read.
        fs.readlink(e.ino)
            .unwrap_or_else(|err| panic!("{label}: readlink {:?}: {err}", e.name));
    }
    for e in entries.iter().filter(|e| e.kind == Kind::File) {
        let name = String::from_utf8(e.name.clone()).unwrap();
        match fs.open(e.ino, libc::O_RDONLY) {
            Ok((fh, _)) => {
                fs.read(fh, 0, 1 << 20)
                    .unwrap_or_else(|e| panic!("{label}: {name} opens but does not read: {e}"));
                fs.release(fh);
            }
            Err(e) if e.errno == libc::EIO => eio.push(name),
            Err(e) => panic!("{label}: opening {name}: {e}"),
        }
    }
    for name in &named {
        assert!(
            eio.contains(name),
            "{label}: {name} cannot be restored but opens"
        );
    }
    eio.sort();
    eio
}

fn check(store: &Path) -> (i32, String) {
    let out = Command::new(BIN).arg("check").arg(store).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

#[test]
fn every_injected_corruption_is_detected_and_recovery_never_panics() {
    let env = Env::new();
    build_template(&env);
    let mut rng = Rng::new(seed(0x5eed_1234_abcd_9876));
    let segment = PathBuf::from("log/00000000000000000001.log");
    let mut cases = log_cases(
        &segment,
        &fs::read(env.store.join(&segment)).unwrap(),
        &mut rng,
    );
    let mut backing: Vec<String> = fs::read_dir(env.store.join("root"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    backing.sort();
    cases.extend(backing_cases(&backing, &mut rng, &env.store));
    sweep(&env, &cases);
    // Not a test of its own: the two would run in parallel in this process, and a child
    // spawned by one (cp, check) holds the other's store lock between fork and exec.
    compacted_store_damaged_in_its_manifest_snapshot_or_segment();
}

fn compacted_store_damaged_in_its_manifest_snapshot_or_segment() {
    let env = Env::new();
    build_template(&env);
    env.compact();
    // A new version, then an online compaction: a layer over that snapshot (FORMAT.md,
    // "Snapshot layers"), so both are damaged in turn.
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"i\": 1, \"third\": true}").unwrap();
    let snapshots = || count_names(&env.store.join("log"), |n| n.ends_with(".snapshot"));
    env.compact();
    assert!(
        wait_until(std::time::Duration::from_secs(30), || snapshots() == 2),
        "no layer over the snapshot"
    );
    // Commits after it: a new file, a rename, a delete.
    fs::write(env.path(&record(10)), "[10]").unwrap();
    fs::rename(env.path(&record(2)), env.path(&record(12))).unwrap();
    fs::remove_file(env.path("blob.bin")).unwrap();
    m.stop_cleanly();
    let mut rng = Rng::new(seed(0x0dd_ba11_5eed_cafe));
    let mut cases = Vec::new();
    for entry in fs::read_dir(env.store.join("log")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "MANIFEST" || name.ends_with(".snapshot") || name.ends_with(".log") {
            let rel = Path::new("log").join(&name);
            cases.extend(log_cases(
                &rel,
                &fs::read(env.store.join(&rel)).unwrap(),
                &mut rng,
            ));
        }
    }
    assert!(
        cases.iter().any(|c| c.label.contains(".snapshot"))
            && cases.iter().any(|c| c.label.contains("MANIFEST")),
        "the store was compacted"
    );
    sweep(&env, &cases);
}

/// Each case on a copy of the template store: `check` must report it; opening must refuse it
/// (naming the file and `--salvage`, which must then work) or recover it into a sound store.
fn sweep(env: &Env, cases: &[Case]) {
    let (code, out) = check(&env.store);
    assert_eq!(
        code, 0,
        "the template store is sound before the sweep: {out}"
    );
    let template = Template::of(&env.store);
    let (mut detected, mut refused, mut recovered, mut with_named_loss) = (0, 0, 0, 0);
    let mut strays_of_an_early_end = 0;
    let mut missed = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let store: PathBuf = env.dir.path().join(format!("case{n}"));
        copy_dir(&env.store, &store);
        let path = match &case.target {
            Target::Log(rel) => store.join(rel),
            Target::Backing(name) => store.join("root").join(name),
        };
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let mut ends_early = false;
        if case.label.ends_with("deleted") {
            fs::remove_file(&path).unwrap();
        } else {
            let mut bytes = fs::read(&path).unwrap();
            let before = bytes.clone();
            (case.mutate)(&mut bytes);
            ends_early = ends_log_early(&path, &before, &bytes);
            fs::write(&path, &bytes).unwrap();
            if case.keep_mtime {
                fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }
        }
        let (code, report) = check(&store);
        assert_ne!(code, 101, "{}: check panicked: {report}", case.label);
        if code != 0 {
            detected += 1;
        } else if !only_checkpoints(&case.lost_lines) {
            // A log that merely ends before its last checkpoints holds the same state and is
            // sound: nothing to detect. Anything else must be reported.
            missed.push(case.label.clone());
        }
        let opened = catch_unwind(AssertUnwindSafe(|| {
            RecordFs::start(&store, Options::default())
        }));
        match opened {
            Err(_) => panic!("{}: recovery panicked", case.label),
            Ok(Err(e)) => {
                let Target::Log(rel) = &case.target else {
                    panic!(
                        "{}: a damaged backing file must be repaired, not refused: {e}",
                        case.label
                    );
                };
                let file = rel.file_name().unwrap().to_string_lossy();
                assert!(
                    e.reason.contains(&*file) && e.reason.contains("--salvage"),
                    "{}: the error names the damaged file and the way out: {e}",
                    case.label
                );
                refused += 1;
                salvage_keeps_every_commit_it_can(case, &store, &template);
            }
            Ok(Ok(fs)) => {
                // A file whose bytes neither the log nor the backing tree still holds (its
                // entries lost with damage the log cannot tell from a torn write, after a
                // compaction took the bytes out of the log) must be named and not served, and
                // must not stop the store: it stops cleanly, reopens, and once such files are
                // unlinked (the user's way out) it is sound.
                let unrestorable = not_served(&fs, &case.label);
                fs.shutdown()
                    .unwrap_or_else(|e| panic!("{}: {e}", case.label));
                drop(fs);
                if !unrestorable.is_empty() {
                    let fs = RecordFs::start(&store, Options::default())
                        .unwrap_or_else(|e| panic!("{}: reopening: {e}", case.label));
                    assert_eq!(not_served(&fs, &case.label), unrestorable);
                    // The user's ways out: write it anew, or unlink it.
                    for (i, name) in unrestorable.iter().enumerate() {
                        if i % 2 == 0 {
                            rewrite(&fs, name, &case.label);
                            continue;
                        }
                        let gone = fs
                            .unlink(ROOT, name.as_bytes())
                            .and_then(|ticket| fs.wait(ticket));
                        assert!(gone.is_ok(), "{}: unlinking {name}: {gone:?}", case.label);
                    }
                    fs.shutdown()
                        .unwrap_or_else(|e| panic!("{}: {e}", case.label));
                }
                let (mut code, mut report) = check(&store);
                if code != 0 && ends_early && only_strays(&report) {
                    // The log's last lines gone, as an end never written looks: their files
                    // are strays, which the mount no longer walks the tree to find (FORMAT.md,
                    // "Recovery"); `--verify` must set them aside.
                    let verify = Options {
                        verify: true,
                        ..Options::default()
                    };
                    RecordFs::start(&store, verify)
                        .and_then(|fs| fs.shutdown())
                        .unwrap_or_else(|e| panic!("{}: --verify: {e}", case.label));
                    (code, report) = check(&store);
                    strays_of_an_early_end += 1;
                }
                assert_eq!(
                    code, 0,
                    "{}: the recovered store is not sound: {report}",
                    case.label
                );
                with_named_loss += usize::from(!unrestorable.is_empty());
                if let Target::Backing(name) = &case.target {
                    assert_eq!(
                        fs::read(store.join("root").join(name)).unwrap(),
                        fs::read(env.store.join("root").join(name)).unwrap(),
                        "{}: restored exactly",
                        case.label
                    );
                }
                recovered += 1;
            }
        }
        fs::remove_dir_all(&store).unwrap();
    }
    eprintln!(
        "corruption sweep: {} injected, {detected} detected by check, {refused} refused at mount and then salvaged, {recovered} recovered ({with_named_loss} with files named unrestorable, {strays_of_an_early_end} with strays of a log ended early set aside by --verify)",
        cases.len()
    );
    assert!(
        missed.is_empty(),
        "check missed {} of {}: {missed:#?}",
        missed.len(),
        cases.len()
    );
}
