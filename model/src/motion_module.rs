//! AnimateDiff-v2 temporal attention as Hallo2 runs it: hallo2 `hallo/models/motion_module.py`
//! @ `58a9aa6` (`VanillaTemporalModule` → `TemporalTransformer3DModel` →
//! `TemporalTransformerBlock` → `VersatileAttention` + `PositionalEncoding`).
//!
//! Keys under a motion-module root (e.g. `denoising_unet.down_blocks.0.motion_modules.0`):
//! `temporal_transformer.{norm, proj_in, transformer_blocks.{i}.{attention_blocks.{j}.{to_q, to_k,
//! to_v, to_out.0, pos_encoder.pe}, norms.{j}, ff.net.0.proj, ff.net.2, ff_norm}, proj_out}`.
//!
//! Attention runs along the frame axis independently for every spatial position; the input is
//! added back at the end (the module is a residual).

use candle_core::{Module, Result, Tensor};
use candle_nn::{GroupNorm, LayerNorm, Linear, VarBuilder, group_norm, layer_norm, linear};

use crate::nn::{Attention, AttentionConfig, FeedForward};

/// `TemporalTransformer3DModel` hard-codes `norm_num_groups=32` (the motion kwargs cannot set it).
const NORM_NUM_GROUPS: usize = 32;
/// `torch.nn.GroupNorm(..., eps=1e-6)` in `TemporalTransformer3DModel`.
const GROUP_NORM_EPS: f64 = 1e-6;
/// `nn.LayerNorm(dim)` default eps, for `norms.{j}` and `ff_norm`.
const LAYER_NORM_EPS: f64 = 1e-5;
/// `FeedForward(dim)` default `mult=4`.
const FF_MULT: usize = 4;
/// The only attention block type Hallo2 uses; `Temporal_Cross` needs encoder states Hallo2 never
/// gives the motion modules.
const TEMPORAL_SELF: &str = "Temporal_Self";

/// `VanillaTemporalModule` arguments: `in_channels` plus the yaml's
/// `unet_additional_kwargs.motion_module_kwargs` (defaults as in the Python `__init__`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct MotionModuleConfig {
    /// Channels of the UNet level the module sits in; not part of `motion_module_kwargs`, the
    /// UNet fills it per block (0 until then).
    #[serde(default)]
    pub in_channels: usize,
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_num_transformer_block")]
    pub num_transformer_block: usize,
    #[serde(default = "default_attention_block_types")]
    pub attention_block_types: Vec<String>,
    #[serde(default)]
    pub temporal_position_encoding: bool,
    #[serde(default = "default_temporal_position_encoding_max_len")]
    pub temporal_position_encoding_max_len: usize,
    #[serde(default = "default_temporal_attention_dim_div")]
    pub temporal_attention_dim_div: usize,
}

fn default_num_attention_heads() -> usize {
    8
}
fn default_num_transformer_block() -> usize {
    2
}
fn default_attention_block_types() -> Vec<String> {
    vec![TEMPORAL_SELF.to_string(), TEMPORAL_SELF.to_string()]
}
fn default_temporal_position_encoding_max_len() -> usize {
    24
}
fn default_temporal_attention_dim_div() -> usize {
    1
}

impl MotionModuleConfig {
    /// `motion_module_kwargs` of hallo2 `configs/inference/long.yaml` @ `58a9aa6`, for the first
    /// UNet level (320 channels); use [`Self::with_in_channels`] for the others.
    pub fn hallo2() -> Self {
        Self {
            in_channels: 320,
            num_attention_heads: 8,
            num_transformer_block: 1,
            attention_block_types: default_attention_block_types(),
            temporal_position_encoding: true,
            temporal_position_encoding_max_len: 32,
            temporal_attention_dim_div: 1,
        }
    }

    /// The same kwargs for a UNet level with `in_channels` channels.
    pub fn with_in_channels(&self, in_channels: usize) -> Self {
        Self {
            in_channels,
            ..self.clone()
        }
    }

    /// `attention_head_dim = in_channels // num_attention_heads // temporal_attention_dim_div`.
    pub fn attention_head_dim(&self) -> usize {
        self.in_channels / self.num_attention_heads.max(1) / self.temporal_attention_dim_div.max(1)
    }

    /// `inner_dim = num_attention_heads * attention_head_dim`: width of the tokens inside.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim()
    }
}

/// `PositionalEncoding`: a `(1, max_len, d_model)` sinusoid table, loaded from the checkpoint
/// buffer `pe` (it is stored F16-rounded in `net.pth`; recomputing it would not match).
#[derive(Debug, Clone)]
struct PositionalEncoding {
    pe: Tensor,
}

