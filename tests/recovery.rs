//! Recovery after crashes and damage, and the refusals that protect a store.

mod common;
use common::*;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_torn_last_entry_is_cut_with_a_warning() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"kept\": 1}").unwrap();
    m.stop();
    let good_len = fs::metadata(env.log_segment()).unwrap().len();
    let mut log = OpenOptions::new()
        .append(true)
        .open(env.log_segment())
        .unwrap();
    log.write_all(b"{\"seq\":99,\"ts\":1,\"op\":\"SET\",\"fid\":2,\"na")
        .unwrap();
    drop(log);
    let (code, out) = env.check();
    assert_eq!(code, 1, "check reports the torn tail: {out}");
    assert!(out.contains(&format!("offset {good_len}")), "{out}");
    let m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path(&record(1))).unwrap(),
        "{\"kept\": 1}"
    );
    let text = m.daemon_log();
    assert!(
        text.contains("torn last entry") && text.contains(&format!("offset {good_len}")),
        "{text}"
    );
    fs::write(env.path(&record(2)), "[]").unwrap();
    m.stop();
    assert_eq!(env.check().0, 0);
}

#[test]
fn corruption_in_the_middle_refuses_the_mount_and_check_names_it() {
    let env = Env::new();
    let m = env.mount(&[]);
    for i in 0..5 {
        fs::write(env.path(&record(i)), format!("{{\"n\": {i}}}")).unwrap();
    }
    m.stop();
    let mut bytes = fs::read(env.log_segment()).unwrap();
    let needle = b"\\\"n\\\": 2";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("entry of record 2");
    bytes[at + needle.len() - 1] = b'7';
    fs::write(env.log_segment(), &bytes).unwrap();
    let line_start = bytes[..at].iter().rposition(|b| *b == b'\n').unwrap() + 1;

    let err = env.mount_refused(&[]);
    assert!(
        err.contains("corrupt") && err.contains(&format!("offset {line_start}")),
        "{err}"
    );
    assert!(err.contains("00000000000000000001.log"), "{err}");
    assert!(err.contains("Last good entry before it:"), "{err}");
    let (code, out) = env.check();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("offset {line_start}")), "{out}");
    // The store was not touched by the refused mount.
    assert_eq!(fs::read(env.log_segment()).unwrap(), bytes);
}

