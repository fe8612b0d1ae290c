//! How the follower takes in a revision when the mount also changes the prefix (FORMAT.md,
//! "Several mounts"): keys this mount wrote at that revision or later are only noted; the
//! others are made in the cache unless they touch a node with a local commit not settled
//! yet (not shipped: it ships what the node holds then, so it would ship theirs and lose its
//! own; or shipped, but newer than what comes in). Such a revision is left for later: its keys are `dirty`, and `catch_up` brings them
//! in once nothing local waits on them (the local commit went in over it, or was refused).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::follow::{name_at, node_at, parse_fid, show, Follower, Forget, NameAt};
use super::layout;
use super::{Change, Etcd};
use crate::error::{err, Result};
use crate::pipeline::from_replica;
use crate::types::{Fid, Kind};

/// A name, the etcd node it leads to in etcd, and the one the cache shows there.
type Named = (NameAt, Option<Fid>, Option<Fid>);

impl Follower {
    /// Takes in one revision's changes (or a relist's, at the revision read).
    pub(super) fn take_in(&mut self, rev: i64, changes: Vec<Change>) -> Result<()> {
        let (mine, theirs): (Vec<Change>, Vec<Change>) = {
            let seen = self.shared.seen.lock();
            changes
                .into_iter()
                .partition(|c| seen.at.get(&c.key).is_some_and(|at| *at >= rev))
        };
        let mut later = !theirs.is_empty()
            && (self.waits(theirs.iter().map(|c| c.key.as_slice())) || self.in_new_pieces(&theirs));
        if !later && !theirs.is_empty() {
            match from_replica(|| self.apply(rev, &theirs)) {
                Ok(()) => {}
                // A local commit came first.
                Err(e) if e.errno == libc::EINPROGRESS => later = true,
                Err(e) => return Err(e),
            }
        }
        if later {
            let mut seen = self.shared.seen.lock();
            for c in &theirs {
                seen.defer(&c.key, rev);
            }
            drop(seen);
            self.note(&theirs, false)?;
        }
        self.note(&mine, true)?;
        self.advance(rev);
        match later {
            true => Ok(()),
            false => from_replica(|| self.sweep()),
        }
    }

    /// The cache shows every key not in `Seen::at` as of `rev`.
    fn advance(&self, rev: i64) {
        let at = self.shared.revision().max(rev);
        self.shared
            .revision
            .store(at, std::sync::atomic::Ordering::Relaxed);
        self.shared.seen.lock().prune(at);
        self.settle();
    }

    /// Settles the local commits whose transactions the follower is past now.
    pub(super) fn settle(&self) {
        if let Some(upto) = self.shared.settled() {
            self.fs.pipeline().settle_upto(upto);
        }
    }

    /// Whether `changes` give a file bytes in pieces the follower has not had: they came
    /// in revisions of their own before, so the catch-up brings them in (it reads them from
    /// etcd, which cannot be done from within a watch).
    fn in_new_pieces(&self, changes: &[Change]) -> bool {
        changes.iter().any(|c| {
            let (Some(fid), Some(value)) = (node_at(&c.key), &c.value) else {
                return false;
            };
            let listed = layout::piece_ids(value);
            listed.is_some()
                && c.key.starts_with(b"i/")
                && self.infos.get(&fid).and_then(|i| layout::piece_ids(i)) != listed
        })
    }

