//! The engine's behaviour, outcome by outcome and error by error (SPEC sections 2-7).

use std::time::Duration;

use idemflow::{
    Durability, Engine, Error, InputField, Limits, MachineDef, NameKind, NamedRequest, Request,
    StateMachine,
};
mod common;

use common::backend::TestDb;
use common::{OrderEvent, OrderState};
use serde_json::json;

fn engine(db: &TestDb) -> Engine {
    db.open(Engine::builder().durability(Durability::Buffered))
}

fn create_starts_at_version_one_and_is_idempotent(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    let created = orders.create("o-1").unwrap();
    assert!(created.was_applied() && created.was_created());
    assert_eq!((created.state(), created.version()), (OrderState::Draft, 1));
    assert_eq!(created.from(), None);

    orders.fire("o-1", OrderEvent::Submit).unwrap();
    let again = orders.create("o-1").unwrap();
    assert!(!again.was_applied() && !again.is_replay());
    assert_eq!((again.state(), again.version()), (OrderState::Submitted, 2));

    let history = orders.history("o-1").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].from, None);
    assert_eq!(history[0].to, OrderState::Draft);
    assert_eq!(history[1].event, Some(OrderEvent::Submit));
}

fn applied_transition_reports_from_state_and_event(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    let submitted = orders.fire("o-1", OrderEvent::Submit).unwrap();
    assert!(submitted.was_applied());
    assert_eq!(submitted.from(), Some(OrderState::Draft));
    assert_eq!(submitted.event(), Some(OrderEvent::Submit));
    assert_eq!(submitted.version(), 2);
    let paid = orders.transition("o-1", OrderState::Paid).unwrap();
    assert_eq!(paid.event(), None);
    assert_eq!(paid.from(), Some(OrderState::Submitted));
    let entity = orders.get("o-1").unwrap().unwrap();
    assert_eq!((entity.state, entity.version), (OrderState::Paid, 3));
    assert!(entity.updated_at >= entity.created_at);
}

fn reaching_a_reached_target_is_a_noop_that_writes_nothing(db: &TestDb) {
    let engine = engine(db);
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    orders.fire("o-1", OrderEvent::Submit).unwrap();
    engine.flush().unwrap();
    let pending_before = engine.outbox().pending(100).unwrap().len();
    // By target state and by event, even with a stale expected version.
    let noop = orders
        .apply("o-1", Request::to(OrderState::Submitted).expect_version(1))
        .unwrap();
    assert!(noop.was_noop() && !noop.is_replay());
    assert_eq!(noop.version(), 2);
    let noop = orders.fire("o-1", OrderEvent::Submit).unwrap();
    assert!(noop.was_noop());
    assert_eq!(orders.history("o-1").unwrap().len(), 2);
    engine.flush().unwrap();
    assert_eq!(engine.outbox().pending(100).unwrap().len(), pending_before);
}

fn keyed_request_is_applied_once_and_replayed_after_the_entity_moved_on(db: &TestDb) {
    let engine = engine(db);
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    orders.fire("o-1", OrderEvent::Submit).unwrap();
    let pay = Request::fire(OrderEvent::Pay)
        .key("pay-1")
        .payload(json!({"amount": 4200, "currency": "EUR"}))
        .actor("alice");
    let first = orders.apply("o-1", pay.clone()).unwrap();
    assert!(first.was_applied() && !first.is_replay());
    orders.fire("o-1", OrderEvent::Ship).unwrap();

    // Same key, same request, payload keys in another order: a replay of the original.
    let retry = orders
        .apply(
            "o-1",
            Request::fire(OrderEvent::Pay)
                .key("pay-1")
                .payload(json!({"currency": "EUR", "amount": 4200}))
                .actor("alice"),
        )
        .unwrap();
    assert!(retry.is_replay() && retry.was_applied());
    assert_eq!(retry.state(), OrderState::Paid);
    assert_eq!(retry.version(), first.version());
    assert_eq!(retry.from(), first.from());
    assert_eq!(retry.at(), first.at());
    assert_eq!(
        orders.get("o-1").unwrap().unwrap().state,
        OrderState::Shipped
    );
    let history = orders.history("o-1").unwrap();
    assert_eq!(history.len(), 4);
    let pay_entry = &history[2];
    assert_eq!(pay_entry.key.as_deref(), Some("pay-1"));
    assert_eq!(pay_entry.actor.as_deref(), Some("alice"));
    assert_eq!(
        pay_entry.payload,
        Some(json!({"amount": 4200, "currency": "EUR"}))
    );
}

