//! hallo2 `hallo/models/transformer_3d.py::Transformer3DModel` @ `58a9aa6`, in its two roles:
//! the spatial transformer ([`Transformer3DModel`], one reference-bank reader block) and the
//! audio module ([`AudioTransformer3DModel`], `use_audio_module=True`).
//!
//! Both work on frames folded into the batch, `((b f), c, h, w)`, which is what the Python does
//! after `rearrange(x, "b c f h w -> (b f) c h w")`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{GroupNorm, Linear, VarBuilder, group_norm};

use crate::attention::{
    AudioBranchInputs, AudioTemporalBasicTransformerBlock, TemporalBasicTransformerBlock,
    TransformerBlockConfig, conv1x1_as_linear,
};
use crate::mutual_self_attention::ReaderBank;
use crate::unet_2d::transformer_2d::TRANSFORMER_NORM_EPS;

/// Shape of one spatial or audio transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformer3DModelConfig {
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    /// Channels of the UNet feature map (GroupNorm, `proj_in` input, `proj_out` output).
    pub in_channels: usize,
    pub norm_num_groups: usize,
    /// Face-token width (spatial) or `audio_attention_dim` (audio).
    pub cross_attention_dim: usize,
    /// Module path inside the UNet (`down_blocks.0.attentions.0`).
    pub path: String,
    /// Audio modules only: see [`TransformerBlockConfig::stacked_audio`].
    pub stacked_audio: bool,
}

impl Transformer3DModelConfig {
    fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    fn block(&self) -> TransformerBlockConfig {
        TransformerBlockConfig {
            dim: self.inner_dim(),
            num_attention_heads: self.num_attention_heads,
            attention_head_dim: self.attention_head_dim,
            cross_attention_dim: self.cross_attention_dim,
            path: format!("{}.transformer_blocks.0", self.path),
            stacked_audio: self.stacked_audio,
        }
    }
}

/// GroupNorm (eps 1e-6) → 1×1 conv, as tokens `((b f), h·w, inner)`.
fn tokens_in(norm: &GroupNorm, proj_in: &Linear, xs: &Tensor) -> Result<Tensor> {
    // "n c h w -> n (h w) c"; contiguous because candle 0.11.1's batched matmul returns wrong
    // values for a transposed left operand.
    let xs = norm
        .forward(xs)?
        .flatten_from(2)?
        .transpose(1, 2)?
        .contiguous()?;
    proj_in.forward(&xs)
}

/// 1×1 conv back to `c` channels, as the image `(n, c, h, w)`.
fn tokens_out(
    proj_out: &Linear,
    xs: &Tensor,
    (n, c, h, w): (usize, usize, usize, usize),
) -> Result<Tensor> {
    // "n (h w) c -> n c h w"
    proj_out.forward(xs)?.transpose(1, 2)?.reshape((n, c, h, w))
}

/// The spatial transformer of the denoising UNet: GroupNorm → 1×1 conv →
/// [`TemporalBasicTransformerBlock`] (reads the reference bank) → 1×1 conv → + residual.
#[derive(Debug, Clone)]
pub struct Transformer3DModel {
    norm: GroupNorm,
    proj_in: Linear,
    transformer_blocks: Vec<TemporalBasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer3DModel {
    /// Loads the transformer rooted at `vb` (`…attentions.{j}`).
    pub fn new(cfg: &Transformer3DModelConfig, vb: VarBuilder) -> Result<Self> {
        let (c, inner) = (cfg.in_channels, cfg.inner_dim());
        Ok(Self {
            norm: group_norm(cfg.norm_num_groups, c, TRANSFORMER_NORM_EPS, vb.pp("norm"))?,
            proj_in: conv1x1_as_linear(c, inner, vb.pp("proj_in"))?,
            transformer_blocks: vec![TemporalBasicTransformerBlock::new(
                &cfg.block(),
                vb.pp("transformer_blocks").pp("0"),
            )?],
            proj_out: conv1x1_as_linear(inner, c, vb.pp("proj_out"))?,
        })
    }

    /// Paths of the reader blocks inside, for the bank pairing.
    pub fn block_paths(&self) -> impl Iterator<Item = &str> {
        self.transformer_blocks.iter().map(|b| b.path())
    }

    /// `hidden_states`: `((b f), c, h, w)`; `encoder_hidden_states`: `((b f), tokens, cross_dim)`
    /// (face tokens repeated per frame). Returns the output and the first block's motion-frame
    /// features `(b, s − 1, h·w, inner)`.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
        reference: &ReaderBank,
        video_length: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (n, c, h, w) = hidden_states.dims4()?;
        let mut xs = tokens_in(&self.norm, &self.proj_in, hidden_states)?;
        let mut motion_frames = Vec::with_capacity(self.transformer_blocks.len());
        for block in &self.transformer_blocks {
            let (out, frames) = block.forward(
                &xs,
                encoder_hidden_states,
                reference.get(block.path())?,
                video_length,
            )?;
            xs = out;
            motion_frames.push(frames);
        }
        let xs = (tokens_out(&self.proj_out, &xs, (n, c, h, w))? + hidden_states)?;
        // The blocks use the motion frames of the first transformer block only.
        match motion_frames.into_iter().next() {
            Some(frames) => Ok((xs, frames)),
            None => candle_core::bail!("spatial transformer without blocks"),
        }
    }
}

/// The audio module, `Transformer3DModel(use_audio_module=True)`: GroupNorm on `c` → 1×1 conv
/// `c → inner` → [`AudioTemporalBasicTransformerBlock`] → 1×1 conv `inner → c` → + residual.
/// `inner` may differ from `c` (see [`crate::unet_3d`]).
#[derive(Debug, Clone)]
pub struct AudioTransformer3DModel {
    norm: GroupNorm,
    proj_in: Linear,
    transformer_blocks: Vec<AudioTemporalBasicTransformerBlock>,
    proj_out: Linear,
}

impl AudioTransformer3DModel {
    /// Loads the module rooted at `vb` (`…audio_modules.{j}`).
    pub fn new(cfg: &Transformer3DModelConfig, vb: VarBuilder) -> Result<Self> {
        let (c, inner) = (cfg.in_channels, cfg.inner_dim());
        Ok(Self {
            norm: group_norm(cfg.norm_num_groups, c, TRANSFORMER_NORM_EPS, vb.pp("norm"))?,
            proj_in: conv1x1_as_linear(c, inner, vb.pp("proj_in"))?,
            transformer_blocks: vec![AudioTemporalBasicTransformerBlock::new(
                &cfg.block(),
                vb.pp("transformer_blocks").pp("0"),
            )?],
            proj_out: conv1x1_as_linear(inner, c, vb.pp("proj_out"))?,
        })
    }

    /// `hidden_states`: `((b f), c, h, w)`; `encoder_hidden_states`: `((b f), tokens, audio_dim)`.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
        branches: &AudioBranchInputs,
    ) -> Result<Tensor> {
        let (n, c, h, w) = hidden_states.dims4()?;
        let mut xs = tokens_in(&self.norm, &self.proj_in, hidden_states)?;
        for block in &self.transformer_blocks {
            xs = block.forward(&xs, encoder_hidden_states, branches)?;
        }
        tokens_out(&self.proj_out, &xs, (n, c, h, w))? + hidden_states
    }
}
