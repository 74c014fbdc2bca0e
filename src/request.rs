//! Transition requests: the typed [`Request`] and the name-based [`NamedRequest`],
//! their input limits and their fingerprint.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde_json::Value;

use crate::error::{Error, InputField, Result};
use crate::machine::{MachineEvent, StateMachine};

/// What a request asks for, by name: a target state or an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Move to this state.
    To(Cow<'static, str>),
    /// Fire this event.
    Fire(Cow<'static, str>),
}

impl Target {
    /// The state or event name.
    pub fn name(&self) -> &str {
        match self {
            Target::To(name) | Target::Fire(name) => name,
        }
    }
}

/// The fields every request has, whatever names its target: the name-based
/// form that the decision core, the fingerprint and storage work with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RequestSpec {
    pub(crate) target: Target,
    pub(crate) key: Option<String>,
    /// Who the key belongs to (a client, tenant or account): equal key
    /// strings from two scopes never meet.
    pub(crate) scope: Option<String>,
    pub(crate) expected_version: Option<u64>,
    pub(crate) payload: Option<Value>,
    pub(crate) actor: Option<String>,
}

impl RequestSpec {
    pub(crate) fn new(target: Target) -> Self {
        RequestSpec {
            target,
            key: None,
            scope: None,
            expected_version: None,
            payload: None,
            actor: None,
        }
    }

    /// The bytes the key record is stored under: the key itself for an
    /// unscoped key (the format of every earlier release); for a scoped key,
    /// `0xFF` (a byte no UTF-8 text starts with, so the two can never
    /// collide), the scope length-prefixed, then the key.
    pub(crate) fn stored_key(&self) -> Option<Vec<u8>> {
        let key = self.key.as_deref()?;
        Some(stored_key(self.scope.as_deref(), key))
    }
}

/// The stored form of an idempotency key in `scope`; see [`RequestSpec::stored_key`].
pub(crate) fn stored_key(scope: Option<&str>, key: &str) -> Vec<u8> {
    match scope {
        None => key.as_bytes().to_vec(),
        Some(scope) => {
            let mut bytes = Vec::with_capacity(5 + scope.len() + key.len());
            bytes.push(SCOPED_KEY_TAG);
            // Scopes are bounded far below 4 GiB by the input limits.
            bytes.extend_from_slice(&(scope.len() as u32).to_be_bytes());
            bytes.extend_from_slice(scope.as_bytes());
            bytes.extend_from_slice(key.as_bytes());
            bytes
        }
    }
}

/// The first byte of a scoped key's stored form (never the first byte of UTF-8 text).
pub(crate) const SCOPED_KEY_TAG: u8 = 0xFF;

/// Generates the builder methods shared by [`Request`] and [`NamedRequest`].
macro_rules! request_builder_methods {
    () => {
        /// Sets the idempotency key: the request is applied at most once, and a
        /// retry with the same key returns the original outcome.
        #[must_use]
        pub fn key(mut self, key: impl Into<String>) -> Self {
            self.spec.key = Some(key.into());
            self
        }

        /// Scopes the idempotency key to a client, tenant or account: keys are
        /// looked up per machine *and* scope, so equal key strings sent by two
        /// scopes never meet (neither replays nor `KeyReused` crosses scopes).
        /// Without a scope, keys are shared by every caller of the machine.
        #[must_use]
        pub fn scope(mut self, scope: impl Into<String>) -> Self {
            self.spec.scope = Some(scope.into());
            self
        }

        /// Sets the version the caller expects the entity to be at (optimistic
        /// concurrency): another version gives [`Error::VersionConflict`].
        #[must_use]
        pub fn expect_version(mut self, version: u64) -> Self {
            self.spec.expected_version = Some(version);
            self
        }

        /// Attaches a JSON payload, recorded in history and in the outbox event.
        #[must_use]
        pub fn payload(mut self, payload: Value) -> Self {
            self.spec.payload = Some(payload);
            self
        }

        /// Names who makes the request, recorded in history and in the outbox event.
        #[must_use]
        pub fn actor(mut self, actor: impl Into<String>) -> Self {
            self.spec.actor = Some(actor.into());
            self
        }

        /// The idempotency key, if set.
        pub fn key_ref(&self) -> Option<&str> {
            self.spec.key.as_deref()
        }

        /// The key's scope, if set.
        pub fn scope_ref(&self) -> Option<&str> {
            self.spec.scope.as_deref()
        }

        /// The expected version, if set.
        pub fn expected_version(&self) -> Option<u64> {
            self.spec.expected_version
        }

        /// The payload, if set.
        pub fn payload_ref(&self) -> Option<&Value> {
            self.spec.payload.as_ref()
        }

        /// The actor, if set.
        pub fn actor_ref(&self) -> Option<&str> {
            self.spec.actor.as_deref()
        }
    };
}

