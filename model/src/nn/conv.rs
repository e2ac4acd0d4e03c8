//! 2-D convolution with a faster CPU path for the convolution Hallo2 spends its time in.
//!
//! candle 0.11's CPU conv2d unfolds its input tile by tile with per-element index arithmetic;
//! `op_bench` measured its 3×3 convolutions 2–2.3× slower than PyTorch's while its matmul is on
//! par. So on the CPU, a 3×3 / stride 1 / padding 1 convolution in f32 (the ResNet blocks, the
//! UNets' and the VAE's conv_in/conv_out, the up-samplers) unfolds its input here with
//! whole-row copies, `(n, c, h, w)` → `(c·9, n·h·w)`, and runs as one wide matmul against the
//! weight as `(c_out, c·9)` (wide even for the UNets' small planes, whose batches are 2 CFG rows
//! × 16 frames). Everything else (other shapes, GPUs) goes to candle's own convolution. The
//! unfolded input is nine times the input: batches are unfolded a few items at a time to keep
//! it under [`UNFOLD_BYTES`], and an item bigger than that alone (the VAE's last level at 512²)
//! stays on candle's tiled path.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// At most this many bytes of unfolded input at once.
const UNFOLD_BYTES: usize = 256 << 20;

/// A 2-D convolution (diffusers' `Conv2d`: `weight` `(c_out, c_in/groups, k, k)`, `bias`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
}

/// Loads a convolution with a bias, as `candle_nn::conv2d`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    config: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Ok(Conv2d {
        inner: candle_nn::conv2d(in_channels, out_channels, kernel_size, config, vb)?,
    })
}

impl Conv2d {
    /// A convolution of `weight` `(c_out, c_in/groups, k, k)` and `bias` `(c_out,)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self {
            inner: candle_nn::Conv2d::new(weight, bias, config),
        }
    }

    /// Whether `x` takes the unfold-and-matmul path.
    fn unfolds(&self, x: &Tensor) -> bool {
        let c = self.inner.config();
        let w = self.inner.weight();
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && w.dims()[2..] == [3, 3]
            && (c.stride, c.padding, c.dilation, c.groups) == (1, 1, 1, 1)
            && x.rank() == 4
            && x.elem_count() / x.dims()[0] * 9 * 4 <= UNFOLD_BYTES
    }

    /// The unfold-and-matmul path (see the module docs), unfolding at most `budget` bytes at once.
    /// Each chunk of `n` items is one matmul `(c_out, c·9) × (c·9, n·h·w)`: the items side by
    /// side make one wide product, as efficient for the UNets' small planes as for big ones.
    fn forward_unfolded(&self, x: &Tensor, budget: usize) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let weight = self.inner.weight();
        let c_out = weight.dim(0)?;
        let kernel = weight.reshape((c_out, c * 9))?;
        let per_item = c * 9 * h * w * 4;
        let chunk = (budget / per_item).clamp(1, b);
        let mut outs = Vec::with_capacity(b.div_ceil(chunk));
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let cols = x
                .narrow(0, start, n)?
                .contiguous()?
                .apply_op1_no_bwd(&Unfold3x3)?;
            // (c_out, n·h·w) → (n, c_out, h, w)
            let out = kernel.matmul(&cols)?.reshape((c_out, n, h, w))?;
            outs.push(out.transpose(0, 1)?.contiguous()?);
        }
        let out = Tensor::cat(&outs, 0)?;
        match self.inner.bias() {
            Some(bias) => out.broadcast_add(&bias.reshape((1, c_out, 1, 1))?),
            None => Ok(out),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.unfolds(x) {
            self.forward_unfolded(x, UNFOLD_BYTES)
        } else {
            self.inner.forward(x)
        }
    }
}

