//! The dashboard's pages (`/review`) and JSON API (`/api/review/*`).
//!
//! Every API route needs a reviewer (basic auth or the sign-in cookie); every action (POST)
//! also needs the caller's CSRF token in `x-csrf-token`, and a browser `Origin`, when sent,
//! must be this server. Records are addressed by topic, partition and offset and found through
//! the index, so no request names a file; a topic with a path separator or `..` is refused.
//! Pages are static and render data with `textContent` only, under a Content-Security-Policy
//! that allows no inline script.

use crate::audit::{Action, RecordState};
use crate::auth::{Identity, COOKIE};
use crate::index::{Filter, RecordKey};
use crate::{Review, ReviewError};
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
pub use crate::export::{MAX_EXPORT_PAYLOAD_BYTES, MAX_EXPORT_ROWS};

/// `axum::routing::get`, for callers adding routes next to these.
pub use axum::routing::get as axum_get;

/// The review routes, for merging into the guard's router.
pub fn routes(review: Arc<Review>) -> Router {
    Router::new()
        .route(
            "/review",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/review/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/review/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/review/app.css",
            get(|| async { page(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/review/login", post(login))
        .route("/api/review/logout", post(logout))
        .route("/api/review/session", get(session))
        .route("/api/review/overview", get(overview))
        .route("/api/review/records", get(records))
        .route("/api/review/records/{topic}/{partition}/{offset}", get(record))
        .route(
            "/api/review/records/{topic}/{partition}/{offset}/decision",
            post(decide),
        )
        .route(
            "/api/review/records/{topic}/{partition}/{offset}/release",
            post(release),
        )
        .route("/api/review/sources/blocked", get(blocked_sources))
        .route("/api/review/sources/release", post(release_source))
        .route("/api/review/audit", get(audit))
        .route("/api/review/feedback", get(feedback))
        .route("/api/review/features", get(features))
        .route("/api/review/export", get(export))
        .with_state(review)
}

fn page(body: &'static str, ctype: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Json(v),
    )
        .into_response()
}

fn review_err(e: &ReviewError) -> Response {
    match e {
        ReviewError::NotFound(_) => err(StatusCode::NOT_FOUND, e.to_string()),
        ReviewError::Refused(_) => err(StatusCode::CONFLICT, e.to_string()),
        ReviewError::Publish(_) => err(StatusCode::BAD_GATEWAY, e.to_string()),
        _ => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Who is asking, or the refusal.
#[allow(clippy::result_large_err)]
fn who(r: &Review, h: &HeaderMap) -> Result<Identity, Response> {
    identify(r.auth(), h)
}

/// The reviewer a request comes from (basic auth or the sign-in cookie), or 401.
#[allow(clippy::result_large_err)]
fn identify(auth: &crate::auth::Auth, h: &HeaderMap) -> Result<Identity, Response> {
    if !auth.configured() {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            "no reviewers are configured ([[review.reviewers]])",
        ));
    }
    let get = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    auth.identify(get(header::AUTHORIZATION), get(header::COOKIE))
        .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "sign in, or send HTTP basic auth"))
}

/// As [`who`], for actions: the CSRF token and the origin are checked too.
#[allow(clippy::result_large_err)]
fn actor(r: &Review, h: &HeaderMap) -> Result<Identity, Response> {
    check_action(r.auth(), h)
}

/// Check a state-changing request (the review actions, and the guard's operator endpoints
/// such as `POST /api/breaker/clear`): a configured reviewer (basic auth or the sign-in
/// cookie), that reviewer's CSRF token in `x-csrf-token`, and, when the browser sends one, an
/// `Origin` equal to this server. A page on another site can make an operator's browser send
/// a POST, but it cannot read the token.
#[allow(clippy::result_large_err)]
pub fn check_action(auth: &crate::auth::Auth, h: &HeaderMap) -> Result<Identity, Response> {
    let id = identify(auth, h)?;
    same_origin(h)?;
    let token = h.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    let same =
        token.len() == id.csrf.len() && token.bytes().zip(id.csrf.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if !same {
        return Err(err(StatusCode::FORBIDDEN, "missing or wrong x-csrf-token"));
    }
    Ok(id)
}

#[allow(clippy::result_large_err)]
fn same_origin(h: &HeaderMap) -> Result<(), Response> {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let bare = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if bare == host {
        Ok(())
    } else {
        Err(err(StatusCode::FORBIDDEN, "cross-origin request refused"))
    }
}

/// An action on one record: the checked caller and the record's key.
#[allow(clippy::result_large_err)]
fn acting_on(
    r: &Review,
    h: &HeaderMap,
    topic: String,
    partition: i32,
    offset: i64,
) -> Result<(Identity, RecordKey), Response> {
    let id = actor(r, h)?;
    Ok((id, key(topic, partition, offset)?))
}

#[allow(clippy::result_large_err)]
fn key(topic: String, partition: i32, offset: i64) -> Result<RecordKey, Response> {
    if topic.contains(['/', '\\']) || topic.contains("..") || topic.is_empty() {
        return Err(err(StatusCode::BAD_REQUEST, "not a topic name"));
    }
    Ok(RecordKey {
        topic,
        partition,
        offset,
    })
}

#[allow(clippy::result_large_err)]
fn filter(q: Option<String>) -> Result<Filter, Response> {
    let q = q.unwrap_or_default();
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(&q);
    for (k, v) in &pairs {
        if (k == "topic" || k == "source" || k == "reason") && (v.contains("../") || v.contains("..\\")) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                format!("{k}: path segments are not allowed"),
            ));
        }
    }
    let obj: serde_json::Map<String, Value> = pairs
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && k != "format")
        .map(|(k, v)| {
            let val = match k.as_str() {
                "from" | "to" | "partition" | "page" | "page_size" => {
                    v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v))
                }
                "score_min" | "score_max" => v.parse::<f64>().map(Value::from).unwrap_or(Value::String(v)),
                "asc" => Value::Bool(v == "true" || v == "1"),
                _ => Value::String(v),
            };
            (k, val)
        })
        .collect();
    serde_json::from_value(Value::Object(obj)).map_err(|e| err(StatusCode::BAD_REQUEST, format!("filter: {e}")))
}

