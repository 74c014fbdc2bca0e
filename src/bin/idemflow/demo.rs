//! `idemflow demo`: the order lifecycle under duplicate deliveries, retries
//! after lost responses, out-of-order events and concurrent conflicting
//! requests, followed by the engine's invariant checks and a summary.
//!
//! Every order runs one scenario (ship, refund, cancel in draft, pay racing
//! cancel, or a stampede of identical payments) chosen by a seeded generator;
//! faults are injected with the `--duplicate-rate` probability. Every request
//! states the outcome the scenario expects (except racing ones, whose winner
//! is up to the scheduler), so the demo also checks that the engine answers
//! each one as SPEC section 3 says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread::{self, ScopedJoinHandle};
use std::time::{Duration, Instant};

use idemflow::{
    DotOptions, Durability, Engine, Error, Machine, Outcome, Request, Result as EngineResult,
    StateMachine,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::DemoArgs;
use crate::commands::{
    connect, demo_output_dir, describe_db, graphviz_available, postgres_url, print_json, print_out,
    render_svg, write_file,
};
use crate::render::{group, Align, Table};
use crate::{CliError, CliResult};

/// The life of an order in a shop.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Being filled by the customer; not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    /// Submitted by the customer, waiting for payment.
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    /// Paid: the customer's card was charged.
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    /// Handed to the carrier.
    #[terminal]
    Shipped,
    /// Cancelled before payment; nothing was charged.
    #[terminal]
    Cancelled,
    /// Paid, then refunded.
    #[terminal]
    Refunded,
}

/// How many identical payments a stampede sends at once.
const STAMPEDE_SIZE: usize = 4;
/// How many examples of unexpected outcomes the summary lists.
const UNEXPECTED_SAMPLES: usize = 5;

/// The outcome a scenario expects for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Applied now.
    Applied,
    /// Nothing to do: the target is already reached.
    NoOp,
    /// The original outcome of an earlier request with the same key.
    Replay,
    /// Rejected with this error variant.
    Rejected(&'static str),
    /// Racing other requests: checked per race instead.
    Racing,
}

/// The outcome a request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    Applied,
    NoOp,
    Replay,
    Rejected(&'static str),
}

impl Got {
    fn of(result: &EngineResult<Outcome<OrderState>>) -> Got {
        match result {
            Ok(outcome) if outcome.is_replay() => Got::Replay,
            Ok(outcome) if outcome.was_applied() => Got::Applied,
            Ok(_) => Got::NoOp,
            Err(error) => Got::Rejected(error_kind(error)),
        }
    }

    fn matches(self, expect: Expect) -> bool {
        match expect {
            Expect::Applied => self == Got::Applied,
            Expect::NoOp => self == Got::NoOp,
            Expect::Replay => self == Got::Replay,
            Expect::Rejected(kind) => self == Got::Rejected(kind),
            Expect::Racing => true,
        }
    }
}

/// The variant name of an engine error.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::InvalidInput { .. } => "InvalidInput",
        Error::NotFound { .. } => "NotFound",
        Error::InvalidTransition { .. } => "InvalidTransition",
        Error::VersionConflict { .. } => "VersionConflict",
        Error::KeyReused { .. } => "KeyReused",
        Error::GuardRejected { .. } => "GuardRejected",
        Error::InvalidDefinition { .. } => "InvalidDefinition",
        Error::DefinitionMismatch { .. } => "DefinitionMismatch",
        Error::UnknownMachine { .. } => "UnknownMachine",
        Error::Corrupt { .. } => "Corrupt",
        Error::Locked { .. } => "Locked",
        Error::Storage { .. } => "Storage",
        _ => "Other",
    }
}

/// Whether an outcome is an applied payment: the one side effect (a charge)
/// that must happen at most once per order.
fn is_charge(outcome: &Outcome<OrderState>) -> bool {
    outcome.was_applied()
        && !outcome.is_replay()
        && outcome.state() == OrderState::Paid
        && outcome.from() == Some(OrderState::Submitted)
}

/// What happens to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// submit, pay, ship.
    Ship,
    /// submit, pay, refund.
    Refund,
    /// cancel while in draft.
    CancelDraft,
    /// submit, then pay and cancel race from two threads; ship if pay won.
    PayCancelRace,
    /// submit, then the same keyed payment from several threads at once; ship.
    PayStampede,
}

impl Scenario {
    fn pick(rng: &mut Rng) -> Scenario {
        match rng.below(100) {
            0..=44 => Scenario::Ship,
            45..=59 => Scenario::Refund,
            60..=69 => Scenario::CancelDraft,
            70..=84 => Scenario::PayCancelRace,
            _ => Scenario::PayStampede,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Ship => "submit, pay, ship",
            Scenario::Refund => "submit, pay, refund",
            Scenario::CancelDraft => "cancel in draft",
            Scenario::PayCancelRace => "pay racing cancel",
            Scenario::PayStampede => "identical payments at once",
        }
    }
}

