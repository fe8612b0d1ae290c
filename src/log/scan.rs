//! Reading segments back: line by line, bounded, telling a torn tail from corruption.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::disk::{Disk, ReadAt, Reader};
use crate::error::{err, Error, Result};
use crate::limits::MAX_HEADER_LINE;
use crate::types::Seq;

use super::entry::{decode_entry, Entry};
use super::line::corrupt;
use super::segment::{decode_header, Header};

// ---------------------------------------------------------------------------------------------
// Scanning

/// A line that did not check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    pub offset: u64,
    pub reason: String,
    /// The last good entry before it.
    pub prev_seq: Option<Seq>,
    /// It holds NUL bytes, which no line written contains: blocks that never reached the
    /// disk (see `SegmentScan::hole`).
    pub has_nul: bool,
}

/// What a scan of one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    pub header: Option<Header>,
    /// The offset just after the last good line: where a torn tail is cut.
    pub good_end: u64,
    pub bad: Vec<BadLine>,
    /// A good line came after a bad one: corruption in the middle, not a torn tail — unless
    /// the first bad line is a hole.
    pub good_after_bad: bool,
    /// The first bad line holds NUL bytes: a hole of blocks that never reached the disk.
    /// fdatasync makes everything up to the end of the file durable, so a hole can only lie in
    /// the part never synced, and nothing after it was ever acknowledged as durable: the log
    /// ends at the hole, whatever lines follow it.
    pub hole: bool,
    pub last_seq: Option<Seq>,
}

/// One line read by `read_bounded_line`.
pub(super) enum LineRead {
    /// The line without its newline, and whether a newline ended it.
    Line(Vec<u8>, bool),
    /// A line longer than allowed, skipped to its end: how many bytes it took, and whether
    /// any of them was NUL (a hole: bytes that never reached the disk).
    TooLong(u64, bool),
}

/// Reads one line of at most `max` bytes; `None` at the end of the file.
pub(super) fn read_bounded_line(
    r: &mut impl BufRead,
    max: usize,
) -> std::io::Result<Option<LineRead>> {
    let mut line = Vec::new();
    let mut skipped: u64 = 0;
    let mut too_long = false;
    let mut nul_skipped = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            if line.is_empty() && skipped == 0 && !too_long {
                return Ok(None);
            }
            return Ok(Some(if too_long {
                LineRead::TooLong(skipped, nul_skipped)
            } else {
                LineRead::Line(line, false)
            }));
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if too_long || line.len() + n > max {
            too_long = true;
            nul_skipped |= line.contains(&0) || chunk.contains(&0);
            skipped += (line.len() + n) as u64;
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        r.consume(n + usize::from(found));
        if found {
            return Ok(Some(if too_long {
                LineRead::TooLong(skipped + 1, nul_skipped)
            } else {
                LineRead::Line(line, true)
            }));
        }
    }
}

/// Whether everything from `offset` to the end of the file is zeros: space written ahead of
/// the lines (`LOG_PREALLOC`), where the segment's lines end. Zeros with anything after them
/// are not: that is a hole (see `SegmentScan::hole`).
fn zeros_to_end(file: &dyn ReadAt, offset: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
}

/// Whether the next line, at `offset`, starts the zeros that end the segment.
fn at_zero_tail(r: &mut impl BufRead, file: &dyn ReadAt, offset: u64) -> std::io::Result<bool> {
    Ok(r.fill_buf()?.first() == Some(&0) && zeros_to_end(file, offset)?)
}

