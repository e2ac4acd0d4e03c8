//! BlazeFace + FaceMesh: parity with the TFLite runtime on the golden astronaut tensors, crop
//! geometry, and detection policy on real photos (fixtures in `tests/fixtures/face/`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use image::RgbImage;
use model::face::blazeface::{BlazeFace, BlazeFaceConfig, FaceDetection};
use model::face::face_mesh::{FaceMesh, FaceMeshConfig, FaceRoi, NUM_LANDMARKS};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/face")
        .join(name)
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("astronaut.safetensors"), &Device::Cpu)
        .expect("golden astronaut tensors")
}

fn blazeface() -> &'static BlazeFace {
    static NET: OnceLock<BlazeFace> = OnceLock::new();
    NET.get_or_init(|| {
        let bytes =
            std::fs::read(fixture("blazeface_short_range.safetensors")).expect("detector weights");
        BlazeFace::from_bytes(&BlazeFaceConfig::short_range(), &bytes, &Device::Cpu)
            .expect("BlazeFace loads")
    })
}

fn face_mesh() -> &'static FaceMesh {
    static NET: OnceLock<FaceMesh> = OnceLock::new();
    NET.get_or_init(|| {
        let bytes = std::fs::read(fixture("face_mesh_468.safetensors")).expect("mesh weights");
        FaceMesh::from_bytes(&FaceMeshConfig::v1(), &bytes, &Device::Cpu).expect("FaceMesh loads")
    })
}

/// Largest absolute difference, asserted against `atol`; returns it for the log.
fn max_abs_diff(what: &str, actual: &Tensor, expected: &Tensor, atol: f32) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let a = actual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let e = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (mut worst, mut at) = (0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let d = (x - y).abs();
        assert!(d.is_finite(), "{what}: non-finite at {i}");
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    println!(
        "{what}: max |diff| = {worst:.3e} at {at} (actual {}, expected {})",
        a[at], e[at]
    );
    assert!(
        worst <= atol,
        "{what}: max |diff| {worst} at {at} exceeds {atol}"
    );
    worst
}

#[test]
fn blazeface_matches_tflite_on_the_stored_input() {
    let g = golden();
    let (regressors, logits) = blazeface().forward(&g["detector.input"]).unwrap();
    max_abs_diff(
        "detector.regressors",
        &regressors,
        &g["detector.regressors"],
        1e-4,
    );
    max_abs_diff("detector.logits", &logits, &g["detector.logits"], 1e-4);
}

#[test]
fn face_mesh_matches_tflite_on_the_stored_input() {
    let g = golden();
    let (landmarks, presence) = face_mesh().forward(&g["mesh.input"]).unwrap();
    max_abs_diff("mesh.landmarks", &landmarks, &g["mesh.landmarks"], 1e-4);
    max_abs_diff(
        "mesh.presence_logit",
        &presence,
        &g["mesh.presence_logit"],
        1e-4,
    );
}
