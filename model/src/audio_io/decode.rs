//! Decoding with symphonia 0.6 (`features = ["all"]`, pure Rust): probe the container, decode
//! the default audio track, average the channels, apply the limits, resample to 16 kHz.
//!
//! [`decode_stream`] is the one decoder: it hands the mono samples to a [`MonoSink`] packet by
//! packet (after the edit list's trimming), from a file or from memory, so a long file is never
//! held whole. [`decode_native`] and [`decode_audio_bytes`] collect its output.

use std::io::{Cursor, Read, Seek};
use std::path::Path;

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{
    AudioCodecId, AudioCodecParameters, AudioDecoderOptions, CODEC_ID_NULL_AUDIO,
};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use super::mp4::{EditWindow, audio_edit_window, read_moov};
use super::resample::resample_to_16k;
use super::{AudioError, AudioLimits, DecodedAudio, dbfs};

/// Highest sample rate accepted (DXD / 8× 48 kHz); beyond it the file is almost surely broken.
const MAX_SAMPLE_RATE: u32 = 384_000;
/// Most channels accepted (symphonia takes up to 65 535 discrete ones; the decoder sizes its
/// buffers by the declared count).
const MAX_CHANNELS: usize = 32;
/// Most frames a packet may declare (decoders size their buffers by it; real codecs use at
/// most a few tens of thousands).
const MAX_FRAMES_PER_PACKET: u64 = 1 << 20;
/// Packets that fail to decode are skipped (a damaged frame is a click, not a reason to refuse
/// a long file), unless there are more than this many of them or this share of all packets.
const MAX_BAD_PACKETS: usize = 8;
const MAX_BAD_PACKET_SHARE: f64 = 0.01;
/// Silence is handed on in pieces of this many samples.
const SILENCE_PIECE: usize = 4096;

/// Where the encoded audio is.
#[derive(Debug, Clone, Copy)]
pub enum AudioInput<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// What [`decode_stream`] knows before the first sample.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStart {
    pub rate: u32,
    /// Short codec name (symphonia's).
    pub codec: String,
    /// The length the container states, in frames at `rate` (before trimming), when it does.
    pub stated_frames: Option<u64>,
}

/// Receives the mono samples of [`decode_stream`], in order.
pub trait MonoSink {
    /// Called once, before the first samples.
    fn start(&mut self, _start: &StreamStart) -> Result<(), AudioError> {
        Ok(())
    }
    fn samples(&mut self, samples: &[f32]) -> Result<(), AudioError>;
    /// Whether [`Self::stereo`] should be called too.
    fn wants_stereo(&self) -> bool {
        false
    }
    /// The same frames as the last [`Self::samples`] call as two channels (a mono source in
    /// both; more than two channels: their mean in both, as there is no stereo pair to keep).
    fn stereo(&mut self, _left: &[f32], _right: &[f32]) -> Result<(), AudioError> {
        Ok(())
    }
}

/// What a whole [`decode_stream`] run found.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSummary {
    pub rate: u32,
    pub channels: usize,
    /// Short codec name (symphonia's).
    pub codec: String,
    /// Mono samples handed to the sink (after trimming, with any leading silence).
    pub frames: u64,
}

/// Reads and decodes an audio file; the extension (if any) is a hint for the container probe.
pub fn decode_audio_file(path: &Path, limits: &AudioLimits) -> Result<DecodedAudio, AudioError> {
    let extension = path.extension().and_then(|e| e.to_str());
    let mono = collect_native(AudioInput::File(path), extension, limits)?;
    finish_decoded(mono, limits)
}

/// Decodes an audio file held in memory. `extension` (without the dot, e.g. `"mp3"`) is only a
/// hint: the container is recognised from its content.
pub fn decode_audio_bytes(
    bytes: &[u8],
    extension: Option<&str>,
    limits: &AudioLimits,
) -> Result<DecodedAudio, AudioError> {
    finish_decoded(decode_native(bytes, extension, limits)?, limits)
}

/// The checks after decoding (emptiness, length, finiteness, silence), then resampling.
fn finish_decoded(mono: NativeAudio, limits: &AudioLimits) -> Result<DecodedAudio, AudioError> {
    let duration_s = check_length(mono.samples.len() as u64, mono.rate, limits)?;
    check_finite(&mono.samples, 0, mono.rate, &mono.codec)?;
    let peak = mono.samples.iter().fold(0f32, |m, x| m.max(x.abs()));
    let peak_dbfs = check_peak(peak, limits)?;
    let samples_16k = resample_to_16k(mono.samples, mono.rate)?;
    Ok(DecodedAudio {
        samples_16k,
        source_rate: mono.rate,
        channels: mono.channels,
        duration_s,
        codec: mono.codec,
        peak_dbfs,
    })
}

