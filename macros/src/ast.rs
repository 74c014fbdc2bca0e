//! The parsed machine: the enum, its states (the variants) with their
//! attributes and spans, and the views code generation and validation need
//! (transitions in declaration order, events in order of first appearance,
//! snake_case and UpperCamelCase names).

use quote::format_ident;
use syn::ext::IdentExt as _;
use syn::{Data, DeriveInput, Ident, Result, Variant, Visibility};

use crate::attr::{self, MachineAttrs, On, StateAttrs};
use crate::valid::{self, Errors};

/// The enum a `#[derive(StateMachine)]` is applied to.
pub struct Machine<'a> {
    /// The whole input item.
    pub original: &'a DeriveInput,
    /// The enum's identifier (the state type).
    pub ident: &'a Ident,
    /// The enum's visibility, which the event enum copies.
    pub vis: &'a Visibility,
    /// The `#[machine(..)]` settings and the `#[event_alias(..)]`es.
    pub attrs: MachineAttrs<'a>,
    /// One state per variant, in declaration order.
    pub states: Vec<State<'a>>,
}

/// One state: a variant of the enum.
pub struct State<'a> {
    /// The variant as written.
    pub original: &'a Variant,
    /// The variant's identifier.
    pub ident: &'a Ident,
    /// The state's name: the variant's identifier in snake_case.
    pub name: String,
    /// `#[on(..)]`, `#[terminal]`, `#[alias(..)]`, `#[timeout(..)]` and the
    /// doc comment.
    pub attrs: StateAttrs<'a>,
}

/// One event of the machine, as the generated event enum declares it.
pub struct Event<'a> {
    /// The identifier at its first appearance in an `#[on(..)]`.
    pub first: &'a Ident,
    /// The event's name as stored: the identifier without `r#`.
    pub name: String,
    /// The event enum's variant: the name in UpperCamelCase, spanned at the
    /// first appearance.
    pub variant: Ident,
}

/// One declared transition: `from --on.event--> on.target`.
#[derive(Clone, Copy)]
pub struct Transition<'a> {
    /// The state it leaves.
    pub from: &'a State<'a>,
    /// The `event = Target` pair that declares it.
    pub on: &'a On,
}

impl<'a> Machine<'a> {
    /// Reads the input and the attributes, collecting attribute errors in
    /// `errors`. Fails only when the input is not an enum: there is no
    /// machine to speak of then.
    pub fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> Result<Self> {
        let Data::Enum(data) = &input.data else {
            return Err(valid::not_an_enum(input));
        };
        let attrs = attr::machine_attrs(&input.attrs, errors);
        let states = data
            .variants
            .iter()
            .map(|variant| State {
                original: variant,
                ident: &variant.ident,
                name: snake_case(&variant.ident.unraw().to_string()),
                attrs: attr::state_attrs(&variant.attrs, errors),
            })
            .collect();
        Ok(Machine {
            original: input,
            ident: &input.ident,
            vis: &input.vis,
            attrs,
            states,
        })
    }

    /// The machine's name: `name = "..."`, else the enum's name in snake_case.
    pub fn name(&self) -> String {
        match &self.attrs.name {
            Some(name) => name.value(),
            None => snake_case(&self.ident.unraw().to_string()),
        }
    }

    /// The event enum's identifier: `events = ...`, else `<Enum>Event`.
    pub fn events_ident(&self) -> Ident {
        match &self.attrs.events {
            Some(events) => events.clone(),
            None => format_ident!("{}Event", self.ident.unraw()),
        }
    }

