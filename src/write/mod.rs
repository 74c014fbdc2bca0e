//! The commit pipeline: one writer at a time owns every write and every sync.
//!
//! # Who waits for whom
//!
//! ```text
//!   caller threads ──submit──▶ hand-off queue ──▶ the leader (one caller at a time)
//!     │ guards run here,          │                 runs a batch: one transaction,
//!     │ before submitting         │                 one sync; answers each slot;
//!     ▼                           ▼                 passes the leadership on
//!   sleep on own slot ◀── answer / leadership      ──▶ sled (write side)
//!   housekeeper thread ──submits── periodic sync (Buffered) and key purge
//! ```
//!
//! Writes are combined, not handed to a dedicated thread: a caller that finds
//! no batch running leads one on its own thread, which saves the two thread
//! switches per request a dedicated writer thread costs (on the 2-core
//! development machine, with sled's I/O pool threads competing for the CPU,
//! a dedicated writer made a lone caller 1.5x to 2x slower). What matters for
//! safety is kept: *one writer at a time*. Every sled transaction, removal and
//! flush runs under the hand-off's leadership, so no flush races a
//! transaction (sled#1308) and few log buffers are in flight at once.
//!
//! - A caller waits only for a leader (its slot) and, under `Immediate`, for
//!   the sync of the batch that served it.
//! - A leader whose batch would be small while callers overlap yields its CPU
//!   once before taking it ([`handoff`]), so the callers just answered can
//!   join: each sled transaction costs a write on sled's I/O threads, and on
//!   2 cores batches otherwise held about 2 of 8 callers' requests. It waits
//!   for nothing by doing so (a yield is not a wait; the queue lock is not
//!   held across it).
//! - A leader waits only for sled. It never runs user code: guards run on
//!   their caller's thread before it submits, under `catch_unwind`, and the
//!   leader re-checks that the record the guard saw is still the record it
//!   commits against (if not, the request goes back to its caller). It never
//!   waits for another caller and holds no lock of the hand-off while the
//!   batch runs.
//! - sled's I/O threads wait for sled's own locks; with one writer at a time
//!   few log buffers are in flight, so they are free to run the work a flush
//!   waits for (the truncation behind sled#1412).
//! - Readers read sled without locks of ours; under `Immediate`, if what
//!   they may have read is not yet durable, they submit a sync like any job.
//! - Outbox subscribers wait on a notifier bumped after each sync and read
//!   the outbox tree themselves; sled's subscribers are not used.
//!
//! Every arrow points from a waiter to something that never waits back, so
//! no cycle can form. "In progress" state is held by drop guards: a panic
//! while a batch runs answers every caller of the batch (their tickets answer
//! `Abandoned` as they drop) and passes the leadership on; a panic inside a
//! commit or a sync is caught, fails the requests it concerns with a clear
//! error, and the next batch works.
//!
//! The hand-off and the durable mark are small and model-checked with loom
//! (`tests/loom.rs`).

pub(crate) mod durable;
pub(crate) mod handoff;
pub(crate) mod jobs;
mod periodic;
mod sync;
mod sync_step;
mod writer;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use self::durable::DurabilityTracker;
use self::handoff::{Abandoned, Handoff};
use self::jobs::{Answer, Job};
pub(crate) use self::writer::WriterConfig;
use self::writer::WriterLoop;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::store::StoreWriter;

/// The durable mark and the outbox notifier: what the write side moves and
/// readers watch.
#[derive(Default)]
pub(crate) struct Marks {
    pub(crate) tracker: DurabilityTracker,
    pub(crate) published: Notifier,
    /// Set when a file sync failed or was dropped before completing: the
    /// next sync must run even if nothing new was written.
    pub(crate) needs_sync: std::sync::atomic::AtomicBool,
}

