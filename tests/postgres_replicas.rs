//! Many engine processes on one PostgreSQL database (SPEC section 4: "any
//! number of processes share one database, with the same guarantees").
//!
//! The test binary re-executes itself as children (`replica_child`), each an
//! engine process with [`THREADS`] threads sending random requests (creations,
//! reads, transitions by target and by event, with and without keys drawn
//! from a small per-entity pool, so identical keyed requests and conflicting
//! transitions meet on the same entities, across processes). Each child
//! appends every call it completed, with its invocation and return times on
//! the machine's clock, to a file of its own.
//!
//! - `replicas_are_linearizable_and_apply_each_request_at_most_once`: 4
//!   processes x 4 threads; every entity's merged history passes the
//!   linearizability checker of `tests/common/linearizability.rs`; each key
//!   is applied at most once; version == history length; one outbox event
//!   per applied change.
//! - `a_killed_replica_loses_nothing_acknowledged`: one process is killed
//!   (SIGKILL) mid-load; the others finish; every change any process was
//!   told was applied is there, and the invariants hold.
//! - `a_server_restart_mid_load_gives_clear_errors_and_no_double_apply`: the
//!   server is restarted (`scripts/pg-cluster.sh restart`) under load;
//!   callers get an answer or a clear `Storage`/`CommitUnknown` error, the
//!   later calls succeed again, nothing is applied twice, and the retry of
//!   every unknown outcome with its key tells the truth.
//!
//! Needs `IDEMFLOW_TEST_POSTGRES_URL` (and `IDEMFLOW_TEST_PG_CLUSTER` for the
//! restart); skipped visibly otherwise. Everything runs under a watchdog.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine, Error, NamedMachine};

use common::backend::{postgres_url, skip_postgres, with_schema};
use common::linearizability::*;
use common::watchdog;

const PROCESSES: usize = 4;
const THREADS: usize = 4;
const ENTITIES: usize = 8;
/// Calls per thread in the linearizability run: 16 threads x 40 calls over
/// 8 entities (chosen at random) is 80 calls per entity on average, and the
/// checker takes up to 128: 128 is 5.7 standard deviations above the mean,
/// so no entity gets there in practice. (With 48 calls, a mean of 96, about
/// 1 run in 400 had an entity past 128 and failed the checker's limit.)
const LIN_CALLS: usize = 40;
const CHILD_ENV: &str = "IDEMFLOW_REPLICA_CHILD";
const LIMIT: Duration = Duration::from_secs(240);

/// The tests of this binary restart the server or load it: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn is_child() -> bool {
    std::env::var(CHILD_ENV).is_ok()
}

/// The database for one test: a fresh schema, or `None` (skip printed).
fn database(test: &str) -> Option<String> {
    match postgres_url() {
        Ok(url) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            Some(with_schema(
                &url,
                &format!("r_{test}_{}_{}", std::process::id(), nanos % 100_000),
            ))
        }
        Err(why) => {
            skip_postgres(test, &why);
            None
        }
    }
}

/// Nanoseconds on the machine's clock (shared by every process).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the child

/// How a child works, from its environment.
struct ChildPlan {
    url: String,
    process: usize,
    seed: u64,
    out: PathBuf,
    go: PathBuf,
    durability: Durability,
    /// Calls per thread; 0: until `stop` appears.
    calls: usize,
    stop: PathBuf,
}

fn child_plan() -> ChildPlan {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
    let dir = PathBuf::from(var("IDEMFLOW_REPLICA_DIR"));
    let process: usize = var("IDEMFLOW_REPLICA_PROCESS").parse().unwrap();
    ChildPlan {
        url: var(CHILD_ENV),
        process,
        seed: var("IDEMFLOW_REPLICA_SEED").parse().unwrap(),
        out: dir.join(format!("ops-{process}.jsonl")),
        go: dir.join("go"),
        stop: dir.join("stop"),
        durability: match var("IDEMFLOW_REPLICA_DURABILITY").as_str() {
            "buffered" => Durability::Buffered,
            _ => Durability::Immediate,
        },
        calls: var("IDEMFLOW_REPLICA_CALLS").parse().unwrap(),
    }
}

#[cfg(feature = "postgres")]
fn try_connect(url: &str, durability: Durability) -> idemflow::Result<Engine> {
    Engine::builder().durability(durability).connect(url)
}

#[cfg(not(feature = "postgres"))]
fn try_connect(_url: &str, _durability: Durability) -> idemflow::Result<Engine> {
    unreachable!("without the feature, every case is skipped before it connects")
}

