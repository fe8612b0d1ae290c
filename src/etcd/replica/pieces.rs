//! A file's bytes put into a transaction's keys: one `d/` value, or new pieces (FORMAT.md,
//! "Files in pieces"), and the pieces of a transaction that did not go in deleted again.

use std::sync::atomic::Ordering;

use super::super::keys::{Held, Keys};
use super::super::layout;
use super::super::MAX_TXN_OPS;
use super::EtcdReplica;
use crate::error::Result;
use crate::pipeline::{Pipeline, Read};
use crate::types::Fid;

impl EtcdReplica {
    /// Puts a file's bytes as the local store holds them now into `keys`: one `d/` value,
    /// or new pieces; either way the file's other pieces go.
    pub(super) fn put_bytes(
        &self,
        p: &Pipeline,
        fid: Fid,
        efid: Fid,
        keys: &mut Keys,
    ) -> Result<Held> {
        let bytes = read_bytes(p, fid)?;
        let (size, crc) = (bytes.len() as u64, crate::log::crc32c(&bytes));
        let (first, end) = layout::pieces_range(efid);
        let pieces = if bytes.len() <= layout::PIECE {
            keys.puts.insert(layout::data_key(efid), bytes);
            keys.ranges_gone.push((first, end));
            None
        } else {
            let n = self.saves.fetch_add(1, Ordering::Relaxed);
            let tag = layout::mount_piece_tag(efid, self.base, n);
            let ids: Vec<String> = (0..bytes.len().div_ceil(layout::PIECE))
                .map(|i| format!("{tag}.{i}"))
                .collect();
            for (id, piece) in ids.iter().zip(bytes.chunks(layout::PIECE)) {
                keys.pieces.push((layout::piece_key(id), piece.to_vec()));
            }
            keys.keys_gone.insert(layout::data_key(efid));
            // Every piece of the file but the new ones (`tag.0`, `tag.1`, ...).
            keys.ranges_gone
                .push((first, format!("p/{tag}.").into_bytes()));
            keys.ranges_gone
                .push((format!("p/{tag}/").into_bytes(), end));
            Some(ids)
        };
        let held = Held { size, crc, pieces };
        keys.shipped.push((fid, Some(held.clone())));
        Ok(held)
    }

    /// Deletes the new pieces of `keys`, nobody's once its transaction did not go in (a
    /// failure to is only said: `check` reports pieces nothing reaches).
    pub(super) fn drop_pieces(&self, keys: &Keys) {
        let ids: Vec<Vec<u8>> = keys.pieces.iter().map(|(k, _)| k.clone()).collect();
        for some in ids.chunks(MAX_TXN_OPS) {
            if let Err(e) = self.etcd.put_if(&[], &[], some) {
                log::warn!(
                    "{}: deleting pieces no file lists: {}",
                    self.etcd.url,
                    e.reason
                );
                return;
            }
        }
    }
}

/// A file's bytes as the local store holds them now.
fn read_bytes(p: &Pipeline, fid: Fid) -> Result<Vec<u8>> {
    match p.version(fid)? {
        Read::Fine(held, _) => {
            let size = held.version.size()?;
            held.version.read_at(0, size as usize)
        }
        Read::Restore(bytes) => Ok(bytes.to_vec()),
    }
}
