//! Small rules every operation applies: which names are allowed, which directories exist, the
//! entry that gives a file new bytes.

use std::ffi::OsStr;

use crate::error::{err, Result};
use crate::limits::NAME_MAX;
use crate::log::{Data, Op};
use crate::namespace::{Inode, Namespace};
use crate::record::is_record_name;
use crate::types::{Attrs, Fid, Kind};

pub(super) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(err!(
            ENAMETOOLONG,
            "name of {} bytes is longer than {NAME_MAX}",
            name.len()
        ));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(err!(
            EINVAL,
            "{:?} cannot name a file",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

/// The directory `dir`, as the namespace has it now: ENOENT if it was removed (a process may
/// still stand in it), ENOTDIR if it is not a directory.
pub(super) fn dir_of(ns: &Namespace, dir: Fid) -> Result<&Inode> {
    match ns.get(dir) {
        Some(d) if d.kind == Kind::Dir => Ok(d),
        Some(d) => Err(err!(
            ENOTDIR,
            "{} is not a directory",
            show(&d.name.bytes())
        )),
        None => Err(err!(ENOENT, "directory {dir} was removed")),
    }
}

/// Whether the JSON rule holds for `inode`: one of its names is a record's.
pub(super) fn is_record(inode: &Inode) -> bool {
    inode.names().any(|(_, name)| is_record_name(&name))
}

/// The entry that gives an existing regular file new bytes.
pub(super) fn new_content(inode: &Inode, attrs: Attrs, data: Data) -> Op {
    Op::Set {
        fid: inode.fid,
        dir: inode.parent,
        name: inode.name.to_vec(),
        kind: Kind::File,
        attrs,
        data,
    }
}

/// The entry that changes `ranges` of an existing regular file, `len` bytes long after it with
/// CRC32C `dcrc`; `shown` is the new version, served to readers until it reaches the disk.
pub(super) fn new_patch(
    inode: &Inode,
    attrs: Attrs,
    (len, dcrc): (u64, u32),
    ranges: Vec<crate::log::Range>,
    shown: crate::log::Shown,
) -> Op {
    Op::Patch {
        fid: inode.fid,
        dir: inode.parent,
        name: inode.name.to_vec(),
        attrs,
        len,
        dcrc,
        ranges,
        shown: Some(shown),
    }
}

pub(super) fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// For messages: a name as the user typed it.
pub fn display_name(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

/// A name `name` in `dir` (and, for a directory moved there, the longest path under it) must
/// keep its backing file's path within PATH_MAX: past it the backing tree could not hold it.
pub(super) fn check_path_len(
    ns: &Namespace,
    dir: Fid,
    name: &[u8],
    below: usize,
    max: usize,
) -> Result<()> {
    let dir_len = ns.path_len(dir);
    let len = dir_len + usize::from(dir_len > 0) + name.len() + usize::from(below > 0) + below;
    if len > max {
        return Err(err!(
            ENAMETOOLONG,
            "the path would be {len} bytes long; this store keeps paths of up to {max} bytes (PATH_MAX of its backing tree)"
        ));
    }
    Ok(())
}
