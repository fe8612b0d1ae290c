//! Directories through real mounts and real syscalls (issue 11).
//!
//! Guards against: mkdir, rmdir and rename of directories answering other than ext4 does
//! (errnos, link counts, `..`), records in subdirectories escaping the JSON rule, a tree lost
//! or reshaped by SIGKILL or a clean remount, a backing tree that does not mirror the mount,
//! and a store made by the previous version that cannot take directories.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{errno_of, mount_upgraded, record, rename2, sh, write_file, Env};

fn errno<T>(r: std::io::Result<T>) -> i32 {
    errno_of(&r.err().expect("an error"))
}

#[test]
fn directories_answer_as_ext4_does() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = |s: &str| env.path(s);
    fs::create_dir_all(p("a/b/c")).unwrap();
    fs::create_dir(p("e")).unwrap();
    assert_eq!(errno(fs::create_dir(p("a"))), libc::EEXIST);
    assert_eq!(errno(fs::create_dir(p("nowhere/x"))), libc::ENOENT);
    write_file(&p("a/f.txt"), b"x").unwrap();
    assert_eq!(errno(fs::create_dir(p("a/f.txt/x"))), libc::ENOTDIR);
    // Link counts as ext4 keeps them: 2 + subdirectories.
    let nlink = |s: &str| fs::metadata(p(s)).unwrap().nlink();
    assert_eq!((nlink(""), nlink("a"), nlink("a/b/c")), (4, 3, 2));
    // `..` is the parent.
    assert_eq!(
        fs::metadata(p("a/b/..")).unwrap().ino(),
        fs::metadata(p("a")).unwrap().ino()
    );
    // rmdir and unlink.
    assert_eq!(errno(fs::remove_dir(p("a"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_dir(p("a/f.txt"))), libc::ENOTDIR);
    assert_eq!(errno(fs::remove_file(p("e"))), libc::EISDIR);
    assert_eq!(errno(fs::remove_dir(&env.mnt)), libc::EBUSY);
    // rename of directories.
    assert_eq!(rename2(&p("a"), &p("a/b/c/a"), 0), libc::EINVAL);
    assert_eq!(rename2(&p("e"), &p("a"), 0), libc::ENOTEMPTY);
    assert_eq!(rename2(&p("e"), &p("a/f.txt"), 0), libc::ENOTDIR);
    assert_eq!(rename2(&p("a/f.txt"), &p("e"), 0), libc::EISDIR);
    assert_eq!(
        rename2(&p("e"), &p("a/b/c"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(
        rename2(&p("e"), &p("a/b/c"), 0),
        0,
        "over an empty directory"
    );
    assert!(!p("e").exists() && p("a/b/c").is_dir());
    assert_eq!(
        rename2(&p("a/b"), &p("b"), 0),
        0,
        "up a level, with what is in it"
    );
    assert!(p("b/c").is_dir());
    assert_eq!((nlink(""), nlink("a")), (4, 2));
    // An exchange of a directory and a file; never into itself.
    assert_eq!(rename2(&p("b"), &p("a/f.txt"), libc::RENAME_EXCHANGE), 0);
    assert!(p("b").is_file() && p("a/f.txt/c").is_dir());
    assert_eq!(
        rename2(&p("a"), &p("a/f.txt/c"), libc::RENAME_EXCHANGE),
        libc::EINVAL
    );
    // A listing shows what is there, in a subdirectory as at the top.
    let mut names: Vec<String> = fs::read_dir(p("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["f.txt"]);
}

#[test]
fn records_in_any_directory_are_held_to_the_json_rule() {
    let env = Env::new();
    let _m = env.mount(&[]);
    fs::create_dir_all(env.path("players/archive")).unwrap();
    let rec = env.path(&format!("players/archive/{}", record(1)));
    write_file(&rec, br#"{"name":"ada"}"#).unwrap();
    let e = write_file(&rec, b"{not json").unwrap_err();
    assert_eq!(errno_of(&e), libc::EINVAL);
    assert_eq!(fs::read(&rec).unwrap(), br#"{"name":"ada"}"#);
    // Moving a plain file to a record's name in another directory is checked too.
    write_file(&env.path("draft.txt"), b"nope").unwrap();
    assert_eq!(
        rename2(
            &env.path("draft.txt"),
            &env.path(&format!("players/{}", record(2))),
            0
        ),
        libc::EINVAL
    );
}

/// A tree made by ordinary tools survives SIGKILL and a clean remount whole, the backing tree
/// mirrors it, and `check` finds nothing wrong.
#[test]
fn a_tree_survives_sigkill_and_a_remount() {
    let env = Env::new();
    let m = env.mount(&[]);
    let script = format!(
        "set -e; cd {mnt}; mkdir -p players/archive data/logs tokens; \
         printf '{{\"a\":1}}' > players/{r1}; printf '{{\"b\":2}}' > players/archive/{r2}; \
         echo line > data/logs/today.log; mkdir gone; rmdir gone; \
         mv tokens data/; chmod 750 data; ln -s ../players data/p",
        mnt = env.mnt.display(),
        r1 = record(1),
        r2 = record(2)
    );
    let (code, out) = sh(&script);
    assert_eq!(code, 0, "{out}");
    let listing = |root: &Path| {
        let (code, out) = sh(&format!(
            "cd {} && find . -printf '%y %m %p\\n' | sort && cat players/*.json players/archive/*.json data/logs/today.log",
            root.display()
        ));
        assert_eq!(code, 0, "{out}");
        out
    };
    let before = listing(&env.mnt);
    m.kill9();
    let m = env.mount(&[]);
    assert_eq!(listing(&env.mnt), before, "after SIGKILL");
    m.stop_cleanly();
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    let _m = env.mount(&[]);
    assert_eq!(listing(&env.mnt), before, "after a clean remount");
    // The backing tree holds the same names (its directories are private: 0700).
    let names = |root: &Path| {
        sh(&format!(
            "cd {} && find . -printf '%y %p\\n' | sort",
            root.display()
        ))
        .1
    };
    assert_eq!(names(&env.store.join("root")), names(&env.mnt));
    assert_eq!(
        fs::metadata(env.path("data")).unwrap().permissions().mode() & 0o777,
        0o750
    );
}

#[test]
fn a_set_group_id_directory_passes_its_group_on() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, None, Some(100)).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir(shared.join("sub")).unwrap();
    write_file(&shared.join("f.txt"), b"x").unwrap();
    let sub = fs::metadata(shared.join("sub")).unwrap();
    assert_eq!((sub.gid(), sub.mode() & 0o2000), (100, 0o2000));
    assert_eq!(fs::metadata(shared.join("f.txt")).unwrap().gid(), 100);
}

/// A store made by the previous version (store version 2, kept as a fixture) is upgraded at
/// its first writable mount, keeps every file, and then holds directories.
#[test]
fn a_version_2_store_is_upgraded_and_takes_directories() {
    let env = Env::new();
    let m = mount_upgraded(&env, 2);
    let rec = "0a7c7d5e-3f2b-4c1e-9d3a-5b6c7d8e9f00.json";
    assert_eq!(
        fs::read_to_string(env.path(rec)).unwrap(),
        "{\"name\":\"ada\",\"score\":2}\n"
    );
    assert_eq!(
        fs::read_link(env.path("link")).unwrap(),
        Path::new("notes.txt")
    );
    fs::create_dir(env.path("players")).unwrap();
    fs::rename(env.path(rec), env.path(&format!("players/{rec}"))).unwrap();
    m.stop_cleanly();
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    let _m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path(&format!("players/{rec}"))).unwrap(),
        "{\"name\":\"ada\",\"score\":2}\n"
    );
    assert_eq!(
        fs::read_to_string(env.path("notes.txt")).unwrap(),
        "plain notes\n"
    );
}

/// A tree 1,000 levels deep works; a path longer than the backing tree can hold (PATH_MAX,
/// less STORE's own path) is refused with ENAMETOOLONG at mkdir, create and the rename of a
/// directory, and the store stays writable and mounts again.
#[test]
fn deep_trees_work_and_paths_past_the_limit_are_refused() {
    let env = Env::new();
    let m = env.mount(&["--sync", "never"]);
    // One level at a time, from the level above, as a program working in its directory does
    // (each path walk costs the kernel a lookup per level).
    let (code, out) = sh(&format!(
        "cd {} && for i in $(seq 1000); do mkdir d && cd -P d || exit 1; done; echo '{{}}' > {}",
        env.mnt.display(),
        record(1)
    ));
    assert_eq!(code, 0, "{out}");
    let deep = "d/".repeat(1000);
    // Long names, one level at a time (the path soon passes what one syscall takes).
    let long = "x".repeat(250);
    let script = format!(
        "cd {m} && while mkdir {long} 2>/dev/null && cd -P {long}; do :; done; \
         mkdir {long} 2>&1; echo x > {long} 2>&1; cd {m}; mkdir y z; echo ok",
        m = env.mnt.display()
    );
    let (code, out) = sh(&script);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("File name too long"), "{out}");
    assert!(out.contains("ok\n"), "the store stayed writable: {out}");
    // Moving the chain of long names down a level would pass the limit too.
    let short = "y".repeat(200);
    fs::create_dir(env.path(&short)).unwrap();
    let e = fs::rename(env.path(&long), env.path(&format!("{short}/{long}"))).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENAMETOOLONG);
    m.stop_cleanly();
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    let _m = env.mount(&[]);
    assert_eq!(
        fs::read(env.path(&format!("{deep}{}", record(1)))).unwrap(),
        b"{}\n"
    );
}

/// The names readdir gives from a position on (via libc: opendir, telldir, seekdir, rewinddir).
fn names_from(d: *mut libc::DIR) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        // SAFETY: `d` is an open directory stream; readdir's entry lives until the next call.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            return out;
        }
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        let name = name.to_string_lossy().into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
}

