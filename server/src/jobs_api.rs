//! The jobs' REST API: the old system's surface (`hojkol/emo_hallo`'s FastAPI backend: same
//! paths, status codes and field names, every error with FastAPI's `detail`, our fields added)
//! plus our own job routes. Thin adapters over [`Service`]: no rule of their own.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /api/v1/inference/hallo2` | multipart `image_file`, `audio_file`, `use_cache` + optional parameters → 200 `{task_id, status, message}` |
//! | `POST /api/v1/inference/hallo2/config` | JSON `{guidance_scale, inference_steps, enable_cache}` → defaults of later old-API submissions; 200 `{status: "success", message, config}` |
//! | `GET /api/v1/tasks` | `{tasks: {id: task status}, count, jobs: [JobRecord]}` |
//! | `GET /api/v1/tasks/{id}` | `TaskStatus` (old fields + `eta_s`, `state`) |
//! | `GET /api/v1/tasks/{id}/video` | `video/mp4`, `hallo2_<id>.mp4`, Range; 400 until completed |
//! | `POST /api/v1/tasks/{id}/logs` | `{task_id, logs}`: the job's history (`task.log`) |
//! | `DELETE /api/v1/tasks/{id}` | cancels a waiting or running job; 400 otherwise |
//! | `GET /api/jobs/{id}` | the whole `JobRecord` (`job.json`) |
//! | `DELETE /api/jobs/{id}` | deletes a finished job and its files |
//! | `GET /api/jobs/{id}/image` | the job's portrait (history thumbnails) |
//! | `GET /api/jobs/{id}/frame` | the last finished frame (PNG) while generating |
//! | `POST /api/jobs/{id}/rerun` | a new job from the same inputs: same parameters and seed, or a JSON `JobParams` body → 202 |
//! | `POST /api/preflight` | multipart `image_file` (+ `face_expand_ratio`) → `PreflightView` or the upload's 4xx |
//! | `POST /api/preflight/audio` | multipart `audio_file` → `AudioPreview` or the upload's 4xx |

use std::collections::BTreeMap;

use app::jobs::{JobParams, JobRecord, JobState, SubmitResponse, TaskStatus};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::jobs::upload::{drain_body, multipart};
use crate::routes::AppState;
use crate::service::Service;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/inference/hallo2",
            // The upload limit is enforced while streaming (`upload.rs`), not by buffering.
            post(submit).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/inference/hallo2/config", post(configure))
        .route("/api/v1/tasks", get(list))
        .route("/api/v1/tasks/{id}", get(task).delete(cancel))
        .route("/api/v1/tasks/{id}/video", get(video))
        .route("/api/v1/tasks/{id}/logs", post(logs))
        .route("/api/jobs/{id}", get(job).delete(delete))
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

/// The request's multipart form (or the refusal of a body that is not one).
async fn form_of(request: Request) -> Result<multer::Multipart<'static>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(multipart(content_type.as_deref(), request.into_body()).await?)
}

async fn submit(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let service = Service::new(state);
    if let Err(refused) = service.admit() {
        // Read what the client is still sending, so it sees this answer.
        drain_body(request.into_body()).await;
        return Err(refused);
    }
    let job = service.submit_legacy(form_of(request).await?).await?;
    // The old API answered 200 (with its body), not 202.
    Ok((StatusCode::OK, Json(SubmitResponse::queued(&job.id))).into_response())
}

/// The old API's config: `guidance_scale`, `inference_steps`, `enable_cache` become the defaults
/// of later old-API submissions (see [`Service::configure_legacy`]); its answer plus `config`,
/// what is now set.
async fn configure(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| crate::error::Refusal::BadParameter {
            field: "body",
            message: format!("the configuration must be a JSON object: {e}"),
        })?;
    let config = Service::new(state).configure_legacy(&value)?;
    Ok(Json(serde_json::json!({
        "status": "success",
        "message": "Configuration updated successfully",
        "config": config,
    })))
}

