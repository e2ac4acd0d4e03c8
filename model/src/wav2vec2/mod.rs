//! wav2vec 2.0 as Hallo2 runs it: hallo2 `hallo/models/wav2vec.py` @ `58a9aa6` (`Wav2VecModel`, a
//! subclass of transformers 4.39.2 `Wav2Vec2Model`, `models/wav2vec2/modeling_wav2vec2.py`).
//!
//! Hallo changes one thing in the forward pass: the CNN features (≈ 50 Hz) are linearly
//! resampled to the video frame count `seq_len` (25 fps) *before* the feature projection and the
//! transformer, so every output row is one video frame.
//!
//! ```text
//! input_values (1, N) ─▶ feature_extractor ─▶ (1, C_cnn, T50) ─▶ transpose ─▶ linear_interpolation
//!   ─▶ (1, seq_len, C_cnn) ─▶ feature_projection (LayerNorm, Linear) ─▶ (1, seq_len, H)
//!   ─▶ encoder: + pos_conv_embed ─▶ layer_norm ─▶ layers (post-LN) ─▶ hidden_states[0..=L]
//! ```
//!
//! Keys (`Wav2Vec2ForCTC` checkpoints prefix them with `wav2vec2.`; `lm_head.*` is not ours):
//! `masked_spec_embed`, `feature_extractor.conv_layers.{i}.{conv, layer_norm}`,
//! `feature_projection.{layer_norm, projection}`, `encoder.pos_conv_embed.conv.{bias, weight_g,
//! weight_v}` (or `parametrizations.weight.original0/1`), `encoder.layer_norm`,
//! `encoder.layers.{i}.{attention.{q,k,v,out}_proj, layer_norm, feed_forward.{intermediate_dense,
//! output_dense}, final_layer_norm}`.

pub mod encoder;
pub mod feature_extractor;

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Activation, VarBuilder};

pub use encoder::{Wav2Vec2Encoder, Wav2Vec2PositionalConvEmbedding, weight_norm_weight};
pub use feature_extractor::{Wav2Vec2FeatureEncoder, Wav2Vec2FeatureProjection};

use crate::error::ModelError;

/// The root prefix of `Wav2Vec2ForCTC` (and `Wav2Vec2ForPreTraining`) checkpoints.
const CTC_PREFIX: &str = "wav2vec2";
/// A key every `Wav2Vec2Model` has, probed to find out whether the checkpoint uses [`CTC_PREFIX`].
const PROBE_KEY: &str = "feature_projection.projection.weight";

/// transformers 4.39.2 `Wav2Vec2Config`, as stored in the model's `config.json` (the fields that
/// shape the inference graph; others are ignored). Defaults are the Python `__init__` defaults.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Wav2Vec2Config {
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    /// Activation of the transformer feed-forward (`ACT2FN`; `"gelu"` is the erf GELU).
    #[serde(default)]
    pub hidden_act: Activation,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// `"group"` (GroupNorm with one group per channel on conv layer 0 only) or `"layer"`
    /// (LayerNorm over channels after every conv layer).
    #[serde(default = "default_feat_extract_norm")]
    pub feat_extract_norm: String,
    /// Activation of the conv layers and of the positional conv.
    #[serde(default)]
    pub feat_extract_activation: Activation,
    #[serde(default = "default_conv_dim")]
    pub conv_dim: Vec<usize>,
    #[serde(default = "default_conv_stride")]
    pub conv_stride: Vec<usize>,
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: Vec<usize>,
    #[serde(default)]
    pub conv_bias: bool,
    /// Kernel size of the positional conv (padding is half of it; an even kernel drops the last
    /// output frame).
    #[serde(default = "default_num_conv_pos_embeddings")]
    pub num_conv_pos_embeddings: usize,
    #[serde(default = "default_num_conv_pos_embedding_groups")]
    pub num_conv_pos_embedding_groups: usize,
    /// `true` selects the pre-LN "large-lv60" encoder, which this port does not implement.
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    /// With `mask_time_prob > 0` or `mask_feature_prob > 0` the model owns `masked_spec_embed`
    /// (SpecAugment, training only; loaded but unused at inference).
    #[serde(default = "default_apply_spec_augment")]
    pub apply_spec_augment: bool,
    #[serde(default = "default_mask_time_prob")]
    pub mask_time_prob: f64,
    #[serde(default)]
    pub mask_feature_prob: f64,
    /// A conv adapter on top of the encoder; not implemented (Hallo2's model has none).
    #[serde(default)]
    pub add_adapter: bool,
}