/// Emptiness and length of a whole decoded audio of `frames` at `rate`: its duration.
pub(super) fn check_length(
    frames: u64,
    rate: u32,
    limits: &AudioLimits,
) -> Result<f64, AudioError> {
    if frames == 0 {
        return Err(AudioError::Empty);
    }
    let duration_s = frames as f64 / f64::from(rate);
    check_duration(duration_s, limits, false)?;
    Ok(duration_s)
}

/// Float WAV can hold NaN or infinities, which would poison every feature: the first one in
/// `samples` (whose first sample is frame `first` of the file) is the error.
pub(super) fn check_finite(
    samples: &[f32],
    first: u64,
    rate: u32,
    codec: &str,
) -> Result<(), AudioError> {
    match samples.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(AudioError::Corrupt {
            codec: codec.to_string(),
            at_s: (first + i as u64) as f64 / f64::from(rate.max(1)),
            detail: "a sample is NaN or infinite".to_string(),
        }),
        None => Ok(()),
    }
}

/// Silence: the level of `peak` in dBFS, or the refusal when it is below the threshold.
pub(super) fn check_peak(peak: f32, limits: &AudioLimits) -> Result<f64, AudioError> {
    let peak_dbfs = dbfs(peak);
    if peak_dbfs < limits.silence_threshold_dbfs {
        return Err(AudioError::Silent {
            peak_dbfs,
            threshold_dbfs: limits.silence_threshold_dbfs,
        });
    }
    Ok(peak_dbfs)
}

/// The default audio track decoded and averaged to one channel, at the file's own rate, before
/// the emptiness, silence and finiteness checks and before resampling.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeAudio {
    /// Mean of the channels, trimmed of encoder delay/padding.
    pub samples: Vec<f32>,
    pub rate: u32,
    pub channels: usize,
    /// Short codec name (symphonia's).
    pub codec: String,
}

fn check_duration(duration_s: f64, limits: &AudioLimits, at_least: bool) -> Result<(), AudioError> {
    if duration_s > limits.max_duration_s {
        return Err(AudioError::TooLong {
            duration_s,
            limit_s: limits.max_duration_s,
            at_least,
        });
    }
    Ok(())
}

/// The first half of [`decode_audio_bytes`]: probe, decode, downmix and trim, with the size,
/// duration, truncation and codec checks; no resampling.
pub fn decode_native(
    bytes: &[u8],
    extension: Option<&str>,
    limits: &AudioLimits,
) -> Result<NativeAudio, AudioError> {
    collect_native(AudioInput::Bytes(bytes), extension, limits)
}

/// Bytes after the leading ID3 tags searched for a WAV's `fmt ` chunk.
const WAV_SCAN_BYTES: usize = 64 << 10;

/// Where the data after the ID3v2 tags at the start of a file begins (symphonia's probe skips
/// them too). `read_at(offset, buf)` fills `buf` from `offset`, returning false past the end.
fn after_id3_tags(mut read_at: impl FnMut(u64, &mut [u8; 10]) -> bool) -> u64 {
    let mut at = 0u64;
    let mut header = [0u8; 10];
    while read_at(at, &mut header) && &header[..3] == b"ID3" {
        // A syncsafe size (7 bits a byte), plus a 10-byte footer when its flag is set.
        let size = header[6..10]
            .iter()
            .fold(0u64, |n, b| (n << 7) | u64::from(b & 0x7f));
        let footer = if header[5] & 0x10 != 0 { 10 } else { 0 };
        at = at.saturating_add(10 + size + footer);
    }
    at
}

fn read_at_bytes(bytes: &[u8], at: u64, buf: &mut [u8; 10]) -> bool {
    let Some(slice) = usize::try_from(at)
        .ok()
        .and_then(|at| bytes.get(at..at.checked_add(buf.len())?))
    else {
        return false;
    };
    buf.copy_from_slice(slice);
    true
}

fn read_at_file(file: &mut std::fs::File, at: u64, buf: &mut [u8; 10]) -> bool {
    file.seek(std::io::SeekFrom::Start(at)).is_ok() && file.read_exact(buf).is_ok()
}

