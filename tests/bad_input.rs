//! Bad input end to end through the library API (SPEC section 3 step 1 and
//! section 7): every malformed request gets a clear `InvalidInput` /
//! `UnknownMachine` / domain error, and leaves the database byte for byte as
//! it was. Also: purging expired idempotency keys removes exactly the expired
//! records and nothing else.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use idemflow::{
    Durability, Engine, EntityRecord, Error, HistoryRecord, InputField, Limits, MachineDef,
    NamedRequest, OutboxEvent, Request,
};
mod common;

use common::backend::TestDb;
use common::{door, retry_locked, OrderEvent, OrderState};
use serde_json::{json, Value};

/// Everything the API can read, for "nothing changed" comparisons.
#[derive(Debug, PartialEq)]
struct ApiDump {
    machines: Vec<MachineDef>,
    entities: BTreeMap<(String, String), (Option<EntityRecord>, Vec<HistoryRecord>)>,
    counts: BTreeMap<String, Vec<(String, u64)>>,
    outbox: Vec<OutboxEvent>,
    outbox_len: usize,
}

/// Ids that do not exist, probed too: reading them must keep answering "none".
const PROBES: [&str; 3] = ["missing", "k-new", "\u{1F600}"];

fn api_dump(engine: &Engine) -> ApiDump {
    let machines = engine.machines().unwrap();
    let mut entities = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for def in &machines {
        let named = engine.machine_by_name(&def.name).unwrap();
        let mut ids: Vec<String> = PROBES.iter().map(|id| id.to_string()).collect();
        for state in &def.states {
            ids.extend(named.in_state(&state.name, None, usize::MAX).unwrap());
        }
        for id in ids {
            let record = named.get(&id).unwrap();
            let history = named.history(&id).unwrap();
            entities.insert((def.name.clone(), id), (record, history));
        }
        counts.insert(def.name.clone(), named.count_by_state().unwrap());
    }
    ApiDump {
        machines,
        entities,
        counts,
        outbox: {
            engine.flush().unwrap();
            engine.outbox().pending(usize::MAX).unwrap()
        },
        outbox_len: engine.outbox().len().unwrap(),
    }
}

type RawDump = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Every key and value of every sled tree (the engine must be closed).
fn raw_dump(dir: &Path) -> RawDump {
    let db = retry_locked(|| common::open_sled(dir));
    let mut dump = BTreeMap::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let entries = tree
            .iter()
            .map(|item| {
                let (key, value) = item.unwrap();
                (key.to_vec(), value.to_vec())
            })
            .collect();
        dump.insert(name.to_vec(), entries);
    }
    dump
}

/// A database with two machines, histories, keys and outbox events.
fn populate(db: &TestDb) {
    let engine = db.open(Engine::builder().durability(Durability::Buffered));
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    orders
        .create_with("o-2", Some(json!({"note": "hi"})), Some("alice".into()))
        .unwrap();
    orders.fire("o-2", OrderEvent::Submit).unwrap();
    orders
        .apply(
            "o-2",
            Request::fire(OrderEvent::Pay)
                .key("pay-1")
                .payload(json!({"amount": 5})),
        )
        .unwrap();
    orders
        .apply("o-1", Request::to(OrderState::Draft).key("noop-1"))
        .unwrap();
    let doors = engine.register(door()).unwrap();
    doors.create("front").unwrap();
    doors
        .apply("front", NamedRequest::fire("open").key("d-1"))
        .unwrap();
    engine.flush().unwrap();
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Error>, expected: InputField) {
    match result {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, expected, "wrong field (reason: {reason})");
            assert!(!reason.is_empty());
            let message = Error::InvalidInput { field, reason }.to_string();
            assert!(message.starts_with("invalid "), "{message}");
        }
        other => panic!("expected InvalidInput({expected:?}), got {other:?}"),
    }
}

fn big_payload() -> Value {
    json!({ "blob": "x".repeat(64 * 1024) })
}

