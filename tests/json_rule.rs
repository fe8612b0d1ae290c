//! The JSON rule on its own: seeded sequences of saves of valid and invalid JSON to records,
//! by every path a program saves through (write and close, fsync, temp file and rename,
//! truncate, append), on a real mount. After each save: a valid one is the record's content;
//! an invalid one fails with EINVAL at its commit point, the previous version stays, and the
//! refused bytes are in STORE/rejected/. At the end of each sequence the daemon is killed
//! and the store mounted again: every acknowledged save is there, no refused one is.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, IntoRawFd};
use std::path::Path;

/// Documents labelled by hand: the judge below must agree with every label.
fn corpus() -> Vec<(Vec<u8>, bool)> {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    let mut v: Vec<(Vec<u8>, bool)> = [
        ("{}", true),
        ("[]", true),
        ("{\"a\": 1}", true),
        ("\"text\"", true),
        ("12.5e3", true),
        ("null", true),
        ("true", true),
        (" {\"x\": [1, 2, {\"y\": null}]} \n", true),
        ("{\"é\": \"ü ☃\"}", true),
        ("{", false),
        ("{\"a\": }", false),
        ("[1,]", false),
        ("{\"a\": 1} x", false),
        ("   ", false),
        ("NaN", false),
        ("'x'", false),
        ("{\"a\":1}{\"b\":2}", false),
        ("{\"a\": 1,}", false),
        ("01", false),
        // RFC 8259's grammar sets no range: numbers beyond an f64's are JSON.
        ("12.5e30101", true),
        ("[1e400, -1e400, 1e-400]", true),
        ("[1e400, x]", false),
        ("[-0, 1E+2, 0.5e-1]", true),
        ("+1", false),
        (".5", false),
        ("1.", false),
        ("0.e1", false),
        ("-", false),
        // Nor does it ask that names be unique, nor that an escaped half of a surrogate pair
        // have its other half (RFC 8259, sections 4 and 8.2).
        ("{\"a\": 1, \"a\": 2}", true),
        ("[\"\\ud800\", \"\\udfff x\"]", true),
        ("\"\\u12\"", false),
        ("\"\\x41\"", false),
    ]
    .iter()
    .map(|(s, ok)| (s.as_bytes().to_vec(), *ok))
    .collect();
    v.push((b"\0".to_vec(), false));
    v.push((b"{\"a\": \"\xff\"}".to_vec(), false));
    v.push((b"\xef\xbb\xbf{}".to_vec(), false));
    v.push((nested(127), true));
    // Deeper than the 127 levels a record may nest (README, Limits).
    v.push((nested(128), false));
    v.push((nested(200), false));
    v.push((
        format!("{{\"s\": \"{}\"}}", "[".repeat(200)).into_bytes(),
        true,
    ));
    // An escaped quote does not end the string.
    v.push((
        format!("{{\"s\": \"\\\"{}\"}}", "[".repeat(200)).into_bytes(),
        true,
    ));
    v
}

/// What a record may hold: nothing (a new file) or one JSON text in UTF-8 (RFC 8259),
/// nesting at most 127 deep. The grammar is serde_json's as it skips a value, which takes a
/// number of any size, as RFC 8259's grammar does (read into a `Value`, one beyond an f64's
/// range such as `1e400` is refused, though Python, JavaScript and jq read it); the UTF-8 is
/// checked first (skipping a string, serde_json does not look at its bytes), and the depth is
/// counted here.
fn judge(bytes: &[u8]) -> bool {
    bytes.is_empty()
        || std::str::from_utf8(bytes).is_ok_and(|s| {
            serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() && depth(s) <= 127
        })
}

