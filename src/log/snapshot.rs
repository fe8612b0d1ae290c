//! Snapshots and the manifest: the state after a compaction, without the files' bytes.

use crate::error::Result;
use crate::limits::{SNAPSHOT_DECODE_RUN, SNAPSHOT_DECODE_THREADS};
use crate::types::{no_xattrs, Attrs, Fid, Kind, Seq, Time, Xattrs, MAX_ID};

use super::line::{
    check_line, checksum, corrupt, name_value, push_attrs, push_json, push_xattrs, seal, Fields,
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
    pub name: crate::name::Name,
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

/// A snapshot file's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHead {
    /// The state after this entry.
    pub upto: Seq,
    pub next_fid: Fid,
    pub root: Attrs,
    pub root_xattrs: Xattrs,
    /// How many files the state holds.
    pub files: u64,
    /// A layer's: the snapshot it lies over, and how many lines it holds (`layers`). A whole
    /// snapshot has none: its `files` lines follow.
    pub layer: Option<(Seq, u64)>,
}

impl SnapshotHead {
    /// How many lines follow the header.
    pub fn lines(&self) -> u64 {
        self.layer.map_or(self.files, |(_, lines)| lines)
    }

    pub fn base(&self) -> Option<Seq> {
        self.layer.map(|(base, _)| base)
    }
}

/// A snapshot file: a header line, then one line per file, each sealed like a log line.
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut out = encode_snapshot_head(&SnapshotHead {
        upto: s.upto,
        next_fid: s.next_fid,
        root: s.root,
        root_xattrs: s.root_xattrs.clone(),
        files: s.files.len() as u64,
        layer: None,
    });
    for f in &s.files {
        out.extend_from_slice(&encode_file_line(f));
    }
    out
}

/// A snapshot's header line, newline included.
pub(super) fn encode_snapshot_head(h: &SnapshotHead) -> Vec<u8> {
    let mut head = b"{\"recordfs\":\"snapshot\"".to_vec();
    push_json(&mut head, "version", &FORMAT_VERSION);
    push_json(&mut head, "upto", &h.upto);
    push_json(&mut head, "next_fid", &h.next_fid);
    push_json(&mut head, "files", &h.files);
    if let Some((base, lines)) = h.layer {
        push_json(&mut head, "base", &base);
        push_json(&mut head, "lines", &lines);
    }
    push_attrs(&mut head, &h.root);
    push_xattrs(&mut head, &h.root_xattrs, false);
    let mut out = seal(head);
    out.push(b'\n');
    out
}

/// A file's line, newline included; its fid comes first (`merge::line_fid` reads it there).
pub(super) fn encode_file_line(f: &FileRecord) -> Vec<u8> {
    let mut line = b"{\"op\":\"FILE\"".to_vec();
    push_json(&mut line, "fid", &f.fid);
    push_json(&mut line, "dir", &f.dir);
    push_json(&mut line, "name", &name_value(&f.name.bytes()));
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
    let mut out = seal(line);
    out.push(b'\n');
    out
}

/// A whole snapshot (a layer is read with the snapshots under it: `layers::load_snapshot`).
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot> {
    let (head, file_lines) = split_snapshot(bytes)?;
    if let Some(base) = head.base() {
        return Err(corrupt(format!(
            "a layer over snapshot {base}, not a whole snapshot"
        )));
    }
    let files = decode_lines(&file_lines, decode_file_record)?;
    Ok(Snapshot {
        upto: head.upto,
        next_fid: head.next_fid,
        root: head.root,
        root_xattrs: head.root_xattrs,
        files,
    })
}

/// A snapshot file's header and the lines it says follow, which must be all there is.
pub(super) fn split_snapshot(bytes: &[u8]) -> Result<(SnapshotHead, Vec<&[u8]>)> {
    let mut lines = bytes.split(|b| *b == b'\n');
    let head = decode_snapshot_head(lines.next().unwrap_or_default())?;
    let count = head.lines();
    let file_lines: Vec<&[u8]> = lines.by_ref().take(count as usize).collect();
    if file_lines.len() as u64 != count || lines.any(|l| !l.is_empty()) {
        return Err(corrupt(format!(
            "the snapshot should hold exactly {count} lines"
        )));
    }
    Ok((head, file_lines))
}

/// Decodes `lines` with `decode` on several cores, in order: the first bad line (in order) is
/// the error, as read one by one.
pub(super) fn decode_lines<T: Send>(
    lines: &[&[u8]],
    decode: fn(&[u8]) -> Result<T>,
) -> Result<Vec<T>> {
    // A million lines take seconds on one core: each core takes a run of them, and the first
    // bad line (in order) is the error, as read one by one.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(SNAPSHOT_DECODE_THREADS);
    let run = lines.len().div_ceil(threads).max(SNAPSHOT_DECODE_RUN);
    let decoded: Vec<Result<Vec<T>>> = std::thread::scope(|s| {
        let runs: Vec<_> = lines
            .chunks(run)
            .map(|lines| s.spawn(move || lines.iter().map(|l| decode(l)).collect()))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("decoding lines does not panic"))
            .collect()
    });
    let mut out = Vec::with_capacity(lines.len());
    for run in decoded {
        out.extend(run?);
    }
    Ok(out)
}

