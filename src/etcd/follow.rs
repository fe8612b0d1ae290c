//! Every mount of a prefix follows the changes other mounts (or tools) make to it: a watch
//! from the revision its cache was built at gives each transaction's keys, which become
//! changes of the cache (names made, moved, linked and removed, bytes saved, attributes
//! set), and the kernel is told to forget the names and attributes they touched. When etcd
//! no longer keeps the history the watch needs (a compaction), the whole prefix is read
//! again and the cache is brought to it the same way. The cache only moves forward in
//! revisions: no reader sees a version older than one it saw. A mount that also changes the
//! prefix takes each revision in through `converge.rs`, which leaves what would overwrite its
//! own unsettled commits for later.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};

use super::layout::{self, Tree};
use super::shared::Shared;
use super::{Change, Etcd, EtcdUrl, WatchEnd, Watched};
use crate::error::{err, Result};
use crate::fs::{Invalidation, RecordFs};
use crate::types::{Fid, Kind};

/// A name in a directory, by etcd fids.
pub(super) type NameAt = (Fid, Vec<u8>);

/// What etcd holds, as of `Shared::revision` (the cache shows it, but for `Seen::dirty`
/// keys).
pub struct Follower {
    pub(super) fs: Arc<RecordFs>,
    url: EtcdUrl,
    /// Every name: its directory and name → the node it leads to (etcd fids).
    pub(super) names: HashMap<NameAt, Fid>,
    /// Every node's `i/` value.
    pub(super) infos: HashMap<Fid, Vec<u8>>,
    /// Which node of the cache each etcd node is; the revision the cache is at.
    pub(super) shared: Arc<Shared>,
    /// The cache's directories where `beside` may have left its temporary name (made, then
    /// not moved over: a local commit came first); `sweep` removes them.
    pub(super) incoming: HashSet<Fid>,
}

impl Follower {
    /// `tree` as read at `shared`'s revision.
    pub fn new(
        fs: Arc<RecordFs>,
        url: EtcdUrl,
        tree: &Tree,
        infos: HashMap<Fid, Vec<u8>>,
        shared: Arc<Shared>,
    ) -> Follower {
        Follower {
            fs,
            url,
            names: tree
                .names
                .iter()
                .map(|n| ((n.dir, n.name.clone()), n.fid))
                .collect(),
            infos,
            shared,
            incoming: HashSet::new(),
        }
    }

    /// The cache's node for etcd node `fid`, while the cache has it.
    pub(super) fn live(&self, fid: Fid) -> Option<Fid> {
        let l = self.shared.fids.lock().local(fid)?;
        self.fs.pipeline().inode(l).is_some().then_some(l)
    }

