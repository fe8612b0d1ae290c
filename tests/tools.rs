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
    python(&script, &[]);
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
    python(&script, &[]);
}

/// Runs a shell command in the mount, failing the test with its output if it fails.
fn run_in(env: &Env, cmd: &str) -> String {
    let (code, out) = sh(&format!("set -e; cd {}; {cmd}", env.mnt.display()));
    assert_eq!(code, 0, "{cmd}: {out}");
    out
}

/// The record holds `new`, its backup `NAME~` holds `old`, and nothing else is left (swap
/// files, lock symlinks).
fn saved_with_backup(env: &Env, r: &str, new: &str, old: &str) {
    assert_eq!(fs::read_to_string(env.path(r)).unwrap(), new);
    let backup = format!("{r}~");
    assert_eq!(fs::read_to_string(env.path(&backup)).unwrap(), old);
    assert_eq!(names(env), [r.to_string(), backup]);
}

#[test]
fn vim_with_default_settings_swap_and_backup_by_rename() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let r = record(7);
    fs::write(env.path(&r), "{\"name\": \"old\"}\n").unwrap();
    // -u DEFAULTS: vim's own defaults (swap file, writebackup); then backup by rename, the
    // way `:set backup backupcopy=no` saves: the original renamed to NAME~, a new file written
    // (backupskip emptied: by default vim makes no backups under /tmp, where the mount is).
    // The listing taken in the middle of the edit shows the swap file on the mount.
    let out = run_in(
        &env,
        &format!(
            "HOME=/nonexistent vim -Es -u DEFAULTS -i NONE -c 'set backup backupcopy=no backupskip=' \
             -c '!ls -a > {ls}' -c '%s/old/new/' -c 'wq' {r}; cat {ls}",
            ls = env.dir.path().join("ls").display()
        ),
    );
    assert!(
        out.contains(&format!(".{r}.swp")),
        "no swap file seen: {out}"
    );
    saved_with_backup(&env, &r, "{\"name\": \"new\"}\n", "{\"name\": \"old\"}\n");
}

#[test]
fn nano_saves_through_a_terminal() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let r = record(8);
    fs::write(env.path(&r), "{\"a\": 1}\n").unwrap();
    // nano needs a terminal: a pseudo-terminal, keys typed into it, a bounded wait.
    let script = format!(
        r#"
import os, pty, time, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp("nano", ["nano", "--ignorercfiles", {p:?}])
screen = b""
def expect(text):
    # Reads the screen until `text` shows, 10 s at most.
    global screen
    deadline = time.time() + 10
    while text not in screen:
        left = deadline - time.time()
        if left <= 0:
            os.kill(pid, 9)
            sys.exit("nano never showed %r; the screen ended with %r" % (text, screen[-300:]))
        if select.select([fd], [], [], left)[0]:
            try:
                screen += os.read(fd, 65536)
            except OSError:
                sys.exit("nano exited before showing %r" % text)
    screen = b""
expect(b"Help")              # the shortcut bar: nano is ready for keys
os.write(fd, b"\x1b\\")     # M-\ : to the top
os.write(fd, b"\x0b")       # ^K : cut the line
os.write(fd, b'{{"a": 2}}')  # type the new line
os.write(fd, b"\x0f")       # ^O : write out
expect(b"File Name to Write")
os.write(fd, b"\r")         # confirm the name
expect(b"Wrote")
os.write(fd, b"\x18")       # ^X : exit
deadline = time.time() + 10
while time.time() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    if select.select([fd], [], [], 0.1)[0]:
        try:
            os.read(fd, 65536)
        except OSError:
            pass
os.kill(pid, 9)
sys.exit("nano did not exit")
"#,
        p = env.path(&r).to_str().unwrap()
    );
    python(&script, &[("TERM", "xterm")]);
    assert_eq!(fs::read_to_string(env.path(&r)).unwrap(), "{\"a\": 2}\n");
    assert_eq!(names(&env), [r]);
}

#[test]
fn emacs_batch_save_with_lock_and_backup() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let r = record(9);
    fs::write(env.path(&r), "{\"a\": 1}\n").unwrap();
    // In batch mode emacs still locks a file it modifies (a .#NAME symlink), and at the first
    // save makes NAME~ by renaming the original. Its default backup predicate skips files
    // under /tmp, where the test's mount is: the predicate is opened up. HOME is outside the
    // mount (with no HOME, emacs tries to mkdir in the current directory: EPERM here).
    let home = env.dir.path().join("home");
    fs::create_dir(&home).unwrap();
    let out = run_in(
        &env,
        &format!(
            "HOME={h} emacs --batch -Q --eval '(setq backup-enable-predicate (lambda (_) t))' \
             {r} --eval '(progn (erase-buffer) (insert \"{{\\\"a\\\": 2}}\\n\") \
             (princ (format \"locked:%s\\n\" (file-locked-p buffer-file-name))) \
             (save-buffer))' 2>&1",
            h = home.display()
        ),
    );
    assert!(
        out.contains("locked:t"),
        "emacs did not lock the file: {out}"
    );
    saved_with_backup(&env, &r, "{\"a\": 2}\n", "{\"a\": 1}\n");
}

