//! The `hallo2` binary regenerates the official final frames from the fixture's prepared tensors.

mod common;

use std::process::Command;

#[test]
fn cli_regenerates_the_official_final_video() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("video.safetensors");
    let cases = common::tiny_dir().join("cases");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO_BIN_EXE_hallo2"))
        .arg("frames")
        .arg("--weights")
        .arg(common::tiny_weights())
        .arg("--config")
        .arg(root.join("configs/inference/long_tiny.yaml"))
        .arg("--inputs")
        .arg(cases.join("inputs.safetensors"))
        .arg("--audio-features")
        .arg(cases.join("wav2vec.safetensors"))
        .arg("--out")
        .arg(&out)
        .arg("--cache-dir")
        .arg(out_dir.path().join("cache"))
        .status()
        .unwrap();
    assert!(status.success());
    let video = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let expected = common::case("pipeline_final");
    common::assert_close(
        "cli video",
        &video["video"],
        common::get(&expected, "video"),
        1e-3,
        0.0,
    );
}

#[test]
fn cli_names_a_missing_weight_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hallo2"))
        .args(["frames", "--weights", dir.path().to_str().unwrap()])
        .arg("--config")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs/inference/long_tiny.yaml"),
        )
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
