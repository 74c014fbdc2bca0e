//! Input limits (SPEC step 1): sizes of ids, keys, scopes, actors and
//! payloads, checked before anything is read or written.

use serde_json::Value;

use super::{RequestSpec, Target};
use crate::error::{Error, InputField, Result};

/// Size limits checked before anything is read or written (SPEC step 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest entity id in bytes (ids must be non-empty). Default 1024.
    pub max_id_bytes: usize,
    /// Longest idempotency key in bytes (keys must be non-empty). Default 255.
    pub max_key_bytes: usize,
    /// Longest key scope in bytes (scopes must be non-empty). Default 255.
    pub max_scope_bytes: usize,
    /// Largest payload in bytes of compact JSON. Default 64 KiB.
    pub max_payload_bytes: usize,
    /// Longest actor in bytes. Default 1024.
    pub max_actor_bytes: usize,
    /// Deepest nesting of arrays and objects in a payload. Default 64; at
    /// most 127 is honoured, since deeper JSON cannot be read back.
    pub max_payload_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_id_bytes: 1024,
            max_key_bytes: 255,
            max_scope_bytes: 255,
            max_payload_bytes: 64 * 1024,
            max_actor_bytes: 1024,
            max_payload_depth: 64,
        }
    }
}

impl Limits {
    /// Checks an entity id: 1..=`max_id_bytes` bytes.
    pub fn check_id(&self, id: &str) -> Result<()> {
        check_length(InputField::Id, id, self.max_id_bytes)
    }

    /// Checks a request's id, key, target name, actor and payload.
    pub(crate) fn check_request(&self, id: &str, spec: &RequestSpec) -> Result<()> {
        self.check_id(id)?;
        if let Some(key) = &spec.key {
            check_length(InputField::Key, key, self.max_key_bytes)?;
        }
        if let Some(scope) = &spec.scope {
            check_length(InputField::Scope, scope, self.max_scope_bytes)?;
            if spec.key.is_none() {
                return Err(Error::invalid_input(
                    InputField::Scope,
                    "a scope needs an idempotency key to scope",
                ));
            }
        }
        if spec.target.name().is_empty() {
            let field = match spec.target {
                Target::To(_) => InputField::State,
                Target::Fire(_) => InputField::Event,
            };
            return Err(Error::invalid_input(field, "the name is empty"));
        }
        self.check_actor(spec.actor.as_deref())?;
        self.check_payload(spec.payload.as_ref())
    }

    /// Checks an optional key and its scope (a scope needs a key).
    pub(crate) fn check_key(&self, key: Option<&str>, scope: Option<&str>) -> Result<()> {
        if let Some(key) = key {
            check_length(InputField::Key, key, self.max_key_bytes)?;
        }
        if let Some(scope) = scope {
            check_length(InputField::Scope, scope, self.max_scope_bytes)?;
            if key.is_none() {
                return Err(Error::invalid_input(
                    InputField::Scope,
                    "a scope needs an idempotency key to scope",
                ));
            }
        }
        Ok(())
    }

    /// Checks an actor: at most `max_actor_bytes` bytes.
    pub(crate) fn check_actor(&self, actor: Option<&str>) -> Result<()> {
        match actor {
            Some(actor) if actor.len() > self.max_actor_bytes => Err(Error::invalid_input(
                InputField::Actor,
                format!(
                    "{} bytes is longer than the limit of {} bytes",
                    actor.len(),
                    self.max_actor_bytes
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Checks a payload: nesting depth and size of its compact JSON, counted
    /// without building the JSON text.
    pub(crate) fn check_payload(&self, payload: Option<&Value>) -> Result<()> {
        let Some(payload) = payload else {
            return Ok(());
        };
        let max_depth = self.max_payload_depth.min(MAX_READABLE_DEPTH);
        if nesting_depth(payload) > max_depth {
            return Err(Error::invalid_input(
                InputField::Payload,
                format!("nested deeper than the limit of {max_depth} levels"),
            ));
        }
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, payload)
            .map_err(|error| Error::invalid_input(InputField::Payload, error.to_string()))?;
        if size.0 > self.max_payload_bytes {
            return Err(Error::invalid_input(
                InputField::Payload,
                format!(
                    "{} bytes of JSON is larger than the limit of {} bytes",
                    size.0, self.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// The size of `value` as compact JSON, counted without building the text.
pub(crate) fn json_size(value: &Value) -> usize {
    let mut size = ByteCount(0);
    // Writing a `Value` to a counter cannot fail.
    let _ = serde_json::to_writer(&mut size, value);
    size.0
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// serde_json reads at most 127 levels of nesting back; deeper payloads
/// would be stored but unreadable.
const MAX_READABLE_DEPTH: usize = 127;

/// How deeply arrays and objects nest in `value` (a scalar is 0), without recursion.
pub(super) fn nesting_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

fn check_length(field: InputField, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_input(field, "it is empty"));
    }
    if value.len() > max {
        return Err(Error::invalid_input(
            field,
            format!(
                "{} bytes is longer than the limit of {max} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}
