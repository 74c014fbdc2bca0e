//! Concurrency tests: 8 threads with clones of one typed handle. Requests on
//! the same entity must be linearizable (SPEC section 4): identical requests
//! apply once, conflicting transitions never both apply, no update is lost,
//! and every history stays a valid path of the machine.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Barrier;

use idemflow::{
    Durability, Engine, Error, HistoryRecord, Machine, MachineEvent, OutboxEvent, OutcomeRecord,
    Request, StateMachine,
};
use serde_json::json;

use common::backend::TestDb;
use common::{check_invariants, OrderEvent, OrderState, Ticket};

const THREADS: usize = 8;

fn buffered(db: &TestDb) -> Engine {
    db.open(Engine::builder().durability(Durability::Buffered))
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

fn pending(engine: &Engine) -> Vec<OutboxEvent> {
    engine.flush().unwrap();
    engine.outbox().pending(usize::MAX).unwrap()
}

/// Runs `work(thread)` on `THREADS` threads, each with its own clone of
/// `machine`, and returns their results in thread order.
fn on_threads<M: StateMachine, T: Send>(
    machine: &Machine<M>,
    work: impl Fn(usize, Machine<M>) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let machine = machine.clone();
                let work = &work;
                scope.spawn(move || work(t, machine))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// a) N threads create the same entities, then send the same keyed payment,
/// then the same unkeyed shipment: each is applied exactly once per entity.
fn identical_requests_apply_exactly_once(db: &TestDb) {
    let engine = buffered(db);
    let orders = engine.machine::<OrderState>().unwrap();
    let ids = ids("o", 200);
    let barrier = Barrier::new(THREADS);

    // Concurrent creation: one creates, the others see the existing record.
    let created = on_threads(&orders, |_, orders| {
        ids.iter()
            .map(|id| {
                barrier.wait();
                orders.create(id).unwrap().to_record()
            })
            .collect::<Vec<_>>()
    });
    for (i, id) in ids.iter().enumerate() {
        let outcomes: Vec<&OutcomeRecord> = created.iter().map(|c| &c[i]).collect();
        let applied = outcomes.iter().filter(|o| o.applied).count();
        assert_eq!(applied, 1, "{id}: creations applied: {outcomes:?}");
        for o in outcomes {
            assert_eq!((o.state.as_str(), o.version, o.replay), ("draft", 1, false));
        }
        orders.fire(id, OrderEvent::Submit).unwrap();
    }

    // The same keyed payment from every thread (by state or by event, per entity).
    let payment = |i: usize, id: &str| {
        let request = if i % 2 == 0 {
            Request::to(OrderState::Paid)
        } else {
            Request::fire(OrderEvent::Pay)
        };
        request
            .key(format!("pay-{id}"))
            .payload(json!({"amount": 4200, "currency": "EUR"}))
            .actor("checkout")
    };
    let paid = on_threads(&orders, |_, orders| {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                barrier.wait();
                orders.apply(id, payment(i, id)).unwrap().to_record()
            })
            .collect::<Vec<_>>()
    });
    for (i, id) in ids.iter().enumerate() {
        let outcomes: Vec<&OutcomeRecord> = paid.iter().map(|p| &p[i]).collect();
        let winners: Vec<&&OutcomeRecord> =
            outcomes.iter().filter(|o| o.applied && !o.replay).collect();
        assert_eq!(winners.len(), 1, "{id}: payments applied: {outcomes:?}");
        let winner = winners[0];
        assert_eq!((winner.state.as_str(), winner.version), ("paid", 3));
        assert_eq!(winner.from.as_deref(), Some("submitted"));
        for o in &outcomes {
            if !std::ptr::eq(*o, *winner) {
                assert!(
                    o.replay,
                    "{id}: a retry with the same key is a replay: {o:?}"
                );
                let mut original = (*o).clone();
                original.replay = false;
                assert_eq!(&original, *winner, "{id}: replay != original outcome");
            }
        }
        // After the race, the retry still replays.
        let retry = orders.apply(id, payment(i, id)).unwrap().to_record();
        assert!(retry.replay && retry.version == 3 && retry.at == winner.at);
        let history = orders.named().history(id).unwrap();
        assert_eq!(history.len(), 3, "{id}: history {history:?}");
        let keyed: Vec<_> = history
            .iter()
            .filter(|e| e.key.as_deref() == Some(format!("pay-{id}").as_str()))
            .collect();
        assert_eq!(keyed.len(), 1, "{id}: one history entry for the payment");
        assert_eq!(keyed[0].version, 3);
        assert_eq!(
            keyed[0].payload,
            Some(json!({"amount": 4200, "currency": "EUR"}))
        );
    }

    // The same unkeyed shipment: one applies, the others are no-ops.
    let shipped = on_threads(&orders, |t, orders| {
        ids.iter()
            .map(|id| {
                barrier.wait();
                let outcome = if t % 2 == 0 {
                    orders.transition(id, OrderState::Shipped)
                } else {
                    orders.fire(id, OrderEvent::Ship)
                };
                outcome.unwrap().to_record()
            })
            .collect::<Vec<_>>()
    });
    for (i, id) in ids.iter().enumerate() {
        let outcomes: Vec<&OutcomeRecord> = shipped.iter().map(|s| &s[i]).collect();
        assert_eq!(
            outcomes.iter().filter(|o| o.applied).count(),
            1,
            "{id}: shipments applied: {outcomes:?}"
        );
        for o in outcomes {
            assert!(!o.replay);
            assert_eq!((o.state.as_str(), o.version), ("shipped", 4), "{id}: {o:?}");
        }
    }

    let outbox = pending(&engine);
    let histories = check_invariants(&orders, &ids, Some(outbox.as_slice()));
    for (id, history) in &histories {
        assert_eq!(history.len(), 4, "{id}");
        let payments = outbox
            .iter()
            .filter(|e| &e.id == id && e.key.as_deref() == Some(format!("pay-{id}").as_str()))
            .count();
        assert_eq!(payments, 1, "{id}: one outbox event for the payment");
    }
    assert_eq!(outbox.len(), ids.len() * 4);
}

