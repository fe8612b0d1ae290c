//! Holding the backing tree against the namespace: every backing file checked by length and
//! CRC32C, restored from the log (or from a copy under another name), strays set aside.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::scan::{name_str, Finding};
use crate::disk::{Disk, EntryKind, FileMeta};
use crate::error::{err, Error, Result};
use crate::log::{self, crc32c, Op};
use crate::namespace::{Inode, Namespace};
use crate::store::{self, Layout};
use crate::types::{Attrs, Fid, Kind, Time, ROOT};

fn meta_of(a: &Attrs) -> FileMeta {
    FileMeta {
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        atime: a.atime,
        mtime: a.mtime,
    }
}

/// How a backing file differs from what the log says it holds.
fn backing_problem(disk: &dyn Disk, layout: &Layout, inode: &Inode) -> Option<String> {
    let path = layout.backing(&inode.name);
    let st = match disk.stat(&path) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some("missing".into()),
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    match inode.kind {
        Kind::Symlink => {
            if st.kind != EntryKind::Symlink {
                return Some("not a symlink".into());
            }
            let target = disk.read_link(&path).ok()?;
            let want = inode.target.as_deref().map(Vec::as_slice).unwrap_or(&[]);
            (target != want).then(|| "wrong symlink target".into())
        }
        Kind::File => {
            if st.kind != EntryKind::File {
                return Some("not a regular file".into());
            }
            if st.len != inode.size {
                return Some(format!("{} bytes, the log says {}", st.len, inode.size));
            }
            match disk.read(&path) {
                Ok(bytes) if crc32c(&bytes) != inode.dcrc => {
                    Some("content differs from the log (checksum)".into())
                }
                Ok(_) => None,
                Err(e) => Some(format!("unreadable: {e}")),
            }
        }
        Kind::Dir => None,
    }
}

/// Whether a backing file's mode, owner and mtime are the log's.
fn meta_matches(disk: &dyn Disk, layout: &Layout, inode: &Inode) -> bool {
    disk.stat(&layout.backing(&inode.name)).is_ok_and(|st| {
        st.mode == inode.attrs.mode
            && (st.uid, st.gid) == (inode.attrs.uid, inode.attrs.gid)
            && st.mtime == inode.attrs.mtime
    })
}

/// Rewrites a backing file from the entry that holds its bytes.
fn restore(disk: &dyn Disk, layout: &Layout, inode: &Inode, max_line: u64) -> Result<()> {
    let loc = inode
        .content
        .ok_or_else(|| err!(EIO, "the log no longer holds its bytes"))?;
    let segment = layout.log_dir().join(log::segment_name(loc.segment));
    let entry = log::read_entry_at(disk, &segment, loc.offset, max_line)?;
    let Op::Set { data, .. } = entry.op else {
        return Err(err!(EIO, "the entry at its log position is not a SET"));
    };
    write_back(disk, layout, inode, &data.bytes)
}

/// Puts `bytes` in place as the backing file (or symlink) of `inode`, with its attributes.
fn write_back(disk: &dyn Disk, layout: &Layout, inode: &Inode, bytes: &[u8]) -> Result<()> {
    let dest = layout.backing(&inode.name);
    if disk.stat(&dest).is_ok_and(|st| st.kind == EntryKind::Dir) {
        // Nothing of ours is a directory: set it aside rather than delete what is in it.
        set_aside(disk, layout, &inode.name)?;
    }
    let tmp = layout.tmp().join(format!("restore.{}", inode.fid));
    match inode.kind {
        Kind::Symlink => store::replace_symlink(disk, &tmp, &dest, bytes),
        _ => store::replace_file(
            disk,
            &tmp,
            &dest,
            bytes,
            Some(&meta_of(&inode.attrs)),
            false,
        ),
    }
}

/// A regular file in the backing tree holding exactly the bytes `inode` should have.
fn find_copy(
    disk: &dyn Disk,
    layout: &Layout,
    inode: &Inode,
    names: &[Vec<u8>],
) -> Option<PathBuf> {
    if inode.kind != Kind::File {
        return None;
    }
    names.iter().map(|n| layout.backing(n)).find(|p| {
        disk.stat(p)
            .is_ok_and(|st| st.kind == EntryKind::File && st.len == inode.size)
            && disk.read(p).is_ok_and(|b| crc32c(&b) == inode.dcrc)
    })
}

fn copy_into_place(disk: &dyn Disk, layout: &Layout, inode: &Inode, from: &Path) -> Result<()> {
    let bytes = disk
        .read(from)
        .map_err(|e| Error::io(format!("reading {}", from.display()), &e))?;
    write_back(disk, layout, inode, &bytes)
}

