//! One batch on the leader's thread: the commit, sled's flush, and what is
//! left for after the leadership is passed on (the file sync and the answers
//! that wait for it).
//!
//! A sync has two parts. sled's flush (sealing and writing its log buffers)
//! runs under the leadership, never concurrently with a transaction. The
//! file sync (`fdatasync` of the data file, blob files and directories) runs
//! after the leader passed the leadership on: the next batch commits while
//! this one's sync runs (pipelined group commit). Whoever needs the sync
//! completes it: the leader for the requests of its batch under
//! `Immediate`, the caller of `Engine::flush` or a waiting reader, the
//! housekeeper for the background sync under `Buffered`.
//!
//! The durable mark moves only when a file sync *completes*; a sync that
//! failed, or that was dropped before completing, leaves `needs_sync` set so
//! the next one runs even if nothing new was written.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handoff::Ticket;
use super::jobs::{writes, Answer, Job, RequestAnswer, RequestJob, Task, WriterVerdict};
use super::sync_step::{Afterwards, Committed, Group, Pending, PendingSync};
use super::Marks;
use crate::clock::Clock;
use crate::decide::Decision;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::observe;
use crate::store::{StoreRequest, StoreWriter};
use crate::testing::Faults;

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
    pub(super) store: Box<dyn StoreWriter>,
    pub(super) marks: Arc<Marks>,
    pub(super) config: WriterConfig,
    /// Whether something was written since the last flush.
    pub(super) dirty: bool,
    /// What the last flush covered (its file sync may still be running).
    pub(super) last_flush_covered: u64,
    pub(super) unsynced_bytes: usize,
    pub(super) last_sync: Instant,
    pub(super) next_purge: Option<Instant>,
}

type Batch = Vec<(RequestJob, Ticket<Answer>)>;

