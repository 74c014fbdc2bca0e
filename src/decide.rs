//! The decision core: what a request does to an entity, as a pure function.
//!
//! [`decide`] implements SPEC section 3, steps 2 to 9, over the machine's
//! rules, the entity's current record, the idempotency key's record and the
//! request. It knows nothing of storage: a backend loads the two records,
//! calls it, and writes exactly what the returned [`Decision`] says in one
//! atomic step. Step 1 (input limits and names) is [`check_request`], run
//! before anything is read.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::error::{Error, InputField, Result};
use crate::machine::MachineDef;
use crate::outcome::{EntityRecord, HistoryRecord, OutcomeRecord};
use crate::request::{Fingerprint, Limits, RequestSpec, Target};
use crate::timers::{arm_timeout, timeout_key, TimerRecord};

/// A machine definition indexed for fast decisions. State and event names
/// resolve through aliases: a stored or requested old name reads as the
/// current state or event, and every name the decision writes is current.
#[derive(Debug)]
pub(crate) struct MachineRules {
    def: MachineDef,
    /// Current names and aliases -> state index.
    state_index: HashMap<String, usize>,
    /// Event aliases -> current event name.
    event_alias: HashMap<String, String>,
    /// Per from-state index: event name -> target state index.
    next: Vec<HashMap<String, usize>>,
    /// Event name -> every target state index of that event.
    event_targets: HashMap<String, HashSet<usize>>,
    /// Declared (from, to) pairs, with the events that declare them.
    allowed: HashMap<(usize, usize), Vec<String>>,
}

impl MachineRules {
    /// Indexes a definition; it must already be valid.
    pub(crate) fn new(def: MachineDef) -> Self {
        let mut state_index: HashMap<String, usize> = HashMap::new();
        for (i, state) in def.states.iter().enumerate() {
            for alias in &state.aliases {
                state_index.entry(alias.clone()).or_insert(i);
            }
        }
        for (i, state) in def.states.iter().enumerate() {
            state_index.insert(state.name.clone(), i);
        }
        let event_alias = def
            .event_aliases
            .iter()
            .filter(|alias| def.has_event(&alias.event) && !def.has_event(&alias.alias))
            .map(|alias| (alias.alias.clone(), alias.event.clone()))
            .collect();
        let mut next = vec![HashMap::new(); def.states.len()];
        let mut event_targets: HashMap<String, HashSet<usize>> = HashMap::new();
        let mut allowed: HashMap<(usize, usize), Vec<String>> = HashMap::new();
        for t in &def.transitions {
            if let (Some(&from), Some(&to)) = (state_index.get(&t.from), state_index.get(&t.to)) {
                next[from].entry(t.event.clone()).or_insert(to);
                event_targets.entry(t.event.clone()).or_default().insert(to);
                allowed.entry((from, to)).or_default().push(t.event.clone());
            }
        }
        MachineRules {
            def,
            state_index,
            event_alias,
            next,
            event_targets,
            allowed,
        }
    }

    /// The definition.
    pub(crate) fn def(&self) -> &MachineDef {
        &self.def
    }

    /// The machine's name.
    pub(crate) fn name(&self) -> &str {
        &self.def.name
    }

    fn state(&self, name: &str) -> Option<usize> {
        self.state_index.get(name).copied()
    }

    fn state_name(&self, index: usize) -> &str {
        &self.def.states[index].name
    }

    /// The current name of a state called `name` now or formerly.
    pub(crate) fn canonical_state<'a>(&'a self, name: &'a str) -> &'a str {
        self.state(name)
            .map_or(name, |index| self.state_name(index))
    }

    /// The current name of an event called `name` now or formerly.
    pub(crate) fn canonical_event<'a>(&'a self, name: &'a str) -> &'a str {
        self.event_alias.get(name).map_or(name, String::as_str)
    }

