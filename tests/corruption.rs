//! Corruption sweep.
//!
//! Guards against: damage to the log or the backing files that `recordfs check` misses, that
//! makes recovery panic, or that recovery "repairs" into a store that is still unsound. Every
//! line of a real store's log (header, middle, last) gets a flipped bit, a cut, a duplicate, a
//! deletion and a zeroed 512-byte block; every backing file a flipped bit (mtime kept, as bit
//! rot), a cut, a zeroed block, a deletion and an extra byte. For each: `check` must report it;
//! opening the store must refuse it (damage in the middle of the log) or recover, never panic;
//! and a recovered store must then pass `check`.

mod common;
use common::*;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use recordfs::files::RecordFs;
use recordfs::log::{decode_entry, Entry, Op};
use recordfs::options::Options;

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

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

enum Target {
    Log,
    Backing(String),
}

/// Changes the bytes of the damaged file.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

struct Case {
    label: String,
    target: Target,
    mutate: Mutation,
    keep_mtime: bool,
    /// The log lines whose entries the damage takes away.
    lost_lines: Vec<usize>,
}

fn log_cases(log: &[u8], rng: &mut Rng) -> Vec<Case> {
    let ls = lines(log);
    let mut cases = Vec::new();
    for (i, &(s, e)) in ls.iter().enumerate() {
        let where_ = if i == 0 {
            "header".to_string()
        } else if i + 1 == ls.len() {
            format!("last line {i}")
        } else {
            format!("line {i}")
        };
        let bit = s + rng.below(e - s - 1);
        let mask = 1u8 << rng.below(8);
        cases.push(Case {
            label: format!("log {where_}: flip bit at {bit}"),
            target: Target::Log,
            keep_mtime: false,
            lost_lines: vec![i],
            mutate: Box::new(move |b| b[bit] ^= mask),
        });
        let cut = s + 1 + rng.below(e - s - 2);
        cases.push(Case {
            label: format!("log {where_}: cut at {cut}"),
            target: Target::Log,
            keep_mtime: false,
            lost_lines: (i..ls.len()).collect(),
            mutate: Box::new(move |b| b.truncate(cut)),
        });
        cases.push(Case {
            label: format!("log {where_}: duplicated"),
            target: Target::Log,
            keep_mtime: false,
            lost_lines: vec![],
            mutate: Box::new(move |b| {
                let line = b[s..e].to_vec();
                b.splice(e..e, line);
            }),
        });
        cases.push(Case {
            label: format!("log {where_}: dropped"),
            target: Target::Log,
            keep_mtime: false,
            lost_lines: vec![i],
            mutate: Box::new(move |b| {
                b.drain(s..e);
            }),
        });
        cases.push(Case {
            label: format!("log {where_}: 512 bytes zeroed"),
            target: Target::Log,
            keep_mtime: false,
            lost_lines: (i..ls.len()).filter(|&j| ls[j].0 < s + 512).collect(),
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
            let bit = rng.below(len);
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
    /// Every version its log ever committed (file bytes and symlink targets).
    versions: HashSet<Vec<u8>>,
    log: Vec<u8>,
    segment: std::ffi::OsString,
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

fn entry_lines(log: &[u8]) -> impl Iterator<Item = Entry> + '_ {
    lines(log)
        .into_iter()
        .skip(1)
        .filter_map(|(s, e)| decode_entry(&log[s..e - 1]).ok())
}

fn committed_versions(log: &[u8]) -> HashSet<Vec<u8>> {
    entry_lines(log)
        .filter_map(|entry| match entry.op {
            Op::Set { data, .. } => Some(data.bytes.to_vec()),
            _ => None,
        })
        .collect()
}

/// `--salvage` on a store whose log a case damaged: it mounts; the store is then sound; every
/// file that no lost entry names is exactly as before; the others (and whatever was set aside)
/// hold versions that were committed; the damaged segment is retired, not deleted.
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
    // The names a lost entry touches: its own, and every name its file ever had.
    let at = lines(&template.log);
    let lost: Vec<Entry> = case
        .lost_lines
        .iter()
        .filter_map(|&i| decode_entry(&template.log[at[i].0..at[i].1 - 1]).ok())
        .collect();
    let fids: HashSet<u64> = lost.iter().filter_map(|e| e.op.fid()).collect();
    let touched: HashSet<String> = entry_lines(&template.log)
        .filter(|e| e.op.fid().is_some_and(|f| fids.contains(&f)))
        .chain(lost)
        .flat_map(|e| {
            e.op.names()
                .into_iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let got = tree(&store.join("root"));
    for (name, bytes) in &template.tree {
        if !touched.contains(name) {
            assert!(
                got.get(name) == Some(bytes),
                "{}: {name}, which no lost entry touches, changed",
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
    assert!(
        store
            .join("log")
            .join("old")
            .join(&template.segment)
            .exists(),
        "{}: the damaged segment is kept in log/old/",
        case.label
    );
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
    let (code, out) = check(&env.store);
    assert_eq!(
        code, 0,
        "the template store is sound before the sweep: {out}"
    );
    let segment = env.log_segment();
    let log = fs::read(&segment).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut backing: Vec<String> = fs::read_dir(env.store.join("root"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    backing.sort();
    let template = Template {
        tree: tree(&env.store.join("root")),
        versions: committed_versions(&log),
        log: log.clone(),
        segment: segment.file_name().unwrap().to_owned(),
    };
    let mut cases = log_cases(&log, &mut rng);
    cases.extend(backing_cases(&backing, &mut rng, &env.store));

    let (mut detected, mut refused, mut recovered) = (0, 0, 0);
    let mut missed = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let store: PathBuf = env.dir.path().join(format!("case{n}"));
        copy_dir(&env.store, &store);
        let path = match &case.target {
            Target::Log => store.join("log").join(segment.file_name().unwrap()),
            Target::Backing(name) => store.join("root").join(name),
        };
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        if case.label.ends_with("deleted") {
            fs::remove_file(&path).unwrap();
        } else {
            let mut bytes = fs::read(&path).unwrap();
            (case.mutate)(&mut bytes);
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
        } else {
            missed.push(case.label.clone());
        }
        let opened = catch_unwind(AssertUnwindSafe(|| {
            RecordFs::start(&store, Options::default())
        }));
        match opened {
            Err(_) => panic!("{}: recovery panicked", case.label),
            Ok(Err(e)) => {
                assert!(
                    matches!(case.target, Target::Log),
                    "{}: a damaged backing file must be repaired, not refused: {e}",
                    case.label
                );
                assert!(
                    e.reason.contains(".log") && e.reason.contains("--salvage"),
                    "{}: the error names the log segment and the way out: {e}",
                    case.label
                );
                refused += 1;
                salvage_keeps_every_commit_it_can(case, &store, &template);
            }
            Ok(Ok(fs)) => {
                fs.shutdown()
                    .unwrap_or_else(|e| panic!("{}: {e}", case.label));
                drop(fs);
                let (code, report) = check(&store);
                assert_eq!(
                    code, 0,
                    "{}: the recovered store is not sound: {report}",
                    case.label
                );
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
        "corruption sweep: {} injected, {detected} detected by check, {refused} refused at mount, {recovered} recovered",
        cases.len()
    );
    assert!(
        missed.is_empty(),
        "check missed {} of {}: {missed:#?}",
        missed.len(),
        cases.len()
    );
}