/// How deep arrays and objects nest in a JSON text (brackets inside strings aside).
fn depth(text: &str) -> usize {
    let (mut deepest, mut now) = (0, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for c in text.bytes() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'[' | b'{' if !in_string => {
                now += 1;
                deepest = deepest.max(now);
            }
            b']' | b'}' if !in_string => now = now.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[test]
fn the_judge_agrees_with_the_labels() {
    for (doc, ok) in corpus() {
        assert_eq!(judge(&doc), ok, "{:?}", String::from_utf8_lossy(&doc));
    }
}

#[derive(Debug)]
enum Save {
    /// open(O_TRUNC), write, close.
    Direct,
    /// write, fsync (the commit point), then close.
    Fsync,
    /// a temp file, then rename over the record.
    Replace,
    /// open(O_APPEND), write, close: the whole file must parse afterwards.
    Append,
    /// truncate(2) by path to `len`.
    Truncate(u64),
}

fn close_fd(f: fs::File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    match unsafe { libc::close(fd) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Performs `save` of `doc` to `path`; the result of its commit point.
fn perform(save: &Save, path: &Path, doc: &[u8]) -> std::io::Result<()> {
    match save {
        Save::Direct => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            f.write_all(doc)?;
            close_fd(f)
        }
        Save::Fsync => {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            f.set_len(0)?;
            f.write_all(doc)?;
            let synced = match unsafe { libc::fsync(f.as_raw_fd()) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            };
            let closed = close_fd(f);
            // The close retries the same bytes: it must give the same answer.
            assert_eq!(
                synced.as_ref().map_err(errno_of),
                closed.as_ref().map_err(errno_of),
                "close after fsync"
            );
            synced
        }
        Save::Replace => {
            let tmp = path.with_extension("tmp");
            write_file(&tmp, doc)?;
            let r = fs::rename(&tmp, path);
            if r.is_err() {
                assert_eq!(
                    fs::read(&tmp).unwrap(),
                    doc,
                    "a refused rename keeps the temp file"
                );
                fs::remove_file(&tmp).unwrap();
            }
            r
        }
        Save::Append => {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(path)?;
            f.write_all(doc)?;
            close_fd(f)
        }
        Save::Truncate(len) => {
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            match unsafe { libc::truncate(c.as_ptr(), *len as i64) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        }
    }
}

fn rejected_contents(store: &Path) -> BTreeSet<Vec<u8>> {
    fs::read_dir(store.join("rejected"))
        .map(|d| d.map(|e| fs::read(e.unwrap().path()).unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn saves_of_random_json_follow_the_rule() {
    let env = Env::new();
    let docs = corpus();
    let names: Vec<String> = (1..=3).map(record).collect();
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let (mut refused, mut accepted) = (0, 0);
    let sequences: u64 = std::env::var("RECORDFS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    for seed in 0..sequences {
        let m = env.mount(&[]);
        let mut rng = Rng::new(seed + 1000);
        for step in 0..20 {
            let name = &names[rng.below(3) as usize];
            let path = env.path(name);
            let (doc, _) = &docs[rng.below(docs.len() as u64) as usize];
            let old = model.get(name).cloned();
            let save = match rng.below(5) {
                0 => Save::Direct,
                1 => Save::Fsync,
                2 => Save::Replace,
                3 => Save::Append,
                _ => match &old {
                    Some(o) if !o.is_empty() => Save::Truncate(rng.below(o.len() as u64 + 4)),
                    _ => Save::Direct,
                },
            };
            let new: Vec<u8> = match &save {
                Save::Append => [old.clone().unwrap_or_default(), doc.clone()].concat(),
                Save::Truncate(len) => {
                    let mut b = old.clone().unwrap();
                    b.resize(*len as usize, 0);
                    b
                }
                _ => doc.clone(),
            };
            let what = format!(
                "seed {seed} step {step}: {save:?} of {:?} to {name}",
                String::from_utf8_lossy(&new)
            );
            let result = perform(&save, &path, doc);
            if judge(&new) {
                assert!(result.is_ok(), "{what}: refused: {result:?}");
                model.insert(name.clone(), new);
                accepted += 1;
            } else {
                let e = result.expect_err(&format!("{what}: accepted"));
                assert_eq!(errno_of(&e), libc::EINVAL, "{what}: {e}");
                // A save that would have created the record leaves no record behind.
                match old {
                    Some(kept) => {
                        model.insert(name.clone(), kept);
                    }
                    None => assert!(
                        !path.exists(),
                        "{what}: a refused first save left the record"
                    ),
                }
                assert!(
                    rejected_contents(&env.store).contains(&new),
                    "{what}: the refused bytes are not in rejected/"
                );
                refused += 1;
            }
            for (n, want) in &model {
                assert_eq!(&fs::read(env.path(n)).unwrap(), want, "{what}: then {n}");
            }
        }
        m.kill9();
        let m = env.mount(&[]);
        for (n, want) in &model {
            assert_eq!(
                &fs::read(env.path(n)).unwrap(),
                want,
                "seed {seed}: {n} after SIGKILL"
            );
        }
        drop(m);
    }
    eprintln!("{accepted} saves accepted, {refused} refused");
    assert!(accepted > 0 && refused > 0);
}

/// Issue: `echo '{bad' > NEW.json` left a 0-byte record behind, which broke the next
/// `json.load` scan of the folder. A refused first save now takes the new name back.
#[test]
fn a_refused_first_save_leaves_no_empty_record() {
    let env = Env::new();
    let m = env.mount(&[]);
    let names: Vec<String> = (0..6).map(|i| record(0x300 + i)).collect();
    let exists = |n: &str| fs::symlink_metadata(env.path(n)).is_ok();

    // The shell ignores the error at close; the name must be gone when it returns.
    let (code, out) = sh(&format!(
        "cd {} && echo '{{bad' > {} && ls -a",
        env.mnt.display(),
        names[0]
    ));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&names[0]), "ls shows it: {out}");
    assert!(!exists(&names[0]), "stat finds it");
    // Python's json.dump of a value JSON has no spelling for, and a plain write.
    python(
        "import json, os, sys\n\
         for name, body in [(sys.argv[1], None), (sys.argv[2], '{\"a\": 1,}')]:\n\
         \ttry:\n\
         \t\twith open(name, 'w') as f:\n\
         \t\t\tjson.dump({'x': float('nan')}, f) if body is None else f.write(body)\n\
         \t\traise SystemExit(name + ': no error at close')\n\
         \texcept OSError as e:\n\
         \t\tassert e.errno == 22, e\n\
         \tassert not os.path.exists(name), name + ' is still there'\n\
         with open(sys.argv[3], 'w') as f:\n\
         \tjson.dump({'ok': True}, f)\n\
         assert json.load(open(sys.argv[3])) == {'ok': True}\n"
            .replace(
                "sys.argv[1]",
                &format!("'{}'", env.path(&names[1]).display()),
            )
            .replace(
                "sys.argv[2]",
                &format!("'{}'", env.path(&names[2]).display()),
            )
            .replace(
                "sys.argv[3]",
                &format!("'{}'", env.path(&names[3]).display()),
            )
            .as_str(),
        &[],
    );
    // (names[3] is created and saved right: kept.)
    assert!(exists(&names[3]));
    // The refused bytes are kept all the same.
    let kept = rejected_contents(&env.store);
    for bytes in [&b"{bad\n"[..], b"{\"a\": 1,}", b"{\"x\": NaN}"] {
        assert!(
            kept.contains(bytes),
            "{:?} not kept",
            String::from_utf8_lossy(bytes)
        );
    }

    // A refused fsync leaves the name: the program still holds the file and may save again.
    let p = env.path(&names[4]);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    f.write_all(b"{nope").unwrap();
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EINVAL));
    assert!(exists(&names[4]));
    f.set_len(0).unwrap();
    std::io::Seek::rewind(&mut f).unwrap();
    f.write_all(b"{\"second\": true}").unwrap();
    close_fd(f).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"{\"second\": true}");

    // A crash between the create and the first close: the create was durable, the content
    // never committed: the record is there, empty (README, Validation).
    let p = env.path(&names[5]);
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(b"{\"never\": \"closed\"}").unwrap();
    m.kill9();
    drop(f);
    let _m = env.mount(&[]);
    assert_eq!(fs::read(&p).unwrap(), b"");
    for n in &names[..3] {
        assert!(!exists(n), "{n} came back after the remount");
    }
    assert_eq!(fs::read(env.path(&names[3])).unwrap(), b"{\"ok\": true}");
}

/// Issue: a refused save looks like success to bash, and to CPython when a file is closed by
/// the garbage collector; `recordfs rejected` lists every kept refusal. Python's json.dump
/// writes NaN and Infinity by default, which `--allow-nan` accepts.
#[test]
fn refusals_are_listed_and_nan_is_accepted_when_asked() {
    let env = Env::new();
    let (a, b) = (env.path(&record(0x400)), env.path(&record(0x401)));
    let m = env.mount(&[]);
    fs::write(&a, "{\"ok\": 1}").unwrap();
    let (code, out) = sh(&format!("printf '{{\\n  \"a\": 1,\\n}}' > {}", a.display()));
    assert_eq!(code, 0, "bash does not see the error: {out}");
    // Closed by the garbage collector: the error is dropped, the save looks done.
    python(
        &format!(
            "import json\njson.dump({{'x': float('nan')}}, open('{}', 'w'))\n",
            b.display()
        ),
        &[],
    );
    let out = std::process::Command::new(BIN)
        .args(["rejected", "--json"])
        .arg(&env.store)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let want = [
        (
            record(0x400),
            3,
            1,
            "key must be a string",
            &b"{\n  \"a\": 1,\n}"[..],
        ),
        (record(0x401), 1, 7, "expected value", b"{\"x\": NaN}"),
    ];
    for (r, (name, line, column, error, bytes)) in listed.iter().zip(want) {
        assert_eq!(r["name"], name.as_str(), "{r}");
        assert_eq!(
            (r["line"].as_u64(), r["column"].as_u64()),
            (Some(line), Some(column))
        );
        assert_eq!(r["error"], error, "{r}");
        assert_eq!(r["len"].as_u64(), Some(bytes.len() as u64));
        let time = r["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
        assert_eq!(fs::read(r["kept"].as_str().unwrap()).unwrap(), bytes);
    }
    let (code, text) = sh(&format!("{BIN} rejected {}", env.store.display()));
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!(
            "{}  line 3 column 1: key must be a string  (13 bytes in ",
            record(0x400)
        )),
        "{text}"
    );
    drop(m);

    // --allow-nan: Python's own round trip works, and only NaN and the infinities pass.
    let m = env.mount(&["--allow-nan"]);
    python(
        &format!(
            "import json, math\n\
             json.dump({{'x': float('nan'), 'y': [float('inf'), -float('inf')], 's': 'NaN'}}, open('{b}', 'w'))\n\
             d = json.load(open('{b}'))\n\
             assert math.isnan(d['x']) and d['y'] == [math.inf, -math.inf] and d['s'] == 'NaN', d\n\
             try:\n\
             \twith open('{b}', 'w') as f: f.write('{{\"x\": nan}}')\n\
             \traise SystemExit('lower-case nan was accepted')\n\
             except OSError as e:\n\
             \tassert e.errno == 22\n",
            b = b.display()
        ),
        &[],
    );
    drop(m);
    let m = env.mount(&[]);
    assert!(
        fs::read_to_string(&b).unwrap().contains("NaN"),
        "kept as written"
    );
    drop(m);
}

/// The newest 256 refusals are kept, each with its reason; older ones go, both files.
#[test]
fn refusals_kept_are_bounded_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let fs_ = recordfs::fs::RecordFs::start(&store, recordfs::options::Options::default()).unwrap();
    let name = record(0x500);
    let (_, fh, t) = fs_
        .create(
            recordfs::types::ROOT,
            name.as_bytes(),
            0o644,
            0,
            0,
            libc::O_WRONLY,
        )
        .unwrap();
    fs_.wait(t).unwrap();
    for i in 0..300u32 {
        fs_.write(fh, 0, format!("{{\"bad\": {i},}}").as_bytes())
            .unwrap();
        assert_eq!(fs_.fsync(fh).unwrap_err().errno, libc::EINVAL);
    }
    fs_.release(fh);
    fs_.shutdown().unwrap();
    let names: Vec<String> = fs::read_dir(store.join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let count = |suffix: &str| names.iter().filter(|n| n.ends_with(suffix)).count();
    assert_eq!((count(".rejected"), count(".reason")), (256, 256));
    let listed = recordfs::store::list_rejected(
        &recordfs::disk::RealDisk,
        &recordfs::store::Layout::new(&store),
    )
    .unwrap();
    assert_eq!(listed.len(), 256);
    assert_eq!(listed.last().unwrap().len, "{\"bad\": 299,}".len() as u64);
}
