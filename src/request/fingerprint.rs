//! A request's fingerprint: what binds an idempotency key to its request.

use serde_json::Value;

use super::{RequestSpec, Target};

/// A request's fingerprint: a BLAKE3 hash over a canonical encoding of the
/// entity id and every request field (JSON object key order does not matter,
/// and numbers count by value: `1`, `1.0` and `1e0` are the same amount).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// How a fingerprint encodes JSON numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Numbers {
    /// By value: an integral number is its integer, whatever its spelling.
    Canonical,
    /// By serde_json's text of the parsed number (`1.0` and `1` differ):
    /// the encoding of fingerprints stored before numbers were canonical.
    Legacy,
}

impl Fingerprint {
    /// The fingerprint of `spec` on entity `id`.
    pub(crate) fn of(id: &str, spec: &RequestSpec) -> Fingerprint {
        Fingerprint::encoded(id, spec, Numbers::Canonical)
    }

    /// Every fingerprint a key record of this request may hold: the current
    /// one first (it is what a new key record stores), then the one a key
    /// record written before numbers were canonical holds, when the
    /// payload has a number whose old encoding differs (an integral float
    /// such as `1.0` or `-0.0`). So a request stored before the change
    /// still replays when retried as it was sent.
    pub(crate) fn variants(id: &str, spec: &RequestSpec) -> Vec<Fingerprint> {
        let current = Fingerprint::of(id, spec);
        match &spec.payload {
            Some(payload) if has_legacy_numbers(payload) => {
                vec![current, Fingerprint::encoded(id, spec, Numbers::Legacy)]
            }
            _ => vec![current],
        }
    }

    pub(super) fn encoded(id: &str, spec: &RequestSpec, numbers: Numbers) -> Fingerprint {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"idemflow request v1\0");
        put_bytes(&mut hasher, id.as_bytes());
        match &spec.target {
            Target::To(state) => {
                hasher.update(b"T");
                put_bytes(&mut hasher, state.as_bytes());
            }
            Target::Fire(event) => {
                hasher.update(b"E");
                put_bytes(&mut hasher, event.as_bytes());
            }
        }
        match spec.expected_version {
            Some(version) => {
                hasher.update(b"V");
                hasher.update(&version.to_be_bytes());
            }
            None => {
                hasher.update(b"-");
            }
        }
        match &spec.payload {
            Some(payload) => {
                hasher.update(b"P");
                canonical_json(&mut hasher, payload, numbers);
            }
            None => {
                hasher.update(b"-");
            }
        }
        match &spec.actor {
            Some(actor) => {
                hasher.update(b"A");
                put_bytes(&mut hasher, actor.as_bytes());
            }
            None => {
                hasher.update(b"-");
            }
        }
        Fingerprint(*hasher.finalize().as_bytes())
    }
}

fn put_bytes(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Feeds a JSON value in a canonical form: object keys sorted, every item
/// tagged and length-prefixed, numbers by [`number_text`].
fn canonical_json(hasher: &mut blake3::Hasher, value: &Value, numbers: Numbers) {
    match value {
        Value::Null => {
            hasher.update(b"n");
        }
        Value::Bool(flag) => {
            hasher.update(if *flag { b"t" } else { b"f" });
        }
        Value::Number(number) => {
            hasher.update(b"#");
            let text = match numbers {
                Numbers::Canonical => number_text(number),
                Numbers::Legacy => number.to_string(),
            };
            put_bytes(hasher, text.as_bytes());
        }
        Value::String(text) => {
            hasher.update(b"s");
            put_bytes(hasher, text.as_bytes());
        }
        Value::Array(items) => {
            hasher.update(b"[");
            hasher.update(&(items.len() as u64).to_be_bytes());
            for item in items {
                canonical_json(hasher, item, numbers);
            }
        }
        Value::Object(map) => {
            hasher.update(b"{");
            hasher.update(&(map.len() as u64).to_be_bytes());
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (name, item) in entries {
                put_bytes(hasher, name.as_bytes());
                canonical_json(hasher, item, numbers);
            }
        }
    }
}

/// A number's text by value: an integral number (`1`, `1.0`, `1e0`, `-0.0`)
/// is its integer in decimal; any other is the shortest text that reads
/// back as the same 64-bit float (`0.5`, `1e300`). Integers beyond 64 bits
/// arrive as floats (serde_json reads them so) and stay floats here.
fn number_text(number: &serde_json::Number) -> String {
    if let Some(integer) = number.as_i64() {
        return integer.to_string();
    }
    if let Some(integer) = number.as_u64() {
        return integer.to_string();
    }
    match number.as_f64() {
        // Within ±2^64 every integral float is exactly an i128.
        Some(float) if float.fract() == 0.0 && float.abs() < 18_446_744_073_709_551_616.0 => {
            (float as i128).to_string()
        }
        _ => number.to_string(),
    }
}

/// Whether `value` holds a number whose canonical text differs from its
/// legacy text (then fingerprints stored before the change differ too).
fn has_legacy_numbers(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Number(number)
                if number.is_f64() && number_text(number) != number.to_string() =>
            {
                return true;
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    false
}
