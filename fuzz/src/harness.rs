//! The fuzz harnesses of idemflow, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and their bounded proptest runs in
//! `tests/fuzz_props.rs` (which includes this file with `#[path]`).
//!
//! Both read their input as a stream of bytes that steers what they do, so
//! every input is meaningful and libFuzzer's mutations stay productive:
//!
//! - [`stored_values`]: damages the stored values and keys of a small
//!   database through sled (replaced, flipped, truncated, renamed, added),
//!   then reads and writes through the engine. Every answer must be `Ok`, a
//!   domain error, or `Error::Corrupt`; never a panic.
//! - [`named_requests`]: untrusted text everywhere (machine, state and event
//!   names, ids, keys, actors, JSON payloads, odd UTF-8, huge strings) through
//!   `Engine::register`, `machine_by_name` and `NamedMachine`. Every answer
//!   must be `Ok` or the error the input deserves; what succeeded must keep
//!   the invariants (version == history length, keyed requests replay).
//!
//! Uses only idemflow, sled, tempfile and serde_json.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use idemflow::{
    Durability, Engine, Error, InputField, MachineDef, NamedMachine, NamedRequest, Request,
    StateMachine,
};
use serde_json::{json, Value};

/// An order's lifecycle: the typed machine of the stored-values database.
#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
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

/// A machine known only by name.
pub fn door() -> MachineDef {
    MachineDef::new("door", "closed")
        .state("closed")
        .state("open")
        .terminal_state("removed")
        .transition("closed", "open", "open")
        .transition("open", "close", "closed")
        .transition("closed", "remove", "removed")
}

/// Reads the input a byte at a time; zeros once it is used up.
pub struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    pub fn byte(&mut self) -> u8 {
        let byte = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.byte() as usize % n
        }
    }

    pub fn chance(&mut self, in_256: u8) -> bool {
        self.byte() < in_256
    }

    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        self.at = self.at.saturating_add(len);
        &self.data[start..end]
    }

    pub fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.below(items.len())]
    }

    /// Some text: a known name, raw bytes as UTF-8 (lossy), odd Unicode,
    /// empty, or a string right at or past a limit.
    pub fn text(&mut self, known: &[&str]) -> String {
        match self.byte() % 10 {
            0 => String::new(),
            1 | 2 => {
                let len = self.below(24);
                String::from_utf8_lossy(self.take(len)).into_owned()
            }
            3 => self
                .pick(&[
                    "\0",
                    "\u{FEFF}",
                    "\u{e9}",
                    "\u{1F600}",
                    "\u{10FFFF}",
                    "a\nb",
                    "/",
                    "..",
                    " ",
                    "definition/order",
                    "entities/door",
                    "\u{202E}rtl",
                    "A",
                ])
                .to_string(),
            4 => {
                let len = *self.pick(&[255usize, 256, 1023, 1024, 1025, 4096, 65_536, 70_000]);
                let unit = *self.pick(&["x", "\u{e9}", "\u{1F600}"]);
                unit.repeat(len / unit.len())
            }
            5 => {
                let base = self.pick(known).to_string();
                let len = self.below(4);
                base + &String::from_utf8_lossy(self.take(len))
            }
            _ => self.pick(known).to_string(),
        }
    }
}

/// Errors a well-formed request may get from an undamaged database.
fn request_error(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidInput { .. }
            | Error::NotFound { .. }
            | Error::InvalidTransition { .. }
            | Error::VersionConflict { .. }
            | Error::KeyReused { .. }
            | Error::GuardRejected { .. }
    )
}

/// The error `check` accepts, or a panic naming the call.
#[track_caller]
fn allowed<T: std::fmt::Debug>(
    what: &str,
    result: idemflow::Result<T>,
    ok: impl Fn(&Error) -> bool,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            assert!(ok(&error), "{what}: unexpected error {error:?} / {error}");
            if let Error::Corrupt { tree, reason, .. } = &error {
                assert!(!tree.is_empty() && !reason.is_empty(), "{what}: {error:?}");
            }
            // Every message is plain text.
            assert!(!error.to_string().is_empty());
            None
        }
    }
}

fn corrupt(error: &Error) -> bool {
    matches!(error, Error::Corrupt { .. })
}