    /// Every name a state was ever called, current first (for replays of
    /// requests made before a rename).
    pub(crate) fn state_names<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        match self.state(name) {
            Some(index) => {
                let state = &self.def.states[index];
                std::iter::once(state.name.as_str())
                    .chain(state.aliases.iter().map(String::as_str))
                    .collect()
            }
            None => vec![name],
        }
    }

    /// Every name an event was ever called, current first.
    pub(crate) fn event_names<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        let current = self.canonical_event(name);
        std::iter::once(current)
            .chain(
                self.event_alias
                    .iter()
                    .filter(|(_, event)| event.as_str() == current)
                    .map(|(alias, _)| alias.as_str()),
            )
            .collect()
    }

    /// Whether the machine declares renames (then fingerprints have variants).
    pub(crate) fn has_aliases(&self) -> bool {
        !self.event_alias.is_empty() || self.def.states.iter().any(|s| !s.aliases.is_empty())
    }

    /// An outcome with every state and event name current.
    pub(crate) fn canonical_outcome(&self, mut outcome: OutcomeRecord) -> OutcomeRecord {
        if self.has_aliases() {
            outcome.state = self.canonical_state(&outcome.state).to_owned();
            outcome.from = outcome
                .from
                .map(|from| self.canonical_state(&from).to_owned());
            outcome.event = outcome
                .event
                .map(|event| self.canonical_event(&event).to_owned());
        }
        outcome
    }

    /// A request with its target named by the current name.
    pub(crate) fn canonical_request(&self, request: &mut RequestSpec) {
        let current = match &request.target {
            Target::To(state) => self.canonical_state(state),
            Target::Fire(event) => self.canonical_event(event),
        };
        if current != request.target.name() {
            let current = current.to_owned();
            request.target = match request.target {
                Target::To(_) => Target::To(current.into()),
                Target::Fire(_) => Target::Fire(current.into()),
            };
        }
    }

    /// The fingerprints a stored key record may hold for this request: the
    /// current one first, then the ones it had under every former name of
    /// its target (a request made before a rename replays after it).
    /// Each comes with its variant from before JSON numbers were canonical,
    /// when that differs (see [`Fingerprint::variants`]).
    pub(crate) fn fingerprints(&self, id: &str, request: &RequestSpec) -> Vec<Fingerprint> {
        let mut prints = Fingerprint::variants(id, request);
        if !self.has_aliases() {
            return prints;
        }
        let names = match &request.target {
            Target::To(state) => self.state_names(state),
            Target::Fire(event) => self.event_names(event),
        };
        for name in names.into_iter().skip(1) {
            let mut former = request.clone();
            former.target = match request.target {
                Target::To(_) => Target::To(name.to_owned().into()),
                Target::Fire(_) => Target::Fire(name.to_owned().into()),
            };
            prints.extend(Fingerprint::variants(id, &former));
        }
        prints
    }
}

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

/// What a creation records besides the id.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CreateSpec {
    pub(crate) payload: Option<Value>,
    pub(crate) actor: Option<String>,
    /// An idempotency key, for a creation whose retry must replay its outcome.
    pub(crate) key: Option<String>,
    /// The key's scope.
    pub(crate) scope: Option<String>,
}

impl CreateSpec {
    /// The stored form of the key (scope included), if keyed.
    pub(crate) fn stored_key(&self) -> Option<Vec<u8>> {
        let key = self.key.as_deref()?;
        Some(crate::request::stored_key(self.scope.as_deref(), key))
    }

    /// The creation's fingerprints: over the id, a tag no transition has,
    /// the payload and the actor; the current one first (the one stored),
    /// then its variant from before JSON numbers were canonical, if it differs.
    pub(crate) fn fingerprints(&self, id: &str) -> Vec<Fingerprint> {
        let mut as_request = RequestSpec::new(Target::To("\u{0}create".into()));
        as_request.payload = self.payload.clone();
        as_request.actor = self.actor.clone();
        Fingerprint::variants(id, &as_request)
    }
}

