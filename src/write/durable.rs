//! Which commits are on stable storage, for answers that only read.
//!
//! The writer numbers its commits: [`begin_commit`](DurabilityTracker::begin_commit)
//! is called *before* a commit's first write becomes visible, and
//! [`synced`](DurabilityTracker::synced) after a sync that covers every commit
//! up to a number. A reader that answers from what it read takes a
//! [`read_ticket`](DurabilityTracker::read_ticket) *after* reading: any commit
//! it could have seen had begun by then, so its number is at most the
//! ticket, and waiting until the ticket is durable makes every change the
//! answer depends on durable. When nothing is in flight and everything is
//! synced, the ticket is already durable and the reader does not wait.
//!
//! Invariants (checked by `tests/loom.rs`): `durable` never decreases and
//! never passes a commit that has not been synced; a waiting reader returns
//! once its ticket is durable, once a sync that covered it failed, or once
//! the writer stopped, and never otherwise.
//!
//! This file uses only `super::sync` so that loom can check the same code.

use super::sync::{AtomicU64, Condvar, Mutex, MutexGuard, Ordering};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a reader's wait for durability ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Everything the reader may have seen is on stable storage.
    Durable,
    /// The sync that should have made it durable failed (the message says why).
    SyncFailed(String),
    /// The writer stopped (the engine is closing or the writer died).
    Stopped,
}

/// Commit numbers and the durable mark; see the module docs.
#[derive(Default)]
pub(crate) struct DurabilityTracker {
    /// The number of the latest commit that began (0: none yet).
    started: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Every commit up to this number is on stable storage.
    durable: u64,
    /// How many sync attempts have finished.
    attempts: u64,
    /// What the latest finished attempt covered, and its failure if it failed.
    last_covered: u64,
    last_failure: Option<String>,
    stopped: bool,
}

impl DurabilityTracker {
    /// The writer: a commit begins; returns its number.
    pub(crate) fn begin_commit(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The writer, between commits: the number a sync started now covers.
    pub(crate) fn covered_by_sync_now(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The writer: a sync covering every commit up to `covered` finished.
    pub(crate) fn synced(&self, covered: u64, result: Result<(), String>) {
        let mut state = lock(&self.state);
        state.attempts += 1;
        state.last_covered = covered;
        match result {
            Ok(()) => {
                state.durable = state.durable.max(covered);
                state.last_failure = None;
            }
            Err(reason) => state.last_failure = Some(reason),
        }
        drop(state);
        self.changed.notify_all();
    }

    /// The writer stopped: wake every reader.
    pub(crate) fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
    }

    /// Every commit up to this number is on stable storage.
    pub(crate) fn durable(&self) -> u64 {
        lock(&self.state).durable
    }

    /// A reader, after reading: the commit number its answer may depend on.
    pub(crate) fn read_ticket(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// A reader: waits until `ticket` is durable (or a sync covering it
    /// failed, or the writer stopped). `nudge` asks the writer for a sync; it
    /// is called with the tracker's lock held, so it must not wait for the
    /// writer (it only sets a flag and notifies).
    pub(crate) fn wait(&self, ticket: u64, nudge: impl Fn()) -> Settled {
        let mut state = lock(&self.state);
        let attempts_before = state.attempts;
        loop {
            if state.durable >= ticket {
                return Settled::Durable;
            }
            if state.attempts > attempts_before && state.last_covered >= ticket {
                if let Some(reason) = &state.last_failure {
                    return Settled::SyncFailed(reason.clone());
                }
            }
            if state.stopped {
                return Settled::Stopped;
            }
            nudge();
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}
