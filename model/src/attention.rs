//! hallo2 `hallo/models/attention.py` (`BasicTransformerBlock`, `TemporalBasicTransformerBlock`,
//! `AudioTemporalBasicTransformerBlock`) with the `forward` that
//! `hallo/models/mutual_self_attention.py::ReferenceAttentionControl` substitutes at inference
//! (fusion mode `"full"`), tracking `fudan-generative-vision/hallo2` @ `58a9aa6`.
//!
//! * [`BasicTransformerBlock`] is the reference UNet's block in *write* mode: it records its
//!   `norm1` output into the reference bank, then computes normally.
//! * [`TemporalBasicTransformerBlock`] is the denoising UNet's spatial block in *read* mode: the
//!   reference tokens join its self-attention keys/values (conditional half only).
//! * [`AudioTemporalBasicTransformerBlock`] is the audio cross-attention block (never hooked).
//!
//! All three are pre-norm: LayerNorm → self-attention → +res; LayerNorm → cross-attention → +res;
//! LayerNorm → GEGLU feed-forward → +res. LayerNorm eps 1e-5, attention projections without bias.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm};

use crate::mutual_self_attention::{BankEntry, ReaderEntry};
use crate::nn::{Attention, AttentionConfig, FeedForward};

/// LayerNorm eps of every norm in these blocks (`nn.LayerNorm` default).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Shape of one transformer block.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerBlockConfig {
    /// Token width (`dim` upstream).
    pub dim: usize,
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    /// Width of the cross-attention context (face tokens or audio tokens).
    pub cross_attention_dim: usize,
    /// Module path inside its UNet (`down_blocks.0.attentions.0.transformer_blocks.0`): the name
    /// under which the block writes to, or reads from, the reference bank.
    pub path: String,
    /// Audio blocks only: use the three masked cross-attentions (`unet_block_name in
    /// stack_enable_blocks_name and depth in stack_enable_blocks_depth`) instead of one `attn2`.
    pub stacked_audio: bool,
}

impl TransformerBlockConfig {
    fn self_attention(&self) -> AttentionConfig {
        AttentionConfig {
            query_dim: self.dim,
            cross_attention_dim: None,
            heads: self.num_attention_heads,
            dim_head: self.attention_head_dim,
            qkv_bias: false,
        }
    }

    fn cross_attention(&self) -> AttentionConfig {
        AttentionConfig {
            cross_attention_dim: Some(self.cross_attention_dim),
            ..self.self_attention()
        }
    }
}

/// Reference-UNet transformer block (diffusers-style `BasicTransformerBlock`) in write mode.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    path: String,
    dim: usize,
}

impl BasicTransformerBlock {
    /// Loads the block rooted at `vb` (`…attentions.{j}.transformer_blocks.0`).
    pub fn new(cfg: &TransformerBlockConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.dim;
        Ok(Self {
            norm1: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm1"))?,
            attn1: Attention::new(&cfg.self_attention(), vb.pp("attn1"))?,
            norm2: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm2"))?,
            attn2: Attention::new(&cfg.cross_attention(), vb.pp("attn2"))?,
            norm3: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, 4 * dim, vb.pp("ff"))?,
            path: cfg.path.clone(),
            dim,
        })
    }

    /// `hidden_states`: `(n, hw, dim)`; `encoder_hidden_states`: `(m, tokens, cross_dim)` with
    /// `n` a multiple of `m`. Appends the `norm1` output to `bank`.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
        bank: &mut Vec<BankEntry>,
    ) -> Result<Tensor> {
        let (n, _, _) = hidden_states.dims3()?;
        let m = encoder_hidden_states.dim(0)?;
        if m == 0 || !n.is_multiple_of(m) {
            candle_core::bail!(
                "{}: batch {n} is not a multiple of the context batch {m}",
                self.path
            )
        }
        // 1. Self-attention; write mode stores `norm1(h)` first.
        let norm_hidden_states = self.norm1.forward(hidden_states)?;
        bank.push(BankEntry {
            path: self.path.clone(),
            width: self.dim,
            features: norm_hidden_states.clone(),
        });
        let hidden_states = (self.attn1.forward(&norm_hidden_states, None)? + hidden_states)?;
        // 2. Cross-attention. The context is *tiled* (`repeat(n / m, 1, 1)`), so with the
        //    pipeline's batch [ref, m1, m2, ref, m1, m2] and context [uncond, cond] item i sees
        //    context i mod 2.
        let context = encoder_hidden_states.repeat((n / m, 1, 1))?;
        let norm_hidden_states = self.norm2.forward(&hidden_states)?;
        let hidden_states =
            (self.attn2.forward(&norm_hidden_states, Some(&context))? + hidden_states)?;
        // 3. Feed-forward.
        self.ff.forward(&self.norm3.forward(&hidden_states)?)? + hidden_states
    }
}

/// Denoising-UNet spatial transformer block (`TemporalBasicTransformerBlock`, no temporal
/// attention since `unet_use_temporal_attention` is false) in read mode.
#[derive(Debug, Clone)]
pub struct TemporalBasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    path: String,
}

