//! The engine's job queue: finals before partials, each kind earliest
//! deadline first. A final's deadline is when its utterance ended plus the
//! latency target, so under a burst the utterance that has waited longest
//! is decoded first; a partial's is when the next one would be due, and a
//! partial still queued past it is stale (a newer one covers more audio),
//! so it is answered [`EngineError::Late`] instead of decoded.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{DecodeJob, EngineError, Priority};

/// A job the queue would not take, handed back with the reason (boxed: a
/// job is large, and refusals are rare).
pub(super) type Refused = Box<(DecodeJob, EngineError)>;

/// A bounded two-class priority queue shared by an engine's workers.
pub(super) struct JobQueue {
    capacity: usize,
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    finals: BinaryHeap<Queued>,
    partials: BinaryHeap<Queued>,
    /// Ties on deadline keep submission order.
    seq: u64,
    closed: bool,
}

struct Queued {
    deadline: Instant,
    seq: u64,
    job: DecodeJob,
}

impl Ord for Queued {
    /// Reversed: `BinaryHeap` pops the greatest, we want the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .cmp(&self.deadline)
            .then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued {}

impl JobQueue {
    /// Each kind holds at most `capacity` jobs.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Heaps stay consistent across a panic elsewhere (push/pop are
        // single calls), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`; a full queue or a closed engine hands it back with
    /// the reason.
    pub(super) fn push(&self, job: DecodeJob, priority: Priority) -> Result<(), Refused> {
        let mut s = self.lock();
        if s.closed {
            return Err(Box::new((job, EngineError::Stopped)));
        }
        let capacity = self.capacity;
        let seq = s.seq;
        let heap = match priority {
            Priority::Final => &mut s.finals,
            Priority::Partial => &mut s.partials,
        };
        if heap.len() >= capacity {
            return Err(Box::new((job, EngineError::QueueFull { capacity })));
        }
        heap.push(Queued {
            deadline: job.deadline,
            seq,
            job,
        });
        s.seq += 1;
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Like [`Self::push`], waiting up to `timeout` for room.
    pub(super) fn push_timeout(
        &self,
        mut job: DecodeJob,
        priority: Priority,
        timeout: Duration,
    ) -> Result<(), EngineError> {
        let until = Instant::now() + timeout;
        loop {
            let refused = match self.push(job, priority) {
                Ok(()) => return Ok(()),
                Err(refused) => *refused,
            };
            match refused {
                (back, EngineError::QueueFull { capacity }) => {
                    if Instant::now() >= until {
                        return Err(EngineError::QueueFull { capacity });
                    }
                    job = back;
                    // Room appears when a worker pops; poll, as pops do
                    // not signal producers.
                    std::thread::sleep(Duration::from_millis(10));
                }
                (_, e) => return Err(e),
            }
        }
    }

    /// The next job, finals first, earliest deadline first; blocks while
    /// empty. Partials already past their deadline are answered `Late` on
    /// the way. `None` once closed and drained.
    pub(super) fn pop(&self) -> Option<(DecodeJob, Priority)> {
        let mut s = self.lock();
        loop {
            if let Some(q) = s.finals.pop() {
                return Some((q.job, Priority::Final));
            }
            while let Some(q) = s.partials.pop() {
                if q.deadline < Instant::now() {
                    let _ = q.job.reply.send(Err(EngineError::Late));
                    continue;
                }
                return Some((q.job, Priority::Partial));
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Finals and partials waiting.
    pub(super) fn len(&self) -> (usize, usize) {
        let s = self.lock();
        (s.finals.len(), s.partials.len())
    }

    /// Refuses new jobs; workers drain what is queued, then stop.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DecodeProfileConfig;
    use crate::engine::DecodeParams;
    use tokio_util::sync::CancellationToken;

    fn job(
        deadline: Instant,
        tag: f32,
    ) -> (
        DecodeJob,
        tokio::sync::oneshot::Receiver<Result<crate::engine::Transcript, EngineError>>,
    ) {
        let mut j = DecodeJob::new(
            vec![tag].into(),
            DecodeParams::from_profile(DecodeProfileConfig::realtime()),
            CancellationToken::new(),
        );
        j.0.deadline = deadline;
        j
    }

    fn tag(j: &DecodeJob) -> f32 {
        j.audio[0]
    }

    #[test]
    fn finals_first_then_earliest_deadline() {
        let q = JobQueue::new(8);
        let now = Instant::now() + Duration::from_secs(60);
        let s = Duration::from_secs(1);
        let mut keep = Vec::new();
        for (d, t, p) in [
            (now + 3 * s, 1.0, Priority::Partial),
            (now + 2 * s, 2.0, Priority::Final),
            (now + s, 3.0, Priority::Partial),
            (now + s, 4.0, Priority::Final),
            (now + s, 5.0, Priority::Final),
        ] {
            let (j, rx) = job(d, t);
            keep.push(rx);
            q.push(j, p).map_err(|r| r.1).expect("room");
        }
        let order: Vec<(f32, Priority)> = (0..5)
            .map(|_| q.pop().map(|(j, p)| (tag(&j), p)).expect("job"))
            .collect();
        assert_eq!(
            order,
            vec![
                (4.0, Priority::Final),
                (5.0, Priority::Final),
                (2.0, Priority::Final),
                (3.0, Priority::Partial),
                (1.0, Priority::Partial),
            ]
        );
    }

    #[test]
    fn a_stale_partial_is_answered_late_not_decoded() {
        let q = JobQueue::new(8);
        let (stale, mut stale_rx) = job(Instant::now() - Duration::from_millis(1), 1.0);
        let (fresh, _fresh_rx) = job(Instant::now() + Duration::from_secs(60), 2.0);
        q.push(stale, Priority::Partial)
            .map_err(|r| r.1)
            .expect("room");
        q.push(fresh, Priority::Partial)
            .map_err(|r| r.1)
            .expect("room");
        let (next, _) = q.pop().expect("job");
        assert_eq!(tag(&next), 2.0);
        assert!(matches!(stale_rx.try_recv(), Ok(Err(EngineError::Late))));
    }

    #[test]
    fn each_kind_is_bounded_and_closing_drains() {
        let q = JobQueue::new(1);
        let far = Instant::now() + Duration::from_secs(60);
        let (a, _ra) = job(far, 1.0);
        let (b, _rb) = job(far, 2.0);
        let (c, _rc) = job(far, 3.0);
        q.push(a, Priority::Final).map_err(|r| r.1).expect("room");
        let full = q.push(b, Priority::Final).map_err(|r| r.1);
        assert!(matches!(full, Err(EngineError::QueueFull { capacity: 1 })));
        q.push(c, Priority::Partial)
            .map_err(|r| r.1)
            .expect("its own bound");
        assert_eq!(q.len(), (1, 1));
        q.close();
        let (d, _rd) = job(far, 4.0);
        let closed = q.push(d, Priority::Final).map_err(|r| r.1);
        assert!(matches!(closed, Err(EngineError::Stopped)));
        assert!(q.pop().is_some() && q.pop().is_some());
        assert!(q.pop().is_none());
    }
}