/// Refuses a WAV whose `fmt ` chunk declares a channel count outside the accepted bounds before
/// symphonia parses it (its RIFF reader multiplies the count unchecked: a panic in a debug
/// build, a wrapped block size in a release one). `data` is what follows the leading ID3 tags;
/// the RIFF header is looked for in it, as the probe looks for its markers. Other files pass
/// unchanged.
fn check_wav_format(data: &[u8]) -> Result<(), AudioError> {
    let Some(riff) = data
        .windows(12)
        .position(|w| &w[..4] == b"RIFF" && &w[8..12] == b"WAVE")
    else {
        return Ok(());
    };
    let head = &data[riff..];
    let mut at = 12;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let len = u32::from_le_bytes([head[at + 4], head[at + 5], head[at + 6], head[at + 7]]);
        if id == b"fmt " {
            let Some(field) = head.get(at + 10..at + 12) else {
                return Ok(());
            };
            let channels = usize::from(u16::from_le_bytes([field[0], field[1]]));
            if !(1..=MAX_CHANNELS).contains(&channels) {
                return Err(AudioError::UnsupportedParameters {
                    detail: format!("{channels} channels (accepted: 1 to {MAX_CHANNELS})"),
                });
            }
            return Ok(());
        }
        // Chunks are padded to an even length.
        at = at
            .saturating_add(8)
            .saturating_add(len as usize + (len as usize & 1));
    }
    Ok(())
}

/// Refuses what a header declares past the accepted bounds, before a decoder sizes its buffers
/// by it.
fn check_declared(params: &AudioCodecParameters) -> Result<(), AudioError> {
    let refuse = |detail: String| Err(AudioError::UnsupportedParameters { detail });
    if let Some(rate) = params.sample_rate
        && (rate == 0 || rate > MAX_SAMPLE_RATE)
    {
        return refuse(format!(
            "sample rate {rate} Hz (accepted: 1 to {MAX_SAMPLE_RATE} Hz)"
        ));
    }
    if let Some(channels) = &params.channels
        && !(1..=MAX_CHANNELS).contains(&channels.count())
    {
        return refuse(format!(
            "{} channels (accepted: 1 to {MAX_CHANNELS})",
            channels.count()
        ));
    }
    if let Some(frames) = params.max_frames_per_packet
        && frames > MAX_FRAMES_PER_PACKET
    {
        return refuse(format!(
            "packets of {frames} frames (accepted: up to {MAX_FRAMES_PER_PACKET})"
        ));
    }
    Ok(())
}

/// [`decode_stream`] into one buffer.
fn collect_native(
    input: AudioInput<'_>,
    extension: Option<&str>,
    limits: &AudioLimits,
) -> Result<NativeAudio, AudioError> {
    struct Collect {
        samples: Vec<f32>,
        max_seconds: f64,
    }
    impl MonoSink for Collect {
        fn start(&mut self, start: &StreamStart) -> Result<(), AudioError> {
            // Sized from the stated length plus a packet, so a long file is not grown by
            // doubling. A hint only: never more than the duration limit at the stream's rate,
            // whatever a (possibly damaged or hostile) header claims, and a reservation that
            // fails just leaves the buffer to grow as it decodes.
            if let Some(frames) = start.stated_frames {
                let rate = f64::from(start.rate.min(MAX_SAMPLE_RATE));
                let cap = (self.max_seconds.min(20.0 * 60.0) * rate).ceil() as u64;
                let want = frames.saturating_add(4096).min(cap.saturating_add(4096));
                let _ = self.samples.try_reserve_exact(want as usize);
            }
            Ok(())
        }
        fn samples(&mut self, samples: &[f32]) -> Result<(), AudioError> {
            self.samples.extend_from_slice(samples);
            Ok(())
        }
    }
    let mut collect = Collect {
        samples: Vec::new(),
        max_seconds: limits.max_duration_s,
    };
    let summary = decode_stream(input, extension, limits, &mut collect)?;
    Ok(NativeAudio {
        samples: collect.samples,
        rate: summary.rate,
        channels: summary.channels,
        codec: summary.codec,
    })
}

