//! diffusers `AutoencoderKL` (`models/autoencoders/autoencoder_kl.py`, diffusers 0.32.2) as Hallo2
//! uses it: the `stabilityai/sd-vae-ft-mse` VAE, read from its diffusers safetensors.
//!
//! Hallo2 encodes the reference and motion frames with `latent_dist.mean` (no sampling) and decodes
//! one frame at a time. Neither [`AutoencoderKL::encode`] nor [`AutoencoderKL::decode`] applies the
//! latent scaling: the pipeline multiplies by [`SCALING_FACTOR`] after encoding and divides by it
//! before decoding, as `hallo/animate/face_animate.py` does with its hard-coded 0.18215.
//!
//! ```text
//! x (b,3,H,W) ─▶ Encoder ─▶ quant_conv ─▶ moments (b,8,H/8,W/8) = [mean | logvar]
//! z (b,4,h,w) ─▶ post_quant_conv ─▶ Decoder ─▶ (b,3,8h,8w)
//! ```

pub mod attention;
pub mod blocks;
pub mod decoder;
pub mod encoder;

use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

pub use decoder::Decoder;
pub use encoder::Encoder;

/// Latent scale of the SD-1.x VAE. Hallo2's pipeline hard-codes it (it never reads
/// [`AutoencoderKLConfig::scaling_factor`]): `latents = mean · 0.18215`, `decode(latents / 0.18215)`.
pub const SCALING_FACTOR: f64 = 0.18215;

/// diffusers' `AutoencoderKL.__init__` arguments, as stored in the VAE's `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct AutoencoderKLConfig {
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    /// One `"DownEncoderBlock2D"` per resolution (the only type this port supports).
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    /// One `"UpDecoderBlock2D"` per resolution (the only type this port supports).
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder block; decoder blocks have one more.
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    /// `"silu"` (alias `"swish"`), the only activation the encoder/decoder blocks use here.
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    /// Only used by diffusers' tiled mode; kept for completeness.
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    /// Not applied by `encode`/`decode`; Hallo2 uses [`SCALING_FACTOR`] regardless of this value.
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
    #[serde(default)]
    pub latents_std: Option<Vec<f64>>,
    /// Upcast to f32 in fp16 pipelines; no effect in the f32 path.
    #[serde(default = "default_true")]
    pub force_upcast: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

