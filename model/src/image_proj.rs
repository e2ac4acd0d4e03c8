//! Face-embedding projection: hallo2 `hallo/models/image_proj.py` @ `58a9aa6` (`ImageProjModel`).
//!
//! Keys: `proj` (Linear clip_embeddings_dim → tokens·cross_attention_dim), `norm` (LayerNorm).
//! The classifier-free-guidance branch uses the projection of a zero embedding, not zeros.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear};

/// `nn.LayerNorm` default eps.
const LAYER_NORM_EPS: f64 = 1e-5;

/// `ImageProjModel.__init__` arguments (Python defaults).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ImageProjConfig {
    #[serde(default = "default_dim")]
    pub cross_attention_dim: usize,
    #[serde(default = "default_dim")]
    pub clip_embeddings_dim: usize,
    #[serde(default = "default_clip_extra_context_tokens")]
    pub clip_extra_context_tokens: usize,
}

fn default_dim() -> usize {
    1024
}
fn default_clip_extra_context_tokens() -> usize {
    4
}

impl ImageProjConfig {
    /// Arguments passed in hallo2 `scripts/inference_long.py` @ `58a9aa6` (the UNet's
    /// cross_attention_dim is SD-1.5's 768; the InsightFace embedding has 512 values).
    pub fn hallo2() -> Self {
        Self {
            cross_attention_dim: 768,
            clip_embeddings_dim: 512,
            clip_extra_context_tokens: 4,
        }
    }
}

/// Projects one identity embedding to `clip_extra_context_tokens` cross-attention tokens.
#[derive(Debug, Clone)]
pub struct ImageProjModel {
    proj: Linear,
    norm: LayerNorm,
    clip_extra_context_tokens: usize,
    cross_attention_dim: usize,
}

impl ImageProjModel {
    pub fn new(cfg: &ImageProjConfig, vb: VarBuilder) -> Result<Self> {
        let out = cfg.clip_extra_context_tokens * cfg.cross_attention_dim;
        Ok(Self {
            proj: linear(cfg.clip_embeddings_dim, out, vb.pp("proj"))?,
            norm: layer_norm(cfg.cross_attention_dim, LAYER_NORM_EPS, vb.pp("norm"))?,
            clip_extra_context_tokens: cfg.clip_extra_context_tokens,
            cross_attention_dim: cfg.cross_attention_dim,
        })
    }
}

impl Module for ImageProjModel {
    /// `image_embeds`: `(..., clip_embeddings_dim)` → `(n, clip_extra_context_tokens,
    /// cross_attention_dim)` where `n` is the number of embeddings.
    fn forward(&self, image_embeds: &Tensor) -> Result<Tensor> {
        let projected = self.proj.forward(image_embeds)?;
        let per_item = self.clip_extra_context_tokens * self.cross_attention_dim;
        let n = projected.elem_count() / per_item;
        // `.reshape(-1, clip_extra_context_tokens, cross_attention_dim)`
        let tokens =
            projected.reshape((n, self.clip_extra_context_tokens, self.cross_attention_dim))?;
        self.norm.forward(&tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hallo2_config_matches_inference_script() {
        let cfg = ImageProjConfig::hallo2();
        assert_eq!(
            (cfg.cross_attention_dim, cfg.clip_embeddings_dim),
            (768, 512)
        );
        assert_eq!(cfg.clip_extra_context_tokens, 4);
        let defaults: ImageProjConfig = serde_json::from_str("{}").expect("parsing defaults");
        assert_eq!(
            defaults,
            ImageProjConfig {
                cross_attention_dim: 1024,
                clip_embeddings_dim: 1024,
                clip_extra_context_tokens: 4
            }
        );
    }
}
