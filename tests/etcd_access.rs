//! What a cluster's settings ask of recordfs (issue 14), against a real three-member cluster
//! that each test starts: members that take only TLS clients with a certificate of their CA
//! and only known users, whose tokens expire and are forgotten when the members restart; and
//! a space quota, past which etcd takes no more puts (its NOSPACE alarm).
//!
//! Guards against: options that reach no connection (the mount's daemon, the follower, the
//! tools); a refusal that says nothing of why, or that hangs; a mount that stops saving once
//! its login token is gone; a full cluster that loses an acknowledged save, acknowledges one it
//! did not take, or hangs the caller.

mod common;
use common::cluster::*;
use common::*;

use std::fs;
use std::time::{Duration, Instant};

/// Asserts that `args` fails at once (exit 2), saying `why`, with one of `errnos`.
fn refused(args: &[&str], why: &str, errnos: &[&str]) {
    let (code, out, took) = tool_with(args, &[]);
    assert_eq!(code, 2, "{args:?}: {out}");
    assert!(out.contains(why), "{args:?} does not say {why:?}: {out}");
    assert!(
        errnos
            .iter()
            .any(|e| out.trim_end().ends_with(&format!("({e})"))),
        "{args:?}: {out}"
    );
    assert!(took < Duration::from_secs(15), "{args:?} took {took:?}");
}

#[test]
fn a_cluster_of_tls_clients_and_users_is_reached_with_etcdctls_options_and_tokens_that_expire() {
    let mut cluster = Cluster::start_with(Settings {
        secure: true,
        ..Settings::default()
    });
    let url = cluster.url("records");
    let s = cluster.secure();
    let (cacert, cert, key) = (
        s.cacert.display().to_string(),
        s.cert.display().to_string(),
        s.key.display().to_string(),
    );
    let with_certs = ["--cacert", &cacert, "--cert", &cert, "--key", &key];

    // Each thing the cluster asks for, missing, is named.
    // A member closes a connection that is not TLS, or that shows no certificate: the
    // client sees the connection end (ECONNRESET, EIO) or, for the certificate, often the
    // member's refusal first (EACCES: under TLS 1.3 the client may finish its handshake
    // before that refusal arrives).
    refused(
        &["stats", &url],
        "asks for TLS (--cacert)",
        &["ECONNRESET", "EIO"],
    );
    refused(
        &["stats", &url, "--cacert", &cacert],
        "asks for a client certificate (--cert, --key)",
        &["EACCES", "ECONNRESET", "EIO"],
    );
    let mut no_user = vec!["stats", &url];
    no_user.extend(with_certs);
    refused(&no_user, "permission denied", &["EACCES"]);
    let mut bad_password = no_user.clone();
    bad_password.extend(["--user", "rec:nope"]);
    refused(&bad_password, "authentication failed", &["EACCES"]);
    let mut no_password = no_user.clone();
    no_password.extend(["--user", "rec"]);
    refused(&no_password, "no password", &["EINVAL"]);
    let args: Vec<String> = s.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // `rec` may change /records/ only.
    let other = cluster.url("other");
    let mut elsewhere = vec!["stats", &other];
    elsewhere.extend(&args);
    refused(&elsewhere, "permission denied", &["EACCES"]);

    // With them, on the command line: a mount saves and follows.
    let place = Place::new();
    let m = place.mount(&url, &args).expect("mount with TLS and a user");
    let reader = Place::new();
    let mut ro_args = args.clone();
    ro_args.push("--read-only");
    let r = reader.mount(&url, &ro_args).expect("a read-only mount");
    let save = |n: usize| fs::write(place.path(&record_name(1)), format!("{{\"n\": {n}}}"));
    let shows = |n: usize| {
        wait_until(Duration::from_secs(10), || {
            fs::read_to_string(reader.path(&record_name(1))).ok() == Some(format!("{{\"n\": {n}}}"))
        })
    };
    save(1).unwrap();
    assert!(shows(1), "the read-only mount does not show the save");

    // The members' tokens live 3 s (`Settings::secure`); after 4 s of nothing, a save and
    // the follower go on (each connection logs in again).
    std::thread::sleep(Duration::from_secs(4));
    save(2).expect("a save once the mount's token expired");
    assert!(shows(2), "the follower stopped once its token expired");

    // The whole cluster restarted forgets every token.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_healthy();
    let saved = wait_until(Duration::from_secs(30), || save(3).is_ok());
    assert!(saved, "no save went in after the members restarted");
    assert!(shows(3), "the follower stopped after the members restarted");
    let out = cluster
        .etcdctl(&["get", "--prefix", "/records/d/", "--print-value-only"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("{\"n\": 3}"),
        "{out:?}"
    );
    r.stop_cleanly();
    m.stop_cleanly();

    // The tools, with etcdctl's environment variables and a password file.
    let password = place.dir.path().join("password");
    fs::write(&password, "recpw\n").unwrap();
    let password = password.display().to_string();
    let env = [
        ("ETCDCTL_CACERT", cacert.as_str()),
        ("ETCDCTL_CERT", cert.as_str()),
        ("ETCDCTL_KEY", key.as_str()),
        ("ETCDCTL_USER", "rec"),
    ];
    let mut env_password = env.to_vec();
    env_password.push(("ETCDCTL_PASSWORD", "recpw"));
    for args in [
        vec!["check", &url],
        vec!["stats", &url],
        vec!["log", &url, "--name", &record_name(1)],
        vec!["export", &url],
    ] {
        let (code, out, _) = tool_with(&args, &env_password);
        assert_eq!(code, 0, "{args:?}: {out}");
        if args[0] == "export" || args[0] == "log" {
            assert!(
                out.contains("\\\"n\\\": 3") || out.contains("\"n\": 3"),
                "{args:?}: {out}"
            );
        }
    }
    // And as an fstab line gives them (`-o`; the password only in a file).
    let o =
        format!("ro,cacert={cacert},cert={cert},key={key},etcd_user=rec,password_file={password}");
    let by_o = place
        .mount(&url, &["-o", &o])
        .expect("a mount with -o options");
    assert!(fs::read_to_string(place.path(&record_name(1))).unwrap() == "{\"n\": 3}");
    by_o.stop_cleanly();
    let copy = place.dir.path().join("copy");
    let copy = copy.display().to_string();
    let (code, out, _) = tool_with(
        &["migrate", &url, &copy, "--password-file", &password],
        &env,
    );
    assert_eq!(code, 0, "migrate out: {out}");
    let (code, out, _) = tool_with(&["stats", &copy], &[]);
    assert_eq!(code, 0, "{out}");
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("records 1 (8 bytes)"), "{out}");
}

