//! Mono resampling to 16 kHz with rubato 5's synchronous FFT resampler (`Fft` +
//! `process_all`): a fixed-ratio, band-limited resampler (windowed-sinc anti-aliasing filter,
//! BlackmanHarris² window), rubato's highest-quality choice for whole clips. `process_all` trims
//! the start-up delay, so the output has `ceil(n · 16000 / rate)` samples aligned with the input.
//!
//! The FFT block is chosen here rather than by `Fft::new`: rubato centres its filter on sample
//! `⌊N/2⌋` of an `N`-sample input block but trims `N_out/2` output samples, so an odd `N`
//! (e.g. 441 at 44.1 kHz) would leave the output half an input sample early. An even block (a
//! multiple of `2·rate/gcd(rate, 16000)`) makes the two agree; about 1024 input samples per
//! block gives a sharp cut-off just below 8 kHz.
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

/// Resamples mono `samples` at `rate` Hz to [`SAMPLE_RATE`]; a 16 kHz input is returned as is.
pub fn resample_to_16k(samples: Vec<f32>, rate: u32) -> Result<Vec<f32>, AudioError> {
    let target = SAMPLE_RATE as u32;
    if rate == target || samples.is_empty() {
        return Ok(samples);
    }
    let error = |detail: String| AudioError::Resample {
        from_hz: rate,
        detail,
    };
    let n = samples.len();
    let min_block = rate as usize / gcd(rate as usize, SAMPLE_RATE);
    let block = 2 * min_block * BLOCK_FRAMES.div_ceil(2 * min_block);
    // One sub-chunk per chunk: the FFT block is exactly `block` input samples.
    let mut resampler = Fft::<f32>::new_custom(
        rate as usize,
        SAMPLE_RATE,
        block,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|e| error(e.to_string()))?;
    let input = InterleavedSlice::new(&samples, 1, n).map_err(|e| error(e.to_string()))?;
    let output = resampler
        .process_all(&input, n, None)
        .map_err(|e| error(e.to_string()))?;
    Ok(output.take_data())
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
    fn sixteen_khz_passes_through() {
        let x = sine(440.0, 16_000, 0.1);
        assert_eq!(resample_to_16k(x.clone(), 16_000).unwrap(), x);
    }
}
