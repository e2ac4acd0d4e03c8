//! The transformer half of transformers 4.39.2 `modeling_wav2vec2.py`:
//! `Wav2Vec2PositionalConvEmbedding` (+ `Wav2Vec2SamePadLayer`), `Wav2Vec2Attention` (eager),
//! `Wav2Vec2FeedForward`, `Wav2Vec2EncoderLayer` (post-LN) and `Wav2Vec2Encoder`.
//!
//! Keys under `encoder`: `pos_conv_embed.conv.{bias, weight_g, weight_v}` (or
//! `pos_conv_embed.conv.parametrizations.weight.{original0, original1}`), `layer_norm`,
//! `layers.{i}.{attention.{q_proj, k_proj, v_proj, out_proj}, layer_norm,
//! feed_forward.{intermediate_dense, output_dense}, final_layer_norm}`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{
    Activation, Conv1d, Conv1dConfig, LayerNorm, Linear, VarBuilder, layer_norm, linear,
};

use super::Wav2Vec2Config;

/// The weight-norm dimension `Wav2Vec2PositionalConvEmbedding` uses (`weight_norm(conv, dim=2)`):
/// one magnitude per kernel tap.
const WEIGHT_NORM_DIM: usize = 2;

/// The effective weight of a weight-normalised parameter, `torch._weight_norm(v, g, dim)`:
/// `w = v · (g / ‖v‖)`, the norm taken over every axis except `dim` (so `g` has size 1 on those
/// axes). Computed in f32 and returned in `v`'s dtype.
///
/// The positional conv stores `g` as `weight_g (1, 1, K)` and `v` as `weight_v (C, C/groups, K)`
/// (`torch.nn.utils.weight_norm`), or as `parametrizations.weight.original0/original1` (the
/// `torch.nn.utils.parametrizations.weight_norm` spelling); both hold the same `g` and `v`.
/// PyTorch recomputes `w` on every forward; it depends only on the weights, so we compute it once.
pub fn weight_norm_weight(weight_g: &Tensor, weight_v: &Tensor, dim: usize) -> Result<Tensor> {
    let rank = weight_v.rank();
    if dim >= rank || weight_g.rank() != rank {
        candle_core::bail!(
            "weight norm: g {:?} and v {:?} do not fit dim {dim}",
            weight_g.dims(),
            weight_v.dims()
        )
    }
    let v = weight_v.to_dtype(DType::F32)?;
    let g = weight_g.to_dtype(DType::F32)?;
    let mut norm = v.sqr()?;
    for axis in (0..rank).rev().filter(|&a| a != dim) {
        norm = norm.sum_keepdim(axis)?;
    }
    let norm = norm.sqrt()?;
    v.broadcast_mul(&g.broadcast_div(&norm)?)?
        .to_dtype(weight_v.dtype())
}

/// Grouped Conv1d over time (kernel `num_conv_pos_embeddings`, padding half of it) with a
/// weight-normalised kernel, then same-padding trim and activation.
#[derive(Debug, Clone)]
pub struct Wav2Vec2PositionalConvEmbedding {
    conv: Conv1d,
    /// `Wav2Vec2SamePadLayer`: an even kernel with padding k/2 yields one frame too many.
    num_pad_remove: usize,
    activation: Activation,
}

impl Wav2Vec2PositionalConvEmbedding {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size;
        let kernel = cfg.num_conv_pos_embeddings;
        let groups = cfg.num_conv_pos_embedding_groups;
        let vb = vb.pp("conv");
        let g_shape = (1, 1, kernel);
        let v_shape = (hidden, hidden / groups, kernel);
        let parametrized = vb.pp("parametrizations.weight");
        let (weight_g, weight_v) =
            if !vb.contains_tensor("weight_g") && parametrized.contains_tensor("original0") {
                (
                    parametrized.get(g_shape, "original0")?,
                    parametrized.get(v_shape, "original1")?,
                )
            } else {
                (vb.get(g_shape, "weight_g")?, vb.get(v_shape, "weight_v")?)
            };
        let weight = weight_norm_weight(&weight_g, &weight_v, WEIGHT_NORM_DIM)?;
        let bias = vb.get(hidden, "bias")?;
        let conv_cfg = Conv1dConfig {
            padding: kernel / 2,
            groups,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv1d::new(weight, Some(bias), conv_cfg),
            num_pad_remove: usize::from(kernel.is_multiple_of(2)),
            activation: cfg.feat_extract_activation,
        })
    }
}

