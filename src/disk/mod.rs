//! The storage seam: every byte the log and the backing files put on disk goes through `Disk`.
//!
//! `RealDisk` is `std::fs` and `libc`. `SimDisk` (sim/, built for tests and with the `sim` feature) is a disk that knows
//! what was synced and can crash, losing or tearing what was not. The contract each method
//! keeps is written on it; both implementations keep it.

#[cfg(any(test, feature = "sim"))]
pub mod sim;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use crate::types::{Attrs, Time};

/// What a replaced or changed file is given besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
}

impl FileMeta {
    /// What a file's attributes give its backing file.
    pub fn of(a: &Attrs) -> FileMeta {
        FileMeta {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            atime: a.atime,
            mtime: a.mtime,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    Dir,
    Other,
}

/// `lstat` of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskStat {
    pub kind: EntryKind,
    pub len: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
}

/// Reads one fixed version of a file: a later rename over its path does not change it.
pub trait ReadAt: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn size(&self) -> io::Result<u64>;
}

/// A file open for writing at offsets (the log).
pub trait DiskFile: Send + Sync {
    /// Writes all of `bytes` at `offset`, extending the file; a failure may leave part written.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: everything written before it is durable when it returns 0.
    fn sync_data(&self) -> io::Result<()>;
    /// Gives the file length `len`, then mode, owner (where allowed) and times, as
    /// `Disk::set_meta` does by path: a backing file written over.
    fn set_len_and_meta(&self, len: u64, meta: &FileMeta) -> io::Result<()>;
}

/// A held lock on a store; released when dropped.
pub trait DiskLock: Send + Sync {
    /// Replaces the text that names the holder, for whoever finds the lock taken.
    fn say(&self, holder: &str) -> io::Result<()>;
}

/// Nothing this seam creates is readable by anyone but its owner: files are created 0600 and
/// directories 0700 (`write_file` then gives a backing file its own mode, inside a 0700
/// directory). No method follows a symbolic link in the last component of its path, so a link
/// planted in STORE cannot make the daemon write elsewhere (see `access.rs`).
pub trait Disk: Send + Sync + 'static {
    /// Opens a file to write; `create_new` fails with EEXIST if it exists.
    fn open_file(&self, path: &Path, create_new: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens a regular file (not following a symlink) to read the version it has now.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>>;
    /// Creates `path` anew, removing whatever had that name (a link is removed, never
    /// followed), and writes `bytes`, with `meta` if given. Not synced.
    fn write_file(&self, path: &Path, bytes: &[u8], meta: Option<&FileMeta>) -> io::Result<()>;
    /// fsync of a file: its bytes and attributes are durable when it returns 0.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// fsync of a directory: the names created, renamed or removed in it are durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes everything durable (syncfs): the only way to make a symlink's inode durable.
    fn sync_everything(&self, path: &Path) -> io::Result<()>;
    /// rename(2), replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// renameat2(RENAME_EXCHANGE).
    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()>;
    /// Removes a file or symlink; NotFound if it is not there.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// The names in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<Vec<u8>>>;
    /// lstat; NotFound if nothing is there.
    fn stat(&self, path: &Path) -> io::Result<DiskStat>;
    fn symlink(&self, target: &[u8], path: &Path) -> io::Result<()>;
    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Sets mode, owner (where allowed) and times of a regular file.
    fn set_meta(&self, path: &Path, meta: &FileMeta) -> io::Result<()>;
    /// Creates a directory, mode 0700 (its name is durable once the caller syncs its parent).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory; ENOTEMPTY if it is not, ENOTDIR if it is not a directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// chmod of a file or directory; ELOOP for a symlink, which is never followed.
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Takes the store's exclusive lock; WouldBlock, with the holder's text, if it is held.
    fn lock(&self, path: &Path, holder: &str) -> io::Result<Box<dyn DiskLock>>;
}

impl dyn Disk {
    /// Reads a whole file.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open_read(path)?;
        let len = f.size()? as usize;
        let mut buf = vec![0; len];
        let mut got = 0;
        while got < len {
            match f.read_at(&mut buf[got..], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        Ok(buf)
    }
}

/// `std::io::Read` over a `ReadAt`, for streaming a log segment.
pub struct Reader {
    inner: Arc<dyn ReadAt>,
    offset: u64,
}

impl Reader {
    pub fn new(inner: Arc<dyn ReadAt>, offset: u64) -> Reader {
        Reader { inner, offset }
    }
}

impl io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------

/// The machine's filesystem.
pub struct RealDisk;

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match FileExt::read_at(self, buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl DiskFile for File {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, bytes, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn set_len_and_meta(&self, len: u64, meta: &FileMeta) -> io::Result<()> {
        let mut has = self.metadata()?;
        // An ftruncate to the length a file has changes its times only, through the journal:
        // a backing file written over with as many bytes as it had needs none.
        if has.len() != len {
            File::set_len(self, len)?;
            // One by a daemon without CAP_FSETID clears set-ID bits: looked at again.
            has = self.metadata()?;
        }
        apply_meta(self, &has, meta)
    }
}

/// Holds the flock(2)ed file open: closing it releases the lock.
struct FlockLock {
    file: File,
}

impl DiskLock for FlockLock {
    fn say(&self, holder: &str) -> io::Result<()> {
        self.file.set_len(0)?;
        FileExt::write_all_at(&self.file, holder.as_bytes(), 0)
    }
}

/// What every file recordfs creates for itself in STORE is given: its owner's alone.
pub const PRIVATE_FILE: u32 = 0o600;
/// What every directory of STORE is given.
pub const PRIVATE_DIR: u32 = 0o700;

/// Opens to read (a directory with `O_DIRECTORY`) without following a final symlink.
fn open_nofollow(path: &Path, flags: libc::c_int) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | flags)
        .open(path)
}

