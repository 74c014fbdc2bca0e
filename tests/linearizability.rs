//! Linearizability (SPEC section 4): concurrent histories of creations,
//! transitions (by target and by event, with and without idempotency keys
//! and expected versions) and reads, recorded from 8 threads with a global
//! clock, are checked against a sequential model of SPEC section 3 by a
//! Wing-Gong search with memoization of (linearized set, model state).
//!
//! Operations on different entities are independent (keys are drawn per
//! entity), so each entity's history is checked on its own
//! (P-compositionality) and stays small enough for the search.
//!
//! The checker is shown to catch violations: histories of deliberately broken
//! in-memory engines (one that reads and writes in two steps, one that forgets
//! idempotency keys) are rejected, a correct in-memory engine is accepted.
//!
//! `IDEMFLOW_LIN_ROUNDS` sets the number of rounds per durability mode
//! (default 60 with `Buffered`, half as many with `Immediate`) and
//! `IDEMFLOW_LIN_SEED` the base seed (printed with any failure).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine, Error, MachineDef, NamedMachine, NamedRequest, OutcomeRecord};
use serde_json::json;

const THREADS: usize = 8;
const ENTITIES: usize = 3;
const OPS_PER_THREAD: usize = 24; // about 8 per entity and thread
const KEYS_PER_ENTITY: usize = 3;

/// A ring with a shortcut and a way back: `next` is declared from every
/// state (with a different target each time), `skip` and `reset` only from one.
fn ring() -> MachineDef {
    MachineDef::new("ring", "a")
        .state("a")
        .state("b")
        .state("c")
        .transition("a", "next", "b")
        .transition("b", "next", "c")
        .transition("c", "next", "a")
        .transition("a", "skip", "c")
        .transition("b", "reset", "a")
}

// ------------------------------------------------------------ operations

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    To(String),
    Fire(String),
}

/// What a request's fingerprint covers in the model: target, expected
/// version, payload (the key names the record; the id is implied).
type RequestPrint = (Target, Option<u64>, Option<u64>);

/// A transition request, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Req {
    target: Target,
    key: Option<String>,
    expect: Option<u64>,
    payload: Option<u64>,
}

impl Req {
    /// What the fingerprint covers: everything but the key (the id is
    /// implied, histories are per entity).
    fn fingerprint(&self) -> RequestPrint {
        (self.target.clone(), self.expect, self.payload)
    }

    fn named(&self) -> NamedRequest {
        let mut request = match &self.target {
            Target::To(state) => NamedRequest::to(state.clone()),
            Target::Fire(event) => NamedRequest::fire(event.clone()),
        };
        if let Some(key) = &self.key {
            request = request.key(key.clone());
        }
        if let Some(version) = self.expect {
            request = request.expect_version(version);
        }
        if let Some(amount) = self.payload {
            request = request.payload(json!({ "amount": amount }));
        }
        request
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Call {
    Create,
    Get,
    Apply(Req),
}

/// What a call returned, reduced to what the model predicts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Ret {
    Outcome(Out),
    Got(Option<(String, u64)>),
    NotFound,
    InvalidTransition {
        from: String,
        to: Option<String>,
        event: Option<String>,
    },
    VersionConflict {
        expected: u64,
        actual: u64,
    },
    KeyReused,
    /// Anything else: never linearizable.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Out {
    state: String,
    version: u64,
    applied: bool,
    replay: bool,
    from: Option<String>,
    event: Option<String>,
    at: u64,
}

impl From<OutcomeRecord> for Out {
    fn from(record: OutcomeRecord) -> Self {
        Out {
            state: record.state,
            version: record.version,
            applied: record.applied,
            replay: record.replay,
            from: record.from,
            event: record.event,
            at: record.at,
        }
    }
}

fn ret_of(result: idemflow::Result<OutcomeRecord>) -> Ret {
    match result {
        Ok(record) => Ret::Outcome(record.into()),
        Err(error) => ret_of_error(error),
    }
}

fn ret_of_error(error: Error) -> Ret {
    match error {
        Error::NotFound { .. } => Ret::NotFound,
        Error::InvalidTransition {
            from, to, event, ..
        } => Ret::InvalidTransition { from, to, event },
        Error::VersionConflict {
            expected, actual, ..
        } => Ret::VersionConflict { expected, actual },
        Error::KeyReused { .. } => Ret::KeyReused,
        other => Ret::Other(format!("{other:?}")),
    }
}

/// One operation of a history: its call, what it returned, and when it was
/// invoked and when it returned on the global clock.
#[derive(Clone, Debug)]
struct Operation {
    thread: usize,
    call: Call,
    ret: Ret,
    invoked: u64,
    returned: u64,
}

// ------------------------------------------------------------ the model

/// The sequential model of one entity and the keys used on it (SPEC section 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Model {
    entity: Option<(String, u64)>,
    keys: BTreeMap<String, (RequestPrint, Out)>,
}

