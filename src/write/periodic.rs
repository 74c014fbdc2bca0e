//! The writer's periodic work, run when the housekeeper asks: the
//! background sync under `Buffered`, migrating renamed states, purging
//! expired keys. Each round is bounded, so requests interleave.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::sync_step::PendingSync;
use super::writer::{panic_message, WriterLoop, MIGRATION_ROUND};
use crate::durability::Durability;
use crate::observe;

impl WriterLoop {
    /// The background sync under `Buffered` (when due), migrations of renamed
    /// states and the key purge; returns whether more is due at once, and
    /// the sync for the housekeeper to complete.
    pub(super) fn periodic_work(&mut self) -> (bool, Option<PendingSync>) {
        let mut sync = None;
        if self.config.durability == Durability::Buffered {
            let due = self
                .config
                .flush_every
                .is_some_and(|every| self.last_sync.elapsed() >= every);
            if self.dirty && (due || self.unsynced_bytes >= self.config.max_unsynced_bytes) {
                sync = self.prepare_sync().ok().flatten();
            }
        }
        if sync.is_none() && !self.dirty && !self.marks.needs_sync.load(Ordering::SeqCst) {
            // Nothing unsynced and nothing failed: every commit up to the
            // last flush is durable once its sync completes; the ones since
            // wrote nothing.
            if self.marks.tracker.is_durable(self.last_flush_covered) {
                let covered = self.marks.tracker.covered_by_sync_now();
                self.marks.tracker.synced(covered);
            }
        }
        if self.migrate_round() {
            return (true, sync);
        }
        if let (Some(at), Some(every)) = (self.next_purge, self.config.purge_every) {
            if Instant::now() >= at {
                let more = self.purge_round();
                self.next_purge = Some(if more {
                    Instant::now()
                } else {
                    Instant::now() + every
                });
                return (more, sync);
            }
        }
        (false, sync)
    }

    /// One bounded round of migrating renamed states; returns whether it
    /// moved anything (then more may be left).
    fn migrate_round(&mut self) -> bool {
        self.marks.tracker.begin_commit();
        let store = &mut self.store;
        let moved = catch_unwind(AssertUnwindSafe(|| {
            store.migrate_renamed_states(MIGRATION_ROUND)
        }));
        let moved = match moved {
            Ok(Ok(moved)) => moved,
            Ok(Err(error)) => {
                tracing::warn!(%error, "migrating renamed states failed");
                0
            }
            Err(panic) => {
                tracing::warn!(
                    panic = panic_message(&*panic),
                    "migrating renamed states panicked"
                );
                0
            }
        };
        if moved > 0 {
            self.dirty = true;
            tracing::info!(
                moved,
                "migration: moved entities from former state names to their current ones"
            );
        }
        moved > 0
    }

    /// One bounded round of key purging; returns whether more is left.
    fn purge_round(&mut self) -> bool {
        let now = self.config.clock.now_ms();
        let budget = self.config.purge_budget;
        self.marks.tracker.begin_commit();
        let store = &mut self.store;
        let round = catch_unwind(AssertUnwindSafe(|| store.purge_expired_keys(now, budget)));
        match round {
            Ok(Ok(round)) => {
                if round.purged > 0 {
                    self.dirty = true;
                }
                for error in &round.corrupt {
                    let error = observe::loggable(error);
                    tracing::warn!(
                        error,
                        "skipped an unreadable idempotency key record while purging"
                    );
                }
                round.more
            }
            Ok(Err(error)) => {
                self.dirty = true;
                tracing::warn!(%error, "purging expired idempotency keys failed");
                false
            }
            Err(panic) => {
                self.dirty = true;
                tracing::warn!(
                    panic = panic_message(&*panic),
                    "purging expired idempotency keys panicked"
                );
                false
            }
        }
    }
}
