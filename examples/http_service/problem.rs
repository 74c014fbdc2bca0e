//! Error answers: RFC 9457 `application/problem+json` for every error the
//! service gives, from a handler or from axum before a handler runs.
//!
//! A problem has `type` (a link to its section in `docs/guide.md`), `title`,
//! `status`, `detail`, and two extension members: `kind` (the
//! `idemflow::Error` variant, or the HTTP-level kind of the table in
//! [`Kind`]) and `error` (the error's message).

use std::borrow::Cow;

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idemflow::Error;
use serde::Serialize;
use utoipa::ToSchema;

/// Where the problem types are documented: `{DOCS}#problem-{kind in lower case}`.
pub const DOCS: &str = "https://github.com/idemflow/idemflow/blob/main/docs/guide.md";

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What went wrong, as the `kind` member names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    // Engine errors (the `idemflow::Error` variant of the same name).
    InvalidInput,
    NotFound,
    InvalidTransition,
    GuardRejected,
    VersionConflict,
    KeyReused,
    /// The commit happened but its durability is unknown: 503, retry with the same key.
    CommitUnknown,
    UnknownMachine,
    Locked,
    Corrupt,
    Storage,
    InvalidDefinition,
    DefinitionMismatch,
    /// An engine error variant this service does not know (the enum is
    /// `non_exhaustive`): 500, named after its variant, typed as `Internal`.
    Unlisted(String),
    // HTTP-level problems, decided before or around the engine call.
    PreconditionFailed,
    Unauthorized,
    RouteNotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    GraphvizMissing,
    Internal,
}

impl Kind {
    /// The `kind` member.
    pub fn name(&self) -> &str {
        match self {
            Kind::InvalidInput => "InvalidInput",
            Kind::NotFound => "NotFound",
            Kind::InvalidTransition => "InvalidTransition",
            Kind::GuardRejected => "GuardRejected",
            Kind::VersionConflict => "VersionConflict",
            Kind::KeyReused => "KeyReused",
            Kind::CommitUnknown => "CommitUnknown",
            Kind::UnknownMachine => "UnknownMachine",
            Kind::Locked => "Locked",
            Kind::Corrupt => "Corrupt",
            Kind::Storage => "Storage",
            Kind::InvalidDefinition => "InvalidDefinition",
            Kind::DefinitionMismatch => "DefinitionMismatch",
            Kind::Unlisted(name) => name,
            Kind::PreconditionFailed => "PreconditionFailed",
            Kind::Unauthorized => "Unauthorized",
            Kind::RouteNotFound => "RouteNotFound",
            Kind::MethodNotAllowed => "MethodNotAllowed",
            Kind::PayloadTooLarge => "PayloadTooLarge",
            Kind::UnsupportedMediaType => "UnsupportedMediaType",
            Kind::GraphvizMissing => "GraphvizMissing",
            Kind::Internal => "Internal",
        }
    }

