//! The engine: opening a database, machine handles, and running requests.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::batch::Batcher;
use crate::decide::{
    check_request, decide, decide_create, CreateSpec, Decision, DecisionInput, KeyRecord,
    MachineRules, NamedGuardInput,
};
use crate::durability::{Durability, GroupCommit};
use crate::error::{Error, InputField, MissingState, Result};
use crate::guard::{GuardInput, GuardScope, Guards};
use crate::machine::{MachineDef, MachineEvent, StateMachine};
use crate::outbox::Outbox;
use crate::outcome::{Entity, EntityRecord, HistoryEntry, HistoryRecord, Outcome, OutcomeRecord};
use crate::request::{Fingerprint, Limits, NamedRequest, Request, RequestSpec};
use crate::store::sled::{SledOptions, SledStore};
use crate::store::{MachineStore, Store, StoreRequest};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Options of an [`Engine`]; every one has a sane default.
///
/// ```
/// use std::time::Duration;
/// use idemflow::{Durability, Engine};
///
/// let engine = Engine::builder()
///     .durability(Durability::Buffered)
///     .key_retention(Duration::from_secs(24 * 3600))
///     .temporary()?;
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct EngineBuilder {
    durability: Durability,
    key_retention: Duration,
    limits: Limits,
    cache_capacity: u64,
    flush_every_ms: Option<u64>,
    batching: bool,
    max_batch: usize,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            durability: Durability::Immediate,
            key_retention: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            cache_capacity: 256 * 1024 * 1024,
            flush_every_ms: Some(100),
            batching: true,
            max_batch: 256,
        }
    }
}

impl EngineBuilder {
    /// When calls return relative to stable storage. Default [`Durability::Immediate`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long an idempotency key is remembered. Default 24 hours.
    #[must_use]
    pub fn key_retention(mut self, retention: Duration) -> Self {
        self.key_retention = retention;
        self
    }

    /// Size limits of ids, keys, payloads and actors.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// sled's page cache in bytes. Default 256 MiB.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// How often sled flushes in the background (`None`: never; only
    /// `Immediate` calls and explicit [`Engine::flush`] do). Default 100 ms:
    /// under [`Durability::Buffered`] this bounds what a crash may lose.
    #[must_use]
    pub fn flush_every_ms(mut self, interval: Option<u64>) -> Self {
        self.flush_every_ms = interval;
        self
    }

    /// Whether concurrent requests share transactions (the batching writer).
    /// Default on. A lone caller is never delayed: it runs its own batch of
    /// one at once; concurrent callers' requests are decided one after the
    /// other (each against the state the earlier ones left) and committed in
    /// one transaction with one flush. Semantics are the same either way.
    #[must_use]
    pub fn batching(mut self, on: bool) -> Self {
        self.batching = on;
        self
    }

    /// The most requests one batch takes. Default 256.
    #[must_use]
    pub fn max_batch(mut self, requests: usize) -> Self {
        self.max_batch = requests.max(1);
        self
    }

    /// Opens (or creates) the database in directory `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Engine> {
        self.build(Some(path.as_ref().to_owned()))
    }

    /// Opens a throw-away database, deleted when the engine is dropped.
    pub fn temporary(self) -> Result<Engine> {
        self.build(None)
    }

    fn build(self, path: Option<PathBuf>) -> Result<Engine> {
        if self.key_retention.is_zero() {
            return Err(Error::invalid_input(
                InputField::Config,
                "key retention must be longer than zero",
            ));
        }
        let store = SledStore::open(&SledOptions {
            path: path.clone(),
            cache_capacity: self.cache_capacity,
            flush_every_ms: self.flush_every_ms,
        })?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                store: Box::new(store),
                durability: self.durability,
                key_retention_ms: u64::try_from(self.key_retention.as_millis()).unwrap_or(u64::MAX),
                limits: self.limits,
                path,
                machines: Mutex::new(HashMap::new()),
                group: GroupCommit::default(),
                batcher: self.batching.then(|| Batcher::new(self.max_batch)),
            }),
        })
    }
}

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
    pub(crate) store: Box<dyn Store>,
    durability: Durability,
    key_retention_ms: u64,
    limits: Limits,
    path: Option<PathBuf>,
    machines: Mutex<HashMap<String, Arc<MachineRuntime>>>,
    group: GroupCommit,
    /// The batching writer, when on.
    batcher: Option<Batcher<Job>>,
}

