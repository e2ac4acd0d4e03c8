//! Hallo2's audio features around wav2vec2, from decoded 16 kHz mono samples to the per-frame
//! 5-frame windows the audio projection reads. Mirrors, with `use_cut: true` (long.yaml):
//! - hallo2 `scripts/inference_long.py` @ `58a9aa6`: `cut_audio` (pydub 0.25.1 60-s segments,
//!   measured and sliced in whole milliseconds), the per-segment loop, `process_audio_emb`;
//! - hallo2 `hallo/datasets/audio_processor.py::AudioProcessor.preprocess` (`features: all`);
//! - transformers 4.39.2 `Wav2Vec2FeatureExtractor` (`do_normalize=True`, NumPy 1.26 arithmetic).
//!
//! Vocal separation and resampling happen before this (they are not part of the model); the
//! samples are what `librosa.load(sr=16000)` returns, i.e. 16-bit PCM / 32768.
//!
//! ```text
//! samples ─▶ cut_audio (≤ 60 s, whole ms) ─▶ per segment: zero_mean_unit_var_norm,
//!   seq_len = ceil(n/16000·25), last segment zero-padded to whole clips ─▶ wav2vec2(seq_len)
//!   ─▶ hidden_states[1..] (seq_len, L, C) ─▶ cat over segments (T, L, C) ─▶ windows (T, 5, L, C)
//! ```

use candle_core::{DType, Result, Tensor};

use crate::wav2vec2::Wav2Vec2Model;

/// `data.driving_audio.sample_rate` (the script asserts 16 kHz).
pub const SAMPLE_RATE: usize = 16_000;
/// `data.export_video.fps`: one audio feature row per video frame.
pub const FPS: usize = 25;
/// `cut_audio(..., length=60)`: segment length in seconds.
pub const SEGMENT_SECONDS: usize = 60;
/// `process_audio_emb` stacks frames `i − 2 ..= i + 2`.
pub const WINDOW_RADIUS: usize = 2;
/// Frames per window, `2 · WINDOW_RADIUS + 1` (AudioProjModel's `seq_len`).
pub const WINDOW_FRAMES: usize = 2 * WINDOW_RADIUS + 1;
/// `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`'s variance floor.
const NORM_EPS: f64 = 1e-7;

/// pydub `len(AudioSegment)`: the duration in whole milliseconds,
/// `round(1000 · (frames / frame_rate))` with Python's round-half-to-even on the f64 value.
pub fn pydub_len_ms(num_samples: usize, sample_rate: usize) -> u64 {
    (1000.0 * (num_samples as f64 / sample_rate as f64)).round_ties_even() as u64
}

/// pydub `AudioSegment.frame_count(ms)` truncated as `_parse_position` does:
/// `int(ms · (frame_rate / 1000.0))`.
fn pydub_ms_to_samples(ms: u64, sample_rate: usize) -> usize {
    (ms as f64 * (sample_rate as f64 / 1000.0)) as usize
}

/// `cut_audio`: splits mono samples into consecutive `segment_seconds` pieces the way pydub
/// slices them. The total length is first rounded to whole milliseconds ([`pydub_len_ms`]); each
/// piece `[i·seg, min((i+1)·seg, len))` ms is converted to samples by truncation, so the audio is
/// truncated to that length, or padded with silence (zeros) when the rounding went up (pydub fills
/// missing frames with silence). Returns no segment for audio shorter than 0.5 ms.
pub fn cut_audio(samples: &[f32], sample_rate: usize, segment_seconds: usize) -> Vec<Vec<f32>> {
    segment_ranges(samples.len(), sample_rate, segment_seconds)
        .into_iter()
        .map(|range| segment(samples, range))
        .collect()
}

