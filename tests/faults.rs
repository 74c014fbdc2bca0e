//! A sync that fails or panics after a commit (injected with
//! `idemflow::testing::Faults`): the callers whose requests wrote get
//! `Error::CommitUnknown` (a retry with the same key is safe and tells), the
//! callers whose answers wrote nothing get their answer, nobody hangs, and the
//! next commit works.

use std::time::Duration;

use idemflow::testing::Faults;
use idemflow::{Durability, Engine, Error, Request};

mod common;

use common::backend::TestDb;
use common::{watchdog, OrderEvent, OrderState};

const LIMIT: Duration = Duration::from_secs(60);

fn engine(db: &TestDb, faults: &Faults) -> Engine {
    db.open(
        Engine::builder()
            .durability(Durability::Immediate)
            .faults(faults.clone()),
    )
}

fn check(db: &TestDb, panic: bool) {
    let faults = Faults::new();
    let engine = engine(db, &faults);
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    let submit = Request::fire(OrderEvent::Submit).key("submit-o-1");
    let inject = |count| {
        if panic {
            faults.panic_next_syncs(count);
        } else {
            faults.fail_next_syncs(count);
        }
    };

    inject(1);
    match orders.apply("o-1", submit.clone()) {
        Err(Error::CommitUnknown {
            machine,
            id,
            reason,
        }) => {
            assert_eq!((machine.as_str(), id.as_str()), ("order", "o-1"));
            assert!(reason.contains("injected"), "{reason}");
            let text = Error::CommitUnknown {
                machine,
                id,
                reason,
            }
            .to_string();
            assert!(
                text.contains("retry with the same idempotency key"),
                "{text}"
            );
        }
        other => panic!("expected CommitUnknown, got {other:?}"),
    }
    // The commit happened; the retry with the same key says so and is safe.
    let retry = orders.apply("o-1", submit.clone()).unwrap();
    assert!(retry.is_replay() && retry.version() == 2);
    assert_eq!(orders.history("o-1").unwrap().len(), 2);

    // An answer that writes nothing is given even when the sync fails.
    inject(1);
    assert!(orders.apply("o-1", submit).unwrap().is_replay());
    assert!(matches!(
        orders.apply("nobody", Request::fire(OrderEvent::Pay)),
        Err(Error::NotFound { .. })
    ));

    // The next commits work, durably.
    inject(0);
    assert!(orders.fire("o-1", OrderEvent::Pay).unwrap().was_applied());
    engine.flush().unwrap();
    drop(orders);
    drop(engine);
    let engine = db.open(Engine::builder().durability(Durability::Immediate));
    let orders = engine.machine::<OrderState>().unwrap();
    assert_eq!(orders.get("o-1").unwrap().unwrap().state, OrderState::Paid);
}

fn a_failed_sync_is_commit_unknown_for_writers_only_and_the_next_commit_works(db: &TestDb) {
    let db = db.clone();
    watchdog("a failing sync", LIMIT, move || check(&db, false));
}

fn a_panicking_sync_is_contained_like_a_failed_one(db: &TestDb) {
    let db = db.clone();
    watchdog("a panicking sync", LIMIT, move || check(&db, true));
}

fn a_failed_sync_fails_every_writer_of_its_batch_and_only_them(db: &TestDb) {
    let db = db.clone();
    watchdog("8 concurrent writers, one failed sync", LIMIT, move || {
        let faults = Faults::new();
        let engine = engine(&db, &faults);
        let orders = engine.machine::<OrderState>().unwrap();
        for n in 0..8 {
            orders.create(&format!("o-{n}")).unwrap();
        }
        faults.fail_next_syncs(3);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let results: Vec<_> = (0..8)
            .map(|n| {
                let (orders, barrier) = (orders.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let id = format!("o-{n}");
                    let result =
                        orders.apply(&id, Request::fire(OrderEvent::Submit).key(format!("k-{n}")));
                    (id, result)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        faults.fail_next_syncs(0);
        for (id, result) in results {
            match result {
                Ok(outcome) => assert!(outcome.was_applied()),
                Err(Error::CommitUnknown { id: unknown, .. }) => assert_eq!(unknown, id),
                Err(other) => panic!("{id}: unexpected {other}"),
            }
            // Whatever the answer, the retry with the same key tells the truth.
            let n = &id[2..];
            let retry = orders
                .apply(&id, Request::fire(OrderEvent::Submit).key(format!("k-{n}")))
                .unwrap();
            assert!(retry.is_replay() && retry.version() == 2, "{id}");
        }
    });
}

backend_tests! {
    a_failed_sync_is_commit_unknown_for_writers_only_and_the_next_commit_works,
    a_panicking_sync_is_contained_like_a_failed_one,
    a_failed_sync_fails_every_writer_of_its_batch_and_only_them,
}
