//! Mono resampling (to 16 kHz for wav2vec2, to 48 kHz for Opus) with rubato 5's synchronous FFT
//! resampler: a fixed-ratio, band-limited resampler (windowed-sinc anti-aliasing filter,
//! BlackmanHarris² window), rubato's highest-quality choice. [`StreamResampler`] feeds it a block
//! at a time and gives exactly what rubato's `process_all` gives on the whole clip: the start-up
//! delay trimmed, `ceil(n · to / from)` samples aligned with the input.
//!
//! The FFT block is chosen here rather than by `Fft::new`: rubato centres its filter on sample
//! `⌊N/2⌋` of an `N`-sample input block but trims `N_out/2` output samples, so an odd `N`
//! (e.g. 441 at 44.1 kHz) would leave the output half an input sample early. An even block (a
//! multiple of `2·from/gcd(from, to)`) makes the two agree; about 1024 input samples per block
//! gives a sharp cut-off just below the new Nyquist frequency.
//!
//! librosa (what Hallo2 uses) defaults to soxr's "HQ" polyphase filter; both are linear-phase
//! band-limited resamplers, so they differ only near the new Nyquist frequency (8 kHz), where
//! wav2vec2-base (trained on 16 kHz LibriSpeech) sees little energy.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use super::AudioError;
use crate::audio_features::SAMPLE_RATE;

/// Wanted input samples per FFT block (the filter length); rounded up to an even multiple of
/// the smallest block the ratio allows.
const BLOCK_FRAMES: usize = 1024;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The FFT block (input samples) for `from` → `to` Hz: an even multiple of the smallest block
/// the ratio allows, about [`BLOCK_FRAMES`].
fn block_frames(from: u32, to: u32) -> usize {
    let min_block = from as usize / gcd(from as usize, to as usize);
    2 * min_block * BLOCK_FRAMES.div_ceil(2 * min_block)
}

/// rubato refused a block (never expected with the fixed block sizes used here).
#[derive(Debug, Clone, PartialEq)]
pub struct ResampleFailure {
    pub from_hz: u32,
    pub detail: String,
}

impl From<ResampleFailure> for AudioError {
    fn from(e: ResampleFailure) -> Self {
        AudioError::Resample {
            from_hz: e.from_hz,
            detail: e.detail,
        }
    }
}

/// A mono FFT resampler fed in pieces of any length: its output equals rubato's `process_all`
/// on the whole input (the same blocks, the last one completed with zeros, the start-up delay
/// trimmed, `ceil(n · to / from)` samples), while holding one block whatever the length.
pub struct StreamResampler {
    resampler: Fft<f32>,
    from: u32,
    to: u32,
    /// Input not yet processed (less than one block).
    pending: Vec<f32>,
    out: Vec<f32>,
    to_trim: usize,
    consumed: u64,
    produced: u64,
}

impl StreamResampler {
    /// `from` Hz → `to` Hz, with an even FFT block of about [`BLOCK_FRAMES`] input samples (see
    /// the module docs). `None` when the rates are equal (nothing to do).
    pub fn new(from: u32, to: u32) -> Result<Option<Self>, ResampleFailure> {
        let failure = |detail: String| ResampleFailure {
            from_hz: from,
            detail,
        };
        if from == 0 || to == 0 {
            return Err(failure(format!(
                "sample rates must be positive ({from} → {to} Hz)"
            )));
        }
        if from == to {
            return Ok(None);
        }
        // One sub-chunk per chunk: the FFT block is exactly `block` input samples.
        let resampler = Fft::<f32>::new_custom(
            from as usize,
            to as usize,
            block_frames(from, to),
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Input,
        )
        .map_err(|e| failure(e.to_string()))?;
        Ok(Some(Self {
            to_trim: resampler.output_delay(),
            out: vec![0f32; resampler.output_frames_max()],
            pending: Vec::with_capacity(resampler.input_frames_max()),
            resampler,
            from,
            to,
            consumed: 0,
            produced: 0,
        }))
    }

    /// Output samples for `n` input samples: `ceil(n · to / from)`, as `process_all` counts.
    pub fn output_len(&self, n: u64) -> u64 {
        (self.to as f64 / self.from as f64 * n as f64).ceil() as u64
    }

