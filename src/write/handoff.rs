//! The hand-off between callers and whoever writes: flat combining with a
//! leadership token.
//!
//! A caller [`submit`](Handoff::submit)s a job. If no one leads, it becomes
//! the *leader*: it takes the oldest waiting jobs (its own first among them
//! when the queue was empty), runs them as one batch through the `lead`
//! callback, which answers each job through its [`Ticket`], and then passes
//! the leadership to the caller of the oldest job still waiting, or gives it
//! up. Every other caller sleeps on a slot of its own until its job is
//! answered or the leadership reaches it. So a lone caller runs its job on
//! its own thread at once (no thread switch), concurrent callers share
//! batches, and each caller leads at most one batch per job it submits.
//!
//! Invariants (checked by `tests/loom.rs` under loom's model checker):
//! - at most one caller leads at a time, so at most one batch runs at a time;
//! - every submitted job is taken exactly once, in submission order, unless
//!   the hand-off is closed first (then it is answered [`Abandoned`]);
//! - a caller returns exactly once: with its job's answer, or [`Abandoned`]
//!   when the ticket was dropped unanswered (say, a panic unwound the batch);
//! - when a leader finishes (normally or by a panic: leadership is passed
//!   by a drop guard), either the queue is empty and no one leads, or the
//!   oldest waiting caller leads: no job is ever stranded;
//! - no lock of the hand-off is held while a batch runs or while a caller
//!   sleeps, so the wait-for graph has no cycle through it.
//!
//! This file uses only `super::sync` so that loom can check the same code.

use std::collections::VecDeque;

use super::sync::{yield_now, Arc, Condvar, Mutex, MutexGuard};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The job was not answered: its ticket was dropped unanswered (the batch
/// running it panicked) or the hand-off was closed before it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Abandoned;

/// A queue of jobs of type `J`, each answered with an `R`.
pub(crate) struct Handoff<J, R> {
    state: Mutex<Queue<J, R>>,
    max_batch: usize,
}

struct Queue<J, R> {
    jobs: VecDeque<(J, Ticket<R>)>,
    /// Whether some caller leads (runs, or is about to run, a batch).
    leader: bool,
    /// How many jobs the last batch took (more than one: callers overlap).
    last_batch: usize,
    closed: bool,
}

/// Where one caller waits.
struct Slot<R> {
    state: Mutex<SlotState<R>>,
    wake: Condvar,
}

enum SlotState<R> {
    Waiting,
    /// The leadership was passed to this caller.
    Lead,
    Answered(R),
    Abandoned,
}

/// The promise to answer one job. Dropping it unanswered (say, while a panic
/// unwinds the batch) answers [`Abandoned`], so no caller waits forever.
pub(crate) struct Ticket<R> {
    slot: Option<Arc<Slot<R>>>,
}

impl<R> Ticket<R> {
    /// Hands the answer to the waiting caller.
    pub(crate) fn answer(mut self, answer: R) {
        if let Some(slot) = self.slot.take() {
            slot.finish(SlotState::Answered(answer));
        }
    }

    fn pass_leadership(&self) {
        if let Some(slot) = &self.slot {
            slot.offer_lead();
        }
    }
}

impl<R> Drop for Ticket<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.finish(SlotState::Abandoned);
        }
    }
}

impl<R> Slot<R> {
    /// Stores the job's final state (an answer or abandonment).
    fn finish(&self, state: SlotState<R>) {
        let mut current = lock(&self.state);
        *current = state;
        drop(current);
        self.wake.notify_one();
    }

    /// Passes the leadership to this (waiting) caller.
    fn offer_lead(&self) {
        let mut current = lock(&self.state);
        if matches!(*current, SlotState::Waiting) {
            *current = SlotState::Lead;
        }
        drop(current);
        self.wake.notify_one();
    }

    /// Waits until the slot holds an answer, an abandonment or the leadership.
    fn wait(&self) -> SlotState<R> {
        let mut state = lock(&self.state);
        loop {
            match std::mem::replace(&mut *state, SlotState::Waiting) {
                SlotState::Waiting => {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                taken => return taken,
            }
        }
    }
}

/// Ends a leader's turn, however it ends: passes the leadership to the
/// oldest waiting caller, or gives it up when no one waits.
struct EndOfTurn<'a, J, R>(&'a Handoff<J, R>);

impl<J, R> Drop for EndOfTurn<'_, J, R> {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.state);
        match queue.jobs.front() {
            Some((_, next)) => next.pass_leadership(),
            None => queue.leader = false,
        }
    }
}

