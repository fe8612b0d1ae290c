//! Names: lookup, stat, making files and symlinks, opening, unlinking and renaming.

use ::log::warn;
use std::sync::Arc;

use super::rules::{check_name, check_path_len, dir_of, is_record, show};
use super::state::{Handle, RecordFs, Stat, Ticket};
use crate::caller::Caller;
use crate::error::{err, Result};
use crate::limits::{MAX_RELOG_BYTES, MAX_RELOG_FILES, NAME_MAX, SYMLINK_MAX};
use crate::log::{Data, Op};
use crate::namespace::Inode;
use crate::record::is_record_name;
use crate::types::{Attrs, Fid, Kind, Seq, Time};
use crate::view::{Held, Version};

impl RecordFs {
    // -----------------------------------------------------------------------------------------
    // Names

    pub fn lookup(&self, dir: Fid, name: &[u8]) -> Result<Stat> {
        if name.len() > NAME_MAX {
            return Err(err!(ENAMETOOLONG, "name longer than {NAME_MAX} bytes"));
        }
        self.pipeline.with_ns(|ns| {
            dir_of(ns, dir)?;
            ns.lookup(dir, name)
                .map(Stat::of)
                .ok_or_else(|| err!(ENOENT, "{} does not exist", show(name)))
        })
    }

    pub fn getattr(&self, fid: Fid, fh: Option<u64>) -> Result<Stat> {
        let mut stat = match self.pipeline.inode(fid) {
            Some(inode) => Stat::of(&inode),
            // Unlinked while open: no name links to it any more, as fstat says elsewhere.
            None => Stat {
                nlink: 0,
                ..Stat::of(&self.inode(fid)?)
            },
        };
        // The handle that writes sees its own size (fstat after write).
        if let Some(Handle::Write(w)) = fh.and_then(|fh| self.handle(fh).ok()).as_deref() {
            let w = w.lock();
            if let (Some(len), true) = (w.len(), w.fid == fid) {
                stat.size = len;
            }
        }
        Ok(stat)
    }

    /// `stat` or `fstat` by `caller`, which reach the daemon without a descriptor: the process
    /// that holds uncommitted writes to the file sees their size and times, as a local
    /// filesystem shows a writer its own writes; every other process sees the committed file.
    pub fn getattr_as(&self, fid: Fid, fh: Option<u64>, caller: &Caller) -> Result<Stat> {
        let mut stat = self.getattr(fid, fh)?;
        if fh.is_some() || caller.pid == 0 {
            return Ok(stat);
        }
        let mut process = None;
        for h in self.writers_of(fid) {
            let Handle::Write(w) = &*h else { continue };
            let w = w.lock();
            let pid = *process.get_or_insert_with(|| caller.process());
            if let (true, Some(len)) = (w.written_by_process(caller.pid, pid), w.len()) {
                stat.size = len;
                // As the commit will have it: a utimes after the last write wins.
                let mtime_set = self.handles.lock().mtime_set.get(&fid).copied();
                if mtime_set.is_none_or(|t| t <= w.last_write) {
                    stat.attrs.mtime = w.last_write;
                }
                stat.attrs.ctime = stat.attrs.ctime.max(w.last_write);
                break;
            }
        }
        Ok(stat)
    }

    pub fn readlink(&self, fid: Fid) -> Result<Vec<u8>> {
        let inode = self.inode(fid)?;
        match (&inode.kind, inode.extras.target()) {
            (Kind::Symlink, Some(t)) => {
                // Served from the namespace; a backing symlink found wrong is rewritten.
                if self.writable().is_ok() && !self.pipeline.symlink_sound(fid)? {
                    if let Err(e) = self.pipeline.log_again(fid, Arc::new(t.to_vec())) {
                        warn!("inode {fid}: its backing symlink is not rewritten: {e}");
                    }
                }
                Ok(t.to_vec())
            }
            _ => Err(err!(
                EINVAL,
                "{} is not a symbolic link",
                show(&inode.name.bytes())
            )),
        }
    }

