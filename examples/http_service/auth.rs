//! Who is calling: `Authorization: Bearer <token>`, with a fixed map from
//! token to client id. The client id scopes every idempotency key the client
//! sends (`Request::scope`), so two clients' equal key strings never meet,
//! and it is the `actor` of every change the client makes.
//!
//! The map comes from `IDEMFLOW_HTTP_TOKENS="tok-a=client-a,tok-b=client-b"`;
//! without it the service runs with exactly that map, for local use only
//! (it says so on stderr at start-up).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};

use crate::problem::{ApiError, Kind};
use crate::AppState;

/// The environment variable holding the token map.
pub const TOKENS_VAR: &str = "IDEMFLOW_HTTP_TOKENS";
/// The map used when [`TOKENS_VAR`] is not set: for local use only.
pub const DEFAULT_TOKENS: &str = "tok-a=client-a,tok-b=client-b";
/// Longest client id: the engine's limit on a key scope.
const MAX_CLIENT_BYTES: usize = 255;

/// Token -> client id.
#[derive(Clone, Debug)]
pub struct Tokens(Arc<Vec<(String, String)>>);

impl Tokens {
    /// The map from [`TOKENS_VAR`], or the default map (and `true`) without it.
    pub fn from_env() -> Result<(Tokens, bool), String> {
        match std::env::var(TOKENS_VAR) {
            Ok(spec) => Tokens::parse(&spec).map(|tokens| (tokens, false)),
            Err(std::env::VarError::NotPresent) => {
                Tokens::parse(DEFAULT_TOKENS).map(|tokens| (tokens, true))
            }
            Err(error) => Err(format!("{TOKENS_VAR}: {error}")),
        }
    }

    /// Parses `token=client,token=client,...`. Tokens are RFC 6750 `b64token`s.
    pub fn parse(spec: &str) -> Result<Tokens, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (token, client) = entry
                .split_once('=')
                .ok_or_else(|| format!("{TOKENS_VAR}: {entry:?} is not token=client"))?;
            let (token, client) = (token.trim(), client.trim());
            let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
            if token.is_empty() || !token.chars().all(b64token) {
                return Err(format!(
                    "{TOKENS_VAR}: token {token:?} must be letters, digits and -._~+/"
                ));
            }
            if client.is_empty() || client.len() > MAX_CLIENT_BYTES {
                return Err(format!(
                    "{TOKENS_VAR}: client id {client:?} must have 1 to {MAX_CLIENT_BYTES} bytes"
                ));
            }
            if pairs.iter().any(|(known, _)| known == token) {
                return Err(format!("{TOKENS_VAR}: token {token:?} is listed twice"));
            }
            pairs.push((token.to_owned(), client.to_owned()));
        }
        if pairs.is_empty() {
            return Err(format!("{TOKENS_VAR} lists no token"));
        }
        Ok(Tokens(Arc::new(pairs)))
    }

    /// The client id of a token; every known token is compared in full, in
    /// time independent of where they differ.
    fn client(&self, token: &[u8]) -> Option<&str> {
        let mut found = None;
        for (known, client) in self.0.iter() {
            if constant_time_eq(known.as_bytes(), token) {
                found = Some(client.as_str());
            }
        }
        found
    }

    /// The client ids, for the start-up message.
    pub fn clients(&self) -> Vec<&str> {
        self.0.iter().map(|(_, client)| client.as_str()).collect()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The authenticated client of a request.
#[derive(Clone, Debug)]
pub struct Client(pub String);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut lines = parts.headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (lines.next(), lines.next()) else {
            return Err(unauthorized(
                "send Authorization: Bearer <token>",
                r#"Bearer realm="idemflow""#,
            ));
        };
        let bad = || {
            unauthorized(
                "the bearer token is not valid",
                r#"Bearer realm="idemflow", error="invalid_token""#,
            )
        };
        // The auth scheme is case-insensitive (RFC 9110 section 11.1).
        let value = value.as_bytes();
        let token = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
            _ => return Err(bad()),
        };
        state
            .tokens
            .client(token)
            .map(|client| Client(client.to_owned()))
            .ok_or_else(bad)
    }
}

fn unauthorized(error: &str, challenge: &'static str) -> ApiError {
    ApiError::new(Kind::Unauthorized, error).header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    )
}
