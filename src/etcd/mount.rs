//! Serving a store in etcd: `recordfs mount etcd://HOST:PORT[,...]/PREFIX MNT` (FORMAT.md,
//! "A store in etcd", "The mount").
//!
//! The mount serves a local store that caches the prefix (a fresh one, in a private
//! directory, built from every key read at one revision) and ships every commit to etcd
//! before it is acknowledged (`replica.rs`, `pipeline::Replica`). Only one mount serves a
//! prefix at a time: it holds the `lock` key under a lease it keeps alive, and every
//! transaction it makes holds only while that key is the one it put (a mount cut off long
//! enough to lose its lease cannot overwrite the next one's work).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde_json::{json, Value};

use super::follow::{set_attributes, Follower};
use super::layout::{self, Name, Node, Tree, LOCK};
use super::replica::EtcdReplica;
use super::{Etcd, EtcdUrl, Locked, FID_BLOCK, MOUNT_TIMEOUT};
use crate::error::{err, Error, Result};
use crate::fs::RecordFs;
use crate::options::Options;
use crate::types::{Attrs, Fid, Kind, Time, ROOT};

/// The lease on `lock`, in seconds: a mount whose daemon died holds the prefix this long.
pub const LEASE_SECS: i64 = 5;

/// A live mount's hold on its prefix: the cache it serves, and the lease it keeps (a mount
/// that changes the prefix) or the watch it follows (a read-only one).
pub struct EtcdMount {
    pub fs: Arc<RecordFs>,
    pub url: EtcdUrl,
    cache: PathBuf,
    lease: Option<i64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Opens `url` for a mount: takes its lock (waiting up to a lease's time for a mount that
/// died to lose it), builds the cache, and ships commits from then on. A read-only mount
/// takes no lock: it follows the prefix (`follow.rs`).
pub fn open(url: &EtcdUrl, opts: Options) -> Result<EtcdMount> {
    if opts.read_only {
        return open_following(url, opts);
    }
    let etcd = Etcd::connect(url, MOUNT_TIMEOUT)?;
    let who = format!(
        "pid {} on {}",
        std::process::id(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    );
    let (lease, lock_rev) = take_lock(&etcd, &who)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Kept alive from now on: building the cache of a large prefix takes longer than the
    // lease lasts.
    let opened = keep_alive(url, lease, stop.clone()).and_then(|keeper| {
        match build(&etcd, url, lock_rev, opts) {
            Ok((fs, cache)) => Ok((fs, cache, keeper)),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = keeper.join();
                Err(e)
            }
        }
    });
    match opened {
        Ok((fs, cache, keeper)) => Ok(EtcdMount {
            fs,
            url: url.clone(),
            cache,
            lease: Some(lease),
            stop,
            thread: Some(keeper),
        }),
        Err(e) => {
            let _ = etcd.revoke(lease);
            Err(e)
        }
    }
}

impl EtcdMount {
    /// After the store's shutdown (which shipped what it could): lets the prefix go and
    /// removes the cache.
    pub fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.thread.take() {
            let _ = k.join();
        }
        if let Some(lease) = self.lease {
            match Etcd::connect(&self.url, MOUNT_TIMEOUT).and_then(|e| e.revoke(lease)) {
                Ok(()) => info!("{}: lock released", self.url),
                Err(e) => warn!(
                    "{}: the lock stays until its lease ends ({LEASE_SECS} s): {}",
                    self.url, e.reason
                ),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.cache) {
            warn!("cache {}: not removed: {e}", self.cache.display());
        }
    }
}

fn take_lock(etcd: &Etcd, who: &str) -> Result<(i64, i64)> {
    let until = Instant::now() + Duration::from_secs(LEASE_SECS as u64 + 2);
    loop {
        match etcd.take_lock(LOCK, who.as_bytes(), LEASE_SECS)? {
            Locked::Taken { lease, revision } => return Ok((lease, revision)),
            Locked::Held(by) if Instant::now() >= until => {
                return Err(err!(
                    EBUSY,
                    "{} is served by another mount ({}); one mount serves a prefix at a time",
                    etcd.url,
                    String::from_utf8_lossy(&by)
                ))
            }
            Locked::Held(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Renews the lease a third of its time apart until `stop`. A lease that ended (the
/// cluster did not hear from this mount in time) is not taken again: the next commit's
/// transaction fails its compare and the mount turns read-only.
fn keep_alive(url: &EtcdUrl, lease: i64, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    let etcd = Etcd::connect(url, Duration::from_secs(LEASE_SECS as u64))?;
    std::thread::Builder::new()
        .name("recordfs-lease".into())
        .spawn(move || {
            let every = Duration::from_millis(LEASE_SECS as u64 * 1000 / 3);
            let mut next = Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                next = Instant::now() + every;
                match etcd.keep_alive(lease) {
                    Ok(()) => {}
                    Err(e) if e.errno == libc::ENOENT => {
                        error!("{}: the lease ended; commits are refused", etcd.url);
                        return;
                    }
                    Err(e) => warn!("{}: renewing the lease: {}", etcd.url, e.reason),
                }
            }
        })
        .map_err(|e| Error::io("starting the lease thread", &e))
}

/// Reads the prefix (making a new store of an empty one), takes a block of fids, builds
/// the cache and attaches the replica.
fn build(
    etcd: &Etcd,
    url: &EtcdUrl,
    lock_rev: i64,
    opts: Options,
) -> Result<(Arc<RecordFs>, PathBuf)> {
    let (_, keys) = etcd.get_all_at(b"")?;
    let meta = keys.iter().find(|k| k.key == b"meta");
    let (tree, next_fid, meta_rev) = match meta {
        Some(m) => {
            let kvs: Vec<(Vec<u8>, Vec<u8>)> = keys
                .iter()
                .map(|k| (k.key.clone(), k.value.clone()))
                .collect();
            let tree = layout::from_keys(&kvs)?;
            let v: Value = serde_json::from_slice(&m.value).map_err(|e| err!(EIO, "meta: {e}"))?;
            let next = v["next_fid"]
                .as_u64()
                .ok_or_else(|| err!(EIO, "meta: no next_fid"))?;
            (tree, next, m.mod_revision)
        }
        None if keys.iter().all(|k| k.key == LOCK) => (new_tree(), ROOT + 1, 0),
        None => {
            return Err(err!(
                EIO,
                "{url} holds keys but no meta: not a store (a migration that did not finish?)"
            ))
        }
    };
    servable(url, &tree, &opts)?;
    let base = next_fid;
    let end = base
        .checked_add(FID_BLOCK)
        .ok_or_else(|| err!(ENOSPC, "{url}: no fids left"))?;
    let meta_value = json!({"format": layout::FORMAT, "next_fid": end}).to_string();
    let mut puts = vec![(b"meta".to_vec(), meta_value.into_bytes())];
    if meta.is_none() {
        puts.extend(layout::to_keys(&tree, |_, _| String::new()));
    }
    if !etcd.put_if(
        &[(LOCK.to_vec(), lock_rev), (b"meta".to_vec(), meta_rev)],
        &puts,
        &[],
    )? {
        return Err(err!(
            EBUSY,
            "{url} changed while the mount started; try again"
        ));
    }
    // Connected before the cache is made, which nothing would remove after a failure here.
    let shipper = Etcd::connect(url, MOUNT_TIMEOUT)?;
    let (fs, made, cache) = make_cache(&tree, opts)?;
    let replica = EtcdReplica::new(shipper, lock_rev, base, &tree, &made);
    fs.pipeline().ship_to(Arc::new(replica));
    info!(
        "{url}: {} nodes and {} names cached in {}",
        tree.nodes.len(),
        tree.names.len(),
        cache.display()
    );
    Ok((Arc::new(fs), cache))
}

/// A file in pieces would need transactions that put its pieces first (FORMAT.md): not
/// built, so such a prefix is not served rather than served with files that cannot change.
fn servable(url: &EtcdUrl, tree: &Tree, opts: &Options) -> Result<()> {
    let largest = (opts.max_file_size).min(layout::PIECE as u64);
    match tree.nodes.iter().find(|n| n.bytes.len() as u64 > largest) {
        Some(big) => Err(err!(
            EFBIG,
            "{url} holds a file of {} bytes (i/{:016x}); a mount of etcd serves files of at most {largest} bytes",
            big.bytes.len(),
            big.fid
        )),
        None => Ok(()),
    }
}

/// A new store in a directory of its own holding `tree`: the store, the fid each node of
/// `tree` has in it, the directory. The store writes (it is written by the mount, or by the
/// watch of a read-only one); its log is not synced.
fn make_cache(tree: &Tree, opts: Options) -> Result<(RecordFs, HashMap<Fid, Fid>, PathBuf)> {
    let cache = make_cache_dir()?;
    let local = Options {
        max_file_size: opts.max_file_size.min(layout::PIECE as u64),
        read_only: false,
        ..opts
    };
    let started = RecordFs::start(&cache, local).map(|fs| {
        fs.pipeline().cache_only();
        let made = make_tree(&fs, tree);
        (fs, made)
    });
    match started {
        Ok((fs, Ok(made))) => Ok((fs, made, cache)),
        Ok((fs, Err(e))) => {
            let _ = fs.shutdown();
            let _ = std::fs::remove_dir_all(&cache);
            Err(e)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&cache);
            Err(e)
        }
    }
}

/// A read-only mount: the cache built from one revision, then the watch from the next.
fn open_following(url: &EtcdUrl, opts: Options) -> Result<EtcdMount> {
    let etcd = Etcd::connect(url, MOUNT_TIMEOUT)?;
    let (rev, keys) = etcd.get_all_at(b"")?;
    let kvs: Vec<(Vec<u8>, Vec<u8>)> = keys.into_iter().map(|k| (k.key, k.value)).collect();
    let tree = layout::from_keys(&kvs)?;
    servable(url, &tree, &opts)?;
    let infos: HashMap<Fid, Vec<u8>> = kvs
        .iter()
        .filter_map(|(k, v)| {
            let fid = std::str::from_utf8(k.strip_prefix(b"i/")?).ok()?;
            Some((u64::from_str_radix(fid, 16).ok()?, v.clone()))
        })
        .collect();
    let (fs, made, cache) = make_cache(&tree, opts)?;
    let fs = Arc::new(fs);
    let follower = Follower::new(fs.clone(), url.clone(), &tree, infos, made, rev);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = match super::follow::start(follower, stop.clone()) {
        Ok(t) => t,
        Err(e) => {
            let _ = fs.shutdown();
            let _ = std::fs::remove_dir_all(&cache);
            return Err(e);
        }
    };
    info!(
        "{url}: {} nodes and {} names cached in {}, following from revision {rev}",
        tree.nodes.len(),
        tree.names.len(),
        cache.display()
    );
    Ok(EtcdMount {
        fs,
        url: url.clone(),
        cache,
        lease: None,
        stop,
        thread: Some(thread),
    })
}

/// An empty store: its root directory, owned by whoever mounts it.
fn new_tree() -> Tree {
    let now = Time::now();
    let attrs = Attrs {
        mode: 0o755,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        atime: now,
        mtime: now,
        ctime: now,
    };
    Tree {
        nodes: vec![Node {
            fid: ROOT,
            kind: Kind::Dir,
            attrs,
            bytes: Vec::new(),
            xattrs: Vec::new(),
        }],
        names: Vec::new(),
    }
}

/// A new directory only this user can reach, for the cache.
fn make_cache_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    // TMPDIR, or /tmp.
    let base = std::env::temp_dir();
    remove_dead_caches(&base);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = base.join(format!("recordfs-etcd.{}.{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("making the cache {}", dir.display()), &e))?;
    Ok(dir)
}

/// Removes the caches (ours, in `base`) of mounts whose daemon is gone: one killed never
/// removed its own, and it holds a copy of the store's bytes.
fn remove_dead_caches(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("recordfs-etcd."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|pid| pid.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if gone && ours {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => info!("removed {}: its daemon is gone", entry.path().display()),
                Err(e) => warn!("{}: not removed: {e}", entry.path().display()),
            }
        }
    }
}

/// Makes `tree` in the empty store `fs` serves: directories before what they hold, a file
/// with several names once (then linked), times last (a name made in a directory changes
/// the directory's). The fid each node of `tree` has in `fs`.
pub fn make_tree(fs: &RecordFs, tree: &Tree) -> Result<HashMap<Fid, Fid>> {
    let nodes: HashMap<Fid, &Node> = tree.nodes.iter().map(|n| (n.fid, n)).collect();
    let mut in_dir: HashMap<Fid, Vec<&Name>> = HashMap::new();
    for n in &tree.names {
        in_dir.entry(n.dir).or_default().push(n);
    }
    let mut made: HashMap<Fid, Fid> = HashMap::from([(ROOT, ROOT)]);
    let mut order = vec![ROOT];
    let mut at = 0;
    while at < order.len() {
        let dir = order[at];
        at += 1;
        for n in in_dir.get(&dir).map(Vec::as_slice).unwrap_or_default() {
            let here = made[&dir];
            if let Some(&fid) = made.get(&n.fid) {
                fs.wait(fs.link(fid, here, &n.name)?.1)?;
                continue;
            }
            let node = nodes[&n.fid];
            let a = &node.attrs;
            let path = || String::from_utf8_lossy(&n.name).into_owned();
            let (stat, ticket) = match node.kind {
                Kind::Dir => fs.mkdir(here, &n.name, a.mode, a.uid, a.gid),
                Kind::Symlink => fs.symlink(here, &n.name, &node.bytes, a.uid, a.gid),
                Kind::File => fs.create_with(here, &n.name, a.mode, node.bytes.clone()),
            }
            .map_err(|e| Error::new(e.errno, format!("{}: {}", path(), e.reason)))?;
            fs.wait(ticket)?;
            made.insert(n.fid, stat.ino);
            if node.kind == Kind::Dir {
                order.push(n.fid);
            }
        }
    }
    // Extended attributes, owners, modes and times: files and symlinks, then directories
    // deepest first.
    let others = tree.nodes.iter().filter(|n| n.kind != Kind::Dir);
    for fid in others.map(|n| n.fid).chain(order.iter().rev().copied()) {
        let (Some(node), Some(&new)) = (nodes.get(&fid), made.get(&fid)) else {
            continue;
        };
        set_attributes(fs, new, node)?;
    }
    Ok(made)
}
