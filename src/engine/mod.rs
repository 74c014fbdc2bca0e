//! The engine: opening a database, machine handles, and running requests.
//!
//! - [`builder`]: the options ([`EngineBuilder`]);
//! - [`registry`]: one runtime per machine (rules, store, guards), shared by
//!   every handle;
//! - [`requests`]: what a caller's thread does for a request (read, decide,
//!   run guards, hand the request to the writer, settle reads);
//! - [`typed`] and [`named`]: the handles users hold.

mod builder;
#[cfg(feature = "postgres")]
mod connect;
mod named;
mod registry;
mod requests;
mod timers;
mod typed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::builder::EngineBuilder;
pub use self::named::NamedMachine;
pub(crate) use self::registry::MachineRuntime;
pub use self::typed::Machine;
use crate::clock::Clock;
use crate::definitions::DefinitionVersion;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::machine::{MachineDef, StateMachine};
use crate::observe::{self, Call, Subject};
use crate::outbox::Outbox;
use crate::request::Limits;
use crate::store::sled::{SledOptions, SledStore};
use crate::store::Store;
use crate::timers::runner::Runner;
use crate::timers::ScheduledTimer;
use crate::write::jobs::{Job, Task};
use crate::write::{abandoned_task, Settle, Writer, WriterConfig};

/// What [`Engine::purge_keys`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Expired key records deleted.
    pub purged: u64,
    /// Key records that could not be read (each an [`Error::Corrupt`] naming
    /// it), left in place and skipped.
    pub skipped: Vec<Error>,
}

/// How many keys one purge round looks at.
const PURGE_BUDGET: usize = 1024;

/// The workflow engine: a database of machines and their entities.
///
/// Cheap to clone (`Clone + Send + Sync`); the database closes when the last
/// clone and every handle made from it are dropped.
///
/// ```
/// use idemflow::{Engine, Request, StateMachine};
///
/// #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// #[machine(name = "order", initial = Draft, events = OrderEvent)]
/// pub enum OrderState {
///     #[on(submit = Submitted, cancel = Cancelled)]
///     Draft,
///     #[on(pay = Paid, cancel = Cancelled)]
///     Submitted,
///     #[on(ship = Shipped, refund = Refunded)]
///     Paid,
///     #[terminal]
///     Shipped,
///     #[terminal]
///     Cancelled,
///     #[terminal]
///     Refunded,
/// }
///
/// let engine = Engine::temporary()?;
/// let orders = engine.machine::<OrderState>()?;
/// orders.create("o-1")?;
/// orders.fire("o-1", OrderEvent::Submit)?;
///
/// // A payment with an idempotency key: the retry does not pay twice.
/// let pay = Request::to(OrderState::Paid).key("pay-o-1").payload(serde_json::json!({"amount": 4200}));
/// let first = orders.apply("o-1", pay.clone())?;
/// let retry = orders.apply("o-1", pay)?;
/// assert!(first.was_applied() && !first.is_replay());
/// assert!(retry.is_replay() && retry.version() == first.version());
/// assert_eq!(orders.history("o-1")?.len(), 3);
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

pub(crate) struct EngineInner {
    // Field order is drop order: the timer runner stops first, then the
    // writer (which syncs) before the store it writes to is closed.
    pub(crate) timers: std::sync::OnceLock<Runner>,
    pub(crate) writer: Writer,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) durability: Durability,
    pub(crate) key_retention_ms: u64,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    path: Option<PathBuf>,
    machines: Mutex<HashMap<String, Arc<MachineRuntime>>>,
    /// The engine itself, weakly, for the timer runner.
    runner_for: std::sync::Weak<EngineInner>,
}

impl Engine {
    /// Opens (or creates) the database in directory `path` with default options
    /// ([`Durability::Immediate`], 24 h key retention).
    pub fn open(path: impl AsRef<Path>) -> Result<Engine> {
        EngineBuilder::default().open(path)
    }

    /// Opens a throw-away database with default options, for tests and demos.
    pub fn temporary() -> Result<Engine> {
        EngineBuilder::default().temporary()
    }

    /// Starts configuring an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Opens sled in `path` (temporary when `None`) and starts the engine on it.
    fn start(builder: EngineBuilder, path: Option<PathBuf>) -> Result<Engine> {
        let store = Arc::new(SledStore::open(&SledOptions {
            path: path.clone(),
            cache_capacity: builder.cache_capacity,
            segment_size: builder.segment_size,
        })?);
        Engine::start_on(builder, store, path)
    }

