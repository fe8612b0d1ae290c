//! A store in an etcd cluster (issue 14): its address, its keys (`layout`), and a client that
//! bounds every call in time. FORMAT.md, "A store in etcd", describes the keys.
//!
//! etcd-client is asynchronous; recordfs's core is not. Each `Etcd` owns a runtime of one
//! thread and blocks on it, so callers stay plain functions and every wait has a deadline:
//! during an outage a call fails with ETIMEDOUT (or EIO) within `timeout`, never hangs.

mod access;
pub use access::{read_small, Access, AccessArgs};
mod cache;
mod converge;
mod errno;
use errno::{block, from_etcd};
mod follow;
pub mod history;
mod keys;
mod lease;
pub use lease::{Change, KeyNow, Txned, WatchEnd, Watched};
pub mod layout;
pub mod mount;
mod replica;
mod shared;

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use parking_lot::Mutex;

use crate::error::{err, Error, Result};

/// Each mount takes this many fids from `meta`'s `next_fid` (its files get fids from that
/// block, so that mounts one after another never give out the same one).
pub const FID_BLOCK: crate::types::Fid = 1 << 40;
/// Every call to the cluster from a mount has this long.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request etcd takes by default (`--max-request-bytes`, 1.5 MiB), less room for
/// the keys and framing of one transaction.
pub const MAX_TXN_BYTES: usize = (3 << 19) - (64 << 10);
/// etcd's limit on the operations of one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;
/// How long one call to etcd may take in a command (`migrate`, `check`, `export`, ...)
/// before it fails with ETIMEDOUT.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many keys one range read returns at most (the rest in further reads). Large: etcd 3.4
/// counts every key from a page's start to the range's end for each page (measured: a page
/// of 1,000 keys took 0.07 to 0.11 s at the start of a prefix of 300,000 keys, under 0.01 s
/// near its end), so reading a prefix costs its keys times its pages.
const PAGE_KEYS: i64 = 10_000;
/// The largest answer a range read takes (a page of large values asks for fewer keys).
const PAGE_MESSAGE: usize = 64 << 20;

/// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    pub endpoints: Vec<String>,
    /// Every key of the store starts with it; it ends with `/`.
    pub prefix: String,
}

impl EtcdUrl {
    /// Whether `s` names a store in etcd rather than a directory.
    pub fn is_etcd(s: &str) -> bool {
        s.starts_with("etcd://")
    }

    pub fn parse(s: &str) -> Result<EtcdUrl> {
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| err!(EINVAL, "{s}: not an etcd:// address"))?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(err!(EINVAL, "{s}: no HOST:PORT before the prefix"));
        }
        if let Some(bad) = endpoints.iter().find(|h| !h.contains(':')) {
            return Err(err!(EINVAL, "{s}: {bad} is not HOST:PORT"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Err(err!(
                EINVAL,
                "{s}: no prefix (etcd://HOST:PORT/PREFIX): a store does not take a whole cluster"
            ));
        }
        Ok(EtcdUrl {
            endpoints,
            prefix: format!("/{prefix}/"),
        })
    }
}

impl std::fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "etcd://{}{}",
            self.endpoints.join(","),
            self.prefix.trim_end_matches('/')
        )
    }
}

/// A key as read, the store's prefix taken off, with its mod revision (for `put_if`).
pub struct KeyAt {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A connection to the cluster of one store: to one member at a time. etcd-client's own
/// balancing fails a request when any one endpoint refuses connections (etcd-client issue
/// 39), so the member in use is changed here when it cannot be reached or does not answer in
/// its share of the deadline, and a read or put (each safe to do twice) is tried again on the
/// next member, within the same deadline; so is one refused while a leader is being elected
/// ("leader changed", "no leader").
pub struct Etcd {
    rt: tokio::runtime::Runtime,
    client: Mutex<(Client, usize)>,
    pub url: EtcdUrl,
    timeout: Duration,
    require_leader: bool,
}

impl Etcd {
    /// Connects to the first member that answers, failing within `timeout` when none does.
    pub fn connect(url: &EtcdUrl, timeout: Duration) -> Result<Etcd> {
        Etcd::connect_from(url, timeout, 0, false)
    }

