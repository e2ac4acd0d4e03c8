//! One-time conversion of a torch zip-pickle (`net.pth`) into a cached safetensors file.
//!
//! The cache holds floating-point tensors in the dtype the model loads (`net-<key>-f32.safetensors`
//! for an f16 `net.pth` loaded in f32), so that later loads can map it and use its bytes as they
//! are, with no conversion and no fresh memory ([`super::SafetensorsFile::serve_from_mapping`]).
//! The file is made read-only: a mapped file edited in place would change the running model.
//!
//! The cache key is the source's size, mtime and the bytes of its zip central directory, which
//! records a CRC-32 and size for every stored tensor: a cheap content hash that reads kilobytes,
//! not gigabytes. The conversion streams one tensor at a time and becomes visible only by an
//! atomic rename, so an interrupted run never leaves a half-written cache entry.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::{DType, Tensor};

use super::safetensors_file::dtype_name;
use crate::error::{ModelError, Result};

/// Where the safetensors copy of a `.pth` lives, and whether this call wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedConversion {
    pub safetensors: PathBuf,
    /// 32 hex digits identifying the source file's content (see the module docs).
    pub fingerprint: String,
    pub converted: bool,
}

/// Returns the cached safetensors copy of `pth` in `cache_dir`, with floating-point tensors in
/// `dtype`, converting it first if needed. `progress(bytes_done, bytes_total)` is called while
/// converting.
pub fn cached_safetensors(
    pth: &Path,
    cache_dir: &Path,
    dtype: DType,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CachedConversion> {
    let fingerprint = fingerprint(pth)?;
    let stem = pth
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("weights");
    let name = format!("{stem}-{fingerprint}-{}", dtype.as_str());
    let target = cache_dir.join(format!("{name}.safetensors"));
    if target.is_file() {
        // Most recently used: the cache's pruning keeps it longest.
        crate::cache_prune::touch(&target);
        return Ok(CachedConversion {
            safetensors: target,
            fingerprint,
            converted: false,
        });
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| ModelError::io(format!("creating cache folder {}", cache_dir.display()), e))?;
    let tmp = cache_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = convert(pth, &tmp, dtype, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target)
        .map_err(|e| ModelError::io(format!("moving {} into place", target.display()), e))?;
    Ok(CachedConversion {
        safetensors: target,
        fingerprint,
        converted: true,
    })
}

/// Content fingerprint of a zip archive: size, mtime and central directory (see module docs).
pub fn fingerprint(path: &Path) -> Result<String> {
    let bad = |message: String| ModelError::Weights {
        path: path.to_owned(),
        message,
    };
    let file =
        File::open(path).map_err(|e| ModelError::io(format!("opening {}", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| ModelError::io(format!("reading metadata of {}", path.display()), e))?;
    let len = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let (cd_start, cd_end) = central_directory(&file, len).map_err(|m| {
        bad(format!(
            "not a torch zip archive ({m}); the file may be truncated or corrupt"
        ))
    })?;
    let mut cd = vec![0u8; (cd_end - cd_start) as usize];
    file.read_exact_at(&mut cd, cd_start).map_err(|e| {
        ModelError::io(
            format!("reading the zip directory of {}", path.display()),
            e,
        )
    })?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&mtime.to_le_bytes());
    hasher.update(&cd);
    Ok(hasher.finalize().to_hex()[..32].to_string())
}

/// Byte range of the zip central directory, from the end-of-central-directory record (and its
/// ZIP64 form, which torch writes for archives over 4 GiB).
fn central_directory(file: &File, len: u64) -> std::result::Result<(u64, u64), String> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const ZIP64_LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    const ZIP64_EOCD: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    // The EOCD record is 22 bytes plus a comment of at most 65535 bytes.
    let tail_len = len.min(22 + 65535);
    let tail_start = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, tail_start)
        .map_err(|e| e.to_string())?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD)
        .ok_or("no end-of-central-directory record")?;
    let u32_at =
        |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as u64;
    let u64_at = |b: &[u8], i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(x)
    };
    let (mut size, mut offset) = (u32_at(&tail, eocd + 12), u32_at(&tail, eocd + 16));
    if (size == 0xffff_ffff || offset == 0xffff_ffff)
        && eocd >= 20
        && tail[eocd - 20..eocd - 16] == ZIP64_LOCATOR
    {
        let record_at = u64_at(&tail, eocd - 20 + 8);
        let mut record = [0u8; 56];
        file.read_exact_at(&mut record, record_at)
            .map_err(|e| e.to_string())?;
        if record[..4] != ZIP64_EOCD {
            return Err("broken ZIP64 directory record".into());
        }
        size = u64_at(&record, 40);
        offset = u64_at(&record, 48);
    }
    let end = offset
        .checked_add(size)
        .ok_or("directory range overflows")?;
    if end > len {
        return Err(format!("directory ends at byte {end} of a {len}-byte file"));
    }
    Ok((offset, end))
}

