//! The log: entries, their one-line JSON encoding with a CRC32C, and the segment writer and
//! scanner. FORMAT.md is the authoritative description; this file implements it.

use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::Value;

use crate::disk::{Disk, DiskFile, Reader};
use crate::error::{err, Error, Result};

pub const FORMAT_VERSION: u64 = 1;
/// The fid of the root directory; also the FUSE root inode number.
pub const ROOT: Fid = 1;
/// A header line is small; this bounds reading it before its `max_line` is known.
const MAX_HEADER_LINE: usize = 4096;
/// Everything in an entry but its data: names are at most 255 bytes, so 4 KiB is generous.
pub const ENTRY_OVERHEAD: usize = 4096;

pub type Fid = u64;
pub type Seq = u64;
/// The largest sequence number, fid or segment number a reader accepts from disk: far beyond
/// any store's life, and low enough that `+ 1` on any of them never overflows. A larger one
/// is corruption.
pub const MAX_ID: u64 = 1 << 62;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The longest line an entry with `max_file_size` bytes of data can need: base64 is 4/3 of the
/// data and the utf8 encoding is chosen only when it at most doubles it.
pub const fn max_line_for(max_file_size: u64) -> u64 {
    max_file_size * 2 + ENTRY_OVERHEAD as u64
}

/// The longest line any writer may write: the bound for reading a segment whose header (and
/// so its own bound) is unreadable.
pub const LONGEST_LINE: u64 = max_line_for(crate::options::MAX_MAX_FILE_SIZE);

pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    pub secs: i64,
    pub nsecs: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nsecs) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nsecs > 0 {
                    secs -= 1;
                    nsecs = 1_000_000_000 - nsecs;
                }
                Time { secs, nsecs }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        let base = if self.secs >= 0 {
            UNIX_EPOCH + std::time::Duration::from_secs(self.secs as u64)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(self.secs.unsigned_abs())
        };
        base + std::time::Duration::from_nanos(self.nsecs as u64)
    }

    pub fn millis(self) -> u64 {
        (self.secs.max(0) as u64) * 1000 + (self.nsecs / 1_000_000) as u64
    }

    pub fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.secs,
            tv_nsec: self.nsecs as i64,
        }
    }

    pub fn from_millis(ms: u64) -> Time {
        Time {
            secs: (ms / 1000) as i64,
            nsecs: (ms % 1000) as u32 * 1_000_000,
        }
    }

    /// ISO 8601 in UTC, to the millisecond: `2026-12-01T03:21:49.603Z`.
    pub fn iso8601(self) -> String {
        let days = self.secs.div_euclid(86_400);
        let secs = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            self.nsecs / 1_000_000
        )
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Symlink,
    Dir,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Dir => "dir",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits only (the 0o7777 part); the kind is separate.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

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

    fn decoded(bytes: Vec<u8>) -> Data {
        Data {
            dcrc: crc32c(&bytes),
            bytes: Arc::new(bytes),
            fragment: None,
        }
    }

    fn encode(bytes: &[u8]) -> Vec<u8> {
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
    Checkpoint {
        upto: Seq,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Set { .. } => "SET",
            Op::Attr { .. } => "ATTR",
            Op::Delete { .. } => "DELETE",
            Op::Rename { .. } => "RENAME",
            Op::Checkpoint { .. } => "CHECKPOINT",
        }
    }

    /// The names an entry mentions.
    pub fn names(&self) -> Vec<&[u8]> {
        match self {
            Op::Set { name, .. } | Op::Attr { name, .. } | Op::Delete { name, .. } => vec![name],
            Op::Rename { name, to_name, .. } => vec![name, to_name],
            Op::Checkpoint { .. } => vec![],
        }
    }

    /// The file an entry is about, if any.
    pub fn fid(&self) -> Option<Fid> {
        match self {
            Op::Set { fid, .. }
            | Op::Attr { fid, .. }
            | Op::Delete { fid, .. }
            | Op::Rename { fid, .. } => Some(*fid),
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

// ---------------------------------------------------------------------------------------------
// Encoding

fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, key: &str, value: &T) {
    out.push(b',');
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value).expect("serialising plain values cannot fail");
}

fn name_value(name: &[u8]) -> Value {
    match std::str::from_utf8(name) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => serde_json::json!({ "b64": B64.encode(name) }),
    }
}