/// SplitMix64: a small, seeded, good-enough generator for scenarios.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// Counters of one client thread, merged at the end (and, with
/// `--processes`, sent by each worker process to the first as JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    sent: u64,
    applied: u64,
    noops: u64,
    replays: u64,
    #[serde(deserialize_with = "static_keys")]
    rejected: BTreeMap<&'static str, u64>,
    unexpected: u64,
    unexpected_samples: Vec<String>,
    #[serde(deserialize_with = "static_keys")]
    scenarios: BTreeMap<&'static str, u64>,
    #[serde(deserialize_with = "static_keys")]
    faults: BTreeMap<&'static str, u64>,
    races: u64,
    races_with_one_winner: u64,
    races_won_by_pay: u64,
    stampedes: u64,
    stampedes_with_one_payment: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.applied += other.applied;
        self.noops += other.noops;
        self.replays += other.replays;
        for (kind, count) in other.rejected {
            *self.rejected.entry(kind).or_default() += count;
        }
        self.unexpected += other.unexpected;
        for sample in other.unexpected_samples {
            if self.unexpected_samples.len() < UNEXPECTED_SAMPLES {
                self.unexpected_samples.push(sample);
            }
        }
        for (name, count) in other.scenarios {
            *self.scenarios.entry(name).or_default() += count;
        }
        for (name, count) in other.faults {
            *self.faults.entry(name).or_default() += count;
        }
        self.races += other.races;
        self.races_with_one_winner += other.races_with_one_winner;
        self.races_won_by_pay += other.races_won_by_pay;
        self.stampedes += other.stampedes;
        self.stampedes_with_one_payment += other.stampedes_with_one_payment;
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Reads a worker's counters: the names are the demo's own (error kinds,
/// scenarios, faults), a small fixed set, so they are interned for the run.
fn static_keys<'de, D>(deserializer: D) -> Result<BTreeMap<&'static str, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let owned = BTreeMap::<String, u64>::deserialize(deserializer)?;
    Ok(owned
        .into_iter()
        .map(|(name, count)| (&*Box::leak(name.into_boxed_str()), count))
        .collect())
}

/// What a worker process reports: its counters and the charges of its orders.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerReport {
    tally: Tally,
    /// (order index, applied payments) for every order it charged.
    charges: Vec<(u64, u32)>,
}

/// The entity id of order number `index`.
fn order_id(index: u64) -> String {
    format!("order-{index:06}")
}

/// Waits for a scoped thread, passing on its panic (an engine bug) as is.
fn join<T>(handle: ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One client thread: runs orders through the engine and counts what happens.
struct Client<'a> {
    orders: &'a Machine<OrderState>,
    /// Applied payments per order: the simulated card charges.
    charges: &'a [AtomicU32],
    rate: f64,
    seed: u64,
    tally: Tally,
}