/// The dtype a tensor stored as `stored` is cached in when the model loads `wanted`.
fn cached_dtype(stored: DType, wanted: DType) -> DType {
    if stored.is_float() && wanted.is_float() {
        wanted
    } else {
        stored
    }
}

/// Streams every tensor of `pth` into a read-only safetensors file at `out`, in name order,
/// floating-point tensors converted to `dtype`.
fn convert(pth: &Path, out: &Path, dtype: DType, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let bad = |message: String| ModelError::Weights {
        path: pth.to_owned(),
        message,
    };
    let tensors = PthTensors::new(pth, None).map_err(|e| {
        bad(format!(
            "not a readable torch checkpoint (truncated or corrupt?): {e}"
        ))
    })?;
    let mut names: Vec<&String> = tensors.tensor_infos().keys().collect();
    names.sort();
    if names.is_empty() {
        return Err(bad(
            "contains no tensors at its top level (expected a flat state dict)".into(),
        ));
    }

    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    let mut total = 0u64;
    for name in &names {
        let info = &tensors.tensor_infos()[*name];
        let cached = cached_dtype(info.dtype, dtype);
        let cached_name = dtype_name(info.dtype)
            .and(dtype_name(cached))
            .ok_or_else(|| {
                bad(format!(
                    "tensor {name} has unsupported dtype {:?}",
                    info.dtype
                ))
            })?;
        let dims = info.layout.shape().dims().to_vec();
        let bytes = (info.layout.shape().elem_count() * cached.size_in_bytes()) as u64;
        header.insert(
            (*name).clone(),
            serde_json::json!({ "dtype": cached_name, "shape": dims, "data_offsets": [offset, offset + bytes] }),
        );
        offset += bytes;
        total += bytes;
    }
    let mut header =
        serde_json::to_vec(&header).map_err(|e| bad(format!("encoding header: {e}")))?;
    // Pad with spaces so tensor data starts 8-byte aligned, as the format recommends.
    header.resize(header.len().next_multiple_of(8), b' ');

    let io = |e: std::io::Error| ModelError::io(format!("writing {}", out.display()), e);
    let mut writer = BufWriter::with_capacity(1 << 22, File::create(out).map_err(io)?);
    writer
        .write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    writer.write_all(&header).map_err(io)?;
    let mut done = 0u64;
    progress(0, total);
    for name in names {
        let tensor = tensors
            .get(name)
            .map_err(|e| bad(format!("reading tensor {name}: {e}")))?
            .ok_or_else(|| bad(format!("tensor {name} vanished while converting")))?;
        let tensor = tensor
            .to_dtype(cached_dtype(tensor.dtype(), dtype))
            .map_err(|e| bad(format!("converting tensor {name}: {e}")))?;
        done += write_tensor(&mut writer, &tensor)
            .map_err(|e| bad(format!("copying tensor {name}: {e}")))?;
        progress(done, total);
    }
    let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let mut read_only = file.metadata().map_err(io)?.permissions();
    read_only.set_readonly(true);
    file.set_permissions(read_only).map_err(io)
}

/// Writes a tensor's little-endian bytes in row-major order; returns the byte count.
fn write_tensor(writer: &mut impl Write, tensor: &Tensor) -> candle_core::Result<u64> {
    fn write_as<T: candle_core::WithDType>(
        w: &mut impl Write,
        t: &Tensor,
    ) -> candle_core::Result<u64> {
        let values = t.flatten_all()?.to_vec1::<T>()?;
        // SAFETY: plain-old-data values viewed as bytes for the duration of the write.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                values.as_ptr() as *const u8,
                std::mem::size_of_val(values.as_slice()),
            )
        };
        w.write_all(bytes)?;
        Ok(bytes.len() as u64)
    }
    match tensor.dtype() {
        DType::F16 => write_as::<half::f16>(writer, tensor),
        DType::BF16 => write_as::<half::bf16>(writer, tensor),
        DType::F32 => write_as::<f32>(writer, tensor),
        DType::F64 => write_as::<f64>(writer, tensor),
        DType::I64 => write_as::<i64>(writer, tensor),
        DType::U32 => write_as::<u32>(writer, tensor),
        DType::U8 => write_as::<u8>(writer, tensor),
        other => candle_core::bail!("dtype {other:?} cannot be cached"),
    }
}
