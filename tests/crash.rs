//! Crash loop (SPEC section 4): a child process (this test binary run again
//! with `IDEMFLOW_CRASH_CHILD_DB` set) sends random creations, transitions
//! and keyed requests from several threads and prints every acknowledged
//! outcome as one `ACK <json>` line; the parent kills it with SIGKILL at a
//! random moment, reopens the database and checks it:
//!
//! - under `Durability::Immediate`, every acknowledged request is there: the
//!   entity is at least at the acknowledged version, the history entry at
//!   that version is the acknowledged change, a keyed request replays its
//!   original outcome;
//! - always: `version == history length` and the history is a chain of
//!   declared transitions, the state index and the outbox (one event per
//!   history entry) agree with the records, every key record points at the
//!   change it recorded and every keyed change has its key record: no
//!   change is ever half applied.
//!
//! The next child continues on the same database, so recovery is tested again
//! and again. Each iteration has its own seed, printed with any failure;
//! `IDEMFLOW_CRASH_SEED` fixes the base seed, `IDEMFLOW_CRASH_ITERATIONS` sets
//! the number of kills per variant (default 30 for `Immediate`, 12 for
//! `Buffered`, 40 for the reads test).
//!
//! Also here: reads under `Immediate` never return what a crash takes back
//! (`reads_under_immediate_are_durable`), and a database closed in this
//! process can be opened again at once (`reopening_at_once_after_close_is_never_locked`).
//! See `docs/reliability.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use idemflow::{
    Durability, Engine, Error, HistoryRecord, MachineDef, MachineEvent, NamedRequest, OutboxEvent,
    OutcomeRecord, Request, StateMachine,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
mod common;

/// A job: cycles (retry, pause/resume) so entities keep moving for a while.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "job", initial = Queued, events = JobEvent)]
pub enum Job {
    #[on(start = Running, cancel = Cancelled)]
    Queued,
    #[on(pause = Paused, finish = Done, fail = Failed)]
    Running,
    #[on(resume = Running, cancel = Cancelled)]
    Paused,
    #[on(retry = Queued, abandon = Abandoned)]
    Failed,
    #[terminal]
    Done,
    #[terminal]
    Cancelled,
    #[terminal]
    Abandoned,
}

/// A machine known only by name, registered at run time by the child.
fn lamp() -> MachineDef {
    MachineDef::new("lamp", "off")
        .state("off")
        .state("on")
        .state("dimmed")
        .terminal_state("broken")
        .transition("off", "switch_on", "on")
        .transition("on", "switch_off", "off")
        .transition("on", "dim", "dimmed")
        .transition("dimmed", "switch_off", "off")
        .transition("dimmed", "brighten", "on")
        .transition("on", "burn_out", "broken")
}

const JOB_IDS: usize = 120;
const LAMP_IDS: usize = 60;
const CHILD_THREADS: usize = 3;
const CHILD_ENV: &str = "IDEMFLOW_CRASH_CHILD_DB";

fn ids(machine: &str) -> Vec<String> {
    let (prefix, count) = match machine {
        "job" => ("j", JOB_IDS),
        _ => ("l", LAMP_IDS),
    };
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// SplitMix64: small, deterministic, good enough for test choices.
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

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    Create,
    Apply,
    Get,
}

/// One acknowledged call, as the child prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ack {
    seed: u64,
    machine: String,
    op: Op,
    id: String,
    to: Option<String>,
    fire: Option<String>,
    key: Option<String>,
    expect: Option<u64>,
    payload: Option<Value>,
    actor: Option<String>,
    out: OutcomeRecord,
}

impl Ack {
    fn named_request(&self) -> NamedRequest {
        let mut request = match (&self.to, &self.fire) {
            (Some(to), None) => NamedRequest::to(to.clone()),
            (None, Some(event)) => NamedRequest::fire(event.clone()),
            _ => panic!("an apply ack names a target or an event: {self:?}"),
        };
        if let Some(key) = &self.key {
            request = request.key(key.clone());
        }
        if let Some(version) = self.expect {
            request = request.expect_version(version);
        }
        if let Some(payload) = &self.payload {
            request = request.payload(payload.clone());
        }
        if let Some(actor) = &self.actor {
            request = request.actor(actor.clone());
        }
        request
    }
}

