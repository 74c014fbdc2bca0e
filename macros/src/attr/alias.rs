//! Parsing of `#[alias("old", ..)]` on a variant and
//! `#[event_alias(event = "old", ..)]` on the enum: the old names that stored
//! data may still hold and that now read as a current state or event.
//!
//! Only the syntax is checked here; what the names may be (snake_case, not a
//! current name, given once) is for `valid::aliases`.

use syn::ext::IdentExt as _;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::{Attribute, Error, Ident, LitStr, Path, Result, Token};

use super::{path_string, skip_value};
use crate::valid::Errors;

/// One `event = "old_name"` pair of an `#[event_alias(..)]`: the stored event
/// name `alias` reads as the current event `event`.
pub struct EventAlias {
    /// The current event, as written (an event of some `#[on(..)]`).
    pub event: Ident,
    /// The old event name, as written.
    pub alias: LitStr,
}

/// Parses one `#[alias(..)]`: a comma-separated list of string literals,
/// appended to `aliases`. Anything else is reported and skipped.
pub fn state_aliases(attr: &Attribute, aliases: &mut Vec<LitStr>, errors: &mut Errors) {
    let before = aliases.len();
    let mut malformed = false;
    let result = attr.parse_args_with(|input: ParseStream| {
        while !input.is_empty() {
            if input.peek(LitStr) {
                aliases.push(input.parse()?);
            } else if input.peek(Ident::peek_any) {
                malformed = true;
                let path = input.call(Path::parse_mod_style)?;
                errors.push(if input.peek(Token![=]) {
                    Error::new_spanned(
                        &path,
                        format!(
                            "unknown key `{}` in #[alias(..)]: #[alias] takes only old state names, as strings, as in #[alias(\"in_progress\")]",
                            path_string(&path)
                        ),
                    )
                } else {
                    Error::new_spanned(
                        &path,
                        format!(
                            "expected a string: write the old state name in quotes, as in #[alias(\"{}\")]",
                            path_string(&path)
                        ),
                    )
                });
                skip_value(input)?;
            } else {
                return Err(input.error(
                    "expected the old state name as a string, as in #[alias(\"in_progress\")]",
                ));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(())
    });
    match result {
        Ok(()) if !malformed && aliases.len() == before => errors.push(Error::new_spanned(
            attr,
            "empty #[alias()]: list the old names of this state, as in #[alias(\"in_progress\")], or remove it",
        )),
        Ok(()) => {}
        Err(error) => errors.push(error),
    }
}

/// Parses one `#[event_alias(..)]`: `event = "old_name"` pairs, appended to
/// `aliases`. A malformed pair is reported and skipped.
pub fn event_aliases(attr: &Attribute, aliases: &mut Vec<EventAlias>, errors: &mut Errors) {
    let before = aliases.len();
    let mut malformed = false;
    let result = attr.parse_nested_meta(|meta| {
        if let Err(error) = event_alias_pair(&meta, aliases) {
            // Report it and read on: the other pairs still count.
            errors.push(error);
            malformed = true;
            skip_value(meta.input)?;
        }
        Ok(())
    });
    match result {
        Ok(()) if !malformed && aliases.len() == before => errors.push(Error::new_spanned(
            attr,
            "empty #[event_alias()]: list the old event names, as in #[event_alias(close = \"finish\")], or remove it",
        )),
        Ok(()) => {}
        Err(error) => errors.push(error),
    }
}

/// Parses one `event = "old_name"` pair of `#[event_alias(..)]`.
fn event_alias_pair(meta: &ParseNestedMeta, aliases: &mut Vec<EventAlias>) -> Result<()> {
    let Some(event) = meta.path.get_ident() else {
        return Err(meta.error(
            "expected an event name, as in #[event_alias(close = \"finish\")]: the current event that the old name reads as",
        ));
    };
    let what = format!("the old event name that now reads as `{}`", event.unraw());
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!(
            "expected `{} = \"<old name>\"`: {what}",
            event.unraw()
        )));
    }
    let input = meta.value()?;
    if !input.peek(LitStr) {
        return Err(input.error(format!(
            "expected a string, as in `{} = \"<old name>\"`: {what}",
            event.unraw()
        )));
    }
    aliases.push(EventAlias {
        event: event.clone(),
        alias: input.parse()?,
    });
    Ok(())
}
