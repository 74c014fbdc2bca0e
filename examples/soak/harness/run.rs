//! One soak run: the database, the engine, every thread under the
//! watchdog, the stop, the checks and the close, and the [`Report`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use idemflow::{Engine, Error};

use super::config::Config;
use super::measure::{dir_bytes, existing_segment_size, live_bytes, proc_status_bytes};
use super::report::Report;
use super::sampler::{sample_loop, take_sample};
use super::shared::{Role, Shared};
use super::verify::check;
use super::watchdog::watch;
use super::workload::{consume, flush, purge, read, writer};
use super::SoakState;

/// Runs the soak. On a hang the engine and the stuck threads are leaked (a
/// deadlocked engine cannot be dropped) and the report carries the dump.
pub fn run(config: Config) -> Report {
    let mut temp = None;
    let dir = match &config.dir {
        Some(dir) => {
            if dir.exists() {
                std::fs::remove_dir_all(dir).expect("clearing IDEMFLOW_SOAK_DIR");
            }
            dir.clone()
        }
        None => temp
            .insert(tempfile::tempdir().expect("temp dir"))
            .path()
            .join("db"),
    };
    if let Some(segment) = config.segment_bytes {
        // sled keeps the segment size of an existing database; create it
        // with sled so that engines that honour it use this one.
        let db = sled::Config::new()
            .path(&dir)
            .segment_size(segment)
            .open()
            .expect("creating the database with sled");
        db.flush().expect("flushing the new database");
        drop(db);
    }
    let mut builder = Engine::builder()
        .durability(config.durability)
        .key_retention(Duration::from_millis(config.key_retention_ms));
    if let Some(flush) = config.flush_every_ms {
        builder = builder.flush_every_ms(flush);
    }
    if let Some(cache) = config.cache_bytes {
        builder = builder.cache_capacity(cache);
    }
    let engine = open_retrying(|| builder.clone().open(&dir));
    let machine = engine.machine::<SoakState>().expect("machine");
    if config.verbose {
        eprintln!(
            "soak {}: {} s, {} writers, {} readers, {} flushers, {} entities, payload {} B, \
             {:?}, flush_every_ms {:?}, segment {}, key retention {} ms, drain every {} s, \
             rate {}, dir {}, pid {}",
            config.label,
            config.secs,
            config.writers,
            config.readers,
            config.flushers,
            config.entities,
            config.payload_bytes,
            config.durability,
            config.flush_every_ms,
            config
                .segment_bytes
                .or_else(|| existing_segment_size(&dir))
                .map_or_else(|| "sled's default".to_owned(), |bytes| bytes.to_string()),
            config.key_retention_ms,
            config.drain_every_secs,
            config.rate,
            dir.display(),
            std::process::id()
        );
    }

    let shared = Arc::new(Shared {
        created: (0..config.entities)
            .map(|_| AtomicBool::new(false))
            .collect(),
        config: config.clone(),
        started: Instant::now(),
        stop: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        hung: AtomicBool::new(false),
        hang_seen: AtomicBool::new(false),
        hang_report: Mutex::new(None),
        roles: Mutex::new(Vec::new()),
        writes: AtomicU64::new(0),
        applied: AtomicU64::new(0),
        creations: AtomicU64::new(0),
        replays: AtomicU64::new(0),
        noops: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        pending_calls: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        purge_calls: AtomicU64::new(0),
        purged: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        flushes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        problems: Mutex::new(Vec::new()),
        samples: Mutex::new(Vec::new()),
    });

    let watchdog = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("soak-watchdog".to_owned())
            .spawn(move || watch(&shared))
            .expect("watchdog thread")
    };

    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let spawn = |name: String, work: Box<dyn FnOnce(Arc<Role>) + Send>| {
        let role = shared.role(name.clone());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                work(role.clone());
                role.active.store(false, Ordering::Relaxed);
            })
            .expect("soak thread")
    };
    for w in 0..config.writers {
        let (shared, machine) = (shared.clone(), machine.clone());
        workers.push(spawn(
            format!("soak-writer-{w}"),
            Box::new(move |role| writer(&shared, &machine, &role, w)),
        ));
    }
    let consumer = {
        let (shared, engine) = (shared.clone(), engine.clone());
        let expected = Arc::new(Mutex::new(HashMap::new()));
        let result = expected.clone();
        workers.push(spawn(
            "soak-consumer".to_owned(),
            Box::new(move |role| consume(&shared, &engine, &role, &expected)),
        ));
        result
    };
    {
        let (shared, engine) = (shared.clone(), engine.clone());
        workers.push(spawn(
            "soak-purger".to_owned(),
            Box::new(move |role| purge(&shared, &engine, &role)),
        ));
    }
    for r in 0..config.readers {
        let (shared, machine) = (shared.clone(), machine.clone());
        workers.push(spawn(
            format!("soak-reader-{r}"),
            Box::new(move |role| read(&shared, &machine, &role, r)),
        ));
    }
    for f in 0..config.flushers {
        let (shared, engine) = (shared.clone(), engine.clone());
        workers.push(spawn(
            format!("soak-flusher-{f}"),
            Box::new(move |role| flush(&shared, &engine, &role)),
        ));
    }
    let sampler = {
        let (shared, engine, dir) = (shared.clone(), engine.clone(), dir.clone());
        spawn(
            "soak-sampler".to_owned(),
            Box::new(move |role| sample_loop(&shared, &engine, &dir, &role)),
        )
    };

    // Run, then stop and wait for every thread (the watchdog keeps watching:
    // a thread stuck in its last call is a hang too).
    let deadline = Instant::now() + Duration::from_secs(config.secs);
    while Instant::now() < deadline && !shared.hung.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::SeqCst);
    let all_stopped = |shared: &Shared| {
        shared
            .roles
            .lock()
            .unwrap()
            .iter()
            .all(|role| !role.active.load(Ordering::Relaxed))
    };
    while !all_stopped(&shared) && !shared.hung.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let run_secs = shared.started.elapsed().as_secs_f64();
    if shared.hung.load(Ordering::SeqCst) {
        // Wait for the dump, then leave everything where it is (the
        // database directory included, for a post-mortem).
        shared.hang_seen.store(true, Ordering::SeqCst);
        let _ = watchdog.join();
        let mut report = report_of(&shared, run_secs);
        report.hang = shared.hang_report.lock().unwrap().clone();
        std::mem::forget((engine, machine, workers, sampler, temp));
        return report;
    }
    for worker in workers {
        worker.join().expect("soak thread panicked");
    }
    sampler.join().expect("sampler panicked");

    // After the run: checks, under the watchdog.
    let checker = shared.role("soak-checker".to_owned());
    let expected = std::mem::take(&mut *consumer.lock().unwrap());
    let (entities_checked, history_entries, outbox_final) =
        check(&shared, &engine, &machine, &checker, &expected);
    // A last sample with everything flushed.
    let last = take_sample(&shared, &engine, &dir);
    shared.samples.lock().unwrap().push(last);
    checker.active.store(false, Ordering::Relaxed);
    if shared.hung.load(Ordering::SeqCst) {
        shared.hang_seen.store(true, Ordering::SeqCst);
        let _ = watchdog.join();
        let mut report = report_of(&shared, run_secs);
        report.hang = shared.hang_report.lock().unwrap().clone();
        std::mem::forget((engine, machine, temp));
        return report;
    }
    // Closing flushes and stops the engine's threads: watched too.
    let closer = shared.role("soak-closer".to_owned());
    drop(machine);
    drop(engine);
    closer.active.store(false, Ordering::Relaxed);
    shared.finished.store(true, Ordering::SeqCst);
    let _ = watchdog.join();

    let mut report = report_of(&shared, run_secs);
    report.entities_checked = entities_checked;
    report.history_entries = history_entries;
    report.outbox_final = outbox_final;
    report.dir_bytes_closed = dir_bytes(&dir);
    report.live_bytes = live_bytes(&dir);
    report.peak_rss_bytes = proc_status_bytes("VmHWM:");
    report
}

