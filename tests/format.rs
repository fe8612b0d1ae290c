//! FORMAT.md against the code: its example lines decode, its table of operations lists exactly
//! the fields each entry is written with, and the store marker is the one documented.
//!
//! Guards against: the format page and the log drifting apart, which would leave a reader who
//! trusts the page (a backup script, `jq`, a later version) misreading a store.

use std::collections::BTreeSet;
use std::sync::Arc;

use recordfs::fs::RecordFs;
use recordfs::log::{decode_entry, encode_entry, Data, Entry, Op, Range};
use recordfs::options::Options;
use recordfs::types::{Attrs, Kind, Time};

const FORMAT: &str = include_str!("../FORMAT.md");

fn attrs() -> Attrs {
    let t = Time { secs: 1, nsecs: 2 };
    Attrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        atime: t,
        mtime: t,
        ctime: t,
    }
}

/// One entry of every operation, as the log writes them.
fn one_of_each() -> Vec<Entry> {
    let name = b"a.txt".to_vec();
    let ops = vec![
        Op::Set {
            fid: 2,
            dir: 1,
            name: name.clone(),
            kind: Kind::File,
            attrs: attrs(),
            data: Data::new(Arc::new(b"bytes".to_vec())),
        },
        Op::Patch {
            fid: 2,
            dir: 1,
            name: name.clone(),
            attrs: attrs(),
            len: 9,
            dcrc: 0x5d7a_1c2e,
            ranges: vec![Range {
                at: 5,
                data: Data::new(Arc::new(b"more".to_vec())),
            }],
            shown: None,
        },
        Op::Attr {
            fid: 2,
            dir: 1,
            name: name.clone(),
            attrs: attrs(),
        },
        Op::Delete {
            fid: 2,
            dir: 1,
            name: name.clone(),
        },
        Op::Rename {
            fid: 2,
            dir: 1,
            name,
            to_dir: 1,
            to_name: b"b.txt".to_vec(),
            replaced: None,
            exchange: false,
        },
        Op::Link {
            fid: 2,
            dir: 1,
            name: b"c.txt".to_vec(),
        },
        Op::Xattr {
            fid: 2,
            dir: 1,
            name: b"b.txt".to_vec(),
            xattrs: Arc::new([(b"user.k".to_vec(), b"v".to_vec())].into()),
        },
        Op::Checkpoint { upto: 4 },
    ];
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| Entry {
            seq: i as u64 + 1,
            ts: 1_763_788_800_123,
            op,
        })
        .collect()
}

/// The rows of the operations table: op name and its fields.
fn documented_ops() -> Vec<(String, BTreeSet<String>)> {
    FORMAT
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | `OP` | `fields` | meaning |
            let op = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let fields = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            op.chars().all(|c| c.is_ascii_uppercase()).then(|| {
                (
                    op.to_string(),
                    fields.split(' ').map(String::from).collect(),
                )
            })
        })
        .collect()
}

#[test]
fn every_operation_has_exactly_the_fields_the_table_lists() {
    let documented = documented_ops();
    let entries = one_of_each();
    assert_eq!(
        documented
            .iter()
            .map(|(op, _)| op.as_str())
            .collect::<Vec<_>>(),
        entries.iter().map(|e| e.op.name()).collect::<Vec<_>>(),
        "the table lists every operation, in order"
    );
    for (entry, (op, fields)) in entries.iter().zip(&documented) {
        let line = encode_entry(entry);
        let text = String::from_utf8(line.clone()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let written: BTreeSet<String> = json
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !["seq", "ts", "op", "crc"].contains(&k.as_str()))
            .cloned()
            .collect();
        assert_eq!(&written, fields, "{op}: {text}");
        // And every entry the log writes reads back.
        decode_entry(&line).unwrap_or_else(|e| panic!("{op}: {e}"));
    }
}

#[test]
fn the_example_entries_check_out_and_are_what_the_log_writes() {
    let examples: Vec<&str> = FORMAT
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("{\"seq\":") && !l.contains('…'))
        .collect();
    assert!(!examples.is_empty(), "FORMAT.md shows an entry");
    for line in examples {
        let entry = decode_entry(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(
            String::from_utf8(encode_entry(&entry)).unwrap(),
            line,
            "written the same way"
        );
    }
}

#[test]
fn the_store_marker_is_the_one_documented() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let fs = RecordFs::start(&store, Options::default()).unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    let marker = std::fs::read_to_string(store.join("recordfs.store")).unwrap();
    let documented = FORMAT
        .lines()
        .find_map(|l| l.trim().strip_prefix("recordfs.store        marker: "))
        .and_then(|l| l.split(';').next())
        .expect("the layout names the marker");
    assert_eq!(marker.trim_end(), documented);
}