/// A machine's rules, store and guards, shared by every handle on it.
pub(crate) struct MachineRuntime {
    rules: MachineRules,
    store: Arc<dyn MachineStore>,
    guards: RwLock<Guards>,
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
    /// A stored definition that `M` contradicts (a state removed although
    /// entities are still in it) is [`Error::DefinitionMismatch`]; compatible
    /// changes are accepted and stored (the previous definition is kept in a log).
    pub fn machine<M: StateMachine>(&self) -> Result<Machine<M>> {
        let runtime = self.inner.runtime_for(M::definition())?;
        Ok(Machine {
            engine: self.clone(),
            runtime,
            machine: PhantomData,
        })
    }

    /// Registers a machine known only at run time (validated like a derived
    /// one) and returns its name-based handle.
    pub fn register(&self, def: MachineDef) -> Result<NamedMachine> {
        let runtime = self.inner.runtime_for(def)?;
        Ok(NamedMachine {
            engine: self.clone(),
            runtime,
        })
    }

    /// The name-based handle of a stored machine, for tools without its Rust type.
    pub fn machine_by_name(&self, name: &str) -> Result<NamedMachine> {
        let runtime = self.inner.runtime_by_name(name)?;
        Ok(NamedMachine {
            engine: self.clone(),
            runtime,
        })
    }

    /// Every stored machine definition, by name.
    pub fn machines(&self) -> Result<Vec<MachineDef>> {
        self.inner.store.definitions()
    }

