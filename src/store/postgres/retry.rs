//! Which failures are worth another attempt, and how long to wait before it.
//!
//! A batch is retried when the database says it did not commit it and a new
//! attempt may succeed: a serialization failure (`40001`, what CockroachDB
//! and `SERIALIZABLE` report), a deadlock (`40P01`), a unique violation
//! (`23505`: a row appeared that the attempt did not expect; the next attempt
//! reads it and decides again), a server shutting down or starting
//! (`57P01`..`57P03`), or a connection lost *before* `COMMIT` was sent (the
//! server rolls such a transaction back). A connection lost *during* `COMMIT`
//! is never retried: whether it committed is unknown (`Error::CommitUnknown`).
//! A batch sends its write and `COMMIT` in one round trip, so a connection
//! lost during that round trip counts as lost during `COMMIT`. A write that
//! finds rows changed under the batch's locks fails with `22P02` and a
//! message of idemflow's (`batch/write.rs`): the writer retries that one.
//!
//! Nothing that identifies an attempt is made inside the retry loop: the
//! requests' timestamps and fingerprints come from their callers, decisions
//! are pure, and outbox positions are the database's. Every attempt of a
//! batch is therefore the same batch.
//!
//! Backoff: exponential from [`Backoff::FIRST`] to [`Backoff::LONGEST`] with
//! full jitter, for at most [`Backoff::BUDGET`] in all, so a server restart
//! of a few seconds is ridden out and a server that stays away gives a clear
//! error instead of a hang.

use std::time::{Duration, Instant};

use postgres::error::SqlState;

/// Whether a failed attempt may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The database rolled the attempt back; another may succeed.
    Again,
    /// Another attempt would fail the same way (or the failure is not ours to retry).
    No,
}

/// Classifies an error of a statement that ran before `COMMIT`.
pub(crate) fn classify(error: &postgres::Error) -> Retry {
    if transport(error) {
        // The connection is gone (or never came): the server rolls back.
        return Retry::Again;
    }
    match error.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT =>
        {
            Retry::Again
        }
        _ => Retry::No,
    }
}

/// Whether an error means the connection can no longer be used.
pub(crate) fn connection_lost(error: &postgres::Error) -> bool {
    transport(error)
        || matches!(
            error.code(),
            Some(code) if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        )
}

/// Whether the error is the connection's (closed, I/O, connect or timeout),
/// not a statement's.
fn transport(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    let text = error.to_string();
    text.starts_with("error connecting to server") || text.starts_with("timeout waiting for server")
}

/// Exponential backoff with full jitter, bounded in total time.
pub(crate) struct Backoff {
    started: Instant,
    next: Duration,
    seed: u64,
    /// Attempts made so far.
    pub(crate) attempts: u32,
}

impl Backoff {
    /// The first wait, at most.
    pub(crate) const FIRST: Duration = Duration::from_millis(5);
    /// The longest single wait.
    pub(crate) const LONGEST: Duration = Duration::from_secs(1);
    /// How long one operation keeps trying, in all.
    pub(crate) const BUDGET: Duration = Duration::from_secs(15);

    pub(crate) fn new() -> Self {
        // Seeded from the clock and the thread, so processes that failed
        // together do not retry in step.
        let mut hasher = blake3::Hasher::new();
        hasher
            .update(&format!("{:?}{:?}", Instant::now(), std::thread::current().id()).into_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        Backoff {
            started: Instant::now(),
            next: Self::FIRST,
            seed: u64::from_le_bytes(seed) | 1,
            attempts: 0,
        }
    }

    /// Waits before the next attempt; `false` when the budget is spent.
    pub(crate) fn wait(&mut self) -> bool {
        self.attempts += 1;
        let elapsed = self.started.elapsed();
        if elapsed >= Self::BUDGET {
            return false;
        }
        // xorshift64: a jitter source needs no more.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let ceiling = self.next.as_micros().max(1) as u64;
        let pause = Duration::from_micros(self.seed % ceiling + 1)
            .min(Self::BUDGET.saturating_sub(elapsed));
        std::thread::sleep(pause);
        self.next = (self.next * 2).min(Self::LONGEST);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let mut backoff = Backoff::new();
        let started = Instant::now();
        for _ in 0..5 {
            assert!(backoff.wait());
        }
        // 5 + 10 + 20 + 40 + 80 ms at most.
        assert!(started.elapsed() < Duration::from_millis(400));
        assert_eq!(backoff.attempts, 5);
    }
}
