//! Tools that work on trees, run for real against a mount (issue 11): git, tar, rsync, cp -a,
//! Python's os.makedirs and shutil.copytree, find and du, and an app that keeps one folder
//! per collection.

mod common;
use common::*;

/// A small tree outside the mount: records in folders, a plain file with a second name (a hard
/// link), a symlink, an empty directory, an extended attribute, with set modes and times.
fn source_tree(env: &Env) -> std::path::PathBuf {
    let src = env.dir.path().join("tree");
    let (code, out) = sh(&format!(
        "set -e; mkdir -p {s}/players/archive {s}/data/logs {s}/empty; \
         printf '{{\"a\":1}}\\n' > {s}/players/{r1}; printf '{{\"b\":2}}\\n' > {s}/players/archive/{r2}; \
         echo line > {s}/data/logs/today.log; ln -s ../players {s}/data/p; \
         ln {s}/data/logs/today.log {s}/data/today.log; setfattr -n user.k -v v {s}/players/{r1}; \
         chmod 750 {s}/data; chmod 600 {s}/players/{r1}; \
         find {s} -exec touch -h -d '2001-02-03 04:05:06.5' {{}} +",
        s = src.display(),
        r1 = record(1),
        r2 = record(2)
    ));
    assert_eq!(code, 0, "{out}");
    src
}

fn run(cmd: &str) -> String {
    let (code, out) = sh(cmd);
    assert_eq!(code, 0, "{cmd}\n{out}");
    out
}

#[test]
fn git_init_add_commit_log_gc_and_fsck() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let git = "git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main";
    let out = run(&format!(
        "set -e; cd {m}; {git} init -q repo; cd repo; mkdir -p players; \
         printf '{{\"a\":1}}\\n' > players/{r}; echo hi > README; \
         {git} add -A; {git} commit -q -m first; \
         printf '{{\"a\":2}}\\n' > players/{r}; {git} commit -q -am second; \
         {git} log --oneline | wc -l; {git} gc -q; {git} fsck --strict; \
         {git} checkout -q HEAD~1 -- players/{r}; cat players/{r}; {git} status --short",
        m = env.mnt.display(),
        r = record(1)
    ));
    assert!(out.starts_with("2\n"), "{out}");
    assert!(out.contains("{\"a\":1}"), "{out}");
}

#[test]
fn tar_cp_a_and_rsync_ahx_carry_a_tree_in_and_out() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let src = source_tree(&env);
    let (s, m, d) = (src.display(), env.mnt.display(), env.dir.path().display());
    // tar in, tar --diff against the source; cp -a out and diff -r.
    run(&format!(
        "set -e; tar -C {s} -cf {d}/in.tar .; mkdir {m}/t; tar -C {m}/t -xf {d}/in.tar; \
         tar -C {m}/t --diff -f {d}/in.tar; cp -a {m}/t {d}/back; diff -r {s} {d}/back; \
         cp -a {s} {m}/c; tar -C {m}/c --diff -f {d}/in.tar"
    ));
    // rsync -aHX in and out: the second run of each copies nothing.
    let rsync =
        |from: String, to: String| run(&format!("rsync -aHX --itemize-changes {from}/ {to}/"));
    assert!(!rsync(format!("{s}"), format!("{m}/r")).is_empty());
    assert_eq!(rsync(format!("{s}"), format!("{m}/r")), "", "in, again");
    assert!(!rsync(format!("{m}/r"), format!("{d}/out")).is_empty());
    assert_eq!(
        rsync(format!("{m}/r"), format!("{d}/out")),
        "",
        "out, again"
    );
    run(&format!("diff -r {s} {d}/out"));
    // The hard link and the attribute made it in and out of each copy.
    for top in [
        format!("{m}/t"),
        format!("{m}/c"),
        format!("{m}/r"),
        format!("{d}/out"),
    ] {
        let inodes = run(&format!(
            "stat -c %i {top}/data/logs/today.log {top}/data/today.log | uniq | wc -l"
        ));
        assert_eq!(inodes, "1\n", "{top}: one file under two names");
    }
    for top in [format!("{m}/c"), format!("{m}/r"), format!("{d}/out")] {
        let got = run(&format!(
            "getfattr -d --absolute-names {top}/players/{}",
            record(1)
        ));
        assert!(got.contains("user.k=\"v\""), "{top}: {got}");
    }
    // find and du see the tree.
    let found = run(&format!("cd {m}/r && find . -type f | sort"));
    assert_eq!(
        found,
        format!(
            "./data/logs/today.log\n./data/today.log\n./players/{}\n./players/archive/{}\n",
            record(1),
            record(2)
        )
    );
    run(&format!("du -s {m}/r"));
}

/// An app that keeps one folder per collection, written with Python as apps are: makedirs,
/// json.dump to a temp file and os.replace, listdir; shutil.copytree of the whole store.
#[test]
fn an_app_with_a_folder_per_collection() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let script = r#"
import json, os, shutil, uuid, tempfile
root = os.environ["MNT"]
for coll in ["players", "tokens", "game_state", "data/logs"]:
    os.makedirs(os.path.join(root, coll), exist_ok=True)
ids = []
for i in range(20):
    rid = str(uuid.UUID(int=i + 1, version=4))
    ids.append(rid)
    path = os.path.join(root, "players", rid + ".json")
    fd, tmp = tempfile.mkstemp(dir=os.path.join(root, "players"))
    with os.fdopen(fd, "w") as f:
        json.dump({"id": rid, "score": i}, f)
    os.replace(tmp, path)
try:
    with open(os.path.join(root, "tokens", ids[0] + ".json"), "w") as f:
        f.write("{broken")
    raise SystemExit("an invalid record was accepted")
except OSError:
    pass
assert sorted(os.listdir(os.path.join(root, "players"))) == sorted(i + ".json" for i in ids)
assert os.listdir(os.path.join(root, "tokens")) == []
shutil.copytree(root, os.environ["OUT"])
total = sum(json.load(open(os.path.join(os.environ["OUT"], "players", i + ".json")))["score"] for i in ids)
assert total == sum(range(20)), total
"#;
    let out = env.dir.path().join("copy");
    python(
        script,
        &[
            ("MNT", env.mnt.to_str().unwrap()),
            ("OUT", out.to_str().unwrap()),
        ],
    );
}
