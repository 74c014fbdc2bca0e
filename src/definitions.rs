//! Machines that evolve: what a new definition changes, whether stored data
//! allows it, and what must be migrated. Pure functions; the engine reads
//! the stored data they need and applies what they decide.
//!
//! A new definition may replace the stored one when every state and event
//! name that stored data (records, history, key records) still uses is a
//! current name or an alias of one. Names that only an alias keeps are
//! *renamed*: the engine migrates records and the state index to the current
//! name, in bounded batches, idempotently (see `docs/guide.md`, "Evolving a
//! machine").

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Missing, NameKind};
use crate::machine::{format_delay, MachineDef};
use crate::outcome::{HistoryRecord, OutcomeRecord};

/// One stored version of a machine's definition, as the change log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionVersion {
    /// The version: 1 for the first definition stored, then one more per change.
    pub version: u64,
    /// When it was stored (ms since the epoch; none for definitions stored
    /// before the log recorded times).
    pub at: Option<u64>,
    /// What changed from the previous version, in plain words.
    pub changes: Vec<String>,
    /// The definition itself.
    pub definition: MachineDef,
}

/// Every state name a definition knows: current names and aliases.
pub(crate) fn known_states(def: &MachineDef) -> BTreeSet<&str> {
    def.states
        .iter()
        .flat_map(|state| std::iter::once(&state.name).chain(&state.aliases))
        .map(String::as_str)
        .collect()
}

/// Every event name a definition knows: current names and aliases.
pub(crate) fn known_events(def: &MachineDef) -> BTreeSet<&str> {
    def.transitions
        .iter()
        .map(|t| t.event.as_str())
        .chain(def.event_aliases.iter().map(|alias| alias.alias.as_str()))
        .collect()
}

/// The names `stored` knows that `new` does not: candidates for
/// [`Error::DefinitionMismatch`](crate::Error::DefinitionMismatch) if stored
/// data still uses them.
pub(crate) fn removed_names(stored: &MachineDef, new: &MachineDef) -> (Vec<String>, Vec<String>) {
    let new_states = known_states(new);
    let new_events = known_events(new);
    let states = known_states(stored)
        .into_iter()
        .filter(|name| !new_states.contains(name))
        .map(str::to_owned)
        .collect();
    let events = known_events(stored)
        .into_iter()
        .filter(|name| !new_events.contains(name))
        .map(str::to_owned)
        .collect();
    (states, events)
}

/// The removed names that stored data still uses.
pub(crate) fn still_used(references: Vec<Missing>) -> Vec<Missing> {
    references
        .into_iter()
        .filter(|name| name.entities > 0 || name.in_history > 0 || name.key_records > 0)
        .collect()
}

/// The renames `new` declares: (alias, current state) for every alias of a
/// state. Records still in an alias-named state are migrated to the state.
pub(crate) fn state_renames(new: &MachineDef) -> Vec<(String, String)> {
    new.states
        .iter()
        .flat_map(|state| {
            state
                .aliases
                .iter()
                .map(move |alias| (alias.clone(), state.name.clone()))
        })
        .collect()
}

