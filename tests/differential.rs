//! Differential testing against a local filesystem: one seeded sequence of syscalls runs on a
//! recordfs mount and on a tmpfs directory side by side, and after every step the two must give
//! the same return values, errnos, bytes, stat fields and directory listing.
//!
//! Where recordfs means to differ (README, Semantics), the test does not look away: it predicts
//! recordfs's answer from a small model of those rules and checks it. The model holds, per
//! file, the bytes of its last commit (what a path open or a stat sees), and per open file
//! description whether it holds uncommitted writes and, for a read-only one, the version it
//! opened. Wherever no rule applies (no uncommitted writes; a reader whose version is the
//! current one) the prediction is tmpfs's own answer, so recordfs must match tmpfs exactly.
//!
//! Two rules keep sequences where the comparison can judge them. They are applied as a step
//! runs, so a shrunk sequence stays valid:
//! - one writable description per file at a time: two writers of one file are
//!   last-commit-wins here and byte-merged on tmpfs (tests/concurrency.rs covers that);
//! - a record holds valid JSON at every commit point: a step that would commit invalid JSON is
//!   preceded by a fix-up write on both sides (tests/json_rule.rs covers the rule itself).
//!
//! A failing sequence is shrunk and printed in the text form of `tests/differential/*.ops`;
//! the files there are replayed first, as regression tests. Sequences come from proptest, which
//! also shrinks a failing one. `RECORDFS_SOAK=N` runs N sequences; `RECORDFS_SEED_BASE=B`
//! draws other ones (for soaks run side by side).

mod common;
use common::sequences::{runner as test_runner, shrink, Failure};
use common::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::select;

const NAMES: [&str; 12] = [
    "10000000-0000-4000-8000-000000000001.json",
    "10000000-0000-4000-8000-000000000002.json",
    "10000000-0000-4000-8000-000000000003.json",
    "a",
    "b.txt",
    ".a.swp",
    "c~",
    "d",
    "sub/10000000-0000-4000-8000-000000000004.json",
    "sub/e",
    "sub/deeper/f",
    "other/sub/e",
];
/// Directories that mkdir, rmdir and rename make, remove and move (issue 11); the files of
/// `NAMES` under them come and go with them.
const DIRS: [&str; 4] = ["sub", "sub/deeper", "other", "other/sub"];
/// Extended attribute names the xattr ops use.
const XATTRS: [&str; 3] = ["user.a", "user.b", "trusted.t"];
const SLOTS: usize = 6;
/// Directory streams open at once (opendir).
const DIR_STREAMS: usize = 2;
/// --sync never for most sequences: the comparison is of what programs see, and syncs would
/// only slow it; a few run under the default (--sync always), whose replies wait for syncs.
const SYNC_NEVER: &[&str] = &["--sync", "never"];

/// A record is a `<uuid>.json` in any directory.
fn is_record(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    recordfs::record::is_record_name(base.as_bytes())
}

/// The JSON rule: JSON text is UTF-8 (RFC 8259), also inside strings, which serde_json does
/// not check in a value it only skips.
fn valid_json(bytes: &[u8]) -> bool {
    bytes.is_empty()
        || std::str::from_utf8(bytes)
            .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Open {
        slot: usize,
        name: usize,
        flags: i32,
        mode: u32,
    },
    Dup {
        slot: usize,
        to: usize,
    },
    Close {
        slot: usize,
    },
    Read {
        slot: usize,
        len: usize,
    },
    Pread {
        slot: usize,
        off: i64,
        len: usize,
    },
    Write {
        slot: usize,
        data: Vec<u8>,
    },
    Pwrite {
        slot: usize,
        off: i64,
        data: Vec<u8>,
    },
    Lseek {
        slot: usize,
        off: i64,
        whence: i32,
    },
    Ftruncate {
        slot: usize,
        len: i64,
    },
    Truncate {
        name: usize,
        len: i64,
    },
    Fsync {
        slot: usize,
    },
    Fstat {
        slot: usize,
    },
    Rename {
        from: usize,
        to: usize,
        flags: u32,
    },
    Unlink {
        name: usize,
    },
    /// link(2) of `from` (a symlink itself, not followed) as `to`.
    Link {
        from: usize,
        to: usize,
    },
    Chmod {
        name: usize,
        mode: u32,
    },
    Utimens {
        name: usize,
        sec: i64,
        nsec: i64,
        nofollow: bool,
    },
    Symlink {
        target: usize,
        name: usize,
    },
    Readlink {
        name: usize,
    },
    MmapRead {
        slot: usize,
    },
    MmapWrite {
        slot: usize,
        off: usize,
        data: Vec<u8>,
    },
    Fchmod {
        slot: usize,
        mode: u32,
    },
    Futimens {
        slot: usize,
        sec: i64,
        nsec: i64,
    },
    Fchown {
        slot: usize,
        uid: u32,
        gid: u32,
    },
    Mkdir {
        dir: usize,
        mode: u32,
    },
    Rmdir {
        dir: usize,
    },
    /// rename(2) of one of `DIRS` to another.
    RenameDir {
        from: usize,
        to: usize,
        flags: u32,
    },
    SetXattr {
        name: usize,
        key: usize,
        value: Vec<u8>,
        flags: i32,
    },
    GetXattr {
        name: usize,
        key: usize,
    },
    ListXattr {
        name: usize,
    },
    RemoveXattr {
        name: usize,
        key: usize,
    },
    /// opendir(3) of the root (0) or of `DIRS[dir - 1]` into stream `ds`.
    Opendir {
        ds: usize,
        dir: usize,
    },
    /// Up to `n` readdir(3) calls on stream `ds`; at the end of the stream, what it returned
    /// is checked (`DirStream::check`).
    Readdir {
        ds: usize,
        n: usize,
    },
    Telldir {
        ds: usize,
    },
    /// seekdir(3) to the position the last telldir gave.
    Seekdir {
        ds: usize,
    },
    Rewinddir {
        ds: usize,
    },
    Closedir {
        ds: usize,
    },
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// One line per op, `name arg arg ...`: the format of `tests/differential/*.ops`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Op::Open {
                slot,
                name,
                flags,
                mode,
            } => {
                write!(f, "open {slot} {name} {flags:#x} {mode:#o}")
            }
            Op::Dup { slot, to } => write!(f, "dup {slot} {to}"),
            Op::Close { slot } => write!(f, "close {slot}"),
            Op::Read { slot, len } => write!(f, "read {slot} {len}"),
            Op::Pread { slot, off, len } => write!(f, "pread {slot} {off} {len}"),
            Op::Write { slot, data } => write!(f, "write {slot} {}", hex(data)),
            Op::Pwrite { slot, off, data } => write!(f, "pwrite {slot} {off} {}", hex(data)),
            Op::Lseek { slot, off, whence } => write!(f, "lseek {slot} {off} {whence}"),
            Op::Ftruncate { slot, len } => write!(f, "ftruncate {slot} {len}"),
            Op::Truncate { name, len } => write!(f, "truncate {name} {len}"),
            Op::Fsync { slot } => write!(f, "fsync {slot}"),
            Op::Fstat { slot } => write!(f, "fstat {slot}"),
            Op::Rename { from, to, flags } => write!(f, "rename {from} {to} {flags}"),
            Op::Unlink { name } => write!(f, "unlink {name}"),
            Op::Link { from, to } => write!(f, "link {from} {to}"),
            Op::Chmod { name, mode } => write!(f, "chmod {name} {mode:#o}"),
            Op::Utimens {
                name,
                sec,
                nsec,
                nofollow,
            } => {
                write!(f, "utimens {name} {sec} {nsec} {}", *nofollow as u8)
            }
            Op::Symlink { target, name } => write!(f, "symlink {target} {name}"),
            Op::Readlink { name } => write!(f, "readlink {name}"),
            Op::MmapRead { slot } => write!(f, "mmap_read {slot}"),
            Op::Fchmod { slot, mode } => write!(f, "fchmod {slot} {mode:#o}"),
            Op::Futimens { slot, sec, nsec } => write!(f, "futimens {slot} {sec} {nsec}"),
            Op::Fchown { slot, uid, gid } => write!(f, "fchown {slot} {uid} {gid}"),
            Op::MmapWrite { slot, off, data } => {
                write!(f, "mmap_write {slot} {off} {}", hex(data))
            }
            Op::Mkdir { dir, mode } => write!(f, "mkdir {dir} {mode:#o}"),
            Op::Rmdir { dir } => write!(f, "rmdir {dir}"),
            Op::RenameDir { from, to, flags } => write!(f, "rename_dir {from} {to} {flags}"),
            Op::SetXattr {
                name,
                key,
                value,
                flags,
            } => write!(f, "setxattr {name} {key} {flags} {}", hex(value)),
            Op::GetXattr { name, key } => write!(f, "getxattr {name} {key}"),
            Op::ListXattr { name } => write!(f, "listxattr {name}"),
            Op::RemoveXattr { name, key } => write!(f, "removexattr {name} {key}"),
            Op::Opendir { ds, dir } => write!(f, "opendir {ds} {dir}"),
            Op::Readdir { ds, n } => write!(f, "readdir {ds} {n}"),
            Op::Telldir { ds } => write!(f, "telldir {ds}"),
            Op::Seekdir { ds } => write!(f, "seekdir {ds}"),
            Op::Rewinddir { ds } => write!(f, "rewinddir {ds}"),
            Op::Closedir { ds } => write!(f, "closedir {ds}"),
        }
    }
}

