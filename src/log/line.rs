//! One line of the log, a snapshot or the manifest: a JSON object closed by its CRC32C
//! (FORMAT.md, "Line framing and checksum"), and the fields readers take from it.

use base64::Engine;
use serde_json::Value;

use crate::error::{err, Error, Result};
use crate::types::{no_xattrs, Attrs, Fid, Kind, Time, Xattrs, MAX_ID};

pub const FORMAT_VERSION: u64 = 1;

pub(super) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

// ---------------------------------------------------------------------------------------------
// Encoding

pub(super) fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, key: &str, value: &T) {
    out.push(b',');
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value).expect("serialising plain values cannot fail");
}

pub(super) fn name_value(name: &[u8]) -> Value {
    match std::str::from_utf8(name) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => serde_json::json!({ "b64": B64.encode(name) }),
    }
}

/// The name a `name_value` holds, if it is one.
fn value_name(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Object(m) => m
            .get("b64")
            .and_then(Value::as_str)
            .and_then(|b| B64.decode(b).ok()),
        _ => None,
    }
}

pub(super) fn push_time(out: &mut Vec<u8>, key: &str, t: Time) {
    push_json(out, key, &[t.secs, t.nsecs as i64]);
}

/// `,"xattrs":[[name, base64 value], ...]`; with `always` false, only when there are any.
pub(super) fn push_xattrs(out: &mut Vec<u8>, x: &Xattrs, always: bool) {
    if x.is_empty() && !always {
        return;
    }
    let pairs: Vec<Value> = x
        .iter()
        .map(|(n, v)| serde_json::json!([name_value(n), B64.encode(v)]))
        .collect();
    push_json(out, "xattrs", &pairs);
}

pub(super) fn push_attrs(out: &mut Vec<u8>, a: &Attrs) {
    push_json(out, "mode", &a.mode);
    push_json(out, "uid", &a.uid);
    push_json(out, "gid", &a.gid);
    push_time(out, "atime", a.atime);
    push_time(out, "mtime", a.mtime);
    push_time(out, "ctime", a.ctime);
}

/// Appends `,"crc":"…"}` to a line body that starts with `{` and has no closing brace yet.
pub(super) fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let mut checked = Vec::with_capacity(body.len() + 1);
    checked.extend_from_slice(&body);
    checked.push(b'}');
    let crc = crc32c(&checked);
    body.extend_from_slice(format!(",\"crc\":\"{crc:08x}\"}}").as_bytes());
    body
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A line or file of the log that does not decode: EIO for whoever needed it (recovery
/// and the tools decide what it means: a torn tail, damage, or a newer format).
pub(super) fn corrupt(reason: impl std::fmt::Display) -> Error {
    err!(EIO, "{reason}")
}

/// Checks the framing and checksum of one line (without newline) and parses it.
pub(super) fn check_line(line: &[u8]) -> Result<serde_json::Map<String, Value>> {
    checksum(line)?;
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(corrupt("line is not a JSON object")),
        Err(e) => Err(corrupt(format!(
            "checksum matches but JSON does not parse: {e}"
        ))),
    }
}

/// Checks the framing and checksum of one line (without newline).
pub(super) fn checksum(line: &[u8]) -> Result<()> {
    const TAIL: usize = r#","crc":"00000000"}"#.len();
    if line.len() < TAIL + 1 || line[0] != b'{' {
        return Err(corrupt("not an entry line"));
    }
    let (body, tail) = line.split_at(line.len() - TAIL);
    if !tail.starts_with(b",\"crc\":\"") || !tail.ends_with(b"\"}") {
        return Err(corrupt("no trailing crc field"));
    }
    let hex = &tail[8..16];
    let stored = hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        .then(|| std::str::from_utf8(hex).ok())
        .flatten()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt("crc is not 8 hex digits"))?;
    // The checksum covers the body closed by `}`, without copying it.
    let actual = crc32c::crc32c_append(crc32c(body), b"}");
    if actual != stored {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    Ok(())
}

pub(super) struct Fields(pub(super) serde_json::Map<String, Value>);

