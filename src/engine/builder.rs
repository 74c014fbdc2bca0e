//! Configuring an engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::clock::{Clock, SystemClock};
use crate::durability::Durability;
use crate::error::{Error, InputField, Result};
use crate::request::Limits;
use crate::testing::Faults;

/// Options of an [`Engine`]; every one has a sane default.
///
/// ```
/// use std::time::Duration;
/// use idemflow::{Durability, Engine};
///
/// let engine = Engine::builder()
///     .durability(Durability::Buffered)
///     .key_retention(Duration::from_secs(24 * 3600))
///     .temporary()?;
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone)]
pub struct EngineBuilder {
    pub(super) durability: Durability,
    pub(super) key_retention: Duration,
    pub(super) limits: Limits,
    pub(super) cache_capacity: u64,
    pub(super) segment_size: usize,
    pub(super) flush_every_ms: Option<u64>,
    pub(super) purge_every: Option<Duration>,
    pub(super) max_batch: usize,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) faults: Faults,
    pub(super) timers: bool,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("durability", &self.durability)
            .field("key_retention", &self.key_retention)
            .field("limits", &self.limits)
            .field("flush_every_ms", &self.flush_every_ms)
            .field("purge_every", &self.purge_every)
            .field("max_batch", &self.max_batch)
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            durability: Durability::Immediate,
            key_retention: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            cache_capacity: 256 * 1024 * 1024,
            segment_size: crate::store::sled::DEFAULT_SEGMENT_SIZE,
            flush_every_ms: Some(100),
            purge_every: Some(Duration::from_secs(60)),
            max_batch: 256,
            clock: Arc::new(SystemClock),
            faults: Faults::default(),
            timers: true,
        }
    }
}

impl EngineBuilder {
    /// When calls return relative to stable storage. Default [`Durability::Immediate`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long an idempotency key is remembered. Default 24 hours.
    #[must_use]
    pub fn key_retention(mut self, retention: Duration) -> Self {
        self.key_retention = retention;
        self
    }

    /// Size limits of ids, keys, payloads and actors.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// sled's page cache in bytes. Default 256 MiB.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// sled's segment size for a *new* database, a power of two between
    /// 256 KiB and 16 MiB (default 8 MiB). Pages larger than a quarter of a
    /// segment go to separate blob files (which the engine syncs too); the
    /// default keeps every page within the default limits below that. An
    /// existing database keeps the size it was created with.
    #[must_use]
    pub fn segment_size(mut self, bytes: usize) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Under [`Durability::Buffered`], how often the writer syncs in the
    /// background (`None`: only when [`Engine::flush`] is called or enough
    /// bytes wait). Default 100 ms: this bounds what a crash may lose, and
    /// how long an event waits before the outbox hands it out.
    #[must_use]
    pub fn flush_every_ms(mut self, interval: Option<u64>) -> Self {
        self.flush_every_ms = interval;
        self
    }

    /// How often expired idempotency keys are deleted in the background
    /// (`None`: only by [`Engine::purge_expired_keys`]). Default every 60 s.
    /// Each round deletes a bounded number of keys between batches of
    /// requests, so purging never stalls requests for long.
    #[must_use]
    pub fn purge_interval(mut self, every: Option<Duration>) -> Self {
        self.purge_every = every;
        self
    }

    /// The most requests one transaction takes. Default 256. Concurrent
    /// requests share a transaction and a sync (group commit); a lone request
    /// is never delayed. Semantics are the same at any size.
    #[must_use]
    pub fn max_batch(mut self, requests: usize) -> Self {
        self.max_batch = requests.max(1);
        self
    }

    /// Whether concurrent requests share transactions. `false` is
    /// `max_batch(1)`: one request per transaction.
    #[must_use]
    pub fn batching(self, on: bool) -> Self {
        if on {
            self.max_batch(EngineBuilder::default().max_batch)
        } else {
            self.max_batch(1)
        }
    }

    /// Where timestamps come from (default: the system clock). Tests use
    /// [`ManualClock`](crate::testing::ManualClock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether a background runner fires due timers (declared timeouts and
    /// scheduled requests). Default on. Off, timers still arm and are stored;
    /// [`Engine::run_due_timers`] fires them (tests with a
    /// [`ManualClock`](crate::testing::ManualClock) do so).
    #[must_use]
    pub fn timers(mut self, run: bool) -> Self {
        self.timers = run;
        self
    }

    /// Faults to inject, for tests of failure handling; see [`Faults`].
    #[must_use]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Opens (or creates) the database in directory `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Engine> {
        self.build(Some(path.as_ref().to_owned()))
    }

    /// Opens a throw-away database, deleted when the engine is dropped.
    pub fn temporary(self) -> Result<Engine> {
        self.build(None)
    }

    fn build(self, path: Option<PathBuf>) -> Result<Engine> {
        self.check()?;
        Engine::start(self, path)
    }

    /// Checks the options every backend uses.
    pub(super) fn check(&self) -> Result<()> {
        if self.key_retention.is_zero() {
            return Err(Error::invalid_input(
                InputField::Config,
                "key retention must be longer than zero",
            ));
        }
        if !self.segment_size.is_power_of_two()
            || !(256 * 1024..=16 * 1024 * 1024).contains(&self.segment_size)
        {
            return Err(Error::invalid_input(
                InputField::Config,
                format!(
                    "segment size {} is not a power of two between 256 KiB and 16 MiB",
                    self.segment_size
                ),
            ));
        }
        Ok(())
    }
}
