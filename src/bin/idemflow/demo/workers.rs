//! The worker processes of `--processes`: each runs the time line on its
//! share of the orders; the first process starts them, lets them pass from
//! one phase to the next together, and collects their reports.
//!
//! The protocol, one line at a time: after each phase but the last, a
//! worker prints `ready` on its stdout and waits for `go` on its stdin; at
//! the end it prints its [`WorkerReport`] as one JSON line.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use idemflow::testing::ManualClock;
use idemflow::Durability;
use indicatif::ProgressBar;

use super::database::demo_engine;
use super::machine::OrderState;
use super::scenarios::Phase;
use super::tally::{Tally, WorkerReport};
use super::timeline::Process;
use crate::cli::DemoArgs;
use crate::commands::{connect_with, postgres_url, print_out};
use crate::{CliError, CliResult};

/// How many times the processes wait for each other: after every phase
/// but the last.
const RENDEZVOUS: usize = 3;

/// `idemflow demo --processes P --worker K`: runs orders K, K + P, ... and
/// prints a [`WorkerReport`] as one JSON line.
pub(crate) fn run_worker(args: &DemoArgs, worker: u64, durability: Durability) -> CliResult {
    let url = args
        .db
        .as_deref()
        .and_then(postgres_url)
        .ok_or_else(|| CliError::new("a demo worker needs --db postgres://..."))?;
    let start = args
        .clock_ms
        .ok_or_else(|| CliError::new("a demo worker needs --clock-ms"))?;
    let clock = ManualClock::new(start);
    let engine = connect_with(demo_engine(durability, &clock), url)?;
    let orders = engine.machine::<OrderState>()?;
    let capacity = usize::try_from(args.orders)
        .map_err(|_| CliError::new(format!("{} orders do not fit in memory here", args.orders)))?;
    let charges: Vec<AtomicU32> = (0..capacity).map(|_| AtomicU32::new(0)).collect();
    let process = Process {
        engine: &engine,
        orders: &orders,
        clock: &clock,
        charges: &charges,
        args,
        first: worker,
        step: args.processes,
        progress: &ProgressBar::hidden(),
    };
    let tally = process.drive(&mut wait_for_the_others)?;
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

/// A worker's side of the rendezvous: `ready` out, then `go` in.
fn wait_for_the_others(phase: Phase) -> CliResult {
    let lost = |error: std::io::Error| {
        CliError::new(format!("lost the demo after phase {phase:?}: {error}"))
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").map_err(lost)?;
    out.flush().map_err(lost)?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(lost)?;
    if line.trim() == "go" {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "the demo stopped after phase {phase:?}"
        )))
    }
}

/// A started worker process with its pipes.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// Starts `--processes` worker processes (this program, `--worker K`) on the
/// same database, lets them through the phases together, waits for them and
/// collects their counters and charges.
pub(crate) fn run_workers(
    args: &DemoArgs,
    url: &str,
    clock_ms: u64,
    charges: &[AtomicU32],
) -> CliResult<Vec<Tally>> {
    let mut workers = start_workers(args, url, clock_ms)?;
    if let Err(error) = rendezvous(&mut workers) {
        // Closing their stdin stops the others at their next rendezvous.
        for worker in &mut workers {
            worker.stdin = None;
        }
        for worker in &mut workers {
            let _ = worker.child.wait();
        }
        return Err(error);
    }
    let mut tallies = Vec::new();
    let mut failures = Vec::new();
    for (index, mut worker) in workers.into_iter().enumerate() {
        worker.stdin = None;
        let mut output = Vec::new();
        worker
            .stdout
            .read_to_end(&mut output)
            .map_err(|error| CliError::new(format!("demo worker {index}: {error}")))?;
        let status = worker
            .child
            .wait()
            .map_err(|error| CliError::new(format!("demo worker {index}: {error}")))?;
        if !status.success() {
            failures.push(format!("worker {index} exited with {status}"));
            continue;
        }
        let report: WorkerReport = serde_json::from_slice(&output).map_err(|error| {
            CliError::new(format!(
                "demo worker {index} sent an unreadable report: {error}"
            ))
        })?;
        for (order, count) in report.charges {
            if let Some(slot) = usize::try_from(order)
                .ok()
                .and_then(|order| charges.get(order))
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

/// Starts the worker processes.
fn start_workers(args: &DemoArgs, url: &str, clock_ms: u64) -> CliResult<Vec<Worker>> {
    let program = std::env::current_exe().map_err(|error| {
        CliError::new(format!(
            "cannot find this program to start workers: {error}"
        ))
    })?;
    let mut workers = Vec::new();
    for worker in 0..args.processes {
        let mut command = Command::new(&program);
        command
            .arg("demo")
            .args(["--db", url])
            .args(["--orders", &args.orders.to_string()])
            .args(["--threads", &args.threads.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .args(["--duplicate-rate", &args.duplicate_rate.to_string()])
            .args(["--processes", &args.processes.to_string()])
            .args(["--worker", &worker.to_string()])
            .args(["--clock-ms", &clock_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if args.durable {
            command.arg("--durable");
        }
        let mut child = command.spawn().map_err(|error| {
            CliError::new(format!("could not start demo worker {worker}: {error}"))
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(CliError::new(format!("demo worker {worker} has no pipes")));
        };
        workers.push(Worker {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        });
    }
    Ok(workers)
}

/// The first process's side of the rendezvous: after each phase, waits for
/// every worker's `ready`, then sends each one `go`.
fn rendezvous(workers: &mut [Worker]) -> CliResult {
    for phase in 0..RENDEZVOUS {
        for (index, worker) in workers.iter_mut().enumerate() {
            let mut line = String::new();
            let read = worker
                .stdout
                .read_line(&mut line)
                .map_err(|error| CliError::new(format!("demo worker {index}: {error}")))?;
            if read == 0 || line.trim() != "ready" {
                let status = worker
                    .child
                    .wait()
                    .map(|status| status.to_string())
                    .unwrap_or_else(|error| error.to_string());
                return Err(CliError::new(format!(
                    "demo worker {index} stopped in phase {} ({status})",
                    phase + 1
                )));
            }
        }
        for (index, worker) in workers.iter_mut().enumerate() {
            let sent = match worker.stdin.as_mut() {
                Some(stdin) => writeln!(stdin, "go").and_then(|()| stdin.flush()),
                None => Ok(()),
            };
            sent.map_err(|error| CliError::new(format!("demo worker {index}: {error}")))?;
        }
    }
    Ok(())
}