impl Client<'_> {
    /// Counts a request's result against what the scenario expects.
    fn record(
        &mut self,
        order: u64,
        what: &str,
        result: &EngineResult<Outcome<OrderState>>,
        expect: Expect,
    ) -> Got {
        let got = Got::of(result);
        self.tally.sent += 1;
        match got {
            Got::Applied => self.tally.applied += 1,
            Got::NoOp => self.tally.noops += 1,
            Got::Replay => self.tally.replays += 1,
            Got::Rejected(kind) => *self.tally.rejected.entry(kind).or_default() += 1,
        }
        if let Ok(outcome) = result {
            if is_charge(outcome) {
                if let Some(charges) = usize::try_from(order)
                    .ok()
                    .and_then(|index| self.charges.get(index))
                {
                    charges.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !got.matches(expect) {
            self.tally.unexpected += 1;
            if self.tally.unexpected_samples.len() < UNEXPECTED_SAMPLES {
                let detail = match result {
                    Err(error) => format!(": {error}"),
                    Ok(_) => String::new(),
                };
                self.tally.unexpected_samples.push(format!(
                    "{} {what}: expected {expect:?}, got {got:?}{detail}",
                    order_id(order)
                ));
            }
        }
        got
    }

    fn fault(&mut self, name: &'static str) {
        *self.tally.faults.entry(name).or_default() += 1;
    }

    /// Sends one request and records it.
    fn send(
        &mut self,
        order: u64,
        what: &str,
        request: Request<OrderState>,
        expect: Expect,
    ) -> Got {
        let result = self.orders.apply(&order_id(order), request);
        self.record(order, what, &result, expect)
    }

    /// Delivers a keyed request that should apply; like a message bus with
    /// at-least-once delivery, it sometimes delivers it twice (a replay).
    fn deliver(
        &mut self,
        rng: &mut Rng,
        order: u64,
        what: &str,
        request: Request<OrderState>,
    ) -> Got {
        let got = self.send(order, what, request.clone(), Expect::Applied);
        if rng.chance(self.rate) {
            self.fault("duplicate delivery (same key again)");
            self.send(
                order,
                &format!("{what} (duplicate)"),
                request,
                Expect::Replay,
            );
        }
        got
    }

    /// Runs order number `order` through its scenario.
    fn run_order(&mut self, order: u64) {
        let id = order_id(order);
        let mut rng = Rng::new(self.seed ^ order.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let key = |step: &str| format!("{id}/{step}");

        let created = self.orders.create_with(
            &id,
            Some(json!({ "customer": format!("customer-{}", order % 997) })),
            Some("shop".to_owned()),
        );
        self.record(order, "create", &created, Expect::Applied);
        if rng.chance(self.rate) {
            self.fault("duplicate create");
            let again = self.orders.create(&id);
            self.record(order, "create (duplicate)", &again, Expect::NoOp);
        }

        let scenario = Scenario::pick(&mut rng);
        *self.tally.scenarios.entry(scenario.name()).or_default() += 1;
        let cancel = Request::fire(OrderEvent::Cancel)
            .key(key("cancel"))
            .actor("customer");
        if scenario == Scenario::CancelDraft {
            self.deliver(&mut rng, order, "cancel", cancel.clone());
            if rng.chance(self.rate) {
                self.fault("retry after a lost response");
                self.send(order, "cancel (retry)", cancel, Expect::Replay);
            }
            return;
        }

        let submit = Request::fire(OrderEvent::Submit)
            .key(key("submit"))
            .actor("customer");
        self.deliver(&mut rng, order, "submit", submit);
        if rng.chance(self.rate) {
            // A support agent acts on a page loaded before the submission.
            self.fault("stale expected version");
            let stale = Request::to(OrderState::Cancelled)
                .key(key("support-cancel"))
                .expect_version(1)
                .actor("support");
            self.send(
                order,
                "stale cancel",
                stale,
                Expect::Rejected("VersionConflict"),
            );
        }
        if rng.chance(self.rate / 2.0) {
            // A client bug: the submit's key sent again with another request.
            self.fault("key reused for another request");
            let reused = Request::fire(OrderEvent::Cancel).key(key("submit"));
            self.send(
                order,
                "cancel with the submit's key",
                reused,
                Expect::Rejected("KeyReused"),
            );
        }

        let pay = Request::to(OrderState::Paid)
            .key(key("pay"))
            .payload(json!({ "amount_cents": 500 + order % 20_000, "currency": "EUR" }))
            .actor("payments");
        let carrier = ["dhl", "ups", "post"][(order % 3) as usize];
        let ship = Request::fire(OrderEvent::Ship)
            .key(key("ship"))
            .payload(json!({ "carrier": carrier }))
            .actor("warehouse");
        let paid = match scenario {
            Scenario::PayCancelRace => self.race(order, pay.clone(), cancel),
            Scenario::PayStampede => self.stampede(order, &pay),
            Scenario::Ship | Scenario::Refund | Scenario::CancelDraft => {
                if scenario == Scenario::Ship && rng.chance(self.rate) {
                    // The warehouse's event overtakes the payment. The error is
                    // not stored under the key: the same request succeeds later.
                    self.fault("out-of-order event (ship before pay)");
                    self.send(
                        order,
                        "ship before pay",
                        ship.clone(),
                        Expect::Rejected("InvalidTransition"),
                    );
                }
                self.deliver(&mut rng, order, "pay", pay.clone()) == Got::Applied
            }
        };
        if !paid {
            if rng.chance(self.rate) {
                self.fault("late event after cancel");
                let late = Request::fire(OrderEvent::Ship);
                self.send(
                    order,
                    "ship after cancel",
                    late,
                    Expect::Rejected("InvalidTransition"),
                );
            }
            return;
        }

        let (last, last_state, last_name) = if scenario == Scenario::Refund {
            let refund = Request::to(OrderState::Refunded)
                .key(key("refund"))
                .payload(json!({ "reason": "returned" }))
                .actor("support");
            (refund, OrderState::Refunded, "refund")
        } else {
            (ship, OrderState::Shipped, "ship")
        };
        self.deliver(&mut rng, order, last_name, last);
        if rng.chance(self.rate) {
            // The payment service never saw its answer and retries after the
            // order moved on: it gets the original outcome, not a second charge.
            self.fault("retry after a lost response");
            self.send(
                order,
                "pay (retry after the order moved on)",
                pay,
                Expect::Replay,
            );
        }
        if rng.chance(self.rate) {
            self.fault("retry without a key");
            self.send(
                order,
                "unkeyed retry",
                Request::to(last_state),
                Expect::NoOp,
            );
        }
    }

    /// Pay and cancel at the same moment from two threads: exactly one
    /// applies, the other is an invalid transition. Returns whether pay won.
    fn race(&mut self, order: u64, pay: Request<OrderState>, cancel: Request<OrderState>) -> bool {
        let id = order_id(order);
        let orders = self.orders;
        let barrier = Barrier::new(2);
        let (paid, cancelled) = thread::scope(|scope| {
            let canceller = scope.spawn(|| {
                barrier.wait();
                orders.apply(&id, cancel)
            });
            barrier.wait();
            let paid = orders.apply(&id, pay);
            (paid, join(canceller))
        });
        let pay_got = self.record(order, "pay (racing cancel)", &paid, Expect::Racing);
        let cancel_got = self.record(order, "cancel (racing pay)", &cancelled, Expect::Racing);
        let loser_refused = Got::Rejected("InvalidTransition");
        let one_winner = matches!(
            (pay_got, cancel_got),
            (Got::Applied, got) | (got, Got::Applied) if got == loser_refused
        );
        self.tally.races += 1;
        if one_winner {
            self.tally.races_with_one_winner += 1;
        }
        if pay_got == Got::Applied {
            self.tally.races_won_by_pay += 1;
        }
        pay_got == Got::Applied
    }

    /// The same keyed payment from several threads at once: exactly one
    /// applies and the others replay it. Returns whether it was paid.
    fn stampede(&mut self, order: u64, pay: &Request<OrderState>) -> bool {
        let id = order_id(order);
        let orders = self.orders;
        let barrier = Barrier::new(STAMPEDE_SIZE);
        let results = thread::scope(|scope| {
            let others: Vec<_> = (1..STAMPEDE_SIZE)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        orders.apply(&id, pay.clone())
                    })
                })
                .collect();
            barrier.wait();
            let mine = orders.apply(&id, pay.clone());
            std::iter::once(mine)
                .chain(others.into_iter().map(join))
                .collect::<Vec<_>>()
        });
        let gots: Vec<Got> = results
            .iter()
            .map(|result| self.record(order, "pay (identical, concurrent)", result, Expect::Racing))
            .collect();
        let applied = gots.iter().filter(|got| **got == Got::Applied).count();
        let others_fine = gots
            .iter()
            .all(|got| matches!(got, Got::Applied | Got::Replay | Got::NoOp));
        self.tally.stampedes += 1;
        if applied == 1 && others_fine {
            self.tally.stampedes_with_one_payment += 1;
        }
        applied >= 1
    }
}

