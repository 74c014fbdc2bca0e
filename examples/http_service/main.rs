//! An HTTP service embedding the engine: orders over a JSON API that follows
//! draft-ietf-httpapi-idempotency-key-header, RFC 9110's conditional
//! requests and RFC 9457 problem details (SPEC section 8; the full rules,
//! status table and problem types are in `docs/guide.md`, section 12).
//!
//! ```text
//! cargo run --example http_service                        # 127.0.0.1, a free port, temporary database
//! cargo run --example http_service -- 127.0.0.1:3000 ./orders-db
//! DATABASE_URL=postgres://app@db-host/orders cargo run --features postgres --example http_service -- 0.0.0.0:3000
//! IDEMFLOW_HTTP_TOKENS="s3cret=shop-1,t0ken=shop-2" cargo run --example http_service
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections. Then:
//!
//! ```text
//! A='Authorization: Bearer tok-a'; J='Content-Type: application/json'
//! curl -i -X POST -H "$A" -H 'Idempotency-Key: "new-o-1"' localhost:3000/orders/o-1   # 201, ETag: "1"
//! curl -i -X POST -H "$A" -H "$J" localhost:3000/orders/o-1/transitions -d '{"event":"submit"}'
//! curl -i -X POST -H "$A" -H "$J" -H 'Idempotency-Key: "pay-o-1"' -H 'If-Match: "2"' \
//!      localhost:3000/orders/o-1/transitions -d '{"to":"paid","payload":{"amount":4200}}'  # 200, ETag: "3"
//! # the same request again: the original answer, with Idempotency-Replayed: true
//! curl -i -H "$A" -H 'If-None-Match: "3"' localhost:3000/orders/o-1       # 304 Not Modified
//! curl -s -H "$A" localhost:3000/orders/o-1/history
//! curl -s localhost:3000/machines/order/graph.svg > orders.svg            # live heat map
//! curl -s localhost:3000/openapi.json                                     # OpenAPI 3.1
//! ```
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /orders/{id}` | 201 created (a keyed retry: 201 replayed), 200 if it existed |
//! | `POST /orders/{id}/transitions` `{"to": S}` or `{"event": E}`, optional object `"payload"` | 200 applied, no-op or replayed |
//! | `GET /orders/{id}`, `GET /orders/{id}/history` | 200, 304 |
//! | `GET /machines/order/graph.dot`, `.svg` (`?counts=false`: no heat map) | 200 |
//! | `GET /openapi.json` | 200, the OpenAPI 3.1 document |
//! | `GET /metrics` | 200, the engine's metrics (Prometheus text format) |
//!
//! - **Who**: the `/orders` routes need `Authorization: Bearer <token>`; the
//!   token maps to a client id (`IDEMFLOW_HTTP_TOKENS="tok=client,..."`,
//!   default `tok-a=client-a,tok-b=client-b` for local use). Without a known
//!   token: 401. The client id scopes every idempotency key and is the actor
//!   of every change. The graphs and the document are public.
//! - **`Idempotency-Key`**: an RFC 8941 sf-string (`"k-1"`; a bare token
//!   `k-1` is the same key), 1..=255 bytes decoded; empty, malformed, with
//!   parameters, or sent twice: 400. A retry gets the original status and
//!   body with `Idempotency-Replayed: true`; another request with the key: 422.
//!   A duplicate arriving while the first is in flight waits for it (the
//!   engine decides one request per entity at a time, atomically) and replays.
//! - **Keyed creation**: a keyed `POST /orders/{id}` is the engine's keyed
//!   creation (`Create::new().key(k).scope(client)`): a retry replays the
//!   original 201 and body from the key record, which is on disk
//!   (restart-safe) for the key retention (24 h); the key is bound to the
//!   creation like any request's (reused for something else: 422).
//! - **Preconditions** (RFC 9110 section 13): `ETag: "<version>"`;
//!   `If-Match` (`*` or a list, strong comparison: `"02"` and `W/"2"` never
//!   match) is the expected version; `If-None-Match` (weak comparison) makes
//!   a POST 412 when it matches and a GET 304. Malformed: 400.
//! - **Errors** are `application/problem+json` with `type`, `title`,
//!   `status`, `detail`, `kind` (the `idemflow::Error` variant) and `error`
//!   (its message), including axum's own rejections (bad path, query or
//!   body, 404, 405, 413, 415): `InvalidInput` 400, `Unauthorized` 401,
//!   `NotFound` 404, `InvalidTransition`/`GuardRejected` 409,
//!   `VersionConflict`/`PreconditionFailed` 412, `KeyReused` 422,
//!   `CommitUnknown` 503 with `Retry-After` (retry with the same key),
//!   `GraphvizMissing`/`Locked` 503, others 500.
//! - **Observability**: logs and spans through `tracing-subscriber` on
//!   stderr (`RUST_LOG`, default `info`; every request is a span `http`
//!   around the engine's own spans), and the engine's metrics in the
//!   Prometheus text format at `GET /metrics` (public, like the graphs).
//!
//! A guard refuses a payment without a positive integer `amount` in its payload.
//!
//! Engine calls block (on disk I/O under `Durability::Immediate`), so the
//! service uses the engine's async handle (`NamedAsyncMachine`, feature
//! `tokio`), which runs them on tokio's blocking pool. A request whose
//! client goes away still commits (dropping its future does not cancel
//! it): the client's retry with the same key gets the original answer.

mod auth;
mod bodies;
mod graphs;
mod headers;
mod observe;
mod openapi;
mod orders;
mod problem;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Router};
use idemflow::{AsyncMachine, Engine, NamedAsyncMachine, StateMachine};

use crate::auth::Tokens;
use crate::observe::Metrics;

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

/// Largest request body: a payload's limit is 64 KiB of compact JSON.
pub const MAX_BODY_BYTES: usize = 128 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The order machine's async handle, by name (the routes speak names).
    orders: NamedAsyncMachine,
    tokens: Tokens,
    openapi: Arc<str>,
    metrics: Metrics,
}

/// The service's routes over an engine (the order machine is registered on
/// it; this blocks while its definition is stored, so call it at start-up).
pub fn router(engine: &Engine, tokens: Tokens, metrics: Metrics) -> idemflow::Result<Router> {
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
    let state = AppState {
        orders: AsyncMachine::from(orders).named(),
        tokens,
        openapi: openapi::document().into(),
        metrics,
    };
    Ok(Router::new()
        .route(
            "/orders/{id}",
            post(orders::create_order).get(orders::get_order),
        )
        .route("/orders/{id}/transitions", post(orders::transition))
        .route("/orders/{id}/history", get(orders::history))
        .route("/machines/{machine}/graph.dot", get(graphs::graph_dot))
        .route("/machines/{machine}/graph.svg", get(graphs::graph_svg))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(observe::metrics))
        .fallback(problem::route_not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(problem::problems_only))
        .layer(middleware::from_fn(observe::request_span))
        .with_state(state))
}

/// `GET /openapi.json`.
async fn openapi_json(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.to_string(),
    )
}

/// `ETag: "<version>"`: a strong tag, the version in decimal.
fn etag(version: u64) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    (header::ETAG, value)
}

/// The PostgreSQL database named by `DATABASE_URL`, if set and not empty.
fn database_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Connects to PostgreSQL (`Durability::Immediate`, idemflow's tables in the
/// URL's `schema`, default `idemflow`).
#[cfg(feature = "postgres")]
fn connect(url: &str) -> Result<Engine, Box<dyn std::error::Error>> {
    Ok(Engine::connect(url)?)
}

/// Without the PostgreSQL backend, `DATABASE_URL` is an error, not ignored.
#[cfg(not(feature = "postgres"))]
fn connect(_url: &str) -> Result<Engine, Box<dyn std::error::Error>> {
    Err(
        "DATABASE_URL is set, but this build has no PostgreSQL backend: \
         run with `--features postgres`"
            .into(),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    observe::init_logging();
    let metrics = Metrics::install()?;
    let mut args = std::env::args().skip(1);
    let address: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(|error| {
            format!("the first argument must be an address like 127.0.0.1:3000: {error}")
        })?;
    let (tokens, default_tokens) = Tokens::from_env()?;
    if default_tokens {
        eprintln!(
            "warning: {} is not set; accepting the local-use tokens of {:?} ({})",
            auth::TOKENS_VAR,
            auth::DEFAULT_TOKENS,
            tokens.clients().join(", ")
        );
    }
    // `DATABASE_URL` (PostgreSQL: several replicas share one database) wins;
    // else the second argument, a sled directory; else a temporary database.
    // Opening the engine and its machine block (and the PostgreSQL client
    // runs a runtime of its own, which must not start on a thread that drives
    // async tasks): do it with the worker thread handed over to blocking.
    // Requests then go through the async handle, on tokio's blocking pool.
    let database = args.next();
    let (engine, app) =
        tokio::task::block_in_place(|| -> Result<_, Box<dyn std::error::Error>> {
            let engine = match (database_url(), database) {
                (Some(url), _) => connect(&url)?,
                (None, Some(dir)) => Engine::open(dir)?,
                (None, None) => Engine::temporary()?,
            };
            let app = router(&engine, tokens, metrics)?;
            Ok((engine, app))
        })?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Closing the engine syncs and stops its threads: blocking work too.
    tokio::task::block_in_place(move || drop(engine));
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The service end to end over a real socket, on an engine whose syncs
    //! fail when the test says so: an unknown outcome is a 503 that tells
    //! the client to retry with the same key, and the retry gets the
    //! original answer.

    use std::io::{Read, Write};

    use idemflow::testing::Faults;

    use super::*;

    /// Sends one HTTP/1.1 request and returns the status, the headers (lower
    /// case) and the body.
    fn send(address: SocketAddr, request: String) -> (u16, Vec<(String, String)>, String) {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(found, _)| found == name)
            .map(|(_, value)| value.as_str())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_outcome_is_a_503_and_the_retry_replays() {
        let faults = Faults::new();
        let engine = Engine::builder()
            .faults(faults.clone())
            .temporary()
            .unwrap();
        let tokens = Tokens::parse("tok=client").unwrap();
        let app = router(&engine, tokens, Metrics::install().unwrap()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let create = format!(
            "POST /orders/o-1 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer tok\r\n\
             Idempotency-Key: \"new-o-1\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );

        faults.fail_next_syncs(1);
        let request = create.clone();
        let (status, headers, body) = tokio::task::spawn_blocking(move || send(address, request))
            .await
            .unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(header(&headers, "retry-after"), Some("1"));
        assert_eq!(
            header(&headers, "content-type"),
            Some(problem::PROBLEM_JSON)
        );
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["kind"], "CommitUnknown");
        assert_eq!(problem["status"], 503);
        assert!(problem["type"]
            .as_str()
            .is_some_and(|uri| uri.ends_with("#problem-commitunknown")));
        assert!(problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("same Idempotency-Key")));

        // The commit was made: the retry with the same key replays its 201.
        let (status, headers, body) = tokio::task::spawn_blocking(move || send(address, create))
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        assert_eq!(header(&headers, "idempotency-replayed"), Some("true"));
        assert_eq!(header(&headers, "etag"), Some("\"1\""));

        let scrape =
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        let (status, _, text) = tokio::task::spawn_blocking(move || send(address, scrape))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert!(
            text.contains("idemflow_commit_unknown_total{machine=\"order\"} 1"),
            "{text}"
        );
    }
}
