//! The order routes: create, transition, read, history.
//!
//! Every engine call goes through the async handle ([`NamedAsyncMachine`]),
//! which runs it on tokio's blocking pool; a handler first checks what it
//! can without the engine (auth, path, headers, body).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idemflow::{Create, Error, InputField, NamedAsyncMachine, NamedRequest, OutcomeRecord};

use crate::auth::Client;
use crate::bodies::{Answer, EntityBody, HistoryEntryBody, OutcomeBody, TransitionBody};
use crate::headers::{condition, idempotency_key, Condition};
use crate::problem::{ApiError, Problem};
use crate::{etag, AppState};

const ID_DOC: &str = "The order id: 1 to 1024 bytes once percent-decoded.";
const KEY_DOC: &str = "An RFC 8941 sf-string, e.g. `\"8e03978e-40d5\"` (a bare sf-token \
    such as `k-1` names the same key as `\"k-1\"`): 1 to 255 bytes once decoded, one field line, \
    no parameters; anything else is a 400. Keys are scoped to the authenticated client. A retry \
    with the same key and request gets the original status and body with \
    `Idempotency-Replayed: true`; the same key with another request is a 422. A duplicate that \
    arrives while the first request is still in flight is deliberately not answered 409 (the \
    draft's SHOULD): the engine decides requests on one entity one at a time, each in one \
    atomic step (SPEC sections 3 and 4), so the duplicate waits for the first to commit and \
    then replays its outcome.";
const IF_MATCH_DOC: &str = "`*` or a list of entity tags (RFC 9110 section 13.1.1), compared \
    strongly: only `\"<current version>\"` matches (`\"02\"`, `W/\"2\"` and foreign tags never \
    do). Malformed syntax is a 400; more than 64 tags are a 400.";
const IF_NONE_MATCH_DOC: &str = "`*` or a list of entity tags (RFC 9110 section 13.1.2), \
    compared weakly (`W/\"2\"` matches version 2).";

fn not_found(orders: &NamedAsyncMachine, id: &str) -> ApiError {
    ApiError::from(Error::NotFound {
        machine: orders.definition().name.clone(),
        id: id.to_owned(),
    })
}

/// 412: `header` evaluated to false on an order at `version`.
fn failed(header: &str, id: &str, version: u64) -> ApiError {
    let verb = if header == "If-Match" {
        "does not match"
    } else {
        "matches"
    };
    ApiError::precondition_failed(format!(
        "{header} {verb} order {id:?}, whose entity tag is \"{version}\""
    ))
}

/// `POST /orders/{id}`: create an order.
///
/// With an `Idempotency-Key`, this is the engine's keyed creation, scoped to
/// the client: a retry by the same client with the same key replays the
/// original answer (201 and body) from the key record, across restarts, for
/// the key retention (24 h). Without a key, or for another key or client,
/// an existing order answers 200 (creation is a no-op, SPEC section 2).
#[utoipa::path(
    post,
    path = "/orders/{id}",
    tag = "orders",
    params(
        ("id" = String, Path, description = ID_DOC),
        ("Idempotency-Key" = Option<String>, Header, description = KEY_DOC),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
        ("If-None-Match" = Option<String>, Header, description = IF_NONE_MATCH_DOC),
    ),
    responses(
        (status = 201, description = "Created; or the replay of this client's keyed creation \
            (`Idempotency-Replayed: true`, the original body)", body = OutcomeBody,
            headers(("ETag" = String, description = "The version, quoted: \"1\""),
                ("Idempotency-Replayed" = String, description = "`true` on a replay")),
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$request.path.id")))),
                ("MoveOrder" = (operation_id = "transition", parameters(("id" = "$request.path.id")))),
                ("OrderHistory" = (operation_id = "history", parameters(("id" = "$request.path.id")))),
            )),
        (status = 200, description = "The order existed: nothing changed", body = OutcomeBody,
            headers(("ETag" = String, description = "The current version, quoted")),
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$request.path.id")))),
                ("MoveOrder" = (operation_id = "transition", parameters(("id" = "$request.path.id")))),
            )),
        (status = 400, description = "Malformed id or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match with no such order or another version; \
            If-None-Match matching the existing order", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "KeyReused: the key was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "CommitUnknown: the creation may or may not have been made; \
            retry with the same Idempotency-Key", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before the retry"))),
    ),
    security(("bearer" = []))
)]
pub async fn create_order(
    client: Client,
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let if_match = condition(&headers, header::IF_MATCH)?;
    let if_none_match = condition(&headers, header::IF_NONE_MATCH)?;
    let answer = create(
        &app.orders,
        &id,
        &client.0,
        key.as_deref(),
        if_match,
        if_none_match,
    )
    .await?;
    Ok(answer.into_response())
}

