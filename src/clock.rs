//! Where the engine's timestamps come from.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now" in milliseconds since the Unix epoch (UTC).
///
/// Every timestamp the engine records (`created_at`, history `at`, outcome
/// `at`, key expiry) comes from its clock, so a test can replace it with
/// [`ManualClock`](crate::testing::ManualClock) and get deterministic results.
/// Give one to [`EngineBuilder::clock`](crate::EngineBuilder::clock).
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock, the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }
}