/// A transition request for a typed machine: a target state ([`Request::to`])
/// or an event ([`Request::fire`]), plus an optional idempotency key, expected
/// version, payload and actor.
///
/// ```
/// # use idemflow::StateMachine;
/// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// # #[machine(name = "order", initial = Draft, events = OrderEvent)]
/// # enum OrderState {
/// #     #[on(submit = Submitted)] Draft,
/// #     #[on(pay = Paid)] Submitted,
/// #     #[terminal] Paid,
/// # }
/// use idemflow::Request;
///
/// let request = Request::to(OrderState::Paid)
///     .key("req-7f3a")
///     .expect_version(2)
///     .payload(serde_json::json!({"amount": 4200}))
///     .actor("alice");
/// assert_eq!(request.key_ref(), Some("req-7f3a"));
/// let by_event: Request<OrderState> = Request::fire(OrderEvent::Pay);
/// assert_eq!(by_event.expected_version(), None);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Request<M: StateMachine> {
    pub(crate) spec: RequestSpec,
    machine: PhantomData<fn() -> M>,
}

impl<M: StateMachine> Request<M> {
    /// A request to move the entity to `state`.
    pub fn to(state: M) -> Self {
        Request {
            spec: RequestSpec::new(Target::To(Cow::Borrowed(state.name()))),
            machine: PhantomData,
        }
    }

    /// A request to fire `event` from the entity's current state.
    pub fn fire(event: M::Event) -> Self {
        Request {
            spec: RequestSpec::new(Target::Fire(Cow::Borrowed(event.name()))),
            machine: PhantomData,
        }
    }

    /// The same request in its name-based form.
    pub fn into_named(self) -> NamedRequest {
        NamedRequest { spec: self.spec }
    }

    request_builder_methods!();
}

/// A transition request by state or event *name*, for machines without a Rust
/// type (tools, the CLI, HTTP services). Same options as [`Request`].
///
/// ```
/// use idemflow::NamedRequest;
///
/// let request = NamedRequest::fire("pay").key("k-1").actor("bob");
/// assert_eq!(request.target().name(), "pay");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NamedRequest {
    pub(crate) spec: RequestSpec,
}

impl NamedRequest {
    /// A request to move the entity to the state named `state`.
    pub fn to(state: impl Into<String>) -> Self {
        NamedRequest {
            spec: RequestSpec::new(Target::To(Cow::Owned(state.into()))),
        }
    }

    /// A request to fire the event named `event`.
    pub fn fire(event: impl Into<String>) -> Self {
        NamedRequest {
            spec: RequestSpec::new(Target::Fire(Cow::Owned(event.into()))),
        }
    }

    /// What the request asks for.
    pub fn target(&self) -> &Target {
        &self.spec.target
    }