/// A batch of jobs with the tickets that answer them.
pub(crate) type Batch<J, R> = Vec<(J, Ticket<R>)>;

impl<J, R> Handoff<J, R> {
    /// A hand-off whose batches take at most `max_batch` jobs.
    pub(crate) fn new(max_batch: usize) -> Self {
        Handoff {
            state: Mutex::new(Queue {
                jobs: VecDeque::new(),
                leader: false,
                last_batch: 0,
                closed: false,
            }),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues `job` and returns its answer. While this caller leads, `lead`
    /// runs one batch (this job may or may not be in it) and returns what is
    /// left of it for after the leadership is passed on; between them they
    /// must answer every ticket of the batch (a dropped ticket answers
    /// `Abandoned`).
    pub(crate) fn submit<A: FnOnce()>(
        &self,
        job: J,
        lead: &mut dyn FnMut(Batch<J, R>) -> A,
    ) -> Result<R, Abandoned> {
        self.submit_all(vec![job], lead)
            .pop()
            .unwrap_or(Err(Abandoned))
    }

    /// Queues several jobs at once (one after the other, so a leader can take
    /// them into one batch) and returns their answers in order.
    ///
    /// The caller waits on its jobs in submission order. Leadership only ever
    /// passes to the caller of the oldest queued job, and the oldest queued
    /// job of this caller is always the one it waits on (the ones before it
    /// were taken), so leadership offered to this caller always reaches it.
    pub(crate) fn submit_all<A: FnOnce()>(
        &self,
        jobs: Vec<J>,
        lead: &mut dyn FnMut(Batch<J, R>) -> A,
    ) -> Vec<Result<R, Abandoned>> {
        let mut slots = Vec::with_capacity(jobs.len());
        let mut leads = {
            let mut queue = lock(&self.state);
            if queue.closed {
                return jobs.into_iter().map(|_| Err(Abandoned)).collect();
            }
            for job in jobs {
                let slot = Arc::new(Slot {
                    state: Mutex::new(SlotState::Waiting),
                    wake: Condvar::new(),
                });
                queue.jobs.push_back((
                    job,
                    Ticket {
                        slot: Some(slot.clone()),
                    },
                ));
                slots.push(slot);
            }
            !slots.is_empty() && !std::mem::replace(&mut queue.leader, true)
        };
        let mut answers = Vec::with_capacity(slots.len());
        for slot in slots {
            loop {
                if leads {
                    let turn = EndOfTurn(self);
                    let batch = self.take_batch();
                    let afterwards = lead(batch);
                    // The next batch may start now; what is left of this
                    // one (its sync, its answers) runs on this thread.
                    drop(turn);
                    afterwards();
                }
                match slot.wait() {
                    SlotState::Answered(answer) => {
                        answers.push(Ok(answer));
                        break;
                    }
                    SlotState::Abandoned => {
                        answers.push(Err(Abandoned));
                        break;
                    }
                    SlotState::Lead => leads = true,
                    SlotState::Waiting => leads = false,
                }
            }
            // The turn (if any) passed the leadership on when it ended.
            leads = false;
        }
        answers
    }

    /// The leader's batch: the oldest queued jobs, up to `max_batch`.
    ///
    /// When the last batch took several jobs (callers overlap) and this one
    /// would not be full, the leader first yields its CPU once, so that
    /// callers about to submit (typically the ones the last batch just
    /// answered) can join this batch instead of waiting for the next one.
    /// On 2 cores with 8 callers this took batches on sled from about 2 jobs
    /// to several, and with them the number of sled transactions, each of
    /// which costs sled's I/O threads a write and a `sync_file_range`
    /// (docs/BENCHMARKS.md). A lone caller never yields: its last batch
    /// held one job.
    fn take_batch(&self) -> Batch<J, R> {
        let mut queue = lock(&self.state);
        if queue.last_batch > 1 && queue.jobs.len() < self.max_batch {
            drop(queue);
            yield_now();
            queue = lock(&self.state);
        }
        let count = queue.jobs.len().min(self.max_batch);
        queue.last_batch = count;
        queue.jobs.drain(..count).collect()
    }

    /// Stops taking jobs: later submissions, and jobs still queued, are
    /// [`Abandoned`].
    pub(crate) fn close(&self) {
        let jobs: Vec<_> = {
            let mut queue = lock(&self.state);
            queue.closed = true;
            queue.jobs.drain(..).collect()
        };
        drop(jobs); // each ticket answers Abandoned as it drops
    }
}