/// How many entities one background migration round moves.
pub(super) const MIGRATION_ROUND: usize = 512;

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
            last_flush_covered: 0,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            next_purge,
        }
    }

    /// Runs one batch of jobs, in order; returns what is left for after the
    /// leadership is passed on.
    pub(super) fn process(&mut self, jobs: super::handoff::Batch<Job, Answer>) -> Afterwards {
        let mut groups = Vec::new();
        let mut batch: Batch = Vec::new();
        let mut batch_bytes = 0;
        for (job, ticket) in jobs {
            match job {
                Job::Request(request) => {
                    if !batch.is_empty()
                        && batch_bytes + request.bytes > self.config.max_batch_bytes
                    {
                        groups.push(self.commit(std::mem::take(&mut batch)));
                        batch_bytes = 0;
                    }
                    batch_bytes += request.bytes;
                    batch.push((request, ticket));
                }
                other => {
                    if !batch.is_empty() {
                        groups.push(self.commit(std::mem::take(&mut batch)));
                        batch_bytes = 0;
                    }
                    groups.push(self.run_other(other, ticket));
                }
            }
        }
        if !batch.is_empty() {
            groups.push(self.commit(batch));
        }
        if self.config.durability == Durability::Buffered
            && self.unsynced_bytes >= self.config.max_unsynced_bytes
        {
            // Keep what waits for a sync (and sled's log buffers in flight) small.
            if let Ok(sync) = self.prepare_sync() {
                groups.push(Group {
                    sync,
                    answers: Vec::new(),
                    committed: None,
                });
            }
        }
        Afterwards { groups }
    }

    /// A job that is not a request.
    fn run_other(&mut self, job: Job, ticket: Ticket<Answer>) -> Group {
        match job {
            Job::Request(_) => Group {
                sync: None,
                answers: vec![(
                    ticket,
                    Pending::Ready(Answer::Task(Err(Error::storage(
                        "running a job",
                        std::io::Error::other("a request was handled as a task"),
                    )))),
                )],
                committed: None,
            },
            Job::Task(task) => self.run_task(task, ticket),
            Job::Sync => {
                let answer = match self.prepare_sync() {
                    Ok(sync) => Answer::Sync(sync),
                    Err(reason) => Answer::Task(Err(Error::storage(
                        "syncing the database",
                        std::io::Error::other(reason),
                    ))),
                };
                Group {
                    sync: None,
                    answers: vec![(ticket, Pending::Ready(answer))],
                    committed: None,
                }
            }
            Job::Periodic => {
                let (more, sync) = self.periodic_work();
                Group {
                    sync: None,
                    answers: vec![(ticket, Pending::Ready(Answer::Periodic { more, sync }))],
                    committed: None,
                }
            }
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

    /// Commits a batch of requests in one transaction; under `Immediate`
    /// their answers wait for the sync of the commit.
    fn commit(&mut self, batch: Batch) -> Group {
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
                definition: &*job.definition,
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
                let answers = batch
                    .into_iter()
                    .map(|(job, ticket)| {
                        let error = copy_error(&error, &job);
                        (
                            ticket,
                            Pending::Ready(Answer::Request(RequestAnswer::Done(Err(error)))),
                        )
                    })
                    .collect();
                return Group {
                    sync: None,
                    answers,
                    committed: None,
                };
            }
            Err(panic) => {
                self.dirty = true;
                let reason = format!("the commit panicked: {}", panic_message(&*panic));
                let answers = batch
                    .into_iter()
                    .map(|(job, ticket)| {
                        let error = commit_unknown(&job.machine, &job.id, &reason);
                        (
                            ticket,
                            Pending::Ready(Answer::Request(RequestAnswer::Done(Err(error)))),
                        )
                    })
                    .collect();
                return Group {
                    sync: None,
                    answers,
                    committed: None,
                };
            }
        };
        let (size, events) = (
            batch.len(),
            decisions
                .iter()
                .filter(|decision| matches!(decision, Ok(Decision::Apply(_))))
                .count(),
        );
        let mut wrote_bytes = 0;
        for ((job, _), decision) in batch.iter().zip(&decisions) {
            if matches!(decision, Ok(decision) if writes(decision)) {
                wrote_bytes += job.bytes;
            }
        }
        // A fired timer's removal is a write too.
        let wrote = wrote_bytes > 0 || batch.iter().any(|(job, _)| job.fired_timer.is_some());
        if wrote {
            self.dirty = true;
            self.unsynced_bytes += wrote_bytes.max(1);
        }
        let sync = match self.config.durability {
            Durability::Immediate => self.prepare_sync(),
            Durability::Buffered => Ok(None),
        };
        let (sync, flush_failed) = match sync {
            Ok(sync) => (sync, None),
            Err(reason) => (None, Some(reason)),
        };
        let immediate = self.config.durability == Durability::Immediate;
        let answers = batch
            .into_iter()
            .zip(decisions)
            .zip(needs_caller)
            .map(|(((job, ticket), decision), needs_caller)| {
                if needs_caller.get() {
                    return (
                        ticket,
                        Pending::Ready(Answer::Request(RequestAnswer::NeedsCaller)),
                    );
                }
                let (machine, id) = (job.machine, job.id);
                let answer = move |synced: std::result::Result<(), &str>| {
                    Answer::Request(RequestAnswer::Done(match decision {
                        Ok(decision) if writes(&decision) => match synced {
                            Ok(()) => Ok(decision.into_outcome()),
                            Err(reason) => Err(commit_unknown(&machine, &id, reason)),
                        },
                        Ok(decision) => Ok(decision.into_outcome()),
                        Err(error) => Err(error),
                    }))
                };
                let pending = match (&flush_failed, immediate) {
                    (Some(reason), _) => Pending::Ready(answer(Err(reason))),
                    (None, true) => Pending::OnSync(Box::new(answer)),
                    (None, false) => Pending::Ready(answer(Ok(()))),
                };
                (ticket, pending)
            })
            .collect();
        Group {
            sync,
            answers,
            committed: Some(Committed {
                started,
                size,
                events,
            }),
        }
    }

    fn run_task(&mut self, task: Task, ticket: Ticket<Answer>) -> Group {
        self.marks.tracker.begin_commit();
        let result =
            catch_unwind(AssertUnwindSafe(|| task(&mut *self.store))).unwrap_or_else(|panic| {
                Err(Error::storage(
                    "running a write",
                    std::io::Error::other(format!("it panicked: {}", panic_message(&*panic))),
                ))
            });
        self.dirty = true;
        match self.config.durability {
            Durability::Immediate => {
                let (sync, flush_failed) = match self.prepare_sync() {
                    Ok(sync) => (sync, None),
                    Err(reason) => (None, Some(reason)),
                };
                let answer = move |synced: std::result::Result<(), &str>| {
                    Answer::Task(match synced {
                        Ok(()) => result,
                        Err(reason) => result.and_then(|_| {
                            Err(Error::storage(
                                "making the change durable",
                                std::io::Error::other(reason.to_owned()),
                            ))
                        }),
                    })
                };
                let pending = match flush_failed {
                    Some(reason) => Pending::Ready(answer(Err(&reason))),
                    None => Pending::OnSync(Box::new(answer)),
                };
                Group {
                    sync,
                    answers: vec![(ticket, pending)],
                    committed: None,
                }
            }
            Durability::Buffered => Group {
                sync: None,
                answers: vec![(ticket, Pending::Ready(Answer::Task(result)))],
                committed: None,
            },
        }
    }

    /// The first part of a sync, under the leadership: sled's flush. Returns
    /// the file sync to complete (after passing the leadership on), or none
    /// when everything so far is already durable or being made durable by a
    /// sync in flight that covers it... unless nothing guarantees that, in
    /// which case a new one is prepared.
    pub(super) fn prepare_sync(&mut self) -> std::result::Result<Option<PendingSync>, String> {
        let covered = self.marks.tracker.covered_by_sync_now();
        let needs_sync = self.marks.needs_sync.load(Ordering::SeqCst);
        if !self.dirty && !needs_sync && self.marks.tracker.is_durable(self.last_flush_covered) {
            // Nothing written since a flush whose file sync completed: the
            // commits since wrote nothing, so they are durable too.
            self.marks.tracker.synced(covered);
            return Ok(None);
        }
        let fault = self.config.faults.take_sync_fault();
        self.marks.needs_sync.store(false, Ordering::SeqCst);
        let store = &mut self.store;
        let flushed = catch_unwind(AssertUnwindSafe(|| store.flush())).unwrap_or_else(|panic| {
            Err(Error::storage(
                "flushing the database",
                std::io::Error::other(format!("it panicked: {}", panic_message(&*panic))),
            ))
        });
        match flushed {
            Ok(files) => {
                self.dirty = false;
                self.unsynced_bytes = 0;
                self.last_sync = Instant::now();
                self.last_flush_covered = covered;
                Ok(Some(PendingSync {
                    covered,
                    files: Some(files),
                    fault,
                    marks: self.marks.clone(),
                }))
            }
            Err(error) => {
                let reason = error.to_string();
                observe::sync_failed(&reason);
                self.marks.needs_sync.store(true, Ordering::SeqCst);
                Err(reason)
            }
        }
    }
}

pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn commit_unknown(machine: &str, id: &str, reason: &str) -> Error {
    observe::commit_unknown(machine);
    Error::CommitUnknown {
        machine: machine.to_owned(),
        id: id.to_owned(),
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
        other => commit_unknown(&job.machine, &job.id, &other.to_string()),
    }
}
