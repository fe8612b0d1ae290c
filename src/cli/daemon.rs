//! Serving a store: the daemon that mounts it (in the foreground, or forked, reporting
//! through a pipe once the mount is live), its signals, its unmount, and what it tells the
//! kernel to forget.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::error::{Error, Result};
use crate::etcd::EtcdUrl;
use crate::fs::RecordFs;
use crate::fuse::{describe, Adapter};
use crate::limits::UNMOUNT_GRACE;
use crate::mounting::{self, KernelFlags, Way};
use crate::options::Options;

use super::MountArgs;
use crate::store::Layout;

use super::logging::{init_daemon_logging, init_logging, release_held_log};

/// `recordfs mount STORE MOUNTPOINT ...`: serves in the foreground or returns once the
/// daemon's mount is live (clap has checked the numbers' ranges).
pub(super) fn mount_command(mut args: MountArgs) -> i32 {
    let flags = match super::mount_options::apply(&mut args) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("recordfs: {e}");
            return 2;
        }
    };
    let MountArgs {
        store,
        mountpoint,
        sync,
        foreground,
        read_only,
        allow_other,
        max_file_size,
        threads,
        log_limit,
        compact_every,
        keep_logs,
        salvage,
        verify,
        allow_open_store,
        allow_nan,
        options: _,
    } = args;
    let opts = Options {
        sync,
        max_file_size,
        patch_min: crate::limits::PATCH_MIN,
        read_only,
        log_limit,
        compact_every: Duration::from_secs(compact_every.max(1)),
        keep_logs,
        salvage,
        verify,
        allow_open_store,
        allow_nan,
    };
    let mount = Serving {
        store,
        mountpoint,
        opts,
        allow_other,
        threads: usize::from(threads),
        flags,
    };
    if foreground {
        init_logging();
        run_mount(mount, None)
    } else {
        daemonize_and_mount(mount)
    }
}

/// What a daemon serves, and how: the mount's options made into `Options`.
struct Serving {
    store: PathBuf,
    mountpoint: PathBuf,
    opts: Options,
    allow_other: bool,
    threads: usize,
    flags: KernelFlags,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Forks before any thread exists; the parent returns once the child reports the mount live
/// (exit 0) or failed (exit 1, with the child's reason).
fn daemonize_and_mount(mount: Serving) -> i32 {
    use nix::unistd::{fork, pipe2, setsid, ForkResult};
    let (from_child, to_parent) = match pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(ends) => ends,
        Err(e) => {
            eprintln!("recordfs: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: no other thread runs yet, so the child may go on running Rust code.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("recordfs: fork: {e}");
            1
        }
        Ok(ForkResult::Child) => {
            drop(from_child);
            // A new session: the terminal's hangup and job control no longer reach the daemon.
            let _ = setsid();
            init_daemon_logging();
            run_mount(mount, Some(std::fs::File::from(to_parent)))
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(to_parent);
            let mut msg = String::new();
            let _ = std::fs::File::from(from_child).read_to_string(&mut msg);
            match msg.strip_prefix("ok") {
                Some(rest) => {
                    print!("{rest}");
                    0
                }
                None => {
                    eprint!(
                        "{}",
                        if msg.is_empty() {
                            "recordfs: the daemon died before mounting\n".into()
                        } else {
                            msg
                        }
                    );
                    1
                }
            }
        }
    }
}

/// Sends the daemon's stdin to /dev/null and its output to STORE/daemon.log, once the store
/// is known to be ours (never into a foreign directory).
fn detach_output(layout: &Layout) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::disk::PRIVATE_FILE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(layout.daemon_log())
        .map_err(|e| Error::io(format!("opening {}", layout.daemon_log().display()), &e))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| Error::io("opening /dev/null", &e))?;
    let redirect = |what: &str, r: nix::Result<()>| {
        r.map_err(|e| Error::io(format!("redirecting {what}"), &std::io::Error::from(e)))
    };
    redirect("stdin", nix::unistd::dup2_stdin(&null))?;
    redirect("stdout", nix::unistd::dup2_stdout(&log))?;
    redirect("stderr", nix::unistd::dup2_stderr(&log))
}