    request_builder_methods!();
}

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
fn nesting_depth(value: &Value) -> usize {
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

/// A request's fingerprint: a BLAKE3 hash over a canonical encoding of the
/// entity id and every request field (JSON object key order does not matter,
/// and numbers count by value: `1`, `1.0` and `1e0` are the same amount).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// How a fingerprint encodes JSON numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Numbers {
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

    fn encoded(id: &str, spec: &RequestSpec, numbers: Numbers) -> Fingerprint {
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

/// A creation with options: an idempotency key (and its scope), a payload and
/// an actor for the first history entry. Without a key a creation is
/// idempotent by itself (creating an existing entity is a no-op); with one, a
/// retry *replays* the original outcome (so an HTTP service can answer the
/// original 201), and the key is bound to this creation like any request's.
///
/// ```
/// # use idemflow::{Create, Engine, Error, MachineDef};
/// let engine = Engine::temporary()?;
/// let doors = engine.register(MachineDef::new("door", "closed").state("closed")
///     .terminal_state("open").transition("closed", "open", "open"))?;
/// let create = Create::new().key("new-front").actor("installer");
/// let first = doors.create_request("front", create.clone())?;
/// assert!(first.applied && !first.replay);
/// let retry = doors.create_request("front", create)?;
/// assert!(retry.applied && retry.replay);                    // the original creation
/// assert!(matches!(doors.create_request("back", Create::new().key("new-front")),
///     Err(Error::KeyReused { .. })));
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Create {
    pub(crate) spec: crate::decide::CreateSpec,
}

impl Create {
    /// A creation without options.
    pub fn new() -> Self {
        Create::default()
    }

    /// Sets the idempotency key: a retry replays the original creation.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.spec.key = Some(key.into());
        self
    }

    /// Scopes the key to a client, tenant or account (see [`Request::scope`]).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.spec.scope = Some(scope.into());
        self
    }

    /// Records a JSON payload in the first history entry and its outbox event.
    #[must_use]
    pub fn payload(mut self, payload: Value) -> Self {
        self.spec.payload = Some(payload);
        self
    }

    /// Names who creates the entity.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.spec.actor = Some(actor.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(target: Target) -> RequestSpec {
        RequestSpec::new(target)
    }

    #[test]
    fn fingerprint_ignores_object_key_order() {
        let mut a = spec(Target::To("paid".into()));
        a.payload = Some(serde_json::from_str(r#"{"a":1,"b":{"x":[1,2],"y":null}}"#).unwrap());
        let mut b = spec(Target::To("paid".into()));
        b.payload = Some(serde_json::from_str(r#"{"b":{"y":null,"x":[1,2]},"a":1}"#).unwrap());
        assert_eq!(Fingerprint::of("o-1", &a), Fingerprint::of("o-1", &b));
    }

    #[test]
    fn fingerprint_covers_every_field() {
        let base = spec(Target::To("paid".into()));
        let base_print = Fingerprint::of("o-1", &base);
        assert_ne!(Fingerprint::of("o-2", &base), base_print);
        assert_ne!(
            Fingerprint::of("o-1", &spec(Target::Fire("paid".into()))),
            base_print
        );
        let mut changed = base.clone();
        changed.expected_version = Some(1);
        assert_ne!(Fingerprint::of("o-1", &changed), base_print);
        let mut changed = base.clone();
        changed.payload = Some(json!({"amount": 1}));
        assert_ne!(Fingerprint::of("o-1", &changed), base_print);
        let mut other_payload = base.clone();
        other_payload.payload = Some(json!({"amount": 2}));
        assert_ne!(
            Fingerprint::of("o-1", &changed),
            Fingerprint::of("o-1", &other_payload)
        );
        let mut changed = base.clone();
        changed.actor = Some("alice".into());
        assert_ne!(Fingerprint::of("o-1", &changed), base_print);
        // The key itself is not part of the fingerprint: it names the record.
        let mut keyed = base.clone();
        keyed.key = Some("k".into());
        assert_eq!(Fingerprint::of("o-1", &keyed), base_print);
    }

    fn with_payload(text: &str) -> RequestSpec {
        let mut request = spec(Target::To("paid".into()));
        request.payload = Some(serde_json::from_str(text).unwrap());
        request
    }

    #[test]
    fn fingerprint_counts_numbers_by_value() {
        let one = Fingerprint::of("o-1", &with_payload(r#"{"amount":1}"#));
        for same in [
            r#"{"amount":1.0}"#,
            r#"{"amount":1e0}"#,
            r#"{"amount":10e-1}"#,
            r#"{"amount":1.000}"#,
        ] {
            assert_eq!(Fingerprint::of("o-1", &with_payload(same)), one, "{same}");
        }
        let zero = Fingerprint::of("o-1", &with_payload("[0]"));
        assert_eq!(Fingerprint::of("o-1", &with_payload("[-0.0]")), zero);
        assert_eq!(Fingerprint::of("o-1", &with_payload("[0.0]")), zero);
        let half = Fingerprint::of("o-1", &with_payload("[0.5]"));
        assert_eq!(Fingerprint::of("o-1", &with_payload("[5e-1]")), half);
        assert_eq!(Fingerprint::of("o-1", &with_payload("[0.50]")), half);
        // Different amounts stay different.
        for other in [
            r#"{"amount":2}"#,
            r#"{"amount":1.5}"#,
            r#"{"amount":-1}"#,
            r#"{"amount":"1"}"#,
        ] {
            assert_ne!(Fingerprint::of("o-1", &with_payload(other)), one, "{other}");
        }
        // Large integers: exact as integers; an integral float reads as its integer.
        let big = Fingerprint::of("o-1", &with_payload("[18446744073709551615]"));
        assert_ne!(
            Fingerprint::of("o-1", &with_payload("[18446744073709551614]")),
            big
        );
        assert_eq!(
            Fingerprint::of("o-1", &with_payload("[-9007199254740992]")),
            Fingerprint::of("o-1", &with_payload("[-9007199254740992.0]"))
        );
        // Beyond 64 bits: floats, compared as floats.
        assert_eq!(
            Fingerprint::of("o-1", &with_payload("[1e20]")),
            Fingerprint::of("o-1", &with_payload("[100000000000000000000]"))
        );
    }

    #[test]
    fn the_former_number_encoding_is_a_variant_only_where_it_differs() {
        // Integers and non-integral floats were encoded the same way before.
        for text in [
            r#"{"amount":1}"#,
            r#"{"amount":0.5}"#,
            r#"{"a":[1,2,{"b":-3}]}"#,
            "null",
        ] {
            let request = with_payload(text);
            assert_eq!(
                Fingerprint::variants("o-1", &request),
                vec![Fingerprint::of("o-1", &request)],
                "{text}"
            );
            assert_eq!(
                Fingerprint::encoded("o-1", &request, Numbers::Legacy),
                Fingerprint::of("o-1", &request)
            );
        }
        // An integral float (`1.0`) had a fingerprint of its own: it comes second.
        for text in [r#"{"amount":1.0}"#, r#"{"a":[1,{"b":-0.0}]}"#, "[2e0]"] {
            let request = with_payload(text);
            let variants = Fingerprint::variants("o-1", &request);
            assert_eq!(variants.len(), 2, "{text}");
            assert_eq!(variants[0], Fingerprint::of("o-1", &request));
            assert_eq!(
                variants[1],
                Fingerprint::encoded("o-1", &request, Numbers::Legacy)
            );
            assert_ne!(variants[0], variants[1]);
        }
    }

    #[test]
    fn a_key_stored_before_numbers_were_canonical_still_replays() {
        use crate::decide::{
            decide, decide_create_keyed, no_guards, Decision, DecisionInput, KeyRecord,
            MachineRules,
        };
        use crate::outcome::{EntityRecord, OutcomeRecord};

        let rules = MachineRules::new(
            crate::MachineDef::new("order", "submitted")
                .state("submitted")
                .terminal_state("paid")
                .transition("submitted", "pay", "paid"),
        );
        let original = OutcomeRecord {
            id: "o-1".into(),
            state: "paid".into(),
            version: 2,
            applied: true,
            from: Some("submitted".into()),
            event: None,
            replay: false,
            at: 50,
        };
        let record = EntityRecord {
            id: "o-1".into(),
            state: "paid".into(),
            version: 2,
            created_at: 10,
            updated_at: 50,
        };
        let mut request = with_payload(r#"{"amount":42.0}"#);
        request.key = Some("pay-1".into());
        // The key record as an older release stored it.
        let stored = KeyRecord {
            fingerprint: Fingerprint::encoded("o-1", &request, Numbers::Legacy),
            expires_at: 1000,
            outcome: original.clone(),
        };
        let fingerprints = rules.fingerprints("o-1", &request);
        let decision = decide(&DecisionInput {
            rules: &rules,
            id: "o-1",
            record: Some(&record),
            key_record: Some(&stored),
            request: &request,
            fingerprints: &fingerprints,
            now: 100,
            key_retention_ms: 1000,
            guard: &no_guards,
        })
        .unwrap();
        assert_eq!(
            decision,
            Decision::Replay(OutcomeRecord {
                replay: true,
                ..original.clone()
            })
        );

        // A keyed creation stored before the change replays too.
        let create = crate::decide::CreateSpec {
            payload: Some(serde_json::from_str(r#"{"total":3.0}"#).unwrap()),
            key: Some("new-o-1".into()),
            ..Default::default()
        };
        let mut as_request = spec(Target::To("\u{0}create".into()));
        as_request.payload = create.payload.clone();
        let stored = KeyRecord {
            fingerprint: Fingerprint::encoded("o-1", &as_request, Numbers::Legacy),
            expires_at: 1000,
            outcome: original.clone(),
        };
        let decision = decide_create_keyed(
            &rules,
            "o-1",
            Some(&record),
            Some(&stored),
            &create,
            100,
            1000,
        )
        .unwrap();
        assert_eq!(
            decision,
            Decision::Replay(OutcomeRecord {
                replay: true,
                ..original
            })
        );
    }

    #[test]
    fn nesting_depth_counts_arrays_and_objects() {
        assert_eq!(nesting_depth(&json!(1)), 0);
        assert_eq!(nesting_depth(&json!([])), 1);
        assert_eq!(nesting_depth(&json!({"a": [1, {"b": [[]]}]})), 5);
        let limits = Limits::default();
        let mut deep = json!(0);
        for _ in 0..65 {
            deep = json!([deep]);
        }
        let mut request = spec(Target::To("paid".into()));
        request.payload = Some(deep);
        assert!(matches!(
            limits.check_request("o-1", &request),
            Err(Error::InvalidInput {
                field: InputField::Payload,
                ..
            })
        ));
    }

    #[test]
    fn limits_reject_empty_and_oversized_input() {
        let limits = Limits::default();
        let ok = spec(Target::To("paid".into()));
        assert!(limits.check_request("o-1", &ok).is_ok());
        assert!(matches!(
            limits.check_request("", &ok),
            Err(Error::InvalidInput {
                field: InputField::Id,
                ..
            })
        ));
        assert!(matches!(
            limits.check_request(&"x".repeat(1025), &ok),
            Err(Error::InvalidInput {
                field: InputField::Id,
                ..
            })
        ));
        assert!(limits.check_request(&"x".repeat(1024), &ok).is_ok());
        let mut keyed = ok.clone();
        keyed.key = Some(String::new());
        assert!(matches!(
            limits.check_request("o-1", &keyed),
            Err(Error::InvalidInput {
                field: InputField::Key,
                ..
            })
        ));
        keyed.key = Some("k".repeat(256));
        assert!(matches!(
            limits.check_request("o-1", &keyed),
            Err(Error::InvalidInput {
                field: InputField::Key,
                ..
            })
        ));
        let mut heavy = ok.clone();
        heavy.payload = Some(json!("x".repeat(64 * 1024)));
        assert!(matches!(
            limits.check_request("o-1", &heavy),
            Err(Error::InvalidInput {
                field: InputField::Payload,
                ..
            })
        ));
        assert!(matches!(
            limits.check_request("o-1", &spec(Target::Fire("".into()))),
            Err(Error::InvalidInput {
                field: InputField::Event,
                ..
            })
        ));
    }
}
