//! Parsing of the helper attributes: `#[machine(..)]` and `#[event_alias(..)]`
//! on the enum; `#[on(..)]`, `#[terminal]`, `#[alias(..)]`, `#[timeout(..)]`
//! and doc comments on the variants. The alias and timeout syntax lives in
//! the submodules [`alias`] and [`timeout`].
//!
//! Parsing collects every problem it can into [`Errors`] and keeps going, so
//! that one compilation reports all mistakes at once. A malformed attribute
//! is skipped after its error; the machine rules in `valid` then know (through
//! [`StateAttrs::complete`]) that the transition graph may be incomplete.

use proc_macro2::TokenTree;
use quote::ToTokens as _;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::{Attribute, Error, Expr, Ident, Lit, LitStr, Meta, Result, Token};

use crate::valid::Errors;

mod alias;
mod timeout;

pub use alias::EventAlias;
pub use timeout::Timeout;

/// What the `#[machine(..)]` attributes of the enum say. Every key is
/// optional here; `valid` reports a missing `initial`.
#[derive(Default)]
pub struct MachineAttrs<'a> {
    /// The first `#[machine(..)]` attribute, blamed when a key is missing.
    pub original: Option<&'a Attribute>,
    /// `name = "..."`: the machine's name.
    pub name: Option<LitStr>,
    /// `initial = Variant`: the state every entity starts in.
    pub initial: Option<Ident>,
    /// `events = Ident`: the name of the generated event enum.
    pub events: Option<Ident>,
    /// Every `event = "old_name"` pair of every `#[event_alias(..)]`, in
    /// declaration order.
    pub event_aliases: Vec<EventAlias>,
}

/// What the attributes of one variant say.
#[derive(Default)]
pub struct StateAttrs<'a> {
    /// Every `event = Target` pair of every `#[on(..)]`, in declaration order.
    pub on: Vec<On>,
    /// The `#[on(..)]` attributes themselves, in declaration order.
    pub on_attrs: Vec<&'a Attribute>,
    /// The (first) `#[terminal]` attribute, if the state is terminal.
    pub terminal: Option<&'a Attribute>,
    /// The doc comment: lines trimmed, joined with `'\n'`, the whole trimmed;
    /// `None` when there is none or it is blank.
    pub doc: Option<String>,
    /// `false` when an `#[on(..)]` failed to parse, so some transitions may
    /// be missing and graph rules (reachability, dead ends) must not run.
    pub complete: bool,
    /// Every old name of every `#[alias(..)]`, in declaration order, as written.
    pub aliases: Vec<LitStr>,
    /// The first `#[timeout(..)]` attribute, parsed or not (a later one is
    /// reported as a duplicate).
    pub timeout_attr: Option<&'a Attribute>,
    /// The first `#[timeout(..)]`, when every key of it parsed.
    pub timeout: Option<Timeout>,
}

/// One `event = Target` pair of an `#[on(..)]` attribute.
pub struct On {
    /// The event identifier, as written (snake_case expected).
    pub event: Ident,
    /// The target state's variant identifier, as written.
    pub target: Ident,
}

/// Parses every `#[machine(..)]` attribute of the enum (several are merged)
/// and rejects `#[on]` / `#[terminal]` placed on the enum itself.
pub fn machine_attrs<'a>(attrs: &'a [Attribute], errors: &mut Errors) -> MachineAttrs<'a> {
    let mut out = MachineAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("machine") {
            out.original.get_or_insert(attr);
            let result = attr.parse_nested_meta(|meta| {
                if let Err(error) = machine_key(&meta, &mut out, errors) {
                    // Report it and read on: the other keys still count.
                    errors.push(error);
                    skip_value(meta.input)?;
                }
                Ok(())
            });
            errors.extend(result);
        } else if attr.path().is_ident("event_alias") {
            alias::event_aliases(attr, &mut out.event_aliases, errors);
        } else if attr.path().is_ident("on") || attr.path().is_ident("terminal") {
            errors.push(Error::new_spanned(
                attr,
                format!(
                    "#[{}] belongs on a state variant, not on the enum; put the machine's settings in #[machine(..)]",
                    path_string(attr.path())
                ),
            ));
        } else if attr.path().is_ident("alias") || attr.path().is_ident("timeout") {
            errors.push(Error::new_spanned(
                attr,
                format!(
                    "#[{}(..)] belongs on a state variant, not on the enum: put it on the state it is about",
                    path_string(attr.path())
                ),
            ));
        }
    }
    out
}

/// Parses one `key = value` of `#[machine(..)]`.
fn machine_key(meta: &ParseNestedMeta, out: &mut MachineAttrs, errors: &mut Errors) -> Result<()> {
    if meta.path.is_ident("name") {
        if !meta.input.peek(Token![=]) {
            return Err(meta.error("expected `name = \"...\"`: the machine's name as a string"));
        }
        let name: LitStr = meta.value()?.parse()?;
        if name.value().is_empty() {
            errors.push(Error::new(
                name.span(),
                "the machine name must not be empty: write e.g. `name = \"order\"`, or leave `name` out to use the enum's name in snake_case",
            ));
        }
        set_once(&mut out.name, name, meta, "machine", errors);
    } else if meta.path.is_ident("initial") {
        let initial = ident_value(meta, "<State>", "the state variant every entity starts in")?;
        set_once(&mut out.initial, initial, meta, "machine", errors);
    } else if meta.path.is_ident("events") {
        let events = ident_value(
            meta,
            "<EventEnum>",
            "the name of the event enum to generate",
        )?;
        set_once(&mut out.events, events, meta, "machine", errors);
    } else {
        errors.push(meta.error(format!(
            "unknown key `{}` in #[machine(..)]: expected `name = \"...\"`, `initial = <State>` or `events = <EventEnum>`",
            path_string(&meta.path)
        )));
        skip_value(meta.input)?;
    }
    Ok(())
}

