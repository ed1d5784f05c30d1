//! [`CpuGate`]: how many decodes may run at once, shared by every engine in
//! the process. Each loaded model has its own workers, and ggml's threads
//! spin while they wait for each other, so two models decoding at once on
//! cores sized for one collapse: two 12 s tiny.en decodes at 2 threads on 2
//! cores took 5.6 s side by side against 2.1 s one after the other. With
//! the gate, extra models add memory, not CPU contention.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Priority;

/// How often a waiting worker looks at its job's cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// A counting gate with priority for finals; cheap to clone.
#[derive(Clone, Debug)]
pub struct CpuGate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: usize,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Finals waiting: partials do not take a freed slot while any are.
    finals_waiting: usize,
}

/// Held while decoding; gives the slot back when dropped.
#[must_use = "the slot is released when the pass is dropped"]
pub struct GatePass {
    gate: CpuGate,
}

impl CpuGate {
    /// A gate letting `slots` decodes run at once (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: slots.max(1),
                state: Mutex::new(State {
                    free: slots.max(1),
                    finals_waiting: 0,
                }),
                freed: Condvar::new(),
            }),
        }
    }

    /// Blocks until a slot is free (finals before partials); `None` when
    /// `cancel` fires first.
    pub fn enter(&self, priority: Priority, cancel: &CancellationToken) -> Option<GatePass> {
        let mut state = self.lock();
        if priority == Priority::Final {
            state.finals_waiting += 1;
        }
        let entered = loop {
            let mine = priority == Priority::Final || state.finals_waiting == 0;
            if state.free > 0 && mine {
                state.free -= 1;
                break true;
            }
            if cancel.is_cancelled() {
                break false;
            }
            state = self
                .inner
                .freed
                .wait_timeout(state, CANCEL_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        if priority == Priority::Final {
            state.finals_waiting -= 1;
            // A partial may have been held back only for this final.
            self.inner.freed.notify_all();
        }
        entered.then(|| GatePass { gate: self.clone() })
    }

    /// Decodes that may run at once.
    pub fn slots(&self) -> usize {
        self.inner.slots
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.lock().free
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two counters, consistent after every statement.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        self.gate.lock().free += 1;
        self.gate.inner.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn at_most_slots_passes_at_once() {
        let gate = CpuGate::new(2);
        let never = CancellationToken::new();
        let a = gate.enter(Priority::Final, &never);
        let b = gate.enter(Priority::Partial, &never);
        assert!(a.is_some() && b.is_some());
        assert_eq!(gate.free(), 0);
        drop(a);
        assert_eq!(gate.free(), 1);
        drop(b);
        assert_eq!(gate.free(), 2);
        assert_eq!(gate.slots(), 2);
    }

    #[test]
    fn a_waiting_final_goes_before_a_waiting_partial() {
        let gate = CpuGate::new(1);
        let never = CancellationToken::new();
        let held = gate.enter(Priority::Final, &never);
        let (tx, rx) = mpsc::channel();
        let partial = {
            let (gate, tx) = (gate.clone(), tx.clone());
            thread::spawn(move || {
                let _pass = gate.enter(Priority::Partial, &CancellationToken::new());
                tx.send("partial").ok();
            })
        };
        // Let the partial start waiting first.
        thread::sleep(Duration::from_millis(100));
        let final_ = {
            let gate = gate.clone();
            thread::spawn(move || {
                let _pass = gate.enter(Priority::Final, &CancellationToken::new());
                tx.send("final").ok();
                thread::sleep(Duration::from_millis(50));
            })
        };
        thread::sleep(Duration::from_millis(100));
        drop(held);
        assert_eq!(rx.recv().ok(), Some("final"));
        assert_eq!(rx.recv().ok(), Some("partial"));
        partial.join().ok();
        final_.join().ok();
    }

    #[test]
    fn cancelling_stops_the_wait() {
        let gate = CpuGate::new(1);
        let _held = gate.enter(Priority::Final, &CancellationToken::new());
        let cancel = CancellationToken::new();
        let waiter = {
            let (gate, cancel) = (gate.clone(), cancel.clone());
            thread::spawn(move || gate.enter(Priority::Partial, &cancel).is_none())
        };
        thread::sleep(Duration::from_millis(60));
        cancel.cancel();
        assert!(waiter.join().unwrap_or(false));
        assert_eq!(gate.free(), 0);
    }
}
