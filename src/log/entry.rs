//! Log entries: what each operation records, and its encoding (FORMAT.md, "Entries").

use std::sync::Arc;

use base64::Engine;
use serde_json::Value;

use crate::error::Result;
use crate::types::{Attrs, Fid, Kind, Seq, Xattrs, MAX_ID};
use crate::view::{Token, Version};

use super::line::{
    check_line, corrupt, crc32c, name_value, push_attrs, push_json, push_xattrs, seal, Fields, B64,
};

/// A file's bytes, with their checksum and their encoding in a log line computed once, so
/// that the costly part of an entry can be built before the store's lock is taken.
#[derive(Clone, Debug)]
pub struct Data {
    pub bytes: Arc<Vec<u8>>,
    pub dcrc: u32,
    /// `"enc":"…","data":"…"` as it stands in a line; made by `new`, not when decoding
    /// (recovery reads entries, it does not write them).
    fragment: Option<Arc<Vec<u8>>>,
}

impl Data {
    pub fn new(bytes: Arc<Vec<u8>>) -> Data {
        let dcrc = crc32c(&bytes);
        let fragment = Some(Arc::new(Self::encode(&bytes)));
        Data {
            bytes,
            dcrc,
            fragment,
        }
    }

    pub(super) fn decoded(bytes: Vec<u8>) -> Data {
        Data {
            dcrc: crc32c(&bytes),
            bytes: Arc::new(bytes),
            fragment: None,
        }
    }

