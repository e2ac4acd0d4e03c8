//! The reference UNet: hallo2 `hallo/models/unet_2d_condition.py::UNet2DConditionModel` @
//! `58a9aa6` (a fork of diffusers 0.32's SD-1.5 UNet), as the inference pipeline runs it.
//!
//! Differences from stock diffusers: there is no `conv_norm_out` / `conv_out` (the fork never
//! creates them, so `net.pth` has no such keys and the forward ends after the last up block),
//! and every transformer block records its `norm1` output into the reference bank
//! ([`crate::mutual_self_attention`]). The pipeline calls it once per clip with `timestep = 0`
//! and the batch `[ref, m1, m2, ref, m1, m2]`; only the bank is used.

/// The down, mid and up blocks.
pub mod blocks;
/// The spatial transformer wrapper.
pub mod transformer_2d;

use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::mutual_self_attention::{BankEntry, ReferenceBank};
use crate::nn::{TimestepEmbedding, timestep_sinusoid};
use blocks::{Block2DConfig, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D};

/// `int` or per-block list, as diffusers accepts for `attention_head_dim` and friends.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Copy> PerBlock<T> {
    /// The value for down block `i` (the same list, reversed, serves the up blocks).
    pub fn get(&self, i: usize) -> Result<T> {
        match self {
            PerBlock::One(v) => Ok(*v),
            PerBlock::Each(vs) => match vs.get(i) {
                Some(v) => Ok(*v),
                None => {
                    candle_core::bail!("per-block list of {} values has no entry {i}", vs.len())
                }
            },
        }
    }
}

fn default_channels() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_mid_block_type() -> String {
    "UNetMidBlock2DCrossAttn".to_string()
}
fn default_one_usize() -> usize {
    1
}
fn default_one() -> f64 {
    1.0
}
fn default_act_fn() -> String {
    "silu".to_string()
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_cross_attention_dim() -> usize {
    1280
}
fn default_attention_head_dim() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn default_time_scale_shift() -> String {
    "default".to_string()
}

/// diffusers `unet/config.json` (`UNet2DConditionModel`), the fields Hallo2's UNets read. Also the
/// base of the denoising UNet's config (`UNet3DConditionModel.from_pretrained_2d` reads the same
/// file and swaps `2D` block types for `3D`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: String,
    pub up_block_types: Vec<String>,
    #[serde(default)]
    pub only_cross_attention: bool,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    #[serde(default = "default_one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: usize,
    /// The number of attention *heads* (a long-standing diffusers misnomer).
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    /// Overrides `attention_head_dim` as the head count when set (never in SD-1.5).
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "default_time_scale_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
}

impl UNet2DConditionConfig {
    /// `pretrained_models/stable-diffusion-v1-5/unet/config.json`, the file hallo2
    /// `scripts/inference_long.py` @ `58a9aa6` builds both UNets from.
    pub fn hallo2() -> Self {
        let block = |kind: &str| kind.to_string();
        Self {
            sample_size: Some(64),
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                block("CrossAttnDownBlock2D"),
                block("CrossAttnDownBlock2D"),
                block("CrossAttnDownBlock2D"),
                block("DownBlock2D"),
            ],
            mid_block_type: default_mid_block_type(),
            up_block_types: vec![
                block("UpBlock2D"),
                block("CrossAttnUpBlock2D"),
                block("CrossAttnUpBlock2D"),
                block("CrossAttnUpBlock2D"),
            ],
            only_cross_attention: false,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: default_act_fn(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 768,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            upcast_attention: false,
            resnet_time_scale_shift: default_time_scale_shift(),
            class_embed_type: None,
            num_class_embeds: None,
        }
    }

    /// Width of the time embedding (`4 · block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }

    /// Attention heads of down block `i` (`num_attention_heads or attention_head_dim`).
    pub fn heads(&self, i: usize) -> Result<usize> {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(i)
    }

