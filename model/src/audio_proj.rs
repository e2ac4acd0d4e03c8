//! Audio-window projection: hallo2 `hallo/models/audio_proj.py` @ `58a9aa6` (`AudioProjModel`).
//!
//! Keys: `proj1` (seq_len·blocks·channels → intermediate), `proj2`, `proj3` (intermediate →
//! context_tokens·output_dim), `norm` (LayerNorm on output_dim). Each frame's window of wav2vec
//! layer features is flattened in (window, layer, channel) order and turned into
//! `context_tokens` audio tokens.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear};

/// `nn.LayerNorm` default eps.
const LAYER_NORM_EPS: f64 = 1e-5;

/// `AudioProjModel.__init__` arguments (Python defaults = the values Hallo2 passes).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct AudioProjConfig {
    /// Frames per audio window (the current frame ± 2).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Number of wav2vec hidden-state layers stacked per frame.
    #[serde(default = "default_blocks")]
    pub blocks: usize,
    /// Width of one wav2vec hidden state.
    #[serde(default = "default_channels")]
    pub channels: usize,
    #[serde(default = "default_intermediate_dim")]
    pub intermediate_dim: usize,
    #[serde(default = "default_output_dim")]
    pub output_dim: usize,
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
}

fn default_seq_len() -> usize {
    5
}
fn default_blocks() -> usize {
    12
}
fn default_channels() -> usize {
    768
}
fn default_intermediate_dim() -> usize {
    512
}
fn default_output_dim() -> usize {
    768
}
fn default_context_tokens() -> usize {
    32
}

impl AudioProjConfig {
    /// Arguments passed in hallo2 `scripts/inference_long.py` @ `58a9aa6`.
    pub fn hallo2() -> Self {
        Self {
            seq_len: 5,
            blocks: 12,
            channels: 768,
            intermediate_dim: 512,
            output_dim: 768,
            context_tokens: 32,
        }
    }

    /// `input_dim = seq_len * blocks * channels`: the flattened window width.
    pub fn input_dim(&self) -> usize {
        self.seq_len * self.blocks * self.channels
    }
}

/// Maps per-frame audio windows to audio cross-attention tokens.
#[derive(Debug, Clone)]
pub struct AudioProjModel {
    proj1: Linear,
    proj2: Linear,
    proj3: Linear,
    norm: LayerNorm,
    cfg: AudioProjConfig,
}

impl AudioProjModel {
    pub fn new(cfg: &AudioProjConfig, vb: VarBuilder) -> Result<Self> {
        let (inter, out) = (cfg.intermediate_dim, cfg.context_tokens * cfg.output_dim);
        Ok(Self {
            proj1: linear(cfg.input_dim(), inter, vb.pp("proj1"))?,
            proj2: linear(inter, inter, vb.pp("proj2"))?,
            proj3: linear(inter, out, vb.pp("proj3"))?,
            norm: layer_norm(cfg.output_dim, LAYER_NORM_EPS, vb.pp("norm"))?,
            cfg: cfg.clone(),
        })
    }
}

impl Module for AudioProjModel {
    /// `audio_embeds`: `(bz, f, window, blocks, channels)` → `(bz, f, context_tokens, output_dim)`.
    fn forward(&self, audio_embeds: &Tensor) -> Result<Tensor> {
        let (bz, f, w, b, c) = audio_embeds.dims5()?;
        if (w, b, c) != (self.cfg.seq_len, self.cfg.blocks, self.cfg.channels) {
            candle_core::bail!(
                "audio_proj: expected windows of (seq_len {}, blocks {}, channels {}), got ({w}, {b}, {c})",
                self.cfg.seq_len,
                self.cfg.blocks,
                self.cfg.channels
            );
        }
        // "bz f w b c -> (bz f) w b c", then `.view(batch_size, window_size * blocks * channels)`
        let xs = audio_embeds.reshape((bz * f, w * b * c))?;
        let xs = self.proj1.forward(&xs)?.relu()?;
        let xs = self.proj2.forward(&xs)?.relu()?;
        let context_tokens = self.proj3.forward(&xs)?.reshape((
            bz * f,
            self.cfg.context_tokens,
            self.cfg.output_dim,
        ))?;
        let context_tokens = self.norm.forward(&context_tokens)?;
        // "(bz f) m c -> bz f m c"
        context_tokens.reshape((bz, f, self.cfg.context_tokens, self.cfg.output_dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hallo2_config_matches_inference_script() {
        let cfg = AudioProjConfig::hallo2();
        assert_eq!(
            (cfg.seq_len, cfg.blocks, cfg.channels, cfg.intermediate_dim),
            (5, 12, 768, 512)
        );
        assert_eq!((cfg.output_dim, cfg.context_tokens), (768, 32));
        // net.pth: audioproj.proj1.weight [512, 46080], audioproj.proj3.weight [24576, 512].
        assert_eq!(cfg.input_dim(), 46080);
        assert_eq!(cfg.context_tokens * cfg.output_dim, 24576);
        let defaults: AudioProjConfig = serde_json::from_str("{}").expect("parsing defaults");
        assert_eq!(defaults, cfg);
    }
}
