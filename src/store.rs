//! The STORE directory: its layout, the marker that makes a directory a store, the lock that
//! keeps a second daemon out, and the one helper that replaces a file atomically. All I/O goes
//! through the `Disk` seam.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::access::{self, Exposure};
use crate::disk::{Disk, DiskLock, EntryKind, FileMeta, PRIVATE_DIR};
use crate::error::{err, Error, Result};
use crate::log::Time;

pub const MARKER: &str = "recordfs.store";
const MARKER_TEXT: &str = "{\"format\":\"recordfs-store\",\"version\":2}\n";
/// The marker of a store made before modes were enforced; upgraded at its first mount.
const MARKER_V1: &str = "{\"format\":\"recordfs-store\",\"version\":1}";
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
    pub fn lock(&self) -> PathBuf {
        self.store.join(LOCK)
    }
    /// Where compaction retires old segments and snapshots.
    pub fn old_logs(&self) -> PathBuf {
        self.log_dir().join("old")
    }
    /// The backing file of a name in the root directory.
    pub fn backing(&self, name: &[u8]) -> PathBuf {
        self.root().join(OsStr::from_bytes(name))
    }
    /// The directories every store has (`log/old/` comes with the first compaction).
    pub fn dirs(&self) -> [PathBuf; 5] {
        [
            self.log_dir(),
            self.root(),
            self.tmp(),
            self.rejected(),
            self.lost_found(),
        ]
    }
    /// The files recordfs keeps for itself at the top of STORE.
    pub fn own_files(&self) -> [PathBuf; 3] {
        [self.marker(), self.lock(), self.daemon_log()]
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
    lock: Box<dyn DiskLock>,
    holder: String,
}

/// What the lock says of a holder that is unmounting (`StoreLock::say_unmounting`).
const UNMOUNTING: &str = "; unmounting since ";
/// How long a mount waits for the daemon of its store to finish unmounting.
pub const UNMOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl StoreLock {
    /// Tells a mount that finds the lock taken that this holder is on its way out, so that
    /// it waits (`UNMOUNT_WAIT`) instead of refusing: `umount` returns before the daemon has
    /// written its checkpoint.
    pub fn say_unmounting(&self) {
        let text = format!(
            "{}{UNMOUNTING}{}\n",
            self.holder.trim_end(),
            Time::now().iso8601()
        );
        // Only a courtesy to the next mount: without it, that mount is refused as busy.
        let _ = self.lock.say(&text);
    }
}

/// What the caller of `open_store` will do with the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Serve or compact it. `writable`: a missing or empty STORE becomes a store, and a store
    /// made by an earlier version is upgraded. A store others can reach is refused unless
    /// `allow_open` (`--allow-open-store`).
    Serve { writable: bool, allow_open: bool },
    /// `recordfs check`: nothing is changed; what others can reach is reported, not refused.
    Check,
}

/// An open, locked store.
pub struct Opened {
    pub lock: StoreLock,
    /// Paths of STORE others can reach: accepted with `allow_open`, or for `Check` to report.
    pub exposures: Vec<Exposure>,
    /// What opening changed in the store, for the user to hear once (an upgrade).
    pub notices: Vec<String>,
}

/// The marker's versions. Version 2 has the log format of version 1 and private modes
/// (FORMAT.md, "Versions"); a version-1 store is upgraded at its first writable mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

fn read_version(disk: &dyn Disk, layout: &Layout) -> Result<Version> {
    let marker = disk
        .read(&layout.marker())
        .map_err(io_err("reading", &layout.marker()))?;
    match marker.trim_ascii() {
        m if m == MARKER_TEXT.trim().as_bytes() => Ok(Version::V2),
        m if m == MARKER_V1.as_bytes() => Ok(Version::V1),
        m => Err(err!(
            EINVAL,
            "{} holds {:?}: not a store this version of recordfs can open",
            layout.marker().display(),
            String::from_utf8_lossy(m)
        )),
    }
}

fn write_marker(disk: &dyn Disk, layout: &Layout) -> Result<()> {
    replace_file(
        disk,
        &layout.store.join(".recordfs.store.tmp"),
        &layout.marker(),
        MARKER_TEXT.as_bytes(),
        None,
        true,
    )
}

/// For the tools that read a store without opening it (`log`, `stats`): a directory that is
/// not a store is named as such, not as a missing log.
pub fn require_store(disk: &dyn Disk, layout: &Layout) -> Result<()> {
    match disk.stat(&layout.marker()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(err!(
            ENOENT,
            "{} is not a recordfs store (it has no {MARKER})",
            layout.store.display()
        )),
        Err(e) => Err(Error::io(
            format!("opening store {}", layout.store.display()),
            &e,
        )),
    }
}