/// Opens the engine, retrying for up to 10 s while the directory is locked.
fn open_retrying(open: impl Fn() -> idemflow::Result<Engine>) -> Engine {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(engine) => return engine,
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("opening the engine: {error}"),
        }
    }
}

/// The report of the counters so far (the after-run figures left at 0).
fn report_of(shared: &Shared, secs: f64) -> Report {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Report {
        label: shared.config.label.clone(),
        secs,
        ops: shared.total_ops(),
        writes: load(&shared.writes),
        applied: load(&shared.applied),
        creations: load(&shared.creations),
        replays: load(&shared.replays),
        noops: load(&shared.noops),
        conflicts: load(&shared.conflicts),
        pending_calls: load(&shared.pending_calls),
        acked: load(&shared.acked),
        purge_calls: load(&shared.purge_calls),
        purged: load(&shared.purged),
        reads: load(&shared.reads),
        flushes: load(&shared.flushes),
        errors: load(&shared.errors),
        violations: load(&shared.violations),
        problems: shared.problems.lock().unwrap().clone(),
        hang: None,
        samples: shared.samples.lock().unwrap().clone(),
        entities_checked: 0,
        history_entries: 0,
        outbox_final: 0,
        dir_bytes_closed: 0,
        live_bytes: 0,
        peak_rss_bytes: proc_status_bytes("VmHWM:"),
    }
}
