//! Helpers shared by the golden-fixture parity tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// `model/tests/fixtures/hallo2-tiny`: the official tiny weights, configs and golden tensors.
pub fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hallo2-tiny")
}

/// The tiny `pretrained_models/` folder (official HF layout).
pub fn tiny_weights() -> PathBuf {
    tiny_dir().join("pretrained_models")
}

/// Loads every tensor of `cases/<name>.safetensors` onto the CPU, integers kept as they are.
pub fn case(name: &str) -> HashMap<String, Tensor> {
    let path = tiny_dir().join("cases").join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading fixture {}: {e}", path.display()))
}

/// Fetches one tensor from a loaded case, with a readable panic when the name is wrong.
pub fn get<'a>(case: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    case.get(name).unwrap_or_else(|| {
        let mut names: Vec<_> = case.keys().collect();
        names.sort();
        panic!("fixture has no tensor {name:?}; it has {names:?}")
    })
}

/// Asserts `|actual − expected| ≤ atol + rtol·|expected|` element-wise and reports the worst
/// element (its flat index and both values) when it does not hold.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, atol: f32, rtol: f32) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape differs");
    let a: Vec<f32> = flat(actual);
    let e: Vec<f32> = flat(expected);
    let mut worst = (0usize, 0f32, f32::NEG_INFINITY);
    let mut max_abs = 0f32;
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let d = (x - y).abs();
        if !d.is_finite() {
            panic!("{what}: non-finite value at {i}: actual {x}, expected {y}");
        }
        max_abs = max_abs.max(d);
        let excess = d - (atol + rtol * y.abs());
        if excess > worst.2 {
            worst = (i, d, excess);
        }
    }
    let (i, d, excess) = worst;
    assert!(
        excess <= 0.0,
        "{what}: max abs diff {max_abs:e}; worst at flat index {i}: actual {} expected {} (diff {d:e}, atol {atol:e}, rtol {rtol:e})",
        a[i],
        e[i]
    );
    eprintln!("{what}: max abs diff {max_abs:e} (atol {atol:e})");
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("flattening a tensor for comparison")
}

/// The tiny official `hallo2/net.pth` (F16 on disk) as an f32 CPU VarBuilder, rooted at the file's
/// top level (use `.pp("denoising_unet")` etc.).
pub fn tiny_net_vb() -> candle_nn::VarBuilder<'static> {
    let path = tiny_weights().join("hallo2/net.pth");
    candle_nn::VarBuilder::from_pth(&path, DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The tiny official VAE (`sd-vae-ft-mse`, diffusers safetensors) as an f32 CPU VarBuilder.
pub fn tiny_vae_vb() -> candle_nn::VarBuilder<'static> {
    let path = tiny_weights().join("sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
    // SAFETY: fixture files are read-only for the duration of the test.
    unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The tiny inference yaml (`configs/inference/long_tiny.yaml`).
pub fn tiny_inference_config() -> model::config::InferenceConfig {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/inference/long_tiny.yaml");
    model::config::InferenceConfig::from_yaml_file(&path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Loads the tiny model in f32 on the CPU with `model::loader::load`, the `net.pth` cache in
/// `cache`, passing every load event to `on_event`.
pub fn load_tiny_model(
    cache: &std::path::Path,
    on_event: &mut dyn FnMut(model::loader::LoadEvent),
) -> model::loader::LoadedModel {
    let options = model::loader::LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        cache_dir: cache.to_owned(),
    };
    model::loader::load(
        &model::config::WeightsLayout::new(tiny_weights()),
        &tiny_inference_config(),
        &options,
        &mut |event| {
            on_event(event);
            std::ops::ControlFlow::Continue(())
        },
    )
    .unwrap_or_else(|e| panic!("loading the tiny model: {e}"))
}

/// Largest absolute element-wise difference, computed in f64 (0 for empty tensors).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap_or(0.0)
}
