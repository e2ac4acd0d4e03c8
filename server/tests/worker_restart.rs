//! A worker thread that dies (a fault outside any job) is restarted: the model loads again and
//! the job waiting for it runs. Its own test binary: the fault injection and the metrics
//! are process-wide.

mod common;

use std::time::{Duration, Instant};

use app::jobs::JobState;
use common::*;
use reqwest::multipart::{Form, Part};

async fn submit(base: &str, seed: u64) -> String {
    let form = Form::new()
        .part(
            "image_file",
            Part::bytes(std::fs::read(fixture(PORTRAIT)).unwrap()).file_name("p.png"),
        )
        .part(
            "audio_file",
            Part::bytes(short_speech(0.5)).file_name("a.wav"),
        )
        .text("seed", seed.to_string())
        .text("steps", "1");
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/inference/hallo2"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["task_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_thread_that_dies_is_restarted_and_the_waiting_job_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    let s = serve(config).await;
    let backend = &s.studio_state.backend;
    wait_for(backend, Duration::from_secs(300), |st| st.name() == "ready").await;

    // The next command (the submission's "run jobs") kills the thread outside any job.
    server::faults::kill_worker_at_next_command();
    let id = submit(&s.base, 11).await;
    let jobs = &s.studio_state.jobs;
    let started = Instant::now();
    while jobs.get(&id).is_none_or(|j| j.state != JobState::Completed) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{:?} {:?}",
            jobs.get(&id),
            backend.state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backend.state().name(), "ready");
    let metrics = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "hallo_worker_restarts_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "hallo_worker_alive 1"),
        "{metrics}"
    );
}