fn default_channels() -> usize {
    3
}
fn default_down_block_types() -> Vec<String> {
    vec!["DownEncoderBlock2D".to_string()]
}
fn default_up_block_types() -> Vec<String> {
    vec!["UpDecoderBlock2D".to_string()]
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_layers_per_block() -> usize {
    1
}
fn default_act_fn() -> String {
    "silu".to_string()
}
fn default_latent_channels() -> usize {
    4
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_sample_size() -> usize {
    32
}
fn default_scaling_factor() -> f64 {
    SCALING_FACTOR
}
fn default_true() -> bool {
    true
}

impl AutoencoderKLConfig {
    /// `stabilityai/sd-vae-ft-mse` `config.json` (shipped as `pretrained_models/sd-vae-ft-mse` in
    /// `fudan-generative-ai/hallo2`), loaded by `AutoencoderKL.from_pretrained` in hallo2
    /// `scripts/inference_long.py` @ 58a9aa6.
    pub fn hallo2() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".to_string(); 4],
            up_block_types: vec!["UpDecoderBlock2D".to_string(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".to_string(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 256,
            scaling_factor: SCALING_FACTOR,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }

    /// Rejects what this port does not implement (other block types or activations).
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            candle_core::bail!("vae config: block_out_channels is empty");
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            candle_core::bail!(
                "vae config: {} down and {} up block types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            );
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            candle_core::bail!("vae config: unsupported down block type {t:?}");
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            candle_core::bail!("vae config: unsupported up block type {t:?}");
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            candle_core::bail!("vae config: unsupported act_fn {:?}", self.act_fn);
        }
        if self.norm_num_groups == 0 {
            candle_core::bail!("vae config: norm_num_groups is 0");
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| **c % self.norm_num_groups != 0)
        {
            candle_core::bail!(
                "vae config: {c} channels not divisible by {} groups",
                self.norm_num_groups
            );
        }
        Ok(())
    }
}

/// diffusers `DiagonalGaussianDistribution` without sampling: the two halves of the moments.
#[derive(Debug, Clone)]
pub struct DiagonalGaussianDistribution {
    /// `latent_dist.mean`, `(b, latent_channels, h, w)`: what Hallo2 uses as the latent.
    pub mean: Tensor,
    /// Log-variance clamped to `[-30, 20]` as upstream does.
    pub logvar: Tensor,
}

impl DiagonalGaussianDistribution {
    /// Splits `parameters` `(b, 2·latent, h, w)` into mean and (clamped) log-variance.
    pub fn new(parameters: &Tensor) -> Result<Self> {
        let (_, c2, _, _) = parameters.dims4()?;
        if c2 % 2 != 0 {
            candle_core::bail!("vae moments have an odd channel count {c2}");
        }
        let c = c2 / 2;
        Ok(Self {
            mean: parameters.narrow(1, 0, c)?,
            logvar: parameters.narrow(1, c, c)?.clamp(-30f32, 20f32)?,
        })
    }
}

/// The VAE: `encoder`, `decoder`, `quant_conv`, `post_quant_conv`.
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: AutoencoderKLConfig,
}

impl AutoencoderKL {
    /// Loads the VAE from a VarBuilder rooted at the safetensors' top level. The mid-block
    /// attentions may use the current (`to_q/to_k/to_v/to_out.0`) or the legacy
    /// (`query/key/value/proj_attn`) key names, see [`attention::Attention::new`].
    pub fn new(cfg: &AutoencoderKLConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let moments = 2 * cfg.latent_channels;
        let quant_conv = if cfg.use_quant_conv {
            Some(conv2d(
                moments,
                moments,
                1,
                Default::default(),
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            let latent = cfg.latent_channels;
            Some(conv2d(
                latent,
                latent,
                1,
                Default::default(),
                vb.pp("post_quant_conv"),
            )?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            quant_conv,
            post_quant_conv,
            config: cfg.clone(),
        })
    }

    /// The configuration the VAE was built from.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// `vae.encode(x).latent_dist`: `x` `(b, in_channels, H, W)` in [-1, 1], H and W multiples of
    /// 2^(blocks−1); returns mean and log-variance `(b, latent_channels, H/8, W/8)`, unscaled.
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        let moments = self.encoder.forward(x)?;
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(&moments)?,
            None => moments,
        };
        DiagonalGaussianDistribution::new(&moments)
    }

    /// `vae.decode(z).sample`: `z` `(b, latent_channels, h, w)`, already divided by the scaling
    /// factor; returns `(b, out_channels, 8h, 8w)`, roughly in [-1, 1] (not clamped).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z)?,
            None => z.clone(),
        };
        self.decoder.forward(&z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[test]
    fn hallo2_matches_the_official_config_json() {
        // The full-size manifest records sd-vae-ft-mse's config.json as read by diffusers.
        let text = std::fs::read_to_string(fixtures().join("manifests/sd_vae_ft_mse.json"))
            .expect("reading the vae manifest");
        let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest json");
        let cfg: AutoencoderKLConfig =
            serde_json::from_value(manifest["config"].clone()).expect("parsing the config");
        assert_eq!(cfg, AutoencoderKLConfig::hallo2());
        assert_eq!(
            manifest["scaling_factor_used_by_pipeline"].as_f64(),
            Some(SCALING_FACTOR)
        );
        cfg.validate().expect("the official config is supported");
    }

    #[test]
    fn tiny_config_parses_with_python_defaults() {
        let path = fixtures().join("hallo2-tiny/pretrained_models/sd-vae-ft-mse/config.json");
        let text = std::fs::read_to_string(path).expect("reading the tiny vae config");
        let cfg: AutoencoderKLConfig = serde_json::from_str(&text).expect("parsing the config");
        assert_eq!(cfg.block_out_channels, vec![16, 32, 32, 32]);
        assert_eq!(cfg.layers_per_block, 1);
        assert_eq!(cfg.norm_num_groups, 8);
        assert_eq!(cfg.latent_channels, 4);
        assert_eq!(cfg.down_block_types.len(), 4);
        // Absent from the file, so the Python defaults apply.
        assert_eq!(cfg.scaling_factor, 0.18215);
        assert!(cfg.use_quant_conv && cfg.use_post_quant_conv && cfg.mid_block_add_attention);
        assert_eq!(cfg.shift_factor, None);
        cfg.validate().expect("the tiny config is supported");
    }

    #[test]
    fn unsupported_configs_are_rejected() {
        let mut cfg = AutoencoderKLConfig::hallo2();
        cfg.act_fn = "gelu".to_string();
        assert!(cfg.validate().is_err());
        let mut cfg = AutoencoderKLConfig::hallo2();
        cfg.up_block_types[1] = "AttnUpDecoderBlock2D".to_string();
        assert!(cfg.validate().is_err());
        let mut cfg = AutoencoderKLConfig::hallo2();
        cfg.down_block_types.pop();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn logvar_is_clamped_like_diffusers() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let params = Tensor::new(&[1f32, -2.0, -50.0, 40.0], &dev)?.reshape((1, 4, 1, 1))?;
        let dist = DiagonalGaussianDistribution::new(&params)?;
        assert_eq!(dist.mean.flatten_all()?.to_vec1::<f32>()?, vec![1.0, -2.0]);
        assert_eq!(
            dist.logvar.flatten_all()?.to_vec1::<f32>()?,
            vec![-30.0, 20.0]
        );
        Ok(())
    }
}
