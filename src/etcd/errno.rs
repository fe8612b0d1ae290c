//! What etcd's errors mean to recordfs's callers: each becomes an errno, and some tell
//! `Etcd::call` what to do next (another member, a new connection, a moment's wait).

use std::future::Future;
use std::time::Instant;

use crate::error::{err, Error, Result};

/// Runs `fut` on `rt` until `deadline`; etcd's errors become errnos a caller expects.
pub(super) fn block<T>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    deadline: Instant,
    fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    match rt.block_on(async { tokio::time::timeout(left, fut).await }) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(from_etcd(what, &e)),
        Err(_) => Err(err!(ETIMEDOUT, "{what}: no answer in time")),
    }
}

pub(super) fn from_etcd(what: &str, e: &etcd_client::Error) -> Error {
    let text = e.to_string();
    let errno = if text.contains("database space exceeded") || text.contains("NOSPACE") {
        libc::ENOSPC
    } else if text.contains("request is too large") || text.contains("too many operations") {
        libc::EFBIG
    } else if text.contains("invalid auth token") || text.contains("revision in header is old") {
        // The connection's token is gone (the members restarted: etcd keeps simple tokens in
        // memory) or stale (users or roles changed): a new connection logs in again.
        libc::ECONNREFUSED
    } else if text.contains("BadCertificate")
        || text.contains("CertificateRequired")
        || text.contains("invalid peer certificate")
    {
        // One side did not take the other's certificate (--cacert, --cert, --key); before
        // the transport errors below, whose words these messages hold too.
        libc::EACCES
    } else if text.contains("permission denied")
        || text.contains("authentication failed")
        || text.contains("user name is empty")
        || text.contains("user name not found")
    {
        libc::EACCES
    } else if text.contains("deadline") || text.contains("timed out") {
        libc::ETIMEDOUT
    } else if text.contains("connect error") || text.contains("Connection refused") {
        // This member cannot be reached: another may be (`Etcd::call`).
        libc::ECONNREFUSED
    } else if text.contains("transport error")
        || text.contains("broken pipe")
        || text.contains("Connection reset")
    {
        // The member went away mid-request: whether it did the request is not known.
        libc::ECONNRESET
    } else if text.contains("has been compacted") {
        // The revision asked for is older than etcd keeps.
        libc::ENODATA
    } else if text.contains("message length too large") {
        // The answer is larger than a gRPC message may be (`get_all_at` asks for less).
        libc::E2BIG
    } else if text.contains("lease not found") || text.contains("requested lease not found") {
        libc::ENOENT
    } else if text.contains("leader changed") || text.contains("no leader") {
        // Passing: an election (`Etcd::call` tries again until its deadline).
        libc::EAGAIN
    } else {
        libc::EIO
    };
    Error::new(errno, format!("{what}: {text}"))
}
