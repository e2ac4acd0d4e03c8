//! The MP4's audio track: the original driving audio, resampled to 48 kHz, cut or padded to the
//! video's length and encoded as Opus (bundled libopus, BSD-3) in 20 ms packets.
//!
//! Opus in MP4 (`Opus`/`dOps` sample entry) always runs at 48 kHz. The encoder delays its output
//! by its lookahead (312 samples with `Application::Audio`); the MP4 writer puts that figure in
//! the `dOps` pre-skip, which decoders drop, so the decoded track starts in sync with the video. The
//! last packet is completed with silence, so the track ends at most one packet (20 ms) after the
//! video.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use super::MediaError;

/// Opus's only rate inside MP4.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per Opus packet at 48 kHz (20 ms, the usual packet length).
pub const PACKET_SAMPLES: usize = 960;
/// Largest Opus packet (RFC 6716 §3.2.1 allows up to 1275 bytes per frame).
const MAX_PACKET_BYTES: usize = 1500;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The FFT resampler `rate` → 48 kHz (band-limited): an even multiple of the smallest block
/// keeps rubato's filter centre and its output trim aligned (see `audio_io::resample`), about
/// 1024 input samples per block.
fn resampler_to_48k(rate: u32) -> Result<Fft<f32>, MediaError> {
    let (rate_in, rate_out) = (rate as usize, OPUS_RATE as usize);
    let min_block = rate_in / gcd(rate_in, rate_out);
    let block = 2 * min_block * 1024usize.div_ceil(2 * min_block);
    Fft::<f32>::new_custom(
        rate_in,
        rate_out,
        block,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|e| MediaError::Resample {
        from_hz: rate,
        detail: e.to_string(),
    })
}

/// Resamples mono `samples` at `rate` Hz to 48 kHz block by block, handing the output to `sink`
/// in order with the resampler's start-up delay trimmed; stops after `ceil(n · 48000 / rate)`
/// samples. Memory stays at one block whatever the length; 48 kHz input is passed through.
pub fn resample_to_48k_into(
    samples: &[f32],
    rate: u32,
    sink: &mut dyn FnMut(&[f32]) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    if rate == 0 {
        return Err(MediaError::AudioRate { rate });
    }
    if rate == OPUS_RATE || samples.is_empty() {
        return sink(samples);
    }
    let error = |detail: String| MediaError::Resample {
        from_hz: rate,
        detail,
    };
    let mut resampler = resampler_to_48k(rate)?;
    let wanted = (samples.len() as u64 * u64::from(OPUS_RATE)).div_ceil(u64::from(rate)) as usize;
    let mut to_trim = resampler.output_delay();
    let mut out = vec![0f32; resampler.output_frames_max()];
    let mut block = vec![0f32; resampler.input_frames_max()];
    let (mut consumed, mut produced) = (0usize, 0usize);
    while produced < wanted {
        let need = resampler.input_frames_next();
        let take = need.min(samples.len().saturating_sub(consumed));
        block[..take].copy_from_slice(&samples[consumed..consumed + take]);
        block[take..need].fill(0.0);
        consumed += take;
        let input =
            InterleavedSlice::new(&block[..need], 1, need).map_err(|e| error(e.to_string()))?;
        let frames = resampler.output_frames_next();
        let mut output = InterleavedSlice::new_mut(&mut out[..frames], 1, frames)
            .map_err(|e| error(e.to_string()))?;
        let (_, n) = resampler
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| error(e.to_string()))?;
        let trim = to_trim.min(n);
        to_trim -= trim;
        let keep = (n - trim).min(wanted - produced);
        sink(&out[trim..trim + keep])?;
        produced += keep;
    }
    Ok(())
}