/// Opens (creating if needed) the store at `layout`, refusing a foreign directory and one that
/// other users can reach (access.rs), and takes its lock.
pub fn open_store(disk: &dyn Disk, layout: &Layout, purpose: Purpose) -> Result<Opened> {
    let (writable, allow_open) = match purpose {
        Purpose::Serve {
            writable,
            allow_open,
        } => (writable, allow_open),
        Purpose::Check => (false, true),
    };
    let uid = access::serving_uid();
    let store = &layout.store;
    let st = match disk.stat(store) {
        Ok(st) if st.kind != EntryKind::Dir => {
            return Err(err!(ENOTDIR, "{} is not a directory", store.display()));
        }
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound && writable => {
            disk.create_dir(store).map_err(io_err("creating", store))?;
            disk.stat(store).map_err(io_err("stat of", store))?
        }
        Err(e) => return Err(Error::io(format!("opening store {}", store.display()), &e)),
    };
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
        if !writable {
            return Err(err!(ENOENT, "{} is not a recordfs store", store.display()));
        }
        // An empty directory given for the store becomes private with it, if it is ours.
        if st.uid != uid && !allow_open {
            let owner = Exposure::Owner {
                path: store.clone(),
                uid: st.uid,
                want: uid,
            };
            return Err(access::refusal(store, &[owner], ACCEPT));
        }
        if st.uid == uid && st.mode & 0o077 != 0 {
            disk.set_mode(store, PRIVATE_DIR)
                .map_err(io_err("chmod 700", store))?;
        }
        // The marker goes first: a crash during the rest leaves a store that the next open
        // completes, never a half-made directory that looks foreign.
        write_marker(disk, layout)?;
    }
    let version = read_version(disk, layout)?;
    access::refuse_links(disk, layout)?;
    let mut notices = Vec::new();
    let lock = take_lock(disk, layout, &mut notices)?;
    for dir in layout.dirs() {
        if disk.stat(&dir).is_err() {
            disk.create_dir(&dir).map_err(io_err("creating", &dir))?;
            sync_dir(disk, store)?;
        }
    }
    // Checked offline, a store is held against its own owner; served, against the daemon's.
    let owner = match purpose {
        Purpose::Check => st.uid,
        Purpose::Serve { .. } => uid,
    };
    let mut exposures = access::survey(disk, layout, owner)?;
    if purpose == Purpose::Check {
        return Ok(Opened {
            lock,
            exposures,
            notices,
        });
    }
    if version == Version::V1 && writable {
        let mut tightened = String::new();
        if !allow_open {
            let n = access::tighten(disk, &exposures)?;
            exposures = access::untightenable(exposures);
            tightened = format!("; {n} paths made private (chmod go-rwx)");
        }
        write_marker(disk, layout)?;
        notices.push(format!(
            "{} was made by an earlier version of recordfs: upgraded to store version 2{tightened}",
            store.display()
        ));
    }
    // A link is never accepted: following it could make the daemon write elsewhere.
    let refused = exposures
        .iter()
        .any(|e| !allow_open || matches!(e, Exposure::NotOwn { .. }));
    if refused {
        let hint = match version {
            Version::V1 => ACCEPT_V1,
            Version::V2 => ACCEPT,
        };
        return Err(access::refusal(store, &exposures, hint));
    }
    Ok(Opened {
        lock,
        exposures,
        notices,
    })
}

/// How a refusal ends: the user may accept an open store knowingly.
const ACCEPT: &str = "fix it with the commands above, or mount with --allow-open-store to \
                      accept it as it is";
const ACCEPT_V1: &str = "it was made by an earlier version: mount it once without --read-only \
                         and recordfs makes it private, or fix it with the commands above, or \
                         mount with --allow-open-store to accept it as it is";

