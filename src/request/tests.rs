//! Unit tests of requests: limits and fingerprints.

use super::fingerprint::Numbers;
use super::limits::nesting_depth;
use super::*;
use crate::error::{Error, InputField};
use serde_json::json;

fn spec(target: Target) -> RequestSpec {
    RequestSpec::new(target)
}

#[test]
fn fingerprint_ignores_object_key_order() {
    let mut a = spec(Target::To("paid".into()));
    a.payload = Some(serde_json::from_str(r#"{"a":1,"b":{"x":[1,2],"y":null}}"#).unwrap());
    let mut b = spec(Target::To("paid".into()));
    b.payload = Some(serde_json::from_str(r#"{"b":{"y":null,"x":[1,2]},"a":1}"#).unwrap());
    assert_eq!(Fingerprint::of("o-1", &a), Fingerprint::of("o-1", &b));
}

#[test]
fn fingerprint_covers_every_field() {
    let base = spec(Target::To("paid".into()));
    let base_print = Fingerprint::of("o-1", &base);
    assert_ne!(Fingerprint::of("o-2", &base), base_print);
    assert_ne!(
        Fingerprint::of("o-1", &spec(Target::Fire("paid".into()))),
        base_print
    );
    let mut changed = base.clone();
    changed.expected_version = Some(1);
    assert_ne!(Fingerprint::of("o-1", &changed), base_print);
    let mut changed = base.clone();
    changed.payload = Some(json!({"amount": 1}));
    assert_ne!(Fingerprint::of("o-1", &changed), base_print);
    let mut other_payload = base.clone();
    other_payload.payload = Some(json!({"amount": 2}));
    assert_ne!(
        Fingerprint::of("o-1", &changed),
        Fingerprint::of("o-1", &other_payload)
    );
    let mut changed = base.clone();
    changed.actor = Some("alice".into());
    assert_ne!(Fingerprint::of("o-1", &changed), base_print);
    // The key itself is not part of the fingerprint: it names the record.
    let mut keyed = base.clone();
    keyed.key = Some("k".into());
    assert_eq!(Fingerprint::of("o-1", &keyed), base_print);
}

fn with_payload(text: &str) -> RequestSpec {
    let mut request = spec(Target::To("paid".into()));
    request.payload = Some(serde_json::from_str(text).unwrap());
    request
}

#[test]
fn fingerprint_counts_numbers_by_value() {
    let one = Fingerprint::of("o-1", &with_payload(r#"{"amount":1}"#));
    for same in [
        r#"{"amount":1.0}"#,
        r#"{"amount":1e0}"#,
        r#"{"amount":10e-1}"#,
        r#"{"amount":1.000}"#,
    ] {
        assert_eq!(Fingerprint::of("o-1", &with_payload(same)), one, "{same}");
    }
    let zero = Fingerprint::of("o-1", &with_payload("[0]"));
    assert_eq!(Fingerprint::of("o-1", &with_payload("[-0.0]")), zero);
    assert_eq!(Fingerprint::of("o-1", &with_payload("[0.0]")), zero);
    let half = Fingerprint::of("o-1", &with_payload("[0.5]"));
    assert_eq!(Fingerprint::of("o-1", &with_payload("[5e-1]")), half);
    assert_eq!(Fingerprint::of("o-1", &with_payload("[0.50]")), half);
    // Different amounts stay different.
    for other in [
        r#"{"amount":2}"#,
        r#"{"amount":1.5}"#,
        r#"{"amount":-1}"#,
        r#"{"amount":"1"}"#,
    ] {
        assert_ne!(Fingerprint::of("o-1", &with_payload(other)), one, "{other}");
    }
    // Large integers: exact as integers; an integral float reads as its integer.
    let big = Fingerprint::of("o-1", &with_payload("[18446744073709551615]"));
    assert_ne!(
        Fingerprint::of("o-1", &with_payload("[18446744073709551614]")),
        big
    );
    assert_eq!(
        Fingerprint::of("o-1", &with_payload("[-9007199254740992]")),
        Fingerprint::of("o-1", &with_payload("[-9007199254740992.0]"))
    );
    // Beyond 64 bits: floats, compared as floats.
    assert_eq!(
        Fingerprint::of("o-1", &with_payload("[1e20]")),
        Fingerprint::of("o-1", &with_payload("[100000000000000000000]"))
    );
}

#[test]
fn the_former_number_encoding_is_a_variant_only_where_it_differs() {
    // Integers and non-integral floats were encoded the same way before.
    for text in [
        r#"{"amount":1}"#,
        r#"{"amount":0.5}"#,
        r#"{"a":[1,2,{"b":-3}]}"#,
        "null",
    ] {
        let request = with_payload(text);
        assert_eq!(
            Fingerprint::variants("o-1", &request),
            vec![Fingerprint::of("o-1", &request)],
            "{text}"
        );
        assert_eq!(
            Fingerprint::encoded("o-1", &request, Numbers::Legacy),
            Fingerprint::of("o-1", &request)
        );
    }
    // An integral float (`1.0`) had a fingerprint of its own: it comes second.
    for text in [r#"{"amount":1.0}"#, r#"{"a":[1,{"b":-0.0}]}"#, "[2e0]"] {
        let request = with_payload(text);
        let variants = Fingerprint::variants("o-1", &request);
        assert_eq!(variants.len(), 2, "{text}");
        assert_eq!(variants[0], Fingerprint::of("o-1", &request));
        assert_eq!(
            variants[1],
            Fingerprint::encoded("o-1", &request, Numbers::Legacy)
        );
        assert_ne!(variants[0], variants[1]);
    }
}

#[test]
fn a_key_stored_before_numbers_were_canonical_still_replays() {
    use crate::decide::{
        decide, decide_create_keyed, no_guards, Decision, DecisionInput, KeyRecord, MachineRules,
    };
    use crate::outcome::{EntityRecord, OutcomeRecord};

    let rules = MachineRules::new(
        crate::MachineDef::new("order", "submitted")
            .state("submitted")
            .terminal_state("paid")
            .transition("submitted", "pay", "paid"),
    );
    let original = OutcomeRecord {
        id: "o-1".into(),
        state: "paid".into(),
        version: 2,
        applied: true,
        from: Some("submitted".into()),
        event: None,
        replay: false,
        at: 50,
    };
    let record = EntityRecord {
        id: "o-1".into(),
        state: "paid".into(),
        version: 2,
        created_at: 10,
        updated_at: 50,
    };
    let mut request = with_payload(r#"{"amount":42.0}"#);
    request.key = Some("pay-1".into());
    // The key record as an older release stored it.
    let stored = KeyRecord {
        fingerprint: Fingerprint::encoded("o-1", &request, Numbers::Legacy),
        expires_at: 1000,
        outcome: original.clone(),
    };
    let fingerprints = rules.fingerprints("o-1", &request);
    let decision = decide(&DecisionInput {
        rules: &rules,
        id: "o-1",
        record: Some(&record),
        key_record: Some(&stored),
        request: &request,
        fingerprints: &fingerprints,
        now: 100,
        key_retention_ms: 1000,
        guard: &no_guards,
    })
    .unwrap();
    assert_eq!(
        decision,
        Decision::Replay(OutcomeRecord {
            replay: true,
            ..original.clone()
        })
    );

    // A keyed creation stored before the change replays too.
    let create = crate::decide::CreateSpec {
        payload: Some(serde_json::from_str(r#"{"total":3.0}"#).unwrap()),
        key: Some("new-o-1".into()),
        ..Default::default()
    };
    let mut as_request = spec(Target::To("\u{0}create".into()));
    as_request.payload = create.payload.clone();
    let stored = KeyRecord {
        fingerprint: Fingerprint::encoded("o-1", &as_request, Numbers::Legacy),
        expires_at: 1000,
        outcome: original.clone(),
    };
    let decision = decide_create_keyed(
        &rules,
        "o-1",
        Some(&record),
        Some(&stored),
        &create,
        100,
        1000,
    )
    .unwrap();
    assert_eq!(
        decision,
        Decision::Replay(OutcomeRecord {
            replay: true,
            ..original
        })
    );
}

#[test]
fn nesting_depth_counts_arrays_and_objects() {
    assert_eq!(nesting_depth(&json!(1)), 0);
    assert_eq!(nesting_depth(&json!([])), 1);
    assert_eq!(nesting_depth(&json!({"a": [1, {"b": [[]]}]})), 5);
    let limits = Limits::default();
    let mut deep = json!(0);
    for _ in 0..65 {
        deep = json!([deep]);
    }
    let mut request = spec(Target::To("paid".into()));
    request.payload = Some(deep);
    assert!(matches!(
        limits.check_request("o-1", &request),
        Err(Error::InvalidInput {
            field: InputField::Payload,
            ..
        })
    ));
}

#[test]
fn limits_reject_empty_and_oversized_input() {
    let limits = Limits::default();
    let ok = spec(Target::To("paid".into()));
    assert!(limits.check_request("o-1", &ok).is_ok());
    assert!(matches!(
        limits.check_request("", &ok),
        Err(Error::InvalidInput {
            field: InputField::Id,
            ..
        })
    ));
    assert!(matches!(
        limits.check_request(&"x".repeat(1025), &ok),
        Err(Error::InvalidInput {
            field: InputField::Id,
            ..
        })
    ));
    assert!(limits.check_request(&"x".repeat(1024), &ok).is_ok());
    let mut keyed = ok.clone();
    keyed.key = Some(String::new());
    assert!(matches!(
        limits.check_request("o-1", &keyed),
        Err(Error::InvalidInput {
            field: InputField::Key,
            ..
        })
    ));
    keyed.key = Some("k".repeat(256));
    assert!(matches!(
        limits.check_request("o-1", &keyed),
        Err(Error::InvalidInput {
            field: InputField::Key,
            ..
        })
    ));
    let mut heavy = ok.clone();
    heavy.payload = Some(json!("x".repeat(64 * 1024)));
    assert!(matches!(
        limits.check_request("o-1", &heavy),
        Err(Error::InvalidInput {
            field: InputField::Payload,
            ..
        })
    ));
    assert!(matches!(
        limits.check_request("o-1", &spec(Target::Fire("".into()))),
        Err(Error::InvalidInput {
            field: InputField::Event,
            ..
        })
    ));
}
