//! idemflow vs the textbook PostgreSQL recipe for the same transition, in one
//! run (docs/BENCHMARKS.md). Started by `scripts/bench-postgres.sh`, which
//! runs a throw-away local PostgreSQL server and sets `IDEMFLOW_PG`.
//!
//! The PostgreSQL side, per transition, one transaction with prepared
//! statements over one connection per client:
//!
//! ```sql
//! BEGIN;
//! SELECT state, version FROM entities WHERE id = $1 FOR UPDATE;
//! SELECT outcome FROM idempotency_keys WHERE machine = $1 AND key = $2;  -- replay check
//! UPDATE entities SET state = $2, version = version + 1, updated_at = $3
//!   WHERE id = $1 AND version = $4;
//! INSERT INTO idempotency_keys VALUES (...);  -- primary key (machine, key): unique
//! INSERT INTO history VALUES (...);
//! INSERT INTO outbox VALUES (...);
//! COMMIT;
//! ```
//!
//! The idemflow side: `Machine::apply` of the same request (fire `advance`,
//! fresh idempotency key, the same JSON payload), batching writer on (the
//! default) and off. Durable = `Durability::Immediate` vs
//! `synchronous_commit = on`; relaxed = `Durability::Buffered` vs
//! `synchronous_commit = off`. Each client works on 100 entities of its own.
//!
//! Environment: `IDEMFLOW_PG` (libpq-style connection string, required),
//! `IDEMFLOW_PG_SECS` (measured seconds per run, default 5),
//! `IDEMFLOW_PG_RUNS` (runs per configuration, default 3),
//! `IDEMFLOW_PG_CLIENTS` (default `1,8`), `IDEMFLOW_BENCH_DIR` (where the
//! idemflow databases go, default a temp dir), `IDEMFLOW_BENCH_OUT`
//! (JSON lines appended, default `target/bench-results/postgres.jsonl`),
//! `IDEMFLOW_PG_SYSTEMS` (comma-separated system names to run, default all:
//! `idemflow,idemflow_unbatched,idemflow_pg,idemflow_pg_2proc,postgres`),
//! `IDEMFLOW_PG_MODES` (`durable,relaxed` by default).

#[path = "../../common/mod.rs"]
mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine, StateMachine};
use postgres::{Client, NoTls, Statement};
use serde_json::{json, Value};

use common::{advance, create_all, fresh_key, id, now_ms, payload, Job, JobEvent, MACHINE};

/// Entities per client.
const PER_CLIENT: usize = 100;
/// Seconds of warm-up before each measured run.
const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    Idemflow {
        batching: bool,
    },
    /// idemflow's PostgreSQL backend on the same server, in 1 or 2 engine
    /// processes (the clients split evenly between them).
    IdemflowPg {
        processes: usize,
    },
    Postgres,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Idemflow { batching: true } => "idemflow",
            System::Idemflow { batching: false } => "idemflow_unbatched",
            System::IdemflowPg { processes: 1 } => "idemflow_pg",
            System::IdemflowPg { .. } => "idemflow_pg_2proc",
            System::Postgres => "postgres",
        }
    }
}

/// The schema of idemflow's PostgreSQL tables in the benchmark database.
const PG_SCHEMA: &str = "bench_idemflow";

/// `conninfo` (libpq key=value form) with idemflow's schema parameter.
fn idemflow_url(conninfo: &str) -> String {
    format!("{conninfo} schema={PG_SCHEMA}")
}

#[derive(Clone, Copy, Debug)]
struct Config {
    system: System,
    durable: bool,
    clients: usize,
}

impl Config {
    fn mode(&self) -> &'static str {
        if self.durable {
            "durable"
        } else {
            "relaxed"
        }
    }

    fn label(&self) -> String {
        format!("{} {} {}c", self.system.name(), self.mode(), self.clients)
    }
}

