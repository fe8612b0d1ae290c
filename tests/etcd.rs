//! Stores in etcd (issue 14), against a real cluster of three etcd members on loopback that
//! each test starts and kills (Debian's etcd-server; scripts/setup.sh installs it).
//!
//! Guards against: a migration that loses or changes a name, byte, mode, owner, time, link
//! or extended attribute either way; one that writes into a prefix holding keys, or into a
//! directory that is not empty; a cut-short migration taken for a store; a call that hangs
//! when the cluster has no quorum.

mod common;
use common::cluster::*;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn migrate(from: &str, to: &str) -> (i32, String) {
    tool(&["migrate", from, to])
}

/// A store with a bit of everything, made through a mount and unmounted.
fn sample_store(env: &Env) {
    let m = env.mount(&[]);
    let p = |s: &str| env.path(s);
    fs::create_dir_all(p("players/2026")).unwrap();
    fs::write(
        p("players/2026/6f1c2b1e-0000-4000-8000-000000000001.json"),
        "{\"name\": \"Ada\"}\n",
    )
    .unwrap();
    fs::write(p("notes.txt"), "plain\n").unwrap();
    // Larger than one etcd value: stored in pieces.
    let big: Vec<u8> = (0..2_500_000u64).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(p("big.bin"), &big).unwrap();
    fs::hard_link(p("big.bin"), p("players/big-link")).unwrap();
    std::os::unix::fs::symlink("players/2026", p("latest")).unwrap();
    fs::create_dir(p("empty")).unwrap();
    for (cmd, what) in [
        ("setfattr -n user.origin -v import big.bin", "xattr"),
        (
            "chmod 600 notes.txt && chown 65534:65534 notes.txt",
            "owner",
        ),
        (
            "touch -h -d @1000000000 latest notes.txt players/2026",
            "times",
        ),
    ] {
        let (code, out) = sh(&format!("cd {} && {cmd}", env.mnt.display()));
        assert_eq!(code, 0, "{what}: {out}");
    }
    m.stop_cleanly();
}

