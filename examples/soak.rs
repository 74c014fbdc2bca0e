//! Soak: sustained writes on many entities while the outbox is drained, expired
//! keys are purged and readers read, under a watchdog that reports where every
//! thread is parked if the engine stops making progress. It is the harness of
//! issue #9 item 4 (sled 0.34.7 deadlocked under this kind of load; see
//! `docs/reliability.md`, "Soak: sled's deadlock, reproduced and prevented").
//!
//! ```text
//! IDEMFLOW_SOAK_SECS=7200 cargo run --release --example soak
//! ```
//!
//! `tests/soak.rs` runs the same code (this file, through `#[path]`) for about
//! a minute and a half in the default `cargo test`.
//!
//! Threads: `WRITERS` writers apply keyed `advance` transitions with payloads
//! to random entities (creating each entity the first time it is picked),
//! some retried with the same key (replays), some with an expected version
//! (conflicts); a consumer drains the outbox (`pending` + `ack`) and checks that
//! each entity's events come once, in version order, without gaps; a purger
//! calls `purge_expired_keys` (keys expire after `KEY_RETENTION_MS`); `READERS`
//! readers call `get`, `history` and `count_by_state`; optionally `FLUSHERS`
//! threads call `Engine::flush` in a loop. A sampler records progress, the
//! outbox length and the disk size every second.
//!
//! The watchdog declares a hang when a thread has completed no operation for
//! `HANG_SECS`; it then prints every thread's name, state and wait channel
//! (`/proc/<pid>/task`) and, if `gdb` is on the `PATH`, every thread's
//! backtrace (`gdb -p <pid> -batch -ex "thread apply all bt"`), with a
//! summary of where they are parked. The example exits with code 2 then.
//!
//! After the run: every entity's version equals its history length and its
//! state follows the cycle; the outbox holds exactly the events that were not
//! acknowledged; the counts by state equal the records; the sum of versions
//! equals the applied changes. Then the engine is closed and the directory is
//! read with sled to count the live bytes (keys + values of every tree), the
//! yardstick for the disk size (sled#1333).
//!
//! Environment (all optional):
//! - `IDEMFLOW_SOAK_SECS` (default 120), `IDEMFLOW_SOAK_WRITERS` (4),
//!   `IDEMFLOW_SOAK_READERS` (2), `IDEMFLOW_SOAK_FLUSHERS` (0),
//!   `IDEMFLOW_SOAK_ENTITIES` (10000), `IDEMFLOW_SOAK_PAYLOAD` (payload bytes, 256),
//!   `IDEMFLOW_SOAK_RATE` (most writes per second in total, 0 = no limit);
//! - `IDEMFLOW_SOAK_DURABILITY` (`buffered` or `immediate`, default buffered),
//!   `IDEMFLOW_SOAK_FLUSH_MS` (the engine's `flush_every_ms`; `none` for no
//!   background flush; default: the engine's default), `IDEMFLOW_SOAK_CACHE`
//!   (sled's cache in bytes; default: the engine's),
//!   `IDEMFLOW_SOAK_SEGMENT` (sled segment size of the new database: the
//!   directory is created with sled first, and an engine that honours an
//!   existing database's segment size uses it; default: the engine's choice),
//!   `IDEMFLOW_SOAK_KEY_RETENTION_MS` (2000), `IDEMFLOW_SOAK_DRAIN_BATCH` (256),
//!   `IDEMFLOW_SOAK_DRAIN_EVERY_SECS` (0: drain continuously; else let the
//!   outbox fill that long between full drains),
//!   `IDEMFLOW_SOAK_PURGE_PAUSE_MS` (100), `IDEMFLOW_SOAK_FLUSH_PAUSE_MS` (0),
//!   `IDEMFLOW_SOAK_RETRY_PERCENT` (10), `IDEMFLOW_SOAK_EXPECT_PERCENT` (10);
//! - `IDEMFLOW_SOAK_HANG_SECS` (30), `IDEMFLOW_SOAK_GDB` (`0`: no gdb),
//!   `IDEMFLOW_SOAK_DUMP` (a file for the hang report), `IDEMFLOW_SOAK_DIR`
//!   (the database directory, kept; default: a temporary one),
//!   `IDEMFLOW_SOAK_CSV` (a file for one line of figures per sample),
//!   `IDEMFLOW_SOAK_REPORT_SECS` (seconds between progress lines, 10),
//!   `IDEMFLOW_SOAK_LABEL` (a name for the summary line), `IDEMFLOW_SOAK_SEED`.
//!
//! The file only uses the public API that idemflow had before its commit
//! pipeline was rewritten, so the same file builds against the old pipeline
//! (commit d2854c3) for the comparison.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idemflow::{Durability, Engine, Error, Machine, Request, StateMachine};
use serde_json::json;

