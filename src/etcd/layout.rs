//! The keys of a store in etcd, under its prefix (FORMAT.md, "A store in etcd"):
//!
//! | key | value |
//! | --- | --- |
//! | `meta` | `{"format":1,"next_fid":N}`; written last by `recordfs migrate`: a store without it is not whole |
//! | `i/<fid>` | a file's, directory's or symlink's kind and attributes, size and checksum (JSON) |
//! | `d/<fid>` | a file's bytes when they fit one value (`PIECE`), or a symlink's target |
//! | `p/<id>` | one piece of a larger file's bytes; the file's `i/` value lists its pieces in order |
//! | `n/<dir fid>/<name>` | a name in a directory: the fid it names |
//! | `lock` | while a mount serves the store: who, under the mount's lease (`mount.rs`) |
//!
//! Fids are 16 lowercase hex digits, so keys sort as the numbers do; names are their bytes.
//! A file's bytes are raw (etcd values are bytes): no encoding, and a save of a file that fits
//! one value is one transaction of two puts.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::error::{err, Result};
use crate::types::{Attrs, Fid, Kind, Time, ROOT};

/// The layout's version, in `meta`.
pub const FORMAT: u64 = 1;
/// The most bytes one value holds: a piece and its key fit one request (`MAX_TXN_BYTES`).
pub const PIECE: usize = 1 << 20;
/// The most pieces of a file a mount saves: its switching transaction compares each piece
/// (and deletes the old ones by range), within etcd's 128 compares (`replica.rs`).
pub const MOUNT_PIECES: usize = 32;

mod pieces;
pub use pieces::{
    bytes_keys, mount_piece_tag, mount_value, orphan_pieces, piece_ids, piece_key, pieces_range,
};

/// A file, directory or symlink, with its bytes (a symlink's: its target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub fid: Fid,
    pub kind: Kind,
    pub attrs: Attrs,
    pub bytes: Vec<u8>,
    /// Extended attributes, by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A name in a directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name {
    pub dir: Fid,
    pub name: Vec<u8>,
    pub fid: Fid,
}

/// A whole store: every node and every name; the root is `ROOT`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub names: Vec<Name>,
}

impl Tree {
    pub fn node(&self, fid: Fid) -> Option<&Node> {
        self.nodes.iter().find(|n| n.fid == fid)
    }

    /// The names in directory `dir`, sorted by name.
    pub fn names_in(&self, dir: Fid) -> Vec<&Name> {
        let mut names: Vec<&Name> = self.names.iter().filter(|n| n.dir == dir).collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        names
    }