fn corrupt_or_request(error: &Error) -> bool {
    corrupt(error) || request_error(error)
}

/// Errors of opening a machine whose stored definition may be damaged.
fn definition_error(error: &Error) -> bool {
    matches!(
        error,
        Error::Corrupt { .. }
            | Error::InvalidDefinition { .. }
            | Error::DefinitionMismatch { .. }
            | Error::UnknownMachine { .. }
    )
}

// ------------------------------------------------------------ stored values

/// Where the throw-away databases go: memory when the machine has it.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("idemflow-fuzz")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// Every tree of a database: name, then its keys and values in order.
type Dump = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

/// The small database every stored-values case starts from, built once and
/// kept in memory (a directory kept in a static would outlive the process).
fn template() -> &'static Dump {
    static TEMPLATE: OnceLock<Dump> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = scratch_dir();
        let path = dir.path().join("db");
        {
            let engine = Engine::builder()
                .durability(Durability::Buffered)
                .open(&path)
                .unwrap();
            let orders = engine.machine::<OrderState>().unwrap();
            orders.create("a").unwrap();
            orders.fire("a", OrderEvent::Submit).unwrap();
            orders
                .apply(
                    "a",
                    Request::fire(OrderEvent::Pay)
                        .key("pay-a")
                        .payload(json!({"amount": 7, "tags": ["x", null]}))
                        .actor("alice"),
                )
                .unwrap();
            orders.create("b").unwrap();
            orders
                .apply("b", Request::fire(OrderEvent::Submit).key("sub-b"))
                .unwrap();
            orders.create("c").unwrap();
            orders
                .apply("c", Request::to(OrderState::Draft).key("noop-c"))
                .unwrap();
            let doors = engine.register(door()).unwrap();
            doors.create("front").unwrap();
            doors
                .apply("front", NamedRequest::fire("open").key("open-front"))
                .unwrap();
            engine.flush().unwrap();
        }
        let db = retry_locked(|| open_sled(&path));
        db.tree_names()
            .into_iter()
            .map(|name| {
                let tree = db.open_tree(&name).unwrap();
                let entries = tree
                    .iter()
                    .map(|item| {
                        let (key, value) = item.unwrap();
                        (key.to_vec(), value.to_vec())
                    })
                    .collect();
                (name.to_vec(), entries)
            })
            .collect()
    })
}

/// Runs `open` until it stops failing with a lock error (for up to 60 s).
///
/// sled releases the directory lock from background threads a moment after
/// the last handle is dropped (sled issue #1289): a reopen in the same
/// process right after a close may be refused. Waits over a second are
/// reported on stderr.
fn retry_locked<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    let started = std::time::Instant::now();
    loop {
        match open() {
            Ok(value) => {
                if started.elapsed() > std::time::Duration::from_secs(1) {
                    eprintln!(
                        "harness: waited {:?} for sled to release its lock",
                        started.elapsed()
                    );
                }
                return value;
            }
            Err(error)
                if format!("{error:?}").to_lowercase().contains("lock")
                    && started.elapsed() < std::time::Duration::from_secs(60) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!(
                "opening the database (after {:?}): {error:?}",
                started.elapsed()
            ),
        }
    }
}

const TREES: [&str; 10] = [
    "entities/order",
    "history/order",
    "by_state/order",
    "keys/order",
    "outbox",
    "meta",
    "entities/door",
    "history/door",
    "keys/door",
    "by_state/door",
];

