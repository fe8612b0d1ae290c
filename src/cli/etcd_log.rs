//! `recordfs log` of a store in etcd (issue 14): the changes etcd keeps of the prefix, one JSON
//! line each, in revision order (`etcd::history` says how the lines are made and how the
//! end of the history is found).

use std::collections::HashSet;
use std::io::Write;

use serde_json::Value;

use crate::error::{err, Error, Result};
use crate::etcd::history::Replay;
use crate::etcd::{Etcd, EtcdUrl, TOOL_TIMEOUT};
use crate::fuse::describe;

use super::logging::init_quiet_logging;

/// `recordfs log etcd://... [--name PATH] [--since REV] [--until REV]`: exit 0 printed, 1
/// when --name matches no line, 2 an error.
pub(super) fn log_command(
    url: &str,
    name: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
) -> i32 {
    init_quiet_logging();
    let name = name.map(|n| n.trim_matches('/').to_string());
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let done = print_log(url, name.as_deref(), since, until, &mut out).and_then(|n| {
        out.flush()
            .map(|_| n)
            .map_err(|e| Error::io("writing the output", &e))
    });
    match (done, name) {
        (Ok(0), Some(name)) => {
            eprintln!("recordfs log: no change etcd keeps of {url} names {name:?} (nor any file that held that name)");
            1
        }
        (Ok(_), _) => 0,
        (Err(e), _) => {
            eprintln!("recordfs log: {}", describe(&e));
            2
        }
    }
}

fn print_log(
    url: &str,
    name: Option<&str>,
    since: Option<u64>,
    until: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64> {
    let etcd = Etcd::connect(&EtcdUrl::parse(url)?, TOOL_TIMEOUT)?;
    if etcd.get(b"meta")?.is_none() {
        return Err(err!(ENOENT, "{url}: not a store (no meta key)"));
    }
    let newest = etcd.newest_revision()?;
    let oldest = etcd.oldest_revision(newest)?;
    // Revision 1 is an empty cluster's, so the first change of any store is at 2 or later.
    let to_rev = |r: u64| i64::try_from(r).unwrap_or(i64::MAX);
    let from = since.map_or(oldest + 1, |s| to_rev(s).max(2));
    let upto = until.map_or(newest, |u| to_rev(u).min(newest));
    if from - 1 < oldest {
        return Err(err!(
            ENODATA,
            "etcd keeps the changes from revision {} on (it compacted the ones before)",
            oldest + 1
        ));
    }
    if from > upto {
        return Ok(0);
    }
    // The files that held the name at some revision, so that a file's changes under other
    // names (a temporary file renamed over it) are printed too: one walk to find them.
    let fids = match name {
        Some(name) => {
            let mut fids = HashSet::new();
            walk(&etcd, from, upto, |line| {
                if names(line, name) {
                    fids.insert(line["fid"].as_str().unwrap_or_default().to_string());
                }
                Ok(())
            })?;
            Some(fids)
        }
        None => None,
    };
    let mut printed = 0;
    walk(&etcd, from, upto, |line| {
        let keep = match (&fids, name) {
            (Some(fids), Some(name)) => {
                names(line, name) || fids.contains(line["fid"].as_str().unwrap_or_default())
            }
            _ => true,
        };
        if keep {
            serde_json::to_writer(&mut *out, line)
                .map_err(std::io::Error::from)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| Error::io("writing the output", &e))?;
            printed += 1;
        }
        Ok(())
    })?;
    Ok(printed)
}

/// Whether `line` is about `path` (either side of a rename).
fn names(line: &Value, path: &str) -> bool {
    line["path"].as_str() == Some(path) || line["to"].as_str() == Some(path)
}

/// Calls `each` with the lines of every change from revision `from` to `upto`.
fn walk(
    etcd: &Etcd,
    from: i64,
    upto: i64,
    mut each: impl FnMut(&Value) -> Result<()>,
) -> Result<()> {
    let (_, keys) = etcd.get_all_as_of(b"", from - 1)?;
    let mut replay = Replay::from_keys(keys.iter().map(|k| (&k.key[..], &k.value[..])));
    etcd.replay(from, upto, |rev, changes| {
        replay.take(rev, &changes).iter().try_for_each(&mut each)
    })
}
