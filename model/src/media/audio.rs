//! The MP4's audio track: the original driving audio, resampled to 48 kHz, cut or padded to the
//! video's length and encoded as Opus (bundled libopus, BSD-3) in 20 ms packets.
//!
//! Opus in MP4 (`Opus`/`dOps` sample entry) always runs at 48 kHz. The encoder delays its output
//! by its lookahead (312 samples with `Application::Audio`); the MP4 writer puts that figure in
//! the `dOps` pre-skip, which decoders drop, so the decoded track starts in sync with the video. The
//! last packet is completed with silence, so the track ends at most one packet (20 ms) after the
//! video.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::MediaError;
use crate::audio_io::{ResampleFailure, StreamResampler};

/// Opus's only rate inside MP4.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per Opus packet at 48 kHz (20 ms, the usual packet length).
pub const PACKET_SAMPLES: usize = 960;
/// Largest Opus packet (RFC 6716 §3.2.1 allows up to 1275 bytes per frame).
const MAX_PACKET_BYTES: usize = 1500;

impl From<ResampleFailure> for MediaError {
    fn from(e: ResampleFailure) -> Self {
        MediaError::Resample {
            from_hz: e.from_hz,
            detail: e.detail,
        }
    }
}

/// Encoded Opus packets, each [`PACKET_SAMPLES`] long, in a file, plus the counts behind them.
#[derive(Debug, Clone)]
pub struct OpusTrack {
    /// The packets back to back.
    pub data: PathBuf,
    /// Each packet's length in bytes.
    pub sizes: Vec<u32>,
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
            sizes: &self.sizes,
            data: &self.data,
            packet_samples: PACKET_SAMPLES as u32,
            pre_skip: self.pre_skip,
            input_rate: self.input_rate,
        }
    }
}

/// 48 kHz samples → 20 ms Opus packets appended to a file, the input cut at `target` samples.
struct PacketWriter {
    encoder: opus::Encoder,
    file: BufWriter<File>,
    path: PathBuf,
    sizes: Vec<u32>,
    /// Less than one packet of samples waiting for the rest.
    pending: Vec<f32>,
    buf: Vec<u8>,
    /// 48 kHz samples of the input taken so far (at most `target`).
    fed: usize,
    target: usize,
}

impl PacketWriter {
    /// Takes the next 48 kHz samples of the input (anything past `target` is dropped).
    fn input(&mut self, chunk: &[f32]) -> Result<(), MediaError> {
        let take = chunk.len().min(self.target - self.fed);
        self.fed += take;
        self.encode(&chunk[..take])
    }

    fn encode(&mut self, chunk: &[f32]) -> Result<(), MediaError> {
        self.pending.extend_from_slice(chunk);
        let whole = self.pending.len() - self.pending.len() % PACKET_SAMPLES;
        for packet in self.pending[..whole].chunks_exact(PACKET_SAMPLES) {
            let len = self
                .encoder
                .encode_float(packet, &mut self.buf)
                .map_err(opus_error)?;
            let io = |source| MediaError::Io {
                path: self.path.clone(),
                source,
            };
            self.file.write_all(&self.buf[..len]).map_err(io)?;
            self.sizes.push(len as u32);
        }
        self.pending.drain(..whole);
        Ok(())
    }
}

fn opus_error(e: opus::Error) -> MediaError {
    MediaError::Opus {
        detail: e.to_string(),
    }
}

/// Mono audio at any rate → an Opus track at 48 kHz in a file, fed in pieces: resampled and
/// encoded as it comes, cut or padded with silence to `target` samples at 48 kHz. Memory: one
/// resampler block, one packet, and 4 bytes per packet for the sizes.
pub struct OpusWriter {
    resampler: Option<StreamResampler>,
    packets: PacketWriter,
    pre_skip: u16,
    input_rate: u32,
}

