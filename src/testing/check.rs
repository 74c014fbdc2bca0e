//! `check_machine`: the reference-model property test, for a user's own
//! machine (feature `testing`).
//!
//! Random sequences of requests (creations and transitions, by state and by
//! event, with and without idempotency keys and scopes, right and wrong
//! expected versions, payloads whose numbers are spelled differently, exact
//! repeats, keyed duplicates sent concurrently, and reopening the on-disk
//! database) run against the engine and against a plain in-memory model of
//! SPEC sections 2 and 3 written here, from the spec, without calling the
//! engine's decision code. After every step the outcome or error must be the
//! model's, and the stored records, histories, state index and outbox must
//! be the model's state. A disagreement panics with a shrunk (minimal)
//! failing sequence and what differed.
//!
//! Guards are out of scope (the check runs on a fresh engine of its own,
//! with none), and so is time: the engine runs on a [`ManualClock`] that
//! moves one millisecond per step, so keys never expire and timeouts never
//! fire.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::{json, Value};

use crate::error::{Error, InputField};
use crate::machine::{MachineEvent, StateMachine};
use crate::outcome::{HistoryRecord, OutboxEvent, OutcomeRecord};
use crate::request::{Create, Request};
use crate::testing::ManualClock;
use crate::{Durability, Engine, Machine};

/// How much [`check_machine_with`] tries.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckConfig {
    /// Random sequences to run (default 32; the `PROPTEST_CASES`
    /// environment variable, when set, overrides the default).
    pub cases: u32,
    /// The most requests in one sequence (default 30).
    pub steps: usize,
    /// The random seed: `None` (default) draws one per run (the
    /// `PROPTEST_RNG_SEED` environment variable, when set, fixes it); a
    /// fixed seed makes a run repeatable.
    pub seed: Option<u64>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(32);
        CheckConfig {
            cases,
            steps: 30,
            seed: None,
        }
    }
}

impl CheckConfig {
    /// Sets the number of random sequences.
    #[must_use]
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases;
        self
    }

    /// Sets the most requests in one sequence.
    #[must_use]
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Fixes the random seed, for a repeatable run.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// Runs the reference-model property test against machine `M` with the
/// default [`CheckConfig`] (32 random sequences of up to 30 requests, each
/// on a fresh temporary on-disk database). Panics with a shrunk failing
/// sequence if the engine and the model of the spec disagree on `M`.
///
/// ```
/// # use idemflow::StateMachine;
/// #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// #[machine(name = "door", initial = Closed, events = DoorEvent)]
/// enum Door {
///     #[on(open = Open, lock = Locked)] Closed,
///     #[on(close = Closed)] Open,
///     #[on(unlock = Closed)] Locked,
/// }
///
/// idemflow::testing::check_machine::<Door>();
/// ```
pub fn check_machine<M: StateMachine>() {
    check_machine_with::<M>(CheckConfig::default());
}

/// [`check_machine`] with a number of cases, a sequence length and a seed
/// of your choice.
///
/// ```
/// # use idemflow::StateMachine;
/// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// # #[machine(name = "door", initial = Closed, events = DoorEvent)]
/// # enum Door {
/// #     #[on(open = Open)] Closed,
/// #     #[on(close = Closed)] Open,
/// # }
/// use idemflow::testing::{check_machine_with, CheckConfig};
///
/// check_machine_with::<Door>(CheckConfig::default().cases(8).steps(20).seed(7));
/// ```
pub fn check_machine_with<M: StateMachine>(config: CheckConfig) {
    run_check::<M, EngineUnderTest<M>>(&config);
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// Entity ids; index `IDS.len()` is the empty (invalid) id.
const IDS: [&str; 3] = ["e-0", "e-1", "e-2"];
/// Idempotency keys; index `KEYS.len()` is the empty (invalid) key.
const KEYS: [&str; 3] = ["k-0", "k-1", "k-2"];
const SCOPES: [&str; 2] = ["tenant-a", "tenant-b"];
const ACTORS: [&str; 2] = ["alice", "bob"];
/// Where the manual clock starts.
const START_MS: u64 = 1_800_000_000_000;

#[derive(Clone, Debug)]
enum TargetSel {
    To(usize),
    Fire(usize),
}

#[derive(Clone, Debug)]
enum ExpectSel {
    None,
    Right,
    Wrong(i64),
}

#[derive(Clone, Debug)]
struct KeySel {
    key: usize,
    scope: Option<usize>,
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        id: usize,
        key: Option<KeySel>,
        payload: Option<u8>,
        actor: Option<usize>,
    },
    Apply {
        id: usize,
        target: TargetSel,
        key: Option<KeySel>,
        expect: ExpectSel,
        payload: Option<u8>,
        actor: Option<usize>,
    },
    /// The exact previous request again.
    Repeat,
    /// The previous request, if keyed, sent twice at once.
    Concurrent,
    /// Drop the engine and open the database again.
    Reopen,
}

