//! One error type for the whole crate: an errno for the kernel, a reason for people, the OS
//! error underneath when there is one, and the level to log it at.
//!
//! Errors are values; they are logged once, where they are answered (the FUSE adapter or the
//! command line), never where they are created.

use std::fmt;
use std::io;
use std::sync::Arc;

use log::Level;

#[derive(Debug, Clone)]
pub struct Error {
    pub errno: i32,
    pub reason: String,
    /// The OS error this one wraps (shared: errors are cloned to every waiter of a commit).
    pub source: Option<Arc<io::Error>>,
    /// How loudly the place that answers it logs it: expected answers (a lookup that misses)
    /// at debug, refusals at warn, failures of the store at error.
    pub level: Level,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(errno: i32, reason: impl Into<String>) -> Error {
        Error {
            errno,
            reason: reason.into(),
            source: None,
            level: level_of(errno),
        }
    }

    /// An I/O error with what we were doing when it happened.
    pub fn io(context: impl fmt::Display, err: &io::Error) -> Error {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        let source = match err.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(err.kind(), err.to_string()),
        };
        Error {
            source: Some(Arc::new(source)),
            ..Error::new(errno, format!("{context}: {err}"))
        }
    }

    /// The same error, logged at `level` where it is answered.
    pub fn at(self, level: Level) -> Error {
        Error { level, ..self }
    }

    pub fn is_no_space(&self) -> bool {
        self.errno == libc::ENOSPC || self.errno == libc::EDQUOT
    }
}

/// The level an errno is logged at unless its maker says otherwise.
fn level_of(errno: i32) -> Level {
    match errno {
        // ESTALE: a name the kernel had cached was replaced; it looks the name up again.
        // ENODATA: an extended attribute that is not there, which programs probe for.
        libc::ENOENT
        | libc::ESTALE
        | libc::EEXIST
        | libc::ENAMETOOLONG
        | libc::ENOTDIR
        | libc::EISDIR
        | libc::ENOTEMPTY
        | libc::ENODATA => Level::Debug,
        libc::EIO | libc::EROFS => Level::Error,
        _ => Level::Warn,
    }
}

/// Equal when the kernel and a person would be told the same.
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.errno == other.errno && self.reason == other.reason
    }
}

impl Eq for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, errno_name(self.errno))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

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
        libc::ENODATA => "ENODATA",
        libc::E2BIG => "E2BIG",
        libc::ERANGE => "ERANGE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EXDEV => "EXDEV",
        libc::ENFILE => "ENFILE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        _ => "errno",
    }
}

macro_rules! err {
    ($errno:ident, $($arg:tt)*) => {
        $crate::error::Error::new(libc::$errno, format!($($arg)*))
    };
}
pub(crate) use err;
