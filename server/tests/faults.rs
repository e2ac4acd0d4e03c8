//! A job that panics fails alone, with its reason, and the worker goes on to the next job. Its
//! own test binary: the fault injection (`server::faults`) is process-wide.

mod common;

use std::time::{Duration, Instant};

use app::jobs::JobState;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_panics_fails_alone_and_the_next_job_completes() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    let s = serve(config).await;
    const FAULTY_SEED: u64 = 666;
    server::faults::panic_in_jobs_with_seed(Some(FAULTY_SEED));
    let faulty = submit_short_job(&s.base, FAULTY_SEED).await;
    let healthy = submit_short_job(&s.base, 7).await;

    let jobs = &s.studio_state.jobs;
    let started = Instant::now();
    let ended = |id: &str| jobs.get(id).is_some_and(|j| j.state.is_final());
    while !(ended(&faulty) && ended(&healthy)) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{:?} {:?}",
            jobs.get(&faulty),
            jobs.get(&healthy)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let faulty = jobs.get(&faulty).unwrap();
    assert_eq!(faulty.state, JobState::Failed);
    let reason = faulty.error.clone().unwrap_or_default();
    assert!(reason.contains("injected fault"), "{reason}");
    let healthy = jobs.get(&healthy).unwrap();
    assert_eq!(healthy.state, JobState::Completed, "{healthy:?}");
    assert!(
        scratch
            .path()
            .join("data/jobs")
            .join(&healthy.id)
            .join("output.mp4")
            .exists()
    );
    server::faults::panic_in_jobs_with_seed(None);

    // The metrics tell it: one job panicked, one completed, the worker lives, steps were timed.
    let metrics = metrics_text(&s.base).await;
    for line in [
        "hallo_jobs_ended_total{how=\"panicked\"} 1",
        "hallo_jobs_ended_total{how=\"completed\"} 1",
        "hallo_jobs{state=\"failed\"} 1",
        "hallo_jobs{state=\"completed\"} 1",
        "hallo_queue_depth 0",
        "hallo_worker_alive 1",
        "hallo_job_seconds_count 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    let steps: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hallo_step_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(steps >= 1, "{metrics}");
}
