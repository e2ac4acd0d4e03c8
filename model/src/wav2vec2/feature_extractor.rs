//! The CNN front end of transformers 4.39.2 `modeling_wav2vec2.py`: `Wav2Vec2FeatureEncoder`
//! (`Wav2Vec2GroupNormConvLayer`, `Wav2Vec2NoLayerNormConvLayer`, `Wav2Vec2LayerNormConvLayer`)
//! and `Wav2Vec2FeatureProjection`.
//!
//! Keys: `feature_extractor.conv_layers.{i}.conv.{weight, bias?}`,
//! `feature_extractor.conv_layers.{i}.layer_norm.{weight, bias}` (layer 0 only for the group-norm
//! variant, every layer for the layer-norm one), `feature_projection.{layer_norm, projection}`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{
    Activation, Conv1d, Conv1dConfig, LayerNorm, Linear, VarBuilder, conv1d, conv1d_no_bias,
    layer_norm, linear,
};

use super::Wav2Vec2Config;

/// `nn.GroupNorm` / `nn.LayerNorm` default eps; the conv layers do not use `layer_norm_eps`.
const CONV_NORM_EPS: f64 = 1e-5;
/// Output frames of the feature encoder computed at once (5.1 s at 16 kHz for wav2vec2-base):
/// a 60 s segment goes through in pieces, so its activations (conv layer 0 alone is
/// 512 × 192 000 floats for 60 s) never sit in memory whole.
const CHUNK_FRAMES: usize = 256;

/// The normalisation after a conv layer's convolution.
#[derive(Debug, Clone)]
enum ConvNorm {
    /// `Wav2Vec2GroupNormConvLayer`: GroupNorm with one group per channel (per-channel
    /// normalisation over time): `weight` and `bias`, `(C,)`. Its statistics span the whole
    /// input, so they are gathered in a first pass ([`ChannelStats`]).
    Group { weight: Tensor, bias: Tensor },
    /// `Wav2Vec2LayerNormConvLayer`: LayerNorm over channels at every time step.
    Layer(LayerNorm),
}

/// One conv layer: Conv1d (no padding) → optional norm → activation.
#[derive(Debug, Clone)]
pub struct Wav2Vec2ConvLayer {
    conv: Conv1d,
    layer_norm: Option<ConvNorm>,
    activation: Activation,
    kernel_size: usize,
    stride: usize,
}

/// Mean and variance of each (batch, channel) over time, gathered piece by piece.
#[derive(Debug, Clone)]
struct ChannelStats {
    /// `(b, C, 1)` each, f32.
    mean: Tensor,
    var: Tensor,
}

impl ChannelStats {
    /// `GroupNorm(C, C)`: `(x − mean) / sqrt(var + eps) · weight + bias`, as one scale and shift.
    fn normalize(&self, xs: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let c = weight.dim(0)?;
        let dtype = xs.dtype();
        let scale = (self.var.affine(1.0, CONV_NORM_EPS)?.sqrt()?.recip()?)
            .broadcast_mul(&weight.to_dtype(DType::F32)?.reshape((1, c, 1))?)?;
        let shift = bias
            .to_dtype(DType::F32)?
            .reshape((1, c, 1))?
            .broadcast_sub(&self.mean.broadcast_mul(&scale)?)?;
        xs.to_dtype(DType::F32)?
            .broadcast_mul(&scale)?
            .broadcast_add(&shift)?
            .to_dtype(dtype)
    }
}

impl Wav2Vec2ConvLayer {
    /// Layer `layer_id` of the feature encoder (its in-channels are 1 for layer 0).
    pub fn new(cfg: &Wav2Vec2Config, layer_id: usize, vb: VarBuilder) -> Result<Self> {
        let in_conv_dim = if layer_id > 0 {
            cfg.conv_dim[layer_id - 1]
        } else {
            1
        };
        let out_conv_dim = cfg.conv_dim[layer_id];
        let conv_cfg = Conv1dConfig {
            stride: cfg.conv_stride[layer_id],
            ..Default::default()
        };
        let kernel = cfg.conv_kernel[layer_id];
        let conv = if cfg.conv_bias {
            conv1d(in_conv_dim, out_conv_dim, kernel, conv_cfg, vb.pp("conv"))?
        } else {
            conv1d_no_bias(in_conv_dim, out_conv_dim, kernel, conv_cfg, vb.pp("conv"))?
        };
        let layer_norm = match (cfg.feat_extract_norm.as_str(), layer_id) {
            ("group", 0) => Some(ConvNorm::Group {
                weight: vb.pp("layer_norm").get(out_conv_dim, "weight")?,
                bias: vb.pp("layer_norm").get(out_conv_dim, "bias")?,
            }),
            ("group", _) => None,
            ("layer", _) => Some(ConvNorm::Layer(layer_norm(
                out_conv_dim,
                CONV_NORM_EPS,
                vb.pp("layer_norm"),
            )?)),
            (other, _) => candle_core::bail!("wav2vec2: unknown feat_extract_norm {other:?}"),
        };
        Ok(Self {
            conv,
            layer_norm,
            activation: cfg.feat_extract_activation,
            kernel_size: kernel,
            stride: cfg.conv_stride[layer_id],
        })
    }

