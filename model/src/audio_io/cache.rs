//! A content-addressed cache of [`AudioFeatures`]: the same audio bytes, the same encoder
//! weights and the same clip length give the same features, so a re-run (another seed, other
//! motion weights, the same song on another portrait) skips decoding and wav2vec2.
//!
//! Key = BLAKE3 of ([`CACHE_FORMAT`], BLAKE3 of the audio file bytes, the encoder fingerprint,
//! `clip_frames`). The file `<dir>/<key>.safetensors` holds `audio_emb (T, L, C)` in f32; the
//! windows are rebuilt with [`process_audio_emb`](crate::audio_features::process_audio_emb) (5×
//! smaller on disk). Its header metadata repeats the key's parts and is checked on load.
//!
//! The file is written row by row ([`FeatureFileWriter`]: the header first, from the shape the
//! segment plan gives, then each segment's rows as wav2vec2 makes them) and read row by row
//! ([`FeatureRows`]: one clip's rows at a time), so a 10-minute audio's features (600 MB at full
//! size) never sit in memory. Files are written to a temporary name in the same folder and
//! renamed, so a reader never sees a partial file; an unreadable or mismatching file counts as a
//! miss and is overwritten.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};

use super::AudioError;
use crate::audio_features::{AudioFeatures, FeatureSummary, window_rows, windows_of};

/// Version of the cached data: bump it when decoding, resampling or the feature path changes
/// what a given file produces.
pub const CACHE_FORMAT: &str = "hallo2-studio/audio-features/v3";
const TENSOR: &str = "audio_emb";
/// A feature file's header is a few hundred bytes; anything past this is not ours.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The identity of one cached feature set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Hex BLAKE3 of the key's parts; the file name.
    pub hash: String,
    /// Hex BLAKE3 of the audio file.
    pub audio_hash: String,
    pub encoder_fingerprint: String,
    /// How the vocals were taken (`hallo2::NO_SEPARATION` or the separator's fingerprint).
    pub separation: String,
    pub clip_frames: usize,
}

impl CacheKey {
    /// `encoder_fingerprint` identifies the wav2vec2 weights (see [`weights_fingerprint`]);
    /// `clip_frames` is `data.n_sample_frames` (it sets the padding of the last segment). The
    /// features are those of the raw mix.
    pub fn new(audio_bytes: &[u8], encoder_fingerprint: &str, clip_frames: usize) -> Self {
        let audio_hash = blake3::hash(audio_bytes).to_hex().to_string();
        Self::for_audio_hash(
            audio_hash,
            encoder_fingerprint,
            crate::hallo2::NO_SEPARATION,
            clip_frames,
        )
    }

    /// The key of the audio file whose BLAKE3 is `audio_hash` (hex; see [`file_blake3`]).
    pub fn for_audio_hash(
        audio_hash: String,
        encoder_fingerprint: &str,
        separation: &str,
        clip_frames: usize,
    ) -> Self {
        let mut hasher = blake3::Hasher::new();
        // Length-prefixed parts so no two different tuples hash the same byte string.
        for part in [
            CACHE_FORMAT,
            &audio_hash,
            encoder_fingerprint,
            separation,
            &clip_frames.to_string(),
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        Self {
            hash: hasher.finalize().to_hex().to_string(),
            audio_hash,
            encoder_fingerprint: encoder_fingerprint.to_string(),
            separation: separation.to_string(),
            clip_frames,
        }
    }

    /// The header metadata of this key's file, for features with `summary`'s counts.
    pub fn metadata(&self, summary: &FeatureSummary) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("format".to_string(), CACHE_FORMAT.to_string()),
            ("audio_blake3".to_string(), self.audio_hash.clone()),
            ("encoder".to_string(), self.encoder_fingerprint.clone()),
            ("separation".to_string(), self.separation.clone()),
            ("clip_frames".to_string(), self.clip_frames.to_string()),
            ("audio_length".to_string(), summary.audio_length.to_string()),
            ("num_segments".to_string(), summary.num_segments.to_string()),
        ])
    }

    /// Whether `rows` (a file's header) was written for this key; the counts it states.
    fn check(&self, rows: &FeatureRows) -> Result<FeatureSummary, String> {
        let meta = &rows.metadata;
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
            || field("audio_blake3")? != self.audio_hash
            || field("encoder")? != self.encoder_fingerprint
            || field("separation")? != self.separation
            || number("clip_frames")? != self.clip_frames
        {
            return Err("its metadata does not match the key".to_string());
        }
        Ok(FeatureSummary {
            audio_length: number("audio_length")?,
            seq_len: rows.frames,
            num_segments: number("num_segments")?,
        })
    }
}

