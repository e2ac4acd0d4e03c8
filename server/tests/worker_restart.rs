//! A worker thread that dies (a fault outside any job) is restarted: the model loads again and
//! the job waiting for it runs. Its own test binary: the fault injection and the metrics
//! are process-wide.

mod common;

use std::time::{Duration, Instant};

use app::jobs::JobState;
use common::*;

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
    let id = submit_short_job(&s.base, 11).await;
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
    let metrics = metrics_text(&s.base).await;
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
