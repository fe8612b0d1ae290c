//! One test per row of the README's "Semantics" table: each difference from a local
//! filesystem that the table lists is shown here to be real (and a row without a test here
//! names the test that pins it).

mod common;
use common::*;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::time::Duration;

fn cstr(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn rw(p: &std::path::Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap()
}

#[test]
fn read_sees_the_version_committed_at_open() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path(&record(1));
    fs::write(&p, "{\"v\": 1}").unwrap();
    let mut reader = fs::File::open(&p).unwrap();
    fs::write(&p, "{\"v\": 2, \"longer\": true}").unwrap();
    let mut seen = String::new();
    reader.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "{\"v\": 1}");
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "{\"v\": 2, \"longer\": true}"
    );
}

#[test]
fn write_goes_to_the_descriptor_and_close_reports_the_commit() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path(&record(2));
    fs::write(&p, "{\"ok\": true}").unwrap();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"{\"not json\"").unwrap(); // accepted: nothing is committed yet
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"ok\": true}");
    let fd = std::os::unix::io::IntoRawFd::into_raw_fd(f);
    assert_eq!(unsafe { libc::close(fd) }, -1);
    assert_eq!(last_errno(), libc::EINVAL);
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"ok\": true}");
}

/// The size another process sees of `p`, by `stat -c %s`.
fn size_seen_elsewhere(p: &std::path::Path) -> u64 {
    let (code, out) = common::sh(&format!("stat -c %s {}", p.display()));
    assert_eq!(code, 0, "{out}");
    out.trim().parse().unwrap()
}

#[test]
fn stat_shows_the_writer_its_own_size_and_others_the_committed_one() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("notes.txt");
    fs::write(&p, "12345").unwrap();
    let mut f = rw(&p);
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"678910").unwrap();
    assert_eq!(f.metadata().unwrap().len(), 11, "fstat by the writer");
    assert_eq!(fs::metadata(&p).unwrap().len(), 11, "stat by the writer");
    assert_eq!(size_seen_elsewhere(&p), 5, "stat by another process");
    assert_eq!(fs::read(&p).unwrap(), b"12345", "a new reader");
    assert_eq!(
        f.seek(SeekFrom::End(0)).unwrap(),
        11,
        "lseek(SEEK_END) of the writer"
    );
    // What file exercisers and preallocating writers do first.
    f.set_len(0).unwrap();
    f.set_len(100_000).unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        100_000,
        "fstat after ftruncate"
    );
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 100_000);
    assert_eq!(size_seen_elsewhere(&p), 5);
    f.sync_all().unwrap();
    assert_eq!(size_seen_elsewhere(&p), 100_000, "after the commit");
}

#[test]
fn seek_data_and_seek_hole_report_no_holes() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("sparse");
    let f = fs::File::create(&p).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    let f = fs::File::open(&p).unwrap();
    let fd = f.as_raw_fd();
    assert_eq!(unsafe { libc::lseek(fd, 4096, libc::SEEK_DATA) }, 4096);
    assert_eq!(unsafe { libc::lseek(fd, 4096, libc::SEEK_HOLE) }, 1 << 20);
    assert_eq!(unsafe { libc::lseek(fd, 1 << 20, libc::SEEK_DATA) }, -1);
    assert_eq!(last_errno(), libc::ENXIO);
    // The bytes are zeros, as in a hole.
    assert!(fs::read(&p).unwrap().iter().all(|b| *b == 0));
}

#[test]
fn append_position_trails_the_end_only_after_another_process_stat() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("log.txt");
    fs::write(&p, "0123456789").unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"abc").unwrap();
    fs::metadata(&p).unwrap(); // the writer's own stat: 13
    f.write_all(b"def").unwrap();
    assert_eq!(f.stream_position().unwrap(), 16, "as on a local filesystem");
    size_seen_elsewhere(&p); // the kernel now takes the committed size, 10
    f.write_all(b"ghi").unwrap();
    assert_eq!(
        f.stream_position().unwrap(),
        13,
        "10 (the size the kernel had) + 3; a local filesystem says 19"
    );
    drop(f);
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "0123456789abcdefghi",
        "writes went to the end"
    );
}