/// Every kind of bad request, through the named and typed handles.
fn send_bad_requests(engine: &Engine) {
    let orders = engine.machine::<OrderState>().unwrap();
    let named = engine.machine_by_name("order").unwrap();
    let long_id = "x".repeat(1025);
    let wide_id = "\u{e9}".repeat(513); // 513 chars, 1026 bytes: the limit is in bytes
    let long_key = "k".repeat(256);
    let long_actor = "a".repeat(1025);

    // Ids: empty, oversized (in bytes), on every operation that takes one.
    for id in ["", long_id.as_str(), wide_id.as_str()] {
        assert_invalid(named.create(id), InputField::Id);
        assert_invalid(orders.create(id), InputField::Id);
        assert_invalid(
            named.apply(id, NamedRequest::to("submitted")),
            InputField::Id,
        );
        assert_invalid(orders.fire(id, OrderEvent::Submit), InputField::Id);
        assert_invalid(named.get(id), InputField::Id);
        assert_invalid(named.history(id), InputField::Id);
    }
    // Keys.
    for key in ["", long_key.as_str()] {
        assert_invalid(
            named.apply("o-1", NamedRequest::to("submitted").key(key)),
            InputField::Key,
        );
        assert_invalid(
            orders.apply("o-1", Request::fire(OrderEvent::Submit).key(key)),
            InputField::Key,
        );
        // Step 1 comes before step 3: even a missing entity is an input error.
        assert_invalid(
            named.apply("missing", NamedRequest::to("submitted").key(key)),
            InputField::Key,
        );
    }
    // Payloads and actors.
    assert_invalid(
        named.apply("o-1", NamedRequest::to("submitted").payload(big_payload())),
        InputField::Payload,
    );
    assert_invalid(
        named.create_with("new", Some(big_payload()), None),
        InputField::Payload,
    );
    assert_invalid(
        named.apply(
            "o-1",
            NamedRequest::to("submitted").actor(long_actor.clone()),
        ),
        InputField::Actor,
    );
    assert_invalid(
        orders.create_with("new", None, Some(long_actor.clone())),
        InputField::Actor,
    );
    // Unknown and empty state and event names.
    assert_invalid(
        named.apply("o-1", NamedRequest::to("nowhere")),
        InputField::State,
    );
    assert_invalid(named.apply("o-1", NamedRequest::to("")), InputField::State);
    assert_invalid(
        named.apply("o-1", NamedRequest::to("Submitted")),
        InputField::State,
    );
    assert_invalid(
        named.apply("o-1", NamedRequest::fire("nope")),
        InputField::Event,
    );
    assert_invalid(
        named.apply("o-1", NamedRequest::fire("")),
        InputField::Event,
    );
    assert_invalid(
        named.apply("missing", NamedRequest::fire("nope").key("k-new")),
        InputField::Event,
    );
    // A state name of another machine.
    assert_invalid(
        named.apply("o-1", NamedRequest::to("open")),
        InputField::State,
    );
    assert_invalid(named.in_state("nowhere", None, 10), InputField::State);
    assert_invalid(named.guard_to("nowhere", |_| Ok(())), InputField::State);

    // Unknown machines.
    for name in ["nope", "", "ORDER", "order ", "definition/order"] {
        match engine.machine_by_name(name) {
            Err(Error::UnknownMachine { machine }) => assert_eq!(machine, name),
            other => panic!("machine_by_name({name:?}): expected UnknownMachine, got {other:?}"),
        }
    }
    // Invalid definitions, and one that would orphan stored entities.
    match engine.register(
        MachineDef::new("bad", "a")
            .state("a")
            .transition("a", "x", "a"),
    ) {
        Err(Error::InvalidDefinition { machine, problems }) => {
            assert_eq!(machine, "bad");
            assert!(
                problems.iter().any(|p| p.contains("self-loop")),
                "{problems:?}"
            );
        }
        other => panic!("expected InvalidDefinition, got {other:?}"),
    }
    assert!(matches!(
        engine.register(MachineDef::new("", "a").terminal_state("a")),
        Err(Error::InvalidDefinition { .. })
    ));
    let shrunk = MachineDef::new("order", "submitted")
        .state("submitted")
        .terminal_state("paid")
        .transition("submitted", "pay", "paid");
    match engine.register(shrunk) {
        Err(Error::DefinitionMismatch { machine, missing }) => {
            assert_eq!(machine, "order");
            let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["draft", "submit"], "{missing:?}");
            assert_eq!(missing[0].entities, 1);
        }
        other => panic!("expected DefinitionMismatch, got {other:?}"),
    }

    // Well-formed requests that fail: nothing is written, no key consumed.
    assert!(matches!(
        named.apply("missing", NamedRequest::to("submitted").key("k-new")),
        Err(Error::NotFound { ref machine, ref id }) if machine == "order" && id == "missing"
    ));
    assert!(matches!(
        named.apply("o-1", NamedRequest::to("shipped").key("k-new")),
        Err(Error::InvalidTransition { ref from, ref to, .. })
            if from == "draft" && to.as_deref() == Some("shipped")
    ));
    assert!(matches!(
        named.apply("o-1", NamedRequest::fire("ship").key("k-new")),
        Err(Error::InvalidTransition { ref event, to: None, .. }) if event.as_deref() == Some("ship")
    ));
    assert!(matches!(
        named.apply(
            "o-1",
            NamedRequest::to("submitted").expect_version(7).key("k-new")
        ),
        Err(Error::VersionConflict {
            expected: 7,
            actual: 1,
            ..
        })
    ));
    assert!(matches!(
        named.apply("o-1", NamedRequest::fire("pay").key("pay-1").payload(json!({"amount": 5}))),
        Err(Error::KeyReused { ref key, .. }) if key == "pay-1"
    ));
    named
        .guard_to("cancelled", |_| Err("cancellations are closed".to_owned()))
        .unwrap();
    match named.apply("o-1", NamedRequest::fire("cancel").key("k-new")) {
        Err(Error::GuardRejected {
            reason, from, to, ..
        }) => {
            assert_eq!((from.as_str(), to.as_str()), ("draft", "cancelled"));
            assert_eq!(reason, "cancellations are closed");
        }
        other => panic!("expected GuardRejected, got {other:?}"),
    }
}

