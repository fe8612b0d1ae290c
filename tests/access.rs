//! Who can reach STORE (FORMAT.md, "Modes"). The log holds the bytes of every file ever
//! committed, whatever the file's mode: a log readable by every local user hands them all out.
//! These tests make a store the way users do and look at it as another user would, plant
//! symbolic links where the daemon writes, and upgrade a store made by the previous version.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{copy_fixture_store, record, sh, sh_as_nobody, wait_until, write_file, Daemon, Env};

/// Every path under `dir`, `dir` included, with its lstat.
fn walk(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = vec![(dir.to_owned(), fs::symlink_metadata(dir).unwrap())];
    let mut i = 0;
    while i < out.len() {
        let (path, md) = out[i].clone();
        if md.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                let p = e.unwrap().path();
                let md = fs::symlink_metadata(&p).unwrap();
                out.push((p, md));
            }
        }
        i += 1;
    }
    out
}

/// Where recordfs keeps the mount's own files, with their own modes.
fn holds_mount_files(store: &Path, path: &Path) -> bool {
    [store.join("root"), store.join("lost+found")]
        .iter()
        .any(|d| path.starts_with(d) && path != d)
}

/// Asserts the modes FORMAT.md gives every path of STORE: directories 0700, recordfs's own
/// files 0600, all owned by the daemon's user (root here).
fn assert_private(store: &Path) {
    let mut looked = 0;
    for (path, md) in walk(store) {
        if holds_mount_files(store, &path) {
            continue;
        }
        let want = if md.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            md.mode() & 0o7777,
            want,
            "{} is {:o}",
            path.display(),
            md.mode() & 0o7777
        );
        assert!(!md.file_type().is_symlink(), "{}", path.display());
        assert_eq!(md.uid(), 0, "{}", path.display());
        looked += 1;
    }
    assert!(looked >= 12, "only {looked} paths in {}", store.display());
}

/// A test directory that every user may enter, so that only STORE's own modes stand
/// between another user and the store (a temp dir is 0700 by itself).
fn open_env() -> Env {
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    env
}

/// Which manifest STORE has: a compaction replaces it (a new file; its mtime may be the old
/// one's within a clock tick).
fn manifest_stamp(env: &Env) -> Option<(u64, i64, i64)> {
    let manifest = env.store.join("log").join("MANIFEST");
    fs::metadata(manifest)
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
}

/// Asks the mounted daemon to compact, and waits until it has written the manifest.
fn compact_now(env: &Env) {
    compacted_since(env, manifest_stamp(env));
}

