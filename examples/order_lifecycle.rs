//! The quick start: an order machine, its entities, idempotent and
//! conditional transitions, history and the outbox.
//!
//! ```text
//! cargo run --example order_lifecycle
//! ```

use idemflow::{Engine, Error, MachineEvent, Request, StateMachine};
use serde_json::json;

// 1. Declare the machine. Each variant is a state; `#[on(event = Target)]`
//    declares its transitions; `#[terminal]` marks the end states. The derive
//    checks the machine at compile time (every state reachable, no dead end,
//    one target per event) and generates the `OrderEvent` enum.
/// The life of an order in a shop.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Being filled by the customer; not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    /// Submitted by the customer, waiting for payment.
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    /// Paid: the customer's card was charged.
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    /// Handed to the carrier.
    #[terminal]
    Shipped,
    /// Cancelled before payment; nothing was charged.
    #[terminal]
    Cancelled,
    /// Paid, then refunded.
    #[terminal]
    Refunded,
}

fn main() -> Result<(), Error> {
    // 2. Open an engine. `Engine::open("dir")` keeps the data; a temporary
    //    database is deleted when the engine is dropped.
    let engine = Engine::temporary()?;
    let orders = engine.machine::<OrderState>()?;

    // 3. Create an entity: it starts in the initial state at version 1.
    //    Creating it again is a harmless no-op.
    let created = orders.create("o-1")?;
    assert!(created.was_created());
    assert!(!orders.create("o-1")?.was_applied());
    println!(
        "created o-1 in {} (version {})",
        created.state().name(),
        created.version()
    );

    // 4. Fire an event (or ask for a target state with `transition`).
    let submitted = orders.fire("o-1", OrderEvent::Submit)?;
    println!(
        "o-1: draft -> {} (version {})",
        submitted.state().name(),
        submitted.version()
    );

    // 5. A payment with an idempotency key. The payment service may not see
    //    the answer (a timeout) and retry: the retry replays the original
    //    outcome instead of paying twice.
    let pay = Request::to(OrderState::Paid)
        .key("pay-o-1")
        .payload(json!({ "amount_cents": 4200, "currency": "EUR" }))
        .actor("payments");
    let paid = orders.apply("o-1", pay.clone())?;
    assert!(paid.was_applied() && !paid.is_replay());
    orders.fire("o-1", OrderEvent::Ship)?;
    // The retry arrives after the order moved on: still the original answer.
    let retry = orders.apply("o-1", pay)?;
    assert!(retry.is_replay());
    assert_eq!((retry.state(), retry.version()), (OrderState::Paid, 3));
    println!(
        "retried payment: replay of the original outcome (paid at version 3), no second charge"
    );

    // The same key with a different request is refused: keys are bound to
    // their first request.
    let reused = orders.apply("o-1", Request::to(OrderState::Refunded).key("pay-o-1"));
    assert!(matches!(reused, Err(Error::KeyReused { .. })));

    // 6. Optimistic concurrency: a request made from a stale view (version 1)
    //    is refused with both versions, not silently applied.
    orders.create("o-2")?;
    orders.fire("o-2", OrderEvent::Submit)?;
    match orders.apply("o-2", Request::to(OrderState::Cancelled).expect_version(1)) {
        Err(Error::VersionConflict {
            expected, actual, ..
        }) => {
            println!("o-2: stale cancel refused (expected version {expected}, it is at {actual})")
        }
        other => println!("o-2: unexpected {other:?}"),
    }
    // An illegal move is refused too: a draft cannot be shipped.
    orders.create("o-3")?;
    let early = orders.fire("o-3", OrderEvent::Ship);
    if let Err(error) = &early {
        println!("o-3: {error}");
    }

    // 7. History: one entry per applied change; the version is its length.
    println!("history of o-1:");
    for entry in orders.history("o-1")? {
        let from = entry.from.map_or("(created)", |state| state.name());
        let how = match (entry.event, &entry.key) {
            (Some(event), _) => format!("event {}", event.name()),
            (None, Some(key)) => format!("requested with key {key}"),
            (None, None) => String::new(),
        };
        let line = format!("  v{} {from} -> {} {how}", entry.version, entry.to.name());
        println!("{}", line.trim_end());
    }

    // 8. The outbox: one event per applied change, written in the same atomic
    //    step. A consumer processes pending events, then acknowledges them.
    let outbox = engine.outbox();
    let events = outbox.pending(100)?;
    println!("{} outbox events to publish:", events.len());
    for event in &events {
        println!(
            "  ({}, {}, v{}) -> {}",
            event.machine, event.id, event.version, event.to
        );
    }
    outbox.ack(&events)?;
    assert!(outbox.is_empty()?);

    // 9. State counts from the state index.
    println!("orders per state:");
    for (state, count) in orders.count_by_state()? {
        println!("  {:<10} {count}", state.name());
    }
    Ok(())
}
