//! Corrupted stored data (SPEC section 6): a value or key that fails to
//! decode gives `Error::Corrupt` naming the tree and the key, never a panic,
//! and never breaks the other records.
//!
//! Each test builds a small database, closes the engine, damages one stored
//! value or key through sled directly, reopens the engine and reads and
//! writes through it.

use std::fmt::Debug;
use std::path::Path;

use idemflow::{Engine, Error, MachineDef, NamedMachine, NamedRequest, PendingEntry, Request};
mod common;

use common::{door, open, retry_locked, OrderEvent, OrderState};
use serde_json::json;

fn pay_a() -> Request<OrderState> {
    Request::fire(OrderEvent::Pay)
        .key("pay-a")
        .payload(json!({"amount": 7}))
        .actor("alice")
}

/// order: `a` paid (v3, keyed payment), `b` submitted (v2, keyed), `c` draft
/// (v1); door: `front` open (v2, keyed). Eight outbox events.
fn build(dir: &Path) {
    let engine = open(dir);
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("a").unwrap();
    orders.fire("a", OrderEvent::Submit).unwrap();
    orders.apply("a", pay_a()).unwrap();
    orders.create("b").unwrap();
    orders
        .apply("b", Request::fire(OrderEvent::Submit).key("sub-b"))
        .unwrap();
    orders.create("c").unwrap();
    let doors = engine.register(door()).unwrap();
    doors.create("front").unwrap();
    doors
        .apply("front", NamedRequest::fire("open").key("open-front"))
        .unwrap();
    engine.flush().unwrap();
}

/// Builds the database, runs `damage` on its sled trees, reopens the engine.
fn damaged(damage: impl FnOnce(&sled::Db)) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    {
        let db = retry_locked(|| common::open_sled(dir.path()));
        damage(&db);
        db.flush().unwrap();
    }
    let engine = open(dir.path());
    (dir, engine)
}

fn tree(db: &sled::Db, name: &str) -> sled::Tree {
    assert!(
        db.tree_names().iter().any(|n| n == name.as_bytes()),
        "no tree {name}"
    );
    db.open_tree(name).unwrap()
}

fn get(db: &sled::Db, tree_name: &str, key: &[u8]) -> Vec<u8> {
    tree(db, tree_name)
        .get(key)
        .unwrap()
        .unwrap_or_else(|| panic!("no key {key:?} in {tree_name}"))
        .to_vec()
}

fn put(db: &sled::Db, tree_name: &str, key: &[u8], value: &[u8]) {
    tree(db, tree_name).insert(key, value).unwrap();
}

/// The stored key of a history entry: u32 length, id, u64 version.
fn history_key(id: &str, version: u64) -> Vec<u8> {
    let mut key = (id.len() as u32).to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The stored key of a state-index entry: u32 length, state, id.
fn state_key(state: &str, id: &[u8]) -> Vec<u8> {
    let mut key = (state.len() as u32).to_be_bytes().to_vec();
    key.extend_from_slice(state.as_bytes());
    key.extend_from_slice(id);
    key
}

fn str_field(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text);
}

/// A well-formed entity value with any state name.
fn entity_value(state: &[u8], version: u64) -> Vec<u8> {
    let mut value = vec![1];
    str_field(&mut value, state);
    for field in [version, 1_000, 2_000] {
        value.extend_from_slice(&field.to_be_bytes());
    }
    value
}

/// The first outbox key (and value) whose key mentions `id`.
fn outbox_entry(db: &sled::Db, id: &str) -> (Vec<u8>, Vec<u8>) {
    tree(db, "outbox")
        .iter()
        .map(Result::unwrap)
        .find(|(key, _)| key.windows(id.len()).any(|w| w == id.as_bytes()))
        .map(|(key, value)| (key.to_vec(), value.to_vec()))
        .unwrap()
}

