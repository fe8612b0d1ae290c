//! `recordfs history` and `show` of a store in etcd (issue 14). etcd keeps every revision of a
//! key until its history is compacted, so a file's versions are its `i/` key's: each one's
//! mod revision leads to the one before (the key as it was at that revision less one). A
//! version is named by its revision; its bytes are the `d/` key or pieces as they were then.

use std::io::Write;

use crate::error::{err, Result};
use crate::etcd::layout::{self, Tree};
use crate::etcd::{Etcd, EtcdUrl, TOOL_TIMEOUT};
use crate::fuse::describe;
use crate::types::{Fid, Kind, Time};

use super::logging::init_quiet_logging;

/// One version of a file: the revision that made it, and what its `i/` value said.
struct Version {
    revision: i64,
    mtime: Time,
    size: u64,
    crc: String,
}

/// The store, its tree now, and the fid of the file at `path`.
fn file_at(url: &str, path: &str) -> Result<(Etcd, Fid)> {
    let etcd = Etcd::connect(&EtcdUrl::parse(url)?, TOOL_TIMEOUT)?;
    let tree = layout::from_keys(&etcd.get_all(b"")?)?;
    let fid = lookup(&tree, path).ok_or_else(|| err!(ENOENT, "{path}: no such file now"))?;
    Ok((etcd, fid))
}

fn lookup(tree: &Tree, path: &str) -> Option<Fid> {
    let (dir, name) = path
        .trim_matches('/')
        .rsplit_once('/')
        .unwrap_or(("", path));
    let dir = tree.dir_at(dir)?;
    let n = tree
        .names_in(dir)
        .into_iter()
        .find(|n| n.name == name.as_bytes())?;
    tree.node(n.fid)
        .filter(|node| node.kind == Kind::File)
        .map(|_| n.fid)
}

/// The file's versions, newest first, and whether older ones were compacted away.
fn versions(etcd: &Etcd, fid: Fid) -> Result<(Vec<Version>, bool)> {
    let key = format!("i/{fid:016x}").into_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let kv = match etcd.get_at(&key, at) {
            Ok(Some(kv)) => kv,
            Ok(None) => return Ok((out, false)),
            Err(e) if e.errno == libc::ENODATA => return Ok((out, true)),
            Err(e) => return Err(e),
        };
        let v: serde_json::Value = serde_json::from_slice(&kv.value)
            .map_err(|e| err!(EIO, "i/{fid:016x} at {}: {e}", kv.mod_revision))?;
        let mtime = Time {
            secs: v["mtime"][0].as_i64().unwrap_or(0),
            nsecs: v["mtime"][1].as_u64().unwrap_or(0) as u32,
        };
        out.push(Version {
            revision: kv.mod_revision,
            mtime,
            size: v["size"].as_u64().unwrap_or(0),
            crc: v["crc"].as_str().unwrap_or("").to_owned(),
        });
        at = kv.mod_revision - 1;
        if at <= 0 {
            return Ok((out, false));
        }
    }
}

/// `recordfs history etcd://... PATH [--json]`: exit 0 listed, 2 an error.
pub(super) fn history_command(url: &str, path: &str, json: bool) -> i32 {
    init_quiet_logging();
    let found = file_at(url, path).and_then(|(etcd, fid)| versions(&etcd, fid));
    let (versions, compacted) = match found {
        Ok(v) => v,
        Err(e) => {
            eprintln!("recordfs history: {}", describe(&e));
            return 2;
        }
    };
    let mut out = std::io::stdout().lock();
    for v in versions.iter().rev() {
        let line = if json {
            serde_json::json!({
                "revision": v.revision,
                "mtime": v.mtime.iso8601(),
                "size": v.size,
                "crc": v.crc,
            })
            .to_string()
        } else {
            format!(
                "{:>10}  {}  {:>10}  {}",
                v.revision,
                v.mtime.iso8601(),
                v.size,
                v.crc
            )
        };
        let _ = writeln!(out, "{line}");
    }
    if compacted && !json {
        let _ = writeln!(out, "(older versions were compacted away by etcd)");
    }
    0
}

/// The file's bytes at `revision` (0: now), checked against its size and checksum then.
fn bytes_at(etcd: &Etcd, fid: Fid, revision: i64) -> Result<Vec<u8>> {
    let key = format!("i/{fid:016x}").into_bytes();
    let i = etcd
        .get_at(&key, revision)?
        .ok_or_else(|| err!(ENOENT, "the file did not exist at revision {revision}"))?;
    let v: serde_json::Value = serde_json::from_slice(&i.value).unwrap_or_default();
    let parts: Vec<Vec<u8>> = match v["pieces"].as_array() {
        Some(ids) => ids
            .iter()
            .map(|id| format!("p/{}", id.as_str().unwrap_or_default()).into_bytes())
            .collect(),
        None => vec![format!("d/{fid:016x}").into_bytes()],
    };
    // The bytes as they were when that version was written.
    let mut found = Vec::new();
    for k in parts {
        if let Some(kv) = etcd.get_at(&k, i.mod_revision)? {
            found.push((k, kv.value));
        }
    }
    let find = |k: &[u8]| found.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    Ok(layout::node(fid, &key, &i.value, &find)?.bytes)
}

/// `recordfs show etcd://... PATH [--at REVISION]`: exit 0 shown, 1 no such version, 2 an
/// error.
pub(super) fn show_command(url: &str, path: &str, at: Option<&str>) -> i32 {
    init_quiet_logging();
    let revision = match at.map(str::parse::<i64>) {
        None => 0,
        Some(Ok(r)) if r > 0 => r,
        Some(_) => {
            eprintln!("recordfs show: --at takes an etcd revision (recordfs history lists them)");
            return 2;
        }
    };
    let bytes = file_at(url, path).and_then(|(etcd, fid)| bytes_at(&etcd, fid, revision));
    match bytes {
        Ok(b) => match std::io::stdout().lock().write_all(&b) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("recordfs show: writing: {e}");
                2
            }
        },
        Err(e) => {
            eprintln!("recordfs show: {}", describe(&e));
            if matches!(e.errno, libc::ENOENT | libc::ENODATA) {
                1
            } else {
                2
            }
        }
    }
}

/// `recordfs restore etcd://... PATH --at REVISION`: the file's bytes at that revision saved
/// again as a new version (an import with replace, in one transaction that holds only if the
/// file did not change meanwhile). The file must be at PATH now.
pub(super) fn restore_command(url: &str, path: &str, at: &str) -> i32 {
    init_quiet_logging();
    let Some(revision) = at.parse::<i64>().ok().filter(|r| *r > 0) else {
        eprintln!("recordfs restore: --at takes an etcd revision (recordfs history lists them)");
        return 2;
    };
    let bytes = match file_at(url, path).and_then(|(etcd, fid)| bytes_at(&etcd, fid, revision)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("recordfs restore: {}", describe(&e));
            return if matches!(e.errno, libc::ENOENT | libc::ENODATA) {
                1
            } else {
                2
            };
        }
    };
    let record = crate::transfer::Record {
        name: path.trim_matches('/').to_owned(),
        bytes,
    };
    let size = record.bytes.len();
    match super::etcd_import::import(url, std::slice::from_ref(&record), "", true) {
        (_, Ok(())) => {
            println!("restored {path} to its version at revision {revision} ({size} bytes)");
            0
        }
        (_, Err(e)) => {
            eprintln!("recordfs restore: {path}: {}", describe(&e));
            2
        }
    }
}
