//! A read-only mount of a prefix follows what the serving mount changes (issue 14), against a
//! real three-member cluster each test starts.
//!
//! Guards against: a change of any kind (names made, moved, linked, removed; bytes, modes,
//! owners, times, extended attributes) that the follower never shows, or shows wrong; a
//! reader of the follower that sees a record go back to an older version; a follower that
//! stops following when etcd compacts the history its watch needs (it must read the prefix
//! again and go on); a follower that can be written.

mod common;
use common::cluster::*;
use common::*;

use std::fs;
use std::time::{Duration, Instant};

/// Waits (bounded) until the follower's tree reads as the writer's, times to the nanosecond;
/// fails saying both.
fn same_trees(writer: &Place, follower: &Place, what: &str) {
    let mut last = (String::new(), String::new());
    let same = wait_until(Duration::from_secs(10), || {
        last = (
            describe_tree_exactly(&writer.mnt),
            describe_tree_exactly(&follower.mnt),
        );
        last.0 == last.1
    });
    assert!(
        same,
        "{what}: the follower does not show the writer's tree within 10 s\nwriter:\n{}\nfollower:\n{}",
        last.0, last.1
    );
}

#[test]
fn a_read_only_mount_shows_every_kind_of_change() {
    let cluster = Cluster::start();
    let url = cluster.url("follow");
    let (w, f) = (Place::new(), Place::new());
    let writer = w.mount(&url, &[]).expect("mount");
    fs::write(w.path(&record_name(1)), "{\"v\": 1}").unwrap();
    fs::create_dir(w.path("d")).unwrap();
    let follower = f.mount(&url, &["--read-only"]).expect("read-only mount");
    same_trees(&w, &f, "at mount");
    let steps: &[(&str, &str)] = &[
        ("save", "printf '{\"v\": 2}' > 00000001-0000-4000-8000-000000000000.json"),
        ("create in a directory", "printf 'a' > d/a.txt && mkdir -p d/e/f"),
        ("move into another directory", "mv d/a.txt d/e/b.txt"),
        ("hard link", "ln d/e/b.txt c.txt"),
        ("symlink", "ln -s d/e/b.txt s"),
        ("save through a link", "printf 'bb' > c.txt"),
        ("rename over", "printf '{\"v\": 3}' > t.json && mv t.json 00000001-0000-4000-8000-000000000000.json"),
        ("chmod, chown, touch", "chmod 600 c.txt && chown 65534:65534 c.txt && touch -h -d @1000000000 s d/e"),
        ("xattr", "setfattr -n user.k -v one c.txt && setfattr -n user.j -v two c.txt && setfattr -x user.k c.txt"),
        ("unlink one name", "rm d/e/b.txt"),
        ("move a directory", "mv d/e e2"),
        ("remove a tree", "rm -r e2 d"),
    ];
    for (what, cmd) in steps {
        let (code, out) = sh(&format!("cd {} && {cmd}", w.mnt.display()));
        assert_eq!(code, 0, "{what}: {out}");
        same_trees(&w, &f, what);
    }
    // Two names swapped at once (RENAME_EXCHANGE): the follower swaps them at once too.
    fs::write(w.path("x.txt"), "x").unwrap();
    same_trees(&w, &f, "a file to exchange");
    assert_eq!(
        rename2(&w.path("x.txt"), &w.path("c.txt"), libc::RENAME_EXCHANGE),
        0
    );
    same_trees(&w, &f, "exchange");
    assert_eq!(fs::read(f.path("c.txt")).unwrap(), b"x");
    assert_eq!(fs::read(f.path("x.txt")).unwrap(), b"bb");
    // Read-only: the kernel refuses a write.
    let e = write_file(&f.path("x.json"), b"{}").expect_err("a write on a read-only mount");
    assert_eq!(errno_of(&e), libc::EROFS);
    follower.stop_cleanly();
    writer.stop_cleanly();
    assert_sound(&url);
}

