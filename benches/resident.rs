//! What a mounted store keeps in memory per record: N records of 300 B in one directory are
//! made through the core (`--sync never`), compacted, stopped cleanly and started again, and
//! the heap the started core holds is counted by the allocator (`N=1000000 cargo bench
//! --bench resident`; 100,000 by default, 2,000 under `cargo test`), once started and after a
//! compaction. Also prints the process's resident set, which adds the allocator's overhead,
//! what it has not given back, and what making the records left behind.

use std::sync::Arc;
use std::time::Instant;

use recordfs::fs::RecordFs;
use recordfs::options::{Options, SyncMode};
use recordfs::types::ROOT;

#[path = "support/counting.rs"]
mod counting;

fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Asks for a compaction and waits until one is done (none if the live segment holds no
/// entry: one at the start may have been enough).
fn compact(fs: &RecordFs) {
    let compactions = fs.pipeline().compactions();
    if fs.pipeline().live_entries() == 0 {
        return;
    }
    fs.pipeline().request_compaction();
    let until = Instant::now() + std::time::Duration::from_secs(600);
    while fs.pipeline().compactions() == compactions {
        assert!(Instant::now() < until, "the compaction did not end");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn main() {
    env_logger::init();
    // `cargo test --all-targets` runs this too (without --bench): a small store then.
    let benched = std::env::args().any(|a| a == "--bench");
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benched { 100_000 } else { 2_000 });
    let dir = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let tmp = tempfile::tempdir_in(dir).expect("a temporary directory");
    // STORE=path keeps the store made there for other measurements (a mount's resident
    // set), and a later run starts from it instead of making it again.
    let kept = std::env::var_os("STORE").map(std::path::PathBuf::from);
    let reuse = kept.as_ref().is_some_and(|p| p.exists());
    let store = kept.unwrap_or_else(|| tmp.path().join("store"));
    let opts = Options {
        sync: SyncMode::Never,
        ..Options::default()
    };
    let t0 = Instant::now();
    if !reuse {
        let fs = Arc::new(RecordFs::start(&store, opts.clone()).expect("starts"));
        let (dir, _) = fs.mkdir(ROOT, b"records", 0o755, 0, 0).expect("mkdir");
        let dir = dir.ino;
        let pad = "x".repeat(270);
        std::thread::scope(|s| {
            for w in 0..8u32 {
                let fs = fs.clone();
                let pad = &pad;
                s.spawn(move || {
                    for i in (w..n).step_by(8) {
                        let name = format!("{:08x}-0000-4000-8000-{i:012x}.json", i >> 16);
                        let flags = libc::O_WRONLY | libc::O_TRUNC;
                        let (_, fh, _) = fs
                            .create(dir, name.as_bytes(), 0o644, 0, 0, flags)
                            .expect("create");
                        let body = format!("{{\"n\": {i}, \"pad\": \"{pad}\"}}");
                        fs.write(fh, 0, body.as_bytes()).expect("write");
                        fs.wait(fs.flush(fh).expect("flush")).expect("commit");
                        fs.release(fh);
                    }
                });
            }
        });
        fs.shutdown().expect("stops");
    }
    // Compacted once, so that the next start reads a snapshot and no tail, as a mount of a
    // store at rest does.
    {
        let fs = RecordFs::start(&store, opts.clone()).expect("starts");
        compact(&fs);
        fs.shutdown().expect("stops");
    }
    let made = t0.elapsed().as_secs_f64();
    let before = counting::in_use();
    let t1 = Instant::now();
    let fs = RecordFs::start(&store, opts).expect("starts again");
    let started = t1.elapsed().as_secs_f64();
    let held = counting::in_use() - before;
    println!(
        "{n} records made through the core in {made:.1} s; started again in {started:.3} s, \
         holding {} MiB of heap, {} B per record; resident {} MiB",
        held >> 20,
        held / n as usize,
        resident_mib()
    );
    // A compaction copies the namespace into a snapshot and writes it: what stays after it
    // (one more file, so that there is something to compact).
    let flags = libc::O_WRONLY | libc::O_TRUNC;
    let (_, fh, _) = fs
        .create(ROOT, b"one-more", 0o644, 0, 0, flags)
        .expect("create");
    fs.release(fh);
    compact(&fs);
    let after = counting::in_use() - before;
    println!(
        "after a compaction: {} MiB of heap, {} B per record; resident {} MiB",
        after >> 20,
        after / n as usize,
        resident_mib()
    );
    fs.shutdown().expect("stops");
}
