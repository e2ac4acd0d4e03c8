//! The old system's client (`Hallo2Client` of hojkol/emo_hallo) against the studio: every call it
//! makes (health, create, poll, download, cancel) and the two endpoints it did not use (config,
//! logs) get the old backend's status codes and fields, as `client/hallo2_client.py` reads them
//! and `backend/controllers/*.py` answered them. Our fields come on top, never instead.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// The form exactly as the old client sends it: every image as `image/jpeg`, every audio as
/// `audio/wav`, `use_cache` as Python's `str(True)`.
fn client_form(audio_seconds: f64) -> Form {
    let image = std::fs::read(fixture(PORTRAIT)).unwrap();
    Form::new()
        .part(
            "image_file",
            Part::bytes(image)
                .file_name("astronaut.png")
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .part(
            "audio_file",
            Part::bytes(short_speech(audio_seconds))
                .file_name("speech.wav")
                .mime_str("audio/wav")
                .unwrap(),
        )
        .text("use_cache", "True")
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

struct Old {
    base: String,
    http: reqwest::Client,
    _served: Served,
}

impl Old {
    async fn start(scratch: &std::path::Path) -> Self {
        let mut config = tiny_config(scratch);
        config.data_dir = scratch.join("data");
        let served = serve(config).await;
        Self {
            base: served.base.clone(),
            http: reqwest::Client::new(),
            _served: served,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn create(&self, form: Form) -> String {
        let (status, body) = send(
            self.http
                .post(self.api("/inference/hallo2"))
                .multipart(form),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "queued");
        assert_eq!(body["message"], "Inference task queued successfully");
        body["task_id"].as_str().unwrap().to_string()
    }

    async fn status(&self, id: &str) -> (StatusCode, Value) {
        send(self.http.get(self.api(&format!("/tasks/{id}")))).await
    }

    /// `wait_for_completion`: polls until `completed` or `failed` (the only terminal strings).
    async fn wait(&self, id: &str) -> Vec<Value> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let (code, body) = self.status(id).await;
            assert_eq!(code, 200);
            let done = matches!(body["status"].as_str(), Some("completed" | "failed"));
            seen.push(body);
            if done {
                return seen;
            }
            assert!(start.elapsed() < JOB_TIMEOUT, "{:?}", seen.last());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_as_the_old_client_reads_it() {
    let scratch = tempfile::tempdir().unwrap();
    let old = Old::start(scratch.path()).await;
    let (status, body) = send(old.http.get(format!("{}/health", old.base))).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert!(body["gpu_available"].is_boolean());
    assert!(body["gpu_count"].is_u64());
    assert!(
        body.get("gpu_name").is_some(),
        "null without a GPU, as there"
    );
    let (status, body) = send(old.http.get(old.api("/health"))).await;
    assert_eq!(status, 200);
    for key in [
        "status",
        "gpu_available",
        "gpu_name",
        "loaded_models",
        "timestamp",
    ] {
        assert!(body.get(key).is_some(), "{key} in {body}");
    }
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
}

/// create → poll → download, as `generate_video` does; the video is refused with 400 until the
/// task has completed; the task's log tells its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_poll_download_and_logs_as_the_old_client_does() {
    let scratch = tempfile::tempdir().unwrap();
    let old = Old::start(scratch.path()).await;
    let id = old.create(client_form(0.5)).await;

    // "Not ready" is 400 (the client's `download_video` reads exactly that).
    let (status, body) = send(old.http.get(old.api(&format!("/tasks/{id}/video")))).await;
    if status != 200 {
        assert_eq!(status, 400, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("Task not completed. Status: ")
        );
    }

    let seen = old.wait(&id).await;
    let last = seen.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    for s in &seen {
        for key in [
            "task_id",
            "status",
            "progress",
            "status_message",
            "result",
            "error",
            "created_at",
            "updated_at",
        ] {
            assert!(s.get(key).is_some(), "{key} in {s}");
        }
        assert!(s["progress"].as_u64().unwrap() <= 100);
        assert!(
            ["queued", "processing", "completed"].contains(&s["status"].as_str().unwrap()),
            "{s}"
        );
    }
    assert_eq!(last["progress"], 100);
    assert_eq!(last["result"]["task_id"], id.as_str());
    assert!(
        last["result"]["video_path"]
            .as_str()
            .unwrap()
            .ends_with(".mp4")
    );

    let resp = old
        .http
        .get(old.api(&format!("/tasks/{id}/video")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    assert_eq!(
        resp.headers()["content-disposition"],
        format!("attachment; filename=\"hallo2_{id}.mp4\"").as_str()
    );
    let mp4 = resp.bytes().await.unwrap();
    assert_eq!(&mp4[4..8], b"ftyp");

    // The log (a line per change of state) and an unknown task's log, as there.
    let (status, body) = send(old.http.post(old.api(&format!("/tasks/{id}/logs")))).await;
    assert_eq!(status, 200);
    assert_eq!(body["task_id"], id.as_str());
    let logs = body["logs"].as_str().unwrap();
    for state in [
        "queued",
        "preprocessing",
        "generating",
        "encoding",
        "completed",
    ] {
        assert!(logs.contains(&format!(" {state} ")), "{state} in {logs}");
    }
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, body) = send(old.http.post(old.api(&format!("/tasks/{unknown}/logs")))).await;
    assert_eq!(status, 200);
    assert_eq!(body["logs"], "No logs available");
    let resp = old
        .http
        .get(old.api(&format!("/tasks/{id}/logs")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Unknown tasks: 404 on status and video (the client's "not found").
    let (status, body) = old.status(unknown).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], format!("Task {unknown} not found"));
    let (status, _) = send(old.http.get(old.api(&format!("/tasks/{unknown}/video")))).await;
    assert_eq!(status, 404);

    // The list: every task's status under its id, and the count.
    let (status, body) = send(old.http.get(old.api("/tasks"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);
    assert_eq!(body["tasks"][&id]["status"], "completed");
    assert_eq!(body["tasks"][&id]["task_id"], id.as_str());
}

/// `cancel_task`: 2xx is "cancelled", 400 is "could not" (not in the queue: unknown or over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_answers_as_the_old_backend() {
    let scratch = tempfile::tempdir().unwrap();
    let old = Old::start(scratch.path()).await;
    let first = old.create(client_form(0.5)).await;
    let second = old.create(client_form(0.5)).await;
    let (status, body) = send(old.http.delete(old.api(&format!("/tasks/{second}")))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task_id"], second.as_str());
    assert!(body["message"].is_string());
    let waited = old.wait(&first).await;
    assert_eq!(waited.last().unwrap()["status"], "completed");
    // A finished task is not in the queue.
    let (status, body) = send(old.http.delete(old.api(&format!("/tasks/{first}")))).await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "Task not found in queue or already running");
    let (status, body) = send(
        old.http
            .delete(old.api("/tasks/00000000-0000-4000-8000-000000000000")),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "Task not found in queue or already running");
    // The cancelled one ends as cancelled (or, had it already started, stops at its next step).
    let (_, body) = old.status(&second).await;
    assert!(
        ["cancelled", "processing", "queued"].contains(&body["status"].as_str().unwrap()),
        "{body}"
    );
}

/// `POST /api/v1/inference/hallo2/config`: its three keys become the defaults of later old-API
/// submissions; the answer is the old one plus what is now set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_sets_the_defaults_of_later_submissions() {
    let scratch = tempfile::tempdir().unwrap();
    let old = Old::start(scratch.path()).await;
    let config = |body: Value| {
        old.http
            .post(old.api("/inference/hallo2/config"))
            .json(&body)
    };

    let (status, body) = send(config(serde_json::json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    assert_eq!(body["message"], "Configuration updated successfully");

    let bounds = app::settings::ParamBounds::default();
    let steps = bounds.steps.min;
    let (status, body) = send(config(serde_json::json!({
        "inference_steps": steps, "guidance_scale": 2.5, "enable_cache": false, "other": 1,
    })))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["inference_steps"], steps);

    let id = old.create(client_form(0.5)).await;
    let job: Value = old
        .http
        .get(format!("{}/api/jobs/{id}", old.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["params"]["steps"], steps);
    assert_eq!(job["params"]["cfg_scale"], 2.5);
    // The form's own `use_cache` wins over the config's.
    assert_eq!(job["params"]["use_cache"], true);

    // Out of the studio's bounds, or not an object: 422, and nothing changes.
    let (status, body) = send(config(serde_json::json!({
        "inference_steps": bounds.steps.max + 1,
    })))
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["field"], "inference_steps");
    let (status, _) = send(config(serde_json::json!([1, 2]))).await;
    assert_eq!(status, 422);
    let (status, body) = send(config(serde_json::json!({ "inference_steps": null }))).await;
    assert_eq!(status, 200);
    assert!(
        body["config"]["inference_steps"].is_null(),
        "back to the profile's"
    );
    old.wait(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_as_the_old_backend_listed_them() {
    let scratch = tempfile::tempdir().unwrap();
    let old = Old::start(scratch.path()).await;
    let (status, body) = send(old.http.get(old.api("/models"))).await;
    assert_eq!(status, 200);
    let info = &body["models"]["hallo2"];
    for key in ["name", "initialized", "version", "device", "dtype"] {
        assert!(info.get(key).is_some(), "{key} in {body}");
    }
    assert!(body["loaded_models"].is_array());
    let (status, body) = send(old.http.get(old.api("/models/foo"))).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "Model foo not registered");
    let (status, _) = send(old.http.get(old.api("/models/hallo2"))).await;
    assert_eq!(status, 200);
}
