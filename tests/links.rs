//! Hard links through real mounts (issue 11).
//!
//! Guards against: link(2) answering other than ext4 does (nlink, st_ino, EEXIST, EPERM,
//! ENOENT, ctime), a save through one name not seen through the others, unlink or rename of
//! one name taking the file from the others, a plain file reaching a record's name through a
//! link without holding JSON (or a record saved with bad JSON through a plain name), links lost
//! by SIGKILL, a compaction or a clean remount, a backing tree that does not hold each name,
//! a store of version 3 (made by the previous build) that cannot take links, and rsync -H, tar
//! and cp -a losing them.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

#[test]
fn links_answer_as_ext4_does() {
    let env = Env::new();
    let _m = env.mount(&[]);
    python_on_mount(
        r#"
import errno, os, time
m = os.environ["MNT"]
a, b, c = m + "/a.txt", m + "/b.txt", m + "/d/c.txt"
os.mkdir(m + "/d")
open(a, "w").write("one\n")
before = os.stat(a)
time.sleep(0.01)
dir_before = os.stat(m + "/d").st_mtime_ns
os.link(a, b)
os.link(b, c)
sa, sb, sc = os.stat(a), os.stat(b), os.stat(c)
assert sa.st_ino == sb.st_ino == sc.st_ino
assert sa.st_nlink == sb.st_nlink == sc.st_nlink == 3, sa.st_nlink
assert sa.st_ctime_ns > before.st_ctime_ns, "link changes the file's ctime"
assert sa.st_mtime_ns == before.st_mtime_ns, "but not its mtime"
assert os.stat(m + "/d").st_mtime_ns > dir_before, "and the new name's directory's mtime"
assert sorted(os.listdir(m)) == ["a.txt", "b.txt", "d"]
# A save through any name is seen through all.
open(c, "w").write("two\n")
assert open(a).read() == open(b).read() == "two\n"
with open(b, "a") as f:
    f.write("three\n")
assert open(c).read() == "two\nthree\n"
# Errors as ext4 gives them.
fails(errno.EEXIST, os.link, a, b)
fails(errno.EPERM, os.link, m + "/d", m + "/d2")
fails(errno.ENOENT, os.link, m + "/none", m + "/x")
fails(errno.ENOENT, os.link, a, m + "/none/x")
# rename between two names of one file does nothing.
os.rename(a, b)
assert os.path.exists(a) and os.path.exists(b) and os.stat(a).st_nlink == 3
# unlink of one name leaves the others.
os.unlink(a)
assert not os.path.exists(a)
assert os.stat(b).st_nlink == os.stat(c).st_nlink == 2
assert open(b).read() == "two\nthree\n"
# A rename over one name of a linked file leaves its other names.
open(m + "/new.txt", "w").write("new\n")
os.rename(m + "/new.txt", b)
assert open(b).read() == "new\n" and open(c).read() == "two\nthree\n"
assert os.stat(c).st_nlink == 1 and os.stat(b).st_nlink == 1
# A file open while its last names go: fstat shows nlink 0, reads go on.
os.link(c, m + "/e.txt")
f = open(c)
os.unlink(c)
os.unlink(m + "/e.txt")
assert os.fstat(f.fileno()).st_nlink == 0
assert f.read() == "two\nthree\n"
f.close()
# Symlinks can be linked (the link itself, as linkat without AT_SYMLINK_FOLLOW).
os.symlink("b.txt", m + "/s")
os.link(m + "/s", m + "/s2", follow_symlinks=False)
assert os.readlink(m + "/s2") == "b.txt" and os.lstat(m + "/s2").st_nlink == 2
assert os.lstat(m + "/s").st_ino == os.lstat(m + "/s2").st_ino
# chmod through one name shows through the other.
os.link(b, m + "/d/b2.txt")
os.chmod(b, 0o600)
assert os.stat(m + "/d/b2.txt").st_mode & 0o777 == 0o600
# rmdir of a directory holding a link's second name: ENOTEMPTY until it goes.
fails(errno.ENOTEMPTY, os.rmdir, m + "/d")
os.unlink(m + "/d/b2.txt")
os.rmdir(m + "/d")
assert os.stat(b).st_nlink == 1
"#,
        &env,
    );
}

