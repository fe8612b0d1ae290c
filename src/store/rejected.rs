//! Refused saves: their bytes and why, kept in `rejected/` (the newest `MAX_REJECTED_KEPT`),
//! and the listing `recordfs rejected` prints.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::limits::MAX_REJECTED_KEPT;
use crate::types::Time;

use super::files::{io_err, replace_file};
use super::layout::{require_store, Layout};

/// What `rejected/<name>.<tag>.reason` says of a refused save (one JSON line), and what
/// `recordfs rejected` lists.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    /// When, in ISO 8601 (UTC).
    pub time: String,
    /// The file's name.
    pub name: String,
    /// Why: the JSON parser's words.
    pub error: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// How many bytes were refused.
    pub len: u64,
    /// Where the bytes are (filled in when listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

const REJECTED: &str = ".rejected";
const REASON: &str = ".reason";

/// Keeps the bytes of a refused save in `rejected/`, with why beside them, returning where.
/// Old ones beyond `MAX_REJECTED_KEPT` are removed so a looping bad writer cannot fill the
/// disk.
pub fn keep_rejected(
    disk: &dyn Disk,
    layout: &Layout,
    name: &[u8],
    tag: u64,
    bytes: &[u8],
    why: &Refusal,
) -> Result<PathBuf> {
    let dir = layout.rejected();
    let mut file_name = name.to_vec();
    file_name.extend_from_slice(format!(".{tag}{REJECTED}").as_bytes());
    // A 255-byte name plus the tag would be too long for the host filesystem (and the
    // reason's name is one byte longer than the bytes').
    if file_name.len() > 254 {
        file_name.drain(..file_name.len() - 254);
    }
    let dest = dir.join(OsStr::from_bytes(&file_name));
    let tmp = layout.tmp().join(format!("rejected.{tag}"));
    replace_file(disk, &tmp, &dest, bytes, None, false)?;
    let mut line = serde_json::to_vec(why).expect("a refusal serialises");
    line.push(b'\n');
    replace_file(disk, &tmp, &reason_of(&dest), &line, None, false)?;
    let names = disk.list(&dir).map_err(io_err("listing", &dir))?;
    let kept_names: Vec<&Vec<u8>> = names
        .iter()
        .filter(|n| n.ends_with(REJECTED.as_bytes()))
        .collect();
    if kept_names.len() > MAX_REJECTED_KEPT {
        let mut kept: Vec<(Time, PathBuf)> = kept_names
            .iter()
            .map(|n| dir.join(OsStr::from_bytes(n)))
            .filter_map(|p| Some((disk.stat(&p).ok()?.mtime, p)))
            .collect();
        kept.sort();
        for (_, p) in &kept[..kept.len() - MAX_REJECTED_KEPT] {
            let _ = disk.remove(p);
            let _ = disk.remove(&reason_of(p));
        }
    }
    Ok(dest)
}

/// `<name>.<tag>.reason` beside `<name>.<tag>.rejected`.
fn reason_of(kept: &Path) -> PathBuf {
    let mut name = kept.as_os_str().as_bytes().to_vec();
    name.truncate(name.len() - REJECTED.len());
    name.extend_from_slice(REASON.as_bytes());
    PathBuf::from(OsStr::from_bytes(&name))
}

/// Every kept refusal, oldest first. One kept before reasons were written is described from
/// its file: the name, and the time it was written.
pub fn list_rejected(disk: &dyn Disk, layout: &Layout) -> Result<Vec<Refusal>> {
    require_store(disk, layout)?;
    let dir = layout.rejected();
    let names = match disk.list(&dir) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), &e)),
    };
    let mut out = Vec::new();
    for n in names.iter().filter(|n| n.ends_with(REJECTED.as_bytes())) {
        let path = dir.join(OsStr::from_bytes(n));
        let Ok(st) = disk.stat(&path) else { continue };
        let reason = disk
            .read(&reason_of(&path))
            .ok()
            .and_then(|b| serde_json::from_slice::<Refusal>(&b).ok());
        let mut r = reason.unwrap_or_else(|| {
            // <name>.<tag>.rejected
            // <name>.<tag>.rejected, the tag being microseconds since the epoch.
            let stem = &n[..n.len() - REJECTED.len()];
            let dot = stem.iter().rposition(|b| *b == b'.');
            let name = dot.map_or(stem, |i| &stem[..i]);
            let tag = dot.and_then(|i| {
                std::str::from_utf8(&stem[i + 1..])
                    .ok()?
                    .parse::<u64>()
                    .ok()
            });
            Refusal {
                time: tag
                    .map_or(st.mtime, |t| Time::from_millis(t / 1000))
                    .iso8601(),
                name: String::from_utf8_lossy(name).into_owned(),
                error: "(kept by an earlier version: no reason was written)".into(),
                line: None,
                column: None,
                len: st.len,
                kept: None,
            }
        });
        r.kept = Some(path.display().to_string());
        out.push((st.mtime, r));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.time.cmp(&b.1.time)));
    Ok(out.into_iter().map(|(_, r)| r).collect())
}
