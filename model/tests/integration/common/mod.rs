//! Helpers shared by the golden-fixture parity tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// `model/tests/fixtures/`: every fixture folder.
pub fn fixtures_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One golden fixture set made from the official code (`scripts/fixtures/`): tiny weights in the
/// official layout, the tiny configs and the golden tensors. Tests read every dimension, count
/// and scale from the set's own files, so any set made the same way passes unchanged.
#[derive(Debug, Clone)]
pub struct FixtureSet {
    pub name: String,
    pub dir: PathBuf,
}

/// Every fixture set: each folder of `model/tests/fixtures` with a `config/tiny_config.json`,
/// in name order (the public set `hallo2-tiny` first).
pub fn fixture_sets() -> Vec<FixtureSet> {
    let mut sets: Vec<FixtureSet> = std::fs::read_dir(fixtures_root())
        .expect("listing the fixtures folder")
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let name = dir.file_name()?.to_string_lossy().into_owned();
            dir.join("config/tiny_config.json")
                .is_file()
                .then_some(FixtureSet { name, dir })
        })
        .collect();
    sets.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !sets.is_empty(),
        "no fixture set under {}",
        fixtures_root().display()
    );
    sets
}

/// Runs `check` on every fixture set, each to its end: a failure names every set that failed.
pub fn for_each_set(check: impl Fn(&FixtureSet)) {
    let mut failed = Vec::new();
    for set in fixture_sets() {
        eprintln!("── fixture set {}", set.name);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&set)));
        if run.is_err() {
            failed.push(set.name);
        }
    }
    assert!(failed.is_empty(), "failed on the fixture sets {failed:?}");
}

impl FixtureSet {
    /// The public set (`hallo2-tiny`, from `../shared/fixtures`), for tests that are not about
    /// parity and only need a small official-format model.
    pub fn public() -> Self {
        let dir = fixtures_root().join("hallo2-tiny");
        Self {
            name: "hallo2-tiny".into(),
            dir,
        }
    }

    /// The `pretrained_models/` folder (official HF layout).
    pub fn weights(&self) -> PathBuf {
        self.dir.join("pretrained_models")
    }

    pub fn layout(&self) -> model::config::WeightsLayout {
        model::config::WeightsLayout::new(self.weights())
    }

    /// Loads every tensor of `cases/<name>.safetensors` onto the CPU, integers kept as they are.
    pub fn case(&self, name: &str) -> HashMap<String, Tensor> {
        let path = self.case_path(name);
        candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("loading fixture {}: {e}", path.display()))
    }

    pub fn has_case(&self, name: &str) -> bool {
        self.case_path(name).is_file()
    }

    fn case_path(&self, name: &str) -> PathBuf {
        self.dir.join("cases").join(format!("{name}.safetensors"))
    }

    /// `config/tiny_config.json`: the preset, versions, module modes and bank pairing.
    pub fn preset(&self) -> serde_json::Value {
        let path = self.dir.join("config/tiny_config.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    }

    /// The inference yaml the official run read (`config/long_tiny.yaml`).
    pub fn inference(&self) -> model::config::InferenceConfig {
        let path = self.dir.join("config/long_tiny.yaml");
        model::config::InferenceConfig::from_yaml_file(&path)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    }

    /// The model's architecture as the loader reads it: config files, yaml, `net.pth` shapes.
    pub fn model_config(&self) -> model::config::ModelConfig {
        let layout = self.layout();
        let shapes: HashMap<String, Vec<usize>> =
            candle_core::pickle::read_pth_tensor_info(layout.net_pth(), false, None)
                .expect("reading net.pth's tensor list")
                .into_iter()
                .map(|info| (info.name, info.layout.shape().dims().to_vec()))
                .collect();
        model::config::ModelConfig::from_files(&layout, &self.inference(), &|key| {
            shapes.get(key).cloned()
        })
        .unwrap_or_else(|e| panic!("{}: reading the architecture: {e}", self.name))
    }

    /// `hallo2/net.pth` (F16 on disk) as an f32 CPU VarBuilder rooted at the file's top level
    /// (use `.pp("denoising_unet")` etc.).
    pub fn net_vb(&self) -> candle_nn::VarBuilder<'static> {
        let path = self.layout().net_pth();
        candle_nn::VarBuilder::from_pth(&path, DType::F32, &Device::Cpu)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    }

    /// The VAE (`sd-vae-ft-mse`, diffusers safetensors) as an f32 CPU VarBuilder.
    pub fn vae_vb(&self) -> candle_nn::VarBuilder<'static> {
        let path = self.layout().vae_weights();
        // SAFETY: fixture files are read-only for the duration of the test.
        unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu)
        }
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    }

    /// Loads the model in f32 on the CPU with `model::loader::load`, the `net.pth` cache in
    /// `cache`, passing every load event to `on_event`.
    pub fn load_model(
        &self,
        cache: &std::path::Path,
        on_event: &mut dyn FnMut(model::loader::LoadEvent),
    ) -> model::loader::LoadedModel {
        let options = model::loader::LoadOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            cache_dir: cache.to_owned(),
            vocal_separator: false,
        };
        model::loader::load(&self.layout(), &self.inference(), &options, &mut |event| {
            on_event(event);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("{}: loading the model: {e}", self.name))
    }
}