fn parse_op(line: &str) -> Op {
    let w: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| -> i64 {
        let s = w[i];
        if let Some(h) = s.strip_prefix("0x") {
            i64::from_str_radix(h, 16).unwrap()
        } else if let Some(o) = s.strip_prefix("0o") {
            i64::from_str_radix(o, 8).unwrap()
        } else {
            s.parse().unwrap()
        }
    };
    let u = |i: usize| n(i) as usize;
    match w[0] {
        "open" => Op::Open {
            slot: u(1),
            name: u(2),
            flags: n(3) as i32,
            mode: n(4) as u32,
        },
        "dup" => Op::Dup {
            slot: u(1),
            to: u(2),
        },
        "close" => Op::Close { slot: u(1) },
        "read" => Op::Read {
            slot: u(1),
            len: u(2),
        },
        "pread" => Op::Pread {
            slot: u(1),
            off: n(2),
            len: u(3),
        },
        "write" => Op::Write {
            slot: u(1),
            data: unhex(w[2]),
        },
        "pwrite" => Op::Pwrite {
            slot: u(1),
            off: n(2),
            data: unhex(w[3]),
        },
        "lseek" => Op::Lseek {
            slot: u(1),
            off: n(2),
            whence: n(3) as i32,
        },
        "ftruncate" => Op::Ftruncate {
            slot: u(1),
            len: n(2),
        },
        "truncate" => Op::Truncate {
            name: u(1),
            len: n(2),
        },
        "fsync" => Op::Fsync { slot: u(1) },
        "fstat" => Op::Fstat { slot: u(1) },
        "rename" => Op::Rename {
            from: u(1),
            to: u(2),
            flags: n(3) as u32,
        },
        "unlink" => Op::Unlink { name: u(1) },
        "link" => Op::Link {
            from: u(1),
            to: u(2),
        },
        "chmod" => Op::Chmod {
            name: u(1),
            mode: n(2) as u32,
        },
        "utimens" => Op::Utimens {
            name: u(1),
            sec: n(2),
            nsec: n(3),
            nofollow: n(4) != 0,
        },
        "symlink" => Op::Symlink {
            target: u(1),
            name: u(2),
        },
        "readlink" => Op::Readlink { name: u(1) },
        "mmap_read" => Op::MmapRead { slot: u(1) },
        "fchmod" => Op::Fchmod {
            slot: u(1),
            mode: n(2) as u32,
        },
        "futimens" => Op::Futimens {
            slot: u(1),
            sec: n(2),
            nsec: n(3),
        },
        "fchown" => Op::Fchown {
            slot: u(1),
            uid: n(2) as u32,
            gid: n(3) as u32,
        },
        "mmap_write" => Op::MmapWrite {
            slot: u(1),
            off: u(2),
            data: unhex(w[3]),
        },
        "mkdir" => Op::Mkdir {
            dir: u(1),
            mode: n(2) as u32,
        },
        "rmdir" => Op::Rmdir { dir: u(1) },
        "rename_dir" => Op::RenameDir {
            from: u(1),
            to: u(2),
            flags: n(3) as u32,
        },
        "setxattr" => Op::SetXattr {
            name: u(1),
            key: u(2),
            flags: n(3) as i32,
            value: unhex(w.get(4).copied().unwrap_or("")),
        },
        "getxattr" => Op::GetXattr {
            name: u(1),
            key: u(2),
        },
        "listxattr" => Op::ListXattr { name: u(1) },
        "opendir" => Op::Opendir {
            ds: u(1),
            dir: u(2),
        },
        "readdir" => Op::Readdir { ds: u(1), n: u(2) },
        "telldir" => Op::Telldir { ds: u(1) },
        "seekdir" => Op::Seekdir { ds: u(1) },
        "rewinddir" => Op::Rewinddir { ds: u(1) },
        "closedir" => Op::Closedir { ds: u(1) },
        "removexattr" => Op::RemoveXattr {
            name: u(1),
            key: u(2),
        },
        other => panic!("unknown op {other:?} in {line:?}"),
    }
}

// The generator: proptest strategies, which also shrink a failing sequence (fewer ops, shorter
// payloads, smaller offsets). Weights are out of 106.

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let json = (0..100_000u32, 0..20usize, any::<bool>()).prop_map(|(n, xs, newline)| {
        let mut s = format!("{{\"n\": {n}, \"s\": \"{}\"}}", "x".repeat(xs));
        if newline {
            s.push('\n');
        }
        s.into_bytes()
    });
    prop_oneof![
        4 => json,
        4 => vec(b' '..=b'~', 1..=40),
        1 => vec(any::<u8>(), 1..=20),
        1 => (3000..9000usize).prop_map(|n| (0..n).map(|i| b"0123456789abcdef"[i % 16]).collect()),
    ]
}

fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![5 => 0..16i64, 3 => 0..200i64, 2 => 0..9000i64]
}

fn io_len() -> impl Strategy<Value = usize> {
    select(vec![1usize, 7, 100, 8192])
}

fn open_flags() -> impl Strategy<Value = i32> {
    (
        select(vec![libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR]),
        weighted(0.5, weighted(0.2, Just(libc::O_EXCL))),
        weighted(0.25, Just(libc::O_TRUNC)),
        weighted(0.2, Just(libc::O_APPEND)),
    )
        .prop_map(|(acc, creat, trunc, append)| {
            let creat = creat.map_or(0, |excl| libc::O_CREAT | excl.unwrap_or(0));
            acc | creat | trunc.unwrap_or(0) | append.unwrap_or(0)
        })
}

fn op() -> impl Strategy<Value = Op> {
    let slot = || 0..SLOTS;
    let name = || 0..NAMES.len();
    let time = || 1_000_000_000..2_000_000_000i64;
    prop_oneof![
        16 => (slot(), name(), open_flags(), select(vec![0o644, 0o600, 0o755, 0o444]))
            .prop_map(|(slot, name, flags, mode)| Op::Open { slot, name, flags, mode }),
        3 => (slot(), slot()).prop_map(|(slot, to)| Op::Dup { slot, to }),
        10 => slot().prop_map(|slot| Op::Close { slot }),
        5 => (slot(), io_len()).prop_map(|(slot, len)| Op::Read { slot, len }),
        5 => (slot(), offset(), io_len()).prop_map(|(slot, off, len)| Op::Pread { slot, off, len }),
        9 => (slot(), payload()).prop_map(|(slot, data)| Op::Write { slot, data }),
        8 => (slot(), offset(), payload())
            .prop_map(|(slot, off, data)| Op::Pwrite { slot, off, data }),
        5 => (
            slot(),
            prop_oneof![9 => offset(), 1 => (0..50i64).prop_map(|o| -o)],
            select(vec![
                libc::SEEK_SET,
                libc::SEEK_CUR,
                libc::SEEK_END,
                libc::SEEK_DATA,
                libc::SEEK_HOLE,
            ]),
        )
            .prop_map(|(slot, off, whence)| Op::Lseek { slot, off, whence }),
        4 => (slot(), offset()).prop_map(|(slot, len)| Op::Ftruncate { slot, len }),
        2 => (name(), offset()).prop_map(|(name, len)| Op::Truncate { name, len }),
        3 => slot().prop_map(|slot| Op::Fsync { slot }),
        3 => slot().prop_map(|slot| Op::Fstat { slot }),
        7 => (
            name(),
            name(),
            select(vec![0, 0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]),
        )
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        4 => name().prop_map(|name| Op::Unlink { name }),
        4 => (name(), name()).prop_map(|(from, to)| Op::Link { from, to }),
        2 => (name(), select(vec![0o644, 0o600, 0o755, 0o400, 0o4755]))
            .prop_map(|(name, mode)| Op::Chmod { name, mode }),
        3 => (
            name(),
            time(),
            prop_oneof![4 => 0..1_000_000_000i64, 1 => Just(libc::UTIME_NOW)],
            weighted(0.2, Just(())),
        )
            .prop_map(|(name, sec, nsec, nofollow)| Op::Utimens {
                name,
                sec,
                nsec,
                nofollow: nofollow.is_some(),
            }),
        3 => (name(), name()).prop_map(|(target, name)| Op::Symlink { target, name }),
        2 => name().prop_map(|name| Op::Readlink { name }),
        3 => slot().prop_map(|slot| Op::MmapRead { slot }),
        3 => (slot(), offset(), payload()).prop_map(|(slot, off, data)| Op::MmapWrite {
            slot,
            off: off as usize,
            data,
        }),
        2 => (slot(), select(vec![0o644, 0o600, 0o755, 0o4755]))
            .prop_map(|(slot, mode)| Op::Fchmod { slot, mode }),
        2 => (slot(), time(), 0..1_000_000_000i64)
            .prop_map(|(slot, sec, nsec)| Op::Futimens { slot, sec, nsec }),
        2 => (slot(), select(vec![0, 1000, 65534]), select(vec![0, 1000, 65534]))
            .prop_map(|(slot, uid, gid)| Op::Fchown { slot, uid, gid }),
        6 => (0..DIRS.len(), select(vec![0o755, 0o700, 0o2775]))
            .prop_map(|(dir, mode)| Op::Mkdir { dir, mode }),
        2 => (0..DIRS.len()).prop_map(|dir| Op::Rmdir { dir }),
        3 => (
            0..DIRS.len(),
            0..DIRS.len(),
            select(vec![0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]),
        )
            .prop_map(|(from, to, flags)| Op::RenameDir { from, to, flags }),
        3 => (
            name(),
            0..XATTRS.len(),
            payload(),
            select(vec![0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
        )
            .prop_map(|(name, key, value, flags)| Op::SetXattr { name, key, value, flags }),
        2 => (name(), 0..XATTRS.len()).prop_map(|(name, key)| Op::GetXattr { name, key }),
        1 => name().prop_map(|name| Op::ListXattr { name }),
        1 => (name(), 0..XATTRS.len()).prop_map(|(name, key)| Op::RemoveXattr { name, key }),
        2 => (0..DIR_STREAMS, 0..=DIRS.len()).prop_map(|(ds, dir)| Op::Opendir { ds, dir }),
        4 => (0..DIR_STREAMS, select(vec![1usize, 2, 5, 100]))
            .prop_map(|(ds, n)| Op::Readdir { ds, n }),
        1 => (0..DIR_STREAMS).prop_map(|ds| Op::Telldir { ds }),
        1 => (0..DIR_STREAMS).prop_map(|ds| Op::Seekdir { ds }),
        1 => (0..DIR_STREAMS).prop_map(|ds| Op::Rewinddir { ds }),
        1 => (0..DIR_STREAMS).prop_map(|ds| Op::Closedir { ds }),
    ]
}

/// A sequence: 60 to 119 ops.
fn sequence() -> impl Strategy<Value = Vec<Op>> {
    vec(op(), 60..120)
}

// ---------------------------------------------------------------------------------------------
// Syscalls, as Result<value, errno>

type Res = Result<i64, i32>;

/// A libc call's `int` result, with errno taken at once (before the other side's call).
fn rc(ret: i32) -> Res {
    res(ret as i64)
}

fn res(ret: i64) -> Res {
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

fn cpath(dir: &Path, name: &str) -> CString {
    CString::new(dir.join(name).as_os_str().as_bytes()).unwrap()
}

fn lstat(path: &CString, follow: bool) -> Result<libc::stat, i32> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe {
        if follow {
            libc::stat(path.as_ptr(), &mut st)
        } else {
            libc::lstat(path.as_ptr(), &mut st)
        }
    };
    res(r as i64).map(|_| st)
}

fn fstat(fd: i32) -> Result<libc::stat, i32> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    res(unsafe { libc::fstat(fd, &mut st) } as i64).map(|_| st)
}

fn read_fd(fd: i32, len: usize, off: Option<i64>) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let n = unsafe {
        match off {
            Some(o) => libc::pread(fd, buf.as_mut_ptr().cast(), len, o),
            None => libc::read(fd, buf.as_mut_ptr().cast(), len),
        }
    };
    res(n as i64).map(|n| {
        buf.truncate(n as usize);
        buf
    })
}

