//! The VAE's blocks from diffusers `models/unets/unet_2d_blocks.py` (`DownEncoderBlock2D`,
//! `UpDecoderBlock2D`, `UNetMidBlock2D`) and its padding-0 `Downsample2D`
//! (`models/downsampling.py`), diffusers 0.32.2. No time embedding anywhere (`temb_channels=None`).

use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::attention::{Attention, AttentionBlockConfig};
use crate::nn::{ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};

/// `Downsample2D(use_conv=True, padding=0)`: zero-pad right and bottom by one, then a 3×3
/// stride-2 convolution without padding. Key: `conv`.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    /// Loads `conv` (`channels` → `out_channels`, 3×3, stride 2, no padding).
    pub fn new(channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv: conv2d(channels, out_channels, 3, cfg, vb.pp("conv"))?,
        })
    }
}

impl Module for Downsample2D {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // F.pad(x, (0, 1, 0, 1)): the asymmetric pad of the original LDM encoder.
        let xs = xs.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        self.conv.forward(&xs)
    }
}

/// Arguments of `get_down_block("DownEncoderBlock2D", ..)` in the VAE encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownEncoderBlock2DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    pub resnet_groups: usize,
    pub resnet_eps: f64,
    pub add_downsample: bool,
}

/// `resnets.{i}` then, except in the last block, `downsamplers.0`.
#[derive(Debug, Clone)]
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsamplers: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    /// Loads `num_layers` ResNets (the first maps `in_channels` → `out_channels`) and the
    /// optional downsampler.
    pub fn new(cfg: &DownEncoderBlock2DConfig, vb: VarBuilder) -> Result<Self> {
        let resnets = resnet_stack(
            cfg.in_channels,
            cfg.out_channels,
            cfg.num_layers,
            (cfg.resnet_groups, cfg.resnet_eps),
            &vb,
        )?;
        let downsamplers = if cfg.add_downsample {
            let vb = vb.pp("downsamplers").pp("0");
            Some(Downsample2D::new(cfg.out_channels, cfg.out_channels, vb)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsamplers,
        })
    }
}

impl Module for DownEncoderBlock2D {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = run_resnets(&self.resnets, xs)?;
        match &self.downsamplers {
            Some(down) => down.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// `resnets.{0..num_layers}` without time embedding; the first maps `in_channels` →
/// `out_channels`. `norm` is `(groups, eps)`.
fn resnet_stack(
    in_channels: usize,
    out_channels: usize,
    num_layers: usize,
    (groups, eps): (usize, f64),
    vb: &VarBuilder,
) -> Result<Vec<ResnetBlock2D>> {
    (0..num_layers)
        .map(|i| {
            let resnet = ResnetBlock2DConfig {
                in_channels: if i == 0 { in_channels } else { out_channels },
                out_channels,
                temb_channels: None,
                groups,
                eps,
            };
            ResnetBlock2D::new(&resnet, vb.pp("resnets").pp(i))
        })
        .collect()
}

fn run_resnets(resnets: &[ResnetBlock2D], xs: &Tensor) -> Result<Tensor> {
    resnets
        .iter()
        .try_fold(xs.clone(), |xs, resnet| resnet.forward(&xs, None))
}

/// Arguments of `get_up_block("UpDecoderBlock2D", ..)` in the VAE decoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpDecoderBlock2DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    pub resnet_groups: usize,
    pub resnet_eps: f64,
    pub add_upsample: bool,
}

/// `resnets.{i}` then, except in the last block, `upsamplers.0` (nearest ×2, 3×3 conv).
#[derive(Debug, Clone)]
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsamplers: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    /// Loads `num_layers` ResNets (the first maps `in_channels` → `out_channels`) and the
    /// optional upsampler.
    pub fn new(cfg: &UpDecoderBlock2DConfig, vb: VarBuilder) -> Result<Self> {
        let resnets = resnet_stack(
            cfg.in_channels,
            cfg.out_channels,
            cfg.num_layers,
            (cfg.resnet_groups, cfg.resnet_eps),
            &vb,
        )?;
        let upsamplers = if cfg.add_upsample {
            let vb = vb.pp("upsamplers").pp("0");
            Some(Upsample2D::new(cfg.out_channels, cfg.out_channels, vb)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            upsamplers,
        })
    }
}

impl Module for UpDecoderBlock2D {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = run_resnets(&self.resnets, xs)?;
        match &self.upsamplers {
            Some(up) => up.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// Arguments of the `UNetMidBlock2D` built by the VAE encoder and decoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UNetMidBlock2DConfig {
    pub in_channels: usize,
    pub resnet_groups: usize,
    pub resnet_eps: f64,
    /// `mid_block_add_attention` of the VAE config.
    pub add_attention: bool,
    /// The VAE passes `block_out_channels[-1]`: one head.
    pub attention_head_dim: usize,
}

/// `resnets.0` → `attentions.0` → `resnets.1` (`num_layers=1`), all at `in_channels`.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Option<Attention>,
}

impl UNetMidBlock2D {
    /// Loads `resnets.0`, `resnets.1` and, with `add_attention`, `attentions.0`.
    pub fn new(cfg: &UNetMidBlock2DConfig, vb: VarBuilder) -> Result<Self> {
        let resnet = ResnetBlock2DConfig {
            in_channels: cfg.in_channels,
            out_channels: cfg.in_channels,
            temb_channels: None,
            groups: cfg.resnet_groups,
            eps: cfg.resnet_eps,
        };
        let resnets = (0..2)
            .map(|i| ResnetBlock2D::new(&resnet, vb.pp("resnets").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let attentions = if cfg.add_attention {
            // attn_groups = resnet_groups and eps = resnet_eps (resnet_time_scale_shift="default").
            let attention = AttentionBlockConfig {
                channels: cfg.in_channels,
                attention_head_dim: cfg.attention_head_dim,
                norm_num_groups: cfg.resnet_groups,
                eps: cfg.resnet_eps,
            };
            Some(Attention::new(&attention, vb.pp("attentions").pp("0"))?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
        })
    }
}

impl Module for UNetMidBlock2D {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.resnets[0].forward(xs, None)?;
        if let Some(attention) = &self.attentions {
            xs = attention.forward(&xs)?;
        }
        self.resnets[1].forward(&xs, None)
    }
}