/// The library part runs on both backends; the raw comparison of every
/// stored byte on sled only.
fn bad_requests_get_clear_errors_and_change_nothing(db: &TestDb) {
    populate(db);
    let raw_before = db.dir().map(|dir| raw_dump(&dir));
    let engine = db.open(Engine::builder().durability(Durability::Buffered));
    let before = api_dump(&engine);
    assert_eq!(before.outbox.len(), 6);
    send_bad_requests(&engine);
    let after = api_dump(&engine);
    assert_eq!(
        before, after,
        "a rejected request changed what the API reads"
    );
    drop(engine);
    if let (Some(raw_before), Some(dir)) = (raw_before, db.dir()) {
        let raw_after = raw_dump(&dir);
        assert_eq!(
            raw_before.keys().collect::<Vec<_>>(),
            raw_after.keys().collect::<Vec<_>>(),
            "a rejected request created or dropped a tree"
        );
        for (tree, entries) in &raw_before {
            assert_eq!(
                entries,
                &raw_after[tree],
                "a rejected request changed tree {}",
                String::from_utf8_lossy(tree)
            );
        }
    }

    // The keys that failed requests used are still free: a fresh request with
    // them is evaluated, not replayed or refused.
    let engine = db.open(Engine::builder().durability(Durability::Buffered));
    let named = engine.machine_by_name("order").unwrap();
    let fresh = named
        .apply("o-1", NamedRequest::fire("submit").key("k-new"))
        .unwrap();
    assert!(fresh.applied && !fresh.replay);
    assert_eq!((fresh.state.as_str(), fresh.version), ("submitted", 2));
}

fn limits_are_inclusive_and_configurable(db: &TestDb) {
    let engine = db.open(
        Engine::builder()
            .durability(Durability::Buffered)
            .limits(Limits {
                max_id_bytes: 8,
                max_key_bytes: 4,
                max_payload_bytes: 16,
                max_actor_bytes: 3,
                ..Limits::default()
            }),
    );
    let doors = engine.register(door()).unwrap();
    assert_invalid(doors.create("123456789"), InputField::Id);
    doors.create("12345678").unwrap();
    assert_invalid(
        doors.apply("12345678", NamedRequest::fire("open").key("12345")),
        InputField::Key,
    );
    // `"0123456789abcd"` is 16 bytes of JSON (accepted below); one more is 17.
    assert_invalid(
        doors.apply(
            "12345678",
            NamedRequest::fire("open").payload(json!("0123456789abcde")),
        ),
        InputField::Payload,
    );
    assert_invalid(
        doors.apply("12345678", NamedRequest::fire("open").actor("abcd")),
        InputField::Actor,
    );
    let opened = doors
        .apply(
            "12345678",
            NamedRequest::fire("open")
                .key("1234")
                .payload(json!("0123456789abcd"))
                .actor("abc"),
        )
        .unwrap();
    assert_eq!(opened.version, 2);
    assert_eq!(doors.history("12345678").unwrap().len(), 2);

    // The default payload limit is exactly 64 KiB of compact JSON.
    let engine = db
        .fresh("limits_default")
        .open(Engine::builder().durability(Durability::Buffered));
    let doors = engine.register(door()).unwrap();
    doors.create("d").unwrap();
    let exact = json!("x".repeat(64 * 1024 - 2));
    assert_eq!(serde_json::to_vec(&exact).unwrap().len(), 64 * 1024);
    doors
        .apply("d", NamedRequest::fire("open").payload(exact.clone()))
        .unwrap();
    assert_eq!(doors.history("d").unwrap()[1].payload, Some(exact));
    assert_invalid(
        doors.apply(
            "d",
            NamedRequest::fire("close").payload(json!("x".repeat(64 * 1024 - 1))),
        ),
        InputField::Payload,
    );
}

