//! `recordfs history`, `show` and `restore`: a name's versions from the kept log
//! (`crate::history`), one printed, one brought back as an ordinary save.

use std::io::Write;
use std::path::Path;

use crate::error::{err, Result};
use crate::etcd::EtcdUrl;
use crate::fuse::describe;
use crate::history::{self, Held, Version};
use crate::store::Layout;
use crate::types::{parse_iso8601, Time};

use super::logging::init_quiet_logging;

fn versions(store: &Path, name: &str) -> Result<Vec<Version>> {
    history::versions(&crate::disk::RealDisk, &Layout::new(store), name.as_bytes())
}

/// `--at`: an entry's sequence number, or a time in ISO 8601 (UTC, as `history` prints it).
fn pick<'a>(versions: &'a [Version], at: Option<&str>) -> Result<Option<&'a Version>> {
    Ok(match at {
        None => versions.last(),
        Some(a) if a.bytes().all(|b| b.is_ascii_digit()) => history::at_seq(
            versions,
            a.parse().map_err(|_| err!(EINVAL, "--at {a}: too large"))?,
        ),
        Some(a) => match parse_iso8601(a) {
            Some(ms) => history::at_time(versions, ms),
            None => {
                return Err(err!(
                    EINVAL,
                    "--at {a}: a sequence number, or a time such as 2026-12-04T08:17:13.520Z"
                ))
            }
        },
    })
}

fn size_of(held: &Held) -> String {
    match held {
        Held::Bytes(b) => b.len().to_string(),
        Held::Unknown(Some(n)) => format!("{n} (bytes not in the kept log)"),
        Held::Unknown(None) => "? (bytes not in the kept log)".into(),
        Held::Gone => "-".into(),
    }
}

/// `recordfs history STORE NAME [--json]`: exit 0, 1 when the kept log names no version.
pub(super) fn history_command(store: &Path, name: &str, json: bool) -> i32 {
    if let Some(url) = store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        return super::etcd_history::history_command(url, name, json);
    }
    init_quiet_logging();
    let versions = match versions(store, name) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("recordfs history: {}", describe(&e));
            return 2;
        }
    };
    if versions.is_empty() {
        eprintln!("recordfs history: the kept log has no version of {name}");
        return 1;
    }
    let mut out = std::io::stdout().lock();
    let mut lines = String::new();
    if !json {
        lines.push_str(&format!(
            "{:>10}  {:<24}  {:<7}  size\n",
            "seq", "time", "op"
        ));
    }
    for v in &versions {
        let time = Time::from_millis(v.ms).iso8601();
        if json {
            let (size, bytes_kept) = match &v.held {
                Held::Bytes(b) => (Some(b.len() as u64), true),
                Held::Unknown(n) => (*n, false),
                Held::Gone => (None, false),
            };
            let line = serde_json::json!({
                "seq": v.seq, "time": time, "ms": v.ms, "op": v.op,
                "present": v.held != Held::Gone, "size": size, "bytes_kept": bytes_kept,
            });
            lines.push_str(&format!("{line}\n"));
        } else {
            let size = size_of(&v.held);
            lines.push_str(&format!("{:>10}  {time:<24}  {:<7}  {size}\n", v.seq, v.op));
        }
    }
    match out.write_all(lines.as_bytes()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("recordfs history: writing: {e}");
            2
        }
    }
}

/// The bytes of the version `at` picks, or why there are none (exit 1) or it failed (2).
fn bytes_at(
    store: &Path,
    name: &str,
    at: Option<&str>,
) -> std::result::Result<Vec<u8>, (i32, String)> {
    let versions = versions(store, name).map_err(|e| (2, describe(&e)))?;
    let when = || at.map_or("now".to_owned(), |a| format!("at {a}"));
    match pick(&versions, at).map_err(|e| (2, e.reason))? {
        None => Err((
            1,
            format!("the kept log has no version of {name} {}", when()),
        )),
        Some(v) => match &v.held {
            Held::Bytes(b) => Ok(b.to_vec()),
            Held::Gone => {
                let then = if at.is_some() {
                    "did not exist"
                } else {
                    "does not exist"
                };
                let since = format!("since entry {}: {}", v.seq, v.op);
                Err((1, format!("{name} {then} {} ({since})", when())))
            }
            Held::Unknown(_) => Err((
                1,
                format!(
                    "the kept log no longer holds the bytes of {name} {} (entry {}): they were \
                     saved before its oldest segment",
                    when(),
                    v.seq
                ),
            )),
        },
    }
}

/// `recordfs show STORE NAME [--at SEQ|TIME]`: the version's bytes on stdout.
pub(super) fn show_command(store: &Path, name: &str, at: Option<&str>) -> i32 {
    if let Some(url) = store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        return super::etcd_history::show_command(url, name, at);
    }
    init_quiet_logging();
    match bytes_at(store, name, at) {
        Ok(bytes) => match std::io::stdout().lock().write_all(&bytes) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("recordfs show: writing: {e}");
                2
            }
        },
        Err((code, why)) => {
            eprintln!("recordfs show: {why}");
            code
        }
    }
}

/// `recordfs restore STORE NAME --at SEQ|TIME`: the version saved again under NAME, through
/// the daemon when the store is mounted, as any save (a record is checked as one).
pub(super) fn restore_command(store: &Path, name: &str, at: &str) -> i32 {
    if let Some(url) = store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        return super::etcd_history::restore_command(url, name, at);
    }
    init_quiet_logging();
    let bytes = match bytes_at(store, name, Some(at)) {
        Ok(bytes) => bytes,
        Err((code, why)) => {
            eprintln!("recordfs restore: {why}");
            return code;
        }
    };
    match save(store, name, &bytes) {
        Ok(()) => {
            println!(
                "restored {name} to its version at {at} ({} bytes)",
                bytes.len()
            );
            0
        }
        Err(e) => {
            eprintln!("recordfs restore: {name}: {}", describe(&e));
            2
        }
    }
}

/// Saves `bytes` as `name` (its directories made if missing), through the store's mount if
/// it is mounted, else through a core opened here (synced before this returns).
fn save(store: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let place = super::transfer::open(store, "", false)?;
    let written = super::transfer::write_to(&place, name.trim_start_matches('/'), bytes);
    super::transfer::close(place).and(written)
}
