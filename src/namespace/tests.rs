//! The namespace against entries: renames, refusals, directories and snapshots.

use super::*;
use crate::disk::RealDisk;
use crate::limits::MAX_SNAPSHOT_LAYERS;
use crate::log::{Data, Entry, Op};

use crate::types::test_attrs as attrs;

fn set(seq: Seq, fid: Fid, name: &str, bytes: &[u8]) -> Entry {
    Entry {
        seq,
        ts: 5000,
        op: Op::Set {
            fid,
            dir: ROOT,
            name: name.into(),
            kind: Kind::File,
            attrs: attrs(),
            data: Data::new(Arc::new(bytes.to_vec())),
        },
    }
}

#[test]
fn rename_over_removes_the_target_and_exchange_swaps() {
    let mut ns = Namespace::new();
    ns.apply(&set(1, 2, "a", b"A"), None).unwrap();
    ns.apply(&set(2, 3, "b", b"BB"), None).unwrap();
    let rename = |seq, replaced, exchange| Entry {
        seq,
        ts: 6000,
        op: Op::Rename {
            fid: 2,
            dir: ROOT,
            name: b"a".to_vec(),
            to_dir: ROOT,
            to_name: b"b".to_vec(),
            replaced,
            exchange,
        },
    };
    ns.apply(&rename(3, Some(3), true), None).unwrap();
    assert_eq!(ns.lookup(ROOT, b"a").unwrap().fid, 3);
    assert_eq!(ns.lookup(ROOT, b"b").unwrap().fid, 2);
    ns.apply(&set(4, 3, "a", b"AAA"), None).unwrap();
    // Fid 2 is at "b" now, so a rename of fid 2 from "a" does not fit.
    assert!(ns.apply(&rename(5, Some(3), false), None).is_err());
    let back = Entry {
        seq: 5,
        ts: 7000,
        op: Op::Rename {
            fid: 3,
            dir: ROOT,
            name: b"a".to_vec(),
            to_dir: ROOT,
            to_name: b"b".to_vec(),
            replaced: Some(2),
            exchange: false,
        },
    };
    let applied = ns.apply(&back, None).unwrap();
    assert_eq!(applied.removed.len(), 1);
    assert_eq!(applied.removed[0].fid, 2);
    assert_eq!(ns.list(ROOT).count(), 1);
    assert_eq!(ns.lookup(ROOT, b"b").unwrap().size, 3);
    assert_eq!({ ns.get(ROOT).unwrap().attrs.mtime.secs }, 7);
}

#[test]
fn entries_out_of_order_or_unknown_are_refused() {
    let mut ns = Namespace::new();
    ns.apply(&set(2, 2, "a", b""), None).unwrap();
    assert!(ns.apply(&set(2, 3, "b", b""), None).is_err());
    assert!(ns.apply(&set(3, 4, "a", b""), None).is_err());
    let del = Entry {
        seq: 4,
        ts: 0,
        op: Op::Delete {
            fid: 9,
            dir: ROOT,
            name: b"a".to_vec(),
        },
    };
    assert!(ns.apply(&del, None).is_err());
    assert_eq!(ns.allocate_fid(), 3);
}

fn mkdir(seq: Seq, fid: Fid, dir: Fid, name: &str) -> Entry {
    Entry {
        seq,
        ts: 5000,
        op: Op::Set {
            fid,
            dir,
            name: name.into(),
            kind: Kind::Dir,
            attrs: attrs(),
            data: Data::empty(),
        },
    }
}

fn mv(fid: Fid, (dir, name): (Fid, &str), (to_dir, to_name): (Fid, &str)) -> Op {
    Op::Rename {
        fid,
        dir,
        name: name.into(),
        to_dir,
        to_name: to_name.into(),
        replaced: None,
        exchange: false,
    }
}

fn at(seq: Seq, op: Op) -> Entry {
    Entry { seq, ts: 6000, op }
}

