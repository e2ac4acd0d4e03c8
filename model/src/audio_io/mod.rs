//! Audio files → 16 kHz mono samples: decoding, downmix, resampling, validation; and a
//! content-addressed cache of the wav2vec2 features computed from them.
//!
//! Hallo2's `inference_long.py` loads the driving audio with `librosa.load(sr=16000)` after
//! vocal separation; this module is the part before the model: any common file → mono f32 in
//! [-1, 1] at [`SAMPLE_RATE`](crate::audio_features::SAMPLE_RATE).
//!
//! ```text
//! bytes ─▶ symphonia probe (wav, mp3, m4a/AAC, ogg/Vorbis, flac, …) ─▶ decode packets
//!   ─▶ trim encoder delay/padding ─▶ mean of channels ─▶ checks (length, silence)
//!   ─▶ rubato FFT resampler to 16 kHz (skipped at 16 kHz) ─▶ DecodedAudio
//! ```
//!
//! Encoder delay: MP3 (LAME/Xing header), Ogg/Vorbis (granule positions) and FLAC/PCM are
//! trimmed by symphonia. symphonia's MP4 reader does not apply the edit list, so the AAC priming
//! (1024 frames for ffmpeg/Apple encoders) is removed here from the track's `elst` box
//! ([`mp4`]). Raw ADTS `.aac` streams carry no such information and keep their priming.
//!
//! Limits ([`AudioLimits`]): file size, duration (from the container's stated frame count before
//! decoding; otherwise counted while decoding), and silence: a mono peak below
//! [`AudioLimits::silence_threshold_dbfs`] (−60 dBFS by default, i.e. |x| < 0.001, about 33
//! LSB of 16-bit audio) is rejected, because wav2vec2 would see only noise and the lips would
//! not move.

pub mod cache;
pub mod decode;
pub mod mp4;
pub mod resample;
pub mod samples_file;

use std::path::PathBuf;

pub use cache::{
    CacheKey, CacheOutcome, FeatureCache, FeatureFileWriter, FeatureRows, file_blake3,
    weights_fingerprint,
};
pub use decode::{
    AudioInput, MonoSink, NativeAudio, StreamStart, StreamSummary, decode_audio_bytes,
    decode_audio_file, decode_native, decode_stream,
};
pub use resample::{ResampleFailure, StreamResampler, resample_to_16k};
pub use samples_file::{SamplesFile, decode_to_samples_file, decode_with_vocals};

/// What the decoder accepts; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioLimits {
    /// Longest accepted audio, in seconds (default 600 s = 10 minutes).
    pub max_duration_s: f64,
    /// Largest accepted file, in bytes (default 512 MiB: 10 min of 48 kHz stereo f32 WAV is
    /// 230 MB).
    pub max_bytes: u64,
    /// Audio whose mono peak is below this level (dBFS, full scale = 1.0) is rejected as silent
    /// (default −60 dBFS).
    pub silence_threshold_dbfs: f64,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self {
            max_duration_s: 600.0,
            max_bytes: 512 << 20,
            silence_threshold_dbfs: -60.0,
        }
    }
}

/// A decoded, downmixed, resampled driving audio.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples at 16 kHz, nominally in [-1, 1] (lossy decoders may overshoot slightly).
    pub samples_16k: Vec<f32>,
    /// Sample rate of the file, in Hz.
    pub source_rate: u32,
    /// Channels of the file (averaged into one).
    pub channels: usize,
    /// Duration of the decoded audio, in seconds (`frames / source_rate`, after trimming).
    pub duration_s: f64,
    /// Short codec name, e.g. `"pcm_s16le"`, `"mp3"`, `"aac"`, `"vorbis"`, `"flac"`.
    pub codec: String,
    /// Peak of the mono mixdown before resampling, in dBFS.
    pub peak_dbfs: f64,
}

