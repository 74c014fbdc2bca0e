//! The batching writer: concurrent requests share one transaction and one flush.
//!
//! sled 0.34 runs every transaction under one process-wide lock, so
//! per-request transactions cannot scale with threads. Instead, a caller
//! queues its job; the first caller that finds no batch running becomes the
//! *leader*: it takes whatever is waiting (up to a bound), runs the batch in
//! one atomic step (each job decided against the state the earlier ones left)
//! and publishes every result. Callers that queued meanwhile wait for their
//! result; the next one to find no leader runs the next batch. There is no
//! background thread: a lone caller runs its own batch of one at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::outcome::OutcomeRecord;

/// Combines concurrent jobs of type `J` into batches.
pub(crate) struct Batcher<J> {
    state: Mutex<BatchState<J>>,
    changed: Condvar,
    max_batch: usize,
}

struct BatchState<J> {
    queue: VecDeque<(u64, J)>,
    done: HashMap<u64, Result<OutcomeRecord>>,
    leader: bool,
    next_ticket: u64,
}

impl<J> Batcher<J> {
    pub(crate) fn new(max_batch: usize) -> Self {
        Batcher {
            state: Mutex::new(BatchState {
                queue: VecDeque::new(),
                done: HashMap::new(),
                leader: false,
                next_ticket: 0,
            }),
            changed: Condvar::new(),
            max_batch: max_batch.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BatchState<J>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job` and returns its result; `run` executes one batch, in
    /// queue order, returning one result per job.
    pub(crate) fn submit(
        &self,
        job: J,
        run: impl Fn(Vec<J>) -> Vec<Result<OutcomeRecord>>,
    ) -> Result<OutcomeRecord> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back((ticket, job));
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if state.leader {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            state.leader = true;
            let take = state.queue.len().min(self.max_batch);
            let (tickets, jobs): (Vec<u64>, Vec<J>) = state.queue.drain(..take).unzip();
            drop(state);
            let leadership = Leadership {
                batcher: self,
                tickets,
                finished: false,
            };
            let results = run(jobs);
            state = leadership.finish(results);
        }
    }
}

/// Hands leadership back when a batch ends, also if it panics (a panicking
/// guard must not leave the other callers waiting forever).
struct Leadership<'a, J> {
    batcher: &'a Batcher<J>,
    tickets: Vec<u64>,
    finished: bool,
}

impl<'a, J> Leadership<'a, J> {
    fn finish(mut self, results: Vec<Result<OutcomeRecord>>) -> MutexGuard<'a, BatchState<J>> {
        self.finished = true;
        let mut state = self.batcher.lock();
        let mut results = results.into_iter();
        for &ticket in &self.tickets {
            let result = results.next().unwrap_or_else(|| Err(batch_lost()));
            state.done.insert(ticket, result);
        }
        state.leader = false;
        self.batcher.changed.notify_all();
        state
    }
}

impl<J> Drop for Leadership<'_, J> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.batcher.lock();
        for &ticket in &self.tickets {
            state.done.insert(ticket, Err(batch_lost()));
        }
        state.leader = false;
        self.batcher.changed.notify_all();
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
    use std::sync::Arc;

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
