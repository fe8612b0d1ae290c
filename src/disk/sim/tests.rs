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
