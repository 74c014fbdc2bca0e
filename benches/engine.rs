//! Engine benchmarks, each with its baseline in the same run (see docs/BENCHMARKS.md).
//!
//! `cargo bench --bench engine` runs them all (about 6 minutes on 2 cores);
//! a filter runs a part, e.g. `cargo bench --bench engine -- transition/`.
//!
//! - `transition/*`: one applied transition (fresh idempotency key, small
//!   JSON payload) on the engine vs the raw-sled baseline doing the same reads
//!   and writes in one transaction, `Buffered` and `Immediate`.
//! - `read_path/*`: no-op without a key, key replay (both write nothing), and
//!   a no-op with a new key (writes only the key record), `Buffered` and `Immediate`.
//! - `ops/*`: create, get, history (50 entries), in_state (1000 ids), outbox
//!   pending(100) + ack, each next to plain sled doing the same reads/writes.
//! - `threads_buffered/*`, `threads_immediate/*`: 1, 2, 4, 8 threads on
//!   disjoint entities and all on one shared entity; throughput is calls/s.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use idemflow::{Durability, Engine, Machine, Request};

use common::{
    advance, advance_shared, create_all, fresh_key, id, open_engine, payload, Cursor, Job, RawSled,
    Templates,
};

/// Entities the single-thread transition benches cycle through.
const ENTITIES: usize = 1000;
/// Entities per thread in the disjoint thread benches.
const PER_THREAD: usize = 100;
const THREADS: [usize; 4] = [1, 2, 4, 8];

/// `engine` with the batching writer on (the default), `engine_unbatched` without.
fn engine_name(batching: bool) -> &'static str {
    if batching {
        "engine"
    } else {
        "engine_unbatched"
    }
}

fn mode_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Buffered => "buffered",
        Durability::Immediate => "immediate",
    }
}

/// Engine applied transition vs raw sled, Buffered and Immediate.
fn transition(c: &mut Criterion) {
    let templates = Templates::capture();
    let payload = payload();
    let ids: Vec<String> = (0..ENTITIES).map(id).collect();
    let mut group = c.benchmark_group("transition");
    group.throughput(Throughput::Elements(1));
    for durability in [Durability::Buffered, Durability::Immediate] {
        let mode = mode_name(durability);
        if durability == Durability::Immediate {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(4));
        } else {
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(3));
        }
        {
            let dir = tempfile::tempdir().unwrap();
            let raw = RawSled::open(dir.path(), templates.clone());
            for id in &ids {
                raw.create(id);
            }
            raw.sync();
            let mut cursors = vec![Cursor::default(); ENTITIES];
            let mut n = 0usize;
            group.bench_function(format!("raw_sled/{mode}"), |b| {
                b.iter(|| {
                    let i = n % ENTITIES;
                    n += 1;
                    let (version, from) = cursors[i].step();
                    raw.transition(&ids[i], version, from, &fresh_key());
                    if durability == Durability::Immediate {
                        raw.sync();
                    }
                })
            });
        }
        for batching in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (engine, jobs) = open_engine(dir.path(), durability, batching);
            bulk_create(&engine, &jobs, 0..ENTITIES);
            let mut n = 0usize;
            group.bench_function(format!("{}/{mode}", engine_name(batching)), |b| {
                b.iter(|| {
                    let i = n % ENTITIES;
                    n += 1;
                    advance(&jobs, &ids[i], fresh_key(), &payload);
                })
            });
        }
    }
    group.finish();
}

/// Creates entities quickly whatever the engine's durability: Immediate
/// engines still pay one flush per create, so create through threads.
fn bulk_create(engine: &Engine, jobs: &Machine<Job>, range: std::ops::Range<usize>) {
    if engine.durability() == Durability::Buffered {
        create_all(jobs, range);
        return;
    }
    let next = AtomicUsize::new(range.start);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= range.end {
                    break;
                }
                jobs.create(&id(i)).unwrap();
            });
        }
    });
}