impl PositionalEncoding {
    fn new(d_model: usize, max_len: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            pe: vb.get((1, max_len, d_model), "pe")?,
        })
    }

    /// `xs`: `(n, f, d_model)`; adds `pe[:, :f]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_n, f, _d) = xs.dims3()?;
        let max_len = self.pe.dim(1)?;
        if f > max_len {
            candle_core::bail!(
                "motion module: {f} frames exceed temporal_position_encoding_max_len {max_len}"
            );
        }
        xs.broadcast_add(&self.pe.narrow(1, 0, f)?.to_dtype(xs.dtype())?)
    }
}

/// `VersatileAttention` in `Temporal` mode: self-attention along frames, per spatial position.
#[derive(Debug, Clone)]
struct VersatileAttention {
    attention: Attention,
    pos_encoder: Option<PositionalEncoding>,
}

impl VersatileAttention {
    fn new(cfg: &MotionModuleConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let attn_cfg = AttentionConfig {
            query_dim: dim,
            cross_attention_dim: None,
            heads: cfg.num_attention_heads,
            dim_head: cfg.attention_head_dim(),
            // `attention_bias=False` in `TemporalTransformer3DModel`.
            qkv_bias: false,
        };
        let pos_encoder = if cfg.temporal_position_encoding {
            Some(PositionalEncoding::new(
                dim,
                cfg.temporal_position_encoding_max_len,
                vb.pp("pos_encoder"),
            )?)
        } else {
            None
        };
        Ok(Self {
            attention: Attention::new(&attn_cfg, vb)?,
            pos_encoder,
        })
    }

    /// `hidden_states`: `((b f), d, c)` with `d = h·w`; returns the same shape.
    fn forward(&self, hidden_states: &Tensor, video_length: usize) -> Result<Tensor> {
        let (bf, d, c) = hidden_states.dims3()?;
        let b = bf / video_length;
        // "(b f) d c -> (b d) f c"
        let xs = hidden_states
            .reshape((b, video_length, d, c))?
            .transpose(1, 2)?
            .reshape((b * d, video_length, c))?;
        // The encoding is added to the attention input itself, so it reaches q, k and v alike.
        let xs = match &self.pos_encoder {
            Some(pos_encoder) => pos_encoder.forward(&xs)?,
            None => xs,
        };
        let xs = self.attention.forward(&xs, None)?;
        // "(b d) f c -> (b f) d c"
        xs.reshape((b, d, video_length, c))?
            .transpose(1, 2)?
            .reshape((bf, d, c))
    }
}

/// `TemporalTransformerBlock`: pre-norm temporal self-attentions, then a GEGLU feed-forward.
#[derive(Debug, Clone)]
struct TemporalTransformerBlock {
    attention_blocks: Vec<VersatileAttention>,
    norms: Vec<LayerNorm>,
    ff: FeedForward,
    ff_norm: LayerNorm,
}

impl TemporalTransformerBlock {
    fn new(cfg: &MotionModuleConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let n = cfg.attention_block_types.len();
        let mut attention_blocks = Vec::with_capacity(n);
        let mut norms = Vec::with_capacity(n);
        for j in 0..n {
            attention_blocks.push(VersatileAttention::new(
                cfg,
                vb.pp("attention_blocks").pp(j),
            )?);
            norms.push(layer_norm(dim, LAYER_NORM_EPS, vb.pp("norms").pp(j))?);
        }
        Ok(Self {
            attention_blocks,
            norms,
            ff: FeedForward::new(dim, FF_MULT * dim, vb.pp("ff"))?,
            ff_norm: layer_norm(dim, LAYER_NORM_EPS, vb.pp("ff_norm"))?,
        })
    }

    /// `hidden_states`: `((b f), h·w, inner_dim)`.
    fn forward(&self, hidden_states: &Tensor, video_length: usize) -> Result<Tensor> {
        let mut hidden_states = hidden_states.clone();
        for (attention_block, norm) in self.attention_blocks.iter().zip(&self.norms) {
            let norm_hidden_states = norm.forward(&hidden_states)?;
            hidden_states =
                (attention_block.forward(&norm_hidden_states, video_length)? + hidden_states)?;
        }
        self.ff.forward(&self.ff_norm.forward(&hidden_states)?)? + hidden_states
    }
}

/// `TemporalTransformer3DModel`: per-frame GroupNorm, Linear in, blocks, Linear out, residual.
#[derive(Debug, Clone)]
struct TemporalTransformer3DModel {
    norm: GroupNorm,
    proj_in: Linear,
    transformer_blocks: Vec<TemporalTransformerBlock>,
    proj_out: Linear,
}

