//! The studio as a cluster on the tiny profile: `nats-server -js`, one web process and two
//! worker processes (the real binary, each with its own folders). Eight jobs over REST on the
//! web node; both workers take jobs; one worker is killed (`kill -9`) while it runs a job that
//! has stored checkpoints; every job completes exactly once, the killed worker's on the other,
//! resumed from its checkpoint; the videos equal one process's for the same inputs and seeds.
//! Then a cancel on the web node stops a job on its worker.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use app::jobs::{JobRecord, JobState};
use app::types::BackendStatus;
use common::*;
use reqwest::multipart::Part;

const TIMEOUT: Duration = Duration::from_secs(300);

/// One process's config: the tiny weights, a checkpoint every two clips, and, for a cluster
/// role, its `[cluster]` (a short `ack_wait_s`, so a dead worker's job moves on quickly).
fn config(scratch: &Path, name: &str, cluster: Option<(&str, &str, &str)>) -> PathBuf {
    let root = repo_root();
    let inference = root.join("configs/inference/long_tiny.yaml");
    let spec = model::config::InferenceConfig::from_yaml_file(&inference).unwrap();
    let checkpoint_s =
        2.0 * spec.data.n_sample_frames as f64 / f64::from(spec.data.export_video.fps);
    let dir = scratch.join(name);
    let mut toml = format!(
        "bind = \"127.0.0.1:0\"\nload = \"eager\"\ndevice = \"cpu\"\ndtype = \"f32\"\n\
         inference = {inference:?}\ncache_dir = {:?}\nlog_dir = {:?}\ndata_dir = {:?}\n\
         checkpoint_seconds = {checkpoint_s}\n\
         [weights]\nsource = \"local\"\npath = {:?}\n[warmup]\nenabled = false\n",
        dir.join("cache"),
        dir.join("logs"),
        dir.join("data"),
        tiny_weights(),
    );
    if let Some((nats, prefix, role)) = cluster {
        toml += &format!(
            "[cluster]\nnats = {nats:?}\nrole = {role:?}\nname = {name:?}\nprefix = {prefix:?}\n\
             ack_wait_s = 2.0\nworker_ttl_s = 3.0\n"
        );
    }
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("studio.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A process of the test and its log.
struct Process {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Process {
    fn spawn(config: &Path, log: PathBuf) -> Self {
        let port = free_port();
        Self {
            child: spawn_server(config, port, &log),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn backend(base: &str) -> BackendStatus {
    reqwest::get(format!("{base}/api/backend"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `/api/backend` of `base` until `pred` holds.
async fn wait_backend(
    base: &str,
    what: &str,
    pred: impl Fn(&BackendStatus) -> bool,
) -> BackendStatus {
    let start = Instant::now();
    loop {
        let status = backend(base).await;
        if pred(&status) {
            return status;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the job on `base` until `pred` holds.
async fn wait_job(base: &str, id: &str, pred: impl Fn(&JobRecord) -> bool) -> JobRecord {
    let start = Instant::now();
    loop {
        let job = job_record(base, id).await;
        if pred(&job) {
            return job;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The form of a job: the portrait, `seconds` of speech, `seed` and `steps`.
fn job_form(seconds: f64, steps: usize, seed: u64) -> reqwest::multipart::Form {
    let audio = Part::bytes(short_speech(seconds)).file_name("a.wav");
    form(file_part(PORTRAIT, "a.png"), audio)
        .text("seed", seed.to_string())
        .text("steps", steps.to_string())
}

async fn download(base: &str, id: &str, to: &Path) -> PathBuf {
    let bytes = reqwest::get(format!("{base}/api/v1/tasks/{id}/video"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let path = to.join(format!("{id}.mp4"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Log lines of `process` that say `what` about job `id`.
fn said(process: &Process, id: &str, what: &str) -> usize {
    process
        .log_lines()
        .iter()
        .filter(|l| l.contains(id) && l.contains(what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_jobs_and_a_killed_workers_job_resumes_on_the_other() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let nats = Nats::start(s).await;
    let prefix = "test";
    let web = Process::spawn(
        &config(s, "web", Some((&nats.url, prefix, "web"))),
        s.join("web.log"),
    );
    let mut workers: Vec<Process> = ["w1", "w2"]
        .into_iter()
        .map(|name| {
            Process::spawn(
                &config(s, name, Some((&nats.url, prefix, "worker"))),
                s.join(format!("{name}.log")),
            )
        })
        .collect();
    wait_live(&web.base).await;
    let status = wait_backend(&web.base, "two ready workers", |b| {
        b.workers.len() == 2 && b.workers.iter().all(|w| w.state.is_ready())
    })
    .await;
    assert!(status.state.is_ready(), "{status:?}");
    let ready: serde_json::Value = reqwest::get(format!("{}/health/ready", web.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["workers"].as_array().map(Vec::len), Some(2));
    let metrics = metrics_text(&web.base).await;
    for name in ["w1", "w2"] {
        assert!(
            metrics.contains(&format!(
                "hallo_cluster_worker_ready{{worker=\"{name}\"}} 1"
            )),
            "{metrics}"
        );
    }

    // The first job makes several checkpoints; seven short ones follow.
    let inputs: Vec<(f64, usize, u64)> = std::iter::once((2.4, 6, 7))
        .chain((0..7).map(|i| (0.6, 2, 100 + i)))
        .collect();
    let mut ids = Vec::new();
    for (seconds, steps, seed) in &inputs {
        let resp = submit(&web.base, job_form(*seconds, *steps, *seed)).await;
        assert_eq!(resp.status(), 200);
        ids.push(task_id(resp).await);
    }
    let long = ids[0].clone();

    // Past its second stored checkpoint (clip 4), its worker dies.
    wait_job(&web.base, &long, |j| {
        j.state == JobState::Generating && j.files.frame_clip >= 4
    })
    .await;
    let status = backend(&web.base).await;
    let runner = status
        .workers
        .iter()
        .find(|w| w.job.as_deref() == Some(long.as_str()))
        .map(|w| w.name.clone())
        .expect("a worker reports running the long job");
    let killed = workers
        .iter()
        .position(|w| w.log.ends_with(format!("{runner}.log")))
        .unwrap();
    workers[killed].child.kill().unwrap();
    workers[killed].child.wait().unwrap();
    let survivor = &workers[1 - killed];

    let mut records = Vec::new();
    for id in &ids {
        records.push(wait_job(&web.base, id, |j| j.state.is_final()).await);
    }
    for job in &records {
        assert_eq!(job.state, JobState::Completed, "{job:?}");
    }
    let resumed = &records[0];
    assert_eq!(resumed.attempts, 2, "the kill counts as an attempt");
    assert!(
        resumed.resumed_from_clip.is_some_and(|c| c >= 3),
        "resumed from its checkpoint, not restarted: {resumed:?}"
    );
    // Exactly once: one end per job, in all the workers' logs together.
    for id in &ids {
        let ends: usize = workers.iter().map(|w| said(w, id, "job ended")).sum();
        assert_eq!(ends, 1, "job {id} ended {ends} times");
    }
    assert_eq!(
        said(survivor, &long, "job ended"),
        1,
        "the survivor finished it"
    );
    for w in &workers {
        assert!(
            w.log_lines().iter().any(|l| l.contains("job taken")),
            "{} took no job",
            w.log.display()
        );
    }

    // The videos, downloaded from the web node, equal one process's for the same inputs.
    let videos = s.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let clustered = [
        download(&web.base, &ids[0], &videos).await,
        download(&web.base, &ids[1], &videos).await,
    ];
    let single = Process::spawn(&config(s, "single", None), s.join("single.log"));
    wait_live(&single.base).await;
    for (index, video) in [0usize, 1].into_iter().zip(&clustered) {
        let (seconds, steps, seed) = inputs[index];
        let id = task_id(submit(&single.base, job_form(seconds, steps, seed)).await).await;
        let job = wait_job(&single.base, &id, |j| j.state.is_final()).await;
        assert_eq!(job.state, JobState::Completed);
        let local = download(&single.base, &id, &videos).await;
        assert_eq!(
            decoded_frames(video),
            decoded_frames(&local),
            "job {index}: the cluster's video differs from one process's"
        );
    }
    drop(single);

    // A cancel on the web node stops the job on its worker at its next step.
    let id = task_id(submit(&web.base, job_form(2.4, 40, 9)).await).await;
    wait_job(&web.base, &id, |j| {
        j.state == JobState::Generating && j.progress.step >= 1
    })
    .await;
    let asked = Instant::now();
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/tasks/{id}", web.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let job = wait_job(&web.base, &id, |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert!(job.progress.fraction < 1.0, "{job:?}");
    assert_eq!(said(survivor, &id, "job ended"), 1);
    eprintln!("cancel took {:?}", asked.elapsed());

    // Delete from the web node: gone from the cluster.
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/jobs/{}", web.base, ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let gone = reqwest::get(format!("{}/api/jobs/{}", web.base, ids[1]))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    drop(nats);
}