/// b) From `submitted`, half the threads pay and half cancel, by state or by
/// event, with and without keys: exactly one applies.
fn conflicting_transitions_never_both_apply(db: &TestDb) {
    let engine = buffered(db);
    let orders = engine.machine::<OrderState>().unwrap();
    let ids = ids("c", 400);
    for id in &ids {
        orders.create(id).unwrap();
        orders.fire(id, OrderEvent::Submit).unwrap();
    }
    let barrier = Barrier::new(THREADS);
    let results = on_threads(&orders, |t, orders| {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let pay = t % 2 == 0;
                let mut request = match ((i + t / 2) % 2 == 0, pay) {
                    (true, true) => Request::to(OrderState::Paid),
                    (true, false) => Request::to(OrderState::Cancelled),
                    (false, true) => Request::fire(OrderEvent::Pay),
                    (false, false) => Request::fire(OrderEvent::Cancel),
                };
                if i % 3 != 0 {
                    request = request.key(format!("{id}-t{t}"));
                }
                if i % 4 == 1 {
                    request = request.expect_version(2);
                }
                barrier.wait();
                let target = if pay { "paid" } else { "cancelled" };
                (target, orders.apply(id, request).map(|o| o.to_record()))
            })
            .collect::<Vec<_>>()
    });
    let mut winners_by_state: BTreeMap<String, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let outcomes: Vec<&(&str, Result<OutcomeRecord, Error>)> =
            results.iter().map(|r| &r[i]).collect();
        let winners: Vec<&OutcomeRecord> = outcomes
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .filter(|o| o.applied)
            .collect();
        assert_eq!(winners.len(), 1, "{id}: applied: {outcomes:?}");
        let winner = winners[0];
        assert!(!winner.replay);
        assert_eq!(winner.version, 3);
        assert_eq!(winner.from.as_deref(), Some("submitted"));
        let won = winner.state.clone();
        assert!(won == "paid" || won == "cancelled", "{id}: {won}");
        *winners_by_state.entry(won.clone()).or_default() += 1;
        for (target, result) in &outcomes {
            match result {
                Ok(o) if o.applied => {}
                // Same target as the winner: already reached.
                Ok(o) => {
                    assert_eq!(*target, won, "{id}: a no-op for another target: {o:?}");
                    assert_eq!(
                        (o.state.as_str(), o.version, o.replay),
                        (won.as_str(), 3, false)
                    );
                }
                // The other target: not from the winner's state (or a stale version).
                Err(Error::InvalidTransition { from, .. }) => {
                    assert_ne!(*target, won, "{id}");
                    assert_eq!(from, &won, "{id}");
                }
                Err(Error::VersionConflict {
                    expected, actual, ..
                }) => {
                    assert_ne!(*target, won, "{id}");
                    assert_eq!((*expected, *actual), (2, 3), "{id}");
                }
                Err(other) => panic!("{id}: unexpected error {other}"),
            }
        }
        let entity = orders.get(id).unwrap().unwrap();
        assert_eq!((entity.state.name(), entity.version), (won.as_str(), 3));
    }
    let outbox = pending(&engine);
    let histories = check_invariants(&orders, &ids, Some(outbox.as_slice()));
    for (id, history) in &histories {
        assert_eq!(history.len(), 3, "{id}: one transition out of submitted");
        assert_eq!(history[2].from.as_deref(), Some("submitted"));
    }
    assert_eq!(outbox.len(), ids.len() * 3);
    eprintln!("winners: {winners_by_state:?}");
}