/// The JSON rule holds through every name: a plain file gets a record's name by link only if
/// it holds valid JSON (EINVAL, its bytes kept in rejected/), and a record saved through a
/// plain name must still hold JSON.
#[test]
fn the_json_rule_holds_through_every_name() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let (r1, r2) = (record(1), record(2));
    python_on_mount(
        &format!(
            r#"
import errno, os
m = os.environ["MNT"]
open(m + "/plain.txt", "w").write("not json")
try:
    os.link(m + "/plain.txt", m + "/{r1}")
    raise AssertionError("linked")
except OSError as e:
    assert e.errno == errno.EINVAL, errno.errorcode[e.errno]
assert not os.path.exists(m + "/{r1}")
open(m + "/{r2}", "w").write('{{"v":1}}')
os.link(m + "/{r2}", m + "/alias.txt")
f = open(m + "/alias.txt", "w")
f.write("{{bad")
try:
    f.close()
    raise AssertionError("saved")
except OSError as e:
    assert e.errno == errno.EINVAL, errno.errorcode[e.errno]
assert open(m + "/{r2}").read() == '{{"v":1}}'
open(m + "/alias.txt", "w").write('{{"v":2}}')
assert open(m + "/{r2}").read() == '{{"v":2}}'
open(m + "/ok.txt", "w").write('{{"fine":true}}')
os.link(m + "/ok.txt", m + "/{r1}")
"#
        ),
        &env,
    );
    let rejected = fs::read_dir(env.store.join("rejected")).unwrap().count();
    assert!(rejected >= 2, "the refused bytes are kept: {rejected}");
}

fn ino(p: &std::path::Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

fn nlink(p: &std::path::Path) -> u64 {
    fs::symlink_metadata(p).unwrap().nlink()
}

/// Links survive SIGKILL, a compaction and a clean remount; each name has its backing file
/// with the file's current bytes; `check` finds the store sound.
#[test]
fn links_survive_crashes_compactions_and_remounts() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::create_dir(env.path("sub")).unwrap();
    let rec = record(1);
    write_file(&env.path(&rec), b"{\"v\":1}").unwrap();
    fs::hard_link(env.path(&rec), env.path("sub/alias.json.txt")).unwrap();
    fs::hard_link(env.path(&rec), env.path("third")).unwrap();
    write_file(&env.path("third"), b"{\"v\":2}").unwrap();
    m.kill9();
    let m = env.mount(&[]);
    let names = [rec.as_str(), "sub/alias.json.txt", "third"];
    let same = |names: &[&str], bytes: &[u8], links: u64| {
        let first = ino(&env.path(names[0]));
        for n in names {
            assert_eq!(fs::read(env.path(n)).unwrap(), bytes, "{n}");
            assert_eq!(ino(&env.path(n)), first, "{n}");
            assert_eq!(nlink(&env.path(n)), links, "{n}");
        }
    };
    same(&names, b"{\"v\":2}", 3);
    env.compact();
    fs::remove_file(env.path(&rec)).unwrap();
    m.kill9();
    let m = env.mount(&[]);
    same(&names[1..], b"{\"v\":2}", 2);
    assert!(!env.path(&rec).exists());
    write_file(&env.path("sub/alias.json.txt"), b"{\"v\":3}").unwrap();
    m.stop_cleanly();
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    for n in &names[1..] {
        assert_eq!(
            fs::read(env.backing(n)).unwrap(),
            b"{\"v\":3}",
            "backing {n}"
        );
    }
    assert!(!env.backing(&rec).exists());
    let _m = env.mount(&[]);
    same(&names[1..], b"{\"v\":3}", 2);
}

/// A backing file of one name damaged while unmounted, after a clean stop, its length changed
/// or kept (as bit rot leaves it): the mount does not look, its first read checks every
/// name's copy and has the damaged one rewritten from the sound one, though the log no longer
/// holds the bytes.
#[test]
fn a_damaged_name_is_restored_from_the_other_at_the_first_read() {
    for damage in [&b"damaged"[..], b"SHARED BYTES\n"] {
        let env = Env::new();
        let m = env.mount(&[]);
        write_file(&env.path("a"), b"shared bytes\n").unwrap();
        fs::hard_link(env.path("a"), env.path("b")).unwrap();
        env.compact();
        m.stop_cleanly();
        fs::write(env.backing("b"), damage).unwrap();
        let (code, out) = env.check();
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("b: backing file"), "{out}");
        let m = env.mount(&[]);
        assert_eq!(fs::read(env.path("b")).unwrap(), b"shared bytes\n");
        let rewritten = wait_until(Duration::from_secs(10), || {
            fs::read(env.backing("b")).is_ok_and(|b| b == b"shared bytes\n")
        });
        assert!(rewritten, "{}", m.daemon_log());
        m.stop_cleanly();
        assert_eq!(env.check().0, 0);
    }
}