#[test]
fn perl_pi_and_jq_through_a_temp_file() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let r = record(10);
    fs::write(env.path(&r), "{\"v\": 1, \"tags\": [\"a\"]}\n").unwrap();
    run_in(&env, &format!("perl -pi -e 's/\"v\": 1/\"v\": 2/' {r}"));
    assert_eq!(
        fs::read_to_string(env.path(&r)).unwrap(),
        "{\"v\": 2, \"tags\": [\"a\"]}\n"
    );
    run_in(
        &env,
        &format!("jq -c '.v += 1 | .tags += [\"b\"]' {r} > {r}.tmp && mv {r}.tmp {r}"),
    );
    assert_eq!(
        fs::read_to_string(env.path(&r)).unwrap(),
        "{\"v\":3,\"tags\":[\"a\",\"b\"]}\n"
    );
    // perl -i refused: its new file fails at close, and the record stays as it was.
    let (code, _) = sh(&format!(
        "cd {}; perl -pi -e 's/3/3,/' {r}",
        env.mnt.display()
    ));
    assert_ne!(code, 0, "perl must see the refused save");
    assert_eq!(
        fs::read_to_string(env.path(&r)).unwrap(),
        "{\"v\":3,\"tags\":[\"a\",\"b\"]}\n"
    );
    assert_eq!(names(&env), [r]);
}

/// A directory of records and plain files outside the mount, with set modes and times.
fn source_tree(env: &Env) -> std::path::PathBuf {
    let src = env.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(record(100 + i)), format!("{{\"i\": {i}}}\n")).unwrap();
    }
    fs::write(src.join("notes.txt"), "plain\n").unwrap();
    std::os::unix::fs::symlink(record(100), src.join("latest")).unwrap();
    let (code, out) = sh(&format!(
        "cd {s} && chmod 600 {r} && touch -h -d '2001-02-03 04:05:06.5' * && chmod 640 notes.txt",
        s = src.display(),
        r = record(101)
    ));
    assert_eq!(code, 0, "{out}");
    src
}

#[test]
fn rsync_a_in_and_out_copies_nothing_the_second_time() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let src = source_tree(&env);
    let out_dir = env.dir.path().join("out");
    let rsync = |from: &std::path::Path, to: &std::path::Path| {
        let (code, out) = sh(&format!(
            "rsync -a --itemize-changes {}/ {}/",
            from.display(),
            to.display()
        ));
        assert_eq!(code, 0, "{out}");
        out
    };
    let first = rsync(&src, &env.mnt);
    assert_eq!(
        first.lines().filter(|l| l.starts_with(">f")).count(),
        6,
        "{first}"
    );
    assert_eq!(
        rsync(&src, &env.mnt),
        "",
        "a second rsync into the mount copied something"
    );
    let first = rsync(&env.mnt, &out_dir);
    assert!(first.contains(&record(104)), "{first}");
    assert_eq!(
        rsync(&env.mnt, &out_dir),
        "",
        "a second rsync out of the mount copied something"
    );
    let (code, out) = sh(&format!("diff -r {} {}", src.display(), out_dir.display()));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn cp_a_tar_and_shutil_copy2_keep_modes_and_times() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let src = source_tree(&env);
    let m = env.mnt.display();
    let s = src.display();
    let d = env.dir.path().display();
    // cp -a in, tar out, tar back into an empty mount, compared with tar's own --diff.
    let out = run_in(
        &env,
        &format!(
            "cp -a {s}/. {m}/; \
             stat -c '%n %a %Y %s' {s}/* | sed 's|{s}/||' > {d}/src.stat; \
             stat -c '%n %a %Y %s' {m}/* | sed 's|{m}/||' > {d}/mnt.stat; \
             diff {d}/src.stat {d}/mnt.stat; \
             tar -C {m} -cf {d}/out.tar .; rm -f {m}/*; tar -C {m} -xf {d}/out.tar; \
             tar -C {m} --diff -f {d}/out.tar; \
             tar -C {s} --diff -f {d}/out.tar; echo tar-ok"
        ),
    );
    assert!(out.contains("tar-ok"), "{out}");
    assert_eq!(
        fs::read_link(env.path("latest")).unwrap().to_str().unwrap(),
        record(100)
    );
    let script = format!(
        r#"
import os, shutil
src = os.path.join({s:?}, {r:?})
dst = os.path.join({m:?}, "copy-" + {r:?})
shutil.copy2(src, dst)
a, b = os.stat(src), os.stat(dst)
assert (a.st_mtime_ns, a.st_mode, a.st_size) == (b.st_mtime_ns, b.st_mode, b.st_size), (a, b)
"#,
        s = src.to_str().unwrap(),
        m = env.mnt.to_str().unwrap(),
        r = record(101)
    );
    python(&script, &[]);
}

