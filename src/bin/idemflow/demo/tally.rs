//! Counters of the client threads and the report a worker process sends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many examples of unexpected outcomes the summary lists.
pub(crate) const UNEXPECTED_SAMPLES: usize = 5;

/// Counters of one client thread, merged at the end (and, with
/// `--processes`, sent by each worker process to the first as JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) applied: u64,
    pub(crate) noops: u64,
    pub(crate) replays: u64,
    #[serde(deserialize_with = "static_keys")]
    pub(crate) rejected: BTreeMap<&'static str, u64>,
    pub(crate) unexpected: u64,
    pub(crate) unexpected_samples: Vec<String>,
    #[serde(deserialize_with = "static_keys")]
    pub(crate) scenarios: BTreeMap<&'static str, u64>,
    #[serde(deserialize_with = "static_keys")]
    pub(crate) faults: BTreeMap<&'static str, u64>,
    pub(crate) races: u64,
    pub(crate) races_with_one_winner: u64,
    pub(crate) races_won_by_pay: u64,
    pub(crate) stampedes: u64,
    pub(crate) stampedes_with_one_payment: u64,
    /// Payments sent while the timeout fired.
    #[serde(default)]
    pub(crate) timeout_races: u64,
    /// Of those, payments that applied (the timeout found the order paid).
    #[serde(default)]
    pub(crate) timeout_races_won_by_pay: u64,
    /// Of those, payments refused because the timeout had cancelled the order.
    #[serde(default)]
    pub(crate) timeout_races_won_by_timeout: u64,
    /// Timers this process's `run_due_timers` calls processed (a timer that
    /// several processes fire counts in each).
    #[serde(default)]
    pub(crate) timer_firings: u64,
}

impl Tally {
    pub(crate) fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.applied += other.applied;
        self.noops += other.noops;
        self.replays += other.replays;
        for (kind, count) in other.rejected {
            *self.rejected.entry(kind).or_default() += count;
        }
        self.unexpected += other.unexpected;
        for sample in other.unexpected_samples {
            if self.unexpected_samples.len() < UNEXPECTED_SAMPLES {
                self.unexpected_samples.push(sample);
            }
        }
        for (name, count) in other.scenarios {
            *self.scenarios.entry(name).or_default() += count;
        }
        for (name, count) in other.faults {
            *self.faults.entry(name).or_default() += count;
        }
        self.races += other.races;
        self.races_with_one_winner += other.races_with_one_winner;
        self.races_won_by_pay += other.races_won_by_pay;
        self.stampedes += other.stampedes;
        self.stampedes_with_one_payment += other.stampedes_with_one_payment;
        self.timeout_races += other.timeout_races;
        self.timeout_races_won_by_pay += other.timeout_races_won_by_pay;
        self.timeout_races_won_by_timeout += other.timeout_races_won_by_timeout;
        self.timer_firings += other.timer_firings;
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Reads a worker's counters: the names are the demo's own (error kinds,
/// scenarios, faults), a small fixed set, so they are interned for the run.
pub(crate) fn static_keys<'de, D>(deserializer: D) -> Result<BTreeMap<&'static str, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let owned = BTreeMap::<String, u64>::deserialize(deserializer)?;
    Ok(owned
        .into_iter()
        .map(|(name, count)| (&*Box::leak(name.into_boxed_str()), count))
        .collect())
}

/// What a worker process reports: its counters and the charges of its orders.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerReport {
    pub(crate) tally: Tally,
    /// (order index, applied payments) for every order it charged.
    pub(crate) charges: Vec<(u64, u32)>,
}
