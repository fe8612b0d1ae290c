//! Writing a snapshot as the last one plus what changed since: a compaction then holds in
//! memory only the files changed since the last one, not a copy of every file, and encodes
//! only those (the other lines are copied as they are, each checked on the way).

use std::io::BufReader;
use std::path::Path;

use crate::disk::{Disk, DiskFile, Reader};
use crate::error::{err, Error, Result};
use crate::limits::LONGEST_LINE;
use crate::types::{Attrs, Fid, Seq, Xattrs};

use super::line::checksum;
use super::scan::{read_bounded_line, LineRead};
use super::snapshot::{decode_snapshot_head, encode_file_line, encode_snapshot_head, FileRecord};

/// The snapshot after entry `upto`, told as the changes since snapshot `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDelta {
    pub since: Seq,
    pub upto: Seq,
    pub next_fid: Fid,
    pub root: Attrs,
    pub root_xattrs: Xattrs,
    /// How many files the new snapshot lists.
    pub files: u64,
    /// Each file changed since `since`, in fid order: its record now, or none if it is gone.
    pub changed: Vec<(Fid, Option<FileRecord>)>,
}

/// Bytes gathered before each write to the new snapshot.
const WRITE_CHUNK: usize = 1 << 20;

/// Writes the snapshot `delta` describes to `out` (created new) from snapshot `base` and
/// syncs it; its size. `base` must be snapshot `delta.since`, each of its lines whole and
/// its fids increasing, and the result must hold `delta.files` files: anything else is an
/// error, and `out` is then left for the caller to remove.
pub fn write_merged_snapshot(
    disk: &dyn Disk,
    base: &Path,
    delta: &SnapshotDelta,
    out: &Path,
) -> Result<u64> {
    let bad = |reason: String| err!(EIO, "snapshot {}: {reason}", base.display());
    let file = disk
        .open_read(base)
        .map_err(|e| Error::io(format!("opening {}", base.display()), &e))?;
    let mut r = BufReader::with_capacity(WRITE_CHUNK, Reader::new(file, 0));
    let read_err = |e: std::io::Error| Error::io(format!("reading {}", base.display()), &e);
    let next_line = |r: &mut BufReader<Reader>| -> Result<Option<Vec<u8>>> {
        match read_bounded_line(r, LONGEST_LINE as usize).map_err(read_err)? {
            None => Ok(None),
            Some(LineRead::Line(line, true)) => Ok(Some(line)),
            Some(_) => Err(bad("a line is cut short or too long".into())),
        }
    };
    let head = next_line(&mut r)?.ok_or_else(|| bad("empty".into()))?;
    let (upto, _, _, count, _) = decode_snapshot_head(&head).map_err(|e| bad(e.reason))?;
    if upto != delta.since {
        return Err(bad(format!("holds entry {upto}, not {}", delta.since)));
    }

    let mut w = ChunkWriter::create(disk, out)?;
    w.push(&encode_snapshot_head(
        delta.upto,
        delta.next_fid,
        delta.files,
        &delta.root,
        &delta.root_xattrs,
    ))?;
    let mut changed = delta.changed.iter().peekable();
    let (mut read, mut written, mut last) = (0u64, 0u64, 0);
    while let Some(line) = next_line(&mut r)? {
        read += 1;
        if read > count {
            return Err(bad(format!("more than the {count} files it says")));
        }
        checksum(&line).map_err(|e| bad(format!("file line {read}: {}", e.reason)))?;
        let fid = line_fid(&line).ok_or_else(|| bad(format!("file line {read} has no fid")))?;
        if fid <= last {
            return Err(bad(format!("fid {fid} after fid {last}")));
        }
        last = fid;
        // Files changed since, up to this one, each in its place.
        let mut kept = true;
        while let Some((f, record)) = changed.next_if(|(f, _)| *f <= fid) {
            kept &= *f != fid;
            if let Some(record) = record {
                w.push(&encode_file_line(record))?;
                written += 1;
            }
        }
        if kept {
            w.push(&line)?;
            w.push(b"\n")?;
            written += 1;
        }
    }
    if read != count {
        return Err(bad(format!("{read} files where it says {count}")));
    }
    for record in changed.filter_map(|(_, r)| r.as_ref()) {
        w.push(&encode_file_line(record))?;
        written += 1;
    }
    if written != delta.files {
        return Err(err!(
            EIO,
            "the snapshot of entry {} would list {written} files where the namespace has {}",
            delta.upto,
            delta.files
        ));
    }
    w.finish()
}

