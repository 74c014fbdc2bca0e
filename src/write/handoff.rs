//! The hand-off between callers and the writer thread.
//!
//! A caller [`submit`](Handoff::submit)s a job and sleeps on a slot of its
//! own; the writer [`take`](Handoff::take)s waiting jobs in submission order
//! and answers each through its [`Ticket`]. Nothing else is shared.
//!
//! Invariants (checked by `tests/loom.rs` under loom's model checker):
//! - every submitted job is taken at most once, in submission order;
//! - a caller returns exactly once, with the writer's answer, or with
//!   [`Abandoned`] when its ticket was dropped unanswered (the writer
//!   panicked or stopped) or the hand-off was closed before the job was taken;
//! - the only lock a caller holds while it waits is none: it waits on its
//!   slot's condition variable, whose mutex the writer takes only to store
//!   the answer. So a caller can never block the writer, and the writer
//!   never waits for a caller: the wait-for graph has no cycle.
//!
//! This file uses only `super::sync` so that loom can check the same code.

use std::collections::VecDeque;
use std::time::Duration;

use super::sync::{Arc, Condvar, Mutex, MutexGuard};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The job was not answered: the writer dropped its ticket (it panicked or
/// stopped) or the hand-off was closed before the job was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Abandoned;

/// A queue of jobs of type `J`, each answered with an `R`.
pub(crate) struct Handoff<J, R> {
    state: Mutex<Queue<J, R>>,
    /// Wakes the writer when a job arrives, it is nudged or it must stop.
    writer_wake: Condvar,
}

struct Queue<J, R> {
    jobs: VecDeque<(J, Ticket<R>)>,
    /// Set by [`Handoff::nudge`], cleared by the next [`Handoff::take`].
    nudged: bool,
    closed: bool,
}

/// Where one caller waits for its answer.
struct Slot<R> {
    state: Mutex<SlotState<R>>,
    ready: Condvar,
}

enum SlotState<R> {
    Waiting,
    Answered(R),
    Abandoned,
}

/// The writer's promise to answer one job. Dropping it unanswered (say, while
/// a panic unwinds the writer) answers [`Abandoned`], so no caller waits forever.
pub(crate) struct Ticket<R> {
    slot: Option<Arc<Slot<R>>>,
}

impl<R> Ticket<R> {
    /// Hands the answer to the waiting caller.
    pub(crate) fn answer(mut self, answer: R) {
        if let Some(slot) = self.slot.take() {
            slot.set(SlotState::Answered(answer));
        }
    }
}

impl<R> Drop for Ticket<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.set(SlotState::Abandoned);
        }
    }
}

impl<R> Slot<R> {
    fn set(&self, state: SlotState<R>) {
        let mut current = lock(&self.state);
        if matches!(*current, SlotState::Waiting) {
            *current = state;
        }
        drop(current);
        self.ready.notify_one();
    }

    fn wait(&self) -> Result<R, Abandoned> {
        let mut state = lock(&self.state);
        loop {
            match std::mem::replace(&mut *state, SlotState::Abandoned) {
                SlotState::Waiting => {
                    *state = SlotState::Waiting;
                    state = self
                        .ready
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                SlotState::Answered(answer) => return Ok(answer),
                SlotState::Abandoned => return Err(Abandoned),
            }
        }
    }
}

/// What [`Handoff::take`] found.
pub(crate) struct Taken<J, R> {
    /// The oldest waiting jobs, at most the number asked for.
    pub(crate) jobs: Vec<(J, Ticket<R>)>,
    /// Whether the hand-off was nudged since the last take.
    pub(crate) nudged: bool,
    /// Whether the hand-off is closed (the writer should finish and stop).
    pub(crate) closed: bool,
}

impl<J, R> Default for Handoff<J, R> {
    fn default() -> Self {
        Handoff {
            state: Mutex::new(Queue {
                jobs: VecDeque::new(),
                nudged: false,
                closed: false,
            }),
            writer_wake: Condvar::new(),
        }
    }
}

impl<J, R> Handoff<J, R> {
    /// Queues `job` and waits for its answer.
    pub(crate) fn submit(&self, job: J) -> Result<R, Abandoned> {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting),
            ready: Condvar::new(),
        });
        {
            let mut queue = lock(&self.state);
            if queue.closed {
                return Err(Abandoned);
            }
            queue.jobs.push_back((
                job,
                Ticket {
                    slot: Some(slot.clone()),
                },
            ));
        }
        self.writer_wake.notify_one();
        slot.wait()
    }

    /// Wakes the writer without a job (for work it does on its own, such as
    /// a flush a reader waits for).
    pub(crate) fn nudge(&self) {
        lock(&self.state).nudged = true;
        self.writer_wake.notify_one();
    }

    /// Stops taking jobs: later submissions are [`Abandoned`]; jobs already
    /// queued are still handed to the writer.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.writer_wake.notify_one();
    }

    /// The writer's side: waits up to `timeout` (for ever when `None`) until
    /// a job is queued, the hand-off is nudged or closed, then takes up to
    /// `max` of the oldest jobs.
    pub(crate) fn take(&self, max: usize, timeout: Option<Duration>) -> Taken<J, R> {
        let mut queue = lock(&self.state);
        if queue.jobs.is_empty() && !queue.nudged && !queue.closed {
            queue = match timeout {
                None => self
                    .writer_wake
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(timeout) => {
                    self.writer_wake
                        .wait_timeout(queue, timeout)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
        let count = queue.jobs.len().min(max);
        Taken {
            jobs: queue.jobs.drain(..count).collect(),
            nudged: std::mem::take(&mut queue.nudged),
            closed: queue.closed,
        }
    }

    /// Whether jobs are waiting to be taken.
    pub(crate) fn has_jobs(&self) -> bool {
        !lock(&self.state).jobs.is_empty()
    }

    /// Closes the hand-off and abandons every queued job (the writer is gone).
    pub(crate) fn abandon_all(&self) {
        let jobs: Vec<_> = {
            let mut queue = lock(&self.state);
            queue.closed = true;
            queue.jobs.drain(..).collect()
        };
        drop(jobs); // each ticket answers Abandoned as it drops
    }
}
