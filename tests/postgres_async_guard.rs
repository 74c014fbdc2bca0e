//! Blocking calls on PostgreSQL from async code: a thread that runs async
//! code (a tokio worker, or inside a runtime's `block_on`) gets
//! `Error::BlockingInAsync` from every blocking call, before anything is
//! read, written or handed to the commit pipeline, and no panic; other
//! callers' requests are unaffected (the refused caller never leads a
//! batch); inside `block_in_place` and `spawn_blocking` the same calls work.
//!
//! Needs `IDEMFLOW_TEST_POSTGRES_URL`; skipped visibly otherwise (and failed
//! with `IDEMFLOW_REQUIRE_POSTGRES=1`). Everything runs under a watchdog.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use idemflow::{Create, Engine, Error, Machine, Request};

use common::backend::{Backend, TestDb};
use common::{watchdog, OrderEvent, OrderState, Ticket};

const LIMIT: Duration = Duration::from_secs(180);

/// Whether `result` is the refusal of a blocking call from async code.
fn is_refusal<T: std::fmt::Debug>(result: &idemflow::Result<T>) -> bool {
    matches!(result, Err(Error::BlockingInAsync { .. }))
}

/// Asserts that `result` is the refusal, naming the call.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(call: &str, result: idemflow::Result<T>) {
    assert!(
        is_refusal(&result),
        "{call}: expected Error::BlockingInAsync, got {result:?}"
    );
    if let Err(error) = result {
        let message = error.to_string();
        assert!(
            message.contains("spawn_blocking") && message.contains("block_in_place"),
            "{call}: the message says what to do instead: {message}"
        );
        assert_eq!(error.kind(), "BlockingInAsync");
    }
}

/// Every kind of blocking call, each expected to be refused on this thread.
fn every_call_is_refused(db: &TestDb, engine: &Engine, orders: &Machine<OrderState>) {
    assert_refused("get", orders.get("o-1"));
    assert_refused("history", orders.history("o-1"));
    assert_refused("create", orders.create("o-new"));
    assert_refused(
        "keyed create",
        orders.create_request("o-keyed", Create::new().key("create-o-keyed")),
    );
    assert_refused(
        "keyed apply",
        orders.apply("o-1", Request::to(OrderState::Submitted).key("submit-o-1")),
    );
    assert_refused("fire", orders.fire("o-1", OrderEvent::Submit));
    assert_refused("outbox pending", engine.outbox().pending(10));
    assert_refused("flush", engine.flush());
    // A machine not opened yet (an opened one is served from memory).
    assert_refused("machine", engine.machine::<Ticket>());
    assert_refused("connect", db.open_with(Engine::builder()));
}

/// Nothing the refused calls named was read into or written: `o-1` is at
/// version 1, the refused creations do not exist, and the refused keys are
/// unused (their requests apply afresh now).
fn nothing_was_written(orders: &Machine<OrderState>) {
    let record = orders.get("o-1").expect("reading o-1");
    assert_eq!(record.map(|entity| entity.version), Some(1));
    assert!(orders.get("o-new").expect("reading o-new").is_none());
    assert!(orders.get("o-keyed").expect("reading o-keyed").is_none());
    let submit = orders
        .apply("o-1", Request::to(OrderState::Submitted).key("submit-o-1"))
        .expect("submitting o-1");
    assert!(submit.was_applied() && !submit.is_replay());
}

/// A fresh PostgreSQL database with `o-1` created, or `None` (skip printed).
fn setup(test: &str) -> Option<(TestDb, Engine, Machine<OrderState>)> {
    let db = TestDb::new(Backend::Postgres, test)?;
    let engine = db.open(Engine::builder());
    let orders = engine.machine::<OrderState>().expect("opening the machine");
    orders.create("o-1").expect("creating o-1");
    Some((db, engine, orders))
}

#[test]
fn blocking_calls_inside_block_on_get_a_typed_error() {
    watchdog("blocking calls inside block_on", LIMIT, || {
        let Some((db, engine, orders)) = setup("async_guard_block_on") else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async { every_call_is_refused(&db, &engine, &orders) });
        nothing_was_written(&orders);
    });
}

#[test]
fn blocking_calls_on_a_worker_thread_get_a_typed_error() {
    watchdog("blocking calls on a tokio worker", LIMIT, || {
        let Some((db, engine, orders)) = setup("async_guard_worker") else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a runtime");
        let (db2, engine2, orders2) = (db.clone(), engine.clone(), orders.clone());
        runtime
            .block_on(runtime.spawn(async move { every_call_is_refused(&db2, &engine2, &orders2) }))
            .expect("the task ran without panicking");
        nothing_was_written(&orders);
    });
}

/// Fails the test run with a message if it is not dropped within `limit`:
/// for a test whose body runs on the test's own runtime thread (where the
/// [`watchdog`] cannot take it to another thread).
struct Deadline(Option<std::sync::mpsc::Sender<()>>);

impl Deadline {
    fn new(what: &'static str, limit: Duration) -> Deadline {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                eprintln!("HANG: {what} did not finish within {limit:?}");
                std::process::exit(101);
            }
        });
        Deadline(Some(done))
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = done.send(());
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_calls_in_a_tokio_test_get_a_typed_error() {
    let _deadline = Deadline::new("blocking calls in a tokio test", LIMIT);
    // Opened on the blocking pool, where the client may block.
    let set_up = tokio::task::spawn_blocking(|| setup("async_guard_tokio_test"))
        .await
        .expect("setting up");
    let Some((db, engine, orders)) = set_up else {
        return;
    };
    every_call_is_refused(&db, &engine, &orders);
    tokio::task::spawn_blocking(move || {
        nothing_was_written(&orders);
        drop((db, engine, orders));
    })
    .await
    .expect("checking and closing");
}

