//! Reference-model property test: random sequences of requests over two
//! machines and a few entities, run against the engine and against a plain
//! in-memory model of SPEC sections 2 and 3 written here (it does not call the
//! engine's decision code). After every step the outcome or error must equal
//! the model's, and the stored records, histories, state index and outbox
//! must equal the model's state.

mod common;

use std::collections::{BTreeMap, HashMap};

use idemflow::{
    Durability, Engine, Error, HistoryRecord, InputField, Machine, MachineEvent, OutboxEvent,
    OutcomeRecord, Request, StateMachine,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use common::backend::{Backend, TestDb};
use common::{check_invariants, OrderState, Ticket};

/// Entity ids; index `IDS.len()` is the empty (invalid) id.
const IDS: [&str; 4] = ["e-0", "e-1", "e-2", "e-3"];
/// Idempotency keys; index `KEYS.len()` is the empty (invalid) key.
const KEYS: [&str; 4] = ["k-0", "k-1", "k-2", "k-3"];
const ACTORS: [&str; 2] = ["alice", "bob"];
/// The default payload limit.
const MAX_PAYLOAD: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum TargetSel {
    /// A state, by index (modulo the machine's number of states).
    To(usize),
    /// An event, by index (modulo the machine's number of events).
    Fire(usize),
}

#[derive(Clone, Debug)]
enum ExpectSel {
    None,
    /// The entity's current version (as the model knows it).
    Right,
    /// The current version plus this (non-zero) offset, at least 0.
    Wrong(i64),
}

#[derive(Clone, Debug)]
enum PayloadSel {
    Small(u8),
    /// Larger than the default 64 KiB limit.
    Big,
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        machine: usize,
        id: usize,
        payload: Option<PayloadSel>,
        actor: Option<usize>,
    },
    Apply {
        machine: usize,
        id: usize,
        target: TargetSel,
        key: Option<usize>,
        expect: ExpectSel,
        payload: Option<PayloadSel>,
        actor: Option<usize>,
    },
    /// The exact previous request again.
    Repeat,
    /// Drop every handle and the engine, open the database again.
    Reopen,
}

fn id_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![30 => 0..IDS.len(), 1 => Just(IDS.len())]
}

fn payload_strategy() -> impl Strategy<Value = Option<PayloadSel>> {
    prop_oneof![
        12 => Just(None),
        8 => (0u8..3).prop_map(|n| Some(PayloadSel::Small(n))),
        1 => Just(Some(PayloadSel::Big)),
    ]
}

fn actor_strategy() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![3 => Just(None), 1 => (0..ACTORS.len()).prop_map(Some)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let create = (
        0..2usize,
        id_strategy(),
        payload_strategy(),
        actor_strategy(),
    )
        .prop_map(|(machine, id, payload, actor)| Op::Create {
            machine,
            id,
            payload,
            actor,
        });
    let target = prop_oneof![
        (0..8usize).prop_map(TargetSel::To),
        (0..8usize).prop_map(TargetSel::Fire),
    ];
    let key = prop_oneof![
        10 => Just(None),
        9 => (0..KEYS.len()).prop_map(Some),
        1 => Just(Some(KEYS.len())),
    ];
    let expect = prop_oneof![
        2 => Just(ExpectSel::None),
        1 => Just(ExpectSel::Right),
        1 => prop_oneof![Just(-2i64), Just(-1), Just(1), Just(2)].prop_map(ExpectSel::Wrong),
    ];
    let apply = (
        0..2usize,
        id_strategy(),
        target,
        key,
        expect,
        payload_strategy(),
        actor_strategy(),
    )
        .prop_map(
            |(machine, id, target, key, expect, payload, actor)| Op::Apply {
                machine,
                id,
                target,
                key,
                expect,
                payload,
                actor,
            },
        );
    prop_oneof![
        5 => create,
        14 => apply,
        4 => Just(Op::Repeat),
        1 => Just(Op::Reopen),
    ]
}

