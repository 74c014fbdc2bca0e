//! Unit tests of the decision core, step by step.

use super::create::decide_create;
use super::*;
use crate::machine::MachineDef;
use serde_json::json;

fn order() -> MachineRules {
    MachineRules::new(
        MachineDef::new("order", "draft")
            .state("draft")
            .state("submitted")
            .state("paid")
            .terminal_state("shipped")
            .terminal_state("cancelled")
            .terminal_state("refunded")
            .transition("draft", "submit", "submitted")
            .transition("draft", "cancel", "cancelled")
            .transition("submitted", "pay", "paid")
            .transition("submitted", "cancel", "cancelled")
            .transition("paid", "ship", "shipped")
            .transition("paid", "refund", "refunded"),
    )
}

fn record(state: &str, version: u64) -> EntityRecord {
    EntityRecord {
        id: "o-1".into(),
        state: state.into(),
        version,
        created_at: 10,
        updated_at: 20,
    }
}

fn to(state: &str) -> RequestSpec {
    RequestSpec {
        target: Target::To(state.to_owned().into()),
        key: None,
        scope: None,
        expected_version: None,
        payload: None,
        actor: None,
    }
}

fn fire(event: &str) -> RequestSpec {
    RequestSpec {
        target: Target::Fire(event.to_owned().into()),
        ..to("draft")
    }
}

fn run(
    rules: &MachineRules,
    record: Option<&EntityRecord>,
    key_record: Option<&KeyRecord>,
    request: &RequestSpec,
) -> Result<Decision> {
    decide(&DecisionInput {
        rules,
        id: "o-1",
        record,
        key_record,
        request,
        fingerprints: &[Fingerprint::of("o-1", request)],
        now: 100,
        key_retention_ms: 1000,
        guard: &no_guards,
    })
}

#[test]
fn step1_rejects_unknown_names_and_limits() {
    let rules = order();
    let limits = Limits::default();
    assert!(matches!(
        check_request(&rules, &limits, "o-1", &to("lost")),
        Err(Error::InvalidInput {
            field: InputField::State,
            ..
        })
    ));
    assert!(matches!(
        check_request(&rules, &limits, "o-1", &fire("teleport")),
        Err(Error::InvalidInput {
            field: InputField::Event,
            ..
        })
    ));
    assert!(matches!(
        check_request(&rules, &limits, "", &to("paid")),
        Err(Error::InvalidInput {
            field: InputField::Id,
            ..
        })
    ));
    assert!(check_request(&rules, &limits, "o-1", &fire("pay")).is_ok());
}

#[test]
fn step2_replays_the_original_outcome_even_after_the_entity_moved_on() {
    let rules = order();
    let mut request = to("submitted");
    request.key = Some("k".into());
    let first = run(&rules, Some(&record("draft", 1)), None, &request).unwrap();
    let Decision::Apply(applied) = first else {
        panic!("expected an applied change")
    };
    let stored = applied
        .key_record
        .clone()
        .expect("keyed request stores its key");
    assert_eq!(stored.expires_at, 1100);
    let again = run(&rules, Some(&record("paid", 3)), Some(&stored), &request).unwrap();
    let mut expected = applied.outcome.clone();
    expected.replay = true;
    assert_eq!(again, Decision::Replay(expected));
}

#[test]
fn step2_rejects_a_reused_key_and_forgets_expired_keys() {
    let rules = order();
    let mut request = to("submitted");
    request.key = Some("k".into());
    let stored = KeyRecord {
        fingerprint: Fingerprint::of("other", &request),
        expires_at: 1000,
        outcome: OutcomeRecord {
            id: "other".into(),
            state: "submitted".into(),
            version: 2,
            applied: true,
            from: Some("draft".into()),
            event: None,
            replay: false,
            at: 1,
        },
    };
    let error = run(&rules, Some(&record("draft", 1)), Some(&stored), &request).unwrap_err();
    assert!(matches!(error, Error::KeyReused { ref key, .. } if key == "k"));
    let expired = KeyRecord {
        expires_at: 100,
        ..stored
    };
    let decision = run(&rules, Some(&record("draft", 1)), Some(&expired), &request).unwrap();
    assert!(matches!(decision, Decision::Apply(_)));
}