/// [`cut_audio`]'s pieces as sample ranges `[start, end)` of `num_samples` samples (`end` may
/// pass the last sample: that part is silence), so a caller can take one piece at a time.
pub fn segment_ranges(
    num_samples: usize,
    sample_rate: usize,
    segment_seconds: usize,
) -> Vec<(usize, usize)> {
    let len_ms = pydub_len_ms(num_samples, sample_rate);
    let segment_ms = segment_seconds as u64 * 1000;
    if segment_ms == 0 {
        return vec![];
    }
    let num_segments = len_ms.div_ceil(segment_ms);
    (0..num_segments)
        .map(|i| {
            let start_ms = (i * segment_ms).min(len_ms);
            let end_ms = ((i + 1) * segment_ms).min(len_ms);
            (
                pydub_ms_to_samples(start_ms, sample_rate),
                pydub_ms_to_samples(end_ms, sample_rate),
            )
        })
        .collect()
}

/// The samples of one [`segment_ranges`] piece, padded with silence past the end.
fn segment(samples: &[f32], (start, end): (usize, usize)) -> Vec<f32> {
    let mut piece = samples[start.min(samples.len())..end.min(samples.len())].to_vec();
    piece.resize(end - start, 0.0);
    piece
}

/// NumPy's pairwise summation of a contiguous f32 array (`np.add.reduce`, as used by `mean` and
/// `var`): blocks of up to 128 summed with 8 interleaved accumulators, larger ranges split in
/// halves rounded down to a multiple of 8; all in f32.
fn numpy_pairwise_sum(xs: &[f32]) -> f32 {
    numpy_pairwise_sum_of(xs, &|x| x)
}

/// [`numpy_pairwise_sum`] of `f(x)` for each `x`, without materialising the mapped array (the
/// same sum NumPy gives for the array `f(xs)`). NumPy's reduction runs through its iterator's
/// buffer: pairwise within each 8192-element buffer, the buffers' sums added in order.
fn numpy_pairwise_sum_of(xs: &[f32], f: &impl Fn(f32) -> f32) -> f32 {
    /// `NPY_BUFSIZE`.
    const BUFFER: usize = 8192;
    xs.chunks(BUFFER)
        .fold(0f32, |sum, buffer| sum + pairwise_sum_of(buffer, f))
}

/// NumPy's `pairwise_sum` on one buffer: blocks of 128 summed with 8 accumulators, larger
/// inputs split in halves (at a multiple of 8).
fn pairwise_sum_of(xs: &[f32], f: &impl Fn(f32) -> f32) -> f32 {
    const BLOCK: usize = 128;
    let n = xs.len();
    if n < 8 {
        let mut res = 0f32;
        for &x in xs {
            res += f(x);
        }
        res
    } else if n <= BLOCK {
        let mut r = [0f32; 8];
        for (acc, &x) in r.iter_mut().zip(&xs[..8]) {
            *acc = f(x);
        }
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += f(xs[i + j]);
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &xs[full..] {
            res += f(x);
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum_of(&xs[..n2], f) + pairwise_sum_of(&xs[n2..], f)
    }
}

/// `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm` on one f32 array (no attention mask):
/// `(x − x.mean()) / np.sqrt(x.var() + 1e-7)` with NumPy 1.26 semantics: mean and population
/// variance in f32 (pairwise sums), `var + 1e-7` and the square root in f64, the division in f32.
/// An empty input gives an empty output.
pub fn zero_mean_unit_var_norm(xs: &[f32]) -> Vec<f32> {
    let mut out = xs.to_vec();
    normalize_in_place(&mut out);
    out
}

/// [`zero_mean_unit_var_norm`] in place.
fn normalize_in_place(xs: &mut [f32]) {
    if xs.is_empty() {
        return;
    }
    let n = xs.len() as f64;
    // f32 sum / count, correctly rounded back to f32 (NumPy divides in f64 and casts).
    let mean = (numpy_pairwise_sum(xs) as f64 / n) as f32;
    let var = (numpy_pairwise_sum_of(xs, &|x| {
        let d = x - mean;
        d * d
    }) as f64
        / n) as f32;
    // np.float32 + Python float is f64 under NumPy 1.x promotion; the f32 array / f64 scalar
    // division runs in f32 with the scalar cast down.
    let std = (var as f64 + NORM_EPS).sqrt() as f32;
    for x in xs.iter_mut() {
        *x = (*x - mean) / std;
    }
}

/// Video frames for `num_samples` audio samples: Python's `math.ceil(n / sample_rate * fps)`,
/// evaluated in f64 in that order (so 4480 samples at 16 kHz give 8 frames: 4480/16000·25 is
/// 7.000000000000001 in binary floating point).
pub fn frame_count(num_samples: usize, sample_rate: usize, fps: usize) -> usize {
    (num_samples as f64 / sample_rate as f64 * fps as f64).ceil() as usize
}

/// One segment ready for wav2vec2: `AudioProcessor.preprocess` up to the model call.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessedSegment {
    /// Normalised samples, zero-padded when `seq_len` was padded.
    pub input_values: Vec<f32>,
    /// Frames the model produces (after padding).
    pub seq_len: usize,
    /// Frames of the audio itself (before padding).
    pub audio_length: usize,
}