/// Asks the mounted daemon to compact, and waits until a manifest other than `before` is
/// there: its own compaction's, or one the log limit started meanwhile (a request finds
/// nothing to do when such a compaction has just taken every entry).
fn compacted_since(env: &Env, before: Option<(u64, i64, i64)>) {
    env.compact();
    assert!(
        wait_until(Duration::from_secs(20), || manifest_stamp(env) != before),
        "no compaction within 20 s"
    );
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[test]
fn a_new_store_and_everything_in_it_is_private_whatever_the_umask() {
    let env = Env::new();
    // The daemonizing command line, as users run it, with the most open umask there is.
    let d = Daemon::start(&env.store, &env.mnt, &["--log-limit", "4096"], 0o000).unwrap();
    write_file(&env.path(&record(1)), br#"{"a":1}"#).unwrap();
    write_file(&env.path("notes.txt"), b"plain").unwrap();
    write_file(&env.path(&record(1)), b"{bad").unwrap_err();
    std::os::unix::fs::symlink("notes.txt", env.path("link")).unwrap();
    compact_now(&env);
    // More than the log limit, so the log moves on by itself as well.
    for i in 0..40 {
        write_file(&env.path(&record(2)), format!("{{\"i\":{i}}}").as_bytes()).unwrap();
    }
    compact_now(&env);
    d.stop();
    for part in ["daemon.log", "lock", "log/old", "rejected", "log/MANIFEST"] {
        assert!(env.store.join(part).exists(), "{part}");
    }
    assert_private(&env.store);
    // Backing files keep the file's own mode, inside the private root/.
    let backing = fs::metadata(env.backing("notes.txt")).unwrap();
    assert_eq!(
        backing.mode() & 0o777,
        0o644,
        "as written under the test's umask 022"
    );
}

#[test]
fn another_user_can_read_nothing_of_a_private_file_in_the_store_or_through_the_mount() {
    let env = open_env();
    let m = env.mount(&["--allow-other"]);
    let (rec, plain) = (env.path(&record(7)), env.path("diary.txt"));
    write_with_mode(&rec, br#"{"secret":"SECRET-RECORD-7f3a"}"#, 0o600).unwrap();
    write_with_mode(&plain, b"SECRET-PLAIN-91c2", 0o600).unwrap();
    let refused = write_file(&rec, b"{\"secret\": SECRET-REFUSED-55d0");
    assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    write_with_mode(&env.path("public.txt"), b"PUBLIC-CONTROL", 0o644).unwrap();
    compact_now(&env);
    write_with_mode(&plain, b"SECRET-PLAIN-91c2 and more", 0o600).unwrap();
    let secrets = [
        "SECRET-RECORD-7f3a",
        "SECRET-PLAIN-91c2",
        "SECRET-REFUSED-55d0",
    ];

    // The bytes are in the store (so the search below looks where they are) ...
    let (_, as_root) = sh(&format!("grep -rla SECRET {}", env.store.display()));
    for part in ["/log/", "/rejected/", "/root/"] {
        assert!(as_root.contains(part), "{part} not found in:\n{as_root}");
    }
    // ... and another user reaches none of them: not by name, not by search.
    let paths: Vec<String> = walk(&env.store)
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let script = format!(
        "for p in {}; do if [ -f \"$p\" ] && cat \"$p\" >/dev/null 2>&1; then echo \"READ $p\"; fi; done; \
         grep -rla SECRET {} 2>/dev/null; true",
        paths.join(" "),
        env.store.display()
    );
    let (_, nobody) = sh_as_nobody(&script);
    assert_eq!(nobody, "", "user 65534 could read from the store");

    // Through the mount with --allow-other: the file's mode decides, as the kernel checks it.
    let (_, got) = sh_as_nobody(&format!("cat {}", env.path("public.txt").display()));
    assert_eq!(
        got, "PUBLIC-CONTROL",
        "the control file is readable by others"
    );
    for f in [&rec, &plain] {
        let (code, got) = sh_as_nobody(&format!("cat {}", f.display()));
        assert_ne!(code, 0, "{got}");
        assert!(got.contains("Permission denied"), "{got}");
        assert!(!secrets.iter().any(|s| got.contains(s)), "{got}");
    }
    drop(m);

    // Without --allow-other nobody but the mounting user may use the mount at all.
    let _m = env.mount(&[]);
    for f in [env.path("public.txt"), rec, plain] {
        let (code, got) = sh_as_nobody(&format!("cat {}", f.display()));
        assert_ne!(code, 0, "{got}");
        assert!(got.contains("Permission denied"), "{got}");
    }
}

#[test]
fn a_store_others_can_reach_is_refused_naming_each_path_and_its_fix() {
    let env = Env::new();
    let m = env.mount(&[]);
    write_file(&env.path(&record(1)), br#"{"v":1}"#).unwrap();
    m.stop();
    let store = env.store.display().to_string();
    let segment = env.log_segment().display().to_string();

    fs::set_permissions(&env.store, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(env.log_segment(), fs::Permissions::from_mode(0o644)).unwrap();
    let err = env.mount_refused(&[]);
    for want in [
        format!("{store} is mode 0755"),
        format!("fix: chmod go-rwx {store}\n"),
        format!("{segment} is mode 0644"),
        format!("fix: chmod go-rwx {segment}"),
        "--allow-open-store".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }
    // check reports it too, and exits 1.
    let (code, text) = env.check();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("{segment} is mode 0644")), "{text}");
    // Nothing was changed by the refusal.
    assert_eq!(fs::metadata(&env.store).unwrap().mode() & 0o777, 0o755);

    // Accepted knowingly: it mounts, and the daemon's log names what is open.
    let m = env.mount(&["--allow-open-store"]);
    assert_eq!(fs::read(env.path(&record(1))).unwrap(), br#"{"v":1}"#);
    let log = m.daemon_log();
    assert!(
        log.contains(&format!("--allow-open-store: {store} is mode 0755")),
        "{log}"
    );
    m.stop();

    // Another owner of one of its directories is refused too.
    fs::set_permissions(&env.store, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(env.log_segment(), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(env.store.join("root"), Some(65534), None).unwrap();
    let err = env.mount_refused(&[]);
    assert!(err.contains("root is owned by uid 65534"), "{err}");
    assert!(err.contains(&format!("fix: chown 0 {store}/root")), "{err}");
    std::os::unix::fs::chown(env.store.join("root"), Some(0), None).unwrap();

    // Fixed as told: mounts, and check is clean.
    let earlier = m_log_len(&env);
    let m = env.mount(&[]);
    assert!(!m.daemon_log()[earlier..].contains("allow-open-store"));
    m.stop();
    let (code, text) = env.check();
    assert_eq!(code, 0, "{text}");
}

/// How much the test daemons of `env` have logged so far (they share one log file).
fn m_log_len(env: &Env) -> usize {
    let log = env
        .store
        .with_extension(format!("daemon.{}.log", std::process::id()));
    fs::read_to_string(log).map(|l| l.len()).unwrap_or(0)
}

#[test]
fn a_store_made_by_the_previous_version_is_made_private_once_and_keeps_its_files() {
    let env = Env::new();
    copy_fixture_store("store-v1", 0o755, &env.store);
    let marker = env.store.join("recordfs.store");
    assert!(fs::read_to_string(&marker)
        .unwrap()
        .contains("\"version\":1"));

    // Read-only, nothing may be changed: refused, saying how to upgrade.
    let err = env.mount_refused(&["--read-only"]);
    assert!(err.contains("mount it once without --read-only"), "{err}");

    let d = Daemon::start(&env.store, &env.mnt, &[], 0o022).unwrap();
    assert!(
        d.said.contains("was made by an earlier version of recordfs: upgraded to store version 7; 11 paths made private"),
        "{}",
        d.said
    );
    let rec = "0a7c7d5e-3f2b-4c1e-9d3a-5b6c7d8e9f00.json";
    assert_eq!(
        fs::read_to_string(env.path(rec)).unwrap(),
        "{\"name\":\"ada\",\"score\":2}\n"
    );
    assert_eq!(
        fs::read_link(env.path("link")).unwrap(),
        Path::new("notes.txt")
    );
    assert_eq!(
        fs::read_to_string(env.path("notes.txt")).unwrap(),
        "plain notes\n"
    );
    write_file(&env.path(rec), br#"{"name":"ada","score":3}"#).unwrap();
    d.stop();
    assert_private(&env.store);
    assert!(fs::read_to_string(&marker)
        .unwrap()
        .contains("\"version\":7"));
    // The files keep their own modes.
    assert_eq!(
        fs::metadata(env.backing("notes.txt")).unwrap().mode() & 0o777,
        0o644
    );

    // Said once: the next mount is an ordinary one.
    let d = Daemon::start(&env.store, &env.mnt, &[], 0o022).unwrap();
    assert!(!d.said.contains("earlier version"), "{}", d.said);
    assert_eq!(
        fs::read_to_string(env.path(rec)).unwrap(),
        r#"{"name":"ada","score":3}"#
    );
    d.stop();
    let (code, text) = env.check();
    assert_eq!(code, 0, "{text}");
    // Its refused save, kept without a reason, is listed by what its name tells.
    let (code, text) = sh(&format!("{} rejected {}", common::BIN, env.store.display()));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with(&format!(
            "2026-12-01T03:21:49.614Z  {rec}  (kept by an earlier version"
        )),
        "{text}"
    );
}

#[test]
fn symbolic_links_planted_in_the_store_are_never_followed() {
    let env = Env::new();
    let victim_dir = env.dir.path().join("elsewhere");
    fs::create_dir(&victim_dir).unwrap();
    let victim = env.dir.path().join("victim.txt");
    fs::write(&victim, "VICTIM").unwrap();
    let m = env.mount(&[]);
    write_file(&env.path(&record(1)), br#"{"v":1}"#).unwrap();
    m.stop();

    // A link where STORE keeps a file or directory of its own refuses the mount, even with
    // --allow-open-store, and nothing is written through it.
    for (part, target) in [
        ("lock", &victim),
        ("daemon.log", &victim),
        ("root", &victim_dir),
        ("rejected", &victim_dir),
        ("tmp", &victim_dir),
        ("log/MANIFEST", &victim),
        ("log/00000000000000000099.log", &victim),
    ] {
        let path = env.store.join(part);
        let aside = env.dir.path().join("aside");
        let existed = path.exists();
        if existed {
            fs::rename(&path, &aside).unwrap();
        }
        std::os::unix::fs::symlink(target, &path).unwrap();
        let err = match Daemon::start(&env.store, &env.mnt, &["--allow-open-store"], 0o022) {
            Ok(_) => panic!("mounted with a link at {part}"),
            Err(e) => e,
        };
        assert!(
            err.contains(&format!("{} is a symbolic link", path.display())),
            "{part}: {err}"
        );
        fs::remove_file(&path).unwrap();
        if existed {
            fs::rename(&aside, &path).unwrap();
        }
    }

    // Links where the daemon writes names of its choosing: removed or replaced, never
    // written through. tmp/ is emptied at mount, so these are planted while it runs.
    // A link in root/ where no entry touched is set aside by a mount that looks at the
    // whole tree (`--verify`).
    std::os::unix::fs::symlink(&victim, env.backing("stray.json")).unwrap();
    let m = env.mount(&["--log-limit", "4096", "--verify"]);
    for name in ["snapshot", "manifest", "restore.2", "rejected.1"] {
        std::os::unix::fs::symlink(&victim, env.store.join("tmp").join(name)).unwrap();
    }
    for seq in 0..200 {
        std::os::unix::fs::symlink(&victim, env.store.join("tmp").join(format!("2.{seq}")))
            .unwrap();
    }
    let before = manifest_stamp(&env);
    for i in 0..20 {
        write_file(&env.path(&record(1)), format!("{{\"v\":{i}}}").as_bytes()).unwrap();
    }
    write_file(&env.path(&record(1)), b"{bad").unwrap_err();
    compacted_since(&env, before);
    m.stop();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "VICTIM");
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);
    assert!(
        fs::symlink_metadata(env.backing("stray.json")).is_err(),
        "the stray link was moved to lost+found"
    );
    let m = env.mount(&[]);
    assert_eq!(fs::read(env.path(&record(1))).unwrap(), br#"{"v":19}"#);
    m.stop();
    let (code, text) = env.check();
    assert_eq!(code, 0, "{text}");
}