fn read_path(path: &CString) -> Result<Vec<u8>, i32> {
    let fd =
        res(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) } as i64)? as i32;
    let mut all = Vec::new();
    loop {
        match read_fd(fd, 65536, None) {
            Ok(b) if b.is_empty() => break,
            Ok(b) => all.extend(b),
            Err(e) => {
                unsafe { libc::close(fd) };
                return Err(e);
            }
        }
    }
    unsafe { libc::close(fd) };
    Ok(all)
}

/// The current bytes behind a tmpfs descriptor, whatever its access mode, even unlinked.
fn content_of_fd(fd: i32) -> Vec<u8> {
    read_path(&CString::new(format!("/proc/self/fd/{fd}")).unwrap()).expect("reopen via /proc")
}

fn read_dir(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Directory streams

/// A directory's names (no `.` and `..`) with their inode numbers, read afresh; None if the
/// path is no directory now.
fn listing(dir: &Path) -> Option<BTreeMap<String, u64>> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), e.ino())
            })
            .collect(),
    )
}

/// One side (recordfs or tmpfs) of an open directory stream. POSIX leaves open whether a name
/// added or removed while a stream is open is returned; every other name must be returned
/// exactly once, also across telldir/seekdir, and nothing that was never there.
struct DirSide {
    dir: *mut libc::DIR,
    path: PathBuf,
    /// The directory's inode at opendir: once its path leads elsewhere (moved or removed),
    /// the names there say nothing about the stream.
    ino: u64,
    /// The names at opendir (or rewinddir) and as last seen after an op.
    at_open: BTreeMap<String, u64>,
    last: BTreeMap<String, u64>,
    /// Names added, removed or replaced since opendir (or rewinddir).
    touched: BTreeSet<String>,
    moved: bool,
    /// What readdir returned, in order; and telldir's answer with how many had been returned.
    seen: Vec<String>,
    mark: Option<(libc::c_long, usize)>,
}

impl DirSide {
    fn open(path: PathBuf) -> Result<DirSide, i32> {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let dir = unsafe { libc::opendir(c.as_ptr()) };
        if dir.is_null() {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let ino = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
        let at_open = listing(&path).unwrap_or_default();
        Ok(DirSide {
            dir,
            path,
            ino,
            last: at_open.clone(),
            at_open,
            touched: BTreeSet::new(),
            moved: false,
            seen: Vec::new(),
            mark: None,
        })
    }

    /// The directory the stream reads, wherever it is now: its path may lead elsewhere once
    /// it was moved, and names made in it after the move are still names it holds.
    fn here(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", unsafe {
            libc::dirfd(self.dir)
        }))
    }

    /// After any op: which names changed since the last look.
    fn observe(&mut self) {
        if std::fs::metadata(&self.path).map(|m| m.ino()).ok() != Some(self.ino) {
            self.moved = true;
        }
        let now = listing(&self.here()).unwrap_or_default();
        for (name, ino) in self.last.iter().chain(now.iter()) {
            if self.last.get(name) != Some(ino) || now.get(name) != Some(ino) {
                self.touched.insert(name.clone());
            }
        }
        self.last = now;
    }

    /// Up to `n` names; Ok(true) once the stream has ended.
    fn read(&mut self, n: usize) -> Result<bool, String> {
        for _ in 0..n {
            unsafe { *libc::__errno_location() = 0 };
            let e = unsafe { libc::readdir(self.dir) };
            if e.is_null() {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if errno != 0 {
                    return Err(format!("readdir of {}: errno {errno}", self.path.display()));
                }
                return Ok(true);
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
            let name = name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                self.seen.push(name);
            }
        }
        Ok(false)
    }

    /// At the end of the stream.
    fn check(&self) -> Step {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for name in &self.seen {
            *counts.entry(name).or_default() += 1;
        }
        let side = self.path.display();
        for (name, n) in &counts {
            let known = self.at_open.contains_key(*name) || self.touched.contains(*name);
            if !known {
                return Err(format!("readdir of {side}: {name:?} was never there"));
            }
            if *n > 1 && !self.touched.contains(*name) {
                return Err(format!("readdir of {side}: {name:?} returned {n} times"));
            }
        }
        if !self.moved {
            for name in self.at_open.keys() {
                if !self.touched.contains(name) && !counts.contains_key(name.as_str()) {
                    return Err(format!(
                        "readdir of {side}: {name:?}, there throughout, was not returned"
                    ));
                }
            }
        }
        Ok(())
    }

    fn rewind(&mut self) {
        unsafe { libc::rewinddir(self.dir) };
        self.at_open = listing(&self.here()).unwrap_or_default();
        self.last = self.at_open.clone();
        self.touched.clear();
        self.moved = std::fs::metadata(&self.path).map(|m| m.ino()).ok() != Some(self.ino);
        self.seen.clear();
        self.mark = None;
    }
}

impl Drop for DirSide {
    fn drop(&mut self) {
        unsafe { libc::closedir(self.dir) };
    }
}

// ---------------------------------------------------------------------------------------------
// The runner

struct Desc {
    /// The file, by its tmpfs inode number.
    ino: u64,
    acc: i32,
    /// Uncommitted changes (writes, ftruncate, or open with O_TRUNC).
    dirty: bool,
    /// Uncommitted writes or ftruncate: close(2) commits these (O_TRUNC alone waits for the
    /// last close).
    written: bool,
    /// A read-only description's version: the bytes committed when it was opened.
    snapshot: Option<Vec<u8>>,
    refs: usize,
    append: bool,
    /// The positions differ, until the next lseek(SEEK_SET or SEEK_END): after a read of a
    /// version tmpfs no longer has, or after a write with O_APPEND (the kernel takes the new
    /// position from its idea of the size, which a stat resets to the committed size; README,
    /// Semantics).
    position_unknown: bool,
}

struct Slot {
    r: i32,
    t: i32,
    desc: usize,
}

struct Runner {
    r: PathBuf,
    t: PathBuf,
    slots: Vec<Option<Slot>>,
    descs: HashMap<usize, Desc>,
    next_desc: usize,
    /// Per file: the bytes of its last commit, which recordfs shows to a path open or stat.
    committed: HashMap<u64, Vec<u8>>,
    /// Per file: an mtime set by utimensat and not changed since.
    mtime: HashMap<u64, (i64, i64)>,
    fixups: usize,
    /// Open directory streams: recordfs's side, then tmpfs's.
    streams: Vec<Option<[DirSide; 2]>>,
}

