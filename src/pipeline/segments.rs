//! Closing the live log segment and starting the next: by a compaction, at the point its
//! snapshot is taken, and by a commit when the segment passes the limit while the compaction
//! thread is busy. So a segment holds at most the limit and one commit, however long a
//! compaction or a write-back takes. A segment closed by a commit stays in charge as the live
//! one did (`State::kept_from`): a file's bytes in it need no relog.

use parking_lot::MutexGuard;

use super::state::{Live, Pipeline, State};
use crate::error::Result;
use crate::log::LogWriter;

impl Pipeline {
    /// Closes the live segment (which must hold an entry) and makes the next one, starting
    /// after the last entry, the live one; returns the closed one, to trim.
    ///
    /// The old segment's tail is durable before the new segment exists: a crash may keep a
    /// new file while it loses unsynced bytes of the old, and a gap between segments is
    /// corruption to recovery. Holding `log` keeps every commit out; the state lock is
    /// released while the tail syncs and the file is made.
    pub(super) fn switch_segment(
        &self,
        log: &mut LogWriter,
        st: &mut MutexGuard<'_, State>,
    ) -> Result<LogWriter> {
        let upto = st.ns.last_seq();
        let durable = st.durable;
        let tail = MutexGuard::unlocked(st, || match durable < upto {
            true => {
                log::debug!(
                    "entries {} to {upto} not durable yet; syncing them first",
                    durable + 1
                );
                log.sync()
            }
            false => Ok(()),
        });
        if let Err(e) = tail {
            self.turn_read_only(st, e.reason.clone());
            return Err(e);
        }
        // The new segment's header and name are synced by the sync thread before it
        // acknowledges any entry in it (and by a compaction before the manifest names it).
        let max_line = log.max_line();
        let created = MutexGuard::unlocked(st, || {
            LogWriter::create_unsynced(&*self.disk, &self.layout.log_dir(), upto + 1, max_line)
        });
        // As for an append: a full disk leaves the live segment as it was, anything else may
        // have left the log in a state nothing more may be written on.
        let mut new = created.inspect_err(|e| {
            if !e.is_no_space() {
                self.turn_read_only(st, format!("creating the next log segment failed: {e}"));
            }
        })?;
        new.write_ahead(self.policy.write_ahead());
        let closed = std::mem::replace(log, new);
        st.live = Live::of(log);
        st.log_dir_unsynced = true;
        self.wake.notify_all();
        Ok(closed)
    }

    /// Runs `f`, which appends entries, holding the log writer and the state lock, once
    /// there is room for more pending bytes (`wait_for_room`) and the live segment is closed
    /// if it must be (`roll_if_full`): before `f`, so that a commit and the relogs it needs
    /// share one segment. A segment closed here is trimmed once both locks are released.
    pub(super) fn holding_log<T>(
        &self,
        f: impl FnOnce(&mut LogWriter, &mut MutexGuard<'_, State>) -> Result<T>,
    ) -> Result<T> {
        let mut log = self.log.lock();
        let mut st = self.state.lock();
        self.wait_for_room(&mut st)?;
        let closed = self.roll_if_full(&mut log, &mut st)?;
        let done = f(&mut log, &mut st);
        drop((st, log));
        trim_closed(closed);
        done
    }

    /// Before a commit: closes the live segment if it is past the limit and the compaction
    /// thread, which would close it, is busy (`State::compactor_busy`), and wakes that thread
    /// to compact what was closed once it is free. Returns the closed segment, which the
    /// caller trims once it holds no lock (`trim_closed`).
    fn roll_if_full(
        &self,
        log: &mut LogWriter,
        st: &mut MutexGuard<'_, State>,
    ) -> Result<Option<LogWriter>> {
        let full = st.live.len > self.log_limit() && log.start_seq() <= st.ns.last_seq();
        if !(full && st.compactor_busy) {
            return Ok(None);
        }
        let closed = self.switch_segment(log, st)?;
        st.rolled += closed.len();
        log::debug!(
            "log segment {} closed at {} bytes while the compaction thread is busy",
            closed.start_seq(),
            closed.len()
        );
        self.compact_wake.notify_one();
        Ok(Some(closed))
    }
}

/// Cuts the zeros written ahead of a closed segment's lines. It is synced up to its lines
/// already, and zeros left by a failure here are free space to every reader: a warning.
pub(super) fn trim_closed(closed: Option<LogWriter>) {
    if let Some(Err(e)) = closed.map(|mut c| c.trim()) {
        log::warn!("closing a log segment: {e}");
    }
}
