//! Full-size key coverage: building the official configuration requests exactly the keys and
//! shapes of the official files' manifests — zero missing, zero unused — without allocating a
//! single weight (every tensor is a stride-0 placeholder).

use crate::common;

use model::config::ModelConfig;
use model::heads::ModelHeads;
use model::net::Net;
use model::vae::AutoencoderKL;
use model::wav2vec2::Wav2Vec2Config;
use model::weights::KeyAudit;

fn manifest(name: &str) -> KeyAudit {
    let path = common::tiny_dir().join("../manifests").join(name);
    KeyAudit::from_manifest(&path).unwrap()
}

/// The tensor count a manifest states.
fn manifest_count(name: &str) -> usize {
    let path = common::tiny_dir().join("../manifests").join(name);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["num_tensors"].as_u64().unwrap() as usize
}

/// The heads as the loader reads them: from the full-size `net.pth` manifest's shapes and the
/// wav2vec2-base-960h config alone.
fn full_size_heads() -> ModelHeads {
    let path = common::tiny_dir().join("../manifests/hallo2_net.pth.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tensors = &manifest["tensors"];
    let shape = |key: &str| -> Option<Vec<usize>> {
        serde_json::from_value(tensors.get(key)?.get("shape")?.clone()).ok()
    };
    let wav2vec: Wav2Vec2Config = serde_json::from_value(
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(
                common::tiny_dir().join("../manifests/wav2vec2_base_960h.json"),
            )
            .unwrap(),
        )
        .unwrap()["config"]
            .clone(),
    )
    .unwrap();
    ModelHeads::from_shapes(&shape, &wav2vec).unwrap()
}

#[test]
fn the_full_size_heads_read_from_the_manifest_are_the_official_scripts_literals() {
    assert_eq!(full_size_heads(), ModelHeads::hallo2());
}

#[test]
fn full_size_net_requests_exactly_the_net_pth_keys() {
    let audit = manifest("hallo2_net.pth.json");
    let config = ModelConfig {
        heads: full_size_heads(),
        ..ModelConfig::hallo2()
    };
    Net::new(&config, audit.var_builder()).unwrap();
    let report = audit.report();
    assert!(report.is_exact(), "{}", report.summary());
    assert_eq!(report.requested, manifest_count("hallo2_net.pth.json"));
}

#[test]
fn full_size_vae_requests_exactly_the_vae_keys() {
    let audit = manifest("sd_vae_ft_mse.json");
    AutoencoderKL::new(&ModelConfig::hallo2().vae, audit.var_builder()).unwrap();
    let report = audit.report();
    assert!(report.is_exact(), "{}", report.summary());
    assert_eq!(report.requested, manifest_count("sd_vae_ft_mse.json"));
}

#[test]
fn a_missing_module_is_reported_by_name() {
    let audit = manifest("sd_vae_ft_mse.json");
    let mut cfg = ModelConfig::hallo2().vae;
    cfg.layers_per_block = 3;
    AutoencoderKL::new(&cfg, audit.var_builder()).unwrap();
    let report = audit.report();
    assert!(
        report.missing.iter().any(|(k, _)| k.contains("resnets.2")),
        "{}",
        report.summary()
    );
}