/// Moves something in the backing tree to `lost+found/`, returning where.
fn set_aside(disk: &dyn Disk, layout: &Layout, name: &[u8]) -> Result<PathBuf> {
    let mut moved = name.to_vec();
    moved.extend_from_slice(format!(".{}", Time::now().millis()).as_bytes());
    let dest = layout.lost_found().join(OsStr::from_bytes(&moved));
    store::rename(disk, &layout.backing(name), &dest)?;
    Ok(dest)
}

/// What `reconcile` found and did.
#[derive(Default, Debug)]
pub struct Reconciled {
    pub findings: Vec<Finding>,
    /// Files whose backing file is wrong and could not be restored.
    pub damaged: HashSet<Fid>,
    /// Backing files written (to be synced), and whether the tree's names changed.
    pub restored: Vec<(PathBuf, Kind)>,
    pub changed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Repair {
    /// Only report (`check`, and read-only mounts).
    No,
    /// Restore what differs from the log, which is the truth.
    FromTheLog,
    /// The same, but a backing file that differs is first moved to `lost+found/`: after a
    /// salvage the log is known to miss entries, and the file may hold the only copy of one.
    KeepingWhatDiffers,
}

/// Holds `root/` against the namespace: restores from the log and moves unknown files to
/// `lost+found/`, or only reports.
pub(super) fn reconcile(
    disk: &dyn Disk,
    layout: &Layout,
    ns: &Namespace,
    max_line: u64,
    repair: Repair,
) -> Result<Reconciled> {
    let (repair, keep_differing) = match repair {
        Repair::No => (false, false),
        Repair::FromTheLog => (true, false),
        Repair::KeepingWhatDiffers => (true, true),
    };
    let mut out = Reconciled::default();
    let root = layout.root();
    let names = disk
        .list(&root)
        .map_err(|e| Error::io(format!("listing {}", root.display()), &e))?;
    let strays: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| ns.lookup(ROOT, n).is_none())
        .cloned()
        .collect();
    let mut files: Vec<&Inode> = ns.files().collect();
    files.sort_by_key(|i| i.fid);
    let mut progress = crate::progress::Progress::new("checking backing files", files.len() as u64);
    for inode in files {
        progress.tick();
        let Some(problem) = backing_problem(disk, layout, inode) else {
            if repair && inode.kind == Kind::File && !meta_matches(disk, layout, inode) {
                // An attribute change whose entry had not reached the backing file.
                let path = layout.backing(&inode.name);
                store::set_meta(disk, &path, &meta_of(&inode.attrs))?;
                out.restored.push((path, inode.kind));
            }
            continue;
        };
        let name = name_str(&inode.name);
        if !repair {
            out.findings.push(Finding {
                what: format!("{name}: backing file {problem}"),
            });
            continue;
        }
        let mut kept = String::new();
        if keep_differing && disk.stat(&layout.backing(&inode.name)).is_ok() {
            let dest = set_aside(disk, layout, &inode.name)?;
            kept = format!(" (what was there is in {})", dest.display());
        }
        let restored = restore(disk, layout, inode, max_line).or_else(|e| {
            // The log no longer holds the bytes (they were compacted into a snapshot), but a
            // rename or exchange that had not reached the disk may have left them under
            // another name: take them from there.
            match find_copy(disk, layout, inode, &names) {
                Some(from) => copy_into_place(disk, layout, inode, &from),
                None => Err(e),
            }
        });
        match restored {
            Ok(()) => {
                out.changed = true;
                out.restored.push((layout.backing(&inode.name), inode.kind));
                out.findings.push(Finding {
                    what: format!("{name}: backing file {problem}; restored{kept}"),
                });
            }
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => {
                out.damaged.insert(inode.fid);
                out.findings.push(Finding {
                    what: format!(
                        "{name}: backing file {problem} and cannot be restored: {}; reads answer EIO{kept}",
                        e.reason
                    ),
                });
            }
        }
    }
    for name in strays {
        let shown = name_str(&name);
        if repair {
            let dest = set_aside(disk, layout, &name)?;
            out.changed = true;
            out.findings.push(Finding {
                what: format!(
                    "{shown}: in the backing tree but not in the log; moved to {}",
                    dest.display()
                ),
            });
        } else {
            out.findings.push(Finding {
                what: format!("{shown}: in the backing tree but not in the log"),
            });
        }
    }
    Ok(out)
}

/// Makes every restored backing file and the tree's names durable. A symlink cannot be
/// fsynced by itself: if one was restored, everything is synced.
pub(super) fn sync_restored(
    disk: &dyn Disk,
    layout: &Layout,
    restored: &[(PathBuf, Kind)],
) -> Result<()> {
    for (path, kind) in restored {
        if *kind == Kind::Symlink {
            disk.sync_everything(&layout.root())
                .map_err(|e| Error::io("syncfs of the backing tree", &e))?;
        } else {
            disk.sync_file(path)
                .map_err(|e| Error::io(format!("fsync of {}", path.display()), &e))?;
        }
    }
    store::sync_dir(disk, &layout.root())?;
    store::sync_dir(disk, &layout.lost_found())
}