#[test]
fn a_zero_key_retention_is_refused() {
    assert_invalid(
        Engine::builder().key_retention(Duration::ZERO).temporary(),
        InputField::Config,
    );
}

#[test]
fn opening_a_file_as_a_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    match Engine::open(&file) {
        Err(Error::Storage { .. }) => {}
        other => panic!("expected a storage error, got {other:?}"),
    }
}

/// Odd but valid ids, keys and actors round-trip exactly.
fn odd_but_valid_text_round_trips(db: &TestDb) {
    let engine = db.open(Engine::builder().durability(Durability::Buffered));
    let doors = engine.register(door()).unwrap();
    let ids = [
        "a\0b",
        " ",
        "\u{1F600}\u{200D}\u{1F4BB}",
        "\u{FEFF}bom",
        "line\nbreak",
        "/../../etc/passwd",
        "x",
    ];
    let max_id = "y".repeat(1024);
    for id in ids.iter().copied().chain([max_id.as_str()]) {
        let created = doors.create(id).unwrap();
        assert!(created.applied, "{id:?}");
        let key = format!("key-{id}");
        let key = &key[..key.len().min(255)];
        let opened = doors
            .apply(id, NamedRequest::fire("open").key(key).actor(id))
            .unwrap();
        assert_eq!(opened.id, id);
        let replay = doors
            .apply(id, NamedRequest::fire("open").key(key).actor(id))
            .unwrap();
        assert!(replay.replay);
        let history = doors.history(id).unwrap();
        assert_eq!(history.len(), 2, "{id:?}");
        assert_eq!(history[1].key.as_deref(), Some(key));
        assert_eq!(history[1].actor.as_deref(), Some(id));
    }
    let mut open_ids = doors.in_state("open", None, usize::MAX).unwrap();
    open_ids.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    expected.push(max_id.clone());
    expected.sort();
    assert_eq!(open_ids, expected);
    // Ids that are prefixes of one another stay apart in the history and index.
    doors.create("ab").unwrap();
    doors.create("a").unwrap();
    assert_eq!(doors.history("a").unwrap().len(), 1);
    assert_eq!(doors.history("ab").unwrap().len(), 1);
    engine.flush().unwrap();
    let events = engine.outbox().pending(usize::MAX).unwrap();
    assert_eq!(events.len(), 2 * expected.len() + 2);
}

