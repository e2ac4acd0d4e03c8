//! A `VarBuilder` backend over safetensors files that reads ahead in parallel and remembers
//! which keys were requested.
//!
//! Tensors are read by group: the first request for a key whose first segment is, say,
//! `denoising_unet` reads every tensor under `denoising_unet.` on [`read_threads`] threads, each
//! into its own final buffer (converted to the requested dtype by the worker), and later requests
//! take the ready tensor out of the backend. So a component's tensors are read while that
//! component is built (the loader's stages keep meaning "reading and building this part"), the
//! reads of a component overlap, and no tensor is held twice: a handed-out tensor is no longer
//! referenced by the backend. This relies on the model requesting every tensor of a group it
//! touches, which the loader's key audit proves before any weight is read; a tensor read ahead and
//! never requested stays in memory until the backend is dropped ([`UnusedKeys::unclaimed_bytes`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::{SafetensorsFile, TensorEntry};

/// Most threads a group read uses: beyond this, memory bandwidth (and the kernel's page zeroing)
/// is the limit, not the number of readers.
const MAX_READ_THREADS: usize = 8;

/// Threads [`WeightBackend`] reads a group of tensors with: the available cores, at most 8.
pub fn read_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_READ_THREADS)
}

/// Serves tensors from one or more safetensors files, converting to the requested dtype and
/// device, and records each name asked for. See the module docs for the read-ahead.
pub struct WeightBackend {
    files: Vec<SafetensorsFile>,
    requested: Arc<Mutex<BTreeSet<String>>>,
    ahead: Arc<Mutex<ReadAhead>>,
}

/// Groups read so far and their tensors not handed out yet.
#[derive(Default)]
struct ReadAhead {
    groups: HashSet<String>,
    ready: HashMap<String, Tensor>,
}

/// A handle that outlives the `VarBuilder`: after the modules are built it tells which keys of the
/// files were never requested.
#[derive(Clone)]
pub struct UnusedKeys {
    all: BTreeSet<String>,
    requested: Arc<Mutex<BTreeSet<String>>>,
    ahead: Weak<Mutex<ReadAhead>>,
}

impl UnusedKeys {
    /// Keys present in the files and not requested so far, sorted.
    pub fn unused(&self) -> Vec<String> {
        let requested = self.requested.lock().unwrap_or_else(|p| p.into_inner());
        self.all.difference(&requested).cloned().collect()
    }

    /// Bytes of tensors read ahead and not requested (yet); 0 once the backend is dropped.
    pub fn unclaimed_bytes(&self) -> u64 {
        let Some(ahead) = self.ahead.upgrade() else {
            return 0;
        };
        let ahead = ahead.lock().unwrap_or_else(|p| p.into_inner());
        ahead
            .ready
            .values()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }
}

impl WeightBackend {
    pub fn new(files: Vec<SafetensorsFile>) -> (Self, UnusedKeys) {
        let requested = Arc::new(Mutex::new(BTreeSet::new()));
        let ahead = Arc::new(Mutex::new(ReadAhead::default()));
        let all = files
            .iter()
            .flat_map(|f| f.entries().keys().cloned())
            .collect();
        let keys = UnusedKeys {
            all,
            requested: requested.clone(),
            ahead: Arc::downgrade(&ahead),
        };
        (
            Self {
                files,
                requested,
                ahead,
            },
            keys,
        )
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
        // A tensor whose read-ahead failed, or that is requested a second time, is read here
        // (and a read error is reported for this very key).
        let tensor = match self.take_ready(name, dtype) {
            Some(ready) => ready.to_dtype(dtype)?,
            None => file.read_as(name, dtype)?,
        };
        let tensor = tensor.to_device(dev)?;
        self.requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Ok(tensor)
    }

    /// Takes `name` out of the read-ahead, reading its whole group first (in `dtype`) if this is
    /// the group's first request.
    fn take_ready(&self, name: &str, dtype: DType) -> Option<Tensor> {
        let group = group_of(name);
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        if ahead.groups.insert(group.to_string()) {
            let tensors = self.read_group(group, dtype);
            ahead.ready.extend(tensors);
        }
        ahead.ready.remove(name)
    }

    /// Reads every tensor of `group` in `dtype` on [`read_threads`] threads (this one included);
    /// tensors that fail to read are left out.
    fn read_group(&self, group: &str, dtype: DType) -> Vec<(String, Tensor)> {
        let mut jobs: Vec<(&SafetensorsFile, &String, &TensorEntry)> = self
            .files
            .iter()
            .flat_map(|f| f.entries().iter().map(move |(name, e)| (f, name, e)))
            .filter(|(_, name, _)| group_of(name) == group)
            .collect();
        // File order, so that the threads together sweep each file front to back (readahead
        // works for a cold page cache too).
        jobs.sort_by(|(fa, _, a), (fb, _, b)| (fa.path(), a.start).cmp(&(fb.path(), b.start)));
        let next = AtomicUsize::new(0);
        let work = || {
            let mut staging = Vec::new();
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((file, name, _)) = jobs.get(i) else {
                    return done;
                };
                if let Ok(tensor) = file.read_with(name, dtype, &mut staging) {
                    done.push(((*name).clone(), tensor));
                }
            }
        };
        let helpers = read_threads().min(jobs.len()).saturating_sub(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..helpers)
                .filter_map(|i| {
                    std::thread::Builder::new()
                        .name(format!("weights-read-{i}"))
                        .spawn_scoped(scope, work)
                        .ok()
                })
                .collect();
            // If a thread could not be started, the others (and this one) take its share.
            let mut done = work();
            for handle in handles {
                done.extend(handle.join().unwrap_or_default());
            }
            done
        })
    }
}

/// The read-ahead group of a key: its first dot-separated segment (`reference_unet`, `encoder`).
fn group_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(first, _)| first)
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