    /// Rejects the options of the diffusers class that Hallo2's UNets never use and that this
    /// port therefore does not implement.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            candle_core::bail!(
                "unet config: block_out_channels, down_block_types and up_block_types differ in length"
            )
        }
        if self.layers_per_block == 0 {
            candle_core::bail!("unet config: layers_per_block must be at least 1")
        }
        if let PerBlock::Each(v) = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            && v.len() != n
        {
            candle_core::bail!(
                "unet config: {} attention head counts for {n} blocks",
                v.len()
            )
        }
        for i in 0..n {
            let heads = self.heads(i)?;
            if heads == 0 || !self.block_out_channels[i].is_multiple_of(heads) {
                candle_core::bail!(
                    "unet config: {} channels do not split into {heads} heads",
                    self.block_out_channels[i]
                )
            }
        }
        let unsupported = [
            (self.act_fn != "silu", "act_fn other than silu"),
            (
                self.resnet_time_scale_shift != "default",
                "resnet_time_scale_shift other than default",
            ),
            (
                self.mid_block_scale_factor != 1.0,
                "mid_block_scale_factor other than 1",
            ),
            (
                self.downsample_padding != 1,
                "downsample_padding other than 1",
            ),
            (self.only_cross_attention, "only_cross_attention"),
            (self.dual_cross_attention, "dual_cross_attention"),
            (self.use_linear_projection, "use_linear_projection"),
            (
                self.class_embed_type.is_some() || self.num_class_embeds.is_some(),
                "class embeddings",
            ),
            (
                !self.mid_block_type.starts_with("UNetMidBlock")
                    || !self.mid_block_type.contains("CrossAttn"),
                "a mid block without cross-attention",
            ),
        ];
        for (bad, what) in unsupported {
            if bad {
                candle_core::bail!("unet config: {what} is not supported")
            }
        }
        Ok(())
    }
}

/// Whether a diffusers block type (`CrossAttnDownBlock2D`, `UpBlock3D`, …) has transformers.
pub(crate) fn is_cross_attn_block(kind: &str) -> Result<bool> {
    let kind = kind.strip_prefix("UNetRes").unwrap_or(kind);
    match kind {
        "CrossAttnDownBlock2D"
        | "CrossAttnUpBlock2D"
        | "CrossAttnDownBlock3D"
        | "CrossAttnUpBlock3D" => Ok(true),
        "DownBlock2D" | "UpBlock2D" | "DownBlock3D" | "UpBlock3D" => Ok(false),
        other => candle_core::bail!("unsupported unet block type {other}"),
    }
}

/// The reference UNet (SD-1.5 topology without `conv_norm_out` / `conv_out`).
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock2D>,
    up_blocks: Vec<UpBlock2D>,
    mid_block: UNetMidBlock2DCrossAttn,
    config: UNet2DConditionConfig,
}

impl UNet2DConditionModel {
    /// Builds the reference UNet from `reference_unet.*` of `net.pth`.
    pub fn new(cfg: &UNet2DConditionConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let channels = &cfg.block_out_channels;
        let n = channels.len();
        let conv_cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(cfg.in_channels, channels[0], 3, conv_cfg, vb.pp("conv_in"))?;
        let time_embedding =
            TimestepEmbedding::new(channels[0], cfg.time_embed_dim(), vb.pp("time_embedding"))?;
        let block = |i: usize, kind: &str, path: String| -> Result<Block2DConfig> {
            let cross = is_cross_attn_block(kind)?;
            Ok(Block2DConfig {
                num_layers: cfg.layers_per_block,
                in_channels: 0,
                out_channels: 0,
                prev_output_channel: 0,
                temb_channels: cfg.time_embed_dim(),
                add_sampler: i < n - 1,
                resnet_eps: cfg.norm_eps,
                resnet_groups: cfg.norm_num_groups,
                num_attention_heads: if cross { Some(cfg.heads(i)?) } else { None },
                cross_attention_dim: cfg.cross_attention_dim,
                path,
            })
        };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let bc = Block2DConfig {
                in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                out_channels: channels[i],
                ..block(i, kind, format!("down_blocks.{i}"))?
            };
            down_blocks.push(DownBlock2D::new(&bc, vb.pp("down_blocks").pp(i))?);
        }