    /// Conv → norm → activation on a piece of the input; `stats` are the whole input's
    /// per-channel statistics for a group norm (required then, ignored otherwise).
    fn forward_piece(
        &self,
        hidden_states: &Tensor,
        stats: Option<&ChannelStats>,
    ) -> Result<Tensor> {
        let hidden_states = self.conv.forward(hidden_states)?;
        let hidden_states = match &self.layer_norm {
            None => hidden_states,
            Some(ConvNorm::Group { weight, bias }) => {
                let Some(stats) = stats else {
                    candle_core::bail!("wav2vec2: a group-norm conv layer needs its statistics")
                };
                stats.normalize(&hidden_states, weight, bias)?
            }
            // b c t -> b t c, normalise channels, back
            Some(ConvNorm::Layer(norm)) => norm
                .forward(&hidden_states.transpose(1, 2)?.contiguous()?)?
                .transpose(1, 2)?
                .contiguous()?,
        };
        self.activation.forward(&hidden_states)
    }
}

/// `Wav2Vec2FeatureEncoder`: raw waveform → CNN features at `Π conv_stride` samples per frame.
#[derive(Debug, Clone)]
pub struct Wav2Vec2FeatureEncoder {
    conv_layers: Vec<Wav2Vec2ConvLayer>,
}

impl Wav2Vec2FeatureEncoder {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("conv_layers");
        let conv_layers = (0..cfg.conv_dim.len())
            .map(|i| Wav2Vec2ConvLayer::new(cfg, i, vb.pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self { conv_layers })
    }

    /// `input_values (b, N)` → `(b, conv_dim[-1], T)` with `T` frames of the valid (unpadded)
    /// convolutions; fails when `N` is shorter than the receptive field.
    ///
    /// Computed [`CHUNK_FRAMES`] output frames at a time: output frame `j` reads input samples
    /// `[j·S, j·S + R)` (`S` the product of the strides, `R` the receptive field), and every
    /// layer's stride divides the strides after it, so a piece of the input starting at `a·S`
    /// gives exactly frames `a..` at every layer. A group norm on layer 0 needs statistics over
    /// the whole input: a first pass over layer 0 alone gathers them.
    pub fn forward(&self, input_values: &Tensor) -> Result<Tensor> {
        self.forward_in_pieces(input_values, CHUNK_FRAMES)
    }

    /// [`Self::forward`], `chunk` output frames at a time.
    fn forward_in_pieces(&self, input_values: &Tensor, chunk: usize) -> Result<Tensor> {
        let chunk = chunk.max(1);
        let (_b, n) = input_values.dims2()?;
        let mut t = n;
        for (i, layer) in self.conv_layers.iter().enumerate() {
            if t < layer.kernel_size {
                candle_core::bail!(
                    "wav2vec2: input too short for the feature encoder ({t} frames at conv layer \
                     {i}, kernel {})",
                    layer.kernel_size
                )
            }
            t = (t - layer.kernel_size) / layer.stride + 1;
        }
        let (stride, field) = self.stride_and_field();
        let first = &self.conv_layers[0];
        let stats = match first.layer_norm {
            Some(ConvNorm::Group { .. }) => {
                Some(self.first_layer_stats(input_values, chunk * stride)?)
            }
            _ => None,
        };
        let mut pieces = Vec::with_capacity(t.div_ceil(chunk));
        for a in (0..t).step_by(chunk) {
            let b = (a + chunk).min(t);
            let start = a * stride;
            let len = (b - 1) * stride + field - start;
            // b n -> b 1 n
            let mut hidden_states = input_values.narrow(1, start, len)?.unsqueeze(1)?;
            for (i, layer) in self.conv_layers.iter().enumerate() {
                let stats = if i == 0 { stats.as_ref() } else { None };
                hidden_states = layer.forward_piece(&hidden_states, stats)?;
            }
            pieces.push(hidden_states);
        }
        Tensor::cat(&pieces, 2)
    }

    /// `S`, input samples per output frame, and `R`, input samples one output frame reads.
    fn stride_and_field(&self) -> (usize, usize) {
        self.conv_layers
            .iter()
            .rev()
            .fold((1, 1), |(stride, field), layer| {
                (
                    stride * layer.stride,
                    (field - 1) * layer.stride + layer.kernel_size,
                )
            })
    }

