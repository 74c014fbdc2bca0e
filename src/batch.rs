//! The batching writer: concurrent requests share one transaction and one flush.
//!
//! sled 0.34 runs every transaction under one process-wide lock, so
//! per-request transactions cannot scale with threads. Instead, a caller
//! queues its job; the first caller that finds no batch running becomes the
//! *leader*: it takes whatever is waiting (up to a bound), runs the batch in
//! one atomic step (each job decided against the state the earlier ones left)
//! and hands every result to its caller. Then, if more jobs queued meanwhile,
//! it passes the leadership to the oldest of them. There is no background
//! thread: a lone caller runs its own batch of one at once. Every caller
//! sleeps on its own slot, so a batch wakes exactly the callers it served
//! (and the next leader), not everyone.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::outcome::OutcomeRecord;

/// Combines concurrent jobs of type `J` into batches.
pub(crate) struct Batcher<J> {
    queue: Mutex<Queue<J>>,
    max_batch: usize,
}

struct Queue<J> {
    jobs: VecDeque<(J, Arc<Slot>)>,
    /// Whether some caller leads (runs or is about to run a batch).
    leader: bool,
}

/// Where one caller waits for its result or for the leadership.
struct Slot {
    state: Mutex<SlotState>,
    wake: Condvar,
}

enum SlotState {
    Waiting,
    Lead,
    Done(Result<OutcomeRecord>),
}

impl Slot {
    fn new() -> Self {
        Slot {
            state: Mutex::new(SlotState::Waiting),
            wake: Condvar::new(),
        }
    }

    fn set(&self, state: SlotState) {
        *lock(&self.state) = state;
        self.wake.notify_one();
    }

    /// Waits until the slot holds a result or the leadership, and takes it.
    fn wait(&self) -> SlotState {
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<J> Batcher<J> {
    pub(crate) fn new(max_batch: usize) -> Self {
        Batcher {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                leader: false,
            }),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues `job` and returns its result; `run` executes one batch, in
    /// queue order, returning one result per job.
    pub(crate) fn submit(
        &self,
        job: J,
        run: impl Fn(Vec<J>) -> Vec<Result<OutcomeRecord>>,
    ) -> Result<OutcomeRecord> {
        let slot = Arc::new(Slot::new());
        let mut lead = {
            let mut queue = lock(&self.queue);
            queue.jobs.push_back((job, slot.clone()));
            !std::mem::replace(&mut queue.leader, true)
        };
        loop {
            if lead {
                self.lead_one_batch(&run);
            }
            match slot.wait() {
                SlotState::Done(result) => return result,
                SlotState::Lead => lead = true,
                SlotState::Waiting => lead = false,
            }
        }
    }

    /// Runs the oldest queued jobs as one batch, delivers their results and
    /// passes the leadership on (or gives it up when nothing is queued).
    fn lead_one_batch(&self, run: &impl Fn(Vec<J>) -> Vec<Result<OutcomeRecord>>) {
        let (jobs, slots): (Vec<J>, Vec<Arc<Slot>>) = {
            let mut queue = lock(&self.queue);
            let take = queue.jobs.len().min(self.max_batch);
            queue.jobs.drain(..take).unzip()
        };
        let mut batch = Leadership {
            batcher: self,
            slots,
        };
        let results = run(jobs);
        let mut results = results.into_iter();
        for slot in std::mem::take(&mut batch.slots) {
            slot.set(SlotState::Done(
                results.next().unwrap_or_else(|| Err(batch_lost())),
            ));
        }
    }

    /// Hands the leadership to the oldest waiting caller, or gives it up.
    fn pass_leadership(&self) {
        let mut queue = lock(&self.queue);
        match queue.jobs.front() {
            Some((_, next)) => next.set(SlotState::Lead),
            None => queue.leader = false,
        }
    }
}

/// Ends a batch: fails the callers it did not serve (should `run` panic, a
/// panicking guard must not leave them waiting forever) and passes the
/// leadership on.
struct Leadership<'a, J> {
    batcher: &'a Batcher<J>,
    slots: Vec<Arc<Slot>>,
}

impl<J> Drop for Leadership<'_, J> {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            slot.set(SlotState::Done(Err(batch_lost())));
        }
        self.batcher.pass_leadership();
    }
}

fn batch_lost() -> Error {
    Error::storage(
        "running a batch of requests",
        std::io::Error::other(
            "the batch was interrupted (a guard panicked); nothing of it was committed",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn outcome(n: u64) -> OutcomeRecord {
        OutcomeRecord {
            id: n.to_string(),
            state: "s".into(),
            version: n,
            applied: true,
            from: None,
            event: None,
            replay: false,
            at: 0,
        }
    }

    #[test]
    fn a_lone_caller_runs_its_own_batch_of_one() {
        let batcher = Batcher::new(8);
        let result = batcher.submit(7u64, |jobs| {
            assert_eq!(jobs, vec![7]);
            jobs.into_iter().map(|j| Ok(outcome(j))).collect()
        });
        assert_eq!(result.unwrap().version, 7);
    }

    #[test]
    fn concurrent_callers_share_batches_and_each_gets_its_own_result() {
        let batcher = Arc::new(Batcher::new(64));
        let batches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8u64)
            .map(|thread| {
                let batcher = batcher.clone();
                let batches = batches.clone();
                std::thread::spawn(move || {
                    for i in 0..100u64 {
                        let job = thread * 1000 + i;
                        let result = batcher.submit(job, |jobs| {
                            batches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            jobs.into_iter().map(|j| Ok(outcome(j))).collect()
                        });
                        assert_eq!(result.unwrap().version, job);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(batches.load(Ordering::SeqCst) < 800, "jobs were batched");
    }

    #[test]
    fn batches_never_exceed_the_bound() {
        let batcher = Arc::new(Batcher::new(3));
        let largest = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for thread in 0..6u64 {
                let batcher = batcher.clone();
                let largest = largest.clone();
                scope.spawn(move || {
                    for i in 0..50u64 {
                        let job = thread * 1000 + i;
                        let result = batcher.submit(job, |jobs| {
                            largest.fetch_max(jobs.len(), Ordering::SeqCst);
                            jobs.into_iter().map(|j| Ok(outcome(j))).collect()
                        });
                        assert_eq!(result.unwrap().version, job);
                    }
                });
            }
        });
        assert!(largest.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn a_panicking_batch_fails_its_jobs_and_releases_leadership() {
        let batcher = Batcher::new(8);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batcher.submit(1u64, |_| panic!("guard panicked"))
        }));
        assert!(panicked.is_err());
        let result = batcher.submit(2u64, |jobs| {
            jobs.into_iter().map(|j| Ok(outcome(j))).collect()
        });
        assert_eq!(result.unwrap().version, 2);
    }
}
