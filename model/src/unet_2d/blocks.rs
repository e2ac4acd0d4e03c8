//! hallo2 `hallo/models/unet_2d_blocks.py` @ `58a9aa6` (the diffusers 2-D UNet blocks with hallo's
//! [`Transformer2DModel`]): `CrossAttnDownBlock2D`, `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D`, `UpBlock2D`, as the reference UNet (eval mode) runs them.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::transformer_2d::{Transformer2DModel, Transformer2DModelConfig};
use crate::mutual_self_attention::BankEntry;
use crate::nn::{Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};

/// Arguments shared by every block (`get_down_block` / `get_up_block` / mid block).
#[derive(Debug, Clone, PartialEq)]
pub struct Block2DConfig {
    /// Number of (ResNet, transformer) layers.
    pub num_layers: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Up blocks only: the channels coming from the block below (`prev_output_channel`).
    pub prev_output_channel: usize,
    pub temb_channels: usize,
    /// Adds the down- or upsampler.
    pub add_sampler: bool,
    pub resnet_eps: f64,
    pub resnet_groups: usize,
    /// Attention heads of the spatial transformers; `None` for the plain blocks.
    pub num_attention_heads: Option<usize>,
    pub cross_attention_dim: usize,
    /// Module path inside the UNet (`down_blocks.0`).
    pub path: String,
}

impl Block2DConfig {
    fn resnet(&self, in_channels: usize, out_channels: usize) -> ResnetBlock2DConfig {
        ResnetBlock2DConfig {
            in_channels,
            out_channels,
            temb_channels: Some(self.temb_channels),
            groups: self.resnet_groups,
            eps: self.resnet_eps,
        }
    }

    fn transformer(&self, heads: usize, channels: usize, j: usize) -> Transformer2DModelConfig {
        Transformer2DModelConfig {
            num_attention_heads: heads,
            attention_head_dim: channels / heads,
            in_channels: channels,
            norm_num_groups: self.resnet_groups,
            cross_attention_dim: self.cross_attention_dim,
            path: format!("{}.attentions.{j}", self.path),
        }
    }

    fn attentions(&self, vb: &VarBuilder, channels: usize) -> Result<Vec<Transformer2DModel>> {
        match self.num_attention_heads {
            Some(heads) => (0..self.num_layers)
                .map(|j| {
                    Transformer2DModel::new(
                        &self.transformer(heads, channels, j),
                        vb.pp("attentions").pp(j),
                    )
                })
                .collect(),
            None => Ok(Vec::new()),
        }
    }
}

/// `CrossAttnDownBlock2D` (with `attentions`) or `DownBlock2D` (without).
#[derive(Debug, Clone)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsamplers: Option<Downsample2D>,
}

impl DownBlock2D {
    /// Loads the block rooted at `vb` (`down_blocks.{i}`, `mid_block`, `up_blocks.{i}`).
    pub fn new(cfg: &Block2DConfig, vb: VarBuilder) -> Result<Self> {
        let resnets = (0..cfg.num_layers)
            .map(|i| {
                let cin = if i == 0 {
                    cfg.in_channels
                } else {
                    cfg.out_channels
                };
                ResnetBlock2D::new(&cfg.resnet(cin, cfg.out_channels), vb.pp("resnets").pp(i))
            })
            .collect::<Result<_>>()?;
        let downsamplers = if cfg.add_sampler {
            let vb = vb.pp("downsamplers").pp("0");
            Some(Downsample2D::new(cfg.out_channels, cfg.out_channels, vb)?)
        } else {
            None
        };
        Ok(Self {
            attentions: cfg.attentions(&vb, cfg.out_channels)?,
            resnets,
            downsamplers,
        })
    }

    /// Returns the block output and the states it pushes onto the skip stack.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        temb: &Tensor,
        encoder_hidden_states: &Tensor,
        bank: &mut Vec<BankEntry>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut xs = hidden_states.clone();
        let mut output_states = Vec::with_capacity(self.resnets.len() + 1);
        for (j, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                xs = attn.forward(&xs, encoder_hidden_states, bank)?;
            }
            output_states.push(xs.clone());
        }
        if let Some(down) = &self.downsamplers {
            xs = down.forward(&xs)?;
            output_states.push(xs.clone());
        }
        Ok((xs, output_states))
    }
}

/// `UNetMidBlock2DCrossAttn`: ResNet, then (transformer, ResNet) × `num_layers`.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    /// Loads the block rooted at `vb` (`down_blocks.{i}`, `mid_block`, `up_blocks.{i}`).
    pub fn new(cfg: &Block2DConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.in_channels;
        let resnets = (0..=cfg.num_layers)
            .map(|i| ResnetBlock2D::new(&cfg.resnet(c, c), vb.pp("resnets").pp(i)))
            .collect::<Result<_>>()?;
        if cfg.num_attention_heads.is_none() {
            candle_core::bail!("{}: the mid block needs attention heads", cfg.path)
        }
        Ok(Self {
            attentions: cfg.attentions(&vb, c)?,
            resnets,
        })
    }

    /// `hidden_states`: `(n, c, h, w)`; `temb`: `(n, temb_channels)`.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        temb: &Tensor,
        encoder_hidden_states: &Tensor,
        bank: &mut Vec<BankEntry>,
    ) -> Result<Tensor> {
        let mut xs = self.resnets[0].forward(hidden_states, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            xs = attn.forward(&xs, encoder_hidden_states, bank)?;
            xs = resnet.forward(&xs, Some(temb))?;
        }
        Ok(xs)
    }
}

/// `CrossAttnUpBlock2D` (with `attentions`) or `UpBlock2D` (without).
#[derive(Debug, Clone)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsamplers: Option<Upsample2D>,
}

impl UpBlock2D {
    /// Loads the block rooted at `vb` (`down_blocks.{i}`, `mid_block`, `up_blocks.{i}`).
    pub fn new(cfg: &Block2DConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.num_layers;
        let resnets = (0..n)
            .map(|i| {
                let res_skip = if i == n - 1 {
                    cfg.in_channels
                } else {
                    cfg.out_channels
                };
                let resnet_in = if i == 0 {
                    cfg.prev_output_channel
                } else {
                    cfg.out_channels
                };
                let rc = cfg.resnet(resnet_in + res_skip, cfg.out_channels);
                ResnetBlock2D::new(&rc, vb.pp("resnets").pp(i))
            })
            .collect::<Result<_>>()?;
        let upsamplers = if cfg.add_sampler {
            Some(Upsample2D::new(
                cfg.out_channels,
                cfg.out_channels,
                vb.pp("upsamplers").pp("0"),
            )?)
        } else {
            None
        };
        Ok(Self {
            attentions: cfg.attentions(&vb, cfg.out_channels)?,
            resnets,
            upsamplers,
        })
    }

    /// Number of skip states the block pops.
    pub fn num_layers(&self) -> usize {
        self.resnets.len()
    }

    /// `res_hidden_states`: the skip stack; one state is popped per layer.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        res_hidden_states: &mut Vec<Tensor>,
        temb: &Tensor,
        encoder_hidden_states: &Tensor,
        bank: &mut Vec<BankEntry>,
    ) -> Result<Tensor> {
        let mut xs = hidden_states.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let Some(skip) = res_hidden_states.pop() else {
                candle_core::bail!("up block: the skip stack is empty")
            };
            xs = Tensor::cat(&[&xs, &skip], 1)?;
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                xs = attn.forward(&xs, encoder_hidden_states, bank)?;
            }
        }
        if let Some(up) = &self.upsamplers {
            xs = up.forward(&xs)?;
        }
        Ok(xs)
    }
}