/// What callers, the leader and the housekeeper share.
pub(crate) struct Pipeline {
    handoff: Handoff<Job, Answer>,
    /// The write side; only the leader locks it.
    writer: Mutex<WriterLoop>,
    marks: Arc<Marks>,
    durability: Durability,
    /// Tells the housekeeper to stop.
    stop: (Mutex<bool>, Condvar),
}

/// The commit pipeline of one engine.
pub(crate) struct Writer {
    pipeline: Arc<Pipeline>,
    housekeeper: Option<JoinHandle<()>>,
    /// Callers inside [`Writer::submit`] / [`Writer::submit_all`] now: a
    /// hint for [`Writer::is_busy`], never used to synchronize anything.
    callers: AtomicUsize,
}

/// Counts a caller in [`Writer::callers`] for as long as it lives (a panic
/// unwinding through `submit` counts it out too).
struct Inside<'a>(&'a AtomicUsize);

impl<'a> Inside<'a> {
    fn enter(callers: &'a AtomicUsize) -> Self {
        callers.fetch_add(1, Ordering::Relaxed);
        Inside(callers)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Writer {
    /// Starts the pipeline (and its housekeeper thread) over `store`.
    pub(crate) fn start(store: Box<dyn StoreWriter>, config: WriterConfig) -> Result<Writer> {
        let interval = WriterLoop::periodic_interval(&config);
        let marks = Arc::new(Marks::default());
        let pipeline = Arc::new(Pipeline {
            handoff: Handoff::new(config.max_batch),
            durability: config.durability,
            writer: Mutex::new(WriterLoop::new(store, marks.clone(), config)),
            marks,
            stop: (Mutex::new(false), Condvar::new()),
        });
        let housekeeper = {
            let pipeline = pipeline.clone();
            std::thread::Builder::new()
                .name("idemflow-housekeeper".to_owned())
                .spawn(move || pipeline.housekeep(interval))
                .map_err(|error| Error::storage("starting the housekeeper thread", error))?
        };
        Ok(Writer {
            pipeline,
            housekeeper: Some(housekeeper),
            callers: AtomicUsize::new(0),
        })
    }

    /// Hands a job to the pipeline and waits for its answer.
    pub(crate) fn submit(&self, job: Job) -> std::result::Result<Answer, Abandoned> {
        let _inside = Inside::enter(&self.callers);
        self.pipeline.submit(job)
    }

    /// Hands several jobs to the pipeline at once (they can share a batch)
    /// and waits for their answers, in order.
    pub(crate) fn submit_all(&self, jobs: Vec<Job>) -> Vec<std::result::Result<Answer, Abandoned>> {
        let _inside = Inside::enter(&self.callers);
        self.pipeline.submit_all(jobs)
    }

    /// Whether some caller is in the pipeline now (a batch is being
    /// committed or is about to be). A hint: the answer may be stale by the
    /// time it is used, and nothing depends on it but how much work a
    /// caller does before it submits.
    pub(crate) fn is_busy(&self) -> bool {
        self.callers.load(Ordering::Relaxed) > 0
    }

    /// Counts a pretend caller in until the returned value drops (tests of
    /// what callers do while the pipeline is busy).
    #[cfg(test)]
    pub(crate) fn pretend_busy(&self) -> impl Drop + '_ {
        Inside::enter(&self.callers)
    }

    /// Under `Immediate`, makes sure what a reader just read is durable.
    /// Returns an error message if the sync that should make it durable failed.
    pub(crate) fn settle_read(&self) -> std::result::Result<(), Settle> {
        if self.pipeline.durability == Durability::Buffered {
            return Ok(());
        }
        let tracker = &self.pipeline.marks.tracker;
        let ticket = tracker.read_ticket();
        if tracker.is_durable(ticket) {
            return Ok(());
        }
        match self.submit(Job::Sync) {
            Ok(answer) => answer.into_task().map(|_| ()).map_err(Settle::SyncFailed),
            Err(Abandoned) => Err(Settle::Stopped),
        }
    }

    /// The notifier bumped whenever outbox events became durable.
    pub(crate) fn published(&self) -> &Notifier {
        &self.pipeline.marks.published
    }
}

/// Why a read could not be made durable.
#[derive(Debug)]
pub(crate) enum Settle {
    /// The sync failed.
    SyncFailed(Error),
    /// The engine is closing.
    Stopped,
}

impl Pipeline {
    fn submit(&self, job: Job) -> std::result::Result<Answer, Abandoned> {
        self.handoff.submit(job, &mut |batch| self.lead(batch))
    }