impl TemporalBasicTransformerBlock {
    /// Loads the block rooted at `vb` (`…attentions.{j}.transformer_blocks.0`).
    pub fn new(cfg: &TransformerBlockConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.dim;
        Ok(Self {
            attn1: Attention::new(&cfg.self_attention(), vb.pp("attn1"))?,
            norm1: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm1"))?,
            attn2: Attention::new(&cfg.cross_attention(), vb.pp("attn2"))?,
            norm2: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm2"))?,
            ff: FeedForward::new(dim, 4 * dim, vb.pp("ff"))?,
            norm3: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm3"))?,
            path: cfg.path.clone(),
        })
    }

    /// Module path inside the denoising UNet; the key of this block's reference-bank entry.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `hidden_states`: `((b f), hw, dim)`; `encoder_hidden_states`: `((b f), tokens, cross_dim)`
    /// (already repeated per frame); `reference`: this block's bank entry.
    ///
    /// Returns the new hidden states and the motion-frame features `(b, s − 1, hw, dim)` (bank
    /// items 1.. of each CFG half).
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
        reference: &ReaderEntry,
        video_length: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (bf, hw, dim) = hidden_states.dims3()?;
        if video_length == 0 || !bf.is_multiple_of(video_length) {
            candle_core::bail!(
                "{}: batch {bf} is not a multiple of {video_length} frames",
                self.path
            )
        }
        let b = bf / video_length;
        let (n, l, c) = reference.features.dims3()?;
        if !n.is_multiple_of(b) || l != hw || c != dim {
            candle_core::bail!(
                "{}: reference bank entry {:?} does not fit hidden states {:?}",
                self.path,
                reference.features.dims(),
                hidden_states.dims()
            )
        }
        let s = n / b;
        let norm_hidden_states = self.norm1.forward(hidden_states)?;

        // "(b s) l c -> b s l c"
        let bank = reference.features.reshape((b, s, hw, dim))?;
        // `[:, 0].repeat(1, f, 1, 1)` then "b t l c -> (b t) l c". The `[:, 0]` drops the s axis,
        // so `repeat` *tiles* the b reference tokens along a new leading axis: row r gets the
        // reference of CFG half `r mod b` (with CFG the conditional frames alternate between the
        // uncond- and cond-token reference features). Reproduced as upstream computes it.
        let ref_tokens = bank
            .narrow(1, 0, 1)?
            .squeeze(1)?
            .repeat((video_length, 1, 1))?;
        let motion_frames = bank.narrow(1, 1, s - 1)?;
        // Keys/values: own tokens followed by the reference tokens.
        let with_reference = |rows: &Tensor, start: usize, len: usize| -> Result<Tensor> {
            let kv = Tensor::cat(&[rows, &ref_tokens.narrow(0, start, len)?], 1)?;
            self.attn1.forward(rows, Some(&kv))
        };

        // 1. Self-attention over own + reference tokens. With CFG the unconditional half (the
        //    first half of the batch; the upstream 16-frame mask selects the same rows) is then
        //    replaced by plain self-attention; attention is row-wise, so computing each half
        //    separately gives the same values.
        let attn = if reference.do_classifier_free_guidance {
            let half = bf / 2;
            let uc = self
                .attn1
                .forward(&norm_hidden_states.narrow(0, 0, half)?, None)?;
            let c = with_reference(
                &norm_hidden_states.narrow(0, half, bf - half)?,
                half,
                bf - half,
            )?;
            Tensor::cat(&[uc, c], 0)?
        } else {
            with_reference(&norm_hidden_states, 0, bf)?
        };
        let hidden_states = (attn + hidden_states)?;
        // 2. Cross-attention on the face tokens.
        let norm_hidden_states = self.norm2.forward(&hidden_states)?;
        let hidden_states = (self
            .attn2
            .forward(&norm_hidden_states, Some(encoder_hidden_states))?
            + hidden_states)?;
        // 3. Feed-forward.
        let hidden_states =
            (self.ff.forward(&self.norm3.forward(&hidden_states)?)? + hidden_states)?;
        Ok((hidden_states, motion_frames))
    }
}

/// The masks and scales of the three audio branches of one call.
#[derive(Debug, Clone, Copy)]
pub struct AudioBranchInputs<'a> {
    /// `(b·f, hw)` masks of this block's level: full (pose/background), face, lip.
    pub full_mask: &'a Tensor,
    pub face_mask: &'a Tensor,
    pub lip_mask: &'a Tensor,
    /// `motion_scale` = (pose, face, lip) weights of the three branches.
    pub motion_scale: [f64; 3],
}

/// Audio cross-attention of an `AudioTemporalBasicTransformerBlock`.
#[derive(Debug, Clone)]
enum AudioCrossAttention {
    /// Blocks named in `stack_enable_blocks_name/depth` (all of them in Hallo2): three masked
    /// cross-attentions, each followed by its 1×1 "zero conv".
    Stacked(Box<StackedAudioAttention>),
    /// Any other block: one plain cross-attention `attn2`.
    Plain { attn2: Attention },
}

