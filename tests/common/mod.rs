//! Mounting real recordfs daemons for tests: every mount is unmounted when its guard drops,
//! even when the test fails, and every wait is bounded.
#![allow(dead_code)]

pub mod cluster;
#[cfg(feature = "sim")]
pub mod held;
pub mod sequences;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_recordfs");

/// Makes file `name` in directory `dir` through the core (no FUSE), holding `bytes`, and waits
/// until its commit is acknowledged.
pub fn put(fs: &recordfs::fs::RecordFs, dir: recordfs::types::Fid, name: &str, bytes: &[u8]) {
    let (_, fh, t) = fs
        .create(dir, name.as_bytes(), 0o644, 0, 0, libc::O_WRONLY)
        .unwrap();
    fs.wait(t).unwrap();
    fs.write(fh, 0, bytes).unwrap();
    let t = fs.flush(fh).unwrap();
    fs.release(fh);
    fs.wait(t).unwrap();
}

/// Polls `cond` every 10 ms for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Lazily detaches whatever is mounted at `mnt` (a killed daemon leaves a dead mount).
pub fn force_unmount(mnt: &Path) {
    for _ in 0..3 {
        if !is_mounted(mnt) {
            return;
        }
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
    }
}

pub fn record(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000.json")
}

/// A temporary store and mount point.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub mnt: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Env { dir, store, mnt }
    }

    pub fn mount(&self, args: &[&str]) -> Mount {
        Mount::start(&self.store, &self.mnt, args).expect("mount")
    }

    /// `mount`, with every FUSE request the daemon serves in its log (fuser's debug lines).
    pub fn mount_tracing_requests(&self, args: &[&str]) -> Mount {
        Mount::start_logging(
            &self.store,
            &self.mnt,
            args,
            "info,fuser=debug,recordfs::handles=debug",
        )
        .expect("mount")
    }

    /// Mounts, expecting a refusal; returns what the daemon said.
    pub fn mount_refused(&self, args: &[&str]) -> String {
        match Mount::start(&self.store, &self.mnt, args) {
            Ok(_) => panic!("the mount should have been refused"),
            Err(e) => e,
        }
    }

    /// `recordfs compact STORE`, which asks a mounted store's daemon to compact; must succeed.
    pub fn compact(&self) {
        let out = Command::new(BIN)
            .arg("compact")
            .arg(&self.store)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    pub fn backing(&self, name: &str) -> PathBuf {
        self.store.join("root").join(name)
    }

    pub fn log_segment(&self) -> PathBuf {
        self.store.join("log").join("00000000000000000001.log")
    }

    pub fn check(&self) -> (i32, String) {
        check_store(&self.store)
    }
}