/// `AudioProcessor.preprocess(wav, clip_length, padding, processed_length)` before the model:
/// normalise, count frames, and — only when `padding` (the last segment) and `clip_length > 0`
/// and this segment's own frame count is not a whole number of clips — pad with
/// `clip_length − (seq_len + processed_length) % clip_length` frames of zeros (640 samples each)
/// so the running total becomes a whole number of clips. As upstream, the condition looks at the
/// segment's count and the amount at the running total (a total that is already whole gets one
/// more full clip; a segment that is whole on its own is never padded).
pub fn preprocess_segment(
    speech: &[f32],
    clip_length: usize,
    padding: bool,
    processed_length: usize,
) -> PreprocessedSegment {
    let (seq_len, audio_length) =
        segment_frames(speech.len(), clip_length, padding, processed_length);
    PreprocessedSegment {
        input_values: normalized_and_padded(speech.to_vec(), seq_len - audio_length),
        seq_len,
        audio_length,
    }
}

/// `samples` normalised in place, then `pad_frames` frames of zeros (640 samples each) appended.
fn normalized_and_padded(mut samples: Vec<f32>, pad_frames: usize) -> Vec<f32> {
    normalize_in_place(&mut samples);
    samples.resize(samples.len() + pad_frames * (SAMPLE_RATE / FPS), 0.0);
    samples
}

/// `(seq_len, audio_length)` of a segment of `num_samples` samples, as [`preprocess_segment`]
/// counts them (see there for the padding rule).
fn segment_frames(
    num_samples: usize,
    clip_length: usize,
    padding: bool,
    processed_length: usize,
) -> (usize, usize) {
    let audio_length = frame_count(num_samples, SAMPLE_RATE, FPS);
    let mut seq_len = audio_length;
    if padding && clip_length > 0 && !seq_len.is_multiple_of(clip_length) {
        let all_len = seq_len + processed_length;
        seq_len += clip_length - all_len % clip_length;
    }
    (seq_len, audio_length)
}

/// One 60 s piece of the audio path, known before any sample is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlan {
    /// Its samples `[start, end)` (`end` may pass the audio: that part is silence).
    pub range: (usize, usize),
    /// Frames wav2vec2 makes for it (with the last segment's padding).
    pub seq_len: usize,
    /// Frames of the audio itself.
    pub audio_length: usize,
}

/// The segments [`AudioFeatures::compute`] runs for `num_samples` samples at 16 kHz (their sum
/// of `seq_len` is `T`, of `audio_length` the video's frames); an error for audio shorter than
/// one millisecond, which has none.
pub fn plan_segments(num_samples: usize, clip_frames: usize) -> Result<Vec<SegmentPlan>> {
    let ranges = segment_ranges(num_samples, SAMPLE_RATE, SEGMENT_SECONDS);
    if ranges.is_empty() {
        candle_core::bail!(
            "audio of {num_samples} samples is shorter than one millisecond at {SAMPLE_RATE} Hz"
        )
    }
    let last = ranges.len() - 1;
    let mut processed = 0;
    Ok(ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let (seq_len, audio_length) =
                segment_frames(range.1 - range.0, clip_frames, i == last, processed);
            processed += audio_length;
            SegmentPlan {
                range,
                seq_len,
                audio_length,
            }
        })
        .collect())
}