/// flock of STORE/lock, writing who holds it; EBUSY naming the holder if another has it. A
/// holder that is unmounting is waited for, up to `UNMOUNT_WAIT`, and the wait is noted.
fn take_lock(disk: &dyn Disk, layout: &Layout, notices: &mut Vec<String>) -> Result<StoreLock> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let holder = format!(
        "recordfs pid {} on {} since {}\n",
        std::process::id(),
        host.trim(),
        Time::now().iso8601()
    );
    let lock_path = layout.lock();
    let started = std::time::Instant::now();
    let mut waited_for = None;
    loop {
        let other = match disk.lock(&lock_path, &holder) {
            Ok(lock) => {
                if let Some(other) = waited_for {
                    notices.push(format!(
                        "waited {:.1} s for {other} to finish unmounting {}",
                        started.elapsed().as_secs_f64(),
                        layout.store.display()
                    ));
                }
                return Ok(StoreLock { lock, holder });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => e.to_string(),
            Err(e) => return Err(Error::io(format!("locking {}", lock_path.display()), &e)),
        };
        let Some((who, _)) = other.split_once(UNMOUNTING) else {
            let who = if other.is_empty() {
                "another process"
            } else {
                &other
            };
            return Err(err!(
                EBUSY,
                "store {} is in use by {who}",
                layout.store.display()
            ));
        };
        if started.elapsed() >= UNMOUNT_WAIT {
            return Err(err!(
                EBUSY,
                "store {} is in use by {other}: still unmounting after {} s; try again once it has exited",
                layout.store.display(),
                UNMOUNT_WAIT.as_secs()
            ));
        }
        if waited_for.is_none() {
            log::info!(
                "waiting for {who} to finish unmounting {}",
                layout.store.display()
            );
            waited_for = Some(who.to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
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

/// What `rejected/<name>.<tag>.reason` says of a refused save (one JSON line), and what
/// `recordfs rejected` lists.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    /// When, in ISO 8601 (UTC).
    pub time: String,
    /// The file's name.
    pub name: String,
    /// Why: the JSON parser's words.
    pub error: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// How many bytes were refused.
    pub len: u64,
    /// Where the bytes are (filled in when listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

const REJECTED: &str = ".rejected";
const REASON: &str = ".reason";

/// Keeps the bytes of a refused save in `rejected/`, with why beside them, returning where.
/// Old ones beyond `MAX_REJECTED_KEPT` are removed so a looping bad writer cannot fill the
/// disk.
pub fn keep_rejected(
    disk: &dyn Disk,
    layout: &Layout,
    name: &[u8],
    tag: u64,
    bytes: &[u8],
    why: &Refusal,
) -> Result<PathBuf> {
    let dir = layout.rejected();
    let mut file_name = name.to_vec();
    file_name.extend_from_slice(format!(".{tag}{REJECTED}").as_bytes());
    // A 255-byte name plus the tag would be too long for the host filesystem (and the
    // reason's name is one byte longer than the bytes').
    if file_name.len() > 254 {
        file_name.drain(..file_name.len() - 254);
    }
    let dest = dir.join(OsStr::from_bytes(&file_name));
    let tmp = layout.tmp().join(format!("rejected.{tag}"));
    replace_file(disk, &tmp, &dest, bytes, None, false)?;
    let mut line = serde_json::to_vec(why).expect("a refusal serialises");
    line.push(b'\n');
    replace_file(disk, &tmp, &reason_of(&dest), &line, None, false)?;
    let names = disk.list(&dir).map_err(io_err("listing", &dir))?;
    let kept_names: Vec<&Vec<u8>> = names
        .iter()
        .filter(|n| n.ends_with(REJECTED.as_bytes()))
        .collect();
    if kept_names.len() > MAX_REJECTED_KEPT {
        let mut kept: Vec<(Time, PathBuf)> = kept_names
            .iter()
            .map(|n| dir.join(OsStr::from_bytes(n)))
            .filter_map(|p| Some((disk.stat(&p).ok()?.mtime, p)))
            .collect();
        kept.sort();
        for (_, p) in &kept[..kept.len() - MAX_REJECTED_KEPT] {
            let _ = disk.remove(p);
            let _ = disk.remove(&reason_of(p));
        }
    }
    Ok(dest)
}

/// `<name>.<tag>.reason` beside `<name>.<tag>.rejected`.
fn reason_of(kept: &Path) -> PathBuf {
    let mut name = kept.as_os_str().as_bytes().to_vec();
    name.truncate(name.len() - REJECTED.len());
    name.extend_from_slice(REASON.as_bytes());
    PathBuf::from(OsStr::from_bytes(&name))
}

/// Every kept refusal, oldest first. One kept before reasons were written is described from
/// its file: the name, and the time it was written.
pub fn list_rejected(disk: &dyn Disk, layout: &Layout) -> Result<Vec<Refusal>> {
    require_store(disk, layout)?;
    let dir = layout.rejected();
    let names = match disk.list(&dir) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), &e)),
    };
    let mut out = Vec::new();
    for n in names.iter().filter(|n| n.ends_with(REJECTED.as_bytes())) {
        let path = dir.join(OsStr::from_bytes(n));
        let Ok(st) = disk.stat(&path) else { continue };
        let reason = disk
            .read(&reason_of(&path))
            .ok()
            .and_then(|b| serde_json::from_slice::<Refusal>(&b).ok());
        let mut r = reason.unwrap_or_else(|| {
            // <name>.<tag>.rejected
            // <name>.<tag>.rejected, the tag being microseconds since the epoch.
            let stem = &n[..n.len() - REJECTED.len()];
            let dot = stem.iter().rposition(|b| *b == b'.');
            let name = dot.map_or(stem, |i| &stem[..i]);
            let tag = dot.and_then(|i| {
                std::str::from_utf8(&stem[i + 1..])
                    .ok()?
                    .parse::<u64>()
                    .ok()
            });
            Refusal {
                time: tag
                    .map_or(st.mtime, |t| Time::from_millis(t / 1000))
                    .iso8601(),
                name: String::from_utf8_lossy(name).into_owned(),
                error: "(kept by an earlier version: no reason was written)".into(),
                line: None,
                column: None,
                len: st.len,
                kept: None,
            }
        });
        r.kept = Some(path.display().to_string());
        out.push((st.mtime, r));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.time.cmp(&b.1.time)));
    Ok(out.into_iter().map(|(_, r)| r).collect())
}
