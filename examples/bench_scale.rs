//! Scale benchmark: N entities with 10 history entries each, then applied
//! transitions on random entities. Not part of `cargo test` (it is only
//! built there); run it with
//!
//! ```text
//! IDEMFLOW_SCALE=1000000 cargo run --release --example bench_scale
//! ```
//!
//! Environment:
//! - `IDEMFLOW_SCALE`: entities (default 10000);
//! - `IDEMFLOW_SCALE_OPS`: measured transitions (default 50000);
//! - `IDEMFLOW_SCALE_RUNS`: measured runs of `OPS` transitions each, for min/median (default 3);
//! - `IDEMFLOW_BENCH_DIR`: where the database goes (default: a temp dir, deleted after);
//! - `IDEMFLOW_BENCH_OUT`: a file to append the JSON result line to
//!   (default `target/bench-results/scale.jsonl`);
//! - `IDEMFLOW_SCALE_DRAIN`: `1` (default) drains the outbox during the load
//!   as a consumer would, `0` leaves the 10 events per entity in it.
//!
//! A watchdog ends the run with exit code 2 when no call completes for 60 s
//! (sled 0.34.7 can deadlock under this load; see docs/BENCHMARKS.md).
//!
//! Phases: bulk load with `Buffered` (2 threads; creation + 9 transitions per
//! entity, payload as in the criterion benches, no keys; the outbox drained
//! as a consumer would, unless `IDEMFLOW_SCALE_DRAIN=0`), flush and measure the size on disk; close; time the
//! reopen; then `RUNS` x `OPS` applied transitions (`Buffered`, 1 thread,
//! uniformly random entities, fresh key + payload each), timing every call
//! (after a warm-up of OPS/10 calls). Peak RSS is the process's `VmHWM`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine, Machine, Request};

use common::{advance, fresh_key, id, payload, peak_rss_bytes, Job, JobEvent};

/// One measured run: transitions/s, p50, p99, max latency.
type RunResult = (f64, Duration, Duration, Duration);

/// Calls completed so far, for the watchdog.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Exits with code 2 when no call completes for 60 s.
fn watchdog() {
    std::thread::spawn(|| {
        let mut last = PROGRESS.load(Ordering::Relaxed);
        let mut still = 0;
        loop {
            std::thread::sleep(Duration::from_secs(5));
            let now = PROGRESS.load(Ordering::Relaxed);
            still = if now == last { still + 5 } else { 0 };
            last = now;
            if still >= 60 {
                eprintln!(
                    "no call completed for 60 s after {now} calls: sled 0.34.7 deadlock suspected \
                     (SegmentAccountant::bump_tip waiting for a truncation queued behind blocked IO \
                     threads); giving up"
                );
                std::process::exit(2);
            }
        }
    });
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|value| value.replace('_', "").parse().expect(name))
        .unwrap_or(default)
}