impl TemporalTransformer3DModel {
    fn new(cfg: &MotionModuleConfig, vb: VarBuilder) -> Result<Self> {
        let (c, inner) = (cfg.in_channels, cfg.inner_dim());
        let transformer_blocks = (0..cfg.num_transformer_block)
            .map(|i| TemporalTransformerBlock::new(cfg, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(NORM_NUM_GROUPS, c, GROUP_NORM_EPS, vb.pp("norm"))?,
            proj_in: linear(c, inner, vb.pp("proj_in"))?,
            transformer_blocks,
            proj_out: linear(inner, c, vb.pp("proj_out"))?,
        })
    }

    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = hidden_states.dims5()?;
        // "b c f h w -> (b f) c h w"
        let residual = hidden_states
            .permute((0, 2, 1, 3, 4))?
            .reshape((b * f, c, h, w))?;
        let xs = self.norm.forward(&residual)?;
        // (b f) c h w -> (b f) (h w) c
        let xs = xs.permute((0, 2, 3, 1))?.reshape((b * f, h * w, c))?;
        let mut xs = self.proj_in.forward(&xs)?;
        for block in &self.transformer_blocks {
            xs = block.forward(&xs, f)?;
        }
        let xs = self.proj_out.forward(&xs)?;
        // (b f) (h w) c -> (b f) c h w
        let xs = xs.reshape((b * f, h, w, c))?.permute((0, 3, 1, 2))?;
        let output = (xs + residual)?;
        // "(b f) c h w -> b c f h w"
        output
            .reshape((b, f, c, h, w))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }
}

/// `VanillaTemporalModule`: the AnimateDiff-v2 motion module placed after each spatial stage of
/// the denoising UNet.
#[derive(Debug, Clone)]
pub struct VanillaTemporalModule {
    temporal_transformer: TemporalTransformer3DModel,
}

impl VanillaTemporalModule {
    /// Loads the module rooted at `vb` (e.g. `denoising_unet.mid_block.motion_modules.0`).
    pub fn new(cfg: &MotionModuleConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.in_channels == 0
            || cfg.num_attention_heads == 0
            || cfg.temporal_attention_dim_div == 0
        {
            candle_core::bail!(
                "motion module: in_channels, num_attention_heads and temporal_attention_dim_div \
                 must be positive, got {cfg:?}"
            );
        }
        if cfg.attention_head_dim() == 0 {
            candle_core::bail!("motion module: attention_head_dim is 0 for {cfg:?}");
        }
        if let Some(other) = cfg
            .attention_block_types
            .iter()
            .find(|t| *t != TEMPORAL_SELF)
        {
            candle_core::bail!(
                "motion module: attention block type {other:?} unsupported (only {TEMPORAL_SELF})"
            );
        }
        Ok(Self {
            temporal_transformer: TemporalTransformer3DModel::new(
                cfg,
                vb.pp("temporal_transformer"),
            )?,
        })
    }

    /// The positional-encoding table of attention block `j` of transformer block `i`, as loaded.
    pub fn pos_encoding(&self, i: usize, j: usize) -> Option<&Tensor> {
        let block = self.temporal_transformer.transformer_blocks.get(i)?;
        block
            .attention_blocks
            .get(j)?
            .pos_encoder
            .as_ref()
            .map(|p| &p.pe)
    }

    /// `xs`: `(b, c, f, h, w)` → same shape, input included (residual). The upstream
    /// `encoder_hidden_states` argument is unused by `Temporal_Self` blocks and so omitted.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.temporal_transformer.forward(xs)
    }
}

impl Module for VanillaTemporalModule {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        VanillaTemporalModule::forward(self, xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hallo2_config_matches_long_yaml() {
        let yaml = r#"
num_attention_heads: 8
num_transformer_block: 1
attention_block_types: [Temporal_Self, Temporal_Self]
temporal_position_encoding: true
temporal_position_encoding_max_len: 32
temporal_attention_dim_div: 1
"#;
        let kwargs: MotionModuleConfig = serde_yaml::from_str(yaml).expect("parsing kwargs");
        assert_eq!(kwargs.with_in_channels(320), MotionModuleConfig::hallo2());
        let mid = MotionModuleConfig::hallo2().with_in_channels(1280);
        assert_eq!((mid.attention_head_dim(), mid.inner_dim()), (160, 1280));
    }

    #[test]
    fn defaults_follow_the_python_signature() {
        let cfg: MotionModuleConfig = serde_json::from_str("{}").expect("parsing empty kwargs");
        assert_eq!(cfg.num_attention_heads, 8);
        assert_eq!(cfg.num_transformer_block, 2);
        assert_eq!(
            cfg.attention_block_types,
            ["Temporal_Self", "Temporal_Self"]
        );
        assert!(!cfg.temporal_position_encoding);
        assert_eq!(cfg.temporal_position_encoding_max_len, 24);
        assert_eq!(cfg.temporal_attention_dim_div, 1);
    }
}
