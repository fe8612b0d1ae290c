//! What a mount spends on a big store's snapshot: decoding its lines and building the
//! namespace from them, for N records in one directory (`N=1000000 cargo bench --bench
//! snapshot`; 200,000 by default). Prints the medians of 3 runs, and the heap the namespace
//! holds once built (counted by the allocator), per record. Then what a compaction spends on
//! the next snapshot once 1% of the records changed: taken whole (a copy of every record,
//! encoded) against written from the last one and the records changed since, and the heap
//! each holds at its peak besides the namespace.

use std::time::{Duration, Instant};

use recordfs::log::{
    decode_snapshot, encode_snapshot, write_merged_snapshot, Entry, FileRecord, Op, Snapshot,
};
use recordfs::namespace::Namespace;
use recordfs::types::{Attrs, Kind, Time};

#[path = "support/counting.rs"]
mod counting;

fn main() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let t = Time {
        secs: 1_700_000_000,
        nsecs: 123_456_789,
    };
    let attrs = Attrs {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        atime: t,
        mtime: t,
        ctime: t,
    };
    let file = |fid, dir, name: String, kind| FileRecord {
        fid,
        dir,
        name: recordfs::name::Name::new(name.as_bytes()),
        kind,
        attrs,
        len: 300,
        dcrc: fid as u32,
        target: None,
        xattrs: Default::default(),
        links: Vec::new(),
    };
    let mut files = vec![file(2, 1, "records".into(), Kind::Dir)];
    files.extend((0..n).map(|i| {
        let name = format!("{:08x}-0000-4000-8000-{i:012x}.json", i >> 16);
        file(3 + i, 2, name, Kind::File)
    }));
    let bytes = encode_snapshot(&Snapshot {
        upto: 5,
        next_fid: n + 3,
        root: attrs,
        root_xattrs: Default::default(),
        files,
    });
    let (mut decode, mut build) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        let snap = decode_snapshot(&bytes).expect("decodes");
        let t1 = Instant::now();
        let ns = Namespace::from_snapshot(&snap).expect("builds");
        let t2 = Instant::now();
        assert_eq!(ns.file_count() as u64, n + 1);
        decode.push(t1 - t0);
        build.push(t2 - t1);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let before = counting::in_use();
    let ns = Namespace::from_snapshot(&decode_snapshot(&bytes).expect("decodes")).expect("builds");
    let held = counting::in_use() - before;
    println!(
        "snapshot of {n} records, {} MB: decode {:.3} s, namespace {:.3} s; the namespace holds {} MiB, {} B per record",
        bytes.len() / 1_000_000,
        median(decode),
        median(build),
        held >> 20,
        held / ns.file_count()
    );

    // 1% of the records change their mode.
    let mut ns = ns;
    let changed = (n / 100).max(1);
    for i in 0..changed {
        let fid = 3 + i * 100 % n;
        let inode = ns.get(fid).expect("a record");
        let entry = Entry {
            seq: 6 + i,
            ts: 1_700_000_000_000,
            op: Op::Attr {
                fid,
                dir: inode.parent,
                name: inode.name.bytes().to_vec(),
                attrs: Attrs {
                    mode: 0o600,
                    ..inode.attrs
                },
            },
        };
        ns.apply(&entry, None).expect("applies");
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let (base, out) = (dir.path().join("base"), dir.path().join("out"));
    std::fs::write(&base, &bytes).expect("written");
    drop(bytes);
    let before = counting::in_use();
    counting::reset_peak();
    let t0 = Instant::now();
    let copy = ns.snapshot();
    let copy_time = t0.elapsed();
    let whole = encode_snapshot(&copy);
    drop(copy);
    let whole_time = t0.elapsed();
    let whole_peak = counting::peak() - before;
    let (whole_len, whole_crc) = (whole.len(), recordfs::log::crc32c(&whole));
    drop(whole);
    let t0 = Instant::now();
    let delta = ns
        .take_changes()
        .expect("the namespace came from a snapshot");
    let take_time = t0.elapsed();
    counting::reset_peak();
    let t0 = Instant::now();
    write_merged_snapshot(
        &recordfs::disk::RealDisk,
        std::slice::from_ref(&base),
        None,
        &delta,
        &out,
    )
    .expect("merged");
    let merged_time = t0.elapsed();
    let merged_peak = counting::peak() - before;
    let written = std::fs::read(&out).expect("read");
    assert_eq!(
        (written.len(), recordfs::log::crc32c(&written)),
        (whole_len, whole_crc)
    );
    println!(
        "next snapshot after {changed} changes: whole {:.3} s (the copy, which the state lock covers, {:.3} s), heap {} MiB; from the last one {:.3} s (written and synced; the changes taken under the lock {:.4} s), heap {} MiB ({} records changed)",
        whole_time.as_secs_f64(),
        copy_time.as_secs_f64(),
        whole_peak >> 20,
        merged_time.as_secs_f64(),
        take_time.as_secs_f64(),
        merged_peak >> 20,
        delta.changed.len()
    );
}