#[test]
fn salvage_mounts_a_log_damaged_in_the_middle_and_keeps_every_other_commit() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"v\": 1}").unwrap();
    fs::write(env.path(&record(2)), "{\"v\": 1}").unwrap();
    fs::write(env.path(&record(1)), "{\"v\": 2}").unwrap();
    fs::write(env.path(&record(3)), "{\"v\": 1}").unwrap();
    m.stop();
    // Bit rot in the entry that committed version 2 of record 1.
    let mut log = fs::read(env.log_segment()).unwrap();
    let at = find(&log, b"{\\\"v\\\": 2}").expect("the entry of version 2") + 8;
    let line_start = log[..at].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    log[at] = b'3';
    fs::write(env.log_segment(), &log).unwrap();

    let refused = env.mount_refused(&[]);
    assert!(refused.contains("--salvage"), "{refused}");
    assert!(
        Command::new(BIN)
            .args(["mount", "--salvage", "--read-only"])
            .arg(&env.store)
            .arg(&env.mnt)
            .output()
            .unwrap()
            .status
            .code()
            == Some(2),
        "a salvage writes: not with --read-only"
    );

    let m = env.mount(&["--salvage"]);
    let read = |n| fs::read_to_string(env.path(&record(n))).unwrap();
    assert_eq!(read(1), "{\"v\": 1}", "the version before the lost entry");
    assert_eq!(read(2), "{\"v\": 1}");
    assert_eq!(read(3), "{\"v\": 1}", "entries after the damage are kept");
    let log_text = m.daemon_log();
    assert!(
        log_text.contains(&format!("line at offset {line_start} is dropped")),
        "{log_text}"
    );
    let kept = env.store.join("log").join(format!(
        "{}.bad-{line_start}",
        env.log_segment().file_name().unwrap().to_string_lossy()
    ));
    let line_end = line_start + log[line_start..].iter().position(|b| *b == b'\n').unwrap();
    assert_eq!(
        fs::read(&kept).unwrap(),
        &log[line_start..line_end],
        "the dropped line's bytes are kept"
    );
    // The backing file held version 2, whose entry is lost: it is kept aside, not overwritten.
    let aside: Vec<String> = fs::read_dir(env.store.join("lost+found"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(aside, ["{\"v\": 2}"]);
    fs::write(env.path(&record(2)), "{\"v\": 2}").unwrap();
    m.stop();

    let (code, report) = env.check();
    assert_eq!(code, 0, "a salvaged store is sound: {report}");
    let m = env.mount(&[]);
    assert_eq!(read(1), "{\"v\": 1}");
    assert_eq!(
        read(2),
        "{\"v\": 2}",
        "commits after the salvage are kept too"
    );
    m.stop();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Backing files damaged while unmounted, after a clean stop: the checkpoint vouches for the
/// whole tree, so the mount looks at none of them. One missing and one whose bytes changed
/// but not its length (as bit rot leaves it) are caught at their first read, served the log's
/// bytes and rewritten; a planted one is never served, `check` names it and `--verify` sets
/// it aside.
#[test]
fn a_missing_or_stale_backing_file_is_restored_from_the_log() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"a\": 1}").unwrap();
    fs::write(env.path("notes.txt"), "notes").unwrap();
    m.stop();
    fs::remove_file(env.backing(&record(1))).unwrap();
    fs::write(env.backing("notes.txt"), "NOTES").unwrap();
    fs::write(env.backing("stray.txt"), "not from the log").unwrap();
    let (code, out) = env.check();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&record(1)) && out.contains("missing"), "{out}");
    assert!(
        out.contains("notes.txt") && out.contains("differs"),
        "{out}"
    );
    assert!(out.contains("stray.txt"), "{out}");

    let m = env.mount(&[]);
    let log = m.daemon_log();
    assert!(
        !log.contains("differs") && !log.contains("missing") && !log.contains("stray.txt"),
        "the mount looks at nothing the checkpoint vouches for: {log}"
    );
    assert_eq!(
        fs::read_to_string(env.path(&record(1))).unwrap(),
        "{\"a\": 1}"
    );
    assert_eq!(fs::read_to_string(env.path("notes.txt")).unwrap(), "notes");
    assert!(!env.path("stray.txt").exists());
    let rewritten = |name: &str, want: &str| {
        wait_until(Duration::from_secs(10), || {
            fs::read_to_string(env.backing(name)).is_ok_and(|t| t == want)
        })
    };
    assert!(rewritten(&record(1), "{\"a\": 1}"), "{}", m.daemon_log());
    assert!(rewritten("notes.txt", "notes"), "{}", m.daemon_log());
    let log = m.daemon_log();
    assert!(
        log.contains("notes.txt: content differs from the log"),
        "{log}"
    );
    m.stop();
    let (code, out) = env.check();
    assert_eq!(code, 1, "only the planted file is left to find: {out}");
    assert!(
        out.contains("stray.txt") && !out.contains("notes.txt"),
        "{out}"
    );
    let m = env.mount(&["--verify"]);
    assert!(!env.backing("stray.txt").exists());
    let lost: Vec<_> = fs::read_dir(env.store.join("lost+found"))
        .unwrap()
        .collect();
    assert_eq!(lost.len(), 1, "the stray file is kept aside, not deleted");
    m.stop();
    assert_eq!(env.check().0, 0);
}

/// A backing directory removed by hand after a clean stop: the mount, which looks at every
/// directory (not at every file), makes it again; the files in it come back at their first
/// read, and new ones can be saved there.
#[test]
fn a_backing_directory_removed_by_hand_is_made_again_at_mount() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::create_dir_all(env.path("d/e")).unwrap();
    fs::write(env.path("d/e/a.txt"), "a").unwrap();
    m.stop();
    fs::remove_dir_all(env.backing("d")).unwrap();
    let m = env.mount(&[]);
    assert!(env.backing("d/e").is_dir(), "{}", m.daemon_log());
    assert_eq!(fs::read_to_string(env.path("d/e/a.txt")).unwrap(), "a");
    fs::write(env.path("d/e/b.txt"), "b").unwrap();
    fs::write(env.path("c.txt"), "c").unwrap();
    m.stop_cleanly();
    assert_eq!(env.check().0, 0);
    assert_eq!(fs::read_to_string(env.backing("d/e/a.txt")).unwrap(), "a");
}