/// One invariant check of the summary.
#[derive(Debug, Serialize)]
struct Check {
    name: String,
    pass: bool,
    detail: String,
}

impl Check {
    fn new(name: &str, pass: bool, detail: String) -> Check {
        Check {
            name: name.to_owned(),
            pass,
            detail,
        }
    }
}

/// A file the demo wrote.
#[derive(Debug, Serialize)]
struct WrittenFile {
    kind: &'static str,
    path: String,
}

/// Request counters of the summary.
#[derive(Debug, Serialize)]
struct RequestCounts {
    sent: u64,
    applied: u64,
    noops: u64,
    replays: u64,
    rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
}

/// The demo's summary, printed as a table or as JSON.
#[derive(Debug, Serialize)]
struct Summary {
    orders: u64,
    threads: u64,
    duplicate_rate: f64,
    seed: u64,
    durability: &'static str,
    database: Option<String>,
    processes: u64,
    requests: RequestCounts,
    scenarios: BTreeMap<&'static str, u64>,
    injected_faults: BTreeMap<&'static str, u64>,
    final_states: Vec<(String, u64)>,
    orders_charged: u64,
    orders_charged_twice: u64,
    checks: Vec<Check>,
    all_checks_passed: bool,
    unexpected_outcomes: Vec<String>,
    elapsed_seconds: f64,
    requests_per_second: f64,
    files: Vec<WrittenFile>,
    graph_note: Option<String>,
}

/// Opens the demo's database: temporary, a directory or a PostgreSQL
/// database that holds no orders yet.
fn open_database(db: Option<&Path>, durability: Durability) -> CliResult<Engine> {
    let builder = Engine::builder().durability(durability);
    let Some(dir) = db else {
        return Ok(builder.temporary()?);
    };
    let engine = match postgres_url(dir) {
        Some(url) => connect(url, durability)?,
        None => open_directory(builder, dir)?,
    };
    let has_orders = engine.machines()?.iter().any(|def| def.name == "order");
    if has_orders {
        let existing: u64 = engine
            .machine_by_name("order")?
            .count_by_state()?
            .iter()
            .map(|(_, count)| count)
            .sum();
        if existing > 0 {
            return Err(CliError::new(format!(
                "{} already holds {existing} orders; the demo's checks need a database without orders: pass a new --db",
                describe_db(dir)
            )));
        }
    }
    Ok(engine)
}

fn open_directory(builder: idemflow::EngineBuilder, dir: &Path) -> CliResult<Engine> {
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::new(format!(
            "{} is not a directory; --db takes a database directory",
            dir.display()
        )));
    }
    Ok(builder.open(dir)?)
}

