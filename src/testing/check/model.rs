//! The reference model: SPEC sections 2 and 3 over one machine's
//! declaration, in memory, written from the spec without calling the
//! engine's decision code; and errors in the model's terms.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, InputField};
use crate::machine::{MachineEvent, StateMachine};
use crate::outcome::{HistoryRecord, OutcomeRecord};

use super::ops::{payload_of, ExpectSel, KeySel, Op, TargetSel, ACTORS, IDS, KEYS, SCOPES};
use super::request::{same_request, Key, Req, Target};

/// An error as the model predicts it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ModelError {
    /// [`Error::InvalidInput`], by field.
    InvalidInput(InputField),
    /// [`Error::NotFound`].
    NotFound {
        /// The entity id.
        id: String,
    },
    /// [`Error::InvalidTransition`].
    InvalidTransition {
        /// The entity id.
        id: String,
        /// Its current state.
        from: String,
        /// The requested state, if the request named one.
        to: Option<String>,
        /// The requested event, if the request fired one.
        event: Option<String>,
    },
    /// [`Error::VersionConflict`].
    VersionConflict {
        /// The entity id.
        id: String,
        /// The version the request expected.
        expected: u64,
        /// The entity's version.
        actual: u64,
    },
    /// [`Error::KeyReused`].
    KeyReused,
    /// Any other engine error (never predicted).
    Other(String),
}

/// An outcome or error as the model predicts it (or as the engine gave it).
pub(super) type ModelResult = Result<OutcomeRecord, ModelError>;

/// An engine error in the model's terms.
pub(super) fn model_error(error: Error) -> ModelError {
    match error {
        Error::InvalidInput { field, .. } => ModelError::InvalidInput(field),
        Error::NotFound { id, .. } => ModelError::NotFound { id },
        Error::InvalidTransition {
            id,
            from,
            to,
            event,
        } => ModelError::InvalidTransition {
            id,
            from,
            to,
            event,
        },
        Error::VersionConflict {
            id,
            expected,
            actual,
            ..
        } => ModelError::VersionConflict {
            id,
            expected,
            actual,
        },
        Error::KeyReused { .. } => ModelError::KeyReused,
        other => ModelError::Other(format!("{}: {other}", other.kind())),
    }
}

/// What a key remembers: its first request and that request's outcome.
#[derive(Clone, Debug)]
struct KeySeen {
    /// The first request with the key.
    request: Req,
    /// Its outcome.
    outcome: OutcomeRecord,
}

/// SPEC sections 2 and 3 over one machine's declaration, in memory.
#[derive(Clone, Debug)]
pub(super) struct Model {
    /// The initial state.
    initial: &'static str,
    /// The declared states.
    pub(super) states: Vec<&'static str>,
    /// The declared events.
    pub(super) events: Vec<&'static str>,
    /// (from, event, to)
    transitions: Vec<(&'static str, &'static str, &'static str)>,
    /// id -> history; the state is the last entry's `to`, the version its length.
    pub(super) entities: BTreeMap<String, Vec<HistoryRecord>>,
    /// What each key used so far remembers.
    keys: HashMap<Key, KeySeen>,
}

impl Model {
    /// A model of `M` with no entities and no keys.
    pub(super) fn of<M: StateMachine>() -> Self {
        Model {
            initial: M::initial().name(),
            states: M::states().iter().map(|state| state.name()).collect(),
            events: M::Event::all().iter().map(|event| event.name()).collect(),
            transitions: M::transitions()
                .iter()
                .map(|t| (t.from.name(), t.event.name(), t.to.name()))
                .collect(),
            entities: BTreeMap::new(),
            keys: HashMap::new(),
        }
    }

    /// An entity's version (0 when it does not exist).
    fn version(&self, id: &str) -> u64 {
        self.entities
            .get(id)
            .map_or(0, |history| history.len() as u64)
    }

    /// An entity's state, if it exists.
    fn state(&self, id: &str) -> Option<String> {
        self.entities
            .get(id)
            .and_then(|history| history.last())
            .map(|entry| entry.to.clone())
    }

    /// Step 1: input limits (the defaults).
    fn check_input(req: &Req) -> Result<(), ModelError> {
        if req.id.is_empty() || req.id.len() > 1024 {
            return Err(ModelError::InvalidInput(InputField::Id));
        }
        if let Some(key) = &req.key {
            if key.key.is_empty() || key.key.len() > 255 {
                return Err(ModelError::InvalidInput(InputField::Key));
            }
        }
        Ok(())
    }

    /// Step 2: key replay. `Some` answers the request.
    fn replay(&self, req: &Req) -> Option<ModelResult> {
        let seen = self.keys.get(req.key.as_ref()?)?;
        if same_request(&seen.request, req) {
            let mut outcome = seen.outcome.clone();
            outcome.replay = true;
            Some(Ok(outcome))
        } else {
            Some(Err(ModelError::KeyReused))
        }
    }

    /// Remembers a keyed request's outcome under its key.
    fn remember(&mut self, req: &Req, outcome: &OutcomeRecord) {
        if let Some(key) = &req.key {
            self.keys.insert(
                key.clone(),
                KeySeen {
                    request: req.clone(),
                    outcome: outcome.clone(),
                },
            );
        }
    }

    /// A no-op outcome (`applied: false`) for an entity at `state`, `version`.
    fn outcome(id: &str, state: &str, version: u64, at: u64) -> OutcomeRecord {
        OutcomeRecord {
            id: id.to_owned(),
            state: state.to_owned(),
            version,
            applied: false,
            from: None,
            event: None,
            replay: false,
            at,
        }
    }

