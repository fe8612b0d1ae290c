//! `recordfs import` into a store in etcd (issue 14): the records checked against the store
//! as read at one revision, then written in transactions that hold only if nobody changed
//! what they rely on meanwhile. The keys are `etcd::layout`'s.

use std::collections::HashMap;

use crate::error::{err, Result};
use crate::etcd::layout::{self, Name, Node, Tree, MOUNTS};
use crate::etcd::{Etcd, EtcdUrl, MAX_TXN_BYTES, MAX_TXN_OPS, TOOL_TIMEOUT};
use crate::transfer::Record;
use crate::types::{Fid, Kind};

/// `recordfs import` into a store in etcd: how many records went in, and what stopped it.
/// Every name is checked before the first write (an existing one refuses the whole import
/// without `replace`); missing directories are made; each batch of records is one
/// transaction that holds only if none of its names appeared, and none of the files it
/// replaces changed, since the store was read.
pub(super) fn import(
    url: &str,
    records: &[Record],
    dir: &str,
    replace: bool,
) -> (usize, Result<()>) {
    let etcd = match EtcdUrl::parse(url).and_then(|u| Etcd::connect(&u, TOOL_TIMEOUT)) {
        Ok(e) => e,
        Err(e) => return (0, Err(e)),
    };
    let mut into = match Into::read(etcd) {
        Ok(i) => i,
        Err(e) => return (0, Err(e)),
    };
    into.import(records, dir, replace)
}

/// A store in etcd as read at one revision, being written into.
struct Into {
    etcd: Etcd,
    tree: Tree,
    /// Each key's mod revision when read.
    revs: HashMap<Vec<u8>, i64>,
    /// Where a new directory went (its path under the root).
    made: HashMap<String, Fid>,
    /// The pieces each file's bytes were in, as read.
    pieces: HashMap<Fid, Vec<String>>,
    /// A mount that changes the store, if any (mounts follow what the import does, and
    /// serve files of at most `MOUNT_PIECES` pieces).
    served: Option<String>,
}

impl Into {
    fn read(etcd: Etcd) -> Result<Into> {
        let (_, kvs) = etcd.get_all_at(b"")?;
        let served = kvs
            .iter()
            .find(|k| k.key.starts_with(MOUNTS))
            .map(|k| String::from_utf8_lossy(&k.value).into_owned());
        let plain: Vec<(Vec<u8>, Vec<u8>)> = kvs
            .iter()
            .map(|k| (k.key.clone(), k.value.clone()))
            .collect();
        let tree = layout::from_keys(&plain)?;
        let mut pieces = HashMap::new();
        for (k, v) in &plain {
            let Some(fid) = k.strip_prefix(b"i/") else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
            if let (Ok(fid), Some(ids)) = (
                u64::from_str_radix(&String::from_utf8_lossy(fid), 16),
                v["pieces"].as_array(),
            ) {
                let ids = ids.iter().filter_map(|i| i.as_str().map(str::to_owned));
                pieces.insert(fid, ids.collect());
            }
        }
        let revs = kvs.into_iter().map(|k| (k.key, k.mod_revision)).collect();
        Ok(Into {
            etcd,
            tree,
            revs,
            made: HashMap::new(),
            pieces,
            served,
        })
    }

    /// The fid `name` has in directory `dir`, as read.
    fn named(&self, dir: Fid, name: &[u8]) -> Option<Fid> {
        let n = self
            .tree
            .names
            .iter()
            .find(|n| n.dir == dir && n.name == name)?;
        Some(n.fid)
    }

    /// The directory at `path`, as read or made since.
    fn dir(&self, path: &str) -> Option<Fid> {
        self.made
            .get(path)
            .copied()
            .or_else(|| self.tree.dir_at(path))
    }