impl DecodedAudio {
    /// The loudest |sample| of each of `buckets` equal slices of the 16 kHz mono signal: the
    /// outline of a waveform preview (fewer values when there are fewer samples than buckets).
    pub fn waveform(&self, buckets: usize) -> Vec<f32> {
        let n = self.samples_16k.len();
        if n == 0 || buckets == 0 {
            return Vec::new();
        }
        let buckets = buckets.min(n);
        (0..buckets)
            .map(|b| {
                let slice = &self.samples_16k[b * n / buckets..(b + 1) * n / buckets];
                slice.iter().fold(0f32, |m, x| m.max(x.abs()))
            })
            .collect()
    }
}

/// Why an audio file was not accepted, or the feature cache failed.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audio file is {bytes} bytes, more than the limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    #[error(
        "not a recognised audio file (expected wav, mp3, m4a/AAC, ogg/Vorbis or flac): {detail}"
    )]
    UnrecognisedFormat { detail: String },
    #[error("the {container} file has no audio track")]
    NoAudioTrack { container: String },
    #[error(
        "unsupported codec: {codec} (supported: PCM wav, mp3, AAC-LC, Vorbis, FLAC, ALAC, ADPCM); \
         convert the file, e.g. `ffmpeg -i in -c:a flac out.flac`"
    )]
    UnsupportedCodec { codec: String },
    #[error("unsupported audio parameters: {detail}")]
    UnsupportedParameters { detail: String },
    #[error("corrupt {codec} data at {at_s:.2} s: {detail}")]
    Corrupt {
        codec: String,
        at_s: f64,
        detail: String,
    },
    #[error(
        "truncated file: the data ends after {decoded_s:.2} s{}",
        match .expected_s {
            Some(s) => format!(" of the {s:.2} s the container states"),
            None => " in the middle of a packet or page".to_string(),
        }
    )]
    Truncated {
        decoded_s: f64,
        /// The length the container states, when it states one.
        expected_s: Option<f64>,
    },
    #[error("the audio is empty (0 samples)")]
    Empty,
    #[error(
        "the audio is silent: its peak is {peak_dbfs:.1} dBFS, below the {threshold_dbfs:.1} dBFS \
         threshold"
    )]
    Silent { peak_dbfs: f64, threshold_dbfs: f64 },
    #[error(
        "the audio is {duration_s:.1} s long{}, more than the limit of {limit_s:.1} s",
        if *.at_least { " or more" } else { "" }
    )]
    TooLong {
        duration_s: f64,
        limit_s: f64,
        /// `true` when decoding stopped at the limit, so the real length is unknown.
        at_least: bool,
    },
    #[error("resampling {from_hz} Hz → 16000 Hz: {detail}")]
    Resample { from_hz: u32, detail: String },
    #[error("feature cache {path}: {detail}")]
    Cache { path: PathBuf, detail: String },
    #[error(transparent)]
    Vocals(#[from] crate::vocals::VocalsError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl AudioError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// `20·log10(peak)`; `-inf` for zero.
pub fn dbfs(peak: f32) -> f64 {
    20.0 * f64::from(peak).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(samples: Vec<f32>) -> DecodedAudio {
        DecodedAudio {
            duration_s: samples.len() as f64 / 16_000.0,
            samples_16k: samples,
            source_rate: 16_000,
            channels: 1,
            codec: "pcm_s16le".into(),
            peak_dbfs: 0.0,
        }
    }

    #[test]
    fn waveform_keeps_the_loudest_sample_of_each_slice() {
        let a = audio(vec![0.1, -0.5, 0.2, 0.0, -0.05, 0.3, 0.9, -0.95]);
        assert_eq!(a.waveform(4), vec![0.5, 0.2, 0.3, 0.95]);
        assert_eq!(a.waveform(1), vec![0.95]);
        // Never more buckets than samples, and nothing from nothing.
        assert_eq!(a.waveform(100).len(), 8);
        assert!(audio(Vec::new()).waveform(10).is_empty());
    }
}
