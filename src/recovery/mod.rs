//! Mounting after any crash, and checking a store offline. Both read the log the same way
//! (`scan_log`) and hold the backing tree against it the same way (`reconcile`); recovery
//! repairs what it finds, `check` only reports. FORMAT.md, "Recovery", is the procedure.

mod check;
mod reconcile;
mod salvage;
mod scan;
mod snapshot_salvage;

pub use check::{check, CheckReport};
pub use scan::{read_manifest, replay, Finding, LogScan};

use std::collections::HashSet;

use ::log::{info, warn};

use crate::disk::Disk;
use crate::error::{err, Result};
use crate::limits::max_line_for;
use crate::log::{encode_entry, Entry, LogWriter, Op};
use crate::namespace::Namespace;
use crate::options::Options;
use crate::store::{self, Layout, StoreLock};
use crate::types::{Fid, Time, ROOT};
use reconcile::{reconcile, sync_restored, Repair, Scope};
use salvage::salvage;
use scan::{cut, keep_cut_bytes, root_attrs, scan_log};

/// A store brought to its last committed state, ready to serve.
pub struct Recovered {
    pub lock: StoreLock,
    pub ns: Namespace,
    pub log: LogWriter,
    pub damaged: HashSet<Fid>,
    pub findings: Vec<Finding>,
    /// What opening changed in the store, for the user to hear once (an upgrade).
    pub notices: Vec<String>,
    /// The log ends at a checkpoint or a snapshot: every backing file is durable. If not (the
    /// last process died), files it wrote may sit only in the page cache, even those recovery
    /// found right, and the next checkpoint must sync them all.
    pub backing_durable: bool,
    /// The snapshots replay started from, whole one first (none if the store was never
    /// compacted): where the next compaction's layers start (`log::plan_layers`).
    pub chain: Vec<crate::log::Layer>,
}

/// Opens (or creates) a store and recovers it. See FORMAT.md, "Recovery".
pub fn recover(disk: &dyn Disk, layout: &Layout, opts: &Options) -> Result<Recovered> {
    let opened = store::open_store(
        disk,
        layout,
        store::Purpose::Serve {
            writable: !opts.read_only,
            allow_open: opts.allow_open_store,
        },
    )?;
    let lock = opened.lock;
    for e in &opened.exposures {
        warn!("--allow-open-store: {e}");
    }
    for n in &opened.notices {
        warn!("{n}");
    }
    let mut findings = Vec::new();
    if !opts.read_only {
        let n = store::clear_tmp(disk, layout)?;
        if n > 0 {
            info!("removed {n} temp files left by an interrupted write");
        }
    }
    if opts.salvage && !opts.read_only {
        findings.extend(salvage(disk, layout, opts)?);
    }
    let scan = scan_log(disk, layout)?;
    let max_line = max_line_for(opts.max_file_size);
    let mut ns = scan.ns;
    let log = match scan.last {
        None if opts.read_only => {
            return Err(err!(
                EROFS,
                "{} has no log; mount it writable once",
                layout.store.display()
            ))
        }
        None => new_log(disk, layout, &mut ns, max_line)?,
        Some((path, header, good_end)) => {
            if let Some((torn_path, offset, reason)) = &scan.torn {
                let what = format!(
                    "log {}: torn last entry at offset {offset} ({reason}); cut off",
                    torn_path.display()
                );
                warn!("{what}");
                findings.push(Finding { what });
                if !opts.read_only {
                    keep_cut_bytes(disk, torn_path, *offset)?;
                    cut(disk, torn_path, *offset)?;
                }
            }
            if header.max_line == 0 {
                // Even the header was torn: the segment never held an entry.
                store::remove(disk, &path)?;
                new_log(disk, layout, &mut ns, max_line)?
            } else {
                LogWriter::open(disk, &path, &header, good_end)?
            }
        }
    };
    // What the entries after the last checkpoint touched is held against the log: the
    // backing file at each name they give, take or write, its kind, length and attributes,
    // its bytes read and checked against their CRC32C; a directory moved or made there with
    // all in it; and names there the log does not hold are set aside. A process that died
    // may have left just these half done; the checkpoint vouches for the rest of the tree,
    // whose bytes are checked at their first read (bit rot keeps size and mtime, and a
    // corrupt file must never be served as if it were fine). A mount after a clean stop
    // looks at nothing. A log cut short (a torn entry may be damage that hid durable
    // entries) or salvaged, and `--verify`, have the whole tree looked at and every byte
    // read now.
    let repair = if opts.read_only {
        Repair::No
    } else {
        Repair::FromTheLog
    };
    let scope = match opts.salvage || opts.verify || scan.torn.is_some() {
        true => Scope::All,
        false => Scope::Tail(&scan.tail),
    };
    let reconciled = reconcile(
        disk,
        layout,
        &ns,
        log.max_line().max(max_line),
        repair,
        scope,
        Some(&scan.tail),
    )?;
    if opts.read_only && (!reconciled.findings.is_empty() || scan.torn.is_some()) {
        // Read-only, nothing can be repaired, and the backing files are not what the log
        // says: serving them would show a state that was never committed.
        return Err(err!(
            EROFS,
            "{} needs recovery ({}); mount it once without --read-only",
            layout.store.display(),
            reconciled
                .findings
                .first()
                .map(|f| f.what.clone())
                .unwrap_or_else(|| "the log ends in a torn entry".into())
        ));
    }
    for f in &reconciled.findings {
        warn!("recovery: {f}");
    }
    if reconciled.changed || !reconciled.restored.is_empty() {
        sync_restored(disk, layout, &reconciled.restored)?;
    }
    findings.extend(reconciled.findings);
    info!(
        "recovered {}: {} entries in {} log segments, {} files",
        layout.store.display(),
        scan.entries,
        scan.segments,
        ns.file_count()
    );
    let backing_durable = scan
        .checkpoint
        .is_some_and(|(upto, _)| ns.last_seq() <= upto + 1);
    Ok(Recovered {
        lock,
        ns,
        log,
        damaged: reconciled.damaged,
        findings,
        notices: opened.notices,
        backing_durable,
        chain: scan.chain,
    })
}

/// A new store's first segment, holding the root directory's attributes as its first entry.
fn new_log(
    disk: &dyn Disk,
    layout: &Layout,
    ns: &mut Namespace,
    max_line: u64,
) -> Result<LogWriter> {
    let start = ns.last_seq() + 1;
    let mut log = LogWriter::create(disk, &layout.log_dir(), start, max_line)?;
    let entry = Entry {
        seq: start,
        ts: Time::now().millis(),
        op: Op::Attr {
            fid: ROOT,
            dir: ROOT,
            name: Vec::new(),
            attrs: root_attrs(disk, layout)?,
        },
    };
    log.append(&encode_entry(&entry))?;
    log.sync()?;
    ns.apply(&entry, None)?;
    Ok(log)
}
