//! Weights served from a mapping of the `net.pth` cache (`MappedWeightsAllocator` installed, as
//! in the studio and the CLI): the same values as a read, the file mapped while any tensor lives
//! and unmapped when the last one is freed, tensors usable after the file handle is gone.

use crate::common;

use candle_core::DType;
use common::max_abs_diff;
use model::weights::{SafetensorsFile, pth_cache};

/// Whether this process maps `path` (the cache file) at the moment.
fn is_mapped(path: &std::path::Path) -> bool {
    let name = path.canonicalize().unwrap();
    let name = name.to_str().unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|line| line.ends_with(name))
}

#[test]
fn mapped_tensors_equal_read_tensors_and_outlive_the_file_handle() {
    assert!(model::weights::mapped_weights_enabled());
    let cache = tempfile::tempdir().unwrap();
    let net = common::tiny_weights().join("hallo2/net.pth");
    let cached = pth_cache::cached_safetensors(&net, cache.path(), DType::F32, &mut |_, _| {})
        .unwrap()
        .safetensors;
    let plain = SafetensorsFile::open(&cached).unwrap();
    let mut mapped = SafetensorsFile::open(&cached).unwrap();
    assert!(!is_mapped(&cached));
    assert!(mapped.serve_from_mapping());
    assert!(is_mapped(&cached));

    let mut kept = Vec::new();
    for name in plain.entries().keys() {
        let read = plain.read(name).unwrap();
        let shared = mapped.read_as(name, DType::F32).unwrap();
        assert_eq!(shared.dims(), read.dims(), "{name}");
        assert_eq!(max_abs_diff(&shared, &read), 0.0, "{name}");
        kept.push((read, shared));
    }
    drop(mapped);
    assert!(is_mapped(&cached), "live tensors keep the mapping");
    // Arithmetic on mapped tensors after the handle is gone, against the read copies.
    for (read, shared) in &kept {
        let doubled = (shared * 2.0).unwrap();
        assert_eq!(max_abs_diff(&doubled, &(read * 2.0).unwrap()), 0.0);
    }
    drop(kept);
    assert!(!is_mapped(&cached), "the last tensor unmaps the cache file");
}

#[test]
fn a_loaded_model_maps_its_cache_until_it_is_dropped() {
    let cache = tempfile::tempdir().unwrap();
    let load = || common::load_tiny_model(cache.path(), &mut |_| {});
    let first = load();
    assert!(first.weights_mapped);
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(is_mapped(&cached[0]));
    // A reload while the first model lives (the studio's reload) maps the file a second time.
    let second = load();
    drop(first);
    assert!(is_mapped(&cached[0]), "the second model still uses it");
    drop(second);
    assert!(!is_mapped(&cached[0]), "no model, no mapping");
}
