//! Seconds of compute per second of generated video on the tiny profile (CPU), by stage:
//! preprocess (face + audio), denoise, decode, encode — each job submitted through the REST API
//! of an in-process studio, as a client would.
//!
//! ```text
//! cargo run -p server --release --bin generate_bench -- --runs 3 --steps 3
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use app::jobs::JobRecord;
use clap::Parser;
use server::Studio;
use server::config::ServerConfig;

#[derive(Debug, Parser)]
struct Args {
    /// Jobs to run (the first one also fills the preprocessing caches; `use_cache` is off).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Denoising steps per clip (the tiny profile's yaml says 3).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Portrait and speech (defaults: the test fixtures).
    #[arg(long)]
    image: Option<PathBuf>,
    #[arg(long)]
    audio: Option<PathBuf>,
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
    let root = repo_root();
    let image = args
        .image
        .unwrap_or_else(|| root.join("model/tests/fixtures/face/astronaut.png"));
    let audio = args.audio.unwrap_or_else(|| {
        root.join("model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav")
    });
    let scratch = tempfile::tempdir()?;
    let mut config = ServerConfig::from_file(&root.join("configs/tiny.toml"))?;
    config.inference = root.join(&config.inference);
    config.weights.path = config.weights.path.map(|p| root.join(p));
    config.cache_dir = scratch.path().join("cache");
    config.log_dir = scratch.path().join("logs");
    config.data_dir = scratch.path().join("data");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let studio = Studio::start(config)?;
    let backend = studio.state.backend.clone();
    tokio::spawn(studio.serve(listener, std::future::pending()));
    let started = Instant::now();
    while !backend.state().is_ready() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let client = reqwest::Client::new();
    println!(
        "tiny profile, CPU, {} steps, {} + {}",
        args.steps,
        image.display(),
        audio.display()
    );
    println!(
        "run  video_s  preprocess  denoise  decode  encode  total   (seconds per video second)"
    );
    for run in 0..args.runs {
        let form = reqwest::multipart::Form::new()
            .part(
                "image_file",
                reqwest::multipart::Part::bytes(std::fs::read(&image)?).file_name("image.png"),
            )
            .part(
                "audio_file",
                reqwest::multipart::Part::bytes(std::fs::read(&audio)?).file_name(
                    audio
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "audio.wav".into()),
                ),
            )
            .text("steps", args.steps.to_string())
            .text("use_cache", "false");
        let resp = client
            .post(format!("{base}/api/v1/inference/hallo2"))
            .multipart(form)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 202, "submit: {}", resp.text().await?);
        let id = resp.json::<serde_json::Value>().await?["task_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let job = loop {
            let job: JobRecord = client
                .get(format!("{base}/api/jobs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if job.state.is_final() {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        anyhow::ensure!(job.error.is_none(), "job failed: {:?}", job.error);
        let video_s = job.audio_seconds.max(1e-9);
        let stage = |name: &str| {
            job.timings
                .iter()
                .find(|(s, _)| s == name)
                .map_or(0.0, |(_, t)| *t)
                / video_s
        };
        let total: f64 = job.timings.iter().map(|(_, t)| t).sum::<f64>() / video_s;
        println!(
            "{run:>3}  {video_s:>7.2}  {:>10.3}  {:>7.3}  {:>6.3}  {:>6.3}  {total:>5.3}",
            stage("preprocess"),
            stage("denoise"),
            stage("decode"),
            stage("encode"),
        );
    }
    Ok(())
}