/// Issue 11: directories hold entries, count their subdirectories as ext4 does, refuse
/// to go away while not empty, and never move into themselves.
#[test]
fn directories_nest_count_their_links_and_keep_their_shape() {
    let mut ns = Namespace::new();
    ns.apply(&mkdir(1, 2, ROOT, "players"), None).unwrap();
    ns.apply(&mkdir(2, 3, 2, "archive"), None).unwrap();
    let mut rec = set(3, 4, "p.json", b"{}");
    if let Op::Set { dir, .. } = &mut rec.op {
        *dir = 3;
    }
    ns.apply(&rec, None).unwrap();
    assert_eq!(ns.lookup(3, b"p.json").unwrap().fid, 4);
    assert_eq!(ns.get(ROOT).unwrap().subdirs, 1);
    assert_eq!(ns.get(2).unwrap().subdirs, 1);
    assert!(ns.is_within(4, 2) && !ns.is_within(2, 4));
    // A file under a file, a directory into itself or under its own child: refused.
    let mut under_file = set(4, 5, "x", b"");
    if let Op::Set { dir, .. } = &mut under_file.op {
        *dir = 4;
    }
    assert!(ns.apply(&under_file, None).is_err());
    assert!(ns
        .apply(&at(4, mv(2, (ROOT, "players"), (3, "loop"))), None)
        .is_err());
    assert!(ns
        .apply(&at(4, mv(2, (ROOT, "players"), (2, "self"))), None)
        .is_err());
    // Removing a directory that is not empty is refused; an empty one goes.
    let rmdir = |seq, fid, dir, name: &str| {
        at(
            seq,
            Op::Delete {
                fid,
                dir,
                name: name.into(),
            },
        )
    };
    assert!(ns.apply(&rmdir(4, 3, 2, "archive"), None).is_err());
    // Moving the subtree up keeps what is in it and moves the link counts with it.
    ns.apply(&at(4, mv(3, (2, "archive"), (ROOT, "archive"))), None)
        .unwrap();
    assert_eq!(ns.get(ROOT).unwrap().subdirs, 2);
    assert_eq!(ns.get(2).unwrap().subdirs, 0);
    assert_eq!(ns.lookup(3, b"p.json").unwrap().fid, 4);
    // A directory over an empty one replaces it; over one that is not empty, refused.
    let mut over = mv(2, (ROOT, "players"), (ROOT, "archive"));
    if let Op::Rename { replaced, .. } = &mut over {
        *replaced = Some(3);
    }
    assert!(ns.apply(&at(5, over.clone()), None).is_err());
    ns.apply(&rmdir(5, 4, 3, "p.json"), None).unwrap();
    let applied = ns.apply(&at(6, over), None).unwrap();
    assert_eq!(applied.removed[0].fid, 3);
    assert_eq!(ns.get(ROOT).unwrap().subdirs, 1);
    ns.apply(&rmdir(7, 2, ROOT, "archive"), None).unwrap();
    assert_eq!(ns.get(ROOT).unwrap().subdirs, 0);
    assert_eq!(ns.list(ROOT).count(), 0);
}

/// A snapshot of a tree comes back whole, whatever the order of fids; one whose files do
/// not all hang from the root is refused.
#[test]
fn a_tree_survives_its_snapshot_and_a_broken_one_is_refused() {
    let mut ns = Namespace::new();
    ns.apply(&set(1, 2, "later.json", b"{}"), None).unwrap();
    ns.apply(&mkdir(2, 3, ROOT, "d"), None).unwrap();
    // Fid 2 now lives under fid 3: a child with a smaller fid than its directory.
    ns.apply(&at(3, mv(2, (ROOT, "later.json"), (3, "in.json"))), None)
        .unwrap();
    let snap = ns.snapshot();
    let back = Namespace::from_snapshot(&snap).unwrap();
    assert_eq!(back.lookup(3, b"in.json").unwrap().fid, 2);
    assert_eq!(back.get(ROOT).unwrap().subdirs, 1);
    let mut circle = snap.clone();
    for f in &mut circle.files {
        if f.fid == 3 {
            f.dir = 2; // the directory under the file it holds
        }
    }
    assert!(Namespace::from_snapshot(&circle).is_err());
    let mut loop_of_dirs = snap.clone();
    loop_of_dirs.files.retain(|f| f.fid == 3);
    loop_of_dirs.files[0].dir = 3; // its own parent
    assert!(Namespace::from_snapshot(&loop_of_dirs).is_err());
    // One name given to two files, or to one file twice (a further name equal to the first).
    let mut twice = snap.clone();
    let mut other = twice.files[0].clone();
    other.fid = 9;
    twice.files.push(other);
    let e = Namespace::from_snapshot(&twice).err().expect("refused");
    assert!(e.reason.contains("used twice"), "{}", e.reason);
    let mut linked_to_itself = snap;
    let f = &mut linked_to_itself.files[0];
    f.links.push((f.dir, f.name.to_vec()));
    let e = Namespace::from_snapshot(&linked_to_itself)
        .err()
        .expect("refused");
    assert!(e.reason.contains("used twice"), "{}", e.reason);
}