/// Asserts `Error::Corrupt` for `tree` whose printed key contains `key`;
/// returns the reason.
#[track_caller]
fn assert_corrupt<T: Debug>(result: idemflow::Result<T>, tree: &str, key: &str) -> String {
    match result {
        Err(Error::Corrupt {
            tree: found,
            key: found_key,
            reason,
        }) => {
            assert_eq!(found, tree, "wrong tree (key {found_key}, reason {reason})");
            assert!(
                found_key.contains(key),
                "the key {found_key} does not name {key:?} (tree {tree}, reason {reason})"
            );
            assert!(!reason.is_empty());
            reason
        }
        other => panic!("expected Corrupt in {tree} at {key}, got {other:?}"),
    }
}

fn orders(engine: &Engine) -> idemflow::Machine<OrderState> {
    engine.machine::<OrderState>().unwrap()
}

fn named(engine: &Engine) -> NamedMachine {
    engine.machine_by_name("order").unwrap()
}

/// The undamaged records keep working: reads, a transition, a creation, the
/// other machine.
#[track_caller]
fn others_work(engine: &Engine) {
    let orders = orders(engine);
    let c = orders.get("c").unwrap().unwrap();
    assert_eq!((c.state, c.version), (OrderState::Draft, 1));
    assert_eq!(orders.history("c").unwrap().len(), 1);
    let b = orders.get("b").unwrap().unwrap();
    assert_eq!((b.state, b.version), (OrderState::Submitted, 2));
    let replay = orders
        .apply("b", Request::fire(OrderEvent::Submit).key("sub-b"))
        .unwrap();
    assert!(replay.is_replay());
    let cancelled = orders.fire("c", OrderEvent::Cancel).unwrap();
    assert_eq!(cancelled.version(), 2);
    assert_eq!(orders.history("c").unwrap().len(), 2);
    let created = orders.create("d").unwrap();
    assert!(created.was_created());
    assert!(orders
        .in_state(OrderState::Draft)
        .unwrap()
        .contains(&"d".to_owned()));
    let doors = engine.machine_by_name("door").unwrap();
    let closed = doors.apply("front", NamedRequest::fire("close")).unwrap();
    assert_eq!(closed.version, 3);
    assert_eq!(doors.history("front").unwrap().len(), 3);
    assert_eq!(doors.in_state("closed", None, 10).unwrap(), ["front"]);
}

// ---- entities/<machine> ----

#[test]
fn entity_with_unknown_format_version() {
    for version_byte in [0u8, 2, 0xff] {
        let (_dir, engine) = damaged(|db| {
            let mut value = get(db, "entities/order", b"a");
            value[0] = version_byte;
            put(db, "entities/order", b"a", &value);
        });
        let reason = assert_corrupt(named(&engine).get("a"), "entities/order", "\"a\"");
        assert!(reason.contains("format version"), "{reason}");
        assert_corrupt(orders(&engine).get("a"), "entities/order", "\"a\"");
        assert_corrupt(
            orders(&engine).fire("a", OrderEvent::Ship),
            "entities/order",
            "\"a\"",
        );
        assert_corrupt(
            named(&engine).apply("a", NamedRequest::to("shipped").key("ship-a")),
            "entities/order",
            "\"a\"",
        );
        assert_corrupt(orders(&engine).create("a"), "entities/order", "\"a\"");
        // The entity's other records are intact and still readable.
        assert_eq!(orders(&engine).history("a").unwrap().len(), 3);
        assert!(orders(&engine)
            .in_state(OrderState::Paid)
            .unwrap()
            .contains(&"a".to_owned()));
        // A replay may be answered from the key record alone, or refused.
        match orders(&engine).apply("a", pay_a()) {
            Ok(replay) => assert!(replay.is_replay()),
            Err(error) => {
                assert_corrupt::<()>(Err(error), "entities/order", "\"a\"");
            }
        }
        others_work(&engine);
    }
}

