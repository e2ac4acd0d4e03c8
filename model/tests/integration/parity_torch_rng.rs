//! The official noise: `torch.manual_seed(42)` once, then per clip `torch.rand(H, W)` (motion-frame
//! mask) and the initial latents from diffusers' `randn_tensor`, all from the same generator.

use crate::common;

use candle_core::Tensor;
use common::{case, get};
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
fn seed_42_reproduces_both_clips_exactly() -> candle_core::Result<()> {
    let mut generator = TorchGenerator::seed(42);
    for clip in 0..2 {
        let fixture = case(&format!("pipeline_clip{clip}"));
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