    /// The outbox: one event per applied change, delivered at least once.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.clone())
    }

    /// Deletes every expired idempotency key record of every machine, in
    /// batches, and returns how many were deleted. Live keys are untouched.
    pub fn purge_expired_keys(&self) -> Result<u64> {
        let now = now_ms();
        let mut purged = 0;
        for def in self.inner.store.definitions()? {
            purged += self
                .inner
                .store
                .machine(&def.name)?
                .purge_expired_keys(now)?;
        }
        Ok(purged)
    }

    /// Makes every commit so far durable on stable storage.
    pub fn flush(&self) -> Result<()> {
        self.inner.sync_reads()
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.inner.store.size_on_disk()
    }

    pub(crate) fn inner(&self) -> &EngineInner {
        &self.inner
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EngineInner {
    fn runtime_for(&self, def: MachineDef) -> Result<Arc<MachineRuntime>> {
        def.validate()?;
        let mut machines = lock(&self.machines);
        let previous = machines.get(&def.name).cloned();
        if let Some(runtime) = &previous {
            if runtime.rules.def() == &def {
                return Ok(runtime.clone());
            }
        }
        let store = self.store.machine(&def.name)?;
        match self.store.definition(&def.name)? {
            Some(stored) if stored == def => {}
            Some(stored) => {
                let mut missing = Vec::new();
                for state in &stored.states {
                    if !def.has_state(&state.name) {
                        let entities = store.count_in_state(&state.name)?;
                        if entities > 0 {
                            missing.push(MissingState {
                                state: state.name.clone(),
                                entities,
                            });
                        }
                    }
                }
                if !missing.is_empty() {
                    return Err(Error::DefinitionMismatch {
                        machine: def.name.clone(),
                        missing,
                    });
                }
                self.store.save_definition(&def)?;
            }
            None => self.store.save_definition(&def)?,
        }
        let guards = previous
            .map(|runtime| {
                runtime
                    .guards
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone()
            })
            .unwrap_or_default();
        let runtime = Arc::new(MachineRuntime {
            rules: MachineRules::new(def.clone()),
            store,
            guards: RwLock::new(guards),
        });
        machines.insert(def.name, runtime.clone());
        Ok(runtime)
    }

    fn runtime_by_name(&self, name: &str) -> Result<Arc<MachineRuntime>> {
        if let Some(runtime) = lock(&self.machines).get(name) {
            return Ok(runtime.clone());
        }
        match self.store.definition(name)? {
            Some(def) => self.runtime_for(def),
            None => Err(Error::UnknownMachine {
                machine: name.to_owned(),
            }),
        }
    }

    /// Makes everything a reader may have seen durable (a no-op when idle).
    fn sync_reads(&self) -> Result<()> {
        self.group
            .wait_durable(self.group.reader_ticket(), || self.store.sync())
    }

    /// Under `Immediate`, waits until what a read-only answer is based on is durable.
    fn settle_read(&self) -> Result<()> {
        match self.durability {
            Durability::Immediate => self.sync_reads(),
            Durability::Buffered => Ok(()),
        }
    }

    /// Runs jobs in one atomic step, then applies the durability mode; one
    /// result per job.
    fn execute(&self, jobs: &[Job]) -> Vec<Result<OutcomeRecord>> {
        let deciders: Vec<_> = jobs
            .iter()
            .map(|job| {
                move |record: Option<&EntityRecord>, key_record: Option<&KeyRecord>| {
                    job.decide(record, key_record, self.key_retention_ms)
                }
            })
            .collect();
        let requests: Vec<StoreRequest<'_>> = jobs
            .iter()
            .zip(&deciders)
            .map(|(job, decide)| StoreRequest {
                machine: job.runtime.rules.name(),
                id: &job.id,
                key: job.key(),
                decide,
            })
            .collect();
        self.group.begin();
        let result = self.store.execute(&requests);
        let ticket = self.group.committed();
        let decisions = match result {
            Ok(decisions) => decisions,
            Err(error) => return repeat_error(&error, jobs.len()),
        };
        let wrote = decisions.iter().any(|decision| {
            matches!(
                decision,
                Ok(Decision::Apply(_))
                    | Ok(Decision::NoOp {
                        key_record: Some(_),
                        ..
                    })
            )
        });
        if self.durability == Durability::Immediate {
            // A request that wrote waits for its own commit; one that wrote
            // nothing (a replay, a no-op) may have read another caller's
            // commit that is not durable yet, and waits for that.
            let durable = if wrote {
                self.group.wait_durable(ticket, || self.store.sync())
            } else {
                self.sync_reads()
            };
            if let Err(error) = durable {
                return repeat_error(&error, jobs.len());
            }
        }
        decisions
            .into_iter()
            .map(|decision| decision.map(Decision::into_outcome))
            .collect()
    }

    /// Runs one job: through the batching writer when it is on, else alone.
    fn run(&self, job: Job) -> Result<OutcomeRecord> {
        match &self.batcher {
            Some(batcher) => batcher.submit(job, |jobs| self.execute(&jobs)),
            None => self
                .execute(std::slice::from_ref(&job))
                .pop()
                .unwrap_or_else(|| {
                    Err(Error::storage(
                        "running a request",
                        std::io::Error::other("no result"),
                    ))
                }),
        }
    }

    pub(crate) fn apply(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        request: RequestSpec,
    ) -> Result<OutcomeRecord> {
        check_request(&runtime.rules, &self.limits, id, &request)?;
        let job = Job {
            runtime: runtime.clone(),
            id: id.to_owned(),
            stored_key: request.stored_key(),
            now: now_ms(),
            kind: JobKind::Apply {
                fingerprint: Fingerprint::of(id, &request),
                request,
            },
        };
        // Read-only fast path: a replay, a no-op without a key to store, or an
        // error is decided from plain reads and writes nothing. It is taken
        // only when the request has no key or its key is live: a live key
        // record never changes, so the answer is the one the atomic step
        // would give. A request with a fresh key goes straight to the atomic
        // step (it will write its key whatever happens), skipping the record read.
        let key_record = match job.key() {
            Some(key) => match runtime.store.key_record(key)? {
                Some(seen) if seen.expires_at > job.now => Some(Some(seen)),
                _ => None,
            },
            None => Some(None),
        };
        if let Some(key_record) = key_record {
            let record = runtime.store.get(id)?;
            match job.decide(record.as_ref(), key_record.as_ref(), self.key_retention_ms) {
                Ok(Decision::Replay(outcome))
                | Ok(Decision::NoOp {
                    outcome,
                    key_record: None,
                }) => {
                    self.settle_read()?;
                    return Ok(outcome);
                }
                Err(error) => return Err(error),
                Ok(_) => {}
            }
        }
        self.run(job)
    }

    pub(crate) fn create(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        create: CreateSpec,
    ) -> Result<OutcomeRecord> {
        self.limits.check_id(id)?;
        self.limits.check_actor(create.actor.as_deref())?;
        self.limits.check_payload(create.payload.as_ref())?;
        let job = Job {
            runtime: runtime.clone(),
            id: id.to_owned(),
            stored_key: None,
            now: now_ms(),
            kind: JobKind::Create(create),
        };
        if let Some(record) = runtime.store.get(id)? {
            let outcome = job.decide(Some(&record), None, self.key_retention_ms)?;
            self.settle_read()?;
            return Ok(outcome.into_outcome());
        }
        self.run(job)
    }
}

/// Points a `Corrupt` error of a typed conversion at the stored record it
/// came from (`<concern>/<machine>`, `key`); other errors pass unchanged.
fn relocate(error: Error, concern: &str, machine: &str, key: &[u8]) -> Error {
    match error {
        Error::Corrupt { reason, .. } => {
            Error::corrupt(format!("{concern}/{machine}"), key, reason)
        }
        other => other,
    }
}

/// The same storage error for every job of a failed batch.
fn repeat_error(error: &Error, count: usize) -> Vec<Result<OutcomeRecord>> {
    (0..count)
        .map(|_| {
            Err(match error {
                Error::Storage { context, source } => Error::storage(
                    context.clone(),
                    std::io::Error::new(source.kind(), source.to_string()),
                ),
                other => Error::storage(
                    "committing requests",
                    std::io::Error::other(other.to_string()),
                ),
            })
        })
        .collect()
}

/// One request, owned, ready to be decided inside an atomic step.
pub(crate) struct Job {
    runtime: Arc<MachineRuntime>,
    id: String,
    /// The idempotency key as stored (scope included).
    stored_key: Option<Vec<u8>>,
    now: u64,
    kind: JobKind,
}

enum JobKind {
    Apply {
        request: RequestSpec,
        fingerprint: Fingerprint,
    },
    Create(CreateSpec),
}

impl Job {
    fn key(&self) -> Option<&[u8]> {
        self.stored_key.as_deref()
    }

    /// The pure decision for this job over the loaded records.
    fn decide(
        &self,
        record: Option<&EntityRecord>,
        key_record: Option<&KeyRecord>,
        key_retention_ms: u64,
    ) -> Result<Decision> {
        let rules = &self.runtime.rules;
        match &self.kind {
            JobKind::Create(create) => Ok(decide_create(rules, &self.id, record, create, self.now)),
            JobKind::Apply {
                request,
                fingerprint,
            } => {
                let guards = self
                    .runtime
                    .guards
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let guard = |input: &NamedGuardInput<'_>| guards.check(input);
                decide(&DecisionInput {
                    rules,
                    id: &self.id,
                    record,
                    key_record,
                    request,
                    fingerprint: *fingerprint,
                    now: self.now,
                    key_retention_ms,
                    guard: &guard,
                })
            }
        }
    }
}

/// The typed handle of one machine: create entities, request transitions, read
/// state and history. Owned (no lifetime), `Clone + Send + Sync`: move it into
/// threads and tasks freely.
///
/// See [`Engine`] for an example.
pub struct Machine<M: StateMachine> {
    engine: Engine,
    runtime: Arc<MachineRuntime>,
    machine: PhantomData<fn() -> M>,
}

impl<M: StateMachine> Clone for Machine<M> {
    fn clone(&self) -> Self {
        Machine {
            engine: self.engine.clone(),
            runtime: self.runtime.clone(),
            machine: PhantomData,
        }
    }
}

impl<M: StateMachine> std::fmt::Debug for Machine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("name", &M::machine_name())
            .finish_non_exhaustive()
    }
}

