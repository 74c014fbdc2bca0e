//! Durability modes and group commit: concurrent callers share one flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::Result;

/// When a call returns relative to its commit reaching stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// A call returns only after its commit is on stable storage (sled flush
    /// plus `fdatasync` of the data file). Concurrent callers share flushes
    /// (group commit). The default.
    #[default]
    Immediate,
    /// A call returns after its commit is in memory; sled's background flush
    /// (every few milliseconds, see `EngineBuilder::flush_every_ms`) makes it
    /// durable. A crash may lose the last acknowledged calls, never half of one.
    Buffered,
}

/// Group commit: every commit takes a ticket; a caller that needs its commit
/// durable waits until a flush that *started after* its commit has finished.
/// One caller (the leader) runs the flush while the others wait for it, so N
/// concurrent callers cost about one flush instead of N.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    /// The ticket of the latest commit.
    issued: AtomicU64,
    /// Commits started but not yet given a ticket.
    in_flight: AtomicU64,
    state: Mutex<FlushState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct FlushState {
    /// Every commit with a ticket up to this one is durable.
    durable: u64,
    /// Whether a leader is flushing right now.
    flushing: bool,
}

impl GroupCommit {
    /// Records that a commit starts; call [`committed`](Self::committed) when it ends.
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// Records that a commit started with [`begin`](Self::begin) ended
    /// (committed or not) and returns its ticket.
    pub(crate) fn committed(&self) -> u64 {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        ticket
    }

    /// The ticket a reader waits for so that whatever it read is durable
    /// before it answers: the latest commit's, or, while a commit is between
    /// its end and its ticket, a fresh one that forces a new flush.
    pub(crate) fn reader_ticket(&self) -> u64 {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            self.issued.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.latest()
        }
    }

    /// The ticket of the latest commit.
    pub(crate) fn latest(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, FlushState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns once every commit up to `ticket` is durable, running `flush`
    /// as the leader when no flush that covers `ticket` is under way.
    pub(crate) fn wait_durable(&self, ticket: u64, flush: impl Fn() -> Result<()>) -> Result<()> {
        let mut state = self.lock();
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.flushing {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            state.flushing = true;
            // Every commit with a ticket up to `covers` finished before this
            // flush starts, so the flush makes all of them durable.
            let covers = self.latest();
            drop(state);
            let result = flush();
            state = self.lock();
            state.flushing = false;
            if result.is_ok() {
                state.durable = state.durable.max(covers);
            }
            self.done.notify_all();
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn one_flush_covers_every_commit_before_it() {
        let group = GroupCommit::default();
        let flushes = AtomicUsize::new(0);
        let tickets: Vec<u64> = (0..5)
            .map(|_| {
                group.begin();
                group.committed()
            })
            .collect();
        for ticket in tickets {
            group
                .wait_durable(ticket, || {
                    flushes.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn concurrent_callers_share_flushes() {
        let group = Arc::new(GroupCommit::default());
        let flushes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let group = group.clone();
                let flushes = flushes.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        group.begin();
                        let ticket = group.committed();
                        group
                            .wait_durable(ticket, || {
                                flushes.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // 400 commits; with shared flushes far fewer flushes than commits.
        assert!(flushes.load(Ordering::SeqCst) < 400);
    }

    #[test]
    fn a_failed_flush_is_reported_and_retried_by_the_next_caller() {
        let group = GroupCommit::default();
        group.begin();
        let ticket = group.committed();
        let error = group.wait_durable(ticket, || {
            Err(crate::Error::storage(
                "test",
                std::io::Error::other("disk gone"),
            ))
        });
        assert!(error.is_err());
        assert!(group.wait_durable(ticket, || Ok(())).is_ok());
    }

    #[test]
    fn readers_wait_for_nothing_when_idle_and_force_a_flush_during_a_commit() {
        let group = GroupCommit::default();
        group.begin();
        let ticket = group.committed();
        group.wait_durable(ticket, || Ok(())).unwrap();
        let flushes = AtomicUsize::new(0);
        let count = || {
            flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        group.wait_durable(group.reader_ticket(), count).unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 0);
        group.begin(); // a commit is between its end and its ticket
        group.wait_durable(group.reader_ticket(), count).unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }
}
