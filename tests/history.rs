//! `recordfs history`, `show` and `restore` (issue 13), on a mounted store and on one that is
//! not, through saves in place, saves by temp file and rename, patches and a delete; and how
//! far back history reaches (`stats`) after compactions.
//!
//! Guards against: a version missing or out of order, `show` giving other bytes than were
//! saved (a patch applied wrongly), a deleted record that cannot be brought back, a restore
//! that bypasses a mounted store's daemon, and history that reaches less far than `stats`
//! says.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{record, Env, BIN};

fn recordfs(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `history --json` as (seq, op, ms) per version.
fn versions(env: &Env, name: &str) -> Vec<(u64, String, u64)> {
    let out = recordfs(&["history", env.store.to_str().unwrap(), name, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            (
                seq,
                v["op"].as_str().unwrap().to_owned(),
                v["ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn restore(env: &Env, name: &str, seq: u64) -> Output {
    let at = seq.to_string();
    recordfs(&["restore", env.store.to_str().unwrap(), name, "--at", &at])
}

fn show(env: &Env, name: &str, at: &str) -> Output {
    recordfs(&["show", env.store.to_str().unwrap(), name, "--at", at])
}

#[test]
fn every_version_shows_and_a_deleted_record_comes_back_through_the_daemon() {
    let env = Env::new();
    let name = record(7);
    let m = env.mount(&[]);
    fs::write(env.path(&name), "{\"v\": 1}").unwrap();
    fs::write(env.path(&name), "{\"v\": 2}").unwrap();
    common::python_on_mount(
        &format!(
            "import json, os\njson.dump({{'v': 3}}, open(os.path.join(m, 't.tmp'), 'w'))\n\
             os.replace(os.path.join(m, 't.tmp'), os.path.join(m, '{name}'))"
        ),
        &env,
    );
    fs::remove_file(env.path(&name)).unwrap();
    let v = versions(&env, &name);
    let ops: Vec<&str> = v.iter().map(|(_, op, _)| op.as_str()).collect();
    // The create (empty), the two saves, the rename of the temp file over it, the delete.
    assert_eq!(ops, ["SET", "SET", "SET", "RENAME", "DELETE"], "{v:?}");
    assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "{v:?}");
    for (at, want) in [(1, "{\"v\": 1}"), (2, "{\"v\": 2}"), (3, "{\"v\": 3}")] {
        let out = show(&env, &name, &v[at].0.to_string());
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }
    // By time: the last version committed at or before it.
    let at = recordfs::types::Time::from_millis(v[2].2).iso8601();
    let out = show(&env, &name, &at);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown == "{\"v\": 2}" || v[3].2 == v[2].2, "{shown}");
    // Now it does not exist: exit 1, saying so.
    let out = recordfs(&["show", env.store.to_str().unwrap(), &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not exist now"), "{}", text(&out));
    // Restored while mounted: through the daemon, so the mount shows it at once.
    let out = restore(&env, &name, v[2].0);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read_to_string(env.path(&name)).unwrap(), "{\"v\": 2}");
    assert_eq!(
        versions(&env, &name).len(),
        v.len() + 2,
        "a create and a save more"
    );
    m.stop_cleanly();
    // Not mounted: restore opens the store itself.
    let out = restore(&env, &name, v[3].0);
    assert!(out.status.success(), "{}", text(&out));
    let m = env.mount(&[]);
    assert_eq!(fs::read_to_string(env.path(&name)).unwrap(), "{\"v\": 3}");
    m.stop_cleanly();
    assert_eq!(env.check().0, 0);
}

#[test]
fn versions_of_a_patched_file_are_rebuilt_and_history_reaches_as_far_as_stats_says() {
    let env = Env::new();
    let m = env.mount(&[]);
    let path = env.path("big.bin");
    let mut want: Vec<Vec<u8>> = Vec::new();
    let mut bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &bytes).unwrap();
    want.push(bytes.clone());
    for round in 0..3u8 {
        // An append, then a write in the middle: each logged as a PATCH.
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &[round; 1024]).unwrap();
        drop(f);
        bytes.extend_from_slice(&[round; 1024]);
        want.push(bytes.clone());
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"middle", 5_000 + u64::from(round)).unwrap();
        drop(f);
        bytes[5_000 + usize::from(round)..][..6].copy_from_slice(b"middle");
        want.push(bytes.clone());
    }
    let v = versions(&env, "big.bin");
    let saves: Vec<&(u64, String, u64)> = v.iter().filter(|(_, op, _)| op != "DELETE").collect();
    assert!(
        v.iter().filter(|(_, op, _)| op == "PATCH").count() >= 6,
        "{v:?}"
    );
    // The last versions are the patched ones, in order.
    for (version, bytes) in saves.iter().rev().zip(want.iter().rev()) {
        let out = show(&env, "big.bin", &version.0.to_string());
        assert!(out.status.success(), "{}", text(&out));
        assert!(out.stdout == *bytes, "version {} differs", version.0);
    }
    m.stop_cleanly();
    // Compacted with no old segment kept: history starts where stats says, no sooner and no
    // later, and a version whose bytes were logged before it has none to show.
    let store = env.store.to_str().unwrap();
    let out = recordfs(&["compact", store, "--keep-logs", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"after\": 1}").unwrap();
    m.stop_cleanly();
    let out = recordfs(&["stats", "--json", store]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let from = stats["history_from_seq"]
        .as_u64()
        .expect("history_from_seq");
    let after = versions(&env, &record(1));
    assert_eq!(
        after.first().map(|v| v.0 >= from),
        Some(true),
        "{after:?} from {from}"
    );
    assert!(versions_or_none(&env, "big.bin")
        .iter()
        .all(|(seq, _, _)| *seq >= from));
    let old = show(&env, "big.bin", &v[1].0.to_string());
    assert_eq!(old.status.code(), Some(1), "{}", text(&old));
}

fn versions_or_none(env: &Env, name: &str) -> Vec<(u64, String, u64)> {
    let out = recordfs(&["history", env.store.to_str().unwrap(), name, "--json"]);
    if out.status.code() == Some(1) {
        return Vec::new();
    }
    versions(env, name)
}