/// A snapshot's header line.
pub(super) fn decode_snapshot_head(line: &[u8]) -> Result<SnapshotHead> {
    let head = Fields(check_line(line)?);
    if head.str("recordfs")? != "snapshot" || head.u64("version")? != FORMAT_VERSION {
        return Err(corrupt("not a recordfs snapshot of this version"));
    }
    let upto = head.upto("upto")?;
    let layer = match head.0.contains_key("base") {
        true => {
            let base = head.upto("base")?;
            if base >= upto {
                return Err(corrupt(format!("a layer over snapshot {base} after it")));
            }
            Some((base, head.u64("lines")?))
        }
        false => None,
    };
    Ok(SnapshotHead {
        upto,
        next_fid: head.id("next_fid")?,
        root: head.attrs()?,
        root_xattrs: head.xattrs()?,
        files: head.u64("files")?,
        layer,
    })
}

pub(super) fn decode_file_record(line: &[u8]) -> Result<FileRecord> {
    if let Some(record) = checksum(line).ok().and_then(|_| plain_file_record(line)) {
        return Ok(record);
    }
    let f = Fields(check_line(line)?);
    Ok(FileRecord {
        fid: f.id("fid")?,
        dir: f.id("dir")?,
        name: crate::name::Name::new(&f.name("name")?),
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

/// A layer's line for a file gone since the snapshot under it, newline included; its fid comes
/// first, as in a file's line.
pub(super) fn encode_gone_line(fid: Fid) -> Vec<u8> {
    let mut line = b"{\"op\":\"GONE\"".to_vec();
    push_json(&mut line, "fid", &fid);
    let mut out = seal(line);
    out.push(b'\n');
    out
}

pub(super) const GONE_PREFIX: &[u8] = br#"{"op":"GONE","#;

/// A layer's line: a file's fid and its record now, or none if it is gone.
pub fn decode_layer_line(line: &[u8]) -> Result<(Fid, Option<FileRecord>)> {
    if line.starts_with(GONE_PREFIX) {
        let f = Fields(check_line(line)?);
        if f.str("op")? != "GONE" || f.0.len() != 3 {
            return Err(corrupt("not a GONE line"));
        }
        return Ok((f.id("fid")?, None));
    }
    let record = decode_file_record(line)?;
    Ok((record.fid, Some(record)))
}

/// A file line as nearly every one is written (no extended attributes), read straight into
/// its fields: a million of them are most of a mount's time. None for anything else, and for
/// anything out of range, which `decode_file_record` then reads the general way, saying what
/// is wrong.
pub(super) fn plain_file_record(line: &[u8]) -> Option<FileRecord> {
    #[derive(serde::Deserialize)]
    struct Plain<'a> {
        fid: u64,
        dir: u64,
        name: Name,
        kind: &'a str,
        mode: u64,
        uid: u64,
        gid: u64,
        atime: (i64, u64),
        mtime: (i64, u64),
        ctime: (i64, u64),
        len: u64,
        dcrc: &'a str,
        #[serde(default)]
        target: Option<Name>,
        #[serde(default)]
        links: Vec<(u64, Name)>,
        #[serde(default)]
        xattrs: Option<serde::de::IgnoredAny>,
    }
    let p: Plain = serde_json::from_slice(line).ok()?;
    let id = |v: u64| (1..=MAX_ID).contains(&v).then_some(v);
    let time = |(secs, nsecs): (i64, u64)| {
        (nsecs < 1_000_000_000).then_some(Time {
            secs,
            nsecs: nsecs as u32,
        })
    };
    if p.xattrs.is_some() {
        return None;
    }
    let mut links = Vec::with_capacity(p.links.len());
    for (dir, name) in p.links {
        links.push((id(dir)?, name.0.to_vec()));
    }
    Some(FileRecord {
        fid: id(p.fid)?,
        dir: id(p.dir)?,
        name: p.name.0,
        kind: match p.kind {
            "file" => Kind::File,
            "symlink" => Kind::Symlink,
            "dir" => Kind::Dir,
            _ => return None,
        },
        attrs: Attrs {
            mode: u32::try_from(p.mode).ok()? & 0o7777,
            uid: u32::try_from(p.uid).ok()?,
            gid: u32::try_from(p.gid).ok()?,
            atime: time(p.atime)?,
            mtime: time(p.mtime)?,
            ctime: time(p.ctime)?,
        },
        len: p.len,
        dcrc: u32::from_str_radix(p.dcrc, 16).ok()?,
        target: p.target.map(|t| t.0.to_vec()),
        xattrs: no_xattrs(),
        links,
    })
}

/// A name written as a JSON string (a name that is not UTF-8 is an object, read the general
/// way).
struct Name(crate::name::Name);

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Name, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name as a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Name, E> {
                Ok(Name(crate::name::Name::new(s.as_bytes())))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// What a salvage can read of a damaged snapshot: the header's fields if it checks out, every
/// file line that does, and the lines that do not (offset, bytes, why).
pub struct SalvagedSnapshot {
    pub head: Option<SnapshotHead>,
    /// Each file line that checks out, with its offset and bytes.
    pub files: Vec<(u64, Vec<u8>, FileRecord)>,
    /// The fids a layer's lines say are gone (`layers`).
    pub gone: Vec<Fid>,
    pub bad: Vec<(u64, Vec<u8>, String)>,
}

pub fn salvage_snapshot(bytes: &[u8]) -> SalvagedSnapshot {
    let mut out = SalvagedSnapshot {
        head: None,
        files: Vec::new(),
        gone: Vec::new(),
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
            _ => decode_layer_line(line)
                .map(|(fid, f)| match f {
                    Some(f) => out.files.push((at, line.to_vec(), f)),
                    None => out.gone.push(fid),
                })
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
