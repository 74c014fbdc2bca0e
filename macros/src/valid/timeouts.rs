//! The rules of `#[timeout(..)]` beyond its syntax: the timed state is not
//! terminal (nothing could fire), and the event it fires is one that the
//! state itself declares in an `#[on(..)]`. (At most one timeout per state
//! and a valid duration are checked while parsing, in `attr::timeout`.)

use syn::ext::IdentExt as _;
use syn::Error;

use super::{candidates_among, Errors};
use crate::ast::Machine;

/// Checks every state's timeout.
pub fn check(machine: &Machine, errors: &mut Errors) {
    for state in &machine.states {
        if let (Some(attr), true) = (state.attrs.timeout_attr, state.is_terminal()) {
            errors.push(Error::new_spanned(
                attr,
                format!(
                    "terminal state `{}` has a #[timeout], but no transition leaves a terminal state, so there is nothing to fire: remove the #[timeout] or the #[terminal]",
                    state.ident
                ),
            ));
            continue;
        }
        // With a malformed #[on(..)] the event may be declared there: say nothing.
        let (Some(timeout), true) = (&state.attrs.timeout, state.attrs.complete) else {
            continue;
        };
        let fire = timeout.fire.unraw().to_string();
        let declared: Vec<String> = state
            .attrs
            .on
            .iter()
            .map(|on| on.event.unraw().to_string())
            .collect();
        if !declared.contains(&fire) {
            errors.push(Error::new_spanned(
                &timeout.fire,
                format!(
                    "the timeout of `{}` fires `{fire}`, but `{}` declares no transition on `{fire}`: a timeout fires one of its own state's events; add `#[on({fire} = <State>)]` to `{}` or fire another event{}",
                    state.ident,
                    state.ident,
                    state.ident,
                    if declared.is_empty() {
                        String::new()
                    } else {
                        candidates_among(&declared, "its events", &fire)
                    }
                ),
            ));
        }
    }
}
