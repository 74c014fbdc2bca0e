//! The soak of `examples/soak/`, short: about 90 s in the default test run
//! (a debug build), under the watchdog. A hang fails the test with the
//! report of where every thread is parked; it never stalls the run.
//!
//! `IDEMFLOW_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`
//! runs it longer; the other `IDEMFLOW_SOAK_*` variables of the example apply
//! too. The multi-hour runs use the example (`docs/reliability.md`).

#[path = "../examples/soak/harness/mod.rs"]
mod soak;

use soak::{env_text, Config};

/// The disk may hold this many times the live bytes (keys + values of every
/// tree) before the test calls it unbounded. sled writes whole pages and keeps
/// old versions until a segment is cleaned; in the runs measured for this
/// test the directory held 3x to 6x the live bytes.
const MAX_AMPLIFICATION: u64 = 12;
/// What sled takes whatever the data: a few segments and its configuration.
const FIXED_BYTES: u64 = 64 * 1024 * 1024;

#[test]
fn soak_writes_drain_purge_and_reads_without_hang_or_unbounded_growth() {
    let mut config = Config::from_env(90);
    // Smaller than the example's defaults, for a debug build on 2 cores.
    if env_text("ENTITIES").is_none() {
        config.entities = 2_000;
    }
    if env_text("KEY_RETENTION_MS").is_none() {
        config.key_retention_ms = 1_000;
    }
    if env_text("HANG_SECS").is_none() {
        config.hang_secs = 60;
    }
    if env_text("REPORT_SECS").is_none() {
        config.report_secs = 15;
    }
    config.label = "tests/soak".to_owned();
    let secs = config.secs;
    let report = soak::run(config);
    eprintln!("disk size over the run:\n{}", report.timeline(12));
    eprintln!("{}", report.summary());

    if let Some(hang) = &report.hang {
        panic!("the soak hung:\n{hang}");
    }
    assert!(
        report.errors == 0 && report.violations == 0,
        "{} errors and {} violated invariants; first ones:\n{}",
        report.errors,
        report.violations,
        report.problems.join("\n")
    );

    // Every kind of work made progress.
    assert!(report.writes >= secs * 10, "only {} writes", report.writes);
    assert!(
        report.applied > 0 && report.replays > 0,
        "{}",
        report.summary()
    );
    assert!(report.acked > 0, "the consumer acknowledged nothing");
    assert!(report.purged > 0, "no expired key was purged");
    assert!(report.reads > 0, "no read completed");
    assert!(report.entities_checked > 0);
    // What was applied and not acknowledged is exactly what is left (the
    // per-entity check is in the run; this is the total).
    assert_eq!(report.applied, report.history_entries);
    assert_eq!(report.outbox_final, report.applied - report.acked);

    // Bounded disk: the directory at any moment and after the close holds at
    // most a fixed multiple of the live data (sled#1333).
    assert!(report.live_bytes > 0, "could not measure the live bytes");
    let bound = MAX_AMPLIFICATION * report.live_bytes + FIXED_BYTES;
    let max_dir = report
        .samples
        .iter()
        .map(|s| s.dir_bytes)
        .max()
        .unwrap_or(0);
    assert!(
        max_dir <= bound && report.dir_bytes_closed <= bound,
        "disk not bounded: up to {max_dir} bytes during the run, {} after, for {} live bytes \
         (bound {bound})\n{}",
        report.dir_bytes_closed,
        report.live_bytes,
        report.timeline(24)
    );
}