/// Decides a keyed or unkeyed creation: key replay first (SPEC step 2, as
/// for any request), then [`decide_create`]; a keyed creation stores its key
/// with its outcome (a retry replays the creation, 201 and all).
pub(crate) fn decide_create_keyed(
    rules: &MachineRules,
    id: &str,
    record: Option<&EntityRecord>,
    key_record: Option<&KeyRecord>,
    create: &CreateSpec,
    now: u64,
    key_retention_ms: u64,
) -> Result<Decision> {
    let fingerprints = create.fingerprints(id);
    let fingerprint = fingerprints[0];
    if let (Some(key), Some(seen)) = (&create.key, key_record) {
        if seen.expires_at > now {
            if fingerprints.contains(&seen.fingerprint) {
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
    let mut decision = decide_create(rules, id, record, create, now);
    if create.key.is_some() {
        let stored = |outcome: &OutcomeRecord| KeyRecord {
            fingerprint,
            expires_at: now.saturating_add(key_retention_ms),
            outcome: outcome.clone(),
        };
        match &mut decision {
            Decision::Apply(applied) => {
                applied.key_record = Some(stored(&applied.outcome));
                applied.history.key = create.key.clone();
            }
            Decision::NoOp {
                outcome,
                key_record,
            } => *key_record = Some(stored(outcome)),
            Decision::Replay(_) => {}
        }
    }
    Ok(decision)
}

/// Decides a creation (SPEC section 2): the initial state at version 1, or a
/// no-op returning the existing record whatever its state.
pub(crate) fn decide_create(
    rules: &MachineRules,
    id: &str,
    record: Option<&EntityRecord>,
    create: &CreateSpec,
    now: u64,
) -> Decision {
    if let Some(record) = record {
        return Decision::NoOp {
            outcome: OutcomeRecord {
                id: id.to_owned(),
                state: rules.canonical_state(&record.state).to_owned(),
                version: record.version,
                applied: false,
                from: None,
                event: None,
                replay: false,
                at: now,
            },
            key_record: None,
        };
    }
    let initial = rules.def().initial.clone();
    let arm = rules
        .def()
        .timeout_of(&initial)
        .map(|timeout| arm_timeout(id, &initial, 1, now, timeout.after_ms, &timeout.event));
    Decision::Apply(Box::new(Applied {
        arm,
        disarm: None,
        outcome: OutcomeRecord {
            id: id.to_owned(),
            state: initial.clone(),
            version: 1,
            applied: true,
            from: None,
            event: None,
            replay: false,
            at: now,
        },
        previous_state: None,
        record: EntityRecord {
            id: id.to_owned(),
            state: initial.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
        },
        history: HistoryRecord {
            version: 1,
            from: None,
            to: initial,
            event: None,
            key: None,
            payload: create.payload.clone(),
            actor: create.actor.clone(),
            at: now,
        },
        key_record: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> MachineRules {
        MachineRules::new(
            MachineDef::new("order", "draft")
                .state("draft")
                .state("submitted")
                .state("paid")
                .terminal_state("shipped")
                .terminal_state("cancelled")
                .terminal_state("refunded")
                .transition("draft", "submit", "submitted")
                .transition("draft", "cancel", "cancelled")
                .transition("submitted", "pay", "paid")
                .transition("submitted", "cancel", "cancelled")
                .transition("paid", "ship", "shipped")
                .transition("paid", "refund", "refunded"),
        )
    }

    fn record(state: &str, version: u64) -> EntityRecord {
        EntityRecord {
            id: "o-1".into(),
            state: state.into(),
            version,
            created_at: 10,
            updated_at: 20,
        }
    }

    fn to(state: &str) -> RequestSpec {
        RequestSpec {
            target: Target::To(state.to_owned().into()),
            key: None,
            scope: None,
            expected_version: None,
            payload: None,
            actor: None,
        }
    }

    fn fire(event: &str) -> RequestSpec {
        RequestSpec {
            target: Target::Fire(event.to_owned().into()),
            ..to("draft")
        }
    }

    fn run(
        rules: &MachineRules,
        record: Option<&EntityRecord>,
        key_record: Option<&KeyRecord>,
        request: &RequestSpec,
    ) -> Result<Decision> {
        decide(&DecisionInput {
            rules,
            id: "o-1",
            record,
            key_record,
            request,
            fingerprints: &[Fingerprint::of("o-1", request)],
            now: 100,
            key_retention_ms: 1000,
            guard: &no_guards,
        })
    }

    #[test]
    fn step1_rejects_unknown_names_and_limits() {
        let rules = order();
        let limits = Limits::default();
        assert!(matches!(
            check_request(&rules, &limits, "o-1", &to("lost")),
            Err(Error::InvalidInput {
                field: InputField::State,
                ..
            })
        ));
        assert!(matches!(
            check_request(&rules, &limits, "o-1", &fire("teleport")),
            Err(Error::InvalidInput {
                field: InputField::Event,
                ..
            })
        ));
        assert!(matches!(
            check_request(&rules, &limits, "", &to("paid")),
            Err(Error::InvalidInput {
                field: InputField::Id,
                ..
            })
        ));
        assert!(check_request(&rules, &limits, "o-1", &fire("pay")).is_ok());
    }

    #[test]
    fn step2_replays_the_original_outcome_even_after_the_entity_moved_on() {
        let rules = order();
        let mut request = to("submitted");
        request.key = Some("k".into());
        let first = run(&rules, Some(&record("draft", 1)), None, &request).unwrap();
        let Decision::Apply(applied) = first else {
            panic!("expected an applied change")
        };
        let stored = applied
            .key_record
            .clone()
            .expect("keyed request stores its key");
        assert_eq!(stored.expires_at, 1100);
        let again = run(&rules, Some(&record("paid", 3)), Some(&stored), &request).unwrap();
        let mut expected = applied.outcome.clone();
        expected.replay = true;
        assert_eq!(again, Decision::Replay(expected));
    }

    #[test]
    fn step2_rejects_a_reused_key_and_forgets_expired_keys() {
        let rules = order();
        let mut request = to("submitted");
        request.key = Some("k".into());
        let stored = KeyRecord {
            fingerprint: Fingerprint::of("other", &request),
            expires_at: 1000,
            outcome: OutcomeRecord {
                id: "other".into(),
                state: "submitted".into(),
                version: 2,
                applied: true,
                from: Some("draft".into()),
                event: None,
                replay: false,
                at: 1,
            },
        };
        let error = run(&rules, Some(&record("draft", 1)), Some(&stored), &request).unwrap_err();
        assert!(matches!(error, Error::KeyReused { ref key, .. } if key == "k"));
        let expired = KeyRecord {
            expires_at: 100,
            ..stored
        };
        let decision = run(&rules, Some(&record("draft", 1)), Some(&expired), &request).unwrap();
        assert!(matches!(decision, Decision::Apply(_)));
    }

    #[test]
    fn step3_missing_entity_is_not_found() {
        let rules = order();
        assert!(matches!(
            run(&rules, None, None, &to("submitted")),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn step4_fire_resolves_the_target_or_recognises_it_as_reached() {
        let rules = order();
        let decision = run(&rules, Some(&record("submitted", 2)), None, &fire("pay")).unwrap();
        let Decision::Apply(applied) = decision else {
            panic!("expected an applied change")
        };
        assert_eq!(applied.record.state, "paid");
        assert_eq!(applied.history.event.as_deref(), Some("pay"));
        // Paid already: firing pay again is a no-op.
        let decision = run(&rules, Some(&record("paid", 3)), None, &fire("pay")).unwrap();
        assert!(matches!(decision, Decision::NoOp { .. }));
        // Shipped: pay is neither declared from here nor leads here.
        let error = run(&rules, Some(&record("shipped", 4)), None, &fire("pay")).unwrap_err();
        assert!(
            matches!(error, Error::InvalidTransition { ref from, to: None, ref event, .. } if from == "shipped" && event.as_deref() == Some("pay"))
        );
    }

    #[test]
    fn step5_noop_ignores_the_expected_version_and_writes_only_the_key() {
        let rules = order();
        let mut request = to("paid");
        request.expected_version = Some(1);
        request.key = Some("k".into());
        let decision = run(&rules, Some(&record("paid", 3)), None, &request).unwrap();
        let Decision::NoOp {
            outcome,
            key_record,
        } = decision
        else {
            panic!("expected a no-op")
        };
        assert_eq!((outcome.state.as_str(), outcome.version), ("paid", 3));
        assert!(!outcome.applied);
        assert_eq!(key_record.map(|k| k.outcome), Some(outcome));
    }

    #[test]
    fn step6_expected_version_must_match() {
        let rules = order();
        let mut request = to("paid");
        request.expected_version = Some(1);
        let error = run(&rules, Some(&record("submitted", 2)), None, &request).unwrap_err();
        assert!(matches!(
            error,
            Error::VersionConflict {
                expected: 1,
                actual: 2,
                ..
            }
        ));
        request.expected_version = Some(2);
        assert!(run(&rules, Some(&record("submitted", 2)), None, &request).is_ok());
    }

    #[test]
    fn step7_undeclared_transition_is_invalid() {
        let rules = order();
        let error = run(&rules, Some(&record("draft", 1)), None, &to("shipped")).unwrap_err();
        assert!(
            matches!(error, Error::InvalidTransition { ref from, ref to, .. } if from == "draft" && to.as_deref() == Some("shipped"))
        );
    }

    #[test]
    fn step8_guard_rejects_with_its_reason() {
        let rules = order();
        let mut request = to("paid");
        request.payload = Some(json!({"amount": 0}));
        let guard = |input: &NamedGuardInput<'_>| {
            if input.payload.and_then(|p| p["amount"].as_u64()) == Some(0) {
                Err(format!("nothing to charge for {}", input.entity.id))
            } else {
                Ok(())
            }
        };
        let error = decide(&DecisionInput {
            rules: &rules,
            id: "o-1",
            record: Some(&record("submitted", 2)),
            key_record: None,
            request: &request,
            fingerprints: &[Fingerprint::of("o-1", &request)],
            now: 100,
            key_retention_ms: 1000,
            guard: &guard,
        })
        .unwrap_err();
        assert!(
            matches!(error, Error::GuardRejected { ref reason, ref to, .. } if reason == "nothing to charge for o-1" && to == "paid")
        );
    }

    #[test]
    fn step9_applies_version_plus_one_with_monotonic_time() {
        let rules = order();
        let mut request = to("submitted");
        request.actor = Some("alice".into());
        let mut current = record("draft", 1);
        current.updated_at = 500; // later than `now`: the clock went back
        let Decision::Apply(applied) = run(&rules, Some(&current), None, &request).unwrap() else {
            panic!("expected an applied change")
        };
        assert_eq!(applied.record.version, 2);
        assert_eq!(applied.record.updated_at, 500);
        assert_eq!(applied.record.created_at, 10);
        assert_eq!(applied.previous_state.as_deref(), Some("draft"));
        assert_eq!(applied.history.version, 2);
        assert_eq!(applied.history.actor.as_deref(), Some("alice"));
        assert!(applied.key_record.is_none());
        assert!(applied.outcome.applied && !applied.outcome.replay);
    }

    #[test]
    fn create_is_a_noop_for_an_existing_entity() {
        let rules = order();
        let decision = decide_create(&rules, "o-1", None, &CreateSpec::default(), 7);
        let Decision::Apply(applied) = decision else {
            panic!("expected a creation")
        };
        assert_eq!(
            (applied.record.state.as_str(), applied.record.version),
            ("draft", 1)
        );
        let existing = record("paid", 3);
        let decision = decide_create(&rules, "o-1", Some(&existing), &CreateSpec::default(), 7);
        assert!(
            matches!(decision, Decision::NoOp { ref outcome, .. } if outcome.state == "paid" && outcome.version == 3 && !outcome.applied)
        );
    }
}