/// Damages up to four stored values or keys as `input` says.
fn damage(db: &sled::Db, input: &mut Input<'_>) -> Vec<String> {
    let mut done = Vec::new();
    for _ in 0..1 + input.below(4) {
        if input.is_empty() && !done.is_empty() {
            break;
        }
        let name = *input.pick(&TREES);
        let tree = db.open_tree(name).unwrap();
        let entries: Vec<(sled::IVec, sled::IVec)> = tree.iter().map(Result::unwrap).collect();
        let mode = input.below(7);
        if entries.is_empty() || mode == 6 {
            // A new key, anything as its value.
            let key_len = input.below(24);
            let key = input.take(key_len).to_vec();
            let value_len = input.below(48);
            let value = input.take(value_len).to_vec();
            tree.insert(&key, value).unwrap();
            done.push(format!("{name}: new key {key:?}"));
            continue;
        }
        let (key, value) = input.pick(&entries).clone();
        let mut new_value = value.to_vec();
        match mode {
            0 => {
                // Replace the value.
                let len = input.below(64);
                new_value = input.take(len).to_vec();
            }
            1 | 2 => {
                // Flip bits.
                for _ in 0..1 + input.below(3) {
                    if !new_value.is_empty() {
                        let at = input.below(new_value.len());
                        new_value[at] ^= input.byte().max(1);
                    }
                }
            }
            3 => {
                let keep = input.below(new_value.len() + 1);
                new_value.truncate(keep);
            }
            4 => {
                let len = input.below(8);
                new_value.extend_from_slice(input.take(len));
            }
            _ => {
                // Rename: the value moves to a damaged key.
                let mut new_key = key.to_vec();
                match input.below(3) {
                    0 if !new_key.is_empty() => {
                        let at = input.below(new_key.len());
                        new_key[at] ^= input.byte().max(1);
                    }
                    1 => {
                        let keep = input.below(new_key.len() + 1);
                        new_key.truncate(keep);
                    }
                    _ => new_key.push(input.byte()),
                }
                tree.remove(&key).unwrap();
                tree.insert(&new_key, value).unwrap();
                done.push(format!("{name}: key {key:?} renamed to {new_key:?}"));
                continue;
            }
        }
        tree.insert(&key, new_value.clone()).unwrap();
        done.push(format!("{name}: value of {key:?} now {new_value:?}"));
    }
    done
}

/// Reads and writes everything through the engine; every answer must be
/// `Ok`, an error the call may give, or `Corrupt`.
fn exercise_damaged(engine: &Engine) {
    allowed("machines", engine.machines(), corrupt);
    allowed(
        "outbox pending",
        engine.outbox().pending(usize::MAX),
        corrupt,
    );
    allowed("outbox len", engine.outbox().len(), |_| false);
    let ids = ["a", "b", "c", "d", "front", "back"];
    for name in ["order", "door", "nope"] {
        let Some(machine) = allowed(
            &format!("machine_by_name({name})"),
            engine.machine_by_name(name),
            definition_error,
        ) else {
            continue;
        };
        let def = machine.definition().clone();
        for id in ids {
            allowed(&format!("{name} get {id}"), machine.get(id), corrupt);
            allowed(
                &format!("{name} history {id}"),
                machine.history(id),
                corrupt,
            );
        }
        for state in &def.states {
            allowed(
                &format!("{name} in_state {}", state.name),
                machine.in_state(&state.name, None, usize::MAX),
                corrupt,
            );
        }
        allowed(&format!("{name} count"), machine.count_by_state(), corrupt);
        for id in ids {
            for event in def.events() {
                allowed(
                    &format!("{name} {id} fire {event}"),
                    machine.apply(id, NamedRequest::fire(event)),
                    corrupt_or_request,
                );
            }
        }
        for key in ["pay-a", "sub-b", "noop-c", "open-front", "fresh"] {
            for id in ids {
                allowed(
                    &format!("{name} {id} keyed {key}"),
                    machine.apply(id, NamedRequest::fire("submit").key(key)),
                    corrupt_or_request,
                );
            }
        }
        allowed(
            &format!("{name} create"),
            machine.create("e"),
            corrupt_or_request,
        );
    }
    if let Some(orders) = allowed(
        "machine::<OrderState>",
        engine.machine::<OrderState>(),
        definition_error,
    ) {
        for id in ids {
            allowed(&format!("typed get {id}"), orders.get(id), corrupt);
            allowed(&format!("typed history {id}"), orders.history(id), corrupt);
        }
        for state in OrderState::states() {
            allowed("typed in_state", orders.in_state(*state), corrupt);
        }
        allowed("typed count", orders.count_by_state(), corrupt);
        allowed(
            "typed replay",
            orders.apply(
                "a",
                Request::fire(OrderEvent::Pay)
                    .key("pay-a")
                    .payload(json!({"amount": 7, "tags": ["x", null]}))
                    .actor("alice"),
            ),
            corrupt_or_request,
        );
        allowed(
            "typed replay",
            orders.apply("b", Request::fire(OrderEvent::Submit).key("sub-b")),
            corrupt_or_request,
        );
    }
    allowed("purge", engine.purge_expired_keys(), corrupt);
    allowed("outbox pending", engine.outbox().pending(3), corrupt);
}

