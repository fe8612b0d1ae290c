//! Who asks: the process behind a request, as the kernel names it, and what a change by an
//! unprivileged process does to set-user-ID and set-group-ID bits.
//!
//! Every handle of this mount uses direct I/O, so the kernel does not clear those bits on a
//! write itself: it flags the write (`FUSE_WRITE_KILL_SUIDGID`, when the writer lacks
//! CAP_FSETID) and leaves it to the filesystem. A local filesystem then clears set-user-ID,
//! and set-group-ID when the group may execute the file or the writer is not in its group
//! (the kernel's `file_remove_privs` and `setattr_should_drop_sgid`). truncate, ftruncate and
//! chown reach the daemon as a mode change the kernel has already worked out.

use std::fs;

/// The process behind a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The fsuid and fsgid the kernel checks permissions with.
    pub uid: u32,
    pub gid: u32,
    /// The calling thread (the kernel names threads, not processes).
    pub pid: u32,
}

impl Caller {
    /// A call whose process is not known (the core driven without FUSE): treated as
    /// privileged, and as nobody's process.
    pub const UNKNOWN: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    /// Whether the caller may keep set-ID bits it did not set (CAP_FSETID). The kernel tells
    /// this for writes; for open(O_TRUNC) it does not, and root stands for the capability.
    pub fn privileged(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `gid`, by its fsgid or its supplementary groups.
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid
            || status_field(self.pid, "Groups:").is_some_and(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .any(|g| g == gid)
            })
    }

    /// The process (thread group) of the calling thread; 0 if it is gone or unknown.
    pub fn process(&self) -> u32 {
        process_of(self.pid)
    }
}

/// The process a thread belongs to, from `/proc/<tid>/status`; 0 if it is gone.
pub fn process_of(tid: u32) -> u32 {
    if tid == 0 {
        return 0;
    }
    status_field(tid, "Tgid:")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::to_owned)
}

/// The mode a file keeps after an unprivileged `caller` changed its content.
pub fn mode_after_change(mode: u32, file_gid: u32, caller: &Caller) -> u32 {
    let mut mode = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !caller.in_group(file_gid)) {
        mode &= !libc::S_ISGID;
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: Caller = Caller {
        uid: 65534,
        gid: 65534,
        pid: 0,
    };

    #[test]
    fn set_id_bits_go_as_on_a_local_filesystem() {
        assert_eq!(mode_after_change(0o6777, 0, &NOBODY), 0o777);
        assert_eq!(mode_after_change(0o4755, 0, &NOBODY), 0o755);
        // Set-group-ID without group execute is mandatory locking on old systems: kept for
        // a member of the group, dropped for anyone else.
        assert_eq!(mode_after_change(0o2767, 65534, &NOBODY), 0o2767);
        assert_eq!(mode_after_change(0o2767, 0, &NOBODY), 0o767);
        assert_eq!(mode_after_change(0o1777, 0, &NOBODY), 0o1777);
    }

    #[test]
    fn a_thread_belongs_to_its_process() {
        let me = std::process::id();
        assert_eq!(process_of(me), me);
        assert_eq!(process_of(0), 0);
    }
}
