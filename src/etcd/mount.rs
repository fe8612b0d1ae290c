//! Serving a store in etcd: `recordfs mount etcd://HOST:PORT[,...]/PREFIX MNT` (FORMAT.md,
//! "A store in etcd", "The mount").
//!
//! The mount serves a local store that caches the prefix (a fresh one, in a private
//! directory, built from every key read at one revision). It follows every change made to
//! the prefix from that revision on (`follow.rs`), and, unless read-only, ships every commit
//! to etcd before it is acknowledged (`replica.rs`, `pipeline::Replica`). Several mounts may
//! change one prefix: each says so under a key of its own (`mounts/...`, under a lease it
//! keeps alive), takes a block of fids of its own, and its transactions hold only if none
//! of their keys changed since it saw them (`shared.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use serde_json::{json, Value};

use super::cache::set_attributes;
use super::follow::Follower;
use super::layout::{self, Name, Node, Tree, MOUNTS};
use super::replica::EtcdReplica;
use super::shared::{Fids, Shared};
use super::{Etcd, EtcdUrl, FID_BLOCK, MOUNT_TIMEOUT};
use crate::error::{err, Error, Result};
use crate::fs::RecordFs;
use crate::options::Options;
use crate::types::{Attrs, Fid, Kind, Time, ROOT};

/// The lease on a mount's key, in seconds: a mount whose daemon died is listed this long.
pub const LEASE_SECS: i64 = 5;

/// How many times a mount reads the prefix again when `meta` moved before it took its
/// block of fids (another mount took one first).
const BLOCK_TRIES: usize = 5;

/// A live mount's hold on its prefix: the cache it serves, the watch it follows, and the
/// lease it keeps (a mount that changes the prefix).
pub struct EtcdMount {
    pub fs: Arc<RecordFs>,
    pub url: EtcdUrl,
    cache: PathBuf,
    lease: Option<i64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Opens `url` for a mount: says so under a lease (unless read-only), builds the cache,
/// follows the prefix, and ships commits from then on.
pub fn open(url: &EtcdUrl, opts: Options) -> Result<EtcdMount> {
    let stop = Arc::new(AtomicBool::new(false));
    if opts.read_only {
        return open_cache(url, opts, None, stop);
    }
    let etcd = Etcd::connect(url, MOUNT_TIMEOUT)?;
    let host = hostname();
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = [MOUNTS, format!("{host}.{pid}.{nanos}").as_bytes()].concat();
    let who = format!("pid {pid} on {host}");
    let lease = etcd.put_leased(&key, &layout::mount_value(&who, None), LEASE_SECS)?;
    let listed = Listed {
        etcd: &etcd,
        key,
        who,
        lease,
    };
    // Kept alive from now on: building the cache of a large prefix takes longer than the
    // lease lasts.
    let opened = keep_alive(url, lease, stop.clone()).and_then(|keeper| {
        match open_cache(url, opts, Some(&listed), stop.clone()) {
            Ok(mut m) => {
                m.lease = Some(lease);
                m.threads.push(keeper);
                Ok(m)
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = keeper.join();
                Err(e)
            }
        }
    });
    if opened.is_err() {
        let _ = etcd.revoke(lease);
    }
    opened
}

impl EtcdMount {
    /// After the store's shutdown (which shipped what it could): stops following, ends the
    /// lease (its key goes) and removes the cache.
    pub fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(lease) = self.lease {
            match Etcd::connect(&self.url, MOUNT_TIMEOUT).and_then(|e| e.revoke(lease)) {
                Ok(()) => info!("{}: no longer listed as a mount", self.url),
                Err(e) => warn!(
                    "{}: the mount stays listed until its lease ends ({LEASE_SECS} s): {}",
                    self.url, e.reason
                ),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.cache) {
            warn!("cache {}: not removed: {e}", self.cache.display());
        }
    }
}

/// Renews the lease a third of its time apart until `stop`. A lease that ended (the
/// cluster did not hear from this mount in time) only unlists the mount: its transactions
/// hold by what they compare, not by the lease.
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
                        error!(
                            "{}: the lease ended; this mount is no longer listed",
                            etcd.url
                        );
                        return;
                    }
                    Err(e) => warn!("{}: renewing the lease: {}", etcd.url, e.reason),
                }
            }
        })
        .map_err(|e| Error::io("starting the lease thread", &e))
}

