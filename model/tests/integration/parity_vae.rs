//! Parity of `vae::AutoencoderKL` with diffusers 0.32.2 on each set's tiny official VAE
//! (`pretrained_models/sd-vae-ft-mse`), golden tensors `cases/vae.safetensors`:
//! - `encode_input (n,3,H,W)` → `latent_dist.mean` / `latent_dist.logvar (n,4,H/8,W/8)`, unscaled;
//! - `decode_input (n,4,h,w)` (already divided by 0.18215) → `decode(..).sample (n,3,8h,8w)`.
//!
//! The tiny file uses the current attention names (`to_q/to_k/to_v/to_out.0`); the legacy spelling
//! (`query/key/value/proj_attn`) is checked by renaming the same tensors in memory. Key coverage
//! (no missing, no unused keys) is checked against the tiny file and the full-size manifest.
use crate::common::{self, FixtureSet, for_each_set};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use common::{assert_close, get};
use model::vae::{AutoencoderKL, AutoencoderKLConfig, attention::legacy_key_name};

fn tiny_tensors(set: &FixtureSet) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(set.layout().vae_weights(), &Device::Cpu)
        .expect("loading the tiny vae")
}

fn check_encode_decode(set: &FixtureSet, vae: &AutoencoderKL, tag: &str) {
    let golden = set.case("vae");
    let dist = vae.encode(get(&golden, "encode_input")).expect("encode");
    assert_close(
        &format!("{tag} latent mean"),
        &dist.mean,
        get(&golden, "encode_latent_mean"),
        1e-4,
        0.0,
    );
    assert_close(
        &format!("{tag} latent logvar"),
        &dist.logvar,
        get(&golden, "encode_latent_logvar"),
        1e-4,
        0.0,
    );
    let sample = vae.decode(get(&golden, "decode_input")).expect("decode");
    assert_close(
        &format!("{tag} decoded"),
        &sample,
        get(&golden, "decode_output"),
        1e-4,
        0.0,
    );
}

#[test]
fn encode_and_decode_match_diffusers() {
    for_each_set(|set| {
        let vae = AutoencoderKL::new(&set.model_config().vae, set.vae_vb()).expect("building");
        check_encode_decode(set, &vae, "current keys");
    });
}

#[test]
fn legacy_attention_key_names_load() {
    for_each_set(legacy_names_load);
}

fn legacy_names_load(set: &FixtureSet) {
    let tensors = tiny_tensors(set);
    assert!(
        tensors.contains_key("encoder.mid_block.attentions.0.to_q.weight"),
        "the tiny file is expected to use the current names"
    );
    let legacy: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (legacy_key_name(&k), v))
        .collect();
    for key in [
        "encoder.mid_block.attentions.0.query.weight",
        "decoder.mid_block.attentions.0.proj_attn.bias",
    ] {
        assert!(legacy.contains_key(key), "renamed copy lacks {key}");
    }
    assert!(
        !legacy
            .keys()
            .any(|k| k.contains(".to_q.") || k.contains(".to_out."))
    );
    let vb = VarBuilder::from_tensors(legacy, DType::F32, &Device::Cpu);
    let vae = AutoencoderKL::new(&set.model_config().vae, vb).expect("building from legacy names");
    check_encode_decode(set, &vae, "legacy keys");
}

/// A weight source that knows only names and shapes: hands out broadcast zeros and records every
/// requested name, so that the requested set can be compared with a file's key set.
struct KeyAudit {
    shapes: HashMap<String, Vec<usize>>,
    requested: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

impl SimpleBackend for KeyAudit {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(shape) = self.shapes.get(name) else {
            candle_core::bail!("missing key {name}");
        };
        if shape.as_slice() != s.dims() {
            candle_core::bail!("{name}: file shape {shape:?}, requested {:?}", s.dims());
        }
        self.requested
            .lock()
            .expect("audit lock")
            .insert(name.to_string(), shape.clone());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unchecked get of {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
}

/// Builds the VAE from `shapes` and asserts it requested exactly those keys with those shapes.
fn assert_exact_key_set(
    cfg: &AutoencoderKLConfig,
    shapes: HashMap<String, Vec<usize>>,
    what: &str,
) {
    let requested = Arc::new(Mutex::new(BTreeMap::new()));
    let audit = KeyAudit {
        shapes: shapes.clone(),
        requested: requested.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(audit), DType::F32, Device::Cpu);
    AutoencoderKL::new(cfg, vb).unwrap_or_else(|e| panic!("{what}: {e}"));
    let requested = requested.lock().expect("audit lock");
    let unused: Vec<_> = shapes
        .keys()
        .filter(|k| !requested.contains_key(*k))
        .collect();
    assert!(unused.is_empty(), "{what}: unused keys {unused:?}");
    assert_eq!(requested.len(), shapes.len(), "{what}: key count");
}

#[test]
fn tiny_file_keys_are_all_used() {
    for_each_set(|set| {
        let shapes: HashMap<String, Vec<usize>> = tiny_tensors(set)
            .into_iter()
            .map(|(k, v)| (k, v.dims().to_vec()))
            .collect();
        let legacy = shapes
            .iter()
            .map(|(k, v)| (legacy_key_name(k), v.clone()))
            .collect();
        let cfg = set.model_config().vae;
        assert_exact_key_set(&cfg, shapes, "tiny, current names");
        assert_exact_key_set(&cfg, legacy, "tiny, legacy names");
    });
}

#[test]
fn hallo2_config_matches_the_full_size_manifest() {
    let path = common::tiny_dir().join("../manifests/sd_vae_ft_mse.json");
    let text = std::fs::read_to_string(&path).expect("reading the vae manifest");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest json");
    let shapes: HashMap<String, Vec<usize>> = manifest["tensors"]
        .as_object()
        .expect("manifest tensors")
        .iter()
        .map(|(k, v)| {
            let dims = v["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize);
            (k.clone(), dims.collect())
        })
        .collect();
    assert_eq!(Some(shapes.len() as u64), manifest["num_tensors"].as_u64());
    // The manifest's own alias table must agree with the rename rule.
    let aliases = manifest["legacy_attention_key_aliases"]
        .as_object()
        .expect("aliases");
    assert!(!aliases.is_empty());
    for (current, legacy) in aliases {
        assert_eq!(
            legacy_key_name(current),
            legacy.as_str().expect("alias"),
            "alias of {current}"
        );
    }
    let legacy = shapes
        .iter()
        .map(|(k, v)| (legacy_key_name(k), v.clone()))
        .collect();
    let cfg = AutoencoderKLConfig::hallo2();
    assert_exact_key_set(&cfg, shapes, "full size, current names");
    assert_exact_key_set(&cfg, legacy, "full size, legacy names");
}
