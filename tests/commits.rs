//! Commit points, atomicity, validation and durability, on real mounts.

mod common;
use common::*;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

#[test]
fn bytes_round_trip_exactly_through_mount_and_backing_file() {
    let env = Env::new();
    let m = env.mount(&[]);
    let rec = "  {\"b\" : [1,2.50, \"\u{e9}\\u00e9\"],\n\t\"a\":null }  \n";
    fs::write(env.path(&record(1)), rec).unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    fs::write(env.path("blob.bin"), &binary).unwrap();
    assert_eq!(fs::read_to_string(env.path(&record(1))).unwrap(), rec);
    assert_eq!(fs::read(env.path("blob.bin")).unwrap(), binary);
    // The backing file holds exactly the committed bytes (once applied).
    assert!(wait_until(Duration::from_secs(10), || fs::read(
        env.backing("blob.bin")
    )
    .ok()
        == Some(binary.clone())));
    m.stop();
    assert_eq!(fs::read_to_string(env.backing(&record(1))).unwrap(), rec);
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
    let m = env.mount(&[]);
    assert_eq!(fs::read(env.path("blob.bin")).unwrap(), binary);
    drop(m);
}

#[test]
fn readers_see_the_old_content_until_the_writer_closes() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path(&record(2));
    fs::write(&p, "{\"v\": 1}").unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    w.write_all(b"{\"v\": 2, \"long\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}")
        .unwrap();
    // Another opener, and another process's stat, see the committed version; the writer's
    // own process sees its size.
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"v\": 1}");
    let (_, elsewhere) = sh(&format!("stat -c %s {}", p.display()));
    assert_eq!(elsewhere.trim(), "8");
    assert_eq!(fs::metadata(&p).unwrap().len(), 49);
    let mut r = fs::File::open(&p).unwrap();
    drop(w); // close: the commit point
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "{\"v\": 2, \"long\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"
    );
    // A reader opened before the commit keeps the version it opened.
    let mut old = String::new();
    r.read_to_string(&mut old).unwrap();
    assert_eq!(old, "{\"v\": 1}");
}

#[test]
fn invalid_json_is_refused_at_close_and_fsync_and_kept_aside() {
    let env = Env::new();
    let m = env.mount(&[]);
    let p = env.path(&record(3));
    fs::write(&p, "{\"good\": true}").unwrap();

    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"{\"good\": tru").unwrap();
    let e = f.sync_all().expect_err("fsync of invalid JSON");
    assert_eq!(errno_of(&e), libc::EINVAL);
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"good\": true}");
    // close(2) reports it too (std's File drop ignores close errors, so close by hand).
    use std::os::unix::io::IntoRawFd;
    let fd = f.into_raw_fd();
    assert_eq!(unsafe { libc::close(fd) }, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EINVAL)
    );
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"good\": true}");

    // The shell's `>` truncates, dup2()s, closes, writes: the old version must survive it.
    let (_, _) = sh(&format!("echo 'not json' > {}", p.display()));
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"good\": true}");

    let rejected: Vec<String> = fs::read_dir(env.store.join("rejected"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        rejected.contains(&"{\"good\": tru".to_string()),
        "{rejected:?}"
    );
    assert!(rejected.contains(&"not json\n".to_string()), "{rejected:?}");
    let log = m.daemon_log();
    assert!(
        log.contains(&record(3)) && log.contains("line 1 column 12"),
        "{log}"
    );
    // Plain files are not checked.
    fs::write(env.path("registry.json"), "not json either").unwrap();
    assert_eq!(
        fs::read_to_string(env.path("registry.json")).unwrap(),
        "not json either"
    );
}

