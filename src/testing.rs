//! Helpers for tests: a clock the test moves, faults the test injects, and
//! (feature `testing`) `check_machine`, a property test of your own
//! machine against a reference model of the spec.
//!
//! ```
//! use std::time::Duration;
//! use idemflow::testing::ManualClock;
//! use idemflow::Clock;
//!
//! let clock = ManualClock::new(1_800_000_000_000);
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(clock.now_ms(), 1_800_000_060_000);
//! clock.set(5);
//! assert_eq!(clock.now_ms(), 5);
//! ```

#[cfg(feature = "testing")]
mod check;

#[cfg(feature = "testing")]
pub use self::check::{check_machine, check_machine_with, CheckConfig};

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

/// A clock that only moves when the test says so. Clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `start_ms` milliseconds since the Unix epoch.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .now_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the clock to `ms` milliseconds since the Unix epoch (it may go back).
    pub fn set(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Faults to inject into an engine's writer, for tests of failure handling.
/// Clones share one plan; give one to [`EngineBuilder::faults`](crate::EngineBuilder::faults).
///
/// Each counter fires on that many of the next syncs (the step that makes
/// commits durable), in the order: panics first, then failures.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    sync_panics: Arc<AtomicU32>,
    sync_failures: Arc<AtomicU32>,
}

/// What an injected fault does to one sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncFault {
    Panic,
    Fail,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Faults::default()
    }

    /// The next `count` syncs panic (inside the writer, which must survive it).
    pub fn panic_next_syncs(&self, count: u32) {
        self.sync_panics.store(count, Ordering::SeqCst);
    }

    /// The next `count` syncs fail with an I/O error (after the commit).
    pub fn fail_next_syncs(&self, count: u32) {
        self.sync_failures.store(count, Ordering::SeqCst);
    }

    pub(crate) fn take_sync_fault(&self) -> Option<SyncFault> {
        let take = |counter: &AtomicU32| {
            counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
        };
        if take(&self.sync_panics) {
            Some(SyncFault::Panic)
        } else if take(&self.sync_failures) {
            Some(SyncFault::Fail)
        } else {
            None
        }
    }
}
