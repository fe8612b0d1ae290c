//! Hard links: a file gains a further name, and a commit through any of its names is seen
//! through all (they name one fid).

use super::rules::{check_name, check_path_len, dir_of, is_record, show};
use super::state::{RecordFs, Stat, Ticket};
use crate::error::{err, Result};
use crate::limits::MAX_LINKS;
use crate::log::Op;
use crate::namespace::Inode;
use crate::record::is_record_name;
use crate::types::{Fid, Kind};

impl RecordFs {
    /// link(2): `name` in `dir` becomes a further name of `fid`, with ext4's errnos. Writes not
    /// yet committed are committed first, as for a rename. A plain file linked under a
    /// record's name must hold valid JSON (EINVAL, its bytes kept as for any refused save).
    pub fn link(&self, fid: Fid, dir: Fid, name: &[u8]) -> Result<(Stat, Ticket)> {
        check_name(name)?;
        self.writable()?;
        let inode = self.inode(fid)?;
        if inode.kind == Kind::Dir {
            return Err(err!(
                EPERM,
                "{} is a directory: no hard links to directories",
                show(&inode.name.bytes())
            ));
        }
        self.commit_writers_of(fid)?;
        // A concurrent commit may change what was checked; then check again.
        for _ in 0..3 {
            let inode = self
                .pipeline
                .inode(fid)
                .ok_or_else(|| err!(ENOENT, "{} was removed", show(&inode.name.bytes())))?;
            // As the kernel checks before it asks us: an existing name first.
            if self.pipeline.with_ns(|ns| ns.lookup(dir, name).is_some()) {
                return Err(err!(EEXIST, "{} exists", show(name)));
            }
            if self.damaged.lock().contains(&fid) {
                return Err(err!(
                    EIO,
                    "{}: its bytes are lost, so it gets no new name",
                    show(&inode.name.bytes())
                ));
            }
            if inode.kind == Kind::File && is_record_name(name) && !is_record(&inode) {
                let bytes = self.read_committed(fid)?;
                self.validate(&bytes)
                    .map_err(|i| self.reject(name, &bytes, &i))?;
            }
            // The new name's backing file is a copy made after the entry: until a compaction
            // syncs it, the log must hold the bytes, or a crash after the old name goes (an
            // unlink, a rename over it) could leave no copy (FORMAT.md, the relog rule).
            let in_log: Vec<Fid> = (inode.kind == Kind::File)
                .then_some(fid)
                .into_iter()
                .collect();
            let relog = self.bytes_to_relog(&in_log);
            let checked = |i: &Inode| (i.size, i.dcrc);
            let seen = checked(&inode);
            let result = self.commit_keeping(&in_log, &relog, |ns| {
                dir_of(ns, dir)?;
                let inode = ns
                    .get(fid)
                    .ok_or_else(|| err!(ENOENT, "{} was removed", show(name)))?;
                if checked(inode) != seen {
                    return Err(err!(EAGAIN, "changed while checked"));
                }
                if ns.lookup(dir, name).is_some() {
                    return Err(err!(EEXIST, "{} exists", show(name)));
                }
                if inode.extras.links().len() + 1 >= MAX_LINKS {
                    return Err(err!(
                        EMLINK,
                        "{} has {MAX_LINKS} names already",
                        show(&inode.name.bytes())
                    ));
                }
                check_path_len(ns, dir, name, 0, self.max_path)?;
                Ok(Op::Link {
                    fid,
                    dir,
                    name: name.to_vec(),
                })
            });
            match result {
                Ok(seq) => {
                    self.failpoint_between_commit_and_answer();
                    // The node linked, whatever the name leads to by now.
                    return Ok((self.getattr(fid, None)?, self.commit_ticket(seq)));
                }
                Err(e) if e.errno == libc::EAGAIN => continue,
                Err(e) => return Err(e),
            }
        }
        Err(err!(EAGAIN, "{} kept changing during the link", show(name)))
    }
}