fn key_strategy() -> impl Strategy<Value = Option<KeySel>> {
    let scope = prop_oneof![3 => Just(None), 1 => (0..SCOPES.len()).prop_map(Some)];
    prop_oneof![
        8 => Just(None),
        8 => ((0..KEYS.len()), scope).prop_map(|(key, scope)| Some(KeySel { key, scope })),
        1 => Just(Some(KeySel { key: KEYS.len(), scope: None })),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let id = prop_oneof![20 => 0..IDS.len(), 1 => Just(IDS.len())];
    let payload = prop_oneof![3 => Just(None), 2 => (0u8..4).prop_map(Some)];
    let actor = prop_oneof![3 => Just(None), 1 => (0..ACTORS.len()).prop_map(Some)];
    let create = (id.clone(), key_strategy(), payload.clone(), actor.clone()).prop_map(
        |(id, key, payload, actor)| Op::Create {
            id,
            key,
            payload,
            actor,
        },
    );
    let target = prop_oneof![
        (0..64usize).prop_map(TargetSel::To),
        (0..64usize).prop_map(TargetSel::Fire),
    ];
    let expect = prop_oneof![
        2 => Just(ExpectSel::None),
        1 => Just(ExpectSel::Right),
        1 => prop_oneof![Just(-1i64), Just(1)].prop_map(ExpectSel::Wrong),
    ];
    let apply = (id, target, key_strategy(), expect, payload, actor).prop_map(
        |(id, target, key, expect, payload, actor)| Op::Apply {
            id,
            target,
            key,
            expect,
            payload,
            actor,
        },
    );
    prop_oneof![
        4 => create,
        14 => apply,
        4 => Just(Op::Repeat),
        1 => Just(Op::Concurrent),
        1 => Just(Op::Reopen),
    ]
}

/// Payloads; pairs spell the same amount differently (`1` and `1.0`), so
/// a retry that respells a number is the same request.
fn payload_of(selection: Option<u8>) -> Option<Value> {
    selection.map(|n| match n {
        0 => json!({"amount": 1}),
        1 => json!({"amount": 1.0}),
        2 => json!({"amount": 2, "note": "x"}),
        _ => json!({"note": "x", "amount": 2e0}),
    })
}

// ---------------------------------------------------------------------------
// Requests, resolved
// ---------------------------------------------------------------------------

/// A request's target, by name.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Target {
    To(&'static str),
    Fire(&'static str),
}

/// A key and its scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) key: String,
    pub(super) scope: Option<String>,
}

/// A request with every field decided.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Req {
    pub(super) id: String,
    /// `None`: a creation.
    pub(super) target: Option<Target>,
    pub(super) key: Option<Key>,
    pub(super) expected: Option<u64>,
    pub(super) payload: Option<Value>,
    pub(super) actor: Option<String>,
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            None => write!(f, "create({:?})", self.id)?,
            Some(Target::To(state)) => write!(f, "apply({:?}, to {state:?})", self.id)?,
            Some(Target::Fire(event)) => write!(f, "apply({:?}, fire {event:?})", self.id)?,
        }
        if let Some(key) = &self.key {
            write!(f, " key {:?}", key.key)?;
            if let Some(scope) = &key.scope {
                write!(f, " scope {scope:?}")?;
            }
        }
        if let Some(expected) = self.expected {
            write!(f, " expect v{expected}")?;
        }
        if let Some(payload) = &self.payload {
            write!(f, " payload {payload}")?;
        }
        if let Some(actor) = &self.actor {
            write!(f, " actor {actor:?}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// An error as the model predicts it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ModelError {
    InvalidInput(InputField),
    NotFound {
        id: String,
    },
    InvalidTransition {
        id: String,
        from: String,
        to: Option<String>,
        event: Option<String>,
    },
    VersionConflict {
        id: String,
        expected: u64,
        actual: u64,
    },
    KeyReused,
    /// Any other engine error (never predicted).
    Other(String),
}

pub(super) type ModelResult = Result<OutcomeRecord, ModelError>;

/// An engine error in the model's terms.
pub(super) fn model_error(error: Error) -> ModelError {
    match error {
        Error::InvalidInput { field, .. } => ModelError::InvalidInput(field),
        Error::NotFound { id, .. } => ModelError::NotFound { id },
        Error::InvalidTransition {
            id,
            from,
            to,
            event,
        } => ModelError::InvalidTransition {
            id,
            from,
            to,
            event,
        },
        Error::VersionConflict {
            id,
            expected,
            actual,
            ..
        } => ModelError::VersionConflict {
            id,
            expected,
            actual,
        },
        Error::KeyReused { .. } => ModelError::KeyReused,
        other => ModelError::Other(format!("{}: {other}", other.kind())),
    }
}

/// JSON values equal as amounts: numbers by value (`1 == 1.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(name, x)| y.get(name).is_some_and(|y| same_json(x, y)))
        }
        _ => a == b,
    }
}

