//! Machines and checks shared by the integration tests. Each test crate
//! uses a different subset, hence `allow(dead_code)`.
#![allow(dead_code)]

pub mod backend;
pub mod linearizability;

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use idemflow::{Durability, Engine, Machine, MachineDef, MachineEvent, OutboxEvent, StateMachine};

/// The order machine of the documentation.
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

/// A door: a cycle (closed <-> open) with a way out (removed).
pub fn door() -> MachineDef {
    MachineDef::new("door", "closed")
        .state("closed")
        .state("open")
        .terminal_state("removed")
        .transition("closed", "open", "open")
        .transition("open", "close", "closed")
        .transition("closed", "remove", "removed")
}

/// A support ticket: a cycle (open -> in_progress -> resolved -> open), two
/// events leading to the same state (`start` and `escalate` from open), one
/// event declared from several states with different targets (`escalate`:
/// open -> in_progress, in_progress -> escalated) and one event with one
/// target from several states (`close`).
#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "ticket", initial = Open, events = TicketEvent)]
pub enum Ticket {
    #[on(start = InProgress, escalate = InProgress, close = Closed)]
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

/// Whether the machine `M` declares `from --event--> to` (any event when `event` is none).
pub fn declared<M: StateMachine>(from: &str, event: Option<&str>, to: &str) -> bool {
    M::transitions().iter().any(|t| {
        t.from.name() == from && t.to.name() == to && event.is_none_or(|e| t.event.name() == e)
    })
}

/// Checks what must hold for every entity of `machine`, whatever happened to
/// it: `version == history length`, versions 1..=n, creation first, each
/// entry a declared transition chained to the previous one, the last entry
/// the current state, timestamps never going back; the state index agrees
/// with the records; the outbox events of the machine (when given) are
/// exactly the history entries, in version order per entity. Returns the
/// histories by id.
pub fn check_invariants<M: StateMachine>(
    machine: &Machine<M>,
    ids: &[String],
    outbox: Option<&[OutboxEvent]>,
) -> BTreeMap<String, Vec<idemflow::HistoryRecord>> {
    let named = machine.named();
    let mut histories = BTreeMap::new();
    let mut by_state: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for id in ids {
        let record = named.get(id).unwrap();
        let history = named.history(id).unwrap();
        let Some(record) = record else {
            assert!(
                history.is_empty(),
                "{id}: history without a record: {history:?}"
            );
            continue;
        };
        assert_eq!(
            record.version,
            history.len() as u64,
            "{id}: version != history length"
        );
        for (i, entry) in history.iter().enumerate() {
            assert_eq!(entry.version, i as u64 + 1, "{id}: history versions");
            if i == 0 {
                assert_eq!(entry.from, None, "{id}: creation has no from");
                assert_eq!(entry.to, M::initial().name(), "{id}: creation state");
                assert_eq!(entry.event, None, "{id}: creation has no event");
            } else {
                let previous = &history[i - 1];
                assert_eq!(
                    entry.from.as_deref(),
                    Some(previous.to.as_str()),
                    "{id}: chain"
                );
                assert!(
                    declared::<M>(&previous.to, entry.event.as_deref(), &entry.to),
                    "{id}: {:?} -{:?}-> {:?} is not a declared transition",
                    previous.to,
                    entry.event,
                    entry.to
                );
                assert!(entry.at >= previous.at, "{id}: history time went back");
            }
        }
        let last = history.last().unwrap();
        assert_eq!(last.to, record.state, "{id}: last history entry != state");
        assert_eq!(record.updated_at, last.at, "{id}: updated_at");
        assert_eq!(record.created_at, history[0].at, "{id}: created_at");
        // The typed views agree with the named ones.
        let entity = machine.get(id).unwrap().unwrap();
        assert_eq!(
            (entity.state.name(), entity.version),
            (record.state.as_str(), record.version)
        );
        let typed: Vec<_> = machine.history(id).unwrap();
        assert_eq!(typed.len(), history.len());
        for (t, n) in typed.iter().zip(&history) {
            assert_eq!(t.to.name(), n.to);
            assert_eq!(t.from.map(StateMachine::name), n.from.as_deref());
            assert_eq!(t.event.map(MachineEvent::name), n.event.as_deref());
        }
        let state = M::from_name(&record.state).unwrap().name();
        by_state.entry(state).or_default().insert(id.clone());
        histories.insert(id.clone(), history);
    }

    // The state index equals the records.
    let counts = machine.count_by_state().unwrap();
    assert_eq!(counts.len(), M::states().len());
    for (state, count) in counts {
        let expected = by_state.get(state.name()).cloned().unwrap_or_default();
        let indexed = machine.in_state(state).unwrap();
        assert_eq!(
            indexed,
            expected.iter().cloned().collect::<Vec<_>>(),
            "in_state({state:?})"
        );
        assert_eq!(count, expected.len() as u64, "count_by_state({state:?})");
    }

    // The outbox holds exactly one event per history entry, in version order.
    let Some(outbox) = outbox else {
        return histories;
    };
    let mut events: BTreeMap<&str, Vec<&OutboxEvent>> = BTreeMap::new();
    for event in outbox.iter().filter(|e| e.machine == M::machine_name()) {
        events.entry(event.id.as_str()).or_default().push(event);
    }
    for id in events.keys() {
        assert!(
            histories.contains_key(*id),
            "outbox event of unknown entity {id}"
        );
    }
    for (id, history) in &histories {
        let list = events.get(id.as_str()).cloned().unwrap_or_default();
        assert_eq!(
            list.len(),
            history.len(),
            "{id}: outbox events != history entries"
        );
        for (event, entry) in list.iter().zip(history) {
            assert_eq!(event.version, entry.version, "{id}: outbox order");
            assert_eq!(event.from, entry.from, "{id}: outbox from");
            assert_eq!(event.to, entry.to, "{id}: outbox to");
            assert_eq!(event.event, entry.event, "{id}: outbox event");
            assert_eq!(event.key, entry.key, "{id}: outbox key");
            assert_eq!(event.payload, entry.payload, "{id}: outbox payload");
            assert_eq!(event.actor, entry.actor, "{id}: outbox actor");
            assert_eq!(event.at, entry.at, "{id}: outbox at");
        }
    }
    histories
}

/// Opens a `Buffered` engine on `dir`, waiting out a lock that is being released.
pub fn open(dir: &Path) -> Engine {
    retry_locked(|| Engine::builder().durability(Durability::Buffered).open(dir))
}

/// Runs `open` until it stops failing with a lock error (for up to 5 s).
/// sled releases the directory lock from background threads a moment after
/// the last handle is dropped, so an open right after a close in the same
/// process may be refused (see `tests/crash.rs`,
/// `reopening_at_once_after_close_is_never_locked`).
pub fn retry_locked<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    let started = std::time::Instant::now();
    loop {
        match open() {
            Ok(value) => return value,
            Err(error)
                if format!("{error:?}").to_lowercase().contains("lock")
                    && started.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("opening the database: {error:?}"),
        }
    }
}

/// Opens a database directory with plain sled (to read or damage it behind
/// the engine's back), with the segment size it was created with: sled
/// refuses another, and the engine creates databases with 8 MiB segments.
pub fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
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

/// Runs `work` on a thread of its own and waits up to `limit` for it: a hang
/// fails the test with `what` instead of stalling the run. A panic in `work`
/// fails the test with that panic.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    limit: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(format!("watched: {what}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = done.send(result);
        })
        .expect("spawning the watched thread");
    match finished.recv_timeout(limit) {
        Ok(Ok(value)) => {
            let _ = worker.join();
            value
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("HANG: {what} did not finish within {limit:?}"),
    }
}
