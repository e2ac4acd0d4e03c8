//! The VAE mid-block's spatial self-attention: diffusers `Attention` built by `UNetMidBlock2D`
//! (`models/attention_processor.py`, `AttnProcessor2_0`, diffusers 0.32.2) with `group_norm`,
//! `residual_connection=True`, `bias=True`, `rescale_output_factor=1`, one head of `channels` width.
//!
//! Keys: `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0`; checkpoints exported before diffusers
//! 0.14 spell the projections `query`, `key`, `value`, `proj_attn`, which diffusers renames on
//! load (`_convert_deprecated_attention_blocks`). Both spellings load here, see
//! [`with_current_key_names`].

use candle_core::{Module, Result, Tensor};
use candle_nn::{GroupNorm, VarBuilder, group_norm};

use crate::nn::AttentionConfig;

/// Current diffusers name → legacy name of the mid-block attention projections.
pub const LEGACY_KEY_NAMES: [(&str, &str); 4] = [
    ("to_q", "query"),
    ("to_k", "key"),
    ("to_v", "value"),
    ("to_out.0", "proj_attn"),
];

/// Shape of the mid-block attention (`Attention(channels, heads=channels/attention_head_dim, ..)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionBlockConfig {
    pub channels: usize,
    /// Width of one head; the VAE passes `channels`, hence a single head.
    pub attention_head_dim: usize,
    pub norm_num_groups: usize,
    pub eps: f64,
}

/// GroupNorm → single-head self-attention over the `h·w` tokens → residual add.
#[derive(Debug, Clone)]
pub struct Attention {
    group_norm: GroupNorm,
    /// `to_q/to_k/to_v/to_out.0`, which sit beside `group_norm` in the checkpoint.
    projections: crate::nn::Attention,
}

impl Attention {
    /// Loads `group_norm` and the projections, under either key spelling.
    pub fn new(cfg: &AttentionBlockConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.attention_head_dim == 0 || !cfg.channels.is_multiple_of(cfg.attention_head_dim) {
            candle_core::bail!(
                "vae attention: {} channels not divisible by head dim {}",
                cfg.channels,
                cfg.attention_head_dim
            );
        }
        let projections = AttentionConfig {
            query_dim: cfg.channels,
            cross_attention_dim: None,
            heads: cfg.channels / cfg.attention_head_dim,
            dim_head: cfg.attention_head_dim,
            qkv_bias: true,
        };
        Ok(Self {
            group_norm: group_norm(
                cfg.norm_num_groups,
                cfg.channels,
                cfg.eps,
                vb.pp("group_norm"),
            )?,
            projections: crate::nn::Attention::new(&projections, with_current_key_names(vb))?,
        })
    }
}

impl Module for Attention {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let residual = xs;
        let (b, c, h, w) = xs.dims4()?;
        // GroupNorm statistics do not depend on the spatial layout, so normalise before the reshape.
        let hidden = self.group_norm.forward(xs)?;
        // b c h w -> b (h w) c
        let hidden = hidden
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let hidden = self.projections.forward(&hidden, None)?;
        // b (h w) c -> b c h w
        let hidden = hidden.transpose(1, 2)?.reshape((b, c, h, w))?;
        hidden + residual
    }
}

/// Maps one requested name of a legacy checkpoint: `….to_q.weight` → `….query.weight` etc.
/// Names of other tensors pass through unchanged.
pub fn legacy_key_name(name: &str) -> String {
    let (stem, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    for (current, legacy) in LEGACY_KEY_NAMES {
        if stem == current {
            return format!("{legacy}.{leaf}");
        }
        if let Some(parent) = stem.strip_suffix(current).and_then(|p| p.strip_suffix('.')) {
            return format!("{parent}.{legacy}.{leaf}");
        }
    }
    name.to_string()
}

/// The only key-renaming rule of the VAE. `vb` points at one mid-block attention; when that
/// block's tensors use the legacy names (`query.weight` present, `to_q.weight` absent), returns a
/// VarBuilder at the same prefix that serves the current names from the legacy ones.
pub fn with_current_key_names(vb: VarBuilder) -> VarBuilder {
    if vb.contains_tensor("to_q.weight") || !vb.contains_tensor("query.weight") {
        return vb;
    }
    // `rename_f` hands the renamer the full path and resolves it against the inner builder's own
    // prefix, so rename at the root and re-apply the prefix outside.
    let prefix = vb.prefix();
    let renamed = vb.root().rename_f(|name: &str| legacy_key_name(name));
    if prefix.is_empty() {
        renamed
    } else {
        renamed.set_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn legacy_names_follow_diffusers_conversion() {
        let p = "decoder.mid_block.attentions.0";
        assert_eq!(
            legacy_key_name(&format!("{p}.to_q.weight")),
            format!("{p}.query.weight")
        );
        assert_eq!(
            legacy_key_name(&format!("{p}.to_k.bias")),
            format!("{p}.key.bias")
        );
        assert_eq!(
            legacy_key_name(&format!("{p}.to_v.weight")),
            format!("{p}.value.weight")
        );
        assert_eq!(
            legacy_key_name(&format!("{p}.to_out.0.bias")),
            format!("{p}.proj_attn.bias")
        );
        assert_eq!(legacy_key_name("to_out.0.weight"), "proj_attn.weight");
        let untouched = format!("{p}.group_norm.weight");
        assert_eq!(legacy_key_name(&untouched), untouched);
        assert_eq!(
            legacy_key_name("decoder.conv_out.weight"),
            "decoder.conv_out.weight"
        );
    }

    #[test]
    fn both_spellings_load_the_same_tensors() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = AttentionBlockConfig {
            channels: 4,
            attention_head_dim: 4,
            norm_num_groups: 2,
            eps: 1e-6,
        };
        let prefix = "encoder.mid_block.attentions.0";
        let mut current = HashMap::new();
        for (i, leaf) in ["to_q", "to_k", "to_v", "to_out.0"].iter().enumerate() {
            let w = Tensor::arange(0f32, 16.0, &dev)?
                .reshape((4, 4))?
                .affine(0.01 * (i as f64 + 1.0), 0.0)?;
            current.insert(format!("{prefix}.{leaf}.weight"), w);
            current.insert(
                format!("{prefix}.{leaf}.bias"),
                Tensor::full(0.1f32 * i as f32, 4, &dev)?,
            );
        }
        current.insert(
            format!("{prefix}.group_norm.weight"),
            Tensor::ones(4, DType::F32, &dev)?,
        );
        current.insert(
            format!("{prefix}.group_norm.bias"),
            Tensor::zeros(4, DType::F32, &dev)?,
        );
        let legacy: HashMap<String, Tensor> = current
            .iter()
            .map(|(k, v)| (legacy_key_name(k), v.clone()))
            .collect();
        assert!(legacy.contains_key(&format!("{prefix}.proj_attn.weight")));

        let xs = Tensor::arange(0f32, 2.0 * 4.0 * 9.0, &dev)?
            .reshape((2, 4, 3, 3))?
            .affine(0.1, -3.0)?;
        let run = |ts: HashMap<String, Tensor>| -> Result<Tensor> {
            let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
            Attention::new(
                &cfg,
                vb.pp("encoder").pp("mid_block").pp("attentions").pp("0"),
            )?
            .forward(&xs)
        };
        let a = run(current)?;
        let b = run(legacy)?;
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