/// While a caller on a tokio worker is refused again and again, 8 threads'
/// keyed creations and transitions all succeed: the refused caller never
/// enqueues a job, so it never leads (and fails) a batch of theirs.
#[test]
fn a_refused_async_caller_never_fails_other_callers() {
    watchdog(
        "other callers while an async caller is refused",
        LIMIT,
        || {
            let Some((_db, _engine, orders)) = setup("async_guard_others") else {
                return;
            };
            const THREADS: usize = 8;
            const ENTITIES: usize = 12;
            let start = Arc::new(Barrier::new(THREADS + 1));
            let done = Arc::new(AtomicBool::new(false));
            let misuser = {
                let (orders, start, done) = (orders.clone(), start.clone(), done.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("a runtime");
                    runtime.block_on(async move {
                        start.wait();
                        let mut refused = 0u64;
                        // At least a few refusals, then until the others finish.
                        while refused < 20 || !done.load(Ordering::SeqCst) {
                            let id = format!("async-{}", refused % 4);
                            let create = Create::new().key(format!("async-create-{refused}"));
                            assert_refused("keyed create", orders.create_request(&id, create));
                            let pay =
                                Request::to(OrderState::Submitted).key(format!("s-{refused}"));
                            assert_refused("keyed apply", orders.apply("o-1", pay));
                            refused += 1;
                            tokio::task::yield_now().await;
                        }
                        refused
                    })
                })
            };
            let workers: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (orders, start) = (orders.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for entity in 0..ENTITIES {
                            let id = format!("t{thread}-{entity}");
                            let create = Create::new().key(format!("create-{id}"));
                            let created = orders.create_request(&id, create);
                            assert!(created.is_ok(), "creating {id}: {created:?}");
                            let submit =
                                Request::to(OrderState::Submitted).key(format!("submit-{id}"));
                            let submitted = orders.apply(&id, submit);
                            assert!(
                                submitted
                                    .as_ref()
                                    .is_ok_and(|outcome| outcome.was_applied()),
                                "submitting {id}: {submitted:?}"
                            );
                        }
                    })
                })
                .collect();
            let mut failed = Vec::new();
            for (thread, worker) in workers.into_iter().enumerate() {
                if worker.join().is_err() {
                    failed.push(thread);
                }
            }
            done.store(true, Ordering::SeqCst);
            let refused = misuser.join().expect("the async caller got only refusals");
            assert!(failed.is_empty(), "threads {failed:?} saw a request fail");
            assert!(refused >= 20);
            for thread in 0..THREADS {
                for entity in 0..ENTITIES {
                    let id = format!("t{thread}-{entity}");
                    let record = orders.get(&id).expect("reading back");
                    assert_eq!(record.map(|entity| entity.version), Some(2), "{id}");
                }
            }
            for id in (0..4).map(|n| format!("async-{n}")) {
                assert!(orders.get(&id).expect("reading back").is_none(), "{id}");
            }
        },
    );
}

/// The same calls inside `block_in_place` (on a multi-thread runtime) and
/// on `spawn_blocking` work; so does the async handle.
#[test]
fn block_in_place_spawn_blocking_and_the_async_handle_work() {
    watchdog("blocking calls where blocking is allowed", LIMIT, || {
        let Some(db) = TestDb::new(Backend::Postgres, "async_guard_allowed") else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a runtime");
        let task = runtime.spawn(async move {
            let in_place = tokio::task::block_in_place(|| -> idemflow::Result<Engine> {
                let engine = db.open_with(Engine::builder())?;
                let orders = engine.machine::<OrderState>()?;
                orders.create("o-1")?;
                orders.create_request("o-2", Create::new().key("create-o-2"))?;
                let submit = Request::to(OrderState::Submitted).key("submit-o-1");
                assert!(orders.apply("o-1", submit)?.was_applied());
                assert_eq!(orders.get("o-1")?.map(|entity| entity.version), Some(2));
                assert_eq!(orders.history("o-1")?.len(), 2);
                assert!(engine.outbox().pending(10)?.len() >= 3);
                engine.flush()?;
                Ok(engine)
            });
            let engine = in_place.expect("calls inside block_in_place");
            let blocking = engine.clone();
            let on_pool = tokio::task::spawn_blocking(move || -> idemflow::Result<u64> {
                let orders = blocking.machine::<OrderState>()?;
                let pay = Request::to(OrderState::Paid).key("pay-o-1");
                Ok(orders.apply("o-1", pay)?.version())
            })
            .await
            .expect("the blocking task ran");
            assert_eq!(on_pool.expect("calls on spawn_blocking"), 3);
            let orders = engine
                .machine_async::<OrderState>()
                .await
                .expect("the async handle");
            orders.fire("o-2", OrderEvent::Submit).await.expect("fire");
            let record = orders.get("o-2").await.expect("get");
            assert_eq!(record.map(|entity| entity.version), Some(2));
            // The engine closes on the blocking pool, where its client may block.
            tokio::task::spawn_blocking(move || drop(engine))
                .await
                .expect("closing the engine");
        });
        runtime
            .block_on(task)
            .expect("the task ran without panicking");
    });
}
