//! Several mounts change one prefix (issue 14), against a real three-member cluster each test
//! starts: two mounts save the same records, make the same names and rename over the same
//! record at once.
//!
//! Guards against: a save acknowledged by one mount that another's overwrites without it
//! ever being in etcd (lost unnoticed: every acknowledged version must be in the record's
//! history); a torn record on either mount; two mounts that both make one name, or whose
//! trees differ from each other or from etcd once they are quiet; a refused change left in
//! a mount's cache; keys that leave a name leading nowhere (`recordfs check`).

mod common;
use common::cluster::*;
use common::*;

use std::collections::BTreeSet;
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Saves each of the records named on the command line `rounds` times, as `who`: in place
/// (open with O_TRUNC, write, close), or by a temporary file renamed over it (`--rename`).
/// Prints one line per save: `ok NAME CONTENT` once its close (or rename) returned, else
/// `error ERRNO NAME`. Reads every record back after each round: a torn one is `torn ...`.
const SAVER: &str = r#"
import json, os, sys
mnt, who, rounds, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
names = sys.argv[5:]
for r in range(rounds):
    for name in names:
        body = json.dumps({"by": who, "round": r, "name": name})
        path = os.path.join(mnt, name)
        try:
            if how == "rename":
                temp = os.path.join(mnt, ".%s.%s.tmp" % (name, who))
                with open(temp, "w") as f:
                    f.write(body)
                try:
                    os.replace(temp, path)
                except OSError:
                    try:
                        os.unlink(temp)
                    except OSError:
                        pass
                    raise
            else:
                with open(path, "w") as f:
                    f.write(body)
            print("ok", name, body, flush=True)
        except OSError as e:
            print("error", e.errno, name, flush=True)
    for name in names:
        try:
            text = open(os.path.join(mnt, name)).read()
        except OSError:
            continue
        try:
            json.loads(text)
        except ValueError:
            print("torn", name, repr(text), flush=True)
"#;

