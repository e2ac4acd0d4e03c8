//! A binary of its own, keeping the system allocator (the integration binary installs
//! `MappedWeightsAllocator`): without it the `net.pth` cache must be read, not mapped (a `Vec`
//! over a mapping would otherwise be handed to `free`).

use std::path::Path;

#[test]
fn without_the_mapped_weights_allocator_the_loader_reads_the_cache() {
    assert!(!model::weights::mapped_weights_enabled());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = model::config::InferenceConfig::from_yaml_file(
        &root.join("../configs/inference/long_tiny.yaml"),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let options = model::loader::LoadOptions {
        dtype: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        cache_dir: cache.path().to_owned(),
        vocal_separator: false,
    };
    let loaded = model::loader::load(
        &model::config::WeightsLayout::new(
            root.join("tests/fixtures/hallo2-tiny/pretrained_models"),
        ),
        &config,
        &options,
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap();
    assert!(!loaded.weights_mapped);
    assert!(loaded.weight_bytes > 0);
}