#[test]
fn entity_value_truncated_extended_or_emptied() {
    let original = {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path());
        let db = retry_locked(|| common::open_sled(dir.path()));
        get(&db, "entities/order", b"a")
    };
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 1, 3, 5, 9, original.len() - 1] {
        variants.push((format!("cut to {cut}"), original[..cut].to_vec()));
    }
    let mut longer = original.clone();
    longer.push(0);
    variants.push(("one byte more".into(), longer));
    // A state length that runs past the end.
    let mut huge = original.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    variants.push(("huge length".into(), huge));
    // A state name that is not UTF-8.
    let mut not_utf8 = original.clone();
    not_utf8[5] = 0xff;
    variants.push(("state not UTF-8".into(), not_utf8));
    variants.push(("version 0".into(), entity_value(b"paid", 0)));
    for (what, value) in variants {
        let (_dir, engine) = damaged(|db| put(db, "entities/order", b"a", &value));
        let reason = assert_corrupt(named(&engine).get("a"), "entities/order", "\"a\"");
        assert!(!reason.is_empty(), "{what}");
        assert_corrupt(orders(&engine).get("a"), "entities/order", "\"a\"");
        assert_corrupt(
            orders(&engine).fire("a", OrderEvent::Ship),
            "entities/order",
            "\"a\"",
        );
        assert_corrupt(orders(&engine).create("a"), "entities/order", "\"a\"");
        others_work(&engine);
    }
}

/// A well-formed record whose state the machine does not have: the named
/// handle returns the record as stored, everything that must interpret the
/// state reports `Corrupt` naming the record.
#[test]
fn entity_in_a_state_the_machine_does_not_have() {
    let (_dir, engine) = damaged(|db| {
        put(db, "entities/order", b"a", &entity_value(b"limbo", 3));
    });
    let record = named(&engine).get("a").unwrap().unwrap();
    assert_eq!((record.state.as_str(), record.version), ("limbo", 3));
    assert_corrupt(
        named(&engine).apply("a", NamedRequest::fire("ship")),
        "entities/order",
        "\"a\"",
    );
    assert_corrupt(
        named(&engine).apply("a", NamedRequest::to("shipped").expect_version(3)),
        "entities/order",
        "\"a\"",
    );
    others_work(&engine);
}

/// The typed handle must name the record whose state it cannot interpret.
#[test]
fn typed_get_of_an_entity_in_an_unknown_state_names_the_entity() {
    let (_dir, engine) = damaged(|db| {
        put(db, "entities/order", b"a", &entity_value(b"limbo", 3));
    });
    assert_corrupt(orders(&engine).get("a"), "entities/order", "\"a\"");
}

/// Keys nothing can address through the API (a non-UTF-8 id) disturb nothing.
#[test]
fn entity_key_that_is_not_utf8() {
    let (_dir, engine) = damaged(|db| {
        put(
            db,
            "entities/order",
            b"\xff\xfe",
            &entity_value(b"draft", 1),
        );
        put(db, "entities/order", b"", &entity_value(b"draft", 1));
    });
    assert_eq!(orders(&engine).in_state(OrderState::Draft).unwrap(), ["c"]);
    others_work(&engine);
}

// ---- history/<machine> ----

#[test]
fn history_entry_with_unknown_format_version_or_garbage() {
    let key = history_key("a", 2);
    for value in [
        vec![2u8, 0, 0],
        vec![],
        vec![1],
        vec![1, 7, 7, 7],
        b"\x01\x00\x00\x00\x00\x04paid".to_vec(),
    ] {
        let (_dir, engine) = damaged(|db| put(db, "history/order", &key, &value));
        assert_corrupt(named(&engine).history("a"), "history/order", "a");
        assert_corrupt(orders(&engine).history("a"), "history/order", "a");
        // The record itself is intact: the entity still moves on.
        let shipped = orders(&engine).fire("a", OrderEvent::Ship).unwrap();
        assert_eq!(shipped.version(), 4);
        others_work(&engine);
    }
}

