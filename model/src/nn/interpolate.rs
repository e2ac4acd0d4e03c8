//! `torch.nn.functional.interpolate(xs, size, mode="linear", align_corners=...)` on `(b, c, l)`,
//! with the source positions and weights computed as PyTorch 2.2.2's CPU kernel does
//! (`aten/src/ATen/native/UpSample.h`: `area_pixel_compute_scale`,
//! `area_pixel_compute_source_index`, `guard_index_and_lambda`), in f32.

use candle_core::{Result, Tensor};

/// For every output position: the two source indices and their weights `(i0, i1, w0, w1)`.
///
/// - `align_corners`: scale `(l_in − 1)/(l_out − 1)` (0 when `l_out == 1`), source `scale · i`;
/// - otherwise: scale `l_in / l_out`, source `scale · (i + 0.5) − 0.5` clamped at 0;
/// - equal sizes copy (`w0 = 1`).
///
/// `i0 = min(floor(src), l_in − 1)`, `w1 = clamp(src − i0, 0, 1)`, `i1 = i0 + 1` unless `i0` is the
/// last index, `w0 = 1 − w1`.
pub fn linear_source_weights(
    l_in: usize,
    l_out: usize,
    align_corners: bool,
) -> Vec<(usize, usize, f32, f32)> {
    if l_in == l_out {
        return (0..l_out).map(|i| (i, i, 1.0, 0.0)).collect();
    }
    let scale: f32 = if align_corners {
        if l_out > 1 {
            (l_in - 1) as f32 / (l_out - 1) as f32
        } else {
            0.0
        }
    } else {
        l_in as f32 / l_out as f32
    };
    (0..l_out)
        .map(|i| {
            let src = if align_corners {
                scale * i as f32
            } else {
                (scale * (i as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(l_in - 1);
            let w1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < l_in - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - w1, w1)
        })
        .collect()
}

/// Linear interpolation of `xs (b, c, l_in)` along its last axis to `size` samples:
/// `out[.., i] = fma(xs[.., i0], w0, xs[.., i1]·w1)` with the positions of
/// [`linear_source_weights`]. PyTorch's CPU kernel is built with FMA contraction: the first
/// product is fused into the sum (one rounding fewer than `a·w0 + b·w1`; it moves a few values
/// by one ulp, which the golden tensors show). Computed in f32 on the host (the tensors it is
/// used for are a few MB), returned on `xs`'s device in its dtype.
pub fn interpolate_linear(xs: &Tensor, size: usize, align_corners: bool) -> Result<Tensor> {
    let (b, c, l_in) = xs.dims3()?;
    if l_in == 0 || size == 0 {
        candle_core::bail!("interpolate_linear: cannot resample {l_in} samples to {size}")
    }
    let table = linear_source_weights(l_in, size, align_corners);
    let host = xs
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(b * c * size);
    for row in host.chunks_exact(l_in) {
        out.extend(
            table
                .iter()
                .map(|&(i0, i1, w0, w1)| row[i0].mul_add(w0, row[i1] * w1)),
        );
    }
    Tensor::from_vec(out, (b, c, size), &candle_core::Device::Cpu)?
        .to_dtype(xs.dtype())?
        .to_device(xs.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(values: &[f32], size: usize, align_corners: bool) -> Vec<f32> {
        let xs = Tensor::from_vec(values.to_vec(), (1, 1, values.len()), &Device::Cpu).unwrap();
        interpolate_linear(&xs, size, align_corners)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn assert_all_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((a - e).abs() <= 1e-6, "at {i}: {a} vs {e} ({actual:?})");
        }
    }

    #[test]
    fn align_corners_keeps_both_ends_and_spaces_evenly() {
        // 3 → 5: positions 0, 0.5, 1, 1.5, 2.
        assert_all_close(
            &run(&[0.0, 10.0, 30.0], 5, true),
            &[0.0, 5.0, 10.0, 20.0, 30.0],
        );
        // 4 → 3: positions 0, 1.5, 3 (downsampling).
        assert_all_close(&run(&[1.0, 2.0, 4.0, 8.0], 3, true), &[1.0, 3.0, 8.0]);
        // 15 CNN frames → 8 video frames (the tiny fixture's sizes): scale 2, every other frame.
        let ramp: Vec<f32> = (0..15).map(|i| (i * i) as f32).collect();
        let expected: Vec<f32> = (0..8).map(|i| ((2 * i) * (2 * i)) as f32).collect();
        assert_all_close(&run(&ramp, 8, true), &expected);
        // One output frame takes the first input frame.
        assert_all_close(&run(&[7.0, 9.0], 1, true), &[7.0]);
        // Equal sizes copy.
        assert_all_close(&run(&[3.0, -1.0, 2.0], 3, true), &[3.0, -1.0, 2.0]);
    }

    #[test]
    fn half_pixel_mode_clamps_at_the_start() {
        // 2 → 4: positions −0.25 → 0, 0.25, 0.75, 1.25 → last index with w1 clamped.
        assert_all_close(&run(&[0.0, 4.0], 4, false), &[0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn channels_and_batches_are_independent() {
        let xs = Tensor::from_vec(
            vec![
                0f32, 2.0, 4.0, 1.0, 1.0, 1.0, 10.0, 20.0, 30.0, -3.0, 0.0, 3.0,
            ],
            (2, 2, 3),
            &Device::Cpu,
        )
        .unwrap();
        let out = interpolate_linear(&xs, 5, true).unwrap();
        assert_eq!(out.dims(), &[2, 2, 5]);
        let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_all_close(
            &out,
            &[
                0.0, 1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 10.0, 15.0, 20.0, 25.0, 30.0,
                -3.0, -1.5, 0.0, 1.5, 3.0,
            ],
        );
    }

    #[test]
    fn empty_sizes_are_errors() {
        let xs = Tensor::zeros((1, 1, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(interpolate_linear(&xs, 0, true).is_err());
    }
}
