//! One error type for the whole crate: an errno for the kernel and a reason for people.
//!
//! Errors are values; they are logged once, where they are answered (the FUSE adapter or the
//! command line), never where they are created.

use std::fmt;
use std::io;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub errno: i32,
    pub reason: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(errno: i32, reason: impl Into<String>) -> Error {
        Error {
            errno,
            reason: reason.into(),
        }
    }

    /// An I/O error with what we were doing when it happened.
    pub fn io(context: impl fmt::Display, err: &io::Error) -> Error {
        Error::new(
            err.raw_os_error().unwrap_or(libc::EIO),
            format!("{context}: {err}"),
        )
    }

    pub fn is_no_space(&self) -> bool {
        self.errno == libc::ENOSPC || self.errno == libc::EDQUOT
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, errno_name(self.errno))
    }
}

impl std::error::Error for Error {}

pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EBUSY => "EBUSY",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::ESTALE => "ESTALE",
        _ => "errno",
    }
}

macro_rules! err {
    ($errno:ident, $($arg:tt)*) => {
        $crate::error::Error::new(libc::$errno, format!($($arg)*))
    };
}
pub(crate) use err;
