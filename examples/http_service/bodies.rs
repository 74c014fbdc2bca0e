//! The bodies of the order routes: what the service answers (with their
//! OpenAPI schemas) and the transition request.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idemflow::{EntityRecord, HistoryRecord, OutcomeRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::etag;
use crate::headers::REPLAYED;

/// What a request did (the engine's outcome). A replay's body is byte for
/// byte the original answer's body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomeBody {
    /// The order id.
    id: String,
    /// The state after the request (for a replay: after the original request).
    state: String,
    /// The version after the request; also the `ETag`.
    version: u64,
    /// Whether the request (for a replay: the original) changed the state; a creation counts.
    applied: bool,
    /// The state an applied transition left (null for a creation or a no-op).
    from: Option<String>,
    /// The event of an applied transition fired by event.
    event: Option<String>,
    /// When the request (for a replay: the original) was decided, in ms since the epoch.
    at: u64,
}

impl OutcomeBody {
    pub fn of(outcome: &OutcomeRecord) -> Self {
        OutcomeBody {
            id: outcome.id.clone(),
            state: outcome.state.clone(),
            version: outcome.version,
            applied: outcome.applied,
            from: outcome.from.clone(),
            event: outcome.event.clone(),
            at: outcome.at,
        }
    }
}

/// An order's current snapshot.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntityBody {
    id: String,
    state: String,
    /// The number of history entries; also the `ETag`.
    version: u64,
    /// Ms since the epoch.
    created_at: u64,
    /// Ms since the epoch.
    updated_at: u64,
}

impl From<EntityRecord> for EntityBody {
    fn from(record: EntityRecord) -> Self {
        EntityBody {
            id: record.id,
            state: record.state,
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// One applied change of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntryBody {
    /// The version this change produced (1 for the creation).
    version: u64,
    /// The state before (null for the creation).
    from: Option<String>,
    to: String,
    event: Option<String>,
    /// The request's idempotency key, as the client sent it (without its client scope).
    key: Option<String>,
    /// The request's payload.
    payload: Option<Value>,
    /// The client that made the change.
    actor: Option<String>,
    /// Ms since the epoch.
    at: u64,
}

impl From<HistoryRecord> for HistoryEntryBody {
    fn from(entry: HistoryRecord) -> Self {
        HistoryEntryBody {
            version: entry.version,
            from: entry.from,
            to: entry.to,
            event: entry.event,
            key: entry.key,
            payload: entry.payload,
            actor: entry.actor,
            at: entry.at,
        }
    }
}

/// A success answer: status, `ETag`, body, and the replay mark.
pub struct Answer {
    status: StatusCode,
    body: OutcomeBody,
    replayed: bool,
}

impl Answer {
    pub fn new(status: StatusCode, body: OutcomeBody) -> Self {
        Answer {
            status,
            body,
            replayed: false,
        }
    }

    /// Marks the answer as a replay (`Idempotency-Replayed: true`) when `replayed`.
    #[must_use]
    pub fn replayed(mut self, replayed: bool) -> Self {
        self.replayed = replayed;
        self
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, [etag(self.body.version)], Json(self.body)).into_response();
        if self.replayed {
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

/// The body of `POST /orders/{id}/transitions`: exactly one of `to` and
/// `event`, and an optional `payload` (its schema is built from the machine
/// in `openapi.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    pub to: Option<String>,
    pub event: Option<String>,
    pub payload: Option<Value>,
}