/// All of [`resample_to_48k_into`]'s output in one buffer (short clips and tests).
pub fn resample_to_48k(samples: &[f32], rate: u32) -> Result<Vec<f32>, MediaError> {
    let mut all = Vec::new();
    resample_to_48k_into(samples, rate, &mut |chunk| {
        all.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(all)
}

/// Encoded Opus packets, each [`PACKET_SAMPLES`] long, plus the counts behind them.
#[derive(Debug, Clone)]
pub struct OpusTrack {
    pub packets: Vec<Vec<u8>>,
    /// Samples (48 kHz) of the original audio kept, before any silence padding.
    pub kept_samples: usize,
    /// The encoder's delay at the start, written as the `dOps` pre-skip.
    pub pre_skip: u16,
    /// The rate of the audio before resampling.
    pub input_rate: u32,
}

impl OpusTrack {
    /// The packets as the MP4 writer takes them.
    pub fn mux_packets(&self) -> super::mux::OpusPackets<'_> {
        super::mux::OpusPackets {
            packets: &self.packets,
            packet_samples: PACKET_SAMPLES as u32,
            pre_skip: self.pre_skip,
            input_rate: self.input_rate,
        }
    }
}

/// Mono `samples` at `rate` Hz → Opus at `bitrate_bps`, cut or padded with silence to
/// `target` samples at 48 kHz; resampled and encoded in a stream (memory: the packets).
pub fn encode_opus_track(
    samples: &[f32],
    rate: u32,
    target: usize,
    bitrate_bps: u32,
) -> Result<OpusTrack, MediaError> {
    let error = |e: opus::Error| MediaError::Opus {
        detail: e.to_string(),
    };
    let mut encoder = opus::Encoder::new(OPUS_RATE, opus::Channels::Mono, opus::Application::Audio)
        .map_err(error)?;
    let bitrate = i32::try_from(bitrate_bps).unwrap_or(i32::MAX);
    encoder
        .set_bitrate(opus::Bitrate::Bits(bitrate))
        .map_err(error)?;
    let lookahead = encoder.get_lookahead().map_err(error)?;
    let pre_skip = u16::try_from(lookahead).map_err(|_| MediaError::Opus {
        detail: format!("libopus reports a lookahead of {lookahead} samples"),
    })?;
    let mut packets = Vec::new();
    let mut pending: Vec<f32> = Vec::with_capacity(2 * PACKET_SAMPLES);
    let mut buf = vec![0u8; MAX_PACKET_BYTES];
    let mut fed = 0usize;
    let mut encode = |chunk: &[f32], pending: &mut Vec<f32>| -> Result<(), MediaError> {
        pending.extend_from_slice(chunk);
        let whole = pending.len() - pending.len() % PACKET_SAMPLES;
        for packet in pending[..whole].chunks_exact(PACKET_SAMPLES) {
            let len = encoder.encode_float(packet, &mut buf).map_err(error)?;
            packets.push(buf[..len].to_vec());
        }
        pending.drain(..whole);
        Ok(())
    };
    resample_to_48k_into(samples, rate, &mut |chunk| {
        let take = chunk.len().min(target - fed.min(target));
        fed += take;
        encode(&chunk[..take], &mut pending)
    })?;
    let kept_samples = fed;
    // Silence up to the target, then the lookahead's worth so the last real sample is emitted,
    // then up to a whole packet.
    let total = (target + pre_skip as usize).div_ceil(PACKET_SAMPLES) * PACKET_SAMPLES;
    let silence = vec![0f32; PACKET_SAMPLES];
    let mut left = total - kept_samples;
    while left > 0 {
        let n = left.min(PACKET_SAMPLES);
        encode(&silence[..n], &mut pending)?;
        left -= n;
    }
    debug_assert!(pending.is_empty());
    Ok(OpusTrack {
        packets,
        kept_samples,
        pre_skip,
        input_rate: rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_count_covers_target_plus_pre_skip() {
        // 2 s at 48 kHz + 312 pre-skip = 96 312 samples → 101 packets of 960.
        let track = encode_opus_track(&[0.1; 50_000], OPUS_RATE, 96_000, 64_000).unwrap();
        assert_eq!(track.packets.len(), 101);
        assert_eq!(track.kept_samples, 50_000);
        assert_eq!(track.pre_skip, 312);
        // Longer input is cut at the target.
        let track = encode_opus_track(&[0.1; 16_000], 16_000, 24_000, 64_000).unwrap();
        assert_eq!(track.kept_samples, 24_000);
        assert_eq!(track.packets.len(), (24_000 + 312usize).div_ceil(960));
    }

    #[test]
    fn streamed_resampling_equals_the_whole_clip_at_once() {
        let x: Vec<f32> = (0..40_000)
            .map(|i| (i as f32 * 0.031).sin() * 0.4)
            .collect();
        let streamed = resample_to_48k(&x, 16_000).unwrap();
        let mut resampler = resampler_to_48k(16_000).unwrap();
        let input = InterleavedSlice::new(&x[..], 1, x.len()).unwrap();
        let whole = resampler
            .process_all(&input, x.len(), None)
            .unwrap()
            .take_data();
        assert_eq!(streamed.len(), whole.len());
        let diff = streamed
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn resample_16k_to_48k_triples_length() {
        let x: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        let y = resample_to_48k(&x, 16_000).unwrap();
        assert_eq!(y.len(), 48_000);
    }
}
