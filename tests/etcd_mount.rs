//! `recordfs mount etcd://...` (issue 14) against a real three-member cluster that each test
//! starts: every commit is in etcd when its syscall returns, and what a mount acknowledged
//! survives the leader's death, the daemon's SIGKILL and the whole cluster's restart.
//!
//! Guards against: a commit acknowledged before etcd holds it (lost with the daemon); keys
//! that leave a name leading nowhere or bytes that do not match their checksum (`recordfs
//! check` of the prefix after each test); a second mount or an import that does not show
//! on the mounts of the prefix; a save
//! that hangs when the cluster has no quorum; a batch too large for one transaction that is
//! lost or torn.

mod common;
use common::cluster::*;
use common::*;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_mount_ships_every_change_and_a_new_mount_shows_them_all() {
    let cluster = Cluster::start();
    let url = cluster.url("shipped");
    let place = Place::new();
    let m = place.mount(&url, &[]).expect("mount of an empty prefix");
    let p = |s: &str| place.path(s);
    fs::create_dir_all(p("players/2026")).unwrap();
    fs::write(
        p("players/2026").join(record_name(1)),
        "{\"name\": \"Ada\"}\n",
    )
    .unwrap();
    fs::write(p(&record_name(2)), "{\"n\": 2}").unwrap();
    fs::write(p("notes.txt"), "plain\n").unwrap();
    fs::rename(p("notes.txt"), p("players/notes.txt")).unwrap();
    fs::hard_link(p("players/notes.txt"), p("notes-link")).unwrap();
    std::os::unix::fs::symlink("players/2026", p("latest")).unwrap();
    fs::write(p("gone.txt"), "x").unwrap();
    fs::remove_file(p("gone.txt")).unwrap();
    // A save over an existing record by rename, as editors do.
    fs::write(p("tmp.swp"), "{\"n\": 22}").unwrap();
    fs::rename(p("tmp.swp"), p(&record_name(2))).unwrap();
    // A bad save is refused, the record keeps its version.
    assert!(write_file(&p(&record_name(2)), b"{broken").is_err());
    for (cmd, what) in [
        ("setfattr -n user.origin -v test notes-link", "xattr"),
        (
            "chmod 640 notes-link && chown 65534:65534 notes-link",
            "owner",
        ),
        ("touch -h -d @1000000000 latest players/2026", "times"),
    ] {
        let (code, out) = sh(&format!("cd {} && {cmd}", place.mnt.display()));
        assert_eq!(code, 0, "{what}: {out}");
    }
    let seen = describe_tree(&place.mnt);
    assert_eq!(fs::read(p(&record_name(2))).unwrap(), b"{\"n\": 22}");
    let cache = cache_in(&m.daemon_log());
    m.stop_cleanly();
    assert!(
        !cache.exists(),
        "the cache {} stays after unmount",
        cache.display()
    );
    assert_sound(&url);
    let (code, out) = tool(&["stats", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("3 files (2 records), 3 directories, 1 symlinks, 7 names"),
        "{out}"
    );

    let again = place.mount(&url, &[]).expect("mount again");
    assert_eq!(
        describe_tree(&place.mnt),
        seen,
        "a new mount shows another tree"
    );
    assert_eq!(
        fs::read(p(&record_name(2))).unwrap(),
        b"{\"n\": 22}",
        "the record's last good version"
    );
    again.stop_cleanly();
}

#[test]
fn a_second_mount_and_an_import_change_a_served_prefix_and_a_killed_ones_saves_are_all_there() {
    let cluster = Cluster::start();
    let url = cluster.url("one");
    let first = Place::new();
    let m = first.mount(&url, &[]).expect("mount");
    for i in 0..50 {
        fs::write(first.path(&record_name(i)), format!("{{\"n\": {i}}}")).unwrap();
    }
    // A second mount that changes the prefix beside the first: each shows the other's saves.
    let second = Place::new();
    let m2 = second.mount(&url, &[]).expect("a second mount");
    assert_eq!(
        fs::read_to_string(second.path(&record_name(49))).unwrap(),
        "{\"n\": 49}"
    );
    fs::write(second.path(&record_name(60)), "{\"from\": 2}").unwrap();
    shows(&first, &record_name(60), "{\"from\": 2}");
    // Tools that change the prefix go in while mounts serve it, and both show the change.
    let records = first.dir.path().join("in.jsonl");
    fs::write(
        &records,
        "{\"id\": \"6f1c2b1e-0000-4000-8000-000000000001\", \"by\": \"import\"}\n",
    )
    .unwrap();
    let (code, out) = tool(&["import", &url, records.to_str().unwrap()]);
    assert_eq!(code, 0, "an import into a served prefix: {out}");
    let imported = "6f1c2b1e-0000-4000-8000-000000000001.json";
    for place in [&first, &second] {
        let want = "{\"id\": \"6f1c2b1e-0000-4000-8000-000000000001\", \"by\": \"import\"}";
        shows(place, imported, want);
    }
    // A crash of the first: the second goes on, and the next mount that starts removes the
    // dead one's cache and has every save.
    let first_cache = cache_in(&first.mount_log());
    m.kill9();
    assert!(first_cache.exists());
    fs::write(second.path(&record_name(61)), "{}").unwrap();
    let third = Place::new();
    let m3 = third
        .mount(&url, &["--read-only"])
        .expect("a mount after the first died");
    assert!(
        !first_cache.exists(),
        "the killed mount's cache {} stays",
        first_cache.display()
    );
    for i in 0..50 {
        let got = fs::read_to_string(third.path(&record_name(i))).unwrap();
        assert_eq!(got, format!("{{\"n\": {i}}}"), "record {i}");
    }
    shows(&third, &record_name(61), "{}");
    m3.stop_cleanly();
    m2.stop_cleanly();
    assert_sound(&url);
}

/// A mount started as users start one (the daemon goes to the background), unmounted when
/// dropped.
struct Background(PathBuf);

impl Background {
    /// With its cache in `tmp`.
    fn start(url: &str, place: &Place, tmp: &std::path::Path) -> Background {
        let status = Command::new(BIN)
            .args(["mount", url])
            .arg(&place.mnt)
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "mount of {url}");
        Background(place.mnt.clone())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let gone = wait_until(Duration::from_secs(10), || !is_mounted(&self.0));
        if !gone {
            force_unmount(&self.0);
        }
    }
}

