//! A file's name as the namespace and a snapshot's file lines keep it. Nearly every name in a
//! store of records is `<uuid>.json` in the canonical lowercase form: 41 bytes that are 16
//! bytes of UUID. Those are kept as the 16 bytes, in the inode itself; any other name in an
//! allocation of its own. At a million records that is 72 bytes less per record (a Vec's
//! three words in the inode and a 48-byte chunk on the heap), and reading a snapshot
//! allocates nothing for them.

use std::fmt;
use std::ops::Deref;

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.json`.
const RECORD_LEN: usize = 41;
const DASHES: [usize; 4] = [8, 13, 18, 23];
const SUFFIX: &[u8] = b".json";
const HEX: &[u8; 16] = b"0123456789abcdef";

#[derive(Clone, PartialEq, Eq)]
pub enum Name {
    /// A canonical record name: the UUID's bytes.
    Record([u8; 16]),
    Other(Box<[u8]>),
}

/// A name's bytes: borrowed, or spelled out from a record name's UUID.
pub enum NameBytes<'a> {
    Slice(&'a [u8]),
    Record([u8; RECORD_LEN]),
}

impl Deref for NameBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            NameBytes::Slice(s) => s,
            NameBytes::Record(b) => b,
        }
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The UUID of a name in exactly the canonical form (lowercase, dashed, `.json`), which
/// `spell` gives back byte for byte; None for any other name.
fn pack(name: &[u8]) -> Option<[u8; 16]> {
    if name.len() != RECORD_LEN || !name.ends_with(SUFFIX) {
        return None;
    }
    let mut digits = [0u8; 32];
    let mut n = 0;
    for (i, &c) in name[..RECORD_LEN - SUFFIX.len()].iter().enumerate() {
        if DASHES.contains(&i) {
            if c != b'-' {
                return None;
            }
        } else {
            digits[n] = hex_digit(c)?;
            n += 1;
        }
    }
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = digits[2 * i] << 4 | digits[2 * i + 1];
    }
    Some(uuid)
}

fn spell(uuid: &[u8; 16]) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    let mut at = 0;
    for byte in uuid {
        if DASHES.contains(&at) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 15)];
        at += 2;
    }
    out[at..].copy_from_slice(SUFFIX);
    out
}

impl Name {
    pub fn new(name: &[u8]) -> Name {
        match pack(name) {
            Some(uuid) => Name::Record(uuid),
            None => Name::Other(name.into()),
        }
    }

    pub fn bytes(&self) -> NameBytes<'_> {
        match self {
            Name::Record(uuid) => NameBytes::Record(spell(uuid)),
            Name::Other(b) => NameBytes::Slice(b),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Name::Record(_) => RECORD_LEN,
            Name::Other(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes().to_vec()
    }
}

impl PartialEq<[u8]> for Name {
    fn eq(&self, other: &[u8]) -> bool {
        match self {
            Name::Record(uuid) => pack(other).as_ref() == Some(uuid),
            Name::Other(b) => **b == *other,
        }
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_canonical_record_names_are_packed() {
        let record = b"0f8c4e2a-9b1d-4c3e-8a7f-0123456789ab.json";
        let n = Name::new(record);
        assert!(matches!(n, Name::Record(_)));
        assert_eq!(&*n.bytes(), record);
        assert_eq!(n.len(), record.len());
        assert!(n == record[..]);
        assert!(n != b"0f8c4e2a-9b1d-4c3e-8a7f-0123456789ac.json"[..]);
        for other in [
            &b"0F8C4E2A-9B1D-4C3E-8A7F-0123456789AB.json"[..],
            b"0f8c4e2a-9b1d-4c3e-8a7f-0123456789ab.JSON",
            b"0f8c4e2a-9b1d-4c3e-8a7f-0123456789ab.jsox",
            b"0f8c4e2a9b1d-4c3e-8a7f-0123456789abc.json",
            b"0f8c4e2a-9b1d-4c3e-8a7f-0123456789ag.json",
            b"0f8c4e2a-9b1d-4c3e-8a7f-0123456789ab.json~",
            b".0f8c4e2a-9b1d-4c3e-8a7f-0123456789ab.json.swp",
            b"notes.txt",
            b"",
        ] {
            let n = Name::new(other);
            assert!(matches!(n, Name::Other(_)), "{n:?}");
            assert_eq!(&*n.bytes(), other);
            assert!(n == *other);
            assert!(n != record[..]);
            assert!(Name::new(record) != *other);
        }
        // Every byte value in every hex position spells back exactly.
        for b in 0..=255u8 {
            let uuid = [b; 16];
            let spelled = spell(&uuid);
            assert_eq!(pack(&spelled), Some(uuid));
            assert_eq!(&*Name::new(&spelled).bytes(), &spelled[..]);
        }
    }
}