/// A cycle: `advance` is legal in every state, so writers never need to read
/// before they write, and version `v` is always in `CYCLE[(v - 1) % 3]`.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "soak", initial = Queued, events = SoakEvent)]
pub enum SoakState {
    #[on(advance = Running)]
    Queued,
    #[on(advance = Review)]
    Running,
    #[on(advance = Queued)]
    Review,
}

/// The states in cycle order.
pub const CYCLE: [SoakState; 3] = [SoakState::Queued, SoakState::Running, SoakState::Review];
const MACHINE: &str = "soak";

/// What one soak run does.
#[derive(Clone, Debug)]
pub struct Config {
    pub secs: u64,
    pub writers: usize,
    pub readers: usize,
    pub flushers: usize,
    pub entities: usize,
    pub payload_bytes: usize,
    /// Most writes per second over all writers (0: no limit).
    pub rate: u64,
    pub durability: Durability,
    /// `None`: the engine's default; `Some(None)`: no background flush.
    pub flush_every_ms: Option<Option<u64>>,
    pub cache_bytes: Option<u64>,
    pub segment_bytes: Option<usize>,
    pub key_retention_ms: u64,
    pub drain_batch: usize,
    /// 0: drain continuously; else let the outbox fill for this long between
    /// full drains (a burst of removals frees many segments at once).
    pub drain_every_secs: u64,
    pub purge_pause_ms: u64,
    pub flush_pause_ms: u64,
    pub retry_percent: u64,
    pub expect_percent: u64,
    pub hang_secs: u64,
    pub gdb: bool,
    pub dump: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub csv: Option<PathBuf>,
    pub report_secs: u64,
    pub label: String,
    pub seed: u64,
    /// Print progress lines.
    pub verbose: bool,
}

impl Config {
    /// The defaults, overridden by `IDEMFLOW_SOAK_*` variables.
    pub fn from_env(default_secs: u64) -> Config {
        let durability = match env_text("DURABILITY").as_deref() {
            None | Some("buffered") => Durability::Buffered,
            Some("immediate") => Durability::Immediate,
            Some(other) => panic!("IDEMFLOW_SOAK_DURABILITY={other}: buffered or immediate"),
        };
        let flush_every_ms = env_text("FLUSH_MS").map(|text| match text.as_str() {
            "none" | "off" => None,
            ms => Some(ms.parse().expect("IDEMFLOW_SOAK_FLUSH_MS")),
        });
        Config {
            secs: env_num("SECS", default_secs),
            writers: env_num("WRITERS", 4) as usize,
            readers: env_num("READERS", 2) as usize,
            flushers: env_num("FLUSHERS", 0) as usize,
            entities: (env_num("ENTITIES", 10_000) as usize).max(1),
            payload_bytes: env_num("PAYLOAD", 256) as usize,
            rate: env_num("RATE", 0),
            durability,
            flush_every_ms,
            cache_bytes: env_text("CACHE").map(|text| parse_num("CACHE", &text)),
            segment_bytes: env_text("SEGMENT").map(|text| parse_num("SEGMENT", &text) as usize),
            key_retention_ms: env_num("KEY_RETENTION_MS", 2000).max(1),
            drain_batch: (env_num("DRAIN_BATCH", 256) as usize).max(1),
            drain_every_secs: env_num("DRAIN_EVERY_SECS", 0),
            purge_pause_ms: env_num("PURGE_PAUSE_MS", 100),
            flush_pause_ms: env_num("FLUSH_PAUSE_MS", 0),
            retry_percent: env_num("RETRY_PERCENT", 10),
            expect_percent: env_num("EXPECT_PERCENT", 10),
            hang_secs: env_num("HANG_SECS", 30).max(1),
            gdb: env_num("GDB", 1) != 0,
            dump: env_text("DUMP").map(PathBuf::from),
            dir: env_text("DIR").map(PathBuf::from),
            csv: env_text("CSV").map(PathBuf::from),
            report_secs: env_num("REPORT_SECS", 10).max(1),
            label: env_text("LABEL").unwrap_or_else(|| "idemflow".to_owned()),
            seed: env_num("SEED", now_ms()),
            verbose: true,
        }
    }
}

