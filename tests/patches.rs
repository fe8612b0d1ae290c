//! Commits that log what changed (issue 12): a save of a large file that changes less than
//! half of it logs a `PATCH` of the changed ranges and changes its backing file in place.
//! Through real mounts: appends, a write in the middle, an ftruncate; SIGKILL and a clean
//! remount; a reader that opened the file before keeps its version.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// `n` bytes that are not text (so the log carries them in base64) and do not repeat.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// The log's lines whose op is `op`, each with its length, in live and retired segments.
fn lines_of(env: &Env, op: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let log = env.store.join("log");
    let old = fs::read_dir(log.join("old")).into_iter().flatten();
    for e in fs::read_dir(&log).unwrap().chain(old) {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "log") {
            let text = fs::read(&path).unwrap();
            let tag = format!("\"op\":\"{op}\"");
            for line in text.split(|b| *b == b'\n') {
                if line.windows(tag.len()).any(|w| w == tag.as_bytes()) {
                    out.push(line.len());
                }
            }
        }
    }
    out
}

/// The bytes the daemon's read calls returned so far (`rchar`: the FUSE requests and every
/// file it read, cached or not).
fn bytes_read(m: &Mount) -> u64 {
    let pid = m.child.as_ref().expect("running").id();
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
    line["rchar:".len()..].trim().parse().unwrap()
}

#[test]
fn appends_to_a_large_file_log_only_what_they_add() {
    let env = Env::new();
    let m = env.mount(&[]);
    let mut want = noise(1 << 20, 1);
    fs::write(env.path("big.bin"), &want).unwrap();
    let read_before = bytes_read(&m);
    for i in 0..20 {
        let more = noise(1024, 100 + i);
        let mut f = OpenOptions::new()
            .append(true)
            .open(env.path("big.bin"))
            .unwrap();
        f.write_all(&more).unwrap();
        drop(f);
        want.extend_from_slice(&more);
    }
    // A writer that appends keeps its bytes over the file unread: the daemon read the FUSE
    // requests (about 21 KiB of writes) and no copy of the 1 MiB file.
    let read = bytes_read(&m) - read_before;
    assert!(read < 256 * 1024, "the daemon read {read} bytes");
    assert_eq!(fs::read(env.path("big.bin")).unwrap(), want);
    let patches = lines_of(&env, "PATCH");
    assert_eq!(patches.len(), 20, "{patches:?}");
    // 1 KiB in base64, with the entry's fields: far from the 1.4 MB of the whole file.
    assert!(patches.iter().all(|len| *len < 4096), "{patches:?}");
    assert_eq!(
        lines_of(&env, "SET").len(),
        2,
        "the create and the first save"
    );
    m.kill9();
    let m = env.mount(&[]);
    assert_eq!(fs::read(env.path("big.bin")).unwrap(), want);
    assert_eq!(fs::read(env.backing("big.bin")).unwrap(), want);
    m.stop_cleanly();
    let (code, report) = env.check();
    assert_eq!(code, 0, "{report}");
    let _m = env.mount(&[]);
    assert_eq!(fs::read(env.path("big.bin")).unwrap(), want);
}

#[test]
fn a_write_in_the_middle_and_an_ftruncate_are_patched_and_survive_sigkill() {
    let env = Env::new();
    let m = env.mount(&[]);
    let mut want = noise(512 * 1024, 2);
    fs::write(env.path("db.bin"), &want).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.path("db.bin"))
        .unwrap();
    f.write_all_at(b"middle", 4096).unwrap();
    want[4096..4102].copy_from_slice(b"middle");
    // Shorter, then longer again: the bytes between read as zeros, not the old ones.
    f.set_len(400 * 1024).unwrap();
    f.write_all_at(b"end", 420 * 1024).unwrap();
    want.truncate(400 * 1024);
    want.resize(420 * 1024, 0);
    want.extend_from_slice(b"end");
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(env.path("db.bin")).unwrap(), want);
    let patches = lines_of(&env, "PATCH");
    assert_eq!(patches.len(), 1, "{patches:?}");
    // The write and the 20 KiB past the ftruncate, not the 420 KiB file.
    assert!(patches[0] < 40 * 1024, "{patches:?}");
    m.kill9();
    let _m = env.mount(&[]);
    assert_eq!(fs::read(env.path("db.bin")).unwrap(), want);
    assert_eq!(fs::read(env.backing("db.bin")).unwrap(), want);
}

