//! The jobs' HTTP API: the old system's REST surface (same paths and field names) plus our
//! job records.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /api/v1/inference/hallo2` | multipart `image_file`, `audio_file`, `use_cache` + optional parameters → 202 `{task_id, status, message}` |
//! | `GET /api/v1/tasks` | `{tasks: {id: status}, count, jobs: [JobRecord]}` |
//! | `GET /api/v1/tasks/{id}` | `TaskStatus` (old fields + `eta_s`, `state`) |
//! | `GET /api/v1/tasks/{id}/video` | `video/mp4`, `hallo2_<id>.mp4`, Range |
//! | `DELETE /api/v1/tasks/{id}` | cancels a queued or running job; deletes a finished one |
//! | `GET /api/jobs/{id}` | the whole `JobRecord` (`job.json`) |
//! | `GET /api/jobs/{id}/image` | the job's portrait (history thumbnails) |
//! | `GET /api/jobs/{id}/frame` | the last finished frame (PNG) while generating |
//! | `POST /api/jobs/{id}/rerun` | a new job from the same inputs: same parameters and seed, or a JSON `JobParams` body → 202 |
//! | `POST /api/preflight` | multipart `image_file` (+ `face_expand_ratio`) → `PreflightView` (face box, mesh, mask regions and soft masks, warnings) or the upload's 4xx |
//! | `POST /api/preflight/audio` | multipart `audio_file` → `AudioPreview` (duration, frames, format, waveform) or the upload's 4xx |

use std::collections::BTreeMap;
use std::time::Duration;

use app::jobs::{
    AudioPreview, JobFiles, JobParams, JobProgress, JobRecord, JobState, PreflightView,
    SubmitResponse, TaskStatus,
};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use model::audio_io::AudioLimits;
use model::face::masks::MaskConfig;
use model::image_io::ImageLimits;

use crate::clock::rfc3339_now;
use crate::config::LoadMode;
use crate::error::ApiError;
use crate::jobs::preview::{check_audio, check_portrait};
use crate::jobs::upload::{drain_body, finalise_names, read_form, validate};
use crate::jobs::{JobsError, free_bytes, valid_id};
use crate::routes::AppState;

/// `Retry-After` when the queue is full.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/inference/hallo2",
            // The upload limit is enforced while streaming (`upload.rs`), not by buffering.
            post(submit).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/tasks", get(list))
        .route("/api/v1/tasks/{id}", get(task).delete(cancel_or_delete))
        .route("/api/v1/tasks/{id}/video", get(video))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/image", get(job_image))
        .route("/api/jobs/{id}/frame", get(job_frame))
        .route("/api/jobs/{id}/rerun", post(rerun))
        .route(
            "/api/preflight",
            post(preflight).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/preflight/audio",
            post(preflight_audio).layer(DefaultBodyLimit::disable()),
        )
        .with_state(state)
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::QueueFull { .. } => ApiError::Busy {
                message: e.to_string(),
                retry_after: Some(QUEUE_FULL_RETRY),
            },
            JobsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            JobsError::NotFinished { .. } | JobsError::AlreadyFinal { .. } => {
                ApiError::Conflict(e.to_string())
            }
            JobsError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

fn checked_id(id: &str) -> Result<&str, ApiError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound(format!("Task {id} not found")))
    }
}

/// The job `id` names (checked before it is looked up), or the old API's 404.
fn find(state: &AppState, id: &str) -> Result<JobRecord, ApiError> {
    let id = checked_id(id)?;
    state
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("Task {id} not found")))
}