#[test]
fn a_plain_file_renamed_to_a_record_must_hold_json() {
    let env = Env::new();
    let _m = env.mount(&[]);
    fs::write(env.path(&record(4)), "[1]").unwrap();
    fs::write(env.path("draft.tmp"), "{oops").unwrap();
    let e = fs::rename(env.path("draft.tmp"), env.path(&record(4))).unwrap_err();
    assert_eq!(errno_of(&e), libc::EINVAL);
    assert_eq!(fs::read_to_string(env.path(&record(4))).unwrap(), "[1]");
    assert!(env.path("draft.tmp").exists());
    fs::write(env.path("draft.tmp"), "[2]").unwrap();
    fs::rename(env.path("draft.tmp"), env.path(&record(4))).unwrap();
    assert_eq!(fs::read_to_string(env.path(&record(4))).unwrap(), "[2]");
}

#[test]
fn rename_commits_the_writes_of_a_file_still_open() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let mut f = fs::File::create(env.path("new.tmp")).unwrap();
    f.write_all(b"{\"from\": \"open handle\"}").unwrap();
    fs::rename(env.path("new.tmp"), env.path(&record(5))).unwrap();
    assert_eq!(
        fs::read_to_string(env.path(&record(5))).unwrap(),
        "{\"from\": \"open handle\"}"
    );
    drop(f);
}

#[test]
fn acknowledged_commits_survive_sigkill() {
    let env = Env::new();
    let m = env.mount(&[]);
    for i in 0..50u32 {
        fs::write(env.path(&record(100 + i)), format!("{{\"i\": {i}}}")).unwrap();
    }
    fs::write(env.path("notes.txt"), "hello").unwrap();
    m.kill9();
    let _m = env.mount(&[]);
    for i in 0..50u32 {
        assert_eq!(
            fs::read_to_string(env.path(&record(100 + i))).unwrap(),
            format!("{{\"i\": {i}}}")
        );
    }
    assert_eq!(fs::read_to_string(env.path("notes.txt")).unwrap(), "hello");
}

#[test]
fn o_trunc_then_sigkill_before_close_keeps_the_old_content() {
    let env = Env::new();
    let m = env.mount(&[]);
    let p = env.path(&record(6));
    fs::write(&p, "{\"old\": \"content\"}").unwrap();
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"{\"new\": ").unwrap();
    m.kill9();
    drop(f);
    let _m = env.mount(&[]);
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"old\": \"content\"}");
}

#[test]
fn metadata_commits_survive_sigkill() {
    let env = Env::new();
    let m = env.mount(&[]);
    for n in ["a.txt", "b.txt", "c.txt", "gone.txt"] {
        fs::write(env.path(n), n).unwrap();
    }
    fs::remove_file(env.path("gone.txt")).unwrap();
    fs::rename(env.path("a.txt"), env.path("b.txt")).unwrap();
    fs::set_permissions(env.path("c.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    let (code, out) = sh(&format!(
        "touch -d '2001-02-03 04:05:06.5 UTC' {}",
        env.path("c.txt").display()
    ));
    assert_eq!(code, 0, "{out}");
    m.kill9();
    let _m = env.mount(&[]);
    let mut names: Vec<String> = fs::read_dir(&env.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b.txt", "c.txt"]);
    assert_eq!(fs::read_to_string(env.path("b.txt")).unwrap(), "a.txt");
    let md = fs::metadata(env.path("c.txt")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.mtime(), 981173106);
    assert_eq!(md.mtime_nsec(), 500_000_000);
}

#[test]
fn explicit_mtime_after_writes_is_kept_at_close() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("copy.txt");
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(b"data").unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    f.set_modified(t).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), t);
    assert_eq!(fs::read_to_string(&p).unwrap(), "data");
}

#[test]
fn appends_and_holes_and_ftruncate_behave_like_a_local_file() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("log.txt");
    fs::write(&p, "one\n").unwrap();
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"two\n").unwrap();
    // The writer's process sees its own size (README, Semantics), in fstat and lseek.
    assert_eq!(a.metadata().unwrap().len(), 8);
    assert_eq!(a.seek(SeekFrom::End(0)).unwrap(), 8);
    drop(a);
    assert_eq!(fs::read_to_string(&p).unwrap(), "one\ntwo\n");
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"x").unwrap();
    f.set_len(12).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"one\ntwo\n\0\0x\0");
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"one\ntwo\n\0\0x\0");
}