    /// `connect`, trying the members from the `first`th on; with `require_leader`, a member
    /// that has no leader (cut off from the others) refuses requests and ends watches
    /// rather than answer from its own, stale, state.
    pub fn connect_from(
        url: &EtcdUrl,
        timeout: Duration,
        first: usize,
        require_leader: bool,
    ) -> Result<Etcd> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the etcd client", &e))?;
        let deadline = Instant::now() + timeout;
        let n = url.endpoints.len();
        let attempt = attempt_time(timeout, n);
        let mut last = None;
        for i in (0..n).map(|k| (first + k) % n) {
            match member(
                &rt,
                url,
                i,
                attempt_until(deadline, attempt),
                require_leader,
            ) {
                Ok(c) => {
                    return Ok(Etcd {
                        rt,
                        client: Mutex::new((c, i)),
                        url: url.clone(),
                        timeout,
                        require_leader,
                    })
                }
                // A member that refused us says more than one whose connection closed.
                Err(e)
                    if last
                        .as_ref()
                        .is_some_and(|l: &Error| l.errno == libc::EACCES) =>
                {
                    drop(e)
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("an address has at least one member"))
    }

    /// The member in use (its place in the address).
    pub fn member_in_use(&self) -> usize {
        self.client.lock().1
    }

    /// Runs `op` on the member in use; when it cannot be reached or does not answer in its
    /// share of `timeout`, on the next ones, until one answers or `timeout` has passed.
    fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call_as(what, true, op)
    }

    /// `call`; `again` says whether a request that may have been done can be sent again (a
    /// compare-and-put sent twice fails its compare the second time): if not, it is sent
    /// again only after the member refused the connection, and has the whole deadline.
    fn call_as<T, F, Fut>(&self, what: &str, again: bool, op: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        // Members that cannot be reached, or went away mid-request, are an outage to the
        // caller: EIO (ETIMEDOUT when one did not answer in time).
        self.call_members(what, again, op)
            .map_err(|e| match e.errno {
                libc::ECONNREFUSED | libc::ECONNRESET => Error::new(libc::EIO, e.reason),
                _ => e,
            })
    }

