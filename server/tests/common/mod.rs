//! Helpers shared by the integration tests: the tiny profile with absolute paths, polling, and
//! a minimal SSE reader.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use app::types::BackendState;
use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use server::Studio;
use server::backend::Backend;
use server::config::ServerConfig;
use tower::ServiceExt;

/// A file of the model crate's test fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("model/tests/fixtures").join(rel)
}

/// A real portrait (one face) and a LibriVox recording (2.99 s, 16 kHz mono PCM).
pub const PORTRAIT: &str = "face/astronaut.png";
pub const SPEECH: &str = "speech/sense_and_sensibility_01_austen_64kb-0880.wav";

/// The first `seconds` of the speech fixture (16 kHz mono 16-bit PCM, a 44-byte header) as a
/// new WAV: short jobs for the tests that run a job more than once.
pub fn short_speech(seconds: f64) -> Vec<u8> {
    let wav = std::fs::read(fixture(SPEECH)).unwrap();
    assert_eq!(&wav[36..40], b"data", "canonical 44-byte header");
    let data = &wav[44..44 + (seconds * 16_000.0) as usize * 2];
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(&wav[8..40]);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// A studio serving on a free port (in this process).
pub struct Served {
    pub base: String,
    pub studio_state: server::routes::AppState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn serve(config: ServerConfig) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let studio = Studio::start(config).unwrap();
    let studio_state = studio.state.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(studio.serve(listener, async {
        let _ = stopped.await;
    }));
    Served {
        base,
        studio_state,
        _stop: stop,
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tiny weights folder.
pub fn tiny_weights() -> PathBuf {
    repo_root().join("model/tests/fixtures/hallo2-tiny/pretrained_models")
}

/// `configs/tiny.toml` with absolute paths and its caches under `scratch`.
pub fn tiny_config(scratch: &Path) -> ServerConfig {
    let mut c = ServerConfig::from_file(&repo_root().join("configs/tiny.toml")).expect("tiny.toml");
    c.weights.path = Some(tiny_weights());
    c.inference = repo_root().join(&c.inference);
    c.cache_dir = scratch.join("cache");
    c.log_dir = scratch.join("logs");
    c.bind = "127.0.0.1:0".parse().unwrap();
    c
}

/// Copies a folder tree (the tiny weights are ~21 MB).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the tiny weights in `scratch` with the file `rel` cut to half its length, and a
/// config using it; returns the config, the file's path and its good bytes (to repair it).
pub fn config_with_truncated(scratch: &Path, rel: &str) -> (ServerConfig, PathBuf, Vec<u8>) {
    let weights = scratch.join("pretrained_models");
    copy_tree(&tiny_weights(), &weights);
    let file = weights.join(rel);
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let mut config = tiny_config(scratch);
    config.weights.path = Some(weights);
    (config, file, good)
}

/// The tiny VAE weights (relative to the weights root).
pub const VAE_FILE: &str = "sd-vae-ft-mse/diffusion_pytorch_model.safetensors";

/// Polls until `pred` holds for the backend state, or panics after `timeout` with the state.
pub async fn wait_for(
    backend: &Backend,
    timeout: Duration,
    pred: impl Fn(&BackendState) -> bool,
) -> BackendState {
    let start = Instant::now();
    loop {
        let state = backend.state();
        if pred(&state) {
            return state;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}; state {state:?}; status {:?}",
            backend.status()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends one request through the router.
pub async fn call(router: &axum::Router, req: Request<Body>) -> Response<Body> {
    router
        .clone()
        .oneshot(req)
        .await
        .expect("router is infallible")
}

pub async fn get(router: &axum::Router, uri: &str) -> Response<Body> {
    call(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn post(router: &axum::Router, uri: &str) -> Response<Body> {
    call(router, Request::post(uri).body(Body::empty()).unwrap()).await
}

pub async fn json(resp: Response<Body>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

pub async fn text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// One parsed SSE frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    /// Comment lines (`: keep-alive`).
    pub comments: Vec<String>,
}

/// Reads SSE frames from a streaming HTTP response.
pub struct SseReader {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next frame, or None at the end of the stream; panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseFrame> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut frame = SseFrame::default();
                for line in raw.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        frame.comments.push(c.trim().to_string());
                    } else if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        match k {
                            "id" => frame.id = Some(v.to_string()),
                            "event" => frame.event = Some(v.to_string()),
                            "data" => frame.data.push_str(v),
                            "retry" => frame.retry = v.parse().ok(),
                            _ => {}
                        }
                    }
                }
                return Some(frame);
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
                Ok(None) => return None,
                Err(_) => panic!("no SSE frame within {timeout:?}; buffered {:?}", self.buf),
            }
        }
    }
}

/// The decoded RGB frames of an MP4 (ffmpeg).
pub fn decoded_frames(path: &Path) -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg (Debian ffmpeg; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Submits a short job on the tiny profile (the portrait, 0.5 s of speech, one step) over the
/// old API; returns its id.
pub async fn submit_short_job(base: &str, seed: u64) -> String {
    use reqwest::multipart::{Form, Part};
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

/// The server's `/metrics` text.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A fixture file as a form part named `name`.
pub fn file_part(rel: &str, name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(std::fs::read(fixture(rel)).unwrap())
        .file_name(name.to_string())
}

pub fn form(
    image: reqwest::multipart::Part,
    audio: reqwest::multipart::Part,
) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part("image_file", image)
        .part("audio_file", audio)
}

/// Posts `form` to the old API's submit route.
pub async fn submit(base: &str, form: reqwest::multipart::Form) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/inference/hallo2"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// The `task_id` of a submission's answer.
pub async fn task_id(resp: reqwest::Response) -> String {
    let body: serde_json::Value = resp.json().await.unwrap();
    body["task_id"].as_str().expect("a task_id").to_string()
}

/// Starts the studio's binary with `config` on `port`, its log (INFO) and any error it exits
/// with in `log`.
pub fn spawn_server(config: &Path, port: u16, log: &Path) -> std::process::Child {
    let out = std::fs::File::create(log).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(repo_root())
        .args(["--config", config.to_str().unwrap()])
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stderr(out.try_clone().unwrap())
        .stdout(out)
        .spawn()
        .unwrap()
}

/// Starts the binary with `config` on a port it picks itself (port 0: no race with the
/// processes of tests running in parallel, as a port probed free beforehand has) and returns
/// it with its base URL, read from its `listening addr=…` log line.
pub fn spawn_listening(config: &Path, log: &Path) -> (std::process::Child, String) {
    let mut child = spawn_server(config, 0, log);
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(listening_addr) {
            return (child, format!("http://{addr}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited ({status}) before listening:\n{text}",
                log.display()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} never listened",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in the binary's `listening addr=127.0.0.1:…` log line (colour codes aside).
fn listening_addr(line: &str) -> Option<String> {
    const HOST: &str = "127.0.0.1:";
    let rest = &line[line.find("listening")?..];
    let addr = &rest[rest.find(HOST)?..];
    let port_len = addr[HOST.len()..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(addr.len() - HOST.len());
    Some(addr[..HOST.len() + port_len].to_string())
}

/// Polls `/api/backend` of `base` (300 s at most) until `pred` holds; `what` names the wait.
pub async fn wait_backend(
    base: &str,
    what: &str,
    pred: impl Fn(&app::types::BackendStatus) -> bool,
) -> app::types::BackendStatus {
    let start = Instant::now();
    loop {
        let status: app::types::BackendStatus = reqwest::get(format!("{base}/api/backend"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if pred(&status) {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (60 s at most) until the server answers `/health/live`.
pub async fn wait_live(base: &str) {
    let start = Instant::now();
    while reqwest::get(format!("{base}/health/live")).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (for a server started as its own process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The job's whole record (`/api/jobs/{id}`).
pub async fn job_record(base: &str, id: &str) -> app::jobs::JobRecord {
    reqwest::get(format!("{base}/api/jobs/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The job's form: the portrait, `seconds` of speech, a fixed seed and `steps`.
pub fn fixed_job(seconds: f64, steps: usize) -> reqwest::multipart::Form {
    let audio = reqwest::multipart::Part::bytes(short_speech(seconds)).file_name("a.wav");
    form(file_part(PORTRAIT, "a.png"), audio)
        .text("seed", "7")
        .text("steps", steps.to_string())
}

/// A `nats-server -js` of its own on free loopback ports, its store in a folder of `scratch`;
/// killed when dropped. The test command installs Debian's `nats-server`; `NATS_SERVER` names
/// another binary.
pub struct Nats {
    pub url: String,
    child: std::process::Child,
}

impl Nats {
    pub async fn start(scratch: &Path) -> Self {
        Self::start_with(scratch, &[]).await
    }

    /// [`Self::start`] with more `nats-server` arguments (`--auth TOKEN`, …).
    pub async fn start_with(scratch: &Path, args: &[&str]) -> Self {
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| {
            ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("nats-server")
                .to_string()
        });
        let (port, monitor) = (free_port(), free_port());
        let child = std::process::Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-m", &monitor.to_string()])
            .arg("-sd")
            .arg(scratch.join("jetstream"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): ./scripts/test.sh installs it (apt-get install nats-server)")
            });
        let nats = Self {
            url: format!("nats://127.0.0.1:{port}"),
            child,
        };
        let health = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&health).await
                && r.status().is_success()
            {
                return nats;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nats-server did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
