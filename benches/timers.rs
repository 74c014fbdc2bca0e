//! Timers draining vs plain applied transitions, in the same run
//! (docs/BENCHMARKS.md, "Timers").
//!
//! `cargo bench --bench timers` (about a minute on 2 cores).
//!
//! - `timers/fire_due`: `Engine::run_due_timers` with `batch()` declared
//!   timeouts due at once (a `ManualClock` moved past them): each fires
//!   `expire` through the write path (keyed, version-checked, the timer
//!   removed in the same atomic step);
//! - `timers/apply_plain`: the same number of plain applied transitions
//!   (`fire(expire)` without a key) from one thread, one after the other:
//!   the baseline of the target "draining >= 50% of the rate of plain
//!   applied transitions".
//!
//! Throughput is per transition. `Buffered` durability, as the target is
//! about the engine's work, not the disk's.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use idemflow::testing::ManualClock;
use idemflow::{Durability, Engine, StateMachine};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "hold", initial = Held, events = HoldEvent)]
pub enum Hold {
    #[timeout(after = "1m", fire = expire)]
    #[on(expire = Expired)]
    Held,
    #[terminal]
    Expired,
}

/// Timers (or transitions) per measured iteration: 5,000 by default,
/// `IDEMFLOW_TIMER_BATCH=100000` for the target's 100,000 at once.
fn batch() -> usize {
    std::env::var("IDEMFLOW_TIMER_BATCH")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000)
}

/// An engine with `batch()` fresh entities in `Held` (each with its timeout
/// armed), and its clock.
fn prepared(round: usize) -> (tempfile::TempDir, Engine, ManualClock) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(1_800_000_000_000);
    let engine = Engine::builder()
        .durability(Durability::Buffered)
        .clock(clock.clone())
        .timers(false)
        .open(dir.path())
        .expect("engine");
    let holds = engine.machine::<Hold>().expect("machine");
    for n in 0..batch() {
        holds.create(&format!("h-{round}-{n}")).expect("create");
    }
    engine.flush().expect("flush");
    (dir, engine, clock)
}

fn timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timers");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(batch() as u64));
    group.bench_function("fire_due", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for round in 0..iterations as usize {
                let (_dir, engine, clock) = prepared(round);
                clock.advance(Duration::from_secs(61));
                let started = Instant::now();
                let fired = engine.run_due_timers().expect("timers");
                total += started.elapsed();
                assert_eq!(fired, batch());
            }
            total
        });
    });
    group.bench_function("apply_plain", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for round in 0..iterations as usize {
                let (_dir, engine, _clock) = prepared(round);
                let holds = engine.machine::<Hold>().expect("machine");
                let started = Instant::now();
                for n in 0..batch() {
                    let outcome = holds
                        .fire(&format!("h-{round}-{n}"), HoldEvent::Expire)
                        .expect("fire");
                    assert!(outcome.was_applied());
                }
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