impl Model {
    fn new() -> Self {
        Model {
            entity: None,
            keys: BTreeMap::new(),
        }
    }
}

/// What `call` returns on `model` and the model afterwards. `at` is the
/// timestamp the model gives a new outcome (the checker passes the observed one).
fn predict(def: &MachineDef, model: &Model, call: &Call, at: u64) -> (Ret, Model) {
    let mut next = model.clone();
    let outcome =
        |state: &str, version: u64, applied: bool, from: Option<&str>, event: Option<&str>| Out {
            state: state.to_owned(),
            version,
            applied,
            replay: false,
            from: from.map(str::to_owned),
            event: event.map(str::to_owned),
            at,
        };
    match call {
        Call::Get => (Ret::Got(model.entity.clone()), next),
        Call::Create => match &model.entity {
            None => {
                next.entity = Some((def.initial.clone(), 1));
                (
                    Ret::Outcome(outcome(&def.initial, 1, true, None, None)),
                    next,
                )
            }
            Some((state, version)) => (
                Ret::Outcome(outcome(state, *version, false, None, None)),
                next,
            ),
        },
        Call::Apply(req) => {
            // 2. Key replay.
            if let Some(key) = &req.key {
                if let Some((fingerprint, stored)) = model.keys.get(key) {
                    if *fingerprint == req.fingerprint() {
                        let mut replay = stored.clone();
                        replay.replay = true;
                        return (Ret::Outcome(replay), next);
                    }
                    return (Ret::KeyReused, next);
                }
            }
            // 3. Existence.
            let Some((current, version)) = &model.entity else {
                return (Ret::NotFound, next);
            };
            // 4. Target.
            let (target, event) = match &req.target {
                Target::To(state) => (state.clone(), None),
                Target::Fire(event) => match def.target(current, event) {
                    Some(to) => (to.to_owned(), Some(event.clone())),
                    None if def
                        .transitions
                        .iter()
                        .any(|t| &t.event == event && &t.to == current) =>
                    {
                        (current.clone(), Some(event.clone()))
                    }
                    None => {
                        return (
                            Ret::InvalidTransition {
                                from: current.clone(),
                                to: None,
                                event: Some(event.clone()),
                            },
                            next,
                        )
                    }
                },
            };
            // 5. Already reached.
            if &target == current {
                let out = outcome(current, *version, false, None, None);
                if let Some(key) = &req.key {
                    next.keys
                        .insert(key.clone(), (req.fingerprint(), out.clone()));
                }
                return (Ret::Outcome(out), next);
            }
            // 6. Expected version.
            if let Some(expected) = req.expect {
                if expected != *version {
                    return (
                        Ret::VersionConflict {
                            expected,
                            actual: *version,
                        },
                        next,
                    );
                }
            }
            // 7. Legality.
            if !def.allows(current, &target) {
                return (
                    Ret::InvalidTransition {
                        from: current.clone(),
                        to: Some(target),
                        event,
                    },
                    next,
                );
            }
            // 9. Apply.
            let out = outcome(&target, version + 1, true, Some(current), event.as_deref());
            next.entity = Some((target, version + 1));
            if let Some(key) = &req.key {
                next.keys
                    .insert(key.clone(), (req.fingerprint(), out.clone()));
            }
            (Ret::Outcome(out), next)
        }
    }
}