/// Decodes the default audio track of `input` and hands its mono mixdown to `sink`, trimmed by
/// the MP4 edit list where there is one, with the size, duration, truncation and codec checks.
/// Decoding stops as soon as the output passes `limits.max_duration_s`.
pub fn decode_stream(
    input: AudioInput<'_>,
    extension: Option<&str>,
    limits: &AudioLimits,
    sink: &mut dyn MonoSink,
) -> Result<StreamSummary, AudioError> {
    // The demuxers and codecs are third-party parsers of untrusted bytes: a panic in one (a
    // header field they multiply without checking, say) refuses this file, not the process.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_stream_unguarded(input, extension, limits, sink)
    }))
    .unwrap_or_else(|_| {
        Err(AudioError::UnrecognisedFormat {
            detail: "the decoder could not handle this file's headers or data".into(),
        })
    })
}

fn decode_stream_unguarded(
    input: AudioInput<'_>,
    extension: Option<&str>,
    limits: &AudioLimits,
    sink: &mut dyn MonoSink,
) -> Result<StreamSummary, AudioError> {
    let (source, size): (Box<dyn MediaSource + '_>, u64) = match input {
        AudioInput::Bytes(bytes) => {
            let start = after_id3_tags(|at, buf| read_at_bytes(bytes, at, buf));
            let start = usize::try_from(start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(WAV_SCAN_BYTES).min(bytes.len());
            check_wav_format(&bytes[start..end])?;
            (Box::new(Cursor::new(bytes)), bytes.len() as u64)
        }
        AudioInput::File(path) => {
            let mut file = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
            let size = file.metadata().map_err(|e| AudioError::io(path, e))?.len();
            let start = after_id3_tags(|at, buf| read_at_file(&mut file, at, buf));
            let mut head = Vec::with_capacity(WAV_SCAN_BYTES);
            file.seek(std::io::SeekFrom::Start(start))
                .and_then(|_| {
                    (&mut file)
                        .take(WAV_SCAN_BYTES as u64)
                        .read_to_end(&mut head)
                })
                .and_then(|_| file.seek(std::io::SeekFrom::Start(0)))
                .map_err(|e| AudioError::io(path, e))?;
            check_wav_format(&head)?;
            (Box::new(file), size)
        }
    };
    if size == 0 {
        return Err(AudioError::Empty);
    }
    if size > limits.max_bytes {
        return Err(AudioError::TooLarge {
            bytes: size,
            limit: limits.max_bytes,
        });
    }
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                AudioError::UnrecognisedFormat {
                    detail: format!("the data ended while reading the header ({e})"),
                }
            }
            // An MP4 written without fast-start keeps its index (moov) at the end: a file cut
            // short loses it first.
            SymphoniaError::Unsupported(msg) if msg.contains("missing moov") => {
                AudioError::Truncated {
                    decoded_s: 0.0,
                    expected_s: None,
                }
            }
            e => AudioError::UnrecognisedFormat {
                detail: e.to_string(),
            },
        })?;
    let container = format.format_info().short_name.to_string();
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::NoAudioTrack {
            container: container.clone(),
        })?
        .clone();
    let Some(CodecParameters::Audio(params)) = track.codec_params.as_ref() else {
        return Err(AudioError::NoAudioTrack { container });
    };
    let registered = symphonia::default::get_codecs().get_audio_decoder(params.codec);
    let codec = match registered {
        Some(r) => r.codec.info.short_name.to_string(),
        None => {
            return Err(AudioError::UnsupportedCodec {
                codec: unsupported_codec_name(params.codec),
            });
        }
    };
    check_declared(params)?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::UnsupportedParameters {
            detail: format!("{codec}: {e}"),
        })?;

    // The length the container states, in frames at the track's rate, when it states one.
    let stated_rate = params.sample_rate;
    let stated_frames = track.num_frames.or_else(|| {
        let (duration, time_base, rate) = (track.duration?, track.time_base?, stated_rate?);
        let seconds = duration.get() as f64 * f64::from(time_base.numer.get())
            / f64::from(time_base.denom.get());
        Some((seconds * f64::from(rate)).round() as u64)
    });
    if let (Some(frames), Some(rate)) = (stated_frames, stated_rate.filter(|&r| r > 0)) {
        check_duration(frames as f64 / f64::from(rate), limits, false)?;
    }
    // Decoded frames (before trimming) and frames handed on (after).
    let mut decoded = 0usize;
    let mut emitted = 0u64;
    // Where the edit list stands (none until an MP4's is read).
    let mut trim = EditWindow::default();
    let mut mono: Vec<f32> = Vec::new();

    // Position in seconds for error messages (before the first decoded packet the stated rate
    // is all there is).
    let seconds = |frames: usize, rate: Option<u32>| {
        frames as f64 / f64::from(rate.or(stated_rate).filter(|&r| r > 0).unwrap_or(1))
    };
    let mut interleaved: Vec<f32> = Vec::new();
    let mut rate: Option<u32> = None;
    let mut channels = 0usize;
    let mut packets = 0usize;
    let mut bad: Vec<(f64, String)> = Vec::new();
    let mut max_frames: Option<u64> = None;
    let mut ended_early = false;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(SymphoniaError::ResetRequired) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ended_early = true;
                break;
            }
            Err(e) => {
                return Err(AudioError::Corrupt {
                    codec: codec.clone(),
                    at_s: seconds(decoded, rate),
                    detail: e.to_string(),
                });
            }
        };
        if packet.track_id != track.id {
            continue;
        }
        packets += 1;
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            Err(SymphoniaError::DecodeError(e)) => {
                let at_s = seconds(decoded, rate);
                bad.push((at_s, e.to_string()));
                continue;
            }
            Err(SymphoniaError::IoError(e)) => {
                let at_s = seconds(decoded, rate);
                bad.push((at_s, e.to_string()));
                continue;
            }
            Err(e) => {
                return Err(AudioError::Corrupt {
                    codec: codec.clone(),
                    at_s: seconds(decoded, rate),
                    detail: e.to_string(),
                });
            }
        };
        let spec = buffer.spec();
        let buffer_rate = spec.rate();
        let buffer_channels = spec.channels().count();
        match rate {
            None => {
                if buffer_rate == 0 || buffer_rate > MAX_SAMPLE_RATE {
                    return Err(AudioError::UnsupportedParameters {
                        detail: format!(
                            "sample rate {buffer_rate} Hz (accepted: 1 to {MAX_SAMPLE_RATE} Hz)"
                        ),
                    });
                }
                rate = Some(buffer_rate);
                let max = (limits.max_duration_s * f64::from(buffer_rate)).ceil() as u64;
                max_frames = Some(max);
                sink.start(&StreamStart {
                    rate: buffer_rate,
                    codec: codec.clone(),
                    stated_frames,
                })?;
                if container == "isomp4" {
                    trim = edit_window(input, track.id, buffer_rate).unwrap_or_default();
                }
                // Leading silence counts towards the limit before any of it is made.
                if trim.lead_silence > max {
                    return Err(AudioError::TooLong {
                        duration_s: trim.lead_silence as f64 / f64::from(buffer_rate),
                        limit_s: limits.max_duration_s,
                        at_least: true,
                    });
                }
                let silence = [0f32; SILENCE_PIECE];
                while trim.lead_silence > 0 {
                    let n = trim.lead_silence.min(SILENCE_PIECE as u64) as usize;
                    sink.samples(&silence[..n])?;
                    if sink.wants_stereo() {
                        sink.stereo(&silence[..n], &silence[..n])?;
                    }
                    trim.lead_silence -= n as u64;
                    emitted += n as u64;
                }
            }
            Some(r) if r != buffer_rate => {
                return Err(AudioError::UnsupportedParameters {
                    detail: format!("the sample rate changes from {r} Hz to {buffer_rate} Hz"),
                });
            }
            Some(_) => {}
        }
        if buffer_channels > MAX_CHANNELS {
            return Err(AudioError::UnsupportedParameters {
                detail: format!("{buffer_channels} channels (accepted: 1 to {MAX_CHANNELS})"),
            });
        }
        if buffer_channels == 0 {
            return Err(AudioError::UnsupportedParameters {
                detail: "a packet with 0 channels".to_string(),
            });
        }
        channels = channels.max(buffer_channels);
        buffer.copy_to_vec_interleaved(&mut interleaved);
        let inv = buffer_channels as f32;
        mono.clear();
        mono.extend(
            interleaved
                .chunks_exact(buffer_channels)
                .map(|frame| frame.iter().sum::<f32>() / inv),
        );
        decoded += mono.len();
        let range = trim.apply_range(mono.len());
        let kept = &mono[range.clone()];
        emitted += kept.len() as u64;
        if let Some(max) = max_frames
            && (decoded as u64 > max || emitted > max)
        {
            let r = f64::from(rate.unwrap_or(1));
            return Err(AudioError::TooLong {
                duration_s: decoded.max(emitted as usize) as f64 / r,
                limit_s: limits.max_duration_s,
                at_least: true,
            });
        }
        sink.samples(kept)?;
        if sink.wants_stereo() {
            if buffer_channels == 2 {
                let channel = |c: usize| -> Vec<f32> {
                    interleaved[2 * range.start + c..2 * range.end]
                        .iter()
                        .step_by(2)
                        .copied()
                        .collect()
                };
                sink.stereo(&channel(0), &channel(1))?;
            } else {
                sink.stereo(kept, kept)?;
            }
        }
    }

    let Some(rate) = rate else {
        // Nothing decoded: either every packet was bad, or there were none.
        return match bad.first() {
            Some((at_s, detail)) => Err(AudioError::Corrupt {
                codec,
                at_s: *at_s,
                detail: format!("{detail} (no packet of {packets} decoded)"),
            }),
            None if ended_early => Err(AudioError::Truncated {
                decoded_s: 0.0,
                expected_s: stated_frames
                    .zip(stated_rate.filter(|&r| r > 0))
                    .map(|(f, r)| f as f64 / f64::from(r)),
            }),
            None => Err(AudioError::Empty),
        };
    };
    if bad.len() > MAX_BAD_PACKETS || bad.len() as f64 > MAX_BAD_PACKET_SHARE * packets as f64 {
        let (at_s, detail) = &bad[0];
        return Err(AudioError::Corrupt {
            codec,
            at_s: *at_s,
            detail: format!("{detail} ({} of {packets} packets failed)", bad.len()),
        });
    }
    let decoded_frames = decoded as u64;
    // A container that states its length and ends early, or more than one packet short, was
    // cut off. Without a stated length, running into the end of the data mid-packet means the
    // same, except for WAV/AIFF headers written by streaming tools (size 0xFFFFFFFF), whose
    // data legitimately runs to the end of the file.
    let decoded_s = decoded_frames as f64 / f64::from(rate);
    if let Some(expected) = stated_frames {
        let slack = params.max_frames_per_packet.unwrap_or(0).max(4096);
        if ended_early || decoded_frames + slack < expected {
            return Err(AudioError::Truncated {
                decoded_s,
                expected_s: Some(expected as f64 / f64::from(rate)),
            });
        }
    } else if ended_early && !matches!(container.as_str(), "wave" | "aiff") {
        return Err(AudioError::Truncated {
            decoded_s,
            expected_s: None,
        });
    }
    Ok(StreamSummary {
        rate,
        channels,
        codec,
        frames: emitted,
    })
}

