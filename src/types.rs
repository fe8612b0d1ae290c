//! The words every layer speaks: file ids, sequence numbers, times, kinds and attributes.
//! Nothing here does I/O; everything else may use it.

use std::time::{SystemTime, UNIX_EPOCH};

/// A file's stable id: the inode number the mount shows.
pub type Fid = u64;
/// A log entry's sequence number.
pub type Seq = u64;

/// A file's extended attributes: name → value, shared between the namespace and the entries
/// that carry them (a change makes a new map).
pub type Xattrs = std::sync::Arc<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>;

/// No extended attributes, one map shared by every file without any (`Xattrs::default()`
/// allocates a map of its own: 40 bytes a file, 40 MB at a million files).
pub fn no_xattrs() -> Xattrs {
    static NONE: std::sync::OnceLock<Xattrs> = std::sync::OnceLock::new();
    NONE.get_or_init(Xattrs::default).clone()
}
/// The fid of the root directory; also the FUSE root inode number.
pub const ROOT: Fid = 1;
/// The largest sequence number, fid or segment number a reader accepts from disk: far beyond
/// any store's life, and low enough that `+ 1` on any of them never overflows. A larger one
/// is corruption.
pub const MAX_ID: u64 = 1 << 62;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
// Packed to 12 bytes: an inode holds three of these, and a store may hold a million inodes.
#[repr(C, packed(4))]
pub struct Time {
    pub secs: i64,
    pub nsecs: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nsecs) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nsecs > 0 {
                    secs -= 1;
                    nsecs = 1_000_000_000 - nsecs;
                }
                Time { secs, nsecs }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        let base = if self.secs >= 0 {
            UNIX_EPOCH + std::time::Duration::from_secs(self.secs as u64)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(self.secs.unsigned_abs())
        };
        base + std::time::Duration::from_nanos(self.nsecs as u64)
    }

    pub fn millis(self) -> u64 {
        (self.secs.max(0) as u64) * 1000 + (self.nsecs / 1_000_000) as u64
    }

    pub fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.secs,
            tv_nsec: self.nsecs as i64,
        }
    }

    pub fn from_millis(ms: u64) -> Time {
        Time {
            secs: (ms / 1000) as i64,
            nsecs: (ms % 1000) as u32 * 1_000_000,
        }
    }

    /// ISO 8601 in UTC, to the millisecond: `2026-12-01T03:21:49.603Z`.
    pub fn iso8601(self) -> String {
        let days = self.secs.div_euclid(86_400);
        let secs = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            self.nsecs / 1_000_000
        )
    }
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (what `iso8601`
/// prints; UTC only). None for anything else.
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let t = text.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let num = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (hms, ms) = match time.split_once('.') {
        Some((hms, frac)) if frac.len() == 3 => (hms, num(frac)?),
        Some(_) => return None,
        None => (time, 0),
    };
    let mut h = hms.splitn(3, ':');
    let (hh, mm, ss) = (num(h.next()?)?, num(h.next()?)?, num(h.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, day);
    // A day past the month's end (February 30) comes back as another date: refused.
    if civil_from_days(days) != (i64::from(y), m, day) || days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + u64::from(hh * 3600 + mm * 60 + ss);
    Some(secs * 1000 + u64::from(ms))
}

/// The day counted from 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`, the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Symlink,
    Dir,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Dir => "dir",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits only (the 0o7777 part); the kind is separate.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

/// A file's attributes at one fixed time, for the crate's unit tests.
#[cfg(test)]
pub(crate) fn test_attrs() -> Attrs {
    let t = Time { secs: 1, nsecs: 0 };
    Attrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        atime: t,
        mtime: t,
        ctime: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_iso_8601_in_utc() {
        let t = |secs, nsecs| Time { secs, nsecs }.iso8601();
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(1_796_095_309, 603_000_000), "2026-12-01T03:21:49.603Z");
        assert_eq!(t(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(t(-1, 0), "1969-12-31T23:59:59.000Z");
        for ms in [0u64, 1_796_095_309_603, 951_782_400_000, 4_102_444_799_999] {
            let printed = Time::from_millis(ms).iso8601();
            assert_eq!(parse_iso8601(&printed), Some(ms), "{printed}");
        }
        assert_eq!(
            parse_iso8601("2026-12-01T03:21:49Z"),
            Some(1_796_095_309_000)
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-12-01T03:21:49",
            "2026-12-01 03:21:49Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T03:21:49.6Z",
            "x",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert_eq!(
            Time::from_millis(1_796_095_309_603).iso8601(),
            t(1_796_095_309, 603_000_000)
        );
    }
}
