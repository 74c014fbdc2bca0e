//! Logs, spans and metrics: `tracing-subscriber` writes the engine's events
//! (and the `http` span of each request around the engine's own spans) to
//! stderr, filtered by `RUST_LOG` (default `info`); the engine's metrics are
//! recorded by `metrics-exporter-prometheus` and served at `GET /metrics`.

use std::io::IsTerminal;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::AppState;

/// The Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). The library
/// installs no subscriber: this is the application's choice.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The installed Prometheus recorder (the process's one metrics recorder).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the Prometheus recorder as the global `metrics` recorder,
    /// describes the engine's metrics, and starts a thread that keeps the
    /// recorder's histograms small between scrapes.
    pub fn install() -> Result<Metrics, Box<dyn std::error::Error>> {
        let handle = PrometheusBuilder::new().install_recorder()?;
        idemflow::observe::describe_metrics();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })?;
        Ok(Metrics { handle })
    }
}

/// `GET /metrics`: the engine's metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The engine's metrics (idemflow_requests_total, \
            idemflow_commit_seconds, idemflow_batch_size, idemflow_outbox_pending, \
            idemflow_timers_due, idemflow_timers_fired_total, idemflow_commit_unknown_total) \
            in the Prometheus text exposition format", body = String,
            content_type = "text/plain"),
    )
)]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        app.metrics.handle.render(),
    )
}

/// Middleware: every request runs in a span `http` (method and path), so
/// the engine's spans and events of a request are nested in it.
pub async fn request_span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = request.uri().path(),
    );
    next.run(request).instrument(span).await
}