/// The old API's task log: the job's history, a line per change of state ("No logs
/// available" for an id that names no job, as there).
async fn logs(State(state): State<AppState>, Path(id): Path<String>) -> Json<serde_json::Value> {
    let logs = Service::new(state)
        .task_log(&id)
        .unwrap_or_else(|| "No logs available".into());
    Json(serde_json::json!({ "task_id": id, "logs": logs }))
}

/// Runs a finished job again from its stored inputs: the same parameters and seed, or the
/// parameters in the JSON body (`seed` absent: a new random seed).
async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<JobParams>>,
) -> Result<Response, ApiError> {
    let job = Service::new(state)
        .rerun(&id, body.map(|Json(p)| p))
        .await?;
    Ok(accepted(job))
}

/// 202 with the old API's body.
fn accepted(job: JobRecord) -> Response {
    (StatusCode::ACCEPTED, Json(SubmitResponse::queued(&job.id))).into_response()
}

/// `{tasks: {id: task status}, count}` as the old API listed them, plus `jobs` (our records,
/// newest first).
async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let jobs = Service::new(state).jobs();
    let tasks: BTreeMap<&str, TaskStatus> = jobs
        .iter()
        .map(|j| (j.id.as_str(), TaskStatus::from_record(j)))
        .collect();
    Json(serde_json::json!({ "tasks": tasks, "count": jobs.len(), "jobs": jobs }))
}

async fn task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskStatus>, ApiError> {
    Ok(Json(TaskStatus::from_record(
        &Service::new(state).job(&id)?,
    )))
}

async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    Service::new(state).job(&id).map(Json)
}

/// The job's stored portrait.
async fn job_image(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let service = Service::new(state);
    let job = service.job(&id)?;
    let path = service.job_file(&job, &job.files.image, false).await?;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|_| ApiError::NotFound("the portrait is gone".into()))?;
    let mime = match job.files.image.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        _ => "image/jpeg",
    };
    let disposition = format!("inline; filename=\"{}\"", job.files.image);
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// The last frame of the latest finished clip.
async fn job_frame(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let service = Service::new(state);
    let job = service.job(&id)?;
    let name = job
        .files
        .frame
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("no clip has finished yet".into()))?;
    // The frame changes with every clip while the job runs.
    let path = service.job_file(&job, name, job.state.is_running()).await?;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|_| ApiError::NotFound("no clip has finished yet".into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"last_frame.png\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response())
}

async fn preflight(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let view = Service::new(state)
        .preflight_image(form_of(request).await?)
        .await?;
    Ok(Json(view).into_response())
}

async fn preflight_audio(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let preview = Service::new(state)
        .preflight_audio(form_of(request).await?)
        .await?;
    Ok(Json(preview).into_response())
}

/// The old API's DELETE: cancels a waiting job, or (beyond the old backend, which could not) a
/// running one at its next step. Anything else is the old answer, 400 "not in the queue".
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let not_queued = || ApiError::NotYet("Task not found in queue or already running".into());
    let service = Service::new(state);
    let job = service.job(&id).map_err(|_| not_queued())?;
    if job.state.is_final() {
        return Err(not_queued());
    }
    let job = service.cancel(&job.id).await?;
    Ok(Json(serde_json::json!({
        "status": job.state.legacy_status(),
        "task_id": job.id,
        "message": if job.state == JobState::Cancelled {
            "Task cancelled successfully"
        } else {
            "Task cancelling: it stops at the next denoising step"
        },
    })))
}

/// Deletes a finished job and its files (409 while it waits or runs).
async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let service = Service::new(state);
    let job = service.job(&id)?;
    service.delete(&job.id).await?;
    Ok(Json(serde_json::json!({
        "status": "deleted", "task_id": job.id, "message": "Task deleted",
    })))
}

