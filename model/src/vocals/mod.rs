//! Vocal separation as the official pipeline runs it before wav2vec2: Kim_Vocal_2 (an MDX-Net
//! ONNX graph) through `audio-separator` 0.17.2's MDX processing (hallo2
//! `hallo/datasets/audio_processor.py` @ `58a9aa6`).
//!
//! ```text
//! stereo 44.1 kHz ─▶ peak ≤ 0.9 ─▶ [trim zeros | x | pad] ─▶ chunks of hop·(dim_t−1) every ¾ chunk
//!   chunk ─▶ STFT (n_fft, hop 1024, Hann) ─▶ [Re L, Im L, Re R, Im R] × dim_f bins, bins 0..2 = 0
//!         ─▶ network ─▶ iSTFT (bins ≥ dim_f = 0) ─▶ × symmetric Hann(chunk), overlap-added, ÷ Σ Hann
//!   ─▶ × compensate ─▶ peak ≤ 0.9 ─▶ int16 (truncated) = the vocals file Hallo2 reads
//! ```
//!
//! The network's parameters (`n_fft`, `dim_f`, `dim_t`, `compensate`) come from the package's
//! model-data table, keyed by the MD5 of the ONNX file's last 10 000 KiB, exactly as the package
//! looks them up ([`MdxParams::for_model`]). Only the primary stem (vocals) is computed; the
//! package's discarded secondary-stem pass is skipped. The spec with every formula:
//! `scripts/fixtures/VOCALS.md`.

mod stft;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::{Digest, Md5};
use realfft::num_complex::Complex32;
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

use crate::audio_io::ResampleFailure;
use crate::audio_io::resample::resample;
pub use stft::Stft;

/// `Separator(sample_rate=44100)`: the rate the package loads, separates and writes at.
pub const SEPARATION_RATE: u32 = 44_100;
/// `normalization_threshold`: peaks above it are scaled down to it, before and after.
const NORMALIZATION_THRESHOLD: f32 = 0.9;
/// `mdx_params` defaults the package runs with.
const HOP_LENGTH: usize = 1024;
const OVERLAP: f64 = 0.25;
/// Bins the package zeroes in the model input (`spek[:, :, :3, :] *= 0`).
const ZEROED_LOW_BINS: usize = 3;
/// The hash covers the file's last 10 000 KiB (`load_model_data_using_hash`).
const HASH_TAIL_BYTES: u64 = 10_000 * 1024;

/// What can go wrong loading or running the separator.
#[derive(Debug, thiserror::Error)]
pub enum VocalsError {
    #[error("vocal separator {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("vocal separator parameters {path}: {message}")]
    ModelData { path: PathBuf, message: String },
    #[error("vocal separation resampling failed: {0}")]
    Resample(String),
    /// `audio-separator` separates one or two channels.
    #[error("vocal separation takes mono or stereo audio, not {0} channels")]
    Channels(usize),
}

/// One model's entry of `mdx_model_data.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct MdxModelData {
    pub compensate: f64,
    pub mdx_dim_f_set: usize,
    /// `dim_t = 2^mdx_dim_t_set`.
    pub mdx_dim_t_set: u32,
    pub mdx_n_fft_scale_set: usize,
    pub primary_stem: String,
}

/// The MDX processing parameters of one network.
#[derive(Debug, Clone, PartialEq)]
pub struct MdxParams {
    pub n_fft: usize,
    pub hop: usize,
    /// Frequency bins the network sees.
    pub dim_f: usize,
    /// Frames per chunk (the package's `segment_size` equals it).
    pub dim_t: usize,
    pub compensate: f32,
}

impl MdxParams {
    pub fn from_model_data(data: &MdxModelData) -> Self {
        Self {
            n_fft: data.mdx_n_fft_scale_set,
            hop: HOP_LENGTH,
            dim_f: data.mdx_dim_f_set,
            dim_t: 1 << data.mdx_dim_t_set,
            compensate: data.compensate as f32,
        }
    }