/// What changed from `old` to `new`, in plain words (for the change log).
pub(crate) fn describe_changes(old: Option<&MachineDef>, new: &MachineDef) -> Vec<String> {
    let Some(old) = old else {
        return vec![format!(
            "first definition: {} states, {} transitions",
            new.states.len(),
            new.transitions.len()
        )];
    };
    let mut changes = Vec::new();
    let old_names: BTreeSet<&str> = old.states.iter().map(|s| s.name.as_str()).collect();
    let new_names: BTreeSet<&str> = new.states.iter().map(|s| s.name.as_str()).collect();
    for state in &new.states {
        if old_names.contains(state.name.as_str()) {
            continue;
        }
        let renamed: Vec<&str> = state
            .aliases
            .iter()
            .map(String::as_str)
            .filter(|alias| old_names.contains(alias))
            .collect();
        match renamed.as_slice() {
            [] => changes.push(format!("added state {}", state.name)),
            [one] => changes.push(format!("renamed state {one} to {}", state.name)),
            many => changes.push(format!(
                "merged states {} into {}",
                many.join(", "),
                state.name
            )),
        }
    }
    let aliased: BTreeSet<&str> = new
        .states
        .iter()
        .flat_map(|s| s.aliases.iter().map(String::as_str))
        .collect();
    for name in old_names.difference(&new_names) {
        if !aliased.contains(name) {
            changes.push(format!("removed state {name}"));
        }
    }
    if old.initial != new.initial {
        changes.push(format!(
            "initial state {} instead of {}",
            new.initial, old.initial
        ));
    }
    let old_events: BTreeSet<&str> = old.transitions.iter().map(|t| t.event.as_str()).collect();
    let new_events: BTreeSet<&str> = new.transitions.iter().map(|t| t.event.as_str()).collect();
    for alias in &new.event_aliases {
        if old_events.contains(alias.alias.as_str()) && !new_events.contains(alias.alias.as_str()) {
            changes.push(format!("renamed event {} to {}", alias.alias, alias.event));
        }
    }
    let old_transitions: BTreeSet<String> = old
        .transitions
        .iter()
        .map(|t| format!("{} --{}--> {}", t.from, t.event, t.to))
        .collect();
    let new_transitions: BTreeSet<String> = new
        .transitions
        .iter()
        .map(|t| format!("{} --{}--> {}", t.from, t.event, t.to))
        .collect();
    for added in new_transitions.difference(&old_transitions) {
        changes.push(format!("added transition {added}"));
    }
    for removed in old_transitions.difference(&new_transitions) {
        changes.push(format!("removed transition {removed}"));
    }
    for state in &new.states {
        let before = old
            .states
            .iter()
            .find(|s| s.name == state.name)
            .and_then(|s| s.timeout.as_ref());
        match (before, &state.timeout) {
            (None, Some(timeout)) => changes.push(format!(
                "added timeout on {}: {} after {}",
                state.name,
                timeout.event,
                format_delay(timeout.after_ms)
            )),
            (Some(_), None) if old_names.contains(state.name.as_str()) => {
                changes.push(format!("removed the timeout of {}", state.name));
            }
            (Some(old), Some(new)) if old != new => changes.push(format!(
                "changed timeout on {}: {} after {}",
                state.name,
                new.event,
                format_delay(new.after_ms)
            )),
            _ => {}
        }
    }
    for state in &new.states {
        if let Some(before) = old.states.iter().find(|s| s.name == state.name) {
            if before.terminal != state.terminal {
                changes.push(format!(
                    "state {} is {} terminal",
                    state.name,
                    if state.terminal { "now" } else { "no longer" }
                ));
            }
        }
    }
    if changes.is_empty() {
        changes.push("descriptions or declaration order changed".to_owned());
    }
    changes
}

/// Counts what stored data uses each of some state and event names (for
/// [`MachineStore::references`](crate::store::MachineStore::references)):
/// backends feed it their entities per state, history entries and key
/// records; the rule of what "uses a name" is here, once.
pub(crate) struct References {
    counts: Vec<Missing>,
    /// Per name: the entities whose history names it.
    named_by: Vec<HashSet<String>>,
}

impl References {
    /// Counts for these names, all zero.
    pub(crate) fn new(states: &[String], events: &[String]) -> Self {
        let counts: Vec<Missing> = states
            .iter()
            .map(|name| unused(NameKind::State, name))
            .chain(events.iter().map(|name| unused(NameKind::Event, name)))
            .collect();
        References {
            named_by: vec![HashSet::new(); counts.len()],
            counts,
        }
    }

    /// Whether no name is counted (nothing to read).
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The state names counted.
    pub(crate) fn states(&self) -> impl Iterator<Item = &str> {
        self.counts
            .iter()
            .filter(|count| count.kind == NameKind::State)
            .map(|count| count.name.as_str())
    }

