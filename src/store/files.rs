//! Changing files in STORE: the one helper that replaces a file atomically, and renames,
//! removals and directory syncs that report which path failed.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::disk::{Disk, EntryKind, FileMeta};
use crate::error::{Error, Result};

use super::layout::Layout;

pub(super) fn io_err<'a>(what: &'a str, path: &'a Path) -> impl Fn(io::Error) -> Error + 'a {
    move |e| Error::io(format!("{what} {}", path.display()), &e)
}

/// fsync of a directory, so that the names created or removed in it are durable.
pub fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<()> {
    disk.sync_dir(dir)
        .map_err(io_err("fsync of directory", dir))
}

/// Writes `bytes` to `tmp`, then renames it over `dest`. With `durable`, the temp file is
/// fsynced before the rename and `dest`'s directory after it: the classic atomic replace.
/// Without, the caller makes it durable later (see FORMAT.md, "Writing and syncing").
pub fn replace_file(
    disk: &dyn Disk,
    tmp: &Path,
    dest: &Path,
    bytes: &[u8],
    meta: Option<&FileMeta>,
    durable: bool,
) -> Result<()> {
    let written = disk
        .write_file(tmp, bytes, meta)
        .map_err(io_err("writing", tmp))
        .and_then(|_| match durable {
            true => disk.sync_file(tmp).map_err(io_err("fsync of", tmp)),
            false => Ok(()),
        });
    if let Err(e) = written {
        let _ = disk.remove(tmp);
        return Err(e);
    }
    rename(disk, tmp, dest)?;
    if durable {
        sync_dir(disk, dest.parent().expect("a backing file has a directory"))?;
    }
    Ok(())
}

/// Writes a new file at `path`, a name in tmp/ of the store's own (a copy staged to be renamed
/// into place), with `meta`. Not synced.
pub fn write_file(disk: &dyn Disk, path: &Path, bytes: &[u8], meta: &FileMeta) -> Result<()> {
    disk.write_file(path, bytes, Some(meta)).map_err(|e| {
        let _ = disk.remove(path);
        io_err("writing", path)(e)
    })
}

/// Changes a backing file in place by a `PATCH`'s ranges and length, then gives it `meta`. Not
/// synced: a crash may leave any part of it written, which recovery's replay of the tail
/// mends (`crate::log::apply_patch`).
pub fn patch_file(
    disk: &dyn Disk,
    path: &Path,
    len: u64,
    ranges: &[crate::log::Range],
    meta: &FileMeta,
) -> Result<()> {
    in_place(
        disk,
        path,
        len,
        ranges.iter().map(|r| (r.at, &r.data.bytes[..])),
        meta,
    )
}

/// Overwrites a backing file in place with a `SET`'s bytes, then gives it `meta`: cheaper for
/// the filesystem than a new file renamed over it (no inode made and freed, no directory
/// changed). Not synced: a crash may leave it part way between versions, and recovery then
/// writes the `SET`'s bytes from the log's tail, which keeps them until a checkpoint has
/// synced this file. False, with nothing written, when no regular file is there to overwrite
/// (one removed or replaced by hand, which a `SET` logged again repairs).
pub fn overwrite_file(disk: &dyn Disk, path: &Path, bytes: &[u8], meta: &FileMeta) -> Result<bool> {
    match disk.stat(path) {
        Ok(st) if st.kind == EntryKind::File => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("stat of", path)(e)),
    }
    in_place(
        disk,
        path,
        bytes.len() as u64,
        [(0, bytes)].into_iter(),
        meta,
    )?;
    Ok(true)
}

fn in_place<'a>(
    disk: &dyn Disk,
    path: &Path,
    len: u64,
    writes: impl Iterator<Item = (u64, &'a [u8])>,
    meta: &FileMeta,
) -> Result<()> {
    let f = disk
        .open_file(path, false)
        .map_err(io_err("opening", path))?;
    for (at, bytes) in writes {
        f.write_at(at, bytes).map_err(io_err("writing", path))?;
    }
    f.set_len_and_meta(len, meta)
        .map_err(io_err("setting the length and attributes of", path))
}

/// Like `replace_file`, for a symbolic link.
pub fn replace_symlink(disk: &dyn Disk, tmp: &Path, dest: &Path, target: &[u8]) -> Result<()> {
    let _ = disk.remove(tmp);
    disk.symlink(target, tmp)
        .map_err(io_err("creating symlink", tmp))?;
    rename(disk, tmp, dest)
}

pub fn set_meta(disk: &dyn Disk, path: &Path, meta: &FileMeta) -> Result<()> {
    disk.set_meta(path, meta)
        .map_err(io_err("setting attributes of", path))
}

pub fn rename(disk: &dyn Disk, from: &Path, to: &Path) -> Result<()> {
    disk.rename(from, to).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            &e,
        )
    })
}

/// renameat2(RENAME_EXCHANGE): both names stay, their files swap.
pub fn exchange(disk: &dyn Disk, a: &Path, b: &Path) -> Result<()> {
    disk.exchange(a, b).map_err(|e| {
        Error::io(
            format!("exchanging {} and {}", a.display(), b.display()),
            &e,
        )
    })
}

/// Removes a file; one that is already gone is fine (recovery may redo a removal).
/// Makes a directory of the backing tree (0700: its mode and times are the log's); one that
/// is there already is left as it is.
pub fn make_dir(disk: &dyn Disk, path: &Path) -> Result<()> {
    match disk.create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match disk.stat(path) {
            Ok(st) if st.kind == crate::disk::EntryKind::Dir => Ok(()),
            _ => Err(Error::io(
                format!("creating directory {}", path.display()),
                &e,
            )),
        },
        Err(e) => Err(Error::io(
            format!("creating directory {}", path.display()),
            &e,
        )),
    }
}

/// Removes an empty directory of the backing tree; one already gone is fine.
pub fn remove_dir(disk: &dyn Disk, path: &Path) -> Result<()> {
    match disk.remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("removing directory {}", path.display()),
            &e,
        )),
    }
}

pub fn remove(disk: &dyn Disk, path: &Path) -> Result<()> {
    match disk.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), &e)),
    }
}

/// Removes everything in `tmp/`: the remains of interrupted replacements.
pub fn clear_tmp(disk: &dyn Disk, layout: &Layout) -> Result<usize> {
    let dir = layout.tmp();
    let names = disk.list(&dir).map_err(io_err("listing", &dir))?;
    for name in &names {
        remove(disk, &dir.join(OsStr::from_bytes(name)))?;
    }
    if !names.is_empty() {
        sync_dir(disk, &dir)?;
    }
    Ok(names.len())
}
