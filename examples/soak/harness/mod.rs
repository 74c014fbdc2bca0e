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
//! `tests/soak.rs` runs the same code (this module, through `#[path]`) for
//! about a minute and a half in the default `cargo test`; the example's
//! `main.rs` only reads the configuration, runs and prints.
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
//! The harness only uses the public API that idemflow had before its commit
//! pipeline was rewritten, so the same code builds against the old pipeline
//! (commit d2854c3) for the comparison.
//!
//! The parts: `config` (the `IDEMFLOW_SOAK_*` variables), `shared` (what the
//! threads share and the progress the watchdog watches), `run` (starting,
//! stopping and closing), `workload` (writers, consumer, purger, readers,
//! flushers), `sampler` (figures every second), `verify` (the checks after
//! the run), `measure` (disk and memory sizes), `watchdog` (hang detection
//! and the report of where threads are parked) and `report` (the figures of
//! a run and their summary).

#![allow(dead_code)]

mod config;
mod measure;
mod report;
mod run;
mod sampler;
mod shared;
mod verify;
mod watchdog;
mod workload;

// The harness's API at the paths the single-file harness had; the example
// and `tests/soak.rs` each use a part of it.
#[allow(unused_imports)]
pub use self::{
    config::{env_text, Config},
    measure::dir_bytes,
    report::{Report, Sample},
    run::run,
    watchdog::summarize_backtraces,
};

use idemflow::StateMachine;

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
/// The machine's name, as outbox events carry it.
const MACHINE: &str = "soak";

/// The id of entity `i`.
pub fn entity_id(i: usize) -> String {
    format!("s-{i:07}")
}

/// The index of entity `id`, if it is one of the run's ids.
fn entity_index(id: &str) -> Option<usize> {
    id.strip_prefix("s-")?.parse().ok()
}
