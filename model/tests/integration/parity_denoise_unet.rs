//! Denoising UNet3D (hallo2 `UNet3DConditionModel`, training-mode block path, reference-bank
//! reader) against the official code.
//!
//! `denoise_unet_clip<i>_step0.safetensors` hold every argument of the denoising-UNet call at
//! step 0 of each recorded clip of the tiny pipeline run and its `output`; the bank it read is
//! the matching `ref_unet_clip<i>.safetensors` bank (`bank.NN` in reader pairing order), which
//! the official reader stored as f16. `denoise_unet_clip0_step0_intermediates.safetensors` holds the
//! outputs of the sub-modules during the clip-0 call (time embedding, conv_in, each block, each
//! audio/motion module's input and output, the output head), to localise any difference.
use crate::common::{FixtureSet, assert_close, for_each_set, get};
use crate::parity_ref_unet::{bank_order, clip_cases};

use std::collections::HashMap;

use candle_core::Tensor;
use model::mutual_self_attention::{BankEntry, ReaderBank, ReferenceBank};
use model::pipeline::Guidance;
use model::unet_3d::{AudioMasks, Observer, UNet3DConditionModel, UNet3DConditions};

/// The writer bank of `ref_case`, rebuilt from its `bank.NN` tensors and the set's pairing
/// order (already sorted by width, so the stable sort keeps it).
fn fixture_bank(set: &FixtureSet, ref_case: &HashMap<String, Tensor>) -> ReferenceBank {
    let entries = bank_order(set)
        .into_iter()
        .enumerate()
        .map(|(k, (writer, _))| {
            let features = get(ref_case, &format!("bank.{k:02}")).clone();
            let width = features.dim(2).unwrap();
            BankEntry {
                path: writer,
                width,
                features,
            }
        })
        .collect();
    ReferenceBank { entries }
}

/// The `<kind>_mask.<level>` tensors of a case, every level it has.
pub fn mask_levels(case: &HashMap<String, Tensor>, kind: &str) -> Vec<Tensor> {
    let levels: Vec<Tensor> = (0..)
        .map_while(|l| case.get(&format!("{kind}_mask.{l}")).cloned())
        .collect();
    assert!(!levels.is_empty(), "the case has no {kind}_mask.0");
    levels
}

/// The UNet call of clip `clip` at step 0, from the recorded arguments and bank.
fn run(set: &FixtureSet, clip: usize, observer: Option<Observer>) -> Tensor {
    let case = set.case(&format!("denoise_unet_clip{clip}_step0"));
    let ref_case = set.case(&format!("ref_unet_clip{clip}"));
    let unet = UNet3DConditionModel::new(
        &set.model_config().denoising_unet,
        set.net_vb().pp("denoising_unet"),
    )
    .unwrap();
    let guided = Guidance::new(set.inference().cfg_scale).enabled();
    let reference =
        ReaderBank::new(&fixture_bank(set, &ref_case), &unet.reader_blocks(), guided).unwrap();
    let scale = get(&case, "motion_scale").to_vec1::<f32>().unwrap();
    let conditions = UNet3DConditions {
        encoder_hidden_states: get(&case, "encoder_hidden_states").clone(),
        audio_embedding: get(&case, "audio_embedding").clone(),
        mask_cond_fea: Some(get(&case, "mask_cond_fea").clone()),
        masks: AudioMasks {
            full: mask_levels(&case, "full"),
            face: mask_levels(&case, "face"),
            lip: mask_levels(&case, "lip"),
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
    for_each_set(clip0_intermediates);
}

fn clip0_intermediates(set: &FixtureSet) {
    let expected = set.case("denoise_unet_clip0_step0_intermediates");
    let mut seen: Vec<String> = Vec::new();
    // (name, max abs diff, bound): 1e-4 at unit scale, relative to the tensor's peak above it
    // (f32 rounding grows with the magnitude, and the chained run accumulates it).
    let mut diffs: Vec<(String, f32, f32)> = Vec::new();
    let mut observer = |name: &str, xs: &Tensor| {
        let Some(want) = expected.get(name) else {
            return;
        };
        seen.push(name.to_string());
        let max_abs = |t: &Tensor| {
            t.abs()
                .and_then(|d| d.flatten_all())
                .and_then(|d| d.max(0))
                .and_then(|d| d.to_scalar::<f32>())
                .unwrap_or(f32::INFINITY)
        };
        let diff = (xs - want).map(|d| max_abs(&d)).unwrap_or(f32::INFINITY);
        let bound = 1e-4 * max_abs(want).max(1.0);
        eprintln!("{name}: max abs diff {diff:e} (bound {bound:e})");
        diffs.push((name.to_string(), diff, bound));
    };
    // Intermediates first (the output check inside `run` would hide where a difference starts).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(set, 0, Some(&mut observer))
    }));
    for (name, diff, bound) in &diffs {
        assert!(diff <= bound, "{name}: max abs diff {diff:e} > {bound:e}");
    }
    let mut missing: Vec<&String> = expected.keys().filter(|k| !seen.contains(k)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "intermediates never reported: {missing:?}"
    );
    assert!(result.is_ok(), "clip 0 output differs");
}

/// Every recorded step-0 call (one per recorded clip).
#[test]
fn denoise_unet_every_recorded_clip() {
    for_each_set(|set| {
        for clip in 0..clip_cases(set, "denoise_unet_clip", "_step0").len() {
            run(set, clip, None);
        }
    });
}
