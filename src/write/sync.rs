//! The synchronisation primitives of the hand-off and the durability tracker.
//!
//! [`handoff`](super::handoff) and [`durable`](super::durable) name their
//! primitives only through this module, so that `tests/loom.rs` can compile
//! the very same source files against loom's model-checked primitives
//! (it includes them with `#[path]` next to a `sync` module of its own).

pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
pub(crate) use std::thread::yield_now;