/// `--verify` reads every backing file before the mount goes live.
#[test]
fn verify_reads_every_backing_file_at_mount() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path("notes.txt"), "notes").unwrap();
    m.stop();
    fs::write(env.backing("notes.txt"), "NOTES").unwrap();
    let m = env.mount(&["--verify"]);
    let log = m.daemon_log();
    assert!(
        log.contains("notes.txt: backing file content differs from the log (checksum); restored"),
        "{log}"
    );
    assert_eq!(
        fs::read_to_string(env.backing("notes.txt")).unwrap(),
        "notes"
    );
    m.stop();
    assert_eq!(env.check().0, 0);
}

/// A backing file damaged after a compaction took its bytes out of the log: the first read
/// finds it, answers EIO (never the damaged bytes), and says which file; `check` names it.
#[test]
fn a_damaged_backing_file_the_log_cannot_restore_answers_eio_at_its_first_read() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"a\": 1}").unwrap();
    m.stop();
    let out = Command::new(BIN)
        .arg("compact")
        .arg(&env.store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::write(env.backing(&record(1)), "{\"a\": 2}").unwrap();
    let m = env.mount(&[]);
    let err = fs::read(env.path(&record(1))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let log = m.daemon_log();
    assert!(
        log.contains(&record(1)) && log.contains("cannot be restored"),
        "{log}"
    );
    m.stop();
    let (code, out) = env.check();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&record(1)), "{out}");
}

#[test]
fn leftover_temp_files_are_removed_at_mount() {
    let env = Env::new();
    env.mount(&[]).stop();
    fs::write(env.store.join("tmp").join("7.12"), "half a write").unwrap();
    let _m = env.mount(&[]);
    assert_eq!(fs::read_dir(env.store.join("tmp")).unwrap().count(), 0);
}

#[test]
fn a_second_daemon_on_the_same_store_is_refused() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let other = env.dir.path().join("mnt2");
    fs::create_dir(&other).unwrap();
    let err = match Mount::start(&env.store, &other, &[]) {
        Ok(_) => panic!("second daemon mounted"),
        Err(e) => e,
    };
    assert!(err.contains("in use by recordfs pid"), "{err}");
    assert!(!is_mounted(&other));
}

/// Issue: `umount; recordfs mount` answered "in use by recordfs pid N" 3 times in 3 on a
/// store of 10,000 files: umount returns before the daemon has checkpointed and exited. A
/// mount waits for a daemon of its store that is unmounting.
#[test]
fn a_mount_right_after_umount_waits_for_the_old_daemon() {
    let env = Env::new();
    for round in 0..3 {
        let d = Daemon::start(&env.store, &env.mnt, &["--sync", "never"], 0o022).unwrap();
        let (code, out) = sh(&format!(
            "cd {} && for i in $(seq 1 3000); do echo '[{round}]' > $(printf '%08x' $i)-0000-4000-8000-000000000000.json; done",
            env.mnt.display()
        ));
        assert_eq!(code, 0, "{out}");
        let (code, out) = sh(&format!("umount {}", env.mnt.display()));
        assert_eq!(code, 0, "{out}");
        drop(d);
        let d = Daemon::start(&env.store, &env.mnt, &["--sync", "never"], 0o022)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            fs::read_to_string(env.path("00000bb8-0000-4000-8000-000000000000.json")).unwrap(),
            format!("[{round}]\n")
        );
        d.stop();
    }
}