#[test]
fn a_shared_mapping_reaches_readers_at_msync() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("mapped");
    fs::write(&p, "hello world").unwrap();
    let f = rw(&p);
    let len = f.metadata().unwrap().len() as usize;
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    unsafe { std::slice::from_raw_parts_mut(map as *mut u8, len)[..5].copy_from_slice(b"HELLO") };
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "hello world",
        "before msync"
    );
    assert_eq!(unsafe { libc::msync(map, len, libc::MS_SYNC) }, 0);
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "HELLO world",
        "after msync"
    );
    unsafe { libc::munmap(map, len) };
}

/// The mmap row's promise: a mapping at the size `fstat` just gave never faults. The kernel's
/// own idea of the size falls behind here (appends after a reader's `lseek(SEEK_END)` told it
/// the committed size), then `fsync` commits and the writer maps the file at its `fstat` size.
/// recordfs once invalidated the inode after every commit, from another thread: landing during
/// the `fstat`, that made the kernel drop the size the reply carried (while `fstat` still
/// returned it), and the mapping died of SIGBUS past the old size, a few times per thousand
/// rounds. The rounds run in a child process, which SIGBUS kills.
#[test]
fn a_mapping_at_the_size_fstat_gave_never_faults() {
    const ROUNDS: usize = 3000;
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = cstr(&env.path("appended"));
    let chunk = [b'a'; 5000];
    // The child makes only system calls: no allocation, no locks, no unwinding.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: errno {}", last_errno());
    if child == 0 {
        let fail = |code: i32| -> ! { unsafe { libc::_exit(code) } };
        for _ in 0..ROUNDS {
            unsafe {
                let f = libc::open(
                    p.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o644,
                );
                if f < 0 || libc::write(f, chunk.as_ptr().cast(), 100) != 100 || libc::close(f) != 0
                {
                    fail(2);
                }
                let r = libc::open(p.as_ptr(), libc::O_RDONLY);
                let a = libc::open(p.as_ptr(), libc::O_RDWR | libc::O_APPEND);
                if r < 0 || a < 0 || libc::write(a, chunk.as_ptr().cast(), 5000) != 5000 {
                    fail(3);
                }
                libc::lseek(r, 0, libc::SEEK_END); // the committed size: 100
                if libc::write(a, chunk.as_ptr().cast(), 5000) != 5000 || libc::fsync(a) != 0 {
                    fail(4);
                }
                let mut st: libc::stat = std::mem::zeroed();
                if libc::fstat(a, &mut st) != 0 || st.st_size != 10100 {
                    fail(5);
                }
                let len = st.st_size as usize;
                let map = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    a,
                    0,
                );
                if map == libc::MAP_FAILED {
                    fail(6);
                }
                std::ptr::read_volatile((map as *const u8).add(len - 1));
                libc::munmap(map, len);
                libc::close(a);
                libc::close(r);
            }
        }
        fail(0);
    }
    let mut status = 0;
    let waited = wait_until(Duration::from_secs(120), || unsafe {
        libc::waitpid(child, &mut status, libc::WNOHANG) == child
    });
    if !waited {
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, &mut status, 0);
        }
        panic!("{ROUNDS} rounds did not finish in 120 s");
    }
    assert!(
        !libc::WIFSIGNALED(status),
        "the child died of signal {} (7 is SIGBUS)",
        libc::WTERMSIG(status)
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "a system call failed (see the exit codes)"
    );
}

