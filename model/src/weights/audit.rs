//! Key-set audits: build modules against names and shapes only, allocate nothing.
//!
//! Every requested weight is answered with a zero scalar broadcast to the requested shape (a
//! stride-0 view, no storage), so even the full-size Hallo2 can be "built" in milliseconds to
//! prove which keys and shapes it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use super::SafetensorsFile;
use crate::error::{ModelError, Result};

/// What a file (or manifest) says about one tensor.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct TensorSpec {
    pub shape: Vec<usize>,
    #[serde(default)]
    pub dtype: Option<String>,
}

/// The outcome of building modules against a key set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyAuditReport {
    /// Requested by the model, absent from the file: `(name, shape the model wants)`.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Present in the file, never requested.
    pub unused: Vec<String>,
    /// Present with another shape: `(name, model shape, file shape)`.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// How many distinct keys were requested.
    pub requested: usize,
}

impl KeyAuditReport {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unused.is_empty() && self.mismatched.is_empty()
    }

    /// A short human summary naming the first offending keys.
    pub fn summary(&self) -> String {
        let first = |v: Vec<String>| {
            let n = v.len();
            let shown: Vec<_> = v.into_iter().take(5).collect();
            if n > 5 {
                format!("{} (+{} more)", shown.join(", "), n - 5)
            } else {
                shown.join(", ")
            }
        };
        let mut parts = vec![];
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing: {}",
                self.missing.len(),
                first(
                    self.missing
                        .iter()
                        .map(|(n, s)| format!("{n} {s:?}"))
                        .collect()
                )
            ));
        }
        if !self.mismatched.is_empty() {
            parts.push(format!(
                "{} with another shape: {}",
                self.mismatched.len(),
                first(
                    self.mismatched
                        .iter()
                        .map(|(n, m, f)| format!("{n} model {m:?} file {f:?}"))
                        .collect()
                )
            ));
        }
        if !self.unused.is_empty() {
            parts.push(format!(
                "{} unused: {}",
                self.unused.len(),
                first(self.unused.clone())
            ));
        }
        if parts.is_empty() {
            format!("all {} keys match", self.requested)
        } else {
            parts.join("; ")
        }
    }
}

/// A key set to build modules against; see the module docs.
#[derive(Clone)]
pub struct KeyAudit {
    expected: Arc<BTreeMap<String, TensorSpec>>,
    state: Arc<Mutex<AuditState>>,
}

#[derive(Default)]
struct AuditState {
    requested: BTreeSet<String>,
    missing: BTreeMap<String, Vec<usize>>,
    mismatched: BTreeMap<String, (Vec<usize>, Vec<usize>)>,
}

impl KeyAudit {
    pub fn new(expected: BTreeMap<String, TensorSpec>) -> Self {
        Self {
            expected: Arc::new(expected),
            state: Arc::default(),
        }
    }

    /// The key set of a safetensors file's header.
    pub fn from_safetensors(file: &SafetensorsFile) -> Self {
        let specs = file
            .entries()
            .iter()
            .map(|(name, e)| {
                let dtype = super::safetensors_file::dtype_name(e.dtype).map(str::to_string);
                (
                    name.clone(),
                    TensorSpec {
                        shape: e.shape.clone(),
                        dtype,
                    },
                )
            })
            .collect();
        Self::new(specs)
    }

    /// The key set of a manifest (`{"tensors": {name: {"shape": [...], "dtype": "F16"}}}`).
    pub fn from_manifest(path: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            tensors: BTreeMap<String, TensorSpec>,
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::io(format!("reading manifest {}", path.display()), e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| ModelError::Weights {
            path: path.to_owned(),
            message: format!("not a tensor manifest: {e}"),
        })?;
        Ok(Self::new(manifest.tensors))
    }

    /// A VarBuilder (f32, CPU) whose tensors are allocation-free placeholders.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    /// What the modules built so far requested, compared with the key set.
    pub fn report(&self) -> KeyAuditReport {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let unused = self
            .expected
            .keys()
            .filter(|k| !state.requested.contains(*k))
            .cloned()
            .collect();
        KeyAuditReport {
            missing: state
                .missing
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect(),
            unused,
            mismatched: state
                .mismatched
                .iter()
                .map(|(k, (m, f))| (k.clone(), m.clone(), f.clone()))
                .collect(),
            requested: state.requested.len(),
        }
    }

    fn placeholder(shape: &Shape, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
    }
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
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match self.expected.get(name) {
            None => {
                state.missing.insert(name.to_string(), s.dims().to_vec());
            }
            Some(spec) if spec.shape.as_slice() != s.dims() => {
                state.requested.insert(name.to_string());
                state
                    .mismatched
                    .insert(name.to_string(), (s.dims().to_vec(), spec.shape.clone()));
            }
            Some(_) => {
                state.requested.insert(name.to_string());
            }
        }
        Self::placeholder(&s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match self.expected.get(name) {
            Some(spec) => {
                state.requested.insert(name.to_string());
                Self::placeholder(&Shape::from(spec.shape.clone()), dtype, dev)
            }
            None => {
                state.missing.insert(name.to_string(), vec![]);
                candle_core::bail!("audit: {name} is not in the key set")
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.expected.contains_key(name)
    }
}
