//! The `hallo2` binary: `frames` regenerates the official final frames from the fixture's
//! prepared tensors; `generate` fetches its weights from the Hub (the fake one, serving the real
//! repository's tree) when no folder is given, and makes the same video as from the folder; a
//! missing weight file is named.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use server::fake_hub::{FakeHub, FakeHubOptions, hub_layout};

const REPO: &str = "fudan-generative-ai/hallo2";

fn hallo2() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hallo2"))
}

fn tiny_yaml() -> std::path::PathBuf {
    repo_root().join("configs/inference/long_tiny.yaml")
}

fn check(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `hallo2 frames` on the tiny weights and the fixture's prepared inputs, the audio given by
/// `audio` (`--audio-features FILE` or `--audio FILE`); returns its output after checking it
/// succeeded.
fn frames(audio: [&std::ffi::OsStr; 2], out: &Path, cache: &Path) -> Output {
    let output = frames_command(audio, out, cache).output().unwrap();
    check(&output);
    output
}

/// The `hallo2 frames` command of [`frames`], to add arguments to.
fn frames_command(audio: [&std::ffi::OsStr; 2], out: &Path, cache: &Path) -> Command {
    let mut command = hallo2();
    command
        .arg("frames")
        .arg("--weights")
        .arg(tiny_weights())
        .arg("--config")
        .arg(tiny_yaml())
        .arg("--inputs")
        .arg(tiny_weights().join("../cases/inputs.safetensors"))
        .args(audio)
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache);
    command
}

#[test]
fn cli_regenerates_the_official_final_video() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("video.safetensors");
    let features = tiny_weights().join("../cases/wav2vec.safetensors");
    frames(
        ["--audio-features".as_ref(), features.as_os_str()],
        &out,
        &out_dir.path().join("cache"),
    );
    let diff = max_abs_diff(&video(&out), &official_final());
    assert!(diff <= 1e-3, "max abs diff {diff}");
}

/// `video` of a `frames` output file.
fn video(path: &Path) -> candle_core::Tensor {
    let mut tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    tensors.remove("video").expect("a `video` tensor")
}

/// The official run's final frames (the fixture's golden case).
fn official_final() -> candle_core::Tensor {
    video(&tiny_weights().join("../cases/pipeline_final.safetensors"))
}

fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .unwrap()
}

/// `frames --audio`: the windows come from the audio file through the tiny wav2vec2 (the
/// feature cache misses, then hits with the same frames), and the frames are the official run's.
#[test]
fn cli_computes_the_audio_windows_from_an_audio_file() {
    let dir = tempfile::tempdir().unwrap();
    let audio = tiny_weights().join("../inputs/driving_audio.wav");
    let out = dir.path().join("video.safetensors");
    let run = || {
        let output = frames(
            ["--audio".as_ref(), audio.as_os_str()],
            &out,
            &dir.path().join("cache"),
        );
        (
            video(&out),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (first, stderr) = run();
    assert!(stderr.contains("(Miss,"), "{stderr}");
    let diff = max_abs_diff(&first, &official_final());
    assert!(diff <= 1e-3, "max abs diff {diff}");
    let (again, stderr) = run();
    assert!(stderr.contains("(Hit,"), "{stderr}");
    assert_eq!(max_abs_diff(&again, &first), 0.0);
}

#[test]
fn cli_names_a_missing_weight_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = hallo2()
        .args(["frames", "--weights", dir.path().to_str().unwrap()])
        .arg("--config")
        .arg(tiny_yaml())
        .args(["--inputs", "x", "--audio-features", "y", "--out", "z"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("net.pth") && stderr.contains("file not found"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_without_a_folder_fetches_the_hub_weights_and_makes_the_same_video() {
    let scratch = tempfile::tempdir().unwrap();
    let md = std::fs::read_to_string(repo_root().join("model/tests/fixtures/hub-layout.md"))
        .expect("reading hub-layout.md");
    let hub = FakeHub::start(FakeHubOptions {
        root: tiny_weights(),
        repo: REPO.into(),
        throttle_bytes_per_s: None,
        interrupt_after: None,
        layout: Some(hub_layout(&md)),
    })
    .await
    .unwrap();
    let hf_cache = scratch.path().join("hf/hub");
    let (endpoint, cache, hub_cache) = (
        hub.endpoint(),
        scratch.path().join("cache"),
        hf_cache.clone(),
    );
    let run = move |weights: Option<&Path>, out: &Path, offline: bool| {
        let mut cmd = hallo2();
        cmd.arg("generate");
        if let Some(dir) = weights {
            cmd.arg("--weights").arg(dir);
        }
        cmd.arg("--config")
            .arg(tiny_yaml())
            .arg("--image")
            .arg(fixture(PORTRAIT))
            .arg("--audio")
            .arg(fixture(SPEECH))
            .arg("--out")
            .arg(out)
            .args(["--seed", "3", "--steps", "1"])
            .arg("--cache-dir")
            .arg(&cache)
            .env("HF_ENDPOINT", &endpoint)
            .env("HF_HUB_CACHE", &hub_cache)
            .env_remove("HF_HOME")
            .env_remove("HF_TOKEN");
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        } else {
            cmd.env_remove("HF_HUB_OFFLINE");
        }
        cmd.output().unwrap()
    };
    let (from_hub, again, from_folder) = tokio::task::spawn_blocking({
        let scratch = scratch.path().to_path_buf();
        move || {
            let hub_mp4 = scratch.join("hub.mp4");
            let fetched = run(None, &hub_mp4, false);
            check(&fetched);
            let stderr = String::from_utf8_lossy(&fetched.stderr).into_owned();
            assert!(stderr.contains("weights: fetching"), "{stderr}");
            // A second run finds everything in the HF cache, even offline.
            let cached_mp4 = scratch.join("cached.mp4");
            let cached = run(None, &cached_mp4, true);
            check(&cached);
            let stderr = String::from_utf8_lossy(&cached.stderr).into_owned();
            assert!(stderr.contains("from the HF cache"), "{stderr}");
            let folder_mp4 = scratch.join("folder.mp4");
            check(&run(Some(&tiny_weights()), &folder_mp4, true));
            (hub_mp4, cached_mp4, folder_mp4)
        }
    })
    .await
    .unwrap();
    let want = decoded_frames(&from_folder);
    assert!(!want.is_empty());
    assert_eq!(decoded_frames(&from_hub), want);
    assert_eq!(decoded_frames(&again), want);
    // The snapshot holds the real repository's paths.
    let snapshots = hf_cache.join("models--fudan-generative-ai--hallo2/snapshots");
    let snapshot = std::fs::read_dir(&snapshots)
        .unwrap()
        .next()
        .expect("one snapshot")
        .unwrap()
        .path();
    assert!(snapshot.join("hallo2/net.pth").is_file());
    assert!(!snapshot.join("pretrained_models").exists());
}

/// A GPU the build cannot open is an error that says why, never a silent CPU run.
#[test]
#[cfg(not(any(feature = "cuda", feature = "metal")))]
fn a_gpu_asked_of_a_cpu_build_is_refused_with_the_reason() {
    let out_dir = tempfile::tempdir().unwrap();
    let features = tiny_weights().join("../cases/wav2vec.safetensors");
    let output = frames_command(
        ["--audio-features".as_ref(), features.as_os_str()],
        &out_dir.path().join("video.safetensors"),
        &out_dir.path().join("cache"),
    )
    .args(["--device", "cuda", "--dtype", "f16"])
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("opening cuda:0") && stderr.contains("--features cuda"),
        "{stderr}"
    );
    assert!(!out_dir.path().join("video.safetensors").exists());
}