#[test]
fn history_payload_that_is_not_json() {
    let (_dir, engine) = damaged(|db| {
        let key = history_key("a", 3);
        let mut value = get(db, "history/order", &key);
        let last = value.len() - 1;
        value[last] = b'{'; // the JSON text loses its closing brace
        put(db, "history/order", &key, &value);
    });
    let reason = assert_corrupt(named(&engine).history("a"), "history/order", "a");
    assert!(reason.contains("payload"), "{reason}");
    others_work(&engine);
}

#[test]
fn history_key_of_the_wrong_shape() {
    let (_dir, engine) = damaged(|db| {
        let value = get(db, "history/order", &history_key("a", 1));
        let mut short = history_key("a", 0);
        short.truncate(short.len() - 5); // a version of three bytes
        put(db, "history/order", &short, &value);
    });
    assert_corrupt(named(&engine).history("a"), "history/order", "a");
    others_work(&engine);
}

/// A history entry naming a state or event the machine does not have: the
/// typed handle must say which tree and which entry.
#[test]
fn typed_history_with_an_unknown_state_names_the_history_entry() {
    let (_dir, engine) = damaged(|db| {
        let key = history_key("a", 2);
        let value = get(db, "history/order", &key);
        let text = String::from_utf8_lossy(&value).into_owned();
        assert!(text.contains("submitted"));
        // Same length, so the encoding stays well-formed.
        let patched: Vec<u8> = replace_bytes(&value, b"submitted", b"submarine");
        put(db, "history/order", &key, &patched);
    });
    let history = named(&engine).history("a").unwrap();
    assert_eq!(history[1].to, "submarine");
    assert_corrupt(orders(&engine).history("a"), "history/order", "a");
    others_work(&engine);
}

fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = haystack.to_vec();
    let at = out
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    out[at..at + from.len()].copy_from_slice(to);
    out
}

// ---- by_state/<machine> ----

#[test]
fn state_index_marker_with_unknown_format_version() {
    for marker in [vec![2u8], vec![], vec![1, 1]] {
        let (_dir, engine) = damaged(|db| {
            put(db, "by_state/order", &state_key("paid", b"a"), &marker);
        });
        assert_corrupt(
            orders(&engine).in_state(OrderState::Paid),
            "by_state/order",
            "a",
        );
        assert_corrupt(
            named(&engine).in_state("paid", None, 10),
            "by_state/order",
            "a",
        );
        // Other states, counts and the entity itself are unaffected.
        assert_eq!(
            orders(&engine).in_state(OrderState::Submitted).unwrap(),
            ["b"]
        );
        let counts = named(&engine).count_by_state().unwrap();
        assert!(counts.contains(&("paid".to_owned(), 1)), "{counts:?}");
        assert_eq!(
            orders(&engine)
                .fire("a", OrderEvent::Ship)
                .unwrap()
                .version(),
            4
        );
        assert_eq!(
            orders(&engine).in_state(OrderState::Shipped).unwrap(),
            ["a"]
        );
        others_work(&engine);
    }
}

#[test]
fn state_index_key_with_an_id_that_is_not_utf8() {
    let (_dir, engine) = damaged(|db| {
        put(db, "by_state/order", &state_key("draft", b"z\xff"), &[1]);
        // Keys outside every state's prefix are never read.
        put(db, "by_state/order", b"\xff\xff\xff", &[1]);
        put(db, "by_state/order", b"", &[9]);
    });
    assert_corrupt(
        orders(&engine).in_state(OrderState::Draft),
        "by_state/order",
        "z\\xff",
    );
    // Paging past the bad key works.
    assert_eq!(
        named(&engine).in_state("draft", None, 1).unwrap(),
        ["c"],
        "the page before the bad key"
    );
    assert_eq!(orders(&engine).in_state(OrderState::Paid).unwrap(), ["a"]);
    let b = orders(&engine).get("b").unwrap().unwrap();
    assert_eq!(b.state, OrderState::Submitted);
}

