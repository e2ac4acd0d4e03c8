//! The official noise: `torch.manual_seed(42)` once, then per clip `torch.rand(H, W)` (motion-frame
//! mask) and the initial latents from diffusers' `randn_tensor`, all from the same generator.

use crate::common::{self, FixtureSet, for_each_set};

use candle_core::Tensor;
use common::get;
use model::torch_rng::TorchGenerator;

/// Largest |a − b| over all elements (both must have the same shape).
fn max_abs_diff(what: &str, actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape differs");
    let a = actual
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("actual");
    let e = expected
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("expected");
    let d = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    eprintln!("{what}: max abs diff {d:e}");
    d
}

#[test]
fn the_seed_reproduces_every_clip_exactly() {
    for_each_set(|set| every_clip(set).unwrap());
}

fn every_clip(set: &FixtureSet) -> candle_core::Result<()> {
    let params = set.inference().generation_params();
    let mut generator = TorchGenerator::seed(params.seed);
    let clips = pipeline_clips(set);
    assert!(clips >= 2, "the set records several clips");
    for clip in 0..clips {
        let fixture = set.case(&format!("pipeline_clip{clip}"));
        let expected_mask = get(&fixture, "motion_rand_mask");
        let expected_latents = get(&fixture, "initial_latents");

        let mask = generator.rand(expected_mask.shape())?;
        let latents = generator.randn(expected_latents.shape())?;

        let d_mask = max_abs_diff(
            &format!("clip{clip} motion_rand_mask"),
            &mask,
            expected_mask,
        );
        let d_latents = max_abs_diff(
            &format!("clip{clip} initial_latents"),
            &latents,
            expected_latents,
        );
        assert_eq!(d_mask, 0.0, "clip {clip}: motion_rand_mask differs");
        assert_eq!(d_latents, 0.0, "clip {clip}: initial_latents differ");
    }
    Ok(())
}

/// How many `pipeline_clip<i>` cases the set has.
pub fn pipeline_clips(set: &FixtureSet) -> usize {
    (0..)
        .take_while(|i| set.has_case(&format!("pipeline_clip{i}")))
        .count()
}
