//! A `VarBuilder` backend over safetensors files that remembers which keys were requested.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::SafetensorsFile;

/// Serves tensors from one or more safetensors files, converting to the requested dtype and
/// device, and records each name asked for.
pub struct WeightBackend {
    files: Vec<SafetensorsFile>,
    requested: Arc<Mutex<BTreeSet<String>>>,
}

/// A handle that outlives the `VarBuilder`: after the modules are built it tells which keys of the
/// files were never requested.
#[derive(Clone)]
pub struct UnusedKeys {
    all: BTreeSet<String>,
    requested: Arc<Mutex<BTreeSet<String>>>,
}

impl UnusedKeys {
    /// Keys present in the files and not requested so far, sorted.
    pub fn unused(&self) -> Vec<String> {
        let requested = self.requested.lock().unwrap_or_else(|p| p.into_inner());
        self.all.difference(&requested).cloned().collect()
    }
}

impl WeightBackend {
    pub fn new(files: Vec<SafetensorsFile>) -> (Self, UnusedKeys) {
        let requested = Arc::new(Mutex::new(BTreeSet::new()));
        let all = files
            .iter()
            .flat_map(|f| f.entries().keys().cloned())
            .collect();
        let keys = UnusedKeys {
            all,
            requested: requested.clone(),
        };
        (Self { files, requested }, keys)
    }

    fn file_with(&self, name: &str) -> Option<&SafetensorsFile> {
        self.files.iter().find(|f| f.entries().contains_key(name))
    }

    fn load(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let file = self.file_with(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        let tensor = file.read_as(name, dtype)?.to_device(dev)?;
        self.requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Ok(tensor)
    }
}

impl SimpleBackend for WeightBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(entry) = self.file_with(name).and_then(|f| f.entries().get(name))
            && entry.shape.as_slice() != s.dims()
        {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: s,
                rhs: entry.shape.clone().into(),
                op: "load weight",
            }
            .bt())
            .map_err(|e| {
                e.context(format!(
                    "weight {name}: checkpoint shape differs from the model's"
                ))
            });
        }
        self.load(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.file_with(name).is_some()
    }
}
