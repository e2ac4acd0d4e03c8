//! Which device the model loads on, seen as a user sees it: a GPU asked for by name that does not
//! open fails the load with the reason (never a quiet CPU run of hours), and `device = "auto"`
//! that runs on the CPU says why in the log, in `/api/backend` and in the page. Run with a build
//! that has no GPU support (the tests' build); a CUDA build on a GPU machine would open it.

#![cfg(not(any(feature = "cuda", feature = "metal")))]

mod common;

use std::path::Path;

use app::types::{BackendState, BackendStatus, LoadStage};
use common::*;

/// Starts the binary on the tiny profile with `device`, logging to `<scratch>/<device>.log`.
fn start(scratch: &Path, device: &str) -> (std::process::Child, String, std::path::PathBuf) {
    let root = repo_root();
    let dir = scratch.join(device);
    let toml = format!(
        "bind = \"127.0.0.1:0\"\nload = \"eager\"\ndevice = {device:?}\n\
         inference = {:?}\ncache_dir = {:?}\nlog_dir = {:?}\ndata_dir = {:?}\n\
         [weights]\nsource = \"local\"\npath = {:?}\n[warmup]\nenabled = false\n",
        root.join("configs/inference/long_tiny.yaml"),
        dir.join("cache"),
        dir.join("logs"),
        dir.join("data"),
        tiny_weights(),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("studio.toml");
    std::fs::write(&config, toml).unwrap();
    let log = dir.join("server.log");
    let (child, base) = spawn_listening(&config, &log);
    (child, base, log)
}

/// Waits until the load has ended (ready or failed).
async fn loaded(base: &str) -> BackendStatus {
    wait_backend(base, "the load to end", |s| {
        matches!(
            s.state,
            BackendState::Ready { .. } | BackendState::Failed { .. }
        )
    })
    .await
}

async fn page(base: &str) -> String {
    reqwest::get(format!("{base}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_asked_of_a_cpu_build_fails_the_load_with_the_reason() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut child, base, log) = start(scratch.path(), "cuda");
    let status = loaded(&base).await;
    let BackendState::Failed { stage, error, hint } = &status.state else {
        panic!("a CPU build asked for cuda must not run: {status:?}");
    };
    assert_eq!(*stage, LoadStage::Resolve);
    assert!(error.contains("cuda:0 did not open"), "{error}");
    assert!(hint.contains("./scripts/run.sh --gpu"), "{hint}");
    let html = page(&base).await;
    assert!(html.contains("cuda:0 did not open"), "the page shows why");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cuda:0 did not open"),
        "the log says why:\n{text}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_on_a_cpu_build_runs_on_the_cpu_and_says_why() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut child, base, log) = start(scratch.path(), "auto");
    let status = loaded(&base).await;
    let BackendState::Ready {
        device,
        device_note,
        ..
    } = &status.state
    else {
        panic!("auto loads on the CPU: {status:?}");
    };
    assert_eq!(device, "cpu");
    let note = device_note
        .as_deref()
        .expect("auto says why it is on the CPU");
    assert!(
        note.contains("fell back to the CPU") && note.contains("no GPU support"),
        "{note}"
    );
    let resolve = status
        .stages
        .iter()
        .find(|s| s.stage == LoadStage::Resolve)
        .unwrap();
    assert!(
        resolve.message.as_deref().is_some_and(|m| m.contains(note)),
        "the load stage says it too: {resolve:?}"
    );
    let html = page(&base).await;
    assert!(
        html.contains("id=\"device-note\""),
        "the status panel shows it"
    );
    assert!(html.contains("fell back to the CPU"), "{html}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("fell back to the CPU")),
        "the log warns:\n{text}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