/// `recordfs check STORE`: (exit code, stdout+stderr).
pub fn check_store(store: &Path) -> (i32, String) {
    let out = Command::new(BIN).arg("check").arg(store).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// A running daemon in the foreground and its mount.
pub struct Mount {
    pub child: Option<Child>,
    pub mnt: PathBuf,
    pub log: PathBuf,
}

impl Mount {
    pub fn start(store: &Path, mnt: &Path, args: &[&str]) -> Result<Mount, String> {
        Mount::start_logging(store, mnt, args, "info")
    }

    /// `start`, with `RUST_LOG` set to `rust_log`.
    pub fn start_logging(
        store: &Path,
        mnt: &Path,
        args: &[&str],
        rust_log: &str,
    ) -> Result<Mount, String> {
        let log = store.with_extension(format!("daemon.{}.log", std::process::id()));
        Mount::start_from(store.as_os_str(), &log, mnt, args, rust_log)
    }

    /// A mount of `source` (a store directory, or an etcd address), the daemon's output
    /// appended to `log`.
    pub fn start_from(
        source: &std::ffi::OsStr,
        log: &Path,
        mnt: &Path,
        args: &[&str],
        rust_log: &str,
    ) -> Result<Mount, String> {
        let log = log.to_owned();
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(BIN)
            .arg("mount")
            .arg(source)
            .arg(mnt)
            .arg("--foreground")
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut exited = None;
        let up = wait_until(Duration::from_secs(20), || {
            if let Ok(Some(st)) = child.try_wait() {
                exited = Some(st);
                return true;
            }
            is_mounted(mnt)
        });
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(st) = exited {
            return Err(format!("daemon exited with {st}: {text}"));
        }
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            force_unmount(mnt);
            return Err(format!("mount did not appear within 20 s: {text}"));
        }
        Ok(Mount {
            child: Some(child),
            mnt: mnt.to_owned(),
            log,
        })
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash: nothing is flushed, the dead mount is detached.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        force_unmount(&self.mnt);
    }

    /// SIGTERM, as a clean stop; returns the daemon's exit status.
    pub fn stop(self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_for_exit()
    }

    /// `stop`, which must end in a clean exit: if not, the end of the daemon's log says why.
    pub fn stop_cleanly(self) {
        let log = self.log.clone();
        let status = self.stop();
        if !status.success() {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!(
                "the daemon ended with {status} after SIGTERM; its log, newest first:\n{}",
                tail.join("\n")
            );
        }
    }

    pub fn signal(&self, sig: i32) {
        let c = self.child.as_ref().expect("running");
        unsafe { libc::kill(c.id() as i32, sig) };
    }

    pub fn is_running(&mut self) -> bool {
        let c = self.child.as_mut().expect("running");
        matches!(c.try_wait(), Ok(None))
    }

    /// Waits (30 s at most) for the daemon to exit once told to stop, and for its mount to go.
    pub fn wait_for_exit(mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let mut status = None;
        let ok = wait_until(Duration::from_secs(30), || {
            status = c.try_wait().ok().flatten();
            status.is_some()
        });
        if !ok {
            // Where it hangs: the threads' stacks, then the end of its log.
            let stacks = sh(&format!(
                "for t in /proc/{}/task/*; do echo \"== $t $(cat $t/comm)\"; cat $t/stack 2>/dev/null; done",
                c.id()
            ))
            .1;
            let _ = c.kill();
            let _ = c.wait();
            force_unmount(&self.mnt);
            let log = self.daemon_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "daemon did not stop within 30 s of SIGTERM\n{stacks}\nits log, newest first:\n{}",
                tail.join("\n")
            );
        }
        assert!(
            wait_until(Duration::from_secs(5), || !is_mounted(&self.mnt)),
            "mount still present after the daemon exited"
        );
        status.unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        force_unmount(&self.mnt);
    }
}