type Step = Result<(), String>;

fn same<T: PartialEq + fmt::Debug>(what: &str, r: T, t: T) -> Step {
    if r == t {
        Ok(())
    } else {
        Err(format!("{what}: recordfs {r:?}, tmpfs {t:?}"))
    }
}

fn errno_only<T>(r: &Result<T, i32>) -> Result<(), i32> {
    r.as_ref().map(|_| ()).map_err(|e| *e)
}

impl Runner {
    fn new(r: &Path, t: &Path) -> Runner {
        Runner {
            r: r.to_owned(),
            t: t.to_owned(),
            slots: (0..SLOTS).map(|_| None).collect(),
            descs: HashMap::new(),
            next_desc: 0,
            committed: HashMap::new(),
            mtime: HashMap::new(),
            fixups: 0,
            streams: (0..DIR_STREAMS).map(|_| None).collect(),
        }
    }

    fn both(&self, name: usize) -> (CString, CString) {
        (cpath(&self.r, NAMES[name]), cpath(&self.t, NAMES[name]))
    }

    /// The tmpfs inode behind `name`, following a symlink when `follow`.
    fn ino(&self, name: usize, follow: bool) -> Option<u64> {
        lstat(&cpath(&self.t, NAMES[name]), follow)
            .ok()
            .map(|s| s.st_ino)
    }

    /// The path a regular file has now (none once unlinked), wherever a directory's move
    /// took it.
    fn name_of(&self, ino: u64) -> Option<String> {
        tree(&self.t)
            .into_iter()
            .find(|(_, kind, i)| *kind == 'f' && *i == ino)
            .map(|(path, ..)| path)
    }

    /// Every path of a regular file (several once linked).
    fn names_of(&self, ino: u64) -> Vec<String> {
        tree(&self.t)
            .into_iter()
            .filter(|(_, kind, i)| *kind == 'f' && *i == ino)
            .map(|(path, ..)| path)
            .collect()
    }

    /// Whether the JSON rule holds for a file: one of its names is a record's.
    fn record_ino(&self, ino: u64) -> bool {
        self.names_of(ino).iter().any(|n| is_record(n))
    }

    fn dirty(&self, ino: u64) -> bool {
        self.descs.values().any(|d| d.ino == ino && d.dirty)
    }

    fn writer(&self, ino: u64) -> Option<usize> {
        self.descs
            .iter()
            .find(|(_, d)| d.ino == ino && d.acc != libc::O_RDONLY)
            .map(|(id, _)| *id)
    }