#[test]
fn unlinked_open_files_stay_readable() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("tmpfile");
    fs::write(&p, "still here").unwrap();
    let mut r = fs::File::open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    assert_eq!(r.metadata().unwrap().len(), 10);
}

/// A version that shows whether it is whole: its padding repeats its own number.
fn version(writer: u32, n: u32) -> String {
    let len = 5_000 + ((writer * 7919 + n * 104_729) % 30_000) as usize;
    format!(
        "{{\"w\": {writer}, \"n\": {n}, \"pad\": \"{}\"}}",
        char::from(b'a' + (n % 26) as u8).to_string().repeat(len)
    )
}

fn is_whole(text: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    let (Some(w), Some(n)) = (v["w"].as_u64(), v["n"].as_u64()) else {
        return false;
    };
    text == version(w as u32, n as u32)
}

#[test]
fn concurrent_writers_and_readers_only_ever_see_whole_versions() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let names: Vec<_> = (0..2).map(|i| env.path(&record(500 + i))).collect();
    for p in &names {
        fs::write(p, version(9, 0)).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        let mut readers = Vec::new();
        for r in 0..2 {
            let (names, stop) = (names.clone(), stop.clone());
            readers.push(s.spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = fs::read_to_string(&names[r % 2]).unwrap();
                    assert!(
                        is_whole(&text),
                        "a torn or mixed read: {} bytes",
                        text.len()
                    );
                    reads += 1;
                }
                reads
            }));
        }
        let writers: Vec<_> = (0..4u32)
            .map(|w| {
                let names = names.clone();
                s.spawn(move || {
                    for n in 1..=40u32 {
                        let p = &names[((w + n) % 2) as usize];
                        let mut f = OpenOptions::new()
                            .write(true)
                            .truncate(true)
                            .open(p)
                            .unwrap();
                        let v = version(w, n);
                        // Several writes per version, so a reader could catch one half-done.
                        for chunk in v.as_bytes().chunks(4096) {
                            f.write_all(chunk).unwrap();
                        }
                        drop(f);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    for p in &names {
        assert!(is_whole(&fs::read_to_string(p).unwrap()));
    }
}

#[test]
fn chown_o_excl_and_renameat2_flags_through_the_kernel() {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path("a"), "A").unwrap();
    fs::write(env.path("b"), "B").unwrap();
    std::os::unix::fs::chown(env.path("a"), Some(1234), Some(5678)).unwrap();
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(env.path("a"))
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EEXIST);
    let c = |n: &str| CString::new(env.path(n).as_os_str().as_bytes()).unwrap();
    let renameat2 = |from: &str, to: &str, flags: u32| {
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                c(from).as_ptr(),
                libc::AT_FDCWD,
                c(to).as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    };
    assert_eq!(renameat2("a", "b", libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(renameat2("a", "b", libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read_to_string(env.path("a")).unwrap(), "B");
    assert_eq!(fs::read_to_string(env.path("b")).unwrap(), "A");
    assert_eq!(renameat2("a", "a", 0), 0, "rename onto itself");
    m.kill9();
    let _m = env.mount(&[]);
    let md = fs::metadata(env.path("b")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(fs::read_to_string(env.path("b")).unwrap(), "A");
    assert_eq!(fs::read_to_string(env.path("a")).unwrap(), "B");
}

/// Regression (found by tests/concurrency.rs): a forked child closes its copies of the
/// parent's descriptors (at exec, at exit), and each close reaches the daemon as a flush. It
/// committed the parent's half-written file, for every reader to see. Only a close by a
/// process that wrote through the descriptor commits it now; the last close always does.
#[test]
fn a_child_process_closing_its_copy_does_not_commit_the_parents_writes() {
    let env = Env::new();
    let _m = env.mount(&[]);
    for name in ["plain.txt".to_string(), record(0x51)] {
        let script = format!(
            r#"
import subprocess
p = {p:?}
f = open(p, "w")
f.write('{{"half": '); f.flush()
subprocess.run(["true"])                    # closes the inherited copy in the child
subprocess.run(["true"], close_fds=False)   # closes it at exec (O_CLOEXEC)
assert open(p).read() == "", repr(open(p).read())
f.write('"done"}}'); f.close()
assert open(p).read() == '{{"half": "done"}}', repr(open(p).read())
# The same after ftruncate, which the kernel sends without naming the process.
f = open(p, "r+")
f.truncate(0); f.write('{{"again": '); f.flush()
subprocess.run(["true"])
assert open(p).read() == '{{"half": "done"}}', repr(open(p).read())
f.write('1}}'); f.close()
assert open(p).read() == '{{"again": 1}}', repr(open(p).read())
"#,
            p = env.path(&name).to_str().unwrap()
        );
        python(&script, &[]);
    }
    let log = _m.daemon_log();
    assert!(!log.contains("refused"), "no half record was tried: {log}");
}

/// A backing file written over in place (the apply thread skips the truncate, chown and chmod
/// that would change nothing) ends with exactly the file's bytes, length, mode, owner and
/// mtime as the mount shows them: rewrites as long, shorter and longer, and after a chmod,
/// a chown and a set-user-ID mode.
#[test]
fn a_backing_file_written_over_in_place_has_the_files_bytes_and_attributes() {
    use std::os::unix::fs::chown;
    let env = Env::new();
    let m = env.mount(&[]);
    let (name, mut n) = (record(1), 0);
    let mut save = |text: String| {
        n += 1;
        fs::write(env.path(&name), text).unwrap();
    };
    let same = |env: &Env| {
        let (shown, backing) = (
            fs::metadata(env.path(&name)).unwrap(),
            fs::metadata(env.backing(&name)),
        );
        let key = |m: &fs::Metadata| {
            (
                m.len(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
            )
        };
        backing.is_ok_and(|b| key(&b) == key(&shown))
            && fs::read(env.backing(&name)).ok() == Some(fs::read(env.path(&name)).unwrap())
    };
    let settled = |env: &Env, what: &str| {
        assert!(
            wait_until(Duration::from_secs(10), || same(env)),
            "after {what}: the backing file is not what the mount shows"
        );
    };
    save(format!("{{\"v\": \"{}\"}}", "a".repeat(40)));
    settled(&env, "the first save");
    save(format!("{{\"v\": \"{}\"}}", "b".repeat(40)));
    settled(&env, "a save as long");
    save("{\"v\": 1}".to_string());
    settled(&env, "a shorter save");
    save(format!("{{\"v\": \"{}\"}}", "c".repeat(400)));
    settled(&env, "a longer save");
    fs::set_permissions(env.path(&name), fs::Permissions::from_mode(0o640)).unwrap();
    save(format!("{{\"v\": \"{}\"}}", "d".repeat(400)));
    settled(&env, "a chmod and a save as long");
    chown(env.path(&name), Some(1234), Some(5678)).unwrap();
    save(format!("{{\"v\": \"{}\"}}", "e".repeat(400)));
    settled(&env, "a chown and a save as long");
    fs::set_permissions(env.path(&name), fs::Permissions::from_mode(0o4755)).unwrap();
    settled(&env, "a set-user-ID mode");
    chown(env.path(&name), Some(0), Some(0)).unwrap();
    save(format!("{{\"v\": \"{}\"}}", "f".repeat(400)));
    settled(&env, "a chown back and a save as long");
    assert_eq!(n, 7);
    m.stop();
    let (code, out) = env.check();
    assert_eq!(code, 0, "{out}");
}
