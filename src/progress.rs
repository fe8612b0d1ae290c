//! Progress of long work (checking, compacting a large store) on a terminal. Quiet unless the
//! command line enabled it and stderr is a terminal: the daemon, scripts and logs see nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
const EVERY: Duration = Duration::from_millis(100);

/// Turns progress on if stderr is a terminal.
pub fn enable_on_terminal() {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

pub struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Progress {
        Progress {
            label,
            total,
            done: 0,
            // The first tick shows at once, later ones every `EVERY`.
            last: ENABLED.load(Ordering::Relaxed).then(|| {
                Instant::now()
                    .checked_sub(EVERY)
                    .unwrap_or_else(Instant::now)
            }),
            shown: false,
        }
    }

    pub fn tick(&mut self) {
        self.done += 1;
        if let Some(last) = self.last {
            if last.elapsed() >= EVERY {
                eprint!("\r{}: {}/{}", self.label, self.done, self.total);
                self.last = Some(Instant::now());
                self.shown = true;
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            eprintln!("\r{}: {}/{}", self.label, self.done, self.total);
        }
    }
}
