//! The yardstick the benchmarks measure recordfs against (examples/nullfs.rs): with `--sync`
//! and `--backing` it does what the floors in the README and the notes say it does.
//!
//! Guards against: a yardstick that answers a save before its bytes are in its log and synced
//! there, or that leaves its backing files behind the saves, so that the floor it gives (what
//! no filesystem behind FUSE that keeps a file per record reaches) is lower than it is.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// examples/nullfs, built by this build's cargo with this test's profile and features: at
/// once up to date when `cargo test --all-targets` built it beside the tests.
fn nullfs() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--example", "nullfs", "--target-dir"])
        .arg(profile.parent().expect("the target directory"))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // What cargo set for running this test (the package's variables, its library path) would
    // make that cargo build everything again, for the environment it builds in differs.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "LD_LIBRARY_PATH" || (key.starts_with("CARGO_") && key != "CARGO_HOME") {
            build.env_remove(&*key);
        }
    }
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let features: Vec<&str> = [
        ("failpoints", cfg!(feature = "failpoints")),
        ("sim", cfg!(feature = "sim")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    if !features.is_empty() {
        build.arg("--features").arg(features.join(","));
    }
    assert!(build.status().expect("cargo").success(), "building nullfs");
    profile.join("examples").join("nullfs")
}

/// The running yardstick: unmounted and stopped when dropped, whatever the test did.
struct NullFs {
    child: Child,
    mnt: PathBuf,
}

impl Drop for NullFs {
    fn drop(&mut self) {
        force_unmount(&self.mnt);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_null_filesystem_answers_a_save_once_synced_and_writes_its_backing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mnt, log, backing) = (
        dir.path().join("mnt"),
        dir.path().join("log"),
        dir.path().join("backing"),
    );
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&backing).unwrap();
    let child = Command::new(nullfs())
        .arg(&mnt)
        .arg("--sync")
        .arg(&log)
        .arg("--backing")
        .arg(&backing)
        .spawn()
        .expect("starting nullfs");
    let null = NullFs {
        child,
        mnt: mnt.clone(),
    };
    assert!(
        wait_until(Duration::from_secs(10), || is_mounted(&mnt)),
        "nullfs did not mount"
    );
    let file = mnt.join("a");
    let saves: [Vec<u8>; 3] = [
        (0..3000).map(|i| b'a' + (i % 26) as u8).collect(),
        b"shorter".to_vec(),
        vec![b'z'; 5000],
    ];
    for bytes in &saves {
        fs::write(&file, bytes).unwrap();
        // The close returned: the bytes are in the log.
        let logged = fs::read(&log).unwrap();
        assert!(
            logged.windows(bytes.len()).any(|w| w == &bytes[..]),
            "a save of {} bytes was answered before it was in the log",
            bytes.len()
        );
        let copy = backing.join(fs::metadata(&file).unwrap().ino().to_string());
        assert!(
            wait_until(Duration::from_secs(10), || fs::read(&copy).ok().as_ref()
                == Some(bytes)),
            "the backing file does not hold the save of {} bytes",
            bytes.len()
        );
        let mode = fs::metadata(&copy).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644, "the backing file's mode");
    }
    drop(null);
    assert!(!is_mounted(&mnt));
}
