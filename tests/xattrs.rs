//! Extended attributes through real mounts (issue 11).
//!
//! Guards against: setxattr, getxattr, listxattr and removexattr answering other than ext4
//! does (EEXIST, ENODATA, ERANGE, the namespaces kept), attributes lost by SIGKILL, by a
//! compaction (snapshot) or by a save through a temp file's rename, and tools (setfattr,
//! getfattr, cp -a, rsync -aX) that would drop them.

mod common;
use common::*;

use std::fs;

#[test]
fn attributes_answer_as_ext4_does() {
    let env = Env::new();
    let _m = env.mount(&[]);
    python_on_mount(
        r#"
import errno, os
m = os.environ["MNT"]
p = m + "/f.txt"
open(p, "w").write("x")
os.mkdir(m + "/d")
os.symlink("f.txt", m + "/link")
os.setxattr(p, "user.color", b"blue")
os.setxattr(p, "user.bin", bytes(range(256)))
assert sorted(os.listxattr(p)) == ["user.bin", "user.color"]
assert os.getxattr(p, "user.bin") == bytes(range(256))
fails(errno.EEXIST, os.setxattr, p, "user.color", b"red", os.XATTR_CREATE)
fails(errno.ENODATA, os.setxattr, p, "user.none", b"red", os.XATTR_REPLACE)
os.setxattr(p, "user.color", b"red", os.XATTR_REPLACE)
assert os.getxattr(p, "user.color") == b"red"
fails(errno.ENODATA, os.getxattr, p, "user.none")
fails(errno.ENODATA, os.removexattr, p, "user.none")
fails(errno.EOPNOTSUPP, os.setxattr, p, "other.x", b"1")
fails(errno.EPERM, os.setxattr, m + "/link", "user.x", b"1", 0, follow_symlinks=False)
os.removexattr(p, "user.bin")
assert os.listxattr(p) == ["user.color"]
os.setxattr(m + "/d", "user.k", b"v")
os.setxattr(m, "user.top", b"1")
assert os.getxattr(m, "user.top") == b"1"
# A value that does not fit the caller's buffer: ERANGE (through the C call).
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(2)
assert libc.getxattr(p.encode(), b"user.color", buf, 2) == -1 and ctypes.get_errno() == errno.ERANGE
assert libc.getxattr(p.encode(), b"user.color", None, 0) == 3
"#,
        &env,
    );
}

/// Attributes survive SIGKILL, a compaction and a clean remount, and a save by temp file and
/// rename replaces them with the temp file's (as on ext4: they belong to the inode).
#[test]
fn attributes_survive_crashes_compactions_and_remounts() {
    let env = Env::new();
    let m = env.mount(&[]);
    let rec = env.path(&record(1));
    write_file(&rec, b"{}").unwrap();
    let set = |p: &std::path::Path, k: &str, v: &str| {
        let (code, out) = sh(&format!("setfattr -n {k} -v {v} {}", p.display()));
        assert_eq!(code, 0, "{out}");
    };
    let get = |p: &std::path::Path| sh(&format!("getfattr -d --absolute-names {}", p.display())).1;
    set(&rec, "user.owner", "ada");
    fs::create_dir(env.path("d")).unwrap();
    set(&env.path("d"), "user.kind", "folder");
    m.kill9();
    let m = env.mount(&[]);
    assert!(get(&rec).contains("user.owner=\"ada\""), "{}", get(&rec));
    env.compact();
    m.stop_cleanly();
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    let _m = env.mount(&[]);
    assert!(
        get(&rec).contains("user.owner=\"ada\""),
        "after a compaction: {}",
        get(&rec)
    );
    assert!(get(&env.path("d")).contains("user.kind=\"folder\""));
    // A new inode renamed over the record: its own attributes (none).
    write_file(&env.path("tmp.json"), b"{\"v\":2}").unwrap();
    fs::rename(env.path("tmp.json"), &rec).unwrap();
    assert!(!get(&rec).contains("user.owner"), "{}", get(&rec));
}

#[test]
fn cp_a_and_rsync_ax_keep_attributes() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let src = env.dir.path().join("src");
    let (code, out) = sh(&format!(
        "set -e; mkdir -p {s}/sub; echo a > {s}/a.txt; echo b > {s}/sub/b.txt; \
         setfattr -n user.one -v 1 {s}/a.txt; setfattr -n user.two -v 2 {s}/sub; \
         cp -a {s} {m}/cp; rsync -aX {s}/ {m}/rs/; rsync -aX {m}/rs/ {d}/back/; \
         getfattr -R -d --absolute-names {m}/cp {m}/rs {d}/back | grep user | sort",
        s = src.display(),
        m = env.mnt.display(),
        d = env.dir.path().display()
    ));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("user.one=\"1\"").count(), 3, "{out}");
    assert_eq!(out.matches("user.two=\"2\"").count(), 3, "{out}");
}

/// A store whose files hold at most `--max-file-size` bytes keeps no more bytes of extended
/// attributes per file (its log lines are bounded by that size): ENOSPC past it, as past the
/// 64 KiB every store keeps, and the attributes stay as they were.
#[test]
fn attributes_are_bounded_by_the_stores_file_size() {
    let env = Env::new();
    let _m = env.mount(&["--max-file-size", "1000"]);
    python_on_mount(
        r#"
import errno, os
p = os.environ["MNT"] + "/f.txt"
open(p, "w").write("x")
os.setxattr(p, "user.a", b"v" * 900)
try:
    os.setxattr(p, "user.b", b"v" * 200)
    raise AssertionError("no error")
except OSError as e:
    assert e.errno == errno.ENOSPC, errno.errorcode[e.errno]
assert os.listxattr(p) == ["user.a"]
"#,
        &env,
    );
}
