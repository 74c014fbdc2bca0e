//! Requests with every field decided (what operations resolve to), and
//! request equality as an idempotency key sees it.

use serde_json::Value;

/// A request's target, by name.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Target {
    /// Move to this state.
    To(&'static str),
    /// Fire this event.
    Fire(&'static str),
}

/// A key and its scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    /// The key.
    pub(super) key: String,
    /// Its scope.
    pub(super) scope: Option<String>,
}

/// A request with every field decided.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Req {
    /// The entity id.
    pub(super) id: String,
    /// `None`: a creation.
    pub(super) target: Option<Target>,
    /// The idempotency key and scope.
    pub(super) key: Option<Key>,
    /// The expected version.
    pub(super) expected: Option<u64>,
    /// The payload.
    pub(super) payload: Option<Value>,
    /// The actor.
    pub(super) actor: Option<String>,
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            None => write!(f, "create({:?})", self.id)?,
            Some(Target::To(state)) => write!(f, "apply({:?}, to {state:?})", self.id)?,
            Some(Target::Fire(event)) => write!(f, "apply({:?}, fire {event:?})", self.id)?,
        }
        if let Some(key) = &self.key {
            write!(f, " key {:?}", key.key)?;
            if let Some(scope) = &key.scope {
                write!(f, " scope {scope:?}")?;
            }
        }
        if let Some(expected) = self.expected {
            write!(f, " expect v{expected}")?;
        }
        if let Some(payload) = &self.payload {
            write!(f, " payload {payload}")?;
        }
        if let Some(actor) = &self.actor {
            write!(f, " actor {actor:?}")?;
        }
        Ok(())
    }
}

/// JSON values equal as amounts: numbers by value (`1 == 1.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(name, x)| y.get(name).is_some_and(|y| same_json(x, y)))
        }
        _ => a == b,
    }
}

/// The same request, as a key sees it (everything but the key).
pub(super) fn same_request(a: &Req, b: &Req) -> bool {
    a.id == b.id
        && a.target == b.target
        && a.expected == b.expected
        && a.actor == b.actor
        && match (&a.payload, &b.payload) {
            (Some(x), Some(y)) => same_json(x, y),
            (None, None) => true,
            _ => false,
        }
}
