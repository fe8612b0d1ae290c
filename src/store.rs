//! The STORE directory: its layout, the marker that makes a directory a store, the lock that
//! keeps a second daemon out, and the one helper that replaces a file atomically. All I/O goes
//! through the `Disk` seam.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::disk::{Disk, DiskLock, EntryKind, FileMeta};
use crate::error::{err, Error, Result};
use crate::log::Time;

pub const MARKER: &str = "recordfs.store";
const MARKER_TEXT: &str = "{\"format\":\"recordfs-store\",\"version\":1}\n";
const LOCK: &str = "lock";
/// How many rejected saves are kept; the oldest go first.
pub const MAX_REJECTED_KEPT: usize = 256;

/// Paths of a store's parts. See FORMAT.md, "Layout of STORE".
#[derive(Clone, Debug)]
pub struct Layout {
    pub store: PathBuf,
}

impl Layout {
    pub fn new(store: &Path) -> Layout {
        Layout {
            store: store.to_owned(),
        }
    }
    pub fn marker(&self) -> PathBuf {
        self.store.join(MARKER)
    }
    pub fn log_dir(&self) -> PathBuf {
        self.store.join("log")
    }
    pub fn root(&self) -> PathBuf {
        self.store.join("root")
    }
    pub fn tmp(&self) -> PathBuf {
        self.store.join("tmp")
    }
    pub fn rejected(&self) -> PathBuf {
        self.store.join("rejected")
    }
    pub fn lost_found(&self) -> PathBuf {
        self.store.join("lost+found")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.store.join("daemon.log")
    }
    /// The backing file of a name in the root directory.
    pub fn backing(&self, name: &[u8]) -> PathBuf {
        self.root().join(OsStr::from_bytes(name))
    }
    fn dirs(&self) -> [PathBuf; 5] {
        [
            self.log_dir(),
            self.root(),
            self.tmp(),
            self.rejected(),
            self.lost_found(),
        ]
    }
}

fn io_err<'a>(what: &'a str, path: &'a Path) -> impl Fn(io::Error) -> Error + 'a {
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
pub fn remove(disk: &dyn Disk, path: &Path) -> Result<()> {
    match disk.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), &e)),
    }
}

/// The exclusive lock on a store, held for as long as this value lives.
pub struct StoreLock {
    _lock: Box<dyn DiskLock>,
}

/// Opens (creating if needed) the store at `layout`, refusing a foreign directory, and takes
/// its lock. `create` allows making a new store in a missing or empty directory.
pub fn open_store(disk: &dyn Disk, layout: &Layout, create: bool) -> Result<StoreLock> {
    let store = &layout.store;
    match disk.stat(store) {
        Ok(st) if st.kind != EntryKind::Dir => {
            return Err(err!(ENOTDIR, "{} is not a directory", store.display()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            disk.create_dir(store).map_err(io_err("creating", store))?;
        }
        Err(e) => return Err(Error::io(format!("opening store {}", store.display()), &e)),
    }
    if disk.stat(&layout.marker()).is_err() {
        let empty = disk
            .list(store)
            .map_err(io_err("listing", store))?
            .is_empty();
        if !empty {
            return Err(err!(
                EEXIST,
                "{} is not a recordfs store and is not empty; recordfs will not adopt it",
                store.display()
            ));
        }
        if !create {
            return Err(err!(ENOENT, "{} is not a recordfs store", store.display()));
        }
        // The marker goes first: a crash during the rest leaves a store that the next open
        // completes, never a half-made directory that looks foreign.
        replace_file(
            disk,
            &store.join(".recordfs.store.tmp"),
            &layout.marker(),
            MARKER_TEXT.as_bytes(),
            None,
            true,
        )?;
    }
    let marker = disk
        .read(&layout.marker())
        .map_err(io_err("reading", &layout.marker()))?;
    if marker.trim_ascii() != MARKER_TEXT.trim().as_bytes() {
        return Err(err!(
            EINVAL,
            "{} holds {:?}: not a store this version of recordfs can open",
            layout.marker().display(),
            String::from_utf8_lossy(marker.trim_ascii())
        ));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let holder = format!(
        "recordfs pid {} on {} since {} (unix time)\n",
        std::process::id(),
        host.trim(),
        Time::now().secs
    );
    let lock_path = store.join(LOCK);
    let lock = disk.lock(&lock_path, &holder).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => err!(
            EBUSY,
            "store {} is in use by {}",
            store.display(),
            if e.to_string().is_empty() {
                "another process".to_string()
            } else {
                e.to_string()
            }
        ),
        _ => Error::io(format!("locking {}", lock_path.display()), &e),
    })?;
    for dir in layout.dirs() {
        if disk.stat(&dir).is_err() {
            disk.create_dir(&dir).map_err(io_err("creating", &dir))?;
            sync_dir(disk, store)?;
        }
    }
    Ok(StoreLock { _lock: lock })
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

/// Keeps the bytes of a refused save in `rejected/`, returning where. Old ones beyond
/// `MAX_REJECTED_KEPT` are removed so a looping bad writer cannot fill the disk.
pub fn keep_rejected(
    disk: &dyn Disk,
    layout: &Layout,
    name: &[u8],
    tag: u64,
    bytes: &[u8],
) -> Result<PathBuf> {
    let dir = layout.rejected();
    let mut file_name = name.to_vec();
    file_name.extend_from_slice(format!(".{tag}.rejected").as_bytes());
    // A 255-byte name plus the tag would be too long for the host filesystem.
    if file_name.len() > 255 {
        file_name.drain(..file_name.len() - 255);
    }
    let dest = dir.join(OsStr::from_bytes(&file_name));
    let tmp = layout.tmp().join(format!("rejected.{tag}"));
    replace_file(disk, &tmp, &dest, bytes, None, false)?;
    let names = disk.list(&dir).map_err(io_err("listing", &dir))?;
    if names.len() > MAX_REJECTED_KEPT {
        let mut kept: Vec<(Time, PathBuf)> = names
            .iter()
            .map(|n| dir.join(OsStr::from_bytes(n)))
            .filter_map(|p| Some((disk.stat(&p).ok()?.mtime, p)))
            .collect();
        kept.sort();
        for (_, p) in &kept[..kept.len() - MAX_REJECTED_KEPT] {
            let _ = disk.remove(p);
        }
    }
    Ok(dest)
}