/// Gives `f`, which `has` these attributes, those of `m`. chown and chmod each dirty the inode
/// in the filesystem's journal even when they change nothing, and most writes of a backing
/// file change neither: they are made only where `has` differs. The times always differ after
/// a write.
fn apply_meta(f: &File, has: &fs::Metadata, m: &FileMeta) -> io::Result<()> {
    use nix::sys::stat::{fchmod, futimens, Mode};
    use nix::unistd::{fchown, Gid, Uid};
    let chowned = has.uid() != m.uid || has.gid() != m.gid;
    if chowned {
        match fchown(f, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid))) {
            // A non-root daemon cannot give files away; the log still holds the owner.
            Ok(()) | Err(nix::errno::Errno::EPERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A chown clears the set-user-ID and set-group-ID bits: the mode is set again after one.
    if chowned || has.mode() & 0o7777 != m.mode & 0o7777 {
        fchmod(f, Mode::from_bits_truncate(m.mode & 0o7777))?;
    }
    futimens(
        f,
        &m.atime.to_timespec().into(),
        &m.mtime.to_timespec().into(),
    )?;
    Ok(())
}

impl Disk for RealDisk {
    fn open_file(&self, path: &Path, create_new: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut o = OpenOptions::new();
        o.read(true)
            .write(true)
            .mode(PRIVATE_FILE)
            .custom_flags(libc::O_NOFOLLOW);
        if create_new {
            o.create_new(true);
        }
        Ok(Arc::new(o.open(path)?))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Arc::new(f))
    }

    fn write_file(&self, path: &Path, bytes: &[u8], meta: Option<&FileMeta>) -> io::Result<()> {
        // O_EXCL: a name planted where a temp file goes (a link, or a hard link to a file
        // elsewhere) is removed, never written through.
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(PRIVATE_FILE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        };
        let f = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(path)?;
                create()?
            }
            r => r?,
        };
        FileExt::write_all_at(&f, bytes, 0)?;
        if let Some(m) = meta {
            apply_meta(&f, &f.metadata()?, m)?;
        }
        Ok(())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        open_nofollow(path, 0)?.sync_all()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        open_nofollow(path, libc::O_DIRECTORY)?.sync_all()
    }

    fn sync_everything(&self, path: &Path) -> io::Result<()> {
        let f = open_nofollow(path, libc::O_DIRECTORY)?;
        Ok(nix::unistd::syncfs(&f)?)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        Ok(renameat2(
            AT_FDCWD,
            a,
            AT_FDCWD,
            b,
            RenameFlags::RENAME_EXCHANGE,
        )?)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Vec<u8>>> {
        fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect()
    }

    fn stat(&self, path: &Path) -> io::Result<DiskStat> {
        let md = fs::symlink_metadata(path)?;
        let ft = md.file_type();
        Ok(DiskStat {
            kind: if ft.is_file() {
                EntryKind::File
            } else if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::Other
            },
            len: md.len(),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: Time {
                secs: md.mtime(),
                nsecs: md.mtime_nsec() as u32,
            },
        })
    }

    fn symlink(&self, target: &[u8], path: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
    }

    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(fs::read_link(path)?.as_os_str().as_bytes().to_vec())
    }

    fn set_meta(&self, path: &Path, meta: &FileMeta) -> io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        apply_meta(&f, &f.metadata()?, meta)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(PRIVATE_DIR).create(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        // rmdir(2) never follows a final symlink: a link here answers ENOTDIR.
        fs::remove_dir(path)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        // O_PATH opens without needing read permission, and O_NOFOLLOW refuses a link; fchmod
        // does not take an O_PATH descriptor, so the change goes through its /proc name.
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)?;
        if f.metadata()?.file_type().is_symlink() {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        // chmod follows the /proc link to the file opened above (an O_PATH descriptor has no
        // fchmod).
        let proc_path = format!("/proc/self/fd/{}", f.as_raw_fd());
        fs::set_permissions(
            proc_path,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
        )
    }

    fn lock(&self, path: &Path, holder: &str) -> io::Result<Box<dyn DiskLock>> {
        use std::io::{Read, Write};
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        // SAFETY: valid descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                text.trim().to_string(),
            ));
        }
        file.set_len(0)?;
        file.write_all(holder.as_bytes())?;
        Ok(Box::new(FlockLock { file }))
    }
}