/// readdir while the directory changes: seekdir to a telldir position continues from there
/// even when entries before it went away meanwhile, and rewinddir shows the directory as it
/// is now, as on ext4.
#[test]
fn readdir_positions_hold_while_entries_come_and_go() {
    let env = Env::new();
    let _m = env.mount(&[]);
    for n in ["a", "b", "c", "d"] {
        write_file(&env.path(n), b"x").unwrap();
    }
    let path = CString::new(env.mnt.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path; the stream is closed below.
    let d = unsafe { libc::opendir(path.as_ptr()) };
    assert!(!d.is_null());
    // The order is the directory's own (its names' hashes, as on ext4), the same each time.
    let order = names_from(d);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, ["a", "b", "c", "d"]);
    unsafe { libc::rewinddir(d) };
    // Read two, note the position, remove them and add one; the rest comes from there.
    let mut first = Vec::new();
    while first.len() < 2 {
        let e = unsafe { libc::readdir(d) };
        assert!(!e.is_null());
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        let name = name.to_string_lossy().into_owned();
        if name != "." && name != ".." {
            first.push(name);
        }
    }
    assert_eq!(first, order[..2]);
    let pos = unsafe { libc::telldir(d) };
    fs::remove_file(env.path(&first[0])).unwrap();
    fs::remove_file(env.path(&first[1])).unwrap();
    write_file(&env.path("e"), b"x").unwrap();
    unsafe { libc::seekdir(d, pos) };
    assert_eq!(names_from(d), order[2..], "no entry skipped or given twice");
    unsafe { libc::rewinddir(d) };
    let mut now = names_from(d);
    now.sort();
    let mut expected = vec![order[2].clone(), order[3].clone(), "e".to_string()];
    expected.sort();
    assert_eq!(now, expected, "rewinddir shows the directory now");
    unsafe { libc::closedir(d) };
}