#[test]
fn a_mount_that_starts_leaves_the_cache_of_a_daemon_that_went_to_the_background() {
    let cluster = Cluster::start();
    let url = cluster.url("background");
    let (a, b) = (Place::new(), Place::new());
    // The daemon is forked from the process that made its cache: the cache's name has a pid
    // that is gone, yet the cache is in use.
    let tmp = a.dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let caches = || fs::read_dir(&tmp).unwrap().count();
    let first = Background::start(&url, &a, &tmp);
    fs::write(a.path(&record_name(1)), "{\"n\": 1}").unwrap();
    assert_eq!(caches(), 1);
    let second = Background::start(&url, &b, &tmp);
    assert_eq!(caches(), 2, "the second mount removed the first's cache");
    fs::write(a.path(&record_name(2)), "{\"n\": 2}").unwrap();
    assert_eq!(
        fs::read_to_string(a.path(&record_name(1))).unwrap(),
        "{\"n\": 1}",
        "the first mount's cache"
    );
    shows(&b, &record_name(2), "{\"n\": 2}");
    drop(second);
    drop(first);
    let gone = wait_until(Duration::from_secs(10), || caches() == 0);
    assert!(gone, "caches left after unmount");
    assert_sound(&url);
}

/// The last `n` lines of `log`.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits (at most 10 s) until `name` at `place` holds `want`.
fn shows(place: &Place, name: &str, want: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let got = fs::read_to_string(place.path(name)).ok();
        if got.as_deref() == Some(want) {
            return;
        }
        if Instant::now() > until {
            let said = tail(&place.mount_log(), 30);
            panic!("{name} holds {got:?} after 10 s, not {want}; the daemon said:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Saves records one after another (open, write, close) until `stop` exists; each name is
/// written to `acked` once its close returned, or `error ERRNO` when the save failed.
const WRITER: &str = r#"
import os, sys
mnt, acked, stop = sys.argv[1:4]
out = open(acked, "w")
i = 0
while not os.path.exists(stop):
    name = "%08x-0000-4000-8000-000000000000.json" % i
    try:
        with open(os.path.join(mnt, name), "w") as f:
            f.write('{"n": %d}' % i)
        out.write(name + "\n")
    except OSError as e:
        out.write("error %d\n" % e.errno)
        if e.errno in (103, 107):
            break  # the daemon is gone (ECONNABORTED, ENOTCONN)
    out.flush()
    i += 1
"#;

struct Writer {
    child: Child,
    acked: PathBuf,
    stop: PathBuf,
}

impl Writer {
    fn start(place: &Place) -> Writer {
        let acked = place.dir.path().join("acked");
        let stop = place.dir.path().join("stop");
        let child = Command::new("python3")
            .args(["-c", WRITER])
            .arg(&place.mnt)
            .arg(&acked)
            .arg(&stop)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Writer { child, acked, stop }
    }

    fn count(&self) -> usize {
        fs::read_to_string(&self.acked)
            .map(|t| t.lines().filter(|l| !l.starts_with("error")).count())
            .unwrap_or(0)
    }

    /// Stops it; the names it saved and the errnos it got.
    fn finish(mut self) -> (Vec<String>, Vec<i32>) {
        fs::write(&self.stop, "").unwrap();
        let ended = wait_until(Duration::from_secs(60), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(ended, "the writer did not stop within 60 s: a save hangs");
        let text = fs::read_to_string(&self.acked).unwrap();
        let errors = text
            .lines()
            .filter_map(|l| l.strip_prefix("error "))
            .map(|e| e.parse().unwrap())
            .collect();
        let names = text
            .lines()
            .filter(|l| !l.starts_with("error"))
            .map(str::to_string)
            .collect();
        (names, errors)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_all_there(place: &Place, names: &[String]) {
    for name in names {
        let i = usize::from_str_radix(&name[..8], 16).unwrap();
        let got = fs::read_to_string(place.path(name))
            .unwrap_or_else(|e| panic!("acknowledged {name} is lost: {e}"));
        assert_eq!(got, format!("{{\"n\": {i}}}"), "{name}");
    }
}

#[test]
fn acknowledged_saves_survive_the_leaders_death_and_the_daemons() {
    let mut cluster = Cluster::start();
    let url = cluster.url("leader");
    let place = Place::new();
    let m = place.mount(&url, &[]).expect("mount");
    let writer = Writer::start(&place);
    assert!(wait_until(Duration::from_secs(20), || writer.count() >= 100));
    let before = writer.count();
    let leader = cluster.leader();
    cluster.kill(leader);
    // Saves go on once a new leader is elected.
    assert!(
        wait_until(Duration::from_secs(30), || writer.count() >= before + 100),
        "saves did not go on after the leader died: {} before, {} now; the daemon said:\n{}",
        before,
        writer.count(),
        tail(&m.daemon_log(), 40)
    );
    // The daemon killed while saves go on: every save whose close returned is in etcd.
    let mut m = m;
    m.child.as_mut().unwrap().kill().unwrap();
    let (names, errors) = writer.finish();
    for e in &errors {
        assert!(
            [
                libc::EIO,
                libc::ETIMEDOUT,
                libc::ECONNABORTED,
                libc::ENOTCONN
            ]
            .contains(e),
            "a save failed with errno {e}"
        );
    }
    m.kill9();
    let again = place.mount(&url, &[]).expect("mount after SIGKILL");
    assert_all_there(&place, &names);
    again.stop_cleanly();
    assert_sound(&url);
}

#[test]
fn without_a_quorum_saves_fail_in_bounded_time_and_the_cluster_restarted_takes_them() {
    let mut cluster = Cluster::start();
    let url = cluster.url("quorum");
    let place = Place::new();
    let m = place.mount(&url, &[]).expect("mount");
    fs::write(place.path(&record_name(1)), "{\"n\": 1}").unwrap();
    let leader = cluster.leader();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in &others {
        cluster.kill(*i);
    }
    let started = Instant::now();
    let e = write_file(&place.path(&record_name(2)), b"{\"n\": 2}")
        .expect_err("a save without a quorum fails");
    let took = started.elapsed();
    assert!(
        [libc::EIO, libc::ETIMEDOUT].contains(&errno_of(&e)),
        "errno {e}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the failed save took {took:?}"
    );
    // Reads are served meanwhile.
    assert_eq!(
        fs::read_to_string(place.path(&record_name(1))).unwrap(),
        "{\"n\": 1}"
    );
    // The whole cluster restarted: the mount goes on, and ships what waited.
    cluster.kill(leader);
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_healthy();
    let saved = wait_until(Duration::from_secs(30), || {
        write_file(&place.path(&record_name(3)), b"{\"n\": 3}").is_ok()
    });
    assert!(saved, "no save succeeded after the cluster came back");
    m.stop_cleanly();
    let again = place.mount(&url, &[]).expect("mount again");
    for i in [1, 2, 3] {
        assert_eq!(
            fs::read_to_string(place.path(&record_name(i))).unwrap(),
            format!("{{\"n\": {i}}}"),
            "record {i}"
        );
    }
    again.stop_cleanly();
    assert_sound(&url);
}

#[test]
fn files_in_pieces_among_batches_larger_than_a_transaction_arrive_whole() {
    let cluster = Cluster::start();
    let url = cluster.url("big-batches");
    let place = Place::new();
    let m = place.mount(&url, &["--sync", "never"]).expect("mount");
    // Records and files in pieces made, saved over, renamed over each other and removed
    // without waiting: batches of many entries, some with pieces.
    let big = |i: usize| bytes_from(i as u64, (5 << 19) + i);
    for i in 0..300 {
        fs::write(place.path(&record_name(i)), format!("{{\"n\": {i}}}")).unwrap();
        if i % 60 == 0 {
            write_file(&place.path(&format!("big{i}.bin")), &big(i)).unwrap();
        }
    }
    write_file(&place.path("big60.bin"), &big(1)).unwrap();
    fs::rename(place.path("big120.bin"), place.path("big180.bin")).unwrap();
    fs::remove_file(place.path("big240.bin")).unwrap();
    for i in (0..300).step_by(2) {
        fs::remove_file(place.path(&record_name(i))).unwrap();
    }
    let log = m.daemon_log();
    m.stop_cleanly();
    if !log.contains("shipped in parts") {
        eprintln!("note: no batch was shipped in parts this time");
    }
    assert_sound(&url);
    // big0, big60 (saved over), big180 (big120's bytes, renamed over it): 3 pieces each.
    assert_eq!(piece_keys(&url).len(), 9, "{:?}", piece_keys(&url));
    let again = place.mount(&url, &[]).expect("mount again");
    assert_eq!(fs::read(place.path("big0.bin")).unwrap(), big(0));
    assert_eq!(fs::read(place.path("big60.bin")).unwrap(), big(1));
    assert_eq!(fs::read(place.path("big180.bin")).unwrap(), big(120));
    assert!(!place.path("big120.bin").exists() && !place.path("big240.bin").exists());
    assert_eq!(fs::read_dir(&place.mnt).unwrap().count(), 150 + 3);
    again.stop_cleanly();
}

#[test]
fn batches_larger_than_a_transaction_arrive_whole() {
    let cluster = Cluster::start();
    let url = cluster.url("batches");
    let place = Place::new();
    // Without waiting for each commit, commits come in batches of hundreds: more keys than
    // one transaction takes.
    let m = place.mount(&url, &["--sync", "never"]).expect("mount");
    let n = 600;
    fs::create_dir(place.path("d")).unwrap();
    for i in 0..n {
        fs::write(
            place.path(&format!("d/{}", record_name(i))),
            format!("{{\"n\": {i}}}"),
        )
        .unwrap();
    }
    for i in (0..n).step_by(3) {
        fs::remove_file(place.path(&format!("d/{}", record_name(i)))).unwrap();
    }
    // Saves over records etcd has: each one's transaction also compares that its node is
    // still there, a compare more per file than the keys it puts.
    for i in (0..n).filter(|i| i % 3 != 0) {
        let path = place.path(&format!("d/{}", record_name(i)));
        fs::write(path, format!("{{\"n\": {i}, \"again\": true}}")).unwrap();
    }
    let log = m.daemon_log();
    m.stop_cleanly();
    // Not certain (batches form as the commits come), but expected of 600 saves that do
    // not wait: said so that a test that no longer tests parts shows it.
    if !log.contains("shipped in parts") {
        eprintln!("note: no batch was shipped in parts this time");
    }
    assert_sound(&url);
    let again = place.mount(&url, &[]).expect("mount again");
    let names: Vec<String> = (0..n).filter(|i| i % 3 != 0).map(record_name).collect();
    let listed = fs::read_dir(place.path("d")).unwrap().count();
    assert_eq!(listed, names.len());
    for name in &names {
        let i = usize::from_str_radix(&name[..8], 16).unwrap();
        let got = fs::read_to_string(place.path(&format!("d/{name}"))).unwrap();
        assert_eq!(got, format!("{{\"n\": {i}, \"again\": true}}"));
    }
    again.stop_cleanly();
}

/// The piece keys of the prefix, by key.
fn piece_keys(url: &str) -> Vec<String> {
    use recordfs::etcd::{Etcd, EtcdUrl};
    let etcd = Etcd::connect(&EtcdUrl::parse(url).unwrap(), Duration::from_secs(10)).unwrap();
    let all = etcd.get_all(b"p/").unwrap();
    all.into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

/// Bytes no two calls give alike: `n` of them, from `seed`.
fn bytes_from(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn files_over_one_value_go_in_pieces_through_a_mount_and_leave_no_piece_behind() {
    let cluster = Cluster::start();
    let url = cluster.url("big");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("mount");
    let mb = b.mount(&url, &[]).expect("second mount");
    let shows = |place: &Place, name: &str, want: &[u8]| {
        wait_until(Duration::from_secs(20), || {
            fs::read(place.path(name)).is_ok_and(|got| got == want)
        })
    };
    // Saved on one mount in three pieces, shown by the other.
    let first = bytes_from(1, (5 << 19) + 5);
    write_file(&a.path("big.bin"), &first).unwrap();
    assert!(
        shows(&b, "big.bin", &first),
        "the second mount does not show it"
    );
    assert_eq!(piece_keys(&url).len(), 3, "{:?}", piece_keys(&url));
    // Saved over on the other mount, in two: the old pieces are gone.
    let second = bytes_from(2, (3 << 19) + 1);
    write_file(&b.path("big.bin"), &second).unwrap();
    assert!(
        shows(&a, "big.bin", &second),
        "the first mount does not show it"
    );
    let pieces = piece_keys(&url);
    assert_eq!(pieces.len(), 2, "{pieces:?}");
    // An append (bytes change, new pieces) and a chmod (the same pieces, listed again).
    let mut third = second.clone();
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(a.path("big.bin"))
            .unwrap();
        f.write_all(b"appended").unwrap();
        third.extend_from_slice(b"appended");
    }
    assert!(shows(&b, "big.bin", &third), "the append does not show");
    let before = piece_keys(&url);
    assert!(before.iter().all(|k| !pieces.contains(k)), "{before:?}");
    sh(&format!("chmod 600 {}", a.path("big.bin").display()));
    let mode = |p: &Place| fs::metadata(p.path("big.bin")).map(|m| m.mode() & 0o777);
    assert!(wait_until(Duration::from_secs(20), || mode(&b).ok() == Some(0o600)));
    assert_eq!(piece_keys(&url), before);
    assert_sound(&url);
    // Each version in etcd's history, with its pieces.
    let (code, out) = tool(&["log", &url, "--name", "big.bin"]);
    assert_eq!(code, 0, "{out}");
    let mut sets: Vec<(u64, u64)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["op"] == "SET")
        .map(|v| {
            (
                v["size"].as_u64().unwrap(),
                v["pieces"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // The file's making may go in on its own, empty, before its first close: it rides with
    // the next sync any commit waits on, which can come while the 2.5 MB are written (as a
    // local file exists empty once made). Seen once in a fresh-clone CI run (a debug build).
    if sets.first() == Some(&(0, 0)) {
        sets.remove(0);
    }
    let pieces: Vec<u64> = sets.iter().map(|(_, p)| *p).collect();
    assert_eq!(pieces, [3, 2, 2], "{out}");
    // A record over 1 MiB: JSON checked as any save; then small again: no piece left.
    let pad = "x".repeat(1_500_000);
    let record = format!("{{\"pad\": \"{pad}\"}}");
    fs::write(a.path(&record_name(1)), &record).unwrap();
    assert!(shows(&b, &record_name(1), record.as_bytes()));
    let e = write_file(&b.path(&record_name(1)), &[b'{'; (1 << 20) + 9]).expect_err("not JSON");
    assert_eq!(errno_of(&e), libc::EINVAL, "{e}");
    assert!(shows(&a, &record_name(1), record.as_bytes()));
    fs::write(a.path("big.bin"), b"small").unwrap();
    fs::write(b.path(&record_name(1)), b"{}").unwrap();
    assert!(shows(&b, "big.bin", b"small") && shows(&a, &record_name(1), b"{}"));
    assert_eq!(piece_keys(&url), Vec::<String>::new());
    // Removed in pieces: no piece left either.
    write_file(&a.path("gone.bin"), &first).unwrap();
    assert!(shows(&b, "gone.bin", &first));
    fs::remove_file(b.path("gone.bin")).unwrap();
    assert!(wait_until(Duration::from_secs(20), || !a
        .path("gone.bin")
        .exists()));
    assert_eq!(piece_keys(&url), Vec::<String>::new());
    // A temporary file in pieces renamed over a file in pieces: only the new one's stay.
    write_file(&a.path("gone.bin"), &first).unwrap();
    write_file(&a.path(".gone.bin.tmp"), &second).unwrap();
    fs::rename(a.path(".gone.bin.tmp"), a.path("gone.bin")).unwrap();
    assert!(shows(&b, "gone.bin", &second));
    assert_eq!(piece_keys(&url).len(), 2, "{:?}", piece_keys(&url));
    fs::remove_file(a.path("gone.bin")).unwrap();
    assert!(wait_until(Duration::from_secs(20), || !b
        .path("gone.bin")
        .exists()));
    assert_eq!(piece_keys(&url), Vec::<String>::new());
    // The limit: 32 pieces.
    let over = vec![b' '; (32 << 20) + 1];
    let e = write_file(&a.path("over.bin"), &over).expect_err("a file over 32 MiB");
    assert_eq!(errno_of(&e), libc::EFBIG, "{e}");
    write_file(&a.path("big.bin"), &first).unwrap();
    ma.stop_cleanly();
    // Pieces of saves cut short: by a mount no longer listed, and by one that is (the second,
    // by the block its key names).
    use recordfs::etcd::{Etcd, EtcdUrl};
    let etcd = Etcd::connect(&EtcdUrl::parse(&url).unwrap(), Duration::from_secs(10)).unwrap();
    let live = etcd
        .get_all(b"mounts/")
        .unwrap()
        .iter()
        .find_map(|(_, v)| {
            let v = String::from_utf8(v.clone()).unwrap();
            Some(v.rsplit_once(", fids from ")?.1.to_string())
        })
        .expect("the second mount's key names its fid block");
    let dead = "p/00000000000000ff.m7700000000000.0.0".to_string();
    let on_its_way = format!("p/00000000000000ff.m{live}.0.0");
    let put = [
        (dead.clone().into_bytes(), b"x".to_vec()),
        (on_its_way.clone().into_bytes(), b"y".to_vec()),
    ];
    etcd.put_all(&put).unwrap();
    let (code, out) = tool(&["check", &url]);
    assert!(code == 1 && out.contains(&dead), "{out}");
    // A new mount serves a prefix holding a file in pieces, and deletes the dead mount's.
    let again = a.mount(&url, &[]).expect("mount again");
    assert_eq!(fs::read(a.path("big.bin")).unwrap(), first);
    let left = piece_keys(&url);
    assert!(
        !left.contains(&dead) && left.contains(&on_its_way),
        "{left:?}"
    );
    again.stop_cleanly();
    etcd.put_if(&[], &[], &[on_its_way.into_bytes()]).unwrap();
    // A record in pieces imported while a mount serves the prefix: it shows it.
    let records = a.dir.path().join("big.jsonl");
    let id = "6f1c2b1e-0000-4000-8000-000000000001";
    fs::write(
        &records,
        format!("{{\"id\": \"{id}\", \"pad\": \"{pad}\"}}\n"),
    )
    .unwrap();
    let (code, out) = tool(&["import", &url, records.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let shown = wait_until(Duration::from_secs(20), || {
        fs::read_to_string(b.path(&format!("{id}.json"))).is_ok_and(|t| t.contains(&pad))
    });
    assert!(shown, "the imported record does not show");
    mb.stop_cleanly();
    assert_sound(&url);
    // Put in by a tool over the limit: the mount says why it does not serve the prefix.
    let huge = "x".repeat(32 << 20);
    fs::write(
        &records,
        format!("{{\"id\": \"{id}\", \"pad\": \"{huge}\"}}\n"),
    )
    .unwrap();
    let (code, out) = tool(&["import", &url, records.to_str().unwrap(), "--replace"]);
    assert_eq!(code, 0, "{out}");
    let refused = a.mount(&url, &[]).err().expect("refused");
    assert!(
        refused.contains("serves files of at most 33554432 bytes"),
        "{refused}"
    );
    assert_sound(&url);
}

/// Saves `big.bin` in place over and over, each time MIB MiB and `r` bytes of the byte `r`:
/// prints `ok R` once its close returned, until a save fails.
const BIG_WRITER: &str = r#"
import os, sys
path, mib = os.path.join(sys.argv[1], "big.bin"), int(sys.argv[2])
r = 1
while True:
    try:
        with open(path, "wb") as f:
            f.write(bytes([r % 256]) * ((mib << 20) + r))
    except OSError as e:
        print("error", e.errno, flush=True)
        break
    print("ok", r, flush=True)
    r += 1
"#;

/// `BIG_WRITER` on a mount, and the last save it said went in.
struct BigWriter {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    acknowledged: usize,
    mib: usize,
}

impl BigWriter {
    fn start(place: &Place, mib: usize) -> BigWriter {
        let mut child = Command::new("python3")
            .args([
                "-c",
                BIG_WRITER,
                place.mnt.to_str().unwrap(),
                &mib.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        BigWriter {
            child,
            out,
            acknowledged: 0,
            mib,
        }
    }

    /// Reads what it says until `n` saves are in (at most `limit`): whether they are.
    fn wait_for(&mut self, n: usize, limit: Duration) -> bool {
        use std::io::BufRead;
        let start = Instant::now();
        let mut line = String::new();
        while self.acknowledged < n && start.elapsed() < limit {
            line.clear();
            if self.out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(r) = line.trim().strip_prefix("ok ") {
                self.acknowledged = r.parse().unwrap();
            }
        }
        self.acknowledged >= n
    }

    /// Once its mount is gone or it is killed: the last save it said went in.
    fn finish(mut self) -> usize {
        use std::io::Read;
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let _ = self.child.wait();
        for l in rest.lines() {
            if let Some(r) = l.strip_prefix("ok ") {
                self.acknowledged = r.parse().unwrap();
            }
        }
        self.acknowledged
    }

    /// That the file on `place` is a version at least `acknowledged`, whole.
    fn assert_kept(place: &Place, mib: usize, acknowledged: usize) {
        let got = fs::read(place.path("big.bin")).unwrap();
        let r = got.len() - (mib << 20);
        assert!(
            r >= acknowledged,
            "version {r}, after {acknowledged} acknowledged"
        );
        assert!(
            got.iter().all(|b| *b as usize == r % 256),
            "version {r} is not whole"
        );
    }
}

#[test]
fn saves_of_a_file_in_pieces_survive_the_leaders_death() {
    let mut cluster = Cluster::start();
    let url = cluster.url("leader");
    let place = Place::new();
    let m = place.mount(&url, &[]).expect("mount");
    let mut writer = BigWriter::start(&place, 3);
    assert!(
        writer.wait_for(3, Duration::from_secs(60)),
        "three saves did not go in"
    );
    let leader = cluster.leader();
    cluster.kill(leader);
    let before = writer.acknowledged;
    assert!(
        writer.wait_for(before + 5, Duration::from_secs(60)),
        "saves did not go on after the leader died"
    );
    let mib = writer.mib;
    m.kill9();
    let acknowledged = writer.finish();
    // The killed daemon's pieces, if any, are deleted by the next mount here.
    let again = place.mount(&url, &[]).expect("mount again");
    BigWriter::assert_kept(&place, mib, acknowledged);
    again.stop_cleanly();
    assert_sound(&url);
}

#[test]
fn a_daemon_killed_while_it_saves_a_file_in_pieces_leaves_a_whole_version_and_no_piece() {
    let cluster = Cluster::start();
    let url = cluster.url("killed");
    let place = Place::new();
    let m = place.mount(&url, &[]).expect("mount");
    // Two saves in, then killed during the third or later.
    let mut writer = BigWriter::start(&place, 20);
    assert!(
        writer.wait_for(2, Duration::from_secs(120)),
        "two saves did not go in within 120 s"
    );
    // Killed once the next save's pieces are going in (more pieces than one version has).
    let pieces = || {
        let out = cluster
            .etcdctl(&["get", "--prefix", "/killed/p/", "--keys-only"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    let among = wait_until(Duration::from_secs(60), || pieces() > 21);
    m.kill9();
    let acknowledged = writer.finish();
    let (code, checked) = tool(&["check", &url]);
    if code == 0 {
        eprintln!(
            "note: the kill did not land between a save's pieces and its transaction ({among})"
        );
    } else {
        assert!(
            checked.contains("nothing in the store reaches it"),
            "{checked}"
        );
    }
    // Mounted again at once (the killed mount is still listed until its lease ends): the
    // last acknowledged version or a later one, whole, and the pieces of the save cut short
    // deleted (the killed mount was of this machine and its process is gone).
    let again = place.mount(&url, &[]).expect("mount after SIGKILL");
    BigWriter::assert_kept(&place, 20, acknowledged);
    again.stop_cleanly();
    assert_sound(&url);
}

#[test]
fn a_member_cut_off_and_joined_again_loses_no_save_and_a_follower_goes_on() {
    let cluster = Cluster::start_in_namespaces();
    let url = cluster.url("partition");
    let (place, f) = (Place::new(), Place::new());
    let m = place.mount(&url, &[]).expect("mount");
    fs::write(place.path(&record_name(0)), "{\"n\": 0}").unwrap();
    let follower = f.mount(&url, &["--read-only"]).expect("read-only mount");
    let writer = Writer::start(&place);
    assert!(wait_until(Duration::from_secs(20), || writer.count() >= 50));
    // Both mounts use the first member: cut off, it can neither be reached nor reach the
    // others. Saves go on through another member, and so does the follower.
    cluster.cut(0);
    let before = writer.count();
    assert!(
        wait_until(Duration::from_secs(30), || writer.count() >= before + 50),
        "saves did not go on with a member cut off"
    );
    cluster.heal(0);
    assert!(
        wait_until(Duration::from_secs(30), || cluster.member_healthy(0)),
        "the member did not join again"
    );
    let healed = writer.count();
    assert!(wait_until(Duration::from_secs(30), || writer.count() >= healed + 50));
    let (names, errors) = writer.finish();
    for e in &errors {
        assert!(
            [libc::EIO, libc::ETIMEDOUT].contains(e),
            "a save failed with errno {e}"
        );
    }
    // The follower shows the last save of each record, then a new mount shows them all.
    let last = names.last().expect("saves").clone();
    let shown = wait_until(Duration::from_secs(15), || {
        fs::read_to_string(f.path(&last))
            .is_ok_and(|t| t == fs::read_to_string(place.path(&last)).unwrap_or_default())
    });
    assert!(
        shown,
        "the follower does not show {last}:\n{}",
        f.mount_log()
    );
    assert_eq!(
        fs::read_dir(&f.mnt).unwrap().count(),
        fs::read_dir(&place.mnt).unwrap().count(),
        "the follower shows another number of records"
    );
    follower.stop_cleanly();
    m.stop_cleanly();
    let again = place.mount(&url, &[]).expect("mount again");
    assert_all_there(&place, &names);
    again.stop_cleanly();
    assert_sound(&url);
}
