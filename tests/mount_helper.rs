//! Mounting the way FUSE filesystems mount (issue 13): `mount -t fuse.recordfs STORE MNT -o
//! OPTIONS`, which makes mount.fuse3 run `recordfs STORE MNT -o OPTIONS`, and an fstab line
//! followed by `mount MNT` (in a private mount namespace with its own /etc/fstab).
//!
//! Guards against: the helper's command line refused ("unrecognized subcommand"), `-o`
//! options ignored (the sync mode, the kernel's nosuid/nodev/noexec), mount(8)'s own options
//! (`_netdev`, `nofail`, `defaults`) refused, and a bad option that half-mounts or creates
//! the store.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{force_unmount, has_exited, is_mounted, record, Env, BIN};

/// Runs `sh -c SCRIPT` in a private mount namespace in which /usr/local/bin holds only the
/// recordfs under test: mount(8) runs its helpers with a PATH of its own, and this machine's
/// /usr/local/bin must not change. MNT is unmounted when the script ends, however it ends.
/// Returns (success, stdout+stderr).
fn in_namespace(env: &Env, script: &str) -> (bool, String) {
    // A copy, not a link: the build's directory may be one other users cannot enter (a
    // clone in a 0700 temporary directory), and a test mounts as another user.
    let bin = env.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(BIN, bin.join("recordfs")).unwrap();
    let whole = format!(
        "set -e
        mount --make-rprivate /
        mount --bind {bin} /usr/local/bin
        trap 'umount -l {mnt} 2>/dev/null || true' EXIT
        {script}",
        bin = bin.display(),
        mnt = env.mnt.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &whole])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// The script's lines that unmount MNT and wait (30 s at most) for the daemon to exit.
fn unmount_and_wait(env: &Env) -> String {
    format!(
        "pid=$(awk '{{print $3}}' {store}/lock)
        umount {mnt}
        for i in $(seq 300); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done
        echo 'the daemon did not exit' >&2; exit 1",
        store = env.store.display(),
        mnt = env.mnt.display(),
    )
}

/// The daemon that the store's lock names, once there is one.
fn daemon_pid(store: &Path) -> Option<i32> {
    fs::read_to_string(store.join("lock"))
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Unmounts and stops whatever daemon serves the store, even when a test fails midway.
struct Cleanup<'a>(&'a Env);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        force_unmount(&self.0.mnt);
        if let Some(pid) = daemon_pid(&self.0.store) {
            if !has_exited(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn mount_t_fuse_recordfs_takes_o_options() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let name = record(1);
    let (ok, said) = in_namespace(
        &env,
        &format!(
            "mount -t fuse.recordfs {store} {mnt} -o sync=fsync,nosuid,nodev,_netdev,nofail,defaults,noatime
            echo '{{\"helper\": true}}' > {mnt}/{name}
            echo \"options: $(findmnt -n -o VFS-OPTIONS {mnt})\"
            {unmount}",
            store = env.store.display(),
            mnt = env.mnt.display(),
            unmount = unmount_and_wait(&env),
        ),
    );
    assert!(ok, "{said}");
    let options = said
        .lines()
        .find_map(|l| l.strip_prefix("options: "))
        .unwrap_or_default();
    for flag in ["nosuid", "nodev"] {
        assert!(
            options.split(',').any(|o| o == flag),
            "{flag} not in {said}"
        );
    }
    assert!(!options.split(',').any(|o| o == "noexec"), "{said}");
    let log = fs::read_to_string(env.store.join("daemon.log")).unwrap();
    assert!(log.contains("(--sync Fsync)"), "{log}");
    let m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path(&name)).unwrap(),
        "{\"helper\": true}\n"
    );
    m.stop_cleanly();
}

#[test]
fn a_bad_mount_option_mounts_nothing_and_creates_no_store() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let (ok, said) = in_namespace(
        &env,
        &format!(
            "mount -t fuse.recordfs {store} {mnt} -o sync=fsync,bogus",
            store = env.store.display(),
            mnt = env.mnt.display(),
        ),
    );
    assert!(!ok, "{said}");
    assert!(said.contains("\"bogus\": unknown"), "{said}");
    assert!(!is_mounted(&env.mnt));
    assert!(!env.store.exists(), "a refused mount created the store");
}