pub fn env_text(name: &str) -> Option<String> {
    std::env::var(format!("IDEMFLOW_SOAK_{name}"))
        .ok()
        .filter(|value| !value.is_empty())
}

fn env_num(name: &str, default: u64) -> u64 {
    env_text(name).map_or(default, |text| parse_num(name, &text))
}

/// A number, with `_` separators and an optional `k`/`m`/`g` (binary) suffix.
fn parse_num(name: &str, text: &str) -> u64 {
    let text = text.replace('_', "").to_ascii_lowercase();
    let (digits, scale) = match text.chars().last() {
        Some('k') => (&text[..text.len() - 1], 1 << 10),
        Some('m') => (&text[..text.len() - 1], 1 << 20),
        Some('g') => (&text[..text.len() - 1], 1 << 30),
        _ => (&text[..], 1),
    };
    digits
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("IDEMFLOW_SOAK_{name}={text}: not a number"))
        * scale
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The id of entity `i`.
pub fn entity_id(i: usize) -> String {
    format!("s-{i:07}")
}

fn entity_index(id: &str) -> Option<usize> {
    id.strip_prefix("s-")?.parse().ok()
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---------------------------------------------------------------- progress

/// One thread the watchdog watches.
struct Role {
    name: String,
    /// Completed operations.
    ops: AtomicU64,
    /// Milliseconds since the start when `ops` last moved.
    last_ms: AtomicU64,
    /// Whether the thread is still expected to make progress.
    active: AtomicBool,
}

/// Everything the threads share.
struct Shared {
    config: Config,
    started: Instant,
    stop: AtomicBool,
    /// Set once the run, the checks and the close are over: the watchdog ends.
    finished: AtomicBool,
    hung: AtomicBool,
    /// Set when the main thread saw the hang (else the watchdog exits the process).
    hang_seen: AtomicBool,
    hang_report: Mutex<Option<String>>,
    roles: Mutex<Vec<Arc<Role>>>,
    created: Vec<AtomicBool>,
    // Writers.
    writes: AtomicU64,
    applied: AtomicU64,
    creations: AtomicU64,
    replays: AtomicU64,
    noops: AtomicU64,
    conflicts: AtomicU64,
    // Consumer, purger, readers, flushers.
    pending_calls: AtomicU64,
    acked: AtomicU64,
    purge_calls: AtomicU64,
    purged: AtomicU64,
    reads: AtomicU64,
    flushes: AtomicU64,
    // Problems.
    errors: AtomicU64,
    violations: AtomicU64,
    problems: Mutex<Vec<String>>,
    samples: Mutex<Vec<Sample>>,
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn role(&self, name: String) -> Arc<Role> {
        let role = Arc::new(Role {
            name,
            ops: AtomicU64::new(0),
            last_ms: AtomicU64::new(self.elapsed_ms()),
            active: AtomicBool::new(true),
        });
        self.roles.lock().unwrap().push(role.clone());
        role
    }

    /// Alive but idle on purpose (a deliberate pause is no hang).
    fn idle(&self, role: &Role) {
        role.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn tick(&self, role: &Role) {
        role.ops.fetch_add(1, Ordering::Relaxed);
        role.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn problem(&self, counter: &AtomicU64, text: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < 20 {
            problems.push(text);
        }
    }

    fn error(&self, what: &str, error: &Error) {
        self.problem(&self.errors, format!("{what}: {error}"));
    }

    fn violation(&self, text: String) {
        self.problem(&self.violations, text);
    }

    fn total_ops(&self) -> u64 {
        self.roles
            .lock()
            .unwrap()
            .iter()
            .filter(|role| !role.name.starts_with("soak-sampler"))
            .map(|role| role.ops.load(Ordering::Relaxed))
            .sum()
    }
}

/// Figures at one moment of the run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub secs: f64,
    pub ops: u64,
    pub writes: u64,
    pub applied: u64,
    pub acked: u64,
    pub purged: u64,
    pub reads: u64,
    pub outbox_len: u64,
    pub sled_bytes: u64,
    pub dir_bytes: u64,
    pub rss_bytes: u64,
}

impl Sample {
    const CSV_HEADER: &'static str =
        "secs,ops,writes,applied,acked,purged,reads,outbox_len,sled_bytes,dir_bytes,rss_bytes";

    fn csv(&self) -> String {
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
    pub label: String,
    pub secs: f64,
    pub ops: u64,
    pub writes: u64,
    pub applied: u64,
    pub creations: u64,
    pub replays: u64,
    pub noops: u64,
    pub conflicts: u64,
    pub pending_calls: u64,
    pub acked: u64,
    pub purge_calls: u64,
    pub purged: u64,
    pub reads: u64,
    pub flushes: u64,
    pub errors: u64,
    pub violations: u64,
    pub problems: Vec<String>,
    /// The watchdog's report, if it declared a hang.
    pub hang: Option<String>,
    pub samples: Vec<Sample>,
    /// Entities checked after the run, and their history entries.
    pub entities_checked: u64,
    pub history_entries: u64,
    /// Outbox length at the end (after a flush).
    pub outbox_final: u64,
    /// Directory size (allocated blocks) after the engine closed.
    pub dir_bytes_closed: u64,
    /// Keys + values of every tree, read with sled after the engine closed.
    pub live_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl Report {
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

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}

// ---------------------------------------------------------------- the run

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

// ---------------------------------------------------------------- threads

fn payload_pad(config: &Config) -> String {
    "x".repeat(config.payload_bytes.saturating_sub(40))
}

fn writer(shared: &Shared, machine: &Machine<SoakState>, role: &Role, w: usize) {
    let config = &shared.config;
    let mut rng = Rng::new(config.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w as u64 + 1)));
    let pad = payload_pad(config);
    let actor = format!("writer-{w}");
    let interval = if config.rate > 0 {
        Some(Duration::from_secs_f64(
            config.writers as f64 / config.rate as f64,
        ))
    } else {
        None
    };
    let mut next_at = Instant::now();
    let mut serial = 0u64;
    // The last applied keyed request, to retry it.
    let mut last: Option<(String, Request<SoakState>, Instant)> = None;
    while !shared.stopping() {
        if let Some(interval) = interval {
            next_at += interval;
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            } else if now - next_at > Duration::from_secs(1) {
                next_at = now;
            }
        }
        serial += 1;
        let i = rng.below(config.entities as u64) as usize;
        let id = entity_id(i);
        if !shared.created[i].load(Ordering::Relaxed) {
            let payload = json!({"w": w, "n": serial, "pad": pad});
            match machine.create_with(&id, Some(payload), Some(actor.clone())) {
                Ok(outcome) => {
                    if outcome.was_applied() {
                        shared.applied.fetch_add(1, Ordering::Relaxed);
                        shared.creations.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.noops.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.created[i].store(true, Ordering::Relaxed);
                }
                Err(error) => shared.error("create", &error),
            }
        } else {
            let roll = rng.below(100);
            let retry = match &last {
                Some((_, _, at)) if roll < config.retry_percent => Some(at.elapsed()),
                _ => None,
            };
            let (target, request) = match (retry, &last) {
                (Some(_), Some((target, request, _))) => (target.clone(), request.clone()),
                _ => {
                    let mut request = Request::fire(SoakEvent::Advance)
                        .key(format!("k-{w}-{serial}-{}", config.seed))
                        .payload(json!({"w": w, "n": serial, "pad": pad}))
                        .actor(actor.clone());
                    if roll >= 100 - config.expect_percent {
                        match machine.get(&id) {
                            Ok(Some(entity)) => {
                                request = request.expect_version(entity.version);
                            }
                            Ok(None) => shared.violation(format!("{id} created but not found")),
                            Err(error) => shared.error("get before write", &error),
                        }
                    }
                    (id, request)
                }
            };
            match machine.apply(&target, request.clone()) {
                Ok(outcome) => {
                    if outcome.is_replay() {
                        shared.replays.fetch_add(1, Ordering::Relaxed);
                    } else if outcome.was_applied() {
                        shared.applied.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.noops.fetch_add(1, Ordering::Relaxed);
                    }
                    match retry {
                        // A retry well within the key's retention must replay.
                        Some(after)
                            if !outcome.is_replay()
                                && after.as_millis() < u128::from(config.key_retention_ms / 2) =>
                        {
                            shared.violation(format!(
                                "{target}: retry after {after:?} was not a replay"
                            ));
                        }
                        Some(_) => {}
                        None if outcome.was_applied() => {
                            last = Some((target, request, Instant::now()));
                        }
                        None => {}
                    }
                }
                Err(Error::VersionConflict { .. }) => {
                    shared.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => shared.error("apply", &error),
            }
        }
        shared.writes.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
    }
}

/// Drains the outbox; `expected` ends as the last acknowledged version of
/// each entity.
fn consume(shared: &Shared, engine: &Engine, role: &Role, expected: &Mutex<HashMap<String, u64>>) {
    let outbox = engine.outbox();
    let mut last_acked: HashMap<String, u64> = HashMap::new();
    let every = Duration::from_secs(shared.config.drain_every_secs);
    let mut next_drain = Instant::now() + every;
    while !shared.stopping() {
        if !every.is_zero() && Instant::now() < next_drain {
            shared.idle(role);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let events = match outbox.pending(shared.config.drain_batch) {
            Ok(events) => events,
            Err(error) => {
                shared.error("pending", &error);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.pending_calls.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
        if events.is_empty() {
            // Drained: the next burst comes after a pause.
            next_drain = Instant::now() + every;
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        for event in &events {
            if event.machine != MACHINE {
                shared.violation(format!("event of machine {}", event.machine));
                continue;
            }
            let last = last_acked.entry(event.id.clone()).or_insert(0);
            if event.version != *last + 1 {
                shared.violation(format!(
                    "{}: outbox event version {} after {} (duplicate or gap)",
                    event.id, event.version, last
                ));
            }
            *last = (*last).max(event.version);
        }
        match outbox.ack(&events) {
            Ok(removed) => {
                if removed != events.len() {
                    shared.violation(format!(
                        "ack removed {removed} of {} pending events",
                        events.len()
                    ));
                }
                shared
                    .acked
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            Err(error) => shared.error("ack", &error),
        }
        shared.tick(role);
    }
    *expected.lock().unwrap() = last_acked;
}

fn purge(shared: &Shared, engine: &Engine, role: &Role) {
    while !shared.stopping() {
        match engine.purge_expired_keys() {
            Ok(purged) => {
                shared.purged.fetch_add(purged, Ordering::Relaxed);
            }
            Err(error) => shared.error("purge_expired_keys", &error),
        }
        shared.purge_calls.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
        sleep_unless_stopping(shared, shared.config.purge_pause_ms);
    }
}

fn flush(shared: &Shared, engine: &Engine, role: &Role) {
    while !shared.stopping() {
        if let Err(error) = engine.flush() {
            shared.error("flush", &error);
        }
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
        sleep_unless_stopping(shared, shared.config.flush_pause_ms);
    }
}

fn sleep_unless_stopping(shared: &Shared, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !shared.stopping() && Instant::now() < until {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
}

fn read(shared: &Shared, machine: &Machine<SoakState>, role: &Role, r: usize) {
    let config = &shared.config;
    let mut rng = Rng::new(config.seed ^ 0x5151_5151 ^ (r as u64 + 1));
    let mut calls = 0u64;
    while !shared.stopping() {
        calls += 1;
        if calls % 64 == 0 {
            // One range scan per state, not a snapshot: under writes an
            // entity that moves during the scan may be counted twice or
            // not at all, so only the final counts are checked (`check`).
            if let Err(error) = machine.count_by_state() {
                shared.error("count_by_state", &error);
            }
        } else {
            let i = rng.below(config.entities as u64) as usize;
            let id = entity_id(i);
            match machine.get(&id) {
                Ok(Some(entity)) => {
                    if entity.state != CYCLE[((entity.version - 1) % 3) as usize] {
                        shared.violation(format!(
                            "{id}: state {:?} at version {}",
                            entity.state, entity.version
                        ));
                    }
                    if calls % 4 == 0 {
                        match machine.history(&id) {
                            Ok(history) => {
                                let len = history.len() as u64;
                                let chain = history
                                    .iter()
                                    .enumerate()
                                    .all(|(k, entry)| entry.version == k as u64 + 1);
                                if len < entity.version || !chain {
                                    shared.violation(format!(
                                        "{id}: history of {len} entries (chain {chain}) read \
                                         after version {}",
                                        entity.version
                                    ));
                                }
                            }
                            Err(error) => shared.error("history", &error),
                        }
                    }
                }
                Ok(None) => {
                    if shared.created[i].load(Ordering::Relaxed) {
                        shared.violation(format!("{id} created but not found by a reader"));
                    }
                }
                Err(error) => shared.error("get", &error),
            }
        }
        shared.reads.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
    }
}

fn take_sample(shared: &Shared, engine: &Engine, dir: &Path) -> Sample {
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

fn sample_loop(shared: &Shared, engine: &Engine, dir: &Path, role: &Role) {
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

// ---------------------------------------------------------------- checks

/// After the run: returns (entities checked, history entries, outbox length).
fn check(
    shared: &Shared,
    engine: &Engine,
    machine: &Machine<SoakState>,
    role: &Role,
    last_acked: &HashMap<String, u64>,
) -> (u64, u64, u64) {
    if let Err(error) = engine.flush() {
        shared.error("final flush", &error);
    }
    shared.tick(role);
    let outbox = engine.outbox();
    let pending = match outbox.pending(usize::MAX) {
        Ok(pending) => pending,
        Err(error) => {
            shared.error("final pending", &error);
            Vec::new()
        }
    };
    shared.tick(role);
    let mut pending_by_id: HashMap<String, Vec<u64>> = HashMap::new();
    for event in &pending {
        pending_by_id
            .entry(event.id.clone())
            .or_default()
            .push(event.version);
    }
    match outbox.len() {
        Ok(len) if len == pending.len() => {}
        Ok(len) => shared.violation(format!(
            "outbox len {len} but {} events pending after a flush",
            pending.len()
        )),
        Err(error) => shared.error("final outbox len", &error),
    }
    let mut versions = 0u64;
    let mut history_entries = 0u64;
    let mut entities = 0u64;
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..shared.config.entities {
        let id = entity_id(i);
        let entity = match machine.get(&id) {
            Ok(entity) => entity,
            Err(error) => {
                shared.error("final get", &error);
                continue;
            }
        };
        shared.tick(role);
        let Some(entity) = entity else {
            if shared.created[i].load(Ordering::Relaxed) {
                shared.violation(format!("{id} created but missing"));
            }
            if pending_by_id.contains_key(&id) || last_acked.contains_key(&id) {
                shared.violation(format!("{id} has events but no record"));
            }
            continue;
        };
        entities += 1;
        versions += entity.version;
        *by_state.entry(format!("{:?}", entity.state)).or_default() += 1;
        if entity.state != CYCLE[((entity.version - 1) % 3) as usize] {
            shared.violation(format!(
                "{id}: state {:?} at version {}",
                entity.state, entity.version
            ));
        }
        match machine.history(&id) {
            Ok(history) => {
                history_entries += history.len() as u64;
                let chain = history
                    .iter()
                    .enumerate()
                    .all(|(k, entry)| entry.version == k as u64 + 1 && entry.to == CYCLE[k % 3]);
                if history.len() as u64 != entity.version || !chain {
                    shared.violation(format!(
                        "{id}: version {} but {} history entries (chain {chain})",
                        entity.version,
                        history.len()
                    ));
                }
            }
            Err(error) => shared.error("final history", &error),
        }
        // The outbox holds exactly the events after the last acknowledged one.
        let acked = last_acked.get(&id).copied().unwrap_or(0);
        let left = pending_by_id.remove(&id).unwrap_or_default();
        let want: Vec<u64> = (acked + 1..=entity.version).collect();
        if left != want {
            shared.violation(format!(
                "{id}: version {}, last acked {acked}, pending {:?}",
                entity.version,
                &left[..left.len().min(8)]
            ));
        }
        shared.tick(role);
    }
    if !pending_by_id.is_empty() {
        shared.violation(format!(
            "{} entities outside the run have pending events",
            pending_by_id.len()
        ));
    }
    let applied = shared.applied.load(Ordering::Relaxed);
    if versions != applied {
        shared.violation(format!(
            "the versions sum to {versions} but {applied} changes were applied"
        ));
    }
    match machine.count_by_state() {
        Ok(counts) => {
            let counted: BTreeMap<String, u64> = counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(state, n)| (format!("{state:?}"), n))
                .collect();
            if counted != by_state {
                shared.violation(format!(
                    "count_by_state {counted:?} but the records say {by_state:?}"
                ));
            }
        }
        Err(error) => shared.error("final count_by_state", &error),
    }
    shared.tick(role);
    (entities, history_entries, pending.len() as u64)
}

// ---------------------------------------------------------------- disk

/// Allocated bytes of every file under `dir` (what `du` counts).
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn existing_segment_size(dir: &Path) -> Option<usize> {
    // The file ends with a binary checksum: not valid UTF-8 as a whole.
    let bytes = std::fs::read(dir.join("conf")).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|value| value.trim().parse().ok())
}

/// Keys + values of every tree of the (closed) database in `dir`.
fn live_bytes(dir: &Path) -> u64 {
    let mut config = sled::Config::new().path(dir);
    if let Some(segment) = existing_segment_size(dir) {
        config = config.segment_size(segment);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => {
                eprintln!(
                    "soak: could not reopen {} with sled: {error}",
                    dir.display()
                );
                return 0;
            }
        }
    };
    let mut bytes = 0u64;
    for name in db.tree_names() {
        let Ok(tree) = db.open_tree(&name) else {
            continue;
        };
        for (key, value) in tree.iter().flatten() {
            bytes += (key.len() + value.len()) as u64;
        }
    }
    bytes
}

fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .map_or(0, |kib: u64| kib * 1024)
}

// ---------------------------------------------------------------- watchdog

fn watch(shared: &Shared) {
    let hang_ms = shared.config.hang_secs * 1000;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = shared.elapsed_ms();
        let roles: Vec<Arc<Role>> = shared.roles.lock().unwrap().clone();
        let stuck: Vec<String> = roles
            .iter()
            .filter(|role| role.active.load(Ordering::Relaxed))
            .filter(|role| now.saturating_sub(role.last_ms.load(Ordering::Relaxed)) >= hang_ms)
            .map(|role| {
                format!(
                    "{} (last op {:.1} s ago, {} ops)",
                    role.name,
                    (now - role.last_ms.load(Ordering::Relaxed)) as f64 / 1000.0,
                    role.ops.load(Ordering::Relaxed)
                )
            })
            .collect();
        if !stuck.is_empty() {
            let report = hang_report(shared, now, &stuck);
            // Straight to stderr: not captured by the test harness, in case
            // the process has to end here.
            let _ = std::io::stderr().lock().write_all(report.as_bytes());
            if let Some(path) = &shared.config.dump {
                let _ = std::fs::write(path, &report);
            }
            *shared.hang_report.lock().unwrap() = Some(report);
            shared.hung.store(true, Ordering::SeqCst);
            // The main thread picks the hang up within a moment, unless it
            // is the one stuck (in the checks or the close): then end here.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if shared.hang_seen.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::io::stderr()
                .lock()
                .write_all(b"SOAK HANG: the main thread is stuck too; exiting with code 2\n");
            std::process::exit(2);
        }
        if shared.finished.load(Ordering::SeqCst) {
            return;
        }
    }
}

fn hang_report(shared: &Shared, now_ms: u64, stuck: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SOAK HANG ({}): after {:.1} s, no operation completed for {} s by: {}",
        shared.config.label,
        now_ms as f64 / 1000.0,
        shared.config.hang_secs,
        stuck.join(", ")
    );
    let _ = writeln!(
        out,
        "progress before the hang: writes {} applied {} acked {} purged {} reads {} flushes {}",
        shared.writes.load(Ordering::Relaxed),
        shared.applied.load(Ordering::Relaxed),
        shared.acked.load(Ordering::Relaxed),
        shared.purged.load(Ordering::Relaxed),
        shared.reads.load(Ordering::Relaxed),
        shared.flushes.load(Ordering::Relaxed)
    );
    let pid = std::process::id();
    let _ = writeln!(
        out,
        "\nthreads of pid {pid} (/proc: name, state, wait channel):"
    );
    out.push_str(&proc_threads(pid));
    if shared.config.gdb {
        match gdb_backtraces(pid) {
            Some(backtraces) => {
                let _ = writeln!(out, "\nwhere the threads are parked (from gdb):");
                out.push_str(&summarize_backtraces(&backtraces));
                let _ = writeln!(out, "\ngdb -p {pid} -batch -ex \"thread apply all bt\":");
                out.push_str(&backtraces);
            }
            None => {
                let _ = writeln!(out, "\n(gdb not available: no backtraces)");
            }
        }
    }
    out
}

/// One line per thread: tid, name, state, wait channel.
fn proc_threads(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "  (no /proc)\n".to_owned();
    };
    let mut tids: Vec<u64> = tasks
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let mut by_place: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for tid in tids {
        let base = format!("/proc/{pid}/task/{tid}");
        let read = |file: &str| {
            std::fs::read_to_string(format!("{base}/{file}"))
                .map(|text| text.trim().to_owned())
                .unwrap_or_default()
        };
        let comm = read("comm");
        let stat = read("stat");
        // The state follows the parenthesised command name.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        let wchan = read("wchan");
        let _ = writeln!(out, "  {tid:>7} {comm:<18} {state} {wchan}");
        by_place
            .entry(format!("{state} {wchan}"))
            .or_default()
            .push(comm);
    }
    let _ = writeln!(out, "  by state and wait channel:");
    for (place, names) in by_place {
        let _ = writeln!(out, "    {place}: {} ({})", names.len(), names.join(", "));
    }
    out
}

/// `gdb -p <pid> -batch -ex "thread apply all bt"`, or `None` without gdb.
fn gdb_backtraces(pid: u32) -> Option<String> {
    let child = std::process::Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let child_id = child.id();
    // gdb should take seconds; do not let a stuck gdb stall the run.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done_rx.recv_timeout(Duration::from_secs(180)) {
        Ok(Ok(output)) => Some(String::from_utf8_lossy(&output.stdout).into_owned()),
        Ok(Err(_)) => None,
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &child_id.to_string()])
                .status();
            Some("(gdb did not finish within 180 s)\n".to_owned())
        }
    }
}