/// Reads a segment line by line, giving every good entry (with its offset) to `visit`.
/// `expect_seq` is the sequence number the first entry must have, when known.
pub fn scan_segment(
    disk: &dyn Disk,
    path: &Path,
    mut expect_seq: Option<Seq>,
    mut visit: impl FnMut(u64, Entry) -> Result<()>,
) -> Result<SegmentScan> {
    let file = disk
        .open_read(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut r = BufReader::with_capacity(256 * 1024, Reader::new(file.clone(), 0));
    let io_err = |e: std::io::Error| Error::io(format!("reading {}", path.display()), &e);
    let mut scan = SegmentScan {
        header: None,
        good_end: 0,
        bad: Vec::new(),
        good_after_bad: false,
        hole: false,
        last_seq: None,
    };
    let mut offset: u64 = 0;
    let mut max = MAX_HEADER_LINE;
    loop {
        if at_zero_tail(&mut r, &*file, offset).map_err(io_err)? {
            break;
        }
        let Some(read) = read_bounded_line(&mut r, max).map_err(io_err)? else {
            break;
        };
        let has_nul = match &read {
            LineRead::TooLong(_, nul) => *nul,
            LineRead::Line(line, _) => line.contains(&0),
        };
        let (consumed, result) = match read {
            LineRead::TooLong(skipped, _) => (
                skipped,
                Err(corrupt(format!(
                    "line longer than the limit of {max} bytes"
                ))),
            ),
            LineRead::Line(line, ended) => {
                let consumed = line.len() as u64 + u64::from(ended);
                let result = if !ended {
                    Err(corrupt("line has no newline (torn write)"))
                } else if scan.header.is_none() && offset == 0 {
                    decode_header(&line).map(|h| {
                        max = h.max_line.min(usize::MAX as u64) as usize;
                        expect_seq.get_or_insert(h.start_seq);
                        scan.header = Some(h);
                        None
                    })
                } else {
                    decode_entry(&line).map(Some)
                };
                (consumed, result)
            }
        };
        match result {
            Ok(entry) => {
                if let Some(entry) = entry {
                    // A header that is a hole never reached the disk: no fdatasync of this
                    // segment ever returned (one makes everything before the end durable), so
                    // nothing in it was acknowledged. What follows is checked as after any hole.
                    let header_hole = scan.bad.first().is_some_and(|b| b.offset == 0 && b.has_nul);
                    if scan.header.is_none() && !header_hole {
                        return Err(err!(
                            EIO,
                            "{}: the header is unreadable but entries follow. The store is left as it is; `recordfs mount --salvage` mounts it, reading the entries without the header.",
                            path.display()
                        ));
                    }
                    match expect_seq {
                        Some(want) if entry.seq != want && scan.bad.is_empty() => {
                            scan.bad.push(BadLine {
                                offset,
                                reason: format!(
                                    "sequence number {} where {want} was expected",
                                    entry.seq
                                ),
                                prev_seq: scan.last_seq,
                                has_nul: false,
                            });
                        }
                        _ => {}
                    }
                    if !scan.bad.is_empty() {
                        // Entries after a bad line are checked, not applied: the state they
                        // build on is unknown.
                        scan.good_after_bad = true;
                    } else {
                        scan.last_seq = Some(entry.seq);
                        visit(offset, entry.clone())?;
                    }
                    expect_seq = Some(entry.seq + 1);
                } else if !scan.bad.is_empty() {
                    scan.good_after_bad = true;
                }
                if scan.bad.is_empty() {
                    scan.good_end = offset + consumed;
                }
            }
            Err(e) => {
                if scan.bad.is_empty() {
                    scan.hole = has_nul;
                }
                scan.bad.push(BadLine {
                    offset,
                    reason: e.reason,
                    prev_seq: scan.last_seq,
                    has_nul,
                })
            }
        }
        offset += consumed;
    }
    Ok(scan)
}

/// Calls `f` with the offset and bytes of every line of a segment (the header's `max_line`
/// bounds what is read into memory, or `unreadable_header_max` if the header is damaged); a
/// line too long is given as empty.
pub fn for_each_line(
    disk: &dyn Disk,
    path: &Path,
    unreadable_header_max: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let file = disk
        .open_read(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut r = BufReader::with_capacity(256 * 1024, Reader::new(file.clone(), 0));
    let io_err = |e: std::io::Error| Error::io(format!("reading {}", path.display()), &e);
    let (mut offset, mut max) = (0u64, MAX_HEADER_LINE);
    loop {
        if at_zero_tail(&mut r, &*file, offset).map_err(io_err)? {
            break;
        }
        let Some(read) = read_bounded_line(&mut r, max).map_err(io_err)? else {
            break;
        };
        match read {
            LineRead::TooLong(n, _) => {
                f(offset, &[])?;
                offset += n;
            }
            LineRead::Line(line, ended) => {
                if offset == 0 {
                    let bound = decode_header(&line).map_or(unreadable_header_max, |h| h.max_line);
                    max = bound.min(usize::MAX as u64) as usize;
                }
                f(offset, &line)?;
                offset += line.len() as u64 + u64::from(ended);
            }
        }
    }
    Ok(())
}

/// Reads the entry at `offset` of a segment (to restore a file's bytes from the log).
pub fn read_entry_at(disk: &dyn Disk, path: &Path, offset: u64, max_line: u64) -> Result<Entry> {
    let file = disk
        .open_read(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut r = BufReader::new(Reader::new(file, offset));
    match read_bounded_line(&mut r, max_line as usize) {
        Ok(Some(LineRead::Line(line, true))) => decode_entry(&line)
            .map_err(|e| err!(EIO, "{} at offset {offset}: {}", path.display(), e.reason)),
        Ok(_) => Err(err!(
            EIO,
            "{} at offset {offset}: no whole entry",
            path.display()
        )),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), &e)),
    }
}
