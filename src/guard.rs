//! Guards: checks attached to transitions that may reject a request.

use std::sync::Arc;

use serde_json::Value;

use crate::decide::NamedGuardInput;
use crate::error::Result;
use crate::machine::{MachineEvent, StateMachine};
use crate::outcome::{Entity, EntityRecord};

/// What a typed guard sees: the entity before the transition and the request.
#[derive(Clone, Debug)]
pub struct GuardInput<'a, M: StateMachine> {
    /// The entity as stored before the transition.
    pub entity: Entity<M>,
    /// The target state.
    pub to: M,
    /// The fired event, for a request by event.
    pub event: Option<M::Event>,
    /// The request's payload.
    pub payload: Option<&'a Value>,
    /// The request's actor.
    pub actor: Option<&'a str>,
}

impl<'a, M: StateMachine> GuardInput<'a, M> {
    pub(crate) fn from_named(input: &NamedGuardInput<'a>) -> Result<Self> {
        let record: &EntityRecord = input.entity;
        let entity = Entity::from_record(record.clone())?;
        let to = M::from_name(input.to).unwrap_or(entity.state);
        Ok(GuardInput {
            to,
            event: input.event.and_then(<M::Event as MachineEvent>::from_name),
            payload: input.payload,
            actor: input.actor,
            entity,
        })
    }
}

/// Which transitions a guard watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GuardScope {
    /// Every transition into this state.
    To(String),
    /// Every transition declared with this event.
    Event(String),
}

impl GuardScope {
    fn watches(&self, input: &NamedGuardInput<'_>) -> bool {
        match self {
            GuardScope::To(state) => state == input.to,
            GuardScope::Event(event) => match input.event {
                Some(fired) => fired == event,
                None => input.declared_events.iter().any(|e| e == event),
            },
        }
    }
}

type GuardFn = Arc<dyn Fn(&NamedGuardInput<'_>) -> std::result::Result<(), String> + Send + Sync>;

/// The guards of one machine. Immutable once shared: adding a guard makes a
/// new set ([`Guards::with`]), so a caller runs a snapshot without holding
/// any lock while user code runs.
#[derive(Clone, Default)]
pub(crate) struct Guards {
    guards: Vec<(GuardScope, GuardFn)>,
}

impl Guards {
    /// This set plus one guard.
    pub(crate) fn with<F>(&self, scope: GuardScope, guard: F) -> Guards
    where
        F: Fn(&NamedGuardInput<'_>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        let mut guards = self.guards.clone();
        guards.push((scope, Arc::new(guard)));
        Guards { guards }
    }

    /// Whether no guard is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Whether any guard watches this transition (no user code runs).
    pub(crate) fn watches(&self, input: &NamedGuardInput<'_>) -> bool {
        self.guards.iter().any(|(scope, _)| scope.watches(input))
    }

    /// Runs every guard that watches this transition, in the order they were
    /// added; the first rejection wins. User code: call it only on the
    /// requesting caller's thread, with no lock held.
    pub(crate) fn check(&self, input: &NamedGuardInput<'_>) -> std::result::Result<(), String> {
        for (scope, guard) in &self.guards {
            if scope.watches(input) {
                guard(input)?;
            }
        }
        Ok(())
    }
}