/// What a mount starts from: the tree read at `revision`, every node's `i/` value, the
/// first fid of the block it took (a mount that changes the prefix), and the pieces dead
/// mounts left (`layout::orphan_pieces`).
struct Start {
    tree: Tree,
    infos: HashMap<Fid, Vec<u8>>,
    revision: i64,
    base: Fid,
    orphans: Vec<Vec<u8>>,
}

/// Deletes pieces that saves cut short by their mounts' deaths left. Only said when it
/// fails: they stay for the next mount (and `check` reports them).
fn drop_orphans(etcd: &Etcd, url: &EtcdUrl, orphans: &[Vec<u8>]) {
    for some in orphans.chunks(super::MAX_TXN_OPS) {
        if let Err(e) = etcd.put_if(&[], &[], some) {
            warn!("{url}: deleting pieces dead mounts left: {}", e.reason);
            return;
        }
    }
    if !orphans.is_empty() {
        info!("{url}: deleted {} pieces dead mounts left", orphans.len());
    }
}

/// Reads the prefix; `taking` (a mount that changes it) makes a new store of an empty
/// one and takes a block of fids from `meta`.
fn read_start(etcd: &Etcd, url: &EtcdUrl, taking: bool) -> Result<Start> {
    for _ in 0..BLOCK_TRIES {
        let (revision, keys) = etcd.get_all_at(b"")?;
        let meta = keys.iter().find(|k| k.key == b"meta");
        let kvs: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .map(|k| (k.key.clone(), k.value.clone()))
            .collect();
        let infos: HashMap<Fid, Vec<u8>> = kvs
            .iter()
            .filter_map(|(k, v)| {
                let fid = std::str::from_utf8(k.strip_prefix(b"i/")?).ok()?;
                Some((u64::from_str_radix(fid, 16).ok()?, v.clone()))
            })
            .collect();
        let (tree, next_fid, meta_rev) = match meta {
            Some(m) => {
                let tree = layout::from_keys(&kvs)?;
                let v: Value =
                    serde_json::from_slice(&m.value).map_err(|e| err!(EIO, "meta: {e}"))?;
                let next = v["next_fid"]
                    .as_u64()
                    .ok_or_else(|| err!(EIO, "meta: no next_fid"))?;
                (tree, next, m.mod_revision)
            }
            None if taking && keys.iter().all(|k| k.key.starts_with(MOUNTS)) => {
                (new_tree(), ROOT + 1, 0)
            }
            None => {
                return Err(err!(
                    EIO,
                    "{url} holds keys but no meta: not a store (a migration that did not finish?)"
                ))
            }
        };
        if !taking {
            return Ok(Start {
                tree,
                infos,
                revision,
                base: 0,
                orphans: Vec::new(),
            });
        }
        let orphans = layout::orphan_pieces(&kvs, dead_here);
        let base = next_fid;
        let end = base
            .checked_add(FID_BLOCK)
            .ok_or_else(|| err!(ENOSPC, "{url}: no fids left"))?;
        let meta_value = json!({"format": layout::FORMAT, "next_fid": end}).to_string();
        let mut puts = vec![(b"meta".to_vec(), meta_value.into_bytes())];
        if meta.is_none() {
            puts.extend(layout::to_keys(&tree, |_, _| String::new()));
        }
        if etcd.put_if(&[(b"meta".to_vec(), meta_rev)], &puts, &[])? {
            return Ok(Start {
                tree,
                infos,
                revision,
                base,
                orphans,
            });
        }
        debug!("{url}: another mount moved meta first; reading the prefix again");
    }
    Err(err!(
        EBUSY,
        "{url}: other mounts kept taking fids while this one started; try again"
    ))
}