/// Issue 11: a file's names. A save through a further name, the first name's removal (the
/// oldest further name takes its place), a rename of a further name, a rename over one name
/// of a linked file, a snapshot and back; refusals for a link over an existing name, of a
/// directory, and a rename of a file over its own other name.
#[test]
fn links_give_one_file_several_names() {
    let op = |seq, op| Entry { seq, ts: 9000, op };
    let link = |fid, name: &str| Op::Link {
        fid,
        dir: ROOT,
        name: name.into(),
    };
    let mut ns = Namespace::new();
    ns.apply(&set(1, 2, "a", b"A"), None).unwrap();
    ns.apply(&op(2, link(2, "b")), None).unwrap();
    ns.apply(&op(3, link(2, "c")), None).unwrap();
    assert!(ns.apply(&op(4, link(2, "a")), None).is_err(), "a exists");
    let inode = ns.lookup(ROOT, b"c").unwrap();
    assert_eq!(
        (inode.fid, inode.nlink(), inode.attrs.ctime.secs),
        (2, 3, 9)
    );
    assert_eq!({ ns.get(ROOT).unwrap().attrs.mtime.secs }, 9);
    ns.apply(&set(4, 2, "c", b"CC"), None).unwrap();
    assert_eq!(ns.lookup(ROOT, b"a").unwrap().size, 2);
    let mut names: Vec<Vec<u8>> = ns.list(ROOT).map(|(n, _)| n.to_vec()).collect();
    names.sort();
    assert_eq!(names, [b"a", b"b", b"c"]);
    let unlink = |name: &str| Op::Delete {
        fid: 2,
        dir: ROOT,
        name: name.into(),
    };
    let applied = ns.apply(&op(5, unlink("a")), None).unwrap();
    assert!(applied.removed.is_empty());
    let inode = ns.get(2).unwrap();
    assert_eq!((&*inode.name.bytes(), inode.nlink()), (&b"b"[..], 2));
    let rename = |fid, name: &str, to: &str, replaced| Op::Rename {
        fid,
        dir: ROOT,
        name: name.into(),
        to_dir: ROOT,
        to_name: to.into(),
        replaced,
        exchange: false,
    };
    ns.apply(&op(6, rename(2, "c", "d", None)), None).unwrap();
    assert_eq!(ns.paths(2), [b"b".to_vec(), b"d".to_vec()]);
    assert!(ns
        .apply(&op(7, rename(2, "b", "d", Some(2))), None)
        .is_err());
    ns.apply(&set(7, 3, "e", b"E"), None).unwrap();
    let applied = ns
        .apply(&op(8, rename(3, "e", "b", Some(2))), None)
        .unwrap();
    assert!(applied.removed.is_empty(), "fid 2 keeps its name d");
    assert_eq!(ns.paths(2), [b"d".to_vec()]);
    ns.apply(&op(9, link(3, "f")), None).unwrap();
    let back = Namespace::from_snapshot(&ns.snapshot()).unwrap();
    assert_eq!(back.paths(3), [b"b".to_vec(), b"f".to_vec()]);
    assert_eq!(back.get(3).unwrap().nlink(), 2);
    assert_eq!(back.lookup(ROOT, b"f").unwrap().fid, 3);
    let dir = Entry {
        seq: 10,
        ts: 9000,
        op: Op::Set {
            fid: 4,
            dir: ROOT,
            name: b"dir".to_vec(),
            kind: Kind::Dir,
            attrs: attrs(),
            data: Data::empty(),
        },
    };
    ns.apply(&dir, None).unwrap();
    assert!(ns.apply(&op(11, link(4, "dir2")), None).is_err());
    let applied = ns.apply(&op(11, unlink("d")), None).unwrap();
    assert_eq!(applied.removed.len(), 1, "its last name");
    assert!(ns.get(2).is_none());
}