fn a_keyed_noop_is_replayed_as_a_noop(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    let first = orders
        .apply("o-1", Request::to(OrderState::Draft).key("k"))
        .unwrap();
    assert!(first.was_noop());
    orders.fire("o-1", OrderEvent::Submit).unwrap();
    let retry = orders
        .apply("o-1", Request::to(OrderState::Draft).key("k"))
        .unwrap();
    assert!(retry.is_replay() && retry.was_noop());
    assert_eq!((retry.state(), retry.version()), (OrderState::Draft, 1));
}

fn same_key_with_another_request_is_key_reused(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    orders.create("o-2").unwrap();
    orders
        .apply("o-1", Request::fire(OrderEvent::Submit).key("k"))
        .unwrap();
    for other in [
        ("o-2", Request::fire(OrderEvent::Submit).key("k")),
        ("o-1", Request::fire(OrderEvent::Cancel).key("k")),
        (
            "o-1",
            Request::fire(OrderEvent::Submit).key("k").actor("bob"),
        ),
        (
            "o-1",
            Request::fire(OrderEvent::Submit).key("k").payload(json!(1)),
        ),
        (
            "o-1",
            Request::fire(OrderEvent::Submit).key("k").expect_version(1),
        ),
        ("o-1", Request::to(OrderState::Submitted).key("k")),
    ] {
        let error = orders.apply(other.0, other.1).unwrap_err();
        match error {
            Error::KeyReused { machine, key } => {
                assert_eq!((machine.as_str(), key.as_str()), ("order", "k"));
            }
            other => panic!("expected KeyReused, got {other:?}"),
        }
    }
    assert_eq!(orders.get("o-2").unwrap().unwrap().version, 1);
}

fn errors_are_never_stored_under_a_key(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    // Paying a draft is illegal; the key is not consumed by the error.
    let pay = Request::to(OrderState::Paid).key("pay");
    assert!(matches!(
        orders.apply("o-1", pay.clone()),
        Err(Error::InvalidTransition { .. })
    ));
    orders.fire("o-1", OrderEvent::Submit).unwrap();
    let paid = orders.apply("o-1", pay).unwrap();
    assert!(paid.was_applied() && !paid.is_replay());
}

fn missing_entity_is_not_found(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    let error = orders.fire("nobody", OrderEvent::Submit).unwrap_err();
    assert!(
        matches!(error, Error::NotFound { ref machine, ref id } if machine == "order" && id == "nobody")
    );
    assert!(orders.get("nobody").unwrap().is_none());
    assert!(orders.history("nobody").unwrap().is_empty());
}

fn illegal_transitions_are_rejected_with_from_and_to(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    let error = orders.transition("o-1", OrderState::Shipped).unwrap_err();
    assert!(
        matches!(error, Error::InvalidTransition { ref from, ref to, .. } if from == "draft" && to.as_deref() == Some("shipped"))
    );
    let error = orders.fire("o-1", OrderEvent::Ship).unwrap_err();
    assert!(
        matches!(error, Error::InvalidTransition { ref event, .. } if event.as_deref() == Some("ship"))
    );
    assert_eq!(
        error.to_string(),
        "\"o-1\" cannot go from \"draft\" by event \"ship\""
    );
    assert_eq!(orders.get("o-1").unwrap().unwrap().version, 1);
}