async fn create(
    orders: &NamedAsyncMachine,
    id: &str,
    client: &str,
    key: Option<&str>,
    if_match: Option<Condition>,
    if_none_match: Option<Condition>,
) -> Result<Answer, ApiError> {
    if let Some(condition) = &if_match {
        // If-Match needs a current representation (RFC 9110 section 13.1.1),
        // so it never lets a creation happen; on an existing order the
        // creation below is a no-op.
        match orders.get(id).await? {
            None => {
                return Err(ApiError::precondition_failed(format!(
                    "If-Match needs an existing order and {id:?} does not exist"
                )))
            }
            Some(record) if !condition.strong_match(record.version) => {
                return Err(failed("If-Match", id, record.version))
            }
            Some(_) => {}
        }
    }
    // If-None-Match is evaluated before the engine sees the key, so that a
    // 412 binds nothing to it (errors are never stored under a key). The
    // retry of this client's keyed creation of the order goes on to the
    // engine, which replays it: the original request passed the condition.
    if let Some(condition) = &if_none_match {
        if let Some(record) = orders.get(id).await? {
            if condition.weak_match(record.version)
                && !created_with(orders, id, key, client).await?
            {
                return Err(failed("If-None-Match", id, record.version));
            }
        }
    }
    let mut create = Create::new().actor(client);
    if let Some(key) = key {
        create = create.key(key).scope(client);
    }
    let outcome = orders.create_request(id, create).await?;
    // Created between the read above and the engine's step: the condition fails now.
    if let Some(condition) = &if_none_match {
        if !outcome.applied && !outcome.replay && condition.weak_match(outcome.version) {
            return Err(failed("If-None-Match", id, outcome.version));
        }
    }
    // A replay answers what the original answered: 201 if it created the
    // order, 200 if the order existed then.
    let status = if outcome.applied {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Answer::new(status, OutcomeBody::of(&outcome)).replayed(outcome.replay))
}

/// Whether this client created order `id` with this key (history entry 1,
/// the creation, records the key and the client as its actor).
async fn created_with(
    orders: &NamedAsyncMachine,
    id: &str,
    key: Option<&str>,
    client: &str,
) -> Result<bool, ApiError> {
    let Some(key) = key else {
        return Ok(false);
    };
    let history = orders.history(id).await?;
    Ok(history.first().is_some_and(|first| {
        first.key.as_deref() == Some(key) && first.actor.as_deref() == Some(client)
    }))
}