    fn call_members<T, F, Fut>(&self, what: &str, again: bool, op: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let what = format!("{what} ({})", self.url);
        let deadline = Instant::now() + self.timeout;
        let n = self.url.endpoints.len();
        let attempt = match again {
            true => attempt_time(self.timeout, n),
            false => self.timeout,
        };
        let (mut client, mut at) = self.client.lock().clone();
        let mut moves = 0;
        let mut pause = Duration::from_millis(20);
        loop {
            let until = attempt_until(deadline, attempt);
            let e = match block(&self.rt, &what, until, op(client.clone())) {
                Err(e) if Instant::now() < deadline => e,
                done => return done,
            };
            // No answer, or the member went away mid-request: it may have done it, so only
            // a request that may be done twice moves on.
            let unanswered = (e.errno == libc::ETIMEDOUT || e.errno == libc::ECONNRESET) && again;
            match e.errno {
                // A new leader is being elected, or this member lost it: in a moment.
                libc::EAGAIN if again => {
                    std::thread::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                // This member cannot be reached, or is silent (stopped, cut off): the next
                // one that answers, each member tried once per call.
                _ if (e.errno == libc::ECONNREFUSED || unanswered) && moves < n => loop {
                    moves += 1;
                    at = (at + 1) % n;
                    let until = attempt_until(deadline, attempt);
                    let last = match member(&self.rt, &self.url, at, until, self.require_leader) {
                        Ok(c) => {
                            *self.client.lock() = (c.clone(), at);
                            client = c;
                            break;
                        }
                        Err(e) => e,
                    };
                    if moves >= n || Instant::now() >= deadline {
                        return Err(Error::new(
                            last.errno,
                            format!("no member of the cluster answered: {}", last.reason),
                        ));
                    }
                },
                _ => return Err(e),
            }
        }
    }

    /// The store's key for `rest` (a key of `layout`).
    pub fn key(&self, rest: &[u8]) -> Vec<u8> {
        let mut k = self.url.prefix.as_bytes().to_vec();
        k.extend_from_slice(rest);
        k
    }

    /// Whether any key starts with the store's prefix.
    pub fn is_empty(&self) -> Result<bool> {
        let prefix = self.key(b"");
        let n = self.call("counting the store's keys", |mut c| {
            let prefix = prefix.clone();
            async move {
                let o = GetOptions::new().with_prefix().with_count_only();
                Ok(c.get(prefix, Some(o)).await?.count())
            }
        })?;
        Ok(n == 0)
    }

    /// One key's value, if it is there.
    pub fn get(&self, rest: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.key(rest);
        self.call("reading a key", |mut c| {
            let key = key.clone();
            async move {
                let r = c.get(key, None).await?;
                Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
            }
        })
    }

    /// Key `rest` as it was at `revision` (0: now), if it was there. Asking for a revision
    /// etcd has compacted away fails with ENODATA.
    pub fn get_at(&self, rest: &[u8], revision: i64) -> Result<Option<KeyAt>> {
        let key = self.key(rest);
        let cut = self.url.prefix.len();
        self.call("reading a key", |mut c| {
            let key = key.clone();
            async move {
                let o = (revision > 0).then(|| GetOptions::new().with_revision(revision));
                let r = c.get(key, o).await?;
                Ok(r.kvs().first().map(|kv| KeyAt {
                    key: kv.key()[cut..].to_vec(),
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                }))
            }
        })
    }

    /// Every key under `rest` with its value, the prefix taken off, in key order; read at
    /// one revision (the first page's), so that the whole is one moment of the store.
    pub fn get_all(&self, rest: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (_, kvs) = self.get_all_at(rest)?;
        Ok(kvs.into_iter().map(|k| (k.key, k.value)).collect())
    }

    /// `get_all`, with the revision read at and each key's mod revision (for `put_if`).
    pub fn get_all_at(&self, rest: &[u8]) -> Result<(i64, Vec<KeyAt>)> {
        self.get_all_as_of(rest, 0)
    }

    /// `get_all_at` as of `revision` (0: now); one etcd has compacted away fails with ENODATA.
    pub fn get_all_as_of(&self, rest: &[u8], mut revision: i64) -> Result<(i64, Vec<KeyAt>)> {
        let start = self.key(rest);
        let end = prefix_end(&start);
        let cut = self.url.prefix.len();
        let mut out = Vec::new();
        let mut from = start;
        let mut limit = PAGE_KEYS;
        loop {
            let r = self.call("reading the store's keys", |c| {
                let (key, end) = (from.clone(), end.clone());
                async move {
                    // In key order, as etcd gives a range.
                    let mut o = GetOptions::new().with_range(end).with_limit(limit);
                    if revision != 0 {
                        o = o.with_revision(revision);
                    }
                    c.kv_client()
                        .max_decoding_message_size(PAGE_MESSAGE)
                        .get(key, Some(o))
                        .await
                }
            });
            // A page of large values can pass what an answer may hold: fewer keys.
            let r = match r {
                Err(e) if e.errno == libc::E2BIG && limit > 1 => {
                    limit = (limit / 4).max(1);
                    continue;
                }
                r => r?,
            };
            limit = (limit * 2).min(PAGE_KEYS);
            if revision == 0 {
                revision = r.header().map_or(0, |h| h.revision());
            }
            for kv in r.kvs() {
                out.push(KeyAt {
                    key: kv.key()[cut..].to_vec(),
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                });
            }
            match (r.more(), r.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((revision, out)),
            }
        }
    }

    /// Puts every (key, value) in as few transactions as etcd's limits allow, in order. Each
    /// transaction is atomic; the whole is not (see `migrate`, which writes its marker last).
    pub fn put_all(&self, puts: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        for (k, v) in puts {
            let size = k.len() + self.url.prefix.len() + v.len();
            if size > MAX_TXN_BYTES {
                return Err(err!(
                    EFBIG,
                    "a value of {} bytes is more than etcd takes in one request",
                    v.len()
                ));
            }
            if batch.len() == MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES {
                self.put_txn(&std::mem::take(&mut batch))?;
                bytes = 0;
            }
            batch.push((self.key(k), v.clone()));
            bytes += size;
        }
        if !batch.is_empty() {
            self.put_txn(&batch)?;
        }
        Ok(())
    }

    /// One transaction: if every key in `expect` is at its mod revision (0: absent), puts
    /// `puts` and deletes `deletes`. Whether it did. Sent again only when it cannot have
    /// been done (the member could not be reached); refused in an election, it fails (EAGAIN)
    /// and the caller reads the keys again to know.
    pub fn put_if(
        &self,
        expect: &[(Vec<u8>, i64)],
        puts: &[(Vec<u8>, Vec<u8>)],
        deletes: &[Vec<u8>],
    ) -> Result<bool> {
        self.put_if_as(false, expect, puts, deletes)
    }

    /// `put_if` for a transaction that may be sent twice: its puts and deletes say what the
    /// keys hold, not how they change, and its compare (a lock's revision) holds as long
    /// as it did. Tried on another member after no answer, like a read.
    pub fn put_again_if(
        &self,
        expect: &[(Vec<u8>, i64)],
        puts: &[(Vec<u8>, Vec<u8>)],
        deletes: &[Vec<u8>],
    ) -> Result<bool> {
        self.put_if_as(true, expect, puts, deletes)
    }

    fn put_if_as(
        &self,
        again: bool,
        expect: &[(Vec<u8>, i64)],
        puts: &[(Vec<u8>, Vec<u8>)],
        deletes: &[Vec<u8>],
    ) -> Result<bool> {
        let compares: Vec<Compare> = expect
            .iter()
            .map(|(k, rev)| match rev {
                0 => Compare::create_revision(self.key(k), CompareOp::Equal, 0),
                r => Compare::mod_revision(self.key(k), CompareOp::Equal, *r),
            })
            .collect();
        let ops = self.txn_ops(puts, deletes);
        self.call_as("a transaction", again, |mut c| {
            let txn = Txn::new().when(compares.clone()).and_then(ops.clone());
            async move { Ok(c.txn(txn).await?.succeeded()) }
        })
    }

    /// A transaction's puts, then its deletes.
    fn txn_ops(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Vec<TxnOp> {
        let mut ops: Vec<TxnOp> = puts
            .iter()
            .map(|(k, v)| TxnOp::put(self.key(k), v.clone(), None))
            .collect();
        ops.extend(deletes.iter().map(|k| TxnOp::delete(self.key(k), None)));
        ops
    }

    fn put_txn(&self, puts: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.call("writing keys", |mut c| {
            let ops: Vec<TxnOp> = puts
                .iter()
                .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
                .collect();
            async move {
                c.txn(Txn::new().and_then(ops)).await?;
                Ok(())
            }
        })
    }
}

/// A client of member `i` of `url` that has answered (connecting is lazy, so it is asked for
/// its status).
fn member(
    rt: &tokio::runtime::Runtime,
    url: &EtcdUrl,
    i: usize,
    until: Instant,
    require_leader: bool,
) -> Result<Client> {
    let endpoint = url.endpoints[i].clone();
    let left = until.saturating_duration_since(Instant::now());
    let opts = access::Access::connect_options()
        .with_connect_timeout(left)
        .with_require_leader(require_leader);
    let what = format!("connecting to {endpoint} of {url}");
    block(rt, &what, until, async move {
        let mut c = Client::connect([endpoint], Some(opts)).await?;
        c.status().await?;
        Ok(c)
    })
    .map_err(access::Access::explain)
}

/// How long one member has to answer within a call's `timeout`: a share, so that a silent
/// member leaves time for the others.
fn attempt_time(timeout: Duration, members: usize) -> Duration {
    timeout / (members.clamp(1, 3) as u32)
}

fn attempt_until(deadline: Instant, attempt: Duration) -> Instant {
    deadline.min(Instant::now() + attempt)
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        let u = EtcdUrl::parse("etcd://10.0.0.1:2379,10.0.0.2:2379/records").unwrap();
        assert_eq!(u.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(u.prefix, "/records/");
        assert_eq!(u.to_string(), "etcd://10.0.0.1:2379,10.0.0.2:2379/records");
        assert_eq!(
            EtcdUrl::parse("etcd://h:1/a/b/").unwrap().prefix,
            "/a/b/",
            "a prefix may have levels"
        );
        for bad in [
            "etcd://",
            "etcd:///x",
            "etcd://h:1",
            "etcd://h:1/",
            "etcd://host/x",
        ] {
            assert!(EtcdUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(!EtcdUrl::is_etcd("/var/lib/records"));
    }

    #[test]
    fn the_end_of_a_prefix_is_past_every_key_under_it() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
