//! Who can reach STORE. The log holds every byte ever committed to the mount, old versions and
//! refused saves included, whatever each file's mode; so STORE belongs to the user the daemon
//! runs as, and to nobody else: its directories are 0700 and the files recordfs keeps for
//! itself 0600 (FORMAT.md, "Modes"). Backing files in `root/` keep their file's own mode and
//! owner, so that a backup tool restores them as they were; inside a 0700 `root/` that widens
//! nothing.
//!
//! Every mount surveys the store: a path that group or others could read, write or enter, a
//! directory owned by another user, or a symbolic link where STORE's own directories and files
//! belong, refuses the mount unless the user accepts an open store knowingly. A store made
//! before modes were enforced (marker version 1) is tightened once instead (`store.rs`).

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::layout::Layout;
use crate::disk::{Disk, EntryKind};
use crate::error::{err, Error, Result};
use crate::limits::MAX_NAMED;

/// Permission bits that let group or others read, write or enter.
const OPEN_BITS: u32 = 0o077;

/// Something about one path of STORE that would let another user reach what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Group or others have permission bits on it.
    Open { path: PathBuf, mode: u32 },
    /// A directory of STORE owned by another user, who could read the log through it.
    Owner { path: PathBuf, uid: u32, want: u32 },
    /// A symbolic link (or something else) where STORE keeps a directory or file of its own:
    /// following it could make the daemon write elsewhere.
    NotOwn { path: PathBuf, found: EntryKind },
}

impl Exposure {
    /// Taking group and others' bits away fixes it; nothing else is changed for the user.
    fn tightenable(&self) -> bool {
        matches!(self, Exposure::Open { .. })
    }

    /// What fixes it: a command where one does.
    fn fix(&self) -> String {
        match self {
            Exposure::Open { path, .. } => format!("chmod go-rwx {}", path.display()),
            Exposure::Owner { path, want, .. } => format!("chown {want} {}", path.display()),
            Exposure::NotOwn { .. } => {
                "put the directory or file itself there in its place (or remove it)".into()
            }
        }
    }
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposure::Open { path, mode } => write!(
                f,
                "{} is mode {mode:04o}: group or others can reach it",
                path.display()
            ),
            Exposure::Owner { path, uid, want } => write!(
                f,
                "{} is owned by uid {uid}, not by uid {want} that serves the store",
                path.display()
            ),
            Exposure::NotOwn { path, found } => write!(
                f,
                "{} is a {}, where STORE keeps its own; recordfs never follows it",
                path.display(),
                match found {
                    EntryKind::Symlink => "symbolic link",
                    EntryKind::Dir => "directory",
                    EntryKind::File => "file",
                    EntryKind::Other => "special file",
                }
            ),
        }
    }
}

/// The user the daemon runs as: STORE must be theirs.
pub fn serving_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn stat_of(disk: &dyn Disk, path: &Path) -> Result<Option<crate::disk::DiskStat>> {
    match disk.stat(path) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("stat of {}", path.display()), &e)),
    }
}

/// The directories and files of STORE's own that are missing are fine (they are created);
/// ones that are there must be what they should be. Checked before anything is opened in
/// STORE: the lock file is the first thing written.
pub fn refuse_links(disk: &dyn Disk, layout: &Layout) -> Result<()> {
    let mut own_dirs = layout.dirs().to_vec();
    own_dirs.push(layout.old_logs());
    let own_files = layout.own_files();
    let expected = own_dirs
        .iter()
        .map(|d| (d, EntryKind::Dir))
        .chain(own_files.iter().map(|f| (f, EntryKind::File)));
    for (path, want) in expected {
        if let Some(st) = stat_of(disk, path)? {
            if st.kind != want {
                let e = Exposure::NotOwn {
                    path: path.clone(),
                    found: st.kind,
                };
                return Err(err!(EPERM, "{e}; fix: {}", e.fix()));
            }
        }
    }
    Ok(())
}

/// Every path of STORE that another user could reach, or that is not STORE's own.
/// Looks at STORE, its directories and the files recordfs keeps for itself (marker, lock,
/// daemon.log, log segments, snapshots, manifest, refused saves); not inside `root/` and
/// `lost+found/`, whose files carry the mount's own modes, nor `tmp/`, emptied at every mount.
pub fn survey(disk: &dyn Disk, layout: &Layout, uid: u32) -> Result<Vec<Exposure>> {
    let mut found = Vec::new();
    let mut dirs = vec![layout.store.clone()];
    dirs.extend(layout.dirs());
    dirs.push(layout.old_logs());
    for dir in &dirs {
        let Some(st) = stat_of(disk, dir)? else {
            continue;
        };
        if st.kind != EntryKind::Dir {
            found.push(Exposure::NotOwn {
                path: dir.clone(),
                found: st.kind,
            });
            continue;
        }
        if st.uid != uid {
            found.push(Exposure::Owner {
                path: dir.clone(),
                uid: st.uid,
                want: uid,
            });
        }
        if st.mode & OPEN_BITS != 0 {
            found.push(Exposure::Open {
                path: dir.clone(),
                mode: st.mode,
            });
        }
    }
    let mut files = layout.own_files().to_vec();
    for dir in [layout.log_dir(), layout.old_logs(), layout.rejected()] {
        let names = match disk.list(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("listing {}", dir.display()), &e)),
        };
        files.extend(
            names
                .iter()
                .map(|n| dir.join(OsStr::from_bytes(n)))
                .filter(|p| !dirs.contains(p)),
        );
    }
    for file in files {
        let Some(st) = stat_of(disk, &file)? else {
            continue;
        };
        if st.kind != EntryKind::File {
            found.push(Exposure::NotOwn {
                path: file,
                found: st.kind,
            });
        } else if st.mode & OPEN_BITS != 0 {
            found.push(Exposure::Open {
                path: file,
                mode: st.mode,
            });
        }
    }
    Ok(found)
}