/// `(b, c, h, w)` contiguous f32 → `(c·9, b·h·w)`: row `ci·9 + dy·3 + dx` holds channel `ci`
/// of every item, shifted by `(dy − 1, dx − 1)`, zeros outside (the rows in the order of
/// `weight.reshape((c_out, c·9))`, the items side by side).
struct Unfold3x3;

impl CustomOp1 for Unfold3x3 {
    fn name(&self) -> &'static str {
        "unfold3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("unfold3x3 takes a contiguous f32 tensor");
        };
        let data = &data[start..end];
        let plane = h * w;
        let mut out = vec![0f32; c * 9 * b * plane];
        // Whole channels per thread (their nine rows), over candle's CPU threads. Plane `k` of
        // a thread's share is channel `first + k / (9·b)`, tap `k / b % 9`, item `k % b`.
        let threads = candle_core::utils::get_num_threads().max(1);
        let per_thread = c.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (part, share) in out.chunks_mut(per_thread * 9 * b * plane).enumerate() {
                scope.spawn(move || {
                    for (k, dst) in share.chunks_mut(plane).enumerate() {
                        let (ci, tap, item) = (part * per_thread + k / (9 * b), k / b % 9, k % b);
                        let src = &data[(item * c + ci) * plane..][..plane];
                        shift_into(src, dst, h, w, tap / 3, tap % 3);
                    }
                });
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c * 9, b * plane))))
    }
}

/// Writes the `h × w` plane `src` shifted by `(dy − 1, dx − 1)` into `dst` (zeros stay where
/// the shift reads outside the plane).
fn shift_into(src: &[f32], dst: &mut [f32], h: usize, w: usize, dy: usize, dx: usize) {
    for y in 0..h {
        let Some(sy) = (y + dy).checked_sub(1).filter(|&sy| sy < h) else {
            continue;
        };
        let s = &src[sy * w..(sy + 1) * w];
        let d = &mut dst[y * w..(y + 1) * w];
        match dx {
            0 => d[1..].copy_from_slice(&s[..w - 1]),
            1 => d.copy_from_slice(s),
            _ => d[..w - 1].copy_from_slice(&s[1..]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The unfolded path gives candle's convolution, for odd sizes, a batch split into chunks
    /// and a bias.
    #[test]
    fn unfolding_matches_candles_convolution() -> Result<()> {
        let dev = &Device::Cpu;
        for (b, c_in, c_out, h, w) in [(1, 3, 5, 7, 9), (5, 8, 4, 6, 5), (2, 16, 16, 1, 1)] {
            let x = Tensor::randn(0f32, 1.0, (b, c_in, h, w), dev)?;
            let weight = Tensor::randn(0f32, 0.3, (c_out, c_in, 3, 3), dev)?;
            let bias = Tensor::randn(0f32, 1.0, c_out, dev)?;
            let config = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            let conv = Conv2d::new(weight, Some(bias), config);
            assert!(conv.unfolds(&x));
            // A budget of two items: batches of 5 go as 2 + 2 + 1.
            let ours = conv.forward_unfolded(&x, 2 * c_in * 9 * h * w * 4)?;
            let candle = conv.inner.forward(&x)?;
            let diff = (ours - &candle)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{b}×{c_in}×{h}×{w}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn other_convolutions_stay_on_candles_path() -> Result<()> {
        let dev = &Device::Cpu;
        let x = Tensor::zeros((1, 4, 8, 8), DType::F32, dev)?;
        let conv = |k: usize, stride: usize| {
            Conv2d::new(
                Tensor::zeros((4, 4, k, k), DType::F32, dev).unwrap(),
                None,
                Conv2dConfig {
                    padding: k / 2,
                    stride,
                    ..Default::default()
                },
            )
        };
        assert!(!conv(1, 1).unfolds(&x));
        assert!(!conv(3, 2).unfolds(&x), "the down-samplers' stride 2");
        assert!(!conv(3, 1).unfolds(&x.to_dtype(DType::F16)?));
        Ok(())
    }
}
