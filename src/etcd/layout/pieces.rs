//! Where a file's bytes are (one `d/` value or pieces), the ranges of a file's pieces, and
//! the pieces a mount's save left when its daemon died (FORMAT.md, "Files in pieces").

use std::collections::HashSet;

use serde_json::Value;

use super::{data_key, fid_hex, info_kind, MOUNTS};
use crate::types::{Fid, Kind};

/// The ids of the pieces an `i/` value lists, when its node's bytes are in pieces.
pub fn piece_ids(info: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(info).ok()?;
    v["pieces"]
        .as_array()?
        .iter()
        .map(|id| id.as_str().map(str::to_owned))
        .collect()
}

pub fn piece_key(id: &str) -> Vec<u8> {
    format!("p/{id}").into_bytes()
}

/// The keys an `i/` value says its node's bytes are in: its pieces', else `d/<fid>` (none
/// for a directory).
pub fn bytes_keys(fid: Fid, info: &[u8]) -> Vec<Vec<u8>> {
    match (info_kind(info), piece_ids(info)) {
        (Some(Kind::Dir), _) => Vec::new(),
        (_, Some(ids)) => ids.iter().map(|id| piece_key(id)).collect(),
        (_, None) => vec![data_key(fid)],
    }
}

/// The keys of every piece a file's pieces may have (any piece id made here starts with the
/// file's fid and a dot): the range from the first to the one after the last.
pub fn pieces_range(fid: Fid) -> (Vec<u8>, Vec<u8>) {
    (
        format!("p/{}.", fid_hex(fid)).into_bytes(),
        format!("p/{}/", fid_hex(fid)).into_bytes(),
    )
}

/// A mount's key's value: who, and once it took one, its block of fids, which its pieces'
/// ids name (`mount_piece_tag`).
pub fn mount_value(who: &str, block: Option<Fid>) -> Vec<u8> {
    match block {
        Some(b) => format!("{who}, fids from {b:x}").into_bytes(),
        None => who.as_bytes().to_vec(),
    }
}

/// The start of the ids of the pieces of one save of file `fid` by the mount with fid block
/// `block`, its `n`th in pieces: `<fid>.m<block>.<n>`, each piece's id that and `.<i>`.
pub fn mount_piece_tag(fid: Fid, block: Fid, n: u64) -> String {
    format!("{}.m{block:x}.{n}", fid_hex(fid))
}

/// Pieces no file lists whose ids name the block of a mount that is not listed (a save cut
/// short by its daemon's death), among every key of a store read at one revision.
/// `gone(key)`: a listed mount known to be dead (its lease has not ended yet).
pub fn orphan_pieces(kvs: &[(Vec<u8>, Vec<u8>)], gone: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let block_of_piece = |key: &[u8]| -> Option<Fid> {
        let id = std::str::from_utf8(key.strip_prefix(b"p/")?).ok()?;
        let block = id.get(17..)?.strip_prefix('m')?.split('.').next()?;
        u64::from_str_radix(block, 16).ok()
    };
    let live: HashSet<Fid> = kvs
        .iter()
        .filter(|(k, _)| k.starts_with(MOUNTS) && !gone(k))
        .filter_map(|(_, v)| {
            let v = std::str::from_utf8(v).ok()?;
            u64::from_str_radix(v.rsplit_once(", fids from ")?.1, 16).ok()
        })
        .collect();
    let listed: HashSet<Vec<u8>> = kvs
        .iter()
        .filter(|(k, _)| k.starts_with(b"i/"))
        .flat_map(|(_, v)| piece_ids(v).unwrap_or_default())
        .map(|id| piece_key(&id))
        .collect();
    kvs.iter()
        .map(|(k, _)| k)
        .filter(|k| !listed.contains(*k))
        .filter(|k| block_of_piece(k).is_some_and(|b| !live.contains(&b)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_pieces_are_those_of_unlisted_mounts_that_no_file_lists() {
        let k = |s: &str| s.as_bytes().to_vec();
        let listed = mount_piece_tag(9, 0x100, 0) + ".0";
        let info = format!("{{\"kind\":\"file\",\"pieces\":[\"{listed}\"]}}");
        let kvs = vec![
            (k("i/0000000000000009"), k(&info)),
            (k("mounts/h.1.2"), mount_value("pid 1 on h", Some(0x200))),
            (k("mounts/h.3.4"), mount_value("pid 3 on h", None)),
            (k("mounts/h.5.6"), mount_value("pid 5 on h", Some(0x400))),
            (piece_key(&listed), k("a")),
            // A live mount's save on its way; a dead one's; an import's.
            (piece_key(&(mount_piece_tag(9, 0x200, 3) + ".0")), k("b")),
            (piece_key(&(mount_piece_tag(9, 0x300, 1) + ".1")), k("c")),
            // A listed mount whose daemon is known to be dead.
            (piece_key(&(mount_piece_tag(9, 0x400, 0) + ".0")), k("e")),
            (k("p/0000000000000009.1700000000.77.0"), k("d")),
        ];
        let mut want = vec![
            piece_key(&(mount_piece_tag(9, 0x300, 1) + ".1")),
            piece_key(&(mount_piece_tag(9, 0x400, 0) + ".0")),
        ];
        want.sort();
        let mut got = orphan_pieces(&kvs, |k| k == b"mounts/h.5.6");
        got.sort();
        assert_eq!(got, want);
    }
}
