//! The commit pipeline: one writer thread owns every write and every sync.
//!
//! # Who waits for whom
//!
//! ```text
//!   caller threads ──submit──▶ hand-off queue ──take──▶ writer thread ──▶ sled
//!        ▲  (sleep on own slot)                           │  (transactions, removals,
//!        └────────────── answer (slot) ◀──────────────────┘   flush + fdatasync)
//!   guards run on the caller, before submitting; never on the writer
//! ```
//!
//! - A caller waits only for the writer (its slot, or the durable mark).
//! - The writer waits only for sled, and only the writer calls sled's write
//!   side. It never runs user code (guards run on their caller's thread,
//!   under `catch_unwind`; the writer re-checks that the record the guard saw
//!   is still the record it commits against, and sends the request back to
//!   its caller if not), never waits for a caller, and never holds a lock a
//!   caller needs while it calls sled.
//! - sled's I/O threads wait for sled's own locks; with one writer few log
//!   buffers are in flight at a time, so they are free to run the work the
//!   writer's flush waits for.
//! - Readers read sled without locks of ours; under `Immediate` they then wait
//!   for the durable mark, which only the writer moves.
//! - Outbox subscribers wait on a notifier the writer bumps after each sync,
//!   and read the outbox tree themselves; sled's subscribers are not used.
//!
//! Every arrow points from a waiter to something that never waits back, so
//! no cycle can form. "In progress" state is held by drop guards: a panic on
//! the writer answers every caller it owes (their tickets answer
//! `Abandoned` as they drop) and stops the durable tracker, so no caller
//! waits forever; a panic inside a commit or a sync is caught, fails the
//! requests it concerns with a clear error, and the writer goes on.
//!
//! The hand-off and the durable tracker are small and model-checked with
//! loom (`tests/loom.rs`).

pub(crate) mod durable;
pub(crate) mod handoff;
pub(crate) mod jobs;
mod sync;
mod writer;

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use self::durable::{DurabilityTracker, Settled};
use self::handoff::{Abandoned, Handoff};
use self::jobs::{Answer, Job};
pub(crate) use self::writer::WriterConfig;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::store::StoreWriter;

/// What callers and the writer thread share.
pub(crate) struct Pipeline {
    pub(crate) handoff: Handoff<Job, Answer>,
    pub(crate) tracker: DurabilityTracker,
    pub(crate) published: Notifier,
}

/// The writer thread and the way to it.
pub(crate) struct Writer {
    pipeline: Arc<Pipeline>,
    durability: Durability,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread, which owns `store` from now on.
    pub(crate) fn start(store: Box<dyn StoreWriter>, config: WriterConfig) -> Result<Writer> {
        let pipeline = Arc::new(Pipeline {
            handoff: Handoff::default(),
            tracker: DurabilityTracker::default(),
            published: Notifier::default(),
        });
        let durability = config.durability;
        let thread = {
            let pipeline = pipeline.clone();
            std::thread::Builder::new()
                .name("idemflow-writer".to_owned())
                .spawn(move || writer::run(store, &pipeline, config))
                .map_err(|error| Error::storage("starting the writer thread", error))?
        };
        Ok(Writer {
            pipeline,
            durability,
            thread: Some(thread),
        })
    }

    /// Hands a job to the writer and waits for its answer.
    pub(crate) fn submit(&self, job: Job) -> std::result::Result<Answer, Abandoned> {
        self.pipeline.handoff.submit(job)
    }

    /// Under `Immediate`, waits until what a reader just read is durable.
    pub(crate) fn settle_read(&self) -> Settled {
        match self.durability {
            Durability::Buffered => Settled::Durable,
            Durability::Immediate => self.wait_durable(),
        }
    }

    /// Waits until every commit that began so far is durable.
    pub(crate) fn wait_durable(&self) -> Settled {
        let ticket = self.pipeline.tracker.read_ticket();
        self.pipeline
            .tracker
            .wait(ticket, || self.pipeline.handoff.nudge())
    }

    /// The notifier bumped whenever outbox events became durable.
    pub(crate) fn published(&self) -> &Notifier {
        &self.pipeline.published
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.pipeline.handoff.close();
        if let Some(thread) = self.thread.take() {
            // The writer finishes what is queued, syncs and stops. It never
            // runs user code, so a panic there is ours; it was contained.
            let _ = thread.join();
        }
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

/// The error a caller gets when the writer could not answer its request:
/// the writer stopped (the engine is closing) or failed while the request
/// was in its hands, so whether it was applied is unknown.
pub(crate) fn abandoned_request(machine: &str, id: &str) -> Error {
    Error::CommitUnknown {
        machine: machine.to_owned(),
        id: id.to_owned(),
        reason: "the engine's writer stopped before answering (the engine is closing or failed)"
            .to_owned(),
    }
}

/// The error a caller gets when the writer could not run its task.
pub(crate) fn abandoned_task(what: &str) -> Error {
    Error::storage(
        what,
        std::io::Error::other("the engine's writer stopped (the engine is closing or failed)"),
    )
}
