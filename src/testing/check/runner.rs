//! Running sequences: one sequence step by step against the model (with a
//! transcript for the failure report), and the proptest run that draws,
//! runs and shrinks them.

use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use crate::machine::StateMachine;

use super::model::Model;
use super::ops::{op_strategy, Op, START_MS};
use super::request::Req;
use super::storage::compare_storage;
use super::under_test::UnderTest;
use super::CheckConfig;

/// Runs one sequence; `Err` is the transcript and what differed.
pub(super) fn run_sequence<S: UnderTest>(ops: &[Op], model: &mut Model) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|error| format!("a temporary directory: {error}"))?;
    let mut system = Some(S::start(dir.path())?);
    let mut transcript: Vec<String> = Vec::new();
    let mut last: Option<Req> = None;
    let mut at = START_MS;
    let fail = |transcript: &[String], what: String| {
        let mut text = String::from("the sequence, as run:\n");
        for line in transcript {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&what);
        text
    };
    for (step, op) in ops.iter().enumerate() {
        let Some(current) = system.take() else {
            return Err(fail(&transcript, "the engine was lost".to_owned()));
        };
        let current = match op {
            Op::Reopen => {
                transcript.push(format!("{step}: reopen the database"));
                current
                    .reopen(dir.path())
                    .map_err(|e| fail(&transcript, e))?
            }
            Op::Concurrent => {
                let Some(req) = last.clone().filter(|req| req.key.is_some()) else {
                    system = Some(current);
                    continue;
                };
                transcript.push(format!("{step}: {req}, twice at once"));
                let expected = model.run(&req, at);
                let answers = current.run_twice_at_once(&req);
                let replayed = expected.clone().map(|mut outcome| {
                    outcome.replay = true;
                    outcome
                });
                let ok = match &expected {
                    // One is the first answer, the other its replay; or both
                    // replays, when the key had been used already.
                    Ok(first) if !first.replay => {
                        (answers[0] == expected && answers[1] == replayed)
                            || (answers[1] == expected && answers[0] == replayed)
                    }
                    _ => answers.iter().all(|answer| *answer == expected),
                };
                if !ok {
                    return Err(fail(
                        &transcript,
                        format!(
                            "step {step}: the engine answered {answers:?}; the model expects {expected:?} once and its replay once (or twice the same error or replay)"
                        ),
                    ));
                }
                current
            }
            _ => {
                let req = match op {
                    Op::Repeat => match &last {
                        Some(req) => req.clone(),
                        None => {
                            system = Some(current);
                            continue;
                        }
                    },
                    _ => match model.resolve(op) {
                        Some(req) => req,
                        None => {
                            system = Some(current);
                            continue;
                        }
                    },
                };
                transcript.push(format!("{step}: {req}"));
                let actual = current.run(&req);
                let expected = model.run(&req, at);
                if actual != expected {
                    return Err(fail(
                        &transcript,
                        format!(
                            "step {step}: the engine answered\n    {actual:?}\n  the model expects\n    {expected:?}"
                        ),
                    ));
                }
                last = Some(req);
                current
            }
        };
        let stored = current.stored().map_err(|e| fail(&transcript, e))?;
        compare_storage(model, &stored)
            .map_err(|e| fail(&transcript, format!("after step {step}: {e}")))?;
        current.advance();
        at += 1;
        system = Some(current);
    }
    Ok(())
}

/// Runs the property test of `M` against `S`; panics with the minimal
/// failing sequence.
pub(super) fn run_check<M: StateMachine, S: UnderTest>(config: &CheckConfig) {
    let mut proptest_config = Config {
        cases: config.cases,
        max_shrink_iters: 1000,
        failure_persistence: None,
        ..Config::default()
    };
    if let Some(seed) = config.seed {
        proptest_config.rng_seed = RngSeed::Fixed(seed);
    }
    let mut runner = TestRunner::new(proptest_config);
    let steps = proptest::collection::vec(op_strategy(), 1..=config.steps.max(1));
    let result = runner.run(&steps, |ops| {
        let mut model = Model::of::<M>();
        run_sequence::<S>(&ops, &mut model).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "check_machine::<{}>: the engine disagrees with the reference model of the spec \
             (machine {:?}).\nMinimal failing sequence ({} operations, shrunk; a repeated \
             line is a retry of the request before it):\n{reason}",
            std::any::type_name::<M>(),
            M::machine_name(),
            ops.len(),
        ),
        Err(TestError::Abort(reason)) => panic!(
            "check_machine::<{}>: the property test stopped: {reason}",
            std::any::type_name::<M>()
        ),
    }
}
