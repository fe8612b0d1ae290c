//! A failed log fsync, or a broken invariant of the commit pipeline, turns the store read-only
//! until remounted (needs `--features failpoints`).
#![cfg(feature = "failpoints")]

mod common;
use common::*;

use std::fs;
use std::process::{Command, Stdio};

#[test]
fn a_failed_log_sync_makes_the_store_read_only_until_remount() {
    let text = stops_after_three_syncs("RECORDFS_FAIL_LOG_SYNC_AFTER");
    assert!(
        text.contains("fdatasync of the log: injected failure"),
        "{text}"
    );
}

/// A sync thread that reported a position older than the durable one (a bug) must stop the
/// store, not have its report absorbed: the durable mark would go back, and the apply thread
/// could write backing files from entries it holds for durable that are not.
#[test]
fn a_broken_pipeline_invariant_makes_the_store_read_only_until_remount() {
    let text = stops_after_three_syncs("RECORDFS_FAIL_STALE_SYNC_AFTER");
    assert!(
        text.contains("internal invariant broken: the log synced up to entry"),
        "{text}"
    );
}

/// Mounts with the failpoint `var` set to 3, writes until commits fail, and checks that the
/// store turned read-only once, served what it acknowledged, and recovers at a remount.
/// Returns the daemon's log.
fn stops_after_three_syncs(var: &str) -> String {
    let env = Env::new();
    env.mount(&[]).stop();
    // The daemon syncs the log once per batch; fail every sync after the first three.
    let log = env.dir.path().join("daemon.log");
    let mut child = Command::new(BIN)
        .args([
            "mount",
            env.store.to_str().unwrap(),
            env.mnt.to_str().unwrap(),
            "--foreground",
        ])
        .env(var, "3")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mounted = wait_until(std::time::Duration::from_secs(20), || is_mounted(&env.mnt));
    let guard = Mount {
        child: None,
        mnt: env.mnt.clone(),
        log: log.clone(),
    };
    assert!(mounted);
    let mut acknowledged = Vec::new();
    let mut first_error = None;
    for i in 0..10u32 {
        match write_file(&env.path(&record(i)), format!("[{i}]").as_bytes()) {
            Ok(()) => acknowledged.push(i),
            Err(e) => {
                first_error.get_or_insert(errno_of(&e));
            }
        }
    }
    assert_eq!(
        first_error,
        Some(libc::EIO),
        "the commit whose sync failed gets EIO"
    );
    assert!(acknowledged.len() < 10);
    // Later writes are refused, reads still work.
    let e = write_file(&env.path("later.txt"), b"x").unwrap_err();
    assert!([libc::EROFS, libc::EIO].contains(&errno_of(&e)), "{e}");
    for &i in &acknowledged {
        assert_eq!(
            fs::read_to_string(env.path(&record(i))).unwrap(),
            format!("[{i}]")
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(guard);
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("is now read-only until remounted").count(),
        1,
        "logged once: {text}"
    );

    // A remount recovers: everything acknowledged is there.
    let _m = env.mount(&[]);
    for &i in &acknowledged {
        assert_eq!(
            fs::read_to_string(env.path(&record(i))).unwrap(),
            format!("[{i}]")
        );
    }
    fs::write(env.path("after.txt"), "works").unwrap();
    text
}