    fn slot_of_desc(&self, id: usize) -> usize {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.desc == id))
            .expect("an open description has a descriptor")
    }

    /// A commit of description `id`: recordfs now shows what tmpfs holds (an unlinked file's
    /// commit only to fstat of its open descriptors).
    fn committed_now(&mut self, id: usize) {
        let slot = self.slot_of_desc(id);
        let t = self.slots[slot].as_ref().unwrap().t;
        let d = self.descs.get_mut(&id).unwrap();
        d.dirty = false;
        d.written = false;
        let ino = d.ino;
        self.committed.insert(ino, content_of_fd(t));
    }

    /// Before a commit point of description `id`: a record must then hold valid JSON, so a
    /// write on both sides makes it so (counted in `fixups`).
    fn make_valid(&mut self, id: usize) -> Step {
        let slot = self.slot_of_desc(id);
        let (r, t) = {
            let s = self.slots[slot].as_ref().unwrap();
            (s.r, s.t)
        };
        let ino = self.descs[&id].ino;
        if !self.record_ino(ino) || valid_json(&content_of_fd(t)) {
            return Ok(());
        }
        self.fixups += 1;
        let text = format!("{{\"fixup\": {}}}\n", self.fixups);
        let b = text.as_bytes();
        let w = |fd| res(unsafe { libc::pwrite(fd, b.as_ptr().cast(), b.len(), 0) } as i64);
        same("fix-up pwrite", w(r), w(t))?;
        let tr = |fd| res(unsafe { libc::ftruncate(fd, b.len() as i64) } as i64);
        same("fix-up ftruncate", tr(r), tr(t))?;
        // O_APPEND descriptors write at the end whatever the offset: truncate and append.
        if !valid_json(&content_of_fd(t)) {
            same(
                "fix-up ftruncate 0",
                rc(unsafe { libc::ftruncate(r, 0) }),
                rc(unsafe { libc::ftruncate(t, 0) }),
            )?;
            same("fix-up write", w(r), w(t))?;
        }
        let d = self.descs.get_mut(&id).unwrap();
        d.dirty = true;
        d.written = true;
        self.mtime.remove(&ino);
        Ok(())
    }

    /// A truncate-only commit happens at release, which the kernel sends after close(2)
    /// returns: wait (bounded) for it to show.
    fn settle(&self, ino: u64) -> Step {
        let Some(name) = self.name_of(ino) else {
            return Ok(());
        };
        let want = self.committed[&ino].clone();
        let p = cpath(&self.r, &name);
        if wait_until(Duration::from_secs(10), || {
            read_path(&p).ok().as_ref() == Some(&want)
        }) {
            Ok(())
        } else {
            Err(format!("the commit at release of {name} never showed"))
        }
    }

    fn fd(&self, slot: usize) -> Option<(i32, i32, usize)> {
        self.slots[slot].as_ref().map(|s| (s.r, s.t, s.desc))
    }

    /// Runs `op` on both sides; open directory streams then note what it changed.
    fn step(&mut self, op: &Op) -> Step {
        let r = self.step_on_both(op);
        for stream in self.streams.iter_mut().flatten() {
            stream.iter_mut().for_each(DirSide::observe);
        }
        r
    }

    fn step_on_both(&mut self, op: &Op) -> Step {
        match *op {
            Op::Open {
                slot,
                name,
                flags,
                mode,
            } => {
                if self.slots[slot].is_some() {
                    return Ok(());
                }
                let writes =
                    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
                if let Some(ino) = self.ino(name, true) {
                    if writes && self.writer(ino).is_some() {
                        return Ok(());
                    }
                }
                let (pr, pt) = self.both(name);
                let flags = flags | libc::O_CLOEXEC;
                let r = res(unsafe { libc::open(pr.as_ptr(), flags, mode) } as i64);
                let t = res(unsafe { libc::open(pt.as_ptr(), flags, mode) } as i64);
                if let (Ok(r), Err(_)) | (Err(_), Ok(r)) = (&r, &t) {
                    // Close whichever succeeded before reporting.
                    let _ = unsafe { libc::close(*r as i32) };
                }
                same("open", errno_only(&r), errno_only(&t))?;
                let (Ok(r), Ok(t)) = (r, t) else {
                    return Ok(());
                };
                let ino = fstat(t as i32).unwrap().st_ino;
                let created = !self.committed.contains_key(&ino);
                if created {
                    self.committed.insert(ino, Vec::new());
                }
                let truncated = flags & libc::O_TRUNC != 0;
                if created || truncated {
                    self.mtime.remove(&ino);
                }
                let acc = flags & libc::O_ACCMODE;
                // A reader has no copy to hold the truncation: it is a commit of its own.
                if truncated && acc == libc::O_RDONLY {
                    self.committed.insert(ino, Vec::new());
                }
                let id = self.next_desc;
                self.next_desc += 1;
                self.descs.insert(
                    id,
                    Desc {
                        ino,
                        acc,
                        dirty: truncated && acc != libc::O_RDONLY,
                        written: false,
                        snapshot: (acc == libc::O_RDONLY).then(|| self.committed[&ino].clone()),
                        refs: 1,
                        append: flags & libc::O_APPEND != 0,
                        position_unknown: false,
                    },
                );
                self.slots[slot] = Some(Slot {
                    r: r as i32,
                    t: t as i32,
                    desc: id,
                });
                Ok(())
            }
            Op::Dup { slot, to } => {
                let (Some((r, t, id)), true) = (self.fd(slot), self.slots[to].is_none()) else {
                    return Ok(());
                };
                let r2 = unsafe { libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 0) };
                let t2 = unsafe { libc::fcntl(t, libc::F_DUPFD_CLOEXEC, 0) };
                assert!(r2 >= 0 && t2 >= 0, "dup");
                self.descs.get_mut(&id).unwrap().refs += 1;
                self.slots[to] = Some(Slot {
                    r: r2,
                    t: t2,
                    desc: id,
                });
                Ok(())
            }
            Op::Close { slot } => self.close(slot),
            Op::Read { slot, len } => self.read(slot, len, None),
            Op::Pread { slot, off, len } => self.read(slot, len, Some(off)),
            Op::Write { slot, ref data } => self.write(slot, data, None),
            Op::Pwrite {
                slot,
                off,
                ref data,
            } => self.write(slot, data, Some(off)),
            Op::Lseek { slot, off, whence } => {
                let Some((r, t, id)) = self.fd(slot) else {
                    return Ok(());
                };
                let cur = unsafe { libc::lseek(r, 0, libc::SEEK_CUR) };
                let rr = res(unsafe { libc::lseek(r, off, whence) });
                let tt = res(unsafe { libc::lseek(t, off, whence) });
                let d = &self.descs[&id];
                // The size this descriptor sees: its own copy for a writer, the last commit
                // for a reader (whose reads still come from the version it opened).
                let size = match d.acc {
                    libc::O_RDONLY => self.committed.get(&d.ino).map_or(0, |c| c.len()) as i64,
                    _ => content_of_fd(t).len() as i64,
                };
                let want = match whence {
                    libc::SEEK_SET if off >= 0 => Ok(off),
                    libc::SEEK_CUR if cur + off >= 0 => Ok(cur + off),
                    libc::SEEK_END if size + off >= 0 => Ok(size + off),
                    libc::SEEK_SET | libc::SEEK_CUR | libc::SEEK_END => Err(libc::EINVAL),
                    // No holes are reported: all of a file is data (allowed by POSIX).
                    _ if off < 0 || off >= size => Err(libc::ENXIO),
                    libc::SEEK_DATA => Ok(off),
                    _ => Ok(size),
                };
                same("lseek (rule)", rr, want)?;
                // Where recordfs's idea of the size is tmpfs's, the answers agree (but for
                // holes, which tmpfs reports).
                let known = !d.position_unknown;
                // (A file all hole has no data for tmpfs: even the errno may differ there.)
                let holes = whence == libc::SEEK_DATA || whence == libc::SEEK_HOLE;
                // (From differing positions, SEEK_CUR may go below 0 on one side only.)
                let from_here = whence == libc::SEEK_CUR && !known;
                if size == content_of_fd(t).len() as i64 && !holes && !from_here {
                    same("lseek errno", errno_only(&rr), errno_only(&tt))?;
                    if known {
                        same("lseek", rr, tt)?;
                    }
                }
                // Where both moved to one place, the positions are known to agree again.
                let d = self.descs.get_mut(&id).unwrap();
                match (rr, tt) {
                    (Ok(a), Ok(b)) if a == b => d.position_unknown &= whence == libc::SEEK_CUR,
                    (Err(_), Err(_)) => {}
                    _ => d.position_unknown = true,
                }
                Ok(())
            }
            Op::Ftruncate { slot, len } => {
                let Some((r, t, id)) = self.fd(slot) else {
                    return Ok(());
                };
                let rr = res(unsafe { libc::ftruncate(r, len) } as i64);
                let tt = res(unsafe { libc::ftruncate(t, len) } as i64);
                same("ftruncate", rr, tt)?;
                if rr.is_ok() {
                    let d = self.descs.get_mut(&id).unwrap();
                    d.dirty = true;
                    d.written = true;
                    let ino = d.ino;
                    self.mtime.remove(&ino);
                }
                Ok(())
            }
            Op::Truncate { name, len } => {
                if let Some(ino) = self.ino(name, true) {
                    if self.writer(ino).is_some() {
                        return Ok(());
                    }
                    if self.record_ino(ino) {
                        let mut c = self.committed[&ino].clone();
                        c.resize(len as usize, 0);
                        if !valid_json(&c) {
                            return Ok(());
                        }
                    }
                }
                let (pr, pt) = self.both(name);
                let rr = res(unsafe { libc::truncate(pr.as_ptr(), len) } as i64);
                let tt = res(unsafe { libc::truncate(pt.as_ptr(), len) } as i64);
                same("truncate", rr, tt)?;
                if rr.is_ok() {
                    let ino = self.ino(name, true).unwrap();
                    self.committed.insert(ino, read_path(&pt).unwrap());
                    self.mtime.remove(&ino);
                }
                Ok(())
            }
            Op::Fsync { slot } => {
                let Some((r, t, id)) = self.fd(slot) else {
                    return Ok(());
                };
                let commits = self.descs[&id].dirty;
                if commits {
                    self.make_valid(id)?;
                }
                same(
                    "fsync",
                    rc(unsafe { libc::fsync(r) }),
                    rc(unsafe { libc::fsync(t) }),
                )?;
                if commits {
                    self.committed_now(id);
                }
                Ok(())
            }
            Op::Fstat { slot } => {
                let Some((r, t, id)) = self.fd(slot) else {
                    return Ok(());
                };
                let ino = self.descs[&id].ino;
                self.compare_stat("fstat", ino, fstat(r), fstat(t))
            }
            Op::Rename { from, to, flags } => self.rename(from, to, flags),
            Op::Link { from, to } => self.link(from, to),
            Op::Unlink { name } => {
                let (pr, pt) = self.both(name);
                same(
                    "unlink",
                    rc(unsafe { libc::unlink(pr.as_ptr()) }),
                    rc(unsafe { libc::unlink(pt.as_ptr()) }),
                )
            }
            Op::Chmod { name, mode } => {
                let (pr, pt) = self.both(name);
                same(
                    "chmod",
                    rc(unsafe { libc::chmod(pr.as_ptr(), mode) }),
                    rc(unsafe { libc::chmod(pt.as_ptr(), mode) }),
                )
            }
            Op::Utimens {
                name,
                sec,
                nsec,
                nofollow,
            } => {
                let (pr, pt) = self.both(name);
                let ts = [
                    libc::timespec {
                        tv_sec: sec - 5,
                        tv_nsec: 0,
                    },
                    libc::timespec {
                        tv_sec: sec,
                        tv_nsec: nsec,
                    },
                ];
                let flags = if nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
                let u = |p: &CString| unsafe {
                    libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), flags)
                };
                let rr = u(&pr);
                same("utimensat", rr, u(&pt))?;
                if rr == 0 {
                    let ino = self.ino(name, !nofollow).unwrap();
                    if nsec == libc::UTIME_NOW {
                        self.mtime.remove(&ino);
                    } else {
                        self.mtime.insert(ino, (sec, nsec));
                    }
                }
                Ok(())
            }
            Op::Symlink { target, name } => {
                let (pr, pt) = self.both(name);
                let tgt = CString::new(NAMES[target]).unwrap();
                same(
                    "symlink",
                    rc(unsafe { libc::symlink(tgt.as_ptr(), pr.as_ptr()) }),
                    rc(unsafe { libc::symlink(tgt.as_ptr(), pt.as_ptr()) }),
                )
            }
            Op::Readlink { name } => {
                let (pr, pt) = self.both(name);
                same(
                    "readlink",
                    std::fs::read_link(pr.to_str().unwrap()).map_err(|e| errno_of(&e)),
                    std::fs::read_link(pt.to_str().unwrap()).map_err(|e| errno_of(&e)),
                )
            }
            Op::Mkdir { dir, mode } => {
                let (pr, pt) = (cpath(&self.r, DIRS[dir]), cpath(&self.t, DIRS[dir]));
                same(
                    "mkdir",
                    rc(unsafe { libc::mkdir(pr.as_ptr(), mode) }),
                    rc(unsafe { libc::mkdir(pt.as_ptr(), mode) }),
                )
            }
            Op::Rmdir { dir } => {
                let (pr, pt) = (cpath(&self.r, DIRS[dir]), cpath(&self.t, DIRS[dir]));
                same(
                    "rmdir",
                    rc(unsafe { libc::rmdir(pr.as_ptr()) }),
                    rc(unsafe { libc::rmdir(pt.as_ptr()) }),
                )
            }
            Op::RenameDir { from, to, flags } => {
                let rn = |root: &Path| {
                    let (a, b) = (cpath(root, DIRS[from]), cpath(root, DIRS[to]));
                    rc(unsafe {
                        libc::syscall(
                            libc::SYS_renameat2,
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            flags,
                        ) as i32
                    })
                };
                same("rename of a directory", rn(&self.r), rn(&self.t))
            }
            Op::SetXattr {
                name,
                key,
                ref value,
                flags,
            } => {
                let (pr, pt) = self.both(name);
                let k = CString::new(XATTRS[key]).unwrap();
                let set = |p: &CString| {
                    rc(unsafe {
                        libc::setxattr(
                            p.as_ptr(),
                            k.as_ptr(),
                            value.as_ptr().cast(),
                            value.len(),
                            flags,
                        )
                    })
                };
                same("setxattr", set(&pr), set(&pt))
            }
            Op::GetXattr { name, key } => {
                let (pr, pt) = self.both(name);
                same(
                    "getxattr",
                    xattr_of(&pr, XATTRS[key]),
                    xattr_of(&pt, XATTRS[key]),
                )
            }
            Op::ListXattr { name } => {
                let (pr, pt) = self.both(name);
                same("listxattr", xattr_names(&pr), xattr_names(&pt))
            }
            Op::RemoveXattr { name, key } => {
                let (pr, pt) = self.both(name);
                let k = CString::new(XATTRS[key]).unwrap();
                let remove = |p: &CString| rc(unsafe { libc::removexattr(p.as_ptr(), k.as_ptr()) });
                same("removexattr", remove(&pr), remove(&pt))
            }
            Op::Opendir { ds, dir } => {
                if self.streams[ds].is_some() {
                    return Ok(());
                }
                let at = |root: &Path| match dir {
                    0 => root.to_owned(),
                    d => root.join(DIRS[d - 1]),
                };
                match (DirSide::open(at(&self.r)), DirSide::open(at(&self.t))) {
                    (Ok(r), Ok(t)) => {
                        self.streams[ds] = Some([r, t]);
                        Ok(())
                    }
                    (r, t) => same("opendir", errno_only(&r), errno_only(&t)),
                }
            }
            Op::Readdir { ds, n } => {
                let Some(sides) = self.streams[ds].as_mut() else {
                    return Ok(());
                };
                for side in sides.iter_mut() {
                    if side.read(n)? {
                        side.check()?;
                    }
                }
                Ok(())
            }
            Op::Telldir { ds } => {
                for side in self.streams[ds].iter_mut().flatten() {
                    let pos = unsafe { libc::telldir(side.dir) };
                    side.mark = Some((pos, side.seen.len()));
                }
                Ok(())
            }
            Op::Seekdir { ds } => {
                for side in self.streams[ds].iter_mut().flatten() {
                    if let Some((pos, seen)) = side.mark {
                        unsafe { libc::seekdir(side.dir, pos) };
                        side.seen.truncate(seen);
                    }
                }
                Ok(())
            }
            Op::Rewinddir { ds } => {
                self.streams[ds]
                    .iter_mut()
                    .flatten()
                    .for_each(DirSide::rewind);
                Ok(())
            }
            Op::Closedir { ds } => {
                self.streams[ds] = None;
                Ok(())
            }
            Op::MmapRead { slot } => self.mmap(slot, None),
            Op::Fchmod { slot, mode } => {
                let Some((r, t, _)) = self.fd(slot) else {
                    return Ok(());
                };
                same(
                    "fchmod",
                    rc(unsafe { libc::fchmod(r, mode) }),
                    rc(unsafe { libc::fchmod(t, mode) }),
                )
            }
            Op::Futimens { slot, sec, nsec } => {
                let Some((r, t, id)) = self.fd(slot) else {
                    return Ok(());
                };
                let ts = [
                    libc::timespec {
                        tv_sec: sec - 5,
                        tv_nsec: 0,
                    },
                    libc::timespec {
                        tv_sec: sec,
                        tv_nsec: nsec,
                    },
                ];
                let rr = rc(unsafe { libc::futimens(r, ts.as_ptr()) });
                same(
                    "futimens",
                    rr,
                    rc(unsafe { libc::futimens(t, ts.as_ptr()) }),
                )?;
                if rr == Ok(0) {
                    let ino = self.descs[&id].ino;
                    self.mtime.insert(ino, (sec, nsec));
                }
                Ok(())
            }
            Op::Fchown { slot, uid, gid } => {
                let Some((r, t, _)) = self.fd(slot) else {
                    return Ok(());
                };
                same(
                    "fchown",
                    rc(unsafe { libc::fchown(r, uid, gid) }),
                    rc(unsafe { libc::fchown(t, uid, gid) }),
                )
            }
            Op::MmapWrite {
                slot,
                off,
                ref data,
            } => self.mmap(slot, Some((off, data))),
        }
    }

    fn close(&mut self, slot: usize) -> Step {
        let Some((r, t, id)) = self.fd(slot) else {
            return Ok(());
        };
        let (written, last) = (self.descs[&id].written, self.descs[&id].refs == 1);
        if written || (last && self.descs[&id].dirty) {
            self.make_valid(id)?;
        }
        // Truncated only (O_TRUNC): a plain file commits at this close, a record at the
        // last close, which the kernel sends after close(2) returns.
        let d = &self.descs[&id];
        let record = self.record_ino(d.ino);
        let at_flush = d.written || (d.dirty && !record);
        let at_release = !at_flush && last && d.dirty;
        let ino = d.ino;
        if at_flush || at_release {
            self.committed_now(id);
        }
        same(
            "close",
            rc(unsafe { libc::close(r) }),
            rc(unsafe { libc::close(t) }),
        )?;
        self.slots[slot] = None;
        let d = self.descs.get_mut(&id).unwrap();
        d.refs -= 1;
        if d.refs == 0 {
            self.descs.remove(&id);
        }
        if at_release {
            self.settle(ino)?;
        }
        Ok(())
    }

    fn read(&mut self, slot: usize, len: usize, off: Option<i64>) -> Step {
        let Some((r, t, id)) = self.fd(slot) else {
            return Ok(());
        };
        let pos_r = off.unwrap_or_else(|| unsafe { libc::lseek(r, 0, libc::SEEK_CUR) });
        let pos_t = off.unwrap_or_else(|| unsafe { libc::lseek(t, 0, libc::SEEK_CUR) });
        let d = &self.descs[&id];
        if !d.position_unknown {
            same("position", pos_r, pos_t)?;
        }
        // A reader sees the version it opened; a writer (the only one) sees what tmpfs holds.
        let content = match &d.snapshot {
            Some(snap) => snap.clone(),
            None => content_of_fd(t),
        };
        let rr = read_fd(r, len, off);
        let tt = read_fd(t, len, off);
        same("read errno", errno_only(&rr), errno_only(&tt))?;
        // A reader whose version is not tmpfs's current one moves by different counts.
        if rr.as_ref().map(Vec::len) != tt.as_ref().map(Vec::len) && off.is_none() {
            self.descs.get_mut(&id).unwrap().position_unknown = true;
        }
        if rr.is_ok() {
            let start = (pos_r.max(0) as usize).min(content.len());
            let end = (start + len).min(content.len());
            same("read", rr, Ok(content[start..end].to_vec()))?;
        }
        Ok(())
    }

    fn write(&mut self, slot: usize, data: &[u8], off: Option<i64>) -> Step {
        let Some((r, t, id)) = self.fd(slot) else {
            return Ok(());
        };
        // Where the positions differ (a documented difference moved one), a write() would
        // only make the two files differ: skipped, like a step the rules forbid.
        let d = &self.descs[&id];
        if off.is_none() && d.position_unknown && !d.append {
            return Ok(());
        }
        let w = |fd| {
            res(unsafe {
                match off {
                    Some(o) => libc::pwrite(fd, data.as_ptr().cast(), data.len(), o),
                    None => libc::write(fd, data.as_ptr().cast(), data.len()),
                }
            } as i64)
        };
        let rr = w(r);
        same("write", rr, w(t))?;
        if rr.is_ok() {
            let d = self.descs.get_mut(&id).unwrap();
            d.dirty = true;
            d.written = true;
            d.position_unknown |= d.append;
            let ino = d.ino;
            self.mtime.remove(&ino);
        }
        Ok(())
    }

    fn rename(&mut self, from: usize, to: usize, flags: u32) -> Step {
        let src = self.ino(from, false);
        let dst = self.ino(to, false);
        let src_file = src.filter(|i| self.names_of(*i).iter().any(|n| n == NAMES[from]));
        // What the kernel refuses itself (a missing source or target, an existing target
        // with RENAME_NOREPLACE) or does itself (a rename onto the same file) never reaches
        // recordfs; what does reaches it commits the source's uncommitted writes first.
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        // The kernel resolves the target's directory first: a missing one never reaches us.
        let to_dir = NAMES[to].rsplit_once('/').map_or("", |(d, _)| d);
        let to_dir_exists = self.t.join(to_dir).is_dir();
        let succeeds = to_dir_exists
            && src.is_some()
            && src != dst
            && !(flags & libc::RENAME_NOREPLACE != 0 && dst.is_some())
            && !(exchange && dst.is_none());
        let writer = src_file
            .and_then(|i| self.writer(i))
            .filter(|id| succeeds && self.descs[id].dirty);
        if let Some(id) = writer {
            self.make_valid(id)?;
        }
        if succeeds {
            // A plain file becoming a record must already hold valid JSON (tested apart).
            let becomes = |ino: Option<u64>, old: usize, new: usize| {
                ino.is_some_and(|i| {
                    self.committed.contains_key(&i)
                        && self.names_of(i).iter().any(|n| n == NAMES[old])
                        && is_record(NAMES[new])
                        && !self.record_ino(i)
                        && !valid_json(&match writer {
                            Some(id) if self.descs[&id].ino == i => {
                                content_of_fd(self.slots[self.slot_of_desc(id)].as_ref().unwrap().t)
                            }
                            _ => self.committed[&i].clone(),
                        })
                })
            };
            if becomes(src, from, to) || (exchange && becomes(dst, to, from)) {
                return Ok(());
            }
        }
        if let Some(id) = writer {
            self.committed_now(id);
        }
        let (fr, ft) = self.both(from);
        let (tr, tt) = self.both(to);
        let rn = |a: &CString, b: &CString| unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                flags,
            ) as i32
        };
        same("rename", rn(&fr, &tr), rn(&ft, &tt))
    }

    /// link(2): what reaches recordfs (the kernel refuses an existing target or a missing
    /// source or directory itself) commits the file's uncommitted writes first, as a rename
    /// does; a plain file that would get a record's name must hold valid JSON (tested apart).
    fn link(&mut self, from: usize, to: usize) -> Step {
        let src = self.ino(from, false);
        let to_dir = NAMES[to].rsplit_once('/').map_or("", |(d, _)| d);
        let reaches =
            src.is_some() && self.ino(to, false).is_none() && self.t.join(to_dir).is_dir();
        let file = src.filter(|i| {
            reaches
                && self.committed.contains_key(i)
                && self.names_of(*i).iter().any(|n| n == NAMES[from])
        });
        let writer = file
            .and_then(|i| self.writer(i))
            .filter(|id| self.descs[id].dirty);
        if let Some(id) = writer {
            self.make_valid(id)?;
        }
        if let Some(i) = file.filter(|i| is_record(NAMES[to]) && !self.record_ino(*i)) {
            let bytes = match writer {
                Some(id) => content_of_fd(self.slots[self.slot_of_desc(id)].as_ref().unwrap().t),
                None => self.committed[&i].clone(),
            };
            if !valid_json(&bytes) {
                return Ok(());
            }
        }
        if let Some(id) = writer {
            self.committed_now(id);
        }
        let (fr, ft) = self.both(from);
        let (tr, tt) = self.both(to);
        same(
            "link",
            rc(unsafe { libc::link(fr.as_ptr(), tr.as_ptr()) }),
            rc(unsafe { libc::link(ft.as_ptr(), tt.as_ptr()) }),
        )
    }

    fn mmap(&mut self, slot: usize, write: Option<(usize, &Vec<u8>)>) -> Step {
        let Some((r, t, id)) = self.fd(slot) else {
            return Ok(());
        };
        let d = &self.descs[&id];
        let current = content_of_fd(t);
        // The page cache is the inode's: a mapping shows the current version only when no
        // description holds uncommitted writes and this one opened the current version.
        if self.dirty(d.ino)
            || d.snapshot.as_ref().is_some_and(|s| *s != current)
            || current.is_empty()
        {
            return Ok(());
        }
        // msync(MS_SYNC) is an fsync: a commit point, at which a record must hold JSON.
        if write.is_some() && (d.acc != libc::O_RDWR || self.record_ino(d.ino)) {
            return Ok(());
        }
        let ino = d.ino;
        let len = current.len();
        // A program learns the length to map from fstat, which also tells the kernel the size
        // its page faults check (README, Semantics: mmap).
        same(
            "fstat size before mmap",
            fstat(r).map(|s| s.st_size),
            Ok(len as i64),
        )?;
        let prot = if write.is_some() {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let map =
            |fd| unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        let (mr, mt) = (map(r), map(t));
        let ok = |m| m != libc::MAP_FAILED;
        if ok(mr) != ok(mt) {
            for m in [mr, mt].into_iter().filter(|m| ok(*m)) {
                unsafe { libc::munmap(m, len) };
            }
            return Err(format!("mmap: recordfs {}, tmpfs {}", ok(mr), ok(mt)));
        }
        if !ok(mr) {
            return Ok(());
        }
        let view =
            |m: *mut libc::c_void| unsafe { std::slice::from_raw_parts_mut(m as *mut u8, len) };
        let result = (|| {
            same("mmap bytes", &view(mr)[..], &view(mt)[..])?;
            if let Some((off, data)) = write {
                let off = off.min(len - 1);
                let n = data.len().min(len - off);
                view(mr)[off..off + n].copy_from_slice(&data[..n]);
                view(mt)[off..off + n].copy_from_slice(&data[..n]);
                same(
                    "msync",
                    rc(unsafe { libc::msync(mr, len, libc::MS_SYNC) }),
                    rc(unsafe { libc::msync(mt, len, libc::MS_SYNC) }),
                )?;
            }
            Ok(())
        })();
        unsafe {
            libc::munmap(mr, len);
            libc::munmap(mt, len);
        }
        if write.is_some() {
            self.descs.get_mut(&id).unwrap().dirty = true;
            self.committed_now(id);
            self.mtime.remove(&ino);
        }
        result
    }

    fn compare_stat(
        &self,
        what: &str,
        ino: u64,
        r: Result<libc::stat, i32>,
        t: Result<libc::stat, i32>,
    ) -> Step {
        same(&format!("{what} errno"), errno_only(&r), errno_only(&t))?;
        let (Ok(r), Ok(t)) = (r, t) else {
            return Ok(());
        };
        same(
            &format!("{what} mode"),
            format!("{:o}", r.st_mode),
            format!("{:o}", t.st_mode),
        )?;
        same(&format!("{what} nlink"), r.st_nlink, t.st_nlink)?;
        same(
            &format!("{what} uid/gid"),
            (r.st_uid, r.st_gid),
            (t.st_uid, t.st_gid),
        )?;
        if t.st_mode & libc::S_IFMT == libc::S_IFREG {
            // The process that wrote (write or ftruncate; this one) sees its own size, as
            // tmpfs shows it; otherwise a stat sees the last commit's size (open(O_TRUNC)
            // alone changes nothing before its commit).
            let written = self.descs.values().any(|d| d.ino == ino && d.written);
            let committed = self.committed.get(&ino).map_or(0, |c| c.len()) as i64;
            if written {
                same(&format!("{what} size (the writer's)"), r.st_size, t.st_size)?;
            } else {
                same(&format!("{what} size (committed)"), r.st_size, committed)?;
                if !self.dirty(ino) {
                    same(&format!("{what} size"), r.st_size, t.st_size)?;
                }
            }
        } else if t.st_mode & libc::S_IFMT != libc::S_IFDIR {
            // A directory's size is 0 here and counts entries on tmpfs (README, Semantics).
            same(&format!("{what} size"), r.st_size, t.st_size)?;
        }
        if let Some(&(s, ns)) = self.mtime.get(&ino) {
            same(
                &format!("{what} mtime (recordfs)"),
                (r.st_mtime, r.st_mtime_nsec),
                (s, ns),
            )?;
            same(
                &format!("{what} mtime (tmpfs)"),
                (t.st_mtime, t.st_mtime_nsec),
                (s, ns),
            )?;
        }
        Ok(())
    }

    /// The visible state: listing, then each name's lstat, link target and content.
    fn check_state(&mut self) -> Step {
        let shape = |root: &Path| -> Vec<(String, char)> {
            tree(root).into_iter().map(|(p, k, _)| (p, k)).collect()
        };
        same("listing", shape(&self.r), shape(&self.t))?;
        for dir in DIRS {
            let (pr, pt) = (cpath(&self.r, dir), cpath(&self.t, dir));
            let (r, t) = (lstat(&pr, false), lstat(&pt, false));
            let ino = t.map_or(0, |s| s.st_ino);
            self.compare_stat(&format!("lstat {dir}"), ino, r, t)?;
        }
        for (n, name) in NAMES.iter().enumerate() {
            let (pr, pt) = self.both(n);
            let (r, t) = (lstat(&pr, false), lstat(&pt, false));
            let ino = t.map_or(0, |s| s.st_ino);
            self.compare_stat(&format!("lstat {}", name), ino, r, t)?;
            let Ok(t) = t else { continue };
            match t.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    same(
                        &format!("readlink {}", name),
                        std::fs::read_link(pr.to_str().unwrap()).ok(),
                        std::fs::read_link(pt.to_str().unwrap()).ok(),
                    )?;
                }
                _ => {
                    let committed = self.committed.get(&ino).ok_or_else(|| {
                        format!("test bug: {} (inode {ino}) is not in the model", name)
                    })?;
                    same(
                        &format!("content {} (committed)", name),
                        read_path(&pr),
                        Ok(committed.clone()),
                    )?;
                    if !self.dirty(ino) {
                        same(&format!("content {}", name), read_path(&pr), read_path(&pt))?;
                    }
                }
            }
        }
        // Forget files that have neither a name nor an open description.
        let live: BTreeSet<u64> = tree(&self.t)
            .into_iter()
            .map(|(_, _, ino)| ino)
            .chain(self.descs.values().map(|d| d.ino))
            .collect();
        self.committed.retain(|ino, _| live.contains(ino));
        self.mtime.retain(|ino, _| live.contains(ino));
        Ok(())
    }

    /// Closes every descriptor (committing what they hold, as a program's exit would).
    fn close_all(&mut self) -> Step {
        self.streams.iter_mut().for_each(|s| *s = None);
        for slot in 0..SLOTS {
            self.close(slot)?;
        }
        self.check_state()
    }

    /// Closes every descriptor, without looking.
    fn close_fds(&mut self) {
        self.streams.iter_mut().for_each(|s| *s = None);
        for s in self.slots.iter_mut().filter_map(|s| s.take()) {
            unsafe {
                libc::close(s.r);
                libc::close(s.t);
            }
        }
        self.descs.clear();
    }

    /// Back to two empty directories.
    fn reset(&mut self) -> Step {
        self.close_fds();
        self.committed.clear();
        self.mtime.clear();
        for dir in [&self.r, &self.t] {
            for name in read_dir(dir) {
                let path = dir.join(&name);
                let removed = match std::fs::symlink_metadata(&path).map(|m| m.is_dir()) {
                    Ok(true) => std::fs::remove_dir_all(&path),
                    _ => std::fs::remove_file(&path),
                };
                removed.map_err(|e| format!("reset: removing {}: {e}", path.display()))?;
            }
        }
        same("listing after reset", read_dir(&self.r), read_dir(&self.t))
    }

    /// Runs `ops`, comparing after each; Err names the step and the difference.
    fn run(&mut self, ops: &[Op]) -> Result<(), (usize, String)> {
        self.reset().map_err(|e| (0, e))?;
        let trace = std::env::var_os("RECORDFS_DIFF_TRACE").is_some();
        for (i, op) in ops.iter().enumerate() {
            if trace {
                eprintln!("{op}");
            }
            self.step(op)
                .and_then(|_| self.check_state())
                .map_err(|e| (i, format!("{op}: {e}")))?;
        }
        self.close_all()
            .map_err(|e| (ops.len(), format!("closing all: {e}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Driving

/// A tmpfs directory for the reference side, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tmpfs");
        std::fs::create_dir(&path).unwrap();
        let (code, out) = sh(&format!(
            "mount -t tmpfs -o size=64m,mode=755 recordfs-diff {}",
            path.display()
        ));
        assert_eq!(code, 0, "mount tmpfs: {out}");
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l {}", self.path.display()));
    }
}

/// The same op with its payload cut to 8 bytes and its offset below 16, if that is simpler.
fn simpler(op: &Op) -> Option<Op> {
    let cut = |d: &Vec<u8>| d[..d.len().min(8)].to_vec();
    let op2 = match op.clone() {
        Op::Write { slot, data } => Op::Write {
            slot,
            data: cut(&data),
        },
        Op::Pwrite { slot, off, data } => Op::Pwrite {
            slot,
            off: off.min(15),
            data: cut(&data),
        },
        Op::MmapWrite { slot, off, data } => Op::MmapWrite {
            slot,
            off: off.min(15),
            data: cut(&data),
        },
        Op::Pread { slot, off, len } => Op::Pread {
            slot,
            off: off.min(15),
            len,
        },
        Op::Ftruncate { slot, len } => Op::Ftruncate {
            slot,
            len: len.min(15),
        },
        Op::Truncate { name, len } => Op::Truncate {
            name,
            len: len.min(15),
        },
        _ => return None,
    };
    (op2 != *op).then_some(op2)
}

/// Runs `ops` on a new store and a new tmpfs, so that a shrinking step does not inherit what
/// an earlier failure did to the mount. Returns the result and the daemon's log.
fn fresh_run(args: &[&str], ops: &[Op]) -> (Result<(), (usize, String)>, String) {
    let env = Env::new();
    let tmpfs = Tmpfs::new();
    let mount = env.mount(args);
    let mut runner = Runner::new(&env.mnt, &tmpfs.path);
    let result = runner.run(ops);
    runner.close_fds();
    (result, mount.daemon_log())
}

fn newest_first(log: &str, lines: usize) -> String {
    let tail: Vec<&str> = log.lines().rev().take(lines).collect();
    tail.join("\n")
}

/// Shrinks a sequence that failed and reports it. The failing mount's own log was shown
/// first: a failure that shows only under load may not come back while shrinking.
fn shrink_and_fail(args: &[&str], ops: Vec<Op>, first: (usize, String)) -> ! {
    let fails = |ops: &[Op]| {
        fresh_run(args, ops).0.err().map(|(step, why)| Failure {
            ops_run: step + 1,
            why: format!("step {step}: {why}"),
        })
    };
    let first = Failure {
        ops_run: first.0 + 1,
        why: format!("step {}: {}", first.0, first.1),
    };
    let (ops, why) = shrink(ops, first, simpler, fails);
    let log = fresh_run(args, &ops).1;
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    panic!(
        "{args:?}: shrunk to {} ops (keep in tests/differential/NAME.ops):\n# {why}\n{}\n\n\
         daemon log of the shrunk case, newest first:\n{}",
        ops.len(),
        text.join("\n"),
        newest_first(&log, 20)
    );
}

fn regressions() -> Vec<(String, Vec<Op>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ops"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let ops = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(parse_op)
                .collect();
            (p.file_name().unwrap().to_string_lossy().into_owned(), ops)
        })
        .collect()
}