impl Module for Wav2Vec2PositionalConvEmbedding {
    /// `(b, t, c)` → `(b, t, c)`: padding `k/2` gives `t + 1` frames for an even kernel `k` (the
    /// last is dropped) and `t` for an odd one.
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        // b t c -> b c t
        let hidden_states = hidden_states.transpose(1, 2)?.contiguous()?;
        let hidden_states = self.conv.forward(&hidden_states)?;
        let frames = hidden_states.dim(2)? - self.num_pad_remove;
        let hidden_states = hidden_states.narrow(2, 0, frames)?;
        let hidden_states = self.activation.forward(&hidden_states)?;
        // b c t -> b t c
        hidden_states.transpose(1, 2)
    }
}

/// Multi-head self-attention with biased q/k/v/out projections (BART-style, eager: the query is
/// scaled by `head_dim^-0.5` before the product).
#[derive(Debug, Clone)]
pub struct Wav2Vec2Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl Wav2Vec2Attention {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.hidden_size;
        Ok(Self {
            q_proj: linear(dim, dim, vb.pp("q_proj"))?,
            k_proj: linear(dim, dim, vb.pp("k_proj"))?,
            v_proj: linear(dim, dim, vb.pp("v_proj"))?,
            out_proj: linear(dim, dim, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: dim / cfg.num_attention_heads,
        })
    }
}

/// Query rows per attention chunk (scores of 12 heads × 64 × 1500 frames: 4.6 MB in f32).
const QUERY_CHUNK: usize = 64;

impl Module for Wav2Vec2Attention {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let (b, t, c) = hidden_states.dims3()?;
        let scaling = (self.head_dim as f64).powf(-0.5);
        // b t (h d) -> b h t d
        let heads = |xs: Tensor| {
            xs.reshape((b, t, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let query_states = heads((self.q_proj.forward(hidden_states)? * scaling)?)?;
        let key_states = heads(self.k_proj.forward(hidden_states)?)?;
        let value_states = heads(self.v_proj.forward(hidden_states)?)?;
        // Queries in chunks: a 60 s segment has 1500 frames (Hallo resamples the CNN features
        // to 25 fps), and its whole score matrix (heads × t × t, plus the softmax's copy) would
        // be the largest buffer of the audio path.
        let key_t = key_states.t()?.contiguous()?;
        let mut chunks = Vec::with_capacity(t.div_ceil(QUERY_CHUNK));
        for start in (0..t).step_by(QUERY_CHUNK) {
            let len = QUERY_CHUNK.min(t - start);
            let scores = query_states.narrow(2, start, len)?.matmul(&key_t)?;
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            chunks.push(weights.matmul(&value_states)?);
        }
        let attn_output = Tensor::cat(&chunks, 2)?;
        // b h t d -> b t (h d)
        let attn_output = attn_output.transpose(1, 2)?.reshape((b, t, c))?;
        self.out_proj.forward(&attn_output)
    }
}

/// `intermediate_dense` → activation → `output_dense` (dropouts inactive).
#[derive(Debug, Clone)]
pub struct Wav2Vec2FeedForward {
    intermediate_dense: Linear,
    output_dense: Linear,
    intermediate_act_fn: Activation,
}

impl Wav2Vec2FeedForward {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            intermediate_dense: linear(
                cfg.hidden_size,
                cfg.intermediate_size,
                vb.pp("intermediate_dense"),
            )?,
            output_dense: linear(
                cfg.intermediate_size,
                cfg.hidden_size,
                vb.pp("output_dense"),
            )?,
            intermediate_act_fn: cfg.hidden_act,
        })
    }
}