// ---------------------------------------------------------------------------
// Random traffic
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What one request of the random traffic returned.
#[derive(Debug)]
struct Sent {
    machine: &'static str,
    id: String,
    key: Option<String>,
    expected: Option<u64>,
    /// For a retry: the index (in the same thread) of the request it repeats.
    retry_of: Option<usize>,
    result: Result<OutcomeRecord, Failure>,
}

#[derive(Debug)]
enum Failure {
    VersionConflict { expected: u64, actual: u64 },
    InvalidTransition { from: String },
}

fn failure(error: Error) -> Failure {
    match error {
        Error::VersionConflict {
            expected, actual, ..
        } => Failure::VersionConflict { expected, actual },
        Error::InvalidTransition { from, .. } => Failure::InvalidTransition { from },
        other => panic!("unexpected error in random traffic: {other}"),
    }
}

/// One random request (and maybe its retry) on `machine`.
fn random_request<M: StateMachine>(
    machine: &Machine<M>,
    ids: &[String],
    rng: &mut Rng,
    key: String,
    sent: &mut Vec<Sent>,
) {
    let id = &ids[rng.below(ids.len())];
    let mut request = if rng.chance(40) {
        Request::<M>::to(M::states()[rng.below(M::states().len())])
    } else {
        Request::fire(M::Event::all()[rng.below(M::Event::all().len())])
    };
    let mut expected = None;
    if rng.chance(30) {
        let version = machine.get(id).unwrap().unwrap().version;
        expected = Some(version);
        request = request.expect_version(version);
        if rng.chance(50) {
            // Let another thread move the entity between the read and the write.
            std::thread::yield_now();
        }
    }
    let keyed = rng.chance(40);
    if keyed {
        request = request.key(key.clone());
    }
    if rng.chance(20) {
        request = request.payload(json!({"n": rng.below(1000)}));
    }
    let retry = keyed && rng.chance(30);
    let again = request.clone();
    let record = |result: Result<idemflow::Outcome<M>, Error>, retry_of| Sent {
        machine: M::machine_name(),
        id: id.clone(),
        key: keyed.then(|| key.clone()),
        expected,
        retry_of,
        result: result.map(|o| o.to_record()).map_err(failure),
    };
    sent.push(record(machine.apply(id, request), None));
    if retry {
        let original = sent.len() - 1;
        sent.push(record(machine.apply(id, again), Some(original)));
    }
}