        let mid = Block2DConfig {
            num_layers: 1,
            in_channels: channels[n - 1],
            out_channels: channels[n - 1],
            add_sampler: false,
            num_attention_heads: Some(cfg.heads(n - 1)?),
            ..block(n - 1, "CrossAttnDownBlock2D", "mid_block".to_string())?
        };
        let mid_block = UNetMidBlock2DCrossAttn::new(&mid, vb.pp("mid_block"))?;

        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let bc = Block2DConfig {
                num_layers: cfg.layers_per_block + 1,
                in_channels: reversed[(i + 1).min(n - 1)],
                out_channels: reversed[i],
                prev_output_channel: if i == 0 { reversed[0] } else { reversed[i - 1] },
                num_attention_heads: if is_cross_attn_block(kind)? {
                    Some(cfg.heads(n - 1 - i)?)
                } else {
                    None
                },
                ..block(i, kind, format!("up_blocks.{i}"))?
            };
            up_blocks.push(UpBlock2D::new(&bc, vb.pp("up_blocks").pp(i))?);
        }

        Ok(Self {
            conv_in,
            time_embedding,
            down_blocks,
            up_blocks,
            mid_block,
            config: cfg.clone(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// `sample`: `(n, 4, h, w)`; `timestep`: one value for the whole batch;
    /// `encoder_hidden_states`: `(m, tokens, cross_dim)` with `n` a multiple of `m` (tiled inside
    /// the blocks). Returns the last up block's output `(n, block_out_channels[0], h, w)`
    /// (discarded by the pipeline) and the written bank.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Result<(Tensor, ReferenceBank)> {
        let (n, _, h, w) = sample.dims4()?;
        let cfg = &self.config;
        let factor = 1 << (cfg.block_out_channels.len() - 1);
        if h % factor != 0 || w % factor != 0 {
            candle_core::bail!("reference unet: latent size {h}×{w} is not a multiple of {factor}")
        }
        let sample = if cfg.center_input_sample {
            sample.affine(2.0, -1.0)?
        } else {
            sample.clone()
        };

        // 1. Time embedding, one row per batch item.
        let t_emb = timestep_sinusoid(
            &vec![timestep; n],
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
            sample.device(),
        )?
        .to_dtype(sample.dtype())?;
        let emb = self.time_embedding.forward(&t_emb)?;

        // 2. Down path. Banks are gathered per part, then ordered like the module traversal
        //    upstream pairs by (down, up, mid), not like the execution (down, mid, up).
        let mut down_bank = Vec::new();
        let mut xs = self.conv_in.forward(&sample)?;
        let mut res_samples = vec![xs.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&xs, &emb, encoder_hidden_states, &mut down_bank)?;
            xs = out;
            res_samples.extend(states);
        }

        // 3. Mid block.
        let mut mid_bank = Vec::new();
        xs = self
            .mid_block
            .forward(&xs, &emb, encoder_hidden_states, &mut mid_bank)?;

        // 4. Up path; the fork stops here (no conv_norm_out / conv_out).
        let mut up_bank = Vec::new();
        for block in &self.up_blocks {
            xs = block.forward(
                &xs,
                &mut res_samples,
                &emb,
                encoder_hidden_states,
                &mut up_bank,
            )?;
        }

        let entries: Vec<BankEntry> = down_bank
            .into_iter()
            .chain(up_bank)
            .chain(mid_bank)
            .collect();
        Ok((xs, ReferenceBank { entries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stable-diffusion-v1-5/unet/config.json` as written into the full-size manifest.
    const SD15_CONFIG: &str = r#"{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
        "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false, "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
        "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}"#;

    #[test]
    fn hallo2_config_matches_sd15_json() {
        let parsed: UNet2DConditionConfig = serde_json::from_str(SD15_CONFIG).unwrap();
        assert_eq!(parsed, UNet2DConditionConfig::hallo2());
        assert_eq!(parsed.heads(3).unwrap(), 8);
        assert_eq!(parsed.time_embed_dim(), 1280);
        parsed.validate().unwrap();
    }

    #[test]
    fn manifest_config_matches_hallo2() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/manifests/sd15_unet.json"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let parsed: UNet2DConditionConfig =
            serde_json::from_value(manifest["config"].clone()).unwrap();
        assert_eq!(parsed, UNet2DConditionConfig::hallo2());
    }

    #[test]
    fn tiny_config_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/hallo2-tiny/pretrained_models/stable-diffusion-v1-5/unet/config.json"
        );
        let cfg: UNet2DConditionConfig =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(cfg.block_out_channels, [32, 32, 64, 64]);
        assert_eq!(cfg.heads(0).unwrap(), 2);
        assert_eq!(cfg.cross_attention_dim, 32);
        cfg.validate().unwrap();
    }

    #[test]
    fn unsupported_options_are_rejected() {
        let cfg = UNet2DConditionConfig {
            use_linear_projection: true,
            ..UNet2DConditionConfig::hallo2()
        };
        assert!(cfg.validate().is_err());
        let cfg = UNet2DConditionConfig {
            attention_head_dim: PerBlock::One(7),
            ..UNet2DConditionConfig::hallo2()
        };
        assert!(cfg.validate().is_err());
    }
}