    /// The directory at `path` (names joined by `/`, "" for the root).
    pub fn dir_at(&self, path: &str) -> Option<Fid> {
        let mut at = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let n = self
                .names
                .iter()
                .find(|n| n.dir == at && n.name == part.as_bytes())?;
            self.node(n.fid).filter(|n| n.kind == Kind::Dir)?;
            at = n.fid;
        }
        Some(at)
    }

    /// Every regular file under directory `dir`, by path below it (names joined by `/`).
    pub fn files_under(&self, dir: Fid) -> Vec<(String, &Node)> {
        let mut out = Vec::new();
        let mut todo = vec![(dir, String::new())];
        while let Some((d, prefix)) = todo.pop() {
            for n in self.names_in(d) {
                let path = format!("{prefix}{}", String::from_utf8_lossy(&n.name));
                match self.node(n.fid) {
                    Some(node) if node.kind == Kind::File => out.push((path, node)),
                    Some(node) if node.kind == Kind::Dir => todo.push((n.fid, path + "/")),
                    _ => {}
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn fid_hex(fid: Fid) -> String {
    format!("{fid:016x}")
}

fn parse_fid(s: &[u8], key: &[u8]) -> Result<Fid> {
    std::str::from_utf8(s)
        .ok()
        .filter(|s| s.len() == 16)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| err!(EIO, "key {}: not a fid", String::from_utf8_lossy(key)))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
    }
}

fn time(t: Time) -> Value {
    let (secs, nsecs) = (t.secs, t.nsecs);
    json!([secs, nsecs])
}

fn parse_time(v: &Value) -> Option<Time> {
    Some(Time {
        secs: v.get(0)?.as_i64()?,
        nsecs: u32::try_from(v.get(1)?.as_u64()?).ok()?,
    })
}

/// The `meta` key and value of a whole store whose largest fid is `max_fid`.
pub fn meta(max_fid: Fid) -> (Vec<u8>, Vec<u8>) {
    let v = json!({"format": FORMAT, "next_fid": max_fid + 1});
    (b"meta".to_vec(), v.to_string().into_bytes())
}

/// The keys and values of `tree`, but `meta`. `piece_id(fid, n)` names the nth piece of a
/// large file, uniquely in the store.
pub fn to_keys(
    tree: &Tree,
    mut piece_id: impl FnMut(Fid, usize) -> String,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for n in &tree.nodes {
        let crc = crc32c::crc32c(&n.bytes);
        let mut v = info(n.kind, &n.attrs, n.bytes.len() as u64, crc, &n.xattrs);
        let fid = fid_hex(n.fid);
        if n.bytes.len() > PIECE {
            let mut ids = Vec::new();
            for (i, piece) in n.bytes.chunks(PIECE).enumerate() {
                let id = piece_id(n.fid, i);
                out.push((format!("p/{id}").into_bytes(), piece.to_vec()));
                ids.push(Value::from(id));
            }
            v["pieces"] = Value::Array(ids);
        } else if n.kind != Kind::Dir {
            out.push((format!("d/{fid}").into_bytes(), n.bytes.clone()));
        }
        out.push((format!("i/{fid}").into_bytes(), v.to_string().into_bytes()));
    }
    for n in &tree.names {
        out.push((name_key(n.dir, &n.name), fid_value(n.fid)));
    }
    out
}

/// A node's `i/` value, but its pieces.
fn info(kind: Kind, a: &Attrs, size: u64, crc: u32, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Value {
    let mut v = json!({
        "kind": kind_name(kind),
        "mode": a.mode,
        "uid": a.uid,
        "gid": a.gid,
        "atime": time(a.atime),
        "mtime": time(a.mtime),
        "ctime": time(a.ctime),
        "size": size,
        "crc": format!("{crc:08x}"),
    });
    if !xattrs.is_empty() {
        v["xattrs"] = xattrs
            .iter()
            .map(|(k, x)| json!([B64.encode(k), B64.encode(x)]))
            .collect();
    }
    v
}

/// The `i/` value of a node whose bytes (`size`, `crc`) fit one `d/` value.
pub fn info_value(
    kind: Kind,
    attrs: &Attrs,
    size: u64,
    crc: u32,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Vec<u8> {
    info(kind, attrs, size, crc, xattrs)
        .to_string()
        .into_bytes()
}

/// The `i/` value of a file whose bytes (`size`, `crc`) are in the pieces `ids`, in order.
pub fn info_value_in_pieces(
    attrs: &Attrs,
    size: u64,
    crc: u32,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    ids: &[String],
) -> Vec<u8> {
    let mut v = info(Kind::File, attrs, size, crc, xattrs);
    v["pieces"] = ids.iter().map(|id| Value::from(id.as_str())).collect();
    v.to_string().into_bytes()
}

pub fn info_key(fid: Fid) -> Vec<u8> {
    format!("i/{}", fid_hex(fid)).into_bytes()
}

pub fn data_key(fid: Fid) -> Vec<u8> {
    format!("d/{}", fid_hex(fid)).into_bytes()
}

pub fn name_key(dir: Fid, name: &[u8]) -> Vec<u8> {
    let mut k = format!("n/{}/", fid_hex(dir)).into_bytes();
    k.extend_from_slice(name);
    k
}

pub fn fid_value(fid: Fid) -> Vec<u8> {
    fid_hex(fid).into_bytes()
}

/// Where each mount that changes the store says so (`etcd::mount`): a key of its own under
/// its lease, whose value says who (`mount_value`).
pub const MOUNTS: &[u8] = b"mounts/";

/// The kind an `i/` value says.
pub fn info_kind(value: &[u8]) -> Option<Kind> {
    let v: Value = serde_json::from_slice(value).ok()?;
    match v["kind"].as_str()? {
        "file" => Some(Kind::File),
        "dir" => Some(Kind::Dir),
        "symlink" => Some(Kind::Symlink),
        _ => None,
    }
}

/// The tree the keys hold (the prefix taken off), checked: every name names a node, every
/// node's bytes are whole (their size and checksum), the root is a directory. An error names
/// the key.
pub fn from_keys(kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<Tree> {
    let find = |key: &[u8]| -> Option<&Vec<u8>> {
        kvs.binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| &kvs[i].1)
    };
    let meta = find(b"meta").ok_or_else(|| {
        err!(
            EIO,
            "no meta key: not a store, or a migration that did not finish"
        )
    })?;
    let meta: Value = serde_json::from_slice(meta).map_err(|e| err!(EIO, "meta: {e}"))?;
    if meta["format"].as_u64() != Some(FORMAT) {
        return Err(err!(
            EIO,
            "meta: format {} (this recordfs reads {FORMAT})",
            meta["format"]
        ));
    }
    let mut tree = Tree::default();
    for (key, value) in kvs {
        if let Some(fid) = key.strip_prefix(b"i/") {
            tree.nodes
                .push(node(parse_fid(fid, key)?, key, value, &find)?);
        } else if let Some(rest) = key.strip_prefix(b"n/") {
            if rest.len() < 18 || rest[16] != b'/' {
                return Err(err!(
                    EIO,
                    "key {}: not a name",
                    String::from_utf8_lossy(key)
                ));
            }
            tree.names.push(Name {
                dir: parse_fid(&rest[..16], key)?,
                name: rest[17..].to_vec(),
                fid: parse_fid(value, key)?,
            });
        }
    }
    let kinds: std::collections::HashMap<Fid, Kind> =
        tree.nodes.iter().map(|n| (n.fid, n.kind)).collect();
    if kinds.get(&ROOT) != Some(&Kind::Dir) {
        return Err(err!(
            EIO,
            "i/{}: the root is missing or not a directory",
            fid_hex(ROOT)
        ));
    }
    for n in &tree.names {
        let show = || format!("n/{}/{}", fid_hex(n.dir), String::from_utf8_lossy(&n.name));
        if kinds.get(&n.dir) != Some(&Kind::Dir) {
            return Err(err!(EIO, "{}: its directory is not in the store", show()));
        }
        if !kinds.contains_key(&n.fid) {
            return Err(err!(EIO, "{}: names a fid not in the store", show()));
        }
    }
    Ok(tree)
}

/// What `recordfs check` finds wrong in a store's keys: the first damage that leaves no tree
/// (see `from_keys`), else every record that does not hold JSON, and every key nothing
/// reaches (a node without a name, bytes or a piece without a node, a key of no kind).
pub fn problems(kvs: &[(Vec<u8>, Vec<u8>)]) -> (Option<Tree>, Vec<String>) {
    let tree = match from_keys(kvs) {
        Ok(t) => t,
        Err(e) => return (None, vec![e.reason]),
    };
    let mut out = Vec::new();
    let nodes: std::collections::HashMap<Fid, &Node> =
        tree.nodes.iter().map(|n| (n.fid, n)).collect();
    let mut named: std::collections::HashSet<Fid> = tree.names.iter().map(|n| n.fid).collect();
    named.insert(ROOT);
    for n in &tree.names {
        let node = nodes[&n.fid];
        if node.kind == Kind::File && crate::record::is_record_name(&n.name) {
            if let Err(e) = crate::record::validate_record(&node.bytes, false) {
                out.push(format!(
                    "n/{}/{}: a record that does not hold JSON: {}",
                    fid_hex(n.dir),
                    String::from_utf8_lossy(&n.name),
                    e.reason
                ));
            }
        }
    }
    let mut pieces = std::collections::HashSet::new();
    for (key, value) in kvs {
        if let Some(fid) = key.strip_prefix(b"i/") {
            let v: Value = serde_json::from_slice(value).unwrap_or_default();
            for id in v["pieces"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                pieces.insert(format!("p/{}", id.as_str().unwrap_or_default()).into_bytes());
            }
            if !named.contains(&parse_fid(fid, key).unwrap_or(0)) {
                out.push(format!(
                    "{}: no name leads to it",
                    String::from_utf8_lossy(key)
                ));
            }
        }
    }
    for (key, _) in kvs {
        let show = String::from_utf8_lossy(key);
        let unreached = if let Some(fid) = key.strip_prefix(b"d/") {
            parse_fid(fid, key).map_or(true, |f| !nodes.contains_key(&f))
        } else if key.starts_with(b"p/") {
            !pieces.contains(key)
        } else {
            !(key == b"meta"
                || key.starts_with(MOUNTS)
                || key.starts_with(b"i/")
                || key.starts_with(b"n/"))
        };
        if unreached {
            out.push(format!("{show}: nothing in the store reaches it"));
        }
    }
    (Some(tree), out)
}

/// The node `key` (`i/<fid>`) with `value` describes, its bytes taken through `find` (which
/// gives the value of a `d/` or `p/` key) and checked against its size and checksum.
pub fn node<'a>(
    fid: Fid,
    key: &[u8],
    value: &[u8],
    find: &impl Fn(&[u8]) -> Option<&'a Vec<u8>>,
) -> Result<Node> {
    node_with(fid, key, value, find, None)
}

/// `node`, with the node's bytes as given (a cache's copy) rather than found.
pub fn node_holding(fid: Fid, key: &[u8], value: &[u8], bytes: Vec<u8>) -> Result<Node> {
    node_with(fid, key, value, &|_| None, Some(bytes))
}

fn node_with<'a>(
    fid: Fid,
    key: &[u8],
    value: &[u8],
    find: &impl Fn(&[u8]) -> Option<&'a Vec<u8>>,
    given: Option<Vec<u8>>,
) -> Result<Node> {
    let show = String::from_utf8_lossy(key).into_owned();
    let bad = |what: &str| err!(EIO, "{show}: {what}");
    let v: Value = serde_json::from_slice(value).map_err(|e| bad(&e.to_string()))?;
    let kind = match v["kind"].as_str() {
        Some("file") => Kind::File,
        Some("dir") => Kind::Dir,
        Some("symlink") => Kind::Symlink,
        _ => return Err(bad("no kind")),
    };
    let num = |f: &str| v[f].as_u64().and_then(|n| u32::try_from(n).ok());
    let t = |f: &str| parse_time(&v[f]);
    let attrs = match (
        num("mode"),
        num("uid"),
        num("gid"),
        t("atime"),
        t("mtime"),
        t("ctime"),
    ) {
        (Some(mode), Some(uid), Some(gid), Some(atime), Some(mtime), Some(ctime)) => Attrs {
            mode,
            uid,
            gid,
            atime,
            mtime,
            ctime,
        },
        _ => return Err(bad("attributes missing")),
    };
    let bytes = if kind == Kind::Dir {
        Vec::new()
    } else if let Some(given) = given {
        given
    } else if let Some(pieces) = v["pieces"].as_array() {
        let mut bytes = Vec::new();
        for id in pieces {
            let id = id.as_str().ok_or_else(|| bad("a piece without an id"))?;
            let piece = find(format!("p/{id}").as_bytes())
                .ok_or_else(|| bad(&format!("its piece p/{id} is missing")))?;
            bytes.extend_from_slice(piece);
        }
        bytes
    } else {
        find(format!("d/{}", fid_hex(fid)).as_bytes())
            .ok_or_else(|| bad("its bytes (d/) are missing"))?
            .clone()
    };
    let crc = format!("{:08x}", crc32c::crc32c(&bytes));
    if v["size"].as_u64() != Some(bytes.len() as u64) || v["crc"].as_str() != Some(&crc) {
        return Err(bad(&format!(
            "its bytes do not match its size and checksum ({} bytes, crc {crc})",
            bytes.len()
        )));
    }
    let mut xattrs = Vec::new();
    for x in v["xattrs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let dec = |i: usize| x[i].as_str().and_then(|s| B64.decode(s).ok());
        match (dec(0), dec(1)) {
            (Some(k), Some(val)) => xattrs.push((k, val)),
            _ => return Err(bad("an extended attribute that does not decode")),
        }
    }
    Ok(Node {
        fid,
        kind,
        attrs,
        bytes,
        xattrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: u32) -> Attrs {
        let t = Time {
            secs: 1_700_000_000,
            nsecs: 7,
        };
        Attrs {
            mode,
            uid: 1000,
            gid: 100,
            atime: t,
            mtime: t,
            ctime: t,
        }
    }

    fn sample() -> Tree {
        let node = |fid, kind, bytes: &[u8]| Node {
            fid,
            kind,
            attrs: attrs(0o644),
            bytes: bytes.to_vec(),
            xattrs: Vec::new(),
        };
        let mut big = node(4, Kind::File, &vec![7; PIECE * 2 + 5]);
        big.xattrs.push((b"user.a".to_vec(), vec![0, 255]));
        Tree {
            nodes: vec![
                node(ROOT, Kind::Dir, b""),
                node(2, Kind::File, b"{\"a\": 1}"),
                node(3, Kind::Symlink, b"../x"),
                big,
            ],
            names: vec![
                Name {
                    dir: ROOT,
                    name: b"a.json".to_vec(),
                    fid: 2,
                },
                Name {
                    dir: ROOT,
                    name: b"second \xff name".to_vec(),
                    fid: 2,
                },
                Name {
                    dir: ROOT,
                    name: b"link".to_vec(),
                    fid: 3,
                },
                Name {
                    dir: ROOT,
                    name: b"big".to_vec(),
                    fid: 4,
                },
            ],
        }
    }

    fn keys_of(tree: &Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut kvs = to_keys(tree, |fid, n| format!("piece-{fid}-{n}"));
        kvs.push(meta(4));
        kvs.sort();
        kvs
    }

    #[test]
    fn a_tree_round_trips_through_its_keys() {
        let tree = sample();
        let kvs = keys_of(&tree);
        assert!(kvs.iter().all(|(_, v)| v.len() <= PIECE));
        assert_eq!(kvs.iter().filter(|(k, _)| k.starts_with(b"p/")).count(), 3);
        let mut back = from_keys(&kvs).unwrap();
        back.nodes.sort_by_key(|n| n.fid);
        back.names.sort();
        let mut want = tree;
        want.names.sort();
        assert_eq!(back, want);
    }

    #[test]
    fn damage_is_refused_naming_the_key() {
        let kvs = keys_of(&sample());
        let without =
            |k: &[u8]| -> Vec<_> { kvs.iter().filter(|(x, _)| x != k).cloned().collect() };
        let e = from_keys(&without(b"meta")).unwrap_err();
        assert!(e.reason.contains("no meta"), "{e}");
        let e = from_keys(&without(b"p/piece-4-1")).unwrap_err();
        assert!(e.reason.contains("p/piece-4-1 is missing"), "{e}");
        let e = from_keys(&without(b"i/0000000000000003")).unwrap_err();
        assert!(e.reason.contains("n/0000000000000001/link"), "{e}");
        let mut changed = kvs.clone();
        let d = changed
            .iter_mut()
            .find(|(k, _)| k == b"d/0000000000000002")
            .unwrap();
        d.1[0] = b'[';
        let e = from_keys(&changed).unwrap_err();
        assert!(e.reason.starts_with("i/0000000000000002: its bytes"), "{e}");
    }
}