/// wav2vec2 on one preprocessed segment with `features: all`: the layer outputs
/// `hidden_states[1..]` stacked → `(seq_len, L, hidden_size)`, in the model's dtype.
pub fn segment_audio_emb(model: &Wav2Vec2Model, segment: &PreprocessedSegment) -> Result<Tensor> {
    audio_emb_of(model, segment.input_values.clone(), segment.seq_len)
}

/// [`segment_audio_emb`] taking the normalised samples (moved into the input tensor, not copied).
fn audio_emb_of(model: &Wav2Vec2Model, input_values: Vec<f32>, seq_len: usize) -> Result<Tensor> {
    let n = input_values.len();
    let input_values =
        Tensor::from_vec(input_values, (1, n), model.device())?.to_dtype(model.dtype())?;
    let hidden_states = model.forward(&input_values, seq_len)?;
    // L × (1, s, d) stacked → (1, s, L, d) → (s, L, d)   ("b s d -> s b d" after stacking on dim 1)
    Tensor::stack(&hidden_states[1..], 2)?.squeeze(0)
}

/// `process_audio_emb`: for each frame `i` the frames `i−2 ..= i+2`, indices clamped to
/// `[0, T−1]`: `(T, …)` → `(T, 5, …)`.
pub fn process_audio_emb(audio_emb: &Tensor) -> Result<Tensor> {
    let dims = audio_emb.dims();
    let Some(&t) = dims.first() else {
        candle_core::bail!("process_audio_emb: expected a (T, …) tensor, got a scalar")
    };
    if t == 0 {
        candle_core::bail!("process_audio_emb: no frames")
    }
    let index: Vec<u32> = (0..t)
        .flat_map(|i| {
            (0..WINDOW_FRAMES).map(move |j| (i + j).saturating_sub(WINDOW_RADIUS).min(t - 1) as u32)
        })
        .collect();
    let index = Tensor::from_vec(index, t * WINDOW_FRAMES, audio_emb.device())?;
    let mut shape = vec![t, WINDOW_FRAMES];
    shape.extend_from_slice(&dims[1..]);
    audio_emb.index_select(&index, 0)?.reshape(shape)
}

/// The rows `[lo, hi)` of a `t`-frame embedding that the windows of frames `start .. start + len`
/// read, and each window's rows relative to `lo` (`len × 5` indices), clamped as
/// [`process_audio_emb`] clamps them; frames at or past `t` take the last frame's window.
pub fn window_rows(t: usize, start: usize, len: usize) -> (usize, usize, Vec<u32>) {
    let last = t.saturating_sub(1);
    let centre = |i: usize| i.min(last);
    let lo = centre(start).saturating_sub(WINDOW_RADIUS);
    let hi = (centre(start + len.max(1) - 1) + WINDOW_RADIUS).min(last) + 1;
    let index = (start..start + len)
        .flat_map(|i| {
            (0..WINDOW_FRAMES)
                .map(move |j| ((centre(i) + j).saturating_sub(WINDOW_RADIUS).min(last) - lo) as u32)
        })
        .collect();
    (lo, hi, index)
}

/// `process_audio_emb`'s windows for frames `start .. start + len` only: `(len, 5, …)`. Frames
/// at or past `T` (a clip that runs past the audio) take the last frame's window, as the clamped
/// indices of [`process_audio_emb`] would. One clip's windows instead of the whole `(T, 5, …)`
/// tensor, which at full size is five times the features (2.8 GB for 10 minutes).
pub fn audio_emb_windows(audio_emb: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let dims = audio_emb.dims();
    let Some(&t) = dims.first() else {
        candle_core::bail!("audio_emb_windows: expected a (T, …) tensor, got a scalar")
    };
    if t == 0 {
        candle_core::bail!("audio_emb_windows: no frames")
    }
    let (lo, hi, index) = window_rows(t, start, len);
    windows_of(&audio_emb.narrow(0, lo, hi - lo)?, index, len)
}