/// Runs orders `first`, `first + step`, ... below `count` on `threads`
/// client threads; returns their counters.
fn drive(
    orders: &Machine<OrderState>,
    charges: &[AtomicU32],
    args: &DemoArgs,
    (first, step): (u64, u64),
    progress: &ProgressBar,
) -> Vec<Tally> {
    let count = args.orders;
    let next = AtomicU64::new(0);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut client = Client {
                        orders,
                        charges,
                        rate: args.duplicate_rate,
                        seed: args.seed,
                        tally: Tally::default(),
                    };
                    loop {
                        let order = first + step * next.fetch_add(1, Ordering::Relaxed);
                        if order >= count {
                            break;
                        }
                        client.run_order(order);
                        progress.inc(1);
                    }
                    client.tally
                })
            })
            .collect();
        workers.into_iter().map(join).collect()
    })
}

/// `idemflow demo --processes P --worker K`: runs orders K, K + P, ... and
/// prints a [`WorkerReport`] as one JSON line.
fn run_worker(args: &DemoArgs, worker: u64, durability: Durability) -> CliResult {
    let url = args
        .db
        .as_deref()
        .and_then(postgres_url)
        .ok_or_else(|| CliError::new("a demo worker needs --db postgres://..."))?;
    let engine = connect(url, durability)?;
    let orders = engine.machine::<OrderState>()?;
    let capacity = usize::try_from(args.orders)
        .map_err(|_| CliError::new(format!("{} orders do not fit in memory here", args.orders)))?;
    let charges: Vec<AtomicU32> = (0..capacity).map(|_| AtomicU32::new(0)).collect();
    let tallies = drive(
        &orders,
        &charges,
        args,
        (worker, args.processes),
        &ProgressBar::hidden(),
    );
    let mut tally = Tally::default();
    for part in tallies {
        tally.merge(part);
    }
    let report = WorkerReport {
        tally,
        charges: charges
            .iter()
            .enumerate()
            .filter_map(|(index, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then_some((index as u64, count))
            })
            .collect(),
    };
    let line = serde_json::to_string(&report)
        .map_err(|error| CliError::new(format!("could not encode the worker report: {error}")))?;
    print_out(&format!("{line}\n"))
}

