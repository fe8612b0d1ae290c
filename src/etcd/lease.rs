//! The calls a mount of a prefix makes beyond reads and writes: a key under a lease, kept
//! alive, the transactions its commits become (each holding only if none of its keys
//! changed since the mount last saw them), and a watch of every key (`mount.rs`,
//! `replica.rs`, `follow.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use super::{from_etcd, Etcd};

/// The largest answer a watch takes: etcd sends up to 1,000 revisions in one (a watch that
/// fell behind), each up to a request's size, so gRPC's default of 4 MiB is too little
/// for a few files of 1 MiB.
const WATCH_MESSAGE: usize = 256 << 20;
/// How long a watched member may say nothing (not even its progress, asked every second)
/// before the watch is taken elsewhere.
const SILENT: Duration = Duration::from_secs(3);
use crate::error::{err, Result};

/// One key's change, the prefix taken off: its new value, or None when it was deleted.
pub struct Change {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Why `Etcd::watch` ended without an error.
pub enum WatchEnd {
    Stopped,
    /// The caller said so (to make calls of its own: none may be made from within a watch).
    Paused,
    /// etcd no longer keeps the history asked for: it starts at this revision.
    Compacted(i64),
}

/// A key as a transaction that did not hold found it: its mod revision (0: absent), value.
pub struct KeyNow {
    pub key: Vec<u8>,
    pub mod_revision: i64,
    pub value: Option<Vec<u8>>,
}

/// What `Etcd::txn_unless_changed` did.
pub enum Txned {
    /// Done, at this revision.
    Done(i64),
    /// Some key changed after its bound, a range to be empty is not, or a key that must
    /// exist does not: every compared key as it is now, a key found in each such range,
    /// and the keys of `existing` that are gone.
    Changed(Vec<KeyNow>, Vec<KeyNow>, Vec<Vec<u8>>),
}

/// What a watch gives its caller.
pub enum Watched {
    /// One revision's changes (a transaction's, whole and in order).
    Revision(i64, Vec<Change>),
    /// Nothing for a while (at least every 200 ms).
    Tick,
}

impl Etcd {
    /// The range a watch of the store covers (start, end): every key but its pieces, which
    /// sort last (`p/`). A watch's answer may hold many revisions at once, and a few pieces
    /// of 1 MiB are past what one gRPC message takes (4 MiB); nothing that follows the
    /// store needs them from the watch (a file's `i/` lists its pieces, read when needed).
    pub fn watched(&self) -> (Vec<u8>, Vec<u8>) {
        (self.key(b""), self.key(b"p/"))
    }

    /// Puts `value` at `rest` under a new lease of `ttl` seconds: the lease.
    pub fn put_leased(&self, rest: &[u8], value: &[u8], ttl: i64) -> Result<i64> {
        let lease = self.call("granting a lease", |mut c| async move {
            Ok(c.lease_grant(ttl, None).await?.id())
        })?;
        match self.put_under(rest, value, lease) {
            Ok(()) => Ok(lease),
            Err(e) => {
                let _ = self.revoke(lease);
                Err(e)
            }
        }
    }

    /// Puts `value` at `rest` under `lease`.
    pub fn put_under(&self, rest: &[u8], value: &[u8], lease: i64) -> Result<()> {
        let key = self.key(rest);
        self.call("registering a mount", |mut c| {
            let (key, value) = (key.clone(), value.to_vec());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await?;
                Ok(())
            }
        })
    }

    /// Puts and deletes keys in one transaction that holds only if none of the keys of
    /// `bounds` changed after its bound (mod revision at most it: a key this mount saw as of
    /// that revision), each of `existing` is still there (a deleted key's mod revision
    /// is 0, which no bound catches) and each range of `empty` (start, end) holds no key;
    /// it also deletes every key in each of `ranges` (start, end), uncompared.
    /// Safe to send twice (after no answer, to another member): its puts say what keys
    /// hold, and a second one that finds them changed by the first says so.
    #[allow(clippy::too_many_arguments)]
    pub fn txn_unless_changed(
        &self,
        bounds: &[(Vec<u8>, i64)],
        existing: &[Vec<u8>],
        empty: &[(Vec<u8>, Vec<u8>)],
        puts: &[(Vec<u8>, Vec<u8>)],
        deletes: &[Vec<u8>],
        ranges: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Txned> {
        let mut compares: Vec<Compare> = bounds
            .iter()
            .map(|(k, rev)| Compare::mod_revision(self.key(k), CompareOp::Less, rev + 1))
            .collect();
        compares.extend(
            existing
                .iter()
                .map(|k| Compare::version(self.key(k), CompareOp::Greater, 0)),
        );
        // Over a range, etcd compares every key in it (none: a key of version 0).
        compares.extend(empty.iter().map(|(start, end)| {
            Compare::version(self.key(start), CompareOp::Equal, 0).with_range(self.key(end))
        }));
        let mut gets: Vec<TxnOp> = bounds
            .iter()
            .map(|(k, _)| TxnOp::get(self.key(k), None))
            .collect();
        gets.extend(empty.iter().map(|(start, end)| {
            let o = GetOptions::new().with_range(self.key(end)).with_limit(1);
            TxnOp::get(self.key(start), Some(o))
        }));
        // Keys that must exist and are not read above (pieces: large), only whether they do.
        let unread: Vec<&Vec<u8>> = existing
            .iter()
            .filter(|k| !bounds.iter().any(|(b, _)| b == *k))
            .collect();
        gets.extend(
            unread
                .iter()
                .map(|k| TxnOp::get(self.key(k), Some(GetOptions::new().with_keys_only()))),
        );
        let mut ops = self.txn_ops(puts, deletes);
        ops.extend(ranges.iter().map(|(start, end)| {
            TxnOp::delete(
                self.key(start),
                Some(DeleteOptions::new().with_range(self.key(end))),
            )
        }));
        let cut = self.url.prefix.len();
        let (done, revision, found) = self.call_as("a transaction", true, |mut c| {
            let txn = Txn::new()
                .when(compares.clone())
                .and_then(ops.clone())
                .or_else(gets.clone());
            async move {
                let r = c.txn(txn).await?;
                let revision = r.header().map_or(0, |h| h.revision());
                let found: Vec<(Vec<u8>, i64, Vec<u8>)> = r
                    .op_responses()
                    .into_iter()
                    .filter_map(|op| match op {
                        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| {
                            (
                                kv.key()[cut..].to_vec(),
                                kv.mod_revision(),
                                kv.value().to_vec(),
                            )
                        }),
                        _ => None,
                    })
                    .collect();
                Ok((r.succeeded(), revision, found))
            }
        })?;
        if done {
            return Ok(Txned::Done(revision));
        }
        let in_empty = found
            .iter()
            .filter(|(k, _, _)| empty.iter().any(|(start, end)| start <= k && k < end));
        let taken = in_empty.map(|(k, rev, v)| KeyNow {
            key: k.clone(),
            mod_revision: *rev,
            value: Some(v.clone()),
        });
        let now = bounds
            .iter()
            .map(|(k, _)| match found.iter().find(|(fk, _, _)| fk == k) {
                Some((_, rev, v)) => KeyNow {
                    key: k.clone(),
                    mod_revision: *rev,
                    value: Some(v.clone()),
                },
                None => KeyNow {
                    key: k.clone(),
                    mod_revision: 0,
                    value: None,
                },
            })
            .collect();
        let missing = unread
            .into_iter()
            .filter(|k| !found.iter().any(|(f, _, _)| f == *k))
            .cloned()
            .collect();
        Ok(Txned::Changed(now, taken.collect(), missing))
    }

