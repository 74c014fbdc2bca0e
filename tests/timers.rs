//! Durable timers (SPEC section 9): declared timeouts and scheduled requests
//! fire exactly once in effect, with a clock the test controls; they survive
//! restarts and kill -9; firing twice is a replay.

use std::collections::BTreeMap;
use std::time::Duration;

use idemflow::testing::ManualClock;
use idemflow::{
    Create, Durability, Engine, Error, InputField, Request, StateMachine, TimerKind, TIMER_ACTOR,
};
use proptest::prelude::*;

mod common;

use common::backend::{Backend, TestDb};
use common::{retry_locked, watchdog};

#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
pub enum Invoice {
    #[on(send = Sent)]
    Draft,
    #[timeout(after = "30m", fire = expire)]
    #[on(pay = Paid, expire = Expired)]
    Sent,
    #[terminal]
    Paid,
    #[terminal]
    Expired,
}

const START: u64 = 1_800_000_000_000;
const MINUTE: Duration = Duration::from_secs(60);

fn engine(db: &TestDb, clock: &ManualClock) -> Engine {
    db.open(
        Engine::builder()
            .durability(Durability::Buffered)
            .clock(clock.clone())
            .timers(false),
    )
}

fn open(db: &TestDb, clock: &ManualClock) -> Engine {
    db.open(
        Engine::builder()
            .durability(Durability::Immediate)
            .clock(clock.clone())
            .timers(false),
    )
}

fn a_declared_timeout_fires_after_its_delay_by_the_timer(db: &TestDb) {
    let clock = ManualClock::new(START);
    let engine = engine(db, &clock);
    let invoices = engine.machine::<Invoice>().unwrap();
    invoices.create("i-1").unwrap();
    let sent = invoices.fire("i-1", InvoiceEvent::Send).unwrap();
    let timers = invoices.scheduled("i-1").unwrap();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].kind, TimerKind::Timeout);
    assert_eq!(timers[0].due_at, sent.at() + 30 * 60 * 1000);
    assert_eq!(timers[0].key, "timeout/sent/2");
    clock.advance(29 * MINUTE);
    assert_eq!(engine.run_due_timers().unwrap(), 0, "not due yet");
    clock.advance(MINUTE);
    assert_eq!(engine.run_due_timers().unwrap(), 1);
    let invoice = invoices.get("i-1").unwrap().unwrap();
    assert_eq!((invoice.state, invoice.version), (Invoice::Expired, 3));
    let history = invoices.history("i-1").unwrap();
    let expired = &history[2];
    assert_eq!(expired.event, Some(InvoiceEvent::Expire));
    assert_eq!(expired.actor.as_deref(), Some(TIMER_ACTOR));
    assert_eq!(expired.key.as_deref(), Some("timeout/sent/2"));
    assert_eq!(
        expired.at,
        START + 30 * 60 * 1000,
        "timestamps come from the clock"
    );
    assert!(invoices.scheduled("i-1").unwrap().is_empty());
    assert_eq!(engine.run_due_timers().unwrap(), 0);
}

fn leaving_the_state_first_disarms_the_timeout(db: &TestDb) {
    let clock = ManualClock::new(START);
    let engine = engine(db, &clock);
    let invoices = engine.machine::<Invoice>().unwrap();
    invoices.create("i-1").unwrap();
    invoices.fire("i-1", InvoiceEvent::Send).unwrap();
    clock.advance(10 * MINUTE);
    invoices.fire("i-1", InvoiceEvent::Pay).unwrap();
    assert!(invoices.scheduled("i-1").unwrap().is_empty());
    clock.advance(60 * MINUTE);
    assert_eq!(engine.run_due_timers().unwrap(), 0);
    assert_eq!(invoices.get("i-1").unwrap().unwrap().state, Invoice::Paid);
}