    /// The status code (SPEC section 8 for the engine's errors).
    pub fn status(&self) -> StatusCode {
        match self {
            Kind::InvalidInput => StatusCode::BAD_REQUEST,
            Kind::NotFound | Kind::UnknownMachine | Kind::RouteNotFound => StatusCode::NOT_FOUND,
            Kind::InvalidTransition | Kind::GuardRejected => StatusCode::CONFLICT,
            Kind::VersionConflict | Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Locked | Kind::GraphvizMissing | Kind::CommitUnknown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Kind::Corrupt
            | Kind::Storage
            | Kind::InvalidDefinition
            | Kind::DefinitionMismatch
            | Kind::Unlisted(_)
            | Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `title` member: the same for every problem of this kind.
    pub fn title(&self) -> &'static str {
        match self {
            Kind::InvalidInput => "The request is malformed",
            Kind::NotFound => "No such entity",
            Kind::InvalidTransition => "The transition is not allowed from the current state",
            Kind::GuardRejected => "A guard rejected the transition",
            Kind::VersionConflict => "The entity is not at the expected version",
            Kind::KeyReused => "The idempotency key was used for a different request",
            Kind::CommitUnknown => "The outcome of the request is unknown",
            Kind::UnknownMachine => "No such machine",
            Kind::Locked => "The database is locked by another process",
            Kind::Corrupt => "Stored data is corrupt",
            Kind::Storage => "The storage failed",
            Kind::InvalidDefinition => "The machine definition is invalid",
            Kind::DefinitionMismatch => "The machine definition does not match the stored data",
            Kind::Unlisted(_) | Kind::Internal => "Internal error",
            Kind::PreconditionFailed => "A precondition failed",
            Kind::Unauthorized => "Authentication required",
            Kind::RouteNotFound => "No such resource",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::PayloadTooLarge => "The request body is too large",
            Kind::UnsupportedMediaType => "Unsupported media type",
            Kind::GraphvizMissing => "Graphviz is not installed on the server",
        }
    }

    /// The `type` member: a link to this kind's section of the guide.
    pub fn type_uri(&self) -> String {
        let anchor = match self {
            Kind::Unlisted(_) => "internal".to_owned(),
            other => other.name().to_lowercase(),
        };
        format!("{DOCS}#problem-{anchor}")
    }
}

/// An RFC 9457 problem details object, as the service sends it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://github.com/idemflow/idemflow/blob/main/docs/guide.md#problem-versionconflict",
    "title": "The entity is not at the expected version",
    "status": 412,
    "detail": "order \"o-1\" is at version 3, the request expected version 2",
    "kind": "VersionConflict",
    "error": "order \"o-1\" is at version 3, the request expected version 2"
}))]
pub struct Problem {
    /// A link to this kind of problem's section of the guide.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary, the same for every problem of this kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened to this request, in plain words.
    pub detail: String,
    /// The `idemflow::Error` variant, or the HTTP-level kind (`PreconditionFailed`,
    /// `Unauthorized`, `RouteNotFound`, `MethodNotAllowed`, `PayloadTooLarge`,
    /// `UnsupportedMediaType`, `GraphvizMissing`, `Internal`).
    pub kind: String,
    /// The error's message (for an engine error: its `Display`).
    pub error: String,
}

/// An error answer: a problem, plus headers it needs (`WWW-Authenticate`, `Allow`, ...).
#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    /// The `error` member, and the `detail` unless `detail` is set.
    pub error: String,
    /// The `detail` member, when it says more than the error's message.
    pub detail: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The `detail` of a `CommitUnknown` problem: what the client should do.
pub const COMMIT_UNKNOWN_DETAIL: &str = "The change may or may not have been made: it was \
    committed, but making it durable failed. Send the same request again with the same \
    Idempotency-Key (after Retry-After seconds): if the change was made you get its original \
    answer, with Idempotency-Replayed: true; if not, it is made now, once. Never retry it with \
    a new key. A request sent without a key cannot tell: read the order (GET) before sending it \
    again.";

/// `Retry-After` of a `CommitUnknown` answer, in seconds.
pub const COMMIT_UNKNOWN_RETRY_AFTER: &str = "1";

impl ApiError {
    pub fn new(kind: Kind, error: impl Into<String>) -> Self {
        ApiError {
            kind,
            error: error.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// A 400 `InvalidInput` problem about the request (a header, the body, the path).
    pub fn bad_request(error: impl Into<String>) -> Self {
        ApiError::new(Kind::InvalidInput, error)
    }

    /// A 412 `PreconditionFailed` problem about `If-Match` or `If-None-Match`.
    pub fn precondition_failed(error: impl Into<String>) -> Self {
        ApiError::new(Kind::PreconditionFailed, error)
    }

    pub fn internal(error: impl Into<String>) -> Self {
        ApiError::new(Kind::Internal, error)
    }

    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: self.kind.type_uri(),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone().unwrap_or_else(|| self.error.clone()),
            kind: self.kind.name().to_owned(),
            error: self.error.clone(),
        }
    }
}

