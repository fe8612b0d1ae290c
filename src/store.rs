//! The STORE directory on disk: its layout, the marker that makes a directory a store, the
//! lock that keeps a second daemon out, and the one helper that replaces a file atomically.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

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

/// fsync of a directory, so that the names created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), &e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("fsync of directory {}", dir.display()), &e))
}

/// What to give a replaced file besides its bytes.
pub struct FileMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
}

/// Writes `bytes` to `tmp`, then renames it over `dest`. With `durable`, the temp file is
/// fsynced before the rename and `dest`'s directory after it: the classic atomic replace.
/// Without, the caller makes it durable later (see FORMAT.md, "Writing and syncing").
pub fn replace_file(
    tmp: &Path,
    dest: &Path,
    bytes: &[u8],
    meta: Option<&FileMeta>,
    durable: bool,
) -> Result<()> {
    let res = (|| -> Result<()> {
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| Error::io(ctx("creating"), &e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io(ctx("writing"), &e))?;
        if let Some(m) = meta {
            apply_meta(&f, m).map_err(|e| Error::io(ctx("setting attributes of"), &e))?;
        }
        if durable {
            f.sync_all().map_err(|e| Error::io(ctx("fsync of"), &e))?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    rename(tmp, dest)?;
    if durable {
        sync_dir(dest.parent().expect("a backing file has a directory"))?;
    }
    Ok(())
}

/// Like `replace_file`, for a symbolic link.
pub fn replace_symlink(tmp: &Path, dest: &Path, target: &[u8], meta: &FileMeta) -> Result<()> {
    let _ = fs::remove_file(tmp);
    std::os::unix::fs::symlink(OsStr::from_bytes(target), tmp)
        .map_err(|e| Error::io(format!("creating symlink {}", tmp.display()), &e))?;
    let _ = std::os::unix::fs::lchown(tmp, Some(meta.uid), Some(meta.gid));
    rename(tmp, dest)
}

fn apply_meta(f: &File, m: &FileMeta) -> std::io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fd is a valid open descriptor for the duration of these calls.
    unsafe {
        if libc::fchown(fd, m.uid, m.gid) != 0 {
            let e = std::io::Error::last_os_error();
            // A non-root daemon cannot give files away; the log still holds the owner.
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
        }
        if libc::fchmod(fd, m.mode & 0o7777) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let times = [m.atime.to_timespec(), m.mtime.to_timespec()];
        if libc::futimens(fd, times.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets mode, owner and times of an existing backing file (an ATTR entry).
pub fn set_meta(path: &Path, m: &FileMeta) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    apply_meta(&f, m)
        .map_err(|e| Error::io(format!("setting attributes of {}", path.display()), &e))
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            &e,
        )
    })
}

/// renameat2(RENAME_EXCHANGE): both names stay, their files swap.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())
        .map_err(|_| err!(EINVAL, "NUL in path"))?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())
        .map_err(|_| err!(EINVAL, "NUL in path"))?;
    // SAFETY: both are valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("exchanging {} and {}", a.display(), b.display()),
            &e,
        ));
    }
    Ok(())
}

/// Removes a file; one that is already gone is fine (recovery may redo a removal).
pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), &e)),
    }
}

/// The exclusive lock on a store, held for as long as this value lives.
pub struct StoreLock {
    _file: File,
}

/// Opens (creating if needed) the store at `layout`, refusing a foreign directory, and takes
/// its lock. `create` allows making a new store in a missing or empty directory.
pub fn open_store(layout: &Layout, create: bool) -> Result<StoreLock> {
    let store = &layout.store;
    match fs::metadata(store) {
        Ok(m) if !m.is_dir() => {
            return Err(err!(ENOTDIR, "{} is not a directory", store.display()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            fs::create_dir_all(store)
                .map_err(|e| Error::io(format!("creating {}", store.display()), &e))?;
        }
        Err(e) => return Err(Error::io(format!("opening store {}", store.display()), &e)),
    }
    if !layout.marker().exists() {
        let empty = fs::read_dir(store)
            .map_err(|e| Error::io(format!("listing {}", store.display()), &e))?
            .next()
            .is_none();
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
            &store.join(".recordfs.store.tmp"),
            &layout.marker(),
            MARKER_TEXT.as_bytes(),
            None,
            true,
        )?;
    }
    let marker = fs::read_to_string(layout.marker())
        .map_err(|e| Error::io(format!("reading {}", layout.marker().display()), &e))?;
    if marker.trim() != MARKER_TEXT.trim() {
        return Err(err!(
            EINVAL,
            "{} holds {:?}: not a store this version of recordfs can open",
            layout.marker().display(),
            marker.trim()
        ));
    }
    let lock = lock_store(layout)?;
    for dir in layout.dirs() {
        if !dir.exists() {
            fs::create_dir(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), &e))?;
            sync_dir(store)?;
        }
    }
    Ok(lock)
}

fn lock_store(layout: &Layout) -> Result<StoreLock> {
    let path = layout.store.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    // SAFETY: valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(err!(
            EBUSY,
            "store {} is in use by {}",
            layout.store.display(),
            if holder.trim().is_empty() {
                "another process".to_string()
            } else {
                holder.trim().to_string()
            }
        ));
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let text = format!(
        "recordfs pid {} on {} since {} (unix time)\n",
        std::process::id(),
        host.trim(),
        Time::now().secs
    );
    file.set_len(0)
        .and_then(|_| file.write_all(text.as_bytes()))
        .map_err(|e| Error::io(format!("writing {}", path.display()), &e))?;
    Ok(StoreLock { _file: file })
}

/// Removes everything in `tmp/`: the remains of interrupted replacements.
pub fn clear_tmp(layout: &Layout) -> Result<usize> {
    let mut n = 0;
    let dir = layout.tmp();
    for ent in
        fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?
    {
        let ent = ent.map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
        remove(&ent.path())?;
        n += 1;
    }
    if n > 0 {
        sync_dir(&dir)?;
    }
    Ok(n)
}

/// Keeps the bytes of a refused save in `rejected/`, returning where. Old ones beyond
/// `MAX_REJECTED_KEPT` are removed so a looping bad writer cannot fill the disk.
pub fn keep_rejected(layout: &Layout, name: &[u8], tag: u64, bytes: &[u8]) -> Result<PathBuf> {
    let dir = layout.rejected();
    let mut file_name = name.to_vec();
    file_name.extend_from_slice(format!(".{tag}.rejected").as_bytes());
    // A 255-byte name plus the tag would be too long for the host filesystem.
    if file_name.len() > 255 {
        file_name.drain(..file_name.len() - 255);
    }
    let dest = dir.join(OsStr::from_bytes(&file_name));
    replace_file(
        &layout.tmp().join(format!("rejected.{tag}")),
        &dest,
        bytes,
        None,
        false,
    )?;
    let mut kept: Vec<(i64, PathBuf)> = fs::read_dir(&dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.metadata().ok()?.mtime(), e.path())))
        .collect();
    if kept.len() > MAX_REJECTED_KEPT {
        kept.sort();
        for (_, p) in &kept[..kept.len() - MAX_REJECTED_KEPT] {
            let _ = fs::remove_file(p);
        }
    }
    Ok(dest)
}
