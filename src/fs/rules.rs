//! Small rules every operation applies: which names are allowed, which directories exist, the
//! entry that gives a file new bytes.

use std::ffi::OsStr;

use crate::error::{err, Result};
use crate::limits::NAME_MAX;
use crate::log::{Data, Op};
use crate::namespace::Inode;
use crate::types::{Attrs, Fid, Kind, ROOT};

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

pub(super) fn check_dir(dir: Fid) -> Result<()> {
    if dir != ROOT {
        return Err(err!(ENOTDIR, "fid {dir} is not a directory"));
    }
    Ok(())
}

/// The entry that gives an existing regular file new bytes.
pub(super) fn new_content(inode: &Inode, attrs: Attrs, data: Data) -> Op {
    Op::Set {
        fid: inode.fid,
        dir: inode.parent,
        name: inode.name.clone(),
        kind: Kind::File,
        attrs,
        data,
    }
}

pub(super) fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// For messages: a name as the user typed it.
pub fn display_name(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}
