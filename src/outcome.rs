//! What requests return and what is stored: outcomes, entity snapshots,
//! history entries and outbox events, in a typed form (`Outcome<M>`,
//! `Entity<M>`, `HistoryEntry<M>`) and a name-based form (`OutcomeRecord`,
//! `EntityRecord`, `HistoryRecord`, `OutboxEvent`) for tools without the Rust types.
//!
//! Timestamps are milliseconds since the Unix epoch (UTC).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::machine::{MachineEvent, StateMachine};

/// What a request did, by name. Stored with an idempotency key so that a
/// retry returns it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// The entity id.
    pub id: String,
    /// The entity's state after the request.
    pub state: String,
    /// The entity's version after the request.
    pub version: u64,
    /// Whether the request (for a replay: the original request) changed the
    /// state, creating the entity included.
    pub applied: bool,
    /// The state before an applied transition (none for a creation or a no-op).
    pub from: Option<String>,
    /// The event of an applied transition fired by event.
    pub event: Option<String>,
    /// Whether this outcome is a replay of an earlier request with the same key.
    pub replay: bool,
    /// When the request (for a replay: the original request) was decided.
    pub at: u64,
}

/// What a request did: the entity's state and version afterwards, and whether
/// it changed anything.
///
/// - applied: `was_applied()` is true, `from()` is the previous state (none for a creation);
/// - no-op (target already reached, or creating an existing entity): `was_applied()` is false;
/// - replay (same idempotency key and request again): `is_replay()` is true and
///   every other field is the *original* outcome's, even if the entity moved on since.
///
/// ```
/// # use idemflow::{Engine, Request, StateMachine};
/// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// # #[machine(name = "order", initial = Draft, events = OrderEvent)]
/// # enum OrderState {
/// #     #[on(submit = Submitted)] Draft,
/// #     #[on(pay = Paid)] Submitted,
/// #     #[terminal] Paid,
/// # }
/// let orders = Engine::temporary()?.machine::<OrderState>()?;
/// let created = orders.create("o-1")?;
/// assert!(created.was_created() && created.version() == 1);
///
/// let submit = Request::fire(OrderEvent::Submit).key("submit-o-1");
/// let applied = orders.apply("o-1", submit.clone())?;
/// assert!(applied.was_applied() && !applied.is_replay());
/// assert_eq!(applied.from(), Some(OrderState::Draft));
/// assert_eq!(applied.event(), Some(OrderEvent::Submit));
///
/// orders.fire("o-1", OrderEvent::Pay)?;
/// let replay = orders.apply("o-1", submit)?; // the order moved on since
/// assert!(replay.is_replay());
/// assert_eq!((replay.state(), replay.version()), (OrderState::Submitted, 2));
///
/// let noop = orders.transition("o-1", OrderState::Paid)?;
/// assert!(noop.was_noop() && noop.version() == 3);
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome<M: StateMachine> {
    id: String,
    state: M,
    version: u64,
    applied: bool,
    from: Option<M>,
    event: Option<M::Event>,
    replay: bool,
    at: u64,
}

impl<M: StateMachine> Outcome<M> {
    /// The entity id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The entity's state after the request (for a replay: after the original request).
    pub fn state(&self) -> M {
        self.state
    }

    /// The entity's version after the request (for a replay: after the original request).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether this request, or for a replay the original one, changed the
    /// state (a creation counts).
    pub fn was_applied(&self) -> bool {
        self.applied
    }

    /// Whether this request changed nothing because its target was already
    /// reached (or the entity already existed).
    pub fn was_noop(&self) -> bool {
        !self.applied
    }

    /// Whether the outcome was replayed from an earlier request with the same key.
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// Whether the request created the entity.
    pub fn was_created(&self) -> bool {
        self.applied && self.version == 1
    }

    /// The state an applied transition left (none for a creation or a no-op).
    pub fn from(&self) -> Option<M> {
        self.from
    }

    /// The event of an applied transition that was fired by event.
    pub fn event(&self) -> Option<M::Event> {
        self.event
    }

    /// When the request (for a replay: the original one) was decided, in ms since the epoch.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The name-based form.
    pub fn to_record(&self) -> OutcomeRecord {
        OutcomeRecord {
            id: self.id.clone(),
            state: self.state.name().to_owned(),
            version: self.version,
            applied: self.applied,
            from: self.from.map(|s| s.name().to_owned()),
            event: self.event.map(|e| e.name().to_owned()),
            replay: self.replay,
            at: self.at,
        }
    }