#[test]
fn a_reader_that_opened_before_a_patch_keeps_its_version() {
    let env = Env::new();
    let _m = env.mount(&[]);
    let old = noise(256 * 1024, 3);
    fs::write(env.path("f.bin"), &old).unwrap();
    // Until the first write reaches the backing file, readers are served from memory.
    assert!(wait_until(Duration::from_secs(10), || fs::read(
        env.backing("f.bin")
    )
    .is_ok_and(|b| b == old)));
    let reader = fs::File::open(env.path("f.bin")).unwrap();
    let mut head = [0u8; 16];
    reader.read_exact_at(&mut head, 0).unwrap();
    let mut new = old.clone();
    let w = OpenOptions::new()
        .write(true)
        .open(env.path("f.bin"))
        .unwrap();
    w.write_all_at(b"changed", 0).unwrap();
    w.write_all_at(b"changed", 100_000).unwrap();
    drop(w);
    new[..7].copy_from_slice(b"changed");
    new[100_000..100_007].copy_from_slice(b"changed");
    assert_eq!(lines_of(&env, "PATCH").len(), 1);
    // Once the patch reached the backing tree, the reader still reads the old version.
    assert!(wait_until(Duration::from_secs(10), || fs::read(
        env.backing("f.bin")
    )
    .is_ok_and(|b| b == new)));
    let mut all = vec![0u8; old.len()];
    reader.read_exact_at(&mut all, 0).unwrap();
    assert!(all == old, "the reader saw the patch");
    assert_eq!(fs::read(env.path("f.bin")).unwrap(), new);
}

/// A store made by the build before patches (tests/fixtures/store-v4: a tree, records, a hard
/// link, an xattr, a symlink, a 100,000-byte plain file, a compaction) is upgraded at its first
/// mount and then takes patches, through SIGKILL.
#[test]
fn a_version_4_store_is_upgraded_and_patched() {
    let env = Env::new();
    let m = mount_upgraded(&env, 4);
    let ada = "players/0a7c7d5e-3f2b-4c1e-9d3a-5b6c7d8e9f00.json";
    assert_eq!(
        fs::read_to_string(env.path(ada)).unwrap(),
        "{\"name\": \"ada\", \"score\": 2}\n"
    );
    assert_eq!(
        fs::read_to_string(env.path("tokens/ada.json")).unwrap(),
        fs::read_to_string(env.path(ada)).unwrap()
    );
    let mut want: Vec<u8> = (0..100_000u32).map(|i| ((i * 7) % 251) as u8).collect();
    assert_eq!(fs::read(env.path("data.bin")).unwrap(), want);
    let f = OpenOptions::new()
        .write(true)
        .open(env.path("data.bin"))
        .unwrap();
    f.write_all_at(b"patched", 50_000).unwrap();
    drop(f);
    want[50_000..50_007].copy_from_slice(b"patched");
    assert_eq!(lines_of(&env, "PATCH").len(), 1);
    m.kill9();
    let m = env.mount(&[]);
    assert_eq!(fs::read(env.path("data.bin")).unwrap(), want);
    m.stop_cleanly();
    let (code, report) = env.check();
    assert_eq!(code, 0, "{report}");
}