fn run_mount(m: Serving, mut ready: Option<std::fs::File>) -> i32 {
    // Said once: to the waiting `recordfs mount` while the daemon is starting (it prints it),
    // else to the log (stderr in the foreground).
    let fail = |ready: &mut Option<std::fs::File>, msg: String| {
        match ready {
            Some(r) => {
                let _ = writeln!(r, "recordfs: {msg}");
            }
            None => error!("{msg}"),
        }
        1
    };
    // Registered before anything is mounted: a SIGTERM that comes while the mount is being
    // set up is queued and unmounts it once it is live, instead of killing the daemon and
    // leaving a dead mount behind.
    let signals = match signal_hook::iterator::Signals::new([
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
    ]) {
        Ok(s) => s,
        Err(e) => return fail(&mut ready, format!("installing signal handlers: {e}")),
    };
    // A store in etcd is named by its address; a directory by its absolute path.
    let etcd_url = match m.store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        Some(s) => match EtcdUrl::parse(s) {
            Ok(u) => Some(u),
            Err(e) => return fail(&mut ready, describe(&e)),
        },
        None => None,
    };
    let store = match &etcd_url {
        Some(u) => PathBuf::from(u.to_string()),
        None => absolute(&m.store),
    };
    let mountpoint = absolute(&m.mountpoint);
    match std::fs::metadata(&mountpoint) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return fail(&mut ready, format!("mount point {} is not a directory", mountpoint.display())),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return fail(&mut ready, format!(
                "mount point {} is a dead mount (its daemon was killed); clear it with `umount -l {}` first",
                mountpoint.display(),
                mountpoint.display()
            ))
        }
        Err(e) => return fail(&mut ready, format!("mount point {}: {e}", mountpoint.display())),
    }
    if etcd_url.is_none() && store.starts_with(&mountpoint) {
        return fail(
            &mut ready,
            "the store cannot be inside the mount point".into(),
        );
    }
    if let Some(source) = crate::mounts::recordfs_mounted_at(&mountpoint) {
        return fail(
            &mut ready,
            format!(
                "{} already holds a recordfs mount ({source}); a second one would stack on it. \
                 Unmount it first: umount {}",
                mountpoint.display(),
                mountpoint.display()
            ),
        );
    }
    // Whether this user can mount at all, before STORE is touched: a mount that cannot work
    // creates nothing.
    let way = match mounting::way() {
        Ok(w) => w,
        Err(e) => return fail(&mut ready, format!("cannot mount: {}", describe(&e))),
    };
    let before = etcd_url.is_none().then(|| StoreBefore::of(&store));
    let opened = match &etcd_url {
        Some(url) => {
            crate::etcd::mount::open(url, m.opts.clone()).map(|em| (em.fs.clone(), Some(em)))
        }
        None => RecordFs::start(&store, m.opts.clone()).map(|fs| (Arc::new(fs), None)),
    };
    let (fs, etcd_mount) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            return fail(
                &mut ready,
                format!("cannot open store {}: {}", store.display(), describe(&e)),
            )
        }
    };
    // Gives a store in etcd back (its lock, its cache) once the local store is shut down.
    let let_go = move || {
        if let Some(em) = etcd_mount {
            em.close();
        }
    };
    if ready.is_some() {
        if let Err(e) = detach_output(fs.layout()) {
            return fail(&mut ready, describe(&e));
        }
        release_held_log();
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("recordfs:{}", store.display())),
        fuser::MountOption::Subtype("recordfs".into()),
        fuser::MountOption::DefaultPermissions,
        // Reads do not change atime: it changes only when set (utimes), like noatime.
        fuser::MountOption::NoAtime,
        if m.opts.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        },
    ];
    let KernelFlags {
        nosuid,
        nodev,
        noexec,
    } = m.flags;
    for (on, option) in [
        (nosuid, fuser::MountOption::NoSuid),
        (nodev, fuser::MountOption::NoDev),
        (noexec, fuser::MountOption::NoExec),
    ] {
        if on {
            config.mount_options.push(option);
        }
    }
    if m.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(m.threads);
    // What is left to do once the session ends: after `run`, or from `destroy` (below).
    type Finish = Box<dyn FnOnce(std::io::Result<()>) -> i32 + Send>;
    let finish: Arc<parking_lot::Mutex<Option<Finish>>> = Arc::default();
    let device: Arc<parking_lot::Mutex<Option<std::fs::File>>> = Arc::default();
    let adapter = Adapter::new(fs.clone()).after_destroy({
        let (finish, device) = (finish.clone(), device.clone());
        Box::new(move || {
            // fuser 0.18 unmounts its mount point by path when `run` ends, even after the
            // kernel unmounted it (it reads the device's POLLERR the wrong way round: fuser
            // PR 703), which takes down whatever was mounted there since. A dead connection
            // means nothing of ours is mounted: the daemon ends here instead.
            let dead = device
                .lock()
                .as_ref()
                .is_some_and(mounting::connection_dead);
            let finish = match dead {
                true => finish.lock().take(),
                false => None,
            };
            if let Some(finish) = finish {
                std::process::exit(finish(Ok(())));
            }
        })
    });
    let session = match &way {
        Way::Direct => fuser::Session::new(adapter, &mountpoint, &config)
            .map_err(|e| format!("cannot mount at {}: {e}", mountpoint.display())),
        Way::Fusermount(helper) => {
            let options =
                mounting::helper_options(&store, m.opts.read_only, m.allow_other, m.flags);
            mounting::mount_with_helper(helper, &mountpoint, &options)
                .map_err(|e| describe(&e))
                .and_then(|fd| {
                    fuser::Session::from_fd(adapter, fd, config.acl, config.clone()).map_err(|e| {
                        let _ = mounting::unmount_with_helper(helper, &mountpoint, true);
                        format!("cannot start serving {}: {e}", mountpoint.display())
                    })
                })
        }
    };
    let mut session = match session {
        Ok(s) => s,
        Err(msg) => {
            let _ = fs.shutdown();
            drop(fs);
            let_go();
            if let Some(before) = before {
                before.restore(&store);
            }
            return fail(&mut ready, msg);
        }
    };
    if matches!(way, Way::Direct) {
        *device.lock() = mounting::fuse_device();
    }
    let unmounter = session.unmount_callable();
    let mut signals = signals;
    let mp = mountpoint.clone();
    let for_signals = fs.clone();
    let way_for_signals = way.clone();
    let started = start_invalidator(&fs, session.notifier()).and_then(|_| {
        std::thread::Builder::new()
            .name("recordfs-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == libc::SIGUSR1 {
                        info!("signal {sig}: compacting the log now");
                        for_signals.pipeline().request_compaction();
                        continue;
                    }
                    info!("signal {sig}: unmounting {}", mp.display());
                    unmount(&mp, unmounter, &way_for_signals);
                    break;
                }
            })
            .map_err(|e| Error::io("starting the signal thread", &e))
    });
    if let Err(e) = started {
        // Mounted, but it could not be stopped by a signal: take it down again.
        drop(session);
        let _ = fs.shutdown();
        drop(fs);
        let_go();
        return fail(&mut ready, describe(&e));
    }
    info!(
        "{} mounted at {} (--sync {:?})",
        store.display(),
        mountpoint.display(),
        m.opts.sync
    );
    fs.say_serving(&mountpoint);
    let notices: String = fs.notices().iter().map(|n| format!("{n}\n")).collect();
    let unmount_with = match &way {
        Way::Direct => "umount",
        Way::Fusermount(_) => "fusermount3 -u",
    };
    let live = format!(
        "ok{notices}{} is mounted at {}; unmount with: {unmount_with} {}\n",
        store.display(),
        mountpoint.display(),
        mountpoint.display()
    );
    if let Some(mut r) = ready.take() {
        let _ = r.write_all(live.as_bytes());
    }
    *finish.lock() = Some(Box::new(move |result: std::io::Result<()>| {
        // destroy() has run the shutdown, unless the session failed first.
        let clean = fs.shutdown().is_ok() && fs.closed_cleanly() && fs.pipeline().unshipped() == 0;
        drop(fs);
        let_go();
        match result {
            Ok(()) if clean => {
                info!("{} unmounted cleanly", mountpoint.display());
                0
            }
            Ok(()) => 1,
            Err(e) => {
                error!("session ended: {e}");
                1
            }
        }
    }));
    let result = session.run();
    let finish = finish.lock().take();
    finish.map_or(1, |f| f(result))
}

