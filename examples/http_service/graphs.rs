//! The machine's picture: DOT, and SVG rendered by Graphviz. Both are a live
//! heat map by default: every answer counts the entities per state afresh
//! (from the state index) and is marked `Cache-Control: no-store`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use idemflow::{DotOptions, Error};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::problem::{ApiError, Kind, Problem};
use crate::AppState;

/// `?counts=false` leaves the counts out (the bare machine).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GraphQuery {
    /// Shade each state by its number of entities and print the count (default true).
    counts: Option<bool>,
}

/// The DOT text of machine `machine` (only `order` here), with the current counts.
async fn dot_text(app: &AppState, machine: &str, query: &GraphQuery) -> Result<String, ApiError> {
    let orders = &app.orders;
    if machine != orders.definition().name {
        return Err(Error::UnknownMachine {
            machine: machine.to_owned(),
        }
        .into());
    }
    let mut options = DotOptions::default();
    if query.counts.unwrap_or(true) {
        let counts = orders.count_by_state().await?;
        options.counts = Some(counts.into_iter().collect::<BTreeMap<_, _>>());
    }
    Ok(orders.definition().to_dot_with(&options))
}

const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");

/// `GET /machines/{machine}/graph.dot`: the machine in Graphviz DOT.
#[utoipa::path(
    get,
    path = "/machines/{machine}/graph.dot",
    tag = "machines",
    params(("machine" = String, Path, description = "The machine's name: `order`"), GraphQuery),
    responses(
        (status = 200, description = "DOT text, a heat map unless `counts=false`", body = String, content_type = "text/vnd.graphviz"),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such machine", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn graph_dot(
    State(app): State<AppState>,
    Path(machine): Path<String>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let dot = dot_text(&app, &machine, &query).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8"),
            NO_STORE,
        ],
        dot,
    )
        .into_response())
}

/// `GET /machines/{machine}/graph.svg`: the DOT rendered by Graphviz (503 without it).
#[utoipa::path(
    get,
    path = "/machines/{machine}/graph.svg",
    tag = "machines",
    params(("machine" = String, Path, description = "The machine's name: `order`"), GraphQuery),
    responses(
        (status = 200, description = "SVG, a live heat map unless `counts=false`", body = String, content_type = "image/svg+xml"),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such machine", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Graphviz `dot` is not installed on the server", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn graph_svg(
    State(app): State<AppState>,
    Path(machine): Path<String>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let dot = dot_text(&app, &machine, &query).await?;
    let rendered = tokio::task::spawn_blocking(move || idemflow::render_svg(&dot))
        .await
        .map_err(|error| ApiError::internal(format!("rendering failed: {error}")))?;
    match rendered {
        Ok(svg) => Ok(([(header::CONTENT_TYPE, "image/svg+xml"), NO_STORE], svg).into_response()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
            Kind::GraphvizMissing,
            "Graphviz `dot` is not installed on the server (apt-get install graphviz)",
        )),
        Err(error) => Err(ApiError::internal(format!("Graphviz failed: {error}"))),
    }
}
