//! diffusers `Attention` with `AttnProcessor2_0` semantics (scaled dot-product, no mask).
//!
//! Keys: `to_q`, `to_k`, `to_v` (no bias unless configured), `to_out.0` (with bias).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear, linear_no_bias};

/// Shape of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Width of the queries (and of the output).
    pub query_dim: usize,
    /// Width of the keys/values source; `None` = self-attention (`query_dim`).
    pub cross_attention_dim: Option<usize>,
    pub heads: usize,
    pub dim_head: usize,
    /// Whether `to_q/to_k/to_v` carry a bias (diffusers `bias=`; false in SD/Hallo2 UNets).
    pub qkv_bias: bool,
}

/// Multi-head attention; the score matrix is computed in f32 and in query chunks so that a
/// 64×64 latent with reference tokens (4096 × 8192 scores per head) does not need tens of GB.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
}

/// Upper bound on the f32 score elements materialised at once (1 GiB).
const MAX_SCORE_ELEMENTS: usize = 1 << 28;

impl Attention {
    pub fn new(cfg: &AttentionConfig, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.heads * cfg.dim_head;
        let kv_dim = cfg.cross_attention_dim.unwrap_or(cfg.query_dim);
        let proj = |i, o, vb| {
            if cfg.qkv_bias {
                linear(i, o, vb)
            } else {
                linear_no_bias(i, o, vb)
            }
        };
        Ok(Self {
            to_q: proj(cfg.query_dim, inner, vb.pp("to_q"))?,
            to_k: proj(kv_dim, inner, vb.pp("to_k"))?,
            to_v: proj(kv_dim, inner, vb.pp("to_v"))?,
            // `to_out` is `nn.ModuleList([Linear, Dropout])`.
            to_out: linear(inner, cfg.query_dim, vb.pp("to_out").pp("0"))?,
            heads: cfg.heads,
            dim_head: cfg.dim_head,
        })
    }

    /// `xs`: `(b, n, query_dim)`; `context`: `(b, m, kv_dim)` or `None` for self-attention.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(xs);
        let q = self.split_heads(&self.to_q.forward(xs)?)?;
        let k = self.split_heads(&self.to_k.forward(context)?)?;
        let v = self.split_heads(&self.to_v.forward(context)?)?;
        let out = scaled_dot_product_attention(&q, &k, &v)?;
        // (b, heads, n, d) -> (b, n, heads·d)
        let (b, h, n, d) = out.dims4()?;
        let out = out.transpose(1, 2)?.reshape((b, n, h * d))?;
        self.to_out.forward(&out)
    }

    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        xs.reshape((b, n, self.heads, self.dim_head))?
            .transpose(1, 2)?
            .contiguous()
    }
}

/// softmax(q kᵀ / √d) v over `(b, heads, n, d)` tensors, in f32, chunked over queries.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let dtype = q.dtype();
    let (b, h, n, d) = q.dims4()?;
    let m = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    let kt = k.t()?;
    let rows_per_chunk = (MAX_SCORE_ELEMENTS / (b * h * m).max(1)).clamp(1, n);
    let mut chunks = Vec::with_capacity(n.div_ceil(rows_per_chunk));
    for start in (0..n).step_by(rows_per_chunk) {
        let len = rows_per_chunk.min(n - start);
        let qc = q.narrow(2, start, len)?;
        let scores = (qc.matmul(&kt)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        chunks.push(probs.matmul(&v)?);
    }
    let out = if chunks.len() == 1 {
        chunks.remove(0)
    } else {
        Tensor::cat(&chunks, 2)?
    };
    out.to_dtype(dtype)
}