/// A store the build before online checkpoints made (tests/fixtures/store-v5: store-v4
/// upgraded, a new record, a patch before and one after a compaction) is upgraded (to version 7)
/// at its first mount and reads as that build left it; while mounted, a checkpoint is logged
/// after the background write-back, and after a SIGKILL that follows a save the store mounts
/// with every change and checks clean.
#[test]
fn a_version_5_store_is_upgraded_and_checkpointed_while_mounted() {
    let env = Env::new();
    let m = mount_upgraded(&env, 5);
    let mut want: Vec<u8> = (0..100_000u32).map(|i| ((i * 7) % 251) as u8).collect();
    want[70_000..70_012].copy_from_slice(b"version five");
    want[90_000..90_020].copy_from_slice(b"after the compaction");
    assert_eq!(fs::read(env.path("data.bin")).unwrap(), want);
    let bo = "players/2c3d4e5f-6071-4829-8a3b-4c5d6e7f8091.json";
    assert_eq!(
        fs::read_to_string(env.path(bo)).unwrap(),
        "{\"name\": \"bo\", \"score\": 5}\n"
    );
    assert_eq!(
        fs::read_to_string(env.path("tokens/ada.json")).unwrap(),
        "{\"name\": \"ada\", \"score\": 2}\n"
    );
    let checkpoints = lines_of(&env, "CHECKPOINT").len();
    fs::write(env.path(bo), "{\"name\": \"bo\", \"score\": 6}\n").unwrap();
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            lines_of(&env, "CHECKPOINT").len() > checkpoints
        }),
        "no checkpoint logged while mounted"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(env.path("data.bin"))
        .unwrap();
    f.write_all_at(b"after the checkpoint", 10_000).unwrap();
    drop(f);
    want[10_000..10_020].copy_from_slice(b"after the checkpoint");
    m.kill9();
    let m = env.mount(&[]);
    assert_eq!(fs::read(env.path("data.bin")).unwrap(), want);
    assert_eq!(
        fs::read_to_string(env.path(bo)).unwrap(),
        "{\"name\": \"bo\", \"score\": 6}\n"
    );
    m.stop_cleanly();
    let (code, report) = env.check();
    assert_eq!(code, 0, "{report}");
}

/// A store the build before snapshot layers made (tests/fixtures/store-v6: store-v5 upgraded,
/// a new record, a record removed, a compaction, then a save) is upgraded to version 7 and
/// reads as that build left it; the next compaction writes a layer over that build's whole
/// snapshot, and after a SIGKILL the store mounts from the two with every change and checks
/// clean.
#[test]
fn a_version_6_store_is_upgraded_and_its_snapshot_gets_a_layer() {
    let env = Env::new();
    let m = mount_upgraded(&env, 6);
    let mut want: Vec<u8> = (0..100_000u32).map(|i| ((i * 7) % 251) as u8).collect();
    want[70_000..70_012].copy_from_slice(b"version five");
    want[90_000..90_020].copy_from_slice(b"after the compaction");
    assert_eq!(fs::read(env.path("data.bin")).unwrap(), want);
    let player = |who: &str, score: u32| format!("{{\"name\": \"{who}\", \"score\": {score}}}\n");
    let bo = "players/2c3d4e5f-6071-4829-8a3b-4c5d6e7f8091.json";
    let cy = "players/3d4e5f60-7182-4a3b-8c4d-5e6f70819202.json";
    assert_eq!(fs::read_to_string(env.path(bo)).unwrap(), player("bo", 7));
    assert_eq!(fs::read_to_string(env.path(cy)).unwrap(), player("cy", 3));
    assert!(!env.path("tokens/ada.json").exists());
    fs::write(env.path(cy), player("cy", 4)).unwrap();
    let log = env.store.join("log");
    let manifest = || fs::read_to_string(log.join("MANIFEST")).unwrap();
    let before = manifest();
    env.compact();
    assert!(
        common::wait_until(Duration::from_secs(30), || manifest() != before),
        "no compaction"
    );
    let snapshots: Vec<String> = fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let newest = snapshots.iter().max().unwrap();
    let head = fs::read_to_string(log.join(newest)).unwrap();
    assert!(
        head.lines().next().unwrap().contains("\"base\":28"),
        "{head}"
    );
    m.kill9();
    let m = env.mount(&[]);
    assert_eq!(fs::read(env.path("data.bin")).unwrap(), want);
    assert_eq!(fs::read_to_string(env.path(bo)).unwrap(), player("bo", 7));
    assert_eq!(fs::read_to_string(env.path(cy)).unwrap(), player("cy", 4));
    m.stop_cleanly();
    let (code, report) = env.check();
    assert_eq!(code, 0, "{report}");
}

