//! The sampler: figures every second, an optional CSV line each, and a
//! progress line every `report_secs`.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idemflow::Engine;

use super::measure::{dir_bytes, proc_status_bytes};
use super::report::{mib, Sample};
use super::shared::{Role, Shared};
use super::workload::sleep_unless_stopping;

/// The figures now (outbox length, sizes, counters).
pub(super) fn take_sample(shared: &Shared, engine: &Engine, dir: &Path) -> Sample {
    let outbox_len = match engine.outbox().len() {
        Ok(len) => len as u64,
        Err(error) => {
            shared.error("outbox len", &error);
            0
        }
    };
    let sled_bytes = match engine.size_on_disk() {
        Ok(bytes) => bytes,
        Err(error) => {
            shared.error("size_on_disk", &error);
            0
        }
    };
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Sample {
        secs: shared.started.elapsed().as_secs_f64(),
        ops: shared.total_ops(),
        writes: load(&shared.writes),
        applied: load(&shared.applied),
        acked: load(&shared.acked),
        purged: load(&shared.purged),
        reads: load(&shared.reads),
        outbox_len,
        sled_bytes,
        dir_bytes: dir_bytes(dir),
        rss_bytes: proc_status_bytes("VmRSS:"),
    }
}

/// Takes a sample every second until the stop.
pub(super) fn sample_loop(shared: &Shared, engine: &Engine, dir: &Path, role: &Role) {
    let config = &shared.config;
    let mut csv = config.csv.as_ref().map(|path| {
        let mut file = std::fs::File::create(path).expect("IDEMFLOW_SOAK_CSV");
        writeln!(file, "{}", Sample::CSV_HEADER).expect("writing the CSV");
        file
    });
    let mut next = Instant::now();
    let mut previous: Option<Sample> = None;
    let mut last_report = Instant::now();
    while !shared.stopping() {
        let sample = take_sample(shared, engine, dir);
        shared.tick(role);
        if let Some(file) = csv.as_mut() {
            let _ = writeln!(file, "{}", sample.csv());
        }
        if config.verbose && last_report.elapsed() >= Duration::from_secs(config.report_secs) {
            let since = previous.as_ref();
            let rate = |now: u64, then: Option<u64>, dt: f64| {
                (now - then.unwrap_or(0)) as f64 / dt.max(1e-9)
            };
            let dt = sample.secs - since.map_or(0.0, |s| s.secs);
            eprintln!(
                "t={:.0}s ops {} ({:.0}/s) writes {:.0}/s applied {} acked {} outbox {} purged {} \
                 reads {:.0}/s size_on_disk {} dir {} rss {}",
                sample.secs,
                sample.ops,
                rate(sample.ops, since.map(|s| s.ops), dt),
                rate(sample.writes, since.map(|s| s.writes), dt),
                sample.applied,
                sample.acked,
                sample.outbox_len,
                sample.purged,
                rate(sample.reads, since.map(|s| s.reads), dt),
                mib(sample.sled_bytes),
                mib(sample.dir_bytes),
                mib(sample.rss_bytes),
            );
            previous = Some(sample.clone());
            last_report = Instant::now();
        }
        shared.samples.lock().unwrap().push(sample);
        next += Duration::from_secs(1);
        let now = Instant::now();
        if next > now {
            sleep_unless_stopping(shared, (next - now).as_millis() as u64);
        } else {
            next = now;
        }
    }
}
