//! Face-region encoder: hallo2 `hallo/models/face_locator.py` @ `58a9aa6` (`FaceLocator`).
//!
//! Keys: `conv_in`, `blocks.{0..2n-1}` (pairs: 3×3 keeping channels, then 3×3 stride 2 to the next
//! width), `conv_out`. Every conv is an `InflatedConv3d`, i.e. a 2-D conv applied to each frame;
//! SiLU follows every conv but the last. The output is added to the 3-D UNet's `conv_in` output.

use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// `FaceLocator.__init__` arguments.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct FaceLocatorConfig {
    /// Output channels (the UNet's first block width).
    pub conditioning_embedding_channels: usize,
    #[serde(default = "default_conditioning_channels")]
    pub conditioning_channels: usize,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
}

fn default_conditioning_channels() -> usize {
    3
}
fn default_block_out_channels() -> Vec<usize> {
    vec![16, 32, 64, 128]
}

impl FaceLocatorConfig {
    /// `FaceLocator(conditioning_embedding_channels=320)` in hallo2 `scripts/inference_long.py`
    /// @ `58a9aa6`, defaults otherwise.
    pub fn hallo2() -> Self {
        Self {
            conditioning_embedding_channels: 320,
            conditioning_channels: default_conditioning_channels(),
            block_out_channels: default_block_out_channels(),
        }
    }
}

/// Per-frame conv stack from the face-region mask to a latent-resolution feature.
#[derive(Debug, Clone)]
pub struct FaceLocator {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl FaceLocator {
    pub fn new(cfg: &FaceLocatorConfig, vb: VarBuilder) -> Result<Self> {
        let channels = &cfg.block_out_channels;
        let (Some(&first), Some(&last)) = (channels.first(), channels.last()) else {
            candle_core::bail!("face_locator: block_out_channels must not be empty");
        };
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let down = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let mut blocks = Vec::with_capacity(2 * (channels.len() - 1));
        for pair in channels.windows(2) {
            let (channel_in, channel_out) = (pair[0], pair[1]);
            let i = blocks.len();
            blocks.push(conv2d(
                channel_in,
                channel_in,
                3,
                same,
                vb.pp("blocks").pp(i),
            )?);
            blocks.push(conv2d(
                channel_in,
                channel_out,
                3,
                down,
                vb.pp("blocks").pp(i + 1),
            )?);
        }
        Ok(Self {
            conv_in: conv2d(cfg.conditioning_channels, first, 3, same, vb.pp("conv_in"))?,
            blocks,
            conv_out: conv2d(
                last,
                cfg.conditioning_embedding_channels,
                3,
                same,
                vb.pp("conv_out"),
            )?,
        })
    }
}

impl Module for FaceLocator {
    /// `conditioning`: `(b, conditioning_channels, f, h, w)` →
    /// `(b, conditioning_embedding_channels, f, h/2ⁿ, w/2ⁿ)` (n = 3 for four block widths).
    fn forward(&self, conditioning: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = conditioning.dims5()?;
        // "b c f h w -> (b f) c h w" (InflatedConv3d)
        let xs = conditioning
            .permute((0, 2, 1, 3, 4))?
            .reshape((b * f, c, h, w))?;
        let mut embedding = self.conv_in.forward(&xs)?.silu()?;
        for block in &self.blocks {
            embedding = block.forward(&embedding)?.silu()?;
        }
        let embedding = self.conv_out.forward(&embedding)?;
        let (_, c_out, h_out, w_out) = embedding.dims4()?;
        // "(b f) c h w -> b c f h w"
        embedding
            .reshape((b, f, c_out, h_out, w_out))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hallo2_config_matches_inference_script() {
        let cfg = FaceLocatorConfig::hallo2();
        assert_eq!(cfg.conditioning_embedding_channels, 320);
        assert_eq!(cfg.conditioning_channels, 3);
        assert_eq!(cfg.block_out_channels, [16, 32, 64, 128]);
        let parsed: FaceLocatorConfig =
            serde_json::from_str(r#"{"conditioning_embedding_channels": 320}"#).expect("parsing");
        assert_eq!(parsed, cfg);
    }
}
