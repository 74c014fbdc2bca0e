//! An HTTP service embedding the engine: orders over a JSON API with the
//! idempotency and conditional-request headers of SPEC section 8.
//!
//! ```text
//! cargo run --example http_service                        # 127.0.0.1, a free port, temporary database
//! cargo run --example http_service -- 127.0.0.1:3000 ./orders-db
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections. Then:
//!
//! ```text
//! curl -i -X POST localhost:3000/orders/o-1                                   # 201 Created
//! curl -i -X POST localhost:3000/orders/o-1/transitions -d '{"event":"submit"}'
//! curl -i -X POST localhost:3000/orders/o-1/transitions \
//!      -H 'Idempotency-Key: pay-o-1' -H 'If-Match: "2"' \
//!      -d '{"to":"paid","payload":{"amount":4200}}'                           # 200, ETag: "3"
//! # the same request again: the original response, with Idempotency-Replayed: true
//! curl -i localhost:3000/orders/o-1/history
//! curl -s localhost:3000/machines/order/graph.svg?counts=true > orders.svg
//! ```
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /orders/{id}` | 201 created, 200 if it existed (body: the outcome) |
//! | `POST /orders/{id}/transitions` `{"to": S}` or `{"event": E}`, optional `"payload"` | 200 applied or no-op |
//! | `GET /orders/{id}`, `GET /orders/{id}/history` | 200, 404 |
//! | `GET /machines/order/graph.dot`, `.svg` (`?counts=true`: heat map) | 200 |
//!
//! `Idempotency-Key` is the request's key and `If-Match: "<version>"` its
//! expected version; responses carry `ETag: "<version>"`. A replay answers
//! the original status and body with `Idempotency-Replayed: true`. Errors are
//! `{"error": message, "kind": variant}`: `InvalidInput` (and a malformed
//! body or header) 400, `NotFound` 404, `InvalidTransition` and
//! `GuardRejected` 409, `VersionConflict` 412, `KeyReused` 422, others 500.
//!
//! A guard refuses a payment without a positive integer `amount` in its payload.
//!
//! Engine calls block (on disk I/O under `Durability::Immediate`), so every
//! one runs on tokio's blocking pool through `spawn_blocking`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idemflow::{DotOptions, Engine, Error, Machine, NamedRequest, OutcomeRecord, StateMachine};
use serde::Deserialize;
use serde_json::{json, Value};

/// The life of an order in a shop.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Being filled by the customer; not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    /// Submitted by the customer, waiting for payment.
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    /// Paid: the customer's card was charged.
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    /// Handed to the carrier.
    #[terminal]
    Shipped,
    /// Cancelled before payment; nothing was charged.
    #[terminal]
    Cancelled,
    /// Paid, then refunded.
    #[terminal]
    Refunded,
}

/// `Idempotency-Replayed`, set on a replayed response.
const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");
/// `Idempotency-Key`, the request's idempotency key.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What every handler shares: the typed handle of the order machine.
#[derive(Clone)]
pub struct AppState {
    orders: Machine<OrderState>,
}

/// The service's routes over an engine (the order machine is registered on it).
pub fn router(engine: &Engine) -> idemflow::Result<Router> {
    let orders = engine.machine::<OrderState>()?;
    orders.guard_to(OrderState::Paid, |input| {
        match input
            .payload
            .and_then(|payload| payload.get("amount")?.as_u64())
        {
            Some(amount) if amount > 0 => Ok(()),
            _ => Err("a payment needs a positive integer \"amount\" in its payload".to_owned()),
        }
    });
    Ok(Router::new()
        .route("/orders/{id}", post(create_order).get(get_order))
        .route("/orders/{id}/transitions", post(transition))
        .route("/orders/{id}/history", get(history))
        .route("/machines/order/graph.dot", get(graph_dot))
        .route("/machines/order/graph.svg", get(graph_svg))
        .with_state(AppState { orders }))
}

/// An error answer: a status and `{"error": ..., "kind": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "InvalidInput",
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "Internal",
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    /// SPEC section 8's mapping of engine errors to status codes.
    fn from(error: Error) -> Self {
        let (status, kind) = match &error {
            Error::InvalidInput { .. } => (StatusCode::BAD_REQUEST, "InvalidInput"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
            Error::InvalidTransition { .. } => (StatusCode::CONFLICT, "InvalidTransition"),
            Error::GuardRejected { .. } => (StatusCode::CONFLICT, "GuardRejected"),
            Error::VersionConflict { .. } => (StatusCode::PRECONDITION_FAILED, "VersionConflict"),
            Error::KeyReused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "KeyReused"),
            Error::Locked { .. } => (StatusCode::SERVICE_UNAVAILABLE, "Locked"),
            Error::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Corrupt"),
            Error::Storage { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Storage"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Internal"),
        };
        ApiError {
            status,
            kind,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "kind": self.kind }));
        (self.status, body).into_response()
    }
}

/// Runs a blocking engine call on tokio's blocking pool.
async fn blocking<T, F>(call: F) -> Result<T, ApiError>
where
    F: FnOnce() -> idemflow::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(error) => Err(ApiError::internal(format!(
            "the engine call failed: {error}"
        ))),
    }
}

/// `ETag: "<version>"`.
fn etag(version: u64) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    (header::ETAG, value)
}

