//! Machines: the [`StateMachine`] trait that `#[derive(StateMachine)]` implements,
//! and [`MachineDef`], the run-time definition that storage, tools and graphs use.
//!
//! Aliases (old state and event names that stored data may still hold) live
//! in the submodule `aliases`, declared timeouts in `timeouts`; both add to
//! [`MachineDef`] and to its validation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod aliases;
#[cfg(test)]
mod tests;
mod timeouts;

pub use aliases::EventAliasDef;
pub use timeouts::{format_delay, TimeoutDef};

/// A state enum whose transitions idemflow knows.
///
/// Implemented by `#[derive(StateMachine)]`; see the crate docs and
/// `docs/machines.md` for the declaration syntax. States and events are
/// identified by their snake_case names everywhere outside Rust (storage,
/// JSON, DOT, Mermaid, the CLI), so reordering or adding variants is safe.
///
/// ```
/// use idemflow::{MachineEvent, StateMachine};
///
/// #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// #[machine(initial = Open)]
/// enum Ticket {
///     /// Waiting for someone to pick it up.
///     #[on(start = InProgress, close = Closed)]
///     Open,
///     #[on(close = Closed)]
///     InProgress,
///     #[terminal]
///     Closed,
/// }
///
/// assert_eq!(Ticket::machine_name(), "ticket");
/// assert_eq!(Ticket::initial(), Ticket::Open);
/// assert_eq!(Ticket::Open.next(TicketEvent::Start), Some(Ticket::InProgress));
/// assert_eq!(Ticket::Closed.next(TicketEvent::Start), None);
/// assert_eq!(Ticket::InProgress.name(), "in_progress");
/// assert_eq!(Ticket::from_name("closed"), Some(Ticket::Closed));
/// assert_eq!(TicketEvent::Close.name(), "close");
/// assert!(Ticket::definition().validate().is_ok());
/// ```
pub trait StateMachine: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    /// The generated event enum (`<Enum>Event` unless `events = ...` names another).
    type Event: MachineEvent;

    /// The machine's name (snake_case; `name = "..."` or the enum name in snake_case).
    fn machine_name() -> &'static str;

    /// The state every entity starts in.
    fn initial() -> Self;

    /// Every state, in declaration order.
    fn states() -> &'static [Self];

    /// The state's current snake_case name, as stored (never an alias).
    fn name(self) -> &'static str;

    /// The state with that snake_case name, or with that old name among its
    /// [`aliases`](Self::aliases), so that names stored before a rename
    /// still read.
    fn from_name(name: &str) -> Option<Self>;

    /// The state's description (its doc comment), if any.
    fn description(self) -> Option<&'static str>;

    /// Whether the state is terminal (`#[terminal]`): no transition leaves it.
    fn is_terminal(self) -> bool;

    /// The state that `event` leads to from `self`, if the machine declares it.
    /// Generated as a `match`: no allocation, no table walk.
    fn next(self, event: Self::Event) -> Option<Self>;

    /// Every declared transition, in declaration order.
    fn transitions() -> &'static [Transition<Self>];

    /// The old names that read as this state (`#[alias("old_name")]`), in
    /// declaration order: names that stored data may hold from before a
    /// rename or a merge. [`from_name`](Self::from_name) accepts them;
    /// [`name`](Self::name) never returns them. None by default.
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }

    /// The state's timeout (`#[timeout(after = "30m", fire = expire)]`): once
    /// an entity has been in this state for that long, the engine fires the
    /// event, which the state declares. `None` by default.
    fn timeout(self) -> Option<(Duration, Self::Event)> {
        None
    }

    /// The run-time definition of this machine, built from the declaration:
    /// states (with their aliases and timeouts), transitions, and the event
    /// aliases, grouped by event in the order of [`MachineEvent::all`].
    fn definition() -> MachineDef {
        let states = Self::states()
            .iter()
            .map(|state| StateDef {
                name: state.name().to_owned(),
                description: state.description().map(str::to_owned),
                terminal: state.is_terminal(),
                aliases: state
                    .aliases()
                    .iter()
                    .map(|&alias| alias.to_owned())
                    .collect(),
                timeout: state.timeout().map(|(after, event)| TimeoutDef {
                    after_ms: timeouts::millis(after),
                    event: event.name().to_owned(),
                }),
            })
            .collect();
        let transitions = Self::transitions()
            .iter()
            .map(|transition| TransitionDef {
                from: transition.from.name().to_owned(),
                event: transition.event.name().to_owned(),
                to: transition.to.name().to_owned(),
            })
            .collect();
        let event_aliases = Self::Event::all()
            .iter()
            .flat_map(|&event| {
                event.aliases().iter().map(move |&alias| EventAliasDef {
                    alias: alias.to_owned(),
                    event: event.name().to_owned(),
                })
            })
            .collect();
        MachineDef {
            name: Self::machine_name().to_owned(),
            initial: Self::initial().name().to_owned(),
            states,
            transitions,
            event_aliases,
        }
    }
}