#[test]
fn a_store_migrates_into_etcd_and_back_whole() {
    let cluster = Cluster::start();
    let env = Env::new();
    sample_store(&env);
    let url = cluster.url("records");
    let (code, out) = migrate(env.store.to_str().unwrap(), &url);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("3 files, 5 directories and symlinks, 8 names"),
        "{out}"
    );

    let (code, out) = tool(&["check", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("3 files; 0 problems\n"), "{out}");
    let (code, out) = tool(&["stats", &url, "--json"]);
    assert_eq!(code, 0, "{out}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            &stats["files"],
            &stats["directories"],
            &stats["names"],
            &stats["records"]
        ),
        (&3.into(), &4.into(), &8.into(), &1.into()),
        "{out}"
    );
    // The migration in etcd's history: the big file made with its bytes in pieces and its
    // two names (the first its path, the other a link), found by either name.
    let (code, lines, err) = log_of(&[&url, "--name", "players/big-link"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l["op"] == "SET" && l["path"] == "big.bin" && l["pieces"] == 3),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["op"] == "LINK" && l["path"] == "players/big-link"),
        "{lines:#?}"
    );

    // export reads the prefix as it reads a directory.
    let store = env.store.to_str().unwrap();
    for args in [
        vec!["--dir", "players/2026"],
        vec!["--dir", "players/2026", "--format", "lines"],
    ] {
        let want = tool(&[&["export", store], &args[..]].concat());
        let got = tool(&[&["export", url.as_str()], &args[..]].concat());
        assert_eq!(got, want, "{args:?}");
        assert!(got.1.contains("Ada"), "{}", got.1);
    }
    let out_dir = tempfile::tempdir().unwrap();
    let (a, b) = (out_dir.path().join("a"), out_dir.path().join("b"));
    for (from, to) in [(store, &a), (url.as_str(), &b)] {
        let (code, out) = tool(&["export", from, to.to_str().unwrap(), "--format", "dir"]);
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = sh(&format!("diff -r {} {}", a.display(), b.display()));
    assert_eq!(code, 0, "{out}");
    assert!(b.join("players/big-link").is_file());

    let back = Env::new();
    let (code, out) = migrate(&url, back.store.to_str().unwrap());
    assert_eq!(code, 0, "{out}");

    let a = env.mount(&[]);
    let b = back.mount(&[]);
    let (want, got) = (describe_tree(&env.mnt), describe_tree(&back.mnt));
    a.stop_cleanly();
    b.stop_cleanly();
    assert!(want.contains("user.origin=\"import\""), "{want}");
    assert!(
        want.contains("./players/big-link regular file 644 0:0 2 2500000"),
        "{want}"
    );
    assert_eq!(got, want);
    let (code, out) = back.check();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_migration_writes_only_into_an_empty_prefix_and_a_new_directory() {
    let cluster = Cluster::start();
    let env = Env::new();
    sample_store(&env);
    let url = cluster.url("records");
    let out = cluster.etcdctl(&["put", "/records/mine", "x"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, out) = migrate(env.store.to_str().unwrap(), &url);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("holds keys already"), "{out}");
    let keys = cluster
        .etcdctl(&["get", "--prefix", "/records/", "--keys-only"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&keys.stdout).trim(),
        "/records/mine"
    );

    // Into another prefix, then out into a directory that is not empty.
    let url = cluster.url("copy");
    assert_eq!(migrate(env.store.to_str().unwrap(), &url).0, 0);
    let taken = tempfile::tempdir().unwrap();
    fs::write(taken.path().join("mine"), "x").unwrap();
    let (code, out) = migrate(&url, taken.path().to_str().unwrap());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not empty"), "{out}");
    assert_eq!(fs::read_dir(taken.path()).unwrap().count(), 1);

    // check names what is wrong.
    let check = |url: &str| {
        let out = Command::new(BIN).args(["check", url]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let out = cluster.etcdctl(&["put", "/copy/p/stray", "x"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, out) = check(&url);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("PROBLEM: p/stray: nothing in the store reaches it"),
        "{out}"
    );
    let pieces = cluster
        .etcdctl(&["get", "--prefix", "/copy/p/0", "--keys-only"])
        .unwrap();
    let piece = String::from_utf8_lossy(&pieces.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let out = cluster.etcdctl(&["del", &piece]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, out) = check(&url);
    assert_eq!(code, Some(1), "{out}");
    let piece = piece.strip_prefix("/copy/").unwrap();
    assert!(
        out.contains(&format!("its piece {piece} is missing")),
        "{out}"
    );

    // A migration cut short (no meta key) is not taken for a store.
    let out = cluster.etcdctl(&["del", "/copy/meta"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let fresh: PathBuf = taken.path().join("store");
    let (code, out) = migrate(&url, fresh.to_str().unwrap());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no meta key"), "{out}");
    // Damage in etcd is named by its key.
    let out = cluster
        .etcdctl(&["put", "/records/meta", "{\"format\":1,\"next_fid\":9}"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, out) = migrate(&cluster.url("records"), fresh.to_str().unwrap());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the root is missing"), "{out}");
}

#[test]
fn a_migration_needs_a_quorum_and_says_so_in_bounded_time() {
    let mut cluster = Cluster::start();
    let env = Env::new();
    sample_store(&env);
    cluster.kill(0);
    let (code, out) = migrate(env.store.to_str().unwrap(), &cluster.url("one-down"));
    assert_eq!(code, 0, "two of three members hold a quorum: {out}");
    cluster.kill(1);
    let start = Instant::now();
    let (code, out) = migrate(env.store.to_str().unwrap(), &cluster.url("two-down"));
    let took = start.elapsed();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("ETIMEDOUT") || out.contains("(EIO)"),
        "an outage is ETIMEDOUT or EIO: {out}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}: {out}");
}

/// A store with a bit of everything migrated into a new prefix of a new cluster.
fn cluster_with_store() -> (Cluster, String) {
    let cluster = Cluster::start();
    let env = Env::new();
    sample_store(&env);
    let url = cluster.url("records");
    let (code, out) = migrate(env.store.to_str().unwrap(), &url);
    assert_eq!(code, 0, "{out}");
    (cluster, url)
}

/// A JSON-lines file in `dir` of `n` records tagged `tag`, record i padded to `pad(i)` bytes.
fn records_file(dir: &Path, tag: &str, n: usize, pad: impl Fn(usize) -> usize) -> PathBuf {
    let text: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\": \"6f1c2b1e-0000-4000-8000-{i:012}\", \"tag\": \"{tag}\", \"pad\": \"{}\"}}\n",
                "x".repeat(pad(i))
            )
        })
        .collect();
    let p = dir.join(format!("{tag}.jsonl"));
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn records_import_into_etcd_checked_and_in_transactions() {
    let (cluster, url) = cluster_with_store();
    let dir = tempfile::tempdir().unwrap();
    let lines = |tag: &str, big: usize| {
        records_file(dir.path(), tag, 300, |i| if i == 7 { big } else { 10 })
    };
    // 300 records (one of 1.5 MB, in pieces) into a directory that is not there yet.
    let first = lines("first", 1_500_000);
    let (code, out) = tool(&["import", &url, first.to_str().unwrap(), "--dir", "a/b"]);
    assert_eq!(code, 0, "{out}");
    let export = |dir: &str| tool(&["export", &url, "--dir", dir, "--format", "lines"]);
    let (code, out) = export("a/b");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 300, "{}", &out[..300]);
    assert_eq!(out.matches("\"first\"").count(), 300);
    // Without --replace an existing record refuses the whole import.
    let second = lines("second", 5);
    let (code, out) = tool(&["import", &url, second.to_str().unwrap(), "--dir", "a/b"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("exists") && out.contains("nothing was imported"),
        "{out}"
    );
    assert_eq!(export("a/b").1.matches("\"first\"").count(), 300);
    // With it, every record is replaced, the big one's pieces too.
    let (code, out) = tool(&[
        "import",
        &url,
        second.to_str().unwrap(),
        "--dir",
        "a/b",
        "--replace",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(export("a/b").1.matches("\"second\"").count(), 300);
    let (code, out) = tool(&["check", &url]);
    assert_eq!(code, 0, "no piece left behind: {out}");
    assert!(out.contains("; 0 problems"), "{out}");
    // etcd keeps the replaced versions: history lists them, show gives their bytes, the big
    // one's pieces too (deleted since, kept by etcd's history).
    for i in [7, 8] {
        let name = format!("a/b/6f1c2b1e-0000-4000-8000-{i:012}.json");
        let (code, out) = tool(&["history", &url, &name, "--json"]);
        assert_eq!(code, 0, "{out}");
        let revs: Vec<i64> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["revision"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(revs.len(), 2, "{out}");
        let (code, first) = tool(&["show", &url, &name, "--at", &revs[0].to_string()]);
        assert_eq!(code, 0, "{first}");
        assert!(first.contains("\"first\""), "{}", &first[..80]);
        assert_eq!(first.len() > 1_000_000, i == 7);
        let (code, now) = tool(&["show", &url, &name]);
        assert_eq!(code, 0, "{now}");
        assert!(now.contains("\"second\""), "{now}");
        if i == 7 {
            // restore saves an old version again, as a new one.
            let (code, out) = tool(&["restore", &url, &name, "--at", &revs[0].to_string()]);
            assert_eq!(code, 0, "{out}");
            let (_, again) = tool(&["show", &url, &name]);
            assert!(again == first, "the restored bytes are the first version's");
            let (_, out) = tool(&["history", &url, &name, "--json"]);
            assert_eq!(out.lines().count(), 3, "{out}");
        }
        if i == 8 {
            // Once etcd compacts its history, what is gone is said to be gone.
            let out = cluster.etcdctl(&["compact", &revs[1].to_string()]).unwrap();
            assert!(out.status.success(), "{out:?}");
            let (code, out) = tool(&["history", &url, &name]);
            assert_eq!(code, 0, "{out}");
            assert_eq!(out.lines().count(), 2, "{out}");
            assert!(
                out.ends_with("(older versions were compacted away by etcd)\n"),
                "{out}"
            );
            let (code, out) = tool(&["show", &url, &name, "--at", &revs[0].to_string()]);
            assert_eq!(code, 1, "{out}");
            assert!(out.contains("ENODATA"), "{out}");
        }
    }
    // The store in etcd reads back as a directory with them.
    let back = Env::new();
    assert_eq!(migrate(&url, back.store.to_str().unwrap()).0, 0);
    let _m = back.mount(&[]);
    let n = fs::read_dir(back.path("a/b")).unwrap().count();
    assert_eq!(n, 300);
}

#[test]
fn two_imports_of_the_same_names_at_once_leave_one_whole() {
    let (_cluster, url) = cluster_with_store();
    let dir = tempfile::tempdir().unwrap();
    let input = |tag: &str| {
        records_file(dir.path(), tag, 200, |i| {
            if i % 50 == 0 {
                1_200_000
            } else {
                10
            }
        })
    };
    for round in 0..3 {
        let at = format!("round{round}");
        let spawn = |tag: &str| {
            Command::new(BIN)
                .args(["import", &url])
                .arg(input(tag))
                .args(["--dir", &at])
                .output()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| spawn("left"));
            let b = s.spawn(|| spawn("right"));
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        let codes = (a.status.code(), b.status.code());
        let said = format!(
            "{codes:?}: {} / {}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        // One import is whole; the other wrote nothing (refused at its check, exit 1, or at
        // its first transaction, exit 2).
        assert!(
            matches!(codes, (Some(0), Some(1 | 2)) | (Some(1 | 2), Some(0))),
            "{said}"
        );
        let winner = if codes.0 == Some(0) { "left" } else { "right" };
        let (code, out) = tool(&["export", &url, "--dir", &at, "--format", "lines"]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(out.matches(&format!("\"{winner}\"")).count(), 200, "{said}");
        let (code, out) = tool(&["check", &url]);
        assert_eq!(code, 0, "no piece of the loser left: {out} ({said})");
    }
}

#[test]
fn a_silent_member_is_passed_over() {
    let cluster = Cluster::start();
    let env = Env::new();
    sample_store(&env);
    // The first member the address names answers nothing (it may be the leader: the others
    // elect a new one meanwhile).
    cluster.freeze(0);
    let start = Instant::now();
    let (code, out) = migrate(env.store.to_str().unwrap(), &cluster.url("records"));
    let took = start.elapsed();
    assert_eq!(code, 0, "{out}");
    let (code, out) = tool(&["check", &cluster.url("records")]);
    assert_eq!(code, 0, "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// `recordfs log ARGS...` of a store in etcd, bounded: (exit code, its lines, stderr).
fn log_of(args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = Command::new("timeout")
        .arg("120")
        .arg(BIN)
        .arg("log")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), lines, err)
}

fn with_op<'a>(lines: &'a [serde_json::Value], op: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["op"] == op).collect()
}

#[test]
fn log_prints_the_changes_etcd_keeps_of_a_prefix_and_ends() {
    let cluster = Cluster::start();
    let url = cluster.url("logged");
    let place = Place::new();
    let m = place.mount(&url, &[]).expect("mount");
    let p = |s: &str| place.path(s);
    let rec = format!("d/{}", record_name(1));
    fs::create_dir(p("d")).unwrap();
    fs::write(p(&rec), "{\"v\": 1}").unwrap();
    // A save by temporary file and rename, as editors make it.
    fs::write(p("d/.rec.tmp"), "{\"v\": 2}").unwrap();
    fs::rename(p("d/.rec.tmp"), p(&rec)).unwrap();
    fs::hard_link(p(&rec), p("link")).unwrap();
    let (code, out) = sh(&format!("chmod 600 {}", p(&rec).display()));
    assert_eq!(code, 0, "{out}");
    fs::remove_file(p("link")).unwrap();
    fs::write(p("bin"), [0xffu8, 0, 1]).unwrap();
    fs::rename(p("bin"), p("d/bin")).unwrap();
    m.stop_cleanly();
    // The cluster's newest revision is another prefix's: nothing of this one reaches it.
    let out = cluster.etcdctl(&["put", "other/x", "y"]).unwrap();
    assert!(out.status.success(), "{out:?}");

    let (code, lines, err) = log_of(&[&url]);
    assert_eq!(code, 0, "{err}");
    let revs: Vec<i64> = lines
        .iter()
        .map(|l| l["revision"].as_i64().unwrap())
        .collect();
    assert!(revs.windows(2).all(|w| w[0] <= w[1]), "{lines:#?}");
    let dir = with_op(&lines, "SET");
    assert!(
        dir.iter().any(|l| l["path"] == "d" && l["kind"] == "dir"),
        "{lines:#?}"
    );
    // Every version of the record, the second under its temporary name, then the rename
    // over the first, which it replaced.
    let sets: Vec<_> = with_op(&lines, "SET")
        .into_iter()
        .filter(|l| l["data"].as_str().is_some_and(|d| d.contains("\"v\"")))
        .collect();
    assert_eq!(sets.len(), 2, "{lines:#?}");
    assert_eq!(
        (&sets[0]["path"], &sets[0]["data"]),
        (&rec.as_str().into(), &"{\"v\": 1}".into())
    );
    assert_eq!(sets[1]["path"], "d/.rec.tmp");
    let renames = with_op(&lines, "RENAME");
    let over = renames
        .iter()
        .find(|l| l["to"] == rec.as_str())
        .unwrap_or_else(|| panic!("no rename to the record: {lines:#?}"));
    assert_eq!(over["path"], "d/.rec.tmp");
    assert_eq!(over["fid"], sets[1]["fid"]);
    assert_eq!(over["replaced"], sets[0]["fid"]);
    let saved = &sets[1]["fid"];
    let link = with_op(&lines, "LINK");
    assert!(
        link.iter()
            .any(|l| l["path"] == "link" && &l["fid"] == saved),
        "{lines:#?}"
    );
    let gone = with_op(&lines, "DELETE");
    assert!(
        gone.iter()
            .any(|l| l["path"] == "link" && &l["fid"] == saved),
        "{lines:#?}"
    );
    let attr = with_op(&lines, "ATTR");
    assert!(
        attr.iter()
            .any(|l| &l["fid"] == saved && l["mode"].as_u64().unwrap() & 0o7777 == 0o600),
        "{lines:#?}"
    );
    let bin = with_op(&lines, "SET")
        .into_iter()
        .find(|l| l["path"] == "bin")
        .unwrap_or_else(|| panic!("no SET of bin: {lines:#?}"));
    assert_eq!(
        (&bin["enc"], &bin["data"]),
        (&"base64".into(), &"/wAB".into())
    );
    assert!(renames
        .iter()
        .any(|l| l["path"] == "bin" && l["to"] == "d/bin"));

    // --name: every change of the files that held the name, under any of their names.
    let (code, named, err) = log_of(&[&url, "--name", &rec]);
    assert_eq!(code, 0, "{err}");
    let data: Vec<_> = with_op(&named, "SET")
        .iter()
        .map(|l| l["data"].clone())
        .collect();
    let data: Vec<_> = data.iter().filter(|d| d.as_str() != Some("")).collect();
    assert_eq!(
        data,
        [&"{\"v\": 1}".into(), &"{\"v\": 2}".into()] as [&serde_json::Value; 2],
        "{named:#?}"
    );
    assert!(named.iter().all(|l| l["path"] != "bin" && l["path"] != "d"));
    let (code, none, err) = log_of(&[&url, "--name", "d/nothing.json"]);
    assert_eq!((code, none.len()), (1, 0), "{err}");
    assert!(err.contains("names \"d/nothing.json\""), "{err}");

    // --since and --until: one revision alone, its paths as they were then.
    let at = over["revision"].as_i64().unwrap().to_string();
    let (code, one, err) = log_of(&[&url, "--since", &at, "--until", &at]);
    assert_eq!(code, 0, "{err}");
    assert!(
        one.iter().all(|l| l["revision"] == over["revision"]),
        "{one:#?}"
    );
    assert!(one.contains(over), "{one:#?}");

    // After a compaction the log starts where etcd's history does, with paths still known.
    let link_rev = link[0]["revision"].as_i64().unwrap();
    let out = cluster
        .etcdctl(&["compact", &link_rev.to_string()])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, after, err) = log_of(&[&url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        after
            .iter()
            .all(|l| l["revision"].as_i64().unwrap() > link_rev),
        "{after:#?}"
    );
    let tail: Vec<_> = lines
        .iter()
        .filter(|l| l["revision"].as_i64().unwrap() > link_rev)
        .collect();
    assert_eq!(after.iter().collect::<Vec<_>>(), tail);
    let (code, _, err) = log_of(&[&url, "--since", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("from revision {} on", link_rev + 1)),
        "{err}"
    );
    // `stats` says how far back the history reaches.
    let (code, out) = tool(&["stats", &url]);
    assert_eq!(code, 0, "{out}");
    let from = format!("history from revision {}", link_rev + 1);
    assert!(out.contains(&from), "{out}");
}

#[test]
fn a_transaction_holds_only_while_its_ranges_hold_no_key() {
    use recordfs::etcd::{Etcd, EtcdUrl, Txned};
    let cluster = Cluster::start();
    let url = EtcdUrl::parse(&cluster.url("ranges")).unwrap();
    let etcd = Etcd::connect(&url, Duration::from_secs(10)).unwrap();
    let k = |s: &str| s.as_bytes().to_vec();
    etcd.put_all(&[(k("i/d"), k("{}")), (k("n/d/x"), k("1"))])
        .unwrap();
    let remove = |deletes: &[Vec<u8>], empty: &[(Vec<u8>, Vec<u8>)]| {
        etcd.txn_unless_changed(&[], &[], empty, &[], deletes, &[])
            .unwrap()
    };
    // A name in the range: not done, and the name found is said.
    match remove(&[k("i/d")], &[(k("n/d/"), k("n/d0"))]) {
        Txned::Changed(_, taken, _) => {
            let keys: Vec<_> = taken.iter().map(|t| t.key.clone()).collect();
            assert_eq!(keys, [k("n/d/x")]);
        }
        Txned::Done(_) => panic!("removed though a name is in the range"),
    }
    assert!(etcd.get(b"i/d").unwrap().is_some());
    // The name removed with it lies between the ranges: done.
    let gaps = [(k("n/d/"), k("n/d/x")), (k("n/d/x\0"), k("n/d0"))];
    assert!(matches!(
        remove(&[k("n/d/x"), k("i/d")], &gaps),
        Txned::Done(_)
    ));
    assert!(etcd.get(b"i/d").unwrap().is_none());
    // A key that must be there and is not is said (its value is not read: pieces are large).
    let pieces = [
        (k("p/f.1"), k("a")),
        (k("p/f.2"), k("b")),
        (k("p/g.1"), k("c")),
    ];
    etcd.put_all(&pieces).unwrap();
    match etcd
        .txn_unless_changed(&[], &[k("p/f.2"), k("p/f.3")], &[], &[], &[], &[])
        .unwrap()
    {
        Txned::Changed(_, _, missing) => assert_eq!(missing, [k("p/f.3")]),
        Txned::Done(_) => panic!("done though p/f.3 is not there"),
    }
    // Ranges are deleted with it: every piece of f but the one it keeps.
    let ranges = [(k("p/f."), k("p/f.2")), (k("p/f.2\0"), k("p/f/"))];
    let done = etcd
        .txn_unless_changed(&[], &[k("p/f.2")], &[], &[], &[], &ranges)
        .unwrap();
    assert!(matches!(done, Txned::Done(_)));
    let left: Vec<Vec<u8>> = etcd
        .get_all(b"p/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, [k("p/f.2"), k("p/g.1")]);
}

/// Reading a prefix goes page by page (10,000 keys a page, fewer when their values are
/// large): a prefix of 3 x 12,000 record keys and 100 files of 1.2 MB (in pieces, more than
/// one answer may hold) reads back whole, each key once, in `check`, `export` and a mount.
#[test]
fn a_prefix_larger_than_a_page_and_an_answer_reads_back_whole() {
    let (_cluster, url) = cluster_with_store();
    let dir = tempfile::tempdir().unwrap();
    let many = records_file(dir.path(), "many", 12_000, |_| 10);
    let (code, out) = tool(&["import", &url, many.to_str().unwrap(), "--dir", "many"]);
    assert_eq!(code, 0, "{out}");
    let big = records_file(dir.path(), "big", 100, |_| 1_200_000);
    let (code, out) = tool(&["import", &url, big.to_str().unwrap(), "--dir", "big"]);
    assert_eq!(code, 0, "{out}");
    assert_sound(&url);
    for (dir, n, tag) in [("many", 12_000, "\"many\""), ("big", 100, "\"big\"")] {
        let (code, out) = tool(&["export", &url, "--dir", dir, "--format", "lines"]);
        assert_eq!(code, 0, "{}", &out[..out.len().min(300)]);
        assert_eq!(out.lines().count(), n, "records exported from {dir}");
        assert_eq!(out.matches(tag).count(), n);
    }
    let place = Place::new();
    let m = place
        .mount(&url, &["--read-only"])
        .expect("a mount of the prefix");
    assert_eq!(fs::read_dir(place.path("many")).unwrap().count(), 12_000);
    assert_eq!(fs::read_dir(place.path("big")).unwrap().count(), 100);
    m.stop_cleanly();
}