fn stale_expected_version_is_a_version_conflict(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    orders.fire("o-1", OrderEvent::Submit).unwrap();
    let error = orders
        .apply("o-1", Request::fire(OrderEvent::Pay).expect_version(1))
        .unwrap_err();
    assert!(matches!(
        error,
        Error::VersionConflict {
            expected: 1,
            actual: 2,
            ..
        }
    ));
    let ok = orders
        .apply("o-1", Request::fire(OrderEvent::Pay).expect_version(2))
        .unwrap();
    assert_eq!(ok.version(), 3);
}

fn guards_reject_with_a_reason_and_write_nothing(db: &TestDb) {
    let engine = engine(db);
    let orders = engine.machine::<OrderState>().unwrap();
    orders.guard_to(OrderState::Paid, |input| {
        assert_eq!(input.entity.state, OrderState::Submitted);
        match input.payload.and_then(|p| p["amount"].as_u64()) {
            Some(amount) if amount > 0 => Ok(()),
            _ => Err("a payment needs a positive amount".to_owned()),
        }
    });
    orders.guard_event(OrderEvent::Refund, |input| {
        if input.actor == Some("manager") {
            Ok(())
        } else {
            Err("only a manager refunds".to_owned())
        }
    });
    orders.create("o-1").unwrap();
    orders.fire("o-1", OrderEvent::Submit).unwrap();
    engine.flush().unwrap();
    let outbox_before = engine.outbox().pending(100).unwrap().len();
    let error = orders
        .apply("o-1", Request::fire(OrderEvent::Pay).key("pay"))
        .unwrap_err();
    assert!(
        matches!(error, Error::GuardRejected { ref reason, ref from, ref to, .. }
        if reason == "a payment needs a positive amount" && from == "submitted" && to == "paid")
    );
    assert_eq!(orders.get("o-1").unwrap().unwrap().version, 2);
    engine.flush().unwrap();
    assert_eq!(engine.outbox().pending(100).unwrap().len(), outbox_before);
    // The key was not consumed: the fixed request goes through with a new payload.
    orders
        .apply(
            "o-1",
            Request::fire(OrderEvent::Pay)
                .key("pay-2")
                .payload(json!({"amount": 10})),
        )
        .unwrap();
    // An event guard also watches a request that names the target state.
    let error = orders.transition("o-1", OrderState::Refunded).unwrap_err();
    assert!(
        matches!(error, Error::GuardRejected { ref reason, .. } if reason == "only a manager refunds")
    );
    orders
        .apply("o-1", Request::to(OrderState::Refunded).actor("manager"))
        .unwrap();
    // Guards are shared by every handle of the machine, the name-based one too.
    let named = engine.machine_by_name("order").unwrap();
    named.create("o-2").unwrap();
    named.apply("o-2", NamedRequest::fire("submit")).unwrap();
    assert!(matches!(
        named.apply("o-2", NamedRequest::fire("pay")),
        Err(Error::GuardRejected { .. })
    ));
}

