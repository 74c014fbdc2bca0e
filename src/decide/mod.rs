//! The decision core: what a request does to an entity, as a pure function.
//!
//! [`decide`] implements SPEC section 3, steps 2 to 9, over the machine's
//! rules, the entity's current record, the idempotency key's record and the
//! request. It knows nothing of storage: a backend loads the two records,
//! calls it, and writes exactly what the returned [`Decision`] says in one
//! atomic step. Step 1 (input limits and names) is [`check_request`], run
//! before anything is read.
//!
//! - [`rules`]: the machine's definition indexed for decisions (aliases included);
//! - [`create`]: creations, keyed or not;
//! - this module: a transition request, step by step.

mod create;
mod rules;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub(crate) use self::create::{decide_create_keyed, CreateSpec};
pub(crate) use self::rules::MachineRules;

use crate::error::{Error, InputField, Result};
use crate::outcome::{EntityRecord, HistoryRecord, OutcomeRecord};
use crate::request::{Fingerprint, Limits, RequestSpec, Target};
use crate::timers::{arm_timeout, timeout_key, TimerRecord};

/// What an idempotency key remembers: the first request's fingerprint, its
/// outcome, and when the record expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) expires_at: u64,
    pub(crate) outcome: OutcomeRecord,
}

/// An applied change: everything a backend writes for it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Applied {
    /// What the caller gets back.
    pub(crate) outcome: OutcomeRecord,
    /// The state the entity leaves (none for a creation): its index entry goes.
    pub(crate) previous_state: Option<String>,
    /// The new record.
    pub(crate) record: EntityRecord,
    /// The history entry (and, with machine and id, the outbox event).
    pub(crate) history: HistoryRecord,
    /// The key record to store, for a keyed request.
    pub(crate) key_record: Option<KeyRecord>,
    /// The timeout the new state arms, if it declares one.
    pub(crate) arm: Option<TimerRecord>,
    /// The stored key of the timeout the left state armed, if it declares one:
    /// leaving the state disarms it.
    pub(crate) disarm: Option<Vec<u8>>,
}

/// What a request does.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision {
    /// A retry of a keyed request: return the original outcome, write nothing.
    Replay(OutcomeRecord),
    /// The request's intent already holds: write nothing but the key record.
    NoOp {
        outcome: OutcomeRecord,
        key_record: Option<KeyRecord>,
    },
    /// Apply the change.
    Apply(Box<Applied>),
}

impl Decision {
    /// Takes the outcome the caller gets.
    pub(crate) fn into_outcome(self) -> OutcomeRecord {
        match self {
            Decision::Replay(outcome) | Decision::NoOp { outcome, .. } => outcome,
            Decision::Apply(applied) => applied.outcome,
        }
    }
}

/// What a guard sees: the entity before the transition and the request.
#[derive(Clone, Copy, Debug)]
pub struct NamedGuardInput<'a> {
    /// The entity as stored before the transition.
    pub entity: &'a EntityRecord,
    /// The target state.
    pub to: &'a str,
    /// The fired event (for a request by event).
    pub event: Option<&'a str>,
    /// Every event the machine declares for this `(from, to)` pair.
    pub declared_events: &'a [String],
    /// The request's payload.
    pub payload: Option<&'a Value>,
    /// The request's actor.
    pub actor: Option<&'a str>,
}

/// The guards that apply to a request: `Err(reason)` rejects it.
pub(crate) type GuardCheck<'a> =
    &'a dyn Fn(&NamedGuardInput<'_>) -> std::result::Result<(), String>;

/// A guard check that allows everything.
#[cfg(test)]
pub(crate) fn no_guards(_: &NamedGuardInput<'_>) -> std::result::Result<(), String> {
    Ok(())
}

/// Everything [`decide`] reads.
pub(crate) struct DecisionInput<'a> {
    pub(crate) rules: &'a MachineRules,
    pub(crate) id: &'a str,
    pub(crate) record: Option<&'a EntityRecord>,
    pub(crate) key_record: Option<&'a KeyRecord>,
    pub(crate) request: &'a RequestSpec,
    /// The request's fingerprint, then its variants under former names of
    /// its target (see [`MachineRules::fingerprints`]); the first is stored.
    pub(crate) fingerprints: &'a [Fingerprint],
    pub(crate) now: u64,
    pub(crate) key_retention_ms: u64,
    pub(crate) guard: GuardCheck<'a>,
}

/// SPEC step 1: limits and names, before anything is read.
pub(crate) fn check_request(
    rules: &MachineRules,
    limits: &Limits,
    id: &str,
    request: &RequestSpec,
) -> Result<()> {
    limits.check_request(id, request)?;
    if request.key.is_some() {
        // A keyed request's names are checked after its key: a retry of a
        // request whose state or event a later definition dropped replays.
        return Ok(());
    }
    check_names(rules, request)
}

/// The request's state or event name is one the machine knows (a current
/// name or an alias); else `InvalidInput`.
fn check_names(rules: &MachineRules, request: &RequestSpec) -> Result<()> {
    match &request.target {
        Target::To(state) if rules.state(state).is_none() => Err(Error::invalid_input(
            InputField::State,
            format!("{state:?} is not a state of machine {}", rules.name()),
        )),
        Target::Fire(event)
            if !rules
                .event_targets
                .contains_key(rules.canonical_event(event)) =>
        {
            Err(Error::invalid_input(
                InputField::Event,
                format!("{event:?} is not an event of machine {}", rules.name()),
            ))
        }
        _ => Ok(()),
    }
}

