//! Round trips of every encoding, key ordering and prefixes, and
//! malformed input reported as errors rather than panics.

use serde_json::json;

use super::*;
use crate::decide::KeyRecord;
use crate::outcome::{EntityRecord, HistoryRecord, OutcomeRecord};
use crate::request::Fingerprint;
use crate::timers::TimerKind;

/// A history entry with every optional field set.
fn history() -> HistoryRecord {
    HistoryRecord {
        version: 7,
        from: Some("submitted".into()),
        to: "paid".into(),
        event: Some("pay".into()),
        key: Some("k-1".into()),
        payload: Some(json!({"amount": 4200, "nested": {"b": [1, 2]}})),
        actor: Some("alice".into()),
        at: 1_700_000_000_000,
    }
}

#[test]
fn records_round_trip() {
    let entity = EntityRecord {
        id: "o-1".into(),
        state: "paid".into(),
        version: 3,
        created_at: 1,
        updated_at: 2,
    };
    assert_eq!(
        decode_entity(b"o-1", &encode_entity(&entity)).unwrap(),
        entity
    );
    let change = history();
    assert_eq!(decode_change(7, &encode_change(&change)).unwrap(), change);
    let bare = HistoryRecord {
        from: None,
        event: None,
        key: None,
        payload: None,
        actor: None,
        ..history()
    };
    assert_eq!(decode_change(7, &encode_change(&bare)).unwrap(), bare);
    let key_record = KeyRecord {
        fingerprint: Fingerprint([9; 32]),
        expires_at: 99,
        outcome: OutcomeRecord {
            id: "o-1".into(),
            state: "paid".into(),
            version: 3,
            applied: true,
            from: Some("submitted".into()),
            event: None,
            replay: false,
            at: 5,
        },
    };
    let encoded = encode_key_record(&key_record);
    assert_eq!(decode_key_record(&encoded).unwrap(), key_record);
    assert_eq!(key_record_expiry(&encoded).unwrap(), 99);
    let key = outbox_key(41, "order", "o-1", 7);
    let event = decode_outbox(&key, &encode_change(&change)).unwrap();
    assert_eq!(
        (
            event.position,
            event.machine.as_str(),
            event.id.as_str(),
            event.version
        ),
        (41, "order", "o-1", 7)
    );
    assert_eq!(outbox_key_position(&key).unwrap(), 41);
    assert!(key.starts_with(&outbox_position_key(41)));
    let expiry = key_expiry_key(99, b"k-1");
    assert_eq!(decode_key_expiry_key(&expiry).unwrap(), (99, &b"k-1"[..]));
    assert!(expiry.as_slice() < key_expiry_bound(99).as_slice());
    assert!(expiry.as_slice() >= key_expiry_bound(98).as_slice());
    assert_eq!(
        decode_history_key(&history_key("o-1", 7)).unwrap(),
        ("o-1".into(), 7)
    );
}

#[test]
fn timers_round_trip() {
    let mut timer = crate::timers::arm_timeout("o-1", "sent", 2, 1_000, 500, "expire");
    assert_eq!(decode_timer(&encode_timer(&timer)).unwrap(), timer);
    timer.request.payload = Some(json!({"amount": 5}));
    timer.kind = TimerKind::Scheduled;
    timer.request.expected_version = None;
    assert_eq!(decode_timer(&encode_timer(&timer)).unwrap(), timer);
    assert_eq!(
        decode_timer_ref(&encode_timer_ref(7, "o-1")).unwrap(),
        (7, "o-1".to_owned())
    );
    let (start, end) = timer_due_range(1_500);
    let due = timer_due_key(1_500, "o-1", b"k");
    assert!(start.as_slice() <= due.as_slice() && due.as_slice() < end.as_slice());
    assert!(timer_due_key(1_501, "o-1", b"k").as_slice() >= end.as_slice());
    assert!(timer_entity_key("o-1", b"k").starts_with(&timer_entity_prefix("o-1")));
    assert!(!timer_entity_key("o-12", b"k").starts_with(&timer_entity_prefix("o-1")));
    for length in 0..encode_timer(&timer).len() - 12 {
        assert!(
            decode_timer(&encode_timer(&timer)[..length]).is_err(),
            "{length}"
        );
    }
}

#[test]
fn every_truncation_and_bad_version_is_an_error_not_a_panic() {
    let value = encode_change(&history());
    for length in 0..value.len() {
        // A truncated payload may still be valid JSON only by accident; the
        // fixed fields before it must always be reported.
        let _ = decode_change(7, &value[..length]);
    }
    for length in 0..value.len() - 40 {
        assert!(
            decode_change(7, &value[..length]).is_err(),
            "length {length}"
        );
    }
    let mut wrong_version = value.clone();
    wrong_version[0] = 9;
    assert!(decode_change(7, &wrong_version)
        .unwrap_err()
        .contains("format version 9"));
    assert!(decode_entity(b"x", &[]).is_err());
    assert!(decode_entity(
        &[0xff],
        &encode_entity(&EntityRecord {
            id: String::new(),
            state: "a".into(),
            version: 1,
            created_at: 0,
            updated_at: 0,
        })
    )
    .is_err());
}

#[test]
fn history_keys_of_different_ids_never_share_a_prefix() {
    let a = history_key("ab", 1);
    let b_prefix = history_prefix("a");
    assert!(!a.starts_with(&b_prefix));
    let state_a = state_key("paid", "x");
    assert!(state_a.starts_with(&state_prefix("paid")));
    assert!(!state_a.starts_with(&state_prefix("pai")));
}
