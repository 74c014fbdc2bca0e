//! A machine's definition indexed for decisions: state and event names
//! (aliases included) to indexes, targets by (state, event), and the
//! canonical names and fingerprints that renames need.

use std::collections::{HashMap, HashSet};

use crate::machine::MachineDef;
use crate::outcome::OutcomeRecord;
use crate::request::{Fingerprint, RequestSpec, Target};

/// A machine definition indexed for fast decisions. State and event names
/// resolve through aliases: a stored or requested old name reads as the
/// current state or event, and every name the decision writes is current.
#[derive(Debug)]
pub(crate) struct MachineRules {
    def: MachineDef,
    /// Current names and aliases -> state index.
    pub(super) state_index: HashMap<String, usize>,
    /// Event aliases -> current event name.
    pub(super) event_alias: HashMap<String, String>,
    /// Per from-state index: event name -> target state index.
    pub(super) next: Vec<HashMap<String, usize>>,
    /// Event name -> every target state index of that event.
    pub(super) event_targets: HashMap<String, HashSet<usize>>,
    /// Declared (from, to) pairs, with the events that declare them.
    pub(super) allowed: HashMap<(usize, usize), Vec<String>>,
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

    pub(super) fn state(&self, name: &str) -> Option<usize> {
        self.state_index.get(name).copied()
    }

    pub(super) fn state_name(&self, index: usize) -> &str {
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
