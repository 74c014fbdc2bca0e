//! Reopening a database keeps everything; one process owns a directory.

use std::process::Command;

use idemflow::{Durability, Engine, Error, NamedRequest, Request, StateMachine};
use serde_json::json;

/// A payment's lifecycle.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Pending)]
pub enum Payment {
    #[on(authorize = Authorized, fail = Failed)]
    Pending,
    #[on(capture = Captured, void = Voided)]
    Authorized,
    #[terminal]
    Captured,
    #[terminal]
    Voided,
    #[terminal]
    Failed,
}

#[test]
fn reopen_keeps_records_history_keys_outbox_and_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let first_outcome;
    {
        let engine = Engine::open(dir.path()).unwrap();
        let payments = engine.machine::<Payment>().unwrap();
        payments.create("p-1").unwrap();
        first_outcome = payments
            .apply(
                "p-1",
                Request::fire(PaymentEvent::Authorize)
                    .key("auth-1")
                    .payload(json!({"amount": 990})),
            )
            .unwrap();
        payments.fire("p-1", PaymentEvent::Capture).unwrap();
        payments.create("p-2").unwrap();
    }
    // The same process reopens at once after dropping everything.
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.machines().unwrap(), vec![Payment::definition()]);
    let payments = engine.machine::<Payment>().unwrap();
    let entity = payments.get("p-1").unwrap().unwrap();
    assert_eq!((entity.state, entity.version), (Payment::Captured, 3));
    let history = payments.history("p-1").unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1].payload, Some(json!({"amount": 990})));
    let replay = payments
        .apply(
            "p-1",
            Request::fire(PaymentEvent::Authorize)
                .key("auth-1")
                .payload(json!({"amount": 990})),
        )
        .unwrap();
    assert!(replay.is_replay());
    assert_eq!(replay.version(), first_outcome.version());
    assert_eq!(replay.state(), Payment::Authorized);
    let events = engine.outbox().pending(100).unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(payments.in_state(Payment::Pending).unwrap(), vec!["p-2"]);
    // Tools without the Rust type read the stored definition.
    let named = engine.machine_by_name("payment").unwrap();
    assert_eq!(named.definition(), Payment::definition());
    assert_eq!(
        named
            .apply("p-2", NamedRequest::fire("fail"))
            .unwrap()
            .state,
        "failed"
    );
}

#[test]
fn buffered_writes_are_durable_after_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::builder()
            .durability(Durability::Buffered)
            .open(dir.path())
            .unwrap();
        let payments = engine.machine::<Payment>().unwrap();
        for i in 0..50 {
            payments.create(&format!("p-{i}")).unwrap();
        }
        engine.flush().unwrap();
    }
    let engine = Engine::open(dir.path()).unwrap();
    let payments = engine.machine::<Payment>().unwrap();
    assert_eq!(payments.in_state(Payment::Pending).unwrap().len(), 50);
}

#[test]
fn a_second_opener_in_this_process_gets_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = Engine::open(dir.path()).unwrap();
    match Engine::open(dir.path()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

/// Run as a child process by `a_second_process_gets_a_clear_locked_error`.
#[test]
fn child_opens_the_database_named_in_env() {
    let Ok(path) = std::env::var("IDEMFLOW_TEST_CHILD_DB") else {
        return; // only does something when run as the child
    };
    match Engine::open(&path) {
        Ok(_) => println!("CHILD-OPENED"),
        Err(error) => println!("CHILD-ERROR {error:?} / {error}"),
    }
}

#[test]
fn a_second_process_gets_a_clear_locked_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    engine.machine::<Payment>().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_opens_the_database_named_in_env",
            "--nocapture",
        ])
        .env("IDEMFLOW_TEST_CHILD_DB", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("CHILD-ERROR Locked"),
        "child output: {stdout}"
    );
    assert!(stdout.contains("is locked by another process"), "{stdout}");
    drop(engine);
    // Once the owner closed it, another process opens it.
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_opens_the_database_named_in_env",
            "--nocapture",
        ])
        .env("IDEMFLOW_TEST_CHILD_DB", dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("CHILD-OPENED"));
}