/// The `len` windows of `index` (from [`window_rows`]) over `rows`: `(len, 5, …)`.
pub fn windows_of(rows: &Tensor, index: Vec<u32>, len: usize) -> Result<Tensor> {
    let index = Tensor::from_vec(index, len * WINDOW_FRAMES, rows.device())?;
    let mut shape = vec![len, WINDOW_FRAMES];
    shape.extend_from_slice(&rows.dims()[1..]);
    rows.index_select(&index, 0)?.reshape(shape)
}

/// The counts of one audio's features (what [`AudioFeatures`] holds besides the tensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSummary {
    /// Frames of real audio, summed over segments (before padding): the video length.
    pub audio_length: usize,
    /// `T`, frames including the padding of the last segment.
    pub seq_len: usize,
    pub num_segments: usize,
}

impl FeatureSummary {
    /// The counts `plan` will give.
    pub fn of(plan: &[SegmentPlan]) -> Self {
        Self {
            audio_length: plan.iter().map(|s| s.audio_length).sum(),
            seq_len: plan.iter().map(|s| s.seq_len).sum(),
            num_segments: plan.len(),
        }
    }
}

/// The audio conditioning of one driving audio, ready for the pipeline.
#[derive(Debug, Clone)]
pub struct AudioFeatures {
    /// `(T, L, C)`: the wav2vec2 layer outputs of all segments, concatenated.
    pub audio_emb: Tensor,
    /// Frames of real audio, summed over segments (before padding): the video length.
    pub audio_length: usize,
    /// `T`, frames including the padding of the last segment.
    pub seq_len: usize,
    /// How many 60-s segments the audio was cut into.
    pub num_segments: usize,
}

impl AudioFeatures {
    /// Runs the whole audio path of `inference_long.py` (`use_cut: true`, `features: all`) on
    /// mono 16 kHz samples in [-1, 1]. `clip_frames` is `data.n_sample_frames` (16 for Hallo2);
    /// only the last segment is padded. Outputs are on the model's device, in its dtype.
    pub fn compute(model: &Wav2Vec2Model, samples_16k: &[f32], clip_frames: usize) -> Result<Self> {
        let plan = plan_segments(samples_16k.len(), clip_frames)?;
        let mut embeddings = Vec::with_capacity(plan.len());
        Self::compute_segments(
            model,
            &plan,
            &mut |range| Ok(segment(samples_16k, range)),
            &mut |emb| {
                embeddings.push(emb);
                Ok(())
            },
        )?;
        let summary = FeatureSummary::of(&plan);
        Ok(Self {
            audio_emb: Tensor::cat(&embeddings, 0)?,
            audio_length: summary.audio_length,
            seq_len: summary.seq_len,
            num_segments: summary.num_segments,
        })
    }

    /// [`Self::compute`] one segment of `plan` at a time: `read` gives the samples of a range
    /// (zeros past the end), `emit` takes each segment's `(seq_len, L, C)` in order. Nothing of
    /// the whole audio is held, so memory does not grow with its length.
    pub fn compute_segments(
        model: &Wav2Vec2Model,
        plan: &[SegmentPlan],
        read: &mut dyn FnMut((usize, usize)) -> Result<Vec<f32>>,
        emit: &mut dyn FnMut(Tensor) -> Result<()>,
    ) -> Result<()> {
        for seg in plan {
            let input_values =
                normalized_and_padded(read(seg.range)?, seg.seq_len - seg.audio_length);
            emit(audio_emb_of(model, input_values, seg.seq_len)?)?;
        }
        Ok(())
    }

    /// `(T, 5, L, C)`: [`process_audio_emb`] of [`Self::audio_emb`]; clip `k` reads rows
    /// `[clip·k, clip·(k+1))`.
    pub fn windows(&self) -> Result<Tensor> {
        process_audio_emb(&self.audio_emb)
    }

