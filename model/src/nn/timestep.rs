//! diffusers `Timesteps` (sinusoidal projection) and `TimestepEmbedding` (`linear_1`, SiLU,
//! `linear_2`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear};

/// Sinusoidal embedding of `timesteps` (one per batch row) into `dim` channels, as
/// `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift)`: frequencies
/// `exp(−ln(10000)·k/(half − shift))`, `[sin, cos]`, swapped to `[cos, sin]` when flipped.
pub fn timestep_sinusoid(
    timesteps: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let denom = half as f64 - freq_shift;
    // Upstream builds the exponent in float32; do the same so the rounding matches.
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f32.ln()) * k as f32 / denom as f32).exp())
        .collect();
    let mut data = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t as f32 * f).collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        if flip_sin_to_cos {
            data.extend(cos.iter().chain(&sin));
        } else {
            data.extend(sin.iter().chain(&cos));
        }
        if dim % 2 == 1 {
            data.push(0.0);
        }
    }
    Tensor::from_vec(data, (timesteps.len(), dim), device)?.to_dtype(DType::F32)
}

#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(in_channels: usize, time_embed_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: linear(in_channels, time_embed_dim, vb.pp("linear_1"))?,
            linear_2: linear(time_embed_dim, time_embed_dim, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(xs)?.silu()?)
    }
}
