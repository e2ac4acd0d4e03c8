//! hallo2 `hallo/models/transformer_2d.py::Transformer2DModel` (continuous input, 1×1-conv
//! projections, one transformer block) @ `58a9aa6`, with its block in reference-bank write mode.

use candle_core::{Module, Result, Tensor};
use candle_nn::{GroupNorm, Linear, VarBuilder, group_norm};

use crate::attention::{BasicTransformerBlock, TransformerBlockConfig, conv1x1_as_linear};
use crate::mutual_self_attention::BankEntry;

/// GroupNorm eps of the transformer wrappers (hard-coded upstream).
pub(crate) const TRANSFORMER_NORM_EPS: f64 = 1e-6;

/// Shape of one spatial transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformer2DModelConfig {
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub norm_num_groups: usize,
    pub cross_attention_dim: usize,
    /// Module path inside the UNet (`down_blocks.0.attentions.0`).
    pub path: String,
}

impl Transformer2DModelConfig {
    /// The config of `transformer_blocks.0`.
    pub(crate) fn block(&self) -> TransformerBlockConfig {
        TransformerBlockConfig {
            dim: self.num_attention_heads * self.attention_head_dim,
            num_attention_heads: self.num_attention_heads,
            attention_head_dim: self.attention_head_dim,
            cross_attention_dim: self.cross_attention_dim,
            path: format!("{}.transformer_blocks.0", self.path),
            stacked_audio: false,
        }
    }
}

/// GroupNorm → 1×1 conv → [`BasicTransformerBlock`] → 1×1 conv → + residual.
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    /// 1×1 `nn.Conv2d`, applied per token.
    proj_in: Linear,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer2DModel {
    /// Loads the transformer rooted at `vb` (`…attentions.{j}`).
    pub fn new(cfg: &Transformer2DModelConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.in_channels;
        let inner = cfg.num_attention_heads * cfg.attention_head_dim;
        Ok(Self {
            norm: group_norm(cfg.norm_num_groups, c, TRANSFORMER_NORM_EPS, vb.pp("norm"))?,
            proj_in: conv1x1_as_linear(c, inner, vb.pp("proj_in"))?,
            transformer_blocks: vec![BasicTransformerBlock::new(
                &cfg.block(),
                vb.pp("transformer_blocks").pp("0"),
            )?],
            proj_out: conv1x1_as_linear(inner, c, vb.pp("proj_out"))?,
        })
    }

    /// `hidden_states`: `(n, c, h, w)`; `encoder_hidden_states`: `(m, tokens, cross_dim)`.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
        bank: &mut Vec<BankEntry>,
    ) -> Result<Tensor> {
        let (n, c, h, w) = hidden_states.dims4()?;
        let residual = hidden_states;
        // "n c h w -> n (h w) c"; contiguous because candle 0.11.1's batched matmul (used by
        // `Linear` on 3-D input) returns wrong values for a transposed left operand.
        let xs = self
            .norm
            .forward(hidden_states)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let mut xs = self.proj_in.forward(&xs)?;
        for block in &self.transformer_blocks {
            xs = block.forward(&xs, encoder_hidden_states, bank)?;
        }
        let xs = self.proj_out.forward(&xs)?;
        // "n (h w) c -> n c h w"
        let xs = xs.transpose(1, 2)?.reshape((n, c, h, w))?;
        xs + residual
    }
}