#[test]
fn ops_print_and_parse_back() {
    test_runner(2000, 7)
        .run(&op(), |op| {
            prop_assert_eq!(parse_op(&op.to_string()), op);
            Ok(())
        })
        .unwrap();
}

/// One test, both mounts in turn: another test thread of this process that forks (to start a
/// daemon) would close inherited copies of this one's descriptors, and a close of a copy of
/// a descriptor changed only by ftruncate commits it (README, Semantics: close).
#[test]
fn random_syscalls_match_tmpfs() {
    differential(SYNC_NEVER, 60, 0);
    differential(&["--sync", "fsync"], 8, 2 << 32);
    differential(&[], 8, 1 << 32);
}

/// What the sequences share: one mount, remade every eighth sequence.
struct Shared<'a> {
    env: &'a Env,
    tmpfs: &'a Tmpfs,
    mount: Option<Mount>,
    runner: Runner,
    done: u64,
    steps: usize,
    /// The failing sequence, and where and why it failed.
    failed: Option<(Vec<Op>, (usize, String))>,
}

/// The kept cases, then `sequences` random ones (RECORDFS_SOAK overrides), on one mount made
/// with `args`.
fn differential(args: &[&str], sequences: u64, seed: u64) {
    let env = Env::new();
    let tmpfs = Tmpfs::new();
    let mount = env.mount(args);
    let mut runner = Runner::new(&env.mnt, &tmpfs.path);

    for (name, ops) in regressions() {
        if let Err((step, why)) = runner.run(&ops) {
            eprintln!(
                "regression {name} ({args:?}): step {step}: {why}\ndaemon log, newest first:\n{}\n(shrinking)",
                newest_first(&mount.daemon_log(), 20)
            );
            runner.close_fds();
            drop(mount);
            shrink_and_fail(args, ops, (step, why));
        }
    }

    let sequences: u64 = std::env::var("RECORDFS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(sequences);
    let shared = std::cell::RefCell::new(Shared {
        env: &env,
        tmpfs: &tmpfs,
        mount: Some(mount),
        runner,
        done: 0,
        steps: 0,
        failed: None,
    });
    let trace = std::env::var_os("RECORDFS_DIFF_TRACE").is_some();
    let result = test_runner(sequences as u32, seed).run(&sequence(), |ops| {
        let sh = &mut *shared.borrow_mut();
        if trace {
            eprintln!("# sequence {}", sh.done);
        }
        sh.steps += ops.len();
        if let Err((step, why)) = sh.runner.run(&ops) {
            let log = sh.mount.as_ref().unwrap().daemon_log();
            eprintln!(
                "{args:?}: sequence {}: step {step}: {why}\ndaemon log, newest first:\n{}\n(shrinking)",
                sh.done,
                newest_first(&log, 20)
            );
            sh.failed = Some((ops, (step, why)));
            return Err(TestCaseError::fail("see above"));
        }
        sh.done += 1;
        // Every eighth sequence: a clean stop and a new mount show the same state.
        if sh.done.is_multiple_of(8) {
            let (mnt, reference) = (&sh.env.mnt, &sh.tmpfs.path);
            let before = snapshot_dir(mnt);
            assert_eq!(before, snapshot_dir(reference), "before the remount");
            sh.mount.take().unwrap().stop_cleanly();
            sh.mount = Some(sh.env.mount(args));
            assert_eq!(snapshot_dir(mnt), before, "after the remount");
        }
        Ok(())
    });
    let Shared {
        mount,
        mut runner,
        steps,
        failed,
        ..
    } = shared.into_inner();
    if let Some((ops, why)) = failed {
        runner.close_fds();
        drop(mount);
        shrink_and_fail(args, ops, why);
    }
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{args:?}: {sequences} sequences, {steps} steps, {} fix-up writes",
        runner.fixups
    );
    runner.reset().unwrap();
    drop(mount);
}

