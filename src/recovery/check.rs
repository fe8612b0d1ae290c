//! `recordfs check`: the same reading and reconciling as a mount, reporting instead of
//! repairing.

use super::reconcile::{reconcile, Repair, Scope};
use super::scan::{scan_log, Finding};
use crate::disk::Disk;
use crate::error::Result;
use crate::store::{self, Layout};

/// The result of `recordfs check`.
pub struct CheckReport {
    pub problems: Vec<Finding>,
    pub entries: u64,
    pub segments: usize,
    pub files: usize,
}

/// Verifies a store offline without changing it: every log line's checksum and every backing
/// file's bytes against the log.
pub fn check(disk: &dyn Disk, layout: &Layout) -> Result<CheckReport> {
    let opened = store::open_store(disk, layout, store::Purpose::Check)?;
    let mut problems: Vec<Finding> = opened
        .exposures
        .iter()
        .map(|e| Finding {
            what: format!("{e} (the log holds every file's bytes, whatever its mode)"),
        })
        .collect();
    let scan = match scan_log(disk, layout) {
        Ok(s) => s,
        Err(e) => {
            problems.push(Finding { what: e.reason });
            return Ok(CheckReport {
                problems,
                entries: 0,
                segments: 0,
                files: 0,
            });
        }
    };
    if let Some((path, offset, reason)) = &scan.torn {
        problems.push(Finding {
            what: format!(
                "log {}: torn last entry at offset {offset} ({reason}); the next mount cuts it",
                path.display()
            ),
        });
    }
    if scan.last.is_none() {
        problems.push(Finding {
            what: "the store has no log".into(),
        });
    }
    let max_line = scan.last.as_ref().map(|(_, h, _)| h.max_line).unwrap_or(0);
    let reconciled = reconcile(
        disk,
        layout,
        &scan.ns,
        max_line,
        Repair::No,
        Scope::All,
        Some(&scan.tail),
    )?;
    problems.extend(reconciled.findings);
    let leftovers = disk.list(&layout.tmp()).map(|d| d.len()).unwrap_or(0);
    if leftovers > 0 {
        problems.push(Finding {
            what: format!("{leftovers} temp files in tmp/ (the next mount removes them)"),
        });
    }
    Ok(CheckReport {
        problems,
        entries: scan.entries,
        segments: scan.segments,
        files: scan.ns.file_count(),
    })
}