    fn submit_all(&self, jobs: Vec<Job>) -> Vec<std::result::Result<Answer, Abandoned>> {
        self.handoff.submit_all(jobs, &mut |batch| self.lead(batch))
    }

    /// Runs one batch as the leader; returns what is left of it (its file
    /// sync and the answers waiting for it) for after the leadership is
    /// passed on.
    fn lead(&self, batch: handoff::Batch<Job, Answer>) -> impl FnOnce() {
        let afterwards = {
            let mut writer = self
                .writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A panic here is ours (the writer runs no user code and catches
            // panics in sled's calls); it must not cross into the caller that
            // happens to lead: the batch's tickets answer Abandoned.
            catch_unwind(AssertUnwindSafe(|| writer.process(batch))).ok()
        };
        move || {
            if let Some(afterwards) = afterwards {
                afterwards.run();
            }
        }
    }

    /// The housekeeper: submits the periodic work (background sync under
    /// `Buffered`, key purge) every `interval`, until told to stop.
    fn housekeep(&self, interval: Duration) {
        let (stop, wake) = &self.stop;
        loop {
            {
                let stopped = stop.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let (stopped, _) = wake
                    .wait_timeout_while(stopped, interval, |stopped| !*stopped)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if *stopped {
                    return;
                }
            }
            // Repeat at once while a purge has more to do; requests queued
            // meanwhile go first (each round is a job of its own).
            loop {
                match self.submit(Job::Periodic) {
                    Ok(Answer::Periodic { more, sync }) => {
                        if let Some(sync) = sync {
                            if let Err(reason) = sync.complete() {
                                tracing::warn!(reason, "the background sync failed");
                            }
                        }
                        if !more {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(Abandoned) => return,
                }
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        *self
            .pipeline
            .stop
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        self.pipeline.stop.1.notify_all();
        if let Some(housekeeper) = self.housekeeper.take() {
            let _ = housekeeper.join();
        }
        // Everything committed reaches stable storage before the store closes.
        let _ = self.pipeline.submit(Job::Sync).map(Answer::into_task);
        self.pipeline.handoff.close();
    }
}

/// A generation counter that wakes subscribers when it moves.
#[derive(Default)]
pub(crate) struct Notifier {
    generation: Mutex<u64>,
    moved: Condvar,
}

impl Notifier {
    /// Moves the counter and wakes every waiter.
    pub(crate) fn bump(&self) {
        *self
            .generation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
        self.moved.notify_all();
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        *self
            .generation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits up to `timeout` for the counter to move past `seen`; returns the
    /// generation then.
    pub(crate) fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let generation = self
            .generation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (generation, _) = self
            .moved
            .wait_timeout_while(generation, timeout, |generation| *generation <= seen)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *generation
    }
}

/// The error a caller gets when no one could answer its request (the batch
/// that held it failed, or the engine is closing): whether it was applied is
/// unknown.
pub(crate) fn abandoned_request(machine: &str, id: &str) -> Error {
    crate::observe::commit_unknown(machine);
    Error::CommitUnknown {
        machine: machine.to_owned(),
        id: id.to_owned(),
        reason: "the batch that held the request failed before answering, or the engine is closing"
            .to_owned(),
    }
}

/// The error a caller gets when its task could not run.
pub(crate) fn abandoned_task(what: &str) -> Error {
    Error::storage(
        what,
        std::io::Error::other("the batch that held it failed, or the engine is closing"),
    )
}
