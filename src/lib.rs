//! idemflow: a finite-state-machine workflow engine whose transitions are
//! idempotent and race-free by construction.

#![warn(missing_docs)]

// Lets the derive macro name `::idemflow` from inside this crate too (tests, docs).
extern crate self as idemflow;

mod decide;
mod durability;
mod engine;
pub mod error;
mod graph;
mod guard;
pub mod machine;
mod outbox;
mod outcome;
mod request;
mod store;

pub use decide::NamedGuardInput;
pub use durability::Durability;
pub use engine::{Engine, EngineBuilder, Machine, NamedMachine};
pub use error::{Error, InputField, MissingState, Result};
pub use guard::GuardInput;
pub use machine::{MachineDef, MachineEvent, StateDef, StateMachine, Transition, TransitionDef};
pub use outbox::{Outbox, Subscription};
pub use outcome::{
    Entity, EntityRecord, HistoryEntry, HistoryRecord, OutboxEvent, Outcome, OutcomeRecord,
};
pub use request::{Fingerprint, Limits, NamedRequest, Request, Target};

/// Derives [`StateMachine`](trait@StateMachine) for a state enum; see `docs/machines.md`.
pub use idemflow_macros::StateMachine;