impl<M: StateMachine> Machine<M> {
    /// Creates entity `id` in the initial state at version 1. Creating an
    /// existing entity is a no-op success returning its current state.
    pub fn create(&self, id: &str) -> Result<Outcome<M>> {
        self.create_with(id, None, None)
    }

    /// Creates entity `id` recording a payload and an actor in its first
    /// history entry and its creation event.
    pub fn create_with(
        &self,
        id: &str,
        payload: Option<Value>,
        actor: Option<String>,
    ) -> Result<Outcome<M>> {
        let record = self
            .engine
            .inner
            .create(&self.runtime, id, CreateSpec { payload, actor })?;
        Outcome::from_record(record)
    }

    /// Moves entity `id` to `state` (a no-op if it is there already).
    pub fn transition(&self, id: &str, state: M) -> Result<Outcome<M>> {
        self.apply(id, Request::to(state))
    }

    /// Fires `event` on entity `id`.
    pub fn fire(&self, id: &str, event: M::Event) -> Result<Outcome<M>> {
        self.apply(id, Request::fire(event))
    }

    /// Runs a request with all its options (key, expected version, payload, actor).
    ///
    /// ```
    /// # use idemflow::{Engine, Error, Request, StateMachine};
    /// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    /// # #[machine(name = "order", initial = Draft, events = OrderEvent)]
    /// # enum OrderState {
    /// #     #[on(submit = Submitted)] Draft,
    /// #     #[on(pay = Paid)] Submitted,
    /// #     #[terminal] Paid,
    /// # }
    /// let orders = Engine::temporary()?.machine::<OrderState>()?;
    /// orders.create("o-1")?;
    /// orders.fire("o-1", OrderEvent::Submit)?;
    /// // Someone else's view was version 1: the update is refused, not lost.
    /// let stale = orders.apply("o-1", Request::to(OrderState::Paid).expect_version(1));
    /// assert!(matches!(stale, Err(Error::VersionConflict { expected: 1, actual: 2, .. })));
    /// let paid = orders.apply("o-1", Request::to(OrderState::Paid).expect_version(2))?;
    /// assert_eq!((paid.state(), paid.version()), (OrderState::Paid, 3));
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    pub fn apply(&self, id: &str, request: Request<M>) -> Result<Outcome<M>> {
        let key = request.spec.key.clone();
        let record = self.engine.inner.apply(&self.runtime, id, request.spec)?;
        let replay_key = key.filter(|_| record.replay);
        Outcome::from_record(record).map_err(|error| match replay_key {
            // A replayed outcome comes from the key record.
            Some(key) => relocate(error, "keys", self.name(), key.as_bytes()),
            None => relocate(error, "entities", self.name(), id.as_bytes()),
        })
    }