    /// `n` fids no one else will take: `meta`'s `next_fid` moved past them.
    fn allocate(&mut self, n: u64) -> Result<Fid> {
        for _ in 0..20 {
            let (_, kvs) = self.etcd.get_all_at(b"meta")?;
            let Some(meta) = kvs.into_iter().find(|k| k.key == b"meta") else {
                return Err(err!(EIO, "meta: gone"));
            };
            let (value, rev) = (meta.value, meta.mod_revision);
            let meta: serde_json::Value =
                serde_json::from_slice(&value).map_err(|e| err!(EIO, "meta: {e}"))?;
            let first = meta["next_fid"]
                .as_u64()
                .ok_or_else(|| err!(EIO, "meta: no next_fid"))?;
            let mut next = meta.clone();
            next["next_fid"] = (first + n).into();
            let put = (b"meta".to_vec(), next.to_string().into_bytes());
            if self.etcd.put_if(&[(b"meta".to_vec(), rev)], &[put], &[])? {
                return Ok(first);
            }
        }
        Err(err!(EAGAIN, "meta: changed by others 20 times in a row"))
    }

    fn import(&mut self, records: &[Record], dir: &str, replace: bool) -> (usize, Result<()>) {
        let largest = (layout::PIECE * layout::MOUNT_PIECES) as u64;
        let big = records.iter().find(|r| r.bytes.len() as u64 > largest);
        if let (Some(big), Some(who)) = (big, &self.served) {
            return (
                0,
                Err(err!(
                    EFBIG,
                    "{}: {} bytes; a mount serves {} ({who}), and mounts serve files of at most {} bytes",
                    big.name,
                    big.bytes.len(),
                    self.etcd.url,
                    largest
                )),
            );
        }
        let dir = dir.trim_matches('/');
        let full = |r: &Record| match dir {
            "" => r.name.clone(),
            d => format!("{d}/{}", r.name),
        };
        // Checked before anything is written.
        let mut dirs_to_make: Vec<String> = Vec::new();
        let mut new_files = 0;
        for r in records {
            let path = full(r);
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
            let mut at = String::new();
            for part in parent.split('/').filter(|p| !p.is_empty()) {
                at = if at.is_empty() {
                    part.to_owned()
                } else {
                    format!("{at}/{part}")
                };
                if self.tree.dir_at(&at).is_none() && !dirs_to_make.contains(&at) {
                    dirs_to_make.push(at.clone());
                }
            }
            match self
                .tree
                .dir_at(parent)
                .and_then(|d| self.named(d, name.as_bytes()))
            {
                Some(_) if !replace => {
                    return (
                        0,
                        Err(err!(EEXIST, "{path} exists (--replace replaces it)")),
                    )
                }
                Some(fid) if self.tree.node(fid).is_some_and(|n| n.kind != Kind::File) => {
                    return (0, Err(err!(EISDIR, "{path} exists and is not a file")))
                }
                Some(_) => {}
                None => new_files += 1,
            }
        }
        let mut next = match self.allocate(dirs_to_make.len() as u64 + new_files) {
            Ok(f) => f,
            Err(e) => return (0, Err(e)),
        };
        let now = crate::types::Time::now();
        let attrs = |mode| crate::types::Attrs {
            mode,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
            ctime: now,
        };
        for path in &dirs_to_make {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let Some(parent) = self.dir(parent) else {
                return (0, Err(err!(ENOENT, "{parent}: gone")));
            };
            let node = Node {
                fid: next,
                kind: Kind::Dir,
                attrs: attrs(0o755),
                bytes: Vec::new(),
                xattrs: Vec::new(),
            };
            let name = Name {
                dir: parent,
                name: name.as_bytes().to_vec(),
                fid: next,
            };
            let key = name_key(&name);
            let tree = Tree {
                nodes: vec![node],
                names: vec![name],
            };
            let puts = layout::to_keys(&tree, |_, _| unreachable!("a directory has no pieces"));
            match self.etcd.put_if(&[(key, 0)], &puts, &[]) {
                Ok(true) => {}
                Ok(false) => return (0, Err(err!(EEXIST, "{path}: made by another meanwhile"))),
                Err(e) => return (0, Err(e)),
            }
            self.made.insert(path.clone(), next);
            next += 1;
        }
        let stamp = format!(
            "{}.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        );
        let mut done = 0;
        while done < records.len() {
            let mut expect = Vec::new();
            let mut puts = Vec::new();
            let mut deletes = Vec::new();
            let mut bytes = 0;
            let mut batch = 0;
            let mut put_pieces = Vec::new();
            for r in &records[done..] {
                let path = full(r);
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
                let Some(parent) = self.dir(parent) else {
                    return (done, Err(err!(ENOENT, "{parent}: gone")));
                };
                let (fid, old) = match self.named(parent, name.as_bytes()) {
                    Some(fid) => (fid, self.tree.node(fid)),
                    None => {
                        next += 1;
                        (next - 1, None)
                    }
                };
                let node = Node {
                    fid,
                    kind: Kind::File,
                    attrs: old.map_or(attrs(0o644), |o| crate::types::Attrs {
                        mtime: now,
                        ctime: now,
                        ..o.attrs
                    }),
                    bytes: r.bytes.clone(),
                    xattrs: old.map(|o| o.xattrs.clone()).unwrap_or_default(),
                };
                let name = Name {
                    dir: parent,
                    name: name.as_bytes().to_vec(),
                    fid,
                };
                let guard = match old {
                    Some(_) => {
                        let k = format!("i/{fid:016x}").into_bytes();
                        let rev = self.revs.get(&k).copied().unwrap_or(0);
                        (k, rev)
                    }
                    None => (name_key(&name), 0),
                };
                let tree = Tree {
                    nodes: vec![node],
                    names: vec![name],
                };
                let keys = layout::to_keys(&tree, |f, n| format!("{f:016x}.{stamp}.{n}"));
                let (pieces, rest): (Vec<_>, Vec<_>) =
                    keys.into_iter().partition(|(k, _)| k.starts_with(b"p/"));
                // The bytes had pieces, or were in d/: what the new keys do not overwrite goes.
                let mut gone = Vec::new();
                if let Some(o) = old {
                    let was = format!("d/{fid:016x}").into_bytes();
                    if !rest.iter().any(|(k, _)| *k == was) && o.bytes.len() <= layout::PIECE {
                        gone.push(was);
                    }
                    let ids = self.pieces.get(&fid).map(Vec::as_slice).unwrap_or_default();
                    gone.extend(ids.iter().map(|id| format!("p/{id}").into_bytes()));
                }
                let size: usize = rest.iter().map(|(k, v)| k.len() + v.len()).sum();
                let ops = rest.len() + gone.len() + 1;
                if batch > 0
                    && (expect.len() + puts.len() + deletes.len() + ops > MAX_TXN_OPS
                        || bytes + size > MAX_TXN_BYTES)
                {
                    if old.is_none() {
                        next -= 1;
                    }
                    break;
                }
                if let Err(e) = self.etcd.put_all(&pieces) {
                    return (done, Err(e));
                }
                put_pieces.extend(pieces.into_iter().map(|(k, _)| k));
                deletes.extend(gone);
                expect.push(guard);
                puts.extend(rest);
                bytes += size;
                batch += 1;
            }
            match self.etcd.put_if(&expect, &puts, &deletes) {
                Ok(true) => done += batch,
                Ok(false) => {
                    // Certainly not done: its new pieces are nobody's. (After an error it may
                    // have been done; pieces left then are `check`'s "nothing reaches it".)
                    for some in put_pieces.chunks(MAX_TXN_OPS) {
                        let _ = self.etcd.put_if(&[], &[], some);
                    }
                    return (
                        done,
                        Err(err!(
                            EAGAIN,
                            "another wrote one of the next {batch} names meanwhile: nothing of them is in"
                        )),
                    );
                }
                Err(e) => return (done, Err(e)),
            }
        }
        (done, Ok(()))
    }
}

fn name_key(n: &Name) -> Vec<u8> {
    let mut k = format!("n/{:016x}/", n.dir).into_bytes();
    k.extend_from_slice(&n.name);
    k
}