/// The space quota of the cluster in the quota test: a few dozen versions of its record.
const QUOTA: u64 = 4 << 20;

#[test]
fn a_cluster_out_of_space_refuses_saves_with_enospc_keeps_the_last_taken_and_takes_saves_once_freed(
) {
    let cluster = Cluster::start_with(Settings {
        quota: Some(QUOTA),
        ..Settings::default()
    });
    let url = cluster.url("full");
    let place = Place::new();
    let m = place.mount(&url, &[]).expect("mount");
    let record = place.path(&record_name(1));
    let version = |n: usize| format!("{{\"n\": {n}, \"pad\": \"{}\"}}", "x".repeat(200_000));
    // Each save is a version in etcd's history until a compaction: the quota is used up.
    let mut taken = 0;
    let mut refusal = None;
    for n in 1..=200 {
        let started = Instant::now();
        match write_file(&record, version(n).as_bytes()) {
            Ok(()) => taken = n,
            Err(e) => {
                refusal = Some((e, started.elapsed()));
                break;
            }
        }
    }
    let (e, took) = refusal.expect("200 saves of 200 KB fit a quota of 4 MiB");
    assert_eq!(errno_of(&e), libc::ENOSPC, "{e}");
    assert!(took < Duration::from_secs(15), "the refusal took {took:?}");
    assert!(taken > 0, "not one save went in");
    let alarms = cluster.etcdctl(&["alarm", "list"]).unwrap();
    assert!(
        String::from_utf8_lossy(&alarms.stdout).contains("NOSPACE"),
        "{alarms:?}"
    );
    // The record keeps the last version etcd took, on the mount and in etcd.
    let shows = |n: usize| {
        let now = fs::read_to_string(&record).unwrap();
        let log = place.mount_log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        assert!(
            now == version(n),
            "the mount shows {:.16}, not version {n}; the daemon's log, newest first:\n{}",
            now,
            tail.join("\n")
        );
    };
    shows(taken);
    let in_etcd = |n: usize| {
        let (code, out) = tool(&["show", &url, &record_name(1)]);
        code == 0 && out == version(n)
    };
    assert!(
        in_etcd(taken),
        "etcd does not hold the last version it took"
    );
    // A new file is refused too, and leaves no name; the mount keeps serving.
    let new = place.path(&record_name(2));
    let e = write_file(&new, b"{\"n\": 2}").expect_err("a new file while etcd is full");
    assert_eq!(errno_of(&e), libc::ENOSPC, "{e}");
    assert!(
        !new.exists(),
        "a refused new file is still there; the daemon's log:\n{}",
        place.mount_log()
    );
    let e = write_file(&record, version(999).as_bytes()).expect_err("a save while full");
    assert_eq!(errno_of(&e), libc::ENOSPC, "{e}");
    shows(taken);

    // An operator frees space (etcd's own procedure): the history compacted, every member
    // defragmented, the alarm disarmed. Saves go in again, and nothing refused shows up.
    let rev = cluster.revision();
    for args in [&["compact", &rev][..], &["defrag"], &["alarm", "disarm"]] {
        let out = cluster.etcdctl(args).unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let saved = wait_until(Duration::from_secs(30), || {
        write_file(&record, version(1000).as_bytes()).is_ok()
    });
    assert!(saved, "no save went in once space was freed");
    assert!(in_etcd(1000));
    m.stop_cleanly();
    let again = place.mount(&url, &[]).expect("mount again");
    shows(1000);
    assert!(!new.exists(), "the refused new file reached etcd");
    again.stop_cleanly();
    assert_sound(&url);
}
