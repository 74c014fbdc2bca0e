//! `idemflow demo`: the order lifecycle under duplicate deliveries, retries
//! after lost responses, out-of-order events and concurrent conflicting
//! requests, followed by the engine's invariant checks and a summary.
//!
//! Every order runs one scenario (ship, refund, cancel in draft, pay racing
//! cancel, a stampede of identical payments, pay just before the payment
//! timeout, pay racing it, or never pay) chosen by a seeded generator;
//! faults are injected with the `--duplicate-rate` probability. Every request
//! states the outcome the scenario expects (except racing ones, whose winner
//! is up to the scheduler), so the demo also checks that the engine answers
//! each one as SPEC section 3 says.
//!
//! Time is the demo's: every engine runs on a [`ManualClock`] without the
//! background timer runner, and [`timeline`] moves the clock through the
//! phases of [`scenarios::Phase`], firing due timeouts with
//! `run_due_timers`.

mod database;
mod expect;
mod invariants;
mod machine;
mod scenarios;
mod summary;
mod tally;
mod timeline;
mod workers;

use std::io::IsTerminal;
use std::sync::atomic::AtomicU32;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idemflow::testing::ManualClock;
use idemflow::Durability;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::DemoArgs;
use crate::commands::{describe_db, postgres_url, print_json, print_out};
use crate::{CliError, CliResult};
use database::open_database;
use invariants::check_invariants;
use machine::OrderState;
use summary::{render_summary, write_graphs, RequestCounts, Summary};
use tally::Tally;
use timeline::Process;
use workers::{run_worker, run_workers};

/// Waits for a scoped thread, passing on its panic (an engine bug) as is.
pub(crate) fn join<T>(handle: ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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
    let clock_ms = args.clock_ms.unwrap_or_else(now_ms);
    let clock = ManualClock::new(clock_ms);
    let engine = open_database(args.db.as_deref(), durability, &clock)?;
    let orders = engine.machine::<OrderState>()?;
    let count = args.orders;
    let capacity = usize::try_from(count)
        .map_err(|_| CliError::new(format!("{count} orders do not fit in memory here")))?;
    let charges: Vec<AtomicU32> = (0..capacity).map(|_| AtomicU32::new(0)).collect();

    let started = Instant::now();
    let tallies: Vec<Tally> = match url {
        Some(url) if args.processes > 1 => run_workers(args, url, clock_ms, &charges)?,
        _ => {
            let progress = progress_bar(count);
            let process = Process {
                engine: &engine,
                orders: &orders,
                clock: &clock,
                charges: &charges,
                args,
                first: 0,
                step: 1,
                progress: &progress,
            };
            // Alone, nobody to wait for between phases.
            let tally = process.drive(&mut |_| Ok(()))?;
            progress.finish_and_clear();
            vec![tally]
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
        orders_cancelled_by_timeout: report.orders_cancelled_by_timeout,
        timer_firings: tally.timer_firings,
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

/// The real time, where the demo's clock starts (ms since the epoch).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
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
