//! A compaction held at its snapshot: the simulated disk slow at that moment.

use std::sync::Arc;
use std::time::Duration;

use recordfs::disk::sim::{FaultOn, Gate, SimDisk};
use recordfs::fs::RecordFs;

/// Starts a compaction of `fs` (on `disk`) and holds it at its snapshot until the gate
/// returned is opened. Err, with the gate opened, if no snapshot was written within `bound`.
pub fn hold_compaction(
    disk: &SimDisk,
    fs: &RecordFs,
    bound: Duration,
) -> Result<Arc<Gate>, String> {
    // Nothing waits to be applied: the next file written whole is the snapshot.
    fs.pipeline().quiesce();
    let snapshot = disk.stall_next(FaultOn::Create, 0);
    fs.pipeline().request_compaction();
    if !snapshot.wait_entered(bound) {
        snapshot.open();
        return Err(format!(
            "the held compaction wrote no snapshot within {bound:?}"
        ));
    }
    Ok(snapshot)
}
