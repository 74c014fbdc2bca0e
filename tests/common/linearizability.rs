//! The linearizability checker (SPEC section 4), shared by
//! `tests/linearizability.rs` (threads of one engine) and
//! `tests/postgres_replicas.rs` (engine processes sharing one database):
//! the operations of a history, a sequential model of SPEC section 3 for one
//! entity, and a Wing-Gong search with memoization of (linearized set, model
//! state) over each entity's history.

use std::collections::{BTreeMap, HashSet};

use idemflow::{Error, MachineDef, NamedMachine, NamedRequest, OutcomeRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Idempotency keys drawn per entity.
pub const KEYS_PER_ENTITY: usize = 3;

/// A ring with a shortcut and a way back: `next` is declared from every
/// state (with a different target each time), `skip` and `reset` only from one.
pub fn ring() -> MachineDef {
    MachineDef::new("ring", "a")
        .state("a")
        .state("b")
        .state("c")
        .transition("a", "next", "b")
        .transition("b", "next", "c")
        .transition("c", "next", "a")
        .transition("a", "skip", "c")
        .transition("b", "reset", "a")
}

// ------------------------------------------------------------ operations

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    To(String),
    Fire(String),
}

/// What a request's fingerprint covers in the model: target, expected
/// version, payload (the key names the record; the id is implied).
pub type RequestPrint = (Target, Option<u64>, Option<u64>);

/// A transition request, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Req {
    pub target: Target,
    pub key: Option<String>,
    pub expect: Option<u64>,
    pub payload: Option<u64>,
}

impl Req {
    /// What the fingerprint covers: everything but the key (the id is
    /// implied, histories are per entity).
    pub fn fingerprint(&self) -> RequestPrint {
        (self.target.clone(), self.expect, self.payload)
    }

    pub fn named(&self) -> NamedRequest {
        let mut request = match &self.target {
            Target::To(state) => NamedRequest::to(state.clone()),
            Target::Fire(event) => NamedRequest::fire(event.clone()),
        };
        if let Some(key) = &self.key {
            request = request.key(key.clone());
        }
        if let Some(version) = self.expect {
            request = request.expect_version(version);
        }
        if let Some(amount) = self.payload {
            request = request.payload(json!({ "amount": amount }));
        }
        request
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Call {
    Create,
    Get,
    Apply(Req),
}

/// What a call returned, reduced to what the model predicts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ret {
    Outcome(Out),
    Got(Option<(String, u64)>),
    NotFound,
    InvalidTransition {
        from: String,
        to: Option<String>,
        event: Option<String>,
    },
    VersionConflict {
        expected: u64,
        actual: u64,
    },
    KeyReused,
    /// Anything else: never linearizable.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Out {
    pub state: String,
    pub version: u64,
    pub applied: bool,
    pub replay: bool,
    pub from: Option<String>,
    pub event: Option<String>,
    pub at: u64,
}

impl From<OutcomeRecord> for Out {
    fn from(record: OutcomeRecord) -> Self {
        Out {
            state: record.state,
            version: record.version,
            applied: record.applied,
            replay: record.replay,
            from: record.from,
            event: record.event,
            at: record.at,
        }
    }
}

pub fn ret_of(result: idemflow::Result<OutcomeRecord>) -> Ret {
    match result {
        Ok(record) => Ret::Outcome(record.into()),
        Err(error) => ret_of_error(error),
    }
}

pub fn ret_of_error(error: Error) -> Ret {
    match error {
        Error::NotFound { .. } => Ret::NotFound,
        Error::InvalidTransition {
            from, to, event, ..
        } => Ret::InvalidTransition { from, to, event },
        Error::VersionConflict {
            expected, actual, ..
        } => Ret::VersionConflict { expected, actual },
        Error::KeyReused { .. } => Ret::KeyReused,
        other => Ret::Other(format!("{other:?}")),
    }
}

/// One operation of a history: its call, what it returned, and when it was
/// invoked and when it returned on the global clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Operation {
    pub thread: usize,
    pub call: Call,
    pub ret: Ret,
    pub invoked: u64,
    pub returned: u64,
}

