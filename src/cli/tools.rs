//! The commands that work on a store without mounting it: check, log, compact, rejected,
//! stats. Each prints for people (or JSON for scripts) and returns the exit code.

use std::io::Write;
use std::path::Path;

use crate::error::Error;
use crate::etcd::EtcdUrl;
use crate::fuse::describe;
use crate::options::Options;
use crate::recovery;
use crate::store::Layout;

use super::logging::init_logging;

/// `recordfs check STORE`: exits 0 when sound, 1 with a line per problem, 2 when it cannot.
pub(super) fn check_command(store: &Path) -> i32 {
    if let Some(url) = store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        return super::etcd_store::check_command(url);
    }
    init_logging();
    crate::progress::enable_on_terminal();
    check(store)
}

/// `recordfs log STORE [--name] [--since] [--until]`: exits 1 when --name matches no entry.
pub(super) fn log_command(
    store: &Path,
    name: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
) -> i32 {
    if let Some(url) = store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        return super::etcd_log::log_command(url, name, since, until);
    }
    let name_asked = name.clone();
    let filter = crate::inspect::LogFilter {
        name: name.map(String::into_bytes),
        since,
        until,
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let done = crate::inspect::print_log(
        &crate::disk::RealDisk,
        &Layout::new(store),
        &filter,
        &mut out,
    )
    .and_then(|n| {
        out.flush()
            .map(|_| n)
            .map_err(|e| Error::io("writing the output", &e))
    });
    match (done, &name_asked) {
        (Ok(0), Some(name)) => {
            eprintln!(
                "recordfs log: no entry in {} names {name:?} (nor any file that held that name)",
                store.display()
            );
            1
        }
        (Ok(_), _) => 0,
        (Err(e), _) => {
            eprintln!("recordfs log: {}", describe(&e));
            2
        }
    }
}

/// `recordfs compact STORE`: offline, or by asking a mounted store's daemon.
pub(super) fn compact_command(store: &Path, keep_logs: usize, allow_open_store: bool) -> i32 {
    init_logging();
    crate::progress::enable_on_terminal();
    let layout = Layout::new(store);
    let opts = Options {
        allow_open_store,
        ..Options::default()
    };
    match crate::compact::compact(&crate::disk::RealDisk, &layout, &opts, keep_logs) {
        Ok(c) => {
            println!(
                "{}: compacted up to entry {}; {} segments retired to log/old/, {} old files deleted",
                store.display(),
                c.upto,
                c.retired,
                c.deleted
            );
            0
        }
        Err(e) if e.errno == libc::EBUSY => ask_daemon_to_compact(&layout, &e),
        Err(e) => {
            eprintln!("recordfs compact: {}", describe(&e));
            2
        }
    }
}

/// `recordfs rejected STORE [--json]`.
pub(super) fn rejected_command(store: &Path, json: bool) -> i32 {
    match crate::store::list_rejected(&crate::disk::RealDisk, &Layout::new(store)) {
        Ok(list) => {
            for r in &list {
                if json {
                    println!("{}", serde_json::to_string(r).expect("serialises"));
                } else {
                    let at = match (r.line, r.column) {
                        (Some(l), Some(c)) => format!("line {l} column {c}: "),
                        (Some(l), None) => format!("line {l}: "),
                        _ => String::new(),
                    };
                    println!(
                        "{}  {}  {at}{}  ({} bytes in {})",
                        r.time,
                        r.name,
                        r.error,
                        r.len,
                        r.kept.as_deref().unwrap_or("?")
                    );
                }
            }
            if list.is_empty() && !json {
                eprintln!("{}: no refused saves are kept", store.display());
            }
            0
        }
        Err(e) => {
            eprintln!("recordfs rejected: {}", describe(&e));
            2
        }
    }
}

/// `recordfs stats STORE [--json]`.
pub(super) fn stats_command(store: &Path, json: bool) -> i32 {
    if let Some(url) = store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        return super::etcd_store::stats_command(url, json);
    }
    match crate::inspect::stats(&crate::disk::RealDisk, &Layout::new(store)) {
        Ok(s) if json => {
            println!("{}", serde_json::to_string(&s).expect("stats serialise"));
            0
        }
        Ok(s) => {
            print!("{}", s.text(store));
            0
        }
        Err(e) => {
            eprintln!("recordfs stats: {}", describe(&e));
            2
        }
    }
}

/// `recordfs compact` on a mounted store: the daemon holding its lock is sent SIGUSR1.
fn ask_daemon_to_compact(layout: &Layout, busy: &Error) -> i32 {
    let holder = std::fs::read_to_string(layout.lock()).unwrap_or_default();
    let pid = holder
        .strip_prefix("recordfs pid ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0);
    let signal = |pid| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
    };
    match pid {
        Some(pid) if signal(pid).is_ok() => {
            println!(
                "{} is mounted; asked its daemon (pid {pid}) to compact the log now",
                layout.store.display()
            );
            0
        }
        _ => {
            eprintln!("recordfs compact: {}", describe(busy));
            2
        }
    }
}

fn check(store: &Path) -> i32 {
    let layout = Layout::new(store);
    match recovery::check(&crate::disk::RealDisk, &layout) {
        Ok(report) => {
            for p in &report.problems {
                println!("PROBLEM: {p}");
            }
            println!(
                "{}: {} log segments, {} entries, {} files; {} problems",
                store.display(),
                report.segments,
                report.entries,
                report.files,
                report.problems.len()
            );
            i32::from(!report.problems.is_empty())
        }
        Err(e) => {
            eprintln!("recordfs check: {}", describe(&e));
            2
        }
    }
}