    /// Per-channel mean and (population) variance of layer 0's convolution over the whole
    /// input, from pieces of `piece_samples` input samples' worth, summed in f64.
    fn first_layer_stats(
        &self,
        input_values: &Tensor,
        piece_samples: usize,
    ) -> Result<ChannelStats> {
        let layer = &self.conv_layers[0];
        let (b, n) = input_values.dims2()?;
        let t0 = (n - layer.kernel_size) / layer.stride + 1;
        let piece = (piece_samples / layer.stride).max(1);
        let mut sum: Vec<f64> = Vec::new();
        let mut sum_sq: Vec<f64> = Vec::new();
        for p in (0..t0).step_by(piece) {
            let q = (p + piece).min(t0);
            let start = p * layer.stride;
            let len = (q - 1) * layer.stride + layer.kernel_size - start;
            let xs = layer
                .conv
                .forward(&input_values.narrow(1, start, len)?.unsqueeze(1)?)?
                .to_dtype(DType::F32)?;
            let s: Vec<f32> = xs.sum(2)?.flatten_all()?.to_vec1()?;
            let s2: Vec<f32> = xs.sqr()?.sum(2)?.flatten_all()?.to_vec1()?;
            sum.resize(s.len(), 0.0);
            sum_sq.resize(s2.len(), 0.0);
            for (acc, v) in sum.iter_mut().zip(&s) {
                *acc += f64::from(*v);
            }
            for (acc, v) in sum_sq.iter_mut().zip(&s2) {
                *acc += f64::from(*v);
            }
        }
        let count = t0 as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let var: Vec<f32> = sum
            .iter()
            .zip(&sum_sq)
            .map(|(s, s2)| {
                let m = s / count;
                (s2 / count - m * m).max(0.0) as f32
            })
            .collect();
        let c = mean.len() / b.max(1);
        let device = input_values.device();
        Ok(ChannelStats {
            mean: Tensor::from_vec(mean, (b, c, 1), device)?,
            var: Tensor::from_vec(var, (b, c, 1), device)?,
        })
    }
}

/// `Wav2Vec2FeatureProjection`: LayerNorm(conv_dim[-1]) → Linear to `hidden_size` (dropout is
/// inactive at inference).
#[derive(Debug, Clone)]
pub struct Wav2Vec2FeatureProjection {
    layer_norm: LayerNorm,
    projection: Linear,
}

impl Wav2Vec2FeatureProjection {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let conv_out = cfg.conv_dim[cfg.conv_dim.len() - 1];
        Ok(Self {
            layer_norm: layer_norm(conv_out, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            projection: linear(conv_out, cfg.hidden_size, vb.pp("projection"))?,
        })
    }

    /// `(b, t, conv_dim[-1])` → `(hidden_states (b, t, hidden_size), norm_hidden_states)`, as
    /// upstream returns both.
    pub fn forward(&self, hidden_states: &Tensor) -> Result<(Tensor, Tensor)> {
        let norm_hidden_states = self.layer_norm.forward(hidden_states)?;
        let hidden_states = self.projection.forward(&norm_hidden_states)?;
        Ok((hidden_states, norm_hidden_states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn encoder(norm: &str) -> Wav2Vec2FeatureEncoder {
        let cfg = Wav2Vec2Config {
            conv_dim: vec![6, 5, 4],
            conv_stride: vec![5, 2, 3],
            conv_kernel: vec![10, 3, 2],
            feat_extract_norm: norm.to_string(),
            ..Wav2Vec2Config::hallo2()
        };
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let encoder = Wav2Vec2FeatureEncoder::new(&cfg, vb).unwrap();
        // Norm weights start at ones/zeros: make them count.
        for (name, var) in map.data().lock().unwrap().iter() {
            if name.contains("layer_norm") {
                let noise = var.rand_like(0.5, 1.5).unwrap();
                var.set(&noise).unwrap();
            }
        }
        encoder
    }

    #[test]
    fn pieces_give_the_whole_inputs_frames() {
        let n = 5 * 2 * 3 * 40 + 17;
        let xs: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() + 0.1).collect();
        let xs = Tensor::from_vec(xs, (1, n), &Device::Cpu).unwrap();
        for norm in ["group", "layer"] {
            let encoder = encoder(norm);
            let whole = encoder.forward_in_pieces(&xs, usize::MAX / 64).unwrap();
            assert_eq!(whole.dims(), &[1, 4, 40]);
            for chunk in [1, 3, 7, 39, 40] {
                let pieces = encoder.forward_in_pieces(&xs, chunk).unwrap();
                let diff = (&pieces - &whole)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-5, "{norm}, pieces of {chunk}: {diff}");
            }
        }
    }
}
