//! Nothing a caller does through the public API can block or fail another
//! caller's request (SPEC section 4): an unpolled subscription, a consumer
//! that calls back into the engine, a guard that blocks, a guard that panics.
//! Every test runs under a watchdog, so a hang fails with a message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use idemflow::{Durability, Engine, Error, Request};

mod common;

use common::backend::TestDb;
use common::{watchdog, OrderEvent, OrderState};

const LIMIT: Duration = Duration::from_secs(60);

fn engine(db: &TestDb, durability: Durability) -> Engine {
    db.open(Engine::builder().durability(durability))
}

fn an_unpolled_subscription_blocks_no_writer(db: &TestDb) {
    let db = db.clone();
    watchdog(
        "3,000 creations with an unpolled subscription",
        LIMIT,
        move || {
            let engine = engine(&db, Durability::Buffered);
            let orders = engine.machine::<OrderState>().unwrap();
            // Subscribed and never polled (sled's own subscribers held 1,024
            // events and then blocked every writer).
            let _forgotten = engine.outbox().subscribe();
            for n in 0..3000 {
                orders.create(&format!("o-{n}")).unwrap();
            }
            // Reads work too, and the subscription still delivers from where it was.
            assert!(orders.get("o-2999").unwrap().is_some());
            engine.flush().unwrap();
            let mut late = engine.outbox().subscribe();
            orders.create("o-late").unwrap();
            engine.flush().unwrap();
            let event = late
                .next_timeout(Duration::from_secs(10))
                .expect("an event")
                .unwrap();
            assert_eq!(event.id, "o-late");
        },
    );
}

fn a_subscription_that_falls_behind_catches_up_from_the_outbox(db: &TestDb) {
    let db = db.clone();
    watchdog("a lagging subscription", LIMIT, move || {
        let engine = engine(&db, Durability::Immediate);
        let orders = engine.machine::<OrderState>().unwrap();
        let mut feed = engine.outbox().subscribe();
        for n in 0..2000 {
            orders.create(&format!("o-{n}")).unwrap();
        }
        // Everything committed since subscribing, in commit order.
        let mut seen = Vec::new();
        while let Some(event) = feed.next_timeout(Duration::from_millis(200)) {
            seen.push(event.unwrap().id);
        }
        let expected: Vec<String> = (0..2000).map(|n| format!("o-{n}")).collect();
        assert_eq!(seen, expected);
    });
}

fn a_consumer_calling_back_into_the_engine_never_deadlocks(db: &TestDb) {
    let db = db.clone();
    watchdog("a consumer that writes from its loop", LIMIT, move || {
        let engine = engine(&db, Durability::Immediate);
        let orders = engine.machine::<OrderState>().unwrap();
        let mut feed = engine.outbox().subscribe();
        let consumer = {
            let orders = orders.clone();
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut handled = 0;
                while handled < 200 {
                    let Some(event) = feed.next_timeout(Duration::from_secs(20)) else {
                        panic!("the consumer got no event for 20 s after {handled}");
                    };
                    let event = event.unwrap();
                    // React to a creation by submitting the order: a write
                    // from the consumer's loop, plus a read and an ack.
                    if event.version == 1 {
                        orders
                            .apply(
                                &event.id,
                                Request::fire(OrderEvent::Submit).key(format!("auto-{}", event.id)),
                            )
                            .unwrap();
                        handled += 1;
                    }
                    assert!(orders.get(&event.id).unwrap().is_some());
                    engine.outbox().ack(&[event]).unwrap();
                }
            })
        };
        for n in 0..200 {
            orders.create(&format!("o-{n}")).unwrap();
        }
        consumer.join().unwrap();
        let counts = orders.count_by_state().unwrap();
        assert!(counts.contains(&(OrderState::Submitted, 200)), "{counts:?}");
    });
}

fn a_blocked_guard_delays_only_its_own_request(db: &TestDb) {
    let db = db.clone();
    watchdog("100 requests while a guard blocks", LIMIT, move || {
        let engine = engine(&db, Durability::Immediate);
        let orders = engine.machine::<OrderState>().unwrap();
        let (release, released) = mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        let entered = Arc::new(Barrier::new(2));
        {
            let entered = entered.clone();
            orders.guard_to(OrderState::Paid, move |input| {
                if input.entity.id == "blocked" {
                    entered.wait();
                    // A remote check that takes as long as the test says.
                    let _ = released.lock().unwrap().recv();
                }
                Ok(())
            });
        }
        orders.create("blocked").unwrap();
        orders.fire("blocked", OrderEvent::Submit).unwrap();
        let blocked = {
            let orders = orders.clone();
            std::thread::spawn(move || {
                // A fresh key: the request goes all the way to the atomic step.
                orders.apply("blocked", Request::to(OrderState::Paid).key("pay-blocked"))
            })
        };
        entered.wait();
        // The guard is blocked now; everything else goes on.
        for n in 0..100 {
            let id = format!("o-{n}");
            orders.create(&id).unwrap();
            orders.fire(&id, OrderEvent::Submit).unwrap();
            let paid = orders
                .apply(&id, Request::to(OrderState::Paid).key(format!("pay-{n}")))
                .unwrap();
            assert!(paid.was_applied());
        }
        assert!(
            !blocked.is_finished(),
            "the guarded request waits for its guard"
        );
        release.send(()).unwrap();
        let paid = blocked.join().unwrap().unwrap();
        assert_eq!((paid.state(), paid.version()), (OrderState::Paid, 3));
    });
}