fn default_hidden_size() -> usize {
    768
}
fn default_num_hidden_layers() -> usize {
    12
}
fn default_num_attention_heads() -> usize {
    12
}
fn default_intermediate_size() -> usize {
    3072
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_feat_extract_norm() -> String {
    "group".to_string()
}
fn default_conv_dim() -> Vec<usize> {
    vec![512; 7]
}
fn default_conv_stride() -> Vec<usize> {
    vec![5, 2, 2, 2, 2, 2, 2]
}
fn default_conv_kernel() -> Vec<usize> {
    vec![10, 3, 3, 3, 3, 2, 2]
}
fn default_num_conv_pos_embeddings() -> usize {
    128
}
fn default_num_conv_pos_embedding_groups() -> usize {
    16
}
fn default_apply_spec_augment() -> bool {
    true
}
fn default_mask_time_prob() -> f64 {
    0.05
}

impl Wav2Vec2Config {
    /// `facebook/wav2vec2-base-960h` `config.json` (the model Hallo2's `wav2vec.model_path`
    /// points to): Base, group-norm feature extractor, post-LN encoder, 12 × 768, 12 heads.
    pub fn hallo2() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-5,
            feat_extract_norm: "group".to_string(),
            feat_extract_activation: Activation::Gelu,
            conv_dim: vec![512; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: false,
            num_conv_pos_embeddings: 128,
            num_conv_pos_embedding_groups: 16,
            do_stable_layer_norm: false,
            apply_spec_augment: true,
            mask_time_prob: 0.05,
            mask_feature_prob: 0.0,
            add_adapter: false,
        }
    }

    /// Reads a transformers `config.json`.
    pub fn from_file(path: &Path) -> crate::error::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::io(format!("reading {}", path.display()), e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|e| ModelError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Rejects what this port does not implement, and inconsistent conv lists.
    pub fn validate(&self) -> Result<()> {
        let n = self.conv_dim.len();
        if n == 0 || self.conv_stride.len() != n || self.conv_kernel.len() != n {
            candle_core::bail!(
                "wav2vec2: conv_dim, conv_stride and conv_kernel must have the same non-zero length \
                 (got {}, {}, {})",
                n,
                self.conv_stride.len(),
                self.conv_kernel.len()
            )
        }
        if self.conv_stride.contains(&0) || self.conv_kernel.contains(&0) {
            candle_core::bail!("wav2vec2: conv strides and kernels must be positive")
        }
        if !matches!(self.feat_extract_norm.as_str(), "group" | "layer") {
            candle_core::bail!(
                "wav2vec2: feat_extract_norm is {:?}, expected \"group\" or \"layer\"",
                self.feat_extract_norm
            )
        }
        if self.do_stable_layer_norm {
            candle_core::bail!("wav2vec2: the stable-layer-norm (pre-LN) encoder is not supported")
        }
        if self.add_adapter {
            candle_core::bail!("wav2vec2: add_adapter is not supported")
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            candle_core::bail!(
                "wav2vec2: hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            )
        }
        let groups = self.num_conv_pos_embedding_groups;
        if groups == 0
            || !self.hidden_size.is_multiple_of(groups)
            || self.num_conv_pos_embeddings == 0
        {
            candle_core::bail!(
                "wav2vec2: positional conv with kernel {} and {groups} groups does not fit \
                 hidden_size {}",
                self.num_conv_pos_embeddings,
                self.hidden_size
            )
        }
        Ok(())
    }

    /// Whether `Wav2Vec2Model.__init__` creates the `masked_spec_embed` parameter.
    pub fn has_masked_spec_embed(&self) -> bool {
        self.mask_time_prob > 0.0 || self.mask_feature_prob > 0.0
    }
}

/// `Wav2VecModel` in eval mode (no SpecAugment, no dropout, no attention mask).
#[derive(Debug, Clone)]
pub struct Wav2Vec2Model {
    pub feature_extractor: Wav2Vec2FeatureEncoder,
    pub feature_projection: Wav2Vec2FeatureProjection,
    pub encoder: Wav2Vec2Encoder,
    /// Loaded so the checkpoint is fully accounted for; SpecAugment only runs in training.
    pub masked_spec_embed: Option<Tensor>,
    device: Device,
    dtype: DType,
}

impl Wav2Vec2Model {
    /// Builds the model from a `Wav2Vec2Model` root or a `Wav2Vec2ForCTC` root (keys under
    /// `wav2vec2.`, decided by probing the checkpoint); `lm_head.*` is never requested.
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let vb = if vb.contains_tensor(&format!("{CTC_PREFIX}.{PROBE_KEY}")) {
            vb.pp(CTC_PREFIX)
        } else {
            vb
        };
        let masked_spec_embed = if cfg.has_masked_spec_embed() {
            Some(vb.get(cfg.hidden_size, "masked_spec_embed")?)
        } else {
            None
        };
        Ok(Self {
            feature_extractor: Wav2Vec2FeatureEncoder::new(cfg, vb.pp("feature_extractor"))?,
            feature_projection: Wav2Vec2FeatureProjection::new(cfg, vb.pp("feature_projection"))?,
            encoder: Wav2Vec2Encoder::new(cfg, vb.pp("encoder"))?,
            masked_spec_embed,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// The device the weights live on (inputs must be there too).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the weights were loaded in (Hallo runs wav2vec2 in f32 even in fp16 runs).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Hallo's `feature_extract`: CNN features of `input_values (b, N)` resampled to `seq_len`
    /// frames → `(b, seq_len, conv_dim[-1])`.
    pub fn feature_extract(&self, input_values: &Tensor, seq_len: usize) -> Result<Tensor> {
        let extract_features = self.feature_extractor.forward(input_values)?;
        linear_interpolation(&extract_features.transpose(1, 2)?, seq_len)
    }

    /// Hallo's `encode`: feature projection and encoder on `(b, seq_len, conv_dim[-1])`; returns
    /// transformers' `hidden_states` (see [`Self::forward`]).
    pub fn encode(&self, extract_features: &Tensor) -> Result<Vec<Tensor>> {
        let (hidden_states, _norm_hidden_states) =
            self.feature_projection.forward(extract_features)?;
        self.encoder.forward(&hidden_states)
    }

    /// `Wav2VecModel.forward(input_values, seq_len, output_hidden_states=True).hidden_states`:
    /// `L + 1` tensors `(b, seq_len, hidden_size)`; index 0 is the encoder input after the
    /// positional conv and the encoder LayerNorm, index `i` the output of layer `i`, and the last
    /// one is also `last_hidden_state`.
    pub fn forward(&self, input_values: &Tensor, seq_len: usize) -> Result<Vec<Tensor>> {
        self.encode(&self.feature_extract(input_values, seq_len)?)
    }
}

/// hallo2 `wav2vec.py::linear_interpolation`: resamples `features (b, t, c)` along `t` to
/// `seq_len` frames with `F.interpolate(mode="linear", align_corners=True)`.
pub fn linear_interpolation(features: &Tensor, seq_len: usize) -> Result<Tensor> {
    // b t c -> b c t, interpolate, back
    let features = features.transpose(1, 2)?.contiguous()?;
    crate::nn::interpolate_linear(&features, seq_len, true)?.transpose(1, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[test]
    fn hallo2_matches_the_official_config_json() {
        let text = std::fs::read_to_string(fixtures().join("manifests/wav2vec2_base_960h.json"))
            .expect("reading the wav2vec2 manifest");
        let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest json");
        let cfg: Wav2Vec2Config =
            serde_json::from_value(manifest["config"].clone()).expect("parsing the config");
        assert_eq!(cfg, Wav2Vec2Config::hallo2());
        cfg.validate().expect("the official config is supported");
        assert!(cfg.has_masked_spec_embed());
    }

    #[test]
    fn empty_config_gives_the_python_defaults() {
        let cfg: Wav2Vec2Config = serde_json::from_str("{}").expect("parsing {}");
        assert_eq!(cfg, Wav2Vec2Config::hallo2());
    }

    #[test]
    fn tiny_config_parses() {
        let path =
            fixtures().join("hallo2-tiny/pretrained_models/wav2vec/wav2vec2-base-960h/config.json");
        let cfg = Wav2Vec2Config::from_file(&path).expect("reading the tiny config");
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let number = |k: &str| raw[k].as_u64().map(|v| v as usize);
        let numbers = |k: &str| -> Vec<usize> {
            serde_json::from_value(raw[k].clone()).expect("a list of numbers")
        };
        assert_eq!(Some(cfg.hidden_size), number("hidden_size"));
        assert_eq!(Some(cfg.num_hidden_layers), number("num_hidden_layers"));
        assert_eq!(cfg.conv_dim, numbers("conv_dim"));
        assert_eq!(cfg.conv_kernel, numbers("conv_kernel"));
        assert_eq!(cfg.conv_stride, numbers("conv_stride"));
        assert_eq!(
            Some(cfg.num_conv_pos_embeddings),
            number("num_conv_pos_embeddings")
        );
        assert_eq!(
            Some(cfg.num_conv_pos_embedding_groups),
            number("num_conv_pos_embedding_groups")
        );
        assert_eq!(cfg.hidden_act, Activation::Gelu);
    }

    #[test]
    fn unsupported_configs_are_rejected() {
        let base = Wav2Vec2Config::hallo2();
        let mut cfg = base.clone();
        cfg.do_stable_layer_norm = true;
        assert!(cfg.validate().is_err());
        let mut cfg = base.clone();
        cfg.feat_extract_norm = "batch".into();
        assert!(cfg.validate().is_err());
        let mut cfg = base.clone();
        cfg.conv_kernel.pop();
        assert!(cfg.validate().is_err());
        let mut cfg = base.clone();
        cfg.num_conv_pos_embedding_groups = 7;
        assert!(cfg.validate().is_err());
        let mut cfg = base;
        cfg.add_adapter = true;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn linear_interpolation_works_on_the_time_axis() {
        use candle_core::Device;
        // (b=1, t=3, c=2) → 5 frames: channel 0 is 0, 10, 30; channel 1 is constant.
        let xs = Tensor::from_vec(
            vec![0f32, 1.0, 10.0, 1.0, 30.0, 1.0],
            (1, 3, 2),
            &Device::Cpu,
        )
        .unwrap();
        let out = linear_interpolation(&xs, 5).unwrap();
        assert_eq!(out.dims(), &[1, 5, 2]);
        let out: Vec<Vec<f32>> = out.squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(
            out,
            vec![
                vec![0.0, 1.0],
                vec![5.0, 1.0],
                vec![10.0, 1.0],
                vec![20.0, 1.0],
                vec![30.0, 1.0]
            ]
        );
    }
}