/// One measured run: transitions per second and per-call latencies.
struct Run {
    tps: f64,
    p50: Duration,
    p99: Duration,
    /// How many calls the measured window holds.
    calls: usize,
    /// `/proc/stat` at the measured window's edges (the whole machine: the
    /// clients, the engine, PostgreSQL's backends), see [`Run::cpu`].
    cpu_window: Option<CpuWindow>,
}

/// `(busy, total)` jiffies before and after a measured window.
type CpuWindow = ((u64, u64), (u64, u64));

impl Run {
    /// The machine's CPU use over the measured window.
    fn cpu(&self) -> Option<Cpu> {
        let ((busy_before, total_before), (busy_after, total_after)) = self.cpu_window?;
        let busy = busy_after.checked_sub(busy_before)?;
        let total = total_after.checked_sub(total_before)?;
        if total == 0 || self.calls == 0 {
            return None;
        }
        // /proc/stat counts in USER_HZ ticks, 100 per second on Linux.
        let busy_us = busy as f64 * 10_000.0;
        Some(Cpu {
            busy: busy as f64 / total as f64,
            per_call_us: busy_us / self.calls as f64,
        })
    }
}

/// Machine-wide CPU use over a measured window, from `/proc/stat`.
#[derive(Clone, Copy)]
struct Cpu {
    /// Busy time over available time, all cores (1.0 = every core busy).
    busy: f64,
    /// Busy CPU time per transition, in microseconds: with every core busy,
    /// the machine could do at most `cores / per_call` transitions per second.
    per_call_us: f64,
}

/// `(busy, total)` jiffies of all cores since boot (`/proc/stat`'s `cpu`
/// line; idle and iowait count as not busy).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|value| value.parse().ok().expect(name))
        .unwrap_or(default)
}

