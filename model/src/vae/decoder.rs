//! diffusers `Decoder` (`models/autoencoders/vae.py`, diffusers 0.32.2, `norm_type="group"`).
//!
//! Keys: `conv_in`, `mid_block`, `up_blocks.{i}` (channels reversed, `layers_per_block + 1`
//! ResNets each), `conv_norm_out`, `conv_out`.

use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, GroupNorm, VarBuilder, group_norm};

use super::AutoencoderKLConfig;
use super::blocks::{
    UNetMidBlock2D, UNetMidBlock2DConfig, UpDecoderBlock2D, UpDecoderBlock2DConfig,
};
use super::encoder::EPS;

/// Latent `(b, latent_channels, h, w)` → image `(b, out_channels, h·2^(n−1), w·2^(n−1))`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// Builds the decoder of `cfg` (`vb` at the `decoder` prefix).
    pub fn new(cfg: &AutoencoderKLConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let reversed: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let first = reversed[0];
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let mid = UNetMidBlock2DConfig {
            in_channels: first,
            resnet_groups: cfg.norm_num_groups,
            resnet_eps: EPS,
            add_attention: cfg.mid_block_add_attention,
            attention_head_dim: first,
        };
        let up_blocks = reversed
            .iter()
            .enumerate()
            .map(|(i, &out_channels)| {
                let block = UpDecoderBlock2DConfig {
                    in_channels: if i == 0 { first } else { reversed[i - 1] },
                    out_channels,
                    num_layers: cfg.layers_per_block + 1,
                    resnet_groups: cfg.norm_num_groups,
                    resnet_eps: EPS,
                    add_upsample: i + 1 < reversed.len(),
                };
                UpDecoderBlock2D::new(&block, vb.pp("up_blocks").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let last = reversed[reversed.len() - 1];
        Ok(Self {
            conv_in: conv2d(cfg.latent_channels, first, 3, conv3, vb.pp("conv_in"))?,
            mid_block: UNetMidBlock2D::new(&mid, vb.pp("mid_block"))?,
            up_blocks,
            conv_norm_out: group_norm(cfg.norm_num_groups, last, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(last, cfg.out_channels, 3, conv3, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let xs = self.conv_in.forward(z)?;
        let mut xs = self.mid_block.forward(&xs)?;
        for block in &self.up_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.conv_norm_out.forward(&xs)?.silu()?;
        self.conv_out.forward(&xs)
    }
}
