//! `/api/events` over a real bound listener: event ids, `Last-Event-ID` replay, the `retry:`
//! hint, keep-alive comments, and the end of the stream on graceful shutdown.

mod common;

use std::time::Duration;

use app::types::{BackendEvent, BackendState};
use common::*;
use server::Studio;

const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_replays_after_last_event_id_then_keeps_alive_and_ends_on_shutdown() {
    let scratch = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut studio = Studio::start(tiny_config(scratch.path())).unwrap();
    studio.state.keep_alive = Duration::from_millis(300);
    let backend = studio.state.backend.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(studio.serve(listener, async {
        let _ = stop_rx.await;
    }));
    wait_for(&backend, LOAD_TIMEOUT, BackendState::is_ready).await;
    let last_seq = backend.status().last_seq;
    assert!(last_seq > 10, "a load emits many events ({last_seq})");

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/events");

    // A fresh subscriber gets the current state first, with the retry hint.
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut fresh = SseReader::new(resp);
    let first = fresh.next(FRAME_TIMEOUT).await.unwrap();
    assert_eq!(first.event.as_deref(), Some("state"));
    assert_eq!(first.retry, Some(2000));
    assert_eq!(first.id, Some(last_seq.to_string()));
    let event: BackendEvent = serde_json::from_str(&first.data).unwrap();
    assert!(matches!(event, BackendEvent::State(s) if s.state.is_ready()));
    // Nothing happens while ready: keep-alive comments keep the stream open.
    let idle = fresh.next(FRAME_TIMEOUT).await.unwrap();
    assert_eq!(idle.comments, ["keep-alive"], "{idle:?}");

    // Reconnecting after id 3 replays 4..=last_seq, in order, without gaps.
    let resp = client
        .get(&url)
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let mut replay = SseReader::new(resp);
    let mut ids = Vec::new();
    let mut names = Vec::new();
    while ids.last() != Some(&last_seq) {
        let frame = replay.next(FRAME_TIMEOUT).await.unwrap();
        if frame.id.is_none() {
            continue; // keep-alive
        }
        let event: BackendEvent = serde_json::from_str(&frame.data).unwrap();
        assert_eq!(frame.id, Some(event.seq().to_string()));
        assert_eq!(frame.event.as_deref(), Some(event.event_name()));
        if let BackendEvent::Stage(s) = &event {
            names.push(format!("{}:{:?}", s.stage.name(), s.status));
        }
        ids.push(event.seq());
    }
    assert_eq!(ids, (4..=last_seq).collect::<Vec<_>>());
    assert!(names.contains(&"warmup:Done".to_string()), "{names:?}");

    // The page's first connection names its snapshot's last event in the query (EventSource
    // cannot set headers); a `Last-Event-ID` header (a reconnection) wins over it.
    let query = format!("{url}?last_event_id={}", last_seq - 2);
    let mut from_query = SseReader::new(client.get(&query).send().await.unwrap());
    let frame = from_query.next(FRAME_TIMEOUT).await.unwrap();
    assert_eq!(frame.id, Some((last_seq - 1).to_string()));
    let resp = client
        .get(&query)
        .header("Last-Event-ID", (last_seq - 1).to_string())
        .send()
        .await
        .unwrap();
    let frame = SseReader::new(resp).next(FRAME_TIMEOUT).await.unwrap();
    assert_eq!(frame.id, Some(last_seq.to_string()));

    // Graceful shutdown: the stream gets `draining` and ends; the server returns.
    stop_tx.send(()).unwrap();
    let mut saw_draining = false;
    while let Some(frame) = fresh.next(FRAME_TIMEOUT).await {
        if let Ok(BackendEvent::State(s)) = serde_json::from_str::<BackendEvent>(&frame.data) {
            saw_draining |= s.state == BackendState::Draining;
        }
    }
    assert!(saw_draining);
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}