    /// The parameters of `model` in the package's table `model_data` (`mdx_model_data.json`),
    /// keyed by [`model_hash`]. The primary stem must be the vocals.
    pub fn for_model(model: &Path, model_data: &Path) -> Result<Self, VocalsError> {
        let fail = |message: String| VocalsError::ModelData {
            path: model_data.to_owned(),
            message,
        };
        let hash = model_hash(model)?;
        let text = std::fs::read_to_string(model_data).map_err(|e| fail(e.to_string()))?;
        let table: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| fail(format!("not a JSON object: {e}")))?;
        let entry = table.get(&hash).ok_or_else(|| {
            fail(format!(
                "no entry for {} (hash {hash}): not a model audio-separator knows",
                model.display()
            ))
        })?;
        let data: MdxModelData = serde_json::from_value(entry.clone())
            .map_err(|e| fail(format!("entry {hash}: {e}")))?;
        if !data.primary_stem.eq_ignore_ascii_case("vocals") {
            return Err(fail(format!(
                "entry {hash} separates {:?}, not vocals",
                data.primary_stem
            )));
        }
        let params = Self::from_model_data(&data);
        if params.dim_f > params.n_fft / 2 + 1 || params.dim_f <= ZEROED_LOW_BINS {
            return Err(fail(format!(
                "entry {hash}: dim_f {} does not fit n_fft {}",
                params.dim_f, params.n_fft
            )));
        }
        Ok(params)
    }

    /// Samples per chunk, `hop · (dim_t − 1)`.
    pub fn chunk_size(&self) -> usize {
        self.hop * (self.dim_t - 1)
    }

    /// `n_fft / 2`: zeros before the signal, and what each chunk's edges lose.
    fn trim(&self) -> usize {
        self.n_fft / 2
    }

    /// Samples each chunk contributes without its edges, `chunk − 2 · trim`.
    fn gen_size(&self) -> usize {
        self.chunk_size() - 2 * self.trim()
    }

    /// Distance between chunk starts, `int((1 − overlap) · chunk)`.
    fn step(&self) -> usize {
        ((1.0 - OVERLAP) * self.chunk_size() as f64) as usize
    }
}

