//! What a mount makes of keys another mount changed after it saw them, when its
//! transaction does not hold: a save over another's save of the same file goes over it (the
//! last commit wins whole), as does its own transaction that went in unanswered; anything
//! else refuses it.

use std::collections::HashMap;

use super::super::lease::KeyNow;
use super::EtcdReplica;
use crate::error::Error;

impl EtcdReplica {
    /// What to make of keys another mount changed after this mount saw them: None when the
    /// transaction may go again over them (the bounds moved on), else why it is refused.
    pub(super) fn settle(
        &self,
        puts: &[(Vec<u8>, Vec<u8>)],
        deletes: &[Vec<u8>],
        bounds: &[(Vec<u8>, i64)],
        existing: &[Vec<u8>],
        now: Vec<KeyNow>,
    ) -> Option<Error> {
        let ours: HashMap<&[u8], &[u8]> = puts
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let theirs: HashMap<&[u8], &KeyNow> = now.iter().map(|k| (k.key.as_slice(), k)).collect();
        let mut moved = Vec::new();
        let mut refused: Option<Error> = None;
        for ((key, bound), k) in bounds.iter().zip(&now) {
            let gone = k.value.is_none() && existing.contains(key);
            if k.mod_revision <= *bound && !gone {
                continue;
            }
            let mine = ours.get(key.as_slice()).copied();
            let present = |key: &[u8]| theirs.get(key).is_some_and(|t| t.value.is_some());
            // A save of a file's bytes: its `d/` put, or deleted for new pieces.
            let saves = |fid: &[u8]| {
                let data = [b"d/", fid].concat();
                ours.contains_key(data.as_slice()) || deletes.contains(&data)
            };
            let over = if mine == k.value.as_deref() {
                // As this mount would leave it (its own transaction that went in unanswered).
                true
            } else if let Some(fid) = key.strip_prefix(b"i/") {
                // A save over another's save of the same file.
                mine.is_some() && k.value.is_some() && saves(fid)
            } else if let Some(fid) = key.strip_prefix(b"d/") {
                // Their bytes of a file this mount saves, in one value or in pieces.
                let info = [b"i/", fid].concat();
                ours.contains_key(info.as_slice()) && present(&info)
            } else {
                false
            };
            if !over {
                let show = String::from_utf8_lossy(key);
                let made = key.starts_with(b"n/") && mine.is_some() && k.value.is_some();
                let (errno, what) = match made {
                    true => (libc::EEXIST, "made"),
                    false => (libc::ESTALE, "changed"),
                };
                let e = Error::new(
                    errno,
                    format!("{}: another mount {what} {show} first", self.etcd.url),
                );
                // A name another mount made says most of what happened.
                if refused
                    .as_ref()
                    .is_none_or(|r: &Error| r.errno != libc::EEXIST)
                {
                    refused = Some(e);
                }
                continue;
            }
            moved.push((key.clone(), k.mod_revision));
        }
        if let Some(e) = refused {
            log::info!("refused: {}", e.reason);
            return Some(e);
        }
        let mut seen = self.shared.seen.lock();
        for (key, rev) in moved {
            seen.at.insert(key, rev);
        }
        None
    }
}