/// The same request, as a key sees it (everything but the key).
fn same_request(a: &Req, b: &Req) -> bool {
    a.id == b.id
        && a.target == b.target
        && a.expected == b.expected
        && a.actor == b.actor
        && match (&a.payload, &b.payload) {
            (Some(x), Some(y)) => same_json(x, y),
            (None, None) => true,
            _ => false,
        }
}

/// What a key remembers: its first request and that request's outcome.
#[derive(Clone, Debug)]
struct KeySeen {
    request: Req,
    outcome: OutcomeRecord,
}

/// SPEC sections 2 and 3 over one machine's declaration, in memory.
#[derive(Clone, Debug)]
pub(super) struct Model {
    initial: &'static str,
    pub(super) states: Vec<&'static str>,
    pub(super) events: Vec<&'static str>,
    /// (from, event, to)
    transitions: Vec<(&'static str, &'static str, &'static str)>,
    /// id -> history; the state is the last entry's `to`, the version its length.
    pub(super) entities: BTreeMap<String, Vec<HistoryRecord>>,
    keys: HashMap<Key, KeySeen>,
}

impl Model {
    pub(super) fn of<M: StateMachine>() -> Self {
        Model {
            initial: M::initial().name(),
            states: M::states().iter().map(|state| state.name()).collect(),
            events: M::Event::all().iter().map(|event| event.name()).collect(),
            transitions: M::transitions()
                .iter()
                .map(|t| (t.from.name(), t.event.name(), t.to.name()))
                .collect(),
            entities: BTreeMap::new(),
            keys: HashMap::new(),
        }
    }

    fn version(&self, id: &str) -> u64 {
        self.entities
            .get(id)
            .map_or(0, |history| history.len() as u64)
    }

    fn state(&self, id: &str) -> Option<String> {
        self.entities
            .get(id)
            .and_then(|history| history.last())
            .map(|entry| entry.to.clone())
    }

    /// Step 1: input limits (the defaults).
    fn check_input(req: &Req) -> Result<(), ModelError> {
        if req.id.is_empty() || req.id.len() > 1024 {
            return Err(ModelError::InvalidInput(InputField::Id));
        }
        if let Some(key) = &req.key {
            if key.key.is_empty() || key.key.len() > 255 {
                return Err(ModelError::InvalidInput(InputField::Key));
            }
        }
        Ok(())
    }

    /// Step 2: key replay. `Some` answers the request.
    fn replay(&self, req: &Req) -> Option<ModelResult> {
        let seen = self.keys.get(req.key.as_ref()?)?;
        if same_request(&seen.request, req) {
            let mut outcome = seen.outcome.clone();
            outcome.replay = true;
            Some(Ok(outcome))
        } else {
            Some(Err(ModelError::KeyReused))
        }
    }

    fn remember(&mut self, req: &Req, outcome: &OutcomeRecord) {
        if let Some(key) = &req.key {
            self.keys.insert(
                key.clone(),
                KeySeen {
                    request: req.clone(),
                    outcome: outcome.clone(),
                },
            );
        }
    }

    fn outcome(id: &str, state: &str, version: u64, at: u64) -> OutcomeRecord {
        OutcomeRecord {
            id: id.to_owned(),
            state: state.to_owned(),
            version,
            applied: false,
            from: None,
            event: None,
            replay: false,
            at,
        }
    }

    /// Runs a request at time `at`.
    pub(super) fn run(&mut self, req: &Req, at: u64) -> ModelResult {
        Model::check_input(req)?;
        if let Some(answer) = self.replay(req) {
            return answer;
        }
        match &req.target {
            None => Ok(self.create(req, at)),
            Some(target) => self.apply(req, target, at),
        }
    }

    /// SPEC section 2: an existing entity is a no-op; otherwise version 1
    /// in the initial state.
    fn create(&mut self, req: &Req, at: u64) -> OutcomeRecord {
        if let Some(state) = self.state(&req.id) {
            let outcome = Model::outcome(&req.id, &state, self.version(&req.id), at);
            self.remember(req, &outcome);
            return outcome;
        }
        self.entities.insert(
            req.id.clone(),
            vec![HistoryRecord {
                version: 1,
                from: None,
                to: self.initial.to_owned(),
                event: None,
                key: req.key.as_ref().map(|key| key.key.clone()),
                payload: req.payload.clone(),
                actor: req.actor.clone(),
                at,
            }],
        );
        let outcome = OutcomeRecord {
            applied: true,
            ..Model::outcome(&req.id, self.initial, 1, at)
        };
        self.remember(req, &outcome);
        outcome
    }

