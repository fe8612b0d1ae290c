//! A prefix's history as etcd keeps it, revision by revision (`recordfs log etcd://...`).
//!
//! etcd's watch replays every change from a revision on, but never says that it has sent
//! all there is: its progress notification came before the replayed history on etcd 3.4.23,
//! and the newest revision of the cluster may belong to another prefix, so no event of this
//! one ever reaches it. The replay ends instead when the watch has been quiet a while and
//! etcd's own ranges show that nothing under the prefix changed after the last revision it
//! brought (`changed_after`).
//!
//! `Replay` turns each revision's key changes into lines that say what happened to names
//! and files (the ops of the local log's entries, where they mean the same), keeping the
//! names and nodes as of that revision so that each line can give paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use etcd_client::GetOptions;
use serde_json::{Map, Value};

use super::follow::{name_at, parse_fid};
use super::{Change, Etcd, WatchEnd, Watched};
use crate::error::{err, Result};
use crate::types::{Fid, ROOT};

/// How long a replay's watch must bring nothing before etcd is asked whether it is done.
const QUIET: Duration = Duration::from_millis(300);
/// How many quiet watches in a row, each followed by etcd saying changes remain, before a
/// replay gives up (a member that keeps back what its ranges show).
const QUIET_WATCHES: u32 = 50;
/// How deep a path is followed up its directories before it is given up as a loop.
const DEEPEST: usize = 4096;

impl Etcd {
    /// The cluster's newest revision and how many keys the watch covers (`watched`) the
    /// prefix held as of `revision` (0: now). A revision etcd has compacted away fails with ENODATA.
    fn count_at(&self, revision: i64) -> Result<(i64, i64)> {
        let (start, end) = self.watched();
        self.call("counting the store's keys", |mut c| {
            let (start, end) = (start.clone(), end.clone());
            async move {
                let mut o = GetOptions::new().with_range(end).with_count_only();
                if revision > 0 {
                    o = o.with_revision(revision);
                }
                let r = c.get(start, Some(o)).await?;
                Ok((r.header().map_or(0, |h| h.revision()), r.count()))
            }
        })
    }

    /// The cluster's newest revision.
    pub fn newest_revision(&self) -> Result<i64> {
        Ok(self.count_at(0)?.0)
    }

