//! Storage against the model: the state index and outbox the model says
//! there must be, and the comparison of what is stored with the model.

use std::collections::{BTreeMap, HashMap};

use super::model::Model;
use super::under_test::{StateIndex, Stored};

/// What the model says is stored: the state index, and one outbox event
/// `(id, version)` per change.
fn expected_storage(model: &Model) -> (StateIndex, Vec<(String, u64)>) {
    let mut index: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut events = Vec::new();
    for (id, history) in &model.entities {
        if let Some(last) = history.last() {
            index.entry(last.to.clone()).or_default().push(id.clone());
        }
        events.extend(history.iter().map(|entry| (id.clone(), entry.version)));
    }
    events.sort();
    (index, events)
}

/// Compares storage with the model; `Err` says what differs.
pub(super) fn compare_storage(model: &Model, stored: &Stored) -> Result<(), String> {
    if stored.histories != model.entities {
        return Err(format!(
            "stored histories differ from the model's:\n  stored: {:#?}\n  model:  {:#?}",
            stored.histories, model.entities
        ));
    }
    let (index, events) = expected_storage(model);
    if stored.index != index {
        return Err(format!(
            "the state index differs from the model's: stored {:?}, model {index:?}",
            stored.index
        ));
    }
    let mut seen: Vec<(String, u64)> = stored
        .outbox
        .iter()
        .map(|event| (event.id.clone(), event.version))
        .collect();
    // Per entity, in version order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for event in &stored.outbox {
        let previous = last.insert(event.id.as_str(), event.version).unwrap_or(0);
        if event.version <= previous {
            return Err(format!(
                "outbox: {:?} v{} comes after v{previous}",
                event.id, event.version
            ));
        }
        let entry = model
            .entities
            .get(&event.id)
            .and_then(|history| history.get((event.version as usize).wrapping_sub(1)));
        let matches = entry.is_some_and(|entry| {
            entry.to == event.to
                && entry.from == event.from
                && entry.event == event.event
                && entry.payload == event.payload
                && entry.key == event.key
        });
        if !matches {
            return Err(format!(
                "outbox event {:?} v{} does not match the model's history entry {entry:?}",
                event.id, event.version
            ));
        }
    }
    seen.sort();
    if seen != events {
        return Err(format!(
            "the outbox holds {seen:?}, the model one event per change: {events:?}"
        ));
    }
    Ok(())
}