    /// Starts the engine on an opened store (any backend).
    pub(crate) fn start_on(
        builder: EngineBuilder,
        store: Arc<dyn Store>,
        path: Option<PathBuf>,
    ) -> Result<Engine> {
        let writer = Writer::start(
            store.writer()?,
            WriterConfig {
                durability: builder.durability,
                max_batch: builder.max_batch,
                max_batch_bytes: 1024 * 1024,
                flush_every: builder.flush_every_ms.map(Duration::from_millis),
                max_unsynced_bytes: 4 * 1024 * 1024,
                purge_every: builder.purge_every,
                purge_budget: PURGE_BUDGET,
                clock: builder.clock.clone(),
                faults: builder.faults.clone(),
            },
        )?;
        if let Ok(pending) = store.outbox_len() {
            observe::outbox_pending(pending);
        }
        let run_timers = builder.timers;
        let engine = Engine {
            inner: Arc::new_cyclic(|weak| EngineInner {
                timers: std::sync::OnceLock::new(),
                writer,
                store,
                durability: builder.durability,
                key_retention_ms: u64::try_from(builder.key_retention.as_millis())
                    .unwrap_or(u64::MAX),
                limits: builder.limits,
                clock: builder.clock,
                path,
                machines: Mutex::new(HashMap::new()),
                runner_for: weak.clone(),
            }),
        };
        if run_timers {
            // The runner needs the engine; it is attached once the engine exists.
            let runner = Runner::start(engine.inner.runner_for.clone())
                .map_err(|error| Error::storage("starting the timer runner", error))?;
            let _ = engine.inner.timers.set(runner);
        }
        Ok(engine)
    }

    /// The database directory (none for a temporary database).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The typed handle of machine `M`, storing its definition on first use.
    ///
    /// Every handle of a machine (typed or by name) uses its one current
    /// definition. A definition that differs from the stored one is accepted
    /// when every state and event name stored data still uses is a current
    /// name or an alias (`#[alias]`, `#[event_alias]`): it is stored as a new
    /// version (the previous ones are kept in the log, see
    /// [`definition_log`](Engine::definition_log)), in one step with the
    /// commits, and records under renamed states are migrated in the
    /// background. Otherwise [`Error::DefinitionMismatch`] names what is
    /// still used, and nothing changes.
    pub fn machine<M: StateMachine>(&self) -> Result<Machine<M>> {
        let runtime = self.inner.runtime_for(M::definition())?;
        Ok(Machine::new(self.clone(), runtime))
    }

    /// Registers a machine known only at run time (validated like a derived
    /// one) and returns its name-based handle.
    pub fn register(&self, def: MachineDef) -> Result<NamedMachine> {
        let runtime = self.inner.runtime_for(def)?;
        Ok(NamedMachine::new(self.clone(), runtime))
    }

    /// The name-based handle of a stored machine, for tools without its Rust type.
    pub fn machine_by_name(&self, name: &str) -> Result<NamedMachine> {
        let runtime = self.inner.runtime_by_name(name)?;
        Ok(NamedMachine::new(self.clone(), runtime))
    }

    /// Every stored machine definition, by name.
    pub fn machines(&self) -> Result<Vec<MachineDef>> {
        self.inner.store.definitions()
    }

    /// The stored version of a machine's definition (`None` if never stored).
    pub fn definition_version(&self, machine: &str) -> Result<Option<u64>> {
        self.inner.store.definition_version(machine)
    }

    /// The change log of a machine's definition: every stored version,
    /// oldest first, the current one last, each with what changed and when.
    pub fn definition_log(&self, machine: &str) -> Result<Vec<DefinitionVersion>> {
        self.inner.store.definition_log(machine)
    }