/// The lock file says when its holder is unmounting; only then does a mount wait, and it
/// says it waited.
#[test]
fn only_a_holder_that_is_unmounting_is_waited_for() {
    let env = Env::new();
    Mount::start(&env.store, &env.mnt, &[]).unwrap().stop();
    let hold = |text: &str, secs: f64| {
        let script = format!(
            "import fcntl, time, sys\n\
             f = open(sys.argv[1], 'r+')\n\
             fcntl.flock(f, fcntl.LOCK_EX)\n\
             f.truncate(0); f.write(sys.argv[2]); f.flush()\n\
             print('held', flush=True)\n\
             time.sleep({secs})\n"
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .arg(env.store.join("lock"))
            .arg(text)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "held\n");
        child
    };
    // A holder that serves: refused at once, named.
    let refused = |text: &str| {
        let mut holder = hold(text, 30.0);
        let started = std::time::Instant::now();
        let err = Daemon::start(&env.store, &env.mnt, &[], 0o022)
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.contains("is in use by recordfs pid 1 on elsewhere"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = holder.kill();
        let _ = holder.wait();
    };
    // A holder on its way out: waited for, and said so.
    let waited_for = |text: &str| {
        let mut holder = hold(text, 1.0);
        let d = Daemon::start(&env.store, &env.mnt, &[], 0o022).unwrap();
        assert!(
            d.said.contains("waited") && d.said.contains("to finish unmounting"),
            "{}",
            d.said
        );
        let _ = holder.wait();
        d.stop();
    };
    let since = "recordfs pid 1 on elsewhere since 2026-01-01T00:00:00.000Z";
    refused(&format!("{since}\n"));
    // Serving a mount that is still there.
    let live = Env::new();
    let _live = live.mount(&[]);
    refused(&format!("{since}; serving {}\n", live.mnt.display()));
    // Serving a mount that is gone (`umount` returned; the daemon has not said so yet).
    let gone = env.dir.path().join("unmounted");
    waited_for(&format!("{since}; serving {}\n", gone.display()));
    // Saying it is unmounting.
    waited_for(&format!(
        "{since}; unmounting since 2026-01-01T00:01:00.000Z\n"
    ));
}

/// Issue: a second mount on a mount point that held a recordfs mount stacked on it, and one
/// umount then took both down.
#[test]
fn a_mount_over_a_live_recordfs_mount_is_refused() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path("here.txt"), "first").unwrap();
    let other = env.dir.path().join("other-store");
    let err = match Daemon::start(&other, &env.mnt, &[], 0o022) {
        Ok(_) => panic!("a second mount stacked on the first"),
        Err(e) => e,
    };
    assert!(err.contains("already holds a recordfs mount"), "{err}");
    assert!(
        err.contains(&format!("umount {}", env.mnt.display())),
        "{err}"
    );
    assert!(!other.exists(), "the refused mount made its store");
    // The first mount is untouched, and one mount is there.
    assert_eq!(fs::read_to_string(env.path("here.txt")).unwrap(), "first");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = format!(" {} ", env.mnt.display());
    assert_eq!(mounts.lines().filter(|l| l.contains(&at)).count(), 1);
    m.stop_cleanly();
}

#[test]
fn a_foreign_directory_is_refused_and_left_alone() {
    let env = Env::new();
    fs::create_dir(&env.store).unwrap();
    fs::write(env.store.join("important.doc"), "mine").unwrap();
    let err = env.mount_refused(&[]);
    assert!(err.contains("not a recordfs store"), "{err}");
    let names: Vec<_> = fs::read_dir(&env.store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["important.doc"]);
    // Also from the daemonizing command line: a clear message, exit 1.
    let out = Command::new(BIN)
        .arg("mount")
        .arg(&env.store)
        .arg(&env.mnt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a recordfs store"));
    assert!(!is_mounted(&env.mnt));
}

#[test]
fn background_mount_returns_once_live_and_sigterm_unmounts_cleanly() {
    let env = Env::new();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(&env.store)
        .arg(&env.mnt)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Live as soon as the command returns: no wait.
    assert!(is_mounted(&env.mnt));
    fs::write(env.path(&record(9)), "{}").unwrap();
    let holder = fs::read_to_string(env.store.join("lock")).unwrap();
    let pid: i32 = holder.split_whitespace().nth(2).unwrap().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let gone = wait_until(std::time::Duration::from_secs(20), || {
        !is_mounted(&env.mnt) && unsafe { libc::kill(pid, 0) } != 0
    });
    force_unmount(&env.mnt);
    assert!(gone, "daemon {pid} did not unmount and exit after SIGTERM");
    let (code, text) = env.check();
    assert_eq!(code, 0, "{text}");
    let log = fs::read_to_string(env.log_segment()).unwrap();
    assert!(
        log.contains("\"op\":\"CHECKPOINT\""),
        "a clean stop writes a checkpoint"
    );
}

/// Waits for a daemon told to stop; returns its log once it has exited 0 after a clean unmount.
fn exits_cleanly(m: Mount) -> String {
    let log = m.log.clone();
    let status = m.wait_for_exit();
    let log = fs::read_to_string(log).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("unmounted cleanly"), "{log}");
    log
}

