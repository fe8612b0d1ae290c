use super::*;

#[test]
fn a_crash_loses_only_what_was_not_synced() {
    let d = SimDisk::new();
    let (dir, f) = (Path::new("/"), Path::new("/f"));
    d.write_file(f, b"synced", None).unwrap();
    d.sync_file(f).unwrap();
    d.sync_dir(dir).unwrap();
    // Overwritten in place, as the log's segments are.
    let file = d.open_file(f, false).unwrap();
    file.set_len(0).unwrap();
    file.write_at(0, b"later").unwrap();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..64 {
        // Each seed crashes a fresh copy of the same history.
        let copy = d.fork();
        let rebooted = copy.crash(seed);
        assert!(
            copy.write_file(f, b"x", None).is_err(),
            "the old view is dead"
        );
        let got = (&rebooted as &dyn Disk).read(f).unwrap();
        seen.insert(got);
    }
    // The synced version, the new one, and torn mixes (the file was truncated, then
    // written): never anything else.
    for s in &seen {
        assert!(
            [b"synced".as_slice(), b"later", b"", b"later\0"].contains(&s.as_slice())
                || b"synced".starts_with(s)
                || s.starts_with(b"later"),
            "{:?}",
            String::from_utf8_lossy(s)
        );
    }
    assert!(seen.contains(b"synced".as_slice()) && seen.contains(b"later".as_slice()));
}

#[test]
fn write_file_replaces_the_name_so_a_crash_may_keep_old_new_or_none() {
    let d = SimDisk::new();
    let (dir, f) = (Path::new("/"), Path::new("/f"));
    d.write_file(f, b"synced", None).unwrap();
    d.sync_file(f).unwrap();
    d.sync_dir(dir).unwrap();
    d.write_file(f, b"later", None).unwrap();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..64 {
        let rebooted = d.fork().crash(seed);
        seen.insert((&rebooted as &dyn Disk).read(f).ok());
    }
    for s in &seen {
        assert!(
            match s {
                None => true,
                Some(s) => s == b"synced" || b"later".starts_with(s),
            },
            "{s:?}"
        );
    }
    assert!(seen.contains(&Some(b"synced".to_vec())) && seen.contains(&None));
}

#[test]
fn an_unsynced_rename_may_be_lost_a_synced_one_is_not() {
    let d = SimDisk::new();
    d.create_dir(Path::new("/a")).unwrap();
    d.sync_dir(Path::new("/")).unwrap();
    d.write_file(Path::new("/a/t"), b"1", None).unwrap();
    d.sync_file(Path::new("/a/t")).unwrap();
    d.sync_dir(Path::new("/a")).unwrap();
    d.rename(Path::new("/a/t"), Path::new("/a/x")).unwrap();
    d.sync_dir(Path::new("/a")).unwrap();
    d.write_file(Path::new("/a/u"), b"2", None).unwrap();
    let r = d.crash(7);
    assert_eq!((&r as &dyn Disk).read(Path::new("/a/x")).unwrap(), b"1");
    assert!(r.stat(Path::new("/a/t")).is_err());
}