fn input_limits_are_checked_before_anything_is_read_or_written(db: &TestDb) {
    let engine = db.open(
        Engine::builder()
            .durability(Durability::Buffered)
            .limits(Limits {
                max_id_bytes: 8,
                max_key_bytes: 4,
                max_payload_bytes: 16,
                max_actor_bytes: 5,
                ..Limits::default()
            }),
    );
    let orders = engine.machine::<OrderState>().unwrap();
    let field = |result: Result<_, Error>| match result {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    assert_eq!(field(orders.create("")), InputField::Id);
    assert_eq!(field(orders.create("123456789")), InputField::Id);
    orders.create("12345678").unwrap();
    assert_eq!(
        field(orders.apply("12345678", Request::fire(OrderEvent::Submit).key(""))),
        InputField::Key
    );
    assert_eq!(
        field(orders.apply("12345678", Request::fire(OrderEvent::Submit).key("12345"))),
        InputField::Key
    );
    assert_eq!(
        field(orders.apply(
            "12345678",
            Request::fire(OrderEvent::Submit).payload(json!("a long payload string"))
        )),
        InputField::Payload
    );
    assert_eq!(
        field(orders.apply(
            "12345678",
            Request::fire(OrderEvent::Submit).actor("123456")
        )),
        InputField::Actor
    );
    // Oversized input for an entity that does not exist is still InvalidInput, not NotFound.
    assert_eq!(
        field(orders.apply("missing", Request::fire(OrderEvent::Submit).key("12345"))),
        InputField::Key
    );
    assert_eq!(orders.get("12345678").unwrap().unwrap().version, 1);
    engine.flush().unwrap();
    assert_eq!(engine.outbox().pending(100).unwrap().len(), 1);
}

fn named_handle_rejects_unknown_names_as_invalid_input(db: &TestDb) {
    let engine = engine(db);
    engine.machine::<OrderState>().unwrap();
    let named = engine.machine_by_name("order").unwrap();
    named.create("o-1").unwrap();
    assert!(matches!(
        named.apply("o-1", NamedRequest::to("lost")),
        Err(Error::InvalidInput {
            field: InputField::State,
            ..
        })
    ));
    assert!(matches!(
        named.apply("o-1", NamedRequest::fire("teleport")),
        Err(Error::InvalidInput {
            field: InputField::Event,
            ..
        })
    ));
    assert!(matches!(
        named.apply("o-1", NamedRequest::fire("")),
        Err(Error::InvalidInput {
            field: InputField::Event,
            ..
        })
    ));
    assert!(matches!(
        engine.machine_by_name("invoice"),
        Err(Error::UnknownMachine { ref machine }) if machine == "invoice"
    ));
    let outcome = named.apply("o-1", NamedRequest::to("submitted")).unwrap();
    assert_eq!(
        (outcome.state.as_str(), outcome.version, outcome.applied),
        ("submitted", 2, true)
    );
}

fn state_index_answers_in_state_and_counts(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    for i in 0..10 {
        orders.create(&format!("o-{i}")).unwrap();
    }
    for i in 0..4 {
        orders.fire(&format!("o-{i}"), OrderEvent::Submit).unwrap();
    }
    orders.fire("o-0", OrderEvent::Pay).unwrap();
    assert_eq!(orders.in_state(OrderState::Paid).unwrap(), vec!["o-0"]);
    assert_eq!(
        orders.in_state(OrderState::Submitted).unwrap(),
        vec!["o-1", "o-2", "o-3"]
    );
    let counts = orders.count_by_state().unwrap();
    assert_eq!(
        counts,
        vec![
            (OrderState::Draft, 6),
            (OrderState::Submitted, 3),
            (OrderState::Paid, 1),
            (OrderState::Shipped, 0),
            (OrderState::Cancelled, 0),
            (OrderState::Refunded, 0),
        ]
    );
    // Pages: after an id, with a limit.
    let first = orders.in_state_page(OrderState::Draft, None, 4).unwrap();
    assert_eq!(first, vec!["o-4", "o-5", "o-6", "o-7"]);
    let next = orders
        .in_state_page(OrderState::Draft, first.last().map(String::as_str), 4)
        .unwrap();
    assert_eq!(next, vec!["o-8", "o-9"]);
}

fn outbox_holds_one_event_per_change_in_order_and_acks(db: &TestDb) {
    let engine = engine(db);
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    orders
        .apply(
            "o-1",
            Request::fire(OrderEvent::Submit)
                .key("k")
                .payload(json!({"n": 1}))
                .actor("al"),
        )
        .unwrap();
    orders.fire("o-1", OrderEvent::Submit).unwrap(); // no-op: no event
    orders.create("o-2").unwrap();
    let outbox = engine.outbox();
    // Buffered: the outbox hands out events once they are durable.
    assert!(outbox.len().unwrap() == 3);
    engine.flush().unwrap();
    let events = outbox.pending(10).unwrap();
    let ids: Vec<(&str, u64)> = events.iter().map(|e| (e.id.as_str(), e.version)).collect();
    assert_eq!(ids.len(), 3);
    let o1: Vec<u64> = events
        .iter()
        .filter(|e| e.id == "o-1")
        .map(|e| e.version)
        .collect();
    assert_eq!(o1, vec![1, 2]);
    let submit = events
        .iter()
        .find(|e| e.id == "o-1" && e.version == 2)
        .unwrap();
    assert_eq!(submit.machine, "order");
    assert_eq!(submit.from.as_deref(), Some("draft"));
    assert_eq!(submit.to, "submitted");
    assert_eq!(submit.event.as_deref(), Some("submit"));
    assert_eq!(submit.key.as_deref(), Some("k"));
    assert_eq!(submit.payload, Some(json!({"n": 1})));
    assert_eq!(submit.actor.as_deref(), Some("al"));
    assert_eq!(outbox.pending(1).unwrap().len(), 1);
    assert_eq!(outbox.ack(&events[..2]).unwrap(), 2);
    assert_eq!(
        outbox.ack(&events[..2]).unwrap(),
        0,
        "acking twice is harmless"
    );
    assert_eq!(outbox.pending(10).unwrap(), events[2..].to_vec());
    assert_eq!(outbox.len().unwrap(), 1);
}

fn subscription_feeds_new_events(db: &TestDb) {
    let engine = engine(db);
    let orders = engine.machine::<OrderState>().unwrap();
    let mut subscription = engine.outbox().subscribe();
    let writer = {
        let orders = orders.clone();
        std::thread::spawn(move || {
            orders.create("o-1").unwrap();
            orders.fire("o-1", OrderEvent::Submit).unwrap();
        })
    };
    let first = subscription.next().unwrap().unwrap();
    let second = subscription
        .next_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    writer.join().unwrap();
    assert_eq!((first.id.as_str(), first.version), ("o-1", 1));
    assert_eq!((second.version, second.to.as_str()), (2, "submitted"));
    assert!(subscription
        .next_timeout(Duration::from_millis(50))
        .is_none());
}

fn expired_keys_are_forgotten_and_purged(db: &TestDb) {
    let engine = db.open(
        Engine::builder()
            .durability(Durability::Buffered)
            .key_retention(Duration::from_millis(300)),
    );
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    orders.create("o-2").unwrap();
    orders
        .apply("o-1", Request::fire(OrderEvent::Submit).key("old"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    // After expiry the key is free: another request may use it; the state rule
    // still protects a late retry of the original.
    let retry = orders
        .apply("o-1", Request::fire(OrderEvent::Submit).key("old"))
        .unwrap();
    assert!(retry.was_noop() && !retry.is_replay());
    std::thread::sleep(Duration::from_millis(400));
    orders
        .apply("o-2", Request::fire(OrderEvent::Submit).key("fresh"))
        .unwrap();
    // "old" (re-stored by the retry, now expired again) goes; "fresh" stays.
    assert_eq!(engine.purge_expired_keys().unwrap(), 1);
    let replay = orders
        .apply("o-2", Request::fire(OrderEvent::Submit).key("fresh"))
        .unwrap();
    assert!(replay.is_replay());
    assert_eq!(engine.purge_expired_keys().unwrap(), 0);
}

fn keys_are_scoped_to_one_machine(db: &TestDb) {
    let engine = engine(db);
    let orders = engine.machine::<OrderState>().unwrap();
    let doors = engine
        .register(
            MachineDef::new("door", "closed")
                .state("closed")
                .terminal_state("open")
                .transition("closed", "open", "open"),
        )
        .unwrap();
    orders.create("x").unwrap();
    doors.create("x").unwrap();
    orders
        .apply("x", Request::fire(OrderEvent::Submit).key("shared"))
        .unwrap();
    let opened = doors
        .apply("x", NamedRequest::fire("open").key("shared"))
        .unwrap();
    assert!(opened.applied && !opened.replay);
}

fn scoped_keys_of_two_clients_never_meet(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    for id in ["a-1", "b-1"] {
        orders.create(id).unwrap();
    }
    // Client A and client B both use the key "k-1", for different orders.
    let a = Request::fire(OrderEvent::Submit)
        .key("k-1")
        .scope("client-a");
    let b = Request::fire(OrderEvent::Submit)
        .key("k-1")
        .scope("client-b");
    assert!(orders.apply("a-1", a.clone()).unwrap().was_applied());
    let b_first = orders.apply("b-1", b.clone()).unwrap();
    assert!(b_first.was_applied() && !b_first.is_replay());
    // Each client's retry replays its own outcome.
    let a_retry = orders.apply("a-1", a).unwrap();
    assert!(a_retry.is_replay() && a_retry.id() == "a-1");
    assert!(orders.apply("b-1", b).unwrap().is_replay());
    // Reusing the key for another request within one scope is KeyReused, and
    // the error says nothing about the first request.
    let reused = orders
        .apply(
            "b-1",
            Request::fire(OrderEvent::Cancel)
                .key("k-1")
                .scope("client-a"),
        )
        .unwrap_err();
    assert!(matches!(reused, Error::KeyReused { ref key, .. } if key == "k-1"));
    assert!(!format!("{reused} {reused:?}").contains("a-1"));
    // An unscoped key is a scope of its own.
    orders.create("c-1").unwrap();
    assert!(!orders
        .apply("c-1", Request::fire(OrderEvent::Submit).key("k-1"))
        .unwrap()
        .is_replay());
    // A scope without a key means nothing: refused.
    assert!(matches!(
        orders.apply("c-1", Request::fire(OrderEvent::Pay).scope("client-a")),
        Err(Error::InvalidInput {
            field: InputField::Scope,
            ..
        })
    ));
}

fn definitions_are_stored_and_listed(db: &TestDb) {
    let engine = engine(db);
    engine.machine::<OrderState>().unwrap();
    let defs = engine.machines().unwrap();
    assert_eq!(defs, vec![OrderState::definition()]);
    let invalid = MachineDef::new("broken", "a").state("a").state("b");
    let error = engine.register(invalid).unwrap_err();
    assert!(matches!(error, Error::InvalidDefinition { ref problems, .. } if problems.len() == 3));
    assert_eq!(engine.machines().unwrap().len(), 1);
}

fn changed_definition_is_accepted_unless_it_drops_a_name_stored_data_uses(db: &TestDb) {
    let engine = engine(db);
    let v1 = MachineDef::new("ticket", "open")
        .state("open")
        .state("waiting")
        .terminal_state("closed")
        .transition("open", "wait", "waiting")
        .transition("waiting", "close", "closed")
        .transition("open", "close", "closed");
    let tickets = engine.register(v1).unwrap();
    tickets.create("t-1").unwrap();
    tickets.apply("t-1", NamedRequest::fire("wait")).unwrap();
    tickets.create("t-2").unwrap();
    tickets.apply("t-2", NamedRequest::fire("wait")).unwrap();

    let without_waiting = MachineDef::new("ticket", "open")
        .state("open")
        .terminal_state("closed")
        .transition("open", "close", "closed");
    let error = engine.register(without_waiting.clone()).unwrap_err();
    match &error {
        Error::DefinitionMismatch { machine, missing } => {
            assert_eq!(machine, "ticket");
            assert_eq!(missing.len(), 2, "{missing:?}");
            assert_eq!(
                (
                    missing[0].kind,
                    missing[0].name.as_str(),
                    missing[0].entities
                ),
                (NameKind::State, "waiting", 2)
            );
            assert_eq!(missing[0].in_history, 2);
            assert_eq!(
                (
                    missing[1].kind,
                    missing[1].name.as_str(),
                    missing[1].in_history
                ),
                (NameKind::Event, "wait", 2)
            );
        }
        other => panic!("expected DefinitionMismatch, got {other:?}"),
    }
    assert!(error
        .to_string()
        .contains("state \"waiting\" (2 entities in it"));

    // Adding a state is compatible.
    let v2 = MachineDef::new("ticket", "open")
        .state("open")
        .state("waiting")
        .state("escalated")
        .terminal_state("closed")
        .transition("open", "wait", "waiting")
        .transition("waiting", "close", "closed")
        .transition("waiting", "escalate", "escalated")
        .transition("escalated", "close", "closed")
        .transition("open", "close", "closed");
    let tickets = engine.register(v2.clone()).unwrap();
    assert_eq!(engine.machine_by_name("ticket").unwrap().definition(), v2);
    tickets
        .apply("t-1", NamedRequest::fire("escalate"))
        .unwrap();
    tickets.apply("t-2", NamedRequest::fire("close")).unwrap();
    tickets.apply("t-1", NamedRequest::fire("close")).unwrap();
    // No entity waits any more, but histories still name the state and its
    // event: removing them would make those histories unreadable.
    match engine.register(without_waiting.clone()).unwrap_err() {
        Error::DefinitionMismatch { missing, .. } => {
            let waiting = missing.iter().find(|m| m.name == "waiting").unwrap();
            assert_eq!((waiting.entities, waiting.in_history), (0, 2));
        }
        other => panic!("expected DefinitionMismatch, got {other:?}"),
    }
    // Declaring where the old names read is accepted.
    let merged = without_waiting
        .alias("open", "waiting")
        .alias("closed", "escalated")
        .event_alias("close", "wait")
        .event_alias("close", "escalate");
    let tickets = engine.register(merged).unwrap();
    assert_eq!(tickets.definition_version(), 3, "v1, v2, then the merge");
    let history = tickets.history("t-1").unwrap();
    assert!(
        history.iter().any(|entry| entry.to == "waiting"),
        "history keeps what was written"
    );
}

#[test]
fn engine_and_handles_are_send_sync_and_results_debug() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn debug<T: std::fmt::Debug>() {}
    send_sync::<Engine>();
    send_sync::<idemflow::Machine<OrderState>>();
    send_sync::<idemflow::NamedMachine>();
    send_sync::<idemflow::Outcome<OrderState>>();
    send_sync::<idemflow::Entity<OrderState>>();
    send_sync::<idemflow::HistoryEntry<OrderState>>();
    send_sync::<Error>();
    debug::<idemflow::Outcome<OrderState>>();
    debug::<idemflow::Entity<OrderState>>();
    debug::<idemflow::HistoryEntry<OrderState>>();
}

fn string_ids_work_by_reference(db: &TestDb) {
    let orders = engine(db).machine::<OrderState>().unwrap();
    let id = String::from("o-1");
    orders.create(&id).unwrap();
    assert!(orders.get(&id).unwrap().is_some());
}

backend_tests! {
    create_starts_at_version_one_and_is_idempotent,
    applied_transition_reports_from_state_and_event,
    reaching_a_reached_target_is_a_noop_that_writes_nothing,
    keyed_request_is_applied_once_and_replayed_after_the_entity_moved_on,
    a_keyed_noop_is_replayed_as_a_noop,
    same_key_with_another_request_is_key_reused,
    errors_are_never_stored_under_a_key,
    missing_entity_is_not_found,
    illegal_transitions_are_rejected_with_from_and_to,
    stale_expected_version_is_a_version_conflict,
    guards_reject_with_a_reason_and_write_nothing,
    input_limits_are_checked_before_anything_is_read_or_written,
    named_handle_rejects_unknown_names_as_invalid_input,
    state_index_answers_in_state_and_counts,
    outbox_holds_one_event_per_change_in_order_and_acks,
    subscription_feeds_new_events,
    expired_keys_are_forgotten_and_purged,
    keys_are_scoped_to_one_machine,
    scoped_keys_of_two_clients_never_meet,
    definitions_are_stored_and_listed,
    changed_definition_is_accepted_unless_it_drops_a_name_stored_data_uses,
    string_ids_work_by_reference,
}
