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
//! `buffered,immediate`), `IDEMFLOW_BENCH_DRAIN` (default `no,yes`). Prints
//! the median run of each configuration.

#[path = "../benches/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine};

use common::{advance, create_all, fresh_key, id, payload, Job};

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
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let drained = AtomicU64::new(0);
    let barrier = Barrier::new(clients + 1);
    let payload = payload();
    let latencies: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let (jobs, stop, measuring, barrier, payload) =
                    (&jobs, &stop, &measuring, &barrier, &payload);
                scope.spawn(move || {
                    let ids: Vec<String> = (0..PER_CLIENT)
                        .map(|n| id(client * PER_CLIENT + n))
                        .collect();
                    let mut latencies = Vec::with_capacity(200_000);
                    barrier.wait();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        advance(jobs, &ids[n % PER_CLIENT], fresh_key(), payload);
                        if measuring.load(Ordering::Relaxed) {
                            latencies.push(started.elapsed().as_nanos() as u64);
                        }
                        n += 1;
                    }
                    latencies
                })
            })
            .collect();
        if drain {
            let (engine, stop, drained) = (&engine, &stop, &drained);
            scope.spawn(move || {
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
            });
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
    });
    let mut all: Vec<u64> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    Run {
        ops_per_second: all.len() as f64 / secs as f64,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        drained: drained.load(Ordering::Relaxed),
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
    let modes = common::env_list("IDEMFLOW_BENCH_MODES", "buffered,immediate");
    let drains = common::env_list("IDEMFLOW_BENCH_DRAIN", "no,yes");
    for durability in [Durability::Buffered, Durability::Immediate] {
        let name = match durability {
            Durability::Buffered => "buffered",
            Durability::Immediate => "immediate",
        };
        if !modes.iter().any(|mode| mode == name) {
            continue;
        }
        for &clients in &clients {
            for drain in [false, true] {
                if !drains
                    .iter()
                    .any(|wanted| wanted == if drain { "yes" } else { "no" })
                {
                    continue;
                }
                let mut results: Vec<Run> = (0..runs)
                    .map(|_| run(durability, clients, drain, secs))
                    .collect();
                results.sort_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second));
                let median = &results[results.len() / 2];
                let mode = match durability {
                    Durability::Buffered => "buffered",
                    Durability::Immediate => "immediate",
                };
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
                });
                let _ = writeln!(out, "{line}");
            }
        }
    }
}
