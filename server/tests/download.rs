//! The Hub source against the fake hub (the Hub's file API on 127.0.0.1, serving the real
//! repository's tree of `hub-layout.md` with the tiny weights in it): exactly the files inference
//! needs are fetched, from the real repository's paths; bytes progress in `download` events,
//! resuming after an interrupted transfer, the standard HF cache layout, and an offline second
//! start from that cache.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use app::types::{BackendEvent, BackendState, LoadStage, StageStatus};
use common::*;
use server::Studio;
use server::config::WeightsSource;
use server::fake_hub::{FAKE_COMMIT, FakeHub, FakeHubOptions, hub_layout};

const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
const REPO: &str = "fudan-generative-ai/hallo2";
/// The first transfer of each file is cut after this many bytes.
const CUT: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_from_the_hub_api_with_progress_and_resumes_after_a_cut() {
    let scratch = tempfile::tempdir().unwrap();
    let layout = real_layout();
    let hub = FakeHub::start(FakeHubOptions {
        root: tiny_weights(),
        repo: REPO.into(),
        throttle_bytes_per_s: None,
        interrupt_after: Some(CUT),
        layout: Some(layout.clone()),
    })
    .await
    .unwrap();
    let hf_cache = scratch.path().join("hf/hub");
    let mut config = tiny_config(scratch.path());
    config.weights.source = WeightsSource::Hub;
    config.weights.path = None;
    config.weights.repo = REPO.into();
    config.weights.endpoint = Some(hub.endpoint());
    config.weights.hf_cache = Some(hf_cache.clone());
    config.weights.offline = Some(false);
    config.event_buffer = 8192;

    let studio = Studio::start(config.clone()).unwrap();
    assert!(studio.state.backend.stages().contains(&LoadStage::Download));
    let state = wait_for(&studio.state.backend, LOAD_TIMEOUT, |s| {
        matches!(s, BackendState::Ready { .. } | BackendState::Failed { .. })
    })
    .await;
    assert!(state.is_ready(), "{state:?}");

    // Download events carry the file and its bytes; each file ends complete.
    let events = studio.state.backend.subscribe(Some(0)).replay;
    let downloads: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BackendEvent::Stage(s) if s.stage == LoadStage::Download => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(downloads.first().unwrap().status, StageStatus::Started);
    assert_eq!(downloads.last().unwrap().status, StageStatus::Done);
    let net = std::fs::metadata(tiny_weights().join("hallo2/net.pth"))
        .unwrap()
        .len();
    let net_events: Vec<_> = downloads
        .iter()
        .filter_map(|s| s.file.as_ref().filter(|f| f.name == "hallo2/net.pth"))
        .collect();
    assert!(net_events.len() >= 3, "{net_events:?}");
    assert!(net_events.iter().all(|f| f.total == net));
    assert_eq!(net_events.last().unwrap().done, net);
    // The stage's own bytes are all files together.
    let last = downloads.last().unwrap();
    assert!(last.bytes_total.unwrap() > net, "{last:?}");
    assert_eq!(last.bytes_done, last.bytes_total);
    let progress: Vec<f32> = downloads
        .iter()
        .filter(|s| s.status == StageStatus::Progress)
        .map(|s| s.progress)
        .collect();
    assert!(progress.iter().all(|p| (0.0..=1.0).contains(p)));
    assert_eq!(*progress.last().unwrap(), 1.0);

    // Exactly the files inference reads were fetched, each from a path the real repository has,
    // and every request was answered (no 404: no path outside the real tree was asked for).
    let requests = hub.requests();
    let fetched: BTreeSet<&str> = requests
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.as_str())
        .collect();
    let required = server::worker::files_for(&config);
    let expected: BTreeSet<&str> = required.iter().map(String::as_str).collect();
    assert_eq!(fetched, expected, "{requests:#?}");
    assert!(fetched.iter().all(|p| layout.iter().any(|l| l == p)));
    assert!(
        requests.iter().all(|r| r.status == 200 || r.status == 206),
        "{requests:#?}"
    );

    // net.pth was cut at CUT bytes and resumed with a Range request from there.
    let net_gets: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == "hallo2/net.pth")
        .collect();
    assert_eq!(net_gets.len(), 2, "{requests:#?}");
    assert_eq!(net_gets[0].range, None);
    // It resumes from the bytes that reached the disk (the last chunk before the cut may be
    // lost with the connection), never from 0.
    let resumed_at: u64 = net_gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap_or_else(|| panic!("{:?}", net_gets[1]));
    assert!(resumed_at > 0 && resumed_at <= CUT, "{resumed_at}");
    assert_eq!(net_gets[1].status, 206);

    // The standard HF cache layout, byte-identical to the source.
    let repo_dir = hf_cache.join("models--fudan-generative-ai--hallo2");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main"))
            .unwrap()
            .trim(),
        FAKE_COMMIT
    );
    let snapshot = repo_dir.join("snapshots").join(FAKE_COMMIT);
    for f in server::worker::files_for(&config) {
        assert_eq!(
            std::fs::read(snapshot.join(&f)).unwrap(),
            std::fs::read(tiny_weights().join(&f)).unwrap(),
            "{f}"
        );
    }
    assert!(std::fs::read_dir(repo_dir.join("blobs")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".incomplete")
    }));

    // A second start, offline: everything comes from the cache, no request reaches the hub.
    let before = hub.requests().len();
    config.weights.offline = Some(true);
    let second = Studio::start(config).unwrap();
    let state = wait_for(&second.state.backend, LOAD_TIMEOUT, |s| {
        matches!(s, BackendState::Ready { .. } | BackendState::Failed { .. })
    })
    .await;
    assert!(state.is_ready(), "{state:?}");
    assert_eq!(hub.requests().len(), before);
}