#[test]
fn truncate_only_record_keeps_its_content_until_the_last_close() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path(&record(3));
    fs::write(&p, "{\"keep\": 1}").unwrap();
    // The shell's `> file` with a refused save: open(O_TRUNC), dup2, close, write, close.
    let (code, _) = sh(&format!("printf '{{broken' > {}", p.display()));
    let _ = code; // the shell does not report a failed close of stdout
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\"keep\": 1}");
    // A plain file is emptied at its first close, as on a local filesystem.
    let plain = env.path("plain.txt");
    fs::write(&plain, "text").unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&plain)
        .unwrap();
    let dup = f.try_clone().unwrap();
    drop(f);
    assert_eq!(fs::metadata(&plain).unwrap().len(), 0);
    drop(dup);
    // A record opened with O_TRUNC and closed unwritten is empty once the kernel's release
    // arrives, just after close(2) returned.
    drop(
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(5), || fs::metadata(&p)
        .unwrap()
        .len()
        == 0));
}

#[test]
fn rename_commits_the_source_first_and_checks_a_new_record() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let tmp = env.path("save.tmp");
    let mut f = fs::File::create(&tmp).unwrap();
    f.write_all(b"{\"via\": \"rename\"}").unwrap();
    // Still open and uncommitted: the rename commits it first.
    fs::rename(&tmp, env.path(&record(4))).unwrap();
    assert_eq!(
        fs::read_to_string(env.path(&record(4))).unwrap(),
        "{\"via\": \"rename\"}"
    );
    drop(f);
    fs::write(&tmp, "not json").unwrap();
    let e = fs::rename(&tmp, env.path(&record(4))).unwrap_err();
    assert_eq!(errno_of(&e), libc::EINVAL);
    assert_eq!(fs::read_to_string(&tmp).unwrap(), "not json");
}

/// Fifos and devices are refused (directories: tests/dirs.rs; hard links: tests/links.rs).
#[test]
fn special_files_answer_eperm() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("file");
    fs::write(&p, "x").unwrap();
    let fifo = cstr(&env.path("fifo"));
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, -1);
    assert_eq!(last_errno(), libc::EPERM);
    assert_eq!(
        fs::remove_dir(&p).map_err(|e| errno_of(&e)),
        Err(libc::ENOTDIR)
    );
}

/// Extended attributes are kept (tests/xattrs.rs) except `system.*`, where POSIX ACLs live:
/// those answer EOPNOTSUPP, as on a filesystem mounted without ACL support.
#[test]
fn acls_ioctl_and_fallocate_are_not_supported() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("file");
    fs::write(&p, "x").unwrap();
    let c = cstr(&p);
    let name = CString::new("system.posix_acl_access").unwrap();
    // A minimal valid ACL (version 2, user::rw- group::r-- other::r--), so that only the
    // namespace can be the reason for a refusal.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 4)] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let r = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), acl.as_ptr().cast(), acl.len(), 0) };
    assert_eq!((r, last_errno()), (-1, libc::EOPNOTSUPP));
    let mut buf = [0u8; 64];
    // Reading one is answered by the kernel itself (FUSE without FUSE_POSIX_ACL): no ACL.
    let r = unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    assert_eq!((r, last_errno()), (-1, libc::ENODATA));
    let f = rw(&p);
    let mut flags: libc::c_long = 0;
    // FS_IOC_GETFLAGS
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_6601, &mut flags) };
    assert_eq!((r, last_errno()), (-1, libc::ENOTTY));
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4096) };
    assert_eq!((r, last_errno()), (-1, libc::EOPNOTSUPP));
    // posix_fallocate falls back to writing zeros, which works.
    assert_eq!(unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, 4096) }, 0);
}

#[test]
fn reads_do_not_change_atime() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let p = env.path("file");
    fs::write(&p, "x").unwrap();
    let (code, out) = sh(&format!("touch -a -d '2000-01-01' {}", p.display()));
    assert_eq!(code, 0, "{out}");
    let before = fs::metadata(&p).unwrap().atime();
    fs::read(&p).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().atime(), before);
}