fn main() {
    if std::env::var("IDEMFLOW_PG_BENCH_CHILD").is_ok() {
        return pg_child();
    }
    let conninfo = std::env::var("IDEMFLOW_PG").expect("IDEMFLOW_PG: a connection string");
    let secs: f64 = env_or("IDEMFLOW_PG_SECS", 5.0);
    let runs: usize = env_or("IDEMFLOW_PG_RUNS", 3);
    let clients: Vec<usize> = std::env::var("IDEMFLOW_PG_CLIENTS")
        .unwrap_or_else(|_| "1,8".to_owned())
        .split(',')
        .map(|n| n.trim().parse().expect("IDEMFLOW_PG_CLIENTS"))
        .collect();
    let out = std::env::var("IDEMFLOW_BENCH_OUT")
        .unwrap_or_else(|_| "target/bench-results/postgres.jsonl".to_owned());
    let max_clients = *clients.iter().max().unwrap();
    let entities = max_clients * PER_CLIENT;

    let temp = match std::env::var("IDEMFLOW_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir),
        Err(_) => tempfile::tempdir(),
    }
    .expect("temp dir");

    let mut setup = Client::connect(&conninfo, NoTls).expect("connect to PostgreSQL");
    let version: String = setup.query_one("SHOW server_version", &[]).unwrap().get(0);
    eprintln!(
        "PostgreSQL {version}; {entities} entities; {runs} runs of {secs} s per configuration"
    );
    pg_schema(&mut setup, entities);

    let systems = [
        System::Idemflow { batching: true },
        System::Idemflow { batching: false },
        System::IdemflowPg { processes: 1 },
        System::IdemflowPg { processes: 2 },
        System::Postgres,
    ];
    {
        // idemflow's tables on the same server, entities made once.
        let mut drop = Client::connect(&conninfo, NoTls).expect("connect");
        drop.batch_execute(&format!("DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
            .expect("drop the benchmark schema");
        let engine = Engine::builder()
            .durability(Durability::Buffered)
            .connect(&idemflow_url(&conninfo))
            .expect("connect idemflow to PostgreSQL");
        create_all(&engine.machine::<Job>().unwrap(), 0..entities);
        engine.flush().unwrap();
        drop.batch_execute(&format!("VACUUM ANALYZE {PG_SCHEMA}.entities"))
            .expect("vacuum");
    }
    let wanted_systems = common::env_list(
        "IDEMFLOW_PG_SYSTEMS",
        "idemflow,idemflow_unbatched,idemflow_pg,idemflow_pg_2proc,postgres",
    );
    let wanted_modes = common::env_list("IDEMFLOW_PG_MODES", "durable,relaxed");
    let mut configs = Vec::new();
    for durable in [true, false] {
        let mode = if durable { "durable" } else { "relaxed" };
        if !wanted_modes.iter().any(|wanted| wanted == mode) {
            continue;
        }
        for &clients in &clients {
            for system in systems {
                if matches!(system, System::IdemflowPg { processes: 2 }) && clients < 2 {
                    continue;
                }
                if !wanted_systems.iter().any(|wanted| wanted == system.name()) {
                    continue;
                }
                configs.push(Config {
                    system,
                    durable,
                    clients,
                });
            }
        }
    }
    // One idemflow database per (durability, batching), entities made once.
    let engine_dir = |config: &Config| -> PathBuf {
        temp.path()
            .join(format!("{}-{}", config.system.name(), config.mode()))
    };
    for config in &configs {
        let dir = engine_dir(config);
        if matches!(config.system, System::Idemflow { .. }) && !dir.exists() {
            let engine = Engine::builder()
                .durability(Durability::Buffered)
                .open(&dir)
                .unwrap();
            create_all(&engine.machine::<Job>().unwrap(), 0..entities);
            engine.flush().unwrap();
        }
    }

    let mut results: Vec<Vec<Run>> = configs.iter().map(|_| Vec::new()).collect();
    let window = Duration::from_secs_f64(secs);
    // Runs interleave the configurations, so a slow phase of the machine
    // hits every configuration alike.
    for run in 0..runs {
        for (config, results) in configs.iter().zip(&mut results) {
            let measured = match config.system {
                System::Idemflow { batching } => {
                    measure_idemflow(&engine_dir(config), config, batching, window)
                }
                System::IdemflowPg { processes } => {
                    measure_idemflow_pg(&conninfo, config, processes, window)
                }
                System::Postgres => measure_postgres(&conninfo, config, window),
            };
            let cpu = measured.cpu().map_or_else(String::new, |cpu| {
                format!(
                    "  cpu {:>3.0}% busy, {:>5.0} us/transition",
                    cpu.busy * 100.0,
                    cpu.per_call_us
                )
            });
            eprintln!(
                "run {run}: {:<32} {:>9.0} tps  p50 {:>9.1?}  p99 {:>9.1?}{cpu}",
                config.label(),
                measured.tps,
                measured.p50,
                measured.p99
            );
            results.push(measured);
        }
    }

    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent).expect("results dir");
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .expect("results file");
    let median_tps = |runs: &[Run]| {
        let mut tps: Vec<f64> = runs.iter().map(|r| r.tps).collect();
        tps.sort_by(f64::total_cmp);
        (tps[0], tps[tps.len() / 2])
    };
    println!("\nconfiguration                      tps min   tps median   p50 (median run)  p99");
    for (config, runs) in configs.iter().zip(&results) {
        let (min, median) = median_tps(runs);
        let micros = |f: &dyn Fn(&Run) -> Duration| {
            runs.iter()
                .map(|r| format!("{:.1}", f(r).as_secs_f64() * 1e6))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut p50: Vec<Duration> = runs.iter().map(|r| r.p50).collect();
        let mut p99: Vec<Duration> = runs.iter().map(|r| r.p99).collect();
        p50.sort();
        p99.sort();
        println!(
            "{:<32} {:>10.0} {:>12.0} {:>14.1?} {:>10.1?}",
            config.label(),
            min,
            median,
            p50[p50.len() / 2],
            p99[p99.len() / 2]
        );
        writeln!(
            file,
            "{}",
            json!({
                "system": config.system.name(),
                "mode": config.mode(),
                "clients": config.clients,
                "secs": secs,
                "tps": runs.iter().map(|r| (r.tps * 10.0).round() / 10.0).collect::<Vec<_>>(),
                "tps_min": min,
                "tps_median": median,
                "p50_us": micros(&|r| r.p50),
                "p99_us": micros(&|r| r.p99),
                "cpu_busy": runs.iter().map(|r| r.cpu().map(|cpu| (cpu.busy * 1000.0).round() / 1000.0)).collect::<Vec<_>>(),
                "cpu_us_per_transition": runs.iter().map(|r| r.cpu().map(|cpu| cpu.per_call_us.round())).collect::<Vec<_>>(),
                "postgres_version": version,
            })
        )
        .expect("write results");
    }
    println!("\nratios (idemflow / postgres, median tps):");
    for durable in [true, false] {
        for &n in &clients {
            let find = |system: System| {
                configs
                    .iter()
                    .zip(&results)
                    .find(|(c, _)| c.system == system && c.durable == durable && c.clients == n)
                    .map(|(_, runs)| median_tps(runs).1)
            };
            let pg = find(System::Postgres).unwrap_or(f64::NAN);
            let ratio = |system| find(system).map_or(f64::NAN, |tps| tps / pg);
            println!(
                "  {} {n} client(s): sled batched {:.2}x, sled unbatched {:.2}x, \
                 idemflow on PostgreSQL {:.2}x, 2 engine processes {:.2}x",
                if durable { "durable" } else { "relaxed" },
                ratio(System::Idemflow { batching: true }),
                ratio(System::Idemflow { batching: false }),
                ratio(System::IdemflowPg { processes: 1 }),
                ratio(System::IdemflowPg { processes: 2 }),
            );
        }
    }
}

/// Sorts `latencies` and summarizes a run of `count` calls in `elapsed`.
fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Run {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Run {
        tps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        calls: latencies.len(),
        cpu_window: None,
    }
}

/// Runs `clients` threads calling `call(client, n)` for a warm-up and then a
/// measured window; returns the latencies of the calls made in the window.
fn drive<S: Send>(
    states: Vec<S>,
    window: Duration,
    call: impl Fn(&mut S, usize, usize) + Sync,
) -> Run {
    drive_keeping(states, window, call).0
}

/// [`drive`], also returning every measured latency.
fn drive_keeping<S: Send>(
    states: Vec<S>,
    window: Duration,
    call: impl Fn(&mut S, usize, usize) + Sync,
) -> (Run, Vec<Duration>) {
    let clients = states.len();
    let barrier = Barrier::new(clients + 1);
    let mut cpu_window = None;
    let latencies: Vec<Vec<Duration>> = std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .enumerate()
            .map(|(client, mut state)| {
                let (barrier, call) = (&barrier, &call);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let (measure_from, end) = (start + WARM_UP, start + WARM_UP + window);
                    let mut latencies = Vec::with_capacity(1 << 16);
                    let mut n = 0;
                    loop {
                        let call_start = Instant::now();
                        if call_start >= end {
                            break;
                        }
                        call(&mut state, client, n);
                        n += 1;
                        if call_start >= measure_from {
                            latencies.push(call_start.elapsed());
                        }
                    }
                    latencies
                })
            })
            .collect();
        // This thread reads the machine's CPU at the window's edges.
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(WARM_UP);
        let before = cpu_jiffies();
        std::thread::sleep((start + WARM_UP + window).saturating_duration_since(Instant::now()));
        cpu_window = before.zip(cpu_jiffies());
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let latencies = latencies.concat();
    let mut run = summarize(latencies.clone(), window);
    run.cpu_window = cpu_window;
    (run, latencies)
}

