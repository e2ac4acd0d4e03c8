//! A content-addressed cache of [`AudioFeatures`]: the same audio bytes, the same encoder
//! weights and the same clip length give the same features, so a re-run (another seed, other
//! motion weights, the same song on another portrait) skips decoding and wav2vec2.
//!
//! Key = BLAKE3 of ([`CACHE_FORMAT`], BLAKE3 of the audio file bytes, the encoder fingerprint,
//! `clip_frames`). The file `<dir>/<key>.safetensors` holds `audio_emb (T, L, C)` in f32; the
//! windows are rebuilt with [`process_audio_emb`] (5× smaller on disk). Its header metadata
//! repeats the key's parts and is checked on load. Files are written to a temporary name in the
//! same folder and renamed, so a reader never sees a partial file; an unreadable or mismatching
//! file counts as a miss and is overwritten.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device};

use super::AudioError;
use crate::audio_features::AudioFeatures;

/// Version of the cached data: bump it when decoding, resampling or the feature path changes
/// what a given file produces.
pub const CACHE_FORMAT: &str = "hallo2-studio/audio-features/v1";
const TENSOR: &str = "audio_emb";

/// The identity of one cached feature set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Hex BLAKE3 of the key's parts; the file name.
    pub hash: String,
    /// Hex BLAKE3 of the audio file.
    pub audio_hash: String,
    pub encoder_fingerprint: String,
    pub clip_frames: usize,
}

impl CacheKey {
    /// `encoder_fingerprint` identifies the wav2vec2 weights (see [`weights_fingerprint`]);
    /// `clip_frames` is `data.n_sample_frames` (it sets the padding of the last segment).
    pub fn new(audio_bytes: &[u8], encoder_fingerprint: &str, clip_frames: usize) -> Self {
        let audio_hash = blake3::hash(audio_bytes).to_hex().to_string();
        let mut hasher = blake3::Hasher::new();
        // Length-prefixed parts so no two different tuples hash the same byte string.
        for part in [
            CACHE_FORMAT,
            &audio_hash,
            encoder_fingerprint,
            &clip_frames.to_string(),
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        Self {
            hash: hasher.finalize().to_hex().to_string(),
            audio_hash,
            encoder_fingerprint: encoder_fingerprint.to_string(),
            clip_frames,
        }
    }

    fn metadata(&self, features: &AudioFeatures) -> HashMap<String, String> {
        HashMap::from([
            ("format".to_string(), CACHE_FORMAT.to_string()),
            ("audio_blake3".to_string(), self.audio_hash.clone()),
            ("encoder".to_string(), self.encoder_fingerprint.clone()),
            ("clip_frames".to_string(), self.clip_frames.to_string()),
            (
                "audio_length".to_string(),
                features.audio_length.to_string(),
            ),
            (
                "num_segments".to_string(),
                features.num_segments.to_string(),
            ),
        ])
    }
}

/// Whether [`FeatureCache::get_or_compute`] reused a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
}

/// A folder of cached features.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
}

/// Distinguishes temporary files of concurrent writers within one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FeatureCache {
    /// A cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file that holds (or would hold) `key`.
    pub fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.safetensors", key.hash))
    }

    /// The cached features for `key` on `device` in `dtype`, or `None` when there are none.
    /// A file that cannot be read or does not match the key is reported (tracing) and ignored.
    pub fn load(
        &self,
        key: &CacheKey,
        device: &Device,
        dtype: DType,
    ) -> Result<Option<AudioFeatures>, AudioError> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AudioError::io(&path, e)),
        };
        match Self::parse(key, &bytes, device, dtype) {
            Ok(features) => Ok(Some(features)),
            Err(detail) => {
                tracing::warn!("ignoring feature cache file {}: {detail}", path.display());
                Ok(None)
            }
        }
    }

    fn parse(
        key: &CacheKey,
        bytes: &[u8],
        device: &Device,
        dtype: DType,
    ) -> Result<AudioFeatures, String> {
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |name: &str| {
            meta.get(name)
                .cloned()
                .ok_or_else(|| format!("no metadata {name:?}"))
        };
        let number = |name: &str| -> Result<usize, String> {
            field(name)?
                .parse()
                .map_err(|e| format!("metadata {name:?}: {e}"))
        };
        if field("format")? != CACHE_FORMAT
            || field("audio_blake3")? != key.audio_hash
            || field("encoder")? != key.encoder_fingerprint
            || number("clip_frames")? != key.clip_frames
        {
            return Err("its metadata does not match the key".to_string());
        }
        let tensors =
            candle_core::safetensors::load_buffer(bytes, device).map_err(|e| e.to_string())?;
        let audio_emb = tensors
            .get(TENSOR)
            .ok_or_else(|| format!("no tensor {TENSOR:?}"))?
            .to_dtype(dtype)
            .map_err(|e| e.to_string())?;
        let seq_len = audio_emb.dim(0).map_err(|e| e.to_string())?;
        Ok(AudioFeatures {
            audio_emb,
            audio_length: number("audio_length")?,
            seq_len,
            num_segments: number("num_segments")?,
        })
    }

    /// Writes `features` under `key` atomically (temporary file + rename in the same folder).
    pub fn store(&self, key: &CacheKey, features: &AudioFeatures) -> Result<PathBuf, AudioError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| AudioError::io(&self.dir, e))?;
        let path = self.path(key);
        let audio_emb = features.audio_emb.to_dtype(DType::F32)?.contiguous()?;
        let bytes = safetensors::serialize([(TENSOR, &audio_emb)], Some(key.metadata(features)))
            .map_err(|e| AudioError::Cache {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            key.hash,
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            // Best effort: the temporary file is useless either way.
            let _ = std::fs::remove_file(&tmp);
            return Err(AudioError::io(&path, e));
        }
        Ok(path)
    }

    /// Loads the features for `key`, or computes and stores them.
    pub fn get_or_compute(
        &self,
        key: &CacheKey,
        device: &Device,
        dtype: DType,
        compute: impl FnOnce() -> Result<AudioFeatures, AudioError>,
    ) -> Result<(AudioFeatures, CacheOutcome), AudioError> {
        if let Some(features) = self.load(key, device, dtype)? {
            return Ok((features, CacheOutcome::Hit));
        }
        let features = compute()?;
        self.store(key, &features)?;
        Ok((features, CacheOutcome::Miss))
    }
}

/// A fingerprint of a weights file for [`CacheKey::new`]: `"blake3:<hex>"` of its full contents
/// (streamed; 77 ms for a 378 MB wav2vec2-base file in the page cache, per `audio_bench`). Hashing only the safetensors
/// header would be instant but could not tell apart two fine-tunes with the same tensor shapes.
pub fn weights_fingerprint(path: &Path) -> Result<String, AudioError> {
    let mut file = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| AudioError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}