// ------------------------------------------------------------ the model

/// The sequential model of one entity and the keys used on it (SPEC section 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Model {
    pub entity: Option<(String, u64)>,
    pub keys: BTreeMap<String, (RequestPrint, Out)>,
}

impl Model {
    pub fn new() -> Self {
        Model {
            entity: None,
            keys: BTreeMap::new(),
        }
    }
}

/// What `call` returns on `model` and the model afterwards. `at` is the
/// timestamp the model gives a new outcome (the checker passes the observed one).
pub fn predict(def: &MachineDef, model: &Model, call: &Call, at: u64) -> (Ret, Model) {
    let mut next = model.clone();
    let outcome =
        |state: &str, version: u64, applied: bool, from: Option<&str>, event: Option<&str>| Out {
            state: state.to_owned(),
            version,
            applied,
            replay: false,
            from: from.map(str::to_owned),
            event: event.map(str::to_owned),
            at,
        };
    match call {
        Call::Get => (Ret::Got(model.entity.clone()), next),
        Call::Create => match &model.entity {
            None => {
                next.entity = Some((def.initial.clone(), 1));
                (
                    Ret::Outcome(outcome(&def.initial, 1, true, None, None)),
                    next,
                )
            }
            Some((state, version)) => (
                Ret::Outcome(outcome(state, *version, false, None, None)),
                next,
            ),
        },
        Call::Apply(req) => {
            // 2. Key replay.
            if let Some(key) = &req.key {
                if let Some((fingerprint, stored)) = model.keys.get(key) {
                    if *fingerprint == req.fingerprint() {
                        let mut replay = stored.clone();
                        replay.replay = true;
                        return (Ret::Outcome(replay), next);
                    }
                    return (Ret::KeyReused, next);
                }
            }
            // 3. Existence.
            let Some((current, version)) = &model.entity else {
                return (Ret::NotFound, next);
            };
            // 4. Target.
            let (target, event) = match &req.target {
                Target::To(state) => (state.clone(), None),
                Target::Fire(event) => match def.target(current, event) {
                    Some(to) => (to.to_owned(), Some(event.clone())),
                    None if def
                        .transitions
                        .iter()
                        .any(|t| &t.event == event && &t.to == current) =>
                    {
                        (current.clone(), Some(event.clone()))
                    }
                    None => {
                        return (
                            Ret::InvalidTransition {
                                from: current.clone(),
                                to: None,
                                event: Some(event.clone()),
                            },
                            next,
                        )
                    }
                },
            };
            // 5. Already reached.
            if &target == current {
                let out = outcome(current, *version, false, None, None);
                if let Some(key) = &req.key {
                    next.keys
                        .insert(key.clone(), (req.fingerprint(), out.clone()));
                }
                return (Ret::Outcome(out), next);
            }
            // 6. Expected version.
            if let Some(expected) = req.expect {
                if expected != *version {
                    return (
                        Ret::VersionConflict {
                            expected,
                            actual: *version,
                        },
                        next,
                    );
                }
            }
            // 7. Legality.
            if !def.allows(current, &target) {
                return (
                    Ret::InvalidTransition {
                        from: current.clone(),
                        to: Some(target),
                        event,
                    },
                    next,
                );
            }
            // 9. Apply.
            let out = outcome(&target, version + 1, true, Some(current), event.as_deref());
            next.entity = Some((target, version + 1));
            if let Some(key) = &req.key {
                next.keys
                    .insert(key.clone(), (req.fingerprint(), out.clone()));
            }
            (Ret::Outcome(out), next)
        }
    }
}

/// Whether an observed return is the predicted one: timestamps are free,
/// except that a replay returns the original outcome's exactly.
pub fn matches(predicted: &Ret, observed: &Ret) -> bool {
    match (predicted, observed) {
        (Ret::Outcome(p), Ret::Outcome(o)) if !p.replay => {
            Out { at: 0, ..p.clone() } == Out { at: 0, ..o.clone() }
        }
        _ => predicted == observed,
    }
}

