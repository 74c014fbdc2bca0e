//! `#[derive(StateMachine)]` for idemflow.
//!
//! Use it through the `idemflow` crate (`use idemflow::StateMachine;`); the
//! declaration syntax, what is generated and every compile error are described
//! in `docs/machines.md`.
//!
//! The crate is laid out in four steps, each in its own module:
//! `ast` reads the enum, `attr` parses the helper attributes (with `delay`,
//! the duration grammar of `#[timeout]`), `valid` checks the machine rules of
//! SPEC section 1 and those of aliases and timeouts, and `expand` generates
//! code.

mod ast;
mod attr;
mod delay;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `idemflow::StateMachine` for a fieldless enum and generates its
/// event enum (`<Enum>Event` by default) with `idemflow::MachineEvent`.
///
/// ```ignore
/// #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// #[machine(name = "order", initial = Draft, events = OrderEvent)]
/// pub enum OrderState {
///     /// Created, not yet submitted.
///     #[on(submit = Submitted, cancel = Cancelled)]
///     Draft,
///     #[on(pay = Paid)]
///     Submitted,
///     #[terminal]
///     Paid,
///     #[terminal]
///     Cancelled,
/// }
/// ```
///
/// Old names that stored data may still hold are declared with
/// `#[alias("old_name")]` on a state and `#[event_alias(event = "old_name")]`
/// on the enum; `#[timeout(after = "30m", fire = event)]` on a state makes the
/// engine fire `event` once the state has been held that long.
///
/// An invalid machine (unknown target, duplicate event, self-loop,
/// unreachable state, dead end, an alias that is a current name, a timeout
/// firing an event its state does not declare, ...) is a compile error
/// pointing at the offending variant or attribute.
#[proc_macro_derive(
    StateMachine,
    attributes(machine, on, terminal, alias, event_alias, timeout)
)]
pub fn derive_state_machine(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
