//! A reader's fixed version of a file: the bytes committed when it opened, in memory or in a
//! backing file opened then (a later rename over the path does not change it).

use std::sync::Arc;

use crate::disk::ReadAt;
use crate::error::{err, Error, Result};

/// A committed version as `Pipeline::version` finds it.
pub enum Read {
    Fine(Version),
    /// The backing file differs from the log: these are the file's bytes, to serve and to
    /// commit again (`Pipeline::log_again`) so that its backing files are rewritten.
    Restore(Arc<Vec<u8>>),
}

/// What a reader reads: the bytes of one committed version, fixed at open.
pub enum Version {
    Memory(Arc<Vec<u8>>),
    Disk(Arc<dyn ReadAt>),
}

impl Version {
    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        match self {
            Version::Memory(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Version::Disk(f) => {
                let mut buf = vec![0; size];
                let mut got = 0;
                while got < size {
                    match f.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => return Err(Error::io("reading a backing file", &e)),
                    }
                }
                buf.truncate(got);
                Ok(buf)
            }
        }
    }

    /// The whole content, refusing more than `limit` bytes.
    pub fn read_all(&self, limit: u64) -> Result<Vec<u8>> {
        let len = match self {
            Version::Memory(b) => b.len() as u64,
            Version::Disk(f) => f
                .size()
                .map_err(|e| Error::io("stat of a backing file", &e))?,
        };
        if len > limit {
            return Err(err!(
                EFBIG,
                "file of {len} bytes exceeds the limit of {limit}"
            ));
        }
        self.read_at(0, len as usize)
    }
}