    pub(super) fn encode(bytes: &[u8]) -> Vec<u8> {
        let mut fragment = Vec::with_capacity(bytes.len() + 32);
        let as_text = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| serde_json::to_string(s).ok())
            .filter(|quoted| quoted.len() <= 2 * bytes.len() + 2);
        match as_text {
            Some(quoted) => {
                fragment.extend_from_slice(b"\"enc\":\"utf8\",\"data\":");
                fragment.extend_from_slice(quoted.as_bytes());
            }
            None => {
                fragment.extend_from_slice(b"\"enc\":\"base64\",\"data\":\"");
                fragment.extend_from_slice(B64.encode(bytes).as_bytes());
                fragment.push(b'"');
            }
        }
        fragment
    }

    pub fn empty() -> Data {
        Data::new(Arc::new(Vec::new()))
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One changed range of a `PATCH`: `data` written at byte `at`.
#[derive(Clone, Debug)]
pub struct Range {
    pub at: u64,
    pub data: Data,
}

/// A file's bytes after a `PATCH` of `ranges` and `len`: each range is written at its offset
/// (a gap past the end reads as zeros), then the length is set to `len`. A writer gives every
/// byte past the shorter of the old and the new length in a range, so the result depends only
/// on the old bytes below that and on the ranges: applied twice, or onto a copy that a crash
/// left part way between two versions, it gives the same bytes (FORMAT.md, "PATCH").
pub fn apply_patch(bytes: &mut Vec<u8>, len: u64, ranges: &[Range]) {
    for r in ranges {
        let (at, n) = (r.at as usize, r.data.bytes.len());
        if bytes.len() < at + n {
            bytes.resize(at + n, 0);
        }
        bytes[at..at + n].copy_from_slice(&r.data.bytes);
    }
    bytes.resize(len as usize, 0);
}

/// A live patch's new version as readers see it until it reaches the backing file, and the
/// token of the writer whose overlay it is (raised to the patch's entry when it is logged).
#[derive(Clone)]
pub struct Shown {
    pub version: Version,
    pub token: Option<Token>,
}

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shown({} bytes)", self.version.size().unwrap_or(0))
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    Set {
        fid: Fid,
        dir: Fid,
        name: Vec<u8>,
        kind: Kind,
        attrs: Attrs,
        data: Data,
    },
    /// A regular file's bytes changed in `ranges` (see `apply_patch`): `len` and `dcrc` are
    /// those of the whole new content.
    Patch {
        fid: Fid,
        dir: Fid,
        name: Vec<u8>,
        attrs: Attrs,
        len: u64,
        dcrc: u32,
        ranges: Vec<Range>,
        /// The new version, when the committer has it (a live commit): readers are served it
        /// until the patch reaches the backing file. Not in the log.
        shown: Option<Shown>,
    },
    Attr {
        fid: Fid,
        dir: Fid,
        name: Vec<u8>,
        attrs: Attrs,
    },
    Delete {
        fid: Fid,
        dir: Fid,
        name: Vec<u8>,
    },
    Rename {
        fid: Fid,
        dir: Fid,
        name: Vec<u8>,
        to_dir: Fid,
        to_name: Vec<u8>,
        replaced: Option<Fid>,
        exchange: bool,
    },
    /// A file or symlink gains a further name (a hard link): `name` in `dir`.
    Link {
        fid: Fid,
        dir: Fid,
        name: Vec<u8>,
    },
    /// The file's extended attributes, all of them, after a change (setxattr, removexattr).
    Xattr {
        fid: Fid,
        dir: Fid,
        name: Vec<u8>,
        xattrs: Xattrs,
    },
    Checkpoint {
        upto: Seq,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Set { .. } => "SET",
            Op::Patch { .. } => "PATCH",
            Op::Attr { .. } => "ATTR",
            Op::Delete { .. } => "DELETE",
            Op::Rename { .. } => "RENAME",
            Op::Link { .. } => "LINK",
            Op::Xattr { .. } => "XATTR",
            Op::Checkpoint { .. } => "CHECKPOINT",
        }
    }

    /// The names an entry gives or takes away.
    pub fn names(&self) -> Vec<&[u8]> {
        self.places().into_iter().map(|(_, name)| name).collect()
    }

    /// The directory entries an entry names: (directory, name), one, or a rename's two.
    pub fn places(&self) -> Vec<(Fid, &[u8])> {
        match self {
            Op::Set { dir, name, .. }
            | Op::Patch { dir, name, .. }
            | Op::Attr { dir, name, .. }
            | Op::Delete { dir, name, .. }
            | Op::Link { dir, name, .. }
            | Op::Xattr { dir, name, .. } => vec![(*dir, name)],
            Op::Rename {
                dir,
                name,
                to_dir,
                to_name,
                ..
            } => vec![(*dir, name), (*to_dir, to_name)],
            Op::Checkpoint { .. } => vec![],
        }
    }

    /// The nodes an entry changes: its file, and the directories whose names it changes
    /// (with a rename's replaced file).
    pub fn fids(&self) -> Vec<Fid> {
        match self {
            Op::Set { fid, dir, .. } | Op::Delete { fid, dir, .. } | Op::Link { fid, dir, .. } => {
                vec![*fid, *dir]
            }
            Op::Patch { fid, .. } | Op::Attr { fid, .. } | Op::Xattr { fid, .. } => vec![*fid],
            Op::Rename {
                fid,
                dir,
                to_dir,
                replaced,
                ..
            } => [*fid, *dir, *to_dir].into_iter().chain(*replaced).collect(),
            Op::Checkpoint { .. } => vec![],
        }
    }

    /// The file an entry is about, if any.
    pub fn fid(&self) -> Option<Fid> {
        match self {
            Op::Set { fid, .. }
            | Op::Patch { fid, .. }
            | Op::Attr { fid, .. }
            | Op::Delete { fid, .. }
            | Op::Rename { fid, .. }
            | Op::Link { fid, .. }
            | Op::Xattr { fid, .. } => Some(*fid),
            Op::Checkpoint { .. } => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: Seq,
    /// Commit time, milliseconds since the Unix epoch.
    pub ts: u64,
    pub op: Op,
}

/// The line of an entry, without its newline.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("{{\"seq\":{},\"ts\":{}", entry.seq, entry.ts).as_bytes());
    push_json(&mut out, "op", entry.op.name());
    match &entry.op {
        Op::Set {
            fid,
            dir,
            name,
            kind,
            attrs,
            data,
        } => {
            push_json(&mut out, "fid", fid);
            push_json(&mut out, "dir", dir);
            push_json(&mut out, "name", &name_value(name));
            push_json(&mut out, "kind", kind.as_str());
            push_attrs(&mut out, attrs);
            push_json(&mut out, "len", &data.len());
            push_json(&mut out, "dcrc", &format!("{:08x}", data.dcrc));
            out.push(b',');
            match &data.fragment {
                Some(f) => out.extend_from_slice(f),
                None => out.extend_from_slice(&Data::encode(&data.bytes)),
            }
        }
        Op::Patch {
            fid,
            dir,
            name,
            attrs,
            len,
            dcrc,
            ranges,
            ..
        } => {
            push_json(&mut out, "fid", fid);
            push_json(&mut out, "dir", dir);
            push_json(&mut out, "name", &name_value(name));
            push_attrs(&mut out, attrs);
            push_json(&mut out, "len", len);
            push_json(&mut out, "dcrc", &format!("{dcrc:08x}"));
            out.extend_from_slice(b",\"ranges\":[");
            for (i, r) in ranges.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(format!("{{\"at\":{},", r.at).as_bytes());
                match &r.data.fragment {
                    Some(f) => out.extend_from_slice(f),
                    None => out.extend_from_slice(&Data::encode(&r.data.bytes)),
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        Op::Attr {
            fid,
            dir,
            name,
            attrs,
        } => {
            push_json(&mut out, "fid", fid);
            push_json(&mut out, "dir", dir);
            push_json(&mut out, "name", &name_value(name));
            push_attrs(&mut out, attrs);
        }
        Op::Delete { fid, dir, name } | Op::Link { fid, dir, name } => {
            push_json(&mut out, "fid", fid);
            push_json(&mut out, "dir", dir);
            push_json(&mut out, "name", &name_value(name));
        }
        Op::Rename {
            fid,
            dir,
            name,
            to_dir,
            to_name,
            replaced,
            exchange,
        } => {
            push_json(&mut out, "fid", fid);
            push_json(&mut out, "dir", dir);
            push_json(&mut out, "name", &name_value(name));
            push_json(&mut out, "to_dir", to_dir);
            push_json(&mut out, "to_name", &name_value(to_name));
            push_json(&mut out, "replaced", replaced);
            push_json(&mut out, "exchange", exchange);
        }
        Op::Xattr {
            fid,
            dir,
            name,
            xattrs,
        } => {
            push_json(&mut out, "fid", fid);
            push_json(&mut out, "dir", dir);
            push_json(&mut out, "name", &name_value(name));
            // Present even when empty: the entry says the file has none left.
            push_xattrs(&mut out, xattrs, true);
        }
        Op::Checkpoint { upto } => push_json(&mut out, "upto", upto),
    }
    seal(out)
}

pub fn decode_entry(line: &[u8]) -> Result<Entry> {
    let f = Fields(check_line(line)?);
    let seq = f.id("seq")?;
    let ts = f.u64("ts")?;
    let op = match f.str("op")? {
        "SET" => Op::Set {
            fid: f.id("fid")?,
            dir: f.id("dir")?,
            name: f.name("name")?,
            kind: f.kind()?,
            attrs: f.attrs()?,
            data: f.data()?,
        },
        "PATCH" => f.patch()?,
        "ATTR" => Op::Attr {
            fid: f.id("fid")?,
            dir: f.id("dir")?,
            name: f.name("name")?,
            attrs: f.attrs()?,
        },
        "DELETE" => Op::Delete {
            fid: f.id("fid")?,
            dir: f.id("dir")?,
            name: f.name("name")?,
        },
        "RENAME" => Op::Rename {
            fid: f.id("fid")?,
            dir: f.id("dir")?,
            name: f.name("name")?,
            to_dir: f.id("to_dir")?,
            to_name: f.name("to_name")?,
            replaced: match f.get("replaced")? {
                Value::Null => None,
                v => Some(
                    v.as_u64()
                        .filter(|f| (1..=MAX_ID).contains(f))
                        .ok_or_else(|| corrupt("field \"replaced\" is not a fid"))?,
                ),
            },
            exchange: f
                .get("exchange")?
                .as_bool()
                .ok_or_else(|| corrupt("field \"exchange\" is not a boolean"))?,
        },
        "LINK" => Op::Link {
            fid: f.id("fid")?,
            dir: f.id("dir")?,
            name: f.name("name")?,
        },
        "XATTR" => Op::Xattr {
            fid: f.id("fid")?,
            dir: f.id("dir")?,
            name: f.name("name")?,
            xattrs: f.xattrs()?,
        },
        "CHECKPOINT" => Op::Checkpoint {
            upto: f.upto("upto")?,
        },
        other => return Err(corrupt(format!("unknown op {other:?}"))),
    };
    Ok(Entry { seq, ts, op })
}

/// Bytes as `enc` and `data` give them.
fn decode_data(enc: &str, text: &str) -> Result<Vec<u8>> {
    match enc {
        "utf8" => Ok(text.as_bytes().to_vec()),
        "base64" => B64
            .decode(text)
            .map_err(|e| corrupt(format!("bad base64 data: {e}"))),
        other => Err(corrupt(format!("unknown encoding {other:?}"))),
    }
}

impl Fields {
    /// A PATCH: its ranges must lie in order, apart, and below `len`.
    fn patch(&self) -> Result<Op> {
        let len = self.u64("len")?;
        let items = self
            .get("ranges")?
            .as_array()
            .ok_or_else(|| corrupt("field \"ranges\" is not a list"))?;
        let mut ranges = Vec::with_capacity(items.len());
        let mut end = 0;
        for item in items {
            let field = |key: &str| {
                item.get(key)
                    .ok_or_else(|| corrupt(format!("a range has no {key:?}")))
            };
            let at = field("at")?
                .as_u64()
                .ok_or_else(|| corrupt("a range's \"at\" is not a number"))?;
            let text = |key: &str| -> Result<&str> {
                field(key)?
                    .as_str()
                    .ok_or_else(|| corrupt(format!("a range's {key:?} is not a string")))
            };
            let bytes = decode_data(text("enc")?, text("data")?)?;
            let stop = at.checked_add(bytes.len() as u64).filter(|s| *s <= len);
            match stop {
                Some(stop) if at >= end && !bytes.is_empty() => end = stop,
                _ => return Err(corrupt("a range is empty, out of order, or past len")),
            }
            ranges.push(Range {
                at,
                data: Data::decoded(bytes),
            });
        }
        Ok(Op::Patch {
            fid: self.id("fid")?,
            dir: self.id("dir")?,
            name: self.name("name")?,
            attrs: self.attrs()?,
            len,
            dcrc: self.crc("dcrc")?,
            ranges,
            shown: None,
        })
    }

    /// A SET's bytes, checked against its `len` and `dcrc`.
    fn data(&self) -> Result<Data> {
        let bytes = decode_data(self.str("enc")?, self.str("data")?)?;
        let data = Data::decoded(bytes);
        if data.len() != self.u64("len")? {
            return Err(corrupt("data length does not match len"));
        }
        let dcrc = self.crc("dcrc")?;
        if data.dcrc != dcrc {
            return Err(corrupt("data checksum does not match dcrc"));
        }
        Ok(data)
    }
}
