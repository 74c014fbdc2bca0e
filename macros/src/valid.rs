//! The machine rules of SPEC section 1, checked at compile time.
//!
//! Every problem becomes a [`syn::Error`] spanned at the variant, attribute
//! or identifier to blame, with a message that says how to fix it. Problems
//! are collected in [`Errors`] and reported together.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use quote::quote;
use syn::ext::IdentExt as _;
use syn::{Data, DeriveInput, Error, Fields, Result};

use crate::ast::{self, Machine, State};

mod aliases;
mod timeouts;

/// Every problem found so far, combined into one [`syn::Error`].
#[derive(Default)]
pub struct Errors(Option<Error>);

impl Errors {
    /// Adds a problem.
    pub fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Adds the problem of a failed step, if it failed.
    pub fn extend(&mut self, result: Result<()>) {
        if let Err(error) = result {
            self.push(error);
        }
    }

    /// `Ok` when no problem was found, else every problem.
    pub fn finish(self) -> Result<()> {
        match self.0 {
            Some(errors) => Err(errors),
            None => Ok(()),
        }
    }
}

/// The error for a struct or union: only enums describe states.
pub fn not_an_enum(input: &DeriveInput) -> Error {
    let ident = &input.ident;
    let (keyword, tokens) = match &input.data {
        Data::Struct(data) => {
            let token = data.struct_token;
            ("a struct", quote!(#token #ident))
        }
        Data::Union(data) => {
            let token = data.union_token;
            ("a union", quote!(#token #ident))
        }
        Data::Enum(data) => {
            let token = data.enum_token;
            ("an enum", quote!(#token #ident))
        }
    };
    Error::new_spanned(
        tokens,
        format!(
            "#[derive(StateMachine)] works on enums only, and `{ident}` is {keyword}: declare the states as a fieldless enum, one variant per state"
        ),
    )
}

/// Checks every rule and adds each violation to `errors`.
pub fn check(machine: &Machine, errors: &mut Errors) {
    shape(machine, errors);
    if machine.states.is_empty() {
        return;
    }
    names(machine, errors);
    aliases::check(machine, errors);
    timeouts::check(machine, errors);
    let initial = initial(machine, errors);
    let targets_known = transitions(machine, errors);
    terminal_with_transitions(machine, errors);
    if machine.is_complete() {
        dead_ends(machine, errors);
        if let (Some(initial), true) = (initial, targets_known) {
            unreachable(machine, initial, errors);
        }
    }
}

/// Generics, variants with fields, an empty enum.
fn shape(machine: &Machine, errors: &mut Errors) {
    let generics = &machine.original.generics;
    if !generics.params.is_empty() {
        errors.push(Error::new_spanned(
            generics,
            format!(
                "a state machine enum cannot be generic: remove the generic parameters from `{}`",
                machine.ident
            ),
        ));
    }
    for state in &machine.states {
        if !matches!(state.original.fields, Fields::Unit) {
            errors.push(Error::new_spanned(
                &state.original.fields,
                format!(
                    "state `{}` has fields, but a state is only a name: remove the fields and keep such data in your own records or in the transition's payload",
                    state.ident
                ),
            ));
        }
    }
    if machine.states.is_empty() {
        errors.push(Error::new_spanned(
            machine.ident,
            format!(
                "`{}` has no variants, but a machine needs at least one state: add one variant per state and name the first one in #[machine(initial = ..)]",
                machine.ident
            ),
        ));
    }
}

/// Event names (snake_case, distinct variants) and state names (distinct).
fn names(machine: &Machine, errors: &mut Errors) {
    let events_ident = machine.events_ident();
    if events_ident.unraw() == machine.ident.unraw() {
        errors.push(Error::new_spanned(
            &events_ident,
            format!(
                "the event enum cannot be named like the state enum `{}`: choose another name, e.g. `events = {}Event`",
                machine.ident,
                machine.ident.unraw()
            ),
        ));
    }
    let mut variants: BTreeMap<String, String> = BTreeMap::new();
    for event in machine.events() {
        if event.name == "self" {
            errors.push(Error::new_spanned(
                event.first,
                "`self` cannot be an event name (its variant would be `Self`): choose another name",
            ));
        } else if !ast::is_snake_case(&event.name) {
            errors.push(Error::new_spanned(
                event.first,
                format!(
                    "event `{}` must be snake_case (lowercase words joined by `_`), e.g. `{}`: the event enum's variant is its UpperCamelCase form",
                    event.name,
                    suggest_snake_case(&event.name)
                ),
            ));
        } else if let Some(other) = variants.insert(event.variant.to_string(), event.name.clone()) {
            errors.push(Error::new_spanned(
                event.first,
                format!(
                    "events `{other}` and `{}` would both become the variant `{}` of `{events_ident}`: rename one of them",
                    event.name, event.variant
                ),
            ));
        }
    }
    let mut names: BTreeMap<&str, &State> = BTreeMap::new();
    for state in &machine.states {
        if let Some(other) = names.insert(&state.name, state) {
            errors.push(Error::new_spanned(
                state.ident,
                format!(
                    "states `{}` and `{}` both have the name \"{}\" (state names are the variants in snake_case): rename one of them",
                    other.ident, state.ident, state.name
                ),
            ));
        }
    }
}

/// `initial` is given and names a variant; returns the initial state.
fn initial<'m, 'a>(machine: &'m Machine<'a>, errors: &mut Errors) -> Option<&'m State<'a>> {
    let Some(ident) = &machine.attrs.initial else {
        errors.push(match machine.attrs.original {
            Some(attr) => Error::new_spanned(
                attr,
                "missing `initial`: add `initial = <State>` to #[machine(..)], naming the state every entity starts in",
            ),
            None => Error::new_spanned(
                machine.ident,
                "missing #[machine(initial = <State>)]: name the state every entity starts in",
            ),
        });
        return None;
    };
    let initial = machine.state(ident);
    if initial.is_none() {
        errors.push(Error::new_spanned(
            ident,
            format!(
                "unknown initial state `{ident}`: it must be a variant of `{}`{}",
                machine.ident,
                candidates(machine, ident)
            ),
        ));
    }
    initial
}

/// Unknown targets, the same event twice from one state, self-loops.
/// Returns whether every target is a declared state.
fn transitions(machine: &Machine, errors: &mut Errors) -> bool {
    let mut targets_known = true;
    for state in &machine.states {
        let mut seen: BTreeMap<String, &syn::Ident> = BTreeMap::new();
        for on in &state.attrs.on {
            let event = on.event.unraw().to_string();
            let target = machine.state(&on.target);
            match target {
                None => {
                    targets_known = false;
                    errors.push(Error::new_spanned(
                        &on.target,
                        format!(
                            "unknown state `{}` in `{} = {}`: the target of an event must be a variant of `{}`{}",
                            on.target,
                            on.event,
                            on.target,
                            machine.ident,
                            candidates(machine, &on.target)
                        ),
                    ));
                }
                Some(target) if target.name == state.name => {
                    let (event_ident, target_ident) = (&on.event, &on.target);
                    errors.push(Error::new_spanned(
                        quote!(#event_ident = #target_ident),
                        format!(
                            "self-loop: `{event}` leads from `{}` back to `{}`; it could never fire (a request whose target is already reached is a no-op): remove it",
                            state.ident, state.ident
                        ),
                    ));
                }
                Some(_) => {}
            }
            if let Some(first_target) = seen.get(&event) {
                errors.push(Error::new_spanned(
                    &on.event,
                    format!(
                        "event `{event}` is declared twice from state `{}` (first to `{first_target}`): from one state an event leads to exactly one state; remove one or rename the event",
                        state.ident
                    ),
                ));
            } else {
                seen.insert(event, &on.target);
            }
        }
    }
    targets_known
}

/// A terminal state declares no transition.
fn terminal_with_transitions(machine: &Machine, errors: &mut Errors) {
    for state in &machine.states {
        if let (true, Some(on)) = (state.is_terminal(), state.attrs.on_attrs.first()) {
            errors.push(Error::new_spanned(
                on,
                format!(
                    "terminal state `{}` has transitions, but no transition leaves a terminal state: remove this #[on(..)] or the #[terminal]",
                    state.ident
                ),
            ));
        }
    }
}

/// Every non-terminal state has an outgoing transition.
fn dead_ends(machine: &Machine, errors: &mut Errors) {
    for state in &machine.states {
        if !state.is_terminal() && state.attrs.on.is_empty() {
            errors.push(Error::new_spanned(
                state.ident,
                format!(
                    "state `{}` has no outgoing transition and is not terminal (a dead end): add `#[on(<event> = <State>)]` or mark it `#[terminal]`",
                    state.ident
                ),
            ));
        }
    }
}

/// Every state is reachable from the initial state.
fn unreachable(machine: &Machine, initial: &State, errors: &mut Errors) {
    let mut reached = BTreeSet::from([initial.name.as_str()]);
    let mut queue = VecDeque::from([initial]);
    while let Some(state) = queue.pop_front() {
        for on in &state.attrs.on {
            if let Some(target) = machine.state(&on.target) {
                if reached.insert(&target.name) {
                    queue.push_back(target);
                }
            }
        }
    }
    for state in &machine.states {
        if !reached.contains(state.name.as_str()) {
            errors.push(Error::new_spanned(
                state.ident,
                format!(
                    "state `{}` is unreachable from the initial state `{}`: add a transition to it, e.g. `#[on(<event> = {})]` on a reachable state, or remove it",
                    state.ident, initial.ident, state.ident
                ),
            ));
        }
    }
}

/// `" (states: `A`, `B`, `C`)"`, with a "did you mean" when one is close.
fn candidates(machine: &Machine, wrong: &syn::Ident) -> String {
    let names: Vec<String> = machine
        .states
        .iter()
        .map(|state| state.ident.unraw().to_string())
        .collect();
    candidates_among(&names, "states", &wrong.unraw().to_string())
}

/// `" (<kind>: `a`, `b`)"` listing `names`, with a "did you mean" when one
/// is close to `wrong`.
fn candidates_among(names: &[String], kind: &str, wrong: &str) -> String {
    let close = names
        .iter()
        .map(|name| {
            (
                edit_distance(&wrong.to_lowercase(), &name.to_lowercase()),
                name,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance);
    let list = names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match close {
        Some((_, name)) => format!("; did you mean `{name}`? ({kind}: {list})"),
        None => format!(" ({kind}: {list})"),
    }
}

/// The Levenshtein distance between two strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// A snake_case spelling of a badly written event name, for the message.
fn suggest_snake_case(name: &str) -> String {
    let snake = ast::snake_case(name);
    let words: Vec<&str> = snake.split('_').filter(|word| !word.is_empty()).collect();
    let joined = words.join("_");
    if ast::is_snake_case(&joined) {
        joined
    } else {
        "submit".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::{edit_distance, suggest_snake_case};

    #[test]
    fn distances() {
        assert_eq!(edit_distance("shiped", "shipped"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn snake_suggestions() {
        assert_eq!(suggest_snake_case("MarkPaid"), "mark_paid");
        assert_eq!(suggest_snake_case("markPaid"), "mark_paid");
        assert_eq!(suggest_snake_case("mark__paid"), "mark_paid");
    }
}