    /// The oldest revision whose keys etcd still keeps (its last compaction's; 1 when it
    /// never compacted, the revision of an empty cluster). Found by halving: a range as of a
    /// compacted revision fails, one as of a kept revision does not.
    pub fn oldest_revision(&self, newest: i64) -> Result<i64> {
        let kept = |rev: i64| match self.count_at(rev) {
            Ok(_) => Ok(true),
            Err(e) if e.errno == libc::ENODATA => Ok(false),
            Err(e) => Err(e),
        };
        let (mut lo, mut hi) = (1, newest.max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match kept(mid)? {
                true => hi = mid,
                false => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// Whether any key under the prefix changed after revision `seen` up to `upto`: a key
    /// put since has a later mod revision as of `upto`; without one, every key there was
    /// there at `seen` too, so a key deleted since shows as a smaller count.
    fn changed_after(&self, seen: i64, upto: i64) -> Result<bool> {
        if seen >= upto {
            return Ok(false);
        }
        let before = if seen == 0 { 0 } else { self.count_at(seen)?.1 };
        if self.count_at(upto)?.1 != before {
            return Ok(true);
        }
        let (start, end) = self.watched();
        self.call("reading the store's changed keys", |mut c| {
            let (start, end) = (start.clone(), end.clone());
            async move {
                // etcd reads the whole range when a mod revision filter is given and limits
                // only what passes it, so no limit here keeps the answer the same.
                let o = GetOptions::new()
                    .with_range(end)
                    .with_revision(upto)
                    .with_min_mod_revision(seen + 1)
                    .with_keys_only();
                Ok(!c.get(start, Some(o)).await?.kvs().is_empty())
            }
        })
    }

    /// Calls `apply` with each revision from `from` to `upto` that changed the prefix, in
    /// order, and returns once etcd holds no later one up to `upto`.
    pub fn replay(
        &self,
        from: i64,
        upto: i64,
        mut apply: impl FnMut(i64, Vec<Change>) -> Result<()>,
    ) -> Result<()> {
        let stop = AtomicBool::new(false);
        let mut seen = from - 1;
        let mut quiet_watches = 0;
        while seen < upto {
            let before = seen;
            let mut past = false;
            let mut heard = Instant::now();
            let end = self.watch(seen + 1, &stop, |w| match w {
                Watched::Revision(rev, _) if rev > upto => {
                    past = true;
                    Ok(true)
                }
                Watched::Revision(rev, changes) => {
                    apply(rev, changes)?;
                    seen = rev;
                    heard = Instant::now();
                    Ok(true)
                }
                Watched::Tick => Ok(!past && heard.elapsed() < QUIET),
            })?;
            if let WatchEnd::Compacted(rev) = end {
                return Err(err!(
                    ENODATA,
                    "etcd compacted its history to revision {rev} while it was read"
                ));
            }
            if past || !self.changed_after(seen, upto)? {
                return Ok(());
            }
            quiet_watches = if seen > before { 0 } else { quiet_watches + 1 };
            if quiet_watches >= QUIET_WATCHES {
                return Err(err!(
                    ETIMEDOUT,
                    "{}: the watch from revision {} brought nothing though the prefix changed \
                     after it",
                    self.url,
                    seen + 1
                ));
            }
        }
        Ok(())
    }
}

/// The names and nodes of a prefix as of one revision.
#[derive(Default)]
pub struct Replay {
    /// (directory, name) → the node it names.
    names: BTreeMap<(Fid, Vec<u8>), Fid>,
    /// Each node's names, the first of which its path gives.
    held: HashMap<Fid, BTreeSet<(Fid, Vec<u8>)>>,
    /// Each node's `i/` value.
    info: HashMap<Fid, Value>,
}

/// A name that no longer names the node it named: where, which node, its path before, and
/// whether another node took it.
struct Lost {
    at: (Fid, Vec<u8>),
    fid: Fid,
    path: Option<String>,
    taken: bool,
}

/// A fid as the keys write it: 16 hex digits.
fn hex(fid: Fid) -> Value {
    format!("{fid:016x}").into()
}

/// One key change, by what it changes.
enum Key {
    Info(Fid),
    Data(Fid),
    Name(Fid, Vec<u8>),
    Other,
}

fn key_of(key: &[u8]) -> Key {
    let fid = |prefix: &[u8]| parse_fid(key.strip_prefix(prefix)?).ok();
    if let Some(fid) = fid(b"i/") {
        Key::Info(fid)
    } else if let Some(fid) = fid(b"d/") {
        Key::Data(fid)
    } else if let Some((dir, name)) = name_at(key) {
        Key::Name(dir, name)
    } else {
        Key::Other
    }
}

impl Replay {
    /// The prefix as its keys (the prefix taken off) hold it.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Replay {
        let mut r = Replay::default();
        for (key, value) in keys {
            r.set(key, Some(value));
        }
        r
    }

    fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        match (key_of(key), value) {
            (Key::Info(fid), Some(v)) => {
                let v = serde_json::from_slice(v).unwrap_or(Value::Null);
                self.info.insert(fid, v);
            }
            (Key::Info(fid), None) => {
                self.info.remove(&fid);
            }
            (Key::Name(dir, name), v) => {
                let at = (dir, name);
                if let Some(old) = self.names.remove(&at) {
                    if let Some(held) = self.held.get_mut(&old) {
                        held.remove(&at);
                    }
                }
                if let Some(fid) = v.and_then(|v| parse_fid(v).ok()) {
                    self.held.entry(fid).or_default().insert(at.clone());
                    self.names.insert(at, fid);
                }
            }
            _ => {}
        }
    }

    /// `fid`'s path (its first name in each directory up), "" for the root; None when it
    /// has no name (removed, or open only) or its directories do not lead to the root.
    fn path(&self, fid: Fid) -> Option<String> {
        let mut parts = Vec::new();
        let mut at = fid;
        while at != ROOT {
            let (dir, name) = self.held.get(&at)?.iter().next()?;
            parts.push(String::from_utf8_lossy(name).into_owned());
            at = *dir;
            if parts.len() > DEEPEST {
                return None;
            }
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    fn path_of_name(&self, dir: Fid, name: &[u8]) -> Option<String> {
        let dir = self.path(dir)?;
        let name = String::from_utf8_lossy(name);
        Some(match dir.is_empty() {
            true => name.into_owned(),
            false => format!("{dir}/{name}"),
        })
    }

    /// Moves on by revision `rev`'s changes; the lines that say them, one per file made or
    /// saved (`SET`), attributes changed (`ATTR`), name moved (`RENAME`), name added to a
    /// file that has one (`LINK`) and name removed (`DELETE`), each with the revision, the
    /// fid and the path (as of before the change for a name removed or moved, else after).
    pub fn take(&mut self, rev: i64, changes: &[Change]) -> Vec<Value> {
        let mut infos: BTreeMap<Fid, bool> = BTreeMap::new();
        let mut data: BTreeMap<Fid, &[u8]> = BTreeMap::new();
        let mut gained: Vec<(Fid, Vec<u8>, Fid)> = Vec::new();
        let mut lost: Vec<Lost> = Vec::new();
        for c in changes {
            match key_of(&c.key) {
                Key::Info(fid) => {
                    infos.insert(fid, c.value.is_some());
                }
                Key::Data(fid) => {
                    if let Some(v) = &c.value {
                        data.insert(fid, v);
                    }
                }
                Key::Name(dir, name) => {
                    let at = (dir, name);
                    let new = c.value.as_deref().and_then(|v| parse_fid(v).ok());
                    let old = self.names.get(&at);
                    if old.is_some() && old != new.as_ref() {
                        lost.push(Lost {
                            path: self.path_of_name(at.0, &at.1),
                            fid: old.cloned().unwrap_or_default(),
                            taken: new.is_some(),
                            at: at.clone(),
                        });
                    }
                    if let Some(fid) = new.filter(|f| old != Some(f)) {
                        gained.push((at.0, at.1, fid));
                    }
                }
                Key::Other => {}
            }
        }
        let before: HashMap<&Fid, Value> = infos
            .keys()
            .filter_map(|f| Some((f, self.info.get(f)?.clone())))
            .collect();
        for c in changes {
            self.set(&c.key, c.value.as_deref());
        }

        let line = |op: &str, fid: Fid, path: Option<String>| {
            let mut m = Map::new();
            m.insert("revision".into(), rev.into());
            m.insert("op".into(), op.into());
            m.insert("fid".into(), hex(fid));
            m.insert("path".into(), path.map_or(Value::Null, Value::from));
            m
        };
        let mut out = Vec::new();
        let saved = infos.iter().filter(|(_, &put)| put).map(|(f, _)| f);
        let only_data = data.keys().filter(|f| !infos.contains_key(*f));
        let touched: BTreeSet<&Fid> = saved.chain(only_data).collect();
        for fid in touched {
            let info = self.info.get(fid).cloned().unwrap_or(Value::Null);
            let old = before.get(fid);
            let content = |f: &str| old.is_none_or(|o| o[f] != info[f]);
            let set = data.contains_key(fid) || content("crc") || content("pieces");
            let mut m = line(if set { "SET" } else { "ATTR" }, *fid, self.path(*fid));
            for f in [
                "kind", "mode", "uid", "gid", "atime", "mtime", "ctime", "size",
            ] {
                m.insert(f.into(), info[f].clone());
            }
            if !info["xattrs"].is_null() {
                m.insert("xattrs".into(), info["xattrs"].clone());
            }
            if let Some(bytes) = data.get(fid) {
                let (enc, text) = match std::str::from_utf8(bytes) {
                    Ok(s) => ("utf8", s.to_string()),
                    Err(_) => ("base64", B64.encode(bytes)),
                };
                m.insert("enc".into(), enc.into());
                m.insert("data".into(), text.into());
            } else if let Some(pieces) = info["pieces"].as_array() {
                m.insert("pieces".into(), pieces.len().into());
            }
            out.push(Value::Object(m));
        }
        // A name a node gains: the other side of a name it lost (a rename), a further name
        // (a link), or the path of a node made now (said by its SET; its other names are
        // links).
        let mut moved = vec![false; lost.len()];
        for (dir, name, fid) in &gained {
            let to = self.path_of_name(*dir, name);
            let from = (0..lost.len()).find(|&i| lost[i].fid == *fid && !moved[i]);
            let mut m = match from {
                Some(i) => {
                    moved[i] = true;
                    let mut m = line("RENAME", *fid, lost[i].path.clone());
                    m.insert("to".into(), to.map_or(Value::Null, Value::from));
                    m
                }
                None if !before.contains_key(fid)
                    && infos.get(fid) == Some(&true)
                    && to == self.path(*fid) =>
                {
                    continue
                }
                None => line("LINK", *fid, to),
            };
            let replaced = lost
                .iter()
                .find(|l| l.taken && l.at.0 == *dir && l.at.1 == *name);
            let replaced = replaced.map_or(Value::Null, |l| hex(l.fid));
            m.insert("replaced".into(), replaced);
            out.push(Value::Object(m));
        }
        for (i, l) in lost.iter().enumerate() {
            if !moved[i] && !l.taken {
                out.push(Value::Object(line("DELETE", l.fid, l.path.clone())));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, value: Option<&str>) -> Change {
        Change {
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    const ROOT_HEX: &str = "0000000000000001";

    fn replay() -> Replay {
        let keys = [
            (
                format!("i/{ROOT_HEX}"),
                r#"{"kind":"dir","crc":"0"}"#.to_string(),
            ),
            (
                "i/000000000000000a".into(),
                r#"{"kind":"file","crc":"a"}"#.into(),
            ),
            (
                "i/000000000000000b".into(),
                r#"{"kind":"file","crc":"b"}"#.into(),
            ),
            (format!("n/{ROOT_HEX}/a"), "000000000000000a".into()),
            (format!("n/{ROOT_HEX}/b"), "000000000000000b".into()),
        ];
        Replay::from_keys(keys.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    fn ops(lines: &[Value]) -> Vec<String> {
        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
        lines
            .iter()
            .map(|l| {
                let mut t = format!("{} {} {}", s(&l["op"]), s(&l["fid"]), s(&l["path"]));
                if l.get("to").is_some() {
                    t += &format!(" -> {} over {}", s(&l["to"]), s(&l["replaced"]));
                }
                t
            })
            .collect()
    }

    #[test]
    fn an_exchange_is_two_renames_each_over_the_other() {
        let mut r = replay();
        let lines = r.take(
            9,
            &[
                change(&format!("n/{ROOT_HEX}/a"), Some("000000000000000b")),
                change(&format!("n/{ROOT_HEX}/b"), Some("000000000000000a")),
            ],
        );
        assert_eq!(
            ops(&lines),
            [
                "RENAME 000000000000000b b -> a over 000000000000000a",
                "RENAME 000000000000000a a -> b over 000000000000000b",
            ]
        );
        assert_eq!(r.path(0xa).as_deref(), Some("b"));
    }

    #[test]
    fn a_directory_made_with_a_file_in_it_gives_both_paths_and_a_removal_the_old_one() {
        let mut r = replay();
        let lines = r.take(
            9,
            &[
                change("i/000000000000000c", Some(r#"{"kind":"dir"}"#)),
                change(&format!("n/{ROOT_HEX}/c"), Some("000000000000000c")),
                change("d/000000000000000d", Some("{}")),
                change("i/000000000000000d", Some(r#"{"kind":"file","crc":"d"}"#)),
                change("n/000000000000000c/x.json", Some("000000000000000d")),
                change(&format!("n/{ROOT_HEX}/a"), None),
                change("i/000000000000000a", None),
            ],
        );
        assert_eq!(
            ops(&lines),
            [
                "SET 000000000000000c c",
                "SET 000000000000000d c/x.json",
                "DELETE 000000000000000a a"
            ]
        );
        assert_eq!(lines[1]["data"], "{}");
        // A chmod: the same checksum, no bytes: attributes only.
        let lines = r.take(
            10,
            &[change(
                "i/000000000000000d",
                Some(r#"{"kind":"file","crc":"d","mode":1}"#),
            )],
        );
        assert_eq!(ops(&lines), ["ATTR 000000000000000d c/x.json"]);
        // A node made with two names at once (as `migrate` puts them): its path, a link.
        let lines = r.take(
            11,
            &[
                change("d/000000000000000e", Some("e")),
                change("i/000000000000000e", Some(r#"{"kind":"file","crc":"e"}"#)),
                change(&format!("n/{ROOT_HEX}/e1"), Some("000000000000000e")),
                change(&format!("n/{ROOT_HEX}/e2"), Some("000000000000000e")),
            ],
        );
        assert_eq!(
            ops(&lines),
            ["SET 000000000000000e e1", "LINK 000000000000000e e2"]
        );
    }
}