/// `application/x-www-form-urlencoded` pairs (bad encodings give no pairs).
fn serde_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(q).unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct LoginBody {
    name: String,
    password: String,
}

async fn login(State(r): State<Arc<Review>>, h: HeaderMap, Json(b): Json<LoginBody>) -> Response {
    if let Err(resp) = same_origin(&h) {
        return resp;
    }
    match r.auth().login(&b.name, &b.password) {
        None => {
            // Slow down guessing.
            tracing::warn!(name = %b.name.chars().take(64).collect::<String>(), "review sign-in refused");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            err(StatusCode::UNAUTHORIZED, "wrong name or password")
        }
        Some(id) => {
            let sid = id.session.clone().unwrap_or_default();
            let cookie = format!("{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/");
            let mut resp = ok(json!({"reviewer": id.name, "csrf": id.csrf, "read_only": r.settings().read_only}));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}

async fn logout(State(r): State<Arc<Review>>, h: HeaderMap) -> Response {
    match actor(&r, &h) {
        Err(resp) => resp,
        Ok(id) => {
            if let Some(s) = &id.session {
                r.auth().logout(s);
            }
            let mut resp = ok(json!({"signed_out": true}));
            if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}

async fn session(State(r): State<Arc<Review>>, h: HeaderMap) -> Response {
    match who(&r, &h) {
        Err(resp) => resp,
        Ok(id) => ok(
            json!({"reviewer": id.name, "csrf": id.csrf, "read_only": r.settings().read_only,
            "release_topic": r.settings().release_topic}),
        ),
    }
}

async fn blocking<F: FnOnce() -> Response + Send + 'static>(f: F) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| err(StatusCode::INTERNAL_SERVER_ERROR, format!("handler failed: {e}")))
}

async fn overview(State(r): State<Arc<Review>>, h: HeaderMap) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    blocking(move || {
        let now = crate::now_ms();
        let idx = r.index();
        let timeline: Vec<Value> = idx
            .timeline(now, 60_000, 60)
            .into_iter()
            .map(|(t, m)| json!({"t": t, "by_reason": m}))
            .collect();
        let decisions = r.audit().with_states(|s| {
            let mut c = std::collections::BTreeMap::<&str, u64>::new();
            for v in s.values() {
                *c.entry(v.name()).or_default() += 1;
            }
            c.into_iter()
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect::<serde_json::Map<_, _>>()
        });
        let stats = r.live().stats.as_ref().map(|f| f());
        let drift = stats.as_ref().map(drift_status);
        let source_rates = stats.as_ref().map(|s| &s.sources.top_by_quarantine_rate);
        ok(json!({
            "quarantined": idx.len(),
            "files": idx.files().len(),
            "files_not_indexed": idx.skipped_files(),
            "topics": idx.topic_names(),
            "reasons": idx.reason_counts(),
            "timeline_minutes": timeline,
            "top_sources": idx.top_sources(10),
            "decisions": decisions,
            "facts": r.live().facts,
            "counters": r.live().counters.as_ref().map(|f| f()),
            "drift": drift,
            "top_sources_by_quarantine_rate": source_rates,
            "counter_history": r.live().counter_history.as_ref().map(|f| f()),
            "read_only": r.settings().read_only,
            "blocked_sources": blocked_list(&r),
        }))
    })
    .await
}

/// Per topic: alarmed features, and per feature whether it fires, with PSI and KS.
fn drift_status(stats: &guard_core::StatsReport) -> Value {
    let topics = stats.topics.iter().map(|t| {
        let features: Vec<Value> = t
            .current
            .features
            .iter()
            .map(
                |f| json!({"name": f.name, "firing": f.firing, "alarm": f.alarm, "psi": f.drift.psi, "ks": f.drift.ks}),
            )
            .collect();
        json!({"topic": t.topic, "records": t.current.records, "features": features})
    });
    Value::Array(topics.collect())
}

fn summary(idx: &crate::index::Index, states: &HashMap<RecordKey, RecordState>, i: u32) -> Value {
    let Some(e) = idx.entries().get(i as usize) else {
        return Value::Null;
    };
    let k = idx.key(e);
    let state = states.get(&k).cloned().unwrap_or_default();
    json!({
        "topic": k.topic, "partition": k.partition, "offset": k.offset,
        "quarantined_at_ms": e.at_ms,
        "kafka_timestamp_ms": (e.kafka_ts_ms != i64::MIN).then_some(e.kafka_ts_ms),
        "reasons": idx.reason_codes(e),
        "anomaly_score": (!e.anomaly.is_nan()).then_some(e.anomaly),
        "label_score": (!e.label.is_nan()).then_some(e.label),
        "source": idx.source(e),
        "state": state.name(),
    })
}

async fn records(State(r): State<Arc<Review>>, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    let f = match filter(q) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    blocking(move || {
        let started = std::time::Instant::now();
        let idx = r.index();
        let (total, rows) = r.audit().with_states(|states| {
            let (total, page) = idx.query(&f, &|k| states.get(k).map_or("undecided", |s| s.name()));
            (
                total,
                page.iter().map(|&i| summary(&idx, states, i)).collect::<Vec<Value>>(),
            )
        });
        metrics::histogram!("guard_review_query_duration_seconds").record(started.elapsed().as_secs_f64());
        ok(
            json!({"total": total, "page": f.page, "page_size": f.page_size.unwrap_or(50).clamp(1, 500), "rows": rows,
            "took_ms": started.elapsed().as_secs_f64() * 1000.0}),
        )
    })
    .await
}

async fn record(
    State(r): State<Arc<Review>>,
    h: HeaderMap,
    UrlPath((topic, partition, offset)): UrlPath<(String, i32, i64)>,
) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    let k = match key(topic, partition, offset) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    blocking(move || match r.record(&k) {
        Err(e) => review_err(&e),
        Ok(row) => {
            let state = r.audit().state(&k);
            let (_, history) = r.audit().page(Some(&k), None, 0, 100);
            let payload_json = row
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str::<Value>(p).ok());
            let features = match (&payload_json, &r.live().features_of) {
                (Some(v), Some(f)) => f(&row.topic, v),
                _ => None,
            };
            ok(
                json!({"record": row, "payload_json": payload_json, "state": state.name(),
                "landed": state.landed, "history": history, "features": features}),
            )
        }
    })
    .await
}