/// The package's model hash: MD5 of the file's last 10 000 KiB, or of the whole file when it is
/// shorter.
pub fn model_hash(model: &Path) -> Result<String, VocalsError> {
    let fail = |e: std::io::Error| VocalsError::Model {
        path: model.to_owned(),
        message: e.to_string(),
    };
    let mut file = std::fs::File::open(model).map_err(fail)?;
    let len = file.metadata().map_err(fail)?.len();
    if len > HASH_TAIL_BYTES {
        file.seek(SeekFrom::Start(len - HASH_TAIL_BYTES))
            .map_err(fail)?;
    }
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// A loaded MDX vocal separator.
pub struct VocalSeparator {
    path: PathBuf,
    /// tract's matrix products on every core (the network is most of the separation's time).
    executor: Executor,
    /// The package's model hash ([`model_hash`]).
    hash: String,
    params: MdxParams,
    stft: Stft,
    plan: Arc<TypedRunnableModel>,
}

/// The separated vocals as the package writes them: two channels at [`SEPARATION_RATE`], the
/// 16-bit samples of the file as floats (`s16 / 32768`, what `librosa.load` reads back).
#[derive(Debug, Clone, PartialEq)]
pub struct Vocals {
    pub channels: [Vec<f32>; 2],
}

impl Vocals {
    /// Hallo2's step after the package: `ffmpeg -ar 16000` (each channel resampled, written as
    /// 16-bit) then `librosa.load(sr=16000)`'s mono mean. Our resampler stands in for
    /// libswresample (`audio_io::resample`; the difference is measured in the parity tests).
    pub fn to_mono(&self, rate: u32) -> Result<Vec<f32>, VocalsError> {
        let [left, right] = self.channels.clone().map(|c| {
            resample(c, SEPARATION_RATE, rate).map(|c| c.into_iter().map(to_s16).collect())
        });
        let (left, right): (Vec<f32>, Vec<f32>) = (left?, right?);
        Ok(left
            .iter()
            .zip(&right)
            .map(|(l, r)| (l + r) / 2.0)
            .collect())
    }
}

impl From<ResampleFailure> for VocalsError {
    fn from(e: ResampleFailure) -> Self {
        VocalsError::Resample(e.detail)
    }
}

/// A sample rounded to 16 bits as a float (`s16 / 32768`), clipped.
fn to_s16(v: f32) -> f32 {
    (v * 32768.0).round_ties_even().clamp(-32768.0, 32767.0) / 32768.0
}

/// The package's mix at [`SEPARATION_RATE`]: `librosa.load(mono=False, sr=44100)` resamples
/// each channel, a mono input is used for both channels.
pub fn prepare_mix(channels: Vec<Vec<f32>>, rate: u32) -> Result<[Vec<f32>; 2], VocalsError> {
    let mut resampled = channels
        .into_iter()
        .map(|c| resample(c, rate, SEPARATION_RATE))
        .collect::<Result<Vec<_>, _>>()?;
    match resampled.len() {
        1 => {
            let mono = resampled.pop().expect("one channel");
            Ok([mono.clone(), mono])
        }
        2 => {
            let right = resampled.pop().expect("two channels");
            let left = resampled.pop().expect("two channels");
            Ok([left, right])
        }
        n => Err(VocalsError::Channels(n)),
    }
}

impl VocalSeparator {
    /// Loads `model` (ONNX, input `input` `(1, 4, dim_f, dim_t)` → first output of the same
    /// shape) with its parameters from `model_data`.
    pub fn load(model: &Path, model_data: &Path) -> Result<Self, VocalsError> {
        let params = MdxParams::for_model(model, model_data)?;
        let hash = model_hash(model)?;
        let fail = |stage: &str, e: TractError| VocalsError::Model {
            path: model.to_owned(),
            message: format!("{stage}: {e:#}"),
        };
        let shape = [1, 4, params.dim_f, params.dim_t];
        let plan = tract_onnx::onnx()
            .model_for_path(model)
            .map_err(|e| fail("not a readable ONNX model", e))?
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_optimized())
            .map_err(|e| fail("cannot optimise the graph", e))?
            .into_runnable()
            .map_err(|e| fail("cannot plan the graph", e))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            path: model.to_owned(),
            executor: Executor::multithread_with_name(threads, "vocals"),
            hash,
            stft: Stft::new(params.n_fft, params.hop),
            params,
            plan,
        })
    }

    pub fn params(&self) -> &MdxParams {
        &self.params
    }

    /// The model's file name and hash, for people (`Kim_Vocal_2.onnx (MD5 …)`).
    pub fn name(&self) -> String {
        let file = self.path.file_name().unwrap_or_default().to_string_lossy();
        format!("{file} (MD5 {})", self.hash)
    }

    /// What the separated audio depends on, for caches: the model hash and the processing.
    pub fn fingerprint(&self) -> String {
        format!("mdx:{}:{:?}", self.hash, self.params)
    }

    /// The vocals of `mix` (two channels of equal length at [`SEPARATION_RATE`]), as written.
    pub fn separate(&self, mix: [Vec<f32>; 2]) -> Result<Vocals, VocalsError> {
        let mut vocals = self.separate_float(mix)?;
        // `write_audio` normalises again (over both channels; a no-op after `separate_float`'s)
        // and converts with `(v · 32767).astype(int16)`.
        normalize_peak(&mut vocals);
        for v in vocals.iter_mut().flatten() {
            *v = f32::from((*v * 32767.0) as i16) / 32768.0;
        }
        Ok(Vocals { channels: vocals })
    }

    /// The vocals before they are written: input peak limited, chunks separated and
    /// overlap-added, compensated, output peak limited (`normalize` over both channels).
    pub fn separate_float(&self, mix: [Vec<f32>; 2]) -> Result<[Vec<f32>; 2], VocalsError> {
        let n = mix[0].len();
        if mix[1].len() != n {
            return Err(self.error(format!("channels of {n} and {} samples", mix[1].len())));
        }
        let padded = self.padded_mix(mix);
        let p = &self.params;
        let (trim, chunk, step) = (p.trim(), p.chunk_size(), p.step());
        let total = padded[0].len();
        let mut result = [vec![0f32; total], vec![0f32; total]];
        let mut divider = vec![0f32; total];
        for start in (0..total).step_by(step) {
            let end = (start + chunk).min(total);
            let len = end - start;
            let part = padded.each_ref().map(|x| {
                let mut v = vec![0f32; chunk];
                v[..len].copy_from_slice(&x[start..end]);
                v
            });
            let out = self.run_chunk(&part)?;
            let window = hanning(len);
            for (c, channel) in out.iter().enumerate() {
                for (i, (&o, &w)) in channel[..len].iter().zip(&window).enumerate() {
                    result[c][start + i] += (f64::from(o) * w) as f32;
                }
            }
            for (i, &w) in window.iter().enumerate() {
                divider[start + i] += w as f32;
            }
        }
        let mut vocals = result.map(|r| {
            (trim..trim + n)
                .map(|m| r[m] / divider[m] * p.compensate)
                .collect::<Vec<f32>>()
        });
        normalize_peak(&mut vocals);
        Ok(vocals)
    }

    /// The mix the chunks are cut from: peak limited, `trim` zeros before it and zeros after it
    /// up to whole `gen_size` pieces plus `trim` (`demix`).
    pub fn padded_mix(&self, mut mix: [Vec<f32>; 2]) -> [Vec<f32>; 2] {
        normalize_peak(&mut mix);
        let (trim, gen_size) = (self.params.trim(), self.params.gen_size());
        let n = mix[0].len();
        let total = trim + n + gen_size + trim - n % gen_size;
        mix.map(|x| {
            let mut v = vec![0f32; total];
            v[trim..trim + n].copy_from_slice(&x);
            v
        })
    }

    /// One chunk through STFT, the network and iSTFT (`run_model`).
    pub fn run_chunk(&self, part: &[Vec<f32>; 2]) -> Result<[Vec<f32>; 2], VocalsError> {
        let input = self.model_input(part);
        let output = self.run_network(input)?;
        Ok(self.from_model_output(&output))
    }

    /// The network's input for one chunk: `(1, 4, dim_f, dim_t)` row-major, channels
    /// `[Re L, Im L, Re R, Im R]`, the lowest bins zero.
    pub fn model_input(&self, part: &[Vec<f32>; 2]) -> Vec<f32> {
        let (dim_f, dim_t) = (self.params.dim_f, self.params.dim_t);
        let mut input = vec![0f32; 4 * dim_f * dim_t];
        for (c, channel) in part.iter().enumerate() {
            let spec = self.stft.forward(channel);
            for (t, frame) in spec.iter().enumerate().take(dim_t) {
                for (f, bin) in frame.iter().enumerate().take(dim_f).skip(ZEROED_LOW_BINS) {
                    input[((2 * c) * dim_f + f) * dim_t + t] = bin.re;
                    input[((2 * c + 1) * dim_f + f) * dim_t + t] = bin.im;
                }
            }
        }
        input
    }

    /// Runs the network on one model input; returns its first output.
    pub fn run_network(&self, input: Vec<f32>) -> Result<Vec<f32>, VocalsError> {
        let shape = [1, 4, self.params.dim_f, self.params.dim_t];
        let tensor = tract_onnx::prelude::Tensor::from_shape(&shape, &input)
            .map_err(|e| self.error(format!("{e:#}")))?;
        let outputs = multithread_tract_scope(self.executor.clone(), || {
            self.plan.run(tvec!(tensor.into()))
        })
        .map_err(|e| self.error(format!("inference failed: {e:#}")))?;
        let first = outputs
            .first()
            .ok_or_else(|| self.error("the graph has no output".into()))?;
        if first.shape() != shape {
            return Err(self.error(format!(
                "output shape {:?}, expected {shape:?}",
                first.shape()
            )));
        }
        let view = first
            .to_plain_array_view::<f32>()
            .map_err(|e| self.error(format!("{e:#}")))?;
        Ok(view.iter().copied().collect())
    }

    /// Two channels of `hop · (dim_t − 1)` samples from a network output (bins ≥ dim_f zero).
    pub fn from_model_output(&self, output: &[f32]) -> [Vec<f32>; 2] {
        let (dim_f, dim_t) = (self.params.dim_f, self.params.dim_t);
        let bins = self.stft.bins();
        std::array::from_fn(|c| {
            let spec: Vec<Vec<Complex32>> = (0..dim_t)
                .map(|t| {
                    let mut frame = vec![Complex32::new(0.0, 0.0); bins];
                    for (f, bin) in frame.iter_mut().enumerate().take(dim_f) {
                        *bin = Complex32::new(
                            output[((2 * c) * dim_f + f) * dim_t + t],
                            output[((2 * c + 1) * dim_f + f) * dim_t + t],
                        );
                    }
                    frame
                })
                .collect();
            self.stft.inverse(&spec)
        })
    }

    fn error(&self, message: String) -> VocalsError {
        VocalsError::Model {
            path: self.path.clone(),
            message,
        }
    }
}

