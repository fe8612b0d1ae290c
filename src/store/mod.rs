//! The STORE directory: its layout, the marker that makes a directory a store, the lock that
//! keeps a second daemon out, who may reach it (access.rs), the helpers that change files in
//! it, and refused saves. All I/O goes through the `Disk` seam.

mod access;
mod files;
mod layout;
mod rejected;

pub use access::Exposure;
pub use files::{
    clear_tmp, exchange, make_dir, overwrite_file, patch_file, remove, remove_dir, rename,
    replace_file, replace_symlink, set_meta, sync_dir, write_file,
};
pub use layout::{require_store, Layout, MARKER};
pub use rejected::{keep_rejected, list_rejected, Refusal};

use std::io;

use crate::disk::{Disk, DiskLock, EntryKind, PRIVATE_DIR};
use crate::error::{err, Error, Result};
use crate::limits::UNMOUNT_WAIT;
use crate::types::Time;

use files::io_err;

const MARKER_TEXT: &str = "{\"format\":\"recordfs-store\",\"version\":7}\n";
/// The marker of a store made before modes were enforced; upgraded at its first mount.
const MARKER_V1: &str = "{\"format\":\"recordfs-store\",\"version\":1}";
const MARKER_V2: &str = "{\"format\":\"recordfs-store\",\"version\":2}";
const MARKER_V3: &str = "{\"format\":\"recordfs-store\",\"version\":3}";
const MARKER_V4: &str = "{\"format\":\"recordfs-store\",\"version\":4}";
const MARKER_V5: &str = "{\"format\":\"recordfs-store\",\"version\":5}";
const MARKER_V6: &str = "{\"format\":\"recordfs-store\",\"version\":6}";

/// The exclusive lock on a store, held for as long as this value lives.
pub struct StoreLock {
    lock: Box<dyn DiskLock>,
    holder: String,
}

/// What the lock says of a holder that is unmounting (`StoreLock::say_unmounting`).
const UNMOUNTING: &str = "; unmounting since ";
/// What the lock says of a holder that serves a mount (`StoreLock::say_serving`).
const SERVING: &str = "; serving ";

impl StoreLock {
    /// Names the mount point this holder serves: a mount that finds the lock taken and that
    /// mount gone knows the holder is on its way out before it can say so itself (`umount`
    /// returns at once; the daemon learns of it a moment later).
    pub fn say_serving(&self, mountpoint: &std::path::Path) {
        let text = format!(
            "{}{SERVING}{}\n",
            self.holder.trim_end(),
            mountpoint.display()
        );
        // Only a courtesy to the next mount, as `say_unmounting`.
        let _ = self.lock.say(&text);
    }

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

/// The mount point a live daemon serves this store at, as its lock says, if it says so and
/// the mount is there: tools that change a mounted store go through its mount.
pub fn served_at(layout: &Layout) -> Option<std::path::PathBuf> {
    let holder = std::fs::read_to_string(layout.lock()).ok()?;
    let (_, at) = holder.split_once(SERVING)?;
    let at = std::path::PathBuf::from(at.trim_end());
    crate::mounts::recordfs_mounted_at(&at).map(|_| at)
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

/// The marker's versions (FORMAT.md, "Versions"). Version 2 has the log format of version 1
/// and private modes; version 3 adds directories to the log and the backing tree; version 4
/// adds hard links (`LINK` entries, `links` in snapshots); version 5 adds `PATCH` entries;
/// version 6 logs checkpoints while mounted, with entries between a checkpoint's `upto` and
/// its own line; version 7 writes snapshots as layers over earlier ones. An older store is
/// upgraded at its
/// first writable mount: an older binary must not meet an entry it cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
    V6,
    V7,
}

fn read_version(disk: &dyn Disk, layout: &Layout) -> Result<Version> {
    let marker = disk
        .read(&layout.marker())
        .map_err(io_err("reading", &layout.marker()))?;
    match marker.trim_ascii() {
        m if m == MARKER_TEXT.trim().as_bytes() => Ok(Version::V7),
        m if m == MARKER_V6.as_bytes() => Ok(Version::V6),
        m if m == MARKER_V5.as_bytes() => Ok(Version::V5),
        m if m == MARKER_V4.as_bytes() => Ok(Version::V4),
        m if m == MARKER_V3.as_bytes() => Ok(Version::V3),
        m if m == MARKER_V2.as_bytes() => Ok(Version::V2),
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
            // STORE's own name must outlive a crash, or every commit in it goes with it.
            if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(disk, parent)?;
            }
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
    if version != Version::V7 && writable {
        let mut tightened = String::new();
        if version == Version::V1 && !allow_open {
            let n = access::tighten(disk, &exposures)?;
            exposures = access::untightenable(exposures);
            tightened = format!("; {n} paths made private (chmod go-rwx)");
        }
        write_marker(disk, layout)?;
        notices.push(format!(
            "{} was made by an earlier version of recordfs: upgraded to store version 7{tightened}",
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
            Version::V2 | Version::V3 | Version::V4 | Version::V5 | Version::V6 | Version::V7 => {
                ACCEPT
            }
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
        let unmounting = match (other.split_once(UNMOUNTING), other.split_once(SERVING)) {
            (Some((who, _)), _) => Some(who),
            // Its mount is gone: it is unmounting, and has not said so yet.
            (None, Some((who, point))) => {
                crate::mounts::recordfs_mounted_at(std::path::Path::new(point.trim_end()))
                    .is_none()
                    .then_some(who)
            }
            (None, None) => None,
        };
        let Some(who) = unmounting else {
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
