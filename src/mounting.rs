//! Putting the mount in place and taking it away, as FUSE filesystems do: root mounts with
//! mount(2) (through fuser); any other user through the setuid-root `fusermount3` of Debian's
//! fuse3 package, which opens /dev/fuse, mounts, and hands the descriptor back over a socket
//! (the protocol libfuse and fuser use: `_FUSE_COMMFD` names the socket, one byte with an
//! SCM_RIGHTS message carries the descriptor). fuser 0.18 gives up before trying fusermount3
//! when the user may not open /dev/fuse, which is how most systems set it; so recordfs calls it
//! itself.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{err, Error, Result};

/// How this process puts its mount in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Way {
    /// mount(2), as root (fuser's own mount).
    Direct,
    /// The setuid-root helper at this path.
    Fusermount(PathBuf),
}

const HELPER: &str = "fusermount3";

/// The way this process can mount, or why it cannot, with the fix; asked before STORE is
/// touched, so that a mount that cannot work creates nothing.
pub fn way() -> Result<Way> {
    if nix::unistd::geteuid().is_root() {
        return Ok(Way::Direct);
    }
    // fusermount3 opens the device as the user who runs it: who may open /dev/fuse is who
    // may use FUSE at all.
    let dev = c"/dev/fuse";
    use nix::unistd::{access, AccessFlags};
    if let Err(e) = access(dev, AccessFlags::R_OK | AccessFlags::W_OK) {
        let e = io::Error::from(e);
        let mode = std::fs::metadata("/dev/fuse")
            .map(|m| format!("mode {:04o}", m.permissions().mode() & 0o7777))
            .unwrap_or_else(|_| "missing".into());
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => err!(
                ENODEV,
                "/dev/fuse is missing: load the FUSE module (modprobe fuse, as root)"
            ),
            _ => err!(
                EACCES,
                "/dev/fuse ({mode}) is not readable and writable by you ({e}), and a user who \
                 is not root may use FUSE only through it: as root, chmod 0666 /dev/fuse (the \
                 mode Debian's fuse3 gives it), or mount as root"
            ),
        });
    }
    // mount(8) runs mount.fuse3 for a user's fstab mount with no PATH in the environment
    // (its /bin/sh has one of its own but does not pass it on): then the usual places.
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let found = std::env::split_paths(&path)
        .map(|d| d.join(HELPER))
        .find(|p| p.is_file());
    let Some(helper) = found else {
        return Err(err!(
            EPERM,
            "only root may mount directly, and {HELPER} (the setuid-root helper of Debian's \
             fuse3 package, through which other users mount) is not on PATH: install it \
             (apt-get install fuse3), or mount as root"
        ));
    };
    let setuid_root = std::fs::metadata(&helper)
        .map(|m| {
            m.permissions().mode() & libc::S_ISUID != 0
                && std::os::unix::fs::MetadataExt::uid(&m) == 0
        })
        .unwrap_or(false);
    if !setuid_root {
        return Err(err!(
            EPERM,
            "{} is not setuid root, so it cannot open /dev/fuse or mount for you: \
             chmod u+s {} (as root), or mount as root",
            helper.display(),
            helper.display()
        ));
    }
    Ok(Way::Fusermount(helper))
}

/// Mounts at `mountpoint` through the helper with `options` (fusermount3's `-o` list),
/// returning the /dev/fuse descriptor of the new mount.
pub fn mount_with_helper(helper: &Path, mountpoint: &Path, options: &str) -> Result<OwnedFd> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| Error::io("a socket for fusermount3", &e))?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(helper);
    cmd.arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", their_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: fcntl is async-signal-safe; the helper must inherit its end of the socket.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(their_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("running {}", helper.display()), &e))?;
    drop(theirs);
    let received = receive_fd(&ours);
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("waiting for {}", helper.display()), &e))?;
    match received {
        Ok(fd) if out.status.success() => Ok(fd),
        _ => Err(err!(
            EPERM,
            "{} could not mount at {}: {}",
            helper.display(),
            mountpoint.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one descriptor's control message, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty one; the buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes it says.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CMSG_FIRSTHDR and CMSG_DATA read within msg_control, filled by the kernel.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if n == 0
            || c.is_null()
            || (*c).cmsg_level != libc::SOL_SOCKET
            || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "fusermount3 sent no descriptor",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Asks the helper to unmount (`lazy`: detach a busy mount, as `umount -l`). Its message on
/// failure (e.g. "Device or resource busy") is the error's reason; EBUSY when busy.
pub fn unmount_with_helper(helper: &Path, mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let mut cmd = Command::new(helper);
    cmd.arg(if lazy { "-uz" } else { "-u" })
        .arg("--")
        .arg(mountpoint);
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(match said.contains("busy") {
        true => io::Error::from_raw_os_error(libc::EBUSY),
        false => io::Error::other(said),
    })
}

/// fusermount3's `-o` list for a mount of `store`.
/// The kernel's flags for the mount itself, beyond read-only (`-o nosuid,nodev,noexec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFlags {
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

pub fn helper_options(
    store: &Path,
    read_only: bool,
    allow_other: bool,
    flags: KernelFlags,
) -> String {
    let mut o = format!(
        "fsname=recordfs:{},subtype=recordfs,default_permissions,noatime,{}",
        store.display(),
        if read_only { "ro" } else { "rw" }
    );
    if allow_other {
        o.push_str(",allow_other");
    }
    for (on, flag) in [
        (flags.nosuid, ",nosuid"),
        (flags.nodev, ",nodev"),
        (flags.noexec, ",noexec"),
    ] {
        if on {
            o.push_str(flag);
        }
    }
    o
}

/// A descriptor of the session's `/dev/fuse` connection (fuser keeps its own to itself):
/// the process has one, just after the mount.
pub fn fuse_device() -> Option<std::fs::File> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    fds.flatten().find_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?;
        if target != std::path::Path::new("/dev/fuse") {
            return None;
        }
        let n: i32 = fd.file_name().to_str()?.parse().ok()?;
        // SAFETY: a descriptor of this process, duplicated: the copy is ours to close.
        let copy = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 0) };
        // SAFETY: just made, owned by nothing else.
        (copy >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(copy) })
    })
}

/// Whether the kernel has ended the connection (unmounted, or aborted): its device reports
/// POLLERR, as libfuse's unmount checks.
pub fn connection_dead(device: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: device.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLERR != 0
}