/// An fstab line, then `mount MNT`, in a private mount namespace whose /etc/fstab is ours:
/// what a user puts in /etc/fstab, without touching this machine's.
#[test]
fn an_fstab_line_mounts_with_mount_mountpoint() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let fstab = env.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# recordfs\n{} {} fuse.recordfs defaults,sync=never,noexec,nofail,x-systemd.automount 0 0\n",
            env.store.display(),
            env.mnt.display()
        ),
    )
    .unwrap();
    let name = record(2);
    let (ok, said) = in_namespace(
        &env,
        &format!(
            "mount --bind {fstab} /etc/fstab
            mount {mnt}
            echo '{{\"fstab\": 1}}' > {mnt}/{name}
            findmnt -n -o VFS-OPTIONS {mnt}
            {unmount}",
            fstab = fstab.display(),
            mnt = env.mnt.display(),
            unmount = unmount_and_wait(&env),
        ),
    );
    assert!(ok, "{said}");
    assert!(said.split(',').any(|o| o.trim() == "noexec"), "{said}");
    let log = fs::read_to_string(env.store.join("daemon.log")).unwrap();
    assert!(log.contains("(--sync Never)"), "{log}");
    // The clean unmount inside the namespace made the save durable.
    let m = env.mount(&[]);
    assert_eq!(
        fs::read_to_string(env.path(&name)).unwrap(),
        "{\"fstab\": 1}\n"
    );
    m.stop_cleanly();
}

/// The example unit in scripts/systemd/ passes `systemd-analyze verify` where systemd is
/// installed (the unit's name must match its mount point, and its order must not cycle).
#[test]
fn the_systemd_mount_unit_example_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd/srv-records.mount");
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=fuse.recordfs"), "{text}");
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("systemd-analyze is not installed ({e}): the unit is not verified");
            return;
        }
    };
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A user who is not root mounts an fstab line marked `user` with `mount MNT`: mount(8) runs
/// the helper as that user, with no PATH in its environment, and recordfs mounts through
/// fusermount3. /dev/fuse is made usable by others (0666, Debian's mode) only inside the
/// test's mount namespace, by a device node of the test's own bound over it. Only that user
/// reaches the mount (no allow_other), as with any FUSE mount.
#[test]
fn a_user_mounts_an_fstab_line_marked_user() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let nobody = |p: &Path| {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    };
    nobody(env.dir.path());
    nobody(&env.mnt);
    let fstab = env.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse.recordfs user,noauto,sync=fsync 0 0\n",
            env.store.display(),
            env.mnt.display()
        ),
    )
    .unwrap();
    let name = record(3);
    let as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    let (ok, said) = in_namespace(
        &env,
        &format!(
            "mknod {dir}/fuse c 10 229
            chmod 0666 {dir}/fuse
            mount --bind {dir}/fuse /dev/fuse
            mount --bind {fstab} /etc/fstab
            {as_nobody} mount {mnt}
            {as_nobody} sh -c 'echo {{\\\"user\\\": 1}} > {mnt}/{name}'
            echo \"read: $({as_nobody} cat {mnt}/{name})\"
            echo \"mount: $(grep ' {mnt} ' /proc/self/mounts)\"
            pid=$(awk '{{print $3}}' {store}/lock)
            {as_nobody} umount {mnt}
            for i in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
            ! kill -0 $pid 2>/dev/null
            {as_nobody} {dir}/bin/recordfs check {store}",
            dir = env.dir.path().display(),
            fstab = fstab.display(),
            mnt = env.mnt.display(),
            store = env.store.display(),
        ),
    );
    assert!(ok, "{said}");
    assert!(said.contains("read: {\"user\": 1}"), "{said}");
    assert!(said.contains("user_id=65534"), "{said}");
    let log = fs::read_to_string(env.store.join("daemon.log")).unwrap();
    assert!(log.contains("(--sync Fsync)"), "{log}");
}
