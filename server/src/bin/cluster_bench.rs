//! Throughput of a cluster on the tiny profile: video seconds made per wall second with 1 and
//! then 2 worker processes behind one web process, for the same jobs (the same inputs and
//! seeds), and their ratio. Needs `nats-server` (Debian's package) and the `server` binary
//! built next to this one:
//!
//! ```text
//! ./scripts/bench-cluster.sh            # cargo build -p server --bins, then this
//! ```
//!
//! Each run has its own `nats-server -js` and folders; the clock runs from the first
//! submission to the last completion (models already loaded).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use app::jobs::{JobRecord, JobState};
use app::types::BackendStatus;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Jobs per run.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// Seconds of speech per job.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Denoising steps per clip.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Worker counts to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`).
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = std::env::current_exe()?
        .parent()
        .map(|d| d.join("server"))
        .filter(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("build the server binary next to this one"))?;
    let speech = speech_wav(args.seconds)?;
    let portrait = std::fs::read(repo_root().join("model/tests/fixtures/face/astronaut.png"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cluster throughput: {} jobs × {:.1} s of speech, {} steps, tiny profile, {cores} cores",
        args.jobs, args.seconds, args.steps
    );
    let mut figures = Vec::new();
    for &n in &args.workers {
        let run = Run::start(&server, n).await?;
        let started = Instant::now();
        let mut ids = Vec::new();
        for i in 0..args.jobs {
            ids.push(
                run.submit(&portrait, &speech, args.steps, 1000 + i as u64)
                    .await?,
            );
        }
        let mut video_s = 0.0;
        for id in &ids {
            let job = run
                .wait_final(id, Duration::from_secs(args.timeout_s))
                .await?;
            anyhow::ensure!(
                job.state == JobState::Completed,
                "job {id}: {:?}",
                job.error
            );
            video_s += job.audio_seconds;
        }
        let wall = started.elapsed().as_secs_f64();
        let rate = video_s / wall;
        println!(
            "  {n} worker(s): {video_s:.1} s of video in {wall:.1} s → {rate:.3} video s per wall s"
        );
        figures.push((n, rate));
    }
    if let (Some((n1, r1)), Some((n2, r2))) = (figures.first(), figures.get(1)) {
        println!("  ratio {n2} / {n1} worker(s): {:.2}×", r2 / r1);
    }
    Ok(())
}

/// The first `seconds` of the speech fixture as a WAV (16 kHz mono 16-bit, 44-byte header).
fn speech_wav(seconds: f64) -> anyhow::Result<Vec<u8>> {
    let wav = std::fs::read(
        repo_root()
            .join("model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav"),
    )?;
    let data = ((seconds * 16_000.0) as usize * 2).min(wav.len() - 44);
    let mut out = wav[..44].to_vec();
    out[4..8].copy_from_slice(&(36 + data as u32).to_le_bytes());
    out[40..44].copy_from_slice(&(data as u32).to_le_bytes());
    out.extend_from_slice(&wav[44..44 + data]);
    Ok(out)
}

/// One cluster: its nats-server, a web process and `workers` worker processes.
struct Run {
    _scratch: tempfile::TempDir,
    children: Vec<Child>,
    web: String,
    client: reqwest::Client,
}

impl Drop for Run {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Run {
    async fn start(server: &Path, workers: usize) -> anyhow::Result<Self> {
        let scratch = tempfile::tempdir()?;
        let (port, monitor) = (free_port()?, free_port()?);
        let nats =
            Command::new(std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into()))
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-m",
                    &monitor.to_string(),
                ])
                .arg("-sd")
                .arg(scratch.path().join("jetstream"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!("starting nats-server ({e}); apt-get install nats-server")
                })?;
        let mut run = Self {
            _scratch: scratch,
            children: vec![nats],
            web: String::new(),
            client: reqwest::Client::new(),
        };
        let health = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
        wait(Duration::from_secs(30), || async {
            run.client
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await?;
        let nats_url = format!("nats://127.0.0.1:{port}");
        let web_port = free_port()?;
        let scratch = run._scratch.path().to_path_buf();
        run.children
            .push(spawn(server, &scratch, "web", "web", &nats_url, web_port)?);
        for i in 0..workers {
            let name = format!("w{}", i + 1);
            run.children.push(spawn(
                server,
                &scratch,
                &name,
                "worker",
                &nats_url,
                free_port()?,
            )?);
        }
        run.web = format!("http://127.0.0.1:{web_port}");
        let url = format!("{}/api/backend", run.web);
        wait(Duration::from_secs(300), || async {
            let status: Option<BackendStatus> = match run.client.get(&url).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            status.is_some_and(|s| {
                s.workers.len() == workers && s.workers.iter().all(|w| w.state.is_ready())
            })
        })
        .await?;
        Ok(run)
    }

    async fn submit(
        &self,
        portrait: &[u8],
        speech: &[u8],
        steps: usize,
        seed: u64,
    ) -> anyhow::Result<String> {
        use reqwest::multipart::{Form, Part};
        let form = Form::new()
            .part(
                "image_file",
                Part::bytes(portrait.to_vec()).file_name("p.png"),
            )
            .part(
                "audio_file",
                Part::bytes(speech.to_vec()).file_name("a.wav"),
            )
            .text("seed", seed.to_string())
            .text("steps", steps.to_string());
        let body: serde_json::Value = self
            .client
            .post(format!("{}/api/v1/inference/hallo2", self.web))
            .multipart(form)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        body["task_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no task_id in {body}"))
    }

    async fn wait_final(&self, id: &str, timeout: Duration) -> anyhow::Result<JobRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let job: JobRecord = self
                .client
                .get(format!("{}/api/jobs/{id}", self.web))
                .send()
                .await?
                .json()
                .await?;
            if job.state.is_final() {
                return Ok(job);
            }
            anyhow::ensure!(Instant::now() < deadline, "job {id} did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One studio process of the cluster, on the tiny profile.
fn spawn(
    server: &Path,
    scratch: &Path,
    name: &str,
    role: &str,
    nats: &str,
    port: u16,
) -> anyhow::Result<Child> {
    let root = repo_root();
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("studio.toml");
    std::fs::write(
        &config,
        format!(
            "load = \"eager\"\ndevice = \"cpu\"\ndtype = \"f32\"\ninference = {:?}\n\
             cache_dir = {:?}\nlog_dir = {:?}\ndata_dir = {:?}\n\
             [weights]\nsource = \"local\"\npath = {:?}\n[warmup]\nenabled = false\n\
             [limits]\nqueue_capacity = 64\n\
             [cluster]\nnats = {nats:?}\nrole = {role:?}\nname = {name:?}\n",
            root.join("configs/inference/long_tiny.yaml"),
            dir.join("cache"),
            dir.join("logs"),
            dir.join("data"),
            root.join("model/tests/fixtures/hallo2-tiny/pretrained_models"),
        ),
    )?;
    Ok(Command::new(server)
        .current_dir(&root)
        .args(["--config", config.to_str().unwrap_or_default()])
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

async fn wait<F, Fut>(timeout: Duration, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !probe().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