/// The event enum generated for a [`StateMachine`].
pub trait MachineEvent: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    /// The event's current snake_case name, as stored (never an alias).
    fn name(self) -> &'static str;

    /// The event with that snake_case name, or with that old name among its
    /// [`aliases`](Self::aliases).
    fn from_name(name: &str) -> Option<Self>;

    /// Every event, in order of first appearance in the declaration.
    fn all() -> &'static [Self];

    /// The old names that read as this event
    /// (`#[event_alias(event = "old_name")]` on the state enum), in
    /// declaration order. None by default.
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }
}

/// One declared transition of a typed machine: `from --event--> to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transition<M: StateMachine> {
    /// The state the transition leaves.
    pub from: M,
    /// The event that fires it.
    pub event: M::Event,
    /// The state the transition enters.
    pub to: M,
}

/// One state of a [`MachineDef`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateDef {
    /// The state's name (snake_case for derived machines).
    pub name: String,
    /// A description for people (the variant's doc comment); a tooltip in DOT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the state is terminal.
    #[serde(default)]
    pub terminal: bool,
    /// Old names that read as this state (renames and merges), in
    /// declaration order; see [`MachineDef::alias`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The state's timeout, if it has one; see [`MachineDef::timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutDef>,
}

impl StateDef {
    /// A state without description, aliases or timeout.
    fn named(name: String, terminal: bool) -> Self {
        StateDef {
            name,
            description: None,
            terminal,
            aliases: Vec::new(),
            timeout: None,
        }
    }
}

/// One transition of a [`MachineDef`]: `from --event--> to`, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransitionDef {
    /// The state the transition leaves.
    pub from: String,
    /// The event that fires it.
    pub event: String,
    /// The state the transition enters.
    pub to: String,
}

/// A machine's definition known at run time: states (with descriptions, the
/// terminal flag, aliases and timeouts), the initial state, the transitions
/// and the event aliases, all by name.
///
/// Derived machines produce one with [`StateMachine::definition`]; machines
/// known only at run time build one by hand and check it with
/// [`MachineDef::validate`]. It round-trips through JSON without loss and is
/// what the engine stores next to the entities.
///
/// ```
/// use idemflow::MachineDef;
///
/// let def = MachineDef::new("door", "closed")
///     .state("closed")
///     .state("open")
///     .terminal_state("removed")
///     .transition("closed", "open", "open")
///     .transition("open", "close", "closed")
///     .transition("closed", "remove", "removed");
/// def.validate()?;
/// assert_eq!(def.target("closed", "open"), Some("open"));
///
/// let json = serde_json::to_string(&def).unwrap();
/// assert_eq!(serde_json::from_str::<MachineDef>(&json).unwrap(), def);
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MachineDef {
    /// The machine's name.
    pub name: String,
    /// The name of the state every entity starts in.
    pub initial: String,
    /// Every state, in declaration order.
    pub states: Vec<StateDef>,
    /// Every transition, in declaration order.
    pub transitions: Vec<TransitionDef>,
    /// Old event names and the current events they read as; see
    /// [`MachineDef::event_alias`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_aliases: Vec<EventAliasDef>,
}

impl MachineDef {
    /// Starts a definition with a name and the initial state's name. Add the
    /// states (including the initial one) and transitions with the builder methods.
    pub fn new(name: impl Into<String>, initial: impl Into<String>) -> Self {
        MachineDef {
            name: name.into(),
            initial: initial.into(),
            states: Vec::new(),
            transitions: Vec::new(),
            event_aliases: Vec::new(),
        }
    }

    /// Adds a non-terminal state.
    #[must_use]
    pub fn state(mut self, name: impl Into<String>) -> Self {
        self.states.push(StateDef::named(name.into(), false));
        self
    }

    /// Adds a terminal state.
    #[must_use]
    pub fn terminal_state(mut self, name: impl Into<String>) -> Self {
        self.states.push(StateDef::named(name.into(), true));
        self
    }

