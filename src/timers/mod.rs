//! Durable timers (SPEC section 9): declared timeouts and scheduled requests.
//!
//! A timer is a stored request with a due time. Firing it is just applying
//! that request through the same write path as every request: keyed and,
//! for a timeout, version-checked, so a timer that fires twice, late, or
//! after the entity moved on is a replay or a no-op, never a second effect.
//!
//! - A **declared timeout** (`#[timeout(after = "30m", fire = expire)]`) is
//!   armed in the same atomic step as the transition that enters the state:
//!   `fire(expire)` expecting the version at entry, with a key derived from
//!   (entity, version, state) in a scope of its own, by the actor `timer`.
//!   Leaving the state disarms it in the same atomic step.
//! - A **scheduled request** is any keyed request stored by
//!   [`Machine::schedule`](crate::Machine::schedule); its key identifies it.
//!
//! [`runner`] fires due timers in the background; `Engine::run_due_timers`
//! does it at once.

pub(crate) mod runner;

use serde::{Deserialize, Serialize};

use crate::request::{stored_key, Fingerprint, RequestSpec, Target};

/// The actor that fires declared timeouts (recorded in history and outbox).
pub const TIMER_ACTOR: &str = "timer";

/// The key scope of declared timeouts, followed by the entity id: their keys
/// never meet a caller's keys.
const TIMEOUT_SCOPE: &str = "idemflow.timeout/";

/// What kind of timer a [`ScheduledTimer`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// A state's declared timeout.
    Timeout,
    /// A request scheduled with `schedule`.
    Scheduled,
}

/// A pending timer: a request that the engine applies at `due_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledTimer {
    /// The machine's name.
    pub machine: String,
    /// The entity the request applies to.
    pub id: String,
    /// The request's idempotency key (for a timeout, derived from the state
    /// and the version at entry).
    pub key: String,
    /// The key's scope, if any.
    pub scope: Option<String>,
    /// When it is due (ms since the epoch, by the engine's clock).
    pub due_at: u64,
    /// A declared timeout or a scheduled request.
    pub kind: TimerKind,
    /// What the request asks for: a target state or an event, by name.
    pub target: Target,
}

/// A stored timer (the backend's form).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TimerRecord {
    pub(crate) id: String,
    pub(crate) due_at: u64,
    pub(crate) kind: TimerKind,
    /// The request to apply (its key and scope set).
    pub(crate) request: RequestSpec,
    /// The request's fingerprint: scheduling the same key again with another
    /// request is `KeyReused`.
    pub(crate) fingerprint: Fingerprint,
}

impl TimerRecord {
    /// The stored form of the timer's key (scope included): what identifies it.
    pub(crate) fn stored_key(&self) -> Vec<u8> {
        self.request.stored_key().unwrap_or_default()
    }

    /// The public view of the timer.
    pub(crate) fn view(&self, machine: &str) -> ScheduledTimer {
        ScheduledTimer {
            machine: machine.to_owned(),
            id: self.id.clone(),
            key: self.request.key.clone().unwrap_or_default(),
            scope: self.request.scope.clone(),
            due_at: self.due_at,
            kind: self.kind,
            target: self.request.target.clone(),
        }
    }
}

/// The request a declared timeout fires: `fire(event)` expecting the version
/// at entry, keyed by (entity, version, state), by the actor `timer`.
pub(crate) fn timeout_request(id: &str, state: &str, version: u64, event: &str) -> RequestSpec {
    let mut request = RequestSpec::new(Target::Fire(event.to_owned().into()));
    request.key = Some(format!("timeout/{state}/{version}"));
    request.scope = Some(format!("{TIMEOUT_SCOPE}{id}"));
    request.expected_version = Some(version);
    request.actor = Some(TIMER_ACTOR.to_owned());
    request
}

/// The stored key of the timeout armed when `id` entered `state` at `version`.
pub(crate) fn timeout_key(id: &str, state: &str, version: u64) -> Vec<u8> {
    stored_key(
        Some(&format!("{TIMEOUT_SCOPE}{id}")),
        &format!("timeout/{state}/{version}"),
    )
}

/// The timer a transition into `state` at `version` arms, if the state has a
/// timeout.
pub(crate) fn arm_timeout(
    id: &str,
    state: &str,
    version: u64,
    entered_at: u64,
    after_ms: u64,
    event: &str,
) -> TimerRecord {
    let request = timeout_request(id, state, version, event);
    TimerRecord {
        id: id.to_owned(),
        due_at: entered_at.saturating_add(after_ms),
        kind: TimerKind::Timeout,
        fingerprint: Fingerprint::of(id, &request),
        request,
    }
}
