//! Creations (SPEC section 2), keyed or not.

use serde_json::Value;

use super::{Applied, Decision, KeyRecord, MachineRules};
use crate::error::{Error, Result};
use crate::outcome::{EntityRecord, HistoryRecord, OutcomeRecord};
use crate::request::{Fingerprint, RequestSpec, Target};
use crate::timers::arm_timeout;

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
