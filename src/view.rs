//! A file's bytes as a reader or a writer sees them: a committed version in memory or in a
//! backing file, or written ranges laid over one (`Overlay`), so that a writer of a large file
//! neither reads nor copies what it does not change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::disk::ReadAt;
use crate::error::{err, Error, Result};
use crate::limits::{MAX_OVERLAY_BYTES, MAX_OVERLAY_EXTENTS, OVERLAY_PIECE};

/// The bytes of one version of a file.
#[derive(Clone)]
pub enum Version {
    Memory(Arc<Vec<u8>>),
    /// A backing file opened when the version was taken, read up to the length it had then
    /// (`Version::fixed`): a later rename over the path does not change it; a patch applied
    /// in place below that length would, see `Token`.
    Disk(Arc<dyn ReadAt>),
    Overlay(Arc<Overlay>),
}

/// What keeps the apply thread from patching a backing file in place under someone who reads
/// it (`pipeline::State::readers`): one per holder of a version on disk, alive as long as the
/// holder is.
pub type Token = Arc<Hold>;

/// What a holder would see of a patch applied in place: nothing of one up to `shown` (an
/// overlay that holds that patch's ranges shows them from bytes of its own), nor of one that
/// leaves the file's first `reads_below` bytes alone (the holder reads no further: a version
/// keeps the length it had, so an append in place is not seen).
pub struct Hold {
    shown: AtomicU64,
    reads_below: u64,
}

impl Hold {
    pub fn new(shown: u64, reads_below: u64) -> Token {
        Arc::new(Hold {
            shown: AtomicU64::new(shown),
            reads_below,
        })
    }

    /// The holder shows patch `seq` from bytes of its own.
    pub fn shows(&self, seq: u64) {
        self.shown.store(seq, Ordering::SeqCst);
    }

    /// Whether the holder would see patch `seq` applied in place, which changes nothing below
    /// `lowest` (its first range, or its new length if that is shorter).
    pub fn sees(&self, seq: u64, lowest: u64) -> bool {
        self.shown.load(Ordering::SeqCst) < seq && lowest < self.reads_below
    }
}

/// A version as someone holds it.
pub struct Held {
    pub version: Version,
    /// For a version that reads a backing file.
    pub token: Option<Token>,
}

/// A backing file read no further than the length it had when opened.
struct Fixed {
    file: Arc<dyn ReadAt>,
    len: u64,
}

impl ReadAt for Fixed {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let room = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        match room {
            0 => Ok(0),
            n => self.file.read_at(&mut buf[..n], offset),
        }
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }
}

impl Version {
    /// The version a backing file holds now: read no further than its length now.
    pub fn fixed(file: Arc<dyn ReadAt>) -> std::io::Result<Version> {
        let len = file.size()?;
        Ok(Version::Disk(Arc::new(Fixed { file, len })))
    }

    pub fn size(&self) -> Result<u64> {
        match self {
            Version::Memory(b) => Ok(b.len() as u64),
            Version::Disk(f) => f
                .size()
                .map_err(|e| Error::io("stat of a backing file", &e)),
            Version::Overlay(o) => Ok(o.len),
        }
    }

    /// The bytes it holds in memory.
    pub fn memory_bytes(&self) -> u64 {
        match self {
            Version::Memory(b) => b.len() as u64,
            Version::Disk(_) => 0,
            Version::Overlay(o) => o.base.memory_bytes() + o.data_bytes(),
        }
    }

    /// Whether reading it reads a backing file (which a holder then needs a `Token` for).
    pub fn on_disk(&self) -> bool {
        match self {
            Version::Memory(_) => false,
            Version::Disk(_) => true,
            Version::Overlay(o) => o.base.on_disk(),
        }
    }

    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        match self {
            Version::Memory(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Version::Disk(f) => {
                let mut buf = vec![0; size];
                let mut got = 0;
                while got < size {
                    match f.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => return Err(Error::io("reading a backing file", &e)),
                    }
                }
                buf.truncate(got);
                Ok(buf)
            }
            Version::Overlay(o) => o.read_at(offset, size),
        }
    }

    /// The whole content, refusing more than `limit` bytes.
    pub fn read_all(&self, limit: u64) -> Result<Vec<u8>> {
        let len = self.size()?;
        if len > limit {
            return Err(err!(
                EFBIG,
                "file of {len} bytes exceeds the limit of {limit}"
            ));
        }
        let bytes = self.read_at(0, len as usize)?;
        if bytes.len() as u64 != len {
            return Err(err!(EIO, "a backing file ended early"));
        }
        Ok(bytes)
    }

    /// The CRC32C of the whole content, read a piece at a time.
    pub fn crc32c(&self) -> Result<u32> {
        const PIECE: usize = 1 << 20;
        let len = self.size()?;
        let mut crc = 0;
        let mut at = 0;
        while at < len {
            let piece = self.read_at(at, PIECE.min((len - at) as usize))?;
            if piece.is_empty() {
                return Err(err!(EIO, "a backing file ended early"));
            }
            crc = crc32c::crc32c_append(crc, &piece);
            at += piece.len() as u64;
        }
        Ok(crc)
    }
}