    /// SPEC section 3, steps 3 to 9 (no guards).
    fn apply(&mut self, req: &Req, target: &Target, at: u64) -> ModelResult {
        // 3. Existence.
        let Some(current) = self.state(&req.id) else {
            return Err(ModelError::NotFound { id: req.id.clone() });
        };
        let version = self.version(&req.id);
        // 4. Target: a state, or the event's target from here; an event
        // whose target is the current state counts as reached.
        let (to, event) = match target {
            Target::To(state) => ((*state).to_owned(), None),
            Target::Fire(event) => {
                let declared = self
                    .transitions
                    .iter()
                    .find(|(from, e, _)| *from == current && e == event);
                let reached = self
                    .transitions
                    .iter()
                    .any(|(_, e, to)| e == event && *to == current);
                match declared {
                    Some((_, _, to)) => ((*to).to_owned(), Some((*event).to_owned())),
                    None if reached => (current.clone(), Some((*event).to_owned())),
                    None => {
                        return Err(ModelError::InvalidTransition {
                            id: req.id.clone(),
                            from: current,
                            to: None,
                            event: Some((*event).to_owned()),
                        })
                    }
                }
            }
        };
        // 5. Already reached: a no-op; the expected version is not checked.
        if to == current {
            let outcome = Model::outcome(&req.id, &current, version, at);
            self.remember(req, &outcome);
            return Ok(outcome);
        }
        // 6. Expected version.
        if let Some(expected) = req.expected {
            if expected != version {
                return Err(ModelError::VersionConflict {
                    id: req.id.clone(),
                    expected,
                    actual: version,
                });
            }
        }
        // 7. Legality.
        if !self
            .transitions
            .iter()
            .any(|(from, _, t)| *from == current && *t == to)
        {
            return Err(ModelError::InvalidTransition {
                id: req.id.clone(),
                from: current,
                to: Some(to),
                event,
            });
        }
        // 9. Apply.
        let entry = HistoryRecord {
            version: version + 1,
            from: Some(current.clone()),
            to: to.clone(),
            event: event.clone(),
            key: req.key.as_ref().map(|key| key.key.clone()),
            payload: req.payload.clone(),
            actor: req.actor.clone(),
            at,
        };
        if let Some(history) = self.entities.get_mut(&req.id) {
            history.push(entry);
        }
        let outcome = OutcomeRecord {
            id: req.id.clone(),
            state: to,
            version: version + 1,
            applied: true,
            from: Some(current),
            event,
            replay: false,
            at,
        };
        self.remember(req, &outcome);
        Ok(outcome)
    }

    /// The request an operation stands for, given the model's state.
    fn resolve(&self, op: &Op) -> Option<Req> {
        let id_of = |id: usize| IDS.get(id).copied().unwrap_or("").to_owned();
        let key_of = |key: &Option<KeySel>| {
            key.as_ref().map(|selection| Key {
                key: KEYS.get(selection.key).copied().unwrap_or("").to_owned(),
                scope: selection.scope.map(|scope| SCOPES[scope].to_owned()),
            })
        };
        let actor_of = |actor: &Option<usize>| actor.map(|actor| ACTORS[actor].to_owned());
        match op {
            Op::Create {
                id,
                key,
                payload,
                actor,
            } => Some(Req {
                id: id_of(*id),
                target: None,
                key: key_of(key),
                expected: None,
                payload: payload_of(*payload),
                actor: actor_of(actor),
            }),
            Op::Apply {
                id,
                target,
                key,
                expect,
                payload,
                actor,
            } => {
                let id = id_of(*id);
                let current = self.version(&id);
                let target = match target {
                    TargetSel::Fire(i) if !self.events.is_empty() => {
                        Target::Fire(self.events[i % self.events.len()])
                    }
                    TargetSel::Fire(i) | TargetSel::To(i) => {
                        Target::To(self.states[i % self.states.len()])
                    }
                };
                let expected = match expect {
                    ExpectSel::None => None,
                    ExpectSel::Right => Some(current),
                    ExpectSel::Wrong(delta) => Some(current.saturating_add_signed(*delta)),
                };
                Some(Req {
                    id,
                    target: Some(target),
                    key: key_of(key),
                    expected,
                    payload: payload_of(*payload),
                    actor: actor_of(actor),
                })
            }
            Op::Repeat | Op::Concurrent | Op::Reopen => None,
        }
    }
}

// ---------------------------------------------------------------------------
// What the model is checked against
// ---------------------------------------------------------------------------

/// What one entity looks like in storage.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stored {
    pub(super) histories: BTreeMap<String, Vec<HistoryRecord>>,
    /// Ids per state, from the state index.
    pub(super) index: StateIndex,
    /// The outbox events of the machine, in commit order.
    pub(super) outbox: Vec<OutboxEvent>,
}

