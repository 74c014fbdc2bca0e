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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine, MachineDef};

mod common;

use common::backend::TestDb;
use common::linearizability::*;

const THREADS: usize = 8;
const ENTITIES: usize = 3;
const OPS_PER_THREAD: usize = 24; // about 8 per entity and thread

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

fn engine_subject(db: &TestDb, durability: Durability) -> Real {
    let db = db.fresh(&format!("linearizability_{durability:?}"));
    let engine = db.open(Engine::builder().durability(durability));
    Real(engine.register(ring()).unwrap())
}

fn engine_histories_are_linearizable(db: &TestDb) {
    let started = Instant::now();
    let base = seed();
    let rounds = rounds();
    for (durability, rounds) in [
        (Durability::Buffered, rounds),
        (Durability::Immediate, rounds.div_ceil(2)),
    ] {
        let subject = engine_subject(db, durability);
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

backend_tests! {
    engine_histories_are_linearizable,
}
