//! Full-size key coverage: building the official configuration requests exactly the keys and
//! shapes of the official files' manifests — zero missing, zero unused — without allocating a
//! single weight (every tensor is a stride-0 placeholder).

use crate::common;

use model::config::ModelConfig;
use model::net::Net;
use model::vae::AutoencoderKL;
use model::weights::KeyAudit;

fn manifest(name: &str) -> KeyAudit {
    let path = common::tiny_dir().join("../manifests").join(name);
    KeyAudit::from_manifest(&path).unwrap()
}

#[test]
fn full_size_net_requests_exactly_the_net_pth_keys() {
    let audit = manifest("hallo2_net.pth.json");
    Net::new(&ModelConfig::hallo2(), audit.var_builder()).unwrap();
    let report = audit.report();
    assert!(report.is_exact(), "{}", report.summary());
    assert_eq!(report.requested, 2656);
}

#[test]
fn full_size_vae_requests_exactly_the_vae_keys() {
    let audit = manifest("sd_vae_ft_mse.json");
    AutoencoderKL::new(&ModelConfig::hallo2().vae, audit.var_builder()).unwrap();
    let report = audit.report();
    assert!(report.is_exact(), "{}", report.summary());
    assert_eq!(report.requested, 248);
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