fn scheduled_requests_are_keyed_deduplicated_cancellable_and_replayable(db: &TestDb) {
    let clock = ManualClock::new(START);
    let engine = engine(db, &clock);
    let invoices = engine.machine::<Invoice>().unwrap();
    invoices.create("i-1").unwrap();
    invoices.fire("i-1", InvoiceEvent::Send).unwrap();
    let pay = Request::fire(InvoiceEvent::Pay).key("pay-i-1");
    // A request without a key cannot be scheduled.
    assert!(matches!(
        invoices.schedule("i-1", 5 * MINUTE, Request::fire(InvoiceEvent::Pay)),
        Err(Error::InvalidInput {
            field: InputField::Key,
            ..
        })
    ));
    let first = invoices.schedule("i-1", 5 * MINUTE, pay.clone()).unwrap();
    assert_eq!(
        (first.key.as_str(), first.due_at),
        ("pay-i-1", START + 5 * 60_000)
    );
    // The same key and request again: one timer (the first one's due time).
    clock.advance(MINUTE);
    let again = invoices.schedule("i-1", 5 * MINUTE, pay.clone()).unwrap();
    assert_eq!(again.due_at, first.due_at);
    let scheduled: Vec<_> = invoices
        .scheduled("i-1")
        .unwrap()
        .into_iter()
        .filter(|timer| timer.kind == TimerKind::Scheduled)
        .collect();
    assert_eq!(scheduled.len(), 1);
    // The same key with another request: KeyReused.
    assert!(matches!(
        invoices.schedule(
            "i-1",
            MINUTE,
            Request::fire(InvoiceEvent::Expire).key("pay-i-1")
        ),
        Err(Error::KeyReused { .. })
    ));
    // Reschedule moves it; cancel removes it once.
    let moved = invoices
        .reschedule("i-1", "pay-i-1", 10 * MINUTE)
        .unwrap()
        .unwrap();
    assert_eq!(moved.due_at, START + 11 * 60_000);
    assert!(invoices.cancel_scheduled("i-1", "pay-i-1").unwrap());
    assert!(!invoices.cancel_scheduled("i-1", "pay-i-1").unwrap());
    assert!(invoices
        .reschedule("i-1", "pay-i-1", MINUTE)
        .unwrap()
        .is_none());
    // Scheduled again, it fires when due; the client's retry replays it.
    invoices.schedule("i-1", 2 * MINUTE, pay.clone()).unwrap();
    clock.advance(2 * MINUTE);
    assert_eq!(engine.run_due_timers().unwrap(), 1);
    assert_eq!(invoices.get("i-1").unwrap().unwrap().state, Invoice::Paid);
    let retry = invoices.apply("i-1", pay.clone()).unwrap();
    assert!(retry.is_replay() && retry.version() == 3);
    // Scheduling a request already applied under its key schedules nothing.
    invoices.schedule("i-1", MINUTE, pay).unwrap();
    assert!(invoices.scheduled("i-1").unwrap().is_empty());
    // A scheduled request that fails when it fires has no effect and is gone.
    invoices.create("i-2").unwrap();
    invoices
        .schedule(
            "i-2",
            MINUTE,
            Request::fire(InvoiceEvent::Pay).key("pay-i-2"),
        )
        .unwrap();
    clock.advance(MINUTE);
    assert_eq!(engine.run_due_timers().unwrap(), 1);
    assert_eq!(invoices.get("i-2").unwrap().unwrap().state, Invoice::Draft);
    assert!(invoices.scheduled("i-2").unwrap().is_empty());
}

fn timers_survive_a_restart_and_fire_what_became_due_while_closed(db: &TestDb) {
    let clock = ManualClock::new(START);
    {
        let engine = open(db, &clock);
        let invoices = engine.machine::<Invoice>().unwrap();
        for n in 0..20 {
            let id = format!("i-{n}");
            invoices.create(&id).unwrap();
            invoices.fire(&id, InvoiceEvent::Send).unwrap();
        }
        invoices
            .schedule(
                "i-0",
                10 * MINUTE,
                Request::fire(InvoiceEvent::Pay).key("pay-0"),
            )
            .unwrap();
    }
    clock.advance(45 * MINUTE);
    let engine = open(db, &clock);
    let invoices = engine.machine::<Invoice>().unwrap();
    assert_eq!(engine.timers("invoice", 100).unwrap().len(), 21);
    // 20 fired: i-0's payment (due at 10 min) fires before its timeout (due
    // at 30 min), and entering `paid` disarms that timeout before it is due
    // to be taken: an entity's timers fire one after the other, in due order.
    assert_eq!(engine.run_due_timers().unwrap(), 20);
    assert_eq!(
        invoices.get("i-0").unwrap().unwrap().state,
        Invoice::Paid,
        "due first, paid first"
    );
    assert!(invoices
        .count_by_state()
        .unwrap()
        .contains(&(Invoice::Expired, 19)));
    assert!(engine.timers("invoice", 100).unwrap().is_empty());
}