    /// Whether changes of `keys` must wait: one is dirty already, or `touches_local`.
    fn waits<'a>(&self, keys: impl Iterator<Item = &'a [u8]> + Clone) -> bool {
        let dirty = {
            let seen = self.shared.seen.lock();
            keys.clone().any(|k| seen.dirty.contains_key(k))
        };
        dirty || self.touches_local(keys, true)
    }

    /// Whether changes of `keys` (one `revision`'s, else a catch-up's) touch a node (a
    /// directory, the node a name leads to or held) with a local commit not settled yet
    /// (one that removed it too), or a directory the cache does not have.
    fn touches_local<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]> + Clone,
        revision: bool,
    ) -> bool {
        // Directories that come with the keys: in a revision, those etcd did not have
        // before (an `i/` of one it had is only its attributes: where the cache lacks that
        // one, removed here by a change etcd refused, the revision must wait); in a
        // catch-up, every one whose `i/` it brings in.
        let made_now: BTreeSet<Fid> = keys
            .clone()
            .filter_map(|k| k.strip_prefix(b"i/"))
            .filter_map(|f| parse_fid(f).ok())
            .filter(|f| !revision || !self.infos.contains_key(f))
            .collect();
        // A node's local fid whether the cache has it or not: a local commit that removed
        // it is as unsettled as one that changed it.
        let local = |fid: Fid| self.shared.fids.lock().local(fid);
        let mut fids = Vec::new();
        for key in keys {
            if let Some((dir, name)) = name_at(key) {
                match self.live(dir) {
                    Some(d) => {
                        fids.push(d);
                        fids.extend(self.fs.lookup(d, &name).ok().map(|s| s.ino));
                    }
                    None if made_now.contains(&dir) => fids.extend(local(dir)),
                    None => return true,
                }
                fids.extend(self.names.get(&(dir, name)).and_then(|f| local(*f)));
            } else if let Some(fid) = node_at(key) {
                fids.extend(local(fid));
            }
        }
        self.fs.pipeline().made_here(&fids)
    }

    /// Whether there are dirty keys, nothing local waits on them, and the follower has
    /// taken in this mount's own transactions on them (until it has, what it holds of them
    /// is older than what the cache shows).
    pub(super) fn can_catch_up(&self) -> bool {
        let rev = self.shared.revision();
        let dirty: Vec<Vec<u8>> = {
            let seen = self.shared.seen.lock();
            if seen.dirty.keys().any(|k| seen.bound(k, rev) > rev) {
                return false;
            }
            seen.dirty.keys().cloned().collect()
        };
        !dirty.is_empty() && !self.touches_local(dirty.iter().map(|k| k.as_slice()), false)
    }

    /// Brings the dirty keys in, once nothing local waits on them: each name and node as
    /// etcd holds it (as of the follower's revision), whatever the cache shows. Called
    /// outside the watch: it reads bytes from etcd.
    pub(super) fn catch_up(&mut self, etcd: &Etcd) -> Result<()> {
        if !self.can_catch_up() {
            return Ok(());
        }
        let dirty = self.shared.seen.lock().marked();
        let rev = self.shared.revision();
        // Each name that shows otherwise: what etcd has there, what the cache shows.
        let mut names: Vec<Named> = Vec::new();
        let mut nodes: BTreeSet<Fid> = BTreeSet::new();
        for (key, _) in &dirty {
            if let Some(at) = name_at(key) {
                let want = self.names.get(&at).copied();
                let shown = self.shown(&at)?;
                if want != shown {
                    nodes.extend(want);
                    names.push((at, want, shown));
                }
            } else if let Some(fid) = node_at(key) {
                nodes.insert(fid);
            }
        }
        let mut infos: HashMap<Fid, Vec<u8>> = HashMap::new();
        let mut data: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for fid in nodes {
            let Some(info) = self.infos.get(&fid).cloned() else {
                continue;
            };
            for key in layout::bytes_keys(fid, &info) {
                if let Some(d) = etcd.get_at(&key, rev)? {
                    data.insert(key, d.value);
                }
            }
            infos.insert(fid, info);
        }
        log::debug!(
            "catch-up at revision {rev}: {} dirty keys, {} names and {} nodes to bring in",
            dirty.len(),
            names.len(),
            infos.len()
        );
        match from_replica(|| self.bring_in(&names, &infos, &data)) {
            Ok(left) => {
                let mut seen = self.shared.seen.lock();
                let left: HashSet<Vec<u8>> = left
                    .iter()
                    .map(|(dir, name)| layout::name_key(*dir, name))
                    .collect();
                for (key, mark) in dirty.iter().filter(|(k, _)| !left.contains(k)) {
                    seen.clear(key, *mark);
                }
                seen.prune(rev);
                drop(seen);
                self.shared.release(false);
                from_replica(|| self.sweep())
            }
            // A local commit came first: again once it is settled.
            Err(e) if e.errno == libc::EINPROGRESS => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Makes each of `names` lead where etcd says (parents first), removes those etcd does
    /// not have (children first), then gives each of `infos`' nodes etcd's bytes and
    /// attributes. A name at a time, a file linked before its other name goes, so that no
    /// node is lost on the way; done again whole after an error. Returns the names in
    /// directories the cache lacks: they stay as they are (and dirty) until it has them.
    fn bring_in(
        &mut self,
        names: &[Named],
        infos: &HashMap<Fid, Vec<u8>>,
        data: &HashMap<Vec<u8>, Vec<u8>>,
    ) -> Result<Vec<NameAt>> {
        let mut forget = Forget::default();
        let mut made: HashSet<Fid> = HashSet::new();
        // Names of nodes the cache has first: a file gains its new name before another
        // name's change takes its old one (its last, maybe) away.
        let mut todo: Vec<&Named> = names.iter().filter(|n| n.1.is_some()).collect();
        todo.sort_by_key(|n| n.1.and_then(|f| self.live(f)).is_none());
        for _ in 0..64 {
            let mut later = Vec::new();
            for n in todo {
                match self.live(n.0 .0) {
                    Some(dir) => {
                        self.put_name(dir, n, names, infos, data, &mut made, &mut forget)?
                    }
                    None => later.push(n),
                }
            }
            todo = later;
            if todo.is_empty() {
                break;
            }
        }
        let gone: Vec<NameAt> = names
            .iter()
            .filter(|n| n.1.is_none())
            .map(|n| n.0.clone())
            .collect();
        self.unname_all(gone, &mut forget)?;
        for (fid, info) in infos {
            if let Some(l) = self.live(*fid) {
                self.refresh(*fid, l, info, data, made.contains(fid), &mut forget)?;
            }
        }
        forget.tell(&self.fs);
        Ok(todo.into_iter().map(|n| n.0.clone()).collect())
    }

    /// Makes `at` lead to etcd node `want`, in the cache's directory `dir`.
    #[allow(clippy::too_many_arguments)]
    fn put_name(
        &mut self,
        dir: Fid,
        (at, want, _): &Named,
        names: &[Named],
        infos: &HashMap<Fid, Vec<u8>>,
        data: &HashMap<Vec<u8>, Vec<u8>>,
        made: &mut HashSet<Fid>,
        forget: &mut Forget,
    ) -> Result<()> {
        let Some(fid) = *want else {
            return Ok(());
        };
        let fs = self.fs.clone();
        let here = fs.lookup(dir, &at.1).ok().map(|s| s.ino);
        forget.names.push((dir, at.1.clone()));
        if let Some(l) = self.live(fid) {
            if here == Some(l) {
                return Ok(());
            }
            forget.inodes.push(l);
            if fs.getattr(l, None)?.kind != Kind::Dir {
                let (_, t) =
                    self.beside((dir, &at.1), here, Some(l), |name| fs.link(l, dir, name))?;
                return fs.wait(t);
            }
            // A directory has one name: moved from where the cache shows it.
            let from = names
                .iter()
                .find(|n| n.2 == Some(fid))
                .and_then(|n| Some((self.live(n.0 .0)?, n.0 .1.clone())));
            let (from_dir, from_name) =
                from.ok_or_else(|| err!(EIO, "{}: the directory is not where it was", show(at)))?;
            forget.names.push((from_dir, from_name.clone()));
            return fs.wait(fs.rename(from_dir, &from_name, dir, &at.1, 0)?);
        }
        let value = infos
            .get(&fid)
            .ok_or_else(|| err!(EIO, "{}: etcd has no node {fid:016x}", show(at)))?;
        self.make_node((dir, &at.1), fid, value, data, here)?;
        made.insert(fid);
        Ok(())
    }

    /// The etcd node the cache shows at `at`.
    fn shown(&self, at: &NameAt) -> Result<Option<Fid>> {
        let Some(dir) = self.live(at.0) else {
            return Ok(None);
        };
        match self.fs.lookup(dir, &at.1) {
            Ok(s) => self.shared.fids.lock().etcd(s.ino).map(Some),
            Err(_) => Ok(None),
        }
    }
}