/// Whether a `Content-Type` is JSON (`application/json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /orders/{id}/transitions`: move an order.
#[utoipa::path(
    post,
    path = "/orders/{id}/transitions",
    tag = "orders",
    params(
        ("id" = String, Path, description = ID_DOC),
        ("Idempotency-Key" = Option<String>, Header, description = KEY_DOC),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
        ("If-None-Match" = Option<String>, Header, description = IF_NONE_MATCH_DOC),
    ),
    request_body(content = TransitionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied, or a no-op (the target was reached already), or a \
            replay (`Idempotency-Replayed: true`, the original body)", body = OutcomeBody,
            headers(("ETag" = String, description = "The version after the request, quoted"),
                ("Idempotency-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, description = "Malformed id, header or body; unknown state or event", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "InvalidTransition or GuardRejected", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "VersionConflict (If-Match) or PreconditionFailed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 128 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "KeyReused: the key was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "CommitUnknown: the transition may or may not have been made; \
            retry with the same Idempotency-Key", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before the retry"))),
    ),
    security(("bearer" = []))
)]
pub async fn transition(
    client: Client,
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::new(
            crate::problem::Kind::UnsupportedMediaType,
            "the body must be application/json",
        )
        .header(
            header::HeaderName::from_static("accept-post"),
            HeaderValue::from_static("application/json"),
        ));
    }
    let body: TransitionBody = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("malformed JSON body: {error}")))?;
    // Names are checked here, as the engine's first step would, so that an
    // unknown name is a 400 before any precondition is evaluated.
    let orders = &app.orders;
    let def = orders.definition();
    let unknown = |what: InputField, name: &str| {
        ApiError::from(Error::invalid_input(
            what,
            format!("{name:?} is not a {what} of machine {}", def.name),
        ))
    };
    let mut request = match (body.to, body.event) {
        (Some(state), None) if def.has_state(&state) => NamedRequest::to(state),
        (Some(state), None) => return Err(unknown(InputField::State, &state)),
        (None, Some(event)) if def.has_event(&event) => NamedRequest::fire(event),
        (None, Some(event)) => return Err(unknown(InputField::Event, &event)),
        _ => {
            return Err(ApiError::bad_request(
                "the body needs exactly one of \"to\" (a state) and \"event\"",
            ))
        }
    };
    let key = idempotency_key(&headers)?;
    let if_match = condition(&headers, header::IF_MATCH)?;
    let if_none_match = condition(&headers, header::IF_NONE_MATCH)?;
    request = request.actor(client.0.clone());
    if let Some(key) = &key {
        request = request.key(key.clone()).scope(client.0.clone());
    }
    if let Some(payload) = body.payload {
        if !payload.is_object() {
            return Err(ApiError::bad_request("\"payload\" must be a JSON object"));
        }
        request = request.payload(payload);
    }
    if let Some(condition) = if_none_match {
        check_if_none_match(orders, &id, &condition, key.as_deref(), &client.0).await?;
    }
    let outcome = match if_match {
        None | Some(Condition::Any) => orders.apply(&id, request).await?,
        Some(condition) => apply_if_match(orders, &id, request, &condition).await?,
    };
    let answer = Answer::new(StatusCode::OK, OutcomeBody::of(&outcome)).replayed(outcome.replay);
    Ok(answer.into_response())
}

/// `If-None-Match` on a transition: 412 when it matches the order as read
/// now. The engine's atomic step knows only an expected version, so this
/// check runs just before it: `*` is exact (orders are never deleted), a
/// tag list is as of that read. A retry of a keyed request this client
/// already applied (its key is in the history) goes on to the engine, which
/// replays it. No order: the engine answers 404 (RFC 9110 section 13.2.1).
async fn check_if_none_match(
    orders: &NamedAsyncMachine,
    id: &str,
    condition: &Condition,
    key: Option<&str>,
    client: &str,
) -> Result<(), ApiError> {
    let Some(record) = orders.get(id).await? else {
        return Ok(());
    };
    if !condition.weak_match(record.version) {
        return Ok(());
    }
    if let Some(key) = key {
        let applied = orders.history(id).await?.iter().any(|entry| {
            entry.key.as_deref() == Some(key) && entry.actor.as_deref() == Some(client)
        });
        if applied {
            return Ok(());
        }
    }
    Err(failed("If-None-Match", id, record.version))
}

/// A transition under an `If-Match` list: the engine checks one expected
/// version atomically, so each version the list names is tried in turn,
/// lowest first, until one is not refused:
///
/// - `VersionConflict` with an actual version the list names: try that one;
///   with any other: 412 (at that moment the order matched no listed tag);
/// - `KeyReused`: the key may be bound to this request under another listed
///   version (a retry after the order moved on): try the others, and answer
///   422 only when none replays.
///
/// So the answer is the one the engine gives for the listed version that is
/// current (or was, for a replay), and a retry with the same list replays.
/// A list naming no version (only weak or foreign tags) can never match: 412
/// (404 without the order).
async fn apply_if_match(
    orders: &NamedAsyncMachine,
    id: &str,
    request: NamedRequest,
    condition: &Condition,
) -> Result<OutcomeRecord, ApiError> {
    let candidates = condition.candidate_versions();
    let Some(&first) = candidates.first() else {
        return Err(match orders.get(id).await? {
            None => not_found(orders, id),
            Some(record) => failed("If-Match", id, record.version),
        });
    };
    let mut tried = vec![first];
    loop {
        let version = tried[tried.len() - 1];
        let next = match orders
            .apply(id, request.clone().expect_version(version))
            .await
        {
            Err(Error::VersionConflict { actual, .. })
                if candidates.contains(&actual) && !tried.contains(&actual) =>
            {
                actual
            }
            Err(error @ Error::KeyReused { .. }) => {
                match candidates.iter().find(|version| !tried.contains(version)) {
                    Some(&untried) => untried,
                    None => return Err(error.into()),
                }
            }
            other => return Ok(other?),
        };
        tried.push(next);
    }
}