/// For each thread, the frames of sled, idemflow and this harness (and the
/// lock or condition variable it waits on), grouped: who is parked where.
pub fn summarize_backtraces(text: &str) -> String {
    let mut threads: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            let name = rest
                .rsplit_once('"')
                .and_then(|(head, _)| head.rsplit_once('"'))
                .map_or_else(|| rest.to_owned(), |(_, name)| name.to_owned());
            threads.push((name, Vec::new()));
        } else if line.starts_with('#') {
            if let Some((_, frames)) = threads.last_mut() {
                if let Some(frame) = frame_name(line) {
                    frames.push(frame);
                }
            }
        }
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, frames) in threads {
        // What it waits on: a lock, a condition variable, a one-shot, a sleep.
        let parked = frames
            .iter()
            .find(|frame| {
                frame.contains("lock_slow")
                    || frame.contains("Condvar::wait")
                    || frame.contains("OneShot")
                    || frame.ends_with("::wait")
                    || frame.contains("sleep")
                    || frame.contains("recv")
            })
            .or_else(|| frames.first())
            .cloned();
        let ours: Vec<String> = frames
            .iter()
            .filter(|frame| {
                frame.starts_with("sled::")
                    || frame.starts_with("<sled::")
                    || frame.contains("idemflow::")
                    || frame.starts_with("soak::")
            })
            .take(6)
            .cloned()
            .collect();
        let mut key = String::new();
        if let Some(parked) = parked {
            let _ = write!(key, "[{parked}] ");
        }
        key.push_str(&ours.join(" <- "));
        groups.entry(key).or_default().push(name);
    }
    let mut out = String::new();
    for (place, names) in groups {
        let _ = writeln!(
            out,
            "  {} thread(s) {}:\n      {place}",
            names.len(),
            names.join(", ")
        );
    }
    out
}

/// The function of a gdb frame line, without arguments, generic parameters or hash.
fn frame_name(line: &str) -> Option<String> {
    // "#3  0x... in sled::pagecache::iobuf::IoBufs::sa_stabilize (...) at src/..."
    // "#0  sled::pagecache::segment::SegmentAccountant::bump_tip (...) at ..."
    let after_number = line.split_once(' ')?.1.trim_start();
    let text = match after_number.split_once(" in ") {
        Some((address, rest)) if address.starts_with("0x") => rest,
        _ => after_number,
    };
    let name = text.split(" (").next()?.trim();
    let mut clean = String::new();
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '<' if !clean.is_empty() => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let clean = match clean.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 => head.to_owned(),
        _ => clean,
    };
    Some(clean)
}

// ---------------------------------------------------------------- main

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