/// Makes each name with O_EXCL once, as `who`: `ok NAME` when open, write and close all
/// returned, `error ERRNO NAME` else.
const MAKER: &str = r#"
import json, os, sys
mnt, who = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    try:
        fd = os.open(os.path.join(mnt, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, json.dumps({"by": who}).encode())
        finally:
            os.close(fd)
        print("ok", name, flush=True)
    except OSError as e:
        print("error", e.errno, name, flush=True)
"#;

/// Saves the file named on the command line `rounds` times in place, as `who`, each time
/// a JSON record of 1.2 to 3.2 MB (so in two to four pieces in etcd). Prints `ok WHO ROUND`
/// once its close returned, else `error ERRNO WHO ROUND`.
const BIG_SAVER: &str = r#"
import json, os, sys
mnt, who, rounds, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
for r in range(rounds):
    pad = "x" * (1200000 + (r * 7919 + len(who) * 104729) % 2000000)
    try:
        with open(os.path.join(mnt, name), "w") as f:
            f.write(json.dumps({"by": who, "round": r, "pad": pad}))
        print("ok", who, r, flush=True)
    except OSError as e:
        print("error", e.errno, who, r, flush=True)
"#;

/// Makes each of `names` as `{}` on mount `a`, and waits (bounded) until mount `b` shows it.
fn made_on_both(a: &Place, b: &Place, names: &[String]) {
    for name in names {
        fs::write(a.path(name), "{}").unwrap();
    }
    for name in names {
        let shown = wait_until(Duration::from_secs(10), || {
            fs::read_to_string(b.path(name)).is_ok_and(|t| t == "{}")
        });
        assert!(shown, "{name}: not shown by the second mount within 10 s");
    }
}

fn python(script: &str, args: &[String]) -> Child {
    Command::new("python3")
        .args(["-c", script])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (at most 60 s) for `child`; its output.
fn output(mut child: Child) -> String {
    let ended = wait_until(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "a writer did not finish within 60 s: a save hangs");
    assert!(out.status.success(), "a writer failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits (bounded) until both mounts show what a new mount of the prefix shows (etcd's
/// state), times to the nanosecond; fails saying all three.
fn all_alike(a: &Place, b: &Place, url: &str) {
    let c = Place::new();
    let fresh = c.mount(url, &["--read-only"]).expect("a read-only mount");
    let mut last = (String::new(), String::new(), String::new());
    let same = wait_until(Duration::from_secs(20), || {
        last = (
            describe_tree_exactly(&a.mnt),
            describe_tree_exactly(&b.mnt),
            describe_tree_exactly(&c.mnt),
        );
        last.0 == last.2 && last.1 == last.2
    });
    fresh.stop_cleanly();
    assert!(
        same,
        "the mounts do not show etcd's tree within 20 s\nfirst:\n{}\nsecond:\n{}\netcd:\n{}",
        last.0, last.1, last.2
    );
}

/// Every version of `name` etcd keeps, as `show --at` prints each.
fn versions(url: &str, name: &str) -> BTreeSet<String> {
    let (code, out) = tool(&["history", url, name, "--json"]);
    assert_eq!(code, 0, "{out}");
    let mut all = BTreeSet::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let rev = v["revision"].as_i64().expect("a revision").to_string();
        let (code, shown) = tool(&["show", url, name, "--at", &rev]);
        assert_eq!(code, 0, "{shown}");
        all.insert(shown);
    }
    all
}

/// Every content the record at `name` (in the root) had at some revision: what etcd kept of
/// the name's history, read revision by revision.
fn contents_named(url: &str, name: &str) -> BTreeSet<String> {
    use recordfs::etcd::{layout, Etcd, EtcdUrl};
    let etcd = Etcd::connect(&EtcdUrl::parse(url).unwrap(), Duration::from_secs(10)).unwrap();
    let (now, _) = etcd.get_all_at(b"meta").unwrap();
    let key = layout::name_key(1, name.as_bytes());
    let mut all = BTreeSet::new();
    for rev in 1..=now {
        let Some(fid) = etcd.get_at(&key, rev).unwrap() else {
            continue;
        };
        let fid = u64::from_str_radix(std::str::from_utf8(&fid.value).unwrap(), 16).unwrap();
        if let Some(d) = etcd.get_at(&layout::data_key(fid), rev).unwrap() {
            all.insert(String::from_utf8(d.value).unwrap());
        }
    }
    all
}

#[test]
fn two_mounts_saving_the_same_records_end_alike_and_every_save_is_in_etcd() {
    let cluster = Cluster::start();
    let url = cluster.url("same");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("first mount");
    let mb = b.mount(&url, &[]).expect("second mount");
    let names: Vec<String> = (0..3).map(record_name).collect();
    let rounds = "25".to_string();
    let args = |place: &Place, who: &str| {
        let mut v = vec![
            place.mnt.display().to_string(),
            who.to_string(),
            rounds.clone(),
            "in-place".to_string(),
        ];
        v.extend(names.iter().cloned());
        v
    };
    // Made first: two mounts that make one name at once are the next test's.
    made_on_both(&a, &b, &names);
    let first = python(SAVER, &args(&a, "a"));
    let second = python(SAVER, &args(&b, "b"));
    let said = output(first) + &output(second);
    assert!(!said.contains("torn"), "{said}");
    // A save over another's save of the same file goes in over it: none is refused.
    assert!(!said.contains("error"), "{said}");
    all_alike(&a, &b, &url);
    for name in &names {
        let kept = versions(&url, name);
        for line in said.lines().filter(|l| l.contains(name.as_str())) {
            let body = line.splitn(3, ' ').nth(2).unwrap();
            assert!(
                kept.contains(body),
                "{name}: the acknowledged save {body} is not in etcd's history"
            );
        }
        // The last commit wins whole: what the mounts show is the last version.
        let now = fs::read_to_string(a.path(name)).unwrap();
        assert!(kept.contains(&now), "{name}: {now}");
    }
    ma.stop_cleanly();
    mb.stop_cleanly();
    assert_sound(&url);
}

#[test]
fn two_mounts_saving_one_file_in_pieces_end_alike_with_every_save_in_etcd() {
    let cluster = Cluster::start();
    let url = cluster.url("pieces");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("first mount");
    let mb = b.mount(&url, &[]).expect("second mount");
    let name = record_name(7);
    made_on_both(&a, &b, std::slice::from_ref(&name));
    let args = |place: &Place, who: &str| {
        [
            place.mnt.display().to_string(),
            who.into(),
            "12".into(),
            name.clone(),
        ]
        .to_vec()
    };
    let first = python(BIG_SAVER, &args(&a, "a"));
    let second = python(BIG_SAVER, &args(&b, "bb"));
    let said = output(first) + &output(second);
    // A save over another's save goes in over it, also when the other's deleted this
    // one's new pieces first (they are put again): none is refused.
    assert!(!said.contains("error"), "{said}");
    all_alike(&a, &b, &url);
    let (code, out) = tool(&["history", &url, &name, "--json"]);
    assert_eq!(code, 0, "{out}");
    let mut kept = BTreeSet::new();
    let mut versions = Vec::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let rev = v["revision"].as_i64().expect("a revision");
        let (code, shown) = tool(&["show", &url, &name, "--at", &rev.to_string()]);
        assert_eq!(code, 0, "{}", &shown[..shown.len().min(300)]);
        versions.push((rev, shown));
    }
    // The file's making may reach etcd before its first write does (a create rides with the
    // close for at most `SYNC_RIDE`, which a loaded machine can outlast): the one version
    // that may be empty is the first. Every other is whole JSON.
    versions.sort();
    if versions.first().is_some_and(|(_, shown)| shown.is_empty()) {
        versions.remove(0);
    }
    for (rev, shown) in &versions {
        let v: serde_json::Value = serde_json::from_str(shown)
            .unwrap_or_else(|e| panic!("revision {rev}: not whole JSON ({e}): {shown:.300}"));
        kept.insert(format!(
            "{} {}",
            v["by"].as_str().unwrap_or("-"),
            v["round"]
        ));
    }
    for line in said.lines() {
        let saved = line.strip_prefix("ok ").unwrap();
        assert!(
            kept.contains(saved),
            "the acknowledged save {saved} is not in etcd's history"
        );
    }
    let now: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(a.path(&name)).unwrap()).unwrap();
    assert!(kept.contains(&format!("{} {}", now["by"].as_str().unwrap(), now["round"])));
    let (log_a, log_b) = (a.mount_log(), b.mount_log());
    ma.stop_cleanly();
    mb.stop_cleanly();
    // Not certain (it takes the two saves' transactions at the same moment): said so that
    // a run that did not test it shows it.
    if !(log_a + &log_b).contains("put again in new pieces") {
        eprintln!("note: no save found its new pieces deleted by the other's this time");
    }
    // No piece is left that no file lists.
    assert_sound(&url);
}

#[test]
fn a_name_two_mounts_make_at_once_is_made_by_one_and_the_other_is_told() {
    let cluster = Cluster::start();
    let url = cluster.url("exclusive");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("first mount");
    let mb = b.mount(&url, &[]).expect("second mount");
    let names: Vec<String> = (0..40).map(record_name).collect();
    let args = |place: &Place, who: &str| {
        let mut v = vec![place.mnt.display().to_string(), who.to_string()];
        v.extend(names.iter().cloned());
        v
    };
    let first = python(MAKER, &args(&a, "a"));
    let second = python(MAKER, &args(&b, "b"));
    let said = [output(first), output(second)];
    all_alike(&a, &b, &url);
    for name in &names {
        let made: Vec<usize> = (0..2)
            .filter(|i| said[*i].lines().any(|l| l == format!("ok {name}")))
            .collect();
        assert_eq!(made.len(), 1, "{name} made by {made:?}: {said:?}");
        let by = ["a", "b"][made[0]];
        let now = fs::read_to_string(a.path(name)).unwrap();
        assert_eq!(now, format!("{{\"by\": \"{by}\"}}"), "{name}");
    }
    for out in &said {
        for line in out.lines().filter(|l| l.starts_with("error")) {
            let errno: i32 = line.split(' ').nth(1).unwrap().parse().unwrap();
            assert!(
                [libc::EEXIST, libc::ESTALE].contains(&errno),
                "a refused make fails with EEXIST or ESTALE: {line}"
            );
        }
    }
    ma.stop_cleanly();
    mb.stop_cleanly();
    assert_sound(&url);
}

#[test]
fn renames_over_one_record_from_two_mounts_each_go_in_or_are_refused() {
    let cluster = Cluster::start();
    let url = cluster.url("renames");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("first mount");
    let mb = b.mount(&url, &[]).expect("second mount");
    let names: Vec<String> = (0..2).map(record_name).collect();
    let args = |place: &Place, who: &str| {
        let mut v = vec![
            place.mnt.display().to_string(),
            who.to_string(),
            "25".to_string(),
            "rename".to_string(),
        ];
        v.extend(names.iter().cloned());
        v
    };
    let first = python(SAVER, &args(&a, "a"));
    let second = python(SAVER, &args(&b, "b"));
    let said = output(first) + &output(second);
    assert!(!said.contains("torn"), "{said}");
    for line in said.lines().filter(|l| l.starts_with("error")) {
        let errno: i32 = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(
            [libc::ESTALE, libc::EEXIST, libc::ENOENT].contains(&errno),
            "a refused rename: {line}"
        );
    }
    assert!(said.lines().any(|l| l.starts_with("ok")), "{said}");
    all_alike(&a, &b, &url);
    for name in &names {
        let kept = contents_named(&url, name);
        for line in said
            .lines()
            .filter(|l| l.starts_with("ok") && l.contains(name.as_str()))
        {
            let body = line.splitn(3, ' ').nth(2).unwrap();
            assert!(
                kept.contains(body),
                "{name}: the acknowledged rename of {body} was never at the name in etcd"
            );
        }
    }
    // No temporary file is left where its rename failed (each was removed) or went in.
    let left: Vec<String> = fs::read_dir(&a.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    ma.stop_cleanly();
    mb.stop_cleanly();
    assert_sound(&url);
}

/// Makes directory `dR`, then a file `WHO.txt` in it, for R in 0..ROUNDS: one line per step,
/// `ok STEP R` or `error ERRNO STEP R`.
const DIRS: &str = r#"
import os, sys
mnt, who, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    d = os.path.join(mnt, "d%d" % r)
    def fill():
        with open(os.path.join(d, "%s.txt" % who), "w") as f:
            f.write("x")
    steps = [("mkdir", lambda: os.mkdir(d)), ("file", fill)]
    for name, step in steps:
        try:
            step()
            print("ok", name, r, flush=True)
        except OSError as e:
            print("error", e.errno, name, r, flush=True)
"#;

#[test]
fn a_directory_removed_on_one_mount_while_the_other_fills_it_never_leaves_a_name_without_it() {
    let cluster = Cluster::start();
    let url = cluster.url("dirs");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("first mount");
    let mb = b.mount(&url, &[]).expect("second mount");
    let rounds = 30;
    // The first mount makes each directory and a file in it while the second removes the
    // directory as soon as it shows there.
    let maker = python(
        DIRS,
        &[a.mnt.display().to_string(), "a".into(), rounds.to_string()],
    );
    let remover = Command::new("python3")
        .args([
            "-c",
            r#"
import os, sys, time
mnt, rounds = sys.argv[1], int(sys.argv[2])
for r in range(rounds):
    d = os.path.join(mnt, "d%d" % r)
    until = time.time() + 10
    while not os.path.isdir(d) and time.time() < until:
        time.sleep(0.001)
    try:
        os.rmdir(d)
        print("ok rmdir", r, flush=True)
    except OSError as e:
        print("error", e.errno, "rmdir", r, flush=True)
"#,
        ])
        .arg(&b.mnt)
        .arg(rounds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let made = output(maker);
    let removed = output(remover);
    all_alike(&a, &b, &url);
    for r in 0..rounds {
        let dir = a.path(&format!("d{r}"));
        let file_in = made.lines().any(|l| l == format!("ok file {r}"));
        let rmdir_in = removed.lines().any(|l| l == format!("ok rmdir {r}"));
        // Both cannot have gone in: the file's directory would be gone.
        assert!(
            !(file_in && rmdir_in),
            "round {r}: the file and the rmdir both went in\n{made}\n{removed}"
        );
        if file_in {
            assert!(
                dir.join("a.txt").exists(),
                "round {r}: the file is not there"
            );
        }
        if rmdir_in {
            assert!(!dir.exists(), "round {r}: the directory is still there");
        }
    }
    for line in made.lines().chain(removed.lines()) {
        if let Some(rest) = line.strip_prefix("error ") {
            let errno: i32 = rest.split(' ').next().unwrap().parse().unwrap();
            assert!(
                [libc::ESTALE, libc::ENOENT, libc::ENOTEMPTY].contains(&errno),
                "{line}"
            );
        }
    }
    ma.stop_cleanly();
    mb.stop_cleanly();
    assert_sound(&url);
}

/// Reads the record at `mnt/name` over and over (open, read, close) until the file `stop`
/// exists; prints each content that differs from the one before, `torn ...` for one that is
/// not JSON.
const READER: &str = r#"
import json, os, sys
path, stop = os.path.join(sys.argv[1], sys.argv[2]), sys.argv[3]
last = None
while not os.path.exists(stop):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        print("error", e.errno, flush=True)
        continue
    if text != last:
        try:
            json.loads(text)
        except ValueError:
            print("torn", repr(text), flush=True)
        print(text, flush=True)
        last = text
"#;

#[test]
fn a_mount_that_saves_never_shows_a_version_older_than_one_it_showed() {
    let cluster = Cluster::start();
    let url = cluster.url("forward");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("first mount");
    let mb = b.mount(&url, &[]).expect("second mount");
    let name = record_name(0);
    made_on_both(&a, &b, std::slice::from_ref(&name));
    let stop = a.dir.path().join("stop");
    let reader = |place: &Place| {
        let (mnt, stop) = (place.mnt.display(), stop.display());
        python(READER, &[mnt.to_string(), name.clone(), stop.to_string()])
    };
    let readers = [reader(&a), reader(&b)];
    // Both mounts save the record in place at once while a reader on each reads it.
    let saver = |place: &Place, who: &str| {
        let mnt = place.mnt.display().to_string();
        let args = [
            mnt,
            who.into(),
            "40".into(),
            "in-place".into(),
            name.clone(),
        ];
        python(SAVER, &args)
    };
    let savers = [saver(&a, "a"), saver(&b, "b")];
    let said: String = savers.into_iter().map(output).collect();
    assert!(!said.contains("torn") && !said.contains("error"), "{said}");
    all_alike(&a, &b, &url);
    fs::write(&stop, "").unwrap();
    let seen = readers.map(output);
    ma.stop_cleanly();
    mb.stop_cleanly();

    // etcd's order of the versions: the record's SETs, revision by revision.
    let out = Command::new(BIN)
        .args(["log", &url, "--name", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let order: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["op"] == "SET")
        .map(|l| l["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order.len(),
        81,
        "the first version and 80 saves: {order:#?}"
    );
    for (who, seen) in ["first", "second"].iter().zip(&seen) {
        assert!(!seen.contains("torn") && !seen.contains("error"), "{seen}");
        let mut at = 0;
        for text in seen.lines() {
            let i = order
                .iter()
                .position(|v| v == text)
                .unwrap_or_else(|| panic!("the {who} mount showed {text}, which etcd never held"));
            assert!(
                i >= at,
                "the {who} mount showed {text} (version {i}) after version {at}: {seen}"
            );
            at = i;
        }
        assert_eq!(at, 80, "the {who} mount ends on the last version: {seen}");
    }
    assert_sound(&url);
}

#[test]
fn mounts_that_start_on_one_empty_prefix_at_once_make_one_store() {
    let cluster = Cluster::start();
    let mut raced = 0;
    for round in 0..5 {
        let url = cluster.url(&format!("fresh{round}"));
        let (a, b) = (Place::new(), Place::new());
        // Both find no `meta` and make the store: one transaction holds, the other mount
        // takes the store it made.
        let (ma, mb) = std::thread::scope(|s| {
            let first = s.spawn(|| a.mount(&url, &[]));
            let second = s.spawn(|| b.mount(&url, &[]));
            (first.join().unwrap(), second.join().unwrap())
        });
        let (ma, mb) = (ma.expect("first mount"), mb.expect("second mount"));
        fs::write(a.path(&record_name(1)), "{\"by\": \"a\"}").unwrap();
        fs::write(b.path(&record_name(2)), "{\"by\": \"b\"}").unwrap();
        all_alike(&a, &b, &url);
        for place in [&a, &b] {
            let names: BTreeSet<String> = fs::read_dir(&place.mnt)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, BTreeSet::from([record_name(1), record_name(2)]));
        }
        let said = a.mount_log() + &b.mount_log();
        raced += usize::from(said.contains("another mount moved meta first"));
        ma.stop_cleanly();
        mb.stop_cleanly();
        assert_sound(&url);
    }
    // Not certain (the two may start one after the other), said so that a test that no
    // longer races shows it.
    eprintln!("note: in {raced} of 5 rounds one mount found meta made by the other");
}

/// `inotifywait -m` of a mount's root, its events (`EVENT NAME` lines) in a file; killed
/// when dropped.
struct Watcher {
    child: Child,
    events: std::path::PathBuf,
}

impl Watcher {
    /// Watches `place`'s mount, and returns once the watch reports a file made through it.
    fn start(place: &Place, probe: &str) -> Watcher {
        let events = place.dir.path().join("events");
        let child = Command::new("inotifywait")
            .args(["-m", "-q", "-e", "create,close_write,moved_to,delete"])
            .args(["--format", "%e %f"])
            .arg(&place.mnt)
            .stdout(fs::File::create(&events).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let w = Watcher { child, events };
        let seen = wait_until(Duration::from_secs(10), || {
            let _ = fs::write(place.path(probe), "x");
            w.saw(probe)
        });
        assert!(seen, "inotifywait never reported {probe}");
        w
    }

    fn text(&self) -> String {
        fs::read_to_string(&self.events).unwrap_or_default()
    }

    /// Whether an event named `name`.
    fn saw(&self, name: &str) -> bool {
        self.text()
            .lines()
            .any(|l| l.ends_with(&format!(" {name}")))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn inotify_on_a_mount_sees_its_own_changes_and_none_another_mount_made() {
    let cluster = Cluster::start();
    let url = cluster.url("inotify");
    let (a, b) = (Place::new(), Place::new());
    let ma = a.mount(&url, &[]).expect("mount a");
    let mb = b.mount(&url, &[]).expect("mount b");
    let (wa, wb) = (Watcher::start(&a, "probe-a"), Watcher::start(&b, "probe-b"));
    let (x, y) = (record_name(1), record_name(2));
    let body = "{\"by\": \"a\"}";
    write_file(&a.path(&x), body.as_bytes()).unwrap();
    fs::write(b.path(&y), "{\"by\": \"b\"}").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || b.path("probe-a").exists()),
        "a's probe does not show on b"
    );
    fs::remove_file(b.path("probe-a")).unwrap();
    let shown = wait_until(Duration::from_secs(10), || {
        fs::read_to_string(b.path(&x)).ok().as_deref() == Some(body)
            && a.path(&y).exists()
            && !a.path("probe-a").exists()
    });
    assert!(shown, "the mounts do not show each other's changes");
    // Events of one watch come in order: a marker made after the other mount's changes
    // showed is reported after anything they would have caused.
    for (w, place, marker) in [(&wa, &a, "marker-a"), (&wb, &b, "marker-b")] {
        fs::write(place.path(marker), "x").unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || w.saw(marker)),
            "no event for {marker}"
        );
    }
    let (ta, tb) = (wa.text(), wb.text());
    // Each sees what was done through its mount: the made, written and removed files.
    for (text, want) in [
        (
            &ta,
            vec![format!("CREATE {x}"), format!("CLOSE_WRITE,CLOSE {x}")],
        ),
        (
            &tb,
            vec![
                format!("CREATE {y}"),
                format!("CLOSE_WRITE,CLOSE {y}"),
                "DELETE probe-a".to_string(),
            ],
        ),
    ] {
        for event in want {
            assert!(text.lines().any(|l| l == event), "no {event:?} in:\n{text}");
        }
    }
    // And nothing of what the other mount did: its files, its probe and marker, and on a,
    // b's removal of a's probe.
    let none = |text: &str, names: &[&str], events: &[&str]| {
        for line in text.lines() {
            let bad =
                names.iter().any(|n| line.ends_with(&format!(" {n}"))) || events.contains(&line);
            assert!(!bad, "an event of the other mount's change: {line}\n{text}");
        }
    };
    none(&ta, &[&y, "probe-b", "marker-b"], &["DELETE probe-a"]);
    none(
        &tb,
        &[&x, "marker-a"],
        &["CREATE probe-a", "CLOSE_WRITE,CLOSE probe-a"],
    );
    drop((wa, wb));
    mb.stop_cleanly();
    ma.stop_cleanly();
    assert_sound(&url);
}