/// The `stored_values` harness: damage, reopen, read and write.
pub fn stored_values(data: &[u8]) {
    let template = template();
    let dir = scratch_dir();
    let path = dir.path().join("db");
    let mut input = Input::new(data);
    let damage_done = {
        let db = sled::open(&path).unwrap();
        for (name, entries) in template {
            let tree = db.open_tree(name).unwrap();
            for (key, value) in entries {
                tree.insert(key.as_slice(), value.as_slice()).unwrap();
            }
        }
        let done = damage(&db, &mut input);
        db.flush().unwrap();
        done
    };
    let engine = retry_locked(|| {
        Engine::builder()
            .durability(Durability::Buffered)
            .open(&path)
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exercise_damaged(&engine);
    }));
    if let Err(panic) = result {
        eprintln!("stored_values: the damage was {damage_done:#?}");
        std::panic::resume_unwind(panic);
    }
}

// ------------------------------------------------------------ named requests

/// How often `named_requests` reached each kind of success, so a bounded run
/// can check that the harness gets past input validation.
pub mod reached {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static REGISTERED: AtomicU64 = AtomicU64::new(0);
    pub static CREATED: AtomicU64 = AtomicU64::new(0);
    pub static APPLIED: AtomicU64 = AtomicU64::new(0);
    pub static NO_OPS: AtomicU64 = AtomicU64::new(0);
    pub static REPLAYED: AtomicU64 = AtomicU64::new(0);
    pub static REFUSED: AtomicU64 = AtomicU64::new(0);

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

const NAMES: [&str; 16] = [
    "door", "closed", "open", "removed", "close", "remove", "lamp", "on", "off", "switch", "a",
    "b", "k-1", "k-2", "front", "x",
];

/// The engine `named_requests` works on, shared between calls (and
/// replaced every few hundred calls so it stays small).
fn shared_engine() -> Engine {
    static ENGINE: Mutex<Option<(Engine, u32)>> = Mutex::new(None);
    let mut slot = ENGINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((engine, uses)) = slot.as_mut() {
        if *uses < 300 {
            *uses += 1;
            return engine.clone();
        }
    }
    let engine = Engine::builder()
        .durability(Durability::Buffered)
        .flush_every_ms(None)
        .cache_capacity(16 * 1024 * 1024)
        .temporary()
        .unwrap();
    engine.register(door()).unwrap();
    *slot = Some((engine.clone(), 0));
    engine
}

fn payload(input: &mut Input<'_>) -> Option<Value> {
    match input.below(5) {
        0 => Some(json!({"n": input.byte(), "s": input.text(&NAMES)})),
        1 => {
            let len = input.below(64);
            let text = String::from_utf8_lossy(input.take(len)).into_owned();
            Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        2 => {
            // Nested, but within what serde_json reads back (depth < 128).
            let mut value = json!(input.byte());
            for _ in 0..input.below(100) {
                value = if input.chance(128) {
                    Value::Array(vec![value])
                } else {
                    json!({ "k": value })
                };
            }
            Some(value)
        }
        3 => Some(json!(input.text(&NAMES))),
        _ => None,
    }
}

fn definition(input: &mut Input<'_>) -> MachineDef {
    let name = input.text(&NAMES);
    let mut states: Vec<String> = (0..1 + input.below(4))
        .map(|_| input.text(&NAMES))
        .collect();
    if input.chance(200) {
        states.dedup();
    }
    let initial = if input.chance(220) {
        states[0].clone()
    } else {
        input.text(&NAMES)
    };
    let mut def = MachineDef::new(name, initial);
    let terminal: Vec<bool> = states.iter().map(|_| input.chance(80)).collect();
    for (state, terminal) in states.iter().zip(&terminal) {
        def = if *terminal {
            def.terminal_state(state.clone())
        } else {
            def.state(state.clone())
        };
    }
    for _ in 0..input.below(6) {
        let from = if input.chance(230) {
            input.pick(&states).clone()
        } else {
            input.text(&NAMES)
        };
        let to = if input.chance(230) {
            input.pick(&states).clone()
        } else {
            input.text(&NAMES)
        };
        def = def.transition(from, input.text(&NAMES), to);
    }
    def
}

fn request(input: &mut Input<'_>, def: &MachineDef) -> NamedRequest {
    let mut states: Vec<&str> = def.states.iter().map(|s| s.name.as_str()).collect();
    states.extend(NAMES);
    let events = def.events();
    let mut request = if input.chance(128) {
        let name = if input.chance(200) {
            input.pick(&states).to_string()
        } else {
            input.text(&NAMES)
        };
        NamedRequest::to(name)
    } else {
        let name = if input.chance(200) && !events.is_empty() {
            input.pick(&events).to_string()
        } else {
            input.text(&NAMES)
        };
        NamedRequest::fire(name)
    };
    if input.chance(100) {
        request = request.key(input.text(&["k-1", "k-2", "k-3"]));
    }
    if input.chance(40) {
        request = request.expect_version(input.below(5) as u64);
    }
    if let Some(payload) = payload(input) {
        request = request.payload(payload);
    }
    if input.chance(60) {
        request = request.actor(input.text(&["alice", "bob"]));
    }
    request
}

fn id(input: &mut Input<'_>) -> String {
    input.text(&["a", "b", "c", "front", "x"])
}

/// What the default limits say about an id / key.
fn bad_len(text: &str, max: usize) -> bool {
    text.is_empty() || text.len() > max
}

/// Checks what must hold for an entity after any successful call.
fn check_entity(machine: &NamedMachine, id: &str) {
    let record = machine.get(id).unwrap();
    let history = machine.history(id).unwrap();
    match record {
        None => assert!(history.is_empty(), "{id:?}: history without a record"),
        Some(record) => {
            assert_eq!(
                record.version,
                history.len() as u64,
                "{id:?}: version != history"
            );
            assert_eq!(
                history.last().unwrap().to,
                record.state,
                "{id:?}: last entry"
            );
            assert!(machine.definition().has_state(&record.state));
        }
    }
}

/// The `named_requests` harness: untrusted text through the name-based API.
pub fn named_requests(data: &[u8]) {
    let engine = shared_engine();
    let mut input = Input::new(data);
    // Handles are fetched afresh for each call: a handle keeps the rules it
    // was made with, and a compatible re-registration may change them.
    let mut machines: Vec<String> = vec!["door".to_owned()];
    for _ in 0..48 {
        if input.is_empty() {
            break;
        }
        let name = input.pick(&machines).clone();
        let machine = engine.machine_by_name(&name).unwrap();
        match input.below(10) {
            0 => {
                let def = definition(&mut input);
                let valid = def.validate().is_ok();
                let result = engine.register(def.clone());
                if let Some(registered) = allowed("register", result, |error| {
                    matches!(
                        error,
                        Error::InvalidDefinition { .. } | Error::DefinitionMismatch { .. }
                    )
                }) {
                    assert!(valid, "an invalid definition was registered: {def:?}");
                    reached::bump(&reached::REGISTERED);
                    assert_eq!(registered.definition(), def);
                    let stored = engine.machine_by_name(&def.name).unwrap();
                    assert_eq!(stored.definition(), def);
                    if machines.len() < 8 {
                        machines.push(def.name.clone());
                    }
                } else {
                    // Nothing invalid is ever stored.
                    if !valid {
                        if let Ok(stored) = engine.machine_by_name(&def.name) {
                            assert!(stored.definition().validate().is_ok());
                        }
                    }
                }
            }
            1 => {
                let name = input.text(&NAMES);
                if let Some(found) =
                    allowed("machine_by_name", engine.machine_by_name(&name), |e| {
                        matches!(e, Error::UnknownMachine { .. })
                    })
                {
                    assert_eq!(found.definition().name, name);
                }
            }
            2 => {
                let id = id(&mut input);
                let payload = payload(&mut input);
                let actor = input.chance(60).then(|| input.text(&["alice"]));
                let result = machine.create_with(&id, payload, actor.clone());
                if bad_len(&id, 1024) {
                    assert!(
                        matches!(
                            result,
                            Err(Error::InvalidInput {
                                field: InputField::Id,
                                ..
                            })
                        ),
                        "create {} bytes: {result:?}",
                        id.len()
                    );
                } else if actor.as_ref().is_some_and(|a| a.len() > 1024) {
                    assert!(matches!(
                        result,
                        Err(Error::InvalidInput {
                            field: InputField::Actor,
                            ..
                        })
                    ));
                }
                if let Some(outcome) = allowed("create", result, request_error) {
                    reached::bump(&reached::CREATED);
                    assert_eq!(outcome.id, id);
                    check_entity(&machine, &id);
                }
            }
            3..=5 => {
                let id = id(&mut input);
                let request = request(&mut input, &machine.definition());
                let result = machine.apply(&id, request.clone());
                if result.is_err() {
                    reached::bump(&reached::REFUSED);
                }
                if bad_len(&id, 1024) {
                    assert!(
                        matches!(
                            result,
                            Err(Error::InvalidInput {
                                field: InputField::Id,
                                ..
                            })
                        ),
                        "apply on {} bytes: {result:?}",
                        id.len()
                    );
                } else if request.key_ref().is_some_and(|key| bad_len(key, 255)) {
                    assert!(
                        matches!(
                            result,
                            Err(Error::InvalidInput {
                                field: InputField::Key,
                                ..
                            })
                        ),
                        "key of {} bytes: {result:?}",
                        request.key_ref().unwrap().len()
                    );
                }
                if let Some(outcome) = allowed("apply", result, request_error) {
                    reached::bump(if outcome.applied {
                        &reached::APPLIED
                    } else {
                        &reached::NO_OPS
                    });
                    assert_eq!(outcome.id, id);
                    check_entity(&machine, &id);
                    let now = machine.get(&id).unwrap().unwrap();
                    assert!(now.version >= outcome.version);
                    if request.key_ref().is_some() {
                        let replay = machine.apply(&id, request).unwrap();
                        assert!(replay.replay, "a keyed success was not replayed");
                        reached::bump(&reached::REPLAYED);
                        assert_eq!(
                            (replay.state, replay.version, replay.applied, replay.at),
                            (outcome.state, outcome.version, outcome.applied, outcome.at)
                        );
                    }
                }
            }
            6 => {
                let id = id(&mut input);
                let result = machine.get(&id);
                if bad_len(&id, 1024) {
                    assert!(matches!(result, Err(Error::InvalidInput { .. })));
                } else {
                    result.unwrap();
                    check_entity(&machine, &id);
                }
            }
            7 => {
                let id = id(&mut input);
                if let Some(history) = allowed("history", machine.history(&id), |e| {
                    matches!(
                        e,
                        Error::InvalidInput {
                            field: InputField::Id,
                            ..
                        }
                    )
                }) {
                    for (i, entry) in history.iter().enumerate() {
                        assert_eq!(entry.version, i as u64 + 1);
                    }
                }
            }
            8 => {
                let state = input.text(&NAMES);
                let after = input.chance(100).then(|| input.text(&["a", "b"]));
                let limit = input.below(8);
                let known = machine.definition().has_state(&state);
                let result = machine.in_state(&state, after.as_deref(), limit);
                match result {
                    Ok(ids) => {
                        assert!(known);
                        assert!(ids.len() <= limit);
                        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in_state order");
                        if let Some(after) = &after {
                            assert!(ids.iter().all(|id| id > after));
                        }
                    }
                    Err(Error::InvalidInput {
                        field: InputField::State,
                        ..
                    }) => assert!(!known),
                    Err(other) => panic!("in_state: {other:?}"),
                }
            }
            _ => {
                let counts = machine.count_by_state().unwrap();
                assert_eq!(counts.len(), machine.definition().states.len());
                let outbox = engine.outbox();
                let events = outbox.pending(1 + input.below(16)).unwrap();
                if input.chance(128) {
                    outbox.ack(&events).unwrap();
                }
            }
        }
    }
}

/// Opens a database with plain sled, with the segment size it was created
/// with (sled refuses another; the engine creates 8 MiB segments).
fn open_sled(dir: &std::path::Path) -> sled::Result<sled::Db> {
    let conf = std::fs::read(dir.join("conf")).unwrap_or_default();
    let segment_size = String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(512 * 1024);
    sled::Config::new()
        .path(dir)
        .segment_size(segment_size)
        .open()
}