// ---------------------------------------------------------------------------
// Resolved requests
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Target {
    To(&'static str),
    Fire(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Create,
    Apply {
        target: Target,
        key: Option<String>,
        expected: Option<u64>,
    },
}

/// A request with every field decided, ready to run on the engine and the model.
#[derive(Clone, Debug, PartialEq)]
struct Req {
    machine: usize,
    id: String,
    kind: Kind,
    payload: Option<Value>,
    actor: Option<String>,
}

fn payload_of(selection: &Option<PayloadSel>) -> Option<Value> {
    selection.as_ref().map(|p| match p {
        PayloadSel::Small(n) => json!({"n": n, "note": "x"}),
        PayloadSel::Big => json!("x".repeat(MAX_PAYLOAD)),
    })
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// What a key remembers: the request it was first used for (everything but
/// the key) and that request's outcome.
#[derive(Clone, Debug)]
struct KeySeen {
    request: (String, Target, Option<u64>, Option<Value>, Option<String>),
    outcome: OutcomeRecord,
}

#[derive(Clone, Debug)]
struct MachineModel {
    name: &'static str,
    initial: &'static str,
    states: Vec<&'static str>,
    events: Vec<&'static str>,
    /// (from, event, to)
    transitions: Vec<(&'static str, &'static str, &'static str)>,
    /// id -> history; the state is the last entry's `to`, the version its length.
    entities: BTreeMap<String, Vec<HistoryRecord>>,
    keys: HashMap<String, KeySeen>,
}

/// An error as the model predicts it (every field the engine reports).
#[derive(Clone, Debug, PartialEq)]
enum ModelError {
    InvalidInput(InputField),
    NotFound {
        machine: String,
        id: String,
    },
    InvalidTransition {
        id: String,
        from: String,
        to: Option<String>,
        event: Option<String>,
    },
    VersionConflict {
        machine: String,
        id: String,
        expected: u64,
        actual: u64,
    },
    KeyReused {
        machine: String,
        key: String,
    },
}

fn model_error(error: Error) -> ModelError {
    match error {
        Error::InvalidInput { field, .. } => ModelError::InvalidInput(field),
        Error::NotFound { machine, id } => ModelError::NotFound { machine, id },
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
            machine,
            id,
            expected,
            actual,
        } => ModelError::VersionConflict {
            machine,
            id,
            expected,
            actual,
        },
        Error::KeyReused { machine, key } => ModelError::KeyReused { machine, key },
        other => panic!("unexpected engine error: {other}"),
    }
}

type ModelResult = Result<OutcomeRecord, ModelError>;

impl MachineModel {
    fn of<M: StateMachine>() -> Self {
        MachineModel {
            name: M::machine_name(),
            initial: M::initial().name(),
            states: M::states().iter().map(|s| s.name()).collect(),
            events: M::Event::all().iter().map(|e| e.name()).collect(),
            transitions: M::transitions()
                .iter()
                .map(|t| (t.from.name(), t.event.name(), t.to.name()))
                .collect(),
            entities: BTreeMap::new(),
            keys: HashMap::new(),
        }
    }

    fn version(&self, id: &str) -> u64 {
        self.entities.get(id).map_or(0, |h| h.len() as u64)
    }

    fn state(&self, id: &str) -> Option<&str> {
        self.entities
            .get(id)
            .and_then(|h| h.last())
            .map(|e| e.to.as_str())
    }

    fn check_input(id: &str, key: Option<&str>, payload: &Option<Value>) -> Result<(), ModelError> {
        if id.is_empty() || id.len() > 1024 {
            return Err(ModelError::InvalidInput(InputField::Id));
        }
        if key.is_some_and(|k| k.is_empty() || k.len() > 255) {
            return Err(ModelError::InvalidInput(InputField::Key));
        }
        if payload
            .as_ref()
            .is_some_and(|p| serde_json::to_vec(p).unwrap().len() > MAX_PAYLOAD)
        {
            return Err(ModelError::InvalidInput(InputField::Payload));
        }
        Ok(())
    }

    /// SPEC section 2: creation. `at` is the engine's timestamp of the answer.
    fn create(&mut self, req: &Req, at: u64) -> ModelResult {
        Self::check_input(&req.id, None, &req.payload)?;
        if let Some(history) = self.entities.get(&req.id) {
            let last = history.last().unwrap();
            return Ok(OutcomeRecord {
                id: req.id.clone(),
                state: last.to.clone(),
                version: history.len() as u64,
                applied: false,
                from: None,
                event: None,
                replay: false,
                at,
            });
        }
        self.entities.insert(
            req.id.clone(),
            vec![HistoryRecord {
                version: 1,
                from: None,
                to: self.initial.to_owned(),
                event: None,
                key: None,
                payload: req.payload.clone(),
                actor: req.actor.clone(),
                at,
            }],
        );
        Ok(OutcomeRecord {
            id: req.id.clone(),
            state: self.initial.to_owned(),
            version: 1,
            applied: true,
            from: None,
            event: None,
            replay: false,
            at,
        })
    }

    /// SPEC section 3, steps 1 to 9 (no guards are registered).
    fn apply(
        &mut self,
        req: &Req,
        target: &Target,
        key: Option<&str>,
        expected: Option<u64>,
        at: u64,
    ) -> ModelResult {
        // 1. Input.
        Self::check_input(&req.id, key, &req.payload)?;
        let fingerprint = (
            req.id.clone(),
            target.clone(),
            expected,
            req.payload.clone(),
            req.actor.clone(),
        );
        // 2. Key replay.
        if let Some(key) = key {
            if let Some(seen) = self.keys.get(key) {
                if seen.request == fingerprint {
                    let mut outcome = seen.outcome.clone();
                    outcome.replay = true;
                    return Ok(outcome);
                }
                return Err(ModelError::KeyReused {
                    machine: self.name.to_owned(),
                    key: key.to_owned(),
                });
            }
        }
        // 3. Existence.
        let Some(current) = self.state(&req.id).map(str::to_owned) else {
            return Err(ModelError::NotFound {
                machine: self.name.to_owned(),
                id: req.id.clone(),
            });
        };
        let version = self.version(&req.id);
        // 4. Target.
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
        // 5. Already reached: a no-op (the expected version is not checked).
        if to == current {
            let outcome = OutcomeRecord {
                id: req.id.clone(),
                state: current,
                version,
                applied: false,
                from: None,
                event: None,
                replay: false,
                at,
            };
            if let Some(key) = key {
                self.keys.insert(
                    key.to_owned(),
                    KeySeen {
                        request: fingerprint,
                        outcome: outcome.clone(),
                    },
                );
            }
            return Ok(outcome);
        }
        // 6. Expected version.
        if let Some(expected) = expected {
            if expected != version {
                return Err(ModelError::VersionConflict {
                    machine: self.name.to_owned(),
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
        let history = self.entities.get_mut(&req.id).unwrap();
        history.push(HistoryRecord {
            version: version + 1,
            from: Some(current.clone()),
            to: to.clone(),
            event: event.clone(),
            key: key.map(str::to_owned),
            payload: req.payload.clone(),
            actor: req.actor.clone(),
            at,
        });
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
        if let Some(key) = key {
            self.keys.insert(
                key.to_owned(),
                KeySeen {
                    request: fingerprint,
                    outcome: outcome.clone(),
                },
            );
        }
        Ok(outcome)
    }

    fn run(&mut self, req: &Req, at: u64) -> ModelResult {
        match &req.kind {
            Kind::Create => self.create(req, at),
            Kind::Apply {
                target,
                key,
                expected,
            } => self.apply(req, target, key.as_deref(), *expected, at),
        }
    }

    /// Whether firing `event` from `state` is declared (and so may apply again).
    fn fires_from(&self, state: &str, event: &str) -> bool {
        self.transitions
            .iter()
            .any(|(from, e, _)| *from == state && *e == event)
    }
}

struct Model {
    machines: [MachineModel; 2],
}

impl Model {
    fn new() -> Self {
        Model {
            machines: [
                MachineModel::of::<OrderState>(),
                MachineModel::of::<Ticket>(),
            ],
        }
    }

    fn resolve(&self, op: &Op) -> Option<Req> {
        let id_of = |id: usize| IDS.get(id).copied().unwrap_or("").to_owned();
        let actor_of = |actor: &Option<usize>| actor.map(|a| ACTORS[a].to_owned());
        match op {
            Op::Create {
                machine,
                id,
                payload,
                actor,
            } => Some(Req {
                machine: *machine,
                id: id_of(*id),
                kind: Kind::Create,
                payload: payload_of(payload),
                actor: actor_of(actor),
            }),
            Op::Apply {
                machine,
                id,
                target,
                key,
                expect,
                payload,
                actor,
            } => {
                let model = &self.machines[*machine];
                let id = id_of(*id);
                let current = model.version(&id);
                let target = match target {
                    TargetSel::To(i) => Target::To(model.states[i % model.states.len()]),
                    TargetSel::Fire(i) => Target::Fire(model.events[i % model.events.len()]),
                };
                let expected = match expect {
                    ExpectSel::None => None,
                    ExpectSel::Right => Some(current),
                    ExpectSel::Wrong(delta) => {
                        Some(u64::try_from((current as i64 + delta).max(0)).unwrap())
                    }
                };
                Some(Req {
                    machine: *machine,
                    id,
                    kind: Kind::Apply {
                        target,
                        key: key.map(|k| KEYS.get(k).copied().unwrap_or("").to_owned()),
                        expected,
                    },
                    payload: payload_of(payload),
                    actor: actor_of(actor),
                })
            }
            Op::Repeat | Op::Reopen => None,
        }
    }
}

// ---------------------------------------------------------------------------
// The engine side
// ---------------------------------------------------------------------------

struct Db {
    engine: Engine,
    orders: Machine<OrderState>,
    tickets: Machine<Ticket>,
}

impl Db {
    fn open(db: &TestDb, durability: Durability) -> Db {
        // A flaky `Locked` here on `Reopen` is the engine bug shown by
        // `reopening_right_after_closing_is_not_locked` (TestDb retries it).
        let engine = db.open(Engine::builder().durability(durability));
        Db {
            orders: engine.machine::<OrderState>().unwrap(),
            tickets: engine.machine::<Ticket>().unwrap(),
            engine,
        }
    }

    fn run(&self, req: &Req) -> Result<OutcomeRecord, Error> {
        match req.machine {
            0 => run_on(&self.orders, req),
            _ => run_on(&self.tickets, req),
        }
    }
}

fn run_on<M: StateMachine>(machine: &Machine<M>, req: &Req) -> Result<OutcomeRecord, Error> {
    match &req.kind {
        Kind::Create => machine
            .create_with(&req.id, req.payload.clone(), req.actor.clone())
            .map(|o| o.to_record()),
        Kind::Apply {
            target,
            key,
            expected,
        } => {
            let mut request = match target {
                Target::To(state) => Request::<M>::to(M::from_name(state).unwrap()),
                Target::Fire(event) => Request::fire(M::Event::from_name(event).unwrap()),
            };
            if let Some(key) = key {
                request = request.key(key.clone());
            }
            if let Some(expected) = expected {
                request = request.expect_version(*expected);
            }
            if let Some(payload) = &req.payload {
                request = request.payload(payload.clone());
            }
            if let Some(actor) = &req.actor {
                request = request.actor(actor.clone());
            }
            let outcome = machine.apply(&req.id, request)?;
            // The typed accessors agree with the record.
            let record = outcome.to_record();
            assert_eq!(outcome.was_noop(), !record.applied);
            assert_eq!(outcome.was_created(), record.applied && record.version == 1);
            Ok(record)
        }
    }
}

/// Compares every stored view of the engine with the model. Reading the
/// outbox flushes the database, so it is skipped right before a reopen: the
/// clean close must then persist `Buffered` writes on its own.
fn check_against_model(db: &Db, model: &Model, with_outbox: bool) {
    let outbox: Vec<OutboxEvent> = if with_outbox {
        {
            db.engine.flush().unwrap();
            db.engine.outbox().pending(usize::MAX).unwrap()
        }
    } else {
        Vec::new()
    };
    let ids: Vec<String> = IDS.iter().map(|s| (*s).to_owned()).collect();
    let order_histories =
        check_invariants(&db.orders, &ids, with_outbox.then_some(outbox.as_slice()));
    let ticket_histories =
        check_invariants(&db.tickets, &ids, with_outbox.then_some(outbox.as_slice()));
    for (histories, machine) in [
        (order_histories, &model.machines[0]),
        (ticket_histories, &model.machines[1]),
    ] {
        assert_eq!(
            histories, machine.entities,
            "{}: stored histories differ from the model",
            machine.name
        );
    }
    let total: usize = model
        .machines
        .iter()
        .flat_map(|m| m.entities.values())
        .map(Vec::len)
        .sum();
    if with_outbox {
        assert_eq!(outbox.len(), total, "outbox: one event per applied change");
    }
}

/// Whether repeating `req` right after it ran (with `result`) must change nothing.
fn repeat_is_idempotent(model: &Model, req: &Req, result: &ModelResult) -> bool {
    match (&req.kind, result) {
        (Kind::Apply { target, key, .. }, Ok(outcome)) if key.is_none() => match target {
            // An unkeyed event may be declared again from the state it led to
            // (ticket: escalate from open, then from in_progress): that applies.
            Target::Fire(event) => !model.machines[req.machine].fires_from(&outcome.state, event),
            Target::To(_) => true,
        },
        _ => true,
    }
}

fn run_sequence(backend: Backend, ops: &[Op], durability: Durability) {
    let Some(test_db) = TestDb::new(backend, "model") else {
        return;
    };
    let mut db = Some(Db::open(&test_db, durability));
    let mut model = Model::new();
    let mut last: Option<(Req, ModelResult)> = None;
    for (step, op) in ops.iter().enumerate() {
        let (req, repeat_of) = match op {
            Op::Reopen => {
                drop(db.take());
                db = Some(Db::open(&test_db, durability));
                check_against_model(db.as_ref().unwrap(), &model, true);
                continue;
            }
            Op::Repeat => match &last {
                Some((req, result)) => (req.clone(), Some(result.clone())),
                None => continue,
            },
            _ => (model.resolve(op).unwrap(), None),
        };
        let handle = db.as_ref().unwrap();
        let before = model.machines.clone().map(|m| m.entities);
        let actual = handle.run(&req).map_err(model_error);
        let at = actual.as_ref().map_or(0, |o| o.at);
        let expected = model.machines[req.machine].run(&req, at);
        assert_eq!(actual, expected, "step {step}: {op:?} resolved as {req:?}");

        if let Some(previous) = &repeat_of {
            // The model must agree with the spec's promise for a retry.
            if repeat_is_idempotent(&model, &req, previous) {
                let after = model.machines.clone().map(|m| m.entities);
                assert_eq!(
                    before, after,
                    "step {step}: a repeated request changed something"
                );
                match (&actual, previous) {
                    (Ok(now), Ok(then)) if now.replay => {
                        let mut original = then.clone();
                        original.replay = true;
                        assert_eq!(now, &original, "step {step}: replay != original outcome");
                    }
                    (Ok(now), Ok(_)) => {
                        assert!(!now.applied, "step {step}: a repeated request applied");
                    }
                    (Err(now), Err(then)) => assert_eq!(now, then, "step {step}"),
                    (now, then) => panic!("step {step}: repeat gave {now:?} after {then:?}"),
                }
            }
        }
        let reopen_next = matches!(ops.get(step + 1), Some(Op::Reopen));
        check_against_model(handle, &model, !reopen_next);
        last = Some((req, expected));
    }
}

/// The number of cases: `default`, or `PROPTEST_CASES` for a longer run.
fn cases_from_env(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases_from_env(64),
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_reference_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run_sequence(Backend::Sled, &ops, Durability::Buffered);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases_from_env(16),
        max_shrink_iters: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_reference_model_postgres(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run_sequence(Backend::Postgres, &ops, Durability::Buffered);
    }

    #[test]
    fn engine_matches_the_reference_model_postgres_immediate(ops in prop::collection::vec(op_strategy(), 1..25)) {
        run_sequence(Backend::Postgres, &ops, Durability::Immediate);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases_from_env(6),
        max_shrink_iters: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_reference_model_immediate(ops in prop::collection::vec(op_strategy(), 1..25)) {
        run_sequence(Backend::Sled, &ops, Durability::Immediate);
    }
}

/// A fixed sequence covering each rule once, so that a regression shows up
/// with a readable name even before the random cases find it.
fn scripted_sequence_covers_every_rule(db: &TestDb) {
    let apply = |machine, id, target, key: Option<usize>, expect| Op::Apply {
        machine,
        id,
        target,
        key,
        expect,
        payload: None,
        actor: None,
    };
    let ops = vec![
        apply(0, 0, TargetSel::To(1), Some(0), ExpectSel::None), // not found, keyed
        Op::Create {
            machine: 0,
            id: 0,
            payload: Some(PayloadSel::Small(1)),
            actor: Some(0),
        },
        Op::Repeat,                                               // create again: no-op
        apply(0, 0, TargetSel::To(1), Some(0), ExpectSel::Right), // applied, keyed
        Op::Repeat,                                               // replay
        Op::Reopen,
        Op::Repeat,                                               // replay after reopen
        apply(0, 0, TargetSel::To(2), Some(0), ExpectSel::Right), // key reused
        apply(0, 0, TargetSel::To(2), Some(1), ExpectSel::Wrong(-1)), // version conflict
        apply(0, 0, TargetSel::To(1), Some(1), ExpectSel::Wrong(5)), // no-op, no version check
        Op::Repeat,                                               // replay of the no-op
        apply(0, 0, TargetSel::Fire(2), None, ExpectSel::None),   // pay
        apply(0, 0, TargetSel::Fire(2), None, ExpectSel::None),   // pay again: reached
        apply(0, 0, TargetSel::Fire(0), None, ExpectSel::None),   // submit from paid: invalid
        apply(0, 0, TargetSel::To(0), None, ExpectSel::None),     // paid -> draft: invalid
        Op::Create {
            machine: 1,
            id: 0,
            payload: None,
            actor: None,
        },
        apply(1, 0, TargetSel::To(1), Some(0), ExpectSel::None), // same key, other machine
        apply(1, 0, TargetSel::Fire(1), None, ExpectSel::None), // escalate: in_progress -> escalated
        apply(1, 0, TargetSel::Fire(1), None, ExpectSel::None), // escalate again: reached
        apply(0, 1, TargetSel::To(1), Some(2), ExpectSel::None), // not found
        apply(0, 4, TargetSel::To(1), None, ExpectSel::None),   // empty id
        apply(0, 0, TargetSel::To(1), Some(4), ExpectSel::None), // empty key
        Op::Apply {
            machine: 0,
            id: 0,
            target: TargetSel::To(3),
            key: None,
            expect: ExpectSel::None,
            payload: Some(PayloadSel::Big),
            actor: None,
        },
    ];
    run_sequence(db.backend, &ops, Durability::Buffered);
}

backend_tests! {
    scripted_sequence_covers_every_rule,
}

/// Closing an engine (dropping every handle and the engine) and opening the
/// same directory again at once must work: the engine documents that "the
/// database closes when the last clone and every handle made from it are
/// dropped", and only *another* owner should get `Locked`.
///
/// sled releases its file lock on a background thread (a threadpool task that
/// wrote the last log buffer still holds the file when `drop` returns), so an
/// immediate reopen fails now and then with `Error::Locked` (about 1 in 100
/// to 1 in 400 tries here). The random model test above hits it as a flaky
/// `open the database: Locked` on `Reopen`. Runs up to 1500 tries or 8 s.
#[test]
fn reopening_right_after_closing_is_not_locked() {
    let started = std::time::Instant::now();
    let mut tries = 0;
    while tries < 1500 && started.elapsed() < std::time::Duration::from_secs(8) {
        tries += 1;
        let test_db = TestDb::new(Backend::Sled, "reopen").unwrap();
        let dir = test_db.dir().unwrap();
        {
            let db = Db::open(&test_db, Durability::Buffered);
            db.orders.create("o-1").unwrap();
            db.orders.fire("o-1", common::OrderEvent::Submit).unwrap();
        }
        let reopened = Engine::builder()
            .durability(Durability::Buffered)
            .open(&dir);
        match reopened {
            Ok(engine) => {
                let orders = engine.machine::<OrderState>().unwrap();
                let entity = orders.get("o-1").unwrap().expect("o-1 survives the close");
                assert_eq!((entity.state, entity.version), (OrderState::Submitted, 2));
            }
            Err(error) => panic!("try {tries}: reopening a closed database failed: {error:?}"),
        }
    }
}