/// Decides a transition request (SPEC section 3, steps 2 to 9).
pub(crate) fn decide(input: &DecisionInput<'_>) -> Result<Decision> {
    let rules = input.rules;
    let request = input.request;

    // 2. Key replay.
    if let (Some(key), Some(seen)) = (&request.key, input.key_record) {
        if seen.expires_at > input.now {
            if input.fingerprints.contains(&seen.fingerprint) {
                let mut outcome = seen.outcome.clone();
                outcome.replay = true;
                return Ok(Decision::Replay(outcome));
            }
            return Err(Error::KeyReused {
                machine: rules.name().to_owned(),
                key: key.clone(),
            });
        }
    }

    // Names (for a keyed request: checked after its key, see check_request).
    check_names(rules, request)?;

    // 3. Existence.
    let Some(record) = input.record else {
        return Err(Error::NotFound {
            machine: rules.name().to_owned(),
            id: input.id.to_owned(),
        });
    };
    let corrupt = || {
        Error::corrupt(
            format!("entities/{}", rules.name()),
            input.id.as_bytes(),
            format!(
                "stored state {:?} is not a state of the machine",
                record.state
            ),
        )
    };
    let current = rules.state(&record.state).ok_or_else(corrupt)?;
    // The state's current name (the record may hold a former one until the
    // engine migrates it) and the record as the guards see it.
    let current_name = rules.state_name(current);
    let entity = if record.state == current_name {
        std::borrow::Cow::Borrowed(record)
    } else {
        std::borrow::Cow::Owned(EntityRecord {
            state: current_name.to_owned(),
            ..record.clone()
        })
    };

    // 4. Target.
    let (target, event) = match &request.target {
        Target::To(state) => (
            rules.state(state).ok_or_else(|| {
                Error::invalid_input(
                    InputField::State,
                    format!("{state:?} is not a state of machine {}", rules.name()),
                )
            })?,
            None,
        ),
        Target::Fire(event) => {
            let event = rules.canonical_event(event);
            match rules.next[current].get(event) {
                Some(&to) => (to, Some(event)),
                None if rules
                    .event_targets
                    .get(event)
                    .is_some_and(|targets| targets.contains(&current)) =>
                {
                    (current, Some(event))
                }
                None => {
                    return Err(Error::InvalidTransition {
                        id: input.id.to_owned(),
                        from: current_name.to_owned(),
                        to: None,
                        event: Some(event.to_owned()),
                    })
                }
            }
        }
    };

    // 5. Already reached: a no-op success.
    if target == current {
        let outcome = OutcomeRecord {
            id: input.id.to_owned(),
            state: current_name.to_owned(),
            version: record.version,
            applied: false,
            from: None,
            event: None,
            replay: false,
            at: input.now,
        };
        let key_record = key_record(input, &outcome);
        return Ok(Decision::NoOp {
            outcome,
            key_record,
        });
    }

    // 6. Expected version.
    if let Some(expected) = request.expected_version {
        if expected != record.version {
            return Err(Error::VersionConflict {
                machine: rules.name().to_owned(),
                id: input.id.to_owned(),
                expected,
                actual: record.version,
            });
        }
    }

    // 7. Legality.
    let to_name = rules.state_name(target);
    let Some(declared_events) = rules.allowed.get(&(current, target)) else {
        return Err(Error::InvalidTransition {
            id: input.id.to_owned(),
            from: current_name.to_owned(),
            to: Some(to_name.to_owned()),
            event: event.map(str::to_owned),
        });
    };

    // 8. Guards.
    let guard_input = NamedGuardInput {
        entity: &entity,
        to: to_name,
        event,
        declared_events,
        payload: request.payload.as_ref(),
        actor: request.actor.as_deref(),
    };
    if let Err(reason) = (input.guard)(&guard_input) {
        return Err(Error::GuardRejected {
            id: input.id.to_owned(),
            from: current_name.to_owned(),
            to: to_name.to_owned(),
            reason,
        });
    }

    // 9. Apply. Timestamps never go back for one entity, so its outbox events
    // stay in version order even if the clock does.
    let at = input.now.max(record.updated_at);
    let version = record.version + 1;
    let outcome = OutcomeRecord {
        id: input.id.to_owned(),
        state: to_name.to_owned(),
        version,
        applied: true,
        from: Some(current_name.to_owned()),
        event: event.map(str::to_owned),
        replay: false,
        at,
    };
    let key_record = key_record(input, &outcome);
    let arm = rules.def().timeout_of(to_name).map(|timeout| {
        arm_timeout(
            input.id,
            to_name,
            version,
            at,
            timeout.after_ms,
            &timeout.event,
        )
    });
    let disarm = rules
        .def()
        .timeout_of(current_name)
        .map(|_| timeout_key(input.id, &record.state, record.version));
    Ok(Decision::Apply(Box::new(Applied {
        arm,
        disarm,
        previous_state: Some(record.state.clone()),
        record: EntityRecord {
            id: input.id.to_owned(),
            state: to_name.to_owned(),
            version,
            created_at: record.created_at,
            updated_at: at,
        },
        history: HistoryRecord {
            version,
            from: Some(current_name.to_owned()),
            to: to_name.to_owned(),
            event: event.map(str::to_owned),
            key: request.key.clone(),
            payload: request.payload.clone(),
            actor: request.actor.clone(),
            at,
        },
        outcome,
        key_record,
    })))
}

fn key_record(input: &DecisionInput<'_>, outcome: &OutcomeRecord) -> Option<KeyRecord> {
    input.request.key.as_ref().map(|_| KeyRecord {
        fingerprint: input.fingerprints[0],
        expires_at: input.now.saturating_add(input.key_retention_ms),
        outcome: outcome.clone(),
    })
}
