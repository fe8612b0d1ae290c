//! Limits and bad input: EFBIG, ENAMETOOLONG, EPERM, ENOSPC.

mod common;
use common::*;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn writes_past_the_size_limit_get_efbig_and_change_nothing() {
    let env = Env::new();
    let _m = env.mount(&["--max-file-size", "1000"]);
    let p = env.path("big.bin");
    fs::write(&p, vec![7u8; 1000]).unwrap();
    let mut f = OpenOptions::new().write(true).open(&p).unwrap();
    let e = f.write_all(&vec![1u8; 1001]).unwrap_err();
    assert_eq!(errno_of(&e), libc::EFBIG);
    drop(f);
    let e = OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(1001)
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EFBIG);
    assert_eq!(fs::read(&p).unwrap(), vec![7u8; 1000]);
}

#[test]
fn names_longer_than_255_bytes_get_enametoolong() {
    let env = Env::new();
    let _m = env.mount(&[]);
    fs::write(env.path(&"n".repeat(255)), "ok").unwrap();
    let e = fs::write(env.path(&"n".repeat(256)), "no").unwrap_err();
    assert_eq!(errno_of(&e), libc::ENAMETOOLONG);
    let e = fs::rename(env.path(&"n".repeat(255)), env.path(&"m".repeat(256))).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENAMETOOLONG);
    let e = std::os::unix::fs::symlink("x".repeat(4097), env.path("link")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENAMETOOLONG);
}

/// A file has at most 1,024 names (each holds its own backing copy): one more link is EMLINK,
/// logged, and changes nothing.
#[test]
fn links_past_the_limit_get_emlink_and_are_logged() {
    let env = Env::new();
    let m = env.mount(&["--sync", "never"]);
    fs::write(env.path("a"), "a").unwrap();
    for i in 1..1024 {
        fs::hard_link(env.path("a"), env.path(&format!("l{i}"))).unwrap();
    }
    assert_eq!(fs::metadata(env.path("a")).unwrap().nlink(), 1024);
    let e = fs::hard_link(env.path("a"), env.path("one-more")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EMLINK);
    assert!(!env.path("one-more").exists());
    assert!(
        m.daemon_log().contains("link one-more"),
        "{}",
        m.daemon_log()
    );
    fs::write(env.path("l1023"), "b").unwrap();
    assert_eq!(fs::read(env.path("a")).unwrap(), b"b");
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs");
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gives_enospc_keeps_commits_and_recovers_when_space_returns() {
    let env = Env::new();
    let small = Tmpfs::new(env.dir.path().join("small"), "3m");
    let store = small.0.join("store");
    let filler = small.0.join("filler");
    fs::write(&filler, vec![0u8; 1 << 20]).unwrap();
    let mut m = Mount::start(&store, &env.mnt, &[]).expect("mount");
    let body = |i: u32| format!("{{\"i\": {i}, \"pad\": \"{}\"}}", "p".repeat(40_000));
    let mut committed = Vec::new();
    let mut enospc = false;
    for i in 0..200u32 {
        let p = env.path(&record(i));
        let result = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)?;
            f.write_all(body(i).as_bytes())?;
            f.sync_all()
        })();
        match result {
            Ok(()) => committed.push(i),
            Err(e) => {
                assert_eq!(errno_of(&e), libc::ENOSPC, "{e}");
                enospc = true;
                break;
            }
        }
    }
    assert!(enospc, "the disk never filled");
    for &i in &committed {
        assert_eq!(fs::read_to_string(env.path(&record(i))).unwrap(), body(i));
    }
    // Space returns: writing works again.
    fs::remove_file(&filler).unwrap();
    let p = env.path(&record(1000));
    fs::write(&p, "{\"after\": true}").unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"after\": true}");
    let status = std::mem::replace(
        &mut m,
        Mount {
            child: None,
            mnt: env.mnt.clone(),
            log: PathBuf::new(),
        },
    );
    let st = status.stop();
    assert!(st.success(), "clean stop after ENOSPC: {st}");
    let out = Command::new(BIN).arg("check").arg(&store).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _m = Mount::start(&store, &env.mnt, &[]).expect("remount");
    for &i in &committed {
        assert_eq!(fs::read_to_string(env.path(&record(i))).unwrap(), body(i));
    }
}
