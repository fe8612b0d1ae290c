//! Progress of long work (checking, compacting, importing a large store) on a terminal: an
//! indicatif bar on stderr. Quiet unless the command line enabled it and stderr is a
//! terminal: the daemon, scripts and logs see nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns progress on if stderr is a terminal.
pub fn enable_on_terminal() {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// A bar for `total` steps, labelled; none unless enabled. Its last state stays on the
/// terminal when it is dropped.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Progress {
        Progress(ENABLED.load(Ordering::Relaxed).then(|| {
            // Redrawn at most ten times a second: a million steps cost no more to show.
            let target = ProgressDrawTarget::stderr_with_hz(10);
            let bar = ProgressBar::with_draw_target(Some(total), target);
            let style = ProgressStyle::with_template("{msg}: {pos}/{len} [{bar:30}] {elapsed}")
                .expect("a valid template")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label);
            bar
        }))
    }

    pub fn tick(&mut self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish();
        }
    }
}
