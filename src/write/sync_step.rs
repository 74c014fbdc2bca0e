//! What a batch leaves for after the leadership is passed on: the file
//! sync of its commits and the answers that wait for it (see the module docs
//! of `writer`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::handoff::Ticket;
use super::jobs::Answer;
use super::writer::panic_message;
use super::Marks;
use crate::observe;
use crate::store::FileSync;
use crate::testing::SyncFault;

/// A file sync to complete, and the commits it covers.
pub(crate) struct PendingSync {
    pub(super) covered: u64,
    pub(super) files: Option<FileSync>,
    pub(super) fault: Option<SyncFault>,
    pub(super) marks: Arc<Marks>,
}

impl PendingSync {
    /// Runs the file sync; on success moves the durable mark and wakes the
    /// outbox's subscribers. Never panics (a panic inside is caught).
    pub(crate) fn complete(mut self) -> std::result::Result<(), String> {
        let files = self.files.take();
        let fault = self.fault;
        let result = catch_unwind(AssertUnwindSafe(move || match fault {
            Some(SyncFault::Panic) => panic!("injected fault: the sync panicked"),
            Some(SyncFault::Fail) => Err("injected fault: the sync failed".to_owned()),
            None => match files {
                Some(files) => files().map_err(|error| error.to_string()),
                None => Ok(()),
            },
        }))
        .unwrap_or_else(|panic| Err(format!("the sync panicked: {}", panic_message(&*panic))));
        match &result {
            Ok(()) => {
                self.marks.tracker.synced(self.covered);
                self.marks.published.bump();
            }
            Err(reason) => {
                observe::sync_failed(reason);
                self.marks.needs_sync.store(true, Ordering::SeqCst);
            }
        }
        result
    }
}

impl Drop for PendingSync {
    fn drop(&mut self) {
        if self.files.is_some() {
            // Never completed: the next sync must run whatever happens.
            self.marks.needs_sync.store(true, Ordering::SeqCst);
        }
    }
}

/// An answer built once the group's sync is known (`Err`: what failed).
pub(super) type AnswerOnSync = Box<dyn FnOnce(std::result::Result<(), &str>) -> Answer + Send>;

/// An answer, given now or once the group's sync is known.
pub(super) enum Pending {
    Ready(Answer),
    OnSync(AnswerOnSync),
}

/// Answers that wait for one sync (or for none).
pub(super) struct Group {
    pub(super) sync: Option<PendingSync>,
    pub(super) answers: Vec<(Ticket<Answer>, Pending)>,
    /// For the metrics: the batch of requests this group answers, if any.
    pub(super) committed: Option<Committed>,
}

/// A committed batch of requests, for the metrics once its sync is done.
pub(super) struct Committed {
    pub(super) started: Instant,
    pub(super) size: usize,
    pub(super) events: usize,
}

/// What a batch leaves for after the leadership is passed on.
#[must_use]
pub(crate) struct Afterwards {
    pub(super) groups: Vec<Group>,
}

impl Afterwards {
    /// Completes each group's sync and answers its callers.
    pub(crate) fn run(self) {
        for group in self.groups {
            let result = match group.sync {
                Some(sync) => sync.complete(),
                None => Ok(()),
            };
            if let Some(batch) = group.committed {
                observe::batch_committed(batch.size, batch.started.elapsed(), batch.events);
            }
            for (ticket, pending) in group.answers {
                let answer = match pending {
                    Pending::Ready(answer) => answer,
                    Pending::OnSync(answer) => {
                        answer(result.as_ref().map(|_| ()).map_err(String::as_str))
                    }
                };
                ticket.answer(answer);
            }
        }
    }
}