/// The system the model is checked against: the engine, or (in this
/// module's tests) a broken double of it.
pub(super) trait UnderTest: Sized {
    /// Opens a fresh one.
    fn start(dir: &Path) -> Result<Self, String>;
    /// Runs a request.
    fn run(&self, req: &Req) -> Result<OutcomeRecord, ModelError>;
    /// Runs the same request twice at once.
    fn run_twice_at_once(&self, req: &Req) -> [Result<OutcomeRecord, ModelError>; 2];
    /// Moves the clock.
    fn advance(&self);
    /// Reads what is stored.
    fn stored(&self) -> Result<Stored, String>;
    /// Closes and opens the database again.
    fn reopen(self, dir: &Path) -> Result<Self, String>;
}

/// The engine, on a temporary on-disk database with a manual clock.
pub(super) struct EngineUnderTest<M: StateMachine> {
    engine: Engine,
    machine: Machine<M>,
    clock: ManualClock,
}

impl<M: StateMachine> EngineUnderTest<M> {
    fn open(dir: &Path, clock: ManualClock) -> Result<Self, String> {
        let started = std::time::Instant::now();
        loop {
            let opened = Engine::builder()
                .durability(Durability::Buffered)
                .clock(clock.clone())
                .timers(false)
                .open(dir);
            match opened {
                Ok(engine) => {
                    let machine = engine
                        .machine::<M>()
                        .map_err(|error| format!("installing the machine: {error}"))?;
                    return Ok(EngineUnderTest {
                        engine,
                        machine,
                        clock,
                    });
                }
                // sled lets go of its lock a moment after the last handle drops.
                Err(Error::Locked { .. }) if started.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(format!("opening the database: {error}")),
            }
        }
    }
}

fn typed_request<M: StateMachine>(req: &Req, target: &Target) -> Result<Request<M>, ModelError> {
    let unknown = |name: &str| ModelError::Other(format!("{name:?} does not resolve"));
    let mut request = match target {
        Target::To(state) => Request::<M>::to(M::from_name(state).ok_or_else(|| unknown(state))?),
        Target::Fire(event) => {
            Request::fire(M::Event::from_name(event).ok_or_else(|| unknown(event))?)
        }
    };
    if let Some(key) = &req.key {
        request = request.key(key.key.clone());
        if let Some(scope) = &key.scope {
            request = request.scope(scope.clone());
        }
    }
    if let Some(expected) = req.expected {
        request = request.expect_version(expected);
    }
    if let Some(payload) = &req.payload {
        request = request.payload(payload.clone());
    }
    if let Some(actor) = &req.actor {
        request = request.actor(actor.clone());
    }
    Ok(request)
}

fn run_on<M: StateMachine>(machine: &Machine<M>, req: &Req) -> Result<OutcomeRecord, ModelError> {
    let outcome = match &req.target {
        None => {
            let mut create = Create::new();
            if let Some(key) = &req.key {
                create = create.key(key.key.clone());
                if let Some(scope) = &key.scope {
                    create = create.scope(scope.clone());
                }
            }
            if let Some(payload) = &req.payload {
                create = create.payload(payload.clone());
            }
            if let Some(actor) = &req.actor {
                create = create.actor(actor.clone());
            }
            machine.create_request(&req.id, create)
        }
        Some(target) => machine.apply(&req.id, typed_request::<M>(req, target)?),
    };
    outcome
        .map(|outcome| outcome.to_record())
        .map_err(model_error)
}

impl<M: StateMachine> UnderTest for EngineUnderTest<M> {
    fn start(dir: &Path) -> Result<Self, String> {
        EngineUnderTest::open(dir, ManualClock::new(START_MS))
    }

    fn run(&self, req: &Req) -> Result<OutcomeRecord, ModelError> {
        run_on(&self.machine, req)
    }