impl OpusWriter {
    /// Creates (or truncates) `path` for the packets of mono audio at `rate` Hz.
    pub fn create(
        path: &Path,
        rate: u32,
        target: usize,
        bitrate_bps: u32,
    ) -> Result<Self, MediaError> {
        if rate == 0 {
            return Err(MediaError::AudioRate { rate });
        }
        let mut encoder =
            opus::Encoder::new(OPUS_RATE, opus::Channels::Mono, opus::Application::Audio)
                .map_err(opus_error)?;
        let bitrate = i32::try_from(bitrate_bps).unwrap_or(i32::MAX);
        encoder
            .set_bitrate(opus::Bitrate::Bits(bitrate))
            .map_err(opus_error)?;
        let lookahead = encoder.get_lookahead().map_err(opus_error)?;
        let pre_skip = u16::try_from(lookahead).map_err(|_| MediaError::Opus {
            detail: format!("libopus reports a lookahead of {lookahead} samples"),
        })?;
        let file = File::create(path).map_err(|source| MediaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            resampler: StreamResampler::new(rate, OPUS_RATE)?,
            packets: PacketWriter {
                encoder,
                file: BufWriter::new(file),
                path: path.to_path_buf(),
                sizes: Vec::new(),
                pending: Vec::with_capacity(2 * PACKET_SAMPLES),
                buf: vec![0u8; MAX_PACKET_BYTES],
                fed: 0,
                target,
            },
            pre_skip,
            input_rate: rate,
        })
    }

    /// The next piece of the audio, at the rate given to [`Self::create`].
    pub fn push(&mut self, samples: &[f32]) -> Result<(), MediaError> {
        let packets = &mut self.packets;
        match &mut self.resampler {
            None => packets.input(samples),
            Some(resampler) => resampler.push(samples, &mut |chunk| packets.input(chunk)),
        }
    }

    /// Flushes the resampler, pads with silence (up to the target, then the lookahead's worth
    /// so the last real sample is emitted, then up to a whole packet) and syncs the file.
    pub fn finish(self) -> Result<OpusTrack, MediaError> {
        let mut packets = self.packets;
        if let Some(resampler) = self.resampler {
            resampler.finish(&mut |chunk| packets.input(chunk))?;
        }
        let kept_samples = packets.fed;
        let total =
            (packets.target + self.pre_skip as usize).div_ceil(PACKET_SAMPLES) * PACKET_SAMPLES;
        let silence = vec![0f32; PACKET_SAMPLES];
        let mut left = total - kept_samples;
        while left > 0 {
            let n = left.min(PACKET_SAMPLES);
            packets.encode(&silence[..n])?;
            left -= n;
        }
        debug_assert!(packets.pending.is_empty());
        let io = |source| MediaError::Io {
            path: packets.path.clone(),
            source,
        };
        let file = packets.file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(OpusTrack {
            data: packets.path,
            sizes: packets.sizes,
            kept_samples,
            pre_skip: self.pre_skip,
            input_rate: self.input_rate,
        })
    }
}

/// Mono `samples` at `rate` Hz → Opus at `bitrate_bps` in the file `path`, cut or padded with
/// silence to `target` samples at 48 kHz ([`OpusWriter`] in one piece).
pub fn encode_opus_track(
    samples: &[f32],
    rate: u32,
    target: usize,
    bitrate_bps: u32,
    path: &Path,
) -> Result<OpusTrack, MediaError> {
    let mut writer = OpusWriter::create(path, rate, target, bitrate_bps)?;
    writer.push(samples)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_count_covers_target_plus_pre_skip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.opus");
        // 2 s at 48 kHz + 312 pre-skip = 96 312 samples → 101 packets of 960.
        let track = encode_opus_track(&[0.1; 50_000], OPUS_RATE, 96_000, 64_000, &path).unwrap();
        assert_eq!(track.sizes.len(), 101);
        assert_eq!(track.kept_samples, 50_000);
        assert_eq!(track.pre_skip, 312);
        let bytes: u64 = track.sizes.iter().map(|&s| u64::from(s)).sum();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        // Longer input is cut at the target.
        let track = encode_opus_track(&[0.1; 16_000], 16_000, 24_000, 64_000, &path).unwrap();
        assert_eq!(track.kept_samples, 24_000);
        assert_eq!(track.sizes.len(), (24_000 + 312usize).div_ceil(960));
    }

    #[test]
    fn pieces_of_any_length_give_the_same_packets() {
        let dir = tempfile::tempdir().unwrap();
        let x: Vec<f32> = (0..40_000)
            .map(|i| (i as f32 * 0.031).sin() * 0.4)
            .collect();
        let whole = encode_opus_track(&x, 16_000, 100_000, 64_000, &dir.path().join("w")).unwrap();
        let mut writer =
            OpusWriter::create(&dir.path().join("p"), 16_000, 100_000, 64_000).unwrap();
        for piece in x.chunks(777) {
            writer.push(piece).unwrap();
        }
        let pieces = writer.finish().unwrap();
        assert_eq!(pieces.sizes, whole.sizes);
        assert_eq!(
            std::fs::read(&pieces.data).unwrap(),
            std::fs::read(&whole.data).unwrap()
        );
    }

    #[test]
    fn resample_16k_to_48k_triples_length() {
        let x: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        let mut resampler = StreamResampler::new(16_000, OPUS_RATE).unwrap().unwrap();
        let mut y = Vec::new();
        let mut collect = |c: &[f32]| -> Result<(), MediaError> {
            y.extend_from_slice(c);
            Ok(())
        };
        resampler.push(&x, &mut collect).unwrap();
        resampler.finish(&mut collect).unwrap();
        assert_eq!(y.len(), 48_000);
    }
}