    /// [`Self::audio_emb`] as f32, the dtype Hallo keeps the audio embedding in.
    pub fn audio_emb_f32(&self) -> Result<Tensor> {
        self.audio_emb.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn frame_count_rounds_like_python() {
        // 4480 / 16000 * 25 = 7.000000000000001 in f64 → 8.
        assert_eq!(frame_count(4480, SAMPLE_RATE, FPS), 8);
        assert_eq!(frame_count(4192, SAMPLE_RATE, FPS), 7);
        assert_eq!(frame_count(640, SAMPLE_RATE, FPS), 1);
        assert_eq!(frame_count(641, SAMPLE_RATE, FPS), 2);
        assert_eq!(frame_count(960_000, SAMPLE_RATE, FPS), 1500);
        assert_eq!(frame_count(0, SAMPLE_RATE, FPS), 0);
    }

    #[test]
    fn pydub_length_is_rounded_half_to_even_in_milliseconds() {
        // 4200 samples = 262.5 ms → 262 (half to even).
        assert_eq!(pydub_len_ms(4200, SAMPLE_RATE), 262);
        // 4216 samples = 263.5 ms → 264 (half to even, upwards).
        assert_eq!(pydub_len_ms(4216, SAMPLE_RATE), 264);
        assert_eq!(pydub_len_ms(4207, SAMPLE_RATE), 263);
        assert_eq!(pydub_len_ms(7, SAMPLE_RATE), 0);
    }

    #[test]
    fn cut_truncates_or_pads_to_whole_milliseconds() {
        let samples: Vec<f32> = (1..=4200).map(|i| i as f32).collect();
        let segments = cut_audio(&samples, SAMPLE_RATE, SEGMENT_SECONDS);
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].len(), 4192);
        assert_eq!(segments[0][..], samples[..4192]);

        // 4216 samples = 263.5 ms → 264 ms = 4224 samples: 8 samples of silence appended.
        let samples: Vec<f32> = (1..=4216).map(|i| i as f32).collect();
        let segments = cut_audio(&samples, SAMPLE_RATE, SEGMENT_SECONDS);
        assert_eq!(segments[0].len(), 4224);
        assert_eq!(segments[0][..4216], samples[..]);
        assert!(segments[0][4216..].iter().all(|&x| x == 0.0));

