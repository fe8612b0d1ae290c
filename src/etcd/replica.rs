//! A mount's commits made into etcd transactions (`pipeline::Replica`).
//!
//! A batch of entries is shipped as the state it left: every key it touched (a file's `i/`
//! and `d/`, a directory's `i/`, a name's `n/`) is put with what the local store holds now,
//! or deleted when the store no longer has it. Such a transaction says what keys hold, not
//! how they change, so sending it twice is harmless; each also holds only while the
//! mount's `lock` is the one it put. A batch too large for one transaction goes in several,
//! in order: each also puts the nodes its names lead to (and their directories), and the
//! nodes that are gone are deleted in the last one, so that a name in etcd never leads
//! nowhere, whatever moment the mount dies at.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use parking_lot::Mutex;

use super::layout::{self, Tree, LOCK};
use super::{Etcd, MAX_TXN_BYTES, MAX_TXN_OPS};
use crate::error::{err, Result};
use crate::log::{Entry, Op};
use crate::pipeline::{Pipeline, Read, Replica};
use crate::types::{Attrs, Fid, Kind};

pub struct EtcdReplica {
    etcd: Etcd,
    /// The mod revision of the `lock` this mount put.
    lock_rev: i64,
    /// Fids of the nodes the cache was built with: local → etcd.
    built: HashMap<Fid, Fid>,
    /// A file made since gets `base` + its local fid.
    base: Fid,
    /// The size and checksum of each file's bytes as etcd holds them, by local fid.
    shipped: Mutex<HashMap<Fid, (u64, u32)>>,
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

/// The keys of some entries: puts, and deletes of names and of nodes.
#[derive(Default)]
struct Keys {
    puts: BTreeMap<Vec<u8>, Vec<u8>>,
    names_gone: BTreeSet<Vec<u8>>,
    nodes_gone: BTreeSet<Vec<u8>>,
    /// The bytes etcd holds after them, by local fid (None: the file is gone).
    shipped: Vec<(Fid, Option<(u64, u32)>)>,
}

impl Keys {
    fn ops(&self) -> usize {
        self.puts.len() + self.names_gone.len()
    }
    fn bytes(&self) -> usize {
        let p: usize = self.puts.iter().map(|(k, v)| k.len() + v.len() + 64).sum();
        p + self.names_gone.iter().map(|k| k.len() + 64).sum::<usize>()
    }
    fn fits(&self) -> bool {
        self.ops() + self.nodes_gone.len() <= MAX_TXN_OPS && self.bytes() <= MAX_TXN_BYTES
    }
}

impl EtcdReplica {
    /// `made`: the local fid of each node of `tree` (etcd fid → local).
    pub fn new(
        etcd: Etcd,
        lock_rev: i64,
        base: Fid,
        tree: &Tree,
        made: &HashMap<Fid, Fid>,
    ) -> EtcdReplica {
        let built: HashMap<Fid, Fid> = made.iter().map(|(e, l)| (*l, *e)).collect();
        let shipped = tree
            .nodes
            .iter()
            .filter(|n| n.kind == Kind::File)
            .filter_map(|n| {
                let crc = crate::log::crc32c(&n.bytes);
                Some((*made.get(&n.fid)?, (n.bytes.len() as u64, crc)))
            })
            .collect();
        EtcdReplica {
            etcd,
            lock_rev,
            built,
            base,
            shipped: Mutex::new(shipped),
        }
    }

