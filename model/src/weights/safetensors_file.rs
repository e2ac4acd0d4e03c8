//! Header parsing and positioned reads of one `.safetensors` file.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use half::slice::HalfFloatSliceExt;

use super::mapped::FileMapping;
use super::memory::{as_bytes_mut, populate, zeroed_vec};
use crate::error::{ModelError, Result};

/// One tensor's place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

/// An open safetensors file: its header, and the handle to read tensors from.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    entries: BTreeMap<String, TensorEntry>,
    /// Set by [`Self::serve_from_mapping`]: tensors read in their stored dtype come from here.
    mapping: Option<FileMapping>,
    /// Stored bytes of the chunk being converted by [`Self::read_as`], reused across calls.
    staging: Mutex<Vec<u64>>,
}

/// The JSON header entry of one tensor, as the format defines it.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Largest header we accept (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

impl SafetensorsFile {
    /// Opens `path` and validates its header against the file size.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Weights {
            path: path.to_owned(),
            message,
        };
        let file = File::open(path)
            .map_err(|e| ModelError::io(format!("opening {}", path.display()), e))?;
        let file_len = file
            .metadata()
            .map_err(|e| ModelError::io(format!("reading metadata of {}", path.display()), e))?
            .len();
        let mut len_bytes = [0u8; 8];
        file.read_exact_at(&mut len_bytes, 0).map_err(|_| {
            bad(format!(
                "file is {file_len} bytes, too short for a safetensors header"
            ))
        })?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
            return Err(bad(format!(
                "header length {header_len} does not fit the file ({file_len} bytes): not a safetensors file or truncated"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| ModelError::io(format!("reading the header of {}", path.display()), e))?;
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let data_start = 8 + header_len;
        let mut entries = BTreeMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let entry: HeaderEntry = serde_json::from_value(value)
                .map_err(|e| bad(format!("header entry {name:?}: {e}")))?;
            let dtype = parse_dtype(&entry.dtype).ok_or_else(|| {
                bad(format!(
                    "tensor {name:?} has unsupported dtype {}",
                    entry.dtype
                ))
            })?;
            let [start, end] = entry.data_offsets;
            let expected = entry.shape.iter().product::<usize>() * dtype.size_in_bytes();
            if end < start || (end - start) as usize != expected {
                return Err(bad(format!(
                    "tensor {name:?} {:?} {dtype:?} spans {} bytes, expected {expected}",
                    entry.shape,
                    end.saturating_sub(start)
                )));
            }
            if data_start + end > file_len {
                return Err(bad(format!(
                    "tensor {name:?} ends at byte {} but the file has {file_len}: the file is truncated",
                    data_start + end
                )));
            }
            entries.insert(
                name,
                TensorEntry {
                    dtype,
                    shape: entry.shape,
                    start: data_start + start,
                    end: data_start + end,
                },
            );
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            entries,
            mapping: None,
            staging: Mutex::default(),
        })
    }

    /// From now on, tensors read in their stored dtype share this file's pages (a private,
    /// copy-on-write mapping) instead of being copied into fresh memory; see
    /// [`super::MappedWeightsAllocator`]. Returns whether the file is mapped: only programs that
    /// install that allocator can map. Only for files nobody edits in place (our caches).
    pub fn serve_from_mapping(&mut self) -> bool {
        if self.mapping.is_none() {
            let len = self.file.metadata().map_or(0, |m| m.len());
            self.mapping = FileMapping::map(&self.file, len);
        }
        self.mapping.is_some()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor in the file, by name.
    pub fn entries(&self) -> &BTreeMap<String, TensorEntry> {
        &self.entries
    }

    /// Bytes of tensor data in the file.
    pub fn data_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.end - e.start).sum()
    }

    /// Reads one tensor in its stored dtype onto the CPU: one allocation, one read.
    pub fn read(&self, name: &str) -> candle_core::Result<Tensor> {
        let entry = self.entry(name)?;
        self.read_stored(name, entry)
    }

    /// Reads one tensor onto the CPU in `dtype`. Between F16 and F32 the stored bytes go through
    /// a small staging buffer reused across calls, so the only new memory is the converted tensor
    /// (`read(..).to_dtype(..)` would also allocate, and fault in, a stored-dtype copy).
    pub fn read_as(&self, name: &str, dtype: DType) -> candle_core::Result<Tensor> {
        let mut staging = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        self.read_with(name, dtype, &mut staging)
    }

    /// [`Self::read_as`] with the caller's staging buffer, so several threads can read from one
    /// file at once (reads are positioned: they share no cursor).
    pub(crate) fn read_with(
        &self,
        name: &str,
        dtype: DType,
        staging: &mut Vec<u64>,
    ) -> candle_core::Result<Tensor> {
        let entry = self.entry(name)?;
        let shape = Shape::from(entry.shape.clone());
        let n = shape.elem_count();
        match (entry.dtype, dtype) {
            (DType::F16, DType::F32) => {
                let mut out = zeroed_vec::<f32>(n)?;
                self.read_converted(name, entry, staging, &mut out, |src: &[half::f16], dst| {
                    src.convert_to_f32_slice(dst)
                })?;
                Tensor::from_vec(out, shape, &Device::Cpu)
            }
            (DType::F32, DType::F16) => {
                let mut out = zeroed_vec::<half::f16>(n)?;
                self.read_converted(name, entry, staging, &mut out, |src: &[f32], dst| {
                    dst.convert_from_f32_slice(src)
                })?;
                Tensor::from_vec(out, shape, &Device::Cpu)
            }
            _ => self.read_stored(name, entry)?.to_dtype(dtype),
        }
    }

    /// Reads `entry` in its stored dtype: from the mapping when there is one, else into a fresh,
    /// pre-faulted buffer.
    fn read_stored(&self, name: &str, entry: &TensorEntry) -> candle_core::Result<Tensor> {
        let shape = Shape::from(entry.shape.clone());
        let n = shape.elem_count();
        macro_rules! read_as {
            ($t:ty) => {{
                let mapped = self
                    .mapping
                    .as_ref()
                    .and_then(|m| m.vec::<$t>(entry.start, n));
                let data = match mapped {
                    Some(data) => data,
                    None => {
                        let mut data = zeroed_vec::<$t>(n)?;
                        self.read_bytes(name, entry.start, as_bytes_mut(&mut data))?;
                        data
                    }
                };
                Tensor::from_vec(data, shape, &Device::Cpu)
            }};
        }
        match entry.dtype {
            DType::F16 => read_as!(half::f16),
            DType::BF16 => read_as!(half::bf16),
            DType::F32 => read_as!(f32),
            DType::F64 => read_as!(f64),
            DType::I64 => read_as!(i64),
            DType::U32 => read_as!(u32),
            DType::U8 => read_as!(u8),
            other => candle_core::bail!("reading {name}: dtype {other:?} is not supported"),
        }
    }

    /// Reads `entry` (stored as `S`) chunk by chunk through `staging` and converts each chunk
    /// into its part of `out`, faulting that part in just before it is written.
    fn read_converted<S: candle_core::WithDType, D: candle_core::WithDType>(
        &self,
        name: &str,
        entry: &TensorEntry,
        staging: &mut Vec<u64>,
        out: &mut [D],
        convert: impl Fn(&[S], &mut [D]),
    ) -> candle_core::Result<()> {
        let mut offset = entry.start;
        for dst in out.chunks_mut(CONVERT_CHUNK_ELEMS) {
            let src = staged::<S>(staging, dst.len());
            let src_bytes = as_bytes_mut(src);
            self.file.read_exact_at(src_bytes, offset).map_err(|e| {
                candle_core::Error::Msg(format!("reading {name} from {}: {e}", self.path.display()))
            })?;
            offset += src_bytes.len() as u64;
            populate(as_bytes_mut(dst));
            convert(src, dst);
        }
        Ok(())
    }

    fn entry(&self, name: &str) -> candle_core::Result<&TensorEntry> {
        self.entries.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })
    }

    /// Fills `buf` from byte `start` of the file, chunk by chunk, faulting each chunk in just
    /// before the read writes it (the zeroed pages are still in cache when the copy lands).
    fn read_bytes(&self, name: &str, start: u64, buf: &mut [u8]) -> candle_core::Result<()> {
        let mut offset = start;
        for chunk in buf.chunks_mut(READ_CHUNK_BYTES) {
            populate(chunk);
            self.file.read_exact_at(chunk, offset).map_err(|e| {
                candle_core::Error::Msg(format!("reading {name} from {}: {e}", self.path.display()))
            })?;
            offset += chunk.len() as u64;
        }
        Ok(())
    }
}

/// Bytes per positioned read into a tensor's own buffer.
const READ_CHUNK_BYTES: usize = 4 << 20;
/// Elements per read-and-convert step (2-4 MiB of stored and converted data: staging stays in
/// cache).
const CONVERT_CHUNK_ELEMS: usize = 1 << 20;

/// The first `n` elements of the staging buffer viewed as `T`, growing it if needed.
fn staged<T: candle_core::WithDType>(staging: &mut Vec<u64>, n: usize) -> &mut [T] {
    let words = (n * std::mem::size_of::<T>()).div_ceil(8);
    if staging.len() < words {
        *staging = vec![0u64; words];
    }
    // SAFETY: the buffer is 8-byte aligned and holds at least `n` values of `T` (an 8-byte-or-
    // smaller plain-old-data type for which every bit pattern is valid).
    unsafe { std::slice::from_raw_parts_mut(staging.as_mut_ptr() as *mut T, n) }
}

fn parse_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

/// The safetensors name of a dtype.
pub(crate) fn dtype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::I64 => "I64",
        DType::U32 => "U32",
        DType::U8 => "U8",
        _ => return None,
    })
}