/// A payload is accepted only if it can be read back: a nested JSON value
/// that the engine stores but whose history and outbox event then fail to
/// decode would make the entity's history and the whole outbox unreadable.
fn a_deeply_nested_payload_is_refused_or_readable(db: &TestDb) {
    let engine = db.open(Engine::builder().durability(Durability::Buffered));
    let doors = engine.register(door()).unwrap();
    doors.create("d").unwrap();
    for depth in [100, 127, 128, 129, 200, 1000] {
        let mut payload = json!(1);
        for _ in 0..depth {
            payload = Value::Array(vec![payload]);
        }
        let id = format!("d-{depth}");
        match doors.create_with(&id, Some(payload.clone()), None) {
            Err(Error::InvalidInput {
                field: InputField::Payload,
                ..
            }) => {
                doors.create(&id).unwrap();
            }
            Ok(_) => {
                let history = doors.history(&id).unwrap_or_else(|error| {
                    panic!("depth {depth}: creation accepted but unreadable: {error}")
                });
                assert_eq!(history[0].payload.as_ref(), Some(&payload));
            }
            Err(other) => panic!("depth {depth}: unexpected {other:?}"),
        }
        match doors.apply(&id, NamedRequest::fire("open").payload(payload.clone())) {
            Err(Error::InvalidInput {
                field: InputField::Payload,
                ..
            }) => {}
            Ok(outcome) => {
                assert_eq!(outcome.version, 2);
                let history = doors.history(&id).unwrap_or_else(|error| {
                    panic!("depth {depth}: accepted but unreadable: {error}")
                });
                assert_eq!(history[1].payload.as_ref(), Some(&payload));
                engine
                    .outbox()
                    .pending(usize::MAX)
                    .unwrap_or_else(|error| panic!("depth {depth}: outbox unreadable: {error}"));
            }
            Err(other) => panic!("depth {depth}: unexpected {other:?}"),
        }
    }
}

/// Item 6 of the reliability issue: purging removes expired key records
/// (across several purge batches) and never a live one, nor anything else.
fn purge_removes_exactly_the_expired_key_records(db: &TestDb) {
    const EXPIRED: usize = 1100; // more than one purge batch (1024)
    const LIVE: usize = 60;
    {
        let engine = db.open(
            Engine::builder()
                .durability(Durability::Buffered)
                .key_retention(Duration::from_millis(300))
                .purge_interval(None),
        );
        let orders = engine.machine::<OrderState>().unwrap();
        orders.create("o-1").unwrap();
        orders.create("o-2").unwrap();
        orders
            .apply("o-2", Request::fire(OrderEvent::Submit).key("k-0000-a"))
            .unwrap();
        for i in 1..EXPIRED {
            // Keyed no-ops: each stores a key record and nothing else.
            orders
                .apply(
                    "o-1",
                    Request::to(OrderState::Draft).key(format!("k-{i:04}-a")),
                )
                .unwrap();
        }
        engine.flush().unwrap();
    }
    std::thread::sleep(Duration::from_millis(400));
    let engine = db.open(
        Engine::builder()
            .durability(Durability::Buffered)
            .purge_interval(None),
    );
    let orders = engine.machine::<OrderState>().unwrap();
    let mut live = Vec::new();
    for i in 0..LIVE {
        // Interleaved with the expired keys in key order, so that batches mix both.
        let key = format!("k-{:04}-b", i * 17);
        let outcome = orders
            .apply("o-1", Request::to(OrderState::Draft).key(key.clone()))
            .unwrap();
        live.push((key, outcome));
    }
    // An expired key is already treated as never seen, before any purge.
    let fresh = orders
        .apply("o-2", Request::to(OrderState::Shipped).key("k-0000-a"))
        .unwrap_err();
    assert!(
        matches!(fresh, Error::InvalidTransition { .. }),
        "an expired key must not be KeyReused: {fresh:?}"
    );

    let before = api_dump(&engine);
    assert_eq!(engine.purge_expired_keys().unwrap(), EXPIRED as u64);
    assert_eq!(engine.purge_expired_keys().unwrap(), 0);
    assert_eq!(
        api_dump(&engine),
        before,
        "purging touched something besides keys"
    );
    for (key, original) in &live {
        let replay = orders
            .apply("o-1", Request::to(OrderState::Draft).key(key.clone()))
            .unwrap();
        assert!(replay.is_replay(), "live key {key} was purged");
        assert_eq!(replay.version(), original.version());
        assert_eq!(replay.at(), original.at());
    }
    assert_eq!(orders.named().key_count().unwrap(), LIVE as u64);
    drop((orders, engine));
    let Some(dir) = db.dir() else {
        return;
    };
    let raw = raw_dump(&dir);
    let keys: Vec<String> = raw[b"keys/order".as_slice()]
        .keys()
        .map(|key| String::from_utf8(key.clone()).unwrap())
        .collect();
    let expected: Vec<String> = live.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(keys, expected, "the keys tree holds exactly the live keys");
}

backend_tests! {
    bad_requests_get_clear_errors_and_change_nothing,
    limits_are_inclusive_and_configurable,
    odd_but_valid_text_round_trips,
    a_deeply_nested_payload_is_refused_or_readable,
    purge_removes_exactly_the_expired_key_records,
}
