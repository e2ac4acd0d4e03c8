//! Router-level tests of the backend lifecycle on the tiny profile: the real model (tiny
//! official-format weights), loaded by the real worker thread, observed through the HTTP API.

mod common;

use std::time::Duration;

use app::types::{BackendEvent, BackendState, LoadStage, StagePhase, StageStatus};
use axum::http::{StatusCode, header};
use common::*;
use server::Studio;

const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_goes_from_503_with_retry_after_to_200_and_live_stays_200() {
    let scratch = tempfile::tempdir().unwrap();
    let studio = Studio::start(tiny_config(scratch.path())).unwrap();
    let router = studio.router();
    let backend = studio.state.backend.clone();

    // Loading has begun before `start` returned: readiness is 503 with Retry-After.
    let resp = get(&router, "/health/ready").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body = json(resp).await;
    assert_eq!(body["state"], "loading", "{body}");
    assert!(body["stage"].is_string(), "{body}");
    assert!(body.get("stages").is_none(), "stages only with ?verbose");

    // Liveness is 200 throughout the load.
    let mut polls = 0;
    while !backend.state().is_ready() {
        assert!(
            !matches!(backend.state(), BackendState::Failed { .. }),
            "{:?}",
            backend.state()
        );
        assert_eq!(get(&router, "/health/live").await.status(), StatusCode::OK);
        polls += 1;
        assert!(polls < 12_000, "not ready: {:?}", backend.status());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let resp = get(&router, "/health/ready?verbose").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    let body = json(resp).await;
    assert_eq!(body["state"], "ready");
    assert_eq!(body["progress"], 1.0);
    let stages: Vec<&str> = body["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "resolve",
            "verify",
            "face_analysis",
            "audio_encoder",
            "vocal_separator",
            "vae",
            "reference_unet",
            "denoising_unet",
            "heads",
            "warmup"
        ],
        "local weights: no download stage"
    );
    assert!(
        body["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["phase"] == "done")
    );

    // The old system's health endpoints, plus our state.
    for uri in ["/health", "/api/v1/health"] {
        let h = json(get(&router, uri).await).await;
        assert_eq!(h["status"], "healthy");
        assert_eq!(h["loaded_models"], serde_json::json!(["hallo2"]));
        assert_eq!(h["state"], "ready");
        assert!(h["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(h.get("gpu_available").is_some() && h.get("gpu_name").is_some());
    }
    let status = json(get(&router, "/api/backend").await).await;
    assert_eq!(status["state"]["state"], "ready");
    assert_eq!(status["state"]["device"], "cpu");
    assert_eq!(status["state"]["dtype"], "f32");
    let step_s = status["warmup_step_s"].as_f64().unwrap();
    assert!(step_s > 0.0, "warmup measured a step: {status}");

    let metrics = text(get(&router, "/metrics").await).await;
    assert!(
        metrics.contains("hallo_backend_state{state=\"ready\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hallo_backend_load_stage_seconds{stage=\"denoising_unet\"}"));
    let err = json(get(&router, "/api/nope").await).await;
    assert_eq!(err["kind"], "not_found");

    // The timings were persisted: a second start on the same device and weights expects them.
    let second = Studio::start(tiny_config(scratch.path())).unwrap();
    let router2 = second.router();
    let body = json(get(&router2, "/health/ready?verbose").await).await;
    assert!(body["eta_s"].as_f64().is_some(), "{body}");
    let expected: Vec<u64> = body["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["expected_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(expected.len(), stages.len());
    wait_for(&second.state.backend, LOAD_TIMEOUT, BackendState::is_ready).await;
    let replay = second.state.backend.subscribe(Some(0)).replay;
    assert!(replay.iter().any(|e| matches!(e,
        BackendEvent::Stage(s) if s.status == StageStatus::Started && s.expected_ms.is_some())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_weight_file_fails_naming_it_and_reload_recovers_without_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let (config, vae, good) = config_with_truncated(scratch.path(), VAE_FILE);
    let studio = Studio::start(config).unwrap();
    let router = studio.router();
    let backend = studio.state.backend.clone();

    let failed = wait_for(&backend, LOAD_TIMEOUT, |s| {
        matches!(s, BackendState::Failed { .. } | BackendState::Ready { .. })
    })
    .await;
    let BackendState::Failed { stage, error, hint } = failed else {
        panic!("loaded a truncated file: {failed:?}");
    };
    assert_eq!(stage, LoadStage::Verify);
    assert!(
        error.contains("diffusion_pytorch_model.safetensors"),
        "{error}"
    );
    assert!(hint.contains("reload"), "{hint}");
    let resp = get(&router, "/health/ready").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get(header::RETRY_AFTER).is_some());
    let body = json(resp).await;
    assert_eq!(body["state"], "failed");
    assert_eq!(body["stage"], "verify");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("diffusion_pytorch_model")
    );
    assert!(body["hint"].is_string());
    assert_eq!(get(&router, "/health/live").await.status(), StatusCode::OK);

    // Fix the file; reload retries in the same process.
    std::fs::write(&vae, &good).unwrap();
    let resp = post(&router, "/api/backend/reload").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // A second reload while loading is a conflict.
    let resp = post(&router, "/api/backend/reload").await;
    if !backend.state().is_ready() {
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        assert_eq!(json(resp).await["kind"], "conflict");
    }
    wait_for(&backend, LOAD_TIMEOUT, |s| {
        matches!(s, BackendState::Failed { .. } | BackendState::Ready { .. })
    })
    .await;
    assert!(backend.state().is_ready(), "{:?}", backend.state());
    assert_eq!(backend.status().attempts, 2);
    assert_eq!(get(&router, "/health/ready").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_weight_file_fails_in_resolve_naming_it() {
    let scratch = tempfile::tempdir().unwrap();
    let weights = scratch.path().join("pretrained_models");
    copy_tree(&tiny_weights(), &weights);
    std::fs::remove_file(weights.join("wav2vec/wav2vec2-base-960h/model.safetensors")).unwrap();
    let mut config = tiny_config(scratch.path());
    config.weights.path = Some(weights);
    let studio = Studio::start(config).unwrap();
    let failed = wait_for(&studio.state.backend, LOAD_TIMEOUT, |s| {
        !matches!(s, BackendState::Loading { .. } | BackendState::Starting)
    })
    .await;
    let BackendState::Failed { stage, error, .. } = failed else {
        panic!("{failed:?}");
    };
    assert_eq!(stage, LoadStage::Resolve);
    assert!(
        error.contains("wav2vec/wav2vec2-base-960h/model.safetensors"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_backend_serves_without_loading() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    // What DISABLE_BACKEND=true sets (ServerConfig::apply_env, unit-tested in config.rs).
    config
        .apply_env(|k| (k == "DISABLE_BACKEND").then(|| "true".to_string()))
        .unwrap();
    let studio = Studio::start(config).unwrap();
    assert!(studio.worker.is_none(), "no worker thread when disabled");
    let router = studio.router();
    assert_eq!(get(&router, "/health/live").await.status(), StatusCode::OK);
    let resp = get(&router, "/health/ready").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        resp.headers().get(header::RETRY_AFTER).is_none(),
        "waiting will not help"
    );
    assert_eq!(json(resp).await["state"], "disabled");
    let h = json(get(&router, "/api/v1/health").await).await;
    assert_eq!(h["state"], "disabled");
    assert_eq!(h["loaded_models"], serde_json::json!([]));
    let resp = post(&router, "/api/backend/reload").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(resp).await["kind"], "not_ready");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(studio.state.backend.state(), BackendState::Disabled);
    assert!(
        !scratch.path().join("cache/pth").exists(),
        "nothing was loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_stages_stops_the_load_before_the_unets() {
    let scratch = tempfile::tempdir().unwrap();
    // Present (so `resolve` passes) but truncated: the audio encoder fails after `verify`.
    let (config, _, _) = config_with_truncated(
        scratch.path(),
        "wav2vec/wav2vec2-base-960h/model.safetensors",
    );
    let studio = Studio::start(config).unwrap();
    let backend = studio.state.backend.clone();
    let failed = wait_for(&backend, LOAD_TIMEOUT, |s| {
        !matches!(s, BackendState::Loading { .. } | BackendState::Starting)
    })
    .await;
    let BackendState::Failed { stage, error, .. } = failed else {
        panic!("{failed:?}");
    };
    assert_eq!(stage, LoadStage::AudioEncoder, "{error}");
    assert!(error.contains("model.safetensors"), "{error}");
    // No weight of the VAE or the UNets was read after the failure.
    for summary in backend.status().stages {
        if matches!(
            summary.stage,
            LoadStage::Vae | LoadStage::ReferenceUnet | LoadStage::DenoisingUnet | LoadStage::Heads
        ) {
            assert_eq!(summary.phase, StagePhase::Pending, "{:?}", summary);
        }
    }
}
