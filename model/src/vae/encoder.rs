//! diffusers `Encoder` (`models/autoencoders/vae.py`, diffusers 0.32.2) with `double_z=True`.
//!
//! Keys: `conv_in`, `down_blocks.{i}`, `mid_block`, `conv_norm_out`, `conv_out`.

use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, GroupNorm, VarBuilder, group_norm};

use super::AutoencoderKLConfig;
use super::blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
};

/// GroupNorm/ResNet epsilon of every encoder and decoder layer (hard-coded upstream).
pub(crate) const EPS: f64 = 1e-6;

/// Image `(b, in_channels, H, W)` → moments `(b, 2·latent_channels, H/2^(n−1), W/2^(n−1))`.
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// Builds the encoder of `cfg` (`vb` at the `encoder` prefix).
    pub fn new(cfg: &AutoencoderKLConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let channels = &cfg.block_out_channels;
        let last = channels[channels.len() - 1];
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(cfg.in_channels, channels[0], 3, conv3, vb.pp("conv_in"))?;
        let down_blocks = channels
            .iter()
            .enumerate()
            .map(|(i, &out_channels)| {
                let block = DownEncoderBlock2DConfig {
                    in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                    out_channels,
                    num_layers: cfg.layers_per_block,
                    resnet_groups: cfg.norm_num_groups,
                    resnet_eps: EPS,
                    add_downsample: i + 1 < channels.len(),
                };
                DownEncoderBlock2D::new(&block, vb.pp("down_blocks").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let mid = UNetMidBlock2DConfig {
            in_channels: last,
            resnet_groups: cfg.norm_num_groups,
            resnet_eps: EPS,
            add_attention: cfg.mid_block_add_attention,
            attention_head_dim: last,
        };
        let moments = 2 * cfg.latent_channels;
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: UNetMidBlock2D::new(&mid, vb.pp("mid_block"))?,
            conv_norm_out: group_norm(cfg.norm_num_groups, last, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(last, moments, 3, conv3, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let factor = 1 << (self.down_blocks.len() - 1);
        if h % factor != 0 || w % factor != 0 {
            candle_core::bail!("vae encoder input {h}×{w} is not a multiple of {factor}");
        }
        let mut xs = self.conv_in.forward(xs)?;
        for block in &self.down_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.mid_block.forward(&xs)?;
        let xs = self.conv_norm_out.forward(&xs)?.silu()?;
        self.conv_out.forward(&xs)
    }
}