#[test]
fn sigterm_waits_for_a_mount_point_that_is_busy_for_a_moment() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path("a.txt"), "a").unwrap();
    // An open file makes umount(2) answer EBUSY, as the kernel's asynchronous release of a
    // just-closed file or a forked child between fork and exec do for a moment.
    let held = fs::File::open(env.path("a.txt")).unwrap();
    m.signal(libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(10), || m
        .daemon_log()
        .contains("signal 15: unmounting")));
    // Held a little longer, so the daemon's first tries meet a busy mount point.
    std::thread::sleep(Duration::from_millis(300));
    assert!(is_mounted(&env.mnt), "still mounted while a file is open");
    drop(held);
    let log = exits_cleanly(m);
    assert!(log.contains("is busy; trying again"), "{log}");
    assert!(
        !log.contains(" WARN ") && !log.contains(" ERROR "),
        "a stop that waited is not a problem: {log}"
    );
    assert!(!log.contains("detaching"), "freed within the grace: {log}");
}

#[test]
fn sigterm_detaches_a_mount_point_that_stays_busy_and_serves_it_to_the_last_close() {
    let env = Env::new();
    let mut m = env.mount(&[]);
    let mut held = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(env.path("held.txt"))
        .unwrap();
    held.write_all(b"written before the stop, ").unwrap();
    // A process whose working directory is in the mount holds it too.
    let mut resident = Command::new("sleep")
        .arg("60")
        .current_dir(&env.mnt)
        .spawn()
        .unwrap();
    m.signal(libc::SIGTERM);
    let detached = wait_until(Duration::from_secs(20), || !is_mounted(&env.mnt));
    let _ = resident.kill();
    let _ = resident.wait();
    assert!(detached, "not detached after the grace: {}", m.daemon_log());
    assert!(m.daemon_log().contains("detaching"), "{}", m.daemon_log());
    assert!(m.is_running(), "the daemon serves the open file");
    // The open file is still served, and its commits are still durable.
    held.write_all(b"and after it").unwrap();
    held.sync_all().unwrap();
    drop(held);
    exits_cleanly(m);
    assert_eq!(env.check().0, 0);
    let m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path("held.txt")).unwrap(),
        "written before the stop, and after it"
    );
    m.stop();
}

#[test]
fn read_only_mounts_serve_a_sound_store_and_refuse_one_needing_recovery() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"ro\": true}").unwrap();
    m.stop();
    let m = env.mount(&["--read-only"]);
    assert_eq!(
        fs::read_to_string(env.path(&record(1))).unwrap(),
        "{\"ro\": true}"
    );
    let e = fs::write(env.path(&record(1)), "[]").unwrap_err();
    assert_eq!(errno_of(&e), libc::EROFS);
    m.stop();
    // Removed by hand after a clean stop: the mount does not look (the checkpoint vouches for
    // the tree); the first read finds it and serves the log's bytes, repairing nothing.
    fs::remove_file(env.backing(&record(1))).unwrap();
    let m = env.mount(&["--read-only"]);
    assert_eq!(
        fs::read_to_string(env.path(&record(1))).unwrap(),
        "{\"ro\": true}"
    );
    m.stop();
    assert!(!env.backing(&record(1)).exists());
    // Looked at, the store needs recovery, which a read-only mount cannot do.
    let err = env.mount_refused(&["--read-only", "--verify"]);
    assert!(
        err.contains("needs recovery") && err.contains("without --read-only"),
        "{err}"
    );
    assert!(
        !env.backing(&record(1)).exists(),
        "a read-only mount repairs nothing"
    );
}

