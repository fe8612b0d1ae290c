//! The system's mount table, as far as recordfs needs it: which recordfs mount sits where.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The source of the recordfs mount whose mount point is `path` (the topmost one), if any.
pub fn recordfs_mounted_at(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent dev root MOUNT_POINT options [optional...] - FSTYPE SOURCE superopts;
    // spaces and the like in paths are octal escapes (\040).
    info.lines().rev().find_map(|l| {
        let (head, tail) = l.split_once(" - ")?;
        let point = unescape(head.split(' ').nth(4)?);
        let mut t = tail.split(' ');
        let (fstype, source) = (t.next()?, t.next()?);
        (point == path && fstype.starts_with("fuse") && source.starts_with("recordfs:"))
            .then(|| unescape(source).display().to_string())
    })
}

fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 4)) {
            (b'\\', Some(oct)) if oct.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                out.push(oct.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from(OsStr::from_bytes(&out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\011c"), PathBuf::from("/a b\tc"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/x\\04"), PathBuf::from("/x\\04"));
    }
}
