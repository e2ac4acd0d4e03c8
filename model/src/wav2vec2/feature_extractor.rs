//! The CNN front end of transformers 4.39.2 `modeling_wav2vec2.py`: `Wav2Vec2FeatureEncoder`
//! (`Wav2Vec2GroupNormConvLayer`, `Wav2Vec2NoLayerNormConvLayer`, `Wav2Vec2LayerNormConvLayer`)
//! and `Wav2Vec2FeatureProjection`.
//!
//! Keys: `feature_extractor.conv_layers.{i}.conv.{weight, bias?}`,
//! `feature_extractor.conv_layers.{i}.layer_norm.{weight, bias}` (layer 0 only for the group-norm
//! variant, every layer for the layer-norm one), `feature_projection.{layer_norm, projection}`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{
    Activation, Conv1d, Conv1dConfig, GroupNorm, LayerNorm, Linear, VarBuilder, conv1d,
    conv1d_no_bias, group_norm, layer_norm, linear,
};

use super::Wav2Vec2Config;

/// `nn.GroupNorm` / `nn.LayerNorm` default eps; the conv layers do not use `layer_norm_eps`.
const CONV_NORM_EPS: f64 = 1e-5;

/// The normalisation after a conv layer's convolution.
#[derive(Debug, Clone)]
enum ConvNorm {
    /// `Wav2Vec2GroupNormConvLayer`: GroupNorm with one group per channel (per-channel
    /// normalisation over time).
    Group(GroupNorm),
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
            ("group", 0) => Some(ConvNorm::Group(group_norm(
                out_conv_dim,
                out_conv_dim,
                CONV_NORM_EPS,
                vb.pp("layer_norm"),
            )?)),
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
        })
    }
}

impl Module for Wav2Vec2ConvLayer {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let hidden_states = self.conv.forward(hidden_states)?;
        let hidden_states = match &self.layer_norm {
            None => hidden_states,
            Some(ConvNorm::Group(norm)) => norm.forward(&hidden_states)?,
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
    pub fn forward(&self, input_values: &Tensor) -> Result<Tensor> {
        let (_b, _n) = input_values.dims2()?;
        // b n -> b 1 n
        let mut hidden_states = input_values.unsqueeze(1)?;
        for (i, conv_layer) in self.conv_layers.iter().enumerate() {
            let t = hidden_states.dim(2)?;
            if t < conv_layer.kernel_size {
                candle_core::bail!(
                    "wav2vec2: input too short for the feature encoder ({t} frames at conv layer \
                     {i}, kernel {})",
                    conv_layer.kernel_size
                )
            }
            hidden_states = conv_layer.forward(&hidden_states)?;
        }
        Ok(hidden_states)
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
