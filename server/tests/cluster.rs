//! The studio as a cluster on the tiny profile: `nats-server -js`, one web process and two
//! worker processes (the real binary, each with its own folders). Eight jobs over REST on the
//! web node; both workers take jobs; one worker is killed (`kill -9`) while it runs a job that
//! has stored checkpoints; every job completes exactly once, the killed worker's on the other,
//! resumed from its checkpoint; a repeated delivery of a finished job runs nothing; the videos
//! equal one process's for the same inputs and seeds. A second web node sees the history,
//! serves videos, re-runs and deletes for both; a cancel on the web node stops a job on its
//! worker.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use app::jobs::{JobRecord, JobState};
use common::*;
use reqwest::multipart::Part;

const TIMEOUT: Duration = Duration::from_secs(300);

/// One process's config: the tiny weights, a checkpoint every two clips, and, for a cluster
/// role, its `[cluster]` (a short `ack_wait_s`, so a dead worker's job moves on quickly).
fn config(scratch: &Path, name: &str, cluster: Option<(&str, &str, &str)>) -> PathBuf {
    config_with(scratch, name, cluster, 5)
}

/// [`config`] with `max_deliver` deliveries of a job at most.
fn config_with(
    scratch: &Path,
    name: &str,
    cluster: Option<(&str, &str, &str)>,
    max_deliver: u32,
) -> PathBuf {
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
             ack_wait_s = 2.0\nworker_ttl_s = 3.0\nmax_deliver = {max_deliver}\n"
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
    /// Starts the binary on a port of its own choosing (see [`spawn_listening`]).
    fn spawn(config: &Path, log: PathBuf) -> Self {
        let (child, base) = spawn_listening(config, &log);
        Self { child, base, log }
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
    /// Stops the process; when the test failed, shows the end of its log (what CI keeps).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.log_lines();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- {} (last {} lines)\n{}",
                self.log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
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

/// Kills (`kill -9`) the worker that reports running job `id`; returns its index.
async fn kill_the_runner(base: &str, workers: &mut [Process], id: &str) -> usize {
    // Workers report every `worker_ttl_s / 3` and on each backend event: wait for it.
    let status = wait_backend(base, "a worker running the job", |b| {
        b.workers.iter().any(|w| w.job.as_deref() == Some(id))
    })
    .await;
    let name = status
        .workers
        .into_iter()
        .find(|w| w.job.as_deref() == Some(id))
        .expect("a worker reports running the job")
        .name;
    let runner = workers
        .iter()
        .position(|w| w.log.ends_with(format!("{name}.log")))
        .unwrap();
    workers[runner].child.kill().unwrap();
    workers[runner].child.wait().unwrap();
    runner
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
    let killed = kill_the_runner(&web.base, &mut workers, &long).await;
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

    // A second delivery of a finished job (published again under another message id) is
    // acknowledged without a second run.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("again-{long}").as_str());
    async_nats::jetstream::new(client)
        .publish_with_headers(format!("{prefix}.jobs.run"), headers, long.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let start = Instant::now();
    while !survivor
        .log_lines()
        .iter()
        .any(|l| l.contains(&long) && l.contains("already ended"))
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "the second delivery was not taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(said(survivor, &long, "job ended"), 1);
    assert_eq!(job_record(&web.base, &long).await, *resumed);

    // The videos, downloaded from the web node, equal one process's for the same inputs.
    let videos = s.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let single = Process::spawn(&config(s, "single", None), s.join("single.log"));
    wait_live(&single.base).await;
    let mut local_ids = Vec::new();
    for (seconds, steps, seed) in &inputs {
        let resp = submit(&single.base, job_form(*seconds, *steps, *seed)).await;
        local_ids.push(task_id(resp).await);
    }
    for (index, (id, local_id)) in ids.iter().zip(&local_ids).enumerate() {
        let job = wait_job(&single.base, local_id, |j| j.state.is_final()).await;
        assert_eq!(job.state, JobState::Completed);
        let local = download(&single.base, local_id, &videos).await;
        let clustered = download(&web.base, id, &videos).await;
        assert_eq!(
            decoded_frames(&clustered),
            decoded_frames(&local),
            "job {index}: the cluster's video differs from one process's"
        );
    }
    drop(single);

    // A second web node started now sees the whole history, serves the videos (from the
    // cluster's store: it never had them), re-runs a job and deletes one for every node.
    let web2 = Process::spawn(
        &config(s, "web2", Some((&nats.url, prefix, "web"))),
        s.join("web2.log"),
    );
    wait_live(&web2.base).await;
    for (id, first) in ids.iter().zip(&records) {
        assert_eq!(
            wait_job(&web2.base, id, |j| j.state.is_final()).await,
            *first
        );
    }
    let from_web2 = download(&web2.base, &ids[2], &videos.join("..")).await;
    assert_eq!(
        decoded_frames(&from_web2),
        decoded_frames(&videos.join(format!("{}.mp4", ids[2])))
    );
    let rerun: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/jobs/{}/rerun", web2.base, ids[2]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rerun_id = rerun["task_id"].as_str().unwrap().to_string();
    let again = wait_job(&web.base, &rerun_id, |j| j.state.is_final()).await;
    assert_eq!(again.state, JobState::Completed, "{again:?}");
    assert_eq!(again.seed_used, records[2].seed_used);
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/jobs/{}", web2.base, ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for base in [&web.base, &web2.base] {
        let start = Instant::now();
        while reqwest::get(format!("{base}/api/jobs/{}", ids[1]))
            .await
            .unwrap()
            .status()
            != 404
        {
            assert!(
                start.elapsed() < TIMEOUT,
                "the deleted job is still listed on {base}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(web2);

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

    drop(nats);
}

/// A job whose workers keep dying is given up after `max_deliver` deliveries (one here): failed
/// with the reason (from JetStream's advisory, sent when another worker asks for work), and no
/// worker takes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_workers_keep_dying_fails_with_the_reason() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let nats = Nats::start(s).await;
    let cluster = |role| Some((nats.url.as_str(), "dead", role));
    let web = Process::spawn(&config_with(s, "web", cluster("web"), 1), s.join("web.log"));
    let mut workers: Vec<Process> = ["w1", "w2"]
        .into_iter()
        .map(|name| {
            Process::spawn(
                &config_with(s, name, cluster("worker"), 1),
                s.join(format!("{name}.log")),
            )
        })
        .collect();
    wait_live(&web.base).await;
    wait_backend(&web.base, "two ready workers", |b| {
        b.workers.len() == 2 && b.workers.iter().all(|w| w.state.is_ready())
    })
    .await;
    let id = task_id(submit(&web.base, job_form(2.4, 6, 7)).await).await;
    wait_job(&web.base, &id, |j| j.state == JobState::Generating).await;
    let runner = kill_the_runner(&web.base, &mut workers, &id).await;

    let job = wait_job(&web.base, &id, |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(
        job.error
            .as_deref()
            .is_some_and(|e| e.contains("max_deliver")),
        "{job:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        said(&workers[1 - runner], &id, "job taken"),
        0,
        "it ran again"
    );
    assert_eq!(job_record(&web.base, &id).await, job);
}

/// Joining needs a NATS server that answers, with the credentials it asks for; each failure
/// says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_needs_a_reachable_nats_and_its_credentials() {
    use server::cluster::Cluster;
    use server::config::ClusterConfig;
    let scratch = tempfile::tempdir().unwrap();
    let nats = Nats::start_with(scratch.path(), &["--auth", "s3cret"]).await;
    let with = |nats: &str, token: Option<&str>| ClusterConfig {
        nats: nats.into(),
        token: token.map(str::to_string),
        ..ClusterConfig::default()
    };
    let joined = Cluster::connect(&with(&nats.url, Some("s3cret"))).await;
    assert!(joined.is_ok(), "{:?}", joined.err());
    let refused = Cluster::connect(&with(&nats.url, Some("wrong"))).await;
    assert!(refused.is_err());
    let closed = format!("nats://127.0.0.1:{}", free_port());
    let error = Cluster::connect(&with(&closed, None)).await.err().unwrap();
    assert!(
        error.to_string().contains("cannot reach") && error.to_string().contains("nats-server -js"),
        "{error}"
    );
}

/// Files of real size (a long job's video, hundreds of MB) go through the object store in
/// chunks, streamed from and to disk: a 96 MB file comes back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_round_trips_through_the_object_store() {
    use server::cluster::Cluster;
    use server::config::ClusterConfig;
    let scratch = tempfile::tempdir().unwrap();
    let nats = Nats::start(scratch.path()).await;
    let cluster = Cluster::connect(&ClusterConfig {
        nats: nats.url.clone(),
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let big = scratch.path().join("big.mp4");
    let mut bytes = vec![0u8; 96 << 20];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    }
    std::fs::write(&big, &bytes).unwrap();
    let id = "00000000-0000-4000-8000-000000000001";
    cluster.put_file(id, "output.mp4", &big).await.unwrap();
    let back = scratch.path().join("back/output.mp4");
    assert!(cluster.get_file(id, "output.mp4", &back).await.unwrap());
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "the file changed on its way"
    );
    assert!(!cluster.get_file(id, "missing.mp4", &back).await.unwrap());
    cluster.delete_files(id, |_| true).await.unwrap();
    assert!(cluster.list_files(id).await.unwrap().is_empty());
}