/// The public set's folder (tests that are not about parity).
pub fn tiny_dir() -> PathBuf {
    FixtureSet::public().dir
}

/// The public set's `pretrained_models/` folder.
pub fn tiny_weights() -> PathBuf {
    FixtureSet::public().weights()
}

/// Fetches one tensor from a loaded case, with a readable panic when the name is wrong.
pub fn get<'a>(case: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    case.get(name).unwrap_or_else(|| {
        let mut names: Vec<_> = case.keys().collect();
        names.sort();
        panic!("fixture has no tensor {name:?}; it has {names:?}")
    })
}

/// Asserts `|actual − expected| ≤ atol + rtol·|expected|` element-wise and reports the worst
/// element (its flat index and both values) when it does not hold.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, atol: f32, rtol: f32) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape differs");
    let a: Vec<f32> = flat(actual);
    let e: Vec<f32> = flat(expected);
    let mut worst = (0usize, 0f32, f32::NEG_INFINITY);
    let mut max_abs = 0f32;
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let d = (x - y).abs();
        if !d.is_finite() {
            panic!("{what}: non-finite value at {i}: actual {x}, expected {y}");
        }
        max_abs = max_abs.max(d);
        let excess = d - (atol + rtol * y.abs());
        if excess > worst.2 {
            worst = (i, d, excess);
        }
    }
    let (i, d, excess) = worst;
    assert!(
        excess <= 0.0,
        "{what}: max abs diff {max_abs:e}; worst at flat index {i}: actual {} expected {} (diff {d:e}, atol {atol:e}, rtol {rtol:e})",
        a[i],
        e[i]
    );
    eprintln!("{what}: max abs diff {max_abs:e} (atol {atol:e})");
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("flattening a tensor for comparison")
}

/// A case of the public set (tests that are not about parity).
pub fn case(name: &str) -> HashMap<String, Tensor> {
    FixtureSet::public().case(name)
}

/// The public set's inference yaml.
pub fn tiny_inference_config() -> model::config::InferenceConfig {
    FixtureSet::public().inference()
}

/// Loads the public set's model (see [`FixtureSet::load_model`]).
pub fn load_tiny_model(
    cache: &std::path::Path,
    on_event: &mut dyn FnMut(model::loader::LoadEvent),
) -> model::loader::LoadedModel {
    FixtureSet::public().load_model(cache, on_event)
}

/// Largest absolute element-wise difference, computed in f64 (0 for empty tensors).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap_or(0.0)
}