/// The preconditions of a read: `If-Match` and `If-None-Match`.
struct ReadConditions {
    if_match: Option<Condition>,
    if_none_match: Option<Condition>,
}

impl ReadConditions {
    fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(ReadConditions {
            if_match: condition(headers, header::IF_MATCH)?,
            if_none_match: condition(headers, header::IF_NONE_MATCH)?,
        })
    }

    /// RFC 9110 section 13.2.2 for an order at `version`: a failed
    /// `If-Match` is 412, then a matching `If-None-Match` is 304 (`Ok(true)`).
    fn not_modified(&self, id: &str, version: u64) -> Result<bool, ApiError> {
        if let Some(condition) = &self.if_match {
            if !condition.strong_match(version) {
                return Err(failed("If-Match", id, version));
            }
        }
        Ok(self
            .if_none_match
            .as_ref()
            .is_some_and(|condition| condition.weak_match(version)))
    }
}

fn not_modified_response(version: u64) -> Response {
    (StatusCode::NOT_MODIFIED, [etag(version)]).into_response()
}

/// `GET /orders/{id}`: the current snapshot.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(
        ("id" = String, Path, description = ID_DOC),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
        ("If-None-Match" = Option<String>, Header, description = IF_NONE_MATCH_DOC),
    ),
    responses(
        (status = 200, description = "The order", body = EntityBody,
            headers(("ETag" = String, description = "The version, quoted"))),
        (status = 304, description = "If-None-Match matched: not modified",
            headers(("ETag" = String, description = "The version, quoted"))),
        (status = 400, description = "Malformed id or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_order(
    _client: Client,
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let conditions = ReadConditions::of(&headers)?;
    let orders = &app.orders;
    let record = orders
        .get(&id)
        .await?
        .ok_or_else(|| not_found(orders, &id))?;
    if conditions.not_modified(&id, record.version)? {
        return Ok(not_modified_response(record.version));
    }
    let version = record.version;
    Ok((
        StatusCode::OK,
        [etag(version)],
        Json(EntityBody::from(record)),
    )
        .into_response())
}

/// `GET /orders/{id}/history`: every applied change, oldest first.
#[utoipa::path(
    get,
    path = "/orders/{id}/history",
    tag = "orders",
    params(
        ("id" = String, Path, description = ID_DOC),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
        ("If-None-Match" = Option<String>, Header, description = IF_NONE_MATCH_DOC),
    ),
    responses(
        (status = 200, description = "The history, oldest first", body = Vec<HistoryEntryBody>,
            headers(("ETag" = String, description = "The order's version, quoted"))),
        (status = 304, description = "If-None-Match matched: not modified",
            headers(("ETag" = String, description = "The version, quoted"))),
        (status = 400, description = "Malformed id or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn history(
    _client: Client,
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let conditions = ReadConditions::of(&headers)?;
    let orders = &app.orders;
    // One read: the history's last version is the order's version, and an
    // order without history does not exist (creation writes entry 1).
    let entries = orders.history(&id).await?;
    if entries.is_empty() {
        return Err(not_found(orders, &id));
    }
    let version = entries.last().map_or(0, |entry| entry.version);
    if conditions.not_modified(&id, version)? {
        return Ok(not_modified_response(version));
    }
    let entries: Vec<HistoryEntryBody> = entries.into_iter().map(Into::into).collect();
    Ok((StatusCode::OK, [etag(version)], Json(entries)).into_response())
}