/// Paths (under `root`), kinds and modes, sizes, link targets and contents of a tree.
fn snapshot_dir(root: &Path) -> Vec<(String, u32, i64, Vec<u8>)> {
    tree(root)
        .into_iter()
        .map(|(n, kind, _)| {
            let p = cpath(root, &n);
            let st = lstat(&p, false).unwrap();
            let (size, body) = match kind {
                'l' => (
                    st.st_size,
                    std::fs::read_link(root.join(&n))
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                ),
                'd' => (0, Vec::new()),
                _ => (st.st_size, read_path(&p).unwrap()),
            };
            // Extended attributes too, names and values (not through a symlink).
            let mut body = body;
            if kind != 'l' {
                for key in xattr_names(&p).unwrap_or_default() {
                    body.extend(key.as_bytes());
                    body.extend(xattr_of(&p, &key).unwrap_or_default());
                }
            }
            (n, st.st_mode, size, body)
        })
        .collect()
}

/// getxattr(2) of a path (following a final symlink), into a buffer of 64 KiB.
fn xattr_of(path: &CString, key: &str) -> Result<Vec<u8>, i32> {
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            k.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    res(n as i64).map(|n| buf[..n as usize].to_vec())
}

/// listxattr(2) of a path (following a final symlink), sorted; the `security.` ones a host
/// may add on its own are left out.
fn xattr_names(path: &CString) -> Result<Vec<String>, i32> {
    let mut buf = vec![0u8; 1 << 16];
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = res(n as i64)? as usize;
    let mut names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty() && !s.starts_with(b"security."))
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Every path under `root` (relative, sorted), its kind (`f`, `l` or `d`) and inode.
fn tree(root: &Path) -> Vec<(String, char, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        for name in read_dir(&root.join(&dir)) {
            let rel = match dir.is_empty() {
                true => name,
                false => format!("{dir}/{name}"),
            };
            let Ok(st) = lstat(&cpath(root, &rel), false) else {
                continue;
            };
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => 'd',
                libc::S_IFLNK => 'l',
                _ => 'f',
            };
            if kind == 'd' {
                todo.push(rel.clone());
            }
            out.push((rel, kind, st.st_ino));
        }
    }
    out.sort();
    out
}
