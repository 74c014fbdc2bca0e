//! Throughput and latency percentiles of applied transitions under 1 and 8
//! clients, Buffered and Immediate, with and without an outbox consumer
//! draining at the same time (docs/BENCHMARKS.md, "Concurrency"). Not part
//! of `cargo test` (only built).
//!
//! ```text
//! cargo run --release --example bench_latency
//! IDEMFLOW_BENCH_SECS=10 IDEMFLOW_BENCH_RUNS=5 cargo run --release --example bench_latency
//! ```
//!
//! Each client applies `advance` with a fresh idempotency key and the bench
//! payload to 100 entities of its own, back to back; every call's latency is
//! recorded. The consumer (when draining) loops `pending(256)` + `ack`.
//! Environment: `IDEMFLOW_BENCH_SECS` (measured seconds per run, default 5),
//! `IDEMFLOW_BENCH_RUNS` (default 3), `IDEMFLOW_BENCH_CLIENTS` (default
//! `1,8`), `IDEMFLOW_BENCH_OUT` (JSON lines, default
//! `target/bench-results/latency.jsonl`), `IDEMFLOW_BENCH_MODES` (default
//! `buffered,immediate,raw_sled`; also `raw_sled_group`),
//! `IDEMFLOW_BENCH_DRAIN` (default `no,yes`). Runs are interleaved across
//! the configurations; prints the median run of each.
//!
//! The baselines, in the same run: `raw_sled` does each client's
//! transitions on plain sled (the engine's trees, keys and values, one sled
//! transaction per call, sled's own flush every 100 ms: what the dependency
//! itself does under the same clients); `raw_sled_group` is the ideal group
//! commit on plain sled, the ceiling of `Immediate` with that many clients
//! (one thread, rounds of one transition per client in one sled transaction,
//! then one flush + fdatasync; no hand-off or decision cost).

#[path = "../benches/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine};

use common::{advance, create_all, fresh_key, id, payload, Cursor, Job, RawSled, Templates};

const PER_CLIENT: usize = 100;
const WARM_UP: Duration = Duration::from_secs(1);

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Run {
    ops_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    drained: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn run(durability: Durability, clients: usize, drain: bool, secs: u64) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let flush: Option<u64> = std::env::var("IDEMFLOW_BENCH_FLUSH_MS")
        .ok()
        .map(|ms| ms.parse().ok())
        .unwrap_or(Some(100));
    let engine = Engine::builder()
        .durability(durability)
        .flush_every_ms(flush)
        .open(dir.path())
        .expect("engine");
    let jobs = engine.machine::<Job>().expect("machine");
    create_all(&jobs, 0..clients * PER_CLIENT);
    engine.flush().expect("flush");
    let drained = AtomicU64::new(0);
    let payload = payload();
    let consumer = |stop: &AtomicBool| {
        let outbox = engine.outbox();
        while !stop.load(Ordering::Relaxed) {
            let events = outbox.pending(256).expect("pending");
            if events.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let acked = outbox.ack(&events).expect("ack");
            drained.fetch_add(acked as u64, Ordering::Relaxed);
        }
    };
    let latencies = drive(
        clients,
        secs,
        |client| {
            let ids = client_ids(client);
            let (jobs, payload) = (&jobs, &payload);
            move |n: usize| advance(jobs, &ids[n % PER_CLIENT], fresh_key(), payload)
        },
        drain.then_some(consumer),
    );
    summarize(latencies, secs, drained.load(Ordering::Relaxed))
}

/// The same transitions on plain sled ([`RawSled`]: the engine's trees,
/// keys and values, one sled transaction per call, sled's own flush every
/// 100 ms): the dependency's own throughput and tail under the same clients,
/// the baseline for the Buffered figures. No outbox consumer.
fn run_raw(templates: &Templates, clients: usize, secs: u64) -> Run {
    let (_dir, raw) = raw_sled(templates, clients);
    let latencies = drive(
        clients,
        secs,
        |client| {
            let ids = client_ids(client);
            let mut cursors = vec![Cursor::default(); PER_CLIENT];
            let raw = &raw;
            move |n: usize| {
                let (version, from) = cursors[n % PER_CLIENT].step();
                raw.transition(&ids[n % PER_CLIENT], version, from, &fresh_key());
            }
        },
        None::<fn(&AtomicBool)>,
    );
    summarize(latencies, secs, 0)
}

/// The ideal group commit on plain sled, the ceiling for `Immediate` with
/// `clients` callers: one thread, each round `clients` transitions (one per
/// client's entity) in one sled transaction, then one flush + fdatasync, as
/// if every caller's request joined one batch with no hand-off, queueing or
/// decision cost. Each transition's latency is its round's.
fn run_raw_group(templates: &Templates, clients: usize, secs: u64) -> Run {
    let (_dir, raw) = raw_sled(templates, clients);
    let ids: Vec<String> = (0..clients * PER_CLIENT).map(id).collect();
    let mut cursors = vec![Cursor::default(); clients * PER_CLIENT];
    let mut latencies = Vec::with_capacity(200_000);
    let warm_until = Instant::now() + WARM_UP;
    let end = warm_until + Duration::from_secs(secs);
    let mut round = 0;
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let keys: Vec<String> = (0..clients).map(|_| fresh_key()).collect();
        let batch: Vec<(&str, u64, usize, &str)> = (0..clients)
            .map(|client| {
                let n = client * PER_CLIENT + round % PER_CLIENT;
                let (version, from) = cursors[n].step();
                (ids[n].as_str(), version, from, keys[client].as_str())
            })
            .collect();
        raw.transitions(&batch);
        raw.sync();
        if started >= warm_until {
            let took = started.elapsed().as_nanos() as u64;
            latencies.extend(std::iter::repeat_n(took, clients));
        }
        round += 1;
    }
    summarize(vec![latencies], secs, 0)
}