    /// The entity's current snapshot, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<Entity<M>>> {
        let record = self.named().get(id)?;
        record
            .map(Entity::from_record)
            .transpose()
            .map_err(|error| relocate(error, "entities", self.name(), id.as_bytes()))
    }

    /// The entity's history, oldest first (empty if it does not exist).
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry<M>>> {
        self.named()
            .history(id)?
            .into_iter()
            .map(|entry| {
                let version = entry.version;
                HistoryEntry::from_record(entry).map_err(|error| {
                    let key = crate::store::codec::history_key(id, version);
                    relocate(error, "history", self.name(), &key)
                })
            })
            .collect()
    }

    /// Every id in `state`, in id order, from the state index.
    pub fn in_state(&self, state: M) -> Result<Vec<String>> {
        self.named().in_state(state.name(), None, usize::MAX)
    }

    /// Up to `limit` ids in `state` after `after` (exclusive), in id order:
    /// pass the last id of a page to get the next one.
    pub fn in_state_page(
        &self,
        state: M,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.named().in_state(state.name(), after, limit)
    }

    /// Every state with its number of entities, in declaration order.
    pub fn count_by_state(&self) -> Result<Vec<(M, u64)>> {
        let counts = self.named().count_by_state()?;
        Ok(M::states()
            .iter()
            .zip(counts)
            .map(|(&state, (_, count))| (state, count))
            .collect())
    }

    fn name(&self) -> &str {
        self.runtime.rules.name()
    }

    /// Attaches a guard to every transition *into* `state`. It sees the entity
    /// and the request and returns `Err(reason)` to reject it
    /// ([`Error::GuardRejected`], nothing written). Guards run inside the
    /// atomic step: keep them pure and quick, and never call the engine from one.
    ///
    /// ```
    /// # use idemflow::{Engine, Error, Request, StateMachine};
    /// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    /// # #[machine(name = "order", initial = Draft, events = OrderEvent)]
    /// # enum OrderState {
    /// #     #[on(submit = Submitted)] Draft,
    /// #     #[on(pay = Paid)] Submitted,
    /// #     #[terminal] Paid,
    /// # }
    /// let orders = Engine::temporary()?.machine::<OrderState>()?;
    /// orders.guard_to(OrderState::Paid, |input| {
    ///     match input.payload.and_then(|p| p["amount"].as_u64()) {
    ///         Some(amount) if amount > 0 => Ok(()),
    ///         _ => Err("a payment needs a positive amount".to_owned()),
    ///     }
    /// });
    /// orders.create("o-1")?;
    /// orders.fire("o-1", OrderEvent::Submit)?;
    /// let refused = orders.fire("o-1", OrderEvent::Pay);
    /// assert!(matches!(refused, Err(Error::GuardRejected { .. })));
    /// orders.apply("o-1", Request::fire(OrderEvent::Pay).payload(serde_json::json!({"amount": 5})))?;
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    pub fn guard_to<F>(&self, state: M, guard: F)
    where
        F: Fn(&GuardInput<'_, M>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.add_typed_guard(GuardScope::To(state.name().to_owned()), guard);
    }

    /// Attaches a guard to every transition declared with `event`, whether the
    /// request fires the event or names the target state.
    pub fn guard_event<F>(&self, event: M::Event, guard: F)
    where
        F: Fn(&GuardInput<'_, M>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.add_typed_guard(GuardScope::Event(event.name().to_owned()), guard);
    }

    fn add_typed_guard<F>(&self, scope: GuardScope, guard: F)
    where
        F: Fn(&GuardInput<'_, M>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.runtime
            .guards
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(scope, move |input: &NamedGuardInput<'_>| {
                let typed = GuardInput::<M>::from_named(input)
                    .map_err(|error| format!("guard could not read the entity: {error}"))?;
                guard(&typed)
            });
    }

    /// The name-based handle of the same machine.
    pub fn named(&self) -> NamedMachine {
        NamedMachine {
            engine: self.engine.clone(),
            runtime: self.runtime.clone(),
        }
    }

    /// The engine this handle belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The name-based handle of one machine, for tools, the CLI and HTTP services