        assert!(cut_audio(&[0.5; 7], SAMPLE_RATE, SEGMENT_SECONDS).is_empty());
    }

    #[test]
    fn long_audio_is_cut_into_sixty_second_segments() {
        // 130.25 s: 60 s, 60 s, 10.25 s.
        let n = 130 * SAMPLE_RATE + 4000;
        let samples: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
        let segments = cut_audio(&samples, SAMPLE_RATE, SEGMENT_SECONDS);
        let lengths: Vec<usize> = segments.iter().map(Vec::len).collect();
        assert_eq!(lengths, vec![960_000, 960_000, 164_000]);
        assert_eq!(segments[1][0], samples[960_000]);
        assert_eq!(segments[2][..], samples[1_920_000..]);
        // Exactly two minutes: two full segments, no empty third one.
        let segments = cut_audio(&samples[..120 * SAMPLE_RATE], SAMPLE_RATE, SEGMENT_SECONDS);
        assert_eq!(segments.len(), 2);
    }

    #[test]
    fn pairwise_sum_matches_numpy_order() {
        // Values whose f32 sum depends on the order: 1 followed by many tiny values.
        let mut xs = vec![1.0f32];
        xs.extend(std::iter::repeat_n(1e-8f32, 999));
        // Sequential f32 summation loses every 1e-8; pairwise blocks keep 8 accumulators of them.
        let sequential = xs.iter().fold(0f32, |a, &b| a + b);
        assert_eq!(sequential, 1.0);
        let pairwise = numpy_pairwise_sum(&xs);
        assert!(pairwise > 1.0, "{pairwise}");
        // Small inputs are plain sums.
        assert_eq!(numpy_pairwise_sum(&[1.0, 2.0, 3.0]), 6.0);
        assert_eq!(numpy_pairwise_sum(&[]), 0.0);
    }

    #[test]
    fn normalisation_gives_zero_mean_unit_variance() {
        let xs: Vec<f32> = (0..5000)
            .map(|i| ((i as f32) * 0.37).sin() * 0.3 + 0.1)
            .collect();
        let ys = zero_mean_unit_var_norm(&xs);
        let n = ys.len() as f64;
        let mean = ys.iter().map(|&y| y as f64).sum::<f64>() / n;
        let var = ys.iter().map(|&y| (y as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-6, "{mean}");
        assert!((var - 1.0).abs() < 1e-5, "{var}");
        // Silence stays zero (the eps keeps the division finite).
        assert!(
            zero_mean_unit_var_norm(&[0.0; 10])
                .iter()
                .all(|&y| y == 0.0)
        );
    }

    #[test]
    fn only_the_last_segment_is_padded_to_whole_clips() {
        let speech = vec![0.25f32; 4192];
        let seg = preprocess_segment(&speech, 4, true, 0);
        assert_eq!((seg.audio_length, seg.seq_len), (7, 8));
        assert_eq!(seg.input_values.len(), 4192 + 640);
        assert!(seg.input_values[4192..].iter().all(|&x| x == 0.0));
        let seg = preprocess_segment(&speech, 4, false, 0);
        assert_eq!((seg.audio_length, seg.seq_len), (7, 7));
        assert_eq!(seg.input_values.len(), 4192);
        // The amount follows the running total: 1500 + 7 = 1507 → 13 more frames to 1520.
        let seg = preprocess_segment(&speech, 16, true, 1500);
        assert_eq!(seg.seq_len, 7 + 13);
        // A running total that is already whole still gets one more full clip (upstream's
        // `clip − all % clip` with `all % clip == 0`): 1497 + 7 = 1504.
        let seg = preprocess_segment(&speech, 4, true, 1497);
        assert_eq!(seg.seq_len, 7 + 4);
        // A segment that is whole on its own is not padded, even if the total is not.
        let speech = vec![0.25f32; 16 * 640];
        let seg = preprocess_segment(&speech, 16, true, 1500);
        assert_eq!(seg.seq_len, 16);
        // 4480 samples round up to 8 frames: whole clips of 4, no padding.
        let seg = preprocess_segment(&[0.1f32; 4480], 4, true, 0);
        assert_eq!((seg.audio_length, seg.seq_len), (8, 8));
        assert_eq!(seg.input_values.len(), 4480);
    }

    #[test]
    fn one_clips_windows_equal_the_whole_tensors_rows_and_clamp_past_the_end() {
        let emb = Tensor::arange(0f32, 7.0, &Device::Cpu)
            .unwrap()
            .reshape((7, 1))
            .unwrap();
        let all = process_audio_emb(&emb).unwrap();
        for (start, len) in [(0, 4), (2, 5), (4, 3)] {
            let part = audio_emb_windows(&emb, start, len).unwrap();
            let rows: Vec<Vec<f32>> = part.reshape((len, 5)).unwrap().to_vec2().unwrap();
            let want: Vec<Vec<f32>> = all
                .narrow(0, start, len)
                .unwrap()
                .reshape((len, 5))
                .unwrap()
                .to_vec2()
                .unwrap();
            assert_eq!(rows, want, "{start}+{len}");
        }
        // Past the end: the last frame's window.
        let past: Vec<Vec<f32>> = audio_emb_windows(&emb, 6, 3)
            .unwrap()
            .reshape((3, 5))
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(past, vec![vec![4.0, 5.0, 6.0, 6.0, 6.0]; 3]);
    }

    #[test]
    fn windows_clamp_at_both_ends() {
        let emb = Tensor::arange(0f32, 4.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 1, 1))
            .unwrap();
        let windows = process_audio_emb(&emb).unwrap();
        assert_eq!(windows.dims(), &[4, 5, 1, 1]);
        let rows: Vec<Vec<f32>> = windows.reshape((4, 5)).unwrap().to_vec2().unwrap();
        assert_eq!(
            rows,
            vec![
                vec![0.0, 0.0, 0.0, 1.0, 2.0],
                vec![0.0, 0.0, 1.0, 2.0, 3.0],
                vec![0.0, 1.0, 2.0, 3.0, 3.0],
                vec![1.0, 2.0, 3.0, 3.0, 3.0],
            ]
        );
        let one = Tensor::new(&[[7f32]], &Device::Cpu).unwrap();
        let rows: Vec<f32> = process_audio_emb(&one)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(rows, vec![7.0; 5]);
    }
}