#[test]
fn faults_fail_the_chosen_operation_once() {
    let d = SimDisk::new();
    d.fail_next(FaultOn::Sync, 1, libc::EIO);
    d.write_file(Path::new("/f"), b"x", None).unwrap();
    d.sync_file(Path::new("/f")).unwrap();
    let e = d.sync_file(Path::new("/f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    d.sync_file(Path::new("/f")).unwrap();
    d.set_capacity(Some(4));
    let e = d.write_file(Path::new("/g"), b"12345", None).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
}

/// Issue 11: a directory's name is durable once its parent is synced, like a file's; a crash
/// that loses it loses everything under it, synced or not.
#[test]
fn a_directory_s_name_lasts_only_once_its_parent_is_synced() {
    let d = SimDisk::new();
    d.create_dir(Path::new("/d")).unwrap();
    d.write_file(Path::new("/d/f"), b"1", None).unwrap();
    d.sync_file(Path::new("/d/f")).unwrap();
    d.sync_dir(Path::new("/d")).unwrap();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..32 {
        let r = d.fork().crash(seed);
        seen.insert((&r as &dyn Disk).read(Path::new("/d/f")).ok());
        if r.stat(Path::new("/d")).is_err() {
            assert!(r.list(Path::new("/")).unwrap().is_empty());
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "kept with its directory, or lost with it: {seen:?}"
    );
    d.sync_dir(Path::new("/")).unwrap();
    for seed in 0..8 {
        let r = d.fork().crash(seed);
        assert_eq!((&r as &dyn Disk).read(Path::new("/d/f")).unwrap(), b"1");
    }
}

/// A directory moved between two parents takes its subtree along. A crash before a sync keeps
/// it under one name, old or new; without a journal it may also keep none (its move is an
/// unlink in one parent and a link in the other), and never two. Once synced, only the new.
#[test]
fn a_directory_moved_between_parents_has_one_name_or_none_after_a_crash() {
    for journal in [true, false] {
        let d = SimDisk::new();
        if !journal {
            d.without_journal();
        }
        for dir in ["/a", "/b", "/a/d"] {
            d.create_dir(Path::new(dir)).unwrap();
        }
        d.write_file(Path::new("/a/d/f"), b"x", None).unwrap();
        d.sync_file(Path::new("/a/d/f")).unwrap();
        for dir in ["/", "/a", "/b", "/a/d"] {
            d.sync_dir(Path::new(dir)).unwrap();
        }
        d.rename(Path::new("/a/d"), Path::new("/b/d")).unwrap();
        assert_eq!(
            (&d as &dyn Disk).read(Path::new("/b/d/f")).unwrap(),
            b"x",
            "the subtree moves with its directory"
        );
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let r = d.fork().crash(seed);
            let at = |p: &str| r.stat(Path::new(p)).is_ok();
            seen.insert((at("/a/d/f"), at("/b/d/f")));
        }
        let want: &[(bool, bool)] = match journal {
            true => &[(false, true), (true, false)],
            false => &[(false, false), (false, true), (true, false)],
        };
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            want,
            "journal={journal}"
        );
        d.sync_dir(Path::new("/a")).unwrap();
        d.sync_dir(Path::new("/b")).unwrap();
        let r = d.fork().crash(1);
        assert!(r.stat(Path::new("/a/d")).is_err() && r.stat(Path::new("/b/d/f")).is_ok());
    }
}

/// rename(2) and rmdir(2)'s answers for directories, as a real disk gives them.
#[test]
fn directories_keep_rename_and_rmdir_rules() {
    let d = SimDisk::new();
    for dir in ["/a", "/a/sub", "/b", "/c"] {
        d.create_dir(Path::new(dir)).unwrap();
    }
    d.write_file(Path::new("/b/f"), b"x", None).unwrap();
    d.write_file(Path::new("/g"), b"y", None).unwrap();
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    let p = Path::new;
    assert_eq!(errno(d.rename(p("/a"), p("/a/sub/a"))), Some(libc::EINVAL));
    assert_eq!(errno(d.rename(p("/a"), p("/b"))), Some(libc::ENOTEMPTY));
    assert_eq!(errno(d.rename(p("/a"), p("/g"))), Some(libc::ENOTDIR));
    assert_eq!(errno(d.rename(p("/g"), p("/a"))), Some(libc::EISDIR));
    assert_eq!(errno(d.remove_dir(p("/b"))), Some(libc::ENOTEMPTY));
    assert_eq!(errno(d.remove_dir(p("/g"))), Some(libc::ENOTDIR));
    assert_eq!(errno(d.remove(p("/c"))), Some(libc::EISDIR));
    d.rename(p("/a"), p("/c")).unwrap();
    assert!(d
        .stat(p("/c/sub"))
        .is_ok_and(|s| s.kind == crate::disk::EntryKind::Dir));
    d.remove_dir(p("/c/sub")).unwrap();
    assert_eq!(
        d.list(p("/")).unwrap(),
        vec![b"b".to_vec(), b"c".to_vec(), b"g".to_vec()]
    );
}

/// `/a/t` moved to `/b/t`, nothing synced after: in how many places each crash leaves it.
fn places_after_a_move_between_directories(journal: bool, dir: bool) -> Vec<usize> {
    let d = SimDisk::new();
    if !journal {
        d.without_journal();
    }
    for p in ["/a", "/b"] {
        d.create_dir(Path::new(p)).unwrap();
    }
    match dir {
        true => d.create_dir(Path::new("/a/t")).unwrap(),
        false => d.write_file(Path::new("/a/t"), b"1", None).unwrap(),
    }
    d.sync_everything(Path::new("/")).unwrap();
    d.rename(Path::new("/a/t"), Path::new("/b/t")).unwrap();
    let mut seen: Vec<usize> = (0..64)
        .map(|seed| {
            let r = d.fork().crash(seed);
            ["/a/t", "/b/t"]
                .iter()
                .filter(|p| r.stat(Path::new(p)).is_ok())
                .count()
        })
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

#[test]
fn a_journal_keeps_a_move_between_directories_whole() {
    assert_eq!(places_after_a_move_between_directories(true, false), [1]);
    assert_eq!(places_after_a_move_between_directories(true, true), [1]);
}

#[test]
fn without_a_journal_a_moved_file_may_have_two_names_or_none_a_directory_never_two() {
    assert_eq!(
        places_after_a_move_between_directories(false, false),
        [0, 1, 2]
    );
    assert_eq!(places_after_a_move_between_directories(false, true), [0, 1]);
}

#[test]
fn a_sync_of_either_directory_makes_a_move_between_them_durable_under_a_journal() {
    for synced in ["/a", "/b"] {
        let d = SimDisk::new();
        for p in ["/a", "/b"] {
            d.create_dir(Path::new(p)).unwrap();
        }
        d.write_file(Path::new("/a/t"), b"1", None).unwrap();
        d.sync_everything(Path::new("/")).unwrap();
        d.rename(Path::new("/a/t"), Path::new("/b/t")).unwrap();
        d.sync_dir(Path::new(synced)).unwrap();
        for seed in 0..32 {
            let r = d.fork().crash(seed);
            assert!(r.stat(Path::new("/a/t")).is_err(), "{synced} seed {seed}");
            assert!(r.stat(Path::new("/b/t")).is_ok(), "{synced} seed {seed}");
        }
    }
}