fn the_background_runner_fires_without_being_asked(db: &TestDb) {
    let db = db.clone();
    watchdog("the timer runner", Duration::from_secs(60), move || {
        let engine = db.open(Engine::builder().durability(Durability::Buffered));
        let invoices = engine.machine::<Invoice>().unwrap();
        invoices.create("i-1").unwrap();
        invoices.fire("i-1", InvoiceEvent::Send).unwrap();
        invoices
            .schedule(
                "i-1",
                Duration::from_millis(200),
                Request::fire(InvoiceEvent::Pay).key("pay-soon"),
            )
            .unwrap();
        let started = std::time::Instant::now();
        while invoices.get("i-1").unwrap().unwrap().state != Invoice::Paid {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the runner never fired"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

fn concurrent_firings_apply_each_timer_once(db: &TestDb) {
    let db = db.clone();
    watchdog(
        "four threads firing the same timers",
        Duration::from_secs(120),
        move || {
            let clock = ManualClock::new(START);
            let engine = db.open(
                Engine::builder()
                    .durability(Durability::Buffered)
                    .clock(clock.clone()),
            );
            let invoices = engine.machine::<Invoice>().unwrap();
            for n in 0..300 {
                let id = format!("i-{n}");
                invoices.create(&id).unwrap();
                invoices.fire(&id, InvoiceEvent::Send).unwrap();
                if n % 2 == 0 {
                    invoices
                        .schedule(
                            &id,
                            31 * MINUTE,
                            Request::fire(InvoiceEvent::Pay).key(format!("pay-{n}")),
                        )
                        .unwrap();
                }
            }
            clock.advance(40 * MINUTE);
            // The background runner (on) and four threads race for the same timers.
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| engine.run_due_timers().unwrap());
                }
            });
            // A firing that failed for a moment (a storage error under the
            // load) leaves its timer to fire again once its claim lapses (on
            // PostgreSQL, 10 s of the engine's clock): move past that.
            clock.advance(MINUTE);
            engine.run_due_timers().unwrap();
            for n in 0..300 {
                let id = format!("i-{n}");
                let history = invoices.history(&id).unwrap();
                // The timeout fired (due at 30 min) before the payment (31 min):
                // every invoice expired, exactly once; the payments found it
                // expired and did nothing.
                assert_eq!(history.len(), 3, "{id}: {history:?}");
                assert_eq!(history[2].event, Some(InvoiceEvent::Expire));
            }
            assert!(engine.timers("invoice", 1000).unwrap().is_empty());
        },
    );
}

fn a_keyed_creation_replays_its_outcome(db: &TestDb) {
    let clock = ManualClock::new(START);
    let engine = engine(db, &clock);
    let invoices = engine.machine::<Invoice>().unwrap();
    let create = Create::new()
        .key("new-i-1")
        .payload(serde_json::json!({"amount": 10}));
    let first = invoices.create_request("i-1", create.clone()).unwrap();
    assert!(first.was_created() && !first.is_replay());
    invoices.fire("i-1", InvoiceEvent::Send).unwrap();
    let retry = invoices.create_request("i-1", create).unwrap();
    assert!(retry.was_created() && retry.is_replay());
    assert_eq!(retry.state(), Invoice::Draft, "the original outcome");
    assert_eq!(
        invoices.history("i-1").unwrap()[0].key.as_deref(),
        Some("new-i-1")
    );
    assert!(matches!(
        invoices.create_request("i-2", Create::new().key("new-i-1")),
        Err(Error::KeyReused { .. })
    ));
    assert!(matches!(
        invoices.apply("i-1", Request::fire(InvoiceEvent::Pay).key("new-i-1")),
        Err(Error::KeyReused { .. })
    ));
}

