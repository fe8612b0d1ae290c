//! What the random-sequence tests share (the model test on the simulated disk and the
//! differential test against tmpfs): proptest draws their sequences, from a seed so that a run
//! can be repeated, and one shrinker makes a failing one small. It replaces proptest's own
//! shrinker, whose one-element-at-a-time steps cost a fresh store (or mount) each and left
//! cases of dozens of ops where this one leaves two or three.

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A proptest runner for `cases` cases that follow from `seed` alone (RECORDFS_SEED_BASE moves
/// it, so that soak runs side by side try different cases). It does not shrink: see `shrink`.
pub fn runner(cases: u32, seed: u64) -> TestRunner {
    let seed = std::env::var("RECORDFS_SEED_BASE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(seed, |b| seed ^ b);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// A failure of a candidate sequence: how many of its ops it took (the rest are dropped), and why.
pub struct Failure {
    pub ops_run: usize,
    pub why: String,
}

/// Drops chunks of ops while the case still fails (halving the chunk each round, as delta
/// debugging does), then tries each op's `simpler` form. `fails` runs a candidate from a clean
/// start and says how it failed, if it did.
pub fn shrink<T: Clone>(
    mut ops: Vec<T>,
    first: Failure,
    simpler: impl Fn(&T) -> Option<T>,
    mut fails: impl FnMut(&[T]) -> Option<Failure>,
) -> (Vec<T>, String) {
    ops.truncate(first.ops_run);
    let mut why = first.why;
    let mut chunk = ops.len() / 2;
    while chunk >= 1 {
        let mut i = 0;
        while i + chunk <= ops.len() {
            let mut fewer = ops.clone();
            fewer.drain(i..i + chunk);
            match fails(&fewer) {
                Some(f) => {
                    ops = fewer;
                    ops.truncate(f.ops_run);
                    why = f.why;
                }
                None => i += chunk,
            }
        }
        chunk /= 2;
    }
    for i in 0..ops.len() {
        if let Some(op) = simpler(&ops[i]) {
            let mut other = ops.clone();
            other[i] = op;
            if let Some(f) = fails(&other) {
                ops = other;
                ops.truncate(f.ops_run);
                why = f.why;
            }
        }
    }
    (ops, why)
}