    /// Runs a request at time `at`.
    pub(super) fn run(&mut self, req: &Req, at: u64) -> ModelResult {
        Model::check_input(req)?;
        if let Some(answer) = self.replay(req) {
            return answer;
        }
        match &req.target {
            None => Ok(self.create(req, at)),
            Some(target) => self.apply(req, target, at),
        }
    }

    /// SPEC section 2: an existing entity is a no-op; otherwise version 1
    /// in the initial state.
    fn create(&mut self, req: &Req, at: u64) -> OutcomeRecord {
        if let Some(state) = self.state(&req.id) {
            let outcome = Model::outcome(&req.id, &state, self.version(&req.id), at);
            self.remember(req, &outcome);
            return outcome;
        }
        self.entities.insert(
            req.id.clone(),
            vec![HistoryRecord {
                version: 1,
                from: None,
                to: self.initial.to_owned(),
                event: None,
                key: req.key.as_ref().map(|key| key.key.clone()),
                payload: req.payload.clone(),
                actor: req.actor.clone(),
                at,
            }],
        );
        let outcome = OutcomeRecord {
            applied: true,
            ..Model::outcome(&req.id, self.initial, 1, at)
        };
        self.remember(req, &outcome);
        outcome
    }

    /// SPEC section 3, steps 3 to 9 (no guards).
    fn apply(&mut self, req: &Req, target: &Target, at: u64) -> ModelResult {
        // 3. Existence.
        let Some(current) = self.state(&req.id) else {
            return Err(ModelError::NotFound { id: req.id.clone() });
        };
        let version = self.version(&req.id);
        // 4. Target: a state, or the event's target from here; an event
        // whose target is the current state counts as reached.
        let (to, event) = match target {
            Target::To(state) => ((*state).to_owned(), None),
            Target::Fire(event) => {
                let declared = self
                    .transitions
                    .iter()
                    .find(|(from, e, _)| *from == current && e == event);
                let reached = self
                    .transitions
                    .iter()
                    .any(|(_, e, to)| e == event && *to == current);
                match declared {
                    Some((_, _, to)) => ((*to).to_owned(), Some((*event).to_owned())),
                    None if reached => (current.clone(), Some((*event).to_owned())),
                    None => {
                        return Err(ModelError::InvalidTransition {
                            id: req.id.clone(),
                            from: current,
                            to: None,
                            event: Some((*event).to_owned()),
                        })
                    }
                }
            }
        };
        // 5. Already reached: a no-op; the expected version is not checked.
        if to == current {
            let outcome = Model::outcome(&req.id, &current, version, at);
            self.remember(req, &outcome);
            return Ok(outcome);
        }
        // 6. Expected version.
        if let Some(expected) = req.expected {
            if expected != version {
                return Err(ModelError::VersionConflict {
                    id: req.id.clone(),
                    expected,
                    actual: version,
                });
            }
        }
        // 7. Legality.
        if !self
            .transitions
            .iter()
            .any(|(from, _, t)| *from == current && *t == to)
        {
            return Err(ModelError::InvalidTransition {
                id: req.id.clone(),
                from: current,
                to: Some(to),
                event,
            });
        }
        // 9. Apply.
        let entry = HistoryRecord {
            version: version + 1,
            from: Some(current.clone()),
            to: to.clone(),
            event: event.clone(),
            key: req.key.as_ref().map(|key| key.key.clone()),
            payload: req.payload.clone(),
            actor: req.actor.clone(),
            at,
        };
        if let Some(history) = self.entities.get_mut(&req.id) {
            history.push(entry);
        }
        let outcome = OutcomeRecord {
            id: req.id.clone(),
            state: to,
            version: version + 1,
            applied: true,
            from: Some(current),
            event,
            replay: false,
            at,
        };
        self.remember(req, &outcome);
        Ok(outcome)
    }

    /// The request an operation stands for, given the model's state.
    pub(super) fn resolve(&self, op: &Op) -> Option<Req> {
        let id_of = |id: usize| IDS.get(id).copied().unwrap_or("").to_owned();
        let key_of = |key: &Option<KeySel>| {
            key.as_ref().map(|selection| Key {
                key: KEYS.get(selection.key).copied().unwrap_or("").to_owned(),
                scope: selection.scope.map(|scope| SCOPES[scope].to_owned()),
            })
        };
        let actor_of = |actor: &Option<usize>| actor.map(|actor| ACTORS[actor].to_owned());
        match op {
            Op::Create {
                id,
                key,
                payload,
                actor,
            } => Some(Req {
                id: id_of(*id),
                target: None,
                key: key_of(key),
                expected: None,
                payload: payload_of(*payload),
                actor: actor_of(actor),
            }),
            Op::Apply {
                id,
                target,
                key,
                expect,
                payload,
                actor,
            } => {
                let id = id_of(*id);
                let current = self.version(&id);
                let target = match target {
                    TargetSel::Fire(i) if !self.events.is_empty() => {
                        Target::Fire(self.events[i % self.events.len()])
                    }
                    TargetSel::Fire(i) | TargetSel::To(i) => {
                        Target::To(self.states[i % self.states.len()])
                    }
                };
                let expected = match expect {
                    ExpectSel::None => None,
                    ExpectSel::Right => Some(current),
                    ExpectSel::Wrong(delta) => Some(current.saturating_add_signed(*delta)),
                };
                Some(Req {
                    id,
                    target: Some(target),
                    key: key_of(key),
                    expected,
                    payload: payload_of(*payload),
                    actor: actor_of(actor),
                })
            }
            Op::Repeat | Op::Concurrent | Op::Reopen => None,
        }
    }
}