// ---- keys/<machine> ----

#[test]
fn key_record_with_unknown_format_version_or_truncated() {
    for damage in 0..4 {
        let (_dir, engine) = damaged(|db| {
            let mut value = get(db, "keys/order", b"pay-a");
            match damage {
                0 => value[0] = 2,
                1 => value.truncate(20), // inside the fingerprint
                2 => value.truncate(value.len() - 1),
                _ => value.push(0),
            }
            put(db, "keys/order", b"pay-a", &value);
        });
        assert_corrupt(orders(&engine).apply("a", pay_a()), "keys/order", "pay-a");
        // A different request with the damaged key: the key record must be
        // read to know, so it is Corrupt too, never silently applied.
        assert_corrupt(
            orders(&engine).apply("a", Request::fire(OrderEvent::Ship).key("pay-a")),
            "keys/order",
            "pay-a",
        );
        // Purging goes by the expiry index: a live key's record is not read,
        // and nothing is purged.
        assert_eq!(engine.purge_expired_keys().unwrap(), 0);
        // Requests without that key are unaffected.
        assert_eq!(
            orders(&engine)
                .fire("a", OrderEvent::Ship)
                .unwrap()
                .version(),
            4
        );
        others_work(&engine);
    }
}

/// A replayed outcome naming a state the machine does not have: the typed
/// handle must name the key record.
#[test]
fn typed_replay_of_a_key_record_with_an_unknown_state_names_the_key() {
    let (_dir, engine) = damaged(|db| {
        let value = get(db, "keys/order", b"sub-b");
        put(
            db,
            "keys/order",
            b"sub-b",
            &replace_bytes(&value, b"submitted", b"submarine"),
        );
    });
    let named_replay = named(&engine)
        .apply("b", NamedRequest::fire("submit").key("sub-b"))
        .unwrap();
    assert_eq!(named_replay.state, "submarine");
    assert_corrupt(
        orders(&engine).apply("b", Request::fire(OrderEvent::Submit).key("sub-b")),
        "keys/order",
        "sub-b",
    );
}

// ---- outbox ----

/// The outbox reports the damaged entry of "front" by position without
/// blocking the others: `pending` skips it, `pending_entries` names it, and it
/// can be quarantined or acknowledged by its position.
fn assert_outbox_reports_and_skips(engine: &Engine, total: usize) {
    let outbox = engine.outbox();
    let events = outbox.pending(usize::MAX).unwrap();
    assert_eq!(events.len(), total - 1, "every other event is delivered");
    assert!(events
        .iter()
        .all(|event| event.id != "front" || event.version != 1));
    let entries = outbox.pending_entries(usize::MAX).unwrap();
    assert_eq!(entries.len(), total);
    let damaged: Vec<_> = entries
        .into_iter()
        .filter_map(|entry| match entry {
            PendingEntry::Undecodable { position, error } => Some((position, error)),
            PendingEntry::Event(_) => None,
        })
        .collect();
    assert_eq!(damaged.len(), 1, "exactly the damaged entry is reported");
    let (position, error) = damaged.into_iter().next().unwrap();
    assert_corrupt::<()>(Err(error), "outbox", "");
    assert!(outbox.quarantine(position).unwrap());
    assert!(!outbox.quarantine(position).unwrap(), "moved once");
    assert_eq!(outbox.pending_entries(usize::MAX).unwrap().len(), total - 1);
    assert_eq!(outbox.ack_positions(&[position]).unwrap(), 0);
}