/// A rewrite from the start (open with O_TRUNC, as `open(path, "w")` does) logs what differs
/// from the version it replaces: the bytes that changed when the length is the same, else
/// everything from the first byte that differs.
#[test]
fn a_rewrite_of_a_large_file_logs_what_differs_from_the_old_version() {
    let env = Env::new();
    let m = env.mount(&[]);
    let text: String = (0..20_000).map(|i| format!("line {i:05}\n")).collect();
    fs::write(env.path("log.txt"), &text).unwrap();
    let same_length = text.replacen("line 10000", "LINE 10000", 1);
    fs::write(env.path("log.txt"), &same_length).unwrap();
    let longer = same_length.replacen("line 15000\n", "line 15000 and more\n", 1);
    fs::write(env.path("log.txt"), &longer).unwrap();
    let mut patches = lines_of(&env, "PATCH");
    patches.sort();
    assert_eq!(patches.len(), 2, "{patches:?}");
    // The changed word; the rest of the file from the second change on (about a quarter).
    assert!(patches[0] < 1024, "{patches:?}");
    assert!(patches[1] < text.len() / 3, "{patches:?}");
    m.kill9();
    let _m = env.mount(&[]);
    assert_eq!(fs::read_to_string(env.path("log.txt")).unwrap(), longer);
    assert_eq!(fs::read_to_string(env.backing("log.txt")).unwrap(), longer);
}