/// What STORE was before this mount made it a store: a mount that fails leaves it so.
enum StoreBefore {
    Missing,
    Empty,
    Kept,
}

impl StoreBefore {
    fn of(store: &Path) -> StoreBefore {
        match std::fs::read_dir(store).map(|mut entries| entries.next().is_none()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreBefore::Missing,
            Ok(true) => StoreBefore::Empty,
            _ => StoreBefore::Kept,
        }
    }

    /// Takes away what a failed mount made of a store that did not exist or was empty.
    fn restore(&self, store: &Path) {
        let emptied = match self {
            StoreBefore::Kept => return,
            StoreBefore::Missing => std::fs::remove_dir_all(store),
            StoreBefore::Empty => std::fs::read_dir(store).and_then(|entries| {
                entries.into_iter().try_for_each(|e| {
                    let p = e?.path();
                    match p.is_dir() && !p.is_symlink() {
                        true => std::fs::remove_dir_all(&p),
                        false => std::fs::remove_file(&p),
                    }
                })
            }),
        };
        if let Err(e) = emptied {
            warn!(
                "the mount failed, and {} could not be taken away again: {e}",
                store.display()
            );
        }
    }
}

/// Unmounts for a SIGTERM or SIGINT. A mount point is busy for a moment after use (the kernel
/// releases a closed file asynchronously; a child between fork and exec holds its parent's
/// descriptors), so EBUSY is retried for a grace. Past it the mount is detached, as libfuse
/// daemons do: the name goes at once, open files go on being served and committed, and the
/// session ends, cleanly, when the last of them closes.
fn unmount(mp: &Path, mut unmounter: fuser::SessionUnmounter, way: &Way) {
    use std::os::unix::fs::MetadataExt;
    // Our mount's device: if it changes, somebody else unmounted it, and a retry could take
    // down whatever is mounted there now.
    let ours = std::fs::metadata(mp).map(|md| md.dev()).ok();
    let attempt = |lazy: bool| -> std::io::Result<()> {
        match way {
            Way::Fusermount(helper) => mounting::unmount_with_helper(helper, mp, lazy),
            Way::Direct => {
                use nix::mount::{umount2, MntFlags};
                let flags = match lazy {
                    true => MntFlags::MNT_DETACH,
                    false => MntFlags::empty(),
                };
                Ok(umount2(mp, flags)?)
            }
        }
    };
    // As root, fuser's own attempt first: the session does not try again at its end. It
    // gives its mount up even when the attempt fails, so the retries below are ours. (A mount
    // made through fusermount3 is not fuser's: the helper unmounts it.)
    let first = match way {
        Way::Direct => unmounter.unmount(),
        Way::Fusermount(_) => attempt(false),
    };
    match first {
        Ok(()) => return,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && ours.is_some() => {}
        Err(e) => {
            error!("unmounting {}: {e}", mp.display());
            return;
        }
    }
    info!(
        "{} is busy; trying again for up to {} s",
        mp.display(),
        UNMOUNT_GRACE.as_secs()
    );
    let deadline = Instant::now() + UNMOUNT_GRACE;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        if std::fs::metadata(mp).map(|md| md.dev()).ok() != ours {
            return;
        }
        match attempt(false) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                error!("unmounting {}: {e}", mp.display());
                return;
            }
        }
    }
    warn!(
        "{} is still busy after {} s (a process has a file or its working directory in it): \
         detaching it; open files are served until they close, then the daemon exits",
        mp.display(),
        UNMOUNT_GRACE.as_secs()
    );
    if let Err(e) = attempt(true) {
        error!("detaching {}: {e}", mp.display());
    }
}