async fn submit(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    if let Err(refused) = admit(&state) {
        // Read what the client is still sending, so it sees this answer.
        drain_body(request.into_body()).await;
        return Err(refused);
    }
    let form = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::Input {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_form",
            field: None,
            message: format!("expected a multipart form: {}", e.body_text()),
        })?;
    let id = uuid::Uuid::new_v4().to_string();
    let dir = state
        .jobs
        .store()
        .create_dir(&id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let result = accept(&state, &id, &dir, form).await;
    if result.is_err() {
        let _ = state.jobs.store().remove(&id);
    }
    let job = result?;
    // A lazy backend loads on its first job; a loaded one runs it now.
    if state.config.load == LoadMode::Lazy && state.backend.state().name() == "starting" {
        let _ = state.backend.request_load();
    }
    state.backend.run_jobs();
    tracing::info!(job = %job.id, image = %job.image_name, audio = %job.audio_name, "job queued");
    Ok(accepted(job))
}

/// Whether a submission can be taken at all (before its body is read).
fn admit(state: &AppState) -> Result<(), ApiError> {
    if state.config.disable_backend {
        return Err(ApiError::NotReady {
            message: "the backend is disabled (DISABLE_BACKEND); nothing can be generated".into(),
            retry_after: None,
        });
    }
    if state.jobs.is_full() {
        return Err(JobsError::QueueFull {
            capacity: state.jobs.capacity(),
        }
        .into());
    }
    check_disk(state, state.config.limits.upload_bytes)
}

/// 507 when the data disk would keep less than `min_free_bytes` after `incoming` more bytes.
fn check_disk(state: &AppState, incoming: u64) -> Result<(), ApiError> {
    let Some(free) = free_bytes(&state.config.data_dir) else {
        return Ok(());
    };
    let need = state.config.limits.min_free_bytes.saturating_add(incoming);
    if free < need {
        return Err(ApiError::Input {
            status: StatusCode::INSUFFICIENT_STORAGE,
            kind: "disk_full",
            field: None,
            message: format!(
                "the server's disk is nearly full ({:.1} GB free, {:.1} GB kept free); delete old jobs or free space",
                free as f64 / 1e9,
                state.config.limits.min_free_bytes as f64 / 1e9
            ),
        });
    }
    Ok(())
}

/// Runs a finished job again from its stored inputs: the same parameters and seed, or the
/// parameters in the JSON body (`seed` absent: a new random seed).
async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<JobParams>>,
) -> Result<Response, ApiError> {
    let old = find(&state, &id)?;
    let id = old.id.as_str();
    admit(&state)?;
    let params = match body {
        Some(Json(p)) => p,
        None => JobParams {
            seed: old.seed_used.or(old.params.seed),
            ..old.params.clone()
        },
    };
    check_separation(&state, &params)?;
    let new_id = uuid::Uuid::new_v4().to_string();
    let store = state.jobs.store();
    let from = store.dir(id);
    let to = store
        .create_dir(&new_id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let copied = [&old.files.image, &old.files.audio]
        .into_iter()
        .try_for_each(|f| std::fs::copy(from.join(f), to.join(f)).map(|_| ()));
    if let Err(e) = copied {
        let _ = store.remove(&new_id);
        return Err(ApiError::Conflict(format!(
            "the inputs of job {id} are gone ({e}); upload them again"
        )));
    }
    let job = new_job(
        &state,
        &new_id,
        params,
        (old.image_name.clone(), old.audio_name.clone()),
        old.audio_seconds,
        JobFiles {
            image: old.files.image.clone(),
            audio: old.files.audio.clone(),
            ..JobFiles::default()
        },
    );
    let job = match state.jobs.submit(job) {
        Ok(job) => job,
        Err(e) => {
            let _ = store.remove(&new_id);
            return Err(e.into());
        }
    };
    state.backend.run_jobs();
    Ok(accepted(job))
}

/// A job may ask for vocal separation only where the studio loads the separator.
fn check_separation(state: &AppState, params: &JobParams) -> Result<(), ApiError> {
    if params.separate_vocals == Some(true) && !state.config.vocal_separation {
        return Err(ApiError::Input {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "bad_parameter",
            field: Some("separate_vocals"),
            message: "vocal separation is off in this studio's config (vocal_separation = false)"
                .into(),
        });
    }
    Ok(())
}

/// A new job record: `queued` when the model is ready, else `waiting_for_model`.
fn new_job(
    state: &AppState,
    id: &str,
    params: JobParams,
    (image_name, audio_name): (String, String),
    audio_seconds: f64,
    files: JobFiles,
) -> JobRecord {
    let ready = state.backend.state().is_ready();
    let now = rfc3339_now();
    JobRecord {
        id: id.to_string(),
        state: if ready {
            JobState::Queued
        } else {
            JobState::WaitingForModel
        },
        params,
        seed_used: None,
        created_at: now.clone(),
        updated_at: now,
        message: if ready {
            "Queued".into()
        } else {
            "Waiting for the model to load".into()
        },
        progress: JobProgress::default(),
        error: None,
        image_name,
        audio_name,
        audio_seconds,
        files,
        attempts: 0,
        resumed_from_clip: None,
        timings: Vec::new(),
        made_with: None,
    }
}

/// 202 with the old API's body.
fn accepted(job: JobRecord) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(SubmitResponse {
            task_id: job.id,
            status: "queued".into(),
            message: "Inference task queued successfully".into(),
        }),
    )
        .into_response()
}