/// Runs a shell command, returning (exit code, stdout+stderr).
pub fn sh(cmd: &str) -> (i32, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Runs a Python script (with extra environment variables), failing the test with its
/// stderr if it fails.
pub fn python(script: &str, env: &[(&str, &str)]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What every `python_on_mount` script starts with: `errno` and `os`, `m` (the mount), and
/// `fails(errno, f, *args)`, which calls `f` and asserts it fails with that errno.
const PYTHON_PRELUDE: &str = r#"
import errno, os
m = os.environ["MNT"]
def fails(e, f, *a, **k):
    try:
        f(*a, **k)
    except OSError as x:
        assert x.errno == e, (f, a, errno.errorcode[x.errno])
        return
    raise AssertionError(("no error", f, a))
"#;

/// Runs a Python script on the mount of `env` (after `PYTHON_PRELUDE`); fails the test if it
/// fails.
pub fn python_on_mount(script: &str, env: &Env) {
    let script = format!("{PYTHON_PRELUDE}{script}");
    python(&script, &[("MNT", env.mnt.to_str().unwrap())]);
}

pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Creates or truncates `path`, writes `bytes` and closes it, reporting an error from close(2)
/// (the commit point) that `fs::write` would drop.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::io::IntoRawFd;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A daemon started the way users start it: `recordfs mount` without `--foreground`, which
/// returns once the mount is live. Unmounted when dropped; every wait bounded.
pub struct Daemon {
    pub mnt: PathBuf,
    /// What `recordfs mount` printed (stdout, then stderr).
    pub said: String,
    pid: Option<i32>,
}

impl Daemon {
    /// Runs `recordfs mount STORE MNT ARGS` under `umask`; Err with what it said if it fails.
    pub fn start(store: &Path, mnt: &Path, args: &[&str], umask: u32) -> Result<Daemon, String> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(BIN);
        cmd.arg("mount").arg(store).arg(mnt).args(args);
        // SAFETY: umask(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // Nothing of ours to clean up: the daemon reports failure before its mount is
            // live, and what is mounted there now (if anything) is somebody else's.
            return Err(said);
        }
        let pid = fs::read_to_string(store.join("lock"))
            .ok()
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok());
        Ok(Daemon {
            mnt: mnt.to_owned(),
            said,
            pid,
        })
    }

    /// `umount`, then waits (30 s at most) for the daemon to finish and exit.
    pub fn stop(mut self) {
        let unmounted = wait_until(Duration::from_secs(10), || {
            !is_mounted(&self.mnt)
                || Command::new("umount")
                    .arg(&self.mnt)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        assert!(unmounted, "umount {} failed for 10 s", self.mnt.display());
        if let Some(pid) = self.pid.take() {
            assert!(
                wait_until(Duration::from_secs(30), || has_exited(pid)),
                "daemon pid {pid} did not exit within 30 s of umount"
            );
        }
    }
}

/// Whether a process is gone (or a zombie nobody has reaped yet: it has finished).
pub fn has_exited(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        force_unmount(&self.mnt);
        if let Some(pid) = self.pid {
            if !has_exited(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Runs `sh -c CMD` as the unprivileged user 65534 (nobody), returning (exit code, output).
pub fn sh_as_nobody(cmd: &str) -> (i32, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A seeded generator for the tests that draw their own choices (the JSON rule, corruption):
/// proptest's, as the sequence tests use (`sequences::runner`), rather than one of our own.
pub struct Rng(proptest::test_runner::TestRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        use proptest::test_runner::{RngAlgorithm, TestRng};
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }
    pub fn next_u64(&mut self) -> u64 {
        proptest::prelude::Rng::next_u64(&mut self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Copies a store an earlier version made (tests/fixtures/NAME, with the modes it had, which
/// git does not keep, from NAME.modes; STORE itself gets `top_mode`) to `dest`.
/// Copies the fixture store `store-v{from}` (made by an earlier version) into `env`, mounts it
/// and checks that the mount upgraded it to store version 7, the marker included.
pub fn mount_upgraded(env: &Env, from: u32) -> Mount {
    copy_fixture_store(&format!("store-v{from}"), 0o700, &env.store);
    let marker = env.store.join("recordfs.store");
    let version = |v: u32| {
        fs::read_to_string(&marker)
            .unwrap()
            .contains(&format!("\"version\":{v}"))
    };
    assert!(version(from));
    let m = env.mount(&[]);
    assert!(
        m.daemon_log().contains("upgraded to store version 7"),
        "{}",
        m.daemon_log()
    );
    assert!(version(7));
    m
}

/// How many entries of `dir` have a name `keep` takes.
pub fn count_names(dir: &Path, keep: impl Fn(&str) -> bool) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| keep(&e.as_ref().unwrap().file_name().to_string_lossy()))
        .count()
}

pub fn copy_fixture_store(name: &str, top_mode: u32, dest: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (code, out) = sh(&format!(
        "cp -a {} {}",
        fixtures.join(name).display(),
        dest.display()
    ));
    assert_eq!(code, 0, "{out}");
    let modes = fs::read_to_string(fixtures.join(format!("{name}.modes"))).unwrap();
    for line in modes.lines() {
        let (mode, rel) = line.split_once(' ').unwrap();
        let path = dest.join(rel);
        if !path.exists() && fs::symlink_metadata(&path).is_err() {
            fs::create_dir(&path).unwrap(); // empty directories are not kept by git
        }
        if !fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            let mode = u32::from_str_radix(mode, 8).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(top_mode)).unwrap();
}

/// renameat2(2): 0, or the errno.
pub fn rename2(from: &Path, to: &Path, flags: u32) -> i32 {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (a, b) = (c(from), c(to));
    // SAFETY: two valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        0
    } else {
        errno_of(&std::io::Error::last_os_error())
    }
}