/// Readers keep the version they opened while a writer's patches are applied in place: one
/// that opened the backing file, and one that opened while a patch was still on its way there
/// (served the writer's overlay over that file). Appends and writes in the middle, by new
/// handles and by one kept open across saves, through the core without FUSE, with readers
/// opening at every moment; each reads its file whole twice,
/// with patches between, and must see one committed version both times.
#[test]
fn readers_keep_their_version_while_a_writer_patches_in_place() {
    use recordfs::fs::RecordFs;
    use recordfs::options::{Options, SyncMode};
    use recordfs::types::ROOT;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncMode::Never,
        patch_min: 4096,
        ..Options::default()
    };
    let fs = Arc::new(RecordFs::start(&dir.path().join("s"), opts).unwrap());
    let mut content = noise(256 * 1024, 3);
    let (stat, fh, t) = fs
        .create(ROOT, b"grow.bin", 0o644, 0, 0, libc::O_WRONLY)
        .unwrap();
    fs.wait(t).unwrap();
    fs.write(fh, 0, &content).unwrap();
    fs.wait(fs.flush(fh).unwrap()).unwrap();
    fs.release(fh);
    let fid = stat.ino;
    let versions = Mutex::new(HashSet::from([recordfs::log::crc32c(&content)]));
    let done = AtomicBool::new(false);
    let checked = AtomicU64::new(0);
    std::thread::scope(|s| {
        for r in 0..3u64 {
            let (fs, versions, done, checked) = (&fs, &versions, &done, &checked);
            s.spawn(move || {
                let mut rng = Rng::new(50 + r);
                while !done.load(Ordering::SeqCst) {
                    let (fh, _) = fs.open(fid, libc::O_RDONLY).unwrap();
                    let first = fs.read(fh, 0, 1 << 24).unwrap();
                    // Long enough for patches committed since to be applied meanwhile (they
                    // wait for a log sync, at most `SYNC_RIDE`, then `APPLY_DELAY`).
                    std::thread::sleep(Duration::from_micros(rng.below(150_000)));
                    let second = fs.read(fh, 0, 1 << 24).unwrap();
                    fs.release(fh);
                    assert!(first == second, "a reader's version changed under it");
                    let crc = recordfs::log::crc32c(&first);
                    assert!(
                        versions.lock().unwrap().contains(&crc),
                        "not a committed version"
                    );
                    checked.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let mut rng = Rng::new(7);
        // A handle kept open across saves (fsync), as a log or a journal is: its writes go on
        // over the bytes it committed.
        let mut kept: Option<u64> = None;
        for i in 0..400u64 {
            let more = noise(1 + rng.below(700) as usize, 1000 + i);
            let middle = rng.chance(50);
            let at = match middle {
                true => rng.below(content.len() as u64 - more.len() as u64),
                false => content.len() as u64,
            };
            let end = at as usize + more.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[at as usize..end].copy_from_slice(&more);
            versions
                .lock()
                .unwrap()
                .insert(recordfs::log::crc32c(&content));
            if kept.is_none() && rng.chance(30) {
                kept = Some(fs.open(fid, libc::O_RDWR).unwrap().0);
            }
            match kept {
                Some(fh) => {
                    fs.write(fh, at, &more).unwrap();
                    fs.wait(fs.fsync(fh).unwrap()).unwrap();
                    if rng.chance(10) {
                        fs.release(kept.take().unwrap());
                    }
                }
                None => {
                    let flags = match middle {
                        true => libc::O_RDWR,
                        false => libc::O_WRONLY | libc::O_APPEND,
                    };
                    let (fh, _) = fs.open(fid, flags).unwrap();
                    fs.write(fh, at, &more).unwrap();
                    fs.wait(fs.flush(fh).unwrap()).unwrap();
                    fs.release(fh);
                }
            }
            std::thread::sleep(Duration::from_micros(rng.below(4_000)));
            // Now and then every patch reaches the file before the next writer opens: it then
            // lays its writes over the backing file, not over the pending version in memory.
            if rng.chance(10) {
                fs.pipeline().quiesce();
            }
        }
        if let Some(fh) = kept {
            fs.release(fh);
        }
        done.store(true, Ordering::SeqCst);
    });
    let (fh, _) = fs.open(fid, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(fh, 0, 1 << 24).unwrap(), content);
    fs.release(fh);
    assert!(checked.load(Ordering::SeqCst) > 0);
    fs.shutdown().unwrap();
}

/// A reader holding a large file's backing file does not stop appends from going in place: its
/// version keeps the length it had, so an append changes nothing it reads. A write below that
/// length still replaces the file whole (the reader would see it). The backing file's inode
/// says which happened.
#[test]
fn appends_go_in_place_under_a_reader_and_a_write_below_its_length_does_not() {
    use recordfs::fs::RecordFs;
    use recordfs::options::Options;
    use recordfs::types::ROOT;
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let fs = RecordFs::start(&store, Options::default()).unwrap();
    let first = noise(256 * 1024, 4);
    let (stat, fh, t) = fs
        .create(ROOT, b"grow.bin", 0o644, 0, 0, libc::O_WRONLY)
        .unwrap();
    fs.wait(t).unwrap();
    fs.write(fh, 0, &first).unwrap();
    fs.wait(fs.flush(fh).unwrap()).unwrap();
    fs.release(fh);
    fs.pipeline().quiesce();
    let backing = store.join("root/grow.bin");
    let ino = fs::metadata(&backing).unwrap().ino();
    let (reader, _) = fs.open(stat.ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(reader, 0, 1 << 20).unwrap(), first);
    let change = |at: Option<u64>, bytes: &[u8]| {
        let flags = match at {
            Some(_) => libc::O_WRONLY,
            None => libc::O_WRONLY | libc::O_APPEND,
        };
        let (fh, _) = fs.open(stat.ino, flags).unwrap();
        fs.write(fh, at.unwrap_or(0), bytes).unwrap();
        fs.wait(fs.flush(fh).unwrap()).unwrap();
        fs.release(fh);
        fs.pipeline().quiesce();
    };
    for i in 0..5 {
        change(None, &noise(1000, 10 + i));
    }
    assert_eq!(
        fs::metadata(&backing).unwrap().ino(),
        ino,
        "appended in place"
    );
    assert_eq!(fs.read(reader, 0, 1 << 20).unwrap(), first);
    change(Some(100), b"below the reader's length");
    assert_ne!(fs::metadata(&backing).unwrap().ino(), ino, "replaced whole");
    assert_eq!(fs.read(reader, 0, 1 << 20).unwrap(), first);
    fs.release(reader);
    fs.shutdown().unwrap();
}

/// A patched file whose backing file is found damaged at its first read is restored from the
/// log: its SET with the patches after it replayed (a file whose last change was a patch has
/// no whole copy in the log). Fails, with EIO, when only a SET can restore a file.
#[test]
fn a_damaged_backing_file_of_a_patched_file_is_restored_from_its_set_and_patches() {
    damaged_patched_file_is_restored(false);
}

/// As above, with the SET in an earlier segment than the patches, both in charge: a compaction
/// closed the segment and then failed (its snapshot's temporary name is a directory). Fails,
/// with EIO, if the restore reads the live segment alone.
#[test]
fn a_damaged_patched_file_is_restored_from_a_set_in_an_earlier_segment() {
    damaged_patched_file_is_restored(true);
}

/// Writes journal.bin and changes it twice by patches (with `split`, a compaction between
/// closes the segment and fails), stops cleanly, damages its backing file by hand and reads it
/// back through a new mount.
fn damaged_patched_file_is_restored(split: bool) {
    use recordfs::fs::RecordFs;
    use recordfs::options::{Options, SyncMode};
    use recordfs::types::ROOT;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let opts = Options {
        sync: SyncMode::Fsync,
        ..Options::default()
    };
    let mut content = noise(10_000, 7);
    {
        let fs = RecordFs::start(&store, opts.clone()).unwrap();
        let (_, fh, t) = fs
            .create(ROOT, b"journal.bin", 0o644, 0, 0, libc::O_WRONLY)
            .unwrap();
        fs.wait(t).unwrap();
        fs.write(fh, 0, &content).unwrap();
        fs.wait(fs.fsync(fh).unwrap()).unwrap();
        if split {
            fs::create_dir(store.join("tmp").join("snapshot")).unwrap();
            fs.pipeline().request_compaction();
            assert!(
                wait_until(Duration::from_secs(20), || segments(&store) == 2),
                "no compaction closed the segment"
            );
        }
        // Two changes smaller than half the file: patches, under the default threshold.
        for (at, bytes) in [(10_000, noise(300, 8)), (20, noise(28, 9))] {
            fs.write(fh, at, &bytes).unwrap();
            let end = at as usize + bytes.len();
            content.resize(content.len().max(end), 0);
            content[at as usize..end].copy_from_slice(&bytes);
            fs.wait(fs.fsync(fh).unwrap()).unwrap();
        }
        fs.release(fh);
        fs.shutdown().unwrap();
    }
    assert!(
        !store.join("log/MANIFEST").exists(),
        "no compaction finished"
    );
    assert_eq!(segments(&store), if split { 2 } else { 1 });
    if split {
        fs::remove_dir(store.join("tmp").join("snapshot")).unwrap();
    }
    let log: Vec<u8> = std::fs::read_dir(store.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    let tag = b"\"op\":\"PATCH\"";
    let patches = log.windows(tag.len()).filter(|w| w == tag).count();
    assert_eq!(patches, 2, "the two changes were logged as patches");
    // Damaged by hand after the clean stop: same length, one byte changed.
    let backing = store.join("root").join("journal.bin");
    let mut damaged = std::fs::read(&backing).unwrap();
    assert_eq!(damaged, content);
    damaged[5000] ^= 0xff;
    std::fs::write(&backing, &damaged).unwrap();
    let fs = RecordFs::start(&store, opts).unwrap();
    let r = fs.lookup(ROOT, b"journal.bin").unwrap();
    let fh = fs.open(r.ino, libc::O_RDONLY).unwrap().0;
    let read = fs.read(fh, 0, 20_000);
    fs.release(fh);
    assert_eq!(read.unwrap(), content);
    fs.pipeline().quiesce();
    assert_eq!(std::fs::read(&backing).unwrap(), content, "rewritten");
    fs.shutdown().unwrap();
}

/// How many log segments `store/log/` holds.
fn segments(store: &std::path::Path) -> usize {
    count_names(&store.join("log"), |n| n.ends_with(".log"))
}