    fn run_twice_at_once(&self, req: &Req) -> [Result<OutcomeRecord, ModelError>; 2] {
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            let both = [(); 2].map(|()| {
                scope.spawn(|| {
                    barrier.wait();
                    run_on(&self.machine, req)
                })
            });
            both.map(|thread| {
                thread.join().unwrap_or_else(|_| {
                    Err(ModelError::Other(
                        "the request's thread panicked".to_owned(),
                    ))
                })
            })
        })
    }

    fn advance(&self) {
        self.clock.advance(Duration::from_millis(1));
    }

    fn stored(&self) -> Result<Stored, String> {
        let failed = |what: &str, error: Error| format!("reading {what}: {error}");
        let named = self.machine.named();
        let mut histories = BTreeMap::new();
        for id in IDS {
            let record = named.get(id).map_err(|e| failed("a record", e))?;
            let history = named.history(id).map_err(|e| failed("a history", e))?;
            // The typed views must read what the named ones do.
            let typed = self
                .machine
                .history(id)
                .map_err(|e| failed("a typed history", e))?;
            if typed.len() != history.len() {
                return Err(format!(
                    "{id}: the typed history has {} entries, the named one {}",
                    typed.len(),
                    history.len()
                ));
            }
            match (record, history.last()) {
                (None, None) => continue,
                (Some(record), Some(last)) => {
                    if record.version != history.len() as u64 || record.state != last.to {
                        return Err(format!(
                            "{id}: the record (state {:?}, version {}) disagrees with its history (last state {:?}, {} entries)",
                            record.state,
                            record.version,
                            last.to,
                            history.len()
                        ));
                    }
                    let entity = self
                        .machine
                        .get(id)
                        .map_err(|e| failed("a typed record", e))?;
                    if entity.map(|entity| (entity.state.name(), entity.version))
                        != Some((record.state.as_str(), record.version))
                    {
                        return Err(format!("{id}: the typed record differs from the named one"));
                    }
                }
                (record, _) => {
                    return Err(format!(
                        "{id}: record {record:?} with {} history entries",
                        history.len()
                    ))
                }
            }
            histories.insert(id.to_owned(), history);
        }
        let mut index = BTreeMap::new();
        for state in M::states() {
            let ids = self
                .machine
                .in_state(*state)
                .map_err(|e| failed("the state index", e))?;
            if !ids.is_empty() {
                index.insert(state.name().to_owned(), ids);
            }
        }
        let counted: u64 = self
            .machine
            .count_by_state()
            .map_err(|e| failed("counts by state", e))?
            .iter()
            .map(|(_, count)| count)
            .sum();
        let indexed: usize = index.values().map(Vec::len).sum();
        if counted != indexed as u64 {
            return Err(format!(
                "count_by_state counts {counted} entities, in_state lists {indexed}"
            ));
        }
        self.engine.flush().map_err(|e| failed("(flushing)", e))?;
        let outbox = self
            .engine
            .outbox()
            .pending(usize::MAX)
            .map_err(|e| failed("the outbox", e))?
            .into_iter()
            .filter(|event| event.machine == M::machine_name())
            .collect();
        Ok(Stored {
            histories,
            index,
            outbox,
        })
    }

    fn reopen(self, dir: &Path) -> Result<Self, String> {
        let clock = self.clock.clone();
        drop(self);
        EngineUnderTest::open(dir, clock)
    }
}

// ---------------------------------------------------------------------------
// Running sequences
// ---------------------------------------------------------------------------

/// Ids per state name.
type StateIndex = BTreeMap<String, Vec<String>>;

/// What the model says is stored: the state index, and one outbox event
/// `(id, version)` per change.
fn expected_storage(model: &Model) -> (StateIndex, Vec<(String, u64)>) {
    let mut index: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut events = Vec::new();
    for (id, history) in &model.entities {
        if let Some(last) = history.last() {
            index.entry(last.to.clone()).or_default().push(id.clone());
        }
        events.extend(history.iter().map(|entry| (id.clone(), entry.version)));
    }
    events.sort();
    (index, events)
}

/// Compares storage with the model; `Err` says what differs.
fn compare_storage(model: &Model, stored: &Stored) -> Result<(), String> {
    if stored.histories != model.entities {
        return Err(format!(
            "stored histories differ from the model's:\n  stored: {:#?}\n  model:  {:#?}",
            stored.histories, model.entities
        ));
    }
    let (index, events) = expected_storage(model);
    if stored.index != index {
        return Err(format!(
            "the state index differs from the model's: stored {:?}, model {index:?}",
            stored.index
        ));
    }
    let mut seen: Vec<(String, u64)> = stored
        .outbox
        .iter()
        .map(|event| (event.id.clone(), event.version))
        .collect();
    // Per entity, in version order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for event in &stored.outbox {
        let previous = last.insert(event.id.as_str(), event.version).unwrap_or(0);
        if event.version <= previous {
            return Err(format!(
                "outbox: {:?} v{} comes after v{previous}",
                event.id, event.version
            ));
        }
        let entry = model
            .entities
            .get(&event.id)
            .and_then(|history| history.get((event.version as usize).wrapping_sub(1)));
        let matches = entry.is_some_and(|entry| {
            entry.to == event.to
                && entry.from == event.from
                && entry.event == event.event
                && entry.payload == event.payload
                && entry.key == event.key
        });
        if !matches {
            return Err(format!(
                "outbox event {:?} v{} does not match the model's history entry {entry:?}",
                event.id, event.version
            ));
        }
    }
    seen.sort();
    if seen != events {
        return Err(format!(
            "the outbox holds {seen:?}, the model one event per change: {events:?}"
        ));
    }
    Ok(())
}

