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

/// Runs the command line, returning (exit code, stdout, stderr).
fn run3(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An ISO 8601 UTC time to the millisecond, as `2026-12-01T03:21:49.603Z`.
fn is_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Issue: errors printed twice, empty help for STORE and MOUNTPOINT, "checkpoint at 0 ms
/// since the Unix epoch" after a compaction, raw times, silence for a name never seen, and
/// "listing X/log: No such file" for a directory that is not a store.
#[test]
fn the_command_line_says_each_thing_once_and_plainly() {
    let env = Env::new();
    let store = env.store.to_str().unwrap();
    // A failed mount: its reason once, nothing else on the terminal.
    let (code, out, err) = run3(&["mount", "/proc/no/such/store", env.mnt.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("recordfs: cannot open store /proc/no/such/store"),
        "{err}"
    );
    // A log limit a segment's header alone would pass is refused at once.
    let (code, _, err) = run3(&[
        "mount",
        store,
        env.mnt.to_str().unwrap(),
        "--log-limit",
        "100",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid value '100' for '--log-limit") && err.contains("not in 4096.."),
        "{err}"
    );
    assert!(!env.store.exists());
    // Help names what STORE and MOUNTPOINT are.
    let words = |sub: &str| {
        run3(&[sub, "--help"])
            .1
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let help = words("mount");
    for want in ["<STORE> The directory", "<MOUNTPOINT> An existing"] {
        assert!(help.contains(want), "{want:?} not in:\n{help}");
    }
    for sub in ["check", "log", "stats", "compact"] {
        assert!(
            words(sub).contains("<STORE> The store"),
            "{sub}: {}",
            words(sub)
        );
    }
    // Not a store: said so.
    for sub in ["stats", "log"] {
        let (code, _, err) = run3(&[sub, env.dir.path().to_str().unwrap()]);
        assert_eq!(code, 2);
        assert!(err.contains("is not a recordfs store"), "{sub}: {err}");
    }

    let d = Daemon::start(&env.store, &env.mnt, &[], 0o022).unwrap();
    assert_eq!(d.said.lines().count(), 1, "{}", d.said);
    fs::write(env.path(&record(1)), "[1]").unwrap();
    // The lock names its holder's start as a time people read.
    let holder = fs::read_to_string(env.store.join("lock")).unwrap();
    let since = holder
        .split(" since ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(is_iso8601(since), "{holder}");
    d.stop();
    // After a compaction, whose snapshot holds no time: the time its segment began.
    let (code, _, err) = run3(&["compact", store]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run3(&["stats", "--json", store]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ms = s["last_checkpoint_time"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now.abs_diff(ms) < 600_000, "{out}");
    assert!(
        is_iso8601(s["last_checkpoint_at"].as_str().unwrap()),
        "{out}"
    );
    assert!(s["kept_old_log_bytes"].as_u64().unwrap() > 0, "{out}");
    let (_, text, _) = run3(&["stats", store]);
    let at = s["last_checkpoint_at"].as_str().unwrap();
    assert!(text.contains(&format!("at {at} (UTC)")), "{text}");
    assert!(text.contains(" bytes in log/old/"), "{text}");
    // A name never seen: said on stderr, exit 1; a name seen: exit 0.
    let (code, out, err) = run3(&["log", "--name", "never.json", store]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("no entry") && err.contains("never.json"),
        "{err}"
    );
    let (code, out, _) = run3(&["log", "--name", &record(1), store]);
    assert_eq!(code, 0);
    assert!(out.contains("\"op\":\"SET\""), "{out}");
}

/// Issue 11: in a tree, `log --name` takes a path (its directories as they are now, whatever
/// they were called before) and `stats` counts every file, with a line per top-level
/// directory.
#[test]
fn log_and_stats_work_on_a_tree() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::create_dir_all(env.path("team/archive")).unwrap();
    fs::write(env.path(&format!("team/{}", record(1))), "{\"v\": 1}").unwrap();
    // The same name at the top is another file.
    fs::write(env.path(&record(1)), "{\"top\": true}").unwrap();
    fs::rename(env.path("team"), env.path("players")).unwrap();
    fs::write(env.path("players/save.tmp"), "{\"v\": 2}").unwrap();
    fs::rename(
        env.path("players/save.tmp"),
        env.path(&format!("players/{}", record(1))),
    )
    .unwrap();
    fs::write(env.path("players/archive/notes.txt"), "123").unwrap();
    let store = env.store.to_str().unwrap();
    let (code, out) = run(&["log", store, "--name", &format!("players/{}", record(1))]);
    assert_eq!(code, 0, "{out}");
    let datas: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            e["data"].as_str().map(String::from)
        })
        .collect();
    assert_eq!(datas, ["", "{\"v\": 1}", "", "{\"v\": 2}"], "{out}");
    assert!(!out.contains("top"), "the other file of that name: {out}");
    let (code, _) = run(&["log", store, "--name", "nowhere/x.json"]);
    assert_ne!(code, 0);
    let (code, out) = run(&["stats", "--json", store]);
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (s["records"].as_u64(), s["directories"].as_u64()),
        (Some(2), Some(2))
    );
    let players = &s["collections"]["players"];
    assert_eq!(
        (players["records"].as_u64(), players["plain_files"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    let (_, text) = run(&["stats", store]);
    assert!(text.contains("players/  1 records"), "{text}");
    m.stop();
}
