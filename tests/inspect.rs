//! `recordfs log` and `recordfs stats` on a real store, mounted and not.

mod common;
use common::*;

use std::fs;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn log_prints_a_records_whole_history_as_json_lines() {
    let env = Env::new();
    let m = env.mount(&[]);
    let rec = record(1);
    fs::write(env.path(&rec), "{\"v\": 1}").unwrap();
    // A save by temp file and rename: the bytes are written under another name.
    fs::write(env.path("save.tmp"), "{\"v\": 2}").unwrap();
    fs::rename(env.path("save.tmp"), env.path(&rec)).unwrap();
    fs::write(env.path("other.txt"), "unrelated").unwrap();
    let store = env.store.to_str().unwrap();
    // Works while mounted.
    let (code, out) = run(&["log", store, "--name", &rec]);
    assert_eq!(code, 0);
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let datas: Vec<&str> = entries.iter().filter_map(|e| e["data"].as_str()).collect();
    assert_eq!(datas, ["", "{\"v\": 1}", "", "{\"v\": 2}"], "{out}");
    assert_eq!(entries.last().unwrap()["op"], "RENAME");
    assert!(!out.contains("other.txt"));
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // --since/--until bound the sequence numbers.
    let (_, out) = run(&[
        "log",
        store,
        "--since",
        &seqs[1].to_string(),
        "--until",
        &seqs[2].to_string(),
    ]);
    let got: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, (seqs[1]..=seqs[2]).collect::<Vec<_>>());
    m.stop();
}

#[test]
fn stats_counts_records_plain_files_and_the_log() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "[1]").unwrap();
    fs::write(env.path(&record(2)), "[22]").unwrap();
    fs::write(env.path("notes.txt"), "12345").unwrap();
    std::os::unix::fs::symlink("notes.txt", env.path("link")).unwrap();
    let store = env.store.to_str().unwrap();
    let (code, out) = run(&["stats", "--json", store]);
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (s["records"].as_u64(), s["record_bytes"].as_u64()),
        (Some(2), Some(7))
    );
    assert_eq!(
        (s["plain_files"].as_u64(), s["plain_bytes"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(s["symlinks"], 1);
    assert_eq!(s["log_segments"], 1);
    assert_eq!(s["last_checkpoint_seq"], serde_json::Value::Null);
    assert_eq!(
        s["log_bytes"].as_u64(),
        Some(fs::metadata(env.log_segment()).unwrap().len())
    );
    m.stop();
    let (_, out) = run(&["stats", "--json", store]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        s["last_checkpoint_seq"].as_u64().is_some(),
        "a clean stop writes a checkpoint: {out}"
    );
    let (code, text) = run(&["stats", store]);
    assert_eq!(code, 0);
    assert!(text.contains("records      2 (7 bytes)"), "{text}");
}

#[test]
fn long_work_shows_progress_on_a_terminal_and_is_quiet_otherwise() {
    let env = Env::new();
    let m = env.mount(&[]);
    for i in 0..20u32 {
        fs::write(env.path(&record(i)), "[]").unwrap();
    }
    m.stop();
    let store = env.store.to_str().unwrap();
    // A pipe: nothing but the report.
    let out = Command::new(BIN).args(["check", store]).output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("checking backing files"));
    // A terminal (script(1) gives the command a pseudo-terminal).
    let out = Command::new("script")
        .args(["-qec", &format!("{BIN} check {store}"), "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("checking backing files: 20/20"), "{text}");
}