fn measure_idemflow(dir: &Path, config: &Config, batching: bool, window: Duration) -> Run {
    let durability = if config.durable {
        Durability::Immediate
    } else {
        Durability::Buffered
    };
    let engine = Engine::builder()
        .durability(durability)
        .batching(batching)
        .open(dir)
        .expect("open engine");
    let jobs = engine.machine::<Job>().expect("machine");
    let payload = payload();
    let ids: Vec<Vec<String>> = (0..config.clients)
        .map(|c| (0..PER_CLIENT).map(|i| id(c * PER_CLIENT + i)).collect())
        .collect();
    drive(vec![(); config.clients], window, |_, client, n| {
        advance(&jobs, &ids[client][n % PER_CLIENT], fresh_key(), &payload);
    })
}

/// idemflow on PostgreSQL: one engine in this process, or `processes`
/// engine processes (this program again, see [`pg_child`]) sharing the
/// clients; the calls of every process are summed.
fn measure_idemflow_pg(conninfo: &str, config: &Config, processes: usize, window: Duration) -> Run {
    if processes == 1 {
        let unused = std::cell::RefCell::new(Vec::new());
        let url = idemflow_url(conninfo);
        return pg_clients(&url, config.durable, 0, config.clients, window, &unused);
    }
    let share = config.clients / processes;
    let children: Vec<_> = (0..processes)
        .map(|p| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .env("IDEMFLOW_PG_BENCH_CHILD", idemflow_url(conninfo))
                .env("IDEMFLOW_PG_BENCH_DURABLE", config.durable.to_string())
                .env("IDEMFLOW_PG_BENCH_FIRST", (p * share).to_string())
                .env("IDEMFLOW_PG_BENCH_CLIENTS", share.to_string())
                .env("IDEMFLOW_PG_BENCH_SECS", window.as_secs_f64().to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start an engine process")
        })
        .collect();
    let mut latencies = Vec::new();
    let mut cpu_window = None;
    for child in children {
        let output = child.wait_with_output().expect("engine process");
        assert!(output.status.success(), "an engine process failed");
        let report: Value = serde_json::from_slice(&output.stdout).expect("child report");
        let micros: Vec<u64> = serde_json::from_value(report["micros"].clone()).expect("latencies");
        latencies.extend(micros.into_iter().map(Duration::from_micros));
        // The children's windows overlap; the first one's machine-wide
        // reading stands for the run.
        if cpu_window.is_none() {
            cpu_window = serde_json::from_value::<Option<CpuWindow>>(report["cpu_window"].clone())
                .ok()
                .flatten();
        }
    }
    let mut run = summarize(latencies, window);
    run.cpu_window = cpu_window;
    run
}