    /// The state whose variant is `ident` (raw identifiers compare unraw).
    pub fn state(&self, ident: &Ident) -> Option<&State<'a>> {
        let wanted = ident.unraw();
        self.states
            .iter()
            .find(|state| state.ident.unraw() == wanted)
    }

    /// The initial state, if `initial` names a variant.
    pub fn initial(&self) -> Option<&State<'a>> {
        self.attrs
            .initial
            .as_ref()
            .and_then(|ident| self.state(ident))
    }

    /// Every declared transition, in declaration order (variant by variant,
    /// attribute by attribute), whether or not its target exists.
    pub fn transitions(&self) -> impl Iterator<Item = Transition<'_>> {
        self.states
            .iter()
            .flat_map(|from| from.attrs.on.iter().map(move |on| Transition { from, on }))
    }

    /// Every event, once, in order of first appearance.
    pub fn events(&self) -> Vec<Event<'_>> {
        let mut events: Vec<Event> = Vec::new();
        for transition in self.transitions() {
            let name = transition.on.event.unraw().to_string();
            if events.iter().all(|event| event.name != name) {
                events.push(Event {
                    first: &transition.on.event,
                    variant: Ident::new(&upper_camel_case(&name), transition.on.event.span()),
                    name,
                });
            }
        }
        events
    }

    /// The old names that read as the event `name` (its `#[event_alias]`es),
    /// in declaration order.
    pub fn event_aliases(&self, name: &str) -> Vec<String> {
        self.attrs
            .event_aliases
            .iter()
            .filter(|alias| alias.event.unraw() == name)
            .map(|alias| alias.alias.value())
            .collect()
    }

    /// Whether every `#[on(..)]` parsed: only then is the graph complete
    /// enough to judge reachability and dead ends.
    pub fn is_complete(&self) -> bool {
        self.states.iter().all(|state| state.attrs.complete)
    }
}

impl State<'_> {
    /// Whether the state is marked `#[terminal]`.
    pub fn is_terminal(&self) -> bool {
        self.attrs.terminal.is_some()
    }
}

/// `OrderState` -> `order_state`, `InProgress` -> `in_progress`,
/// `HTTPError` -> `http_error`, `Step2Done` -> `step2_done`.
///
/// A word starts at an uppercase letter that follows a lowercase letter or a
/// digit, or that follows an uppercase letter and precedes a lowercase one.
/// Underscores are kept as written.
pub fn snake_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(prev) if prev.is_lowercase() || prev.is_numeric() => true,
                Some(prev) if prev.is_uppercase() => next.is_some_and(char::is_lowercase),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `submit` -> `Submit`, `mark_paid` -> `MarkPaid`, `v2_ship` -> `V2Ship`.
pub fn upper_camel_case(snake: &str) -> String {
    snake
        .split('_')
        .flat_map(|word| {
            let mut chars = word.chars();
            let first = chars.next().into_iter().flat_map(char::to_uppercase);
            first.chain(chars)
        })
        .collect()
}

/// Whether an event name is snake_case: lowercase ASCII letters and digits
/// in words joined by single underscores, starting with a letter.
pub fn is_snake_case(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.split('_').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::{is_snake_case, snake_case, upper_camel_case};

    #[test]
    fn snake_case_of_variants() {
        assert_eq!(snake_case("OrderState"), "order_state");
        assert_eq!(snake_case("InProgress"), "in_progress");
        assert_eq!(snake_case("Draft"), "draft");
        assert_eq!(snake_case("HTTPError"), "http_error");
        assert_eq!(snake_case("Step2Done"), "step2_done");
        assert_eq!(snake_case("In_Progress"), "in_progress");
        assert_eq!(snake_case("A"), "a");
    }

    #[test]
    fn upper_camel_case_of_events() {
        assert_eq!(upper_camel_case("submit"), "Submit");
        assert_eq!(upper_camel_case("mark_paid"), "MarkPaid");
        assert_eq!(upper_camel_case("v2_ship"), "V2Ship");
    }

    #[test]
    fn snake_case_check() {
        assert!(is_snake_case("submit"));
        assert!(is_snake_case("mark_paid"));
        assert!(is_snake_case("step_2"));
        assert!(!is_snake_case("Submit"));
        assert!(!is_snake_case("markPaid"));
        assert!(!is_snake_case("_submit"));
        assert!(!is_snake_case("mark__paid"));
        assert!(!is_snake_case("paid_"));
    }
}