/// that have no Rust type for it: states and events are given and returned by
/// name. Same semantics as [`Machine`].
///
/// ```
/// use idemflow::{Engine, MachineDef, NamedRequest};
///
/// let engine = Engine::temporary()?;
/// let doors = engine.register(
///     MachineDef::new("door", "closed")
///         .state("closed")
///         .terminal_state("open")
///         .transition("closed", "open", "open"),
/// )?;
/// doors.create("front")?;
/// let outcome = doors.apply("front", NamedRequest::fire("open").key("k-1"))?;
/// assert_eq!((outcome.state.as_str(), outcome.version), ("open", 2));
/// assert!(doors.apply("front", NamedRequest::to("nowhere")).is_err());
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone)]
pub struct NamedMachine {
    engine: Engine,
    runtime: Arc<MachineRuntime>,
}

impl std::fmt::Debug for NamedMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedMachine")
            .field("name", &self.runtime.rules.name())
            .finish_non_exhaustive()
    }
}

impl NamedMachine {
    /// The machine's definition.
    pub fn definition(&self) -> &MachineDef {
        self.runtime.rules.def()
    }

    /// Creates entity `id` (a no-op if it exists).
    pub fn create(&self, id: &str) -> Result<OutcomeRecord> {
        self.engine
            .inner
            .create(&self.runtime, id, CreateSpec::default())
    }