/// One engine process of [`measure_idemflow_pg`]: prints the latencies of
/// its measured calls, in microseconds, as a JSON array.
fn pg_child() {
    let var = |name: &str| std::env::var(name).expect(name);
    let url = var("IDEMFLOW_PG_BENCH_CHILD");
    let durable: bool = var("IDEMFLOW_PG_BENCH_DURABLE").parse().unwrap();
    let first: usize = var("IDEMFLOW_PG_BENCH_FIRST").parse().unwrap();
    let clients: usize = var("IDEMFLOW_PG_BENCH_CLIENTS").parse().unwrap();
    let secs: f64 = var("IDEMFLOW_PG_BENCH_SECS").parse().unwrap();
    let latencies = std::cell::RefCell::new(Vec::new());
    let run = pg_clients(
        &url,
        durable,
        first,
        clients,
        Duration::from_secs_f64(secs),
        &latencies,
    );
    let micros: Vec<u64> = latencies
        .into_inner()
        .iter()
        .map(|d: &Duration| d.as_micros() as u64)
        .collect();
    let report = json!({"micros": micros, "cpu_window": run.cpu_window});
    println!("{report}");
}

/// `clients` client threads (client numbers from `first`) on one engine
/// connected to `url`; every measured latency is left in `out` (for a
/// parent process to merge).
fn pg_clients(
    url: &str,
    durable: bool,
    first: usize,
    clients: usize,
    window: Duration,
    out: &std::cell::RefCell<Vec<Duration>>,
) -> Run {
    let engine = Engine::builder()
        .durability(if durable {
            Durability::Immediate
        } else {
            Durability::Buffered
        })
        .connect(url)
        .expect("connect idemflow");
    let jobs = engine.machine::<Job>().expect("machine");
    if std::env::var("IDEMFLOW_PG_BENCH_CREATE").is_ok() {
        // A child started by hand on an empty schema (profiling).
        create_all(&jobs, first * PER_CLIENT..(first + clients) * PER_CLIENT);
    }
    let payload = payload();
    let ids: Vec<Vec<String>> = (first..first + clients)
        .map(|c| (0..PER_CLIENT).map(|i| id(c * PER_CLIENT + i)).collect())
        .collect();
    // Keys stay in the shared database across runs and processes: make
    // them unique to this process.
    let pid = std::process::id();
    let (run, latencies) = drive_keeping(vec![(); clients], window, |_, client, n| {
        let key = format!("p{pid}-{}", fresh_key());
        advance(&jobs, &ids[client][n % PER_CLIENT], key, &payload);
    });
    *out.borrow_mut() = latencies;
    run
}