/// The fid of a file line as `encode_file_line` writes it, which names it first.
fn line_fid(line: &[u8]) -> Option<Fid> {
    let rest = line.strip_prefix(br#"{"op":"FILE","fid":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Appends to a new file in chunks, then syncs it.
struct ChunkWriter<'a> {
    path: &'a Path,
    file: std::sync::Arc<dyn DiskFile>,
    buf: Vec<u8>,
    at: u64,
}

impl<'a> ChunkWriter<'a> {
    fn create(disk: &dyn Disk, path: &'a Path) -> Result<ChunkWriter<'a>> {
        match disk.remove(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("removing {}", path.display()), &e))
            }
            _ => {}
        }
        let file = disk
            .open_file(path, true)
            .map_err(|e| Error::io(format!("creating {}", path.display()), &e))?;
        Ok(ChunkWriter {
            path,
            file,
            buf: Vec::with_capacity(WRITE_CHUNK),
            at: 0,
        })
    }

    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        match self.buf.len() >= WRITE_CHUNK {
            true => self.flush(),
            false => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_at(self.at, &self.buf)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), &e))?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left and syncs the file: its size.
    fn finish(mut self) -> Result<u64> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fdatasync of {}", self.path.display()), &e))?;
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::RealDisk;
    use crate::log::{decode_snapshot, encode_snapshot, Snapshot};
    use crate::types::{no_xattrs, Kind};

    fn record(fid: Fid, name: &str, len: u64) -> FileRecord {
        FileRecord {
            fid,
            dir: 1,
            name: crate::name::Name::new(name.as_bytes()),
            kind: Kind::File,
            attrs: crate::types::test_attrs(),
            len,
            dcrc: 7,
            target: None,
            xattrs: no_xattrs(),
            links: Vec::new(),
        }
    }

    fn snapshot(upto: Seq, files: Vec<FileRecord>) -> Snapshot {
        Snapshot {
            upto,
            next_fid: 100,
            root: record(1, "", 0).attrs,
            root_xattrs: no_xattrs(),
            files,
        }
    }

    /// Files changed before, among, after and in place of the last snapshot's, and one gone,
    /// give the same bytes as the whole snapshot encoded anew.
    #[test]
    fn a_merged_snapshot_is_the_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let (base, out) = (dir.path().join("base"), dir.path().join("out"));
        let old = snapshot(
            10,
            vec![record(3, "a", 1), record(5, "b", 2), record(9, "c", 3)],
        );
        std::fs::write(&base, encode_snapshot(&old)).unwrap();
        let now = snapshot(
            20,
            vec![
                record(2, "new-first", 0),
                record(3, "a", 1),
                record(6, "new-between", 4),
                record(9, "c-changed", 30),
                record(12, "new-last", 5),
            ],
        );
        let delta = SnapshotDelta {
            since: 10,
            upto: 20,
            next_fid: now.next_fid,
            root: now.root,
            root_xattrs: no_xattrs(),
            files: 5,
            changed: vec![
                (2, Some(record(2, "new-first", 0))),
                (5, None),
                (6, Some(record(6, "new-between", 4))),
                (7, None), // made and removed since: in neither
                (9, Some(record(9, "c-changed", 30))),
                (12, Some(record(12, "new-last", 5))),
            ],
        };
        let bytes = write_merged_snapshot(&RealDisk, &base, &delta, &out).unwrap();
        let written = std::fs::read(&out).unwrap();
        assert_eq!(bytes, written.len() as u64);
        assert_eq!(written, encode_snapshot(&now));
        assert_eq!(decode_snapshot(&written).unwrap(), now);
    }

    /// A base that is not the snapshot the changes are counted from, or that does not check
    /// out, or a count that does not add up, is an error, never a snapshot.
    #[test]
    fn a_merge_that_does_not_add_up_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (base, out) = (dir.path().join("base"), dir.path().join("out"));
        let old = snapshot(10, vec![record(3, "a", 1), record(5, "b", 2)]);
        let encoded = encode_snapshot(&old);
        std::fs::write(&base, &encoded).unwrap();
        let delta = SnapshotDelta {
            since: 10,
            upto: 11,
            next_fid: 100,
            root: old.root,
            root_xattrs: no_xattrs(),
            files: 2,
            changed: vec![(5, Some(record(5, "b2", 2)))],
        };
        assert!(write_merged_snapshot(&RealDisk, &base, &delta, &out).is_ok());
        let other_base = SnapshotDelta {
            since: 9,
            ..delta.clone()
        };
        assert!(write_merged_snapshot(&RealDisk, &base, &other_base, &out).is_err());
        let miscounted = SnapshotDelta {
            files: 3,
            ..delta.clone()
        };
        let e = write_merged_snapshot(&RealDisk, &base, &miscounted, &out).unwrap_err();
        assert!(e.reason.contains("would list 2 files"), "{e}");
        // One byte of a kept line changed: its checksum no longer matches.
        let mut damaged = encoded.clone();
        let at = damaged.len() - 40;
        damaged[at] ^= 1;
        std::fs::write(&base, &damaged).unwrap();
        assert!(write_merged_snapshot(&RealDisk, &base, &delta, &out).is_err());
        // Cut short.
        std::fs::write(&base, &encoded[..encoded.len() - 1]).unwrap();
        assert!(write_merged_snapshot(&RealDisk, &base, &delta, &out).is_err());
    }
}