    fn etcd_fid(&self, local: Fid) -> Result<Fid> {
        if let Some(e) = self.built.get(&local) {
            return Ok(*e);
        }
        match local < super::FID_BLOCK {
            true => Ok(self.base + local),
            false => Err(err!(ENOSPC, "this mount has given out every fid it took")),
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
        for (fid, now) in nodes {
            let efid = self.etcd_fid(fid)?;
            let Some(n) = now else {
                keys.nodes_gone.insert(layout::info_key(efid));
                keys.nodes_gone.insert(layout::data_key(efid));
                keys.shipped.push((fid, None));
                continue;
            };
            let (size, crc) = match n.kind {
                Kind::Dir => (0, crate::log::crc32c(b"")),
                Kind::Symlink => {
                    let t = n.target.unwrap_or_default();
                    let crc = crate::log::crc32c(&t);
                    let len = t.len() as u64;
                    keys.puts.insert(layout::data_key(efid), t);
                    (len, crc)
                }
                Kind::File if self.shipped.lock().get(&fid) == Some(&(n.size, n.dcrc)) => {
                    (n.size, n.dcrc)
                }
                Kind::File => {
                    let bytes = read_bytes(p, fid)?;
                    let sum = (bytes.len() as u64, crate::log::crc32c(&bytes));
                    keys.puts.insert(layout::data_key(efid), bytes);
                    keys.shipped.push((fid, Some(sum)));
                    sum
                }
            };
            let info = layout::info_value(n.kind, &n.attrs, size, crc, &n.xattrs);
            keys.puts.insert(layout::info_key(efid), info);
        }
        for ((dir, name), to) in targets {
            let key = layout::name_key(self.etcd_fid(dir)?, &name);
            match to {
                Some(f) => {
                    keys.puts.insert(key, layout::fid_value(self.etcd_fid(f)?));
                }
                None => {
                    keys.names_gone.insert(key);
                }
            }
        }
        Ok(keys)
    }

    /// One transaction, holding only while the lock is this mount's.
    fn send(&self, puts: Vec<(Vec<u8>, Vec<u8>)>, deletes: Vec<Vec<u8>>) -> Result<()> {
        let expect = [(LOCK.to_vec(), self.lock_rev)];
        match self.etcd.put_again_if(&expect, &puts, &deletes)? {
            true => Ok(()),
            false => Err(err!(
                ESTALE,
                "{}: the lock is no longer this mount's (its lease ended); remount",
                self.etcd.url
            )),
        }
    }

    /// What etcd holds of each file's bytes once `sums` went in.
    fn record(&self, sums: &[(Fid, Option<(u64, u32)>)]) {
        let mut shipped = self.shipped.lock();
        for (fid, sum) in sums {
            match sum {
                Some(s) => shipped.insert(*fid, *s),
                None => shipped.remove(fid),
            };
        }
    }
}

impl Replica for EtcdReplica {
    fn ship(&self, batch: &[Entry], p: &Pipeline) -> Result<()> {
        let whole = self.keys_for(batch, p)?;
        if whole.fits() {
            let Keys {
                puts,
                names_gone,
                nodes_gone,
                shipped,
            } = whole;
            let deletes = names_gone.into_iter().chain(nodes_gone).collect();
            self.send(puts.into_iter().collect(), deletes)?;
            self.record(&shipped);
            return Ok(());
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
            while n > 1 && !(keys.ops() <= MAX_TXN_OPS && keys.bytes() <= MAX_TXN_BYTES) {
                n /= 2;
                keys = self.keys_for(&batch[at..at + n], p)?;
            }
            let deletes = keys.names_gone.into_iter().collect();
            self.send(keys.puts.into_iter().collect(), deletes)?;
            self.record(&keys.shipped);
            at += n;
        }
        let gone: Vec<Vec<u8>> = whole.nodes_gone.into_iter().collect();
        for part in gone.chunks(MAX_TXN_OPS) {
            self.send(Vec::new(), part.to_vec())?;
        }
        let gone: Vec<_> = whole
            .shipped
            .into_iter()
            .filter(|(_, s)| s.is_none())
            .collect();
        self.record(&gone);
        Ok(())
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

/// A file's bytes as the local store holds them now.
fn read_bytes(p: &Pipeline, fid: Fid) -> Result<Vec<u8>> {
    match p.version(fid)? {
        Read::Fine(held, _) => {
            let size = held.version.size()?;
            held.version.read_at(0, size as usize)
        }
        Read::Restore(bytes) => Ok(bytes.to_vec()),
    }
}