/// The read-only paths: a no-op without a key and a key replay write nothing.
fn read_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_path");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    for durability in [Durability::Buffered, Durability::Immediate] {
        let mode = mode_name(durability);
        let dir = tempfile::tempdir().unwrap();
        let (engine, jobs) = open_engine(dir.path(), durability, true);
        create_all(&jobs, 0..ENTITIES);
        let ids: Vec<String> = (0..ENTITIES).map(id).collect();
        // Entity i is at version 2 (running), reached with key replay-i.
        let replays: Vec<Request<Job>> = ids
            .iter()
            .map(|id| {
                let request = Request::to(Job::Running)
                    .key(format!("replay-{id}"))
                    .payload(payload());
                assert!(jobs.apply(id, request.clone()).unwrap().was_applied());
                request
            })
            .collect();
        engine.flush().unwrap();
        let outbox_before = engine.outbox().len().unwrap();
        let size_before = written_entries(&jobs, &ids);

        let mut n = 0usize;
        group.bench_function(format!("noop_no_key/{mode}"), |b| {
            b.iter(|| {
                let i = n % ENTITIES;
                n += 1;
                let outcome = jobs.apply(&ids[i], Request::to(Job::Running)).unwrap();
                debug_assert!(outcome.was_noop());
                black_box(outcome);
            })
        });
        let mut n = 0usize;
        group.bench_function(format!("replay/{mode}"), |b| {
            b.iter(|| {
                let i = n % ENTITIES;
                n += 1;
                let outcome = jobs.apply(&ids[i], replays[i].clone()).unwrap();
                debug_assert!(outcome.is_replay());
                black_box(outcome);
            })
        });
        // Nothing was written by either: same versions, history, keys, outbox.
        assert_eq!(
            written_entries(&jobs, &ids),
            size_before,
            "a read path wrote"
        );
        assert_eq!(
            engine.outbox().len().unwrap(),
            outbox_before,
            "a read path wrote"
        );

        let mut n = 0usize;
        group.bench_function(format!("noop_new_key/{mode}"), |b| {
            b.iter(|| {
                let i = n % ENTITIES;
                n += 1;
                let request = Request::to(Job::Running).key(fresh_key());
                let outcome = jobs.apply(&ids[i], request).unwrap();
                debug_assert!(outcome.was_noop());
                black_box(outcome);
            })
        });
    }
    group.finish();
}

/// Versions and history lengths of `ids` (what a write would change).
fn written_entries(jobs: &Machine<Job>, ids: &[String]) -> (u64, usize) {
    let mut versions = 0;
    let mut entries = 0;
    for id in ids.iter().step_by(97) {
        versions += jobs.get(id).unwrap().unwrap().version;
        entries += jobs.history(id).unwrap().len();
    }
    (versions, entries)
}

/// create, get, history(50), in_state(1000), outbox pending(100)+ack; each next to plain sled.
fn ops(c: &mut Criterion) {
    let templates = Templates::capture();
    let payload = payload();
    let mut group = c.benchmark_group("ops");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));

    // create: fresh ids, in databases of their own.
    group.throughput(Throughput::Elements(1));
    {
        let raw_dir = tempfile::tempdir().unwrap();
        let raw = RawSled::open(raw_dir.path(), templates.clone());
        let mut n = 0usize;
        group.bench_function("create/raw_sled", |b| {
            b.iter(|| {
                n += 1;
                raw.create(&id(n));
            })
        });
        let engine_dir = tempfile::tempdir().unwrap();
        let (_engine, jobs) = open_engine(engine_dir.path(), Durability::Buffered, true);
        let mut n = 0usize;
        group.bench_function("create/engine", |b| {
            b.iter(|| {
                n += 1;
                assert!(jobs.create(&id(n)).unwrap().was_created());
            })
        });
    }

    let engine_dir = tempfile::tempdir().unwrap();
    let (engine, jobs) = open_engine(engine_dir.path(), Durability::Buffered, true);
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = RawSled::open(raw_dir.path(), templates);

    // The read set: ENTITIES entities in `queued`, one entity with 50 history entries.
    let ids: Vec<String> = (0..ENTITIES).map(id).collect();
    for id in &ids {
        raw.create(id);
    }
    create_all(&jobs, 0..ENTITIES);
    let long = "long-history";
    raw.create(long);
    jobs.create(long).unwrap();
    let mut cursor = Cursor::default();
    for _ in 1..50 {
        let (version, from) = cursor.step();
        raw.transition(long, version, from, &fresh_key());
        advance(&jobs, long, fresh_key(), &payload);
    }
    assert_eq!(jobs.history(long).unwrap().len(), 50);
    assert_eq!(raw.history_len(long), 50);

    let mut n = 0usize;
    group.bench_function("get/raw_sled", |b| {
        b.iter(|| {
            n += 1;
            black_box(raw.get(&ids[n % ENTITIES]));
        })
    });
    let mut n = 0usize;
    group.bench_function("get/engine", |b| {
        b.iter(|| {
            n += 1;
            black_box(jobs.get(&ids[n % ENTITIES]).unwrap());
        })
    });
    group.bench_function("history_50/raw_sled", |b| {
        b.iter(|| black_box(raw.history_len(long)))
    });
    group.bench_function("history_50/engine", |b| {
        b.iter(|| black_box(jobs.history(long).unwrap()))
    });
    group.bench_function("in_state_1000/raw_sled", |b| {
        b.iter(|| assert_eq!(raw.in_state("queued"), ENTITIES))
    });
    group.bench_function("in_state_1000/engine", |b| {
        b.iter(|| assert_eq!(jobs.in_state(Job::Queued).unwrap().len(), ENTITIES))
    });

    // Outbox: 100 events pending (made and flushed untimed), then timed
    // pending(100) + ack of those 100.
    group.sample_size(10);
    let outbox = engine.outbox();
    outbox.ack(&outbox.pending(usize::MAX).unwrap()).unwrap();
    // The raw entities went through create only: walk them from there.
    let mut cursors = vec![Cursor::default(); ENTITIES];
    let mut n = 0usize;
    group.bench_function("outbox_pending_ack_100/raw_sled", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                clear(raw.outbox());
                for _ in 0..100 {
                    let i = n % ENTITIES;
                    n += 1;
                    let (version, from) = cursors[i].step();
                    raw.transition(&ids[i], version, from, &fresh_key());
                }
                raw.db.flush().unwrap();
                let start = Instant::now();
                let events: Vec<(sled::IVec, sled::IVec)> =
                    raw.outbox().iter().take(100).map(Result::unwrap).collect();
                for (key, _) in &events {
                    raw.outbox().remove(key).unwrap();
                }
                total += start.elapsed();
                assert_eq!(events.len(), 100);
            }
            total
        })
    });
    let mut n = 0usize;
    group.bench_function("outbox_pending_ack_100/engine", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..100 {
                    n += 1;
                    advance(&jobs, &ids[n % ENTITIES], fresh_key(), &payload);
                }
                engine.flush().unwrap();
                let start = Instant::now();
                let events = outbox.pending(100).unwrap();
                let acked = outbox.ack(&events).unwrap();
                total += start.elapsed();
                assert_eq!(acked, 100);
            }
            total
        })
    });
    group.finish();
}

