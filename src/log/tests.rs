use super::*;
use crate::disk::Disk;
use crate::limits::max_line_for;
use crate::types::{Attrs, Fid, Kind, Time, ROOT};
use serde_json::Value;
use std::sync::Arc;

fn attrs() -> Attrs {
    let t = Time {
        secs: 1_700_000_000,
        nsecs: 5,
    };
    Attrs {
        mode: 0o644,
        uid: 1000,
        gid: 100,
        atime: t,
        mtime: t,
        ctime: t,
    }
}

fn roundtrip(op: Op) -> Entry {
    let line = encode_entry(&Entry {
        seq: 9,
        ts: 1234,
        op,
    });
    assert!(!line.contains(&b'\n'));
    let v: Value = serde_json::from_slice(&line).expect("every line is JSON");
    assert_eq!(v["seq"], 9);
    decode_entry(&line).expect("decodes")
}

#[test]
fn set_round_trips_exact_bytes_in_both_encodings() {
    for bytes in [
        b"{\"a\": \"\\u00e9\"}\n".to_vec(),
        vec![0, 1, 2, 255, 254, b'\n'],
        Vec::new(),
        "d\u{e9}j\u{e0} \"vu\"\t".as_bytes().to_vec(),
    ] {
        let e = roundtrip(Op::Set {
            fid: 7,
            dir: ROOT,
            name: b"x.json".to_vec(),
            kind: Kind::File,
            attrs: attrs(),
            data: Data::new(Arc::new(bytes.clone())),
        });
        match e.op {
            Op::Set { data, attrs: a, .. } => {
                assert_eq!(*data.bytes, bytes);
                assert_eq!(a, attrs());
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Issue 11: an XATTR entry carries a file's whole set of extended attributes, binary values
/// and non-UTF-8 names included, and an empty set says none are left.
#[test]
fn xattr_entries_round_trip() {
    for pairs in [
        vec![(b"user.color".to_vec(), b"blue".to_vec())],
        vec![
            (b"user.\xff".to_vec(), vec![0, 255]),
            (b"trusted.x".to_vec(), Vec::new()),
        ],
        Vec::new(),
    ] {
        let want: crate::types::Xattrs = Arc::new(pairs.into_iter().collect());
        let e = roundtrip(Op::Xattr {
            fid: 7,
            dir: ROOT,
            name: b"x.json".to_vec(),
            xattrs: want.clone(),
        });
        match e.op {
            Op::Xattr { xattrs, .. } => assert_eq!(xattrs, want),
            other => panic!("{other:?}"),
        }
    }
}

/// Issue 11: a LINK entry gives a file a further name, non-UTF-8 names included.
#[test]
fn link_entries_round_trip() {
    let e = roundtrip(Op::Link {
        fid: 7,
        dir: 9,
        name: vec![b'l', 0xff],
    });
    match e.op {
        Op::Link { fid, dir, name } => assert_eq!((fid, dir, name), (7, 9, vec![b'l', 0xff])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn control_bytes_use_base64_so_lines_stay_bounded() {
    let bytes = vec![1u8; 1000];
    let f = Data::encode(&bytes);
    assert!(f.starts_with(b"\"enc\":\"base64\""));
    assert!(f.len() as u64 <= max_line_for(1000));
}

#[test]
fn non_utf8_names_round_trip() {
    let e = roundtrip(Op::Rename {
        fid: 3,
        dir: ROOT,
        name: vec![b'a', 0xff],
        to_dir: ROOT,
        to_name: b"b".to_vec(),
        replaced: Some(4),
        exchange: false,
    });
    match e.op {
        Op::Rename { name, replaced, .. } => {
            assert_eq!(name, vec![b'a', 0xff]);
            assert_eq!(replaced, Some(4));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn any_flipped_bit_is_detected() {
    let line = encode_entry(&Entry {
        seq: 1,
        ts: 2,
        op: Op::Delete {
            fid: 5,
            dir: ROOT,
            name: b"a.txt".to_vec(),
        },
    });
    for i in 0..line.len() {
        for bit in 0..8 {
            let mut bad = line.clone();
            bad[i] ^= 1 << bit;
            assert!(decode_entry(&bad).is_err(), "flip at byte {i} bit {bit}");
        }
    }
}

#[test]
fn snapshots_and_manifests_round_trip_and_detect_damage() {
    let xattrs = |pairs: &[(&[u8], &[u8])]| -> crate::types::Xattrs {
        std::sync::Arc::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
        )
    };
    let snap = Snapshot {
        upto: 41,
        next_fid: 9,
        root: attrs(),
        root_xattrs: xattrs(&[(b"user.top", b"1")]),
        files: vec![
            FileRecord {
                fid: 3,
                dir: ROOT,
                name: crate::name::Name::new(&[b'a', 0xff]),
                kind: Kind::File,
                attrs: attrs(),
                len: 12,
                dcrc: 0xdead_beef,
                target: None,
                xattrs: xattrs(&[(b"user.a", b"\x00\xff"), (b"user.\xff", b"")]),
                links: vec![(ROOT, b"b".to_vec()), (5, vec![b'c', 0xfe])],
            },
            FileRecord {
                fid: 4,
                dir: ROOT,
                name: crate::name::Name::new(b"link"),
                kind: Kind::Symlink,
                attrs: attrs(),
                len: 1,
                dcrc: 0,
                target: Some(b"t".to_vec()),
                xattrs: Default::default(),
                links: Vec::new(),
            },
        ],
    };
    let bytes = encode_snapshot(&snap);
    assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 1;
    assert!(decode_snapshot(&bad).is_err());
    assert!(decode_snapshot(&bytes[..bytes.len() - 3]).is_err());
    let m = Manifest {
        snapshot: 41,
        first_segment: 42,
    };
    assert_eq!(decode_manifest(&encode_manifest(&m)).unwrap(), m);
    assert!(decode_manifest(&encode_manifest(&m)[1..]).is_err());
}

#[test]
fn segment_names_round_trip() {
    assert_eq!(segment_name(1), "00000000000000000001.log");
    assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
    assert_eq!(parse_segment_name("1.log"), None);
    assert_eq!(parse_segment_name("+0000000000000000001.log"), None);
    assert_eq!(parse_snapshot_name(&snapshot_name(7)), Some(7));
}

#[test]
fn scan_cuts_torn_tail_and_flags_middle_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let disk: &dyn Disk = &crate::disk::RealDisk;
    let mut w = LogWriter::create(disk, dir.path(), 1, 1 << 20).unwrap();
    for seq in 1..=3 {
        let line = encode_entry(&Entry {
            seq,
            ts: 0,
            op: Op::Checkpoint { upto: 0 },
        });
        w.append(&line).unwrap();
    }
    let path = w.path().to_owned();
    let good_len = w.len();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":4,\"ts\"");
    std::fs::write(&path, &bytes).unwrap();
    let mut seen = 0;
    let scan = scan_segment(disk, &path, None, |_, _| {
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 3);
    assert_eq!(scan.good_end, good_len);
    assert_eq!(scan.bad.len(), 1);
    assert!(!scan.good_after_bad);

    // Corrupt the second entry: the third still checks, so this is corruption.
    let mut bytes = std::fs::read(&path).unwrap();
    let second = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0;
    bytes[second - 5] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let scan = scan_segment(disk, &path, None, |_, _| Ok(())).unwrap();
    assert!(scan.good_after_bad);
    assert_eq!(scan.last_seq, Some(1));
    assert_eq!(scan.bad[0].prev_seq, Some(1));
}

/// A crash can keep entries of a new segment whose header write never reached the disk
/// (unsynced writes land in any order): the header's place reads as zeros. No fdatasync of the
/// segment returned, so nothing in it was acknowledged: a hole, not corruption.
#[test]
fn a_header_that_never_reached_the_disk_is_a_hole() {
    use crate::disk::sim::SimDisk;
    let disk = SimDisk::new();
    let path = std::path::Path::new("/7.log");
    let entry = encode_entry(&Entry {
        seq: 7,
        ts: 0,
        op: Op::Checkpoint { upto: 6 },
    });
    let second = encode_entry(&Entry {
        seq: 8,
        ts: 0,
        op: Op::Checkpoint { upto: 6 },
    });
    // The header's bytes and the start of the first entry are zeros; the rest was written.
    let mut bytes = vec![0u8; 120];
    bytes.extend_from_slice(&entry[20..]);
    bytes.push(b'\n');
    bytes.extend_from_slice(&second);
    bytes.push(b'\n');
    disk.write_file(path, &bytes, None).unwrap();
    let mut visited = 0;
    let scan = scan_segment(&disk, path, Some(7), |_, _| {
        visited += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(visited, 0);
    assert!(scan.hole && scan.good_after_bad, "{scan:?}");
    assert_eq!((scan.bad[0].offset, scan.header.is_none()), (0, true));
    // The same when the lost writes were longer than a header may be (the first entry's too).
    let mut bytes = vec![0u8; 9000];
    bytes.extend_from_slice(&entry[20..]);
    bytes.push(b'\n');
    bytes.extend_from_slice(&second);
    bytes.push(b'\n');
    disk.write_file(path, &bytes, None).unwrap();
    let scan = scan_segment(&disk, path, Some(7), |_, _| Ok(())).unwrap();
    assert!(scan.hole && scan.bad[0].has_nul, "{scan:?}");
    // A header that is damaged, not missing, with entries after it is still corruption.
    let mut bytes = b"{\"recordfs\":\"log\",\"garbled\"}".to_vec();
    bytes.push(b'\n');
    bytes.extend_from_slice(&entry);
    bytes.push(b'\n');
    disk.write_file(path, &bytes, None).unwrap();
    let e = scan_segment(&disk, path, Some(7), |_, _| Ok(())).unwrap_err();
    assert!(
        e.reason
            .contains("the header is unreadable but entries follow"),
        "{e}"
    );
}

/// Regression (found by tests/limits.rs under a full disk): a compaction whose new segment's
/// header did not fit left an empty segment file behind; the log went on in the segment before
/// it, and recovery then found a segment out of order and refused the store.
#[test]
fn a_segment_whose_header_does_not_fit_is_not_left_behind() {
    use crate::disk::sim::{FaultOn, SimDisk};
    use crate::disk::Disk;
    let disk = SimDisk::new();
    let dir = std::path::Path::new("/log");
    disk.create_dir(dir).unwrap();
    disk.fail_next(FaultOn::Write, 0, libc::ENOSPC);
    let e = match super::LogWriter::create_unsynced(&disk, dir, 7, 1 << 20) {
        Err(e) => e,
        Ok(_) => panic!("the header was written"),
    };
    assert_eq!(e.errno, libc::ENOSPC, "{e}");
    assert_eq!(disk.list(dir).unwrap(), Vec::<Vec<u8>>::new());
}

/// Issue 12: a segment is written into zeros written ahead of its lines (fdatasync then needs
/// no change of the file's size); readers take an all-zero tail for free space, not a torn
/// entry, and a trim leaves the segment exactly its lines. Zeros with a line after them are
/// still a hole.
#[test]
fn zeros_written_ahead_are_free_space_and_trimmed_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let disk: &dyn Disk = &crate::disk::RealDisk;
    let mut w = LogWriter::create(disk, dir.path(), 1, 1 << 20).unwrap();
    let line = |seq| {
        encode_entry(&Entry {
            seq,
            ts: 0,
            op: Op::Checkpoint { upto: 0 },
        })
    };
    w.append(&line(1)).unwrap();
    let path = w.path().to_owned();
    let size = || std::fs::metadata(&path).unwrap().len();
    assert_eq!(size(), w.len() + crate::limits::LOG_PREALLOC);
    let before = size();
    w.append(&line(2)).unwrap();
    assert_eq!(size(), before, "the second line went into the zeros");
    let scan_all = || {
        let mut seen = 0;
        let scan = scan_segment(disk, &path, None, |_, _| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        (seen, scan)
    };
    let (seen, scan) = scan_all();
    assert_eq!((seen, scan.good_end, scan.bad.len()), (2, w.len(), 0));
    let mut lines = 0;
    for_each_line(disk, &path, 1 << 20, |_, _| {
        lines += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(lines, 3, "the header and two entries, no line of zeros");
    // A line beyond zeros: a hole, as before.
    let mut bytes = std::fs::read(&path).unwrap();
    let end = bytes.len() - 10;
    bytes[end..].copy_from_slice(b"{\"seq\":9}\n");
    std::fs::write(&path, &bytes).unwrap();
    let (_, scan) = scan_all();
    assert!(scan.hole, "{scan:?}");
    // Reopened, the writer appends where the lines end; trimmed, the zeros go.
    bytes.truncate(end);
    std::fs::write(&path, &bytes).unwrap();
    let header = scan.header.clone().unwrap();
    let mut w = LogWriter::open(disk, &path, &header, scan.good_end).unwrap();
    w.append(&line(3)).unwrap();
    w.trim().unwrap();
    assert_eq!(size(), w.len());
    let (seen, scan) = scan_all();
    assert_eq!((seen, scan.bad.len()), (3, 0));
}

/// Issue 12: a snapshot's plain file lines are read by a fast path. It must read exactly what
/// the general reading does, leave it every line it cannot read whole (xattrs, a name that is
/// not UTF-8), and refuse whatever the general reading refuses.
#[test]
fn a_snapshot_line_reads_the_same_on_the_fast_path() {
    let file =
        |fid, name: &[u8], kind, target: Option<&[u8]>, links: Vec<(Fid, Vec<u8>)>| FileRecord {
            fid,
            dir: ROOT,
            name: crate::name::Name::new(name),
            kind,
            attrs: attrs(),
            len: 7,
            dcrc: 0x0102_0304,
            target: target.map(<[u8]>::to_vec),
            xattrs: crate::types::no_xattrs(),
            links,
        };
    let line_of = |f: &FileRecord| -> Vec<u8> {
        let bytes = encode_snapshot(&Snapshot {
            upto: 1,
            next_fid: 99,
            root: attrs(),
            root_xattrs: crate::types::no_xattrs(),
            files: vec![f.clone()],
        });
        bytes.split(|b| *b == b'\n').nth(1).unwrap().to_vec()
    };
    let fast = [
        file(3, b"plain.json", Kind::File, None, vec![]),
        file(4, b"d", Kind::Dir, None, vec![]),
        file(5, b"s", Kind::Symlink, Some(b"../t \"q\""), vec![]),
        file(6, b"esc\"ape\\d\n\t\x01", Kind::File, None, vec![]),
        file(
            7,
            "\u{e9}t\u{e9}".as_bytes(),
            Kind::File,
            None,
            vec![(5, b"l".to_vec())],
        ),
    ];
    for f in &fast {
        let line = line_of(f);
        assert_eq!(snapshot::plain_file_record(&line).as_ref(), Some(f));
        assert_eq!(&snapshot::decode_file_record(&line).unwrap(), f);
    }
    let mut with_xattrs = file(8, b"x", Kind::File, None, vec![]);
    with_xattrs.xattrs = Arc::new([(b"user.a".to_vec(), b"1".to_vec())].into());
    let general = [
        with_xattrs,
        file(9, &[b'a', 0xff], Kind::File, None, vec![]),
        file(10, b"l", Kind::File, None, vec![(ROOT, vec![0xfe])]),
    ];
    for f in &general {
        let line = line_of(f);
        assert_eq!(snapshot::plain_file_record(&line), None);
        assert_eq!(&snapshot::decode_file_record(&line).unwrap(), f);
    }
    // Sealed again after the change: only the value is wrong.
    let line = String::from_utf8(line_of(&fast[0])).unwrap();
    let body = &line[..line.rfind(",\"crc\"").unwrap()];
    for (from, to) in [
        ("\"fid\":3", "\"fid\":0"),
        ("\"dir\":1", "\"dir\":18446744073709551615"),
        ("\"kind\":\"file\"", "\"kind\":\"pipe\""),
        ("\"mode\":420", "\"mode\":4294967296"),
        ("\"uid\":1000", "\"uid\":-1"),
        ("[1700000000,5]", "[1700000000,1000000000]"),
        ("\"dcrc\":\"01020304\"", "\"dcrc\":\"xyz\""),
        ("\"len\":7", "\"len\":7.5"),
    ] {
        assert!(body.contains(from), "{from} in {body}");
        let bad = line::seal(body.replacen(from, to, 1).into_bytes());
        assert_eq!(snapshot::plain_file_record(&bad), None, "{to}");
        assert!(snapshot::decode_file_record(&bad).is_err(), "{to}");
    }
}

/// A big snapshot is decoded by several threads: the files come back in order, and the error
/// is the first bad line's, as read one by one.
#[test]
fn a_big_snapshot_decodes_in_order_and_names_its_first_bad_line() {
    let snap = Snapshot {
        upto: 1,
        next_fid: 50_000,
        root: attrs(),
        root_xattrs: crate::types::no_xattrs(),
        files: (2..40_002)
            .map(|fid| FileRecord {
                fid,
                dir: ROOT,
                name: crate::name::Name::new(format!("{fid}.json").as_bytes()),
                kind: Kind::File,
                attrs: attrs(),
                len: fid,
                dcrc: fid as u32,
                target: None,
                xattrs: crate::types::no_xattrs(),
                links: Vec::new(),
            })
            .collect(),
    };
    let bytes = encode_snapshot(&snap);
    assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
    let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    // Line 1 + 10,000 names an unknown kind; line 1 + 30,000 fails its checksum.
    let early = String::from_utf8(lines[10_001].clone()).unwrap();
    let body = &early[..early.rfind(",\"crc\"").unwrap()];
    lines[10_001] = line::seal(body.replacen("\"file\"", "\"pipe\"", 1).into_bytes());
    lines[30_001][20] ^= 1;
    let e = decode_snapshot(&lines.join(&b'\n')).unwrap_err();
    assert!(e.reason.contains("unknown kind"), "{}", e.reason);
}

fn range(at: u64, bytes: &[u8]) -> Range {
    Range {
        at,
        data: Data::new(Arc::new(bytes.to_vec())),
    }
}

#[test]
fn a_patch_round_trips_and_its_ranges_must_fit() {
    let patch = |len, ranges| Op::Patch {
        fid: 5,
        dir: 1,
        name: b"f".to_vec(),
        attrs: attrs(),
        len,
        dcrc: 7,
        ranges,
        shown: None,
    };
    let e = roundtrip(patch(10, vec![range(0, b"ab"), range(4, &[0xff, 0])]));
    match e.op {
        Op::Patch {
            len, dcrc, ranges, ..
        } => {
            assert_eq!((len, dcrc), (10, 7));
            let got: Vec<(u64, Vec<u8>)> = ranges
                .iter()
                .map(|r| (r.at, r.data.bytes.to_vec()))
                .collect();
            assert_eq!(got, vec![(0, b"ab".to_vec()), (4, vec![0xff, 0])]);
        }
        other => panic!("{other:?}"),
    }
    // Out of order, overlapping, empty, or past `len`: corruption.
    for ranges in [
        vec![range(4, b"x"), range(0, b"y")],
        vec![range(0, b"xyz"), range(2, b"y")],
        vec![range(0, b"")],
        vec![range(8, b"xyz")],
    ] {
        let line = encode_entry(&Entry {
            seq: 1,
            ts: 1,
            op: patch(10, ranges),
        });
        assert!(
            decode_entry(&line).is_err(),
            "{}",
            String::from_utf8_lossy(&line)
        );
    }
}

#[test]
fn a_patch_applies_the_same_onto_a_copy_left_part_way() {
    let old = b"0123456789".to_vec();
    // Shortened to 4, written at 6: every byte past 4 is in the ranges.
    let ranges = vec![range(1, b"a"), range(4, b"\0\0b")];
    let mut once = old.clone();
    apply_patch(&mut once, 7, &ranges);
    assert_eq!(once, b"0a23\0\0b");
    let mut twice = once.clone();
    apply_patch(&mut twice, 7, &ranges);
    assert_eq!(twice, once);
    // A copy the interrupted apply left with the first range written and the old length.
    let mut torn = b"0a23456789".to_vec();
    apply_patch(&mut torn, 7, &ranges);
    assert_eq!(torn, once);
}
