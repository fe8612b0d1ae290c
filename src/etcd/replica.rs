//! A mount's commits made into etcd transactions (`pipeline::Replica`).
//!
//! A batch of entries is shipped as the state it left: every key it touched (a file's `i/`
//! and `d/`, a directory's `i/`, a name's `n/`) is put with what the local store holds now,
//! or deleted when the store no longer has it. Such a transaction says what keys hold, not
//! how they change, so sending it twice is harmless. It holds only if none of its keys
//! changed since the cache last saw them (`shared.rs`): other mounts change the prefix too.
//! (A directory's attributes are put over whatever another mount put: the last commit's.)
//! When one did, what changed decides: a save of a file over another's save of it (its `i/`
//! and `d/`) is put again over theirs (the last commit wins whole); anything else (a name made, moved or removed, a node gone) refuses the entries
//! that changed it (EEXIST for a name another mount made first, else ESTALE), and the
//! follower brings the cache back to what etcd holds. A batch too large for one transaction
//! goes in several, in order: each also puts the nodes its names lead to (and their
//! directories), and the nodes that are gone are deleted in the last one, so that a name in
//! etcd never leads nowhere, whatever moment the mount dies at.
//!
//! A file over one value's size goes in pieces: new pieces under ids no one else makes (the
//! file's fid, this mount's fid block, a count) are put first, each in a transaction of its
//! own; the transaction then lists them in the file's `i/`, holds only if every piece it
//! lists is there, and deletes the file's other pieces by range. When another mount's save
//! of the file deleted them first, the bytes are put again in new pieces and it goes again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

mod conflicts;
mod pieces;

use super::keys::{emptied, Held, Keys};
use super::layout::{self, Tree};
use super::shared::Shared;
use super::{Etcd, Txned, MAX_TXN_OPS};
use crate::error::{err, Error, Result};
use crate::log::{Entry, Op};
use crate::pipeline::{Pipeline, Replica, Waiter};
use crate::types::{Attrs, Fid, Kind, Seq};

/// How many times a transaction is sent again over others' saves before it is left for later
/// (each time, another mount's save of a file it saves went in first).
const REBASES: usize = 50;

pub struct EtcdReplica {
    etcd: Etcd,
    shared: Arc<Shared>,
    /// Each file's bytes as etcd holds them, by local fid.
    shipped: Mutex<HashMap<Fid, Held>>,
    /// Nodes made here whose making etcd refused: whatever changes them is refused too.
    refused: Mutex<HashSet<Fid>>,
    /// The latest revision a transaction of this mount made.
    latest: AtomicI64,
    /// This mount's fid block and its saves in pieces so far: the new pieces' ids.
    base: Fid,
    saves: AtomicU64,
}

/// What one transaction came to.
enum Sent {
    Done,
    Refused(Error),
    /// Pieces it lists are gone: of these files (local fids).
    PiecesGone(Vec<Fid>),
}
/// A name: its directory and its bytes.
type NameAt = (Fid, Vec<u8>);