/// One client connection with the transition's prepared statements.
struct Pg {
    client: Client,
    select: Statement,
    seen: Statement,
    update: Statement,
    insert_key: Statement,
    insert_history: Statement,
    insert_outbox: Statement,
}

impl Pg {
    fn connect(conninfo: &str, durable: bool) -> Pg {
        let mut client = Client::connect(conninfo, NoTls).expect("connect");
        client
            .batch_execute(if durable {
                "SET synchronous_commit = on"
            } else {
                "SET synchronous_commit = off"
            })
            .unwrap();
        let mut prepare = |sql: &str| client.prepare(sql).expect("prepare");
        let select = prepare("SELECT state, version FROM entities WHERE id = $1 FOR UPDATE");
        let seen = prepare("SELECT outcome FROM idempotency_keys WHERE machine = $1 AND key = $2");
        let update = prepare(
            "UPDATE entities SET state = $2, version = version + 1, updated_at = $3 \
             WHERE id = $1 AND version = $4",
        );
        let insert_key = prepare(
            "INSERT INTO idempotency_keys (machine, key, fingerprint, outcome, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        );
        let insert_history = prepare(
            "INSERT INTO history (id, version, from_state, to_state, event, key, payload, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)",
        );
        let insert_outbox = prepare(
            "INSERT INTO outbox (machine, id, version, from_state, to_state, event, key, payload, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)",
        );
        Pg {
            client,
            select,
            seen,
            update,
            insert_key,
            insert_history,
            insert_outbox,
        }
    }

    /// The transition, the textbook way; returns whether it applied.
    fn transition(&mut self, id: &str, key: &str, payload: &Value) -> bool {
        let mut tx = self.client.transaction().expect("begin");
        let row = tx
            .query_one(&self.select, &[&id])
            .expect("select for update");
        let state: &str = row.get(0);
        let version: i64 = row.get(1);
        if tx
            .query_opt(&self.seen, &[&MACHINE, &key])
            .expect("key lookup")
            .is_some()
        {
            tx.commit().expect("commit");
            return false; // a replay: answer the stored outcome
        }
        let from = Job::from_name(state).expect("known state");
        let to = from.next(JobEvent::Advance).expect("declared");
        let at = now_ms() as i64;
        let new_version = version + 1;
        let updated = tx
            .execute(&self.update, &[&id, &to.name(), &at, &version])
            .expect("update");
        assert_eq!(updated, 1, "the row is locked: the version cannot change");
        let outcome = json!({
            "id": id, "state": to.name(), "version": new_version, "applied": true,
            "from": from.name(), "event": "advance", "at": at,
        });
        tx.execute(
            &self.insert_key,
            &[
                &MACHINE,
                &key,
                &fingerprint(id, key, payload),
                &outcome,
                &(at + 86_400_000),
            ],
        )
        .expect("insert key");
        tx.execute(
            &self.insert_history,
            &[
                &id,
                &new_version,
                &from.name(),
                &to.name(),
                &"advance",
                &key,
                payload,
                &at,
            ],
        )
        .expect("insert history");
        tx.execute(
            &self.insert_outbox,
            &[
                &MACHINE,
                &id,
                &new_version,
                &from.name(),
                &to.name(),
                &"advance",
                &key,
                payload,
                &at,
            ],
        )
        .expect("insert outbox");
        tx.commit().expect("commit");
        true
    }
}

/// A 32-byte request fingerprint (the application's job in the textbook recipe).
fn fingerprint(id: &str, key: &str, payload: &Value) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32);
    for round in 0u8..4 {
        let mut hasher = DefaultHasher::new();
        (round, id, key, payload.to_string()).hash(&mut hasher);
        bytes.extend_from_slice(&hasher.finish().to_be_bytes());
    }
    bytes
}

