//! Commands on a store in etcd (issue 14; the keys are `etcd::layout`'s): `check`, `stats`,
//! and `recordfs migrate FROM TO`, a whole store copied from a directory into an etcd
//! cluster, or from etcd into a new store directory.
//!
//! What is copied: every directory, file and symlink with its names (hard links stay one
//! file), bytes, mode, owner, times (but ctime, which no copy can set) and extended
//! attributes. The source is read at one moment: a store directory opened here (not mounted),
//! or the etcd keys read at one revision. Into etcd, the keys go in transactions as etcd's
//! limits allow and the `meta` key last: a migration cut short leaves a prefix without `meta`,
//! which nothing takes for a store. Into a directory, every save is checked as any save is (a
//! record must hold JSON) and the store is synced once at the end.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{err, Result};
use crate::etcd::layout::{self, Name, Node, Tree};
use crate::etcd::{Etcd, EtcdUrl};
use crate::fs::RecordFs;
use crate::fuse::describe;
use crate::options::{Options, SyncMode};
use crate::types::{Fid, Kind, ROOT};

use super::logging::init_quiet_logging;

use crate::etcd::TOOL_TIMEOUT as ETCD_TIMEOUT;

pub(super) fn migrate_command(from: &str, to: &str) -> i32 {
    init_quiet_logging();
    let done = match (EtcdUrl::is_etcd(from), EtcdUrl::is_etcd(to)) {
        (false, true) => EtcdUrl::parse(to).and_then(|url| into_etcd(Path::new(from), &url)),
        (true, false) => EtcdUrl::parse(from).and_then(|url| from_etcd(&url, Path::new(to))),
        _ => Err(err!(
            EINVAL,
            "one of FROM and TO must be a store directory and the other an etcd:// address"
        )),
    };
    match done {
        Ok(said) => {
            println!("{said}");
            0
        }
        Err(e) => {
            eprintln!("recordfs migrate: {}", describe(&e));
            2
        }
    }
}

/// The store's keys, read at one revision, and what is wrong with them.
fn read_store(url: &str) -> Result<(Etcd, usize, Option<Tree>, Vec<String>)> {
    let url = EtcdUrl::parse(url)?;
    let etcd = Etcd::connect(&url, ETCD_TIMEOUT)?;
    let kvs = etcd.get_all(b"")?;
    let (tree, problems) = layout::problems(&kvs);
    Ok((etcd, kvs.len(), tree, problems))
}

/// `recordfs check etcd://...`: 0 sound, 1 with a line per problem, 2 when it cannot read.
pub(super) fn check_command(url: &str) -> i32 {
    init_quiet_logging();
    match read_store(url) {
        Ok((etcd, keys, tree, problems)) => {
            let url = &etcd.url;
            for p in &problems {
                println!("PROBLEM: {p}");
            }
            let files = tree.as_ref().map_or(0, |t| {
                t.nodes.iter().filter(|n| n.kind == Kind::File).count()
            });
            println!(
                "{url}: {keys} keys, {files} files; {} problems",
                problems.len()
            );
            i32::from(!problems.is_empty())
        }
        Err(e) => {
            eprintln!("recordfs check: {}", describe(&e));
            2
        }
    }
}

/// `recordfs stats etcd://... [--json]`.
pub(super) fn stats_command(url: &str, json: bool) -> i32 {
    init_quiet_logging();
    let read = read_store(url).and_then(|(etcd, keys, tree, problems)| match tree {
        Some(t) => Ok((etcd, keys, t)),
        None => Err(err!(EIO, "{}", problems.join("; "))),
    });
    // How far back `log`, `history` and `show --at` reach: the revision after etcd's last
    // compaction (its first change the history still has).
    let reach = |etcd: &Etcd| -> Result<(i64, i64)> {
        let newest = etcd.newest_revision()?;
        Ok((newest, etcd.oldest_revision(newest)? + 1))
    };
    let read =
        read.and_then(|(etcd, keys, tree)| Ok((reach(&etcd)?, etcd.url.clone(), keys, tree)));
    let ((revision, history_from), url, keys, tree) = match read {
        Ok(r) => r,
        Err(e) => {
            eprintln!("recordfs stats: {}", describe(&e));
            return 2;
        }
    };
    let count = |k: Kind| tree.nodes.iter().filter(|n| n.kind == k).count();
    let records = tree
        .names
        .iter()
        .filter(|n| crate::record::is_record_name(&n.name))
        .count();
    let bytes: usize = tree.nodes.iter().map(|n| n.bytes.len()).sum();
    let s = serde_json::json!({
        "store": url.to_string(),
        "keys": keys,
        "files": count(Kind::File),
        "directories": count(Kind::Dir),
        "symlinks": count(Kind::Symlink),
        "names": tree.names.len(),
        "records": records,
        "bytes": bytes,
        "revision": revision,
        "history_from": history_from,
    });
    if json {
        println!("{s}");
    } else {
        println!(
            "{url}: {} files ({records} records), {} directories, {} symlinks, {} names, \
             {bytes} bytes, {keys} keys",
            s["files"], s["directories"], s["symlinks"], s["names"]
        );
        println!("at revision {revision}; history from revision {history_from}");
    }
    0
}