#[test]
fn outbox_event_with_unknown_format_version() {
    let (_dir, engine) = damaged(|db| {
        let (key, mut value) = outbox_entry(db, "front");
        value[0] = 3;
        put(db, "outbox", &key, &value);
    });
    assert_eq!(engine.outbox().len().unwrap(), 8);
    let entries = engine.outbox().pending_entries(usize::MAX).unwrap();
    let reason = entries
        .into_iter()
        .find_map(|entry| match entry {
            PendingEntry::Undecodable { error, .. } => {
                Some(assert_corrupt::<()>(Err(error), "outbox", "front"))
            }
            PendingEntry::Event(_) => None,
        })
        .expect("the damaged entry is reported");
    assert!(reason.contains("format version 3"), "{reason}");
    assert_outbox_reports_and_skips(&engine, 8);
    // Everything else works, and new events are still written.
    others_work(&engine);
    assert_eq!(engine.outbox().len().unwrap(), 10);
}

#[test]
fn outbox_key_or_value_of_the_wrong_shape() {
    for damage in 0..3 {
        let (_dir, engine) = damaged(|db| {
            let (key, value) = outbox_entry(db, "front");
            match damage {
                0 => {
                    let mut short = key.clone();
                    short.truncate(key.len() - 3);
                    put(db, "outbox", &short, &value);
                    tree(db, "outbox").remove(&key).unwrap();
                }
                1 => put(db, "outbox", &key, &value[..value.len() / 2]),
                _ => {
                    let mut bad = key.clone();
                    bad[12] = 0xff; // inside the machine name "door"
                    put(db, "outbox", &bad, &value);
                    tree(db, "outbox").remove(&key).unwrap();
                }
            }
        });
        assert_outbox_reports_and_skips(&engine, 8);
        others_work(&engine);
    }
}

// ---- meta ----

#[test]
fn definition_with_unknown_format_version_or_bad_json() {
    for damage in 0..4 {
        let (_dir, engine) = damaged(|db| {
            let mut value = get(db, "meta", b"definition/order");
            match damage {
                0 => value[0] = 2,
                1 => value.truncate(value.len() / 2),
                2 => value = vec![],
                _ => value = b"\x01{\"name\":42}".to_vec(),
            }
            put(db, "meta", b"definition/order", &value);
        });
        assert_corrupt(engine.machines(), "meta", "definition/order");
        assert_corrupt(engine.machine_by_name("order"), "meta", "definition/order");
        assert_corrupt(engine.machine::<OrderState>(), "meta", "definition/order");
        // Purging goes by the key trees, not the definitions.
        assert_eq!(engine.purge_expired_keys().unwrap(), 0);
        // The other machine is unaffected.
        let doors = engine.machine_by_name("door").unwrap();
        assert_eq!(
            doors
                .apply("front", NamedRequest::fire("close"))
                .unwrap()
                .version,
            3
        );
        engine.flush().unwrap();
        assert_eq!(engine.outbox().pending(usize::MAX).unwrap().len(), 9);
    }
}

#[test]
fn definition_key_that_is_not_utf8() {
    let (_dir, engine) = damaged(|db| {
        put(db, "meta", b"definition/\xff", b"\x01not json");
    });
    assert_corrupt(engine.machines(), "meta", "definition/\\xff");
    others_work(&engine);
}

/// A stored definition that decodes but breaks the machine rules is refused
/// with an error, not used and not a panic.
#[test]
fn definition_that_decodes_but_is_invalid() {
    let (_dir, engine) = damaged(|db| {
        let bad = MachineDef::new("order", "draft")
            .state("draft")
            .transition("draft", "loop", "draft");
        let mut value = vec![1];
        value.extend(serde_json::to_vec(&bad).unwrap());
        put(db, "meta", b"definition/order", &value);
    });
    match engine.machine_by_name("order") {
        Err(Error::Corrupt { tree, .. }) => assert_eq!(tree, "meta"),
        Err(Error::InvalidDefinition { machine, .. }) => assert_eq!(machine, "order"),
        other => panic!("expected Corrupt or InvalidDefinition, got {other:?}"),
    }
    let doors = engine.machine_by_name("door").unwrap();
    assert_eq!(doors.get("front").unwrap().unwrap().version, 2);
}
