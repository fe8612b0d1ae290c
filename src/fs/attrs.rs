//! Attributes and truncation by path, and the JSON rule a record's bytes must meet (refused
//! bytes are kept).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::rules::{is_record, new_content, show};
use super::state::{Handle, RecordFs, SetAttr, Stat, Ticket};
use crate::caller::Caller;
use crate::error::{err, Error, Result};
use crate::log::{Data, Op};
use crate::record::{check_json, Invalid};
use crate::store::{self};
use crate::types::{Attrs, Fid, Kind, Seq, Time};

impl RecordFs {
    // -----------------------------------------------------------------------------------------
    // Attributes

    pub fn setattr(&self, fid: Fid, fh: Option<u64>, set: SetAttr) -> Result<(Stat, Ticket)> {
        self.setattr_as(fid, fh, set, &Caller::UNKNOWN)
    }

    /// setattr by `caller` (chmod, chown, utimes, truncate, ftruncate). An ftruncate is part
    /// of its handle's next commit, and the caller's process sees the new size until then.
    pub fn setattr_as(
        &self,
        fid: Fid,
        fh: Option<u64>,
        set: SetAttr,
        caller: &Caller,
    ) -> Result<(Stat, Ticket)> {
        self.writable()?;
        let mut last = None;
        if let Some(size) = set.size {
            if size > self.opts.max_file_size {
                return Err(err!(
                    EFBIG,
                    "size {size} passes the limit of {} bytes",
                    self.opts.max_file_size
                ));
            }
            let handle = fh.and_then(|fh| self.handle(fh).ok());
            match handle.as_deref() {
                // ftruncate on a handle that writes: part of that handle's next commit.
                Some(Handle::Write(w)) if w.lock().fid == fid => {
                    let w = &mut *w.lock();
                    self.truncate_copy(w, size)?;
                    w.wrote(None);
                    w.note_thread(caller.pid);
                }
                _ => last = Some(self.truncate_committed(fid, size)?),
            }
        }
        if set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some()
        {
            let now = Time::now();
            if set.mtime.is_some() {
                self.handles.lock().mtime_set.insert(fid, now);
            }
            let update = |attrs: &mut Attrs| {
                if let Some(m) = set.mode {
                    attrs.mode = m & 0o7777;
                }
                attrs.uid = set.uid.unwrap_or(attrs.uid);
                attrs.gid = set.gid.unwrap_or(attrs.gid);
                attrs.atime = set.atime.unwrap_or(attrs.atime);
                attrs.mtime = set.mtime.unwrap_or(attrs.mtime);
                attrs.ctime = now;
            };
            if self.pipeline.inode(fid).is_none() {
                // Unlinked while open (fchmod, futimens, fchown): the attributes go with the
                // open file, as its bytes do; nothing is left to commit.
                let mut hs = self.handles.lock();
                let orphan = hs
                    .orphans
                    .get_mut(&fid)
                    .ok_or_else(|| err!(ESTALE, "no file with inode {fid}"))?;
                update(&mut orphan.attrs);
            } else {
                last = Some(self.commit(|ns| {
                    let inode = ns
                        .get(fid)
                        .ok_or_else(|| err!(ESTALE, "no file with inode {fid}"))?;
                    let mut attrs = inode.attrs;
                    update(&mut attrs);
                    Ok(Op::Attr {
                        fid,
                        dir: inode.parent,
                        name: inode.name.to_vec(),
                        attrs,
                    })
                })?);
            }
        }
        let stat = self.getattr(fid, fh)?;
        Ok((
            stat,
            last.map_or(Ticket::NONE, |seq| self.ride_or_ticket(fid, seq, caller)),
        ))
    }

    /// truncate(2) by path: a commit of its own, so a record must still parse afterwards.
    pub(super) fn truncate_committed(&self, fid: Fid, size: u64) -> Result<Seq> {
        let inode = self.inode(fid)?;
        if inode.kind != Kind::File {
            return Err(err!(
                EISDIR,
                "{} is not a regular file",
                show(&inode.name.bytes())
            ));
        }
        let mut bytes = if size == 0 {
            Vec::new()
        } else {
            self.read_committed(fid)?
        };
        bytes.resize(size as usize, 0);
        if is_record(&inode) {
            self.validate(&bytes)
                .map_err(|i| self.reject(&inode.name.bytes(), &bytes, &i))?;
        }
        let data = Data::new(Arc::new(bytes));
        let seen = inode.last_seq;
        let seq = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ESTALE, "no file with inode {fid}"))?;
            if inode.last_seq != seen {
                return Err(err!(
                    EAGAIN,
                    "{} changed during truncate; try again",
                    show(&inode.name.bytes())
                ));
            }
            let now = Time::now();
            let mut attrs = inode.attrs;
            attrs.mtime = now;
            attrs.ctime = now;
            Ok(new_content(inode, attrs, data))
        })?;
        Ok(seq)
    }

    pub(super) fn read_committed(&self, fid: Fid) -> Result<Vec<u8>> {
        self.version(fid)?
            .0
            .version
            .read_all(self.opts.max_file_size)
    }

    /// Keeps refused bytes in `rejected/` and says where, in the error the caller gets.
    /// The rule for a record's bytes on this mount (`--allow-nan`).
    pub(super) fn validate(&self, bytes: &[u8]) -> std::result::Result<(), Invalid> {
        check_json(bytes, self.opts.allow_nan)
    }

    /// Keeps refused bytes and why (`rejected/`), and answers the refusal: EINVAL.
    pub(super) fn reject(&self, name: &[u8], bytes: &[u8], invalid: &Invalid) -> Error {
        let now = Time::now();
        let tag = now.millis() * 1000 + self.rejected_count.fetch_add(1, Ordering::Relaxed) % 1000;
        let why = store::Refusal {
            time: now.iso8601(),
            name: String::from_utf8_lossy(name).into_owned(),
            error: invalid.what.clone(),
            line: Some(invalid.line),
            column: invalid.column,
            len: bytes.len() as u64,
            kept: None,
        };
        let kept = match store::keep_rejected(&*self.disk, &self.layout, name, tag, bytes, &why) {
            Ok(path) => format!("the rejected bytes are in {}", path.display()),
            Err(e2) => format!("the rejected bytes could not be kept: {e2}"),
        };
        err!(
            EINVAL,
            "{}: refused, {invalid}; the previous version is kept; {kept}",
            show(name)
        )
    }
}
