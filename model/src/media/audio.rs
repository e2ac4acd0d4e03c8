//! The MP4's audio track: the original driving audio, resampled to 48 kHz, cut or padded to the
//! video's length and encoded as Opus (bundled libopus, BSD-3) in 20 ms packets.
//!
//! Opus in MP4 (`Opus`/`dOps` sample entry) always runs at 48 kHz. The encoder delays its output
//! by its lookahead (312 samples with `Application::Audio`); muxide writes that figure as the
//! `dOps` pre-skip, which decoders drop, so the decoded track starts in sync with the video. The
//! last packet is completed with silence, so the track ends at most one packet (20 ms) after the
//! video.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use super::MediaError;

/// Opus's only rate inside MP4.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per Opus packet at 48 kHz (20 ms, the usual packet length).
pub const PACKET_SAMPLES: usize = 960;
/// The pre-skip muxide writes into `dOps`; the encoder's lookahead must equal it.
const MUXIDE_PRE_SKIP: usize = 312;
/// Largest Opus packet (RFC 6716 §3.2.1 allows up to 1275 bytes per frame).
const MAX_PACKET_BYTES: usize = 1500;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Resamples mono `samples` at `rate` Hz to 48 kHz with rubato's FFT resampler (band-limited,
/// start-up delay trimmed by `process_all`); 48 kHz input is returned as is.
pub fn resample_to_48k(samples: &[f32], rate: u32) -> Result<Vec<f32>, MediaError> {
    if rate == OPUS_RATE || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let error = |detail: String| MediaError::Resample {
        from_hz: rate,
        detail,
    };
    let (rate_in, rate_out) = (rate as usize, OPUS_RATE as usize);
    // An even multiple of the smallest block keeps rubato's filter centre and its output trim
    // aligned (see `audio_io::resample`); about 1024 input samples per block.
    let min_block = rate_in / gcd(rate_in, rate_out);
    let block = 2 * min_block * 1024usize.div_ceil(2 * min_block);
    let mut resampler = Fft::<f32>::new_custom(
        rate_in,
        rate_out,
        block,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|e| error(e.to_string()))?;
    let n = samples.len();
    let input = InterleavedSlice::new(samples, 1, n).map_err(|e| error(e.to_string()))?;
    let output = resampler
        .process_all(&input, n, None)
        .map_err(|e| error(e.to_string()))?;
    Ok(output.take_data())
}

/// Encoded Opus packets, each [`PACKET_SAMPLES`] long, plus the counts behind them.
#[derive(Debug, Clone)]
pub struct OpusTrack {
    pub packets: Vec<Vec<u8>>,
    /// Samples (48 kHz) of the original audio kept, before any silence padding.
    pub kept_samples: usize,
}

/// Cuts or pads `samples_48k` to `target` samples and encodes them as mono Opus at
/// `bitrate_bps`.
pub fn encode_opus(
    mut samples_48k: Vec<f32>,
    target: usize,
    bitrate_bps: u32,
) -> Result<OpusTrack, MediaError> {
    let error = |e: opus::Error| MediaError::Opus {
        detail: e.to_string(),
    };
    let kept_samples = samples_48k.len().min(target);
    samples_48k.resize(target, 0.0);
    let mut encoder = opus::Encoder::new(OPUS_RATE, opus::Channels::Mono, opus::Application::Audio)
        .map_err(error)?;
    let bitrate = i32::try_from(bitrate_bps).unwrap_or(i32::MAX);
    encoder
        .set_bitrate(opus::Bitrate::Bits(bitrate))
        .map_err(error)?;
    let lookahead = encoder.get_lookahead().map_err(error)?;
    if lookahead != MUXIDE_PRE_SKIP as i32 {
        return Err(MediaError::Opus {
            detail: format!(
                "libopus lookahead is {lookahead} samples but the MP4 muxer writes a pre-skip of \
                 {MUXIDE_PRE_SKIP}; audio would be out of sync"
            ),
        });
    }
    // Feed the lookahead's worth of silence at the end so the last real sample is emitted, then
    // complete the last packet.
    let total = (target + MUXIDE_PRE_SKIP).div_ceil(PACKET_SAMPLES) * PACKET_SAMPLES;
    samples_48k.resize(total, 0.0);
    let mut packets = Vec::with_capacity(total / PACKET_SAMPLES);
    let mut buf = vec![0u8; MAX_PACKET_BYTES];
    for chunk in samples_48k.chunks_exact(PACKET_SAMPLES) {
        let len = encoder.encode_float(chunk, &mut buf).map_err(error)?;
        packets.push(buf[..len].to_vec());
    }
    Ok(OpusTrack {
        packets,
        kept_samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_count_covers_target_plus_pre_skip() {
        // 2 s at 48 kHz + 312 pre-skip = 96 312 samples → 101 packets of 960.
        let track = encode_opus(vec![0.1; 50_000], 96_000, 64_000).unwrap();
        assert_eq!(track.packets.len(), 101);
        assert_eq!(track.kept_samples, 50_000);
    }

    #[test]
    fn resample_16k_to_48k_triples_length() {
        let x: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        let y = resample_to_48k(&x, 16_000).unwrap();
        assert_eq!(y.len(), 48_000);
    }
}