    /// Records that `entities` entities are in state `name`.
    pub(crate) fn in_state(&mut self, name: &str, entities: u64) {
        for count in &mut self.counts {
            if count.kind == NameKind::State && count.name == name {
                count.entities = entities;
            }
        }
    }

    /// Counts one history entry of entity `id`.
    pub(crate) fn history_entry(&mut self, id: &str, entry: &HistoryRecord) {
        for (count, ids) in self.counts.iter().zip(&mut self.named_by) {
            let named = match count.kind {
                NameKind::State => {
                    entry.to == count.name || entry.from.as_deref() == Some(&count.name)
                }
                NameKind::Event => entry.event.as_deref() == Some(&count.name),
            };
            if named && !ids.contains(id) {
                ids.insert(id.to_owned());
            }
        }
    }

    /// Counts one key record (its stored outcome).
    pub(crate) fn key_record(&mut self, outcome: &OutcomeRecord) {
        for count in &mut self.counts {
            let named = match count.kind {
                NameKind::State => {
                    outcome.state == count.name || outcome.from.as_deref() == Some(&count.name)
                }
                NameKind::Event => outcome.event.as_deref() == Some(&count.name),
            };
            if named {
                count.key_records += 1;
            }
        }
    }

    /// The counts, one per name: states first, then events, as given.
    pub(crate) fn finish(mut self) -> Vec<Missing> {
        for (count, ids) in self.counts.iter_mut().zip(&self.named_by) {
            count.in_history = ids.len() as u64;
        }
        self.counts
    }
}

/// An empty reference count for `name`, to fill in.
pub(crate) fn unused(kind: NameKind, name: &str) -> Missing {
    Missing {
        kind,
        name: name.to_owned(),
        entities: 0,
        in_history: 0,
        key_records: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> MachineDef {
        MachineDef::new("ticket", "open")
            .state("open")
            .state("in_progress")
            .state("waiting")
            .terminal_state("closed")
            .transition("open", "start", "in_progress")
            .transition("in_progress", "wait", "waiting")
            .transition("waiting", "finish", "closed")
            .transition("in_progress", "finish", "closed")
    }

    fn v2() -> MachineDef {
        MachineDef::new("ticket", "open")
            .state("open")
            .state("working")
            .alias("working", "in_progress")
            .alias("working", "waiting")
            .terminal_state("closed")
            .transition("open", "start", "working")
            .transition("working", "close", "closed")
            .event_alias("close", "finish")
    }

    #[test]
    fn renames_and_merges_remove_nothing() {
        let (states, events) = removed_names(&v1(), &v2());
        assert!(states.is_empty(), "{states:?}");
        assert_eq!(events, ["wait"]);
        assert_eq!(
            state_renames(&v2()),
            [
                ("in_progress".to_owned(), "working".to_owned()),
                ("waiting".to_owned(), "working".to_owned())
            ]
        );
    }

    #[test]
    fn changes_are_described_in_plain_words() {
        let changes = describe_changes(Some(&v1()), &v2());
        assert!(
            changes.contains(&"merged states in_progress, waiting into working".to_owned()),
            "{changes:?}"
        );
        assert!(
            changes.contains(&"renamed event finish to close".to_owned()),
            "{changes:?}"
        );
        assert!(changes
            .iter()
            .any(|c| c.starts_with("removed transition in_progress --wait--> waiting")));
        assert_eq!(
            describe_changes(None, &v1()),
            ["first definition: 4 states, 4 transitions"]
        );
        let dropped = MachineDef::new("ticket", "open")
            .state("open")
            .terminal_state("closed")
            .transition("open", "finish", "closed");
        let changes = describe_changes(Some(&v1()), &dropped);
        assert!(changes.contains(&"removed state waiting".to_owned()));
        assert!(changes.contains(&"removed state in_progress".to_owned()));
    }

    #[test]
    fn only_names_still_used_are_reported() {
        let mut used = unused(NameKind::State, "waiting");
        used.in_history = 3;
        let kept = still_used(vec![unused(NameKind::Event, "wait"), used.clone()]);
        assert_eq!(kept, [used]);
    }
}
