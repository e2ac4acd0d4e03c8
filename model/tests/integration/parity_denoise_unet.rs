//! Denoising UNet3D (hallo2 `UNet3DConditionModel`, training-mode block path, reference-bank
//! reader) against the official code.
//!
//! `denoise_unet_clip{0,1}_step0.safetensors` hold every argument of the denoising-UNet call at
//! step 0 of each clip of the tiny pipeline run and its `output`; the bank it read is the
//! matching `ref_unet_clip*.safetensors` bank (`bank.00..09` in reader pairing order), which the
//! official reader stored as f16. `denoise_unet_clip0_step0_intermediates.safetensors` holds the
//! outputs of the sub-modules during the clip-0 call (time embedding, conv_in, each block, each
//! audio/motion module's input and output, the output head), to localise any difference.
use crate::common;

use std::collections::HashMap;

use candle_core::Tensor;
use common::{assert_close, case, get, tiny_dir, tiny_net_vb, tiny_weights};
use model::mutual_self_attention::{BankEntry, ReaderBank, ReferenceBank};
use model::unet_2d::UNet2DConditionConfig;
use model::unet_3d::{
    AudioMasks, Observer, UNet3DAdditionalKwargs, UNet3DConditionConfig, UNet3DConditionModel,
    UNet3DConditions,
};

fn tiny_config() -> UNet3DConditionConfig {
    #[derive(serde::Deserialize)]
    struct InferenceYaml {
        unet_additional_kwargs: UNet3DAdditionalKwargs,
    }
    let unet: UNet2DConditionConfig = serde_json::from_slice(
        &std::fs::read(tiny_weights().join("stable-diffusion-v1-5/unet/config.json")).unwrap(),
    )
    .unwrap();
    let yaml: InferenceYaml = serde_yaml::from_str(
        &std::fs::read_to_string(tiny_dir().join("config/long_tiny.yaml")).unwrap(),
    )
    .unwrap();
    UNet3DConditionConfig {
        unet,
        unet_additional_kwargs: yaml.unet_additional_kwargs,
    }
}

/// The writer bank of `ref_case`, rebuilt from its `bank.NN` tensors and the fixture's pairing
/// order (already sorted by width, so the stable sort keeps it).
fn fixture_bank(ref_case: &HashMap<String, Tensor>) -> ReferenceBank {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny_dir().join("config/tiny_config.json")).unwrap())
            .unwrap();
    let entries = json["bank_order_writer_to_reader"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, pair)| {
            let features = get(ref_case, &format!("bank.{k:02}")).clone();
            let width = features.dim(2).unwrap();
            BankEntry {
                path: pair[0].as_str().unwrap().to_string(),
                width,
                features,
            }
        })
        .collect();
    ReferenceBank { entries }
}

fn run(clip: usize, observer: Option<Observer>) -> Tensor {
    let case = case(&format!("denoise_unet_clip{clip}_step0"));
    let ref_case = common::case(&format!("ref_unet_clip{clip}"));
    let unet =
        UNet3DConditionModel::new(&tiny_config(), tiny_net_vb().pp("denoising_unet")).unwrap();
    let reference = ReaderBank::new(&fixture_bank(&ref_case), &unet.reader_blocks(), true).unwrap();
    let masks = |kind: &str| {
        (0..4)
            .map(|l| get(&case, &format!("{kind}_mask.{l}")).clone())
            .collect()
    };
    let scale = get(&case, "motion_scale").to_vec1::<f32>().unwrap();
    let conditions = UNet3DConditions {
        encoder_hidden_states: get(&case, "encoder_hidden_states").clone(),
        audio_embedding: get(&case, "audio_embedding").clone(),
        mask_cond_fea: Some(get(&case, "mask_cond_fea").clone()),
        masks: AudioMasks {
            full: masks("full"),
            face: masks("face"),
            lip: masks("lip"),
        },
        motion_scale: [scale[0] as f64, scale[1] as f64, scale[2] as f64],
        reference,
    };
    let timestep = get(&case, "timestep").to_vec1::<i64>().unwrap()[0] as f64;
    let sample = get(&case, "sample");
    let output = match observer {
        Some(observer) => unet.forward_observed(sample, timestep, &conditions, observer),
        None => unet.forward(sample, timestep, &conditions),
    }
    .unwrap();
    assert_close(
        &format!("clip {clip} output"),
        &output,
        get(&case, "output"),
        1e-4,
        0.0,
    );
    output
}

#[test]
fn denoise_unet_clip0_intermediates() {
    let expected = case("denoise_unet_clip0_step0_intermediates");
    let mut seen: Vec<String> = Vec::new();
    let mut diffs: Vec<(String, f32)> = Vec::new();
    let mut observer = |name: &str, xs: &Tensor| {
        let Some(want) = expected.get(name) else {
            return;
        };
        seen.push(name.to_string());
        let diff = (xs - want)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0));
        let diff = diff
            .and_then(|d| d.to_scalar::<f32>())
            .unwrap_or(f32::INFINITY);
        eprintln!("{name}: max abs diff {diff:e}");
        diffs.push((name.to_string(), diff));
    };
    // Intermediates first (the output check inside `run` would hide where a difference starts).
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(0, Some(&mut observer))));
    for (name, diff) in &diffs {
        assert!(*diff <= 1e-4, "{name}: max abs diff {diff:e} > 1e-4");
    }
    let mut missing: Vec<&String> = expected.keys().filter(|k| !seen.contains(k)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "intermediates never reported: {missing:?}"
    );
    assert!(result.is_ok(), "clip 0 output differs");
}

#[test]
fn denoise_unet_clip0() {
    run(0, None);
}

#[test]
fn denoise_unet_clip1() {
    run(1, None);
}