/// A machine without terminal states, so that random traffic never runs
/// dry: `cancel` leads to different states from `queued` and `paused`.
#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "job", initial = Queued, events = JobEvent)]
enum Job {
    #[on(start = Running, cancel = Paused)]
    Queued,
    #[on(pause = Paused, finish = Queued, fail = Failed)]
    Running,
    #[on(resume = Running, cancel = Queued)]
    Paused,
    #[on(retry = Queued)]
    Failed,
}

const ORDERS: usize = 3;
const TICKETS: usize = 3;
const JOBS: usize = 4;

/// Runs random traffic on `THREADS` threads and checks that no update is
/// lost and every history is a valid path.
fn random_traffic(engine: &Engine, requests_per_thread: usize, seed: u64) {
    let orders = engine.machine::<OrderState>().unwrap();
    let tickets = engine.machine::<Ticket>().unwrap();
    let jobs = engine.machine::<Job>().unwrap();
    let order_ids = ids("order", ORDERS);
    let ticket_ids = ids("ticket", TICKETS);
    let job_ids = ids("job", JOBS);
    for id in &order_ids {
        orders.create(id).unwrap();
    }
    for id in &ticket_ids {
        tickets.create(id).unwrap();
    }
    for id in &job_ids {
        jobs.create(id).unwrap();
    }
    let barrier = Barrier::new(THREADS);
    let sent = on_threads(&jobs, |t, jobs| {
        let orders = orders.clone();
        let tickets = tickets.clone();
        let mut rng = Rng::new(seed.wrapping_mul(1_000_003) ^ ((t as u64 + 1) * 7919));
        let mut sent = Vec::new();
        barrier.wait();
        for n in 0..requests_per_thread {
            let key = format!("t{t}-n{n}");
            match rng.below(20) {
                0..=2 => random_request(&orders, &order_ids, &mut rng, key, &mut sent),
                3..=7 => random_request(&tickets, &ticket_ids, &mut rng, key, &mut sent),
                _ => random_request(&jobs, &job_ids, &mut rng, key, &mut sent),
            }
        }
        sent
    });
    let outbox = pending(engine);
    let mut histories = BTreeMap::new();
    for (id, history) in check_invariants(&orders, &order_ids, Some(outbox.as_slice())) {
        histories.insert(("order", id), history);
    }
    for (id, history) in check_invariants(&tickets, &ticket_ids, Some(outbox.as_slice())) {
        histories.insert(("ticket", id), history);
    }
    for (id, history) in check_invariants(&jobs, &job_ids, Some(outbox.as_slice())) {
        histories.insert(("job", id), history);
    }
    let events: usize = histories.values().map(Vec::len).sum();
    assert_eq!(outbox.len(), events, "outbox: one event per history entry");
    check_traffic(&sent, &histories);
}