/// Reads, checks and queues one submission whose folder is `dir`.
async fn accept(
    state: &AppState,
    id: &str,
    dir: &std::path::Path,
    form: Multipart,
) -> Result<JobRecord, ApiError> {
    let limits = &state.config.limits;
    let (image, audio, params) = read_form(form, dir, limits.upload_bytes).await?;
    check_separation(state, &params)?;
    let mut image = image.ok_or_else(|| missing_field("image_file"))?;
    let mut audio = audio.ok_or_else(|| missing_field("audio_file"))?;
    let image_limits = ImageLimits {
        max_pixels: limits.image_pixels,
        ..ImageLimits::default()
    };
    let audio_limits = AudioLimits {
        max_duration_s: limits.audio_seconds,
        ..AudioLimits::default()
    };
    let detector = state.detector.clone();
    let folder = dir.to_path_buf();
    let (image, audio, checked) = tokio::task::spawn_blocking(move || {
        let checked = validate(
            &folder,
            &image,
            &audio,
            &image_limits,
            &audio_limits,
            &detector,
        )?;
        finalise_names(&folder, &mut image, &mut audio, &checked)?;
        Ok::<_, ApiError>((image, audio, checked))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("validation task: {e}")))??;

    let job = new_job(
        state,
        id,
        params,
        (image.client_name, audio.client_name),
        checked.audio.duration_s,
        JobFiles {
            image: image.stored,
            audio: audio.stored,
            ..JobFiles::default()
        },
    );
    Ok(state.jobs.submit(job)?)
}

async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let jobs = state.jobs.list();
    let tasks: BTreeMap<&str, &str> = jobs
        .iter()
        .map(|j| (j.id.as_str(), j.state.legacy_status()))
        .collect();
    Json(serde_json::json!({ "tasks": tasks, "count": jobs.len(), "jobs": jobs }))
}

async fn task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskStatus>, ApiError> {
    Ok(Json(TaskStatus::from_record(&find(&state, &id)?)))
}

async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    find(&state, &id).map(Json)
}

/// The job's stored portrait.
async fn job_image(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find(&state, &id)?;
    let id = job.id.as_str();
    let bytes = tokio::fs::read(state.jobs.store().dir(id).join(&job.files.image))
        .await
        .map_err(|_| ApiError::NotFound("the portrait is gone".into()))?;
    let mime = match job.files.image.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        _ => "image/jpeg",
    };
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

