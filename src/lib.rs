//! idemflow: a finite-state-machine workflow engine for business entities
//! (orders, payments, tickets) whose transitions are **idempotent and
//! race-free by construction**. A duplicate click, a retried RPC or a re-run
//! job never applies a transition twice and never loses an update.
//!
//! - Declare the lifecycle with `#[derive(StateMachine)]`; an invalid machine
//!   (unknown target, unreachable state, dead end, two targets for one event)
//!   is a compile error pointing at the offending variant.
//! - Every entity's state lives in an embedded [sled](https://docs.rs/sled)
//!   database. Each request is one atomic transaction: state, version,
//!   history entry, state index, idempotency record and outbox event commit
//!   together or not at all.
//! - A request whose target is already reached is a no-op success; a request
//!   with an idempotency key is applied at most once and its retries replay
//!   the original outcome; an expected version prevents lost updates.
//! - Every machine exports Graphviz DOT and Mermaid.
//!
//! # Quick start
//!
//! ```
//! use idemflow::{Engine, Error, Request, StateMachine};
//!
//! #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
//! #[machine(name = "order", initial = Draft, events = OrderEvent)]
//! pub enum OrderState {
//!     /// Created, not yet submitted.
//!     #[on(submit = Submitted, cancel = Cancelled)]
//!     Draft,
//!     /// Waiting for payment.
//!     #[on(pay = Paid, cancel = Cancelled)]
//!     Submitted,
//!     #[on(ship = Shipped, refund = Refunded)]
//!     Paid,
//!     #[terminal]
//!     Shipped,
//!     #[terminal]
//!     Cancelled,
//!     #[terminal]
//!     Refunded,
//! }
//!
//! # fn main() -> Result<(), Error> {
//! let engine = Engine::temporary()?; // or Engine::open("data/idemflow")
//! let orders = engine.machine::<OrderState>()?;
//!
//! orders.create("o-1")?;
//! orders.fire("o-1", OrderEvent::Submit)?;
//!
//! // The payment request carries an idempotency key: a retry replays it.
//! let pay = Request::to(OrderState::Paid)
//!     .key("pay-o-1")
//!     .expect_version(2)
//!     .payload(serde_json::json!({"amount": 4200}))
//!     .actor("alice");
//! let paid = orders.apply("o-1", pay.clone())?;
//! assert!(paid.was_applied());
//!
//! orders.fire("o-1", OrderEvent::Ship)?;
//! let retry = orders.apply("o-1", pay)?; // after the order moved on
//! assert!(retry.is_replay());
//! assert_eq!((retry.state(), retry.version()), (OrderState::Paid, 3));
//!
//! // Firing an event whose target is already reached is a no-op.
//! assert!(orders.fire("o-1", OrderEvent::Ship)?.was_noop());
//!
//! let order = orders.get("o-1")?.expect("created above");
//! assert_eq!((order.state, order.version), (OrderState::Shipped, 4));
//! assert_eq!(orders.history("o-1")?.len(), 4);
//!
//! // One outbox event per applied change, for at-least-once delivery.
//! let outbox = engine.outbox();
//! let events = outbox.pending(100)?;
//! assert_eq!(events.len(), 4);
//! outbox.ack(&events)?;
//!
//! // The picture of the machine.
//! assert!(OrderState::definition().to_mermaid().contains("[*] --> draft"));
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/guide.md` for the guide, `docs/semantics.md` for every outcome
//! and error, and `docs/machines.md` for the declaration syntax.

#![warn(missing_docs)]

// Lets the derive macro name `::idemflow` from inside this crate too (tests, docs).
extern crate self as idemflow;

#[cfg(feature = "tokio")]
pub mod asynchronous;
mod clock;
mod decide;
mod definitions;
mod durability;
mod engine;
pub mod error;
mod graph;
mod guard;
pub mod machine;
pub mod observe;
mod outbox;
mod outcome;
mod request;
mod store;
pub mod testing;
mod timers;
mod write;

#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncMachine, NamedAsyncMachine};
pub use clock::{Clock, SystemClock};
pub use decide::NamedGuardInput;
pub use definitions::DefinitionVersion;
pub use durability::Durability;
pub use engine::{Engine, EngineBuilder, Machine, NamedMachine, PurgeReport};
pub use error::{Error, InputField, Missing, NameKind, Result};
pub use graph::{render_svg, DotOptions};
pub use guard::GuardInput;
pub use machine::{
    format_delay, EventAliasDef, MachineDef, MachineEvent, StateDef, StateMachine, TimeoutDef,
    Transition, TransitionDef,
};
pub use outbox::{Outbox, Subscription};
pub use outcome::{
    Entity, EntityRecord, HistoryEntry, HistoryRecord, OutboxEvent, Outcome, OutcomeRecord,
};
pub use request::{Create, Fingerprint, Limits, NamedRequest, Request, Target};
pub use store::PendingEntry;
pub use timers::{ScheduledTimer, TimerKind, TIMER_ACTOR};

/// Derives [`StateMachine`](trait@StateMachine) for a state enum; see `docs/machines.md`.
pub use idemflow_macros::StateMachine;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
