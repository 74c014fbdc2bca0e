//! Soak: sustained writes, outbox draining, key purging and reads under a
//! watchdog; the harness of issue #9 item 4.
//!
//! ```text
//! IDEMFLOW_SOAK_SECS=7200 cargo run --release --example soak
//! ```
//!
//! This file reads the configuration from the `IDEMFLOW_SOAK_*` environment
//! variables, runs the soak and prints the problems, the disk-size timeline
//! and the summary. It exits with code 2 on a hang and 1 on errors or
//! violated invariants. The harness (`harness/mod.rs`, which `tests/soak.rs`
//! includes too) documents the threads, the checks and every variable.

mod harness;

use harness::{run, Config};

/// Runs the soak configured by the environment (120 s by default) and exits
/// with its verdict.
fn main() {
    let config = Config::from_env(120);
    let report = run(config);
    if !report.problems.is_empty() {
        eprintln!("problems (first {}):", report.problems.len());
        for problem in &report.problems {
            eprintln!("  {problem}");
        }
    }
    eprintln!("disk size over the run:\n{}", report.timeline(24));
    println!("{}", report.summary());
    if report.hang.is_some() {
        // The engine is deadlocked: do not wait for its threads.
        std::process::exit(2);
    }
    if report.errors > 0 || report.violations > 0 {
        std::process::exit(1);
    }
}
