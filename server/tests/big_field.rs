//! A 100 MB text field is answered 413 (read to its end, so the client gets the answer) without
//! the server keeping it: the process's peak RSS grows by a few MB at most. Its own test binary,
//! so nothing else runs in the process while the peak is measured.

mod common;

use bytes::Bytes;
use common::*;
use server::config::LoadMode;

/// (current, peak) resident set of this process, bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
                    * 1024
            })
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_text_field_gets_413_without_the_server_keeping_it() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.load = LoadMode::Lazy;
    config.data_dir = scratch.path().join("data");
    let s = serve(config).await;
    // Warm up the connection pool and the handlers before measuring.
    let resp = reqwest::get(format!("{}/health/live", s.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    const FIELD: usize = 100 << 20;
    const CHUNK: usize = 64 << 10;
    let head = "--B\r\nContent-Disposition: form-data; name=\"steps\"\r\n\r\n";
    let tail = "\r\n--B--\r\n";
    let chunk = Bytes::from(vec![b'7'; CHUNK]);
    let parts = std::iter::once(Bytes::from_static(head.as_bytes()))
        .chain(std::iter::repeat_n(chunk, FIELD / CHUNK))
        .chain(std::iter::once(Bytes::from_static(tail.as_bytes())))
        .map(Ok::<_, std::io::Error>);
    let body = reqwest::Body::wrap_stream(futures::stream::iter(parts));

    // Reset the peak (Linux: 5 → clear_refs resets VmHWM), then send. Where the kernel does
    // not allow that, the resident set after the request is compared instead.
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let (before, _) = rss();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/inference/hallo2", s.base))
        .header("content-type", "multipart/form-data; boundary=B")
        .body(body)
        .send()
        .await
        .expect("the answer, not a reset connection");
    assert_eq!(resp.status(), 413);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["field"], "steps", "{answer}");
    let (now, peak) = rss();
    let grew = if peak_reset { peak } else { now }.saturating_sub(before);
    println!("peak RSS grew by {:.1} MB", grew as f64 / 1e6);
    assert!(grew < 16_000_000, "peak RSS grew by {grew} bytes");
}