impl From<Error> for ApiError {
    /// SPEC section 8's mapping; unknown future variants are 500s named after their variant.
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::InvalidInput { .. } => Kind::InvalidInput,
            Error::NotFound { .. } => Kind::NotFound,
            Error::InvalidTransition { .. } => Kind::InvalidTransition,
            Error::GuardRejected { .. } => Kind::GuardRejected,
            Error::VersionConflict { .. } => Kind::VersionConflict,
            Error::KeyReused { .. } => Kind::KeyReused,
            Error::CommitUnknown { .. } => Kind::CommitUnknown,
            Error::UnknownMachine { .. } => Kind::UnknownMachine,
            Error::Locked { .. } => Kind::Locked,
            Error::Corrupt { .. } => Kind::Corrupt,
            Error::Storage { .. } => Kind::Storage,
            Error::InvalidDefinition { .. } => Kind::InvalidDefinition,
            Error::DefinitionMismatch { .. } => Kind::DefinitionMismatch,
            other => Kind::Unlisted(other.kind().to_owned()),
        };
        let answer = ApiError::new(kind.clone(), error.to_string());
        if kind == Kind::CommitUnknown {
            return ApiError {
                detail: Some(COMMIT_UNKNOWN_DETAIL.to_owned()),
                ..answer
            }
            .header(
                header::RETRY_AFTER,
                HeaderValue::from_static(COMMIT_UNKNOWN_RETRY_AFTER),
            );
        }
        answer
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (
            self.kind.status(),
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// The fallback route: 404 `RouteNotFound`.
pub async fn route_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Kind::RouteNotFound,
        format!("no resource at {} (method {method})", uri.path()),
    )
}

/// Middleware: turns every error answer that is not yet a problem (axum's
/// plain-text rejections of a path, query or body, its 405, a panic's 500)
/// into one, keeping its status, its headers and its text as the detail.
pub async fn problems_only(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let kind = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Kind::InvalidInput,
        StatusCode::UNAUTHORIZED => Kind::Unauthorized,
        StatusCode::NOT_FOUND => Kind::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => Kind::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Kind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
        StatusCode::PRECONDITION_FAILED => Kind::PreconditionFailed,
        _ if status.is_client_error() => Kind::InvalidInput,
        _ => Kind::Internal,
    };
    let error: Cow<'_, str> = match (&kind, text.is_empty()) {
        // axum adds the Allow header after this layer has run.
        (Kind::MethodNotAllowed, _) => format!(
            "{method} is not allowed on {path}; the Allow header lists the methods that are"
        )
        .into(),
        (_, false) => text.into(),
        (_, true) => format!("{method} {path}: {}", kind.title()).into(),
    };
    // Body and framing headers are replaced; the others (Allow, ...) are kept.
    let mut response = problem_with_status(&ApiError::new(kind, error), status);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

/// A problem answer with `status` (a kind's own status unless axum chose another 4xx/5xx).
fn problem_with_status(problem: &ApiError, status: StatusCode) -> Response {
    let mut body = problem.problem();
    body.status = status.as_u16();
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_unknown_is_a_503_that_says_to_retry_with_the_same_key() {
        let error = Error::CommitUnknown {
            machine: "order".into(),
            id: "o-1".into(),
            reason: "injected fault: the sync failed".into(),
        };
        let message = error.to_string();
        let answer = ApiError::from(error);
        assert_eq!(answer.kind, Kind::CommitUnknown);
        let problem = answer.problem();
        assert_eq!(problem.status, 503);
        assert_eq!(problem.kind, "CommitUnknown");
        assert_eq!(problem.error, message);
        assert!(
            problem.type_uri.ends_with("#problem-commitunknown"),
            "{}",
            problem.type_uri
        );
        assert!(
            problem.detail.contains("same Idempotency-Key"),
            "{}",
            problem.detail
        );
        let response = answer.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(HeaderValue::as_bytes),
            Some(COMMIT_UNKNOWN_RETRY_AFTER.as_bytes())
        );
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(PROBLEM_JSON.as_bytes())
        );
    }

    #[test]
    fn other_errors_keep_their_message_as_detail() {
        let answer = ApiError::from(Error::NotFound {
            machine: "order".into(),
            id: "o-9".into(),
        });
        let problem = answer.problem();
        assert_eq!(
            (problem.status, problem.detail.as_str()),
            (404, problem.error.as_str())
        );
        assert!(answer.headers.is_empty());
    }
}
