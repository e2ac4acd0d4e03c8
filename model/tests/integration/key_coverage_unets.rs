//! Key coverage of both UNets, the way hallo2 strict-loads `net.pth`: building a UNet must request
//! exactly the keys under its prefix, none missing (the build would fail) and none unused.
//!
//! * tiny: each fixture set's official tiny `net.pth`, through a backend that records every requested key;
//! * full size: the key/shape manifest of the real `net.pth` (`manifests/hallo2_net.pth.json`),
//!   through a backend that serves zero-stride tensors of the manifest shape, so the 2.4 G
//!   parameters are never allocated; a shape differing from the manifest fails the build.
use crate::common::for_each_set;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use model::unet_2d::{UNet2DConditionConfig, UNet2DConditionModel};
use model::unet_3d::{UNet3DConditionConfig, UNet3DConditionModel};

/// Wraps a backend and records the names requested through it.
struct Recording<B> {
    inner: B,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl<B: SimpleBackend> SimpleBackend for Recording<B> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.seen.lock().unwrap().insert(name.to_string());
        self.inner.get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.seen.lock().unwrap().insert(name.to_string());
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Serves broadcast zeros of the manifest shapes (no allocation).
struct Manifest {
    shapes: BTreeMap<String, Vec<usize>>,
}

impl SimpleBackend for Manifest {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        match self.shapes.get(name) {
            None => candle_core::bail!("{name} is not in net.pth"),
            Some(shape) if shape.as_slice() != s.dims() => {
                candle_core::bail!("{name}: requested {:?}, net.pth has {shape:?}", s.dims())
            }
            Some(_) => Tensor::zeros((), dtype, dev)?.broadcast_as(s),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        match self.shapes.get(name) {
            None => candle_core::bail!("{name} is not in net.pth"),
            Some(shape) => Tensor::zeros((), dtype, dev)?.broadcast_as(shape.as_slice()),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
}

fn recording_vb<B: SimpleBackend + 'static>(
    inner: B,
) -> (VarBuilder<'static>, Arc<Mutex<BTreeSet<String>>>) {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let backend: Box<dyn SimpleBackend> = Box::new(Recording {
        inner,
        seen: seen.clone(),
    });
    (
        VarBuilder::from_backend(backend, DType::F32, Device::Cpu),
        seen,
    )
}

/// Asserts that `seen` is exactly the keys of `all` under `prefix`.
fn assert_exact(prefix: &str, all: &BTreeSet<String>, seen: &BTreeSet<String>) {
    let expected: BTreeSet<&String> = all.iter().filter(|k| k.starts_with(prefix)).collect();
    let seen_here: BTreeSet<&String> = seen.iter().filter(|k| k.starts_with(prefix)).collect();
    let missing: Vec<_> = expected.difference(&seen_here).collect();
    let unknown: Vec<_> = seen_here.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "{prefix}: {} keys never requested: {missing:?}",
        missing.len()
    );
    assert!(
        unknown.is_empty(),
        "{prefix}: requested keys not in net.pth: {unknown:?}"
    );
    assert!(!expected.is_empty(), "{prefix}: no keys");
    eprintln!(
        "{prefix}: all {} keys requested, none unused",
        expected.len()
    );
}

#[test]
fn tiny_unets_request_exactly_their_net_pth_keys() {
    for_each_set(|set| {
        let path = set.layout().net_pth();
        let all: BTreeSet<String> = candle_core::pickle::read_pth_tensor_info(&path, false, None)
            .unwrap()
            .into_iter()
            .map(|info| info.name)
            .collect();
        let (vb, seen) = recording_vb(candle_core::pickle::PthTensors::new(&path, None).unwrap());
        let config = set.model_config();
        UNet2DConditionModel::new(&config.reference_unet, vb.pp("reference_unet")).unwrap();
        UNet3DConditionModel::new(&config.denoising_unet, vb.pp("denoising_unet")).unwrap();

        let seen = seen.lock().unwrap();
        assert_exact("reference_unet.", &all, &seen);
        assert_exact("denoising_unet.", &all, &seen);
    });
}

#[test]
fn full_size_unets_match_the_net_pth_manifest() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/manifests/hallo2_net.pth.json"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let shapes: BTreeMap<String, Vec<usize>> = manifest["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect();
    let all: BTreeSet<String> = shapes.keys().cloned().collect();
    let (vb, seen) = recording_vb(Manifest { shapes });

    UNet2DConditionModel::new(&UNet2DConditionConfig::hallo2(), vb.pp("reference_unet")).unwrap();
    let unet = UNet3DConditionModel::new(&UNet3DConditionConfig::hallo2(), vb.pp("denoising_unet"))
        .unwrap();

    let seen = seen.lock().unwrap();
    assert_exact("reference_unet.", &all, &seen);
    assert_exact("denoising_unet.", &all, &seen);
    // 16 reference-bank readers, 6 at 1280, 5 at 640 and 5 at 320 channels.
    let readers = unet.reader_blocks();
    assert_eq!(readers.len(), 16);
    for (width, count) in [(1280, 6), (640, 5), (320, 5)] {
        assert_eq!(
            readers.iter().filter(|(_, w)| *w == width).count(),
            count,
            "{width}-wide readers"
        );
    }
}