/// Stores the value of a key of `#[<attr>(..)]`, or reports the key as given
/// twice (at the second occurrence) and keeps the first value.
fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &ParseNestedMeta,
    attr: &str,
    errors: &mut Errors,
) {
    if slot.is_some() {
        errors.push(Error::new_spanned(
            &meta.path,
            format!(
                "duplicate `{}` in #[{attr}(..)]: give it once",
                path_string(&meta.path)
            ),
        ));
    } else {
        *slot = Some(value);
    }
}

/// Parses `= Ident` after a key; `placeholder` and `what` say in the error
/// messages what is expected.
fn ident_value(meta: &ParseNestedMeta, placeholder: &str, what: &str) -> Result<Ident> {
    let key = path_string(&meta.path);
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!("expected `{key} = {placeholder}`: {what}")));
    }
    let input = meta.value()?;
    if input.peek(Ident) {
        input.parse()
    } else {
        Err(input.error(format!(
            "expected an identifier, as in `{key} = {placeholder}`: {what}"
        )))
    }
}

/// Skips the rest of an unknown key's value, up to the next top-level comma.
fn skip_value(input: ParseStream) -> Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// Parses the attributes of one variant: every `#[on(..)]` (merged),
/// `#[terminal]` and the doc comment; rejects `#[machine]` on a variant.
pub fn state_attrs<'a>(attrs: &'a [Attribute], errors: &mut Errors) -> StateAttrs<'a> {
    let mut out = StateAttrs {
        complete: true,
        ..StateAttrs::default()
    };
    let mut doc = Vec::new();
    for attr in attrs {
        if attr.path().is_ident("on") {
            out.on_attrs.push(attr);
            let before = out.on.len();
            let mut malformed = false;
            let result = attr.parse_nested_meta(|meta| {
                if let Err(error) = on_pair(&meta, &mut out.on) {
                    // Report it and read on: the other pairs still count.
                    errors.push(error);
                    malformed = true;
                    skip_value(meta.input)?;
                }
                Ok(())
            });
            match result {
                Ok(()) if !malformed && out.on.len() == before => errors.push(Error::new_spanned(
                    attr,
                    "empty #[on()]: list the transitions as `#[on(event = State, ..)]`, or remove it",
                )),
                Ok(()) => {}
                Err(error) => {
                    errors.push(error);
                    malformed = true;
                }
            }
            if malformed {
                out.complete = false;
            }
        } else if attr.path().is_ident("terminal") {
            if attr.meta.require_path_only().is_err() {
                errors.push(Error::new_spanned(
                    attr,
                    "#[terminal] takes no arguments: write just `#[terminal]`",
                ));
            }
            if out.terminal.is_some() {
                errors.push(Error::new_spanned(
                    attr,
                    "duplicate #[terminal]: this state is already marked terminal; remove this one",
                ));
            } else {
                out.terminal = Some(attr);
            }
        } else if attr.path().is_ident("alias") {
            alias::state_aliases(attr, &mut out.aliases, errors);
        } else if attr.path().is_ident("timeout") {
            if out.timeout_attr.is_some() {
                errors.push(Error::new_spanned(
                    attr,
                    "duplicate #[timeout(..)]: a state has at most one timeout; remove this one",
                ));
            } else {
                out.timeout_attr = Some(attr);
                out.timeout = timeout::timeout(attr, errors);
            }
        } else if attr.path().is_ident("machine") || attr.path().is_ident("event_alias") {
            errors.push(Error::new_spanned(
                attr,
                format!(
                    "#[{}(..)] belongs on the enum, not on a variant",
                    path_string(attr.path())
                ),
            ));
        } else if attr.path().is_ident("doc") {
            if let Some(text) = doc_text(&attr.meta) {
                doc.extend(text.split('\n').map(|line| line.trim().to_owned()));
            }
        }
    }
    let doc = doc.join("\n");
    let doc = doc.trim();
    if !doc.is_empty() {
        out.doc = Some(doc.to_owned());
    }
    out
}

/// Parses one `event = Target` pair of `#[on(..)]`.
fn on_pair(meta: &ParseNestedMeta, on: &mut Vec<On>) -> Result<()> {
    let Some(event) = meta.path.get_ident() else {
        return Err(meta.error(
            "expected an event name, as in `#[on(submit = Submitted)]`: a snake_case identifier",
        ));
    };
    let target = ident_value(
        meta,
        "<State>",
        &format!(
            "the state variant that `{}` leads to",
            syn::ext::IdentExt::unraw(event)
        ),
    )?;
    on.push(On {
        event: event.clone(),
        target,
    });
    Ok(())
}

/// The text of a `#[doc = "..."]` attribute (a `///` comment); `None` for
/// other forms such as `#[doc(hidden)]` or `#[doc = include_str!(..)]`.
fn doc_text(meta: &Meta) -> Option<String> {
    let Meta::NameValue(meta) = meta else {
        return None;
    };
    let mut value = &meta.value;
    while let Expr::Group(group) = value {
        value = &group.expr;
    }
    match value {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Str(text) => Some(text.value()),
            _ => None,
        },
        _ => None,
    }
}

/// A path as written, without spaces (`machine`, `a::b`).
fn path_string(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}