/// The real repository's file list (`hub-layout.md`, copied from ../shared/fixtures).
fn real_layout() -> Vec<String> {
    let md = std::fs::read_to_string(repo_root().join("model/tests/fixtures/hub-layout.md"))
        .expect("reading hub-layout.md");
    hub_layout(&md)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subfolder_the_real_repository_lacks_fails_in_download_naming_the_path() {
    let scratch = tempfile::tempdir().unwrap();
    let hub = FakeHub::start(FakeHubOptions {
        root: tiny_weights(),
        repo: REPO.into(),
        layout: Some(real_layout()),
        ..FakeHubOptions::default()
    })
    .await
    .unwrap();
    let mut config = tiny_config(scratch.path());
    config.weights.source = WeightsSource::Hub;
    config.weights.path = None;
    config.weights.repo = REPO.into();
    config.weights.subfolder = "pretrained_models".into();
    config.weights.endpoint = Some(hub.endpoint());
    config.weights.hf_cache = Some(scratch.path().join("hf/hub"));
    config.weights.offline = Some(false);
    let studio = Studio::start(config).unwrap();
    let state = wait_for(&studio.state.backend, LOAD_TIMEOUT, |s| {
        matches!(s, BackendState::Ready { .. } | BackendState::Failed { .. })
    })
    .await;
    let BackendState::Failed { error, hint, .. } = state else {
        panic!("{state:?}");
    };
    assert!(
        error.contains("pretrained_models/hallo2/net.pth"),
        "{error}"
    );
    assert!(hint.contains("subfolder"), "{hint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_with_an_empty_cache_fails_in_resolve_naming_the_files() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.weights.source = WeightsSource::Hub;
    config.weights.path = None;
    config.weights.endpoint = Some("http://127.0.0.1:9".into());
    config.weights.hf_cache = Some(scratch.path().join("hf/hub"));
    config.weights.offline = Some(true);
    let studio = Studio::start(config).unwrap();
    let state = wait_for(&studio.state.backend, LOAD_TIMEOUT, |s| {
        matches!(s, BackendState::Ready { .. } | BackendState::Failed { .. })
    })
    .await;
    let BackendState::Failed { stage, error, hint } = state else {
        panic!("{state:?}");
    };
    assert_eq!(stage, LoadStage::Resolve);
    assert!(
        error.contains("HF_HUB_OFFLINE") && error.contains("hallo2/net.pth"),
        "{error}"
    );
    assert!(hint.contains("huggingface-cli download"), "{hint}");
}
