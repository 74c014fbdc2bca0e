//! Parsing of `#[timeout(after = "30m", fire = expire)]` on a variant.
//!
//! The duration grammar is in [`crate::delay`]; whether the event is declared
//! on the state and whether the state may time out at all is for
//! `valid::timeouts`.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, Error, Ident, LitStr, Result};

use super::{ident_value, path_string, set_once, skip_value};
use crate::delay;
use crate::valid::Errors;

/// A `#[timeout(..)]` whose keys all parsed: when the state has been held for
/// `after_ms` milliseconds, the engine fires `fire`.
pub struct Timeout {
    /// The duration of `after = "..."`, in milliseconds (positive).
    pub after_ms: u64,
    /// `fire = event`: the event to fire, as written.
    pub fire: Ident,
}

/// What the keys of one `#[timeout(..)]` said so far.
#[derive(Default)]
struct Keys {
    /// `after = "..."`, whether or not the duration is valid.
    after: Option<LitStr>,
    /// The duration of `after`, when it is valid.
    after_ms: Option<u64>,
    /// `fire = event`.
    fire: Option<Ident>,
    /// Whether some key failed to parse or is unknown (then a missing key is
    /// not reported: it may be the misspelt one).
    malformed: bool,
}

/// Parses one `#[timeout(..)]`; `None` (with the problems in `errors`) unless
/// both keys are given and valid.
pub fn timeout(attr: &Attribute, errors: &mut Errors) -> Option<Timeout> {
    let mut keys = Keys::default();
    let result = attr.parse_nested_meta(|meta| {
        if let Err(error) = key(&meta, &mut keys, errors) {
            // Report it and read on: the other keys still count.
            errors.push(error);
            keys.malformed = true;
            skip_value(meta.input)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        errors.push(error);
        return None;
    }
    if keys.after.is_none() && !keys.malformed {
        errors.push(Error::new_spanned(
            attr,
            "missing `after` in #[timeout(..)]: add `after = \"<duration>\"`, e.g. `after = \"30m\"`, the time the state may be held before the event fires",
        ));
    }
    if keys.fire.is_none() && !keys.malformed {
        errors.push(Error::new_spanned(
            attr,
            "missing `fire` in #[timeout(..)]: add `fire = <event>`, the event of this state to fire when the timeout is due",
        ));
    }
    Some(Timeout {
        after_ms: keys.after_ms?,
        fire: keys.fire?,
    })
}

/// Parses one `key = value` of `#[timeout(..)]`.
fn key(meta: &ParseNestedMeta, keys: &mut Keys, errors: &mut Errors) -> Result<()> {
    if meta.path.is_ident("after") {
        if !meta.input.peek(syn::Token![=]) {
            return Err(meta.error(
                "expected `after = \"<duration>\"`, e.g. `after = \"30m\"`: the time the state may be held before the event fires",
            ));
        }
        let input = meta.value()?;
        if !input.peek(LitStr) {
            return Err(input.error(
                "expected a string, as in `after = \"30m\"`: a positive whole number directly followed by a unit (`ms`, `s`, `m`, `h` or `d`)",
            ));
        }
        let after: LitStr = input.parse()?;
        if keys.after.is_none() {
            match delay::parse_ms(&after.value()) {
                Ok(ms) => keys.after_ms = Some(ms),
                Err(message) => errors.push(Error::new(after.span(), message)),
            }
        }
        set_once(&mut keys.after, after, meta, "timeout", errors);
    } else if meta.path.is_ident("fire") {
        let fire = ident_value(
            meta,
            "<event>",
            "the event of this state to fire when the timeout is due",
        )?;
        set_once(&mut keys.fire, fire, meta, "timeout", errors);
    } else {
        keys.malformed = true;
        errors.push(meta.error(format!(
            "unknown key `{}` in #[timeout(..)]: expected `after = \"<duration>\"` and `fire = <event>`",
            path_string(&meta.path)
        )));
        skip_value(meta.input)?;
    }
    Ok(())
}
