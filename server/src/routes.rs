//! Non-Leptos routes: backend events (SSE), health, the old system's health endpoints, metrics
//! and the backend's status/reload. `/` and the pages belong to the UI (`app`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::types::{BackendEvent, BackendState, BackendStatus, LegacyHealth, Readiness};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use tokio::sync::{broadcast, watch};

use crate::backend::Backend;
use crate::clock::rfc3339_now;
use crate::config::ServerConfig;
use crate::error::{ApiError, retry_after_value};
use crate::service::Service;
use crate::telemetry::render_metrics;

/// How long a client should wait before reconnecting to `/api/events` (the SSE `retry:` field).
pub const SSE_RETRY: Duration = Duration::from_secs(2);
/// `Retry-After` while loading without an estimate, or while failed.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the GPU side of `/health` reports, found once at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuInfo {
    pub count: u32,
    pub name: Option<String>,
}

impl GpuInfo {
    /// NVIDIA GPUs as the driver lists them in `/proc/driver/nvidia/gpus/*/information`.
    pub fn detect() -> Self {
        let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
            return Self::default();
        };
        let mut info = Self::default();
        for entry in dir.flatten() {
            info.count += 1;
            if info.name.is_none()
                && let Ok(text) = std::fs::read_to_string(entry.path().join("information"))
            {
                info.name = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Model:"))
                    .map(|m| m.trim().to_string());
            }
        }
        info
    }
}

/// State shared by the plain axum routes.
#[derive(Clone)]
pub struct AppState {
    pub backend: Backend,
    pub config: Arc<ServerConfig>,
    pub gpu: GpuInfo,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
    pub started: Instant,
    pub jobs: crate::jobs::Jobs,
    /// BlazeFace + FaceMesh (bundled weights) for checking uploads before they are queued.
    pub detector: Arc<model::face::FaceDetector>,
    /// The profile's defaults and bounds ([`ServerConfig::generation_settings`]).
    pub settings: Arc<app::settings::GenerationSettings>,
    /// What the old API's config endpoint set.
    pub legacy_config: Arc<std::sync::Mutex<crate::service::LegacyConfig>>,
    /// Permits of the CPU-heavy request work (`[limits] heavy_requests`).
    pub heavy: Arc<tokio::sync::Semaphore>,
    /// Whether the worker thread runs (false without a backend, or after it ended).
    pub worker_alive: Arc<std::sync::atomic::AtomicBool>,
    /// The cluster this process belongs to (`[cluster]`); None: one process.
    pub cluster: Option<Arc<crate::cluster::workers::ClusterView>>,
}

impl AppState {
    /// Whether this process runs jobs itself (one process, or a cluster worker).
    pub fn runs_jobs(&self) -> bool {
        self.config
            .cluster
            .as_ref()
            .is_none_or(|c| c.role.runs_jobs())
    }
}

/// The router of the non-UI routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/events", get(events))
        .route("/api/backend", get(backend_status))
        .route("/api/backend/reload", post(reload))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(legacy_health))
        .route("/api/v1/health", get(legacy_health))
        .route("/api/v1/models", get(legacy_models))
        .route("/api/v1/models/{name}", get(legacy_model))
        .route("/metrics", get(metrics))
        // Unknown API paths get the API's JSON 404; every other path belongs to the pages.
        .route("/api/{*rest}", axum::routing::any(not_found))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

#[derive(Debug, serde::Deserialize)]
struct ReadyQuery {
    verbose: Option<String>,
}

/// 200 when ready; else 503 with `Retry-After` (expected remaining load time) and the same body.
async fn ready(State(state): State<AppState>, Query(q): Query<ReadyQuery>) -> Response {
    // `?verbose` and `?verbose=1|true` list the stages; `?verbose=false|0` does not.
    let verbose = q
        .verbose
        .as_deref()
        .is_some_and(|v| !matches!(v, "0" | "false"));
    let mut body: Readiness = state.backend.readiness(verbose);
    let worker_alive = state.worker_alive.load(std::sync::atomic::Ordering::SeqCst);
    if let Some(view) = &state.cluster {
        body.workers = view.workers();
    }
    if body.state == "ready" && state.runs_jobs() && !worker_alive {
        // The model was loaded by a worker that has since ended: no job would run.
        body.state = "failed".into();
    }
    if body.state == "ready" {
        return (StatusCode::OK, Json(body)).into_response();
    }
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(&body)).into_response();
    let retry = match body.state.as_str() {
        "starting" | "loading" | "warming" => Some(
            body.eta_s
                .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs_f64),
        ),
        "failed" => Some(DEFAULT_RETRY_AFTER),
        // Disabled or draining: it will not become ready by waiting.
        _ => None,
    };
    if let Some(d) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after_value(d));
    }
    response
}

async fn legacy_health(State(state): State<AppState>) -> Json<LegacyHealth> {
    let backend_state = state.backend.state();
    let on_gpu = match &backend_state {
        BackendState::Ready { device, .. } => !device.starts_with("cpu"),
        _ => false,
    };
    Json(LegacyHealth {
        status: "healthy".into(),
        gpu_available: state.gpu.count > 0 || on_gpu,
        gpu_count: state.gpu.count,
        gpu_name: state.gpu.name.clone(),
        loaded_models: if backend_state.is_ready() {
            vec!["hallo2".into()]
        } else {
            Vec::new()
        },
        timestamp: rfc3339_now(),
        state: backend_state.name().into(),
    })
}