type Histories = BTreeMap<(&'static str, String), Vec<HistoryRecord>>;

/// Checks every answer of the traffic against the final histories.
fn check_traffic(sent: &[Vec<Sent>], histories: &Histories) {
    let mut applied: BTreeSet<(&str, String, u64)> = BTreeSet::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for thread in sent {
        for s in thread {
            let history = &histories[&(s.machine, s.id.clone())];
            if let Some(original) = s.retry_of.map(|i| &thread[i]) {
                if original.result.is_ok() {
                    assert!(
                        s.result.as_ref().is_ok_and(|o| o.replay),
                        "a keyed retry of a success must replay: {s:?} after {original:?}"
                    );
                }
            }
            match &s.result {
                Ok(o) if o.replay => {
                    *counts.entry("replay").or_default() += 1;
                    // A replay returns the original outcome, marked as a replay.
                    let original = s.retry_of.map(|i| &thread[i]).expect("replay of a retry");
                    let original = original.result.as_ref().expect("errors are not stored");
                    let mut expected = original.clone();
                    expected.replay = true;
                    assert_eq!(o, &expected, "replay != original");
                }
                Ok(o) if o.applied => {
                    *counts.entry("applied").or_default() += 1;
                    assert!(
                        applied.insert((s.machine, s.id.clone(), o.version)),
                        "two applied outcomes for {} {} version {}: lost update",
                        s.machine,
                        s.id,
                        o.version
                    );
                    let entry = &history[o.version as usize - 1];
                    assert_eq!(entry.from, o.from, "{s:?} vs {entry:?}");
                    assert_eq!(entry.to, o.state, "{s:?} vs {entry:?}");
                    assert_eq!(entry.event, o.event, "{s:?} vs {entry:?}");
                    assert_eq!(entry.key, s.key, "{s:?} vs {entry:?}");
                    assert_eq!(entry.at, o.at, "{s:?} vs {entry:?}");
                    if let Some(expected) = s.expected {
                        assert_eq!(o.version, expected + 1, "applied on a stale version: {s:?}");
                    }
                }
                Ok(o) => {
                    *counts.entry("noop").or_default() += 1;
                    // A no-op reports a state and version the entity really had.
                    assert!(o.from.is_none() && o.event.is_none());
                    let entry = &history[o.version as usize - 1];
                    assert_eq!(
                        entry.to, o.state,
                        "no-op reports a state it never had: {s:?}"
                    );
                }
                Err(Failure::VersionConflict { expected, actual }) => {
                    *counts.entry("conflict").or_default() += 1;
                    assert_ne!(expected, actual);
                    assert_eq!(Some(*expected), s.expected);
                    assert!(*actual <= history.len() as u64);
                }
                Err(Failure::InvalidTransition { from }) => {
                    *counts.entry("invalid").or_default() += 1;
                    assert!(
                        history.iter().any(|e| &e.to == from),
                        "invalid transition from a state the entity never had: {s:?}"
                    );
                }
            }
        }
    }
    // Every history entry after the creation is exactly one applied outcome.
    let recorded: BTreeSet<(&str, String, u64)> = histories
        .iter()
        .flat_map(|((machine, id), history)| {
            history
                .iter()
                .filter(|e| e.version > 1)
                .map(move |e| (*machine, id.clone(), e.version))
        })
        .collect();
    assert_eq!(applied, recorded, "applied outcomes != history entries");
    eprintln!("traffic: {counts:?}");
    assert!(counts.get("applied").copied().unwrap_or(0) > 0);
}

/// c) Random requests from 8 threads on a few entities (Buffered), with the
/// batching writer on and off.
fn random_traffic_loses_no_update(db: &TestDb) {
    for seed in 1..=4 {
        let db = db.fresh(&format!("random_traffic_{seed}"));
        let engine = db.open(
            Engine::builder()
                .durability(Durability::Buffered)
                .batching(seed % 2 == 0),
        );
        random_traffic(&engine, 250, seed);
    }
}

/// d) The same with `Immediate` on a real directory, so concurrent callers
/// go through group commit (batching writer on and off); every acknowledged
/// change is still there after a reopen.
fn random_traffic_immediate_survives_reopen(db: &TestDb) {
    for batching in [true, false] {
        let db = db.fresh(&format!("random_traffic_reopen_{batching}"));
        let before = {
            let engine = db.open(Engine::builder().batching(batching));
            assert_eq!(engine.durability(), Durability::Immediate);
            random_traffic(&engine, 30, 42);
            snapshot(&engine)
        };
        let engine = db.open(Engine::builder());
        assert_eq!(
            snapshot(&engine),
            before,
            "acknowledged changes lost on reopen (batching {batching})"
        );
    }
}

type Snapshot = (BTreeMap<String, Vec<HistoryRecord>>, Vec<OutboxEvent>);

fn snapshot(engine: &Engine) -> Snapshot {
    let mut histories = BTreeMap::new();
    for (machine, ids) in [
        ("order", ids("order", ORDERS)),
        ("ticket", ids("ticket", TICKETS)),
        ("job", ids("job", JOBS)),
    ] {
        let named = engine.machine_by_name(machine).unwrap();
        for id in ids {
            histories.insert(format!("{machine}/{id}"), named.history(&id).unwrap());
        }
    }
    (histories, pending(engine))
}

backend_tests! {
    identical_requests_apply_exactly_once,
    conflicting_transitions_never_both_apply,
    random_traffic_loses_no_update,
    random_traffic_immediate_survives_reopen,
}
