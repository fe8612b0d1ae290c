//! SIGKILL storms on a real mount.
//!
//! Guards against: a commit acknowledged under `--sync always` (close returned 0) that is gone
//! after the daemon is killed; a record left torn, empty over old content, or holding a value
//! nobody wrote. Four writer processes commit records while the daemon is killed at random
//! moments; after each remount every record must hold its last acknowledged version or a
//! version attempted after it; with directories, each writer's folder is where its last
//! acknowledged move put it (or where a move tried after it would), and a scratch directory
//! acknowledged made or removed is there or gone; with a large file, it holds the content of
//! its last acknowledged change or of the one tried after it. `RECORDFS_SOAK=N` runs N rounds
//! instead of 30.

mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WRITERS: u32 = 4;
const RECORDS_PER_WRITER: u32 = 6;

/// Parses a record written by storm_writer.py and checks it is whole: (writer, n).
fn whole_version(text: &str) -> Option<(u32, u64)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let (w, n) = (v["w"].as_u64()? as u32, v["n"].as_u64()?);
    let pad = ((w as u64) * 7919 + n * 104_729) % 5000;
    let expect = format!(
        "{{\"w\": {w}, \"n\": {n}, \"pad\": \"{}\"}}",
        "x".repeat(pad as usize)
    );
    (text == expect).then_some((w, n))
}

/// What a record may hold after a crash: its last acknowledged version, or any attempted
/// after it (committed but unanswered when the daemon died); "" for a record being created.
#[derive(Clone, Default)]
struct Allowed {
    versions: HashSet<u64>,
    empty: bool,
}

#[test]
fn sigkill_storm_loses_no_acknowledged_commit() {
    storm(soak(30), &[], false, false);
}

/// The same storm with a log limit so small that the daemon is nearly always compacting: the
/// kills land before, during and after online compactions.
#[test]
fn sigkill_storm_during_online_compaction_loses_no_acknowledged_commit() {
    storm(
        soak(12),
        &["--log-limit", "65536", "--keep-logs", "2"],
        false,
        false,
    );
}

/// Writers that also move their folder between two directories, make and remove directories
/// and give records a second name by hard link (issue 11), with compactions under way.
#[test]
fn sigkill_storm_with_directories_loses_no_acknowledged_change() {
    storm(soak(20), &["--log-limit", "65536"], true, false);
}

/// Beside the record writers, one that appends to a large plain file, writes in its middle
/// and rewrites it from the start (issue 12): patches applied in place, replayed after each
/// kill onto the backing file as the kill left it, with compactions under way.
#[test]
fn sigkill_storm_with_a_large_file_loses_no_acknowledged_change() {
    storm(soak(20), &["--log-limit", "262144"], false, true);
}

