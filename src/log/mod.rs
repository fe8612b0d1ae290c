//! The log: entries, their one-line JSON encoding with a CRC32C, the segment writer and
//! scanner, snapshots and the manifest, and retiring old segments. FORMAT.md is the
//! authoritative description; these files implement it.

mod entry;
mod layers;
mod line;
mod merge;
mod retire;
mod scan;
mod segment;
mod snapshot;
#[cfg(test)]
mod tests;

pub use entry::{apply_patch, decode_entry, encode_entry, Data, Entry, Op, Range, Shown};
pub use layers::{load_snapshot, plan_layers, Layer};
pub use line::{crc32c, FORMAT_VERSION};
pub use merge::{write_merged_snapshot, SnapshotDelta, Written};
pub use retire::{commit_layered_snapshot, commit_snapshot, old_segments, Compacted};
pub use scan::{for_each_line, read_entry_at, scan_segment, BadLine, SegmentScan};
pub use segment::{
    decode_header, encode_header, list_segments, parse_segment_name, parse_snapshot_name,
    segment_name, Header, LogWriter,
};
pub use snapshot::{
    decode_layer_line, decode_manifest, decode_snapshot, encode_manifest, encode_snapshot,
    salvage_snapshot, snapshot_name, FileRecord, Manifest, SalvagedSnapshot, Snapshot,
    SnapshotHead, MANIFEST,
};