#[test]
fn umount_flushes_checkpoints_and_ends_the_daemon_cleanly() {
    let env = Env::new();
    let mut m = env.mount(&[]);
    fs::write(env.path(&record(3)), "{\"before\": \"umount\"}").unwrap();
    // As a person would: a mount point can be busy for a moment after use (README), so a
    // "target is busy" is tried again, for a bounded time.
    let unmounted = wait_until(Duration::from_secs(5), || {
        Command::new("umount")
            .arg(&env.mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    assert!(unmounted, "umount");
    let mut child = m.child.take().unwrap();
    let mut status = None;
    let exited = wait_until(Duration::from_secs(20), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    assert!(exited, "the daemon did not exit after umount");
    assert!(status.unwrap().success(), "{}", m.daemon_log());
    assert!(
        m.daemon_log().contains("unmounted cleanly"),
        "{}",
        m.daemon_log()
    );
    let log = fs::read_to_string(env.log_segment()).unwrap();
    assert!(log
        .lines()
        .last()
        .unwrap()
        .contains("\"op\":\"CHECKPOINT\""));
    assert_eq!(env.check().0, 0);
    assert_eq!(
        fs::read_to_string(env.backing(&record(3))).unwrap(),
        "{\"before\": \"umount\"}"
    );
}

#[test]
fn allow_other_lets_another_user_in() {
    let env = Env::new();
    let _m = env.mount(&["--allow-other"]);
    fs::write(env.path("hello.txt"), "hi").unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(env.path("hello.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hi");
}

/// Sets /dev/fuse's mode for a test, and puts the old one back however the test ends.
struct DevFuseMode(u32);

impl DevFuseMode {
    fn set(mode: u32) -> DevFuseMode {
        use std::os::unix::fs::PermissionsExt;
        let old = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode)).unwrap();
        DevFuseMode(old)
    }
}

impl Drop for DevFuseMode {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}

/// Issue: as a user who is not root, mount failed with "Permission denied (os error 13)"
/// without naming /dev/fuse, and created STORE anyway. Such a user mounts through the
/// setuid fusermount3 when /dev/fuse is theirs to open, and is told what to do when not.
#[test]
fn a_user_who_is_not_root_mounts_through_fusermount3() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = env.dir.path().join("home");
    fs::create_dir(&home).unwrap();
    let (store, mnt) = (home.join("store"), home.join("mnt"));
    fs::create_dir(&mnt).unwrap();
    for p in [&home, &mnt] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    // The checkout may live where that user cannot go (a 0700 temp dir): a copy it can run.
    let bin = env.dir.path().join("recordfs");
    fs::copy(BIN, &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let mount = format!(
        "{} mount {} {}",
        bin.display(),
        store.display(),
        mnt.display()
    );
    let rec = mnt.join(record(1));
    {
        let _closed = DevFuseMode::set(0o600);
        let (code, out) = sh_as_nobody(&mount);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("/dev/fuse (mode 0600) is not readable and writable by you"),
            "{out}"
        );
        assert!(out.contains("chmod 0666 /dev/fuse"), "{out}");
        assert!(!store.exists(), "a mount that cannot work created STORE");
    }
    let _open = DevFuseMode::set(0o666);
    let (code, out) = sh_as_nobody(&mount);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unmount with: fusermount3 -u"), "{out}");
    let daemon = || -> i32 {
        let lock = fs::read_to_string(store.join("lock")).unwrap();
        lock.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let mounted_as_nobody = || {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!(" {} ", mnt.display())) && l.contains("user_id=65534"))
    };
    assert!(mounted_as_nobody());
    let (code, out) = sh_as_nobody(&format!(
        "echo '{{\"by\": \"nobody\"}}' > {}",
        rec.display()
    ));
    assert_eq!(code, 0, "{out}");
    // SIGTERM: the daemon unmounts through the helper and exits cleanly.
    let pid = daemon();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_until(Duration::from_secs(30), || has_exited(pid)
        && !is_mounted(&mnt)));
    let log = fs::read_to_string(store.join("daemon.log")).unwrap();
    assert!(log.contains("unmounted cleanly"), "{log}");
    // Again, and `fusermount3 -u` by the user, as the mount told them.
    let (code, out) = sh_as_nobody(&mount);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        sh_as_nobody(&format!("cat {}", rec.display())).1,
        "{\"by\": \"nobody\"}\n"
    );
    let pid = daemon();
    let (code, out) = sh_as_nobody(&format!("fusermount3 -u {}", mnt.display()));
    assert_eq!(code, 0, "{out}");
    assert!(wait_until(Duration::from_secs(30), || has_exited(pid)
        && !is_mounted(&mnt)));
    let (code, text) = check_store(&store);
    assert_eq!(code, 0, "{text}");
}