/// `spec_utils.normalize`: when the peak over all channels exceeds the threshold, every sample
/// is scaled by `threshold / peak` (computed in f64, applied in f32).
fn normalize_peak(channels: &mut [Vec<f32>]) {
    let peak = channels
        .iter()
        .flat_map(|c| c.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    if peak > NORMALIZATION_THRESHOLD {
        let scale = (f64::from(NORMALIZATION_THRESHOLD) / f64::from(peak)) as f32;
        channels
            .iter_mut()
            .flat_map(|c| c.iter_mut())
            .for_each(|v| *v *= scale);
    }
}

/// `np.hanning(len)`: the symmetric Hann window in f64 (`[1]` for one sample).
fn hanning(len: usize) -> Vec<f64> {
    if len == 1 {
        return vec![1.0];
    }
    (0..len)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (len - 1) as f64).cos())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kim_vocal_2() -> MdxParams {
        MdxParams::from_model_data(&MdxModelData {
            compensate: 1.009,
            mdx_dim_f_set: 3072,
            mdx_dim_t_set: 8,
            mdx_n_fft_scale_set: 7680,
            primary_stem: "Vocals".into(),
        })
    }

    #[test]
    fn kim_vocal_2_chunking_is_the_packages() {
        let p = kim_vocal_2();
        assert_eq!(p.dim_t, 256);
        assert_eq!(
            (p.trim(), p.chunk_size(), p.gen_size(), p.step()),
            (3840, 261_120, 253_440, 195_840)
        );
    }

    #[test]
    fn peaks_are_limited_across_channels() {
        let mut x = vec![vec![0.5, -1.8], vec![0.9, 0.1]];
        normalize_peak(&mut x);
        assert_eq!(x[1][0], 0.9 * (0.9 / 1.8) as f32);
        assert!((x[0][1] + 0.9).abs() < 1e-7);
        let mut quiet = vec![vec![0.3f32, -0.2]];
        normalize_peak(&mut quiet);
        assert_eq!(quiet[0], [0.3, -0.2]);
    }

    #[test]
    fn hanning_is_symmetric_and_ends_at_zero() {
        let w = hanning(5);
        for (a, b) in w.iter().zip([0.0, 0.5, 1.0, 0.5, 0.0]) {
            assert!((a - b).abs() < 1e-15, "{w:?}");
        }
        assert_eq!(hanning(1), [1.0]);
    }
}