/// Starts `--processes` worker processes (this program, `--worker K`) on the
/// same database, waits for them and collects their counters and charges.
fn run_workers(args: &DemoArgs, url: &str, charges: &[AtomicU32]) -> CliResult<Vec<Tally>> {
    let program = std::env::current_exe().map_err(|error| {
        CliError::new(format!(
            "cannot find this program to start workers: {error}"
        ))
    })?;
    let mut children = Vec::new();
    for worker in 0..args.processes {
        let mut command = std::process::Command::new(&program);
        command
            .arg("demo")
            .args(["--db", url])
            .args(["--orders", &args.orders.to_string()])
            .args(["--threads", &args.threads.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .args(["--duplicate-rate", &args.duplicate_rate.to_string()])
            .args(["--processes", &args.processes.to_string()])
            .args(["--worker", &worker.to_string()])
            .stdout(std::process::Stdio::piped());
        if args.durable {
            command.arg("--durable");
        }
        let child = command.spawn().map_err(|error| {
            CliError::new(format!("could not start demo worker {worker}: {error}"))
        })?;
        children.push(child);
    }
    let mut tallies = Vec::new();
    let mut failures = Vec::new();
    for (worker, child) in children.into_iter().enumerate() {
        let output = child
            .wait_with_output()
            .map_err(|error| CliError::new(format!("demo worker {worker}: {error}")))?;
        if !output.status.success() {
            failures.push(format!("worker {worker} exited with {}", output.status));
            continue;
        }
        let report: WorkerReport = serde_json::from_slice(&output.stdout).map_err(|error| {
            CliError::new(format!(
                "demo worker {worker} sent an unreadable report: {error}"
            ))
        })?;
        for (index, count) in report.charges {
            if let Some(slot) = usize::try_from(index)
                .ok()
                .and_then(|index| charges.get(index))
            {
                slot.fetch_add(count, Ordering::Relaxed);
            }
        }
        tallies.push(report.tally);
    }
    if failures.is_empty() {
        Ok(tallies)
    } else {
        Err(CliError::new(failures.join("; ")))
    }
}

/// `idemflow demo`.
pub fn run(args: &DemoArgs) -> CliResult {
    let durability = if args.durable {
        Durability::Immediate
    } else {
        Durability::Buffered
    };
    if let Some(worker) = args.worker {
        return run_worker(args, worker, durability);
    }
    let url = args.db.as_deref().and_then(postgres_url);
    if args.processes > 1 && url.is_none() {
        return Err(CliError::new(
            "--processes needs a database that several processes can share: --db postgres://...",
        ));
    }
    let engine = open_database(args.db.as_deref(), durability)?;
    let orders = engine.machine::<OrderState>()?;
    let count = args.orders;
    let capacity = usize::try_from(count)
        .map_err(|_| CliError::new(format!("{count} orders do not fit in memory here")))?;
    let charges: Vec<AtomicU32> = (0..capacity).map(|_| AtomicU32::new(0)).collect();

    let started = Instant::now();
    let tallies: Vec<Tally> = match url {
        Some(url) if args.processes > 1 => run_workers(args, url, &charges)?,
        _ => {
            let progress = progress_bar(count);
            let tallies = drive(&orders, &charges, args, (0, 1), &progress);
            progress.finish_and_clear();
            tallies
        }
    };
    let elapsed = started.elapsed();
    let mut tally = Tally::default();
    for part in tallies {
        tally.merge(part);
    }

    let report = check_invariants(&engine, &orders, count, &charges, &tally)?;
    // Graph files go next to a sled database, or to ./idemflow-demo.
    let graph_dir = args.db.as_deref().filter(|db| postgres_url(db).is_none());
    let (files, graph_note) = write_graphs(graph_dir, &orders, &report.final_states)?;
    let summary = Summary {
        orders: count,
        threads: args.threads,
        duplicate_rate: args.duplicate_rate,
        seed: args.seed,
        durability: match durability {
            Durability::Immediate => "immediate",
            Durability::Buffered => "buffered",
        },
        database: args.db.as_deref().map(describe_db),
        processes: args.processes,
        requests: RequestCounts {
            sent: tally.sent,
            applied: tally.applied,
            noops: tally.noops,
            replays: tally.replays,
            rejected: tally.rejected_total(),
            rejected_by_reason: tally.rejected.clone(),
        },
        scenarios: tally.scenarios.clone(),
        injected_faults: tally.faults.clone(),
        final_states: report.final_states,
        orders_charged: report.orders_charged,
        orders_charged_twice: report.orders_charged_twice,
        all_checks_passed: report.checks.iter().all(|check| check.pass),
        checks: report.checks,
        unexpected_outcomes: tally.unexpected_samples.clone(),
        elapsed_seconds: elapsed.as_secs_f64(),
        requests_per_second: per_second(tally.sent, elapsed),
        files,
        graph_note,
    };
    if args.json.json {
        let value = serde_json::to_value(&summary)
            .map_err(|error| CliError::new(format!("could not encode JSON: {error}")))?;
        print_json(&value)?;
    } else {
        print_out(&render_summary(&summary))?;
    }
    let failed = summary.checks.iter().filter(|check| !check.pass).count();
    if failed > 0 {
        return Err(CliError::new(format!(
            "{failed} of {} invariant checks failed",
            summary.checks.len()
        )));
    }
    Ok(())
}

fn per_second(requests: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        requests as f64 / seconds
    } else {
        0.0
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(orders: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(orders), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} orders {bar:40} {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

/// What the invariant checks found.
struct InvariantReport {
    checks: Vec<Check>,
    final_states: Vec<(String, u64)>,
    orders_charged: u64,
    orders_charged_twice: u64,
}

/// Reads back every order, its history, the state index and the outbox, and
/// checks the engine's invariants against them and against what the clients saw.
fn check_invariants(
    engine: &Engine,
    orders: &Machine<OrderState>,
    count: u64,
    charges: &[AtomicU32],
    tally: &Tally,
) -> CliResult<InvariantReport> {
    let mut checks = Vec::new();
    let mut ids_by_state: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut version_mismatches = Vec::new();
    let mut history_entries = 0u64;
    let mut charge_mismatches = Vec::new();
    let (mut orders_charged, mut orders_charged_twice, mut paid_by_history) = (0u64, 0u64, 0u64);

    for order in 0..count {
        let id = order_id(order);
        let Some(entity) = orders.get(&id)? else {
            missing.push(id);
            continue;
        };
        let history = orders.history(&id)?;
        history_entries += history.len() as u64;
        let contiguous = history
            .iter()
            .enumerate()
            .all(|(index, entry)| entry.version == index as u64 + 1);
        if entity.version != history.len() as u64 || !contiguous {
            version_mismatches.push(format!(
                "{id}: version {} with {} history entries",
                entity.version,
                history.len()
            ));
        }
        let paid_in_history = history
            .iter()
            .filter(|entry| entry.to == OrderState::Paid)
            .count() as u64;
        let charged = usize::try_from(order)
            .ok()
            .and_then(|index| charges.get(index))
            .map_or(0, |charges| u64::from(charges.load(Ordering::Relaxed)));
        orders_charged += u64::from(charged > 0);
        orders_charged_twice += u64::from(charged > 1);
        paid_by_history += u64::from(paid_in_history > 0);
        if charged != paid_in_history || charged > 1 {
            charge_mismatches.push(format!(
                "{id}: charged {charged} times, {paid_in_history} payments in history"
            ));
        }
        ids_by_state
            .entry(entity.state.name())
            .or_default()
            .insert(id.clone());
        versions.insert(id, entity.version);
    }

    let first = |items: &[String]| items.first().cloned().unwrap_or_default();

    checks.push(Check::new(
        "every order exists and its version equals its history length",
        missing.is_empty() && version_mismatches.is_empty(),
        if missing.is_empty() && version_mismatches.is_empty() {
            format!(
                "{} orders, {} history entries",
                group(count),
                group(history_entries)
            )
        } else {
            format!(
                "{} missing, {} mismatched; first: {}{}",
                missing.len(),
                version_mismatches.len(),
                first(&missing),
                first(&version_mismatches)
            )
        },
    ));

    // The outbox: exactly one event per applied change, per entity in version order.
    // (It hands out durable events only: under Buffered, sync first.)
    engine.flush()?;
    let events = engine.outbox().pending(usize::MAX)?;
    let mut outbox_versions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut foreign = 0u64;
    for event in &events {
        if event.machine == "order" && versions.contains_key(&event.id) {
            outbox_versions
                .entry(&event.id)
                .or_default()
                .push(event.version);
        } else if event.machine == "order" {
            foreign += 1;
        }
    }
    let order_events: u64 = outbox_versions.values().map(|list| list.len() as u64).sum();
    let mut outbox_mismatches = Vec::new();
    for (id, version) in &versions {
        let expected: Vec<u64> = (1..=*version).collect();
        let listed = outbox_versions
            .get(id.as_str())
            .cloned()
            .unwrap_or_default();
        if listed != expected {
            outbox_mismatches.push(format!(
                "{id}: events for versions {listed:?}, expected 1..={version}"
            ));
        }
    }
    let outbox_ok = outbox_mismatches.is_empty()
        && foreign == 0
        && order_events == history_entries
        && order_events == tally.applied;
    checks.push(Check::new(
        "the outbox holds exactly one event per applied change",
        outbox_ok,
        if outbox_ok {
            format!(
                "{} events = {} applied requests, versions 1..=v per order",
                group(order_events),
                group(tally.applied)
            )
        } else {
            format!(
                "{} events, {} applied requests, {} history entries, {} events of unknown orders, {} orders mismatched; first: {}",
                order_events,
                tally.applied,
                history_entries,
                foreign,
                outbox_mismatches.len(),
                first(&outbox_mismatches)
            )
        },
    ));

    // No double charge: the charges the clients saw are the payments in history.
    let paid_states: u64 = [OrderState::Paid, OrderState::Shipped, OrderState::Refunded]
        .iter()
        .map(|state| {
            ids_by_state
                .get(state.name())
                .map_or(0, |ids| ids.len() as u64)
        })
        .sum();
    let charges_ok = charge_mismatches.is_empty()
        && orders_charged_twice == 0
        && orders_charged == paid_by_history
        && orders_charged == paid_states;
    checks.push(Check::new(
        "no order charged twice",
        charges_ok,
        if charges_ok {
            format!(
                "{} orders charged once = {} paid/shipped/refunded orders",
                group(orders_charged),
                group(paid_states)
            )
        } else {
            format!(
                "{orders_charged} charged, {orders_charged_twice} twice, {paid_by_history} with a payment in history, {paid_states} paid/shipped/refunded; first: {}",
                first(&charge_mismatches)
            )
        },
    ));

    // The state index agrees with the records: counts and members.
    let mut index_mismatches = Vec::new();
    let mut final_states = Vec::new();
    let indexed_counts = orders.count_by_state()?;
    for (state, indexed) in &indexed_counts {
        let recorded = ids_by_state.get(state.name()).cloned().unwrap_or_default();
        let listed: BTreeSet<String> = orders.in_state(*state)?.into_iter().collect();
        if *indexed != recorded.len() as u64 || listed != recorded {
            index_mismatches.push(format!(
                "{}: index counts {indexed}, lists {}, records {}",
                state.name(),
                listed.len(),
                recorded.len()
            ));
        }
        final_states.push((state.name().to_owned(), *indexed));
    }
    checks.push(Check::new(
        "state index counts and members equal the records",
        index_mismatches.is_empty(),
        if index_mismatches.is_empty() {
            format!("{} states", indexed_counts.len())
        } else {
            index_mismatches.join("; ")
        },
    ));

    checks.push(Check::new(
        "pay racing cancel: exactly one applies, the other is refused",
        tally.races_with_one_winner == tally.races,
        format!(
            "{} of {} races; pay won {}, cancel won {}",
            group(tally.races_with_one_winner),
            group(tally.races),
            group(tally.races_won_by_pay),
            group(tally.races - tally.races_won_by_pay)
        ),
    ));
    checks.push(Check::new(
        "identical concurrent payments: exactly one applies, the rest replay",
        tally.stampedes_with_one_payment == tally.stampedes,
        format!(
            "{} of {} stampedes of {STAMPEDE_SIZE} identical requests",
            group(tally.stampedes_with_one_payment),
            group(tally.stampedes)
        ),
    ));
    checks.push(Check::new(
        "every other request got the outcome SPEC section 3 prescribes",
        tally.unexpected == 0,
        if tally.unexpected == 0 {
            "duplicates replayed, stale versions, reused keys and early events refused".to_owned()
        } else {
            format!(
                "{} unexpected; first: {}",
                tally.unexpected,
                tally
                    .unexpected_samples
                    .first()
                    .cloned()
                    .unwrap_or_default()
            )
        },
    ));

    Ok(InvariantReport {
        checks,
        final_states,
        orders_charged,
        orders_charged_twice,
    })
}

/// Writes the order machine as DOT, Mermaid and (with Graphviz) SVG, plain
/// and as a heat map of the final states.
fn write_graphs(
    db: Option<&Path>,
    orders: &Machine<OrderState>,
    final_states: &[(String, u64)],
) -> CliResult<(Vec<WrittenFile>, Option<String>)> {
    let dir = demo_output_dir(db)?;
    let def = orders.named().definition().clone();
    let heat = def.to_dot_with(&DotOptions {
        counts: Some(final_states.iter().cloned().collect()),
        ..DotOptions::default()
    });
    let plain = def.to_dot();
    let mut files = Vec::new();
    let mut write = |kind: &'static str, name: &str, bytes: &[u8]| -> CliResult {
        let path = dir.join(name);
        write_file(&path, bytes)?;
        files.push(WrittenFile {
            kind,
            path: path.display().to_string(),
        });
        Ok(())
    };
    write("dot", "order.dot", plain.as_bytes())?;
    write("dot heat map", "order-counts.dot", heat.as_bytes())?;
    write("mermaid", "order.mmd", def.to_mermaid().as_bytes())?;
    let mut note = None;
    if graphviz_available() {
        write("svg", "order.svg", &render_svg(&plain)?)?;
        write("svg heat map", "order-counts.svg", &render_svg(&heat)?)?;
    } else {
        note =
            Some("no SVG: Graphviz `dot` is not installed (apt-get install graphviz)".to_owned());
    }
    Ok((files, note))
}

/// The summary as text tables.
fn render_summary(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "idemflow demo: {} orders, {}{} client threads, fault rate {}, seed {}, durability {}",
        group(summary.orders),
        if summary.processes > 1 {
            format!("{} processes x ", summary.processes)
        } else {
            String::new()
        },
        summary.threads,
        summary.duplicate_rate,
        summary.seed,
        summary.durability
    );
    let _ = writeln!(
        out,
        "database: {}\n",
        summary
            .database
            .as_deref()
            .unwrap_or("temporary (deleted at exit)")
    );

    let requests = &summary.requests;
    let mut table = Table::new(&[("REQUESTS", Align::Left), ("COUNT", Align::Right)]);
    table.row(vec!["sent".into(), group(requests.sent)]);
    table.row(vec![
        "applied (creations included)".into(),
        group(requests.applied),
    ]);
    table.row(vec!["no-ops (already there)".into(), group(requests.noops)]);
    table.row(vec![
        "replays (same key again)".into(),
        group(requests.replays),
    ]);
    table.row(vec!["rejected".into(), group(requests.rejected)]);
    for (kind, count) in &requests.rejected_by_reason {
        table.row(vec![format!("  {kind}"), group(*count)]);
    }
    out.push_str(&table.render());

    let mut table = Table::new(&[("SCENARIO", Align::Left), ("ORDERS", Align::Right)]);
    for (name, count) in &summary.scenarios {
        table.row(vec![(*name).to_owned(), group(*count)]);
    }
    out.push('\n');
    out.push_str(&table.render());

    let mut table = Table::new(&[("INJECTED", Align::Left), ("TIMES", Align::Right)]);
    for (name, count) in &summary.injected_faults {
        table.row(vec![(*name).to_owned(), group(*count)]);
    }
    out.push('\n');
    out.push_str(&table.render());

    let mut table = Table::new(&[("FINAL STATE", Align::Left), ("ORDERS", Align::Right)]);
    for (state, count) in &summary.final_states {
        table.row(vec![state.clone(), group(*count)]);
    }
    table.row(vec![
        "charged (applied pay)".into(),
        group(summary.orders_charged),
    ]);
    table.row(vec![
        "charged twice".into(),
        group(summary.orders_charged_twice),
    ]);
    out.push('\n');
    out.push_str(&table.render());

    let _ = writeln!(out, "\nINVARIANT CHECKS");
    for check in &summary.checks {
        let _ = writeln!(
            out,
            "  {}  {} ({})",
            if check.pass { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    for sample in &summary.unexpected_outcomes {
        let _ = writeln!(out, "        unexpected: {sample}");
    }

    let _ = writeln!(
        out,
        "\nTHROUGHPUT\n  {} requests in {:.2} s = {} requests/s ({} threads, {} durability)",
        group(summary.requests.sent),
        summary.elapsed_seconds,
        group(summary.requests_per_second.round() as u64),
        summary.threads,
        summary.durability
    );

    let _ = writeln!(out, "\nGRAPHS OF THE ORDER MACHINE");
    let mut table = Table::new(&[("KIND", Align::Left), ("FILE", Align::Left)]).indent(2);
    for file in &summary.files {
        table.row(vec![file.kind.to_owned(), file.path.clone()]);
    }
    // Without its header line: the section title says what it is.
    let rendered = table.render();
    for line in rendered.lines().skip(1) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(note) = &summary.graph_note {
        let _ = writeln!(out, "  {note}");
    }
    out
}
