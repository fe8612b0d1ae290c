//! Several processes on one mount at once, and two writers of one file.

mod common;
use common::*;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const WORKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/concurrent_worker.py"
);

/// Writers saving the same and their own records, readers reading them all, and holders
/// renaming and unlinking files they keep open, for a few seconds: every read is one whole
/// version, no reader sees a writer go back, open descriptors survive rename and unlink, and
/// everything finishes (no deadlock) within a bound.
#[test]
fn processes_reading_and_writing_at_once() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let shared = env.path(&record(0x5e));
    let secs: f64 = std::env::var("RECORDFS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);
    let writers = 3;
    let spawn = |role: &str, id: usize| {
        Command::new("python3")
            .arg(WORKER)
            .args([role, &id.to_string(), env.mnt.to_str().unwrap()])
            .arg(&shared)
            .args([secs.to_string(), writers.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut procs: Vec<(String, std::process::Child)> = Vec::new();
    for w in 0..writers {
        procs.push((format!("writer {w}"), spawn("writer", w)));
    }
    for r in 0..3 {
        procs.push((format!("reader {r}"), spawn("reader", r)));
    }
    for h in 0..2 {
        procs.push((format!("holder {h}"), spawn("holder", h)));
    }
    let limit = Duration::from_secs_f64(secs + 60.0);
    let mut reports = Vec::new();
    for (who, mut child) in procs {
        let done = wait_until(limit, || child.try_wait().ok().flatten().is_some());
        if !done {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            done,
            "{who} did not finish within {limit:?}: a deadlock? {text}"
        );
        assert!(out.status.success(), "{who}: {text}");
        reports.push(format!("{who}: {}", text.trim()));
    }
    eprintln!("{}", reports.join("\n"));
    // Last commit wins: once all are done, the shared record is one writer's last version.
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&shared).unwrap()).unwrap();
    assert_eq!(
        v["sum"].as_u64().unwrap(),
        v["writer"].as_u64().unwrap() * 1_000_000 + v["seq"].as_u64().unwrap()
    );
    let names: Vec<String> = fs::read_dir(&env.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("held-") && !n.ends_with(".tmp")),
        "{names:?}"
    );
}

/// Two descriptors writing one file: each holds its own copy and commits it whole, so the
/// last close wins, with none of the other's bytes (README, Semantics: a local filesystem would
/// merge the two at byte level).
#[test]
fn two_writers_of_one_file_last_commit_wins_whole() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path(&record(0x2f));
    fs::write(&p, "{\"v\": \"original\"}").unwrap();
    let open = || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap()
    };
    let (mut a, mut b) = (open(), open());
    a.write_all(b"{\"v\": \"from a, longer than b\"}").unwrap();
    b.write_all(b"{\"v\": \"b\"}").unwrap();
    // Each sees its own writes, not the other's.
    let mut seen = String::new();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "{\"v\": \"from a, longer than b\"}");
    drop(b);
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"v\": \"b\"}");
    drop(a);
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "{\"v\": \"from a, longer than b\"}"
    );
}