    pub(super) fn new_attrs(mode: u32, uid: u32, gid: u32) -> Attrs {
        let now = Time::now();
        Attrs {
            mode: mode & 0o7777,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    /// Makes a new empty regular file, symlink or directory, committed as its own entry. In
    /// a directory with the set-group-ID bit, it takes the directory's group (and a directory
    /// the bit too), as on ext4.
    pub(super) fn make(
        &self,
        dir: Fid,
        name: &[u8],
        kind: Kind,
        mut attrs: Attrs,
        data: Data,
    ) -> Result<(Stat, Seq)> {
        check_name(name)?;
        let mut made = 0;
        let seq = self.commit(|ns| {
            let parent = dir_of(ns, dir)?;
            check_path_len(ns, dir, name, 0, self.max_path)?;
            if parent.attrs.mode & libc::S_ISGID != 0 {
                attrs.gid = parent.attrs.gid;
                if kind == Kind::Dir {
                    attrs.mode |= libc::S_ISGID;
                }
            }
            if ns.lookup(dir, name).is_some() {
                return Err(err!(EEXIST, "{} exists", show(name)));
            }
            made = ns.allocate_fid();
            Ok(Op::Set {
                fid: made,
                dir,
                name: name.to_vec(),
                kind,
                attrs,
                data,
            })
        })?;
        self.failpoint_between_commit_and_answer();
        // The node made, not what the name leads to by now: another commit may have
        // renamed a file over it or removed it since.
        Ok((self.getattr(made, None)?, seq))
    }

    /// A new regular file holding `bytes` (mode 0644 less nothing, owned by root), committed
    /// as one entry where create, write and close make two: what `recordfs import` makes.
    /// The size limit and the JSON rule hold as for any save (EFBIG, EINVAL); a taken name
    /// is EEXIST.
    pub fn create_with(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        bytes: Vec<u8>,
    ) -> Result<(Stat, Ticket)> {
        if bytes.len() as u64 > self.opts.max_file_size {
            return Err(err!(
                EFBIG,
                "{}: {} bytes, more than --max-file-size {}",
                show(name),
                bytes.len(),
                self.opts.max_file_size
            ));
        }
        if is_record_name(name) {
            crate::record::validate_record(&bytes, self.opts.allow_nan)?;
        }
        let attrs = Self::new_attrs(mode, 0, 0);
        let data = Data::new(Arc::new(bytes));
        let (stat, seq) = self.make(dir, name, Kind::File, attrs, data)?;
        Ok((stat, self.commit_ticket(seq)))
    }

    /// mknod of a regular file (others answer EPERM in the adapter).
    pub fn mknod(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(Stat, Ticket)> {
        self.make_empty(dir, name, Kind::File, (mode, uid, gid))
    }

    pub fn mkdir(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(Stat, Ticket)> {
        self.make_empty(dir, name, Kind::Dir, (mode, uid, gid))
    }

    fn make_empty(
        &self,
        dir: Fid,
        name: &[u8],
        kind: Kind,
        (mode, uid, gid): (u32, u32, u32),
    ) -> Result<(Stat, Ticket)> {
        let attrs = Self::new_attrs(mode, uid, gid);
        let (stat, seq) = self.make(dir, name, kind, attrs, Data::empty())?;
        Ok((stat, self.commit_ticket(seq)))
    }

    pub fn rmdir(&self, dir: Fid, name: &[u8]) -> Result<Ticket> {
        let seq = self.commit(|ns| {
            dir_of(ns, dir)?;
            let inode = ns
                .lookup(dir, name)
                .ok_or_else(|| err!(ENOENT, "{} does not exist", show(name)))?;
            if inode.kind != Kind::Dir {
                return Err(err!(ENOTDIR, "{} is not a directory", show(name)));
            }
            if ns.list(inode.fid).next().is_some() {
                return Err(err!(ENOTEMPTY, "{} is not empty", show(name)));
            }
            Ok(Op::Delete {
                fid: inode.fid,
                dir,
                name: name.to_vec(),
            })
        })?;
        Ok(self.commit_ticket(seq))
    }

    pub fn symlink(
        &self,
        dir: Fid,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<(Stat, Ticket)> {
        if target.len() > SYMLINK_MAX {
            return Err(err!(
                ENAMETOOLONG,
                "symlink target longer than {SYMLINK_MAX} bytes"
            ));
        }
        let data = Data::new(Arc::new(target.to_vec()));
        let (stat, seq) = self.make(
            dir,
            name,
            Kind::Symlink,
            Self::new_attrs(0o777, uid, gid),
            data,
        )?;
        Ok((stat, self.commit_ticket(seq)))
    }

    /// open(O_CREAT): makes the file, or opens it if it exists and O_EXCL is not set.
    pub fn create(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        flags: i32,
    ) -> Result<(Stat, u64, Ticket)> {
        let caller = Caller { uid, gid, pid: 0 };
        self.create_as(dir, name, mode, flags, &caller)
    }

    /// open(O_CREAT) by `caller`, who owns a file it makes.
    pub fn create_as(
        &self,
        dir: Fid,
        name: &[u8],
        mode: u32,
        flags: i32,
        caller: &Caller,
    ) -> Result<(Stat, u64, Ticket)> {
        match self.make(
            dir,
            name,
            Kind::File,
            Self::new_attrs(mode, caller.uid, caller.gid),
            Data::empty(),
        ) {
            Ok((stat, seq)) => {
                let fh = self.add_handle(
                    stat.ino,
                    flags,
                    Some((
                        Held {
                            version: Version::Memory(Arc::new(Vec::new())),
                            token: None,
                        },
                        None,
                    )),
                )?;
                if let Ok(Handle::Write(w)) = self.handle(fh).as_deref() {
                    let mut w = w.lock();
                    w.created = true;
                    (w.riding, w.rider) = (Some(seq), caller.pid);
                }
                Ok((stat, fh, Ticket::NONE))
            }
            Err(e) if e.errno == libc::EEXIST && flags & libc::O_EXCL == 0 => {
                let ino = self.lookup(dir, name)?.ino;
                let (fh, ticket) = self.open_as(ino, flags, caller)?;
                Ok((self.getattr(ino, Some(fh))?, fh, ticket))
            }
            Err(e) => Err(e),
        }
    }

    pub fn unlink(&self, dir: Fid, name: &[u8]) -> Result<Ticket> {
        let seq = self.commit(|ns| {
            dir_of(ns, dir)?;
            let inode = ns
                .lookup(dir, name)
                .ok_or_else(|| err!(ENOENT, "{} does not exist", show(name)))?;
            if inode.kind == Kind::Dir {
                return Err(err!(EISDIR, "{} is a directory", show(name)));
            }
            Ok(Op::Delete {
                fid: inode.fid,
                dir,
                name: name.to_vec(),
            })
        })?;
        Ok(self.commit_ticket(seq))
    }

    /// rename(2) and renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE. Uncommitted writes
    /// to the file being renamed are committed first; a plain file that becomes a record must
    /// hold valid JSON.
    pub fn rename(
        &self,
        dir: Fid,
        name: &[u8],
        to_dir: Fid,
        to_name: &[u8],
        flags: u32,
    ) -> Result<Ticket> {
        check_name(to_name)?;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(err!(EINVAL, "rename flags {flags:#x} are not supported"));
        }
        let src = self.lookup(dir, name)?;
        self.commit_writers_of(src.ino)?;
        // A concurrent commit may change what we validated; then check again.
        for _ in 0..3 {
            // The log must hold the bytes of what is renamed (see `bytes_to_relog`) when the
            // rename commits: a compaction in between is an EAGAIN, and another round.
            let src_fid = self.lookup(dir, name)?.ino;
            let mut in_log = vec![src_fid];
            if exchange {
                in_log.extend(self.lookup(to_dir, to_name).map(|d| d.ino));
            }
            let mut in_log = self.with_files_under(in_log)?;
            in_log.retain(|fid| !self.damaged.lock().contains(fid));
            let relog = self.bytes_to_relog(&in_log);
            let src = self.inode(src_fid)?;
            let dst = self
                .pipeline
                .with_ns(|ns| ns.lookup(to_dir, to_name).cloned());
            if dst.as_ref().is_some_and(|d| d.fid == src.fid) {
                return Ok(Ticket::NONE);
            }
            // Errors in the order rename(2) gives them: an existing target first.
            if noreplace && dst.is_some() {
                return Err(err!(EEXIST, "{} exists", show(to_name)));
            }
            if exchange && dst.is_none() {
                return Err(err!(ENOENT, "{} does not exist", show(to_name)));
            }
            self.check_becomes_record(&src, to_name)?;
            if let (true, Some(d)) = (exchange, &dst) {
                self.check_becomes_record(d, name)?;
            }
            // What was checked: which files, holding which bytes (a commit of the same bytes
            // again, as `relog` makes, changes nothing that was checked).
            let checked = |i: &Inode| (i.fid, i.size, i.dcrc);
            let seen = (checked(&src), dst.as_ref().map(checked));
            let result = self.commit_keeping(&in_log, &relog, |ns| {
                dir_of(ns, dir)?;
                dir_of(ns, to_dir)?;
                let s = ns
                    .lookup(dir, name)
                    .ok_or_else(|| err!(ENOENT, "{} does not exist", show(name)))?;
                let d = ns.lookup(to_dir, to_name);
                if (checked(s), d.map(checked)) != seen {
                    return Err(err!(EAGAIN, "changed while checked"));
                }
                if d.is_some() && noreplace {
                    return Err(err!(EEXIST, "{} exists", show(to_name)));
                }
                if d.is_none() && exchange {
                    return Err(err!(ENOENT, "{} does not exist", show(to_name)));
                }
                rename_shape(ns, s, d, to_dir, exchange, (name, to_name))?;
                let below = |i: &Inode| match i.kind {
                    Kind::Dir => ns.longest_under(i.fid),
                    _ => 0,
                };
                check_path_len(ns, to_dir, to_name, below(s), self.max_path)?;
                if let (true, Some(d)) = (exchange, d) {
                    check_path_len(ns, dir, name, below(d), self.max_path)?;
                }
                Ok(Op::Rename {
                    fid: s.fid,
                    dir,
                    name: name.to_vec(),
                    to_dir,
                    to_name: to_name.to_vec(),
                    replaced: d.map(|d| d.fid),
                    exchange,
                })
            });
            match result {
                Ok(seq) => return Ok(self.commit_ticket(seq)),
                Err(e) if e.errno == libc::EAGAIN => continue,
                Err(e) => return Err(e),
            }
        }
        Err(err!(
            EAGAIN,
            "{} kept changing during the rename",
            show(name)
        ))
    }

    /// A crash in the middle of a rename of a backing file, on a filesystem without a
    /// journal, can keep neither of its names; recovery then restores the file from the log,
    /// if the log holds its bytes. A file last written before the latest compaction has them
    /// only in its backing file: they are read here and committed again with the rename
    /// (`Pipeline::commit_keeping`). FORMAT.md, "Entries".
    ///
    /// A file that cannot be read is left out: the commit then answers EAGAIN, and the next
    /// round of the rename meets whatever happened to it.
    pub(super) fn bytes_to_relog(&self, fids: &[Fid]) -> Vec<(Fid, Data)> {
        fids.iter()
            .filter(|fid| !self.pipeline.bytes_in_live_log(**fid))
            .filter_map(|fid| {
                let bytes = self.read_committed(*fid).ok()?;
                Some((*fid, Data::new(Arc::new(bytes))))
            })
            .collect()
    }

    /// `fids` with every regular file under those that are directories: a directory's move
    /// carries their bytes into the live log. EXDEV past `MAX_RELOG_BYTES` or
    /// `MAX_RELOG_FILES` of them not there yet.
    fn with_files_under(&self, mut fids: Vec<Fid>) -> Result<Vec<Fid>> {
        let dirs: Vec<Fid> = fids.clone();
        self.pipeline.with_ns(|ns| {
            let mut todo: Vec<Fid> = dirs
                .into_iter()
                .filter(|f| ns.get(*f).is_some_and(|i| i.kind == Kind::Dir))
                .collect();
            while let Some(dir) = todo.pop() {
                for (_, inode) in ns.list(dir) {
                    match inode.kind {
                        Kind::Dir => todo.push(inode.fid),
                        Kind::File => fids.push(inode.fid),
                        Kind::Symlink => {}
                    }
                }
            }
        });
        // A file with several names under the directory comes once.
        let mut seen = std::collections::HashSet::new();
        fids.retain(|f| seen.insert(*f));
        let missing = self.pipeline.not_in_live_log(&fids);
        let bytes: u64 = missing.iter().map(|(_, size)| size).sum();
        if bytes > MAX_RELOG_BYTES || missing.len() > MAX_RELOG_FILES {
            return Err(err!(
                EXDEV,
                "moving this directory would log {} files ({bytes} bytes) again, more than {MAX_RELOG_FILES} files or {MAX_RELOG_BYTES} bytes; it is copied instead",
                missing.len()
            ));
        }
        Ok(fids)
    }

    /// A regular file renamed to a record's name must hold valid JSON.
    pub(super) fn check_becomes_record(&self, inode: &Inode, new_name: &[u8]) -> Result<()> {
        if inode.kind != Kind::File || !is_record_name(new_name) || is_record(inode) {
            return Ok(());
        }
        let bytes = self.read_committed(inode.fid)?;
        self.validate(&bytes)
            .map_err(|i| self.reject(new_name, &bytes, &i))
    }

    pub fn open(&self, fid: Fid, flags: i32) -> Result<(u64, Ticket)> {
        self.open_as(fid, flags, &Caller::UNKNOWN)
    }

    /// open(2) by `caller`: O_TRUNC by an unprivileged process takes set-ID bits away at
    /// once, as truncate(2) does (the kernel leaves it to us when it passes O_TRUNC on).
    pub fn open_as(&self, fid: Fid, flags: i32, caller: &Caller) -> Result<(u64, Ticket)> {
        let inode = self.inode(fid)?;
        match inode.kind {
            Kind::Dir => return Err(err!(EISDIR, "the root is a directory")),
            Kind::Symlink => return Err(err!(ELOOP, "{} is a symlink", show(&inode.name.bytes()))),
            Kind::File => {}
        }
        // Linux empties the file for open(O_RDONLY | O_TRUNC) too. A reader has no copy to
        // hold the truncation until a commit point, so it commits at once, like truncate(2).
        let mut ticket = Ticket::NONE;
        if flags & libc::O_TRUNC != 0 && !caller.privileged() {
            self.writable()?;
            self.drop_setid(fid, caller)?;
        }
        if flags & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC != 0 {
            ticket = self.commit_ticket(self.truncate_committed(fid, 0)?);
        }
        Ok((self.add_handle(fid, flags, None)?, ticket))
    }
}

/// rename(2)'s rules for directories, in the order Linux checks them: a directory moves
/// neither into itself nor under itself (EINVAL, for an exchange both ways), replaces only a
/// directory (ENOTDIR) that is empty (ENOTEMPTY), and a file never replaces one (EISDIR).
fn rename_shape(
    ns: &crate::namespace::Namespace,
    s: &Inode,
    d: Option<&Inode>,
    to_dir: Fid,
    exchange: bool,
    (name, to_name): (&[u8], &[u8]),
) -> Result<()> {
    let into_itself =
        |moved: &Inode, to: Fid| moved.kind == Kind::Dir && ns.is_within(to, moved.fid);
    if into_itself(s, to_dir) || (exchange && d.is_some_and(|d| into_itself(d, s.parent))) {
        return Err(err!(EINVAL, "{} cannot move into itself", show(name)));
    }
    let Some(d) = d.filter(|_| !exchange) else {
        return Ok(());
    };
    match (s.kind == Kind::Dir, d.kind == Kind::Dir) {
        (true, false) => Err(err!(ENOTDIR, "{} is not a directory", show(to_name))),
        (false, true) => Err(err!(EISDIR, "{} is a directory", show(to_name))),
        (true, true) if ns.list(d.fid).next().is_some() => {
            Err(err!(ENOTEMPTY, "{} is not empty", show(to_name)))
        }
        _ => Ok(()),
    }
}
