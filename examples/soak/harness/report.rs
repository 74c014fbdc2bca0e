//! The figures of a run: a [`Sample`] per second, and the [`Report`] at the
//! end with its one-line summary and disk-size timeline.

use std::fmt::Write as _;

/// Figures at one moment of the run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the start.
    pub secs: f64,
    /// Operations completed by every thread but the sampler.
    pub ops: u64,
    /// Write requests sent.
    pub writes: u64,
    /// Changes applied.
    pub applied: u64,
    /// Outbox events acknowledged.
    pub acked: u64,
    /// Expired keys purged.
    pub purged: u64,
    /// Reads completed.
    pub reads: u64,
    /// The outbox length.
    pub outbox_len: u64,
    /// sled's own size on disk (`Engine::size_on_disk`).
    pub sled_bytes: u64,
    /// The database directory's allocated bytes.
    pub dir_bytes: u64,
    /// The process's resident memory.
    pub rss_bytes: u64,
}

impl Sample {
    /// The CSV header of [`Sample::csv`] lines.
    pub(super) const CSV_HEADER: &'static str =
        "secs,ops,writes,applied,acked,purged,reads,outbox_len,sled_bytes,dir_bytes,rss_bytes";

    /// The sample as one CSV line.
    pub(super) fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{}",
            self.secs,
            self.ops,
            self.writes,
            self.applied,
            self.acked,
            self.purged,
            self.reads,
            self.outbox_len,
            self.sled_bytes,
            self.dir_bytes,
            self.rss_bytes
        )
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run's label.
    pub label: String,
    /// How long the run took, in seconds.
    pub secs: f64,
    /// Operations completed by every thread but the sampler.
    pub ops: u64,
    /// Write requests sent.
    pub writes: u64,
    /// Changes applied (creations included).
    pub applied: u64,
    /// Entities created.
    pub creations: u64,
    /// Answers that were replays.
    pub replays: u64,
    /// Requests that changed nothing.
    pub noops: u64,
    /// Version conflicts.
    pub conflicts: u64,
    /// Calls of `pending` by the consumer.
    pub pending_calls: u64,
    /// Outbox events acknowledged.
    pub acked: u64,
    /// Calls of `purge_expired_keys`.
    pub purge_calls: u64,
    /// Expired keys purged.
    pub purged: u64,
    /// Reads completed.
    pub reads: u64,
    /// Flushes by the flushers.
    pub flushes: u64,
    /// Engine errors.
    pub errors: u64,
    /// Violated invariants.
    pub violations: u64,
    /// The first problems, as text.
    pub problems: Vec<String>,
    /// The watchdog's report, if it declared a hang.
    pub hang: Option<String>,
    /// The figures of every second.
    pub samples: Vec<Sample>,
    /// Entities checked after the run, and their history entries.
    pub entities_checked: u64,
    /// History entries of the checked entities.
    pub history_entries: u64,
    /// Outbox length at the end (after a flush).
    pub outbox_final: u64,
    /// Directory size (allocated blocks) after the engine closed.
    pub dir_bytes_closed: u64,
    /// Keys + values of every tree, read with sled after the engine closed.
    pub live_bytes: u64,
    /// The process's peak resident memory.
    pub peak_rss_bytes: u64,
}

impl Report {
    /// The smallest, largest and last value of a sample field.
    fn min_max_last(&self, field: impl Fn(&Sample) -> u64) -> (u64, u64, u64) {
        let values: Vec<u64> = self.samples.iter().map(field).collect();
        (
            values.iter().copied().min().unwrap_or(0),
            values.iter().copied().max().unwrap_or(0),
            values.last().copied().unwrap_or(0),
        )
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let (sled_min, sled_max, sled_last) = self.min_max_last(|s| s.sled_bytes);
        let (dir_min, dir_max, dir_last) = self.min_max_last(|s| s.dir_bytes);
        let (_, outbox_max, _) = self.min_max_last(|s| s.outbox_len);
        let secs = self.secs.max(1e-9);
        format!(
            "SOAK {label}: {secs:.0} s, ops {ops} ({ops_rate:.0}/s), writes {writes} ({w_rate:.0}/s; \
             applied {applied}, replays {replays}, conflicts {conflicts}), acked {acked}, \
             purged keys {purged}, reads {reads}, flushes {flushes}; hang {hang}; errors {errors}, \
             violations {violations}; size_on_disk min/max/final {s0}/{s1}/{s2}; dir min/max/final \
             {d0}/{d1}/{d2} (closed {dc}); live bytes {live}; outbox max {outbox_max} final {outbox}; \
             peak RSS {rss}",
            label = self.label,
            ops = self.ops,
            ops_rate = self.ops as f64 / secs,
            writes = self.writes,
            w_rate = self.writes as f64 / secs,
            applied = self.applied,
            replays = self.replays,
            conflicts = self.conflicts,
            acked = self.acked,
            purged = self.purged,
            reads = self.reads,
            flushes = self.flushes,
            hang = if self.hang.is_some() { "YES" } else { "no" },
            errors = self.errors,
            violations = self.violations,
            s0 = mib(sled_min),
            s1 = mib(sled_max),
            s2 = mib(sled_last),
            d0 = mib(dir_min),
            d1 = mib(dir_max),
            d2 = mib(dir_last),
            dc = mib(self.dir_bytes_closed),
            live = mib(self.live_bytes),
            outbox = self.outbox_final,
            rss = mib(self.peak_rss_bytes),
        )
    }

    /// Disk size at a few moments of the run (about `rows` lines).
    pub fn timeline(&self, rows: usize) -> String {
        let mut out =
            String::from("   time       ops   applied  outbox  size_on_disk    dir     rss\n");
        let step = (self.samples.len() / rows.max(1)).max(1);
        let last = self.samples.len().saturating_sub(1);
        for (i, s) in self.samples.iter().enumerate() {
            if i % step == 0 || i == last {
                let _ = writeln!(
                    out,
                    "{:>6.0} s {:>9} {:>9} {:>7} {:>13} {:>6} {:>7}",
                    s.secs,
                    s.ops,
                    s.applied,
                    s.outbox_len,
                    mib(s.sled_bytes),
                    mib(s.dir_bytes),
                    mib(s.rss_bytes)
                );
            }
        }
        out
    }
}

/// Bytes in MiB, one decimal.
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}