/// Written ranges over a committed version: the bytes of an extent where one covers; else
/// below `keep` the base's; else zeros (what an ftruncate down and up, or a write past the
/// end, leaves).
#[derive(Clone)]
pub struct Overlay {
    /// Never an overlay itself: one laid over another takes in its extents (`over`).
    base: Version,
    /// At most the base's length and every length an ftruncate gave since; at most `len`.
    keep: u64,
    len: u64,
    /// In order and not overlapping (they may touch), within `len`.
    extents: Vec<(u64, Arc<Vec<u8>>)>,
}

impl Overlay {
    /// An overlay showing `version`, with nothing written yet.
    pub fn over(version: &Version) -> Result<Overlay> {
        Ok(match version {
            Version::Overlay(o) => (**o).clone(),
            v => {
                let len = v.size()?;
                Overlay {
                    base: v.clone(),
                    keep: len,
                    len,
                    extents: Vec::new(),
                }
            }
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes its extents hold.
    pub fn data_bytes(&self) -> u64 {
        self.extents.iter().map(|(_, d)| d.len() as u64).sum()
    }

    /// Writes `bytes` at `at`. False once the overlay holds too many extents or bytes to stay
    /// one: the caller reads the whole instead (`Version::read_all`).
    pub fn write(&mut self, at: u64, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let end = at + bytes.len() as u64;
        let first = self
            .extents
            .partition_point(|(s, d)| s + (d.len() as u64) <= at);
        let last = first
            + self.extents[first..]
                .iter()
                .take_while(|(s, _)| *s < end)
                .count();
        if first == last {
            // Overlapping none: an extent that ends where this starts grows while it is
            // smaller than `OVERLAY_PIECE` (copied first if a committed version shares it, so
            // an append after each commit copies at most that much); else a new one.
            match first.checked_sub(1).map(|i| &mut self.extents[i]) {
                Some((s, d)) if *s + d.len() as u64 == at && d.len() < OVERLAY_PIECE => {
                    Arc::make_mut(d).extend_from_slice(bytes);
                }
                _ => self.extents.insert(first, (at, Arc::new(bytes.to_vec()))),
            }
        } else {
            // The extents it overlaps become one with it.
            let start = self.extents[first].0.min(at);
            let stop = {
                let (s, d) = &self.extents[last - 1];
                (s + d.len() as u64).max(end)
            };
            let mut acc = vec![0; (stop - start) as usize];
            for (rs, rd) in self.extents.drain(first..last) {
                let o = (rs - start) as usize;
                acc[o..o + rd.len()].copy_from_slice(&rd);
            }
            let o = (at - start) as usize;
            acc[o..o + bytes.len()].copy_from_slice(bytes);
            self.extents.insert(first, (start, Arc::new(acc)));
        }
        self.len = self.len.max(end);
        self.extents.len() <= MAX_OVERLAY_EXTENTS && self.data_bytes() <= MAX_OVERLAY_BYTES
    }

    /// Cuts or extends it to `len` bytes (ftruncate).
    pub fn truncate(&mut self, len: u64) {
        self.extents.retain(|(s, _)| *s < len);
        if let Some((s, d)) = self.extents.last_mut() {
            if *s + d.len() as u64 > len {
                Arc::make_mut(d).truncate((len - *s) as usize);
            }
        }
        self.keep = self.keep.min(len);
        self.len = len;
    }

    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(size as u64).min(self.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = match offset < self.keep {
            true => self
                .base
                .read_at(offset, (end.min(self.keep) - offset) as usize)?,
            false => Vec::new(),
        };
        if offset < self.keep && (buf.len() as u64) < end.min(self.keep) - offset {
            return Err(err!(EIO, "a backing file ended early"));
        }
        buf.resize((end - offset) as usize, 0);
        let first = self
            .extents
            .partition_point(|(s, d)| s + (d.len() as u64) <= offset);
        for (s, d) in self.extents[first..].iter().take_while(|(s, _)| *s < end) {
            let from = offset.max(*s);
            let to = end.min(s + d.len() as u64);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&d[(from - s) as usize..(to - s) as usize]);
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model: the same writes and truncations on a plain vector.
    fn check(o: &Overlay, model: &[u8]) {
        let v = Version::Overlay(Arc::new(o.clone()));
        assert_eq!(v.size().unwrap(), model.len() as u64);
        assert_eq!(v.read_all(u64::MAX).unwrap(), model);
        assert_eq!(v.crc32c().unwrap(), crc32c::crc32c(model));
        for (at, n) in [(0, 3), (5, 40), (model.len() as u64 / 2, 17), (1000, 5)] {
            let s = (at as usize).min(model.len());
            let e = (s + n).min(model.len());
            assert_eq!(v.read_at(at, n).unwrap(), &model[s..e], "read at {at}, {n}");
        }
        let mut last_end = None;
        for (s, d) in &o.extents {
            assert!(!d.is_empty());
            assert!(
                last_end.is_none_or(|e| e <= *s),
                "extents in order, not overlapping"
            );
            last_end = Some(s + d.len() as u64);
        }
        assert!(o.keep <= o.len);
    }

    #[test]
    fn an_overlay_reads_as_its_writes_and_truncations_over_the_base() {
        // A small generator of its own: the same sequences on every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let base: Vec<u8> = (0..next(200)).map(|i| i as u8 | 1).collect();
            let mut model = base.clone();
            let mut o = Overlay::over(&Version::Memory(Arc::new(base))).unwrap();
            for _ in 0..next(12) {
                if next(4) == 0 {
                    let len = next(260);
                    model.resize(len as usize, 0);
                    o.truncate(len);
                } else {
                    let at = next(250);
                    let bytes: Vec<u8> = (0..next(30)).map(|_| next(250) as u8 + 2).collect();
                    let end = at as usize + bytes.len();
                    if bytes.is_empty() {
                        continue;
                    }
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[at as usize..end].copy_from_slice(&bytes);
                    o.write(at, &bytes);
                }
                check(&o, &model);
                // One laid over it shows the same, and writes on it leave it as it was.
                let shown = Version::Overlay(Arc::new(o.clone()));
                let mut upper = Overlay::over(&shown).unwrap();
                upper.write(3, b"xy");
                check(&o, &model);
            }
        }
    }

    #[test]
    fn an_overlay_says_when_it_holds_too_much() {
        let mut o = Overlay::over(&Version::Memory(Arc::new(vec![1; 100_000]))).unwrap();
        let mut ok = true;
        for i in 0..=MAX_OVERLAY_EXTENTS as u64 {
            ok = o.write(i * 10 % 100_000 + i / 10_000, b"a");
        }
        assert!(!ok, "{} extents", MAX_OVERLAY_EXTENTS + 1);
        let mut o = Overlay::over(&Version::Memory(Arc::new(Vec::new()))).unwrap();
        assert!(o.write(0, &vec![2; MAX_OVERLAY_BYTES as usize]));
        assert!(!o.write(MAX_OVERLAY_BYTES, b"b"));
    }

    /// Appends, each after a commit that shares the overlay's extents: each copies at most
    /// `OVERLAY_PIECE` bytes, and the extents stay that size.
    #[test]
    fn appends_after_commits_grow_extents_of_a_bounded_size() {
        let mut o = Overlay::over(&Version::Memory(Arc::new(vec![1; 1000]))).unwrap();
        let mut model = vec![1; 1000];
        let mut shared = Vec::new();
        for i in 0..3000u64 {
            let line = [b'a' + (i % 26) as u8; 100];
            assert!(o.write(o.len(), &line));
            model.extend_from_slice(&line);
            // What a commit keeps until its version reaches the disk.
            shared.push(o.clone());
        }
        check(&o, &model);
        assert!(o.extents.iter().all(|(_, d)| d.len() < OVERLAY_PIECE + 100));
        assert!(
            o.extents.len() <= 3000 * 100 / OVERLAY_PIECE + 1,
            "{}",
            o.extents.len()
        );
    }
}