#[test]
fn step3_missing_entity_is_not_found() {
    let rules = order();
    assert!(matches!(
        run(&rules, None, None, &to("submitted")),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn step4_fire_resolves_the_target_or_recognises_it_as_reached() {
    let rules = order();
    let decision = run(&rules, Some(&record("submitted", 2)), None, &fire("pay")).unwrap();
    let Decision::Apply(applied) = decision else {
        panic!("expected an applied change")
    };
    assert_eq!(applied.record.state, "paid");
    assert_eq!(applied.history.event.as_deref(), Some("pay"));
    // Paid already: firing pay again is a no-op.
    let decision = run(&rules, Some(&record("paid", 3)), None, &fire("pay")).unwrap();
    assert!(matches!(decision, Decision::NoOp { .. }));
    // Shipped: pay is neither declared from here nor leads here.
    let error = run(&rules, Some(&record("shipped", 4)), None, &fire("pay")).unwrap_err();
    assert!(
        matches!(error, Error::InvalidTransition { ref from, to: None, ref event, .. } if from == "shipped" && event.as_deref() == Some("pay"))
    );
}

#[test]
fn step5_noop_ignores_the_expected_version_and_writes_only_the_key() {
    let rules = order();
    let mut request = to("paid");
    request.expected_version = Some(1);
    request.key = Some("k".into());
    let decision = run(&rules, Some(&record("paid", 3)), None, &request).unwrap();
    let Decision::NoOp {
        outcome,
        key_record,
    } = decision
    else {
        panic!("expected a no-op")
    };
    assert_eq!((outcome.state.as_str(), outcome.version), ("paid", 3));
    assert!(!outcome.applied);
    assert_eq!(key_record.map(|k| k.outcome), Some(outcome));
}

#[test]
fn step6_expected_version_must_match() {
    let rules = order();
    let mut request = to("paid");
    request.expected_version = Some(1);
    let error = run(&rules, Some(&record("submitted", 2)), None, &request).unwrap_err();
    assert!(matches!(
        error,
        Error::VersionConflict {
            expected: 1,
            actual: 2,
            ..
        }
    ));
    request.expected_version = Some(2);
    assert!(run(&rules, Some(&record("submitted", 2)), None, &request).is_ok());
}

#[test]
fn step7_undeclared_transition_is_invalid() {
    let rules = order();
    let error = run(&rules, Some(&record("draft", 1)), None, &to("shipped")).unwrap_err();
    assert!(
        matches!(error, Error::InvalidTransition { ref from, ref to, .. } if from == "draft" && to.as_deref() == Some("shipped"))
    );
}

#[test]
fn step8_guard_rejects_with_its_reason() {
    let rules = order();
    let mut request = to("paid");
    request.payload = Some(json!({"amount": 0}));
    let guard = |input: &NamedGuardInput<'_>| {
        if input.payload.and_then(|p| p["amount"].as_u64()) == Some(0) {
            Err(format!("nothing to charge for {}", input.entity.id))
        } else {
            Ok(())
        }
    };
    let error = decide(&DecisionInput {
        rules: &rules,
        id: "o-1",
        record: Some(&record("submitted", 2)),
        key_record: None,
        request: &request,
        fingerprints: &[Fingerprint::of("o-1", &request)],
        now: 100,
        key_retention_ms: 1000,
        guard: &guard,
    })
    .unwrap_err();
    assert!(
        matches!(error, Error::GuardRejected { ref reason, ref to, .. } if reason == "nothing to charge for o-1" && to == "paid")
    );
}

#[test]
fn step9_applies_version_plus_one_with_monotonic_time() {
    let rules = order();
    let mut request = to("submitted");
    request.actor = Some("alice".into());
    let mut current = record("draft", 1);
    current.updated_at = 500; // later than `now`: the clock went back
    let Decision::Apply(applied) = run(&rules, Some(&current), None, &request).unwrap() else {
        panic!("expected an applied change")
    };
    assert_eq!(applied.record.version, 2);
    assert_eq!(applied.record.updated_at, 500);
    assert_eq!(applied.record.created_at, 10);
    assert_eq!(applied.previous_state.as_deref(), Some("draft"));
    assert_eq!(applied.history.version, 2);
    assert_eq!(applied.history.actor.as_deref(), Some("alice"));
    assert!(applied.key_record.is_none());
    assert!(applied.outcome.applied && !applied.outcome.replay);
}

#[test]
fn create_is_a_noop_for_an_existing_entity() {
    let rules = order();
    let decision = decide_create(&rules, "o-1", None, &CreateSpec::default(), 7);
    let Decision::Apply(applied) = decision else {
        panic!("expected a creation")
    };
    assert_eq!(
        (applied.record.state.as_str(), applied.record.version),
        ("draft", 1)
    );
    let existing = record("paid", 3);
    let decision = decide_create(&rules, "o-1", Some(&existing), &CreateSpec::default(), 7);
    assert!(
        matches!(decision, Decision::NoOp { ref outcome, .. } if outcome.state == "paid" && outcome.version == 3 && !outcome.applied)
    );
}