/// The MP4, with single-range requests answered 206 (players seek with them).
async fn video(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let service = Service::new(state);
    let job = service.job(&id)?;
    let id = job.id.as_str();
    let Some(name) = job
        .files
        .video
        .as_deref()
        .filter(|_| job.state == JobState::Completed)
    else {
        return Err(ApiError::NotYet(format!(
            "Task not completed. Status: {}",
            job.state.legacy_status()
        )));
    };
    let path = service.job_file(&job, name, false).await?;
    let not_found = |_| ApiError::NotFound("Video file not found".into());
    let mut file = tokio::fs::File::open(&path).await.map_err(not_found)?;
    let total = file.metadata().await.map_err(not_found)?.len();
    // As the old API (a video element still plays it).
    let disposition = format!("attachment; filename=\"hallo2_{id}.mp4\"");
    let base = [
        (header::CONTENT_TYPE, "video/mp4".to_string()),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    let asked = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeAsk::Whole, |v| parse_range(v, total));
    match asked {
        RangeAsk::Whole => Ok((
            base,
            [(header::CONTENT_LENGTH, total.to_string())],
            file_body(file, total),
        )
            .into_response()),
        RangeAsk::Part(start, end) => {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::Internal(format!("reading the video: {e}")))?;
            let len = end - start + 1;
            Ok((
                StatusCode::PARTIAL_CONTENT,
                base,
                [
                    (
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{end}/{total}"),
                    ),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                file_body(file, len),
            )
                .into_response())
        }
        RangeAsk::Unsatisfiable => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response()),
    }
}

/// `len` bytes of `file` from where it stands, streamed (a video is never read whole).
fn file_body(file: tokio::fs::File, len: u64) -> Body {
    use tokio::io::AsyncReadExt;
    let chunks = futures::stream::unfold(file.take(len), |mut reader| async move {
        let mut buf = vec![0u8; 256 << 10];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    });
    Body::from_stream(chunks)
}

/// What a `Range` header asks of a representation of `total` bytes (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// No usable range: the whole file, 200. An unknown unit, a malformed or reversed range
    /// (`bytes=5-2`) is ignored, as is a request for several ranges (a server may answer those
    /// with the whole representation instead of multipart/byteranges).
    Whole,
    /// One satisfiable range, inclusive: 206.
    Part(u64, u64),
    /// A well-formed range that starts past the end (or a zero-length suffix): 416.
    Unsatisfiable,
}

fn parse_range(value: &str, total: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAsk::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if total == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(total.saturating_sub(n), total - 1),
        },
        (first, last) => {
            let Some(start) = number(first) else {
                return RangeAsk::Whole;
            };
            let end = match last {
                "" => None,
                last => match number(last) {
                    Some(end) if end >= start => Some(end),
                    _ => return RangeAsk::Whole,
                },
            };
            if start >= total {
                return RangeAsk::Unsatisfiable;
            }
            RangeAsk::Part(start, end.map_or(total - 1, |e| e.min(total - 1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RangeAsk, parse_range};

    #[test]
    fn ranges_as_rfc_9110_says() {
        use RangeAsk::*;
        for (header, expected) in [
            ("bytes=0-99", Part(0, 99)),
            ("bytes=900-", Part(900, 999)),
            ("bytes=-100", Part(900, 999)),
            ("bytes=-5000", Part(0, 999)),
            ("bytes=990-2000", Part(990, 999)),
            ("bytes=999-999", Part(999, 999)),
            // Unsatisfiable: 416.
            ("bytes=1000-", Unsatisfiable),
            ("bytes=1000-1001", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            // Invalid or several: ignored, the whole file.
            ("bytes=5-2", Whole),
            ("bytes=0-1,5-6", Whole),
            ("items=0-1", Whole),
            ("bytes=abc", Whole),
            ("bytes=-", Whole),
            ("bytes=+1-2", Whole),
            ("bytes=18446744073709551616-", Whole),
        ] {
            assert_eq!(parse_range(header, 1000), expected, "{header}");
        }
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
    }
}
