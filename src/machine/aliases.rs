//! Aliases: old state and event names that stored records, history or keys
//! may still hold, and the current names they read as. They are how a state
//! or event is renamed, or several states merged, without losing data: the
//! engine migrates stored records to the new name when it opens the machine
//! (see `docs/guide.md`, "Evolving a machine").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::MachineDef;

/// An old event name and the current event it reads as
/// (`#[event_alias(close = "finish")]` is `alias: "finish", event: "close"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventAliasDef {
    /// The old event name, as stored data may hold it.
    pub alias: String,
    /// The current event it reads as.
    pub event: String,
}

impl MachineDef {
    /// Declares `old_name` as an alias of the state `state`: a stored
    /// `old_name` reads as `state` (a rename). Several old names on one state
    /// merge them into it. No effect when no state is named `state` (add the
    /// state first); with several states of that name, the first gets it.
    ///
    /// ```
    /// use idemflow::MachineDef;
    ///
    /// let def = MachineDef::new("ticket", "open")
    ///     .state("open")
    ///     .state("working")
    ///     .alias("working", "in_progress")
    ///     .terminal_state("closed")
    ///     .transition("open", "start", "working")
    ///     .transition("working", "close", "closed");
    /// def.validate()?;
    /// assert_eq!(def.resolve_state("in_progress"), Some("working"));
    /// assert_eq!(def.resolve_state("working"), Some("working"));
    /// assert_eq!(def.resolve_state("waiting"), None);
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    #[must_use]
    pub fn alias(mut self, state: impl AsRef<str>, old_name: impl Into<String>) -> Self {
        let state = state.as_ref();
        if let Some(found) = self.states.iter_mut().find(|s| s.name == state) {
            found.aliases.push(old_name.into());
        }
        self
    }

    /// Declares `old_name` as an alias of the event `event`: a stored
    /// `old_name` reads as `event`. [`validate`](Self::validate) checks that
    /// some transition fires `event`.
    ///
    /// ```
    /// use idemflow::MachineDef;
    ///
    /// let def = MachineDef::new("ticket", "open")
    ///     .state("open")
    ///     .terminal_state("closed")
    ///     .transition("open", "close", "closed")
    ///     .event_alias("close", "finish");
    /// def.validate()?;
    /// assert_eq!(def.resolve_event("finish"), Some("close"));
    /// assert_eq!(def.resolve_event("close"), Some("close"));
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    #[must_use]
    pub fn event_alias(mut self, event: impl Into<String>, old_name: impl Into<String>) -> Self {
        self.event_aliases.push(EventAliasDef {
            alias: old_name.into(),
            event: event.into(),
        });
        self
    }

    /// The current name of the state called `name` now or formerly: `name`
    /// itself when it is a declared state, else the state that lists it as an
    /// alias (the first, should a definition that does not validate list it
    /// on several), else `None`.
    pub fn resolve_state(&self, name: &str) -> Option<&str> {
        self.find_state(name)
            .or_else(|| {
                self.states
                    .iter()
                    .find(|state| state.aliases.iter().any(|alias| alias == name))
            })
            .map(|state| state.name.as_str())
    }

    /// The current name of the event called `name` now or formerly: `name`
    /// itself when a transition fires it, else the event it is an alias of
    /// (when a transition fires that one), else `None`.
    pub fn resolve_event(&self, name: &str) -> Option<&str> {
        if let Some(t) = self.transitions.iter().find(|t| t.event == name) {
            return Some(t.event.as_str());
        }
        self.event_aliases
            .iter()
            .find(|alias| alias.alias == name && self.has_event(&alias.event))
            .map(|alias| alias.event.as_str())
    }
}

/// The alias rules of [`MachineDef::validate`], appended to `problems`.
pub(super) fn problems(def: &MachineDef, problems: &mut Vec<String>) {
    state_aliases(def, problems);
    event_aliases(def, problems);
}

/// Non-empty, not a current state, once per state, on one state only.
fn state_aliases(def: &MachineDef, problems: &mut Vec<String>) {
    let current: BTreeSet<&str> = def.states.iter().map(|s| s.name.as_str()).collect();
    let mut taken: BTreeMap<&str, &str> = BTreeMap::new();
    for state in &def.states {
        let mut own = BTreeSet::new();
        for alias in &state.aliases {
            if alias.is_empty() {
                problems.push(format!("state {:?} has an empty alias", state.name));
            } else if *alias == state.name {
                problems.push(format!(
                    "alias {alias:?} of state {:?} is its own name",
                    state.name
                ));
            } else if current.contains(alias.as_str()) {
                problems.push(format!(
                    "alias {alias:?} of state {:?} is the name of a current state; a stored {alias:?} reads as that state",
                    state.name
                ));
            } else if !own.insert(alias.as_str()) {
                problems.push(format!(
                    "alias {alias:?} is given twice on state {:?}",
                    state.name
                ));
            } else if let Some(first) = taken.get(alias.as_str()) {
                problems.push(format!(
                    "alias {alias:?} is given on states {first:?} and {:?}; an old name reads as one state only (to merge old states, list their names on one state)",
                    state.name
                ));
            } else {
                taken.insert(alias, &state.name);
            }
        }
    }
}

/// Non-empty, not a current event, aliased once, to a fired event.
fn event_aliases(def: &MachineDef, problems: &mut Vec<String>) {
    let mut taken: BTreeMap<&str, &str> = BTreeMap::new();
    for alias in &def.event_aliases {
        let (old, event) = (alias.alias.as_str(), alias.event.as_str());
        if !def.has_event(event) {
            problems.push(format!(
                "event alias {old:?} reads as {event:?}, but no transition fires {event:?}"
            ));
        }
        if old.is_empty() {
            problems.push(format!("event {event:?} has an empty alias"));
        } else if def.has_event(old) {
            problems.push(format!(
                "event alias {old:?} (of {event:?}) is the name of a current event"
            ));
        } else if let Some(first) = taken.get(old) {
            problems.push(format!(
                "old event name {old:?} is aliased twice (to {first:?} and to {event:?}); an old name reads as one event only"
            ));
        } else {
            taken.insert(old, event);
        }
    }
}
