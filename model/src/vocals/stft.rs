//! The short-time Fourier transform pair `audio-separator` 0.17.2 runs around the MDX network:
//! `torch.stft` / `torch.istft` with a periodic Hann window of `n_fft` samples, `center=True`
//! (reflect padding of `n_fft / 2`), one-sided, unnormalised.

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Forward and inverse transforms for one `n_fft` and hop.
pub struct Stft {
    n_fft: usize,
    hop: usize,
    /// `torch.hann_window(n_fft, periodic=True)`.
    window: Vec<f32>,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
}

impl Stft {
    pub fn new(n_fft: usize, hop: usize) -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let window = (0..n_fft)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * n as f64 / n_fft as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        Self {
            n_fft,
            hop,
            window,
            forward: planner.plan_fft_forward(n_fft),
            inverse: planner.plan_fft_inverse(n_fft),
        }
    }

    /// One-sided bins per frame, `n_fft / 2 + 1`.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames of a centred transform of `len` samples, `1 + len / hop`.
    pub fn frames(&self, len: usize) -> usize {
        1 + len / self.hop
    }

    /// The spectrogram of `signal`, frame-major: `frames × bins` (frame `t` is centred on sample
    /// `hop · t`). The signal must be longer than `n_fft / 2` (reflect padding).
    pub fn forward(&self, signal: &[f32]) -> Vec<Vec<Complex32>> {
        let half = self.n_fft / 2;
        let padded = reflect_pad(signal, half);
        let mut input = self.forward.make_input_vec();
        let mut scratch = self.forward.make_scratch_vec();
        (0..self.frames(signal.len()))
            .map(|t| {
                let frame = &padded[t * self.hop..t * self.hop + self.n_fft];
                for ((x, &s), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                    *x = s * w;
                }
                let mut spectrum = self.forward.make_output_vec();
                self.forward
                    .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                    .expect("buffer lengths come from the plan");
                spectrum
            })
            .collect()
    }

    /// `torch.istft(..., length=None)`: windowed overlap-add of the frames' inverse transforms,
    /// divided by the summed squared window, without the centring padding:
    /// `hop · (frames − 1)` samples. The imaginary parts of the DC and Nyquist bins are ignored.
    pub fn inverse(&self, spectrogram: &[Vec<Complex32>]) -> Vec<f32> {
        let half = self.n_fft / 2;
        let frames = spectrogram.len();
        let total = self.n_fft + self.hop * frames.saturating_sub(1);
        let mut ola = vec![0f32; total];
        let mut envelope = vec![0f32; total];
        let mut spectrum = self.inverse.make_input_vec();
        let mut output = self.inverse.make_output_vec();
        let mut scratch = self.inverse.make_scratch_vec();
        let scale = 1.0 / self.n_fft as f32;
        for (t, bins) in spectrogram.iter().enumerate() {
            spectrum.copy_from_slice(bins);
            spectrum[0].im = 0.0;
            spectrum[half].im = 0.0;
            self.inverse
                .process_with_scratch(&mut spectrum, &mut output, &mut scratch)
                .expect("buffer lengths come from the plan");
            let start = t * self.hop;
            for (n, (&x, &w)) in output.iter().zip(&self.window).enumerate() {
                ola[start + n] += x * scale * w;
                envelope[start + n] += w * w;
            }
        }
        let len = self.hop * frames.saturating_sub(1);
        (half..half + len)
            .map(|m| {
                if envelope[m] > 1e-11 {
                    ola[m] / envelope[m]
                } else {
                    ola[m]
                }
            })
            .collect()
    }
}

/// `torch`'s `reflect` padding: mirrored without repeating the edge sample.
fn reflect_pad(signal: &[f32], pad: usize) -> Vec<f32> {
    let n = signal.len();
    assert!(
        n > pad,
        "reflect padding of {pad} needs more than {pad} samples, got {n}"
    );
    let mut out = Vec::with_capacity(n + 2 * pad);
    out.extend((1..=pad).rev().map(|i| signal[i]));
    out.extend_from_slice(signal);
    out.extend((1..=pad).map(|i| signal[n - 1 - i]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_padding_mirrors_without_the_edge() {
        assert_eq!(
            reflect_pad(&[1.0, 2.0, 3.0, 4.0], 2),
            [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]
        );
    }

    #[test]
    fn inverse_undoes_forward_for_a_non_integer_overlap() {
        // n_fft / hop = 7.5 as in MDX: the envelope is not constant and the division fixes it.
        let stft = Stft::new(60, 8);
        let signal: Vec<f32> = (0..800)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (i as f32 * 0.01).sin())
            .collect();
        let spec = stft.forward(&signal);
        assert_eq!((spec.len(), spec[0].len()), (101, 31));
        let back = stft.inverse(&spec);
        assert_eq!(back.len(), 800);
        let worst = back
            .iter()
            .zip(&signal)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }
}
