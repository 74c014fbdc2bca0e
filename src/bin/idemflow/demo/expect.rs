//! The outcome a scenario expects for a request, and the one it got.

use idemflow::{Outcome, Result as EngineResult};

use super::machine::OrderState;

/// The outcome a scenario expects for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Applied now.
    Applied,
    /// Nothing to do: the target is already reached.
    NoOp,
    /// The original outcome of an earlier request with the same key.
    Replay,
    /// Rejected with this error variant.
    Rejected(&'static str),
    /// Racing other requests: checked per race instead.
    Racing,
}

/// The outcome a request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Got {
    Applied,
    NoOp,
    Replay,
    Rejected(&'static str),
}

impl Got {
    pub(crate) fn of(result: &EngineResult<Outcome<OrderState>>) -> Got {
        match result {
            Ok(outcome) if outcome.is_replay() => Got::Replay,
            Ok(outcome) if outcome.was_applied() => Got::Applied,
            Ok(_) => Got::NoOp,
            Err(error) => Got::Rejected(error.kind()),
        }
    }

    pub(crate) fn matches(self, expect: Expect) -> bool {
        match expect {
            Expect::Applied => self == Got::Applied,
            Expect::NoOp => self == Got::NoOp,
            Expect::Replay => self == Got::Replay,
            Expect::Rejected(kind) => self == Got::Rejected(kind),
            Expect::Racing => true,
        }
    }
}