fn main() {
    let entities = env_usize("IDEMFLOW_SCALE", 10_000);
    let ops = env_usize("IDEMFLOW_SCALE_OPS", 50_000);
    let drain = env_usize("IDEMFLOW_SCALE_DRAIN", 1) != 0;
    watchdog();
    let runs = env_usize("IDEMFLOW_SCALE_RUNS", 3).max(1);
    let out = std::env::var("IDEMFLOW_BENCH_OUT")
        .unwrap_or_else(|_| "target/bench-results/scale.jsonl".to_owned());
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = match std::env::var("IDEMFLOW_BENCH_DIR") {
        Ok(dir) => Path::new(&dir).join(format!("scale-{entities}")),
        Err(_) => temp.path().join("db"),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear the bench dir");
    }
    eprintln!("scale: {entities} entities x 10 history entries in {dir:?}");

    // 1. Bulk load.
    let started = Instant::now();
    {
        let engine = Engine::builder()
            .durability(Durability::Buffered)
            .open(&dir)
            .expect("open");
        let jobs = engine.machine::<Job>().expect("machine");
        load(&engine, &jobs, entities, drain);
        engine.flush().expect("flush");
    }
    let load_secs = started.elapsed().as_secs_f64();
    let load_rate = (entities * 10) as f64 / load_secs;
    eprintln!("loaded in {load_secs:.1} s ({load_rate:.0} writes/s)");
    let dir_bytes = du(&dir);

    // 2. Reopen.
    let started = Instant::now();
    let engine = Engine::builder()
        .durability(Durability::Buffered)
        .open(&dir)
        .expect("reopen");
    let jobs = engine.machine::<Job>().expect("machine");
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let sled_bytes = engine.size_on_disk().expect("size");
    eprintln!(
        "reopened in {open_ms:.0} ms; {} bytes/entity on disk ({} by sled's count)",
        dir_bytes / entities as u64,
        sled_bytes / entities as u64
    );

    // 3. Applied transitions on random entities.
    let payload = payload();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut pick = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        id((rng % entities as u64) as usize)
    };
    for _ in 0..ops / 10 {
        advance(&jobs, &pick(), fresh_key(), &payload);
    }
    let mut results: Vec<RunResult> = Vec::new();
    for run in 0..runs {
        let mut latencies = Vec::with_capacity(ops);
        let started = Instant::now();
        for _ in 0..ops {
            let target = pick();
            let call = Instant::now();
            advance(&jobs, &target, fresh_key(), &payload);
            latencies.push(call.elapsed());
            PROGRESS.fetch_add(1, Ordering::Relaxed);
        }
        let secs = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        let result = (ops as f64 / secs, at(0.5), at(0.99), at(1.0));
        eprintln!(
            "run {run}: {:.0} transitions/s, p50 {:?}, p99 {:?}, max {:?}",
            result.0, result.1, result.2, result.3
        );
        results.push(result);
    }
    let peak_rss = peak_rss_bytes().unwrap_or(0);
    eprintln!("peak RSS {} MiB", peak_rss / (1024 * 1024));

    let mut by_rate = results.clone();
    by_rate.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = by_rate[by_rate.len() / 2];
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let list = |f: &dyn Fn(&RunResult) -> f64| {
        results
            .iter()
            .map(|r| format!("{:.1}", f(r)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let line = format!(
        concat!(
            "{{\"entities\":{},\"drain\":{},\"ops\":{},\"runs\":{},",
            "\"tps\":[{}],\"p50_us\":[{}],\"p99_us\":[{}],\"max_us\":[{}],",
            "\"tps_min\":{:.1},\"tps_median\":{:.1},",
            "\"load_secs\":{:.2},\"load_writes_per_sec\":{:.0},",
            "\"dir_bytes\":{},\"sled_size_on_disk\":{},\"bytes_per_entity\":{},",
            "\"open_ms\":{:.1},\"peak_rss_bytes\":{}}}"
        ),
        entities,
        drain,
        ops,
        runs,
        list(&|r| r.0),
        list(&|r| micros(r.1)),
        list(&|r| micros(r.2)),
        list(&|r| micros(r.3)),
        by_rate[0].0,
        median.0,
        load_secs,
        load_rate,
        dir_bytes,
        sled_bytes,
        dir_bytes / entities as u64,
        open_ms,
        peak_rss,
    );
    println!("{line}");
    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent).expect("results dir");
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .expect("results file");
    writeln!(file, "{line}").expect("write results");
    drop(jobs);
    drop(engine);
    if std::env::var("IDEMFLOW_BENCH_DIR").is_ok() {
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Creates `entities` entities and moves each through 9 transitions, on 2
/// threads; a consumer drains the outbox as it fills.
fn load(engine: &Engine, jobs: &Machine<Job>, entities: usize, drain: bool) {
    const CHUNK: usize = 1000;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let payload = payload();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                if start >= entities {
                    break;
                }
                for i in start..(start + CHUNK).min(entities) {
                    let id = id(i);
                    jobs.create(&id).expect("create");
                    PROGRESS.fetch_add(1, Ordering::Relaxed);
                    for _ in 0..9 {
                        let outcome = jobs
                            .apply(
                                &id,
                                Request::fire(JobEvent::Advance).payload(payload.clone()),
                            )
                            .expect("apply");
                        assert!(outcome.was_applied());
                        PROGRESS.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let finished = done.fetch_add(CHUNK, Ordering::Relaxed) + CHUNK;
                if finished % (entities / 10).max(CHUNK) < CHUNK {
                    eprintln!(
                        "  {finished} entities in {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
        // The consumer: drains the outbox in batches while the loaders run.
        scope.spawn(|| {
            if !drain {
                return;
            }
            let outbox = engine.outbox();
            loop {
                let loaded = done.load(Ordering::Relaxed) >= entities;
                let events = outbox.pending(10_000).expect("pending");
                if events.is_empty() {
                    if loaded {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                outbox.ack(&events).expect("ack");
            }
        });
    });
    if drain {
        assert!(engine.outbox().is_empty().expect("outbox"));
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks, like `du`).
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            du(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}