/// The last frame of the latest finished clip.
async fn job_frame(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find(&state, &id)?;
    let id = job.id.as_str();
    let name = job
        .files
        .frame
        .ok_or_else(|| ApiError::NotFound("no clip has finished yet".into()))?;
    let bytes = tokio::fs::read(state.jobs.store().dir(id).join(name))
        .await
        .map_err(|_| ApiError::NotFound("no clip has finished yet".into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response())
}

/// Runs the face detector and mesh on an uploaded portrait and computes Hallo2's masks for the
/// form's `face_expand_ratio` (the official 1.2 when absent); nothing is stored.
async fn preflight(
    State(state): State<AppState>,
    form: Multipart,
) -> Result<Json<PreflightView>, ApiError> {
    let scratch = tempfile::tempdir().map_err(|e| ApiError::Internal(e.to_string()))?;
    let (image, _, params) =
        read_form(form, scratch.path(), state.config.limits.upload_bytes).await?;
    let image = image.ok_or_else(|| missing_field("image_file"))?;
    let limits = ImageLimits {
        max_pixels: state.config.limits.image_pixels,
        ..ImageLimits::default()
    };
    let ratio = params
        .face_expand_ratio
        .unwrap_or(MaskConfig::hallo2().face_expand_ratio);
    let detector = state.detector.clone();
    tokio::task::spawn_blocking(move || {
        let path = scratch.path().join(&image.stored);
        check_portrait(&path, &image.client_name, &limits, &detector, ratio).map(Json)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("preflight task: {e}")))?
}

/// Decodes uploaded speech as a submission would (same limits, same errors) and outlines its
/// waveform; nothing is stored.
async fn preflight_audio(
    State(state): State<AppState>,
    form: Multipart,
) -> Result<Json<AudioPreview>, ApiError> {
    let scratch = tempfile::tempdir().map_err(|e| ApiError::Internal(e.to_string()))?;
    let (_, audio, _) = read_form(form, scratch.path(), state.config.limits.upload_bytes).await?;
    let audio = audio.ok_or_else(|| missing_field("audio_file"))?;
    let limits = AudioLimits {
        max_duration_s: state.config.limits.audio_seconds,
        ..AudioLimits::default()
    };
    tokio::task::spawn_blocking(move || {
        let extension = std::path::Path::new(&audio.client_name)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let path = scratch.path().join(&audio.stored);
        check_audio(&path, extension.as_deref(), &limits).map(Json)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("preflight task: {e}")))?
}

fn missing_field(field: &'static str) -> ApiError {
    ApiError::Input {
        status: StatusCode::BAD_REQUEST,
        kind: "missing_field",
        field: Some(field),
        message: format!("the form has no {field}"),
    }
}

/// Cancels a waiting or running job (the old API's DELETE); deletes a finished one.
async fn cancel_or_delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job = find(&state, &id)?;
    let id = job.id.as_str();
    if job.state.is_final() {
        state.jobs.delete(id)?;
        return Ok(Json(serde_json::json!({
            "status": "deleted", "task_id": id, "message": "Task deleted",
        })));
    }
    let job = state.jobs.cancel(id)?;
    Ok(Json(serde_json::json!({
        "status": job.state.legacy_status(),
        "task_id": id,
        "message": if job.state == JobState::Cancelled {
            "Task cancelled successfully"
        } else {
            "Task cancelling: it stops at the next denoising step"
        },
    })))
}

/// The MP4, with single-range requests answered 206 (players seek with them).
async fn video(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = find(&state, &id)?;
    let id = job.id.as_str();
    let Some(name) = job
        .files
        .video
        .as_deref()
        .filter(|_| job.state == JobState::Completed)
    else {
        return Err(ApiError::Conflict(format!(
            "Task not completed. Status: {}",
            job.state.legacy_status()
        )));
    };
    let path = state.jobs.store().dir(id).join(name);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::NotFound("Video file not found".into()))?;
    let total = bytes.len() as u64;
    let disposition = format!("inline; filename=\"hallo2_{id}.mp4\"");
    let base = [
        (header::CONTENT_TYPE, "video/mp4".to_string()),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, total));
    match range {
        None => Ok((base, Body::from(bytes)).into_response()),
        Some(Some((start, end))) => {
            let part = bytes[start as usize..=end as usize].to_vec();
            Ok((
                StatusCode::PARTIAL_CONTENT,
                base,
                [(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{total}"),
                )],
                Body::from(part),
            )
                .into_response())
        }
        Some(None) => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response()),
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive `(start, end)`; None when unsatisfiable.
fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (total.saturating_sub(n), total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-2", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
