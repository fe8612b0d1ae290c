//! Writing a snapshot as the last one plus what changed since: a compaction then holds in
//! memory only the files changed since the last one, not a copy of every file, and encodes
//! only those (the other lines are copied as they are, each checked on the way). The result
//! is a whole snapshot, or a layer over an earlier one (`layers`).

use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::disk::{Disk, DiskFile, Reader};
use crate::error::{err, Error, Result};
use crate::limits::LONGEST_LINE;
use crate::types::{Attrs, Fid, Seq, Xattrs};

use super::line::checksum;
use super::scan::{read_bounded_line, LineRead};
use super::snapshot::{
    decode_snapshot_head, encode_file_line, encode_gone_line, encode_snapshot_head, FileRecord,
    SnapshotHead, GONE_PREFIX,
};

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

/// A snapshot file written: its size, and the lines after its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub lines: u64,
}

/// Writes snapshot `delta.upto` to `out` (created new) and syncs it: `inputs` (snapshot files,
/// each over the one before, the last being snapshot `delta.since`) with the changes since
/// made. With `base` none the first input must be whole and so is the result; else the first
/// lies over snapshot `base` (with no input: `base` is `delta.since`) and the result is a layer
/// over it. Inputs whose lines do not check out, that do not chain so, or a whole result
/// without `delta.files` files are an error, and `out` is then left for the caller to remove.
pub fn write_merged_snapshot(
    disk: &dyn Disk,
    inputs: &[PathBuf],
    base: Option<Seq>,
    delta: &SnapshotDelta,
    out: &Path,
) -> Result<Written> {
    let open = || -> Result<Vec<Input>> {
        let inputs: Vec<Input> = inputs
            .iter()
            .map(|p| Input::open(disk, p))
            .collect::<Result<_>>()?;
        let mut under = base;
        for i in &inputs {
            if i.head.base() != under {
                return Err(i.bad(format!("lies over {:?}, not {under:?}", i.head.base())));
            }
            under = Some(i.head.upto);
        }
        match under == Some(delta.since) {
            true => Ok(inputs),
            false => Err(err!(
                EIO,
                "the changes since snapshot {} cannot go over snapshot {under:?}",
                delta.since
            )),
        }
    };
    // A layer's header says how many lines follow: counted first, the inputs read twice (they
    // are the small layers at the top of the chain).
    let layer = match base {
        Some(base) => {
            let mut lines = 0;
            merge(&mut open()?, delta, false, |_| {
                lines += 1;
                Ok(())
            })?;
            Some((base, lines))
        }
        None => None,
    };
    let mut inputs = open()?;
    let mut w = ChunkWriter::create(disk, out)?;
    w.push(&encode_snapshot_head(&SnapshotHead {
        upto: delta.upto,
        next_fid: delta.next_fid,
        root: delta.root,
        root_xattrs: delta.root_xattrs.clone(),
        files: delta.files,
        layer,
    }))?;
    let (mut lines, mut files) = (0u64, 0u64);
    merge(&mut inputs, delta, layer.is_none(), |piece| {
        lines += 1;
        match piece {
            Piece::Line(line, gone) => {
                files += u64::from(!gone);
                w.push(line)?;
                w.push(b"\n")
            }
            Piece::Record(record) => {
                files += 1;
                w.push(&encode_file_line(record))
            }
            Piece::Gone(fid) => w.push(&encode_gone_line(fid)),
        }
    })?;
    match layer {
        None if files != delta.files => {
            return Err(err!(
                EIO,
                "the snapshot of entry {} would list {files} files where the namespace has {}",
                delta.upto,
                delta.files
            ))
        }
        Some((_, counted)) if lines != counted => {
            return Err(err!(
                EIO,
                "the layer of entry {} would hold {lines} lines where {counted} were counted",
                delta.upto
            ))
        }
        _ => {}
    }
    Ok(Written {
        bytes: w.finish()?,
        lines,
    })
}