/// Runs one sequence; `Err` is the transcript and what differed.
fn run_sequence<S: UnderTest>(ops: &[Op], model: &mut Model) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|error| format!("a temporary directory: {error}"))?;
    let mut system = Some(S::start(dir.path())?);
    let mut transcript: Vec<String> = Vec::new();
    let mut last: Option<Req> = None;
    let mut at = START_MS;
    let fail = |transcript: &[String], what: String| {
        let mut text = String::from("the sequence, as run:\n");
        for line in transcript {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&what);
        text
    };
    for (step, op) in ops.iter().enumerate() {
        let Some(current) = system.take() else {
            return Err(fail(&transcript, "the engine was lost".to_owned()));
        };
        let current = match op {
            Op::Reopen => {
                transcript.push(format!("{step}: reopen the database"));
                current
                    .reopen(dir.path())
                    .map_err(|e| fail(&transcript, e))?
            }
            Op::Concurrent => {
                let Some(req) = last.clone().filter(|req| req.key.is_some()) else {
                    system = Some(current);
                    continue;
                };
                transcript.push(format!("{step}: {req}, twice at once"));
                let expected = model.run(&req, at);
                let answers = current.run_twice_at_once(&req);
                let replayed = expected.clone().map(|mut outcome| {
                    outcome.replay = true;
                    outcome
                });
                let ok = match &expected {
                    // One is the first answer, the other its replay; or both
                    // replays, when the key had been used already.
                    Ok(first) if !first.replay => {
                        (answers[0] == expected && answers[1] == replayed)
                            || (answers[1] == expected && answers[0] == replayed)
                    }
                    _ => answers.iter().all(|answer| *answer == expected),
                };
                if !ok {
                    return Err(fail(
                        &transcript,
                        format!(
                            "step {step}: the engine answered {answers:?}; the model expects {expected:?} once and its replay once (or twice the same error or replay)"
                        ),
                    ));
                }
                current
            }
            _ => {
                let req = match op {
                    Op::Repeat => match &last {
                        Some(req) => req.clone(),
                        None => {
                            system = Some(current);
                            continue;
                        }
                    },
                    _ => match model.resolve(op) {
                        Some(req) => req,
                        None => {
                            system = Some(current);
                            continue;
                        }
                    },
                };
                transcript.push(format!("{step}: {req}"));
                let actual = current.run(&req);
                let expected = model.run(&req, at);
                if actual != expected {
                    return Err(fail(
                        &transcript,
                        format!(
                            "step {step}: the engine answered\n    {actual:?}\n  the model expects\n    {expected:?}"
                        ),
                    ));
                }
                last = Some(req);
                current
            }
        };
        let stored = current.stored().map_err(|e| fail(&transcript, e))?;
        compare_storage(model, &stored)
            .map_err(|e| fail(&transcript, format!("after step {step}: {e}")))?;
        current.advance();
        at += 1;
        system = Some(current);
    }
    Ok(())
}

