//! What the threads share: the configuration, the stop and hang flags, the
//! counters and problems of the run, and each thread's [`Role`], whose
//! progress the watchdog watches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use idemflow::Error;

use super::config::Config;
use super::report::Sample;

/// One thread the watchdog watches.
pub(super) struct Role {
    /// The thread's name.
    pub(super) name: String,
    /// Completed operations.
    pub(super) ops: AtomicU64,
    /// Milliseconds since the start when `ops` last moved.
    pub(super) last_ms: AtomicU64,
    /// Whether the thread is still expected to make progress.
    pub(super) active: AtomicBool,
}

/// Everything the threads share.
pub(super) struct Shared {
    /// The run's configuration.
    pub(super) config: Config,
    /// When the run started.
    pub(super) started: Instant,
    /// Set when the threads must stop.
    pub(super) stop: AtomicBool,
    /// Set once the run, the checks and the close are over: the watchdog ends.
    pub(super) finished: AtomicBool,
    /// Set when the watchdog declared a hang.
    pub(super) hung: AtomicBool,
    /// Set when the main thread saw the hang (else the watchdog exits the process).
    pub(super) hang_seen: AtomicBool,
    /// The watchdog's report, once it declared a hang.
    pub(super) hang_report: Mutex<Option<String>>,
    /// Every watched thread.
    pub(super) roles: Mutex<Vec<Arc<Role>>>,
    /// Per entity index, whether a writer created it.
    pub(super) created: Vec<AtomicBool>,
    // Writers.
    /// Write requests sent.
    pub(super) writes: AtomicU64,
    /// Changes applied (creations included).
    pub(super) applied: AtomicU64,
    /// Entities created.
    pub(super) creations: AtomicU64,
    /// Answers that were replays.
    pub(super) replays: AtomicU64,
    /// Requests that changed nothing.
    pub(super) noops: AtomicU64,
    /// Version conflicts.
    pub(super) conflicts: AtomicU64,
    // Consumer, purger, readers, flushers.
    /// Calls of `pending` by the consumer.
    pub(super) pending_calls: AtomicU64,
    /// Outbox events acknowledged.
    pub(super) acked: AtomicU64,
    /// Calls of `purge_expired_keys`.
    pub(super) purge_calls: AtomicU64,
    /// Expired keys purged.
    pub(super) purged: AtomicU64,
    /// Reads completed.
    pub(super) reads: AtomicU64,
    /// Flushes by the flushers.
    pub(super) flushes: AtomicU64,
    // Problems.
    /// Engine errors.
    pub(super) errors: AtomicU64,
    /// Violated invariants.
    pub(super) violations: AtomicU64,
    /// The first problems (errors and violations), as text.
    pub(super) problems: Mutex<Vec<String>>,
    /// The sampler's figures, one per second.
    pub(super) samples: Mutex<Vec<Sample>>,
}

impl Shared {
    /// Milliseconds since the start of the run.
    pub(super) fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Registers a watched thread.
    pub(super) fn role(&self, name: String) -> Arc<Role> {
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
    pub(super) fn idle(&self, role: &Role) {
        role.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Counts a completed operation of `role`.
    pub(super) fn tick(&self, role: &Role) {
        role.ops.fetch_add(1, Ordering::Relaxed);
        role.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Whether the threads must stop.
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts a problem on `counter` and keeps its text (the first 20).
    fn problem(&self, counter: &AtomicU64, text: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < 20 {
            problems.push(text);
        }
    }

    /// Records an engine error.
    pub(super) fn error(&self, what: &str, error: &Error) {
        self.problem(&self.errors, format!("{what}: {error}"));
    }

    /// Records a violated invariant.
    pub(super) fn violation(&self, text: String) {
        self.problem(&self.violations, text);
    }

    /// Operations completed by every thread but the sampler.
    pub(super) fn total_ops(&self) -> u64 {
        self.roles
            .lock()
            .unwrap()
            .iter()
            .filter(|role| !role.name.starts_with("soak-sampler"))
            .map(|role| role.ops.load(Ordering::Relaxed))
            .sum()
    }
}