// ------------------------------------------------------------ the checker

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation,
}

/// Wing-Gong search over one entity's history: is there an order of the
/// operations, consistent with real time (an operation that returned before
/// another was invoked comes first), in which every return is the model's?
pub fn check(def: &MachineDef, history: &[Operation]) -> (Verdict, usize) {
    assert!(
        history.len() <= 128,
        "histories are kept under 128 operations"
    );
    // Each thread is sequential: its operations do not overlap.
    for a in history {
        for b in history {
            if a.thread == b.thread && a.invoked < b.invoked {
                assert!(a.returned < b.invoked, "overlapping calls of one thread");
            }
        }
    }
    let full: u128 = if history.len() == 128 {
        u128::MAX
    } else {
        (1u128 << history.len()) - 1
    };
    let mut seen: HashSet<(u128, Model)> = HashSet::new();
    let found = search(def, history, full, 0, &Model::new(), &mut seen);
    let verdict = if found {
        Verdict::Linearizable
    } else {
        Verdict::Violation
    };
    (verdict, seen.len())
}

pub fn search(
    def: &MachineDef,
    history: &[Operation],
    full: u128,
    done: u128,
    model: &Model,
    seen: &mut HashSet<(u128, Model)>,
) -> bool {
    if done == full {
        return true;
    }
    if !seen.insert((done, model.clone())) {
        return false;
    }
    // An operation may come next only if no pending one returned before it was invoked.
    let horizon = history
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .map(|(_, op)| op.returned)
        .min()
        .unwrap();
    for (i, op) in history.iter().enumerate() {
        if done & (1 << i) != 0 || op.invoked > horizon {
            continue;
        }
        let at = match &op.ret {
            Ret::Outcome(out) => out.at,
            _ => 0,
        };
        let (predicted, next) = predict(def, model, &op.call, at);
        if matches(&predicted, &op.ret) && search(def, history, full, done | (1 << i), &next, seen)
        {
            return true;
        }
    }
    false
}

// ------------------------------------------------------------ subjects

/// Something that answers calls on entities: the engine, or a fake.
pub trait Subject: Sync {
    fn call(&self, id: &str, call: &Call) -> Ret;
}

pub struct Real(pub NamedMachine);

impl Subject for Real {
    fn call(&self, id: &str, call: &Call) -> Ret {
        match call {
            Call::Create => ret_of(self.0.create(id)),
            Call::Get => match self.0.get(id) {
                Ok(record) => Ret::Got(record.map(|r| (r.state, r.version))),
                Err(error) => ret_of_error(error),
            },
            Call::Apply(req) => ret_of(self.0.apply(id, req.named())),
        }
    }
}

// ------------------------------------------------------------ workload

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn random_target(rng: &mut Rng) -> Target {
    match rng.below(6) {
        0 => Target::To("a".into()),
        1 => Target::To("b".into()),
        2 => Target::To("c".into()),
        3 => Target::Fire("skip".into()),
        4 => Target::Fire("reset".into()),
        _ => Target::Fire("next".into()),
    }
}

/// A random call on entity `entity`: keys come from a small per-entity pool,
/// each usually with its own fixed request (so retries replay) and sometimes
/// with another (so `KeyReused` shows up).
pub fn random_call(rng: &mut Rng, entity: &str) -> Call {
    match rng.below(100) {
        0..=9 => Call::Create,
        10..=21 => Call::Get,
        _ => {
            let mut req = Req {
                target: random_target(rng),
                key: None,
                expect: None,
                payload: None,
            };
            if rng.below(100) < 40 {
                let k = rng.below(KEYS_PER_ENTITY as u64);
                req.key = Some(format!("{entity}-k{k}"));
                if rng.below(100) < 75 {
                    let mut canonical = Rng(k.wrapping_mul(7919) ^ entity.len() as u64);
                    req.target = random_target(&mut canonical);
                    req.payload = Some(k);
                }
            }
            if rng.below(100) < 20 {
                req.expect = Some(1 + rng.below(5));
            }
            Call::Apply(req)
        }
    }
}
