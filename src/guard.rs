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

type GuardFn = Arc<dyn Fn(&NamedGuardInput<'_>) -> std::result::Result<(), String> + Send + Sync>;

/// The guards of one machine.
#[derive(Clone, Default)]
pub(crate) struct Guards {
    guards: Vec<(GuardScope, GuardFn)>,
}

impl Guards {
    pub(crate) fn add<F>(&mut self, scope: GuardScope, guard: F)
    where
        F: Fn(&NamedGuardInput<'_>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.guards.push((scope, Arc::new(guard)));
    }

    /// Runs every guard that watches this transition, in the order they were
    /// added; the first rejection wins.
    pub(crate) fn check(&self, input: &NamedGuardInput<'_>) -> std::result::Result<(), String> {
        for (scope, guard) in &self.guards {
            let watches = match scope {
                GuardScope::To(state) => state == input.to,
                GuardScope::Event(event) => match input.event {
                    Some(fired) => fired == event,
                    None => input.declared_events.iter().any(|e| e == event),
                },
            };
            if watches {
                guard(input)?;
            }
        }
        Ok(())
    }
}
