//! Open handles: the table, a reader's version, and directory listings.

use std::sync::Arc;

use log::warn;
use parking_lot::Mutex;

use super::rules::dir_of;
use super::state::{Changes, Copy, DirEntry, Handle, Listing, Owners, RecordFs, Standing, Writer};
use crate::error::{err, Result};
use crate::limits::MAX_HANDLES;
use crate::pipeline::Read;
use crate::types::{Fid, Kind, Seq, Time};
use crate::view::{Held, Version};

impl RecordFs {
    // -----------------------------------------------------------------------------------------
    // Handles

    pub(super) fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .lock()
            .map
            .get(&fh)
            .cloned()
            .ok_or_else(|| err!(EBADF, "no open handle {fh}"))
    }

    /// The handles open for writing on `fid`, taken from the table and the table released:
    /// a writer is locked only after it (lock order, see `commit_writers_of`).
    pub(super) fn writers_of(&self, fid: Fid) -> Vec<Arc<Handle>> {
        let hs = self.handles.lock();
        let fhs = hs.writers.get(&fid).map(Vec::as_slice).unwrap_or_default();
        fhs.iter().filter_map(|f| hs.map.get(f).cloned()).collect()
    }

    /// The committed attributes of `fid` when they are settled: no handle is open to write
    /// the file, so nothing can change them but requests the kernel sees (which the kernel may
    /// then cache; `fuse::kernel`). The handles are looked at before the attributes are read:
    /// a writer that opens after the look commits nothing before its first write, and the
    /// kernel takes that write as news that the size and times are stale (a reply it asked for
    /// before the write is dropped or forgotten). `None` for a file unlinked while open.
    ///
    /// Nor are a set-user-ID or set-group-ID file's: a write by another than its owner clears
    /// those bits here (`caller::mode_after_change`), and the kernel, which marks only the size
    /// and times stale at a write, would go on showing them, and honouring them at exec.
    pub fn settled(&self, fid: Fid) -> Option<super::Stat> {
        if self
            .handles
            .lock()
            .writers
            .get(&fid)
            .is_some_and(|w| !w.is_empty())
        {
            return None;
        }
        let stat = super::Stat::of(&self.pipeline.inode(fid)?);
        (stat.attrs.mode & (libc::S_ISUID | libc::S_ISGID) == 0).then_some(stat)
    }

    /// Whether handle `fh` made its file when it was opened (`create_as` opens an existing
    /// one when the name is there), without set-ID bits (see `settled`).
    pub fn settled_when_made(&self, fh: u64, stat: &super::Stat) -> bool {
        stat.attrs.mode & (libc::S_ISUID | libc::S_ISGID) == 0
            && matches!(self.handle(fh).as_deref(), Ok(Handle::Write(w)) if w.lock().created)
    }

    pub(super) fn insert_handle(&self, h: Handle, fid: Option<Fid>) -> Result<u64> {
        let mut hs = self.handles.lock();
        if hs.map.len() >= MAX_HANDLES {
            return Err(err!(ENFILE, "{MAX_HANDLES} handles are open"));
        }
        let fh = hs.next;
        hs.next += 1;
        if let (Handle::Write(_), Some(fid)) = (&h, fid) {
            hs.writers.entry(fid).or_default().push(fh);
        }
        hs.map.insert(fh, Arc::new(h));
        if let Some(fid) = fid {
            *hs.opens.entry(fid).or_default() += 1;
        }
        Ok(fh)
    }

    /// Opens `fid`; `base` is the version to start from (a new file's), else the committed one.
    pub(super) fn add_handle(
        &self,
        fid: Fid,
        flags: i32,
        base: Option<(Held, Option<Seq>)>,
    ) -> Result<u64> {
        let acc = flags & libc::O_ACCMODE;
        if acc == libc::O_RDONLY {
            let (held, _) = match base {
                Some(s) => s,
                None => self.version(fid)?,
            };
            let (version, _token) = (held.version, held.token);
            return self.insert_handle(
                Handle::Read {
                    fid,
                    version,
                    _token,
                },
                Some(fid),
            );
        }
        self.writable()?;
        let truncate = flags & libc::O_TRUNC != 0;
        // open(O_TRUNC) empties the file at the commit point, not before: a crash before close
        // keeps the old content.
        let (copy, standing, base_seq, token) = match (truncate, base) {
            (true, _) => (
                Copy::Loaded(Arc::new(Vec::new())),
                Standing::Truncated,
                None,
                None,
            ),
            (false, base) => {
                let (held, seq) = match base {
                    Some(b) => b,
                    None => self.version(fid)?,
                };
                (Copy::Unread(held.version), Standing::Clean, seq, held.token)
            }
        };
        let writer = Writer {
            fid,
            copy,
            standing,
            append: flags & libc::O_APPEND != 0,
            readable: acc == libc::O_RDWR,
            last_write: Time::now(),
            rejected: None,
            owners: Owners::Known(Vec::new()),
            writing_threads: Vec::new(),
            created: false,
            riding: None,
            rider: 0,
            changes: Changes::since(base_seq),
            token,
        };
        self.insert_handle(Handle::Write(Mutex::new(writer)), Some(fid))
    }

    /// The committed version of `fid`, with its `last_seq` when taken (None when its bytes
    /// came back from the log or a copy: they are committed again).
    pub(super) fn version(&self, fid: Fid) -> Result<(Held, Option<Seq>)> {
        if self.damaged.lock().contains(&fid) {
            return Err(err!(
                EIO,
                "the backing file of inode {fid} is damaged; see the mount's log"
            ));
        }
        match self.pipeline.version(fid) {
            Ok(Read::Fine(held, seq)) => Ok((held, Some(seq))),
            Ok(Read::Restore(bytes)) => {
                // The backing file is rewritten once the log holds its bytes again.
                if self.writable().is_ok() {
                    if let Err(e) = self.pipeline.log_again(fid, bytes.clone()) {
                        warn!("inode {fid}: its backing file is not rewritten: {e}");
                    }
                }
                let version = Version::Memory(bytes);
                Ok((
                    Held {
                        version,
                        token: None,
                    },
                    None,
                ))
            }
            Err(e) => Err(match (e.errno, self.pipeline.inode(fid)) {
                // Removed, and its backing file gone too: the kernel will look again.
                (libc::ENOENT, None) => err!(ESTALE, "inode {fid} was removed"),
                (libc::EIO, Some(_)) => {
                    // Not served until the store is mounted again (or the file rewritten).
                    self.damaged.lock().insert(fid);
                    e
                }
                _ => e,
            }),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Directories

    /// Opens a directory. Its entries are taken at the first read, from offset 0: readdir's
    /// offsets index them, so that they stay stable while entries are added and removed
    /// (seekdir and telldir).
    pub fn opendir(&self, fid: Fid) -> Result<u64> {
        self.pipeline.with_ns(|ns| dir_of(ns, fid).map(|_| ()))?;
        let entries = Mutex::new(None);
        self.insert_handle(Handle::Dir { fid, entries }, None)
    }

    /// The entries of directory `fid` as they are now, in the order of their names' hashes.
    fn list_dir(&self, fid: Fid) -> Result<Listing> {
        self.pipeline.with_ns(|ns| {
            Ok(Listing {
                parent: dir_of(ns, fid)?.parent,
                keys: ns.listing(fid),
            })
        })
    }

    /// The entries of an open directory from `offset` on (`.` and `..` first), each given to
    /// `add` with the offset of the one after it (its index + 1), until `add` says the reply
    /// is full: a call costs what it answers, not the directory. A read from offset 0 (the
    /// first, or one after rewinddir) takes the directory's entries as they are now, as POSIX
    /// asks of rewinddir; a directory removed meanwhile lists nothing, as on ext4. An entry
    /// whose name went since then (removed or renamed) is skipped, and one made since then is
    /// not listed: POSIX leaves both open.
    pub fn readdir_into(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> Result<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { fid, entries } = &*handle else {
            return Err(err!(ENOTDIR, "handle {fh} is not a directory"));
        };
        let mut listed = entries.lock();
        let listing = match &mut *listed {
            Some(listing) if offset > 0 => listing,
            listed => listed.insert(match self.list_dir(*fid) {
                Ok(now) => now,
                Err(e) if e.errno == libc::ENOENT => return Ok(()),
                Err(e) => return Err(e),
            }),
        };
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        let dots: [(&[u8], Fid); 2] = [(b".", *fid), (b"..", listing.parent)];
        for (i, (name, ino)) in dots.into_iter().enumerate().skip(from) {
            let dot = DirEntry {
                ino,
                kind: Kind::Dir,
                name: name.to_vec(),
            };
            if add(&dot, i as u64 + 1) {
                return Ok(());
            }
        }
        let keys = &listing.keys;
        self.pipeline.with_ns(|ns| {
            for (at, &(hash, file)) in keys.iter().enumerate().skip(from.saturating_sub(2)) {
                // The same file named twice in the directory under one hash: which of them.
                let nth = keys[..at]
                    .iter()
                    .rev()
                    .take_while(|k| **k == (hash, file))
                    .count();
                let Some((name, inode)) = ns.named(*fid, hash, file, nth) else {
                    continue;
                };
                let entry = DirEntry {
                    ino: file,
                    kind: inode.kind,
                    name: name.to_vec(),
                };
                if add(&entry, at as u64 + 3) {
                    break;
                }
            }
        });
        Ok(())
    }

    /// All the entries from `offset` on (tests and tools; the adapter uses `readdir_into`).
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.readdir_into(fh, offset, |e, _| {
            out.push(e.clone());
            false
        })?;
        Ok(out)
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().map.remove(&fh);
    }
}