    /// Creates entity `id` recording a payload and an actor.
    pub fn create_with(
        &self,
        id: &str,
        payload: Option<Value>,
        actor: Option<String>,
    ) -> Result<OutcomeRecord> {
        self.engine
            .inner
            .create(&self.runtime, id, CreateSpec { payload, actor })
    }

    /// Runs a request given by names. An unknown state or event name is
    /// [`Error::InvalidInput`].
    pub fn apply(&self, id: &str, request: NamedRequest) -> Result<OutcomeRecord> {
        self.engine.inner.apply(&self.runtime, id, request.spec)
    }

    /// The entity's stored record, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<EntityRecord>> {
        self.engine.inner.limits.check_id(id)?;
        self.settled(self.runtime.store.get(id))
    }

    /// The entity's history, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryRecord>> {
        self.engine.inner.limits.check_id(id)?;
        self.settled(self.runtime.store.history(id))
    }

    /// Up to `limit` ids in the state named `state` after `after`, in id order.
    pub fn in_state(&self, state: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.check_state(state)?;
        self.settled(self.runtime.store.in_state(state, after, limit))
    }

    /// Every state with its number of entities, in declaration order.
    pub fn count_by_state(&self) -> Result<Vec<(String, u64)>> {
        let counts = self
            .definition()
            .states
            .iter()
            .map(|state| {
                Ok((
                    state.name.clone(),
                    self.runtime.store.count_in_state(&state.name)?,
                ))
            })
            .collect();
        self.settled(counts)
    }

    /// Under `Immediate`, a read answers only once what it read is durable,
    /// so no caller sees a change that a crash could still take back.
    fn settled<T>(&self, read: Result<T>) -> Result<T> {
        let value = read?;
        self.engine.inner.settle_read()?;
        Ok(value)
    }

    /// Attaches a name-based guard to every transition into the state `state`.
    pub fn guard_to<F>(&self, state: &str, guard: F) -> Result<()>
    where
        F: Fn(&NamedGuardInput<'_>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.check_state(state)?;
        self.runtime
            .guards
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(GuardScope::To(state.to_owned()), guard);
        Ok(())
    }

    fn check_state(&self, state: &str) -> Result<()> {
        if self.definition().has_state(state) {
            Ok(())
        } else {
            Err(Error::invalid_input(
                InputField::State,
                format!(
                    "{state:?} is not a state of machine {}",
                    self.runtime.rules.name()
                ),
            ))
        }
    }

    /// The engine this handle belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