/// Runs the property test of `M` against `S`; panics with the minimal
/// failing sequence.
pub(super) fn run_check<M: StateMachine, S: UnderTest>(config: &CheckConfig) {
    let mut proptest_config = Config {
        cases: config.cases,
        max_shrink_iters: 1000,
        failure_persistence: None,
        ..Config::default()
    };
    if let Some(seed) = config.seed {
        proptest_config.rng_seed = RngSeed::Fixed(seed);
    }
    let mut runner = TestRunner::new(proptest_config);
    let steps = proptest::collection::vec(op_strategy(), 1..=config.steps.max(1));
    let result = runner.run(&steps, |ops| {
        let mut model = Model::of::<M>();
        run_sequence::<S>(&ops, &mut model).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "check_machine::<{}>: the engine disagrees with the reference model of the spec \
             (machine {:?}).\nMinimal failing sequence ({} operations, shrunk; a repeated \
             line is a retry of the request before it):\n{reason}",
            std::any::type_name::<M>(),
            M::machine_name(),
            ops.len(),
        ),
        Err(TestError::Abort(reason)) => panic!(
            "check_machine::<{}>: the property test stopped: {reason}",
            std::any::type_name::<M>()
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The checker must pass on the engine and fail on engines that break
    //! the spec: each double below wraps the real engine and breaks one rule.

    use super::*;

    #[derive(crate::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[machine(name = "order", initial = Draft, events = OrderEvent)]
    enum OrderState {
        #[on(submit = Submitted, cancel = Cancelled)]
        Draft,
        #[on(pay = Paid, cancel = Cancelled)]
        Submitted,
        #[on(ship = Shipped, refund = Refunded)]
        Paid,
        #[terminal]
        Shipped,
        #[terminal]
        Cancelled,
        #[terminal]
        Refunded,
    }

    /// `escalate` is declared from `open` and again from `in_progress`:
    /// applying it twice is a second, legal transition.
    #[derive(crate::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[machine(name = "ticket", initial = Open, events = TicketEvent)]
    enum Ticket {
        #[on(escalate = InProgress, close = Closed)]
        Open,
        #[on(escalate = Escalated, resolve = Resolved)]
        InProgress,
        #[on(resolve = Resolved)]
        Escalated,
        #[on(reopen = Open, close = Closed)]
        Resolved,
        #[terminal]
        Closed,
    }

    /// A broken engine: `Break` rewrites each request before the real
    /// engine runs it, or runs it again after.
    struct Broken<M: StateMachine, B: Break> {
        inner: EngineUnderTest<M>,
        breaks: std::marker::PhantomData<B>,
    }

    trait Break {
        fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult;
    }

    impl<M: StateMachine, B: Break> UnderTest for Broken<M, B> {
        fn start(dir: &Path) -> Result<Self, String> {
            Ok(Broken {
                inner: EngineUnderTest::start(dir)?,
                breaks: std::marker::PhantomData,
            })
        }

        fn run(&self, req: &Req) -> ModelResult {
            B::run(&self.inner, req)
        }

        fn run_twice_at_once(&self, req: &Req) -> [ModelResult; 2] {
            [self.run(req), self.run(req)]
        }

        fn advance(&self) {
            self.inner.advance();
        }

        fn stored(&self) -> Result<Stored, String> {
            self.inner.stored()
        }

        fn reopen(self, dir: &Path) -> Result<Self, String> {
            Ok(Broken {
                inner: self.inner.reopen(dir)?,
                breaks: std::marker::PhantomData,
            })
        }
    }

    /// Applies a retried keyed transition again: the replay answer is
    /// returned, but the request also runs once more, without its key.
    struct AppliesReplaysAgain;

    impl Break for AppliesReplaysAgain {
        fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult {
            let answer = inner.run(req);
            if matches!(&answer, Ok(outcome) if outcome.replay) && req.target.is_some() {
                let again = Req {
                    key: None,
                    ..req.clone()
                };
                let _ = inner.run(&again);
            }
            answer
        }
    }

    /// Ignores expected versions.
    struct IgnoresExpectedVersions;

    impl Break for IgnoresExpectedVersions {
        fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult {
            inner.run(&Req {
                expected: None,
                ..req.clone()
            })
        }
    }

    /// Forgets idempotency keys.
    struct ForgetsKeys;

    impl Break for ForgetsKeys {
        fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult {
            inner.run(&Req {
                key: None,
                ..req.clone()
            })
        }
    }

    /// Runs the checker on `S` and returns its panic message.
    fn failure_of<M: StateMachine, S: UnderTest>(config: &CheckConfig) -> String {
        let panic = std::panic::catch_unwind(|| run_check::<M, S>(config))
            .expect_err("the checker must fail on a broken engine");
        panic
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "(not a string)".to_owned())
    }

    fn config() -> CheckConfig {
        CheckConfig::default().cases(64).steps(30).seed(7)
    }

    #[test]
    fn the_engine_passes() {
        run_check::<OrderState, EngineUnderTest<OrderState>>(&CheckConfig::default().cases(12));
        run_check::<Ticket, EngineUnderTest<Ticket>>(&CheckConfig::default().cases(12));
    }

    #[test]
    fn an_engine_that_applies_a_replay_again_fails() {
        let message = failure_of::<Ticket, Broken<Ticket, AppliesReplaysAgain>>(&config());
        assert!(message.contains("Minimal failing sequence"), "{message}");
        assert!(message.contains("escalate"), "{message}");
    }

    #[test]
    fn an_engine_that_ignores_expected_versions_fails() {
        let message =
            failure_of::<OrderState, Broken<OrderState, IgnoresExpectedVersions>>(&config());
        assert!(message.contains("VersionConflict"), "{message}");
        assert!(message.contains("the sequence, as run:"), "{message}");
    }

    #[test]
    fn an_engine_that_forgets_keys_fails() {
        let message = failure_of::<OrderState, Broken<OrderState, ForgetsKeys>>(&config());
        assert!(message.contains("Minimal failing sequence"), "{message}");
    }

    #[test]
    fn a_wrong_model_fails_the_engine() {
        // A model that (wrongly) checks the expected version before the
        // "already reached" rule: the engine is right, the check says so.
        let mut model = Model::of::<OrderState>();
        let dir = tempfile::tempdir().unwrap();
        let engine = EngineUnderTest::<OrderState>::start(dir.path()).unwrap();
        let create = model
            .resolve(&Op::Create {
                id: 0,
                key: None,
                payload: None,
                actor: None,
            })
            .unwrap();
        assert_eq!(engine.run(&create), model.run(&create, START_MS));
        let noop = Req {
            target: Some(Target::To("draft")),
            expected: Some(7),
            ..create
        };
        let engine_says = engine.run(&noop);
        assert!(
            matches!(&engine_says, Ok(outcome) if !outcome.applied),
            "{engine_says:?}"
        );
        let wrong_model_says: ModelResult = Err(ModelError::VersionConflict {
            id: "e-0".into(),
            expected: 7,
            actual: 1,
        });
        assert_ne!(engine_says, wrong_model_says);
        assert_eq!(engine_says, model.run(&noop, START_MS));
    }
}
