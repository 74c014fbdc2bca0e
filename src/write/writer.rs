//! The writer thread's loop: batches, group commit, durability, periodic work.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handoff::Ticket;
use super::jobs::{writes, Answer, Job, RequestAnswer, RequestJob, Task, WriterVerdict};
use super::Marks;
use crate::clock::Clock;
use crate::decide::Decision;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::observe;
use crate::store::{StoreRequest, StoreWriter};
use crate::testing::{Faults, SyncFault};

/// How the writer works.
pub(crate) struct WriterConfig {
    pub(crate) durability: Durability,
    /// The most requests one transaction takes.
    pub(crate) max_batch: usize,
    /// About the most bytes one transaction writes (a batch closes when the
    /// next request would pass it; a single larger request goes alone).
    pub(crate) max_batch_bytes: usize,
    /// Under `Buffered`: how long a commit may wait for its sync.
    pub(crate) flush_every: Option<Duration>,
    /// Under `Buffered`: how many bytes may wait for a sync.
    pub(crate) max_unsynced_bytes: usize,
    /// How often expired idempotency keys are purged (`None`: never by itself).
    pub(crate) purge_every: Option<Duration>,
    /// How many keys one purge round looks at (rounds repeat, between
    /// batches, until no expired key is left).
    pub(crate) purge_budget: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) faults: Faults,
}

/// The writer's state: the store's write side and what is not yet synced.
/// Only the current leader of the hand-off touches it.
pub(crate) struct WriterLoop {
    store: Box<dyn StoreWriter>,
    marks: Arc<Marks>,
    config: WriterConfig,
    /// Whether something was written since the last successful sync.
    dirty: bool,
    unsynced_bytes: usize,
    last_sync: Instant,
    next_purge: Option<Instant>,
}

type Batch = Vec<(RequestJob, Ticket<Answer>)>;

/// How many entities one background migration round moves.
const MIGRATION_ROUND: usize = 512;

impl WriterLoop {
    pub(super) fn new(
        store: Box<dyn StoreWriter>,
        marks: Arc<Marks>,
        config: WriterConfig,
    ) -> Self {
        let next_purge = config.purge_every.map(|every| Instant::now() + every);
        WriterLoop {
            store,
            marks,
            config,
            dirty: false,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            next_purge,
        }
    }

    /// Runs one batch of jobs, in order, and answers each.
    pub(super) fn process(&mut self, jobs: super::handoff::Batch<Job, Answer>) {
        let mut batch: Batch = Vec::new();
        let mut batch_bytes = 0;
        for (job, ticket) in jobs {
            match job {
                Job::Request(request) => {
                    if !batch.is_empty()
                        && batch_bytes + request.bytes > self.config.max_batch_bytes
                    {
                        self.commit(std::mem::take(&mut batch));
                        batch_bytes = 0;
                    }
                    batch_bytes += request.bytes;
                    batch.push((request, ticket));
                }
                Job::Task(task) => {
                    self.commit(std::mem::take(&mut batch));
                    batch_bytes = 0;
                    self.run_task(task, ticket);
                }
                Job::Sync => {
                    self.commit(std::mem::take(&mut batch));
                    batch_bytes = 0;
                    let result = self.sync().map(|()| 0).map_err(|reason| {
                        Error::storage("syncing the database", std::io::Error::other(reason))
                    });
                    ticket.answer(Answer::Task(result));
                }
                Job::Periodic => {
                    self.commit(std::mem::take(&mut batch));
                    batch_bytes = 0;
                    let more = self.periodic_work();
                    ticket.answer(Answer::Task(Ok(u64::from(more))));
                }
            }
        }
        self.commit(batch);
        if self.config.durability == Durability::Buffered
            && self.unsynced_bytes >= self.config.max_unsynced_bytes
        {
            // Keep what waits for a sync (and sled's log buffers in flight) small.
            let _ = self.sync();
        }
    }