/// What `tests/support/big_writer.py` says the large file holds after change `v`.
fn big_content(v: u64) -> Vec<u8> {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/big_writer.py"
        ))
        .arg("--content")
        .arg(v.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The folders a writer's records may be in, by what the writers said.
#[derive(Clone, Default)]
struct Places {
    acked: String,
    tried: HashSet<String>,
}

/// What a scratch directory must be after a crash: there (Some(true)), gone (Some(false)), or
/// either (None).
type Scratch = HashMap<String, Option<bool>>;

fn soak(default: u64) -> u64 {
    std::env::var("RECORDFS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn storm(rounds: u64, args: &[&str], dirs: bool, big: bool) {
    let writer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/storm_writer.py");
    let env = Env::new();
    // Per record: the state known after the last verification (None: never created).
    let mut known: HashMap<String, Option<u64>> = HashMap::new();
    let (mut acked_total, mut checked_total, mut dir_changes) = (0u64, 0u64, 0u64);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut daemon_log = std::path::PathBuf::new();
    let mut places: HashMap<u32, Places> = HashMap::new();
    let mut scratch: Scratch = HashMap::new();
    // Second names of records: acknowledged (Some(true)) or tried (None).
    let mut links: Scratch = HashMap::new();
    // The large file's last change seen after a remount, and how many were acknowledged.
    let (mut big_known, mut big_acked) = (0u64, 0u64);
    for round in 1..=rounds {
        let m = env.mount(args);
        daemon_log = m.log.clone();
        if big && round == 1 {
            fs::write(env.path("big.bin"), big_content(0)).unwrap();
        }
        let big_child = big.then(|| {
            Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/support/big_writer.py"
                ))
                .arg(&env.mnt)
                .arg(big_known.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        });
        if dirs && round == 1 {
            for w in 0..WRITERS {
                fs::create_dir_all(env.path(&format!("c{w}/live"))).unwrap();
                fs::create_dir_all(env.path(&format!("c{w}/shelf"))).unwrap();
                fs::create_dir_all(env.path(&format!("c{w}/links"))).unwrap();
                places.insert(
                    w,
                    Places {
                        acked: "live".into(),
                        tried: HashSet::new(),
                    },
                );
            }
        }
        let children: Vec<Child> = (0..WRITERS)
            .map(|w| {
                Command::new("python3")
                    .arg(writer)
                    .arg(&env.mnt)
                    .arg(w.to_string())
                    .arg(RECORDS_PER_WRITER.to_string())
                    .arg(round.to_string())
                    .args(dirs.then_some("--dirs"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let delay = 150 + next() % 450;
        if args.contains(&"--log-limit") {
            // However slow the machine, a compaction is under way when the kill comes: ask
            // for one (SIGUSR1) partway through the round.
            std::thread::sleep(Duration::from_millis(delay / 2));
            let pid = m.child.as_ref().map(|c| c.id() as i32).unwrap();
            unsafe { libc::kill(pid, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(delay - delay / 2));
        } else {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let mnt = m.mnt.clone();
        let mut m = Some(m);
        // SIGKILL the daemon, but leave its dead mount until the writers have all failed:
        // after `umount -l` their paths would reach the empty directory underneath.
        if let Some(mut c) = m.as_mut().and_then(|m| m.child.take()) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        let mut outputs = Vec::new();
        for c in children {
            let out = wait_output(c, Duration::from_secs(20));
            outputs.push(out);
        }
        let big_output = big_child.map(|c| wait_output(c, Duration::from_secs(20)));
        drop(m.take());
        force_unmount(&mnt);

        // What each record may hold now.
        let mut allowed: HashMap<String, Allowed> = HashMap::new();
        for (name, state) in &known {
            let a = allowed.entry(name.clone()).or_default();
            match state {
                Some(n) => {
                    a.versions.insert(*n);
                }
                None => a.empty = true,
            }
        }
        for out in &outputs {
            for line in out.lines() {
                let parts: Vec<&str> = line.split(' ').collect();
                match parts.as_slice() {
                    ["TRY", name, n] => {
                        let a = allowed.entry(name.to_string()).or_insert_with(|| Allowed {
                            empty: true,
                            ..Allowed::default()
                        });
                        a.versions.insert(n.parse().unwrap());
                    }
                    ["ACK", name, n] => {
                        let n: u64 = n.parse().unwrap();
                        let a = allowed.get_mut(*name).unwrap();
                        // Acknowledged: nothing before it may come back.
                        a.versions.retain(|v| *v >= n);
                        a.empty = false;
                        acked_total += 1;
                    }
                    ["MOVE", w, to] => {
                        places
                            .get_mut(&w.parse().unwrap())
                            .unwrap()
                            .tried
                            .insert(to.to_string());
                    }
                    ["MOVED", w, to] => {
                        let p = places.get_mut(&w.parse().unwrap()).unwrap();
                        (p.acked, p.tried) = (to.to_string(), HashSet::new());
                        dir_changes += 1;
                    }
                    ["LINK", w, name] => {
                        links.entry(format!("c{w}/links/{name}")).or_insert(None);
                    }
                    ["LINKED", w, name] => {
                        links.insert(format!("c{w}/links/{name}"), Some(true));
                        dir_changes += 1;
                    }
                    ["MKDIR" | "RMDIR", w, d] => {
                        scratch.insert(format!("c{w}/{d}"), None);
                    }
                    ["MADE", w, d] => {
                        scratch.insert(format!("c{w}/{d}"), Some(true));
                        dir_changes += 1;
                    }
                    ["REMOVED", w, d] => {
                        scratch.insert(format!("c{w}/{d}"), Some(false));
                        dir_changes += 1;
                    }
                    _ => {}
                }
            }
        }
        let m = env.mount(args);
        if let Some(out) = big_output {
            // The last acknowledged change, or the one tried after it.
            let mut allowed = vec![big_known];
            for line in out.lines() {
                match line.split_once(' ') {
                    Some(("TRY", v)) => allowed.push(v.parse().unwrap()),
                    Some(("ACK", v)) => {
                        let v: u64 = v.parse().unwrap();
                        allowed.retain(|a| *a >= v);
                        big_acked += 1;
                    }
                    _ => {}
                }
            }
            let got = fs::read(env.path("big.bin")).unwrap();
            big_known = *allowed
                .iter()
                .find(|v| big_content(**v) == got)
                .unwrap_or_else(|| {
                    panic!(
                        "round {round}: big.bin ({} bytes) is none of changes {allowed:?}",
                        got.len()
                    )
                });
            checked_total += 1;
        }
        // Each writer's folder: where the last acknowledged move put it, or a later one.
        let mut folder: HashMap<u32, String> = HashMap::new();
        for (w, p) in places.iter_mut() {
            let found: Vec<&str> = ["live", "shelf/live"]
                .into_iter()
                .filter(|at| env.path(&format!("c{w}/{at}")).is_dir())
                .collect();
            assert_eq!(
                found.len(),
                1,
                "round {round}: writer {w}'s folder is at {found:?}"
            );
            let at = found[0].to_string();
            assert!(
                at == p.acked || p.tried.contains(&at),
                "round {round}: writer {w}'s folder is at {at}, acknowledged at {}",
                p.acked
            );
            (p.acked, p.tried) = (at.clone(), HashSet::new());
            folder.insert(*w, format!("c{w}/{at}/"));
            checked_total += 1;
        }
        for (d, want) in scratch.iter_mut() {
            let there = env.path(d).is_dir();
            assert!(
                want.is_none_or(|w| w == there),
                "round {round}: scratch directory {d}: there {there}, acknowledged {want:?}"
            );
            *want = Some(there);
        }
        // An acknowledged link is there; any link there names the record itself.
        for (link, want) in links.iter_mut() {
            let there = fs::symlink_metadata(env.path(link)).ok();
            assert!(
                *want != Some(true) || there.is_some(),
                "round {round}: acknowledged link {link} is gone"
            );
            if let Some(meta) = there {
                let (w, name) = link.split_once("/links/").unwrap();
                let rec = format!("{}{name}", folder[&w[1..].parse::<u32>().unwrap()]);
                let rec_meta = fs::symlink_metadata(env.path(&rec))
                    .unwrap_or_else(|e| panic!("round {round}: {link} is there, {rec}: {e}"));
                assert_eq!(
                    meta.ino(),
                    rec_meta.ino(),
                    "round {round}: {link} and {rec}"
                );
                assert_eq!(rec_meta.nlink(), 2, "round {round}: {rec}");
                *want = Some(true);
                checked_total += 1;
            }
        }
        for (name, a) in &allowed {
            let writer = u32::from_str_radix(&name[..4], 16).unwrap();
            let path = format!("{}{name}", folder.get(&writer).map_or("", String::as_str));
            let text = match fs::read_to_string(env.path(&path)) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && a.empty => {
                    known.insert(name.clone(), None);
                    continue;
                }
                Err(e) => panic!("round {round}: {name}: {e}"),
            };
            if text.is_empty() {
                assert!(
                    a.empty,
                    "round {round}: {name} is empty but held an acknowledged version"
                );
                known.insert(name.clone(), None);
                continue;
            }
            let (_, n) = whole_version(&text)
                .unwrap_or_else(|| panic!("round {round}: {name} is torn: {} bytes", text.len()));
            assert!(
                a.versions.contains(&n),
                "round {round}: {name} holds version {n}, allowed {:?}",
                a.versions
            );
            known.insert(name.clone(), Some(n));
            checked_total += 1;
        }
        m.stop();
    }
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    if args.contains(&"--log-limit") {
        // Kills land during compactions: on a busy machine a compaction's syncfs may outlast
        // every round, so what must be seen is compactions under way, finished or not.
        let daemon = fs::read_to_string(&daemon_log).unwrap_or_default();
        let started = daemon.matches("compacting the log up to entry").count();
        let finished = daemon.matches("compacted the log up to entry").count();
        assert!(started > 0, "no compaction started during the storm");
        eprintln!("storm: {started} compactions started, {finished} finished before a kill");
    }
    eprintln!("storm: {rounds} kill rounds, {acked_total} acknowledged commits, {dir_changes} acknowledged directory moves, mkdirs, rmdirs and links, {big_acked} acknowledged changes of the large file (at change {big_known}), {checked_total} states checked");
}

/// Waits for a child to exit (killing it after `limit`) and returns its stdout.
fn wait_output(mut c: Child, limit: Duration) -> String {
    let exited = wait_until(limit, || matches!(c.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = c.kill();
    }
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
