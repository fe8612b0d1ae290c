//! `recordfs import` and `recordfs export` (issue 13), into and out of stores that are not
//! mounted and stores that are (through their mount), in each format.
//!
//! Guards against: an export that does not give back the bytes imported, a bad input that
//! writes part of itself (or creates the store), an existing record replaced without
//! `--replace`, an import into a mounted store that bypasses its daemon, and errors that do
//! not say where the input is wrong.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{Env, BIN};

fn recordfs(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn uuid(i: u32) -> String {
    format!("{i:08x}-1111-4222-8333-444455556666")
}

/// An object of `n` records as `recordfs export` writes one.
fn object(n: u32) -> String {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "\"{}\": {{\"n\": {i}, \"s\": \"r\\u00e9cord {i}\"}}",
                uuid(i)
            )
        })
        .collect();
    format!("{{\n{}\n}}\n", lines.join(",\n"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn import_then_export_gives_back_the_same_bytes_mounted_or_not() {
    let env = Env::new();
    let input = env.dir.path().join("in.json");
    fs::write(&input, object(300)).unwrap();
    let out = recordfs(&["import", s(&env.store), s(&input)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("imported 300 records"),
        "{}",
        text(&out)
    );
    let exported = env.dir.path().join("out.json");
    let out = recordfs(&["export", s(&env.store), s(&exported)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&exported).unwrap(), fs::read(&input).unwrap());

    // Mounted: export reads through the mount, import writes through it (the daemon commits
    // each record, so a reader of the mount sees them at once).
    let m = env.mount(&[]);
    let out = recordfs(&["export", s(&env.store)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, fs::read(&input).unwrap());
    let lines = env.dir.path().join("more.jsonl");
    let more: String = (1000..1010)
        .map(|i| format!("{{\"key\": \"{}\", \"v\": [{i}]}}\n", uuid(i)))
        .collect();
    fs::write(&lines, &more).unwrap();
    let out = recordfs(&[
        "import",
        s(&env.store),
        s(&lines),
        "--id",
        "key",
        "--dir",
        "events/2026",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let first = env.path(&format!("events/2026/{}.json", uuid(1000)));
    assert_eq!(
        fs::read_to_string(first).unwrap(),
        format!("{{\"key\": \"{}\", \"v\": [1000]}}", uuid(1000))
    );
    let export_events = |format| {
        let args = [
            "export",
            s(&env.store),
            "--dir",
            "events/2026",
            "--format",
            format,
        ];
        let out = recordfs(&args);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(export_events("lines"), more);
    m.stop_cleanly();

    // And after the daemon stopped, from the store itself.
    let array = export_events("array");
    assert!(
        array.starts_with("[\n{\"key\": ") && array.ends_with("}\n]\n"),
        "{array}"
    );
    let again = env.dir.path().join("again.json");
    fs::write(&again, &array).unwrap();
    let other = env.dir.path().join("other-store");
    let out = recordfs(&["import", s(&other), s(&again), "--id", "key"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = recordfs(&["export", s(&other), "--format", "array"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), array);
}

#[test]
fn a_bad_input_imports_nothing_and_says_where() {
    let env = Env::new();
    let bad = env.dir.path().join("bad.jsonl");
    let good = format!("{{\"id\": \"{}\"}}\n", uuid(1));
    for (body, words) in [
        (format!("{good}{{\"id\": \"{}\", }}\n", uuid(2)), "line 2: "),
        (
            format!("{good}{{\"id\": \"not-a-uuid\"}}\n"),
            "line 2: the id \"not-a-uuid\" is not a UUID",
        ),
        (format!("{good}{good}"), "line 2: the id"),
        (format!("{good}[1]\n"), "line 2: not a JSON object"),
    ] {
        fs::write(&bad, &body).unwrap();
        let out = recordfs(&["import", s(&env.store), s(&bad)]);
        assert_eq!(out.status.code(), Some(1), "{body}: {}", text(&out));
        assert!(text(&out).contains(words), "{body}: {}", text(&out));
        assert!(
            text(&out).contains("nothing was imported"),
            "{}",
            text(&out)
        );
        assert!(!env.store.exists(), "a refused import created the store");
    }
    // A record that exists refuses the whole import, unless --replace.
    let input = env.dir.path().join("in.json");
    fs::write(&input, object(3)).unwrap();
    assert!(recordfs(&["import", s(&env.store), s(&input)])
        .status
        .success());
    let changed = object(5).replace("\"n\": 1,", "\"n\": 100,");
    fs::write(&input, &changed).unwrap();
    let out = recordfs(&["import", s(&env.store), s(&input)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("exists (--replace replaces)"),
        "{}",
        text(&out)
    );
    let out = recordfs(&["export", s(&env.store)]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), object(3));
    let out = recordfs(&["import", s(&env.store), s(&input), "--replace"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = recordfs(&["export", s(&env.store)]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), changed);
}

/// A directory tree in (records and plain files, nested), the tree out again (`--format
/// dir`), equal file for file, from the store and from its mount; a tree holding a symlink or
/// a record that is not JSON is refused by path, with nothing imported.
#[test]
fn a_directory_tree_goes_in_and_comes_out_the_same() {
    let env = Env::new();
    let tree = env.dir.path().join("tree");
    fs::create_dir_all(tree.join("players/eu")).unwrap();
    fs::write(
        tree.join(format!("players/eu/{}.json", uuid(1))),
        "{\"eu\": 1}",
    )
    .unwrap();
    fs::write(tree.join(format!("players/{}.json", uuid(2))), "[2]\n").unwrap();
    fs::write(tree.join("README.txt"), "not a record\n").unwrap();
    let out = recordfs(&["import", s(&env.store), s(&tree)]);
    assert!(out.status.success(), "{}", text(&out));
    let diff = |a: &Path, b: &Path| {
        let out = Command::new("diff")
            .arg("-r")
            .arg(a)
            .arg(b)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    let back = env.dir.path().join("back");
    let out = recordfs(&["export", s(&env.store), s(&back), "--format", "dir"]);
    assert!(out.status.success(), "{}", text(&out));
    diff(&tree, &back);
    let m = env.mount(&[]);
    diff(&tree, &env.mnt);
    let again = env.dir.path().join("again");
    let out = recordfs(&[
        "export",
        s(&env.store),
        s(&again),
        "--format",
        "dir",
        "--dir",
        "players",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    diff(&tree.join("players"), &again);
    m.stop_cleanly();

    let other = env.dir.path().join("other");
    std::os::unix::fs::symlink("README.txt", tree.join("link")).unwrap();
    let out = recordfs(&["import", s(&other), s(&tree)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("link: not a regular file"),
        "{}",
        text(&out)
    );
    fs::remove_file(tree.join("link")).unwrap();
    fs::write(tree.join(format!("players/{}.json", uuid(3))), "{oops}").unwrap();
    let out = recordfs(&["import", s(&other), s(&tree)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let name = format!("players/{}.json: ", uuid(3));
    assert!(text(&out).contains(&name), "{}", text(&out));
    assert!(!other.exists(), "a refused import created the store");
}

/// On a terminal an import shows a progress bar on stderr; through a pipe it does not.
#[test]
fn an_import_shows_progress_on_a_terminal_only() {
    let env = Env::new();
    let input = env.dir.path().join("in.json");
    fs::write(&input, object(50)).unwrap();
    let piped = recordfs(&["import", s(&env.store), s(&input)]);
    assert!(!text(&piped).contains("importing:"), "{}", text(&piped));
    let other = env.dir.path().join("other");
    let line = format!("{BIN} import {} {}", s(&other), s(&input));
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("importing: 50/50"), "{said}");
}