fn clear(tree: &sled::Tree) {
    for key in tree.iter().keys() {
        tree.remove(key.unwrap()).unwrap();
    }
}

/// Runs `iters` calls spread over `threads` threads; returns the wall time.
fn spread(threads: usize, iters: u64, call: impl Fn(usize, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let share = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
            let call = &call;
            scope.spawn(move || {
                for k in 0..share {
                    call(t, k);
                }
            });
        }
    });
    start.elapsed()
}

/// 1, 2, 4, 8 threads on disjoint entities and all on one shared entity.
fn threads(c: &mut Criterion, durability: Durability) {
    let mode = mode_name(durability);
    let payload = payload();
    let mut group = c.benchmark_group(format!("threads_{mode}"));
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat);
    match durability {
        Durability::Buffered => group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3)),
        Durability::Immediate => group
            .sample_size(10)
            .measurement_time(Duration::from_secs(4)),
    };
    let max = *THREADS.iter().max().unwrap();
    let ids: Vec<Vec<String>> = (0..max)
        .map(|t| (0..PER_THREAD).map(|i| id(t * PER_THREAD + i)).collect())
        .collect();

    if durability == Durability::Buffered {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawSled::open(dir.path(), Templates::capture());
        for id in ids.iter().flatten() {
            raw.create(id);
        }
        let cursors: Vec<std::sync::Mutex<Vec<Cursor>>> = (0..max)
            .map(|_| std::sync::Mutex::new(vec![Cursor::default(); PER_THREAD]))
            .collect();
        for threads in THREADS {
            group.bench_function(format!("raw_sled_disjoint/{threads}"), |b| {
                b.iter_custom(|iters| {
                    spread(threads, iters, |t, k| {
                        let i = k as usize % PER_THREAD;
                        let (version, from) = cursors[t].lock().unwrap()[i].step();
                        raw.transition(&ids[t][i], version, from, &fresh_key());
                    })
                })
            });
        }
    }

    for batching in [true, false] {
        let suffix = if batching { "" } else { "_unbatched" };
        let dir = tempfile::tempdir().unwrap();
        let (engine, jobs) = open_engine(dir.path(), durability, batching);
        bulk_create(&engine, &jobs, 0..max * PER_THREAD);
        let shared = "shared";
        jobs.create(shared).unwrap();
        for threads in THREADS {
            group.bench_function(format!("disjoint{suffix}/{threads}"), |b| {
                b.iter_custom(|iters| {
                    spread(threads, iters, |t, k| {
                        advance(
                            &jobs,
                            &ids[t][k as usize % PER_THREAD],
                            fresh_key(),
                            &payload,
                        );
                    })
                })
            });
        }
        for threads in THREADS {
            group.bench_function(format!("shared{suffix}/{threads}"), |b| {
                b.iter_custom(|iters| {
                    spread(threads, iters, |_, _| {
                        assert!(advance_shared(&jobs, shared, fresh_key(), &payload));
                    })
                })
            });
        }
    }
    group.finish();
}

fn threads_buffered(c: &mut Criterion) {
    threads(c, Durability::Buffered);
}

fn threads_immediate(c: &mut Criterion) {
    threads(c, Durability::Immediate);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = transition, read_path, ops, threads_buffered, threads_immediate
}
criterion_main!(benches);