    /// Follows until `stop`: a watch, again from where it was after an error (half a second
    /// later, from the next member on: one that has no leader ends its watches, one that says
    /// nothing for 3 s is left), the whole prefix read again after a compaction.
    pub fn run(mut self, stop: &AtomicBool) {
        // The member to try first: after a failure, the next one.
        let mut first = 0;
        while !stop.load(Ordering::Relaxed) {
            let from = self.shared.revision() + 1;
            let connected = Etcd::connect_from(&self.url, super::MOUNT_TIMEOUT, first, true);
            if let Ok(etcd) = &connected {
                first = etcd.member_in_use();
            }
            let ended = connected.and_then(|etcd| {
                etcd.watch(from, stop, |w| match w {
                    Watched::Revision(rev, changes) => self.take_in(rev, changes).map(|_| true),
                    Watched::Tick => {
                        self.settle();
                        self.shared.release(false);
                        Ok(!self.can_catch_up())
                    }
                })
                .map(|end| (etcd, end))
            });
            if ended.is_err() {
                first += 1;
            }
            match ended {
                Ok((_, WatchEnd::Stopped)) => return,
                Ok((etcd, WatchEnd::Paused)) => {
                    if let Err(e) = self.catch_up(&etcd) {
                        warn!("{}: bringing changes in: {}", self.url, e.reason);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                Ok((etcd, WatchEnd::Compacted(rev))) => {
                    info!("{}: history compacted to {rev}; reading it whole", self.url);
                    if let Err(e) = self.relist(&etcd) {
                        warn!("{}: reading the prefix again: {}", self.url, e.reason);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                // Fallen so far behind that etcd's answer is too large: read it whole.
                Err(e) if e.errno == libc::E2BIG => {
                    warn!("{}: {}; reading the prefix whole", self.url, e.reason);
                    let relisted = Etcd::connect_from(&self.url, super::MOUNT_TIMEOUT, first, true)
                        .and_then(|etcd| self.relist(&etcd));
                    if let Err(e) = relisted {
                        warn!("{}: reading the prefix again: {}", self.url, e.reason);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                Err(e) => {
                    warn!(
                        "{}: the watch broke, again in 0.5 s: {}",
                        self.url, e.reason
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// Brings the cache to every key as read now.
    fn relist(&mut self, etcd: &Etcd) -> Result<()> {
        let (rev, keys) = etcd.get_all_at(b"")?;
        let now: HashMap<Vec<u8>, Vec<u8>> = keys.into_iter().map(|k| (k.key, k.value)).collect();
        let mut changes: Vec<Change> = Vec::new();
        let mut was: HashSet<Vec<u8>> = HashSet::new();
        for ((dir, name), fid) in &self.names {
            let key = layout::name_key(*dir, name);
            if now.get(&key) != Some(&layout::fid_value(*fid)) {
                changes.push(Change {
                    key: key.clone(),
                    value: now.get(&key).cloned(),
                });
            }
            was.insert(key);
        }
        for (fid, info) in &self.infos {
            let key = layout::info_key(*fid);
            if now.get(&key) != Some(info) {
                changes.push(Change {
                    key: key.clone(),
                    value: now.get(&key).cloned(),
                });
            }
            was.insert(key);
        }
        for (key, value) in &now {
            let new = (key.starts_with(b"n/") || key.starts_with(b"i/")) && !was.contains(key);
            if new || key.starts_with(b"d/") {
                changes.push(Change {
                    key: key.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        self.take_in(rev, changes)
    }

    /// Makes one revision's changes in the cache (as the replica's own: `from_replica`),
    /// then has the kernel forget what they touched.
    pub(super) fn apply(&mut self, rev: i64, changes: &[Change]) -> Result<()> {
        let mut forget = Forget::default();
        let done = self.make_changes(rev, changes, &mut forget);
        // Also after a failure: what was made before it shows in the cache already (it is
        // brought to etcd's state later, by `catch_up`).
        forget.tell(&self.fs);
        done
    }

    fn make_changes(&mut self, rev: i64, changes: &[Change], forget: &mut Forget) -> Result<()> {
        let (names, infos, data) = parse(changes)?;
        // Names that lead somewhere new, parents before children; then the names that go,
        // children before parents; then bytes and attributes.
        let mut todo: Vec<(NameAt, Fid)> = names
            .iter()
            .filter_map(|(n, to)| to.map(|f| (n.clone(), f)))
            .filter(|(n, f)| self.names.get(n) != Some(f))
            .collect();
        let mut done_moves: HashSet<NameAt> = HashSet::new();
        // The nodes made in this revision.
        let mut made: HashSet<Fid> = HashSet::new();
        while !todo.is_empty() {
            let before = todo.len();
            let mut later = Vec::new();
            for (at, fid) in todo {
                match self.live(at.0) {
                    Some(_) => self.name(
                        &at,
                        fid,
                        &names,
                        &infos,
                        &data,
                        &mut done_moves,
                        &mut made,
                        forget,
                    )?,
                    None => later.push((at, fid)),
                }
            }
            if later.len() == before {
                return Err(err!(
                    EIO,
                    "revision {rev}: names in directories that are not there"
                ));
            }
            todo = later;
        }
        let gone: Vec<NameAt> = names
            .iter()
            .filter(|(n, to)| to.is_none() && self.names.contains_key(n) && !done_moves.contains(n))
            .map(|(n, _)| n.clone())
            .collect();
        self.unname_all(gone, forget)?;
        // Bytes and attributes last: making and removing names changes the times of the
        // directories they are in, which must end as etcd says.
        for (fid, info) in &infos {
            let (Some(info), Some(l)) = (info, self.live(*fid)) else {
                continue;
            };
            if self.infos.get(fid) != Some(info) {
                self.refresh(*fid, l, info, &data, made.contains(fid), forget)?;
            }
        }
        self.note(changes, true)
    }

    /// Takes `changes` as what etcd holds; `in_cache`: the cache shows them too (else the
    /// nodes they remove stay known until it does).
    pub(super) fn note(&mut self, changes: &[Change], in_cache: bool) -> Result<()> {
        let (names, infos, _) = parse(changes)?;
        for (fid, info) in infos {
            match info {
                Some(v) => {
                    self.infos.insert(fid, v);
                }
                None => {
                    self.infos.remove(&fid);
                    if in_cache {
                        self.shared.fids.lock().remove(fid);
                    }
                }
            }
        }
        for (at, to) in names {
            match to {
                Some(f) => self.names.insert(at, f),
                None => self.names.remove(&at),
            };
        }
        Ok(())
    }

    /// Makes `at` lead to `fid`: a move of one of its names that goes in this revision, a
    /// further name (hard link), or a new node with its bytes.
    #[allow(clippy::too_many_arguments)]
    fn name(
        &mut self,
        at: &NameAt,
        fid: Fid,
        names: &[(NameAt, Option<Fid>)],
        infos: &HashMap<Fid, Option<Vec<u8>>>,
        data: &HashMap<Vec<u8>, Vec<u8>>,
        moved: &mut HashSet<NameAt>,
        made: &mut HashSet<Fid>,
        forget: &mut Forget,
    ) -> Result<()> {
        let fs = self.fs.clone();
        let dir = self
            .live(at.0)
            .ok_or_else(|| err!(EIO, "{}: no such directory", show(at)))?;
        let here = fs.lookup(dir, &at.1).ok().map(|s| s.ino);
        forget.names.push((dir, at.1.clone()));
        if let Some(l) = self.live(fid) {
            if here == Some(l) {
                return Ok(());
            }
            // One of its names that leads elsewhere now: a move (two that swap: an exchange).
            let from = names.iter().find(|(n, to)| {
                self.names.get(n) == Some(&fid) && *to != Some(fid) && !moved.contains(n)
            });
            let from_dir = from.and_then(|(f, _)| self.live(f.0));
            if let (Some((from, to)), Some(from_dir)) = (from, from_dir) {
                let swap = here.is_some() && *to == self.names.get(at).copied();
                let flags = if swap { libc::RENAME_EXCHANGE } else { 0 };
                fs.wait(fs.rename(from_dir, &from.1, dir, &at.1, flags)?)?;
                forget.names.push((from_dir, from.1.clone()));
                moved.insert(from.clone());
                if swap {
                    moved.insert(at.clone());
                }
                return Ok(());
            }
            let (_, t) = self.beside((dir, &at.1), here, Some(l), |name| fs.link(l, dir, name))?;
            forget.inodes.push(l);
            return fs.wait(t);
        }
        let value = infos.get(&fid).and_then(|v| v.clone()).ok_or_else(|| {
            err!(
                EIO,
                "{}: leads to a node the revision does not have",
                show(at)
            )
        })?;
        self.make_node((dir, &at.1), fid, &value, data, here)?;
        made.insert(fid);
        Ok(())
    }

    /// Removes the names `gone`, children before parents (a directory not yet empty is
    /// tried again after the others).
    pub(super) fn unname_all(&mut self, mut gone: Vec<NameAt>, forget: &mut Forget) -> Result<()> {
        for _ in 0..64 {
            let mut later = Vec::new();
            for at in gone {
                match self.unname(&at, forget) {
                    Err(e) if e.errno == libc::ENOTEMPTY => later.push(at),
                    r => r?,
                }
            }
            if later.is_empty() {
                break;
            }
            gone = later;
        }
        Ok(())
    }

    fn unname(&mut self, at: &NameAt, forget: &mut Forget) -> Result<()> {
        let Some(dir) = self.live(at.0) else {
            return Ok(());
        };
        let fs = &self.fs;
        let Ok(stat) = fs.lookup(dir, &at.1) else {
            return Ok(());
        };
        let t = match stat.kind {
            Kind::Dir => fs.rmdir(dir, &at.1)?,
            _ => fs.unlink(dir, &at.1)?,
        };
        fs.wait(t)?;
        forget.names.push((dir, at.1.clone()));
        forget.inodes.push(stat.ino);
        Ok(())
    }
}

/// Changes as names (None: gone), `i/` values (None: gone), and `d/` values, by key.
type Parsed = (
    Vec<(NameAt, Option<Fid>)>,
    HashMap<Fid, Option<Vec<u8>>>,
    HashMap<Vec<u8>, Vec<u8>>,
);

fn parse(changes: &[Change]) -> Result<Parsed> {
    let mut names: Vec<(NameAt, Option<Fid>)> = Vec::new();
    let mut infos: HashMap<Fid, Option<Vec<u8>>> = HashMap::new();
    let mut data: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for c in changes {
        if let Some(at) = name_at(&c.key) {
            let to = c.value.as_deref().map(parse_fid).transpose()?;
            names.push((at, to));
        } else if let Some(fid) = c.key.strip_prefix(b"i/") {
            infos.insert(parse_fid(fid)?, c.value.clone());
        } else if c.key.starts_with(b"d/") {
            if let Some(v) = &c.value {
                data.insert(c.key.clone(), v.clone());
            }
        }
    }
    Ok((names, infos, data))
}

/// The node an `i/` or `d/` key is about.
pub(super) fn node_at(key: &[u8]) -> Option<Fid> {
    let fid = key
        .strip_prefix(b"i/")
        .or_else(|| key.strip_prefix(b"d/"))?;
    parse_fid(fid).ok()
}

/// The name an `n/` key is.
pub(super) fn name_at(key: &[u8]) -> Option<NameAt> {
    let rest = key.strip_prefix(b"n/")?;
    if rest.len() < 18 || rest[16] != b'/' {
        return None;
    }
    Some((parse_fid(&rest[..16]).ok()?, rest[17..].to_vec()))
}

/// What the kernel is told to forget after a revision.
#[derive(Default)]
pub(super) struct Forget {
    pub(super) names: Vec<(Fid, Vec<u8>)>,
    pub(super) inodes: Vec<Fid>,
}

impl Forget {
    /// Tells the kernel.
    pub(super) fn tell(self, fs: &RecordFs) {
        fs.invalidate(Invalidation::Changed {
            names: self.names,
            inodes: self.inodes,
        });
    }
}

pub(super) fn parse_fid(s: &[u8]) -> Result<Fid> {
    std::str::from_utf8(s)
        .ok()
        .filter(|s| s.len() == 16)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| err!(EIO, "not a fid: {}", String::from_utf8_lossy(s)))
}

pub(super) fn show(at: &NameAt) -> String {
    format!("n/{:016x}/{}", at.0, String::from_utf8_lossy(&at.1))
}

/// Starts following in a thread of its own; `stop` ends it.
pub fn start(follower: Follower, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
    let url = follower.url.clone();
    std::thread::Builder::new()
        .name("recordfs-follow".into())
        .spawn(move || {
            let shared = follower.shared.clone();
            follower.run(&stop);
            shared.release(true);
            if !stop.load(Ordering::Relaxed) {
                error!("{url}: no longer following");
            }
        })
        .map_err(|e| crate::error::Error::io("starting the watch thread", &e))
}
