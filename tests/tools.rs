//! The tools people use, run for real against a mount.

mod common;
use common::*;

use std::fs;

fn names(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&env.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn vim_edits_a_record_with_its_swap_file() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path(&record(1));
    fs::write(&p, "{\"name\": \"old\"}\n").unwrap();
    let (code, out) = sh(&format!(
        "cd {} && HOME=/nonexistent vim -Es -c '%s/old/new/' -c 'wq' {}",
        env.mnt.display(),
        record(1)
    ));
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"name\": \"new\"}\n");
    assert_eq!(
        names(&env),
        [record(1)],
        "no swap or backup file left behind"
    );
}

#[test]
fn vim_cannot_save_invalid_json_over_a_record() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path(&record(2));
    fs::write(&p, "{\"ok\": 1}\n").unwrap();
    let (code, out) = sh(&format!(
        "cd {} && HOME=/nonexistent vim -Es -c '%s/1/1,/' -c 'wq' {}",
        env.mnt.display(),
        record(2)
    ));
    assert_ne!(code, 0, "vim must report the failed write: {out}");
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"ok\": 1}\n");
}

#[test]
fn sed_i_cp_mv_and_shell_redirections() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let m = env.mnt.display();
    let (a, b) = (record(3), record(4));
    let (code, out) = sh(&format!(
        "set -e; cd {m}; echo '{{\"v\": 1}}' > {a}; sed -i 's/1/2/' {a}; cp {a} {b}; \
         echo '{{\"v\": 9}}' > other.tmp; mv other.tmp {a}; \
         echo first > notes.txt; echo second >> notes.txt; cp notes.txt copy.txt; truncate -s0 copy.txt"
    ));
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(env.path(&a)).unwrap(), "{\"v\": 9}\n");
    assert_eq!(fs::read_to_string(env.path(&b)).unwrap(), "{\"v\": 2}\n");
    assert_eq!(
        fs::read_to_string(env.path("notes.txt")).unwrap(),
        "first\nsecond\n"
    );
    assert_eq!(fs::read(env.path("copy.txt")).unwrap(), b"");
    assert_eq!(names(&env), [a, b, "copy.txt".into(), "notes.txt".into()]);
}

#[test]
fn python_tempfile_and_os_replace() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let target = env.path(&record(5));
    fs::write(&target, "{\"v\": 0}").unwrap();
    let script = format!(
        r#"
import json, os, tempfile
d = {d:?}
t = {t:?}
with tempfile.NamedTemporaryFile("w", dir=d, delete=False) as f:
    json.dump({{"v": 1, "list": [1, 2, 3]}}, f)
    f.flush()
    os.fsync(f.fileno())
os.replace(f.name, t)
with tempfile.NamedTemporaryFile("w", dir=d, delete=False) as f:
    f.write("{{broken")
try:
    os.replace(f.name, t)
    raise SystemExit("replace with invalid JSON succeeded")
except OSError as e:
    assert e.errno == 22, e
os.unlink(f.name)
print(open(t).read())
"#,
        d = env.mnt.to_str().unwrap(),
        t = target.to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "{\"v\": 1, \"list\": [1, 2, 3]}"
    );
    assert_eq!(names(&env), [record(5)]);
}

#[test]
fn emacs_style_lock_symlink() {
    let env = Env::new();
    let m = env.mount(&[]);
    let lock = env.path(&format!(".#{}", record(6)));
    std::os::unix::fs::symlink("root@host.1234:1700000000", &lock).unwrap();
    assert_eq!(
        fs::read_link(&lock).unwrap().to_str().unwrap(),
        "root@host.1234:1700000000"
    );
    assert!(fs::symlink_metadata(&lock)
        .unwrap()
        .file_type()
        .is_symlink());
    m.kill9();
    let _m = env.mount(&[]);
    assert_eq!(
        fs::read_link(&lock).unwrap().to_str().unwrap(),
        "root@host.1234:1700000000"
    );
    fs::remove_file(&lock).unwrap();
    assert_eq!(names(&env).len(), 0);
}

#[test]
fn mmap_and_locks_work() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let script = format!(
        r#"
import mmap, fcntl
p = {p:?}
open(p, "wb").write(b"hello mmap world")
with open(p, "rb") as f:
    assert mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)[:5] == b"hello"
with open(p, "r+b") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    fcntl.lockf(f, fcntl.LOCK_EX)
    m = mmap.mmap(f.fileno(), 0)
    m[0:5] = b"HELLO"
    m.flush()
    m.close()
assert open(p, "rb").read() == b"HELLO mmap world", open(p, "rb").read()
"#,
        p = env.path("data.bin").to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
