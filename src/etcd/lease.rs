//! The calls a mount of a prefix makes beyond reads and writes: a lock under a lease, kept
//! alive, and a watch of every key (`mount.rs`, `follow.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::{from_etcd, Etcd};

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
    /// etcd no longer keeps the history asked for: it starts at this revision.
    Compacted(i64),
}

/// What `Etcd::take_lock` found.
pub enum Locked {
    Taken {
        lease: i64,
        revision: i64,
    },
    /// Someone holds it: the key's value.
    Held(Vec<u8>),
}

impl Etcd {
    /// Puts `value` at `rest` under a new lease of `ttl` seconds if no one holds the key:
    /// the lease and the key's revision, or who holds it (the value there).
    pub fn take_lock(&self, rest: &[u8], value: &[u8], ttl: i64) -> Result<Locked> {
        let lease = self.call("granting a lease", |mut c| async move {
            Ok(c.lease_grant(ttl, None).await?.id())
        })?;
        let key = self.key(rest);
        let taken = self.call_as("taking a lock", false, |mut c| {
            let put = TxnOp::put(
                key.clone(),
                value.to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            );
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put])
                .or_else([TxnOp::get(key.clone(), None)]);
            async move {
                let r = c.txn(txn).await?;
                let revision = r.header().map_or(0, |h| h.revision());
                let holder = r.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                });
                Ok((r.succeeded(), revision, holder))
            }
        });
        match taken {
            Ok((true, revision, _)) => Ok(Locked::Taken { lease, revision }),
            other => {
                let _ = self.revoke(lease);
                let (_, _, holder) = other?;
                Ok(Locked::Held(holder.unwrap_or_default()))
            }
        }
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

    /// Watches every key of the store from revision `from` on, calling `apply` with each
    /// revision's changes (a transaction's, whole and in order), until `stop` is set (looked
    /// at every 200 ms), etcd no longer keeps the history from `from` (`Compacted`), or the
    /// member fails or `apply` does (an error). Not bounded by the client's deadline: a
    /// watch waits as long as nothing changes.
    pub fn watch(
        &self,
        from: i64,
        stop: &AtomicBool,
        mut apply: impl FnMut(i64, Vec<Change>) -> Result<()>,
    ) -> Result<WatchEnd> {
        let prefix = self.key(b"");
        let cut = self.url.prefix.len();
        let what = format!("watching {}", self.url);
        let mut client = self.client.lock().0.clone();
        self.rt.block_on(async {
            let o = WatchOptions::new().with_prefix().with_start_revision(from);
            let mut stream = client
                .watch(prefix, Some(o))
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
                    Err(_) => continue,
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
                        apply(at, std::mem::take(&mut group))?;
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
                    apply(at, group)?;
                }
            }
        })
    }
}