#[test]
fn a_follower_never_goes_back_and_shows_each_save_in_bounded_time() {
    let cluster = Cluster::start();
    let url = cluster.url("order");
    let (w, f) = (Place::new(), Place::new());
    let writer = w.mount(&url, &[]).expect("mount");
    let name = record_name(7);
    fs::write(w.path(&name), "{\"v\": 0}").unwrap();
    let follower = f.mount(&url, &["--read-only"]).expect("read-only mount");
    // A reader on the follower, reading as fast as it can, must see the versions in order.
    let reader_path = f.path(&name);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(text) = fs::read_to_string(&reader_path) {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("a torn version {text:?}: {e}"));
                seen.push(v["v"].as_u64().unwrap());
            }
        }
        seen
    });
    let mut lags = Vec::new();
    for v in 1..=100u64 {
        write_file(&w.path(&name), format!("{{\"v\": {v}}}").as_bytes()).unwrap();
        let saved = Instant::now();
        let shown = wait_until(Duration::from_secs(10), || {
            fs::read_to_string(f.path(&name)).is_ok_and(|t| t == format!("{{\"v\": {v}}}"))
        });
        assert!(shown, "version {v} not shown on the follower within 10 s");
        lags.push(saved.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(seen.len() > 10, "the reader read {} times", seen.len());
    assert!(
        seen.windows(2).all(|p| p[0] <= p[1]),
        "the follower went back: {seen:?}"
    );
    lags.sort();
    eprintln!(
        "change to visible on the follower (polled every 10 ms): median {:?}, p99 {:?}",
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100]
    );
    follower.stop_cleanly();
    writer.stop_cleanly();
}

#[test]
fn a_follower_reads_the_prefix_again_after_a_compaction_and_goes_on() {
    let mut cluster = Cluster::start();
    let url = cluster.url("compacted");
    let (w, f) = (Place::new(), Place::new());
    let writer = w.mount(&url, &[]).expect("mount");
    for i in 0..5 {
        fs::write(w.path(&record_name(i)), format!("{{\"v\": {i}}}")).unwrap();
    }
    let follower = f.mount(&url, &["--read-only"]).expect("read-only mount");
    same_trees(&w, &f, "at mount");
    // The follower paused, the member its watch is on killed (it connected to the first),
    // changes made and etcd's history compacted past them: when it goes on, the revision
    // its watch asks for is gone.
    follower.signal(libc::SIGSTOP);
    cluster.kill(0);
    for i in 0..5 {
        let saved = write_file(
            &w.path(&record_name(i)),
            format!("{{\"v\": {}}}", i + 10).as_bytes(),
        );
        if let Err(e) = saved {
            panic!("save {i} with a member killed: {e}\n{}", w.mount_log());
        }
    }
    fs::remove_file(w.path(&record_name(4))).unwrap();
    fs::write(w.path("after.txt"), "x").unwrap();
    let rev = cluster.revision();
    let out = cluster.etcdctl(&["compact", &rev]).unwrap();
    assert!(out.status.success(), "{out:?}");
    follower.signal(libc::SIGCONT);
    same_trees(&w, &f, "after the compaction");
    assert!(
        wait_until(Duration::from_secs(5), || f
            .mount_log()
            .contains("reading it whole")),
        "the follower did not say it read the prefix again:\n{}",
        f.mount_log()
    );
    // And it goes on following.
    fs::write(w.path("later.txt"), "y").unwrap();
    same_trees(&w, &f, "after the compaction, a later change");
    follower.stop_cleanly();
    writer.stop_cleanly();
}

/// A writer and a follower that both use the first member; `disrupt` then makes that member
/// useless to the follower in some way, and a change the writer makes (through another
/// member) must show on the follower within 10 s; `restore` ends the disruption.
fn follows_through_another(
    cluster: &Cluster,
    prefix: &str,
    what: &str,
    disrupt: impl Fn(&Cluster),
    restore: impl Fn(&Cluster),
) {
    let url = cluster.url(prefix);
    let (w, f) = (Place::new(), Place::new());
    let writer = w.mount(&url, &[]).expect("mount");
    fs::write(w.path(&record_name(1)), "{\"v\": 1}").unwrap();
    let follower = f.mount(&url, &["--read-only"]).expect("read-only mount");
    same_trees(&w, &f, "at mount");
    disrupt(cluster);
    write_file(&w.path(&record_name(1)), b"{\"v\": 2}").unwrap();
    fs::write(w.path("new.txt"), "n").unwrap();
    same_trees(&w, &f, what);
    restore(cluster);
    follower.stop_cleanly();
    writer.stop_cleanly();
}

#[test]
fn a_follower_whose_member_goes_silent_follows_through_another() {
    // Stopped, the member holds its connections and answers nothing.
    follows_through_another(
        &Cluster::start(),
        "silent",
        "with the follower's member stopped",
        |c| c.freeze(0),
        |c| c.thaw(0),
    );
}

#[test]
fn a_follower_whose_member_loses_its_peers_follows_through_another() {
    // Cut off from its peers but not from its clients, the member answers (its progress
    // too) from a state that no longer moves: only its having no leader tells the follower
    // to leave it.
    follows_through_another(
        &Cluster::start_in_namespaces(),
        "leaderless",
        "with the follower's member cut off from its peers",
        |c| c.cut_from_peers(0),
        |c| c.heal(0),
    );
}
