//! The checker must pass on the engine and fail on engines that break
//! the spec: each double below wraps the real engine and breaks one rule.

use std::path::Path;

use crate::machine::StateMachine;

use super::model::{Model, ModelError, ModelResult};
use super::ops::{Op, START_MS};
use super::request::{Req, Target};
use super::runner::run_check;
use super::under_test::{EngineUnderTest, Stored, UnderTest};
use super::CheckConfig;

#[derive(crate::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
enum OrderState {
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    #[terminal]
    Shipped,
    #[terminal]
    Cancelled,
    #[terminal]
    Refunded,
}

/// `escalate` is declared from `open` and again from `in_progress`:
/// applying it twice is a second, legal transition.
#[derive(crate::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "ticket", initial = Open, events = TicketEvent)]
enum Ticket {
    #[on(escalate = InProgress, close = Closed)]
    Open,
    #[on(escalate = Escalated, resolve = Resolved)]
    InProgress,
    #[on(resolve = Resolved)]
    Escalated,
    #[on(reopen = Open, close = Closed)]
    Resolved,
    #[terminal]
    Closed,
}

/// A broken engine: `Break` rewrites each request before the real
/// engine runs it, or runs it again after.
struct Broken<M: StateMachine, B: Break> {
    inner: EngineUnderTest<M>,
    breaks: std::marker::PhantomData<B>,
}

/// One way of breaking the engine.
trait Break {
    /// Runs `req` on the real engine, broken.
    fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult;
}

impl<M: StateMachine, B: Break> UnderTest for Broken<M, B> {
    fn start(dir: &Path) -> Result<Self, String> {
        Ok(Broken {
            inner: EngineUnderTest::start(dir)?,
            breaks: std::marker::PhantomData,
        })
    }

    fn run(&self, req: &Req) -> ModelResult {
        B::run(&self.inner, req)
    }

    fn run_twice_at_once(&self, req: &Req) -> [ModelResult; 2] {
        [self.run(req), self.run(req)]
    }

    fn advance(&self) {
        self.inner.advance();
    }

    fn stored(&self) -> Result<Stored, String> {
        self.inner.stored()
    }

    fn reopen(self, dir: &Path) -> Result<Self, String> {
        Ok(Broken {
            inner: self.inner.reopen(dir)?,
            breaks: std::marker::PhantomData,
        })
    }
}

/// Applies a retried keyed transition again: the replay answer is
/// returned, but the request also runs once more, without its key.
struct AppliesReplaysAgain;

impl Break for AppliesReplaysAgain {
    fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult {
        let answer = inner.run(req);
        if matches!(&answer, Ok(outcome) if outcome.replay) && req.target.is_some() {
            let again = Req {
                key: None,
                ..req.clone()
            };
            let _ = inner.run(&again);
        }
        answer
    }
}

/// Ignores expected versions.
struct IgnoresExpectedVersions;

impl Break for IgnoresExpectedVersions {
    fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult {
        inner.run(&Req {
            expected: None,
            ..req.clone()
        })
    }
}

/// Forgets idempotency keys.
struct ForgetsKeys;

impl Break for ForgetsKeys {
    fn run<M: StateMachine>(inner: &EngineUnderTest<M>, req: &Req) -> ModelResult {
        inner.run(&Req {
            key: None,
            ..req.clone()
        })
    }
}

/// Runs the checker on `S` and returns its panic message.
fn failure_of<M: StateMachine, S: UnderTest>(config: &CheckConfig) -> String {
    let panic = std::panic::catch_unwind(|| run_check::<M, S>(config))
        .expect_err("the checker must fail on a broken engine");
    panic
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "(not a string)".to_owned())
}

/// The checker's configuration for the broken engines: enough cases to
/// find each break, with a fixed seed.
fn config() -> CheckConfig {
    CheckConfig::default().cases(64).steps(30).seed(7)
}

#[test]
fn the_engine_passes() {
    run_check::<OrderState, EngineUnderTest<OrderState>>(&CheckConfig::default().cases(12));
    run_check::<Ticket, EngineUnderTest<Ticket>>(&CheckConfig::default().cases(12));
}

#[test]
fn an_engine_that_applies_a_replay_again_fails() {
    let message = failure_of::<Ticket, Broken<Ticket, AppliesReplaysAgain>>(&config());
    assert!(message.contains("Minimal failing sequence"), "{message}");
    assert!(message.contains("escalate"), "{message}");
}

#[test]
fn an_engine_that_ignores_expected_versions_fails() {
    let message = failure_of::<OrderState, Broken<OrderState, IgnoresExpectedVersions>>(&config());
    assert!(message.contains("VersionConflict"), "{message}");
    assert!(message.contains("the sequence, as run:"), "{message}");
}

#[test]
fn an_engine_that_forgets_keys_fails() {
    let message = failure_of::<OrderState, Broken<OrderState, ForgetsKeys>>(&config());
    assert!(message.contains("Minimal failing sequence"), "{message}");
}

#[test]
fn a_wrong_model_fails_the_engine() {
    // A model that (wrongly) checks the expected version before the
    // "already reached" rule: the engine is right, the check says so.
    let mut model = Model::of::<OrderState>();
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineUnderTest::<OrderState>::start(dir.path()).unwrap();
    let create = model
        .resolve(&Op::Create {
            id: 0,
            key: None,
            payload: None,
            actor: None,
        })
        .unwrap();
    assert_eq!(engine.run(&create), model.run(&create, START_MS));
    let noop = Req {
        target: Some(Target::To("draft")),
        expected: Some(7),
        ..create
    };
    let engine_says = engine.run(&noop);
    assert!(
        matches!(&engine_says, Ok(outcome) if !outcome.applied),
        "{engine_says:?}"
    );
    let wrong_model_says: ModelResult = Err(ModelError::VersionConflict {
        id: "e-0".into(),
        expected: 7,
        actual: 1,
    });
    assert_ne!(engine_says, wrong_model_says);
    assert_eq!(engine_says, model.run(&noop, START_MS));
}