fn into_etcd(store: &Path, url: &EtcdUrl) -> Result<String> {
    let opts = Options {
        sync: SyncMode::Never,
        read_only: true,
        ..Options::default()
    };
    let fs = RecordFs::start(store, opts)?;
    let tree = tree_of(&fs);
    let _ = fs.shutdown();
    let tree = tree?;
    let etcd = Etcd::connect(url, ETCD_TIMEOUT)?;
    if !etcd.is_empty()? {
        return Err(err!(
            EEXIST,
            "{url} holds keys already: a store is migrated only into an empty prefix"
        ));
    }
    // The prefix is empty: a piece is named by its file and place.
    let kvs = layout::to_keys(&tree, |fid, n| format!("{fid:016x}.{n}"));
    etcd.put_all(&kvs)?;
    let max = tree.nodes.iter().map(|n| n.fid).max().unwrap_or(ROOT);
    etcd.put_all(&[layout::meta(max)])?;
    Ok(summary(&tree, &format!("{} into {url}", store.display())))
}

fn from_etcd(url: &EtcdUrl, store: &Path) -> Result<String> {
    if std::fs::read_dir(store).is_ok_and(|mut d| d.next().is_some()) {
        return Err(err!(
            EEXIST,
            "{}: not empty; a store is migrated only into a new directory",
            store.display()
        ));
    }
    let etcd = Etcd::connect(url, ETCD_TIMEOUT)?;
    let tree = layout::from_keys(&etcd.get_all(b"")?)?;
    let opts = Options {
        sync: SyncMode::Never,
        ..Options::default()
    };
    let fs = RecordFs::start(store, opts)?;
    let made = crate::etcd::mount::make_tree(&fs, &tree).map(|_| ());
    let closed = fs.shutdown();
    made.and(closed)?;
    Ok(summary(&tree, &format!("{url} into {}", store.display())))
}

fn summary(tree: &Tree, what: &str) -> String {
    let files = tree.nodes.iter().filter(|n| n.kind == Kind::File).count();
    let bytes: usize = tree.nodes.iter().map(|n| n.bytes.len()).sum();
    format!(
        "migrated {what}: {files} files, {} directories and symlinks, {} names, {bytes} bytes",
        tree.nodes.len() - files,
        tree.names.len()
    )
}

/// Everything under the root of the store `fs` serves.
fn tree_of(fs: &RecordFs) -> Result<Tree> {
    let mut tree = Tree::default();
    tree.nodes.push(node_of(fs, ROOT, Kind::Dir)?);
    let mut seen = HashSet::from([ROOT]);
    let mut dirs = vec![ROOT];
    while let Some(dir) = dirs.pop() {
        let dh = fs.opendir(dir)?;
        let entries = fs.readdir(dh, 2);
        fs.releasedir(dh);
        for e in entries? {
            if seen.insert(e.ino) {
                tree.nodes.push(node_of(fs, e.ino, e.kind)?);
                if e.kind == Kind::Dir {
                    dirs.push(e.ino);
                }
            }
            tree.names.push(Name {
                dir,
                name: e.name,
                fid: e.ino,
            });
        }
    }
    Ok(tree)
}

fn node_of(fs: &RecordFs, fid: Fid, kind: Kind) -> Result<Node> {
    let attrs = fs.getattr(fid, None)?.attrs;
    let bytes = match kind {
        Kind::File => fs.read_whole(fid)?,
        Kind::Symlink => fs.readlink(fid)?,
        Kind::Dir => Vec::new(),
    };
    let mut xattrs = Vec::new();
    for name in fs.listxattr(fid)?.split(|b| *b == 0) {
        if !name.is_empty() {
            xattrs.push((name.to_vec(), fs.getxattr(fid, name)?));
        }
    }
    Ok(Node {
        fid,
        kind,
        attrs,
        bytes,
        xattrs,
    })
}
