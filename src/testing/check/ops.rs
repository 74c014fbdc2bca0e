//! The random operations a sequence is made of, and their proptest
//! strategies: creations and transitions over a few ids, keys, scopes and
//! actors, retries, concurrent duplicates and reopening the database.

use proptest::prelude::*;
use serde_json::{json, Value};

/// Entity ids; index `IDS.len()` is the empty (invalid) id.
pub(super) const IDS: [&str; 3] = ["e-0", "e-1", "e-2"];
/// Idempotency keys; index `KEYS.len()` is the empty (invalid) key.
pub(super) const KEYS: [&str; 3] = ["k-0", "k-1", "k-2"];
/// Idempotency scopes.
pub(super) const SCOPES: [&str; 2] = ["tenant-a", "tenant-b"];
/// Actors.
pub(super) const ACTORS: [&str; 2] = ["alice", "bob"];
/// Where the manual clock starts.
pub(super) const START_MS: u64 = 1_800_000_000_000;

/// How a transition picks its target: an index into the states or the
/// events (taken modulo their number).
#[derive(Clone, Debug)]
pub(super) enum TargetSel {
    /// A state, by index.
    To(usize),
    /// An event, by index (a state when the machine has no events).
    Fire(usize),
}

/// The expected version a transition sends.
#[derive(Clone, Debug)]
pub(super) enum ExpectSel {
    /// None.
    None,
    /// The entity's current version.
    Right,
    /// The current version plus this (a wrong one).
    Wrong(i64),
}

/// An idempotency key and its scope, by index into [`KEYS`] and [`SCOPES`].
#[derive(Clone, Debug)]
pub(super) struct KeySel {
    /// Index into [`KEYS`]; `KEYS.len()` is the empty key.
    pub(super) key: usize,
    /// Index into [`SCOPES`], or no scope.
    pub(super) scope: Option<usize>,
}

/// One step of a sequence, before the model's state resolves it.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// Create an entity.
    Create {
        id: usize,
        key: Option<KeySel>,
        payload: Option<u8>,
        actor: Option<usize>,
    },
    /// Apply a transition.
    Apply {
        id: usize,
        target: TargetSel,
        key: Option<KeySel>,
        expect: ExpectSel,
        payload: Option<u8>,
        actor: Option<usize>,
    },
    /// The exact previous request again.
    Repeat,
    /// The previous request, if keyed, sent twice at once.
    Concurrent,
    /// Drop the engine and open the database again.
    Reopen,
}

/// Mostly no key or a valid one (sometimes scoped), rarely the empty key.
fn key_strategy() -> impl Strategy<Value = Option<KeySel>> {
    let scope = prop_oneof![3 => Just(None), 1 => (0..SCOPES.len()).prop_map(Some)];
    prop_oneof![
        8 => Just(None),
        8 => ((0..KEYS.len()), scope).prop_map(|(key, scope)| Some(KeySel { key, scope })),
        1 => Just(Some(KeySel { key: KEYS.len(), scope: None })),
    ]
}

/// The operations, weighted towards transitions.
pub(super) fn op_strategy() -> impl Strategy<Value = Op> {
    let id = prop_oneof![20 => 0..IDS.len(), 1 => Just(IDS.len())];
    let payload = prop_oneof![3 => Just(None), 2 => (0u8..4).prop_map(Some)];
    let actor = prop_oneof![3 => Just(None), 1 => (0..ACTORS.len()).prop_map(Some)];
    let create = (id.clone(), key_strategy(), payload.clone(), actor.clone()).prop_map(
        |(id, key, payload, actor)| Op::Create {
            id,
            key,
            payload,
            actor,
        },
    );
    let target = prop_oneof![
        (0..64usize).prop_map(TargetSel::To),
        (0..64usize).prop_map(TargetSel::Fire),
    ];
    let expect = prop_oneof![
        2 => Just(ExpectSel::None),
        1 => Just(ExpectSel::Right),
        1 => prop_oneof![Just(-1i64), Just(1)].prop_map(ExpectSel::Wrong),
    ];
    let apply = (id, target, key_strategy(), expect, payload, actor).prop_map(
        |(id, target, key, expect, payload, actor)| Op::Apply {
            id,
            target,
            key,
            expect,
            payload,
            actor,
        },
    );
    prop_oneof![
        4 => create,
        14 => apply,
        4 => Just(Op::Repeat),
        1 => Just(Op::Concurrent),
        1 => Just(Op::Reopen),
    ]
}

/// Payloads; pairs spell the same amount differently (`1` and `1.0`), so
/// a retry that respells a number is the same request.
pub(super) fn payload_of(selection: Option<u8>) -> Option<Value> {
    selection.map(|n| match n {
        0 => json!({"amount": 1}),
        1 => json!({"amount": 1.0}),
        2 => json!({"amount": 2, "note": "x"}),
        _ => json!({"note": "x", "amount": 2e0}),
    })
}
