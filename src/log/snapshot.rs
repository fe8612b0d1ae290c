//! Snapshots and the manifest: the state after a compaction, without the files' bytes.

use crate::error::Result;
use crate::types::{Attrs, Fid, Kind, Seq, Xattrs};

use super::line::{
    check_line, corrupt, name_value, push_attrs, push_json, push_xattrs, seal, Fields,
    FORMAT_VERSION,
};

// ---------------------------------------------------------------------------------------------
// Snapshots and the manifest (compaction)

/// One file as a snapshot describes it: everything but its bytes, which its backing file holds
/// (made durable before the snapshot was written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub fid: Fid,
    pub dir: Fid,
    pub name: Vec<u8>,
    pub kind: Kind,
    pub attrs: Attrs,
    pub len: u64,
    pub dcrc: u32,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
    pub xattrs: Xattrs,
    /// A file's or symlink's further names (hard links), beyond `dir` and `name`.
    pub links: Vec<(Fid, Vec<u8>)>,
}

/// The state after entry `upto`, without the files' bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub upto: Seq,
    pub next_fid: Fid,
    pub root: Attrs,
    pub root_xattrs: Xattrs,
    pub files: Vec<FileRecord>,
}

pub fn snapshot_name(upto: Seq) -> String {
    format!("{upto:020}.snapshot")
}

pub const MANIFEST: &str = "MANIFEST";

/// A snapshot file: a header line, then one line per file, each sealed like a log line.
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut head = b"{\"recordfs\":\"snapshot\"".to_vec();
    push_json(&mut head, "version", &FORMAT_VERSION);
    push_json(&mut head, "upto", &s.upto);
    push_json(&mut head, "next_fid", &s.next_fid);
    push_json(&mut head, "files", &s.files.len());
    push_attrs(&mut head, &s.root);
    push_xattrs(&mut head, &s.root_xattrs, false);
    let mut out = seal(head);
    out.push(b'\n');
    for f in &s.files {
        let mut line = b"{\"op\":\"FILE\"".to_vec();
        push_json(&mut line, "fid", &f.fid);
        push_json(&mut line, "dir", &f.dir);
        push_json(&mut line, "name", &name_value(&f.name));
        push_json(&mut line, "kind", f.kind.as_str());
        push_attrs(&mut line, &f.attrs);
        push_json(&mut line, "len", &f.len);
        push_json(&mut line, "dcrc", &format!("{:08x}", f.dcrc));
        if let Some(t) = &f.target {
            push_json(&mut line, "target", &name_value(t));
        }
        push_xattrs(&mut line, &f.xattrs, false);
        if !f.links.is_empty() {
            let links: Vec<_> = f.links.iter().map(|(d, n)| (d, name_value(n))).collect();
            push_json(&mut line, "links", &links);
        }
        out.extend_from_slice(&seal(line));
        out.push(b'\n');
    }
    out
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot> {
    let mut lines = bytes.split(|b| *b == b'\n');
    let (upto, next_fid, root, count, root_xattrs) =
        decode_snapshot_head(lines.next().unwrap_or_default())?;
    let mut files = Vec::new();
    for line in lines.by_ref().take(count as usize) {
        files.push(decode_file_record(line)?);
    }
    if files.len() as u64 != count || lines.any(|l| !l.is_empty()) {
        return Err(corrupt(format!(
            "the snapshot should hold exactly {count} files"
        )));
    }
    Ok(Snapshot {
        upto,
        next_fid,
        root,
        root_xattrs,
        files,
    })
}

/// A snapshot's header: `upto`, `next_fid`, the root's attributes, how many files follow.
pub(super) fn decode_snapshot_head(line: &[u8]) -> Result<(Seq, Fid, Attrs, u64, Xattrs)> {
    let head = Fields(check_line(line)?);
    if head.str("recordfs")? != "snapshot" || head.u64("version")? != FORMAT_VERSION {
        return Err(corrupt("not a recordfs snapshot of this version"));
    }
    Ok((
        head.upto("upto")?,
        head.id("next_fid")?,
        head.attrs()?,
        head.u64("files")?,
        head.xattrs()?,
    ))
}

pub(super) fn decode_file_record(line: &[u8]) -> Result<FileRecord> {
    let f = Fields(check_line(line)?);
    Ok(FileRecord {
        fid: f.id("fid")?,
        dir: f.id("dir")?,
        name: f.name("name")?,
        kind: f.kind()?,
        attrs: f.attrs()?,
        len: f.u64("len")?,
        dcrc: f.crc("dcrc")?,
        target: f
            .0
            .contains_key("target")
            .then(|| f.name("target"))
            .transpose()?,
        xattrs: f.xattrs()?,
        links: f.links()?,
    })
}

/// What a salvage can read of a damaged snapshot: the header's fields if it checks out, every
/// file line that does, and the lines that do not (offset, bytes, why).
pub struct SalvagedSnapshot {
    /// `upto`, `next_fid`, the root's attributes and the number of files it names.
    pub head: Option<(Seq, Fid, Attrs, u64, Xattrs)>,
    /// Each file line that checks out, with its offset and bytes.
    pub files: Vec<(u64, Vec<u8>, FileRecord)>,
    pub bad: Vec<(u64, Vec<u8>, String)>,
}

pub fn salvage_snapshot(bytes: &[u8]) -> SalvagedSnapshot {
    let mut out = SalvagedSnapshot {
        head: None,
        files: Vec::new(),
        bad: Vec::new(),
    };
    let mut offset = 0u64;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let at = offset;
        offset += line.len() as u64 + 1;
        if line.is_empty() {
            continue;
        }
        let head = (i == 0).then(|| decode_snapshot_head(line));
        let result = match head {
            Some(Ok(head)) => {
                out.head = Some(head);
                Ok(())
            }
            // A first line that is no header may be a file line whose header was lost.
            _ => decode_file_record(line)
                .map(|f| out.files.push((at, line.to_vec(), f)))
                .map_err(|e| match head {
                    Some(Err(h)) => format!("header: {}", h.reason),
                    _ => e.reason,
                }),
        };
        if let Err(why) = result {
            out.bad.push((at, line.to_vec(), why));
        }
    }
    out
}

/// `log/MANIFEST`: which snapshot and segments hold the store's state. Written by temp file,
/// fsync, rename, directory fsync: its rename is the commit point of a compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub snapshot: Seq,
    /// The first live segment; it starts at `snapshot + 1`.
    pub first_segment: Seq,
}

pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut body = b"{\"recordfs\":\"manifest\"".to_vec();
    push_json(&mut body, "version", &FORMAT_VERSION);
    push_json(&mut body, "snapshot", &m.snapshot);
    push_json(&mut body, "first_segment", &m.first_segment);
    let mut out = seal(body);
    out.push(b'\n');
    out
}

pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest> {
    let line = bytes
        .strip_suffix(b"\n")
        .ok_or_else(|| corrupt("the manifest is not one whole line"))?;
    let f = Fields(check_line(line)?);
    if f.str("recordfs")? != "manifest" || f.u64("version")? != FORMAT_VERSION {
        return Err(corrupt("not a recordfs manifest of this version"));
    }
    Ok(Manifest {
        snapshot: f.upto("snapshot")?,
        first_segment: f.id("first_segment")?,
    })
}
