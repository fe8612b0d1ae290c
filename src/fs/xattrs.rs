//! Extended attributes: kept per file in the namespace, logged whole at each change (an
//! `XATTR` entry) and in snapshots; not on backing files. README, "Semantics".

use std::collections::BTreeMap;
use std::sync::Arc;

use super::rules::show;
use super::state::{RecordFs, Ticket};
use crate::caller::Caller;
use crate::error::{err, Result};
use crate::limits::{XATTR_NAME_MAX, XATTR_TOTAL_MAX, XATTR_VALUE_MAX};
use crate::log::Op;
use crate::types::{Fid, Kind};

/// The namespaces kept: `user.` everywhere, `trusted.` and `security.` where the kernel lets
/// the caller reach them (it checks CAP_SYS_ADMIN for `trusted.` before asking). `system.`
/// (POSIX ACLs) is not kept: EOPNOTSUPP, so tools that copy ACLs carry on without them.
fn check_xattr_name(name: &[u8]) -> Result<()> {
    let kept = [&b"user."[..], b"trusted.", b"security."];
    if !kept
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
    {
        return Err(err!(
            EOPNOTSUPP,
            "extended attribute {}: only user.*, trusted.* and security.* are kept",
            show(name)
        ));
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(err!(
            ERANGE,
            "extended attribute name longer than {XATTR_NAME_MAX} bytes"
        ));
    }
    Ok(())
}

impl RecordFs {
    pub fn getxattr(&self, fid: Fid, name: &[u8]) -> Result<Vec<u8>> {
        let inode = self.inode(fid)?;
        inode.extras.xattrs().get(name).cloned().ok_or_else(|| {
            err!(
                ENODATA,
                "{} has no attribute {}",
                show(&inode.name.bytes()),
                show(name)
            )
        })
    }

    /// The names, each ended by a NUL, as listxattr(2) gives them.
    pub fn listxattr(&self, fid: Fid) -> Result<Vec<u8>> {
        let inode = self.inode(fid)?;
        let mut out = Vec::new();
        for name in inode.extras.xattrs().keys() {
            out.extend_from_slice(name);
            out.push(0);
        }
        Ok(out)
    }

    /// setxattr(2): `flags` XATTR_CREATE (EEXIST if it exists) or XATTR_REPLACE (ENODATA if
    /// not); `value` None removes (removexattr).
    pub fn setxattr(
        &self,
        fid: Fid,
        name: &[u8],
        value: Option<&[u8]>,
        flags: i32,
    ) -> Result<Ticket> {
        self.setxattr_as(fid, name, value, flags, &Caller::UNKNOWN)
    }

    /// setxattr(2) or removexattr(2) by `caller`: on a file the same thread is creating, the
    /// change rides with the create (`ride_or_ticket`), as `cp -a` and `rsync -X` set them.
    pub fn setxattr_as(
        &self,
        fid: Fid,
        name: &[u8],
        value: Option<&[u8]>,
        flags: i32,
        caller: &Caller,
    ) -> Result<Ticket> {
        self.writable()?;
        check_xattr_name(name)?;
        if value.is_some_and(|v| v.len() > XATTR_VALUE_MAX) {
            return Err(err!(
                E2BIG,
                "extended attribute value longer than {XATTR_VALUE_MAX} bytes"
            ));
        }
        let max_file_size = self.opts.max_file_size;
        let seq = self.commit(|ns| {
            let inode = ns
                .get(fid)
                .ok_or_else(|| err!(ENOENT, "inode {fid} has no name any more"))?;
            // Linux allows user.* only on regular files and directories.
            if inode.kind == Kind::Symlink && name.starts_with(b"user.") {
                return Err(err!(EPERM, "user.* attributes are not for symbolic links"));
            }
            let exists = inode.extras.xattrs().contains_key(name);
            match (value, exists) {
                (None, false) => return Err(err!(ENODATA, "no attribute {}", show(name))),
                (Some(_), true) if flags & libc::XATTR_CREATE != 0 => {
                    return Err(err!(EEXIST, "attribute {} exists", show(name)))
                }
                (Some(_), false) if flags & libc::XATTR_REPLACE != 0 => {
                    return Err(err!(ENODATA, "no attribute {}", show(name)))
                }
                _ => {}
            }
            let mut xattrs: BTreeMap<Vec<u8>, Vec<u8>> = (**inode.extras.xattrs()).clone();
            match value {
                Some(v) => xattrs.insert(name.to_vec(), v.to_vec()),
                None => xattrs.remove(name),
            };
            // A store whose files may hold at most `--max-file-size` bytes keeps no more of
            // them per file: its log lines are bounded by that size (limits::max_line_for).
            let most = XATTR_TOTAL_MAX.min(usize::try_from(max_file_size).unwrap_or(usize::MAX));
            let total: usize = xattrs.iter().map(|(n, v)| n.len() + 1 + v.len()).sum();
            if total > most {
                return Err(err!(
                    ENOSPC,
                    "{}: the extended attributes would take {total} bytes, more than {most}",
                    show(&inode.name.bytes())
                ));
            }
            Ok(Op::Xattr {
                fid,
                dir: inode.parent,
                name: inode.name.to_vec(),
                xattrs: Arc::new(xattrs),
            })
        })?;
        Ok(self.ride_or_ticket(fid, seq, caller))
    }
}