    /// How long the housekeeper may sleep before periodic work is due.
    pub(super) fn periodic_interval(config: &WriterConfig) -> Duration {
        let flush = match config.durability {
            Durability::Buffered => config.flush_every,
            Durability::Immediate => None,
        };
        [flush, config.purge_every, Some(Duration::from_secs(1))]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Commits a batch of requests in one transaction and answers each.
    fn commit(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let needs_caller: Vec<Cell<bool>> = batch.iter().map(|_| Cell::new(false)).collect();
        let deciders: Vec<_> = batch
            .iter()
            .zip(&needs_caller)
            .map(|((job, _), flag)| {
                move |record: Option<&_>, key_record: Option<&_>| -> Result<Decision> {
                    flag.set(false);
                    match (job.decide)(record, key_record) {
                        WriterVerdict::Decided(decision) => decision,
                        WriterVerdict::NeedsCaller => {
                            flag.set(true);
                            // Never seen by anyone: the flag replaces it below.
                            Err(Error::storage(
                                "deciding a guarded request",
                                std::io::Error::other("sent back to its caller"),
                            ))
                        }
                    }
                }
            })
            .collect();
        let requests: Vec<StoreRequest<'_>> = batch
            .iter()
            .zip(&deciders)
            .map(|((job, _), decide)| StoreRequest {
                machine: &job.machine,
                id: &job.id,
                key: job.key.as_deref(),
                decide,
                fired_timer: job.fired_timer.as_deref(),
            })
            .collect();
        self.marks.tracker.begin_commit();
        let started = Instant::now();
        let executed = catch_unwind(AssertUnwindSafe(|| self.store.execute(&requests)));
        drop(requests);
        let decisions = match executed {
            Ok(Ok(decisions)) => decisions,
            Ok(Err(error)) => {
                // sled's transaction failed: nothing of the batch was committed.
                for (job, ticket) in batch {
                    let error = copy_error(&error, &job);
                    ticket.answer(Answer::Request(RequestAnswer::Done(Err(error))));
                }
                return;
            }
            Err(panic) => {
                self.dirty = true;
                let reason = format!("the commit panicked: {}", panic_message(&*panic));
                for (job, ticket) in batch {
                    ticket.answer(Answer::Request(RequestAnswer::Done(Err(commit_unknown(
                        &job, &reason,
                    )))));
                }
                return;
            }
        };
        let wrote: usize = batch
            .iter()
            .zip(&decisions)
            .filter(|(_, decision)| matches!(decision, Ok(decision) if writes(decision)))
            .map(|((job, _), _)| job.bytes)
            .sum();
        let wrote_any = decisions
            .iter()
            .any(|decision| matches!(decision, Ok(decision) if writes(decision)));
        if wrote_any {
            self.dirty = true;
            self.unsynced_bytes += wrote;
        }
        let synced = match self.config.durability {
            Durability::Immediate => self.sync(),
            Durability::Buffered => Ok(()),
        };
        let events = decisions
            .iter()
            .filter(|decision| matches!(decision, Ok(Decision::Apply(_))))
            .count();
        observe::batch_committed(batch.len(), started.elapsed(), events);
        for (((job, ticket), decision), needs_caller) in
            batch.into_iter().zip(decisions).zip(needs_caller)
        {
            let answer = if needs_caller.get() {
                RequestAnswer::NeedsCaller
            } else {
                RequestAnswer::Done(match decision {
                    Ok(decision) if writes(&decision) => match &synced {
                        Ok(()) => Ok(decision.into_outcome()),
                        Err(reason) => Err(commit_unknown(&job, reason)),
                    },
                    Ok(decision) => Ok(decision.into_outcome()),
                    Err(error) => Err(error),
                })
            };
            ticket.answer(Answer::Request(answer));
        }
    }

    fn run_task(&mut self, task: Task, ticket: Ticket<Answer>) {
        self.marks.tracker.begin_commit();
        let result =
            catch_unwind(AssertUnwindSafe(|| task(&mut *self.store))).unwrap_or_else(|panic| {
                Err(Error::storage(
                    "running a write",
                    std::io::Error::other(format!("it panicked: {}", panic_message(&*panic))),
                ))
            });
        self.dirty = true;
        let result = match self.config.durability {
            Durability::Immediate => match self.sync() {
                Ok(()) => result,
                Err(reason) => result.and_then(|_| {
                    Err(Error::storage(
                        "making the change durable",
                        std::io::Error::other(reason),
                    ))
                }),
            },
            Durability::Buffered => result,
        };
        ticket.answer(Answer::Task(result));
    }

    /// Makes every commit so far durable (a no-op when nothing is unsynced)
    /// and moves the durable mark.
    fn sync(&mut self) -> std::result::Result<(), String> {
        let covered = self.marks.tracker.covered_by_sync_now();
        if !self.dirty {
            self.marks.tracker.synced(covered);
            return Ok(());
        }
        let fault = self.config.faults.take_sync_fault();
        let store = &mut self.store;
        let result = catch_unwind(AssertUnwindSafe(|| match fault {
            Some(SyncFault::Panic) => panic!("injected fault: the sync panicked"),
            Some(SyncFault::Fail) => Err("injected fault: the sync failed".to_owned()),
            None => store.sync().map_err(|error| error.to_string()),
        }))
        .unwrap_or_else(|panic| Err(format!("the sync panicked: {}", panic_message(&*panic))));
        if let Err(reason) = &result {
            observe::sync_failed(reason);
        }
        if result.is_ok() {
            self.dirty = false;
            self.unsynced_bytes = 0;
            self.last_sync = Instant::now();
            self.marks.tracker.synced(covered);
            self.marks.published.bump();
        }
        result
    }

    /// The background flush under `Buffered`, and the key purge; returns
    /// whether more purging is due at once.
    fn periodic_work(&mut self) -> bool {
        if self.config.durability == Durability::Buffered && self.dirty {
            let due = self
                .config
                .flush_every
                .is_some_and(|every| self.last_sync.elapsed() >= every);
            if due || self.unsynced_bytes >= self.config.max_unsynced_bytes {
                let _ = self.sync();
            }
        }
        if !self.dirty {
            // Nothing unsynced: every commit so far is durable.
            let covered = self.marks.tracker.covered_by_sync_now();
            self.marks.tracker.synced(covered);
        }
        if self.migrate_round() {
            return true;
        }
        if let (Some(at), Some(every)) = (self.next_purge, self.config.purge_every) {
            if Instant::now() >= at {
                let more = self.purge_round();
                self.next_purge = Some(if more {
                    Instant::now()
                } else {
                    Instant::now() + every
                });
                return more;
            }
        }
        false
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
            if self.config.durability == Durability::Immediate {
                let _ = self.sync();
            }
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
        self.dirty = true;
        let more = match round {
            Ok(Ok(round)) => {
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
                tracing::warn!(%error, "purging expired idempotency keys failed");
                false
            }
            Err(panic) => {
                tracing::warn!(
                    panic = panic_message(&*panic),
                    "purging expired idempotency keys panicked"
                );
                false
            }
        };
        if self.config.durability == Durability::Immediate {
            let _ = self.sync();
        }
        more
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn commit_unknown(job: &RequestJob, reason: &str) -> Error {
    observe::commit_unknown(&job.machine);
    Error::CommitUnknown {
        machine: job.machine.clone(),
        id: job.id.clone(),
        reason: reason.to_owned(),
    }
}

/// The same failure for every request of a batch (`Error` is not `Clone`).
fn copy_error(error: &Error, job: &RequestJob) -> Error {
    match error {
        Error::Storage { context, source } => Error::storage(
            context.clone(),
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        other => commit_unknown(job, &other.to_string()),
    }
}