#[derive(serde::Deserialize, Default)]
struct DecisionBody {
    decision: String,
    #[serde(default)]
    note: String,
}

async fn decide(
    State(r): State<Arc<Review>>,
    h: HeaderMap,
    UrlPath((topic, partition, offset)): UrlPath<(String, i32, i64)>,
    Json(b): Json<DecisionBody>,
) -> Response {
    let (id, k) = match acting_on(&r, &h, topic, partition, offset) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let action = match b.decision.as_str() {
        "confirmed_poison" => Action::ConfirmedPoison,
        "false_positive" => Action::FalsePositive,
        _ => return err(StatusCode::BAD_REQUEST, "decision: confirmed_poison or false_positive"),
    };
    blocking(move || match r.decide(&id.name, &k, action, &b.note) {
        Ok(e) => ok(json!({"entry": e})),
        Err(e) => review_err(&e),
    })
    .await
}

#[derive(serde::Deserialize, Default)]
struct ReleaseBody {
    #[serde(default)]
    note: String,
}

async fn release(
    State(r): State<Arc<Review>>,
    h: HeaderMap,
    UrlPath((topic, partition, offset)): UrlPath<(String, i32, i64)>,
    body: Option<Json<ReleaseBody>>,
) -> Response {
    let (id, k) = match acting_on(&r, &h, topic, partition, offset) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let note = body.map(|Json(b)| b.note).unwrap_or_default();
    blocking(move || match r.release(&id.name, &k, &note) {
        Ok(rel) => ok(json!(rel)),
        Err(e) => review_err(&e),
    })
    .await
}

