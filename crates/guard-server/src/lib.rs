//! The guard's HTTP surface: `/metrics` (Prometheus text), `/healthz` (the process is alive)
//! and `/readyz` (the guard can make records durable: joined, broker reachable, sinks healthy).
//!
//! The server knows only [`Health`] and a render function for metrics, so it stays independent
//! of the metrics backend and of the stages. It binds to loopback by default.
//!
//! The other direction lives here too: a small HTTP client ([`client::request`]) and ordered
//! webhook delivery with back-off ([`webhook::Webhook`]).

pub mod client;
pub mod webhook;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use guard_core::Health;
use std::net::SocketAddr;
use std::sync::Arc;

/// Describe the metrics this crate emits (webhook delivery); the binary calls it once when
/// it installs the recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        "guard_stats_events_sent_total",
        Unit::Count,
        "Drift events delivered, by destination (kafka, webhook)"
    );
    describe_counter!(
        "guard_stats_events_failed_total",
        Unit::Count,
        "Failed drift event deliveries, by destination (webhook attempts are retried)"
    );
    describe_counter!(
        "guard_stats_webhook_dropped_total",
        Unit::Count,
        "Webhook payloads dropped from the full retry queue"
    );
    describe_gauge!(
        "guard_stats_webhook_queue",
        Unit::Count,
        "Webhook payloads waiting for delivery"
    );
}

/// Renders the Prometheus exposition text.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Extra facts `/readyz` reports next to health (e.g. mode, version).
pub type ReadyExtras = Arc<serde_json::Map<String, serde_json::Value>>;

/// Answers `GET /api/stats`; the argument is the scope (`local` or `group`).
pub type StatsFn = Arc<dyn Fn(&str) -> guard_core::StatsReport + Send + Sync>;

/// Answers an operator endpoint with a JSON document.
pub type ApiFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Decides whether a state-changing operator request may run: `Ok(who)` or the refusal to
/// send (401/403). The binary builds it from the review service's reviewers, CSRF tokens and
/// origin check, so a web page an operator happens to visit cannot clear the breaker.
pub type Authorize = Arc<dyn Fn(&HeaderMap) -> Result<String, Response> + Send + Sync>;

/// `GET /api/breaker` (status) and `POST /api/breaker/clear` (operator reset, authorized).
pub fn breaker_routes(status: ApiFn, clear: ApiFn, authorize: Authorize) -> Router {
    Router::new()
        .route(
            "/api/breaker",
            get(|State((s, _, _)): State<(ApiFn, ApiFn, Authorize)>| async move { Json(s()) }),
        )
        .route(
            "/api/breaker/clear",
            axum::routing::post(
                |State((_, c, auth)): State<(ApiFn, ApiFn, Authorize)>, h: HeaderMap| async move {
                    match auth(&h) {
                        Ok(who) => {
                            tracing::warn!(reviewer = %who, "breaker cleared by an operator");
                            Json(c()).into_response()
                        }
                        Err(refused) => refused,
                    }
                },
            ),
        )
        .with_state((status, clear, authorize))
}

/// Performs an operator action; `Err` is reported as 422 with the message.
pub type ActionFn = Arc<dyn Fn() -> Result<serde_json::Value, String> + Send + Sync>;

/// `GET /api/models` (loaded models and generation) and `POST /api/models/reload` (validate
/// the files and swap them in; 422 with the reason when they do not load; authorized).
pub fn model_routes(status: ApiFn, reload: ActionFn, authorize: Authorize) -> Router {
    Router::new()
        .route(
            "/api/models",
            get(|State((s, _, _)): State<(ApiFn, ActionFn, Authorize)>| async move { Json(s()) }),
        )
        .route(
            "/api/models/reload",
            axum::routing::post(
                |State((_, r, auth)): State<(ApiFn, ActionFn, Authorize)>, h: HeaderMap| async move {
                    let who = match auth(&h) {
                        Ok(who) => who,
                        Err(refused) => return refused,
                    };
                    tracing::info!(reviewer = %who, "model reload requested");
                    match tokio::task::spawn_blocking(move || r()).await {
                        Ok(Ok(v)) => Json(v).into_response(),
                        Ok(Err(e)) => {
                            (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"error": e}))).into_response()
                        }
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reload failed: {e}")).into_response(),
                    }
                },
            ),
        )
        .with_state((status, reload, authorize))
}

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    render: RenderMetrics,
    extras: ReadyExtras,
}

/// The router, for embedding or tests.
pub fn router(health: Arc<Health>, render: RenderMetrics, extras: ReadyExtras) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, render, extras })
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], (s.render)()).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let report = s.health.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = match serde_json::to_value(&report) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in s.extras.iter() {
        body.insert(k.clone(), v.clone());
    }
    (status, Json(serde_json::Value::Object(body))).into_response()
}

/// `GET /api/stats?scope=local|group`, merged into the main router by the binary.
pub fn stats_routes(stats: StatsFn) -> Router {
    Router::new().route("/api/stats", get(api_stats)).with_state(stats)
}

#[derive(serde::Deserialize)]
struct StatsQuery {
    #[serde(default)]
    scope: Option<String>,
}

async fn api_stats(State(stats): State<StatsFn>, Query(q): Query<StatsQuery>) -> Response {
    let scope = q.scope.as_deref().unwrap_or("local");
    if scope != "local" && scope != "group" {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "scope must be local or group"})),
        )
            .into_response();
    }
    // The stats closure takes locks and merges sketches: keep it off the async workers.
    let s = scope.to_owned();
    match tokio::task::spawn_blocking(move || stats(&s)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("stats failed: {e}")).into_response(),
    }
}

/// Bind `addr` and serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!(%addr, "http server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)
}
