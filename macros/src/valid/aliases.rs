//! The rules of `#[alias(..)]` and `#[event_alias(..)]`: an old name is a
//! non-empty snake_case name (as every stored name is), it is not a current
//! name, and it reads as exactly one state or event. Two old state names on
//! one state are a merge; the same old name on two states is an error.

use std::collections::{BTreeMap, BTreeSet};

use syn::ext::IdentExt as _;
use syn::{Error, LitStr};

use super::{candidates_among, Errors};
use crate::ast::{self, Machine, State};

/// Checks the state aliases and the event aliases.
pub fn check(machine: &Machine, errors: &mut Errors) {
    states(machine, errors);
    events(machine, errors);
}

/// The shape every old name shares with the stored names: non-empty and
/// snake_case. `kind` is "state" or "event"; `example` shows an alias.
fn shape(alias: &LitStr, kind: &str, example: &str, errors: &mut Errors) -> bool {
    let name = alias.value();
    if name.is_empty() {
        errors.push(Error::new(
            alias.span(),
            format!("an old {kind} name must not be empty: write the name that stored data holds, as in {example}"),
        ));
        false
    } else if !ast::is_snake_case(&name) {
        errors.push(Error::new(
            alias.span(),
            format!(
                "old {kind} name \"{name}\" must be snake_case (lowercase words joined by `_`), as every stored {kind} name is, e.g. \"{}\"",
                suggest(&name, kind)
            ),
        ));
        false
    } else {
        true
    }
}

/// `#[alias(..)]` on the states.
fn states(machine: &Machine, errors: &mut Errors) {
    let current: BTreeMap<&str, &State> = machine
        .states
        .iter()
        .map(|state| (state.name.as_str(), state))
        .collect();
    // Every old name seen so far, and the state it reads as.
    let mut taken: BTreeMap<String, &State> = BTreeMap::new();
    for state in &machine.states {
        let mut own = BTreeSet::new();
        for alias in &state.attrs.aliases {
            if !shape(alias, "state", "#[alias(\"in_progress\")]", errors) {
                continue;
            }
            let name = alias.value();
            if let Some(other) = current.get(name.as_str()) {
                let message = if other.ident == state.ident {
                    format!(
                        "alias \"{name}\" is the current name of `{}` itself: a state always reads its own name; remove the alias",
                        state.ident
                    )
                } else {
                    format!(
                        "alias \"{name}\" is the current name of state `{}`: a stored \"{name}\" reads as `{}`, so it cannot also read as `{}`; remove the alias",
                        other.ident, other.ident, state.ident
                    )
                };
                errors.push(Error::new(alias.span(), message));
            } else if !own.insert(name.clone()) {
                errors.push(Error::new(
                    alias.span(),
                    format!(
                        "alias \"{name}\" is given twice on `{}`: remove one",
                        state.ident
                    ),
                ));
            } else if let Some(first) = taken.get(&name) {
                errors.push(Error::new(
                    alias.span(),
                    format!(
                        "alias \"{name}\" is already an alias of state `{}`: an old name reads as one state only; to merge old states into one, list all their names on that state, as in #[alias(\"{name}\", \"other_old_name\")]",
                        first.ident
                    ),
                ));
            } else {
                taken.insert(name, state);
            }
        }
    }
}

/// `#[event_alias(..)]` on the enum.
fn events(machine: &Machine, errors: &mut Errors) {
    let current: Vec<String> = machine
        .events()
        .into_iter()
        .map(|event| event.name)
        .collect();
    // Every old name seen so far, and the event it reads as.
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    for alias in &machine.attrs.event_aliases {
        let event = alias.event.unraw().to_string();
        // With a malformed #[on(..)] the event may be declared there: say nothing.
        if machine.is_complete() && !current.contains(&event) {
            errors.push(Error::new_spanned(
                &alias.event,
                format!(
                    "unknown event `{event}` in #[event_alias({event} = \"{}\")]: an old name must read as an event declared in an #[on(..)]{}",
                    alias.alias.value(),
                    candidates_among(&current, "events", &event)
                ),
            ));
        }
        if !shape(
            &alias.alias,
            "event",
            "#[event_alias(close = \"finish\")]",
            errors,
        ) {
            continue;
        }
        let name = alias.alias.value();
        if name == event {
            errors.push(Error::new(
                alias.alias.span(),
                format!(
                    "old event name \"{name}\" is the current name of `{event}` itself: an event always reads its own name; remove the alias"
                ),
            ));
        } else if current.contains(&name) {
            errors.push(Error::new(
                alias.alias.span(),
                format!(
                    "old event name \"{name}\" is the name of a current event: a stored \"{name}\" reads as `{name}`, so it cannot also read as `{event}`; remove the alias"
                ),
            ));
        } else if let Some(first) = taken.get(&name) {
            errors.push(Error::new(
                alias.alias.span(),
                format!(
                    "old event name \"{name}\" is aliased twice (first to `{first}`): an old name reads as one event only; remove one"
                ),
            ));
        } else {
            taken.insert(name, event);
        }
    }
}

/// A snake_case spelling of a badly written old name, for the message:
/// `"InProgress"` -> `"in_progress"`, `"on hold"` -> `"on_hold"`.
fn suggest(name: &str, kind: &str) -> String {
    let snake: String = ast::snake_case(name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let words: Vec<&str> = snake.split('_').filter(|word| !word.is_empty()).collect();
    let joined = words.join("_");
    match (ast::is_snake_case(&joined), kind) {
        (true, _) => joined,
        (false, "state") => "in_progress".to_owned(),
        (false, _) => "finish".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("InProgress", "state"), "in_progress");
        assert_eq!(suggest("on hold", "state"), "on_hold");
        assert_eq!(suggest("in-progress", "state"), "in_progress");
        assert_eq!(suggest("Finish", "event"), "finish");
        assert_eq!(suggest("__", "state"), "in_progress");
        assert_eq!(suggest("9lives", "event"), "finish");
    }
}