/// The three-branch audio cross-attention: full (pose), face and lip.
#[derive(Debug, Clone)]
struct StackedAudioAttention {
    attn2_0: Attention,
    attn2_1: Attention,
    attn2_2: Attention,
    zero_conv_full: Linear,
    zero_conv_face: Linear,
    zero_conv_lip: Linear,
}

/// Audio transformer block (`AudioTemporalBasicTransformerBlock`).
#[derive(Debug, Clone)]
pub struct AudioTemporalBasicTransformerBlock {
    attn1: Attention,
    norm1: LayerNorm,
    cross: AudioCrossAttention,
    norm2: LayerNorm,
    ff: FeedForward,
    norm3: LayerNorm,
}

impl AudioTemporalBasicTransformerBlock {
    /// Loads the block rooted at `vb` (`…audio_modules.{j}.transformer_blocks.0`).
    pub fn new(cfg: &TransformerBlockConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.dim;
        let cross = if cfg.stacked_audio {
            let attn = |name: &str| Attention::new(&cfg.cross_attention(), vb.pp(name));
            let conv = |name: &str| conv1x1_as_linear(dim, dim, vb.pp(name));
            AudioCrossAttention::Stacked(Box::new(StackedAudioAttention {
                zero_conv_full: conv("zero_conv_full")?,
                zero_conv_face: conv("zero_conv_face")?,
                zero_conv_lip: conv("zero_conv_lip")?,
                attn2_0: attn("attn2_0")?,
                attn2_1: attn("attn2_1")?,
                attn2_2: attn("attn2_2")?,
            }))
        } else {
            AudioCrossAttention::Plain {
                attn2: Attention::new(&cfg.cross_attention(), vb.pp("attn2"))?,
            }
        };
        Ok(Self {
            attn1: Attention::new(&cfg.self_attention(), vb.pp("attn1"))?,
            norm1: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm1"))?,
            cross,
            norm2: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm2"))?,
            ff: FeedForward::new(dim, 4 * dim, vb.pp("ff"))?,
            norm3: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm3"))?,
        })
    }

    /// `hidden_states`: `((b f), hw, dim)`; `encoder_hidden_states`: `((b f), tokens, audio_dim)`
    /// (the audio tokens of each frame).
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
        branches: &AudioBranchInputs,
    ) -> Result<Tensor> {
        let (bf, hw, _) = hidden_states.dims3()?;
        // 1. Spatial self-attention.
        let norm_hidden_states = self.norm1.forward(hidden_states)?;
        let hidden_states = (self.attn1.forward(&norm_hidden_states, None)? + hidden_states)?;
        // 2. Audio cross-attention.
        let norm_hidden_states = self.norm2.forward(&hidden_states)?;
        let hidden_states = match &self.cross {
            AudioCrossAttention::Plain { attn2 } => {
                (attn2.forward(&norm_hidden_states, Some(encoder_hidden_states))? + hidden_states)?
            }
            AudioCrossAttention::Stacked(stacked) => {
                let StackedAudioAttention {
                    attn2_0,
                    attn2_1,
                    attn2_2,
                    zero_conv_full,
                    zero_conv_face,
                    zero_conv_lip,
                } = stacked.as_ref();
                let branch = |attn: &Attention, mask: &Tensor, conv: &Linear, scale: f64| {
                    if mask.dims() != [bf, hw] {
                        candle_core::bail!(
                            "audio mask {:?} does not match ({bf}, {hw})",
                            mask.dims()
                        )
                    }
                    let mask = mask.to_dtype(norm_hidden_states.dtype())?.unsqueeze(2)?;
                    let ys = attn.forward(&norm_hidden_states, Some(encoder_hidden_states))?;
                    // The zero conv runs after masking, so its bias reaches masked-out pixels.
                    conv.forward(&ys.broadcast_mul(&mask)?)? * scale
                };
                let [s_full, s_face, s_lip] = branches.motion_scale;
                let full = branch(attn2_0, branches.full_mask, zero_conv_full, s_full)?;
                let face = branch(attn2_1, branches.face_mask, zero_conv_face, s_face)?;
                let lip = branch(attn2_2, branches.lip_mask, zero_conv_lip, s_lip)?;
                (((full + face)? + lip)? + hidden_states)?
            }
        };
        // 3. Feed-forward.
        self.ff.forward(&self.norm3.forward(&hidden_states)?)? + hidden_states
    }
}

/// Loads a 1×1 `nn.Conv2d` (`weight (out, in, 1, 1)`, `bias (out)`) as the equivalent per-token
/// [`Linear`], so token tensors need no round trip through the image layout.
pub(crate) fn conv1x1_as_linear(
    in_channels: usize,
    out_channels: usize,
    vb: VarBuilder,
) -> Result<Linear> {
    let weight = vb.get((out_channels, in_channels, 1, 1), "weight")?;
    let bias = vb.get(out_channels, "bias")?;
    Ok(Linear::new(
        weight.reshape((out_channels, in_channels))?,
        Some(bias),
    ))
}