    /// The typed form of a name-based outcome.
    pub fn from_record(record: OutcomeRecord) -> Result<Self> {
        Ok(Outcome {
            state: typed_state::<M>(&record.state)?,
            from: record.from.as_deref().map(typed_state::<M>).transpose()?,
            event: record.event.as_deref().map(typed_event::<M>).transpose()?,
            id: record.id,
            version: record.version,
            applied: record.applied,
            replay: record.replay,
            at: record.at,
        })
    }
}

/// An entity's stored record, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// The entity id.
    pub id: String,
    /// The current state.
    pub state: String,
    /// The version: the number of history entries (1 after creation).
    pub version: u64,
    /// When the entity was created.
    pub created_at: u64,
    /// When the last transition was applied.
    pub updated_at: u64,
}

/// A snapshot of an entity of a typed machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity<M: StateMachine> {
    /// The entity id.
    pub id: String,
    /// The current state.
    pub state: M,
    /// The version: the number of history entries (1 after creation).
    pub version: u64,
    /// When the entity was created (ms since the epoch).
    pub created_at: u64,
    /// When the last transition was applied (ms since the epoch).
    pub updated_at: u64,
}

impl<M: StateMachine> Entity<M> {
    /// The typed form of a stored record.
    pub fn from_record(record: EntityRecord) -> Result<Self> {
        Ok(Entity {
            state: typed_state::<M>(&record.state)?,
            id: record.id,
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

/// One entry of an entity's history, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The version this entry produced (1 for the creation).
    pub version: u64,
    /// The state before (none for the creation).
    pub from: Option<String>,
    /// The state after.
    pub to: String,
    /// The fired event, for a request by event.
    pub event: Option<String>,
    /// The request's idempotency key.
    pub key: Option<String>,
    /// The request's payload.
    pub payload: Option<Value>,
    /// Who made the request.
    pub actor: Option<String>,
    /// When it was applied (ms since the epoch).
    pub at: u64,
}

/// One entry of an entity's history in a typed machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry<M: StateMachine> {
    /// The version this entry produced (1 for the creation).
    pub version: u64,
    /// The state before (none for the creation).
    pub from: Option<M>,
    /// The state after.
    pub to: M,
    /// The fired event, for a request by event.
    pub event: Option<M::Event>,
    /// The request's idempotency key.
    pub key: Option<String>,
    /// The request's payload.
    pub payload: Option<Value>,
    /// Who made the request.
    pub actor: Option<String>,
    /// When it was applied (ms since the epoch).
    pub at: u64,
}

impl<M: StateMachine> HistoryEntry<M> {
    /// The typed form of a stored entry.
    pub fn from_record(record: HistoryRecord) -> Result<Self> {
        Ok(HistoryEntry {
            version: record.version,
            from: record.from.as_deref().map(typed_state::<M>).transpose()?,
            to: typed_state::<M>(&record.to)?,
            event: record.event.as_deref().map(typed_event::<M>).transpose()?,
            key: record.key,
            payload: record.payload,
            actor: record.actor,
            at: record.at,
        })
    }
}

/// One applied change (a creation or a transition), published through the outbox.
///
/// `(machine, id, version)` identifies it uniquely: a consumer that may see an
/// event twice (delivery is at least once) deduplicates on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Where the event sits in the outbox: positions grow in commit order and
    /// are unique among pending events. [`Outbox::ack_positions`](crate::Outbox::ack_positions)
    /// and [`Outbox::quarantine`](crate::Outbox::quarantine) take it.
    #[serde(default)]
    pub position: u64,
    /// The machine's name.
    pub machine: String,
    /// The entity id.
    pub id: String,
    /// The version the change produced.
    pub version: u64,
    /// The state before (none for a creation).
    pub from: Option<String>,
    /// The state after.
    pub to: String,
    /// The fired event, for a request by event.
    pub event: Option<String>,
    /// The request's idempotency key.
    pub key: Option<String>,
    /// The request's payload.
    pub payload: Option<Value>,
    /// Who made the request.
    pub actor: Option<String>,
    /// When the change was applied (ms since the epoch).
    pub at: u64,
}

fn typed_state<M: StateMachine>(name: &str) -> Result<M> {
    M::from_name(name).ok_or_else(|| Error::Corrupt {
        tree: format!("entities/{}", M::machine_name()),
        key: String::new(),
        reason: format!(
            "stored state {name:?} is not a state of {}",
            M::machine_name()
        ),
    })
}

fn typed_event<M: StateMachine>(name: &str) -> Result<M::Event> {
    <M::Event as MachineEvent>::from_name(name).ok_or_else(|| Error::Corrupt {
        tree: format!("history/{}", M::machine_name()),
        key: String::new(),
        reason: format!(
            "stored event {name:?} is not an event of {}",
            M::machine_name()
        ),
    })
}