fn a_panicking_guard_fails_only_its_own_request(db: &TestDb) {
    let db = db.clone();
    watchdog("8 keyed callers, one guard panics", LIMIT, move || {
        let engine = engine(&db, Durability::Immediate);
        let orders = engine.machine::<OrderState>().unwrap();
        orders.guard_to(OrderState::Paid, |input| {
            if input.entity.id == "o-3" {
                panic!("the balance service returned garbage");
            }
            Ok(())
        });
        for n in 0..8 {
            orders.create(&format!("o-{n}")).unwrap();
            orders.fire(&format!("o-{n}"), OrderEvent::Submit).unwrap();
        }
        let start = Arc::new(Barrier::new(8));
        let callers: Vec<_> = (0..8)
            .map(|n| {
                let (orders, start) = (orders.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    orders.apply(
                        &format!("o-{n}"),
                        Request::to(OrderState::Paid).key(format!("pay-{n}")),
                    )
                })
            })
            .collect();
        let results: Vec<_> = callers
            .into_iter()
            .map(|caller| caller.join().expect("no panic crosses into a caller"))
            .collect();
        for (n, result) in results.into_iter().enumerate() {
            if n == 3 {
                match result {
                    Err(Error::GuardPanicked { id, to, message }) => {
                        assert_eq!((id.as_str(), to.as_str()), ("o-3", "paid"));
                        assert!(message.contains("garbage"), "{message}");
                    }
                    other => panic!("o-3: expected GuardPanicked, got {other:?}"),
                }
            } else {
                assert!(result.unwrap().was_applied(), "o-{n} applies");
            }
        }
        // Nothing of o-3 was written, and the engine goes on.
        assert_eq!(orders.get("o-3").unwrap().unwrap().version, 2);
        orders.create("after").unwrap();
        assert!(orders
            .fire("after", OrderEvent::Submit)
            .unwrap()
            .was_applied());
    });
}

fn a_guard_sees_the_record_it_is_committed_against(db: &TestDb) {
    let db = db.clone();
    watchdog("guards re-run when the record changed", LIMIT, move || {
        let engine = engine(&db, Durability::Buffered);
        let orders = engine.machine::<OrderState>().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let (first_run, gate) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        {
            let (runs, first_run, gate) = (runs.clone(), first_run.clone(), gate.clone());
            orders.guard_event(OrderEvent::Cancel, move |input| {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The first evaluation sees draft; the entity moves on
                    // before the request commits.
                    first_run.wait();
                    gate.wait();
                }
                match input.entity.state {
                    OrderState::Draft => Ok(()),
                    other => Err(format!("cannot cancel from {other:?} here")),
                }
            });
        }
        orders.create("o-1").unwrap();
        let cancel = {
            let orders = orders.clone();
            std::thread::spawn(move || {
                orders.apply("o-1", Request::fire(OrderEvent::Cancel).key("cancel-o-1"))
            })
        };
        first_run.wait();
        orders.fire("o-1", OrderEvent::Submit).unwrap();
        gate.wait();
        // The guard approved "draft", but the record is "submitted" now: the
        // guard ran again against it and refused.
        match cancel.join().unwrap() {
            Err(Error::GuardRejected { from, .. }) => assert_eq!(from, "submitted"),
            other => panic!("expected GuardRejected from submitted, got {other:?}"),
        }
        assert!(runs.load(Ordering::SeqCst) >= 2);
        assert_eq!(
            orders.get("o-1").unwrap().unwrap().state,
            OrderState::Submitted
        );
    });
}

backend_tests! {
    an_unpolled_subscription_blocks_no_writer,
    a_subscription_that_falls_behind_catches_up_from_the_outbox,
    a_consumer_calling_back_into_the_engine_never_deadlocks,
    a_blocked_guard_delays_only_its_own_request,
    a_panicking_guard_fails_only_its_own_request,
    a_guard_sees_the_record_it_is_committed_against,
}