    /// Sets the description of the state added last (no effect before any state).
    #[must_use]
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        if let Some(last) = self.states.last_mut() {
            last.description = Some(description.into());
        }
        self
    }

    /// Adds the transition `from --event--> to`.
    #[must_use]
    pub fn transition(
        mut self,
        from: impl Into<String>,
        event: impl Into<String>,
        to: impl Into<String>,
    ) -> Self {
        self.transitions.push(TransitionDef {
            from: from.into(),
            event: event.into(),
            to: to.into(),
        });
        self
    }

    /// The state of that name.
    pub fn find_state(&self, name: &str) -> Option<&StateDef> {
        self.states.iter().find(|state| state.name == name)
    }

    /// Whether a state of that name is declared.
    pub fn has_state(&self, name: &str) -> bool {
        self.find_state(name).is_some()
    }

    /// Whether the named state is declared and terminal.
    pub fn is_terminal(&self, name: &str) -> bool {
        self.find_state(name).is_some_and(|state| state.terminal)
    }

    /// Whether any transition fires on that event.
    pub fn has_event(&self, event: &str) -> bool {
        self.transitions.iter().any(|t| t.event == event)
    }

    /// Every event name, in order of first appearance.
    pub fn events(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.transitions
            .iter()
            .filter(|t| seen.insert(t.event.as_str()))
            .map(|t| t.event.as_str())
            .collect()
    }

    /// The target of `event` from `from`, if declared (the first one, should a
    /// definition that does not validate declare several).
    pub fn target(&self, from: &str, event: &str) -> Option<&str> {
        self.transitions
            .iter()
            .find(|t| t.from == from && t.event == event)
            .map(|t| t.to.as_str())
    }

    /// Whether `from -> to` is declared (by any event).
    pub fn allows(&self, from: &str, to: &str) -> bool {
        self.transitions
            .iter()
            .any(|t| t.from == from && t.to == to)
    }

    /// The terminal states' names, in declaration order.
    pub fn terminal_states(&self) -> Vec<&str> {
        self.states
            .iter()
            .filter(|state| state.terminal)
            .map(|state| state.name.as_str())
            .collect()
    }

    /// Checks the rules of a valid machine (SPEC section 1) and lists *every*
    /// problem in [`Error::InvalidDefinition`]:
    ///
    /// - the machine name and every state and event name are non-empty;
    /// - state names are unique;
    /// - the initial state is declared;
    /// - every transition leaves and enters declared states;
    /// - each `(from, event)` pair has exactly one target (deterministic);
    /// - no transition is a self-loop;
    /// - every state is reachable from the initial state;
    /// - every non-terminal state has an outgoing transition, and terminal states have none;
    /// - a state alias is non-empty, is not the name of a current state, and
    ///   is given once, on one state (listing several on one state is a merge);
    /// - an event alias is non-empty, is not the name of a current event, is
    ///   given once, and reads as an event that some transition fires;
    /// - a timeout is at least 1 ms, is not on a terminal state, and fires an
    ///   event that its state declares a transition for.
    ///
    /// Unlike the derive macro, which also requires snake_case, it takes any
    /// non-empty name, for states, events and aliases alike.
    pub fn validate(&self) -> Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidDefinition {
                machine: self.name.clone(),
                problems,
            })
        }
    }

    /// Every problem [`validate`](Self::validate) would report, in a fixed order.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.is_empty() {
            problems.push("the machine name is empty".to_owned());
        }
        if self.states.is_empty() {
            problems.push("the machine declares no state".to_owned());
        }
        let mut declared = BTreeSet::new();
        for state in &self.states {
            if state.name.is_empty() {
                problems.push("a state has an empty name".to_owned());
            } else if !declared.insert(state.name.as_str()) {
                problems.push(format!("state {:?} is declared twice", state.name));
            }
        }
        if !self.states.is_empty() && !declared.contains(self.initial.as_str()) {
            problems.push(format!(
                "the initial state {:?} is not a declared state",
                self.initial
            ));
        }
        let mut targets: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for t in &self.transitions {
            if t.event.is_empty() {
                problems.push(format!(
                    "a transition from {:?} has an empty event name",
                    t.from
                ));
            }
            if !declared.contains(t.from.as_str()) {
                problems.push(format!(
                    "transition {:?} --{}--> {:?} leaves an unknown state {:?}",
                    t.from, t.event, t.to, t.from
                ));
            }
            if !declared.contains(t.to.as_str()) {
                problems.push(format!(
                    "transition {:?} --{}--> {:?} enters an unknown state {:?}",
                    t.from, t.event, t.to, t.to
                ));
            }
            if t.from == t.to {
                problems.push(format!(
                    "transition {:?} --{}--> {:?} is a self-loop, which could never fire (a request whose target is already reached is a no-op)",
                    t.from, t.event, t.to
                ));
            }
            match targets.get(&(t.from.as_str(), t.event.as_str())) {
                Some(first) => problems.push(format!(
                    "event {:?} from state {:?} is declared twice (to {:?} and to {:?}); each event may have only one target per state",
                    t.event, t.from, first, t.to
                )),
                _ => {
                    targets.insert((t.from.as_str(), t.event.as_str()), t.to.as_str());
                }
            }
        }
        if declared.contains(self.initial.as_str()) {
            let reachable = self.reachable_states();
            for state in &self.states {
                if !state.name.is_empty() && !reachable.contains(state.name.as_str()) {
                    problems.push(format!(
                        "state {:?} is unreachable from the initial state {:?}",
                        state.name, self.initial
                    ));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for state in &self.states {
            if !seen.insert(state.name.as_str()) {
                continue;
            }
            let outgoing = self.transitions.iter().any(|t| t.from == state.name);
            if state.terminal && outgoing {
                problems.push(format!(
                    "terminal state {:?} has outgoing transitions; terminal states have none",
                    state.name
                ));
            }
            if !state.terminal && !outgoing {
                problems.push(format!(
                    "state {:?} has no outgoing transition and is not terminal (a dead end); mark it terminal or add a transition",
                    state.name
                ));
            }
        }
        aliases::problems(self, &mut problems);
        timeouts::problems(self, &mut problems);
        problems
    }
}