#[test]
fn inotify_watchers_see_create_modify_move_and_delete() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let events = env.dir.path().join("events");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _watcher = Kill(
        std::process::Command::new("inotifywait")
            .args([
                "-m",
                "-q",
                "-e",
                "create,modify,close_write,moved_from,moved_to,delete",
            ])
            .args(["--format", "%e %f"])
            .arg(&env.mnt)
            .stdout(fs::File::create(&events).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The watch is in place once a probe file's creation is reported.
    let probe = env.path("probe");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            let _ = fs::write(&probe, "x");
            fs::read_to_string(&events)
                .unwrap_or_default()
                .contains("probe")
        }),
        "inotifywait never reported the probe"
    );
    fs::remove_file(&probe).unwrap();
    let (a, b) = (record(11), record(12));
    write_file(&env.path(&a), b"{\"v\": 1}").unwrap();
    write_file(&env.path(&a), b"{\"v\": 2}").unwrap();
    fs::rename(env.path(&a), env.path(&b)).unwrap();
    fs::remove_file(env.path(&b)).unwrap();
    let want = [
        format!("CREATE {a}"),
        format!("CLOSE_WRITE,CLOSE {a}"),
        format!("MOVED_FROM {a}"),
        format!("MOVED_TO {b}"),
        format!("DELETE {b}"),
    ];
    let seen = || fs::read_to_string(&events).unwrap_or_default();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || want
            .iter()
            .all(|w| seen().lines().any(|l| l == w))),
        "events seen:\n{}",
        seen()
    );
    assert!(
        seen().lines().any(|l| l == format!("MODIFY {a}")),
        "{}",
        seen()
    );
}

/// Issue: an app that reloads a record on the inotify modify event (watchdog's
/// `on_modified`) while the writer holds the file open reads the previous version and keeps
/// it: the event comes at write(2), the commit at close. Acting on close-write and moved-to
/// (README, Watching a folder) ends with every record right.
#[test]
fn a_watcher_acting_on_close_write_and_moved_to_ends_with_every_record_right() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let seen = env.dir.path().join("seen");
    fs::create_dir(&seen).unwrap();
    let ready = env.dir.path().join("watching");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
    // The watcher: on each event, read the file again, as an app reloading it would.
    let script = format!(
        "inotifywait -m -q -e close_write,moved_to --format %f {mnt} 2>{ready} | \
         while read -r f; do cat {mnt}/\"$f\" > {seen}/\"$f\" 2>/dev/null; done",
        mnt = env.mnt.display(),
        seen = seen.display(),
        ready = ready.display()
    );
    let _watcher = Kill({
        use std::os::unix::process::CommandExt;
        std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .process_group(0)
            .spawn()
            .unwrap()
    });
    let probe = env.path("probe");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            let _ = fs::write(&probe, "x");
            seen.join("probe").exists()
        }),
        "the watcher never saw the probe"
    );
    // Three writers, each a way apps save: in place with the file held open between writes,
    // json.dump then close, and temp file + os.replace.
    let names: Vec<String> = (0x600..0x603).map(record).collect();
    python(
        "import json, os, sys, time\n\
         mnt, names = sys.argv[1], sys.argv[2:]\n\
         for i in range(40):\n\
         \tdoc = json.dumps({'i': i, 'pad': 'x' * (i * 37 % 500)})\n\
         \twith open(os.path.join(mnt, names[0]), 'w') as f:\n\
         \t\tf.write(doc[:10]); f.flush(); time.sleep(0.002); f.write(doc[10:])\n\
         \twith open(os.path.join(mnt, names[1]), 'w') as f:\n\
         \t\tjson.dump({'i': i}, f)\n\
         \ttmp = os.path.join(mnt, '.' + names[2] + '.tmp')\n\
         \twith open(tmp, 'w') as f:\n\
         \t\tjson.dump({'i': i, 'via': 'rename'}, f)\n\
         \tos.replace(tmp, os.path.join(mnt, names[2]))\n"
            .replace(
                "sys.argv[1], sys.argv[2:]",
                &format!("{:?}, {:?}", env.mnt.display().to_string(), names),
            )
            .as_str(),
        &[],
    );
    for n in &names {
        let want = fs::read(env.path(n)).unwrap();
        assert!(String::from_utf8_lossy(&want).contains("\"i\": 39"), "{n}");
        assert!(
            wait_until(std::time::Duration::from_secs(10), || {
                fs::read(seen.join(n)).ok().as_ref() == Some(&want)
            }),
            "{n}: the watcher's last reload is {:?}, the record {:?}",
            String::from_utf8_lossy(&fs::read(seen.join(n)).unwrap_or_default()),
            String::from_utf8_lossy(&want)
        );
    }
}
