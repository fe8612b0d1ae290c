//! The FUSE adapter: turns kernel requests into calls on `RecordFs` and answers them. It
//! holds no state of its own beyond the kernel-facing choices (cache TTLs, open flags), and it
//! is where errors are logged: once, as they are answered.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use log::{error, warn};

use crate::error::{errno_name, Error, Result};
use crate::fs::{RecordFs, SetAttr, Ticket, WriteBy};
use kernel::{attr, attr_ttl, caller, file_type, time, ATTR_TTL, NEW_FILE_TTL, SETTLED_TTL};

mod answer;
mod kernel;
use answer::logged;

pub struct Adapter {
    fs: Arc<RecordFs>,
    /// Runs at the end of `destroy`, once the store is shut down (`cli::daemon`).
    after_destroy: parking_lot::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Adapter {
    pub fn new(fs: Arc<RecordFs>) -> Adapter {
        Adapter {
            fs,
            after_destroy: parking_lot::Mutex::new(None),
        }
    }

    pub fn after_destroy(self, f: Box<dyn FnOnce() + Send>) -> Adapter {
        *self.after_destroy.lock() = Some(f);
        self
    }
}

fn show(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Without ATOMIC_O_TRUNC the kernel truncates with a SETATTR before OPEN, which would
        // commit an empty file: open(O_TRUNC) then a crash must keep the old content.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            return Err(std::io::Error::other(format!(
                "the kernel lacks {missing:?}; recordfs needs it for open(O_TRUNC) to be atomic"
            )));
        }
        // mmap of a direct-I/O file; without it mmap fails with ENODEV.
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_err()
        {
            warn!("the kernel cannot mmap direct-I/O files: mmap on this mount fails");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.shutdown() {
            error!("unmount: {e}");
        }
        let after = self.after_destroy.lock().take();
        if let Some(f) = after {
            f();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self
            .fs
            .lookup(parent.0, name.as_bytes())
            .map(|s| (s, Ticket::NONE));
        self.entry("lookup", show(name), r, reply);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // Settled attributes are the same for every caller and every handle.
        if let Some(s) = self.fs.settled(ino.0) {
            return reply.attr(&SETTLED_TTL, &attr(&s));
        }
        match self.fs.getattr_as(ino.0, fh.map(|f| f.0), &caller(req)) {
            Ok(s) => reply.attr(attr_ttl(&s), &attr(&s)),
            Err(e) => reply.error(logged("getattr", &ino.0.to_string(), &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        let what = format!("inode {}", ino.0);
        match self
            .fs
            .setattr_as(ino.0, fh.map(|f| f.0), set, &caller(req))
        {
            Ok((stat, t)) => {
                let (stat, ttl) = self.cacheable(stat);
                self.after(t, "setattr", what, move |r| match r {
                    Ok(()) => reply.attr(ttl, &attr(&stat)),
                    Err(e) => reply.error(e),
                })
            }
            Err(e) => reply.error(logged("setattr", &what, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(logged("readlink", &ino.0.to_string(), &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            warn!(
                "mknod {}: only regular files are supported (EPERM)",
                show(name)
            );
            return reply.error(Errno::EPERM);
        }
        let r = self
            .fs
            .mknod(parent.0, name.as_bytes(), mode, req.uid(), req.gid());
        self.entry("mknod", show(name), r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        // The kernel applied the umask already (no FUSE_DONT_MASK), as for create.
        let r = self
            .fs
            .mkdir(parent.0, name.as_bytes(), mode, req.uid(), req.gid());
        self.entry("mkdir", show(name), r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.fs.unlink(parent.0, name.as_bytes());
        self.empty("unlink", show(name), r, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.fs.rmdir(parent.0, name.as_bytes());
        self.empty("rmdir", show(name), r, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.fs.symlink(
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            req.uid(),
            req.gid(),
        );
        self.entry("symlink", show(link_name), r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        );
        self.empty(
            "rename",
            format!("{} -> {}", show(name), show(newname)),
            r,
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.fs.link(ino.0, newparent.0, newname.as_bytes());
        self.entry("link", show(newname), r, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let what = format!("inode {}", ino.0);
        match self.fs.open_as(ino.0, flags.0, &caller(req)) {
            Ok((fh, t)) => {
                let fopen = self.open_flags(flags.0);
                let fs = self.fs.clone();
                self.after(t, "open", what, move |r| match r {
                    Ok(()) => reply.opened(FileHandle(fh), fopen),
                    Err(e) => {
                        fs.release(fh);
                        reply.error(e)
                    }
                });
            }
            Err(e) => reply.error(logged("open", &what, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(logged("read", &format!("inode {}", ino.0), &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let who = WriteBy {
            owner: lock_owner.map(|o| o.0),
            writeback: write_flags.contains(WriteFlags::FUSE_WRITE_CACHE),
            caller: caller(req),
            kill_setid: write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID),
        };
        match self.fs.write_as(fh.0, offset, data, who) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(logged("write", &format!("inode {}", ino.0), &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.flush_as(fh.0, Some(lock_owner.0));
        self.closed("close", format!("inode {}", ino.0), r, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.fsync(fh.0);
        self.closed("fsync", format!("inode {}", ino.0), r, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(logged("opendir", &ino.0.to_string(), &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let added = self.fs.readdir_into(fh.0, offset, |e, next| {
            reply.add(
                INodeNo(e.ino),
                next,
                file_type(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match added {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(logged("readdir", "", &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.fsyncdir();
        self.empty("fsyncdir", String::new(), r, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(logged("statfs", "", &e)),
        }
    }

    // Extended attributes (fs/xattrs.rs). Every write asks getxattr("security.capability")
    // unless getxattr is ENOSYS; with direct I/O it does not (FUSE-NOTES), and the answer
    // comes from memory.
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = self.fs.getxattr(ino.0, name.as_bytes());
        xattr_reply(("getxattr", &show(name)), value, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = self.fs.listxattr(ino.0);
        xattr_reply(("listxattr", &ino.0.to_string()), names, size, reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .fs
            .setxattr_as(ino.0, name.as_bytes(), Some(value), flags, &caller(req));
        self.empty("setxattr", show(name), r, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .fs
            .setxattr_as(ino.0, name.as_bytes(), None, 0, &caller(req));
        self.empty("removexattr", show(name), r, reply);
    }

    // No file here is a terminal or takes ioctls; isatty() probes with TCGETS.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    // With default_permissions the kernel checks access itself; ENOSYS tells it not to ask.
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EPERM);
        }
        let what = show(name);
        match self
            .fs
            .create_as(parent.0, name.as_bytes(), mode, flags, &caller(req))
        {
            Ok((stat, fh, t)) => {
                let fopen = self.open_flags(flags);
                let ttl = match self.fs.settled_when_made(fh, &stat) {
                    true => &NEW_FILE_TTL,
                    false => &ATTR_TTL,
                };
                let fs = self.fs.clone();
                self.after(t, "create", what, move |r| match r {
                    Ok(()) => {
                        reply.created(ttl, &attr(&stat), Generation(0), FileHandle(fh), fopen)
                    }
                    Err(e) => {
                        fs.release(fh);
                        reply.error(e)
                    }
                });
            }
            Err(e) => reply.error(logged("create", &what, &e)),
        }
    }
}

/// For the command line: an errno as its name.
pub fn describe(e: &Error) -> String {
    format!("{} ({})", e.reason, errno_name(e.errno))
}

/// getxattr and listxattr answer the size when asked with 0, the bytes when they fit, else
/// ERANGE; an error is logged as `(op, what)`.
fn xattr_reply((op, what): (&str, &str), r: Result<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match r {
        Err(e) => reply.error(logged(op, what, &e)),
        Ok(bytes) if size == 0 => reply.size(bytes.len() as u32),
        Ok(bytes) if bytes.len() <= size as usize => reply.data(&bytes),
        Ok(_) => reply.error(Errno::ERANGE),
    }
}