impl Module for Wav2Vec2FeedForward {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let hidden_states = self.intermediate_dense.forward(hidden_states)?;
        let hidden_states = self.intermediate_act_fn.forward(&hidden_states)?;
        self.output_dense.forward(&hidden_states)
    }
}

/// Post-LN layer: `h = LN(h + attn(h))`, `h = final_LN(h + ff(h))`.
#[derive(Debug, Clone)]
pub struct Wav2Vec2EncoderLayer {
    attention: Wav2Vec2Attention,
    layer_norm: LayerNorm,
    feed_forward: Wav2Vec2FeedForward,
    final_layer_norm: LayerNorm,
}

impl Wav2Vec2EncoderLayer {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            attention: Wav2Vec2Attention::new(cfg, vb.pp("attention"))?,
            layer_norm: layer_norm(cfg.hidden_size, eps, vb.pp("layer_norm"))?,
            feed_forward: Wav2Vec2FeedForward::new(cfg, vb.pp("feed_forward"))?,
            final_layer_norm: layer_norm(cfg.hidden_size, eps, vb.pp("final_layer_norm"))?,
        })
    }
}

impl Module for Wav2Vec2EncoderLayer {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let attn_residual = hidden_states;
        let hidden_states = self.attention.forward(hidden_states)?;
        let hidden_states = self.layer_norm.forward(&(attn_residual + hidden_states)?)?;
        let ff = self.feed_forward.forward(&hidden_states)?;
        self.final_layer_norm.forward(&(hidden_states + ff)?)
    }
}

/// `Wav2Vec2Encoder` (the non-stable-layer-norm variant): the LayerNorm sits *before* the layers,
/// right after the positional embedding is added.
#[derive(Debug, Clone)]
pub struct Wav2Vec2Encoder {
    pos_conv_embed: Wav2Vec2PositionalConvEmbedding,
    layer_norm: LayerNorm,
    layers: Vec<Wav2Vec2EncoderLayer>,
}

impl Wav2Vec2Encoder {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let layers_vb = vb.pp("layers");
        Ok(Self {
            pos_conv_embed: Wav2Vec2PositionalConvEmbedding::new(cfg, vb.pp("pos_conv_embed"))?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Wav2Vec2EncoderLayer::new(cfg, layers_vb.pp(i)))
                .collect::<Result<_>>()?,
        })
    }

    /// `(b, t, hidden_size)` → `hidden_states` as transformers returns them with
    /// `output_hidden_states=True`: `[LN(x + pos_conv(x)), layer 1 out, …, layer L out]`.
    pub fn forward(&self, hidden_states: &Tensor) -> Result<Vec<Tensor>> {
        let position_embeddings = self.pos_conv_embed.forward(hidden_states)?;
        let mut hidden_states = self
            .layer_norm
            .forward(&(hidden_states + position_embeddings)?.contiguous()?)?;
        let mut all_hidden_states = Vec::with_capacity(self.layers.len() + 1);
        for layer in &self.layers {
            all_hidden_states.push(hidden_states.clone());
            hidden_states = layer.forward(&hidden_states)?;
        }
        all_hidden_states.push(hidden_states);
        Ok(all_hidden_states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn the_positional_conv_keeps_the_frame_count_for_odd_and_even_kernels() {
        for kernel in [3, 4, 5, 16] {
            let cfg = Wav2Vec2Config {
                hidden_size: 8,
                num_conv_pos_embeddings: kernel,
                num_conv_pos_embedding_groups: 2,
                ..Wav2Vec2Config::hallo2()
            };
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
            let conv = Wav2Vec2PositionalConvEmbedding::new(&cfg, vb).unwrap();
            for t in [1, 7, 20] {
                let xs = Tensor::ones((1, t, 8), DType::F32, &Device::Cpu).unwrap();
                let out = conv.forward(&xs).unwrap();
                assert_eq!(out.dims(), &[1, t, 8], "kernel {kernel}, {t} frames");
            }
        }
    }
}