fn blocked_list(r: &Review) -> Value {
    r.live().blocks.as_ref().map_or(Value::Null, |b| json!(b.blocked()))
}

async fn blocked_sources(State(r): State<Arc<Review>>, h: HeaderMap) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    ok(json!({ "blocked": blocked_list(&r) }))
}

#[derive(serde::Deserialize)]
struct SourceReleaseBody {
    topic: String,
    source: String,
    id: String,
    #[serde(default)]
    note: String,
}

async fn release_source(State(r): State<Arc<Review>>, h: HeaderMap, Json(b): Json<SourceReleaseBody>) -> Response {
    let id = match actor(&r, &h) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    blocking(
        move || match r.release_source(&id.name, &b.topic, &b.source, &b.id, &b.note) {
            Ok(rel) => ok(json!(rel)),
            Err(e) => review_err(&e),
        },
    )
    .await
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AuditQuery {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    reviewer: Option<String>,
    page: usize,
}

async fn audit(State(r): State<Arc<Review>>, h: HeaderMap, Query(q): Query<AuditQuery>) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    let rec = match (q.topic, q.partition, q.offset) {
        (Some(t), Some(p), Some(o)) => match key(t, p, o) {
            Ok(k) => Some(k),
            Err(resp) => return resp,
        },
        _ => None,
    };
    let (total, entries) = r
        .audit()
        .page(rec.as_ref(), q.reviewer.as_deref(), q.page.saturating_mul(100), 100);
    ok(json!({"total": total, "page": q.page, "entries": entries}))
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct FeedbackQuery {
    target_fpr: Option<f64>,
}

async fn feedback(State(r): State<Arc<Review>>, h: HeaderMap, Query(q): Query<FeedbackQuery>) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    let target = q.target_fpr.unwrap_or(0.05).clamp(0.0, 1.0);
    let (by_reason, by_model) = r.feedback();
    ok(
        json!({"by_reason": by_reason, "by_model": by_model, "target_fpr": target,
        "suggestions": r.suggestions(target)}),
    )
}

async fn features(State(r): State<Arc<Review>>, h: HeaderMap) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    match r.live().stats.clone() {
        None => ok(json!({"available": false, "why": "drift statistics come from a running guard (run)"})),
        Some(f) => {
            let history = r.live().history.clone();
            blocking(move || ok(json!({"available": true, "stats": f(), "history": history.map(|h| h())}))).await
        }
    }
}

async fn export(State(r): State<Arc<Review>>, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(resp) = who(&r, &h) {
        return resp;
    }
    let format = serde_urlencoded_pairs(q.as_deref().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "format")
        .map_or_else(|| "jsonl".to_owned(), |(_, v)| v);
    if !matches!(format.as_str(), "jsonl" | "csv" | "parquet") {
        return err(StatusCode::BAD_REQUEST, "format: jsonl, csv or parquet");
    }
    let mut f = match filter(q) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    f.page = 0;
    blocking(move || match crate::export::export(&r, &f, &format) {
        Ok((bytes, ctype, rows, truncated)) => {
            let name = format!("quarantine-export.{format}");
            let mut resp = (
                [
                    (header::CONTENT_TYPE, ctype.to_owned()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                bytes,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&rows.to_string()) {
                resp.headers_mut().insert("x-export-rows", v);
            }
            if truncated {
                resp.headers_mut()
                    .insert("x-export-truncated", HeaderValue::from_static("true"));
            }
            resp
        }
        Err(e) => review_err(&e),
    })
    .await
}