    /// Resamples `samples` (the next piece of the input), handing finished output to `sink`.
    pub fn push<E>(
        &mut self,
        mut samples: &[f32],
        sink: &mut dyn FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<ResampleFailure>,
    {
        self.consumed += samples.len() as u64;
        while !samples.is_empty() {
            let need = self.resampler.input_frames_next();
            let take = (need - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() == need {
                self.block(u64::MAX, sink)?;
            }
        }
        Ok(())
    }

    /// Completes the last block with zeros and pumps zeros until every output sample of the
    /// input pushed so far has been handed to `sink`.
    pub fn finish<E>(mut self, sink: &mut dyn FnMut(&[f32]) -> Result<(), E>) -> Result<(), E>
    where
        E: From<ResampleFailure>,
    {
        let wanted = self.output_len(self.consumed);
        while self.produced < wanted {
            let need = self.resampler.input_frames_next();
            self.pending.resize(need, 0.0);
            self.block(wanted, sink)?;
        }
        Ok(())
    }

    /// Processes the one full block in `pending`; hands at most `wanted − produced` samples on.
    fn block<E>(
        &mut self,
        wanted: u64,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<ResampleFailure>,
    {
        let from_hz = self.from;
        let failure = |detail: String| E::from(ResampleFailure { from_hz, detail });
        let need = self.pending.len();
        let input = InterleavedSlice::new(&self.pending[..], 1, need)
            .map_err(|e| failure(e.to_string()))?;
        let frames = self.resampler.output_frames_next();
        let mut output = InterleavedSlice::new_mut(&mut self.out[..frames], 1, frames)
            .map_err(|e| failure(e.to_string()))?;
        let (_, n) = self
            .resampler
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| failure(e.to_string()))?;
        self.pending.clear();
        let trim = self.to_trim.min(n);
        self.to_trim -= trim;
        let keep = ((n - trim) as u64).min(wanted - self.produced) as usize;
        self.produced += keep as u64;
        sink(&self.out[trim..trim + keep])
    }
}

/// Resamples mono `samples` at `rate` Hz to [`SAMPLE_RATE`]; a 16 kHz input is returned as is.
pub fn resample_to_16k(samples: Vec<f32>, rate: u32) -> Result<Vec<f32>, AudioError> {
    Ok(resample(samples, rate, SAMPLE_RATE as u32)?)
}

/// Resamples mono `samples` from `from` Hz to `to` Hz (`ceil(n · to / from)` samples); equal
/// rates return the input as is.
pub fn resample(samples: Vec<f32>, from: u32, to: u32) -> Result<Vec<f32>, ResampleFailure> {
    let Some(mut resampler) = StreamResampler::new(from, to)? else {
        return Ok(samples);
    };
    if samples.is_empty() {
        return Ok(samples);
    }
    let mut out = Vec::with_capacity(resampler.output_len(samples.len() as u64) as usize);
    let mut collect = |chunk: &[f32]| -> Result<(), ResampleFailure> {
        out.extend_from_slice(chunk);
        Ok(())
    };
    resampler.push(&samples, &mut collect)?;
    drop(samples);
    resampler.finish(&mut collect)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (seconds * f64::from(rate)) as usize;
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    /// Least-squares fit of `a·sin(ωt) + b·cos(ωt)` over the interior of a 16 kHz signal:
    /// (amplitude, delay in output samples, max residual).
    fn fit_tone(y: &[f32], freq: f64) -> (f64, f64, f64) {
        let w = 2.0 * std::f64::consts::PI * freq / 16_000.0;
        let range = 400..y.len() - 400;
        let (mut a, mut b) = (0f64, 0f64);
        for i in range.clone() {
            a += f64::from(y[i]) * (w * i as f64).sin();
            b += f64::from(y[i]) * (w * i as f64).cos();
        }
        let (a, b) = (2.0 * a / range.len() as f64, 2.0 * b / range.len() as f64);
        let residual = range
            .map(|i| (f64::from(y[i]) - a * (w * i as f64).sin() - b * (w * i as f64).cos()).abs())
            .fold(0f64, f64::max);
        ((a * a + b * b).sqrt(), -b.atan2(a) / w, residual)
    }

    #[test]
    fn a_tone_keeps_its_amplitude_and_timing() {
        // With rubato's own block choice (odd blocks) 44.1, 22.05 and 11.025 kHz came out
        // 0.18, 0.36 and 0.73 output samples early; the even blocks chosen here remove that.
        for rate in [
            8_000, 11_025, 22_050, 32_000, 44_100, 48_000, 96_000, 44_101,
        ] {
            let out = resample_to_16k(sine(440.0, rate, 1.0), rate).unwrap();
            assert_eq!(out.len(), 16_000, "{rate} Hz");
            let (amplitude, delay, residual) = fit_tone(&out, 440.0);
            assert!(
                (amplitude - 0.5).abs() < 1e-4,
                "{rate} Hz: amplitude {amplitude}"
            );
            assert!(delay.abs() < 1e-3, "{rate} Hz: delay {delay} samples");
            assert!(residual < 1e-4, "{rate} Hz: residual {residual}");
        }
    }

    #[test]
    fn content_above_eight_khz_is_removed() {
        let out = resample_to_16k(sine(11_000.0, 44_100, 1.0), 44_100).unwrap();
        let peak = out[400..15_600].iter().fold(0f32, |m, x| m.max(x.abs()));
        // 0.5 in, 11 kHz: well inside the stop band.
        assert!(peak < 1e-3, "alias peak {peak}");
    }

    #[test]
    fn pieces_of_any_length_give_process_all_exactly() {
        for (rate, n) in [
            (44_100u32, 44_100usize),
            (48_000, 4_800),
            (22_050, 2_047),
            (8_000, 1),
        ] {
            let x = sine(440.0, rate, n as f64 / f64::from(rate));
            let mut whole = Fft::<f32>::new_custom(
                rate as usize,
                SAMPLE_RATE,
                block_frames(rate, 16_000),
                1,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )
            .unwrap();
            let input = InterleavedSlice::new(&x[..], 1, x.len()).unwrap();
            let want = whole
                .process_all(&input, x.len(), None)
                .unwrap()
                .take_data();
            for piece in [1usize, 333, 1024, 100_000] {
                let mut r = StreamResampler::new(rate, 16_000).unwrap().unwrap();
                let mut got = Vec::new();
                let mut sink = |c: &[f32]| -> Result<(), ResampleFailure> {
                    got.extend_from_slice(c);
                    Ok(())
                };
                for chunk in x.chunks(piece) {
                    r.push(chunk, &mut sink).unwrap();
                }
                r.finish(&mut sink).unwrap();
                assert_eq!(got, want, "{rate} Hz, {n} samples in pieces of {piece}");
            }
        }
    }

    #[test]
    fn sixteen_khz_passes_through() {
        let x = sine(440.0, 16_000, 0.1);
        assert_eq!(resample_to_16k(x.clone(), 16_000).unwrap(), x);
    }
}