fn push_time(out: &mut Vec<u8>, key: &str, t: Time) {
    push_json(out, key, &[t.secs, t.nsecs as i64]);
}

fn push_attrs(out: &mut Vec<u8>, a: &Attrs) {
    push_json(out, "mode", &a.mode);
    push_json(out, "uid", &a.uid);
    push_json(out, "gid", &a.gid);
    push_time(out, "atime", a.atime);
    push_time(out, "mtime", a.mtime);
    push_time(out, "ctime", a.ctime);
}

/// Appends `,"crc":"…"}` to a line body that starts with `{` and has no closing brace yet.
fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let mut checked = Vec::with_capacity(body.len() + 1);
    checked.extend_from_slice(&body);
    checked.push(b'}');
    let crc = crc32c(&checked);
    body.extend_from_slice(format!(",\"crc\":\"{crc:08x}\"}}").as_bytes());
    body
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
        Op::Delete { fid, dir, name } => {
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
        Op::Checkpoint { upto } => push_json(&mut out, "upto", upto),
    }
    seal(out)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u64,
    pub start_seq: Seq,
    pub max_line: u64,
    pub created: u64,
}

pub fn encode_header(h: &Header) -> Vec<u8> {
    let mut out = b"{\"recordfs\":\"log\"".to_vec();
    push_json(&mut out, "version", &h.version);
    push_json(&mut out, "start_seq", &h.start_seq);
    push_json(&mut out, "max_line", &h.max_line);
    push_json(&mut out, "created", &h.created);
    seal(out)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Checks the framing and checksum of one line (without newline) and parses it.
fn check_line(line: &[u8]) -> std::result::Result<serde_json::Map<String, Value>, String> {
    const TAIL: usize = r#","crc":"00000000"}"#.len();
    if line.len() < TAIL + 1 || line[0] != b'{' {
        return Err("not an entry line".into());
    }
    let (body, tail) = line.split_at(line.len() - TAIL);
    if !tail.starts_with(b",\"crc\":\"") || !tail.ends_with(b"\"}") {
        return Err("no trailing crc field".into());
    }
    let hex = &tail[8..16];
    let stored = hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        .then(|| std::str::from_utf8(hex).ok())
        .flatten()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("crc is not 8 hex digits")?;
    let mut checked = Vec::with_capacity(body.len() + 1);
    checked.extend_from_slice(body);
    checked.push(b'}');
    let actual = crc32c(&checked);
    if actual != stored {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("line is not a JSON object".into()),
        Err(e) => Err(format!("checksum matches but JSON does not parse: {e}")),
    }
}

struct Fields(serde_json::Map<String, Value>);

impl Fields {
    fn get(&self, key: &str) -> std::result::Result<&Value, String> {
        self.0
            .get(key)
            .ok_or_else(|| format!("missing field {key:?}"))
    }
    fn u64(&self, key: &str) -> std::result::Result<u64, String> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| format!("field {key:?} is not an unsigned integer"))
    }
    /// A sequence number, fid or segment number: 1 to `MAX_ID`.
    fn id(&self, key: &str) -> std::result::Result<u64, String> {
        match self.u64(key)? {
            v @ 1..=MAX_ID => Ok(v),
            v => Err(format!("field {key:?} is {v}, outside 1..={MAX_ID}")),
        }
    }
    /// The sequence number a checkpoint, snapshot or manifest covers up to: 0 to `MAX_ID`.
    fn upto(&self, key: &str) -> std::result::Result<u64, String> {
        match self.u64(key)? {
            v @ 0..=MAX_ID => Ok(v),
            v => Err(format!("field {key:?} is {v}, above {MAX_ID}")),
        }
    }
    fn u32(&self, key: &str) -> std::result::Result<u32, String> {
        u32::try_from(self.u64(key)?).map_err(|_| format!("field {key:?} is out of range"))
    }
    fn str(&self, key: &str) -> std::result::Result<&str, String> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| format!("field {key:?} is not a string"))
    }
    fn name(&self, key: &str) -> std::result::Result<Vec<u8>, String> {
        match self.get(key)? {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Object(m) => m
                .get("b64")
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
                .ok_or_else(|| format!("field {key:?} is not a name")),
            _ => Err(format!("field {key:?} is not a name")),
        }
    }
    fn time(&self, key: &str) -> std::result::Result<Time, String> {
        let bad = || format!("field {key:?} is not [seconds, nanoseconds]");
        let arr = self.get(key)?.as_array().ok_or_else(bad)?;
        match arr.as_slice() {
            [s, n] => Ok(Time {
                secs: s.as_i64().ok_or_else(bad)?,
                nsecs: n.as_u64().filter(|n| *n < 1_000_000_000).ok_or_else(bad)? as u32,
            }),
            _ => Err(bad()),
        }
    }
    fn kind(&self) -> std::result::Result<Kind, String> {
        match self.str("kind")? {
            "file" => Ok(Kind::File),
            "symlink" => Ok(Kind::Symlink),
            other => Err(format!("unknown kind {other:?}")),
        }
    }
    /// A CRC32C written as 8 hex digits.
    fn crc(&self, key: &str) -> std::result::Result<u32, String> {
        u32::from_str_radix(self.str(key)?, 16).map_err(|e| format!("field {key:?}: {e}"))
    }
    fn attrs(&self) -> std::result::Result<Attrs, String> {
        Ok(Attrs {
            mode: self.u32("mode")? & 0o7777,
            uid: self.u32("uid")?,
            gid: self.u32("gid")?,
            atime: self.time("atime")?,
            mtime: self.time("mtime")?,
            ctime: self.time("ctime")?,
        })
    }
    fn data(&self) -> std::result::Result<Data, String> {
        let text = self.str("data")?;
        let bytes = match self.str("enc")? {
            "utf8" => text.as_bytes().to_vec(),
            "base64" => B64
                .decode(text)
                .map_err(|e| format!("bad base64 data: {e}"))?,
            other => return Err(format!("unknown encoding {other:?}")),
        };
        let data = Data::decoded(bytes);
        if data.len() != self.u64("len")? {
            return Err("data length does not match len".into());
        }
        let dcrc = self.crc("dcrc")?;
        if data.dcrc != dcrc {
            return Err("data checksum does not match dcrc".into());
        }
        Ok(data)
    }
}