/// Whether an observed return is the predicted one: timestamps are free,
/// except that a replay returns the original outcome's exactly.
fn matches(predicted: &Ret, observed: &Ret) -> bool {
    match (predicted, observed) {
        (Ret::Outcome(p), Ret::Outcome(o)) if !p.replay => {
            Out { at: 0, ..p.clone() } == Out { at: 0, ..o.clone() }
        }
        _ => predicted == observed,
    }
}

// ------------------------------------------------------------ the checker

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    Violation,
}

/// Wing-Gong search over one entity's history: is there an order of the
/// operations, consistent with real time (an operation that returned before
/// another was invoked comes first), in which every return is the model's?
fn check(def: &MachineDef, history: &[Operation]) -> (Verdict, usize) {
    assert!(
        history.len() <= 128,
        "histories are kept under 128 operations"
    );
    // Each thread is sequential: its operations do not overlap.
    for a in history {
        for b in history {
            if a.thread == b.thread && a.invoked < b.invoked {
                assert!(a.returned < b.invoked, "overlapping calls of one thread");
            }
        }
    }
    let full: u128 = if history.len() == 128 {
        u128::MAX
    } else {
        (1u128 << history.len()) - 1
    };
    let mut seen: HashSet<(u128, Model)> = HashSet::new();
    let found = search(def, history, full, 0, &Model::new(), &mut seen);
    let verdict = if found {
        Verdict::Linearizable
    } else {
        Verdict::Violation
    };
    (verdict, seen.len())
}

fn search(
    def: &MachineDef,
    history: &[Operation],
    full: u128,
    done: u128,
    model: &Model,
    seen: &mut HashSet<(u128, Model)>,
) -> bool {
    if done == full {
        return true;
    }
    if !seen.insert((done, model.clone())) {
        return false;
    }
    // An operation may come next only if no pending one returned before it was invoked.
    let horizon = history
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .map(|(_, op)| op.returned)
        .min()
        .unwrap();
    for (i, op) in history.iter().enumerate() {
        if done & (1 << i) != 0 || op.invoked > horizon {
            continue;
        }
        let at = match &op.ret {
            Ret::Outcome(out) => out.at,
            _ => 0,
        };
        let (predicted, next) = predict(def, model, &op.call, at);
        if matches(&predicted, &op.ret) && search(def, history, full, done | (1 << i), &next, seen)
        {
            return true;
        }
    }
    false
}

// ------------------------------------------------------------ subjects

/// Something that answers calls on entities: the engine, or a fake.
trait Subject: Sync {
    fn call(&self, id: &str, call: &Call) -> Ret;
}

struct Real(NamedMachine);