/// Takes group and others' bits from every path that has them, returning how many changed.
/// What tightening cannot fix (an owner, a link) is left for the caller to refuse.
pub fn tighten(disk: &dyn Disk, exposures: &[Exposure]) -> Result<usize> {
    let mut changed = 0;
    for e in exposures {
        if let Exposure::Open { path, mode } = e {
            disk.set_mode(path, mode & !OPEN_BITS)
                .map_err(|e| Error::io(format!("chmod go-rwx {}", path.display()), &e))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// What is left after tightening: the exposures no chmod of ours may fix.
pub fn untightenable(exposures: Vec<Exposure>) -> Vec<Exposure> {
    exposures.into_iter().filter(|e| !e.tightenable()).collect()
}

/// The refusal of a store others can reach: each path with its fix, and the way to accept it.
pub fn refusal(store: &Path, exposures: &[Exposure], accept_hint: &str) -> Error {
    let mut lines: Vec<String> = exposures
        .iter()
        .take(MAX_NAMED)
        .map(|e| format!("  {e}; fix: {}", e.fix()))
        .collect();
    if exposures.len() > MAX_NAMED {
        lines.push(format!("  and {} more paths", exposures.len() - MAX_NAMED));
    }
    err!(
        EACCES,
        "store {} is open to other users, and its log holds the bytes of every file ever \
         written to the mount, whatever the file's mode:\n{}\n{accept_hint}",
        store.display(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::sim::SimDisk;

    fn store(disk: &SimDisk) -> Layout {
        let layout = Layout::new(Path::new("/s"));
        disk.create_dir(&layout.store).unwrap();
        for d in layout.dirs() {
            disk.create_dir(&d).unwrap();
        }
        disk.write_file(&layout.marker(), b"m", None).unwrap();
        layout
    }

    #[test]
    fn a_store_made_with_private_modes_has_nothing_to_report() {
        let disk = SimDisk::new();
        let layout = store(&disk);
        disk.write_file(&layout.log_dir().join("1.log"), b"x", None)
            .unwrap();
        assert_eq!(survey(&disk, &layout, serving_uid()).unwrap(), []);
    }

    #[test]
    fn open_paths_are_found_tightened_and_links_refused() {
        let disk = SimDisk::new();
        let layout = store(&disk);
        let seg = layout.log_dir().join("1.log");
        disk.write_file(&seg, b"x", None).unwrap();
        disk.set_mode(&seg, 0o644).unwrap();
        disk.set_mode(&layout.root(), 0o755).unwrap();
        // Files in root/ carry the mount's modes and are not STORE's own.
        let backing = layout.root().join("a");
        disk.write_file(&backing, b"x", None).unwrap();
        disk.set_mode(&backing, 0o644).unwrap();
        let found = survey(&disk, &layout, serving_uid()).unwrap();
        assert_eq!(
            found,
            [
                Exposure::Open {
                    path: layout.root(),
                    mode: 0o755
                },
                Exposure::Open {
                    path: seg.clone(),
                    mode: 0o644
                },
            ]
        );
        assert_eq!(tighten(&disk, &found).unwrap(), 2);
        assert_eq!(survey(&disk, &layout, serving_uid()).unwrap(), []);
        assert_eq!(disk.stat(&backing).unwrap().mode, 0o644);

        disk.symlink(b"/etc/passwd", &layout.daemon_log()).unwrap();
        let e = refuse_links(&disk, &layout).unwrap_err();
        assert!(e.reason.contains("daemon.log is a symbolic link"), "{e}");
        assert_eq!(
            untightenable(survey(&disk, &layout, serving_uid()).unwrap()).len(),
            1
        );
    }

    #[test]
    fn a_refusal_names_each_path_with_its_fix_and_counts_the_rest() {
        let many: Vec<Exposure> = (0..10)
            .map(|i| Exposure::Open {
                path: PathBuf::from(format!("/s/log/{i}.log")),
                mode: 0o644,
            })
            .collect();
        let e = refusal(Path::new("/s"), &many, "or accept it");
        assert!(e.reason.contains("/s/log/0.log is mode 0644"), "{e}");
        assert!(e.reason.contains("fix: chmod go-rwx /s/log/7.log"), "{e}");
        assert!(!e.reason.contains("/s/log/8.log"), "{e}");
        assert!(e.reason.contains("and 2 more paths"), "{e}");
    }
}