/// Hex BLAKE3 of a file's contents, streamed.
pub fn file_blake3(path: &Path) -> Result<String, AudioError> {
    let mut file = File::open(path).map_err(|e| AudioError::io(path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| AudioError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Distinguishes temporary files of concurrent writers within one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `audio_emb (T, L, C)` f32 as a safetensors file, a segment's rows at a time: the
/// header (with the final shape) first, then the rows; the file appears under its name only
/// when every row is there.
pub struct FeatureFileWriter {
    file: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    /// `(T, L, C)`.
    shape: [usize; 3],
    written: usize,
}

impl FeatureFileWriter {
    /// Starts `path` (under a temporary name in its folder, which is created) for `shape`.
    pub fn create(
        path: &Path,
        shape: [usize; 3],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, AudioError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| AudioError::io(dir, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("features");
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = shape.iter().product::<usize>() * 4;
        let header = serde_json::json!({
            "__metadata__": metadata,
            TENSOR: {"dtype": "F32", "shape": shape, "data_offsets": [0, bytes]},
        });
        let mut header = serde_json::to_vec(&header).map_err(|e| AudioError::Cache {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        // safetensors pads the header with spaces so the data starts 8-byte aligned.
        header.resize(header.len().next_multiple_of(8), b' ');
        let file = File::create(&tmp).map_err(|e| AudioError::io(&tmp, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        let io = |e| AudioError::io(&tmp, e);
        file.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        file.write_all(&header).map_err(io)?;
        Ok(Self {
            file,
            tmp,
            path: path.to_path_buf(),
            shape,
            written: 0,
        })
    }

    /// The next rows, `(s, L, C)`.
    pub fn append(&mut self, rows: &Tensor) -> Result<(), AudioError> {
        let (s, l, c) = rows.dims3()?;
        if [l, c] != self.shape[1..] || self.written + s > self.shape[0] {
            return Err(AudioError::Cache {
                path: self.path.clone(),
                detail: format!(
                    "rows of shape ({s}, {l}, {c}) after {} rows do not fit the stated shape {:?}",
                    self.written, self.shape
                ),
            });
        }
        let values: Vec<f32> = rows.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for v in values {
            self.file
                .write_all(&v.to_le_bytes())
                .map_err(|e| AudioError::io(&self.tmp, e))?;
        }
        self.written += s;
        Ok(())
    }

    /// Checks that every row came, syncs and renames the file into place.
    pub fn finish(self) -> Result<PathBuf, AudioError> {
        let result = (|| {
            if self.written != self.shape[0] {
                return Err(AudioError::Cache {
                    path: self.path.clone(),
                    detail: format!("{} of {} rows written", self.written, self.shape[0]),
                });
            }
            let file = self
                .file
                .into_inner()
                .map_err(|e| AudioError::io(&self.tmp, e.into_error()))?;
            file.sync_all().map_err(|e| AudioError::io(&self.tmp, e))?;
            std::fs::rename(&self.tmp, &self.path).map_err(|e| AudioError::io(&self.path, e))
        })();
        if result.is_err() {
            // Best effort: the temporary file is useless either way.
            let _ = std::fs::remove_file(&self.tmp);
        }
        result.map(|()| self.path)
    }
}

/// An open feature file, read a few rows at a time.
#[derive(Debug)]
pub struct FeatureRows {
    file: File,
    path: PathBuf,
    data_start: u64,
    /// `T`.
    frames: usize,
    /// `L` and `C`.
    layers: usize,
    channels: usize,
    metadata: HashMap<String, String>,
}

impl FeatureRows {
    /// Opens `path`, checking its header against its size.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let file = File::open(path).map_err(|e| AudioError::io(path, e))?;
        let bad = |detail: String| AudioError::Cache {
            path: path.to_path_buf(),
            detail,
        };
        let len = file.metadata().map_err(|e| AudioError::io(path, e))?.len();
        let mut n = [0u8; 8];
        file.read_exact_at(&mut n, 0)
            .map_err(|e| bad(format!("reading the header length: {e}")))?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER_BYTES || 8 + n > len {
            return Err(bad(format!("a header of {n} bytes in a file of {len}")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| bad(format!("reading the header: {e}")))?;
        #[derive(serde::Deserialize)]
        struct Entry {
            dtype: String,
            shape: Vec<usize>,
            data_offsets: [u64; 2],
        }
        #[derive(serde::Deserialize)]
        struct Header {
            #[serde(rename = "__metadata__", default)]
            metadata: HashMap<String, String>,
            #[serde(rename = "audio_emb")]
            audio_emb: Entry,
        }
        let header: Header =
            serde_json::from_slice(&header).map_err(|e| bad(format!("its header: {e}")))?;
        let e = &header.audio_emb;
        let [frames, layers, channels] = e.shape[..] else {
            return Err(bad(format!(
                "audio_emb has shape {:?}, not (T, L, C)",
                e.shape
            )));
        };
        let bytes = (frames as u64)
            .checked_mul(layers as u64)
            .and_then(|x| x.checked_mul(channels as u64))
            .and_then(|x| x.checked_mul(4));
        if e.dtype != "F32" || e.data_offsets[0] != 0 || bytes != Some(e.data_offsets[1]) {
            return Err(bad(format!(
                "audio_emb is {} {:?} at {:?}",
                e.dtype, e.shape, e.data_offsets
            )));
        }
        if 8 + n + e.data_offsets[1] != len || frames == 0 {
            return Err(bad(format!(
                "the file is {len} bytes, its header says otherwise"
            )));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            data_start: 8 + n,
            frames,
            layers,
            channels,
            metadata: header.metadata,
        })
    }

    /// `T`, the rows in the file.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Rows `start .. start + len` as an f32 `(len, L, C)` tensor on `device`.
    pub fn rows(&self, start: usize, len: usize, device: &Device) -> Result<Tensor, AudioError> {
        if start + len > self.frames {
            return Err(AudioError::Cache {
                path: self.path.clone(),
                detail: format!("rows {start}..{} of {}", start + len, self.frames),
            });
        }
        let row = self.layers * self.channels;
        let mut bytes = vec![0u8; len * row * 4];
        let at = self.data_start + (start * row * 4) as u64;
        self.file
            .read_exact_at(&mut bytes, at)
            .map_err(|e| AudioError::io(&self.path, e))?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Tensor::from_vec(
            values,
            (len, self.layers, self.channels),
            device,
        )?)
    }

    /// The windows of frames `start .. start + len`, `(len, 5, L, C)`, reading only the rows
    /// they use: what [`audio_emb_windows`](crate::audio_features::audio_emb_windows) gives on
    /// the whole tensor (frames past `T` take the last frame's window).
    pub fn windows(&self, start: usize, len: usize, device: &Device) -> Result<Tensor, AudioError> {
        let (lo, hi, index) = window_rows(self.frames, start, len);
        Ok(windows_of(&self.rows(lo, hi - lo, device)?, index, len)?)
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

impl FeatureCache {
    /// A cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file that holds (or would hold) `key`.
    pub fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.safetensors", key.hash))
    }

    /// The cached rows for `key` and their counts, or `None` when there are none. A file that
    /// cannot be read or does not match the key is reported (tracing) and ignored.
    pub fn open(&self, key: &CacheKey) -> Option<(FeatureRows, FeatureSummary)> {
        let path = self.path(key);
        crate::cache_prune::touch(&path);
        let opened = FeatureRows::open(&path).map_err(|e| e.to_string());
        match opened.and_then(|rows| Ok((key.check(&rows)?, rows))) {
            Ok((summary, rows)) => Some((rows, summary)),
            Err(detail) => {
                if path.exists() {
                    tracing::warn!("ignoring feature cache file {}: {detail}", path.display());
                }
                None
            }
        }
    }

    /// The cached features for `key` on `device` in `dtype`, or `None` when there are none.
    pub fn load(
        &self,
        key: &CacheKey,
        device: &Device,
        dtype: DType,
    ) -> Result<Option<AudioFeatures>, AudioError> {
        let Some((rows, summary)) = self.open(key) else {
            return Ok(None);
        };
        let audio_emb = rows.rows(0, rows.frames(), device)?.to_dtype(dtype)?;
        Ok(Some(AudioFeatures {
            audio_emb,
            audio_length: summary.audio_length,
            seq_len: summary.seq_len,
            num_segments: summary.num_segments,
        }))
    }

    /// Writes `features` under `key` atomically (temporary file + rename in the same folder).
    pub fn store(&self, key: &CacheKey, features: &AudioFeatures) -> Result<PathBuf, AudioError> {
        let (t, l, c) = features.audio_emb.dims3()?;
        let summary = FeatureSummary {
            audio_length: features.audio_length,
            seq_len: features.seq_len,
            num_segments: features.num_segments,
        };
        let mut writer =
            FeatureFileWriter::create(&self.path(key), [t, l, c], &key.metadata(&summary))?;
        writer.append(&features.audio_emb)?;
        writer.finish()
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
    Ok(format!("blake3:{}", file_blake3(path)?))
}