/// Connects with retries: the server may be restarting.
fn connect(url: &str, durability: Durability) -> Engine {
    let started = Instant::now();
    loop {
        match try_connect(url, durability) {
            Ok(engine) => return engine,
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("replica: connect failed ({error}), retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => panic!("replica: connect failed: {error}"),
        }
    }
}

#[test]
fn replica_child() {
    if !is_child() {
        return;
    }
    let plan = child_plan();
    let engine = connect(&plan.url, plan.durability);
    let rings = register(&engine);
    std::fs::write(plan.out.with_extension("ready"), b"ready").unwrap();
    while !plan.go.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = Mutex::new(std::fs::File::create(&plan.out).unwrap());
    let ids: Vec<String> = (0..ENTITIES).map(|e| format!("e{e}")).collect();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (rings, out, ids, plan) = (&rings, &out, &ids, &plan);
            scope.spawn(move || {
                let thread = plan.process * THREADS + t;
                let mut rng =
                    Rng(plan.seed ^ (thread as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
                let subject = Real(rings.clone());
                let mut last = 0;
                let mut done = 0;
                while (plan.calls == 0 && !plan.stop.exists()) || done < plan.calls {
                    let id = &ids[rng.below(ENTITIES as u64) as usize];
                    let call = random_call(&mut rng, id);
                    let invoked = now_ns().max(last + 1);
                    let ret = subject.call(id, &call);
                    let returned = now_ns().max(invoked + 1);
                    last = returned;
                    done += 1;
                    let line = serde_json::to_string(&(
                        id,
                        Operation {
                            thread,
                            call,
                            ret,
                            invoked,
                            returned,
                        },
                    ))
                    .unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "{line}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

fn register(engine: &Engine) -> NamedMachine {
    let started = Instant::now();
    loop {
        match engine.register(ring()) {
            Ok(rings) => return rings,
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("replica: register failed ({error}), retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => panic!("replica: register failed: {error}"),
        }
    }
}

// ---------------------------------------------------------------- the parent

struct Children {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

fn spawn_children(url: &str, durability: Durability, calls: usize, seed: u64) -> Children {
    let dir = tempfile::tempdir().unwrap();
    let children = (0..PROCESSES)
        .map(|process| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "replica_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, url)
                .env("IDEMFLOW_REPLICA_DIR", dir.path())
                .env("IDEMFLOW_REPLICA_PROCESS", process.to_string())
                .env(
                    "IDEMFLOW_REPLICA_SEED",
                    (seed ^ (process as u64 * 7919)).to_string(),
                )
                .env(
                    "IDEMFLOW_REPLICA_DURABILITY",
                    match durability {
                        Durability::Buffered => "buffered",
                        _ => "immediate",
                    },
                )
                .env("IDEMFLOW_REPLICA_CALLS", calls.to_string())
                .env("RUST_BACKTRACE", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut children = Children { dir, children };
    // Start together, once every process is connected.
    let started = Instant::now();
    while (0..PROCESSES).any(|p| !children.path(&format!("ops-{p}.ready")).exists()) {
        for child in &mut children.children {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a replica exited before it was ready: {status}");
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replicas never got ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(children.path("go"), b"go").unwrap();
    children
}

impl Children {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Lines of completed calls so far, of every process.
    fn operations(&self) -> BTreeMap<String, Vec<Operation>> {
        let mut histories: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
        for process in 0..PROCESSES {
            for (id, op) in read_ops(&self.path(&format!("ops-{process}.jsonl"))) {
                histories.entry(id).or_default().push(op);
            }
        }
        histories
    }

    fn calls_done(&self, process: usize) -> usize {
        read_ops(&self.path(&format!("ops-{process}.jsonl"))).len()
    }

    /// Waits for every child; returns their exit statuses.
    fn wait(&mut self) -> Vec<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .map(|child| child.wait().unwrap())
            .collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_ops(path: &Path) -> Vec<(String, Operation)> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        // A line cut by a kill is not a completed call.
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

/// The invariants of SPEC sections 2 and 5 over every entity, and "each key
/// applied at most once". Returns the histories by id.
fn check_database(url: &str) -> BTreeMap<String, Vec<idemflow::HistoryRecord>> {
    let engine = connect(url, Durability::Immediate);
    let rings = engine.machine_by_name("ring").unwrap();
    let events = engine.outbox().pending(usize::MAX).unwrap();
    let mut histories = BTreeMap::new();
    let mut keys_applied: BTreeMap<String, usize> = BTreeMap::new();
    for e in 0..ENTITIES {
        let id = format!("e{e}");
        let history = rings.history(&id).unwrap();
        match rings.get(&id).unwrap() {
            None => assert!(history.is_empty(), "{id}: history without a record"),
            Some(record) => {
                assert_eq!(
                    record.version,
                    history.len() as u64,
                    "{id}: version != history length"
                );
                assert_eq!(
                    history.last().map(|h| h.to.as_str()),
                    Some(record.state.as_str())
                );
            }
        }
        for (i, entry) in history.iter().enumerate() {
            assert_eq!(entry.version, i as u64 + 1, "{id}: history versions");
            if let Some(key) = &entry.key {
                *keys_applied.entry(format!("{id}/{key}")).or_default() += 1;
            }
        }
        let mine: Vec<u64> = events
            .iter()
            .filter(|event| event.machine == "ring" && event.id == id)
            .map(|event| event.version)
            .collect();
        let expected: Vec<u64> = (1..=history.len() as u64).collect();
        assert_eq!(
            mine, expected,
            "{id}: one outbox event per applied change, in order"
        );
        histories.insert(id, history);
    }
    for (key, times) in keys_applied {
        assert_eq!(times, 1, "key {key} was applied {times} times");
    }
    histories
}

fn seed() -> u64 {
    std::env::var("IDEMFLOW_LIN_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(now_ns)
}

#[test]
fn replicas_are_linearizable_and_apply_each_request_at_most_once() {
    if is_child() {
        return;
    }
    let Some(url) = database("replicas_linearizable") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    watchdog(
        "4 processes x 4 threads on one database",
        LIMIT,
        move || {
            let seed = seed();
            let mut children = spawn_children(&url, Durability::Buffered, LIN_CALLS, seed);
            for (process, status) in children.wait().into_iter().enumerate() {
                assert!(status.success(), "replica {process} failed: {status}");
            }
            let histories = children.operations();
            let def = ring();
            let mut checked = 0;
            let mut operations = 0;
            for (id, history) in &histories {
                assert!(
                    history.iter().all(|op| !matches!(op.ret, Ret::Other(_))),
                    "{id}: unexpected error in {history:#?}"
                );
                let (verdict, _) = check(&def, history);
                if verdict != Verdict::Linearizable {
                    let mut sorted = history.clone();
                    sorted.sort_by_key(|op| op.invoked);
                    panic!("{id} (seed {seed}) is not linearizable across processes:\n{sorted:#?}");
                }
                checked += 1;
                operations += history.len();
            }
            assert_eq!(operations, PROCESSES * THREADS * LIN_CALLS);
            check_database(&url);
            eprintln!(
            "replicas: {checked} entity histories ({operations} calls from {PROCESSES} processes x \
             {THREADS} threads) linearizable; each key applied at most once (seed {seed})"
        );
        },
    );
}

#[test]
fn a_killed_replica_loses_nothing_acknowledged() {
    if is_child() {
        return;
    }
    let Some(url) = database("replica_killed") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    watchdog("kill -9 of one replica under load", LIMIT, move || {
        let mut children = spawn_children(&url, Durability::Immediate, 150, seed());
        let started = Instant::now();
        while children.calls_done(0) < 40 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "replica 0 makes no progress"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        children.children[0].kill().unwrap(); // SIGKILL
        let statuses = children.wait();
        for (process, status) in statuses.iter().enumerate().skip(1) {
            assert!(
                status.success(),
                "replica {process} failed after the kill: {status}"
            );
        }
        let stored = check_database(&url);
        // Every change a caller was told was applied is there, at its version.
        let mut acknowledged = 0;
        for (id, history) in children.operations() {
            for op in history {
                let Ret::Outcome(out) = &op.ret else { continue };
                if !out.applied || out.replay {
                    continue;
                }
                let entry = stored[&id]
                    .get(out.version as usize - 1)
                    .unwrap_or_else(|| panic!("{id} v{}: acknowledged, then lost", out.version));
                assert_eq!(entry.to, out.state, "{id} v{}", out.version);
                acknowledged += 1;
            }
        }
        eprintln!("kill -9: {acknowledged} acknowledged changes all present; 3 replicas finished");
    });
}

#[test]
fn a_server_restart_mid_load_gives_clear_errors_and_no_double_apply() {
    if is_child() {
        return;
    }
    let Some(url) = database("server_restart") else {
        return;
    };
    let Ok(cluster) = std::env::var("IDEMFLOW_TEST_PG_CLUSTER") else {
        skip_postgres(
            "a_server_restart_mid_load_gives_clear_errors_and_no_double_apply",
            "IDEMFLOW_TEST_PG_CLUSTER (a cluster of scripts/pg-cluster.sh, to restart) is not set",
        );
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    watchdog("a PostgreSQL restart under load", LIMIT, move || {
        let mut children = spawn_children(&url, Durability::Immediate, 0, seed());
        std::thread::sleep(Duration::from_millis(1500));
        let before = (0..PROCESSES)
            .map(|p| children.calls_done(p))
            .sum::<usize>();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster.sh");
        let status = Command::new(&script)
            .args(["restart", &cluster, "fast"])
            .status()
            .unwrap();
        assert!(status.success(), "restarting the server failed");
        let restarted = now_ns();
        std::thread::sleep(Duration::from_millis(3000));
        std::fs::write(children.path("stop"), b"stop").unwrap();
        for (process, status) in children.wait().into_iter().enumerate() {
            assert!(
                status.success(),
                "replica {process} failed across the restart: {status}"
            );
        }
        let histories = children.operations();
        let mut errors = BTreeSet::new();
        let mut unknown = Vec::new();
        let mut after_restart_ok = 0;
        for (id, history) in &histories {
            for op in history {
                match &op.ret {
                    Ret::Other(text) => {
                        assert!(
                            text.starts_with("Storage") || text.starts_with("CommitUnknown"),
                            "{id}: unclear error across a restart: {text}"
                        );
                        errors.insert(text.split_whitespace().next().unwrap_or("").to_owned());
                        if text.starts_with("CommitUnknown") {
                            unknown.push((id.clone(), op.call.clone()));
                        }
                    }
                    _ if op.invoked > restarted => after_restart_ok += 1,
                    _ => {}
                }
            }
        }
        assert!(after_restart_ok > 0, "no call succeeded after the restart");
        // The retry of an unknown outcome with its key tells the truth.
        let engine = connect(&url, Durability::Immediate);
        let rings = engine.machine_by_name("ring").unwrap();
        for (id, call) in &unknown {
            if let Call::Apply(req) = call {
                if req.key.is_some() {
                    let retry = rings.apply(id, req.named());
                    assert!(
                        !matches!(
                            retry,
                            Err(Error::Storage { .. } | Error::CommitUnknown { .. })
                        ),
                        "{id}: the retry failed: {retry:?}"
                    );
                }
            }
        }
        drop(rings);
        drop(engine);
        check_database(&url);
        let after = (0..PROCESSES)
            .map(|p| children.calls_done(p))
            .sum::<usize>();
        eprintln!(
            "restart: {before} calls before, {after} in all, {after_restart_ok} succeeded after \
             the restart; errors seen: {errors:?}; {} unknown outcomes retried",
            unknown.len()
        );
    });
}

/// A subscription wakes on another engine's commit through `LISTEN/NOTIFY`
/// (well before its periodic re-read), and two consumers draining the
/// outbox at once with `pending`/`ack` see every event, none lost.
#[test]
fn subscriptions_wake_across_engines_and_consumers_share_the_outbox() {
    if is_child() {
        return;
    }
    let Some(url) = database("outbox_across_engines") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    watchdog("outbox across engines", LIMIT, move || {
        let reader = connect(&url, Durability::Immediate);
        let writer = connect(&url, Durability::Immediate);
        let rings_w = register(&writer);
        register(&reader);
        let mut feed = reader.outbox().subscribe();
        for n in 0..5 {
            let id = format!("wake-{n}");
            let started = Instant::now();
            rings_w.create(&id).unwrap();
            let event = feed
                .next_timeout(Duration::from_secs(20))
                .expect("an event")
                .unwrap();
            assert_eq!(event.id, id);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "woke after {:?}: not by NOTIFY",
                started.elapsed()
            );
        }
        // Two consumers drain while a third engine writes.
        const EVENTS: usize = 300;
        let seen = Mutex::new(BTreeSet::new());
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for engine in [&reader, &writer] {
                let (seen, done) = (&seen, &done);
                scope.spawn(move || loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let events = engine.outbox().pending(50).unwrap();
                    if events.is_empty() && finished {
                        return;
                    }
                    for event in &events {
                        seen.lock()
                            .unwrap()
                            .insert((event.id.clone(), event.version));
                    }
                    engine.outbox().ack(&events).unwrap();
                });
            }
            let third = connect(&url, Durability::Buffered);
            let rings = register(&third);
            for n in 0..EVENTS {
                rings.create(&format!("drain-{n}")).unwrap();
            }
            third.flush().unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let seen = seen.into_inner().unwrap();
        for n in 0..EVENTS {
            assert!(
                seen.contains(&(format!("drain-{n}"), 1)),
                "drain-{n} never delivered"
            );
        }
        assert!(reader.outbox().is_empty().unwrap());
    });
}
