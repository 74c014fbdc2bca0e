//! Which commits are on stable storage, for answers that only read.
//!
//! Whoever writes numbers the commits: [`begin_commit`](DurabilityTracker::begin_commit)
//! is called *before* a commit's first write becomes visible, and
//! [`synced`](DurabilityTracker::synced) after a sync that covered every
//! commit up to a number. A reader that answers from what it read takes a
//! [`read_ticket`](DurabilityTracker::read_ticket) *after* reading: any commit
//! it could have seen had begun by then, so its number is at most the ticket,
//! and once the ticket is durable every change the answer depends on is.
//! When nothing is in flight and everything is synced the ticket is already
//! durable and the reader does not wait.
//!
//! Invariants (checked by `tests/loom.rs`): the durable mark never decreases
//! and never passes a commit that began after the sync that set it started.
//!
//! This file uses only `super::sync` so that loom can check the same code.

use super::sync::{AtomicU64, Ordering};

/// Commit numbers and the durable mark; see the module docs.
#[derive(Default)]
pub(crate) struct DurabilityTracker {
    /// The number of the latest commit that began (0: none yet).
    started: AtomicU64,
    /// Every commit up to this number is on stable storage.
    durable: AtomicU64,
}

impl DurabilityTracker {
    /// A commit begins; returns its number.
    pub(crate) fn begin_commit(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Between commits: the number a sync started now covers.
    pub(crate) fn covered_by_sync_now(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// A sync covering every commit up to `covered` succeeded.
    pub(crate) fn synced(&self, covered: u64) {
        self.durable.fetch_max(covered, Ordering::SeqCst);
    }

    /// A reader, after reading: the commit number its answer may depend on.
    pub(crate) fn read_ticket(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Whether every commit up to `ticket` is on stable storage.
    pub(crate) fn is_durable(&self, ticket: u64) -> bool {
        self.durable.load(Ordering::SeqCst) >= ticket
    }
}