impl Subject for Real {
    fn call(&self, id: &str, call: &Call) -> Ret {
        match call {
            Call::Create => ret_of(self.0.create(id)),
            Call::Get => match self.0.get(id) {
                Ok(record) => Ret::Got(record.map(|r| (r.state, r.version))),
                Err(error) => ret_of_error(error),
            },
            Call::Apply(req) => ret_of(self.0.apply(id, req.named())),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// One atomic step per call: correct.
    None,
    /// Reads, thinks, then writes what it decided: lost updates, double applies.
    ReadThenWrite,
    /// Never stores idempotency keys: retries are applied again, never replayed.
    ForgetsKeys,
}

/// An in-memory engine built on the model itself, with an optional flaw.
struct Fake {
    def: MachineDef,
    flaw: Flaw,
    entities: Mutex<HashMap<String, Model>>,
    clock: AtomicU64,
}

impl Fake {
    fn new(flaw: Flaw) -> Self {
        Fake {
            def: ring(),
            flaw,
            entities: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(1),
        }
    }
}

impl Subject for Fake {
    fn call(&self, id: &str, call: &Call) -> Ret {
        let at = self.clock.fetch_add(1, Ordering::SeqCst);
        match self.flaw {
            Flaw::None | Flaw::ForgetsKeys => {
                let mut entities = self.entities.lock().unwrap();
                let model = entities.entry(id.to_owned()).or_insert_with(Model::new);
                let (ret, mut next) = predict(&self.def, model, call, at);
                if self.flaw == Flaw::ForgetsKeys {
                    next.keys.clear();
                }
                *model = next;
                ret
            }
            Flaw::ReadThenWrite => {
                let snapshot = self
                    .entities
                    .lock()
                    .unwrap()
                    .get(id)
                    .cloned()
                    .unwrap_or_else(Model::new);
                std::thread::sleep(Duration::from_micros(300));
                let (ret, next) = predict(&self.def, &snapshot, call, at);
                self.entities.lock().unwrap().insert(id.to_owned(), next);
                ret
            }
        }
    }
}

// ------------------------------------------------------------ workload

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_target(rng: &mut Rng) -> Target {
    match rng.below(6) {
        0 => Target::To("a".into()),
        1 => Target::To("b".into()),
        2 => Target::To("c".into()),
        3 => Target::Fire("skip".into()),
        4 => Target::Fire("reset".into()),
        _ => Target::Fire("next".into()),
    }
}

/// A random call on entity `entity`: keys come from a small per-entity pool,
/// each usually with its own fixed request (so retries replay) and sometimes
/// with another (so `KeyReused` shows up).
fn random_call(rng: &mut Rng, entity: &str) -> Call {
    match rng.below(100) {
        0..=9 => Call::Create,
        10..=21 => Call::Get,
        _ => {
            let mut req = Req {
                target: random_target(rng),
                key: None,
                expect: None,
                payload: None,
            };
            if rng.below(100) < 40 {
                let k = rng.below(KEYS_PER_ENTITY as u64);
                req.key = Some(format!("{entity}-k{k}"));
                if rng.below(100) < 75 {
                    let mut canonical = Rng(k.wrapping_mul(7919) ^ entity.len() as u64);
                    req.target = random_target(&mut canonical);
                    req.payload = Some(k);
                }
            }
            if rng.below(100) < 20 {
                req.expect = Some(1 + rng.below(5));
            }
            Call::Apply(req)
        }
    }
}

/// Runs one round: every thread sends `OPS_PER_THREAD` random calls on the
/// round's entities; returns each entity's history.
fn record_round(subject: &dyn Subject, round: u64, seed: u64) -> BTreeMap<String, Vec<Operation>> {
    let clock = AtomicU64::new(0);
    let start = Barrier::new(THREADS);
    let ids: Vec<String> = (0..ENTITIES).map(|e| format!("r{round}-e{e}")).collect();
    let histories: Mutex<BTreeMap<String, Vec<Operation>>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (clock, start, ids, histories) = (&clock, &start, &ids, &histories);
            scope.spawn(move || {
                let mut rng = Rng(seed ^ (thread as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
                let mut mine: Vec<(String, Operation)> = Vec::new();
                start.wait();
                for _ in 0..OPS_PER_THREAD {
                    let id = &ids[rng.below(ENTITIES as u64) as usize];
                    let call = random_call(&mut rng, id);
                    let invoked = clock.fetch_add(1, Ordering::SeqCst);
                    let ret = subject.call(id, &call);
                    let returned = clock.fetch_add(1, Ordering::SeqCst);
                    mine.push((
                        id.clone(),
                        Operation {
                            thread,
                            call,
                            ret,
                            invoked,
                            returned,
                        },
                    ));
                }
                let mut histories = histories.lock().unwrap();
                for (id, op) in mine {
                    histories.entry(id).or_default().push(op);
                }
            });
        }
    });
    histories.into_inner().unwrap()
}

fn rounds() -> u64 {
    std::env::var("IDEMFLOW_LIN_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(60)
}

fn seed() -> u64 {
    std::env::var("IDEMFLOW_LIN_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// What a run checked.
#[derive(Debug, Default)]
struct Stats {
    histories: usize,
    violations: usize,
    operations: usize,
    /// Pairs of operations on one entity that overlapped in time.
    overlaps: usize,
    /// (linearized set, model state) pairs the search visited.
    states: usize,
}

/// Records and checks `rounds` rounds on `subject`. A violation by the real
/// engine fails at once with the history; fakes only count them.
fn run(subject: &dyn Subject, rounds: u64, base: u64, label: &str) -> Stats {
    let def = ring();
    let mut stats = Stats::default();
    let mut rng = Rng(base);
    for round in 0..rounds {
        let seed = rng.next();
        for (id, history) in record_round(subject, round, seed) {
            assert!(
                history.iter().all(|op| !matches!(op.ret, Ret::Other(_))),
                "{label}: unexpected error in {history:#?}"
            );
            stats.overlaps += history
                .iter()
                .enumerate()
                .flat_map(|(i, a)| history[i + 1..].iter().map(move |b| (a, b)))
                .filter(|(a, b)| a.invoked < b.returned && b.invoked < a.returned)
                .count();
            let (verdict, states) = check(&def, &history);
            stats.histories += 1;
            stats.operations += history.len();
            stats.states += states;
            if verdict == Verdict::Violation {
                stats.violations += 1;
                if label.starts_with("engine") {
                    let mut sorted = history.clone();
                    sorted.sort_by_key(|op| op.invoked);
                    panic!(
                        "{label}: history of {id} (round {round}, seed {seed}, base seed {base} \
                         = IDEMFLOW_LIN_SEED) is not linearizable:\n{sorted:#?}"
                    );
                }
            }
        }
    }
    stats
}

fn engine_subject(durability: Durability) -> Real {
    let engine = Engine::builder()
        .durability(durability)
        .temporary()
        .unwrap();
    Real(engine.register(ring()).unwrap())
}

#[test]
fn engine_histories_are_linearizable() {
    let started = Instant::now();
    let base = seed();
    let rounds = rounds();
    for (durability, rounds) in [
        (Durability::Buffered, rounds),
        (Durability::Immediate, rounds.div_ceil(2)),
    ] {
        let subject = engine_subject(durability);
        let label = format!("engine ({durability:?})");
        let stats = run(&subject, rounds, base, &label);
        assert_eq!(stats.violations, 0);
        assert_eq!(stats.histories as u64, rounds * ENTITIES as u64);
        eprintln!(
            "linearizability, {durability:?}: {} entity histories ({} operations, {} overlapping \
             pairs) checked, all linearizable, {} search states, {:.1} s so far \
             (IDEMFLOW_LIN_SEED={base})",
            stats.histories,
            stats.operations,
            stats.overlaps,
            stats.states,
            started.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn a_correct_fake_engine_is_accepted() {
    let fake = Fake::new(Flaw::None);
    let stats = run(&fake, 4, seed(), "correct fake");
    assert_eq!(stats.violations, 0, "the checker rejected a correct engine");
    assert_eq!(stats.histories, 4 * ENTITIES);
}

#[test]
fn the_checker_rejects_a_read_then_write_engine() {
    let fake = Fake::new(Flaw::ReadThenWrite);
    let stats = run(&fake, 4, seed(), "read-then-write fake");
    eprintln!("read-then-write fake: {stats:?}");
    assert!(
        stats.violations > 0,
        "the checker accepted a racy engine's histories"
    );
}

#[test]
fn the_checker_rejects_an_engine_that_forgets_keys() {
    let fake = Fake::new(Flaw::ForgetsKeys);
    let stats = run(&fake, 4, seed(), "forgetful fake");
    eprintln!("key-forgetting fake: {stats:?}");
    assert!(
        stats.violations > 0,
        "the checker accepted an engine that forgets keys"
    );
}

fn op(thread: usize, call: Call, ret: Ret, invoked: u64, returned: u64) -> Operation {
    Operation {
        thread,
        call,
        ret,
        invoked,
        returned,
    }
}

fn applied(state: &str, version: u64, from: Option<&str>, event: Option<&str>, at: u64) -> Ret {
    Ret::Outcome(Out {
        state: state.into(),
        version,
        applied: true,
        replay: false,
        from: from.map(Into::into),
        event: event.map(Into::into),
        at,
    })
}

fn fire(event: &str, key: Option<&str>) -> Call {
    Call::Apply(Req {
        target: Target::Fire(event.into()),
        key: key.map(Into::into),
        expect: None,
        payload: None,
    })
}

/// Hand-made histories: the checker's verdicts on known cases.
#[test]
fn the_checker_on_known_histories() {
    let def = ring();
    let created = applied("a", 1, None, None, 1);
    // Two overlapping `next` from `a`: both applied as version 2 is a lost update.
    let lost_update = vec![
        op(0, Call::Create, created.clone(), 0, 1),
        op(
            1,
            fire("next", None),
            applied("b", 2, Some("a"), Some("next"), 5),
            2,
            5,
        ),
        op(
            2,
            fire("next", None),
            applied("b", 2, Some("a"), Some("next"), 5),
            3,
            6,
        ),
    ];
    assert_eq!(check(&def, &lost_update).0, Verdict::Violation);
    // Overlapping, one at version 2 and one at 3: fine in either real-time order.
    let ordered = vec![
        op(0, Call::Create, created.clone(), 0, 1),
        op(
            1,
            fire("next", None),
            applied("c", 3, Some("b"), Some("next"), 5),
            2,
            5,
        ),
        op(
            2,
            fire("next", None),
            applied("b", 2, Some("a"), Some("next"), 5),
            3,
            6,
        ),
    ];
    assert_eq!(check(&def, &ordered).0, Verdict::Linearizable);
    // The same two, but the version-3 one returned before the other was invoked.
    let reversed = vec![
        op(0, Call::Create, created.clone(), 0, 1),
        op(
            1,
            fire("next", None),
            applied("c", 3, Some("b"), Some("next"), 5),
            2,
            3,
        ),
        op(
            2,
            fire("next", None),
            applied("b", 2, Some("a"), Some("next"), 5),
            4,
            6,
        ),
    ];
    assert_eq!(check(&def, &reversed).0, Verdict::Violation);
    // A keyed retry must be a replay of the original outcome, timestamp included.
    let mut replay = match applied("b", 2, Some("a"), Some("next"), 5) {
        Ret::Outcome(out) => out,
        _ => unreachable!(),
    };
    replay.replay = true;
    let replayed = vec![
        op(0, Call::Create, created.clone(), 0, 1),
        op(
            1,
            fire("next", Some("k")),
            applied("b", 2, Some("a"), Some("next"), 5),
            2,
            3,
        ),
        op(
            1,
            fire("next", Some("k")),
            Ret::Outcome(replay.clone()),
            4,
            5,
        ),
    ];
    assert_eq!(check(&def, &replayed).0, Verdict::Linearizable);
    let mut wrong_time = replay.clone();
    wrong_time.at = 6;
    let mut bad = replayed.clone();
    bad[2].ret = Ret::Outcome(wrong_time);
    assert_eq!(check(&def, &bad).0, Verdict::Violation);
    let mut applied_twice = replayed.clone();
    applied_twice[2].ret = applied("c", 3, Some("b"), Some("next"), 7);
    assert_eq!(check(&def, &applied_twice).0, Verdict::Violation);
    // A read may not see a change before it was made, nor miss one made before it.
    let stale_read = vec![
        op(0, Call::Create, created.clone(), 0, 1),
        op(
            1,
            fire("next", None),
            applied("b", 2, Some("a"), Some("next"), 5),
            2,
            3,
        ),
        op(2, Call::Get, Ret::Got(Some(("a".into(), 1))), 4, 5),
    ];
    assert_eq!(check(&def, &stale_read).0, Verdict::Violation);
    let concurrent_read = vec![
        op(0, Call::Create, created, 0, 1),
        op(
            1,
            fire("next", None),
            applied("b", 2, Some("a"), Some("next"), 5),
            2,
            5,
        ),
        op(2, Call::Get, Ret::Got(Some(("a".into(), 1))), 3, 4),
    ];
    assert_eq!(check(&def, &concurrent_read).0, Verdict::Linearizable);
    // Errors come in the order of SPEC section 3: a missing entity before a bad version.
    let not_found = vec![op(
        0,
        Call::Apply(Req {
            target: Target::To("b".into()),
            key: None,
            expect: Some(9),
            payload: None,
        }),
        Ret::NotFound,
        0,
        1,
    )];
    assert_eq!(check(&def, &not_found).0, Verdict::Linearizable);
}
