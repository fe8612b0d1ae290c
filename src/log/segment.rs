//! Log segments: their header, their names, listing them, and the writer that appends to the
//! live one.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, DiskFile};
use crate::error::{err, Error, Result};
use crate::limits::LOG_PREALLOC;
use crate::types::{Seq, Time, MAX_ID};

use super::line::{check_line, corrupt, push_json, seal, Fields, FORMAT_VERSION};

/// The page cache's unit here (where pages are larger, writes of 4 KiB still make small ones).
const PAGE: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u64,
    pub start_seq: Seq,
    pub max_line: u64,
    pub created: u64,
}

pub fn encode_header(h: &Header) -> Vec<u8> {
    let mut out = b"{\"recordfs\":\"log\"".to_vec();
    push_json(&mut out, "version", &h.version);
    push_json(&mut out, "start_seq", &h.start_seq);
    push_json(&mut out, "max_line", &h.max_line);
    push_json(&mut out, "created", &h.created);
    seal(out)
}

pub fn decode_header(line: &[u8]) -> Result<Header> {
    let f = Fields(check_line(line)?);
    if f.str("recordfs")? != "log" {
        return Err(corrupt("not a recordfs log header"));
    }
    let version = f.u64("version")?;
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "log format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        )));
    }
    Ok(Header {
        version,
        start_seq: f.id("start_seq")?,
        max_line: f.u64("max_line")?,
        created: f.u64("created")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Segments

pub fn segment_name(start_seq: Seq) -> String {
    format!("{start_seq:020}.log")
}

pub fn parse_segment_name(name: &str) -> Option<Seq> {
    parse_numbered(name, ".log")
}

pub fn parse_snapshot_name(name: &str) -> Option<Seq> {
    parse_numbered(name, ".snapshot")
}

/// `<20 digits><suffix>`: how segments and snapshots are named. A number outside
/// 1..=`MAX_ID` names nothing recordfs writes (segments start at entry 1 or later).
pub(super) fn parse_numbered(name: &str, suffix: &str) -> Option<Seq> {
    let digits = name.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
        .filter(|n| (1..=MAX_ID).contains(n))
}

/// The segments of a log directory, oldest first.
pub fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let names = disk
        .list(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
    let mut out: Vec<(Seq, PathBuf)> = names
        .iter()
        .filter_map(|n| {
            let seq = std::str::from_utf8(n).ok().and_then(parse_segment_name)?;
            Some((seq, dir.join(std::ffi::OsStr::from_bytes(n))))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Appends lines to one segment. A failed append is cut off again, so the segment never holds
/// a partial line that a later append would bury in the middle of the log.
pub struct LogWriter {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    start_seq: Seq,
    /// Where the next line goes: the end of the lines written.
    len: u64,
    /// The file's size: past `len` it holds zeros, written ahead (`LOG_PREALLOC`).
    size: u64,
    /// How far ahead of the lines zeros are written (see `write_ahead`).
    ahead: u64,
    max_line: u64,
}

impl LogWriter {
    /// Creates a new segment holding only its header, durably (file and directory synced).
    pub fn create(disk: &dyn Disk, dir: &Path, start_seq: Seq, max_line: u64) -> Result<LogWriter> {
        let w = LogWriter::create_unsynced(disk, dir, start_seq, max_line)?;
        w.sync()?;
        crate::store::sync_dir(disk, dir)?;
        Ok(w)
    }

    /// Like `create`, but the header and the new name are not synced: the caller makes them
    /// durable (fdatasync of the segment, fsync of `dir`) before any entry in the segment is
    /// acknowledged. A crash before that leaves no segment, or one whose header recovery
    /// finds torn and removes: it held nothing acknowledged.
    pub fn create_unsynced(
        disk: &dyn Disk,
        dir: &Path,
        start_seq: Seq,
        max_line: u64,
    ) -> Result<LogWriter> {
        let path = dir.join(segment_name(start_seq));
        let ctx = |what: &str| format!("{what} {}", path.display());
        let file = disk
            .open_file(&path, true)
            .map_err(|e| Error::io(ctx("creating log segment"), &e))?;
        let mut w = LogWriter {
            file,
            path: path.clone(),
            start_seq,
            len: 0,
            size: 0,
            // The header alone: zeros come with the first entry, as far ahead as the owner
            // of the writer says (`write_ahead`).
            ahead: 0,
            max_line,
        };
        let header = encode_header(&Header {
            version: FORMAT_VERSION,
            start_seq,
            max_line,
            created: Time::now().millis(),
        });
        if let Err(e) = w.append(&header) {
            // A disk full mid-header: the caller goes on with the segment before, and a
            // segment left behind would sit in the middle of the log, where recovery takes a
            // segment without a header for damage. Its removal is made durable before any
            // later entry can be: a crash must not keep the name and lose the removal. When
            // that fails, the caller must append nothing more: EIO.
            let removed = disk
                .remove(&path)
                .and_then(|_| disk.sync_dir(dir))
                .map_err(|gone| {
                    err!(
                        EIO,
                        "{} ({e}): {gone}",
                        ctx("removing the unfinished log segment")
                    )
                });
            return Err(removed.err().unwrap_or(e));
        }
        w.ahead = LOG_PREALLOC;
        Ok(w)
    }

    /// Opens an existing segment to append after its first `len` bytes (all checked good;
    /// anything after them is zeros, written ahead).
    pub fn open(disk: &dyn Disk, path: &Path, header: &Header, len: u64) -> Result<LogWriter> {
        let file = disk
            .open_file(path, false)
            .map_err(|e| Error::io(format!("opening log segment {}", path.display()), &e))?;
        let size = disk
            .stat(path)
            .map_err(|e| Error::io(format!("stat of log segment {}", path.display()), &e))?
            .len;
        Ok(LogWriter {
            file,
            path: path.to_owned(),
            start_seq: header.start_seq,
            len,
            size: size.max(len),
            ahead: LOG_PREALLOC,
            max_line: header.max_line,
        })
    }

    /// Writes zeros at most `bytes` ahead of the lines from now on (`LOG_PREALLOC` at most):
    /// a store whose log limit is small keeps its live segment small on disk too.
    pub fn write_ahead(&mut self, bytes: u64) {
        self.ahead = bytes.min(LOG_PREALLOC);
    }

    /// Cuts the zeros written ahead, leaving the segment exactly its lines (a clean stop, a
    /// segment a compaction closes): a segment at rest is what `recordfs log` and `jq` read.
    pub fn trim(&mut self) -> Result<()> {
        if self.size == self.len {
            return Ok(());
        }
        self.file
            .set_len(self.len)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::io(format!("trimming {}", self.path.display()), &e))?;
        self.size = self.len;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn start_seq(&self) -> Seq {
        self.start_seq
    }

    /// fdatasync of the segment: everything appended so far is durable when it returns.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fdatasync of {}", self.path.display()), &e))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_line(&self) -> u64 {
        self.max_line
    }

    /// The segment, for syncing it without holding the writer.
    pub fn sync_handle(&self) -> Arc<dyn DiskFile> {
        self.file.clone()
    }

    /// Writes `buf` at `offset`, where it makes the file longer and the next lines go at `end`:
    /// from the page that holds `end` on, one page per write. The page cache gives a write
    /// pages as large as the write (64 KiB for the zeros ahead), and the kernel counts a page
    /// made dirty again whole: each line after a sync would count as 64 KiB written (the disk
    /// gets only the 4 KiB blocks that changed), and dirty memory would be overstated as much.
    fn write_in_pages(&self, offset: u64, end: u64, buf: &[u8]) -> std::io::Result<()> {
        let first_page = (end / PAGE) * PAGE;
        let mut at = offset;
        if first_page > at {
            self.file.write_at(at, &buf[..(first_page - at) as usize])?;
            at = first_page;
        }
        let stop = offset + buf.len() as u64;
        while at < stop {
            let next = ((at / PAGE + 1) * PAGE).min(stop);
            self.file
                .write_at(at, &buf[(at - offset) as usize..(next - offset) as usize])?;
            at = next;
        }
        Ok(())
    }

    /// Writes one line (newline added) at the end; returns its offset.
    pub fn append(&mut self, line: &[u8]) -> Result<u64> {
        if line.len() as u64 > self.max_line {
            return Err(err!(
                EFBIG,
                "log entry of {} bytes exceeds the segment's limit of {}",
                line.len(),
                self.max_line
            ));
        }
        let offset = self.len;
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let end = offset + buf.len() as u64;
        let written = if end > self.size {
            // Zeros ahead of the line, before the next sync: one change of size per
            // `LOG_PREALLOC`, not one per line.
            buf.resize((end - offset + self.ahead) as usize, 0);
            self.write_in_pages(offset, end, &buf)
        } else {
            self.file.write_at(offset, &buf)
        };
        match written {
            Ok(()) => {
                self.size = self.size.max(offset + buf.len() as u64);
                self.len = end;
                Ok(offset)
            }
            Err(e) => {
                // Part of the line may be written, or all of it with the zeros after it
                // failing: the caller hears that the entry failed, so the cut is made durable
                // first. A crash must not keep the line and lose the cut, bringing back a
                // change its caller was told had failed.
                let error = Error::io(format!("appending to {}", self.path.display()), &e);
                let cut = self
                    .file
                    .set_len(offset)
                    .and_then(|_| self.file.sync_data());
                if let Err(e2) = cut {
                    return Err(err!(
                        EIO,
                        "{error}; then cutting the partial entry failed: {e2}"
                    ));
                }
                self.size = offset;
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{encode_entry, Data, Entry, Op};
    use crate::types::{Attrs, Kind, Time, ROOT};

    /// A log directory on a simulated disk, for the crash tests below.
    #[cfg(feature = "sim")]
    fn sim_log() -> crate::disk::sim::SimDisk {
        let disk = crate::disk::sim::SimDisk::new();
        disk.create_dir(Path::new("/log")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        disk
    }

    /// An append whose line is written but whose zeros after it fail (a full disk): its caller
    /// hears the entry failed, so no crash may bring the line back. Fails if the cut of the
    /// line is not durable before the error is returned (a crash keeps the line's write and
    /// loses the cut: checked).
    #[cfg(feature = "sim")]
    #[test]
    fn a_line_whose_append_failed_never_comes_back_after_a_crash() {
        use crate::disk::sim::FaultOn;
        let line = encode_entry(&Entry {
            seq: 1,
            ts: 0,
            op: Op::Delete {
                fid: 2,
                dir: ROOT,
                name: b"x".to_vec(),
            },
        });
        for seed in 0..64 {
            let disk = sim_log();
            let mut w = LogWriter::create(&disk, Path::new("/log"), 1, 1 << 20).unwrap();
            // The line goes in the first write, the zeros ahead of it in the next ones.
            disk.fail_next(FaultOn::Write, 1, libc::ENOSPC);
            assert!(w.append(&line).is_err());
            let crashed = disk.crash(seed);
            let mut seen = Vec::new();
            let _ = crate::log::scan_segment(&crashed, w.path(), None, |_, e| {
                seen.push(e.seq);
                Ok(())
            });
            assert!(seen.is_empty(), "seed {seed}: the failed entry came back");
        }
    }

    /// A segment whose header cannot be written (a full disk) is removed, and the removal is
    /// durable before the caller goes on with the segment before: no crash keeps its name,
    /// which would sit in the middle of the log. Fails without the directory's sync after the
    /// removal (checked).
    #[cfg(feature = "sim")]
    #[test]
    fn a_segment_whose_header_failed_is_gone_after_a_crash() {
        use crate::disk::sim::FaultOn;
        for seed in 0..64 {
            let disk = sim_log();
            disk.fail_next(FaultOn::Write, 0, libc::ENOSPC);
            let made = LogWriter::create_unsynced(&disk, Path::new("/log"), 5, 1 << 20);
            assert_eq!(made.err().map(|e| e.errno), Some(libc::ENOSPC));
            let left = disk.crash(seed).list(Path::new("/log")).unwrap();
            assert!(left.is_empty(), "seed {seed}: {left:?} kept");
        }
    }

    /// The bytes this thread has made dirty so far (`write_bytes` of /proc/thread-self/io).
    fn dirtied_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        let field = io.split("write_bytes: ").nth(1).unwrap();
        field.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Issue 12: a line appended after a sync makes its own page dirty again, not the 64 KiB of
    /// zeros written ahead with an earlier line, nor the end of a big line (the page cache gives a
    /// write pages as large as the write, and the kernel counts a page made dirty whole). Where
    /// the filesystem has only small pages this holds either way; ext4 on this project's kernel
    /// (6.18) has large ones, and each line counted 64 KiB.
    #[test]
    fn a_line_after_a_sync_dirties_its_own_page_only() {
        let dir = tempfile::tempdir().unwrap();
        let disk: &dyn Disk = &crate::disk::RealDisk;
        let mut w = LogWriter::create(disk, dir.path(), 1, 1 << 20).unwrap();
        let line = |seq, pad: usize| {
            encode_entry(&Entry {
                seq,
                ts: 0,
                op: Op::Set {
                    fid: 2,
                    dir: ROOT,
                    name: b"x.txt".to_vec(),
                    kind: Kind::File,
                    attrs: Attrs {
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        atime: Time { secs: 0, nsecs: 0 },
                        mtime: Time { secs: 0, nsecs: 0 },
                        ctime: Time { secs: 0, nsecs: 0 },
                    },
                    data: Data::new(Arc::new(vec![b'x'; pad])),
                },
            })
        };
        let mut seq = 1;
        for first in [100, 200 << 10] {
            w.append(&line(seq, first)).unwrap();
            w.sync().unwrap();
            seq += 1;
            let before = dirtied_by_this_thread();
            const LINES: u64 = 100;
            for _ in 0..LINES {
                w.append(&line(seq, 300)).unwrap();
                w.sync().unwrap();
                seq += 1;
            }
            let each = (dirtied_by_this_thread() - before) / LINES;
            assert!(
                // One page, a second for a line across two, the zeros ahead once in 100 lines.
                each <= 6 << 10,
                "after a line of {first} bytes, each small line made {each} bytes dirty"
            );
        }
    }
}