/// The old API's model info for `hallo2`: loaded or not, on which device and dtype (the old
/// backend loaded a copy to answer; ours reports the shared model).
fn model_info(state: &BackendState) -> serde_json::Value {
    let (device, dtype) = match state {
        BackendState::Ready { device, dtype, .. } => (Some(device.clone()), Some(dtype.clone())),
        _ => (None, None),
    };
    serde_json::json!({
        "name": "Hallo2",
        "initialized": state.is_ready(),
        "version": "2.0",
        "device": device,
        "dtype": dtype,
        "state": state.name(),
    })
}

/// The only model name the old API registered.
const LEGACY_MODEL: &str = "hallo2";

async fn legacy_models(State(state): State<AppState>) -> Json<serde_json::Value> {
    let backend = state.backend.state();
    let loaded: Vec<&str> = if backend.is_ready() {
        vec![LEGACY_MODEL]
    } else {
        Vec::new()
    };
    Json(serde_json::json!({
        "models": { LEGACY_MODEL: model_info(&backend) },
        "loaded_models": loaded,
    }))
}

async fn legacy_model(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if name != LEGACY_MODEL {
        return Err(ApiError::NotFound(format!("Model {name} not registered")));
    }
    Ok(Json(model_info(&state.backend.state())))
}

async fn backend_status(State(state): State<AppState>) -> Json<BackendStatus> {
    Json(Service::new(state).backend())
}

/// Retries loading without a restart (also the way to load with `load = "lazy"`). A browser
/// form without JavaScript (it asks for HTML) is sent back to the page it came from.
async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let from_form = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let state = Service::new(state).reload().await?;
    if from_form {
        return Ok(back_to_page(&headers));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "state": state })),
    )
        .into_response())
}

/// 303 to the same-origin page in `Referer` (its path only), else to `/`.
fn back_to_page(headers: &HeaderMap) -> Response {
    let path = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.parse::<axum::http::Uri>().ok())
        .map(|u| u.path().to_string())
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or_else(|| "/".into());
    (StatusCode::SEE_OTHER, [(header::LOCATION, path)]).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = render_metrics(
        &state.backend.status(),
        state.started.elapsed().as_secs_f64(),
    );
    crate::metrics::render(
        &state.jobs.list(),
        state.config.limits.queue_capacity,
        state.worker_alive.load(std::sync::atomic::Ordering::SeqCst),
        &mut text,
    );
    if let Some(view) = &state.cluster {
        crate::metrics::render_workers(&view.workers(), &mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct EventsQuery {
    last_event_id: Option<u64>,
}

/// SSE of backend events: ids are event seqs, `Last-Event-ID` replays from the ring buffer, a
/// `retry:` hint comes with the first event, keep-alive comments keep proxies from closing the
/// stream, and the stream ends after the `draining` state.
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The header (a reconnecting EventSource) wins over the query (the page's first connection,
    // which cannot set headers).
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.last_event_id);
    let sub = state.backend.subscribe(last_id);
    let stream = EventStream {
        backend: state.backend.clone(),
        replay: sub.replay.into_iter().collect(),
        live: sub.live,
        draining: state.backend.draining(),
        _open: crate::metrics::Subscriber::open(),
        first: true,
        done: false,
    }
    .into_stream();
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(state.keep_alive)
            .text("keep-alive"),
    )
}

struct EventStream {
    backend: Backend,
    replay: std::collections::VecDeque<BackendEvent>,
    live: broadcast::Receiver<BackendEvent>,
    draining: watch::Receiver<bool>,
    /// Counts this stream in the open-streams gauge while it lives.
    _open: crate::metrics::Subscriber,
    first: bool,
    done: bool,
}

impl EventStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            let event = s.next().await?;
            let mut sse = to_sse(&event);
            if s.first {
                sse = sse.retry(SSE_RETRY);
                s.first = false;
            }
            if matches!(&event, BackendEvent::State(e) if e.state == BackendState::Draining) {
                s.done = true;
            }
            Some((Ok(sse), s))
        })
    }

    async fn next(&mut self) -> Option<BackendEvent> {
        if self.done {
            return None;
        }
        if let Some(e) = self.replay.pop_front() {
            return Some(e);
        }
        loop {
            if *self.draining.borrow() {
                // Send the final state, then end.
                let snapshot = self.backend.subscribe(None).replay;
                self.done = true;
                return snapshot.into_iter().next();
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(e) => return Some(e),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Too slow: skip to the current state rather than end the stream.
                        tracing::debug!(missed, "SSE subscriber lagged");
                        self.live = self.live.resubscribe();
                        return self.backend.subscribe(None).replay.into_iter().next();
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.draining.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

fn to_sse(event: &BackendEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(event.seq().to_string())
        .event(event.event_name())
        .data(data)
}
