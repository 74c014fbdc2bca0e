//! Client threads of one process, and the worker processes of `--processes`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;

use idemflow::{Durability, Machine};
use indicatif::ProgressBar;

use super::join;
use super::machine::OrderState;
use super::scenarios::Client;
use super::tally::{Tally, WorkerReport};
use crate::cli::DemoArgs;
use crate::commands::{connect, postgres_url, print_out};
use crate::{CliError, CliResult};

/// Runs orders `first`, `first + step`, ... below `count` on `threads`
/// client threads; returns their counters.
pub(crate) fn drive(
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
pub(crate) fn run_worker(args: &DemoArgs, worker: u64, durability: Durability) -> CliResult {
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
pub(crate) fn run_workers(
    args: &DemoArgs,
    url: &str,
    charges: &[AtomicU32],
) -> CliResult<Vec<Tally>> {
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
