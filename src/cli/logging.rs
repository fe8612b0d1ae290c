//! Logging through `log`/`env_logger` (`RUST_LOG`), and a starting daemon's lines held until
//! its output goes to STORE/daemon.log.

use std::io::Write;

pub(super) fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

/// A starting daemon's log lines, held until its output goes to STORE/daemon.log: the
/// terminal of `recordfs mount` hears only the outcome (through the ready pipe).
static HELD_LOG: parking_lot::Mutex<Option<Vec<u8>>> = parking_lot::Mutex::new(None);

/// Stderr, or the held lines while `HELD_LOG` holds some.
struct HeldStderr;

impl Write for HeldStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut *HELD_LOG.lock() {
            // Bounded: a start that logs more than this keeps only its first lines.
            Some(held) if held.len() < 1 << 20 => held.extend_from_slice(buf),
            Some(_) => {}
            None => return std::io::stderr().write(buf),
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// For commands whose output is their result (import, export): the store's own news
/// (recovery, compaction) only when RUST_LOG asks for it; warnings and errors always.
pub(super) fn init_quiet_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
}

pub(super) fn init_daemon_logging() {
    *HELD_LOG.lock() = Some(Vec::new());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .target(env_logger::Target::Pipe(Box::new(HeldStderr)))
        .init();
}

/// Writes the held lines to stderr (now STORE/daemon.log) and stops holding.
pub(super) fn release_held_log() {
    if let Some(held) = HELD_LOG.lock().take() {
        let _ = std::io::stderr().write_all(&held);
    }
}