/// A line of the snapshot being written.
enum Piece<'a> {
    /// An input's line as it is, and whether it is a `GONE` line.
    Line(&'a [u8], bool),
    Record(&'a FileRecord),
    Gone(Fid),
}

/// Each fid of the inputs and changes once, in order, as the newest of them has it: the
/// changes, else the last input holding it. A whole result drops the gone.
fn merge(
    inputs: &mut [Input],
    delta: &SnapshotDelta,
    whole: bool,
    mut emit: impl FnMut(Piece) -> Result<()>,
) -> Result<()> {
    let mut changed = delta.changed.iter().peekable();
    loop {
        let next_input = inputs
            .iter()
            .filter_map(|i| i.next.as_ref().map(|n| n.0))
            .min();
        let next_change = changed.peek().map(|(fid, _)| *fid);
        let Some(fid) = next_input.into_iter().chain(next_change).min() else {
            return Ok(());
        };
        let mut newest = None;
        for input in inputs.iter_mut() {
            if input.next.as_ref().is_some_and(|n| n.0 == fid) {
                newest = input.next.take();
                input.advance()?;
            }
        }
        if next_change == Some(fid) {
            match changed.next().expect("peeked") {
                (_, Some(record)) => emit(Piece::Record(record))?,
                (_, None) if !whole => emit(Piece::Gone(fid))?,
                (_, None) => {}
            }
        } else if let Some((_, line, gone)) = newest {
            if !(gone && whole) {
                emit(Piece::Line(&line, gone))?;
            }
        }
    }
}

/// A snapshot file read line by line, each checked: its fids must increase and its lines be
/// as many as its header says.
struct Input {
    path: PathBuf,
    r: BufReader<Reader>,
    head: SnapshotHead,
    read: u64,
    /// The fid of the last line read (`next` is taken by the merge).
    last: Fid,
    /// The next line: its fid, its bytes, and whether it is a `GONE` line.
    next: Option<(Fid, Vec<u8>, bool)>,
}

impl Input {
    fn open(disk: &dyn Disk, path: &Path) -> Result<Input> {
        let (head, r) = open_snapshot(disk, path)?;
        let mut input = Input {
            path: path.to_path_buf(),
            r,
            head,
            read: 0,
            last: 0,
            next: None,
        };
        input.advance()?;
        Ok(input)
    }

    fn bad(&self, reason: String) -> Error {
        err!(EIO, "snapshot {}: {reason}", self.path.display())
    }

    fn advance(&mut self) -> Result<()> {
        let count = self.head.lines();
        let Some(line) = read_line(&mut self.r, &self.path)? else {
            return match self.read == count {
                true => Ok(()),
                false => Err(self.bad(format!("{} lines where it says {count}", self.read))),
            };
        };
        self.read += 1;
        if self.read > count {
            return Err(self.bad(format!("more than the {count} lines it says")));
        }
        let n = self.read;
        checksum(&line).map_err(|e| self.bad(format!("line {n}: {}", e.reason)))?;
        let gone = line.starts_with(GONE_PREFIX);
        if gone && self.head.layer.is_none() {
            return Err(self.bad(format!("line {n} is a GONE line in a whole snapshot")));
        }
        let fid = line_fid(&line).ok_or_else(|| self.bad(format!("line {n} has no fid")))?;
        if fid <= self.last {
            return Err(self.bad(format!("fid {fid} after fid {}", self.last)));
        }
        self.last = fid;
        self.next = Some((fid, line, gone));
        Ok(())
    }
}

/// Opens the snapshot file at `path` and reads its header; the reader is left at the first line
/// after it.
pub(super) fn open_snapshot(
    disk: &dyn Disk,
    path: &Path,
) -> Result<(SnapshotHead, BufReader<Reader>)> {
    let bad = |reason: String| err!(EIO, "snapshot {}: {reason}", path.display());
    let file = disk
        .open_read(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut r = BufReader::with_capacity(WRITE_CHUNK, Reader::new(file, 0));
    let line = read_line(&mut r, path)?.ok_or_else(|| bad("empty".into()))?;
    Ok((decode_snapshot_head(&line).map_err(|e| bad(e.reason))?, r))
}

fn read_line(r: &mut BufReader<Reader>, path: &Path) -> Result<Option<Vec<u8>>> {
    let read = read_bounded_line(r, LONGEST_LINE as usize)
        .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?;
    match read {
        None => Ok(None),
        Some(LineRead::Line(line, true)) => Ok(Some(line)),
        Some(_) => Err(err!(
            EIO,
            "snapshot {}: a line is cut short or too long",
            path.display()
        )),
    }
}

/// The fid of a file's or `GONE` line as written here, which names it first.
fn line_fid(line: &[u8]) -> Option<Fid> {
    let rest = line
        .strip_prefix(br#"{"op":"FILE","fid":"#)
        .or_else(|| line.strip_prefix(br#"{"op":"GONE","fid":"#))?;
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
        let bytes =
            write_merged_snapshot(&RealDisk, std::slice::from_ref(&base), None, &delta, &out)
                .unwrap();
        let written = std::fs::read(&out).unwrap();
        assert_eq!(bytes.bytes, written.len() as u64);
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
        assert!(
            write_merged_snapshot(&RealDisk, std::slice::from_ref(&base), None, &delta, &out)
                .is_ok()
        );
        let other_base = SnapshotDelta {
            since: 9,
            ..delta.clone()
        };
        assert!(write_merged_snapshot(
            &RealDisk,
            std::slice::from_ref(&base),
            None,
            &other_base,
            &out
        )
        .is_err());
        let miscounted = SnapshotDelta {
            files: 3,
            ..delta.clone()
        };
        let e = write_merged_snapshot(
            &RealDisk,
            std::slice::from_ref(&base),
            None,
            &miscounted,
            &out,
        )
        .unwrap_err();
        assert!(e.reason.contains("would list 2 files"), "{e}");
        // One byte of a kept line changed: its checksum no longer matches.
        let mut damaged = encoded.clone();
        let at = damaged.len() - 40;
        damaged[at] ^= 1;
        std::fs::write(&base, &damaged).unwrap();
        assert!(
            write_merged_snapshot(&RealDisk, std::slice::from_ref(&base), None, &delta, &out)
                .is_err()
        );
        // Cut short.
        std::fs::write(&base, &encoded[..encoded.len() - 1]).unwrap();
        assert!(
            write_merged_snapshot(&RealDisk, std::slice::from_ref(&base), None, &delta, &out)
                .is_err()
        );
        // Fids out of order, each line sound (the merge takes each line in turn from its input).
        let unordered = snapshot(10, vec![record(5, "b", 2), record(3, "a", 1)]);
        std::fs::write(&base, encode_snapshot(&unordered)).unwrap();
        let e = write_merged_snapshot(&RealDisk, std::slice::from_ref(&base), None, &delta, &out)
            .unwrap_err();
        assert!(e.reason.contains("fid 3 after fid 5"), "{e}");
    }
}