pub fn decode_entry(line: &[u8]) -> std::result::Result<Entry, String> {
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
                        .ok_or("field \"replaced\" is not a fid")?,
                ),
            },
            exchange: f
                .get("exchange")?
                .as_bool()
                .ok_or("field \"exchange\" is not a boolean")?,
        },
        "CHECKPOINT" => Op::Checkpoint {
            upto: f.upto("upto")?,
        },
        other => return Err(format!("unknown op {other:?}")),
    };
    Ok(Entry { seq, ts, op })
}

pub fn decode_header(line: &[u8]) -> std::result::Result<Header, String> {
    let f = Fields(check_line(line)?);
    if f.str("recordfs")? != "log" {
        return Err("not a recordfs log header".into());
    }
    let version = f.u64("version")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "log format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        ));
    }
    Ok(Header {
        version,
        start_seq: f.id("start_seq")?,
        max_line: f.u64("max_line")?,
        created: f.u64("created")?,
    })
}

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
}

/// The state after entry `upto`, without the files' bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub upto: Seq,
    pub next_fid: Fid,
    pub root: Attrs,
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
        out.extend_from_slice(&seal(line));
        out.push(b'\n');
    }
    out
}

pub fn decode_snapshot(bytes: &[u8]) -> std::result::Result<Snapshot, String> {
    let mut lines = bytes.split(|b| *b == b'\n');
    let (upto, next_fid, root, count) = decode_snapshot_head(lines.next().unwrap_or_default())?;
    let mut files = Vec::new();
    for line in lines.by_ref().take(count as usize) {
        files.push(decode_file_record(line)?);
    }
    if files.len() as u64 != count || lines.any(|l| !l.is_empty()) {
        return Err(format!("the snapshot should hold exactly {count} files"));
    }
    Ok(Snapshot {
        upto,
        next_fid,
        root,
        files,
    })
}

/// A snapshot's header: `upto`, `next_fid`, the root's attributes, how many files follow.
fn decode_snapshot_head(line: &[u8]) -> std::result::Result<(Seq, Fid, Attrs, u64), String> {
    let head = Fields(check_line(line)?);
    if head.str("recordfs")? != "snapshot" || head.u64("version")? != FORMAT_VERSION {
        return Err("not a recordfs snapshot of this version".into());
    }
    Ok((
        head.upto("upto")?,
        head.id("next_fid")?,
        head.attrs()?,
        head.u64("files")?,
    ))
}

fn decode_file_record(line: &[u8]) -> std::result::Result<FileRecord, String> {
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
    })
}