/// An outcome's body. It leaves out the replay flag so that a replay's body
/// is byte for byte the original response's body.
fn outcome_body(outcome: &OutcomeRecord) -> Value {
    json!({
        "id": outcome.id,
        "state": outcome.state,
        "version": outcome.version,
        "applied": outcome.applied,
        "from": outcome.from,
        "event": outcome.event,
        "at": outcome.at,
    })
}

/// `POST /orders/{id}`: 201 when created, 200 when it existed.
async fn create_order(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let orders = app.orders.named();
    let outcome = blocking(move || orders.create(&id)).await?;
    let status = if outcome.applied {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [etag(outcome.version)],
        Json(outcome_body(&outcome)),
    )
        .into_response())
}

/// The body of `POST /orders/{id}/transitions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    /// Target state.
    to: Option<String>,
    /// Event to fire.
    event: Option<String>,
    /// Recorded in history and in the outbox event.
    payload: Option<Value>,
}

/// The idempotency key of a request, from its `Idempotency-Key` header.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("the Idempotency-Key header is not visible ASCII")
            })
        })
        .transpose()
}

/// The expected version of a request, from `If-Match: "<version>"` (`*`
/// asks for nothing more than an existing entity).
fn expected_version(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("If-Match must be a quoted version, like \"3\"");
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|digits| digits.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(bad)
}

/// `POST /orders/{id}/transitions`.
async fn transition(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: TransitionBody = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("malformed JSON body: {error}")))?;
    let mut request = match (body.to, body.event) {
        (Some(state), None) => NamedRequest::to(state),
        (None, Some(event)) => NamedRequest::fire(event),
        _ => {
            return Err(ApiError::bad_request(
                "the body needs exactly one of \"to\" (a state) and \"event\"",
            ))
        }
    };
    if let Some(key) = idempotency_key(&headers)? {
        request = request.key(key);
    }
    if let Some(version) = expected_version(&headers)? {
        request = request.expect_version(version);
    }
    if let Some(payload) = body.payload {
        request = request.payload(payload);
    }
    let orders = app.orders.named();
    let outcome = blocking(move || orders.apply(&id, request)).await?;
    // Applied and no-op both answer 200, so a replay's original status is 200 too.
    let mut response = (
        StatusCode::OK,
        [etag(outcome.version)],
        Json(outcome_body(&outcome)),
    )
        .into_response();
    if outcome.replay {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /orders/{id}`: the current snapshot.
async fn get_order(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let orders = app.orders.named();
    let lookup = id.clone();
    match blocking(move || orders.get(&lookup)).await? {
        Some(record) => Ok((StatusCode::OK, [etag(record.version)], Json(record)).into_response()),
        None => Err(ApiError::from(Error::NotFound {
            machine: OrderState::machine_name().to_owned(),
            id,
        })),
    }
}

/// `GET /orders/{id}/history`: every entry, oldest first.
async fn history(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let orders = app.orders.named();
    let lookup = id.clone();
    let found = blocking(move || {
        Ok(match orders.get(&lookup)? {
            Some(record) => Some((record.version, orders.history(&lookup)?)),
            None => None,
        })
    })
    .await?;
    match found {
        Some((version, entries)) => {
            Ok((StatusCode::OK, [etag(version)], Json(entries)).into_response())
        }
        None => Err(ApiError::from(Error::NotFound {
            machine: OrderState::machine_name().to_owned(),
            id,
        })),
    }
}

/// `?counts=true` on the graph routes: a heat map of the entities per state.
#[derive(Debug, Deserialize)]
struct GraphQuery {
    #[serde(default)]
    counts: bool,
}

/// The order machine in DOT, with a heat map when asked for.
async fn dot_text(app: &AppState, query: &GraphQuery) -> Result<String, ApiError> {
    let orders = app.orders.named();
    let with_counts = query.counts;
    blocking(move || {
        let mut options = DotOptions::default();
        if with_counts {
            options.counts = Some(
                orders
                    .count_by_state()?
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        Ok(orders.definition().to_dot_with(&options))
    })
    .await
}

/// `GET /machines/order/graph.dot`.
async fn graph_dot(
    State(app): State<AppState>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let dot = dot_text(&app, &query).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
        dot,
    )
        .into_response())
}

/// `GET /machines/order/graph.svg`: the DOT rendered by Graphviz (503 without it).
async fn graph_svg(
    State(app): State<AppState>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let dot = dot_text(&app, &query).await?;
    let rendered = tokio::task::spawn_blocking(move || idemflow::render_svg(&dot))
        .await
        .map_err(|error| ApiError::internal(format!("rendering failed: {error}")))?;
    match rendered {
        Ok(svg) => Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "GraphvizMissing",
            message: "Graphviz `dot` is not installed on the server (apt-get install graphviz)"
                .to_owned(),
        }),
        Err(error) => Err(ApiError::internal(format!("Graphviz failed: {error}"))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(|error| {
            format!("the first argument must be an address like 127.0.0.1:3000: {error}")
        })?;
    // The second argument is a database directory; without it, a temporary database.
    let engine = match args.next() {
        Some(dir) => Engine::open(dir)?,
        None => Engine::temporary()?,
    };
    let app = router(&engine)?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