/// A mount that changes the prefix, as listed under `mounts/`.
struct Listed<'a> {
    etcd: &'a Etcd,
    key: Vec<u8>,
    who: String,
    lease: i64,
}

/// Reads the prefix, builds the cache and starts following (and, when `listed`, shipping:
/// a mount that changes the prefix).
fn open_cache(
    url: &EtcdUrl,
    opts: Options,
    listed: Option<&Listed>,
    stop: Arc<AtomicBool>,
) -> Result<EtcdMount> {
    let reader;
    let etcd = match listed {
        Some(l) => l.etcd,
        None => {
            reader = Etcd::connect(url, MOUNT_TIMEOUT)?;
            &reader
        }
    };
    let taking = !opts.read_only;
    let start = read_start(etcd, url, taking)?;
    servable(url, &start.tree, &opts)?;
    if let Some(l) = listed {
        // Before this mount puts any piece: the block its pieces' ids name is a live
        // mount's, so another mount that starts leaves them.
        let value = layout::mount_value(&l.who, Some(start.base));
        etcd.put_under(&l.key, &value, l.lease)?;
        drop_orphans(etcd, url, &start.orphans);
    }
    // Connected before the cache is made, which nothing would remove after a failure here.
    let shipper = match taking {
        true => Some(Etcd::connect(url, MOUNT_TIMEOUT)?),
        false => None,
    };
    let (fs, made, cache) = make_cache(&start.tree, opts)?;
    let fs = Arc::new(fs);
    let shared = Arc::new(Shared::new(Fids::new(&made, start.base), start.revision));
    if let Some(shipper) = shipper {
        let replica = EtcdReplica::new(shipper, shared.clone(), &start.tree, &start.infos, &made);
        fs.pipeline().ship_to(Arc::new(replica));
    }
    let follower = Follower::new(fs.clone(), url.clone(), &start.tree, start.infos, shared);
    let thread = match super::follow::start(follower, stop.clone()) {
        Ok(t) => t,
        Err(e) => {
            let _ = fs.shutdown();
            let _ = std::fs::remove_dir_all(&cache);
            return Err(e);
        }
    };
    info!(
        "{url}: {} nodes and {} names cached in {}, following from revision {}",
        start.tree.nodes.len(),
        start.tree.names.len(),
        cache.display(),
        start.revision
    );
    Ok(EtcdMount {
        fs,
        url: url.clone(),
        cache,
        lease: None,
        stop,
        threads: vec![thread],
    })
}

/// The largest file a mount of etcd serves: as many pieces as one transaction can list.
fn largest_file(opts: &Options) -> u64 {
    opts.max_file_size
        .min((layout::PIECE * layout::MOUNT_PIECES) as u64)
}

/// A prefix holding a file larger than a mount saves is not served (it was put there by a
/// tool), rather than served with a file that cannot change.
fn servable(url: &EtcdUrl, tree: &Tree, opts: &Options) -> Result<()> {
    let largest = largest_file(opts);
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
        max_file_size: largest_file(&opts),
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn process_gone(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
}

/// Whether the mount key `key` (`mounts/<host>.<pid>.<nanos>`) is of this machine and its
/// daemon is gone: a daemon killed and started again is back before its lease ends.
fn dead_here(key: &[u8]) -> bool {
    let Some(name) = key
        .strip_prefix(MOUNTS)
        .and_then(|n| std::str::from_utf8(n).ok())
    else {
        return false;
    };
    let mut parts = name.rsplitn(3, '.');
    let (_, pid, host) = (parts.next(), parts.next(), parts.next());
    let pid = pid.and_then(|p| p.parse::<i32>().ok()).filter(|p| *p > 0);
    match (host, pid) {
        (Some(h), Some(pid)) => h == hostname() && process_gone(pid),
        _ => false,
    }
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
        let gone = process_gone(pid);
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