/// What a salvage can read of a damaged snapshot: the header's fields if it checks out, every
/// file line that does, and the lines that do not (offset, bytes, why).
pub struct SalvagedSnapshot {
    /// `upto`, `next_fid`, the root's attributes and the number of files it names.
    pub head: Option<(Seq, Fid, Attrs, u64)>,
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
                    Some(Err(h)) => format!("header: {h}"),
                    _ => e,
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

pub fn decode_manifest(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let line = bytes
        .strip_suffix(b"\n")
        .ok_or("the manifest is not one whole line")?;
    let f = Fields(check_line(line)?);
    if f.str("recordfs")? != "manifest" || f.u64("version")? != FORMAT_VERSION {
        return Err("not a recordfs manifest of this version".into());
    }
    Ok(Manifest {
        snapshot: f.upto("snapshot")?,
        first_segment: f.id("first_segment")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Segments

pub fn segment_name(start_seq: Seq) -> String {
    format!("{start_seq:020}.log")
}

pub fn parse_segment_name(name: &str) -> Option<Seq> {
    parse_numbered(name, ".log")
}

pub fn parse_snapshot_name(name: &str) -> Option<Seq> {
    parse_numbered(name, ".snapshot")
}

/// `<20 digits><suffix>`: how segments and snapshots are named. A number outside
/// 1..=`MAX_ID` names nothing recordfs writes (segments start at entry 1 or later).
fn parse_numbered(name: &str, suffix: &str) -> Option<Seq> {
    let digits = name.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
        .filter(|n| (1..=MAX_ID).contains(n))
}

/// The segments of a log directory, oldest first.
pub fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let names = disk
        .list(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
    let mut out: Vec<(Seq, PathBuf)> = names
        .iter()
        .filter_map(|n| {
            let seq = std::str::from_utf8(n).ok().and_then(parse_segment_name)?;
            Some((seq, dir.join(std::ffi::OsStr::from_bytes(n))))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Appends lines to one segment. A failed append is cut off again, so the segment never holds
/// a partial line that a later append would bury in the middle of the log.
pub struct LogWriter {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    start_seq: Seq,
    len: u64,
    max_line: u64,
}

impl LogWriter {
    /// Creates a new segment holding only its header, durably (file and directory synced).
    pub fn create(disk: &dyn Disk, dir: &Path, start_seq: Seq, max_line: u64) -> Result<LogWriter> {
        let path = dir.join(segment_name(start_seq));
        let ctx = |what: &str| format!("{what} {}", path.display());
        let file = disk
            .open_file(&path, true)
            .map_err(|e| Error::io(ctx("creating log segment"), &e))?;
        let mut w = LogWriter {
            file,
            path: path.clone(),
            start_seq,
            len: 0,
            max_line,
        };
        let header = encode_header(&Header {
            version: FORMAT_VERSION,
            start_seq,
            max_line,
            created: Time::now().millis(),
        });
        w.append(&header)?;
        w.file
            .sync_data()
            .map_err(|e| Error::io(ctx("syncing new log segment"), &e))?;
        crate::store::sync_dir(disk, dir)?;
        Ok(w)
    }

    /// Opens an existing segment to append after its first `len` bytes (all checked good).
    pub fn open(disk: &dyn Disk, path: &Path, header: &Header, len: u64) -> Result<LogWriter> {
        let file = disk
            .open_file(path, false)
            .map_err(|e| Error::io(format!("opening log segment {}", path.display()), &e))?;
        Ok(LogWriter {
            file,
            path: path.to_owned(),
            start_seq: header.start_seq,
            len,
            max_line: header.max_line,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn start_seq(&self) -> Seq {
        self.start_seq
    }

    /// fdatasync of the segment: everything appended so far is durable when it returns.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fdatasync of {}", self.path.display()), &e))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_line(&self) -> u64 {
        self.max_line
    }

    /// The segment, for syncing it without holding the writer.
    pub fn sync_handle(&self) -> Arc<dyn DiskFile> {
        self.file.clone()
    }

    /// Writes one line (newline added) at the end; returns its offset.
    pub fn append(&mut self, line: &[u8]) -> Result<u64> {
        if line.len() as u64 > self.max_line {
            return Err(err!(
                EFBIG,
                "log entry of {} bytes exceeds the segment's limit of {}",
                line.len(),
                self.max_line
            ));
        }
        let offset = self.len;
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        match self.file.write_at(offset, &buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(offset)
            }
            Err(e) => {
                let error = Error::io(format!("appending to {}", self.path.display()), &e);
                if let Err(e2) = self.file.set_len(offset) {
                    return Err(err!(
                        EIO,
                        "{error}; then cutting the partial entry failed: {e2}"
                    ));
                }
                Err(error)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning

/// A line that did not check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    pub offset: u64,
    pub reason: String,
    /// The last good entry before it.
    pub prev_seq: Option<Seq>,
    /// It holds NUL bytes, which no line written contains: blocks that never reached the
    /// disk (see `SegmentScan::hole`).
    pub has_nul: bool,
}

/// What a scan of one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    pub header: Option<Header>,
    /// The offset just after the last good line: where a torn tail is cut.
    pub good_end: u64,
    pub bad: Vec<BadLine>,
    /// A good line came after a bad one: corruption in the middle, not a torn tail — unless
    /// the first bad line is a hole.
    pub good_after_bad: bool,
    /// The first bad line holds NUL bytes: a hole of blocks that never reached the disk.
    /// fdatasync makes everything up to the end of the file durable, so a hole can only lie in
    /// the part never synced, and nothing after it was ever acknowledged as durable: the log
    /// ends at the hole, whatever lines follow it.
    pub hole: bool,
    pub last_seq: Option<Seq>,
}

/// One line read by `read_bounded_line`.
enum LineRead {
    /// The line without its newline, and whether a newline ended it.
    Line(Vec<u8>, bool),
    /// A line longer than allowed, skipped to its end: how many bytes it took.
    TooLong(u64),
}

/// Reads one line of at most `max` bytes; `None` at the end of the file.
fn read_bounded_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Option<LineRead>> {
    let mut line = Vec::new();
    let mut skipped: u64 = 0;
    let mut too_long = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            if line.is_empty() && skipped == 0 && !too_long {
                return Ok(None);
            }
            return Ok(Some(if too_long {
                LineRead::TooLong(skipped)
            } else {
                LineRead::Line(line, false)
            }));
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if too_long || line.len() + n > max {
            too_long = true;
            skipped += (line.len() + n) as u64;
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        r.consume(n + usize::from(found));
        if found {
            return Ok(Some(if too_long {
                LineRead::TooLong(skipped + 1)
            } else {
                LineRead::Line(line, true)
            }));
        }
    }
}

/// Reads a segment line by line, giving every good entry (with its offset) to `visit`.
/// `expect_seq` is the sequence number the first entry must have, when known.
pub fn scan_segment(
    disk: &dyn Disk,
    path: &Path,
    mut expect_seq: Option<Seq>,
    mut visit: impl FnMut(u64, Entry) -> Result<()>,
) -> Result<SegmentScan> {
    let file = disk
        .open_read(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut r = BufReader::with_capacity(256 * 1024, Reader::new(file, 0));
    let io_err = |e: std::io::Error| Error::io(format!("reading {}", path.display()), &e);
    let mut scan = SegmentScan {
        header: None,
        good_end: 0,
        bad: Vec::new(),
        good_after_bad: false,
        hole: false,
        last_seq: None,
    };
    let mut offset: u64 = 0;
    let mut max = MAX_HEADER_LINE;
    while let Some(read) = read_bounded_line(&mut r, max).map_err(io_err)? {
        let mut has_nul = false;
        let (consumed, result) = match read {
            LineRead::TooLong(skipped) => (
                skipped,
                Err(format!("line longer than the limit of {max} bytes")),
            ),
            LineRead::Line(line, ended) => {
                has_nul = line.contains(&0);
                let consumed = line.len() as u64 + u64::from(ended);
                let result = if !ended {
                    Err("line has no newline (torn write)".to_string())
                } else if scan.header.is_none() && offset == 0 {
                    decode_header(&line).map(|h| {
                        max = h.max_line.min(usize::MAX as u64) as usize;
                        expect_seq.get_or_insert(h.start_seq);
                        scan.header = Some(h);
                        None
                    })
                } else {
                    decode_entry(&line).map(Some)
                };
                (consumed, result)
            }
        };
        match result {
            Ok(entry) => {
                if let Some(entry) = entry {
                    if scan.header.is_none() {
                        return Err(err!(
                            EIO,
                            "{}: the header is unreadable but entries follow. The store is left as it is; `recordfs mount --salvage` mounts it, reading the entries without the header.",
                            path.display()
                        ));
                    }
                    match expect_seq {
                        Some(want) if entry.seq != want && scan.bad.is_empty() => {
                            scan.bad.push(BadLine {
                                offset,
                                reason: format!(
                                    "sequence number {} where {want} was expected",
                                    entry.seq
                                ),
                                prev_seq: scan.last_seq,
                                has_nul: false,
                            });
                        }
                        _ => {}
                    }
                    if !scan.bad.is_empty() {
                        // Entries after a bad line are checked, not applied: the state they
                        // build on is unknown.
                        scan.good_after_bad = true;
                    } else {
                        scan.last_seq = Some(entry.seq);
                        visit(offset, entry.clone())?;
                    }
                    expect_seq = Some(entry.seq + 1);
                } else if !scan.bad.is_empty() {
                    scan.good_after_bad = true;
                }
                if scan.bad.is_empty() {
                    scan.good_end = offset + consumed;
                }
            }
            Err(reason) => {
                if scan.bad.is_empty() {
                    scan.hole = has_nul;
                }
                scan.bad.push(BadLine {
                    offset,
                    reason,
                    prev_seq: scan.last_seq,
                    has_nul,
                })
            }
        }
        offset += consumed;
    }
    Ok(scan)
}

/// Calls `f` with the offset and bytes of every line of a segment (the header's `max_line`
/// bounds what is read into memory, or `unreadable_header_max` if the header is damaged); a
/// line too long is given as empty.
pub fn for_each_line(
    disk: &dyn Disk,
    path: &Path,
    unreadable_header_max: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let file = disk
        .open_read(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut r = BufReader::with_capacity(256 * 1024, Reader::new(file, 0));
    let (mut offset, mut max) = (0u64, MAX_HEADER_LINE);
    while let Some(read) = read_bounded_line(&mut r, max)
        .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?
    {
        match read {
            LineRead::TooLong(n) => {
                f(offset, &[])?;
                offset += n;
            }
            LineRead::Line(line, ended) => {
                if offset == 0 {
                    let bound = decode_header(&line).map_or(unreadable_header_max, |h| h.max_line);
                    max = bound.min(usize::MAX as u64) as usize;
                }
                f(offset, &line)?;
                offset += line.len() as u64 + u64::from(ended);
            }
        }
    }
    Ok(())
}

/// Reads the entry at `offset` of a segment (to restore a file's bytes from the log).
pub fn read_entry_at(disk: &dyn Disk, path: &Path, offset: u64, max_line: u64) -> Result<Entry> {
    let file = disk
        .open_read(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), &e))?;
    let mut r = BufReader::new(Reader::new(file, offset));
    match read_bounded_line(&mut r, max_line as usize) {
        Ok(Some(LineRead::Line(line, true))) => {
            decode_entry(&line).map_err(|e| err!(EIO, "{} at offset {offset}: {e}", path.display()))
        }
        Ok(_) => Err(err!(
            EIO,
            "{} at offset {offset}: no whole entry",
            path.display()
        )),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attrs {
        let t = Time {
            secs: 1_700_000_000,
            nsecs: 5,
        };
        Attrs {
            mode: 0o644,
            uid: 1000,
            gid: 100,
            atime: t,
            mtime: t,
            ctime: t,
        }
    }

    fn roundtrip(op: Op) -> Entry {
        let line = encode_entry(&Entry {
            seq: 9,
            ts: 1234,
            op,
        });
        assert!(!line.contains(&b'\n'));
        let v: Value = serde_json::from_slice(&line).expect("every line is JSON");
        assert_eq!(v["seq"], 9);
        decode_entry(&line).expect("decodes")
    }

    #[test]
    fn times_print_as_iso_8601_in_utc() {
        let t = |secs, nsecs| Time { secs, nsecs }.iso8601();
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(1_796_095_309, 603_000_000), "2026-12-01T03:21:49.603Z");
        assert_eq!(t(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(t(-1, 0), "1969-12-31T23:59:59.000Z");
        assert_eq!(
            Time::from_millis(1_796_095_309_603).iso8601(),
            t(1_796_095_309, 603_000_000)
        );
    }

    #[test]
    fn set_round_trips_exact_bytes_in_both_encodings() {
        for bytes in [
            b"{\"a\": \"\\u00e9\"}\n".to_vec(),
            vec![0, 1, 2, 255, 254, b'\n'],
            Vec::new(),
            "d\u{e9}j\u{e0} \"vu\"\t".as_bytes().to_vec(),
        ] {
            let e = roundtrip(Op::Set {
                fid: 7,
                dir: ROOT,
                name: b"x.json".to_vec(),
                kind: Kind::File,
                attrs: attrs(),
                data: Data::new(Arc::new(bytes.clone())),
            });
            match e.op {
                Op::Set { data, attrs: a, .. } => {
                    assert_eq!(*data.bytes, bytes);
                    assert_eq!(a, attrs());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn control_bytes_use_base64_so_lines_stay_bounded() {
        let bytes = vec![1u8; 1000];
        let f = Data::encode(&bytes);
        assert!(f.starts_with(b"\"enc\":\"base64\""));
        assert!(f.len() as u64 <= max_line_for(1000));
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let e = roundtrip(Op::Rename {
            fid: 3,
            dir: ROOT,
            name: vec![b'a', 0xff],
            to_dir: ROOT,
            to_name: b"b".to_vec(),
            replaced: Some(4),
            exchange: false,
        });
        match e.op {
            Op::Rename { name, replaced, .. } => {
                assert_eq!(name, vec![b'a', 0xff]);
                assert_eq!(replaced, Some(4));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let line = encode_entry(&Entry {
            seq: 1,
            ts: 2,
            op: Op::Delete {
                fid: 5,
                dir: ROOT,
                name: b"a.txt".to_vec(),
            },
        });
        for i in 0..line.len() {
            for bit in 0..8 {
                let mut bad = line.clone();
                bad[i] ^= 1 << bit;
                assert!(decode_entry(&bad).is_err(), "flip at byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn snapshots_and_manifests_round_trip_and_detect_damage() {
        let snap = Snapshot {
            upto: 41,
            next_fid: 9,
            root: attrs(),
            files: vec![
                FileRecord {
                    fid: 3,
                    dir: ROOT,
                    name: vec![b'a', 0xff],
                    kind: Kind::File,
                    attrs: attrs(),
                    len: 12,
                    dcrc: 0xdead_beef,
                    target: None,
                },
                FileRecord {
                    fid: 4,
                    dir: ROOT,
                    name: b"link".to_vec(),
                    kind: Kind::Symlink,
                    attrs: attrs(),
                    len: 1,
                    dcrc: 0,
                    target: Some(b"t".to_vec()),
                },
            ],
        };
        let bytes = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
        let mut bad = bytes.clone();
        bad[bytes.len() / 2] ^= 1;
        assert!(decode_snapshot(&bad).is_err());
        assert!(decode_snapshot(&bytes[..bytes.len() - 3]).is_err());
        let m = Manifest {
            snapshot: 41,
            first_segment: 42,
        };
        assert_eq!(decode_manifest(&encode_manifest(&m)).unwrap(), m);
        assert!(decode_manifest(&encode_manifest(&m)[1..]).is_err());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "00000000000000000001.log");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("1.log"), None);
        assert_eq!(parse_segment_name("+0000000000000000001.log"), None);
        assert_eq!(parse_snapshot_name(&snapshot_name(7)), Some(7));
    }

    #[test]
    fn scan_cuts_torn_tail_and_flags_middle_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let disk: &dyn Disk = &crate::disk::RealDisk;
        let mut w = LogWriter::create(disk, dir.path(), 1, 1 << 20).unwrap();
        for seq in 1..=3 {
            let line = encode_entry(&Entry {
                seq,
                ts: 0,
                op: Op::Checkpoint { upto: 0 },
            });
            w.append(&line).unwrap();
        }
        let path = w.path().to_owned();
        let good_len = w.len();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"seq\":4,\"ts\"");
        std::fs::write(&path, &bytes).unwrap();
        let mut seen = 0;
        let scan = scan_segment(disk, &path, None, |_, _| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 3);
        assert_eq!(scan.good_end, good_len);
        assert_eq!(scan.bad.len(), 1);
        assert!(!scan.good_after_bad);

        // Corrupt the second entry: the third still checks, so this is corruption.
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(2)
            .unwrap()
            .0;
        bytes[second - 5] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let scan = scan_segment(disk, &path, None, |_, _| Ok(())).unwrap();
        assert!(scan.good_after_bad);
        assert_eq!(scan.last_seq, Some(1));
        assert_eq!(scan.bad[0].prev_seq, Some(1));
    }
}