impl Fields {
    pub(super) fn get(&self, key: &str) -> Result<&Value> {
        self.0
            .get(key)
            .ok_or_else(|| corrupt(format!("missing field {key:?}")))
    }
    pub(super) fn u64(&self, key: &str) -> Result<u64> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| corrupt(format!("field {key:?} is not an unsigned integer")))
    }
    /// A sequence number, fid or segment number: 1 to `MAX_ID`.
    pub(super) fn id(&self, key: &str) -> Result<u64> {
        match self.u64(key)? {
            v @ 1..=MAX_ID => Ok(v),
            v => Err(corrupt(format!(
                "field {key:?} is {v}, outside 1..={MAX_ID}"
            ))),
        }
    }
    /// The sequence number a checkpoint, snapshot or manifest covers up to: 0 to `MAX_ID`.
    pub(super) fn upto(&self, key: &str) -> Result<u64> {
        match self.u64(key)? {
            v @ 0..=MAX_ID => Ok(v),
            v => Err(corrupt(format!("field {key:?} is {v}, above {MAX_ID}"))),
        }
    }
    pub(super) fn u32(&self, key: &str) -> Result<u32> {
        u32::try_from(self.u64(key)?).map_err(|_| corrupt(format!("field {key:?} is out of range")))
    }
    pub(super) fn str(&self, key: &str) -> Result<&str> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| corrupt(format!("field {key:?} is not a string")))
    }
    pub(super) fn name(&self, key: &str) -> Result<Vec<u8>> {
        value_name(self.get(key)?).ok_or_else(|| corrupt(format!("field {key:?} is not a name")))
    }
    pub(super) fn time(&self, key: &str) -> Result<Time> {
        let bad = || corrupt(format!("field {key:?} is not [seconds, nanoseconds]"));
        let arr = self.get(key)?.as_array().ok_or_else(bad)?;
        match arr.as_slice() {
            [s, n] => Ok(Time {
                secs: s.as_i64().ok_or_else(bad)?,
                nsecs: n.as_u64().filter(|n| *n < 1_000_000_000).ok_or_else(bad)? as u32,
            }),
            _ => Err(bad()),
        }
    }
    pub(super) fn kind(&self) -> Result<Kind> {
        match self.str("kind")? {
            "file" => Ok(Kind::File),
            "symlink" => Ok(Kind::Symlink),
            "dir" => Ok(Kind::Dir),
            other => Err(corrupt(format!("unknown kind {other:?}"))),
        }
    }
    /// A CRC32C written as 8 hex digits.
    pub(super) fn crc(&self, key: &str) -> Result<u32> {
        u32::from_str_radix(self.str(key)?, 16).map_err(|e| corrupt(format!("field {key:?}: {e}")))
    }
    /// The `xattrs` field, empty when absent.
    pub(super) fn xattrs(&self) -> Result<Xattrs> {
        let bad = || corrupt("field \"xattrs\" is not a list of [name, base64 value]");
        let Some(v) = self.0.get("xattrs") else {
            return Ok(no_xattrs());
        };
        let mut map = std::collections::BTreeMap::new();
        for pair in v.as_array().ok_or_else(bad)? {
            let pair = pair.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
            let name = value_name(&pair[0]).ok_or_else(bad)?;
            let value = pair[1]
                .as_str()
                .and_then(|b| B64.decode(b).ok())
                .ok_or_else(bad)?;
            map.insert(name, value);
        }
        Ok(std::sync::Arc::new(map))
    }
    /// The `links` field of a snapshot line: a file's further names as `[dir, name]` pairs,
    /// none when absent.
    pub(super) fn links(&self) -> Result<Vec<(Fid, Vec<u8>)>> {
        let bad = || corrupt("field \"links\" is not a list of [dir, name]");
        let Some(v) = self.0.get("links") else {
            return Ok(Vec::new());
        };
        let mut links = Vec::new();
        for pair in v.as_array().ok_or_else(bad)? {
            let pair = pair.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
            let dir = pair[0]
                .as_u64()
                .filter(|d| (1..=MAX_ID).contains(d))
                .ok_or_else(bad)?;
            links.push((dir, value_name(&pair[1]).ok_or_else(bad)?));
        }
        Ok(links)
    }
    pub(super) fn attrs(&self) -> Result<Attrs> {
        Ok(Attrs {
            mode: self.u32("mode")? & 0o7777,
            uid: self.u32("uid")?,
            gid: self.u32("gid")?,
            atime: self.time("atime")?,
            mtime: self.time("mtime")?,
            ctime: self.time("ctime")?,
        })
    }
}