    /// The outbox: one event per applied change, delivered at least once.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.clone())
    }

    /// Deletes every expired idempotency key record of every machine, in
    /// bounded rounds, and returns how many were deleted. Live keys are
    /// untouched; an unreadable key record is skipped (and logged as a
    /// `tracing` warning; [`purge_keys`](Engine::purge_keys) returns it). The
    /// engine also does this in the background (see
    /// [`EngineBuilder::purge_interval`]).
    pub fn purge_expired_keys(&self) -> Result<u64> {
        self.purge_keys().map(|report| report.purged)
    }

    /// Like [`purge_expired_keys`](Engine::purge_expired_keys), with the
    /// unreadable key records it skipped.
    pub fn purge_keys(&self) -> Result<PurgeReport> {
        observe::call(Call::PurgeKeys, Subject::default(), || self.purge_rounds())
    }

    fn purge_rounds(&self) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        loop {
            let now = self.inner.clock.now_ms();
            let round_report = Arc::new(Mutex::new(None));
            let seen = round_report.clone();
            let task: Task = Box::new(move |store| {
                let round = store.purge_expired_keys(now, PURGE_BUDGET)?;
                for error in &round.corrupt {
                    let error = observe::loggable(error);
                    tracing::warn!(
                        error,
                        "skipped an unreadable idempotency key record while purging"
                    );
                }
                let purged = round.purged;
                *lock(&seen) = Some(round);
                Ok(purged)
            });
            self.inner.run_task(task, "purging idempotency keys")?;
            let Some(round) = lock(&round_report).take() else {
                return Ok(report);
            };
            report.purged += round.purged;
            report.skipped.extend(round.corrupt);
            if !round.more {
                return Ok(report);
            }
        }
    }

    /// Fires every timer due at the clock's now (declared timeouts and
    /// scheduled requests), through the same write path as every request,
    /// and returns how many were processed. Safe to call while the background
    /// runner runs (a timer fired twice is a replay). Tests that drive time
    /// with a [`ManualClock`](crate::testing::ManualClock) call it after
    /// moving the clock.
    pub fn run_due_timers(&self) -> Result<usize> {
        observe::call(Call::RunDueTimers, Subject::default(), || {
            self.inner.fire_due_timers()
        })
    }

    /// Every pending timer of a machine, in due order (at most `limit`).
    pub fn timers(&self, machine: &str, limit: usize) -> Result<Vec<ScheduledTimer>> {
        let runtime = self.inner.runtime_by_name(machine)?;
        let timers = runtime.store.timers(limit)?;
        self.inner.settle_read()?;
        Ok(timers.iter().map(|timer| timer.view(machine)).collect())
    }

    /// Makes every commit so far durable on stable storage.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_caller("syncing the database")?;
        match self.inner.writer.submit(Job::Sync) {
            Ok(answer) => answer.into_task().map(|_| ()),
            Err(_) => Err(abandoned_task("syncing the database")),
        }
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.inner.store.size_on_disk()
    }

    pub(crate) fn inner(&self) -> &EngineInner {
        &self.inner
    }
}

impl EngineInner {
    /// Whether the calling thread may hand a job to the commit pipeline
    /// ([`Store::check_caller`]): asked before every submission from a
    /// caller's thread, so a caller the store refuses (PostgreSQL, on a
    /// thread that runs async code) gets [`Error::BlockingInAsync`] before
    /// it enqueues anything, and never leads a batch of other callers'
    /// requests. The engine's own threads (housekeeper, timer runner)
    /// never run async code.
    pub(crate) fn check_caller(&self, operation: &str) -> Result<()> {
        self.store.check_caller(operation)
    }

    /// Runs a write that is not a request on the writer.
    pub(crate) fn run_task(&self, task: Task, what: &str) -> Result<u64> {
        self.check_caller(what)?;
        match self.writer.submit(Job::Task(task)) {
            Ok(answer) => answer.into_task(),
            Err(_) => Err(abandoned_task(what)),
        }
    }

    /// Under `Immediate`, a read answers only once what it read is durable,
    /// so no caller sees a change that a crash could still take back. If the
    /// sync fails, the answer still stands (it is what was committed); the
    /// failure reaches the callers whose own changes it concerns.
    ///
    /// A caller the store refuses ([`Store::check_caller`]) is refused here
    /// too, before it could submit a sync (on PostgreSQL its read was
    /// already refused: this only keeps the rule in one place).
    pub(crate) fn settle_read(&self) -> Result<()> {
        self.check_caller("waiting for reads to be durable")?;
        match self.writer.settle_read() {
            Ok(()) => Ok(()),
            Err(Settle::SyncFailed(error)) => {
                tracing::warn!(%error, "a read was answered although the sync that should make it durable failed");
                Ok(())
            }
            Err(Settle::Stopped) => Err(abandoned_task("waiting for reads to be durable")),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Points a `Corrupt` error of a typed conversion at the stored record it
/// came from (`<concern>/<machine>`, `key`); other errors pass unchanged.
pub(crate) fn relocate(error: Error, concern: &str, machine: &str, key: &[u8]) -> Error {
    match error {
        Error::Corrupt { reason, .. } => {
            Error::corrupt(format!("{concern}/{machine}"), key, reason)
        }
        other => other,
    }
}