/// Issue 12: a live log segment holds zeros written ahead of its lines. After SIGKILL they are
/// free space, not a torn entry (nothing is cut or kept aside); the next mount appends over
/// them, and a clean stop leaves the segment exactly its lines.
#[test]
fn zeros_written_ahead_of_the_log_survive_sigkill_and_go_at_a_clean_stop() {
    let env = Env::new();
    let m = env.mount(&[]);
    fs::write(env.path(&record(1)), "{\"v\": 1}").unwrap();
    m.kill9();
    let bytes = fs::read(env.log_segment()).unwrap();
    let end = bytes.iter().rposition(|b| *b == b'\n').unwrap() + 1;
    assert!(
        bytes.len() > end && bytes[end..].iter().all(|b| *b == 0),
        "zeros ahead of the lines: {} bytes, lines end at {end}",
        bytes.len()
    );
    // `check` may find a backing file the killed daemon had not written yet; not the log.
    let (_, out) = env.check();
    assert!(
        !["torn", "hole", "corrupt", "offset"]
            .iter()
            .any(|w| out.contains(w)),
        "{out}"
    );
    let m = env.mount(&[]);
    assert!(!m.daemon_log().contains("torn"), "{}", m.daemon_log());
    assert_eq!(
        fs::read_to_string(env.path(&record(1))).unwrap(),
        "{\"v\": 1}"
    );
    fs::write(env.path(&record(2)), "{\"v\": 2}").unwrap();
    m.stop_cleanly();
    let bytes = fs::read(env.log_segment()).unwrap();
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "a segment at rest is exactly its lines"
    );
    assert!(!bytes.contains(&0));
    let names: Vec<String> = fs::read_dir(env.store.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".cut-")), "{names:?}");
    assert_eq!(env.check().0, 0);
    let _m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path(&record(2))).unwrap(),
        "{\"v\": 2}"
    );
}

#[test]
fn a_mount_made_where_the_last_one_was_detached_outlives_the_old_daemon() {
    let (first, second) = (Env::new(), Env::new());
    let mut m = first.mount(&[]);
    fs::write(first.path("a.txt"), "a").unwrap();
    // Detached while a file is open: the old daemon serves it until it closes, and a new
    // mount is made at the same place meanwhile.
    let held = fs::File::open(first.path("a.txt")).unwrap();
    let detached = Command::new("umount")
        .arg("-l")
        .arg(&first.mnt)
        .status()
        .unwrap();
    assert!(detached.success());
    let again = Mount::start(&second.store, &first.mnt, &[]).expect("a mount at the same place");
    drop(held);
    // The old daemon ends now; what is mounted at its old place is not its to unmount.
    // (Its handle must not unmount that place either.)
    let mut old = m.child.take().unwrap();
    m.mnt = first.dir.path().join("gone");
    let mut status = None;
    let ended = wait_until(Duration::from_secs(30), || {
        status = old.try_wait().ok().flatten();
        status.is_some()
    });
    if !ended {
        let _ = old.kill();
        let _ = old.wait();
    }
    assert!(
        ended,
        "the old daemon did not end once its last file closed"
    );
    assert!(
        is_mounted(&first.mnt),
        "the new mount was unmounted when the old daemon ended"
    );
    assert!(status.unwrap().success(), "the old daemon: {status:?}");
    fs::write(first.mnt.join("b.txt"), "b").unwrap();
    again.stop_cleanly();
    assert_eq!(
        fs::read_to_string(second.store.join("root/b.txt"))
            .ok()
            .as_deref(),
        Some("b")
    );
}
