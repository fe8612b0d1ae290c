//! A writer's commit: its copy checked (the JSON rule for a record) and logged whole (`SET`)
//! or as the ranges it changed (`PATCH`) when that is less than half of a large file: the
//! ranges it wrote, read through its overlay or its loaded bytes, or for a rewrite from the
//! start what differs from the version it replaces. See README, "What a commit logs".

use std::sync::Arc;

use super::rules::{is_record, new_content, new_patch, show};
use super::state::{Copy, RecordFs, Standing, Writer};
use crate::error::{err, Result};
use crate::log::{Data, Range, Shown};
use crate::namespace::Inode;
use crate::types::{Fid, Seq, Time};
use crate::view::{Overlay, Version};

impl RecordFs {
    /// Commits a writer's copy if it changed. Returns the entry, if one was written. A failure
    /// is remembered (`Standing::Failed`) so that release does not commit what the caller saw
    /// fail.
    pub(super) fn commit_writer(&self, w: &mut Writer) -> Result<Option<Seq>> {
        let result = self.try_commit_writer(w);
        if result.is_err() {
            w.standing = Standing::Failed {
                written: w.written(),
            };
        }
        result
    }

    pub(super) fn try_commit_writer(&self, w: &mut Writer) -> Result<Option<Seq>> {
        if !w.dirty() {
            return Ok(None);
        }
        let fid = w.fid;
        let last_write = w.last_write;
        // A utimes after the last write wins over the write's time, as on ext4.
        let mtime_set = self.handles.lock().mtime_set.get(&fid).copied();
        let mtime = |old: Time| match mtime_set.is_none_or(|t| t <= last_write) {
            true => last_write,
            false => old,
        };
        let Some(inode) = self.pipeline.inode(fid) else {
            // Unlinked while open: as on a local filesystem, the bytes go with the file, and
            // fstat of the open file shows them until its last close.
            if let Some(orphan) = self.handles.lock().orphans.get_mut(&fid) {
                orphan.size = w.len().unwrap_or(orphan.size);
                orphan.attrs.mtime = mtime(orphan.attrs.mtime);
            }
            w.standing = Standing::Clean;
            return Ok(None);
        };
        let (content, checked) = match self.overlay_patch(w, &inode)? {
            Some(patch) => (patch, false),
            None => (self.whole_or_patch(w, &inode)?, true),
        };
        let len = content.len();
        let result = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ENOENT, "unlinked during the commit"))?;
            // The JSON rule was checked on whole bytes only (a record's are always).
            if is_record(inode) && !checked {
                return Err(err!(EAGAIN, "renamed to a record's name during the commit"));
            }
            let mut attrs = inode.attrs;
            attrs.mtime = mtime(attrs.mtime);
            attrs.ctime = Time::now();
            Ok(match content {
                Content::Whole(data) => new_content(inode, attrs, data),
                // Only onto the version the copy started from.
                Content::Patch { base, .. } if Some(inode.last_seq) != base => {
                    return Err(err!(EAGAIN, "the file changed since this copy was read"));
                }
                Content::Patch {
                    dcrc,
                    ranges,
                    shown,
                    len,
                    ..
                } => {
                    let dcrc = match dcrc {
                        Dcrc::Whole(dcrc) => dcrc,
                        // An append: the checksum goes on from the old one.
                        Dcrc::Appended { to } if to == inode.size => {
                            let tail = ranges.first().map_or(&[][..], |r| &r.data.bytes[..]);
                            crc32c::crc32c_append(inode.dcrc, tail)
                        }
                        Dcrc::Appended { .. } => {
                            return Err(err!(EIO, "a patch's base has another length (a bug)"))
                        }
                    };
                    new_patch(inode, attrs, (len, dcrc), ranges, shown)
                }
            })
        });
        match result {
            Ok(seq) => {
                w.committed();
                w.changes.reset(seq, len);
                // A large plain file's next writes go over the bytes just committed, which the
                // pipeline shares until they reach the disk: copying them at the next write
                // would cost the whole file per save of a file kept open (a log, a journal).
                if let Copy::Loaded(bytes) = &w.copy {
                    if len >= self.opts.patch_min && !is_record(&inode) {
                        let committed = Version::Memory(bytes.clone());
                        w.copy = Copy::Overlay(Box::new(Overlay::over(&committed)?));
                    }
                }
                // New content replaces what could not be restored.
                self.damaged.lock().remove(&fid);
                Ok(Some(seq))
            }
            Err(e) if e.errno == libc::ENOENT => {
                w.standing = Standing::Clean;
                Ok(None)
            }
            Err(e) if e.errno == libc::EAGAIN => {
                // Whole, this time.
                w.changes.whole = true;
                self.try_commit_writer(w)
            }
            Err(e) => Err(e),
        }
    }

    /// The patch of a writer that kept its writes over the file unread (`Copy::Overlay`): its
    /// changed ranges read through the overlay, and the CRC32C of the whole, which for an
    /// append goes on from the old one at the commit. None when it must commit whole (it
    /// changed too much, or must not be compared, or the file is a record).
    fn overlay_patch(&self, w: &Writer, inode: &Inode) -> Result<Option<Content>> {
        let Copy::Overlay(o) = &w.copy else {
            return Ok(None);
        };
        let len = o.len();
        let Some(ranges) = w.changes.ranges(len) else {
            return Ok(None);
        };
        if is_record(inode) || len < self.opts.patch_min || 2 * covered(&ranges) >= len {
            return Ok(None);
        }
        let version = Version::Overlay(Arc::new((**o).clone()));
        let dcrc = match w.changes.base_len {
            Some(to) if ranges == [(to, len)] || (ranges.is_empty() && to == len) => {
                Dcrc::Appended { to }
            }
            _ => Dcrc::Whole(version.crc32c()?),
        };
        let ranges = ranges
            .iter()
            .map(|(s, e)| {
                let data = o.read_at(*s, (e - s) as usize)?;
                Ok(Range {
                    at: *s,
                    data: Data::new(Arc::new(data)),
                })
            })
            .collect::<Result<Vec<Range>>>()?;
        let token = w.token.clone();
        Ok(Some(Content::Patch {
            base: w.changes.base,
            dcrc,
            ranges,
            shown: Shown { version, token },
            len,
        }))
    }

    /// A writer's whole bytes, refused if the file is a record and they are not JSON, as a
    /// patch when the file is large and the save changed less than half of it: the ranges the
    /// writer touched, or for a rewrite (open(O_TRUNC)) what differs from the version it
    /// replaces.
    fn whole_or_patch(&self, w: &mut Writer, inode: &Inode) -> Result<Content> {
        let bytes = self.load(w)?.clone();
        if is_record(inode) {
            if let Err(invalid) = self.validate(&bytes) {
                let dcrc = crate::log::crc32c(&bytes);
                let e = if w.rejected == Some(dcrc) {
                    // The first refusal was logged (at warn) with where its bytes are kept.
                    err!(
                        EINVAL,
                        "{}: refused again, {invalid}",
                        show(&inode.name.bytes())
                    )
                    .at(log::Level::Debug)
                } else {
                    w.rejected = Some(dcrc);
                    self.reject(&inode.name.bytes(), &bytes, &invalid)
                };
                return Err(e);
            }
        }
        let len = bytes.len() as u64;
        let (ranges, base) = match w.changes.ranges(len) {
            Some(r) => (Some(r), w.changes.base),
            None if len >= self.opts.patch_min && !w.changes.whole => {
                self.diff_committed(inode.fid, &bytes)
            }
            None => (None, None),
        };
        let ranges = ranges.filter(|r| len >= self.opts.patch_min && 2 * covered(r) < len);
        Ok(match ranges {
            Some(ranges) => {
                let (dcrc, ranges) = patch_of(&bytes, &ranges);
                let version = Version::Memory(bytes);
                Content::Patch {
                    base,
                    dcrc: Dcrc::Whole(dcrc),
                    ranges,
                    shown: Shown {
                        version,
                        token: None,
                    },
                    len,
                }
            }
            None => Content::Whole(Data::new(bytes)),
        })
    }

    /// The range of `new` that differs from `fid`'s committed bytes (from the first byte that
    /// differs; to the last one that does when the lengths match, else to the end), and the
    /// `last_seq` of the version compared with. Nothing if that version cannot be read.
    fn diff_committed(&self, fid: Fid, new: &[u8]) -> (Option<Vec<(u64, u64)>>, Option<Seq>) {
        let Ok((old, Some(seq))) = self.version(fid) else {
            return (None, None);
        };
        let Ok(old) = old.version.read_all(self.opts.max_file_size) else {
            return (None, None);
        };
        let start = old.iter().zip(new).take_while(|(a, b)| a == b).count();
        let end = match old.len() == new.len() {
            true => {
                let same = old[start..].iter().rev().zip(new[start..].iter().rev());
                new.len() - same.take_while(|(a, b)| a == b).count()
            }
            false => new.len(),
        };
        let ranges = match start < end {
            true => vec![(start as u64, end as u64)],
            false => Vec::new(),
        };
        (Some(ranges), Some(seq))
    }
}

/// A writer's new bytes, as its commit logs them.
enum Content {
    Whole(Data),
    /// The changed ranges of the version `base` (the file's `last_seq` then), the CRC32C
    /// of the whole, and the new version for readers meanwhile.
    Patch {
        base: Option<Seq>,
        dcrc: Dcrc,
        ranges: Vec<Range>,
        shown: Shown,
        len: u64,
    },
}

enum Dcrc {
    Whole(u32),
    /// An append to a version of `to` bytes: its checksum goes on from that version's.
    Appended {
        to: u64,
    },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Whole(data) => data.len(),
            Content::Patch { len, .. } => *len,
        }
    }
}

fn covered(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(s, e)| e - s).sum()
}

/// The CRC32C of `bytes` and the ranges of them a `PATCH` carries.
fn patch_of(bytes: &[u8], ranges: &[(u64, u64)]) -> (u32, Vec<Range>) {
    let ranges = ranges
        .iter()
        .map(|(s, e)| Range {
            at: *s,
            data: Data::new(Arc::new(bytes[*s as usize..*e as usize].to_vec())),
        })
        .collect();
    (crate::log::crc32c(bytes), ranges)
}
