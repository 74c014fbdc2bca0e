//! `check_machine`: the reference-model property test, for a user's own
//! machine (feature `testing`).
//!
//! Random sequences of requests (creations and transitions, by state and by
//! event, with and without idempotency keys and scopes, right and wrong
//! expected versions, payloads whose numbers are spelled differently, exact
//! repeats, keyed duplicates sent concurrently, and reopening the on-disk
//! database) run against the engine and against a plain in-memory model of
//! SPEC sections 2 and 3 written here, from the spec, without calling the
//! engine's decision code. After every step the outcome or error must be the
//! model's, and the stored records, histories, state index and outbox must
//! be the model's state. A disagreement panics with a shrunk (minimal)
//! failing sequence and what differed.
//!
//! Guards are out of scope (the check runs on a fresh engine of its own,
//! with none), and so is time: the engine runs on a [`ManualClock`](crate::testing::ManualClock) that
//! moves one millisecond per step, so keys never expire and timeouts never
//! fire.
//!
//! The parts: `ops` draws random operations, `request` holds the requests
//! they resolve to, `model` is the reference model, `under_test` the
//! engine it is checked against, `storage` compares what is stored with
//! the model, and `runner` runs the sequences under proptest.

mod model;
mod ops;
mod request;
mod runner;
mod storage;
#[cfg(test)]
mod tests;
mod under_test;

use crate::machine::StateMachine;
use runner::run_check;
use under_test::EngineUnderTest;

/// How much [`check_machine_with`] tries.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckConfig {
    /// Random sequences to run (default 32; the `PROPTEST_CASES`
    /// environment variable, when set, overrides the default).
    pub cases: u32,
    /// The most requests in one sequence (default 30).
    pub steps: usize,
    /// The random seed: `None` (default) draws one per run (the
    /// `PROPTEST_RNG_SEED` environment variable, when set, fixes it); a
    /// fixed seed makes a run repeatable.
    pub seed: Option<u64>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(32);
        CheckConfig {
            cases,
            steps: 30,
            seed: None,
        }
    }
}

impl CheckConfig {
    /// Sets the number of random sequences.
    #[must_use]
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases;
        self
    }

    /// Sets the most requests in one sequence.
    #[must_use]
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Fixes the random seed, for a repeatable run.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// Runs the reference-model property test against machine `M` with the
/// default [`CheckConfig`] (32 random sequences of up to 30 requests, each
/// on a fresh temporary on-disk database). Panics with a shrunk failing
/// sequence if the engine and the model of the spec disagree on `M`.
///
/// ```
/// # use idemflow::StateMachine;
/// #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// #[machine(name = "door", initial = Closed, events = DoorEvent)]
/// enum Door {
///     #[on(open = Open, lock = Locked)] Closed,
///     #[on(close = Closed)] Open,
///     #[on(unlock = Closed)] Locked,
/// }
///
/// idemflow::testing::check_machine::<Door>();
/// ```
pub fn check_machine<M: StateMachine>() {
    check_machine_with::<M>(CheckConfig::default());
}

/// [`check_machine`] with a number of cases, a sequence length and a seed
/// of your choice.
///
/// ```
/// # use idemflow::StateMachine;
/// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// # #[machine(name = "door", initial = Closed, events = DoorEvent)]
/// # enum Door {
/// #     #[on(open = Open)] Closed,
/// #     #[on(close = Closed)] Open,
/// # }
/// use idemflow::testing::{check_machine_with, CheckConfig};
///
/// check_machine_with::<Door>(CheckConfig::default().cases(8).steps(20).seed(7));
/// ```
pub fn check_machine_with<M: StateMachine>(config: CheckConfig) {
    run_check::<M, EngineUnderTest<M>>(&config);
}