// ---------------------------------------------------------------------------
// A reference model with time steps
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Send(usize),
    Pay(usize, bool),
    Advance(u64),
    RunTimers,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..6usize).prop_map(Op::Create),
        3 => (0..6usize).prop_map(Op::Send),
        2 => (0..6usize, any::<bool>()).prop_map(|(n, keyed)| Op::Pay(n, keyed)),
        3 => (1..40u64).prop_map(Op::Advance),
        2 => Just(Op::RunTimers),
        1 => Just(Op::Reopen),
    ]
}

/// The model: state, version, and when the entity entered `sent`.
#[derive(Clone, Debug, Default)]
struct Model {
    entities: BTreeMap<String, (Invoice, u64, u64)>,
}

fn run_model(backend: Backend, ops: &[Op]) {
    let Some(db) = TestDb::new(backend, "the_engine_matches_a_model_with_time") else {
        return;
    };
    let clock = ManualClock::new(START);
    let mut engine = Some(open(&db, &clock));
    let mut model = Model::default();
    for op in ops {
        let invoices = engine.as_ref().unwrap().machine::<Invoice>().unwrap();
        let now = idemflow::Clock::now_ms(&clock);
        match op {
            Op::Create(n) => {
                let id = format!("i-{n}");
                invoices.create(&id).unwrap();
                model.entities.entry(id).or_insert((Invoice::Draft, 1, 0));
            }
            Op::Send(n) => {
                let id = format!("i-{n}");
                let result = invoices.fire(&id, InvoiceEvent::Send);
                match model.entities.get_mut(&id) {
                    None => assert!(matches!(result, Err(Error::NotFound { .. }))),
                    Some(entity) if entity.0 == Invoice::Draft => {
                        assert!(result.unwrap().was_applied());
                        *entity = (Invoice::Sent, entity.1 + 1, now);
                    }
                    Some(entity) if entity.0 == Invoice::Sent => {
                        assert!(result.unwrap().was_noop());
                    }
                    Some(_) => assert!(result.is_err()),
                }
            }
            Op::Pay(n, keyed) => {
                let id = format!("i-{n}");
                let mut request = Request::fire(InvoiceEvent::Pay);
                if *keyed {
                    request = request.key(format!("pay-{n}"));
                }
                let result = invoices.apply(&id, request);
                match model.entities.get_mut(&id) {
                    None => assert!(matches!(result, Err(Error::NotFound { .. }))),
                    Some(entity) if entity.0 == Invoice::Sent => {
                        assert!(result.unwrap().was_applied());
                        *entity = (Invoice::Paid, entity.1 + 1, 0);
                    }
                    Some(entity) if entity.0 == Invoice::Paid => {
                        assert!(result.unwrap().state() == Invoice::Paid);
                    }
                    Some(_) => assert!(result.is_err(), "{result:?}"),
                }
            }
            Op::Advance(minutes) => clock.advance(Duration::from_secs(*minutes * 60)),
            Op::RunTimers => {
                let fired = engine.as_ref().unwrap().run_due_timers().unwrap();
                let mut expected = 0;
                for entity in model.entities.values_mut() {
                    if entity.0 == Invoice::Sent && entity.2 + 30 * 60_000 <= now {
                        *entity = (Invoice::Expired, entity.1 + 1, 0);
                        expected += 1;
                    }
                }
                assert_eq!(fired, expected, "timers fired");
            }
            Op::Reopen => {
                drop(invoices);
                // Close before reopening: one process owns the directory.
                drop(engine.take());
                engine = Some(open(&db, &clock));
            }
        }
        // After every step: records, histories and pending timers agree.
        let invoices = engine.as_ref().unwrap().machine::<Invoice>().unwrap();
        for (id, (state, version, entered)) in &model.entities {
            let entity = invoices.get(id).unwrap().unwrap();
            assert_eq!((entity.state, entity.version), (*state, *version), "{id}");
            let history = invoices.history(id).unwrap();
            assert_eq!(history.len() as u64, *version);
            for entry in &history {
                let by_timer = entry.actor.as_deref() == Some(TIMER_ACTOR);
                assert_eq!(by_timer, entry.to == Invoice::Expired, "{id}: {entry:?}");
            }
            let timers = invoices.scheduled(id).unwrap();
            if *state == Invoice::Sent {
                assert_eq!(timers.len(), 1, "{id}: one timeout while sent");
                assert_eq!(timers[0].due_at, entered + 30 * 60_000);
            } else {
                assert!(timers.is_empty(), "{id}: {timers:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_matches_a_model_with_time(ops in prop::collection::vec(op(), 1..40)) {
        run_model(Backend::Sled, &ops);
    }
}

proptest! {
    // Fewer cases on PostgreSQL: each one is a schema of its own.
    #![proptest_config(ProptestConfig {
        cases: common::backend::postgres_cases(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_matches_a_model_with_time_on_postgres(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        run_model(Backend::Postgres, &ops);
    }
}

backend_tests! {
    a_declared_timeout_fires_after_its_delay_by_the_timer,
    leaving_the_state_first_disarms_the_timeout,
    scheduled_requests_are_keyed_deduplicated_cancellable_and_replayable,
    timers_survive_a_restart_and_fire_what_became_due_while_closed,
    the_background_runner_fires_without_being_asked,
    concurrent_firings_apply_each_timer_once,
    a_keyed_creation_replays_its_outcome,
}

/// The typed declaration carries the timeout.
#[test]
fn the_invoice_declares_its_timeout() {
    assert_eq!(
        Invoice::Sent.timeout(),
        Some((30 * MINUTE, InvoiceEvent::Expire))
    );
    assert_eq!(
        Invoice::definition().timeout_of("sent").map(|t| t.after_ms),
        Some(1_800_000)
    );
}

// ---------------------------------------------------------------------------
// kill -9 with timers due
// ---------------------------------------------------------------------------

/// A job that times out after 40 ms unless finished.
#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "lease", initial = Held, events = LeaseEvent)]
pub enum Lease {
    #[timeout(after = "40ms", fire = expire)]
    #[on(release = Released, expire = Expired)]
    Held,
    #[terminal]
    Released,
    #[terminal]
    Expired,
}

const CHILD_ENV: &str = "IDEMFLOW_TIMERS_CHILD_DB";

/// The child: creates leases (each arms a timeout) and releases some, while
/// the background runner expires the others, until it is killed.
#[test]
fn timers_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let engine = retry_locked(|| Engine::open(&dir));
    let leases = engine.machine::<Lease>().unwrap();
    let start = std::process::id();
    for n in 0.. {
        let id = format!("l-{start}-{n}");
        leases.create(&id).unwrap();
        if n % 3 == 0 {
            let _ = leases.fire(&id, LeaseEvent::Release);
        }
        println!("ACK {id}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn timers_fire_once_in_effect_across_kill_9() {
    watchdog("kill -9 with timers due", Duration::from_secs(300), || {
        let dir = tempfile::tempdir().unwrap();
        let mut acked = Vec::new();
        let rounds: u64 = std::env::var("IDEMFLOW_TIMER_CRASH_ROUNDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(8);
        for round in 0..rounds {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "timers_crash_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                std::io::BufRead::lines(std::io::BufReader::new(stdout))
                    .map_while(Result::ok)
                    .filter_map(|line| line.strip_prefix("ACK ").map(str::to_owned))
                    .collect::<Vec<_>>()
            });
            std::thread::sleep(Duration::from_millis(300 + 100 * (round % 4)));
            child.kill().unwrap();
            let _ = child.wait();
            acked.extend(reader.join().unwrap());
        }
        assert!(
            acked.len() > 20,
            "the children acknowledged {} leases",
            acked.len()
        );
        let engine = retry_locked(|| Engine::builder().timers(false).open(dir.path()));
        let leases = engine.machine::<Lease>().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        engine.run_due_timers().unwrap();
        let mut expired = 0;
        for id in &acked {
            let lease = leases
                .get(id)
                .unwrap()
                .expect("an acknowledged lease is there");
            let history = leases.history(id).unwrap();
            assert_eq!(lease.version, history.len() as u64, "{id}");
            let expirations = history
                .iter()
                .filter(|e| e.event == Some(LeaseEvent::Expire))
                .count();
            assert!(expirations <= 1, "{id} expired {expirations} times");
            assert_ne!(
                lease.state,
                Lease::Held,
                "{id}: every timeout fired (none lost)"
            );
            if lease.state == Lease::Expired {
                assert_eq!(expirations, 1);
                expired += 1;
            }
        }
        assert!(engine.timers("lease", 10).unwrap().is_empty());
        eprintln!(
            "{} leases acknowledged over {rounds} kills, {expired} expired by their timeout",
            acked.len()
        );
    });
}

// ---------------------------------------------------------------------------
// Several processes on one PostgreSQL database
// ---------------------------------------------------------------------------

const SHARED_CHILD_ENV: &str = "IDEMFLOW_TIMERS_CHILD_URL";

/// A child of the PostgreSQL case: like [`timers_crash_child`], on a
/// database that its siblings share; every child's background runner fires
/// the timers of all of them.
#[test]
fn timers_shared_child() {
    let Ok(url) = std::env::var(SHARED_CHILD_ENV) else {
        return;
    };
    let engine = TestDb::postgres_at(url).open(Engine::builder());
    let leases = engine.machine::<Lease>().unwrap();
    let start = std::process::id();
    for n in 0.. {
        let id = format!("l-{start}-{n}");
        leases.create(&id).unwrap();
        if n % 3 == 0 {
            let _ = leases.fire(&id, LeaseEvent::Release);
        }
        println!("ACK {id}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Three engine processes share one database: each creates leases (each
/// arms a 40 ms timeout) and its background runner fires due timers, which
/// the others' runners race for. One child is killed with -9 mid-way, the
/// others later. Every acknowledged lease then expired at most once, and
/// none is left holding: the timers the dead processes had claimed fire
/// once their claims lapse (the checking engine's clock runs ahead by more
/// than a claim).
fn timers_fire_once_in_effect_across_processes(db: &TestDb) {
    let db = db.clone();
    watchdog(
        "three processes firing each other's timers",
        Duration::from_secs(300),
        move || {
            db.open(Engine::builder().timers(false))
                .machine::<Lease>()
                .unwrap();
            let spawn = || {
                let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "timers_shared_child",
                        "--nocapture",
                        "--test-threads",
                        "1",
                    ])
                    .env(SHARED_CHILD_ENV, db.location())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let stdout = child.stdout.take().unwrap();
                let reader = std::thread::spawn(move || {
                    std::io::BufRead::lines(std::io::BufReader::new(stdout))
                        .map_while(Result::ok)
                        .filter_map(|line| line.strip_prefix("ACK ").map(str::to_owned))
                        .collect::<Vec<_>>()
                });
                (child, reader)
            };
            let mut children: Vec<_> = (0..3).map(|_| spawn()).collect();
            std::thread::sleep(Duration::from_millis(1_500));
            children[0].0.kill().unwrap();
            std::thread::sleep(Duration::from_millis(1_500));
            let mut acked = Vec::new();
            for (mut child, reader) in children {
                let _ = child.kill();
                let _ = child.wait();
                acked.extend(reader.join().unwrap());
            }
            assert!(
                acked.len() > 30,
                "the children acknowledged {} leases",
                acked.len()
            );
            // Ahead of the children's clock by more than a claim lasts.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let clock = ManualClock::new(now + 60_000);
            let engine = db.open(Engine::builder().clock(clock).timers(false));
            let leases = engine.machine::<Lease>().unwrap();
            engine.run_due_timers().unwrap();
            let mut expired = 0;
            for id in &acked {
                let lease = leases
                    .get(id)
                    .unwrap()
                    .expect("an acknowledged lease is there");
                let history = leases.history(id).unwrap();
                assert_eq!(lease.version, history.len() as u64, "{id}");
                let expirations = history
                    .iter()
                    .filter(|e| e.event == Some(LeaseEvent::Expire))
                    .count();
                assert!(expirations <= 1, "{id} expired {expirations} times");
                assert_ne!(lease.state, Lease::Held, "{id}: its timeout fired");
                if lease.state == Lease::Expired {
                    expired += 1;
                }
            }
            assert!(engine.timers("lease", 10).unwrap().is_empty());
            eprintln!(
                "{} leases acknowledged by 3 processes (one killed), {expired} expired by \
                 their timeout",
                acked.len()
            );
        },
    );
}

#[test]
fn timers_fire_once_in_effect_across_processes_on_postgres() {
    common::backend::run_on(
        Backend::Postgres,
        "timers_fire_once_in_effect_across_processes",
        timers_fire_once_in_effect_across_processes,
    );
}