fn measure_postgres(conninfo: &str, config: &Config, window: Duration) -> Run {
    let clients: Vec<Pg> = (0..config.clients)
        .map(|_| Pg::connect(conninfo, config.durable))
        .collect();
    let payload = payload();
    let ids: Vec<Vec<String>> = (0..config.clients)
        .map(|c| (0..PER_CLIENT).map(|i| id(c * PER_CLIENT + i)).collect())
        .collect();
    drive(clients, window, |pg, client, n| {
        assert!(pg.transition(&ids[client][n % PER_CLIENT], &fresh_key(), &payload));
    })
}

/// Creates the tables (dropping earlier ones) and the entities with their
/// first history row and outbox event.
fn pg_schema(client: &mut Client, entities: usize) {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS outbox, history, idempotency_keys, entities;
             CREATE TABLE entities (
                 id text PRIMARY KEY,
                 state text NOT NULL,
                 version bigint NOT NULL,
                 created_at bigint NOT NULL,
                 updated_at bigint NOT NULL
             );
             CREATE INDEX entities_by_state ON entities (state, id);
             CREATE TABLE history (
                 id text NOT NULL,
                 version bigint NOT NULL,
                 from_state text,
                 to_state text NOT NULL,
                 event text,
                 key text,
                 payload jsonb,
                 actor text,
                 at bigint NOT NULL,
                 PRIMARY KEY (id, version)
             );
             CREATE TABLE idempotency_keys (
                 machine text NOT NULL,
                 key text NOT NULL,
                 fingerprint bytea NOT NULL,
                 outcome jsonb NOT NULL,
                 expires_at bigint NOT NULL,
                 PRIMARY KEY (machine, key)
             );
             CREATE TABLE outbox (
                 machine text NOT NULL,
                 id text NOT NULL,
                 version bigint NOT NULL,
                 from_state text,
                 to_state text NOT NULL,
                 event text,
                 key text,
                 payload jsonb,
                 actor text,
                 at bigint NOT NULL,
                 PRIMARY KEY (machine, id, version)
             );",
        )
        .expect("schema");
    let mut tx = client.transaction().unwrap();
    let at = now_ms() as i64;
    let initial = Job::initial().name();
    for i in 0..entities {
        let id = id(i);
        tx.execute(
            "INSERT INTO entities VALUES ($1, $2, 1, $3, $3)",
            &[&id, &initial, &at],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO history (id, version, to_state, at) VALUES ($1, 1, $2, $3)",
            &[&id, &initial, &at],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO outbox (machine, id, version, to_state, at) VALUES ($1, $2, 1, $3, $4)",
            &[&MACHINE, &id, &initial, &at],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    client.batch_execute("VACUUM ANALYZE").unwrap();
}
