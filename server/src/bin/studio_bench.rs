//! Start-up and event-delivery figures of the studio on the tiny profile:
//!
//! 1. process start → first served page (`/` 200, server-rendered), and → ready (`/health/ready`
//!    200), for the `server` binary started on `configs/tiny.toml` (run from the repository root,
//!    built next to this binary: `cargo build -p server --bins`);
//! 2. SSE delivery latency to N concurrent `/api/events` subscribers during a reload: for each
//!    event and subscriber, arrival at the HTTP client minus the moment the backend broadcast it
//!    (seen by an in-process subscriber), p50/p99.
//!
//! ```text
//! cargo run -p server --release --bin studio_bench -- --subscribers 100
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use app::types::{BackendEvent, BackendState};
use clap::Parser;
use futures::StreamExt;
use server::Studio;
use server::config::ServerConfig;

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent SSE subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Start-up runs of the server binary.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 300)]
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
    let timeout = Duration::from_secs(args.timeout_s);
    startup(&args, timeout).await?;
    sse_latency(args.subscribers, timeout).await?;
    Ok(())
}

/// Time from spawning the server process to its first response and to ready.
async fn startup(args: &Args, timeout: Duration) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?
        .parent()
        .map(|d| d.join("server"))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!("build the server binary first: cargo build -p server --bins")
        })?;
    let client = reqwest::Client::new();
    println!("startup of {} on configs/tiny.toml", exe.display());
    for run in 0..args.runs {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .current_dir(repo_root())
            .args(["--config", "configs/tiny.toml"])
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        // The first served page: the server-rendered studio, backend panel included.
        let first = poll(&client, &format!("{base}/"), started, timeout).await;
        let ready = poll(&client, &format!("{base}/health/ready"), started, timeout).await;
        let _ = child.kill();
        let _ = child.wait();
        match (first, ready) {
            (Some(first), Some(ready)) => println!(
                "  run {run}: first served page {:.1} ms, ready {:.2} s",
                first.as_secs_f64() * 1e3,
                ready.as_secs_f64()
            ),
            _ => println!("  run {run}: timed out after {timeout:?}"),
        }
    }
    Ok(())
}

async fn poll(
    client: &reqwest::Client,
    url: &str,
    started: Instant,
    timeout: Duration,
) -> Option<Duration> {
    while started.elapsed() < timeout {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// SSE delivery latency to `n` subscribers over loopback during a reload of the tiny model.
async fn sse_latency(n: usize, timeout: Duration) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut config = ServerConfig::from_file(&repo_root().join("configs/tiny.toml"))?;
    let root = repo_root();
    config.weights.path = config.weights.path.map(|p| root.join(p));
    config.inference = root.join(&config.inference);
    config.cache_dir = scratch.path().join("cache");
    config.log_dir = scratch.path().join("logs");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let studio = Studio::start(config)?;
    let backend = studio.state.backend.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(studio.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let started = Instant::now();
    while !backend.state().is_ready() {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "not ready: {:?}",
            backend.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // n subscribers, each past its first (snapshot) frame before the reload starts.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()?;
    let url = format!("http://{addr}/api/events");
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let resp = client.get(&url).send().await?;
        let ready_tx = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut arrivals: HashMap<u64, Instant> = HashMap::new();
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            let mut first = true;
            while let Some(Ok(chunk)) = stream.next().await {
                let now = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let Ok(event) = serde_json::from_str::<BackendEvent>(data) else {
                        continue;
                    };
                    if first {
                        first = false;
                        let _ = ready_tx.send(()).await;
                        continue;
                    }
                    arrivals.insert(event.seq(), now);
                    if matches!(&event, BackendEvent::State(s) if s.state.is_ready()) {
                        return arrivals;
                    }
                }
            }
            arrivals
        }));
    }
    for _ in 0..n {
        ready_rx.recv().await;
    }
    // The reference: when the backend broadcast each event.
    let mut probe = backend.subscribe(None).live;
    let probe_task = tokio::spawn(async move {
        let mut sent: HashMap<u64, Instant> = HashMap::new();
        while let Ok(event) = probe.recv().await {
            sent.insert(event.seq(), Instant::now());
            if matches!(&event, BackendEvent::State(s) if s.state.is_ready()) {
                break;
            }
        }
        sent
    });
    let reload = Instant::now();
    backend
        .request_load()
        .map_err(|e| anyhow::anyhow!("reload: {e}"))?;
    let sent = probe_task.await?;
    let mut latencies = Vec::new();
    for t in tasks {
        let arrivals = t.await?;
        for (seq, at) in arrivals {
            if let Some(s) = sent.get(&seq) {
                latencies.push(at.saturating_duration_since(*s).as_secs_f64() * 1e3);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "SSE delivery, {n} subscribers, reload of the tiny model ({} events, {:.2} s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} deliveries)",
        sent.len(),
        reload.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0),
        latencies.len()
    );
    anyhow::ensure!(
        matches!(backend.state(), BackendState::Ready { .. }),
        "reload failed: {:?}",
        backend.state()
    );
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
