//! idemflow: a finite-state-machine workflow engine whose transitions are
//! idempotent and race-free by construction.

#![warn(missing_docs)]

// Lets the derive macro name `::idemflow` from inside this crate too (tests, docs).
extern crate self as idemflow;

pub mod error;
mod graph;
pub mod machine;

pub use error::{Error, InputField, MissingState, Result};
pub use machine::{MachineDef, MachineEvent, StateDef, StateMachine, Transition, TransitionDef};

/// Derives [`StateMachine`](trait@StateMachine) for a state enum; see `docs/machines.md`.
pub use idemflow_macros::StateMachine;