// ---------------------------------------------------------------- reopening

/// Opens with `open`, retrying for up to 5 s while the database is `Locked`.
///
/// sled 0.34 releases its directory lock from background I/O threads a
/// moment after the last handle is dropped; the engine waits up to a second
/// for that (see `reopening_at_once_after_close_is_never_locked`), a raw
/// `sled::open` does not. The tests retry longer so that a loaded machine
/// does not make them fail for something they are not about.
fn open_retrying(open: impl Fn() -> idemflow::Result<Engine>) -> idemflow::Result<Engine> {
    let started = Instant::now();
    loop {
        match open() {
            Err(Error::Locked { .. }) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// `sled::open`, retrying like [`open_retrying`].
fn sled_open_retrying(dir: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match common::open_sled(dir) {
            Ok(db) => return db,
            Err(error) if started.elapsed() < Duration::from_secs(5) => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("sled::open: {error:?}"),
        }
    }
}

/// Closing a database and opening it again at once, in the same process,
/// works: `Engine` documents that the database closes when the last handle
/// is dropped, but sled releases the directory lock from background threads
/// a moment later (sled issue #1289), which refused about 1% of such reopens
/// on a loaded machine until `Engine::open` learned to wait for it.
#[test]
fn reopening_at_once_after_close_is_never_locked() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for i in 0..150 {
        match Engine::builder()
            .durability(Durability::Buffered)
            .open(dir.path())
        {
            Ok(engine) => {
                let lamps = engine.register(lamp()).unwrap();
                lamps.create(&format!("l-{i}")).unwrap();
            }
            Err(error) => refused.push(format!("reopen {i}: {error}")),
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 150 reopens right after a close were refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
}

// ---------------------------------------------------------------- the child

fn durability_from_env() -> Durability {
    match std::env::var("IDEMFLOW_CRASH_DURABILITY").as_deref() {
        Ok("buffered") => Durability::Buffered,
        _ => Durability::Immediate,
    }
}

fn print_ack(ack: &Ack) {
    let line = serde_json::to_string(ack).unwrap();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ACK {line}").unwrap();
    out.flush().unwrap();
}

fn child_fail(what: String) -> ! {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "CHILD-FAIL {what}");
    let _ = out.flush();
    std::process::exit(3);
}

/// Errors a random request may legitimately get.
fn expected_error(error: &Error) -> bool {
    matches!(
        error,
        Error::NotFound { .. } | Error::InvalidTransition { .. } | Error::VersionConflict { .. }
    )
}

fn random_payload(rng: &mut Rng) -> Option<Value> {
    match rng.below(4) {
        0 => Some(json!({"n": rng.below(1000), "s": "x".repeat(rng.below(40) as usize)})),
        1 => Some(json!([rng.below(10), null, true, "\u{e9}t\u{e9}"])),
        _ => None,
    }
}

fn random_actor(rng: &mut Rng) -> Option<String> {
    rng.chance(30).then(|| format!("actor-{}", rng.below(5)))
}

/// One worker of the child: random requests until killed (or 30 s pass).
fn child_worker(engine: &Engine, seed: u64, thread: usize) {
    let mut rng = Rng(seed ^ (thread as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let jobs = engine.machine::<Job>().unwrap();
    let lamps = engine.machine_by_name("lamp").unwrap();
    let job_ids = ids("job");
    let lamp_ids = ids("lamp");
    let job_events: Vec<&str> = JobEvent::all().iter().map(|e| e.name()).collect();
    let lamp_def = lamp();
    let lamp_events: Vec<String> = lamp_def.events().iter().map(|e| e.to_string()).collect();
    let lamp_states: Vec<String> = lamp_def.states.iter().map(|s| s.name.clone()).collect();
    let mut sent = 0u64;
    let mut keyed: Vec<Ack> = Vec::new();
    let mut seen_version: HashMap<String, u64> = HashMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let is_job = rng.chance(65);
        let machine = if is_job { "job" } else { "lamp" };
        let id = rng.pick(if is_job { &job_ids } else { &lamp_ids }).clone();
        let roll = rng.below(100);
        let mut ack = Ack {
            seed,
            machine: machine.to_owned(),
            op: Op::Apply,
            id: id.clone(),
            to: None,
            fire: None,
            key: None,
            expect: None,
            payload: None,
            actor: None,
            out: OutcomeRecord {
                id: id.clone(),
                state: String::new(),
                version: 0,
                applied: false,
                from: None,
                event: None,
                replay: false,
                at: 0,
            },
        };
        let result: idemflow::Result<OutcomeRecord> = if roll < 15 {
            ack.op = Op::Create;
            ack.payload = random_payload(&mut rng);
            ack.actor = random_actor(&mut rng);
            if is_job {
                jobs.create_with(&id, ack.payload.clone(), ack.actor.clone())
                    .map(|outcome| outcome.to_record())
            } else {
                lamps.create_with(&id, ack.payload.clone(), ack.actor.clone())
            }
        } else if roll < 25 {
            ack.op = Op::Get;
            let record = engine.machine_by_name(machine).unwrap().get(&id);
            match record {
                Ok(None) => continue,
                Ok(Some(record)) => Ok(OutcomeRecord {
                    id: id.clone(),
                    state: record.state,
                    version: record.version,
                    applied: false,
                    from: None,
                    event: None,
                    replay: false,
                    at: record.updated_at,
                }),
                Err(error) => Err(error),
            }
        } else if roll < 33 && !keyed.is_empty() {
            // A retry of an earlier keyed request of this thread.
            let original = rng.pick(&keyed).clone();
            ack = Ack {
                out: ack.out,
                ..original.clone()
            };
            let named = engine.machine_by_name(&original.machine).unwrap();
            named.apply(&original.id, original.named_request())
        } else {
            if rng.chance(50) {
                ack.fire = Some(if is_job {
                    let event = rng.pick(&job_events).to_string();
                    if ["cancel", "finish", "abandon"].contains(&event.as_str()) && rng.chance(70) {
                        "start".to_owned()
                    } else {
                        event
                    }
                } else {
                    let event = rng.pick(&lamp_events).clone();
                    if event == "burn_out" && rng.chance(70) {
                        "switch_on".to_owned()
                    } else {
                        event
                    }
                });
            } else {
                // Mostly states that are not terminal, so entities keep moving.
                let terminal_ok = rng.chance(10);
                ack.to = Some(if is_job {
                    let states: Vec<Job> = Job::states()
                        .iter()
                        .copied()
                        .filter(|state| terminal_ok || !state.is_terminal())
                        .collect();
                    rng.pick(&states).name().to_owned()
                } else {
                    let state = rng.pick(&lamp_states).clone();
                    if lamp_def.is_terminal(&state) && !terminal_ok {
                        "on".to_owned()
                    } else {
                        state
                    }
                });
            }
            if rng.chance(50) {
                sent += 1;
                ack.key = Some(format!("k{seed:016x}-{thread}-{sent}"));
            }
            if rng.chance(20) {
                let guess = seen_version.get(&id).copied().unwrap_or(1);
                ack.expect = Some(if rng.chance(70) {
                    guess
                } else {
                    rng.below(6) + 1
                });
            }
            ack.payload = random_payload(&mut rng);
            ack.actor = random_actor(&mut rng);
            if is_job {
                // Through the typed handle: the same request by the same names.
                let mut request = match (&ack.to, &ack.fire) {
                    (Some(to), _) => Request::to(Job::from_name(to).unwrap()),
                    (_, Some(event)) => Request::fire(JobEvent::from_name(event).unwrap()),
                    _ => unreachable!(),
                };
                if let Some(key) = &ack.key {
                    request = request.key(key.clone());
                }
                if let Some(version) = ack.expect {
                    request = request.expect_version(version);
                }
                if let Some(payload) = &ack.payload {
                    request = request.payload(payload.clone());
                }
                if let Some(actor) = &ack.actor {
                    request = request.actor(actor.clone());
                }
                jobs.apply(&id, request).map(|outcome| outcome.to_record())
            } else {
                lamps.apply(&id, ack.named_request())
            }
        };
        match result {
            Ok(out) => {
                seen_version.insert(id.clone(), out.version);
                ack.out = out;
                if ack.op == Op::Apply && ack.key.is_some() && !ack.out.replay {
                    keyed.push(ack.clone());
                }
                print_ack(&ack);
            }
            Err(error) if expected_error(&error) => {
                if let Error::VersionConflict { actual, .. } = error {
                    seen_version.insert(id.clone(), actual);
                }
            }
            Err(error) => child_fail(format!("{ack:?}: unexpected error {error:?} / {error}")),
        }
    }
}

/// The child: does something only when run by the crash loop.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("IDEMFLOW_CRASH_CHILD_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let engine = open_retrying(|| {
        Engine::builder()
            .durability(durability_from_env())
            .open(&path)
    })
    .unwrap_or_else(|error| child_fail(format!("open: {error:?}")));
    engine
        .machine::<Job>()
        .unwrap_or_else(|error| child_fail(format!("job: {error:?}")));
    engine
        .register(lamp())
        .unwrap_or_else(|error| child_fail(format!("lamp: {error:?}")));
    println!("READY");
    std::panic::set_hook(Box::new(|info| child_fail(format!("panic: {info}"))));
    std::thread::scope(|scope| {
        for thread in 0..CHILD_THREADS {
            let engine = &engine;
            scope.spawn(move || child_worker(engine, seed, thread));
        }
    });
}

