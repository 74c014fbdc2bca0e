//! Transition requests: the typed [`Request`] and the name-based [`NamedRequest`],
//! their input limits and their fingerprint.

mod fingerprint;
mod limits;
#[cfg(test)]
mod tests;

pub use self::fingerprint::Fingerprint;
pub(crate) use self::limits::json_size;
pub use self::limits::Limits;

use std::borrow::Cow;
use std::marker::PhantomData;

use serde_json::Value;

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
        /// concurrency): another version gives
        /// [`Error::VersionConflict`](crate::Error::VersionConflict).
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
