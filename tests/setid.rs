//! Set-user-ID and set-group-ID bits after a change by another user (src/caller.rs). With
//! direct I/O the kernel leaves clearing them on a write to the filesystem; a file that kept
//! them after an unprivileged write would hand that user's content root's identity. Each case
//! runs on the mount and on a tmpfs side by side; the tmpfs answer is the expected one.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{sh, sh_as_nobody, Env, BIN};

/// A tmpfs the test mounts, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(at: &Path) -> Tmpfs {
        fs::create_dir(at).unwrap();
        let (code, out) = sh(&format!("mount -t tmpfs recordfs-diff {}", at.display()));
        assert_eq!(code, 0, "{out}");
        fs::set_permissions(at, fs::Permissions::from_mode(0o755)).unwrap();
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// (what, mode before, the change, made by): the change is a shell command on `$f`.
const CASES: &[(&str, u32, &str, &str)] = &[
    ("write", 0o6777, "printf y 1<> $f", "nobody"),
    ("append", 0o6777, "printf y >> $f", "nobody"),
    ("open O_TRUNC", 0o6777, "printf y > $f", "nobody"),
    ("O_TRUNC, no write", 0o6777, ": > $f", "nobody"),
    ("truncate", 0o6777, "truncate -s 3 $f", "nobody"),
    (
        "ftruncate",
        0o6777,
        "perl -e 'open(F, \"+<\", $ARGV[0]) or die; truncate(F, 1) or die' $f",
        "nobody",
    ),
    ("write, setuid only", 0o4757, "printf y 1<> $f", "nobody"),
    ("write, setgid, group may not run it", 0o2767, "printf y 1<> $f", "nobody"),
    ("write by root", 0o6777, "printf y 1<> $f", "root"),
    ("chown by root", 0o6777, "chown 65534 $f", "root"),
    (
        "fstat right after the write, before close",
        0o6777,
        "perl -e 'open(F, \"+<\", $ARGV[0]) or die; syswrite(F, \"y\"); printf(\"%o\\n\", (stat(F))[2] & 07777)' $f >> $f.seen",
        "nobody",
    ),
];

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn run_case(dir: &Path, n: usize) -> (u32, String) {
    let (what, mode, cmd, who) = CASES[n];
    // One file per case, named by its number.
    let f = dir.join(format!("case{n}"));
    fs::write(&f, "x\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
    let seen = f.with_extension("seen");
    if seen.exists() {
        fs::remove_file(&seen).unwrap();
    }
    let cmd = format!("f={}; {cmd}", f.display());
    let (code, out) = match who {
        "root" => sh(&cmd),
        _ => sh_as_nobody(&cmd),
    };
    assert_eq!(code, 0, "{what}: {out}");
    let during = fs::read_to_string(&seen).unwrap_or_default();
    // `stat -c %a` asks for the mode alone, which the kernel answers from its cache while it
    // holds it valid: the mode cleared must show there too (and at exec, which reads it).
    let (code, alone) = sh(&format!("stat -c %a {}", f.display()));
    assert_eq!(code, 0, "{alone}");
    let mode = mode_of(&f);
    assert_eq!(
        alone.trim(),
        format!("{mode:o}"),
        "{what}: the mode asked for alone"
    );
    (mode, during)
}

#[test]
fn a_change_by_another_user_clears_set_id_bits_as_tmpfs_does() {
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tmpfs = Tmpfs::new(&env.dir.path().join("tmpfs"));
    let m = env.mount(&["--allow-other"]);
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&tmpfs.0, fs::Permissions::from_mode(0o777)).unwrap();
    let mut cleared = 0;
    for (n, case) in CASES.iter().enumerate() {
        let want = run_case(&tmpfs.0, n);
        let got = run_case(&env.mnt, n);
        assert_eq!(
            got, want,
            "{}: mode (and fstat during) on recordfs {:o} {:?}, tmpfs {:o} {:?}",
            CASES[n].0, got.0, got.1, want.0, want.1
        );
        cleared += usize::from(want.0 != case.1);
    }
    assert!(
        cleared >= 8,
        "only {cleared} cases cleared a bit: not testing much"
    );

    // The change is committed and logged like any attribute change: it survives a remount.
    let write = env.mnt.join("case0");
    let before = mode_of(&write);
    assert_eq!(before, 0o777);
    m.stop();
    let out = Command::new(BIN)
        .args(["log", "--name", "case0"])
        .arg(&env.store)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.lines()
            .any(|l| l.contains("\"op\":\"ATTR\"") && l.contains(&format!("\"mode\":{}", 0o777))),
        "{log}"
    );
    let _m = env.mount(&[]);
    assert_eq!(mode_of(&write), 0o777);
}