/// A store made by the previous version (store version 3, kept as a fixture) is upgraded at
/// its first writable mount, keeps its tree and extended attributes, and then takes links.
#[test]
fn a_version_3_store_is_upgraded_and_takes_links() {
    let env = Env::new();
    let m = mount_upgraded(&env, 3);
    let rec = "players/0a7c7d5e-3f2b-4c1e-9d3a-5b6c7d8e9f00.json";
    let old = "players/old/1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081.json";
    assert_eq!(
        fs::read_to_string(env.path(rec)).unwrap(),
        "{\"name\":\"ada\",\"score\":3}\n"
    );
    assert_eq!(fs::read_to_string(env.path(old)).unwrap(), "{\"t\":1}\n");
    let (_, attrs) = sh(&format!(
        "getfattr -d --absolute-names {}",
        env.path("notes.txt").display()
    ));
    assert!(attrs.contains("user.color=\"blue\""), "{attrs}");
    assert!(env.path("tokens").is_dir());
    fs::hard_link(env.path(rec), env.path("tokens/ada.json.bak")).unwrap();
    m.stop_cleanly();
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    let _m = env.mount(&[]);
    assert_eq!(ino(&env.path(rec)), ino(&env.path("tokens/ada.json.bak")));
    assert_eq!(nlink(&env.path(rec)), 2);
    assert_eq!(
        fs::read_link(env.path("link")).unwrap(),
        std::path::Path::new("notes.txt")
    );
}

/// rsync -aH into the mount and out of it keeps hard links (the second run copies nothing);
/// tar and cp -a keep them too.
#[test]
fn rsync_tar_and_cp_keep_links() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let d = env.dir.path();
    let (code, out) = sh(&format!(
        "set -e; mkdir -p {d}/src/sub; echo one > {d}/src/a; ln {d}/src/a {d}/src/sub/a2; \
         echo two > {d}/src/b; ln {d}/src/b {d}/src/b2; \
         rsync -aH {d}/src/ {m}/rs/; \
         echo second; rsync -aHi {d}/src/ {m}/rs/; echo end; \
         rsync -aH {m}/rs/ {d}/back/; \
         tar -C {d}/src -cf {d}/t.tar .; mkdir {m}/tar; tar -C {m}/tar -xf {d}/t.tar; \
         cp -a {d}/src {m}/cp",
        m = env.mnt.display(),
        d = d.display()
    ));
    assert_eq!(code, 0, "{out}");
    let second = out
        .split("second\n")
        .nth(1)
        .unwrap()
        .split("end\n")
        .next()
        .unwrap();
    assert_eq!(second, "", "the second rsync copied: {out}");
    for top in ["rs", "tar", "cp"] {
        let p = |n: &str| env.path(&format!("{top}/{n}"));
        assert_eq!(ino(&p("a")), ino(&p("sub/a2")), "{top}");
        assert_eq!(ino(&p("b")), ino(&p("b2")), "{top}");
        assert_ne!(ino(&p("a")), ino(&p("b")), "{top}");
        assert_eq!(nlink(&p("a")), 2, "{top}");
        assert_eq!(fs::read(p("sub/a2")).unwrap(), b"one\n", "{top}");
    }
    let back = |n: &str| d.join("back").join(n);
    assert_eq!(ino(&back("a")), ino(&back("sub/a2")));
    assert_eq!(nlink(&back("b")), 2);
}

/// A symbolic link whose backing symlink is lost after a compaction (the log no longer holds
/// its entry) is restored from the target the snapshot keeps, at its first readlink: a hard
/// link of a symlink made after that compaction, whose first name then goes, needs it.
#[test]
fn a_lost_symlink_is_restored_from_the_snapshot() {
    let env = Env::new();
    let m = env.mount(&[]);
    std::os::unix::fs::symlink("target.txt", env.path("s")).unwrap();
    env.compact();
    fs::hard_link(env.path("s"), env.path("s2")).unwrap();
    fs::remove_file(env.path("s")).unwrap();
    m.stop_cleanly();
    fs::remove_file(env.backing("s2")).unwrap();
    let m = env.mount(&[]);
    assert_eq!(
        fs::read_link(env.path("s2")).unwrap(),
        std::path::Path::new("target.txt")
    );
    let restored = wait_until(Duration::from_secs(10), || {
        fs::read_link(env.backing("s2")).is_ok_and(|t| t == std::path::Path::new("target.txt"))
    });
    assert!(restored, "{}", m.daemon_log());
}