/// The child of `reads_under_immediate_are_durable`: one thread moves an
/// entity back and forth, two threads read it and print every new version.
#[test]
fn reads_child() {
    let Ok(path) = std::env::var(READS_CHILD_ENV) else {
        return;
    };
    let engine = open_retrying(|| Engine::open(&path))
        .unwrap_or_else(|error| child_fail(format!("open: {error:?}")));
    let lamps = engine.register(lamp()).unwrap();
    lamps.create("x").unwrap();
    std::panic::set_hook(Box::new(|info| child_fail(format!("panic: {info}"))));
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while started.elapsed() < Duration::from_secs(30) {
                for event in ["switch_on", "switch_off"] {
                    lamps.apply("x", NamedRequest::fire(event)).unwrap();
                }
            }
        });
        for _ in 0..2 {
            scope.spawn(|| {
                let mut last = 0;
                while started.elapsed() < Duration::from_secs(30) {
                    let version = lamps.get("x").unwrap().unwrap().version;
                    if version != last {
                        last = version;
                        let stdout = std::io::stdout();
                        let mut out = stdout.lock();
                        writeln!(out, "SEEN {version}").unwrap();
                        out.flush().unwrap();
                    }
                }
            });
        }
    });
}

const READS_CHILD_ENV: &str = "IDEMFLOW_READS_CHILD_DB";

