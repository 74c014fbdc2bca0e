//! The checks after the run: every entity's version, state and history,
//! the outbox against what the consumer acknowledged, the counts by state
//! and the sum of versions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use idemflow::{Engine, Machine};

use super::shared::{Role, Shared};
use super::{entity_id, SoakState, CYCLE};

/// After the run: returns (entities checked, history entries, outbox length).
pub(super) fn check(
    shared: &Shared,
    engine: &Engine,
    machine: &Machine<SoakState>,
    role: &Role,
    last_acked: &HashMap<String, u64>,
) -> (u64, u64, u64) {
    if let Err(error) = engine.flush() {
        shared.error("final flush", &error);
    }
    shared.tick(role);
    let outbox = engine.outbox();
    let pending = match outbox.pending(usize::MAX) {
        Ok(pending) => pending,
        Err(error) => {
            shared.error("final pending", &error);
            Vec::new()
        }
    };
    shared.tick(role);
    let mut pending_by_id: HashMap<String, Vec<u64>> = HashMap::new();
    for event in &pending {
        pending_by_id
            .entry(event.id.clone())
            .or_default()
            .push(event.version);
    }
    match outbox.len() {
        Ok(len) if len == pending.len() => {}
        Ok(len) => shared.violation(format!(
            "outbox len {len} but {} events pending after a flush",
            pending.len()
        )),
        Err(error) => shared.error("final outbox len", &error),
    }
    let mut versions = 0u64;
    let mut history_entries = 0u64;
    let mut entities = 0u64;
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..shared.config.entities {
        let id = entity_id(i);
        let entity = match machine.get(&id) {
            Ok(entity) => entity,
            Err(error) => {
                shared.error("final get", &error);
                continue;
            }
        };
        shared.tick(role);
        let Some(entity) = entity else {
            if shared.created[i].load(Ordering::Relaxed) {
                shared.violation(format!("{id} created but missing"));
            }
            if pending_by_id.contains_key(&id) || last_acked.contains_key(&id) {
                shared.violation(format!("{id} has events but no record"));
            }
            continue;
        };
        entities += 1;
        versions += entity.version;
        *by_state.entry(format!("{:?}", entity.state)).or_default() += 1;
        if entity.state != CYCLE[((entity.version - 1) % 3) as usize] {
            shared.violation(format!(
                "{id}: state {:?} at version {}",
                entity.state, entity.version
            ));
        }
        match machine.history(&id) {
            Ok(history) => {
                history_entries += history.len() as u64;
                let chain = history
                    .iter()
                    .enumerate()
                    .all(|(k, entry)| entry.version == k as u64 + 1 && entry.to == CYCLE[k % 3]);
                if history.len() as u64 != entity.version || !chain {
                    shared.violation(format!(
                        "{id}: version {} but {} history entries (chain {chain})",
                        entity.version,
                        history.len()
                    ));
                }
            }
            Err(error) => shared.error("final history", &error),
        }
        // The outbox holds exactly the events after the last acknowledged one.
        let acked = last_acked.get(&id).copied().unwrap_or(0);
        let left = pending_by_id.remove(&id).unwrap_or_default();
        let want: Vec<u64> = (acked + 1..=entity.version).collect();
        if left != want {
            shared.violation(format!(
                "{id}: version {}, last acked {acked}, pending {:?}",
                entity.version,
                &left[..left.len().min(8)]
            ));
        }
        shared.tick(role);
    }
    if !pending_by_id.is_empty() {
        shared.violation(format!(
            "{} entities outside the run have pending events",
            pending_by_id.len()
        ));
    }
    let applied = shared.applied.load(Ordering::Relaxed);
    if versions != applied {
        shared.violation(format!(
            "the versions sum to {versions} but {applied} changes were applied"
        ));
    }
    match machine.count_by_state() {
        Ok(counts) => {
            let counted: BTreeMap<String, u64> = counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(state, n)| (format!("{state:?}"), n))
                .collect();
            if counted != by_state {
                shared.violation(format!(
                    "count_by_state {counted:?} but the records say {by_state:?}"
                ));
            }
        }
        Err(error) => shared.error("final count_by_state", &error),
    }
    shared.tick(role);
    (entities, history_entries, pending.len() as u64)
}
