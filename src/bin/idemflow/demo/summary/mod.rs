//! The demo's summary: what ran, what the checks found, the files written.

mod graphs;
mod render;

use std::collections::BTreeMap;

use serde::Serialize;

pub(crate) use graphs::write_graphs;
pub(crate) use render::render_summary;

/// One invariant check of the summary.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) pass: bool,
    pub(crate) detail: String,
}

impl Check {
    pub(crate) fn new(name: &str, pass: bool, detail: String) -> Check {
        Check {
            name: name.to_owned(),
            pass,
            detail,
        }
    }
}

/// A file the demo wrote.
#[derive(Debug, Serialize)]
pub(crate) struct WrittenFile {
    pub(crate) kind: &'static str,
    pub(crate) path: String,
}

/// Request counters of the summary.
#[derive(Debug, Serialize)]
pub(crate) struct RequestCounts {
    pub(crate) sent: u64,
    pub(crate) applied: u64,
    pub(crate) noops: u64,
    pub(crate) replays: u64,
    pub(crate) rejected: u64,
    pub(crate) rejected_by_reason: BTreeMap<&'static str, u64>,
}

/// The demo's summary, printed as a table or as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) orders: u64,
    pub(crate) threads: u64,
    pub(crate) duplicate_rate: f64,
    pub(crate) seed: u64,
    pub(crate) durability: &'static str,
    pub(crate) database: Option<String>,
    pub(crate) processes: u64,
    pub(crate) requests: RequestCounts,
    pub(crate) scenarios: BTreeMap<&'static str, u64>,
    pub(crate) injected_faults: BTreeMap<&'static str, u64>,
    pub(crate) final_states: Vec<(String, u64)>,
    pub(crate) orders_charged: u64,
    pub(crate) orders_charged_twice: u64,
    /// Orders the payment timeout cancelled (their history says so).
    pub(crate) orders_cancelled_by_timeout: u64,
    /// Timers the processes' `run_due_timers` calls processed, summed (one
    /// timer fired by several processes counts in each).
    pub(crate) timer_firings: u64,
    pub(crate) checks: Vec<Check>,
    pub(crate) all_checks_passed: bool,
    pub(crate) unexpected_outcomes: Vec<String>,
    pub(crate) elapsed_seconds: f64,
    pub(crate) requests_per_second: f64,
    pub(crate) files: Vec<WrittenFile>,
    pub(crate) graph_note: Option<String>,
}