/// Makes the kernel forget the names the daemon removed by itself, from a thread of its own:
/// the kernel may wait on a request this daemon is serving.
fn start_invalidator(fs: &Arc<RecordFs>, notifier: fuser::Notifier) -> Result<()> {
    use crate::fs::Invalidation;
    use std::os::unix::ffi::OsStrExt;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Invalidation>(4096);
    std::thread::Builder::new()
        .name("recordfs-inval".into())
        .spawn(move || {
            for what in rx {
                match what {
                    Invalidation::Entry {
                        dir,
                        name,
                        file,
                        done,
                    } => {
                        let name = std::ffi::OsStr::from_bytes(&name);
                        let _ = notifier.inval_entry(fuser::INodeNo(dir), name);
                        // Its times and link count changed too, and the kernel caches a
                        // directory's attributes, and the file's from its create.
                        let _ = notifier.inval_inode(fuser::INodeNo(dir), 0, 0);
                        let _ = notifier.inval_inode(fuser::INodeNo(file), 0, 0);
                        let _ = done.send(());
                    }
                    Invalidation::Changed { names, inodes } => {
                        for (dir, name) in names {
                            let name = std::ffi::OsStr::from_bytes(&name);
                            let _ = notifier.inval_entry(fuser::INodeNo(dir), name);
                            let _ = notifier.inval_inode(fuser::INodeNo(dir), -1, 0);
                        }
                        // Attributes only (a negative offset): every handle uses direct I/O.
                        for ino in inodes {
                            let _ = notifier.inval_inode(fuser::INodeNo(ino), -1, 0);
                        }
                    }
                    Invalidation::Then(answer) => answer(),
                }
            }
        })
        .map_err(|e| Error::io("starting the invalidation thread", &e))?;
    fs.set_invalidator(Box::new(move |what| {
        tx.try_send(what).err().map(|e| match e {
            std::sync::mpsc::TrySendError::Full(w)
            | std::sync::mpsc::TrySendError::Disconnected(w) => w,
        })
    }));
    Ok(())
}