/// The edit window of `track_id` in an MP4 `input`: from the bytes, or from the file's `moov`
/// box (found by walking the top-level boxes, read alone).
fn edit_window(input: AudioInput<'_>, track_id: u32, rate: u32) -> Option<EditWindow> {
    match input {
        AudioInput::Bytes(bytes) => audio_edit_window(bytes, track_id, rate),
        AudioInput::File(path) => {
            let moov = read_moov(path).ok()??;
            audio_edit_window(&moov, track_id, rate)
        }
    }
}

/// A readable name for a codec symphonia cannot decode (its registry only names the ones it can).
fn unsupported_codec_name(id: AudioCodecId) -> String {
    let name = match id {
        CODEC_ID_OPUS => "opus",
        CODEC_ID_SPEEX => "speex",
        CODEC_ID_MUSEPACK => "musepack",
        CODEC_ID_AC3 => "ac3",
        CODEC_ID_EAC3 => "eac3",
        CODEC_ID_AC4 => "ac4",
        CODEC_ID_DCA => "dts",
        CODEC_ID_ATRAC1 | CODEC_ID_ATRAC3 | CODEC_ID_ATRAC3PLUS | CODEC_ID_ATRAC9 => "atrac",
        CODEC_ID_WMA => "wma",
        CODEC_ID_RA10 | CODEC_ID_RA20 | CODEC_ID_SIPR | CODEC_ID_COOK => "realaudio",
        CODEC_ID_SBC => "sbc",
        CODEC_ID_APTX | CODEC_ID_APTX_HD => "aptx",
        CODEC_ID_LDAC => "ldac",
        CODEC_ID_WAVPACK => "wavpack",
        CODEC_ID_MONKEYS_AUDIO => "ape",
        CODEC_ID_TTA => "tta",
        CODEC_ID_NULL_AUDIO => "none (the container names no codec)",
        other => return format!("unknown (symphonia codec id {other})"),
    };
    name.to_string()
}