/// Directory entries keep no copy of their names, only a hash of each (`entries`): with
/// the hash narrowed to two values, so that nearly every name shares it with others, random
/// creates, links, deletes, renames and exchanges in three directories must give the same
/// lookups and listings as a plain map of names, also through a snapshot; and a snapshot
/// that names one entry twice is refused.
#[test]
fn entries_found_by_a_hash_of_the_name_survive_collisions() {
    use std::collections::BTreeMap;
    entries::COLLIDE.with(|m| m.set(1));
    let mut ns = Namespace::new();
    let dirs = [ROOT, 2, 3];
    ns.apply(&mkdir(1, 2, ROOT, "d1"), None).unwrap();
    ns.apply(&mkdir(2, 3, ROOT, "d2"), None).unwrap();
    let mut model: BTreeMap<(Fid, Vec<u8>), Fid> = BTreeMap::new();
    model.insert((ROOT, b"d1".to_vec()), 2);
    model.insert((ROOT, b"d2".to_vec()), 3);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut fid = 4;
    let files = |model: &BTreeMap<(Fid, Vec<u8>), Fid>| -> Vec<((Fid, Vec<u8>), Fid)> {
        model
            .iter()
            .filter(|(_, f)| **f > 3)
            .map(|(k, f)| (k.clone(), *f))
            .collect()
    };
    let check = |ns: &Namespace, model: &BTreeMap<(Fid, Vec<u8>), Fid>| {
        for ((dir, name), f) in model {
            assert_eq!(ns.lookup(*dir, name).map(|i| i.fid), Some(*f));
        }
        for dir in dirs {
            let mut listed: Vec<(Vec<u8>, Fid)> =
                ns.list(dir).map(|(n, i)| (n.to_vec(), i.fid)).collect();
            listed.sort();
            let expected: Vec<(Vec<u8>, Fid)> = model
                .iter()
                .filter(|((d, _), _)| *d == dir)
                .map(|((_, n), f)| (n.clone(), *f))
                .collect();
            assert_eq!(listed, expected);
            for n in 0..30 {
                let name = format!("n{n}").into_bytes();
                let there = model.get(&(dir, name.clone())).copied();
                assert_eq!(ns.lookup(dir, &name).map(|i| i.fid), there);
            }
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let (base, out) = (tmp.path().join("base"), tmp.path().join("out"));
    let mut merged = 0;
    // The same snapshots as a compaction writes them, layers over a whole one.
    let log_dir = tmp.path().join("log");
    std::fs::create_dir(&log_dir).unwrap();
    let (mut chain, mut layered, mut whole_again): (Vec<crate::log::Layer>, usize, usize) =
        (Vec::new(), 0, 0);
    for step in 0..4000 {
        let seq = ns.last_seq() + 1;
        let place = |r: u64, n: u64| (dirs[r as usize % 3], format!("n{n}").into_bytes());
        let (dir, name) = place(next(3), next(30));
        let taken = model.get(&(dir, name.clone())).copied();
        let existing = files(&model);
        let pick =
            (!existing.is_empty()).then(|| existing[next(existing.len() as u64) as usize].clone());
        match (next(5), pick) {
            (0, _) | (_, None) => {
                let mut e = set(seq, fid, "x", b"");
                if let Op::Set {
                    dir: d, name: n, ..
                } = &mut e.op
                {
                    (*d, *n) = (dir, name.clone());
                }
                let r = ns.apply(&e, None);
                assert_eq!(r.is_ok(), taken.is_none(), "step {step}: create");
                if taken.is_none() {
                    model.insert((dir, name), fid);
                    fid += 1;
                }
            }
            (1, Some((_, f))) => {
                let e = at(
                    seq,
                    Op::Link {
                        fid: f,
                        dir,
                        name: name.clone(),
                    },
                );
                assert_eq!(
                    ns.apply(&e, None).is_ok(),
                    taken.is_none(),
                    "step {step}: link"
                );
                if taken.is_none() {
                    model.insert((dir, name), f);
                }
            }
            (2, Some(((d, n), f))) => {
                let e = at(
                    seq,
                    Op::Delete {
                        fid: f,
                        dir: d,
                        name: n.clone(),
                    },
                );
                ns.apply(&e, None).unwrap();
                model.remove(&(d, n));
            }
            (_, Some(((d, n), f))) => {
                if (d, &n) == (dir, &name) || taken.is_some_and(|t| t <= 3) {
                    continue;
                }
                let exchange = taken.is_some() && next(2) == 0;
                let mut op = mv(f, (d, "x"), (dir, "x"));
                if let Op::Rename {
                    name: a,
                    to_name: b,
                    replaced,
                    exchange: x,
                    ..
                } = &mut op
                {
                    (*a, *b, *replaced, *x) = (n.clone(), name.clone(), taken, exchange);
                }
                let r = ns.apply(&at(seq, op), None);
                if taken == Some(f) {
                    assert!(r.is_err(), "step {step}: a rename over its own other name");
                    continue;
                }
                r.unwrap();
                if exchange {
                    let other = taken.expect("exchanged with");
                    model.insert((d, n), other);
                } else {
                    model.remove(&(d, n));
                }
                model.insert((dir, name), f);
            }
        }
        check(&ns, &model);
        if step % 100 == 99 {
            // A compaction's snapshot, from the last one and the changes since, is the whole
            // one (the first has no last one).
            let whole = crate::log::encode_snapshot(&ns.snapshot());
            let snap = ns.snapshot();
            let at = log_dir.join(crate::log::snapshot_name(snap.upto));
            if let Some(delta) = ns.take_changes() {
                let base_file = [base.clone()];
                crate::log::write_merged_snapshot(&RealDisk, &base_file, None, &delta, &out)
                    .unwrap();
                assert_eq!(std::fs::read(&out).unwrap(), whole, "step {step}");
                merged += 1;
                // As layers, merged at a random point of the chain (a plan would mostly
                // write whole ones here: most files change between two): the chain reads back
                // as the state.
                let most = chain.len() + usize::from(chain.len() < MAX_SNAPSHOT_LAYERS - 1);
                // (Its own numbers: the workload's stay as they were.)
                let from = ((step as u64 / 100).wrapping_mul(2_654_435_761) >> 8) as usize % most;
                let inputs: Vec<_> = chain[from..]
                    .iter()
                    .map(|l| log_dir.join(crate::log::snapshot_name(l.upto)))
                    .collect();
                let under = from.checked_sub(1).map(|u| chain[u].upto);
                let w = crate::log::write_merged_snapshot(&RealDisk, &inputs, under, &delta, &at)
                    .unwrap();
                chain.truncate(from);
                chain.push(crate::log::Layer {
                    upto: snap.upto,
                    lines: w.lines,
                    bytes: w.bytes,
                });
                layered += usize::from(from > 0);
                whole_again += usize::from(from == 0 && inputs.len() > 1);
            } else {
                std::fs::write(&at, &whole).unwrap();
                chain = vec![crate::log::Layer {
                    upto: snap.upto,
                    lines: snap.files.len() as u64,
                    bytes: whole.len() as u64,
                }];
            }
            let (back, back_chain) =
                crate::log::load_snapshot(&RealDisk, &log_dir, snap.upto).unwrap();
            assert_eq!(back, snap, "step {step}");
            assert_eq!(back_chain, chain, "step {step}");
            std::fs::write(&base, &whole).unwrap();
        }
        if step % 500 == 499 {
            ns = Namespace::from_snapshot(&ns.snapshot()).unwrap();
            check(&ns, &model);
        }
    }
    assert!(merged > 30, "merged snapshots: {merged}");
    assert!(layered > 10, "snapshots written as layers: {layered}");
    assert!(
        whole_again > 3,
        "whole snapshots written from layers: {whole_again}"
    );
    assert!(model.len() > 40, "the directories filled: {}", model.len());
    // A snapshot that gives one name twice.
    let mut snap = ns.snapshot();
    let first = snap
        .files
        .iter()
        .find(|f| f.kind == Kind::File)
        .unwrap()
        .clone();
    let mut twice = first.clone();
    twice.fid = snap.next_fid;
    snap.next_fid += 1;
    snap.files.push(twice);
    assert!(Namespace::from_snapshot(&snap).is_err());
    entries::COLLIDE.with(|m| m.set(u64::MAX));
}

/// An open directory's keys (`listing`) find every name again (`named`), also when every name
/// shares one hash and one file has two names under it; a name that went is not found.
#[test]
fn a_listing_finds_each_name_again_through_colliding_hashes() {
    entries::COLLIDE.with(|m| m.set(0));
    let link = |seq, name: &str| Entry {
        seq,
        ts: 9000,
        op: Op::Link {
            fid: 2,
            dir: ROOT,
            name: name.into(),
        },
    };
    let mut ns = Namespace::new();
    ns.apply(&set(1, 2, "a", b"A"), None).unwrap();
    ns.apply(&set(2, 3, "b", b"B"), None).unwrap();
    ns.apply(&link(3, "c"), None).unwrap();
    let keys = ns.listing(ROOT);
    assert_eq!(keys, [(0, 2), (0, 2), (0, 3)]);
    let mut found: Vec<Vec<u8>> = Vec::new();
    for (at, &(h, fid)) in keys.iter().enumerate() {
        let nth = keys[..at].iter().filter(|k| **k == (h, fid)).count();
        let (name, inode) = ns.named(ROOT, h, fid, nth).expect("still named");
        assert_eq!(inode.fid, fid);
        found.push(name.to_vec());
    }
    found.sort();
    assert_eq!(found, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let unlink = Entry {
        seq: 4,
        ts: 9000,
        op: Op::Delete {
            fid: 2,
            dir: ROOT,
            name: b"a".to_vec(),
        },
    };
    ns.apply(&unlink, None).unwrap();
    assert!(ns.named(ROOT, 0, 2, 1).is_none(), "a went: only c is left");
    assert_eq!(&*ns.named(ROOT, 0, 2, 0).unwrap().0, b"c");
    entries::COLLIDE.with(|m| m.set(u64::MAX));
}