/// What the local store holds now of one node.
struct NodeNow {
    kind: Kind,
    attrs: Attrs,
    size: u64,
    dcrc: u32,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EtcdReplica {
    /// `made`: the local fid of each node of `tree` (etcd fid → local); `infos`: each
    /// node's `i/` value.
    pub fn new(
        etcd: Etcd,
        shared: Arc<Shared>,
        tree: &Tree,
        infos: &HashMap<Fid, Vec<u8>>,
        made: &HashMap<Fid, Fid>,
    ) -> EtcdReplica {
        let shipped = tree
            .nodes
            .iter()
            .filter(|n| n.kind == Kind::File)
            .filter_map(|n| {
                let held = Held {
                    size: n.bytes.len() as u64,
                    crc: crate::log::crc32c(&n.bytes),
                    pieces: infos.get(&n.fid).and_then(|i| layout::piece_ids(i)),
                };
                Some((*made.get(&n.fid)?, held))
            })
            .collect();
        let base = shared.fids.lock().base();
        EtcdReplica {
            etcd,
            shipped: Mutex::new(shipped),
            refused: Mutex::new(HashSet::new()),
            latest: AtomicI64::new(0),
            base,
            saves: AtomicU64::new(0),
            shared,
        }
    }

    /// The keys that say what `entries` left, as the local store holds it now.
    fn keys_for(&self, entries: &[Entry], p: &Pipeline) -> Result<Keys> {
        let mut fids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for e in entries {
            touched(&e.op, &mut fids, &mut names);
        }
        let (targets, nodes) = p.with_ns(|ns| {
            let targets: Vec<(NameAt, Option<Fid>)> = names
                .into_iter()
                .map(|(dir, name)| {
                    let to = ns.lookup(dir, &name).map(|i| i.fid);
                    ((dir, name), to)
                })
                .collect();
            // A name's node and directory go with it.
            for ((dir, _), to) in &targets {
                fids.insert(*dir);
                fids.extend(*to);
            }
            let nodes: Vec<(Fid, Option<NodeNow>)> = fids
                .into_iter()
                .map(|fid| {
                    let now = ns.get(fid).map(|i| NodeNow {
                        kind: i.kind,
                        attrs: i.attrs,
                        size: i.size,
                        dcrc: i.dcrc,
                        target: i.extras.target().map(|t| t.to_vec()),
                        xattrs: i
                            .extras
                            .xattrs()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    });
                    (fid, now)
                })
                .collect();
            (targets, nodes)
        });
        let mut keys = Keys::default();
        let fids = self.shared.fids.lock();
        for (fid, now) in nodes {
            let efid = fids.etcd(fid)?;
            match (now.is_some(), fids.known(fid)) {
                (true, false) => keys.new_nodes.push((fid, efid)),
                (true, true) => {
                    keys.existing.insert(layout::info_key(efid));
                }
                (false, _) => {}
            }
            let Some(n) = now else {
                keys.nodes_gone.insert(layout::info_key(efid));
                keys.nodes_gone.insert(layout::data_key(efid));
                keys.pieces_gone.push(layout::pieces_range(efid));
                keys.shipped.push((fid, None));
                continue;
            };
            let held = match n.kind {
                Kind::Dir => Held {
                    size: 0,
                    crc: crate::log::crc32c(b""),
                    pieces: None,
                },
                Kind::Symlink => {
                    let t = n.target.unwrap_or_default();
                    let held = Held {
                        size: t.len() as u64,
                        crc: crate::log::crc32c(&t),
                        pieces: None,
                    };
                    keys.puts.insert(layout::data_key(efid), t);
                    held
                }
                Kind::File => {
                    let shipped = self.shipped.lock().get(&fid).cloned();
                    match shipped {
                        Some(h) if (h.size, h.crc) == (n.size, n.dcrc) => h,
                        _ => self.put_bytes(p, fid, efid, &mut keys)?,
                    }
                }
            };
            let (size, crc) = (held.size, held.crc);
            let info = match &held.pieces {
                Some(ids) => {
                    let listed = ids.iter().map(|id| layout::piece_key(id)).collect();
                    keys.listed.push((fid, listed));
                    layout::info_value_in_pieces(&n.attrs, size, crc, &n.xattrs, ids)
                }
                None => layout::info_value(n.kind, &n.attrs, size, crc, &n.xattrs),
            };
            if n.kind == Kind::Dir {
                keys.dir_infos.insert(layout::info_key(efid));
            }
            keys.puts.insert(layout::info_key(efid), info);
        }
        for ((dir, name), to) in targets {
            let key = layout::name_key(fids.etcd(dir)?, &name);
            match to {
                Some(f) => {
                    keys.puts.insert(key, layout::fid_value(fids.etcd(f)?));
                }
                None => {
                    keys.keys_gone.insert(key);
                }
            }
        }
        Ok(keys)
    }

    /// One transaction, holding only if none of its keys changed since the cache saw them
    /// and every piece it lists is there, sent again over others' saves.
    fn send(
        &self,
        keys: &Keys,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Sent> {
        let names: Vec<&Vec<u8>> = puts.iter().map(|(k, _)| k).chain(&deletes).collect();
        let mut existing: Vec<Vec<u8>> = keys.existing.iter().cloned().collect();
        existing.extend(keys.listed.iter().flat_map(|(_, l)| l.iter().cloned()));
        let empty = emptied(&deletes);
        for _ in 0..REBASES {
            let bounds = self.bounds(names.iter().copied());
            let compared: Vec<(Vec<u8>, i64)> = bounds
                .iter()
                .map(|(k, b)| match keys.dir_infos.contains(k) {
                    true => (k.clone(), i64::MAX - 1),
                    false => (k.clone(), *b),
                })
                .collect();
            let txned = match self
                .etcd
                .txn_unless_changed(&compared, &existing, &empty, &puts, &deletes, &ranges)
            {
                Err(e) if e.errno == libc::ENOSPC => match self.went_in(&puts)? {
                    Some(rev) => Txned::Done(rev),
                    None => {
                        self.refuse(&bounds);
                        return Ok(Sent::Refused(self.full(e)));
                    }
                },
                r => r?,
            };
            match txned {
                Txned::Done(rev) => {
                    self.latest.fetch_max(rev, Ordering::Relaxed);
                    let mut seen = self.shared.seen.lock();
                    for k in names {
                        seen.at.insert(k.clone(), rev);
                    }
                    return Ok(Sent::Done);
                }
                // Another mount made a name in a directory this transaction removes.
                Txned::Changed(_, taken, _) if !taken.is_empty() => {
                    self.refuse(&bounds);
                    let mut seen = self.shared.seen.lock();
                    for k in &taken {
                        seen.refused(&k.key, k.mod_revision - 1);
                    }
                    let e = err!(
                        ENOTEMPTY,
                        "{}: another mount made {} in a directory this mount removes",
                        self.etcd.url,
                        String::from_utf8_lossy(&taken[0].key)
                    );
                    log::info!("refused: {}", e.reason);
                    return Ok(Sent::Refused(e));
                }
                Txned::Changed(now, _, missing) => {
                    if let Some(e) = self.settle(&puts, &deletes, &compared, &existing, now) {
                        self.refuse(&bounds);
                        return Ok(Sent::Refused(e));
                    }
                    if !missing.is_empty() {
                        let files = keys
                            .listed
                            .iter()
                            .filter(|(_, l)| l.iter().any(|k| missing.contains(k)))
                            .map(|(fid, _)| *fid)
                            .collect();
                        return Ok(Sent::PiecesGone(files));
                    }
                }
            }
        }
        Err(err!(
            EAGAIN,
            "{}: other mounts kept changing the same keys ({REBASES} tries)",
            self.etcd.url
        ))
    }

    /// The revision as of which the cache shows each of `names`.
    fn bounds<'a>(&self, names: impl Iterator<Item = &'a Vec<u8>>) -> Vec<(Vec<u8>, i64)> {
        let seen = self.shared.seen.lock();
        let rev = self.shared.revision();
        names.map(|k| (k.clone(), seen.bound(k, rev))).collect()
    }

    /// A change of these keys was refused: the cache is brought back to what etcd holds of
    /// them before the callers hear of it.
    fn refuse(&self, bounds: &[(Vec<u8>, i64)]) {
        let mut seen = self.shared.seen.lock();
        for (k, bound) in bounds {
            seen.refused(k, *bound);
        }
    }

    /// Whether a transaction etcd answered with NOSPACE went in all the same: etcd applies
    /// the one that takes it past its quota, then raises its alarm and answers NOSPACE (its
    /// `quotaApplierV3`); later ones it refuses before applying them. Read back: every key
    /// put holds what was put. Then the revision it went in at.
    fn went_in(&self, puts: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<i64>> {
        let mut rev = None;
        for (k, v) in puts {
            match self.etcd.get_at(k, 0)? {
                Some(now) if now.value == *v => rev = rev.max(Some(now.mod_revision)),
                _ => return Ok(None),
            }
        }
        if rev.is_some() {
            log::info!(
                "{}: a transaction answered with NOSPACE went in at revision {rev:?} (etcd's alarm is raised)",
                self.etcd.url
            );
        }
        Ok(rev)
    }

    /// `e`, etcd's NOSPACE for a change it did not take: the change is refused as by another
    /// mount's, and its callers hear ENOSPC once their view shows etcd's state again (the
    /// contract's "disk full": the previous version kept), rather than the change waiting in
    /// line until an operator frees space.
    fn full(&self, e: Error) -> Error {
        log::warn!(
            "refused: {}: etcd's space quota is used up (NOSPACE alarm): {}",
            self.etcd.url,
            e.reason
        );
        e
    }

    /// What etcd holds once `keys` went in: each file's bytes, the nodes made here.
    fn record(&self, keys: &Keys) {
        let mut fids = self.shared.fids.lock();
        for (local, etcd) in &keys.new_nodes {
            fids.insert(*etcd, *local);
        }
        drop(fids);
        self.record_sums(&keys.shipped);
    }

    fn record_sums(&self, sums: &[(Fid, Option<Held>)]) {
        let mut shipped = self.shipped.lock();
        for (fid, sum) in sums {
            match sum {
                Some(s) => shipped.insert(*fid, s.clone()),
                None => shipped.remove(fid),
            };
        }
    }
}

impl Replica for EtcdReplica {
    fn answer_refused(&self, refused: Vec<(Waiter, Error)>) {
        self.shared.hold(refused);
    }

    /// Ships `batch`; what went in is settled once the follower is past its revision.
    fn ship(&self, batch: &[Entry], p: &Pipeline) -> Result<Vec<(Seq, Error)>> {
        let refused = self.ship_or_refuse(batch, p)?;
        if let Some(last) = batch.last() {
            let rev = self.latest.load(Ordering::Relaxed);
            self.shared.unsettled.lock().push_back((last.seq, rev));
        }
        Ok(refused)
    }
}

impl EtcdReplica {
    fn ship_or_refuse(&self, batch: &[Entry], p: &Pipeline) -> Result<Vec<(Seq, Error)>> {
        let after_refused = |e: &Entry| {
            let refused = self.refused.lock();
            e.op.fids().iter().any(|f| refused.contains(f))
        };
        if !batch.iter().any(after_refused) {
            match self.ship_entries(batch, p)? {
                None => return Ok(Vec::new()),
                Some(e) if batch.len() == 1 => {
                    let _ = self.note_refused(&batch[0]);
                    return Ok(vec![(batch[0].seq, e)]);
                }
                // Which entries: each alone.
                Some(_) => {}
            }
        }
        let mut refused: Vec<(Seq, Error)> = Vec::new();
        // Why each node made in this batch was refused: its later changes here are refused
        // for the same reason (a file made and written while etcd is full: ENOSPC at close).
        let mut made_refused: HashMap<Fid, Error> = HashMap::new();
        for e in batch {
            let why = match after_refused(e) {
                true => Some(
                    e.op.fids()
                        .iter()
                        .find_map(|f| made_refused.get(f).cloned())
                        .unwrap_or_else(|| {
                            err!(
                                ESTALE,
                                "{}: changes a file whose making another mount's change refused",
                                self.etcd.url
                            )
                        }),
                ),
                false => self.ship_entries(std::slice::from_ref(e), p)?,
            };
            if let Some(why) = why {
                if let Some(fid) = self.note_refused(e) {
                    made_refused.entry(fid).or_insert_with(|| why.clone());
                }
                refused.push((e.seq, why));
            }
        }
        Ok(refused)
    }

    /// Ships `batch` whole (in parts when it does not fit one transaction): None once in,
    /// or why etcd refused it (parts before the refused one are in).
    fn ship_entries(&self, batch: &[Entry], p: &Pipeline) -> Result<Option<Error>> {
        let whole = self.keys_for(batch, p)?;
        if whole.fits() {
            return self.ship_keys(batch, p, whole, true);
        }
        // In parts, in order, as many entries a part as fit; the nodes that are gone last.
        log::debug!(
            "{} entries, {} keys: shipped in parts",
            batch.len(),
            whole.ops() + whole.nodes_gone.len()
        );
        let mut at = 0;
        while at < batch.len() {
            let mut n = (batch.len() - at).clamp(1, MAX_TXN_OPS / 8);
            let mut keys = self.keys_for(&batch[at..at + n], p)?;
            while n > 1 && !keys.part_fits() {
                n /= 2;
                keys = self.keys_for(&batch[at..at + n], p)?;
            }
            if let Some(refused) = self.ship_keys(&batch[at..at + n], p, keys, false)? {
                return Ok(Some(refused));
            }
            at += n;
        }
        let gone: Vec<Vec<u8>> = whole.nodes_gone.iter().cloned().collect();
        // Each key deleted is compared, and each node's names range too.
        for part in gone.chunks(MAX_TXN_OPS / 2) {
            let none = Keys::default();
            match self.send(&none, Vec::new(), part.to_vec(), Vec::new())? {
                Sent::Done => {}
                Sent::Refused(e) => return Ok(Some(e)),
                Sent::PiecesGone(_) => unreachable!("lists no pieces"),
            }
        }
        for part in whole.pieces_gone.chunks(MAX_TXN_OPS) {
            self.etcd
                .txn_unless_changed(&[], &[], &[], &[], &[], part)?;
        }
        let gone: Vec<_> = whole
            .shipped
            .into_iter()
            .filter(|(_, s)| s.is_none())
            .collect();
        self.record_sums(&gone);
        Ok(None)
    }

    /// Sends the keys of `entries` (with the nodes gone, when `whole`): None once in, or
    /// why etcd refused them. When pieces they list were deleted by another mount's save
    /// first, those files' bytes are put again in new pieces.
    fn ship_keys(
        &self,
        entries: &[Entry],
        p: &Pipeline,
        mut keys: Keys,
        whole: bool,
    ) -> Result<Option<Error>> {
        for _ in 0..REBASES {
            let puts: Vec<(Vec<u8>, Vec<u8>)> = keys.puts.clone().into_iter().collect();
            let mut deletes: Vec<Vec<u8>> = keys.keys_gone.iter().cloned().collect();
            let mut ranges = keys.ranges_gone.clone();
            if whole {
                deletes.extend(keys.nodes_gone.iter().cloned());
                ranges.extend(keys.pieces_gone.iter().cloned());
            }
            // Its new pieces first; deleted again when it does not go in.
            if !keys.pieces.is_empty() {
                match self.etcd.put_all(&keys.pieces) {
                    Err(e) if e.errno == libc::ENOSPC => {
                        self.drop_pieces(&keys);
                        let names: Vec<&Vec<u8>> = puts.iter().map(|(k, _)| k).collect();
                        self.refuse(&self.bounds(names.into_iter().chain(&deletes)));
                        return Ok(Some(self.full(e)));
                    }
                    r => r?,
                }
            }
            let sent = self.send(&keys, puts, deletes, ranges)?;
            if !matches!(sent, Sent::Done) {
                self.drop_pieces(&keys);
            }
            match sent {
                Sent::Done => {
                    self.record(&keys);
                    return Ok(None);
                }
                Sent::Refused(e) => return Ok(Some(e)),
                Sent::PiecesGone(files) => {
                    log::debug!(
                        "{}: another mount's save deleted the pieces of {} files first: put again in new pieces",
                        self.etcd.url,
                        files.len()
                    );
                    let mut shipped = self.shipped.lock();
                    for fid in files {
                        shipped.remove(&fid);
                    }
                    drop(shipped);
                    keys = self.keys_for(entries, p)?;
                }
            }
        }
        Err(err!(
            EAGAIN,
            "{}: other mounts kept saving the same files ({REBASES} tries)",
            self.etcd.url
        ))
    }

    /// A node `e` made that etcd never had stays out of etcd: what changes it later is
    /// refused too (the follower removes it from the cache).
    /// The node, when `e` made it.
    fn note_refused(&self, e: &Entry) -> Option<Fid> {
        let fid = e.op.fid()?;
        if self.shared.fids.lock().known(fid) {
            return None;
        }
        self.refused.lock().insert(fid);
        Some(fid)
    }
}

/// The nodes and names an entry changed.
fn touched(op: &Op, fids: &mut BTreeSet<Fid>, names: &mut BTreeSet<(Fid, Vec<u8>)>) {
    match op {
        Op::Set { fid, dir, name, .. }
        | Op::Delete { fid, dir, name }
        | Op::Link { fid, dir, name } => {
            fids.extend([*fid, *dir]);
            names.insert((*dir, name.clone()));
        }
        Op::Patch { fid, .. } | Op::Attr { fid, .. } | Op::Xattr { fid, .. } => {
            fids.insert(*fid);
        }
        Op::Rename {
            fid,
            dir,
            name,
            to_dir,
            to_name,
            replaced,
            ..
        } => {
            fids.extend([*fid, *dir, *to_dir]);
            fids.extend(*replaced);
            names.insert((*dir, name.clone()));
            names.insert((*to_dir, to_name.clone()));
        }
        Op::Checkpoint { .. } => {}
    }
}
