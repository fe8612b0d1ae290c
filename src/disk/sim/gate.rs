//! Holding one disk operation back, as a slow disk does, so that a test can check what else
//! waits for it while it is in progress.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::model::FaultOn;

/// An operation held back by `SimDisk::stall_next` until `open` is called.
#[derive(Default)]
pub struct Gate {
    /// (the operation reached the gate, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Waits until the operation has reached the gate; false if it did not within `timeout`.
    pub fn wait_entered(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut s = self.state.lock();
        while !s.0 {
            if self.changed.wait_until(&mut s, until).timed_out() {
                return s.0;
            }
        }
        true
    }

    /// Lets the operation go on (and any that reaches the gate later).
    pub fn open(&self) {
        self.state.lock().1 = true;
        self.changed.notify_all();
    }

    fn pass(&self) {
        let mut s = self.state.lock();
        s.0 = true;
        self.changed.notify_all();
        while !s.1 {
            self.changed.wait(&mut s);
        }
    }
}

/// Gates waiting for their operation, each with how many operations of its kind go first.
#[derive(Default)]
pub(super) struct Stalls(Mutex<Vec<(FaultOn, u64, std::sync::Arc<Gate>)>>);

impl Stalls {
    pub(super) fn add(&self, on: FaultOn, n: u64) -> std::sync::Arc<Gate> {
        let gate = std::sync::Arc::new(Gate::default());
        self.0.lock().push((on, n, gate.clone()));
        gate
    }

    /// Called by an operation of kind `on` before it touches the disk (and outside the disk's
    /// own lock, so that everything else goes on meanwhile).
    pub(super) fn pass(&self, on: FaultOn) {
        let gate = {
            let mut stalls = self.0.lock();
            let mut hit = None;
            for (i, (kind, countdown, _)) in stalls.iter_mut().enumerate() {
                if *kind == on {
                    if *countdown == 0 {
                        hit = Some(i);
                        break;
                    }
                    *countdown -= 1;
                }
            }
            hit.map(|i| stalls.remove(i).2)
        };
        if let Some(gate) = gate {
            gate.pass();
        }
    }
}