/// Under `Durability::Immediate`, what a read returned survives a crash: a
/// reader never sees a version that a crash then takes back (else, over
/// HTTP, an ETag handed out before the crash names another change after it).
/// The engine already waits for durability before answering a no-op or a
/// replay; `get` (and `history`, `in_state`, `count_by_state`) must too.
#[test]
fn reads_under_immediate_are_durable() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(READS_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = base_seed();
    let mut rng = Rng(base);
    let kills = iterations(40);
    let mut lost = Vec::new();
    for kill in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "reads_child", "--nocapture", "--test-threads=1"])
            .env(READS_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut seen = 0u64;
            let mut failure = None;
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if line.last() == Some(&b'\n') {
                    let text = String::from_utf8_lossy(&line);
                    if let Some(at) = text.find("SEEN ") {
                        seen = seen.max(text[at + 5..].trim().parse().unwrap());
                    } else if let Some(at) = text.find("CHILD-FAIL") {
                        failure = Some(text[at..].to_string());
                    }
                }
                line.clear();
            }
            (seen, failure)
        });
        std::thread::sleep(Duration::from_millis(60 + rng.below(120)));
        child.kill().unwrap();
        child.wait().unwrap();
        let (seen, failure) = reader.join().unwrap();
        assert!(failure.is_none(), "kill {kill}: {failure:?}");
        let engine = open_retrying(|| Engine::open(dir.path())).unwrap();
        let version = match engine.machine_by_name("lamp") {
            Ok(lamps) => lamps.get("x").unwrap().map_or(0, |record| record.version),
            Err(_) => 0,
        };
        if seen > version {
            lost.push(format!(
                "kill {kill}: a reader saw version {seen}, after the crash the entity is at {version}"
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {kills} kills took back a version a reader had seen (base seed {base}): {lost:#?}",
        lost.len()
    );
}

// ---------------------------------------------------------------- the parent

struct Iteration {
    acks: Vec<Ack>,
    ready: bool,
    failure: Option<String>,
}

/// Runs one child on `dir` and kills it at a moment chosen by `rng`.
fn run_child(dir: &Path, seed: u64, durability: Durability, rng: &mut Rng) -> Iteration {
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env("IDEMFLOW_CRASH_CHILD_SEED", seed.to_string())
        .env(
            "IDEMFLOW_CRASH_DURABILITY",
            match durability {
                Durability::Immediate => "immediate",
                Durability::Buffered => "buffered",
            },
        )
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                // A line cut by the kill has no newline: it was not acknowledged.
                Ok(_) if line.last() != Some(&b'\n') => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if lines_tx.send(text).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let mut iteration = Iteration {
        acks: Vec::new(),
        ready: false,
        failure: None,
    };
    // libtest may print "test crash_child ... " in front of the first line.
    let take = |line: String, iteration: &mut Iteration| {
        if let Some(at) = line.find("ACK {") {
            iteration
                .acks
                .push(serde_json::from_str(&line[at + 4..]).unwrap());
        } else if line.ends_with("READY") {
            iteration.ready = true;
        } else if let Some(at) = line.find("CHILD-FAIL") {
            iteration.failure = Some(line[at..].to_owned());
        }
    };
    let started = Instant::now();
    if rng.chance(10) {
        // Early: while the database opens and recovers, or right after.
        std::thread::sleep(Duration::from_millis(rng.below(40)));
    } else {
        let wanted = 1 + rng.below(150) as usize;
        while iteration.acks.len() < wanted && started.elapsed() < Duration::from_secs(20) {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => take(line, &mut iteration),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if iteration.failure.is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
    }
    let exited_by_itself = child.try_wait().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    // Lines printed before the kill are acknowledgements too.
    while let Ok(line) = lines.try_recv() {
        take(line, &mut iteration);
    }
    if iteration.failure.is_none() {
        if let Some(status) = exited_by_itself {
            iteration.failure = Some(format!("the child exited by itself: {status}"));
        }
    }
    iteration
}

fn declared(def: &MachineDef, from: &str, event: Option<&str>, to: &str) -> bool {
    def.transitions
        .iter()
        .any(|t| t.from == from && t.to == to && event.is_none_or(|e| t.event == e))
}

/// What the checks saw, for the checks that need the engine closed.
type Histories = BTreeMap<(String, String), Vec<HistoryRecord>>;

/// Checks every invariant of the database that does not depend on what was
/// acknowledged; returns every history.
fn check_invariants(engine: &Engine, context: &str) -> Histories {
    let defs = engine.machines().unwrap();
    let names: BTreeSet<&str> = defs.iter().map(|def| def.name.as_str()).collect();
    assert!(
        names.iter().all(|name| ["job", "lamp"].contains(name)),
        "{context}: unexpected machines {names:?}"
    );
    if let Some(def) = defs.iter().find(|def| def.name == "job") {
        assert_eq!(def, &Job::definition(), "{context}: stored job definition");
    }
    if let Some(def) = defs.iter().find(|def| def.name == "lamp") {
        assert_eq!(def, &lamp(), "{context}: stored lamp definition");
    }
    let outbox = engine.outbox().pending(usize::MAX).unwrap();
    assert_eq!(
        outbox.len(),
        engine.outbox().len().unwrap(),
        "{context}: outbox len"
    );
    let mut histories = Histories::new();
    for def in &defs {
        let named = engine.machine_by_name(&def.name).unwrap();
        let mut by_state: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut all_ids: BTreeSet<String> = ids(&def.name).into_iter().collect();
        for state in &def.states {
            all_ids.extend(named.in_state(&state.name, None, usize::MAX).unwrap());
        }
        for id in &all_ids {
            let ctx = format!("{context}: {} {id:?}", def.name);
            let record = named.get(id).unwrap();
            let history = named.history(id).unwrap();
            let Some(record) = record else {
                assert!(
                    history.is_empty(),
                    "{ctx}: history without a record: {history:?}"
                );
                continue;
            };
            assert_eq!(
                record.version,
                history.len() as u64,
                "{ctx}: version != history length"
            );
            for (i, entry) in history.iter().enumerate() {
                assert_eq!(entry.version, i as u64 + 1, "{ctx}: history versions");
                if i == 0 {
                    assert_eq!(entry.from, None, "{ctx}: creation has a from");
                    assert_eq!(entry.to, def.initial, "{ctx}: creation state");
                    assert_eq!(
                        (&entry.event, &entry.key),
                        (&None, &None),
                        "{ctx}: creation"
                    );
                } else {
                    let previous = &history[i - 1];
                    assert_eq!(
                        entry.from.as_deref(),
                        Some(previous.to.as_str()),
                        "{ctx}: chain"
                    );
                    assert!(
                        declared(def, &previous.to, entry.event.as_deref(), &entry.to),
                        "{ctx}: undeclared change {entry:?}"
                    );
                    assert!(entry.at >= previous.at, "{ctx}: time went back");
                }
            }
            let last = history.last().unwrap();
            assert_eq!(last.to, record.state, "{ctx}: last entry is not the state");
            assert_eq!(record.updated_at, last.at, "{ctx}: updated_at");
            assert_eq!(record.created_at, history[0].at, "{ctx}: created_at");
            by_state
                .entry(record.state.clone())
                .or_default()
                .insert(id.clone());
            histories.insert((def.name.clone(), id.clone()), history);
        }
        // The state index equals the records.
        for (state, count) in named.count_by_state().unwrap() {
            let expected: Vec<String> = by_state
                .get(&state)
                .map(|ids| ids.iter().cloned().collect())
                .unwrap_or_default();
            let indexed = named.in_state(&state, None, usize::MAX).unwrap();
            assert_eq!(
                indexed, expected,
                "{context}: {} in_state({state})",
                def.name
            );
            assert_eq!(
                count,
                expected.len() as u64,
                "{context}: {} count({state})",
                def.name
            );
        }
    }
    // The outbox: exactly one event per history entry, in version order per entity.
    let mut events: BTreeMap<(String, String), Vec<&OutboxEvent>> = BTreeMap::new();
    for event in &outbox {
        events
            .entry((event.machine.clone(), event.id.clone()))
            .or_default()
            .push(event);
    }
    for (entity, list) in &events {
        assert!(
            histories.contains_key(entity),
            "{context}: outbox events of an entity without a record: {list:?}"
        );
    }
    for (entity, history) in &histories {
        let list = events.get(entity).cloned().unwrap_or_default();
        assert_eq!(
            list.len(),
            history.len(),
            "{context}: {entity:?}: outbox events {list:?} != history {history:?}"
        );
        for (event, entry) in list.iter().zip(history) {
            let as_entry = HistoryRecord {
                version: event.version,
                from: event.from.clone(),
                to: event.to.clone(),
                event: event.event.clone(),
                key: event.key.clone(),
                payload: event.payload.clone(),
                actor: event.actor.clone(),
                at: event.at,
            };
            assert_eq!(
                &as_entry, entry,
                "{context}: {entity:?}: outbox event != history"
            );
        }
    }
    histories
}

fn same_outcome(a: &OutcomeRecord, b: &OutcomeRecord) -> bool {
    OutcomeRecord {
        replay: false,
        ..a.clone()
    } == OutcomeRecord {
        replay: false,
        ..b.clone()
    }
}

/// Whether an acknowledged call is in the database (for counting what a
/// `Buffered` crash lost).
fn ack_present(histories: &Histories, ack: &Ack) -> bool {
    let Some(history) = histories.get(&(ack.machine.clone(), ack.id.clone())) else {
        return false;
    };
    let Some(entry) = history.get(ack.out.version as usize - 1) else {
        return false;
    };
    entry.to == ack.out.state
        && (!ack.out.applied || (entry.at == ack.out.at && entry.from == ack.out.from))
}

/// Checks that an acknowledged call is in the database (`Immediate`).
fn check_ack_present(engine: &Engine, histories: &Histories, ack: &Ack, context: &str) {
    let ctx = format!("{context}: ack {ack:?}");
    let history = histories
        .get(&(ack.machine.clone(), ack.id.clone()))
        .unwrap_or_else(|| panic!("{ctx}: the entity is missing"));
    let out = &ack.out;
    assert!(
        history.len() as u64 >= out.version,
        "{ctx}: the entity is at version {}, the ack said {}",
        history.len(),
        out.version
    );
    let entry = &history[out.version as usize - 1];
    assert_eq!(
        entry.to, out.state,
        "{ctx}: state at the acknowledged version"
    );
    if out.applied && !out.replay {
        let expected = HistoryRecord {
            version: out.version,
            from: out.from.clone(),
            to: out.state.clone(),
            event: out.event.clone(),
            key: ack.key.clone(),
            payload: ack.payload.clone(),
            actor: ack.actor.clone(),
            at: out.at,
        };
        assert_eq!(
            entry, &expected,
            "{ctx}: the history entry is not the acknowledged change"
        );
    }
    if out.applied {
        assert_eq!(entry.at, out.at, "{ctx}: time of the change");
        assert_eq!(entry.from, out.from, "{ctx}: from of the change");
    }
    if ack.op == Op::Apply && ack.key.is_some() {
        let named = engine.machine_by_name(&ack.machine).unwrap();
        let replay = named
            .apply(&ack.id, ack.named_request())
            .unwrap_or_else(|error| panic!("{ctx}: replaying the keyed request: {error:?}"));
        assert!(
            replay.replay,
            "{ctx}: the keyed request was not replayed: {replay:?}"
        );
        assert!(same_outcome(&replay, out), "{ctx}: replayed {replay:?}");
    }
}

/// A stored key record, the part the checks need.
struct KeyRecord {
    id: String,
    state: String,
    version: u64,
    applied: bool,
}

fn read_str(value: &[u8], at: &mut usize) -> String {
    let len = u32::from_be_bytes(value[*at..*at + 4].try_into().unwrap()) as usize;
    let text = String::from_utf8(value[*at + 4..*at + 4 + len].to_vec()).unwrap();
    *at += 4 + len;
    text
}

fn read_u64(value: &[u8], at: &mut usize) -> u64 {
    let number = u64::from_be_bytes(value[*at..*at + 8].try_into().unwrap());
    *at += 8;
    number
}

/// Decodes the head of a key record (see `docs/storage-format.md`): format
/// byte, fingerprint, expiry, then the outcome's id, state, version, applied.
fn decode_key_record(value: &[u8]) -> KeyRecord {
    assert_eq!(value[0], 1, "format version");
    let mut at = 1 + 32;
    let _expires = read_u64(value, &mut at);
    let id = read_str(value, &mut at);
    let state = read_str(value, &mut at);
    let version = read_u64(value, &mut at);
    let applied = value[at] == 1;
    KeyRecord {
        id,
        state,
        version,
        applied,
    }
}

/// The outcome acknowledged for each key; every acknowledgement of a key
/// (the first and the replays) must agree.
fn acked_keys(acks: &[Ack], context: &str) -> HashMap<(String, String), OutcomeRecord> {
    let mut firsts: HashMap<(String, String), OutcomeRecord> = HashMap::new();
    for ack in acks.iter().filter(|ack| ack.key.is_some()) {
        let key = (ack.machine.clone(), ack.key.clone().unwrap());
        match firsts.get(&key) {
            None => {
                firsts.insert(key, ack.out.clone());
            }
            Some(first) => assert!(
                same_outcome(first, &ack.out),
                "{context}: key {key:?} acknowledged as {first:?} and as {ack:?}"
            ),
        }
    }
    firsts
}

/// With the engine closed: every key record points at the change it
/// recorded and agrees with its acknowledgement, and every keyed change has
/// its key record.
fn check_key_records(
    dir: &Path,
    histories: &Histories,
    acked: &HashMap<(String, String), OutcomeRecord>,
    context: &str,
) -> usize {
    let db = sled_open_retrying(dir);
    let mut count = 0;
    for machine in ["job", "lamp"] {
        let tree = db.open_tree(format!("keys/{machine}")).unwrap();
        let mut stored = BTreeSet::new();
        for item in tree.iter() {
            let (key, value) = item.unwrap();
            let key = String::from_utf8(key.to_vec()).unwrap();
            let record = decode_key_record(&value);
            let ctx = format!("{context}: key record {key} of {machine} {:?}", record.id);
            let history = histories
                .get(&(machine.to_owned(), record.id.clone()))
                .unwrap_or_else(|| panic!("{ctx}: no such entity"));
            let entry = history
                .get(record.version as usize - 1)
                .unwrap_or_else(|| panic!("{ctx}: no history entry {}", record.version));
            assert_eq!(entry.to, record.state, "{ctx}: state");
            if record.applied {
                assert_eq!(
                    entry.key.as_deref(),
                    Some(key.as_str()),
                    "{ctx}: the change is not keyed"
                );
            }
            if let Some(out) = acked.get(&(machine.to_owned(), key.clone())) {
                assert_eq!(
                    (&out.id, &out.state, out.version, out.applied),
                    (&record.id, &record.state, record.version, record.applied),
                    "{ctx}: the key record is not the acknowledged outcome"
                );
            }
            stored.insert(key);
            count += 1;
        }
        for ((m, id), history) in histories {
            for entry in history.iter().filter(|_| m == machine) {
                if let Some(key) = &entry.key {
                    assert!(
                        stored.contains(key),
                        "{context}: {m} {id:?} version {} has key {key} but no key record",
                        entry.version
                    );
                }
            }
        }
    }
    count
}

fn iterations(default: usize) -> usize {
    std::env::var("IDEMFLOW_CRASH_ITERATIONS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn base_seed() -> u64 {
    std::env::var("IDEMFLOW_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn crash_loop(durability: Durability, default_iterations: usize) {
    let dir = tempfile::tempdir().unwrap();
    let base = base_seed();
    let iterations = iterations(default_iterations);
    let mut rng = Rng(base);
    let mut all_acks: Vec<Ack> = Vec::new();
    let mut kills = 0;
    let mut ready_kills = 0;
    let mut lost = 0;
    let started = Instant::now();
    for iteration in 0..iterations {
        let seed = rng.next();
        let context = format!(
            "{durability:?} crash loop, base seed {base} (IDEMFLOW_CRASH_SEED), iteration {iteration}, seed {seed}"
        );
        let run = run_child(dir.path(), seed, durability, &mut rng);
        if let Some(failure) = &run.failure {
            panic!("{context}: {failure}");
        }
        kills += 1;
        ready_kills += usize::from(run.ready);
        let engine = open_retrying(|| Engine::open(dir.path()))
            .unwrap_or_else(|error| panic!("{context}: reopening after the kill: {error:?}"));
        let histories = check_invariants(&engine, &context);
        if durability == Durability::Immediate {
            for ack in &run.acks {
                check_ack_present(&engine, &histories, ack, &context);
            }
        } else {
            lost += run
                .acks
                .iter()
                .filter(|ack| !ack_present(&histories, ack))
                .count();
        }
        drop(engine);
        all_acks.extend(run.acks);
        let acked = acked_keys(&all_acks, &context);
        check_key_records(dir.path(), &histories, &acked, &context);
    }
    // At the end, every acknowledgement of every iteration once more.
    let engine = open_retrying(|| Engine::open(dir.path())).unwrap();
    let context = format!("{durability:?} crash loop, base seed {base}, final check");
    let histories = check_invariants(&engine, &context);
    let acked = acked_keys(&all_acks, &context);
    if durability == Durability::Immediate {
        for ack in &all_acks {
            check_ack_present(&engine, &histories, ack, &context);
        }
    }
    let changes: usize = histories.values().map(Vec::len).sum();
    let events = engine.outbox().len().unwrap();
    drop(engine);
    let keys = check_key_records(dir.path(), &histories, &acked, &context);
    eprintln!(
        "{durability:?} crash loop: {kills} kills ({ready_kills} after the child was ready), \
         {} acknowledged calls checked, {} entities, {changes} history entries, \
         {events} outbox events, {keys} key records, {lost} acknowledged calls lost \
         (allowed only under Buffered), {:.1} s (base seed {base})",
        all_acks.len(),
        histories.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(kills == iterations);
    assert!(
        iterations < 5 || !all_acks.is_empty(),
        "{context}: the children acknowledged nothing"
    );
}

#[test]
fn crash_loop_immediate_keeps_every_acknowledged_call() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_loop(Durability::Immediate, 30);
}

#[test]
fn crash_loop_buffered_never_half_applies() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    crash_loop(Durability::Buffered, 12);
}