    /// Renews a lease once; ENOENT when it has expired.
    pub fn keep_alive(&self, lease: i64) -> Result<()> {
        self.call("renewing a lease", |mut c| async move {
            c.lease_keep_alive(lease).await?;
            Ok(())
        })
    }

    /// Ends a lease, deleting the keys put under it.
    pub fn revoke(&self, lease: i64) -> Result<()> {
        self.call("revoking a lease", |mut c| async move {
            c.lease_revoke(lease).await?;
            Ok(())
        })
    }

    /// Watches every key of the store but its pieces (`watched`) from revision `from` on,
    /// calling `apply` with each revision's changes, and with `Tick` at least every 200 ms,
    /// until `stop` is set
    /// (looked at as often), `apply` answers false after a `Tick` (`Paused`), etcd no
    /// longer keeps the history from `from` (`Compacted`), or the member fails or `apply`
    /// does (an error). Not bounded by the client's deadline: a watch waits as long as
    /// nothing changes.
    pub fn watch(
        &self,
        from: i64,
        stop: &AtomicBool,
        mut apply: impl FnMut(Watched) -> Result<bool>,
    ) -> Result<WatchEnd> {
        let (start, end) = self.watched();
        let cut = self.url.prefix.len();
        let what = format!("watching {}", self.url);
        let client = self.client.lock().0.clone();
        self.rt.block_on(async {
            let o = WatchOptions::new()
                .with_range(end)
                .with_start_revision(from);
            let mut stream = client
                .watch_client()
                .max_decoding_message_size(WATCH_MESSAGE)
                .watch(start, Some(o))
                .await
                .map_err(|e| from_etcd(&what, &e))?;
            // A member that stops answering (stopped, cut off) holds the watch open and says
            // nothing: it is asked for its progress every second, and one silent for
            // `SILENT` ends the watch.
            let mut heard = std::time::Instant::now();
            let mut asked = heard;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(WatchEnd::Stopped);
                }
                if heard.elapsed() > SILENT {
                    return Err(err!(
                        ETIMEDOUT,
                        "{what}: the member said nothing for {SILENT:?}"
                    ));
                }
                if asked.elapsed() >= Duration::from_secs(1) {
                    asked = std::time::Instant::now();
                    let _ = stream.request_progress().await;
                }
                let tick = Duration::from_millis(200);
                let r = match tokio::time::timeout(tick, stream.message()).await {
                    Err(_) => match apply(Watched::Tick)? {
                        true => continue,
                        false => return Ok(WatchEnd::Paused),
                    },
                    Ok(Err(e)) => return Err(from_etcd(&what, &e)),
                    Ok(Ok(None)) => return Err(err!(EIO, "{what}: the watch ended")),
                    Ok(Ok(Some(r))) => r,
                };
                heard = std::time::Instant::now();
                if r.canceled() {
                    return match r.compact_revision() {
                        0 => Err(err!(EIO, "{what}: cancelled: {}", r.cancel_reason())),
                        rev => Ok(WatchEnd::Compacted(rev)),
                    };
                }
                let mut group: Vec<Change> = Vec::new();
                let mut at = 0;
                for ev in r.events() {
                    let Some(kv) = ev.kv() else { continue };
                    if kv.mod_revision() != at && !group.is_empty() {
                        apply(Watched::Revision(at, std::mem::take(&mut group)))?;
                    }
                    at = kv.mod_revision();
                    group.push(Change {
                        key: kv.key()[cut..].to_vec(),
                        value: match ev.event_type() {
                            EventType::Put => Some(kv.value().to_vec()),
                            EventType::Delete => None,
                        },
                    });
                }
                if !group.is_empty() {
                    apply(Watched::Revision(at, group))?;
                }
                if !apply(Watched::Tick)? {
                    return Ok(WatchEnd::Paused);
                }
            }
        })
    }
}
