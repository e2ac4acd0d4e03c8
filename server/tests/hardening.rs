//! Hostile files, overload and slow clients through the real HTTP server: each is refused with
//! its 4xx, and the studio goes on serving.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use reqwest::multipart::{Form, Part};
use server::config::{LoadMode, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn lazy_config(scratch: &std::path::Path) -> ServerConfig {
    let mut config = tiny_config(scratch);
    config.load = LoadMode::Lazy;
    config.data_dir = scratch.join("data");
    config
}

fn hostile_dir() -> std::path::PathBuf {
    fixture("speech/hostile")
}

async fn alive(base: &str) {
    let resp = reqwest::get(format!("{base}/health/live")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn audio_files_declaring_huge_quantities_get_a_4xx_and_the_studio_lives() {
    let scratch = tempfile::tempdir().unwrap();
    let s = serve(lazy_config(scratch.path())).await;
    let http = reqwest::Client::new();
    let mut names: Vec<_> = std::fs::read_dir(hostile_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in &names {
        let bytes = std::fs::read(hostile_dir().join(name)).unwrap();
        for path in ["/api/preflight/audio", "/api/v1/inference/hallo2"] {
            let mut form = Form::new().part(
                "audio_file",
                Part::bytes(bytes.clone()).file_name(name.clone()),
            );
            if path.ends_with("hallo2") {
                let portrait = std::fs::read(fixture(PORTRAIT)).unwrap();
                form = form.part("image_file", Part::bytes(portrait).file_name("p.png"));
            }
            let resp = http
                .post(format!("{}{path}", s.base))
                .multipart(form)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap();
            assert!(status.is_client_error(), "{name} {path}: {status} {body}");
            assert_eq!(body["field"], "audio_file", "{name} {path}: {body}");
        }
        alive(&s.base).await;
    }
    assert!(s.studio_state.jobs.list().is_empty());
    let metrics = metrics_text(&s.base).await;
    assert!(
        metrics.contains("hallo_refusals_total{kind=\"audio_too_long\"}"),
        "{metrics}"
    );
}

/// A streamed request body: the first bytes, then whatever the returned sender sends.
fn held_body(first: Vec<u8>) -> (tokio::sync::mpsc::Sender<Bytes>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let head = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(first))]);
    let rest = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    );
    (
        tx,
        reqwest::Body::wrap_stream(futures::StreamExt::chain(head, rest)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_beyond_the_concurrency_limit_gets_429_with_retry_after() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = lazy_config(scratch.path());
    config.limits.heavy_requests = 1;
    let s = serve(config).await;
    // The first pre-flight holds the one permit while its upload is still arriving.
    let boundary = "XhardeningX";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"audio_file\"; filename=\"a.wav\"\r\n\r\nRIFF"
    );
    let (more, body) = held_body(head.into_bytes());
    let url = format!("{}/api/preflight/audio", s.base);
    let first = tokio::spawn(
        reqwest::Client::new()
            .post(&url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send(),
    );
    // Until the first request holds the permit (however loaded the machine).
    let waiting = Instant::now();
    while s.studio_state.heavy.available_permits() > 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the first pre-flight never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let speech = std::fs::read(fixture(SPEECH)).unwrap();
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(&url)
        .multipart(Form::new().part("audio_file", Part::bytes(speech.clone()).file_name("s.wav")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(started.elapsed() >= server::service::HEAVY_WAIT);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "busy", "{body}");
    alive(&s.base).await;

    // The first one ends (a cut-off WAV): the permit is free again.
    more.send(Bytes::from(format!("\r\n--{boundary}--\r\n")))
        .await
        .unwrap();
    drop(more);
    let resp = first.await.unwrap().unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let resp = reqwest::Client::new()
        .post(&url)
        .multipart(Form::new().part("audio_file", Part::bytes(speech).file_name("s.wav")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Reads what the server sends until it closes the connection (or `limit` passes).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_read_timeout() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = lazy_config(scratch.path());
    config.limits.read_timeout_s = 1.0;
    let s = serve(config).await;
    let addr = s.base.trim_start_matches("http://").to_string();

    // Headers that never end.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"POST /api/preflight/audio HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{answer}");

    // A body that stops arriving: 408, then the connection closes.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /api/preflight/audio HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n\
        --B\r\nContent-Disposition: form-data; name=\"audio_file\"; filename=\"a.wav\"\r\n\r\nRIFF";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("read_timeout"), "{answer}");
    alive(&s.base).await;
}

#[tokio::test]
async fn forms_with_too_many_fields_or_a_long_text_field_are_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let s = serve(lazy_config(scratch.path())).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/inference/hallo2", s.base);
    let long = "1".repeat(server::jobs::upload::TEXT_FIELD_BYTES + 1);
    let resp = http
        .post(&url)
        .multipart(Form::new().text("steps", long))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["kind"], &body["field"]),
        (&"too_large".into(), &"steps".into())
    );
    let mut form = Form::new();
    for _ in 0..=server::jobs::upload::MAX_FIELDS {
        form = form.text("seed", "1");
    }
    let resp = http.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "bad_form", "{body}");
    assert!(s.studio_state.jobs.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_midway_leaves_no_files() {
    let scratch = tempfile::tempdir().unwrap();
    let s = serve(lazy_config(scratch.path())).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let portrait = std::fs::read(fixture(PORTRAIT)).unwrap();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/inference/hallo2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\n\r\n\
         --B\r\nContent-Disposition: form-data; name=\"image_file\"; filename=\"p.png\"\r\n\r\n",
        portrait.len() * 2
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&portrait[..portrait.len() / 2])
        .await
        .unwrap();
    // The job's folder exists while the upload streams in.
    let jobs_dir = scratch.path().join("data/jobs");
    let entries = || std::fs::read_dir(&jobs_dir).unwrap().count();
    let started = Instant::now();
    while entries() == 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(entries(), 1, "the upload is being stored");
    drop(stream);
    let started = Instant::now();
    while entries() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "left behind: {:?}",
            std::fs::read_dir(&jobs_dir).unwrap().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.studio_state.jobs.list().is_empty());
    alive(&s.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_weights_conversion_is_pruned_and_the_one_in_use_stays() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    config.limits.weights_cache_bytes = 0;
    // What an older net.pth (or another dtype) left behind, last used a day ago.
    let pth_cache = config.cache_dir.join(server::worker::PTH_CACHE_DIR);
    std::fs::create_dir_all(&pth_cache).unwrap();
    let stale = pth_cache.join("net-00000000000000000000000000000000-f16.safetensors");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    std::fs::File::options()
        .append(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(86_400))
        .unwrap();
    let s = serve(config).await;
    wait_for(&s.studio_state.backend, Duration::from_secs(300), |st| {
        st.name() == "ready"
    })
    .await;
    let left: Vec<_> = std::fs::read_dir(&pth_cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!stale.exists(), "{left:?}");
    assert_eq!(left.len(), 1, "the conversion in use stays: {left:?}");
    assert!(left[0].ends_with("-f32.safetensors"), "{left:?}");
}
