//! hallo2 `hallo/models/mutual_self_attention.py::ReferenceAttentionControl` (fusion mode
//! `"full"`), tracking `fudan-generative-vision/hallo2` @ `58a9aa6`: the reference bank that the
//! reference UNet writes and the denoising UNet reads.
//!
//! Upstream monkey-patches every transformer block's `forward`; here the write and read behaviour
//! lives in [`crate::attention`] and the bank is an explicit value:
//!
//! 1. [`crate::unet_2d::UNet2DConditionModel::forward`] returns a [`ReferenceBank`] with one
//!    `norm1` output per transformer block, in module-traversal order.
//! 2. [`ReaderBank::new`] pairs writer and reader blocks exactly as `update()` does (both lists
//!    stably sorted by decreasing width, then zipped) and rounds every tensor to f16 (`update`'s
//!    default dtype, also in f32 runs).
//! 3. [`crate::unet_3d::UNet3DConditionModel::forward`] reads it at every denoising step.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};

/// What one reference-UNet transformer block wrote: its `norm1` output.
#[derive(Debug, Clone)]
pub struct BankEntry {
    /// Module path of the writer block (`down_blocks.0.attentions.0.transformer_blocks.0`).
    pub path: String,
    /// Token width (`norm1.normalized_shape[0]`), the pairing sort key.
    pub width: usize,
    /// `(n, hw, width)`, `n` = reference batch (`[ref, m1, m2]` per CFG half).
    pub features: Tensor,
}

/// All entries written by one reference-UNet call, in module-traversal order (`down_blocks`,
/// `up_blocks`, `mid_block`: the modules' registration order upstream).
#[derive(Debug, Clone, Default)]
pub struct ReferenceBank {
    pub entries: Vec<BankEntry>,
}

impl ReferenceBank {
    /// The entries in upstream pairing order: stable sort by decreasing width.
    pub fn sorted_by_width(&self) -> Vec<&BankEntry> {
        let mut sorted: Vec<&BankEntry> = self.entries.iter().collect();
        sorted.sort_by_key(|e| std::cmp::Reverse(e.width));
        sorted
    }
}

/// One reader block's copy of its paired bank entry.
#[derive(Debug, Clone)]
pub struct ReaderEntry {
    /// `(n, hw, width)`, rounded to f16 (kept in the writer's dtype).
    pub features: Tensor,
    /// Whether the pipeline runs classifier-free guidance: then the first half of the batch is
    /// unconditional and gets plain self-attention.
    pub do_classifier_free_guidance: bool,
}

/// The bank as the denoising UNet's blocks hold it after `ReferenceAttentionControl.update()`,
/// keyed by reader-block path.
#[derive(Debug, Clone, Default)]
pub struct ReaderBank {
    entries: HashMap<String, ReaderEntry>,
}

impl ReaderBank {
    /// Pairs `writer` entries with the reader blocks `readers` (`(path, width)` in the reader
    /// UNet's module-traversal order, see
    /// [`crate::unet_3d::UNet3DConditionModel::reader_blocks`]): both lists are stably sorted by
    /// decreasing width and zipped. Each tensor is rounded to f16 as upstream copies it with
    /// `.to(torch.float16)`.
    pub fn new(
        writer: &ReferenceBank,
        readers: &[(String, usize)],
        do_classifier_free_guidance: bool,
    ) -> Result<Self> {
        if writer.entries.len() != readers.len() {
            candle_core::bail!(
                "reference bank has {} entries but the reader has {} blocks",
                writer.entries.len(),
                readers.len()
            )
        }
        let mut sorted_readers: Vec<&(String, usize)> = readers.iter().collect();
        sorted_readers.sort_by_key(|(_, width)| std::cmp::Reverse(*width));
        let mut entries = HashMap::with_capacity(readers.len());
        for ((path, width), w) in sorted_readers.into_iter().zip(writer.sorted_by_width()) {
            if *width != w.width {
                candle_core::bail!(
                    "reader block {path} (width {width}) paired with writer block {} (width {})",
                    w.path,
                    w.width
                )
            }
            let dtype = w.features.dtype();
            let features = w.features.to_dtype(DType::F16)?.to_dtype(dtype)?;
            entries.insert(
                path.clone(),
                ReaderEntry {
                    features,
                    do_classifier_free_guidance,
                },
            );
        }
        Ok(Self { entries })
    }

    /// The entry of reader block `path`.
    pub fn get(&self, path: &str) -> Result<&ReaderEntry> {
        match self.entries.get(path) {
            Some(entry) => Ok(entry),
            None => candle_core::bail!("reference bank has no entry for {path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn entry(path: &str, width: usize) -> BankEntry {
        let features = Tensor::full(width as f32, (1, 1, width), &Device::Cpu).unwrap();
        BankEntry {
            path: path.to_string(),
            width,
            features,
        }
    }

    #[test]
    fn pairing_sorts_stably_by_decreasing_width() {
        // Module-traversal order: down, up, mid.
        let writer = ReferenceBank {
            entries: vec![
                entry("d0", 32),
                entry("d2", 64),
                entry("u1", 64),
                entry("u3", 32),
                entry("mid", 64),
            ],
        };
        let order: Vec<&str> = writer
            .sorted_by_width()
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(order, ["d2", "u1", "mid", "d0", "u3"]);

        let readers: Vec<(String, usize)> =
            [("d0", 32), ("d2", 64), ("u1", 64), ("u3", 32), ("mid", 64)]
                .map(|(p, w)| (p.to_string(), w))
                .into();
        let bank = ReaderBank::new(&writer, &readers, true).unwrap();
        let mid = bank.get("mid").unwrap();
        assert_eq!(mid.features.dims(), [1, 1, 64]);
        assert!(bank.get("nope").is_err());
    }

    #[test]
    fn reader_copy_is_rounded_to_f16() {
        let features = Tensor::new(&[[[1.0f32 + 1e-4]]], &Device::Cpu).unwrap();
        let writer = ReferenceBank {
            entries: vec![BankEntry {
                path: "a".into(),
                width: 1,
                features,
            }],
        };
        let bank = ReaderBank::new(&writer, &[("a".to_string(), 1)], false).unwrap();
        let v = bank
            .get("a")
            .unwrap()
            .features
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v, [1.0]);
    }

    #[test]
    fn mismatched_widths_are_rejected() {
        let writer = ReferenceBank {
            entries: vec![entry("a", 32)],
        };
        assert!(ReaderBank::new(&writer, &[("a".to_string(), 64)], true).is_err());
        assert!(ReaderBank::new(&writer, &[], true).is_err());
    }
}