/// Plain sled in a temporary directory (kept alive by the returned guard)
/// with every client's entities created and synced.
fn raw_sled(templates: &Templates, clients: usize) -> (tempfile::TempDir, RawSled) {
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = RawSled::open(dir.path(), templates.clone());
    for n in 0..clients * PER_CLIENT {
        raw.create(&id(n));
    }
    raw.sync();
    (dir, raw)
}

/// The ids of client `client`'s own entities.
fn client_ids(client: usize) -> Vec<String> {
    (0..PER_CLIENT)
        .map(|n| id(client * PER_CLIENT + n))
        .collect()
}

/// Runs `clients` threads, each making its calls back to back (`client(c)`
/// builds client `c`'s call, which gets the call's number), through a
/// warm-up and `secs` measured seconds; `beside` (the outbox consumer) runs
/// on a thread of its own until the clients stop. Returns each client's
/// measured latencies in nanoseconds.
fn drive<C: FnMut(usize)>(
    clients: usize,
    secs: u64,
    client: impl Fn(usize) -> C + Sync,
    beside: Option<impl FnOnce(&AtomicBool) + Send>,
) -> Vec<Vec<u64>> {
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let barrier = Barrier::new(clients + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|number| {
                let (client, stop, measuring, barrier) = (&client, &stop, &measuring, &barrier);
                scope.spawn(move || {
                    let mut call = client(number);
                    let mut latencies = Vec::with_capacity(200_000);
                    barrier.wait();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        call(n);
                        if measuring.load(Ordering::Relaxed) {
                            latencies.push(started.elapsed().as_nanos() as u64);
                        }
                        n += 1;
                    }
                    latencies
                })
            })
            .collect();
        if let Some(beside) = beside {
            let stop = &stop;
            scope.spawn(move || beside(stop));
        }
        barrier.wait();
        std::thread::sleep(WARM_UP);
        measuring.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(secs));
        measuring.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|worker| worker.join().expect("client"))
            .collect()
    })
}

fn summarize(latencies: Vec<Vec<u64>>, secs: u64, drained: u64) -> Run {
    let mut all: Vec<u64> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    Run {
        ops_per_second: all.len() as f64 / secs as f64,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        drained,
    }
}

fn main() {
    let secs: u64 = env("IDEMFLOW_BENCH_SECS", 5);
    let runs: usize = env("IDEMFLOW_BENCH_RUNS", 3);
    let clients: Vec<usize> = std::env::var("IDEMFLOW_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let out_path = std::env::var("IDEMFLOW_BENCH_OUT")
        .unwrap_or_else(|_| "target/bench-results/latency.jsonl".to_owned());
    if let Some(parent) = std::path::Path::new(&out_path).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .expect("results file");
    println!(
        "{:<10} {:>7} {:>6} {:>12} {:>10} {:>10}",
        "mode", "clients", "drain", "ops/s", "p50 us", "p99 us"
    );
    let modes = common::env_list("IDEMFLOW_BENCH_MODES", "buffered,immediate,raw_sled");
    let drains = common::env_list("IDEMFLOW_BENCH_DRAIN", "no,yes");
    // Every configuration wanted, then the runs interleaved (run 1 of each,
    // run 2 of each, ...), so a change in the machine's load touches every
    // configuration alike.
    let mut configs: Vec<(&str, usize, bool)> = Vec::new();
    for mode in ["buffered", "immediate", "raw_sled", "raw_sled_group"] {
        if !modes.iter().any(|wanted| wanted == mode) {
            continue;
        }
        for &clients in &clients {
            for drain in [false, true] {
                let wanted = drains
                    .iter()
                    .any(|wanted| wanted == if drain { "yes" } else { "no" });
                // The raw baseline has no outbox consumer.
                if wanted && !(mode.starts_with("raw_sled") && drain) {
                    configs.push((mode, clients, drain));
                }
            }
        }
    }
    let templates = modes
        .iter()
        .any(|mode| mode.starts_with("raw_sled"))
        .then(Templates::capture);
    let mut results: Vec<Vec<Run>> = configs.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (config, (mode, clients, drain)) in configs.iter().enumerate() {
            let result = match (*mode, &templates) {
                ("raw_sled", Some(templates)) => run_raw(templates, *clients, secs),
                ("raw_sled_group", Some(templates)) => run_raw_group(templates, *clients, secs),
                ("immediate", _) => run(Durability::Immediate, *clients, *drain, secs),
                _ => run(Durability::Buffered, *clients, *drain, secs),
            };
            results[config].push(result);
        }
    }
    for ((mode, clients, drain), mut results) in configs.into_iter().zip(results) {
        results.sort_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second));
        let median = &results[results.len() / 2];
        println!(
            "{mode:<10} {clients:>7} {:>6} {:>12.0} {:>10.0} {:>10.0}",
            if drain { "yes" } else { "no" },
            median.ops_per_second,
            median.p50_us,
            median.p99_us
        );
        let line = serde_json::json!({
            "mode": mode, "clients": clients, "drain": drain, "secs": secs,
            "ops_per_second": median.ops_per_second, "p50_us": median.p50_us,
            "p99_us": median.p99_us, "drained_per_second": median.drained as f64 / (secs as f64 + 1.0),
            "runs": results.iter().map(|r| r.ops_per_second).collect::<Vec<_>>(),
            "p99_runs_us": results.iter().map(|r| r.p99_us).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{line}");
    }
}
