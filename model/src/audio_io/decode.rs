//! Decoding with symphonia 0.6 (`features = ["all"]`, pure Rust): probe the container, decode
//! the default audio track, average the channels, apply the limits, resample to 16 kHz.

use std::io::Cursor;
use std::path::Path;

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoderOptions, CODEC_ID_NULL_AUDIO};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use super::mp4::audio_edit_window;
use super::resample::resample_to_16k;
use super::{AudioError, AudioLimits, DecodedAudio, dbfs};

/// Highest sample rate accepted (DXD / 8× 48 kHz); beyond it the file is almost surely broken.
const MAX_SAMPLE_RATE: u32 = 384_000;
/// Packets that fail to decode are skipped (a damaged frame is a click, not a reason to refuse
/// a long file), unless there are more than this many of them or this share of all packets.
const MAX_BAD_PACKETS: usize = 8;
const MAX_BAD_PACKET_SHARE: f64 = 0.01;

/// Reads and decodes an audio file; the extension (if any) is a hint for the container probe.
pub fn decode_audio_file(path: &Path, limits: &AudioLimits) -> Result<DecodedAudio, AudioError> {
    let size = std::fs::metadata(path)
        .map_err(|e| AudioError::io(path, e))?
        .len();
    if size > limits.max_bytes {
        return Err(AudioError::TooLarge {
            bytes: size,
            limit: limits.max_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| AudioError::io(path, e))?;
    let extension = path.extension().and_then(|e| e.to_str());
    decode_audio_bytes(&bytes, extension, limits)
}

/// Decodes an audio file held in memory. `extension` (without the dot, e.g. `"mp3"`) is only a
/// hint: the container is recognised from its content.
pub fn decode_audio_bytes(
    bytes: &[u8],
    extension: Option<&str>,
    limits: &AudioLimits,
) -> Result<DecodedAudio, AudioError> {
    let mono = decode_native(bytes, extension, limits)?;
    if mono.samples.is_empty() {
        return Err(AudioError::Empty);
    }
    let duration_s = mono.samples.len() as f64 / f64::from(mono.rate);
    check_duration(duration_s, limits, false)?;
    // Float WAV can hold NaN or infinities, which would poison every feature.
    if let Some(i) = mono.samples.iter().position(|x| !x.is_finite()) {
        return Err(AudioError::Corrupt {
            codec: mono.codec,
            at_s: i as f64 / f64::from(mono.rate),
            detail: "a sample is NaN or infinite".to_string(),
        });
    }
    let peak = mono.samples.iter().fold(0f32, |m, x| m.max(x.abs()));
    let peak_dbfs = dbfs(peak);
    if peak_dbfs < limits.silence_threshold_dbfs {
        return Err(AudioError::Silent {
            peak_dbfs,
            threshold_dbfs: limits.silence_threshold_dbfs,
        });
    }
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
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(AudioError::TooLarge {
            bytes: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
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
    let mut samples: Vec<f32> = Vec::new();
    // Sized from the stated length plus a packet, so a long file is not grown by doubling (up to
    // twice its size, plus the copy). A hint only: never more than 20 minutes at the stated rate,
    // whatever a (possibly damaged) header claims.
    if let (Some(frames), Some(rate)) = (stated_frames, stated_rate) {
        let packet = params.max_frames_per_packet.unwrap_or(0).max(4096);
        let cap = 20 * 60 * u64::from(rate.min(MAX_SAMPLE_RATE));
        samples.reserve_exact((frames + packet).min(cap) as usize);
    }

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
                    at_s: seconds(samples.len(), rate),
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
                let at_s = seconds(samples.len(), rate);
                bad.push((at_s, e.to_string()));
                continue;
            }
            Err(SymphoniaError::IoError(e)) => {
                let at_s = seconds(samples.len(), rate);
                bad.push((at_s, e.to_string()));
                continue;
            }
            Err(e) => {
                return Err(AudioError::Corrupt {
                    codec: codec.clone(),
                    at_s: seconds(samples.len(), rate),
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
                max_frames = Some((limits.max_duration_s * f64::from(buffer_rate)).ceil() as u64);
            }
            Some(r) if r != buffer_rate => {
                return Err(AudioError::UnsupportedParameters {
                    detail: format!("the sample rate changes from {r} Hz to {buffer_rate} Hz"),
                });
            }
            Some(_) => {}
        }
        if buffer_channels == 0 {
            return Err(AudioError::UnsupportedParameters {
                detail: "a packet with 0 channels".to_string(),
            });
        }
        channels = channels.max(buffer_channels);
        buffer.copy_to_vec_interleaved(&mut interleaved);
        let inv = buffer_channels as f32;
        samples.extend(
            interleaved
                .chunks_exact(buffer_channels)
                .map(|frame| frame.iter().sum::<f32>() / inv),
        );
        if let Some(max) = max_frames
            && samples.len() as u64 > max
        {
            let r = f64::from(rate.unwrap_or(1));
            return Err(AudioError::TooLong {
                duration_s: samples.len() as f64 / r,
                limit_s: limits.max_duration_s,
                at_least: true,
            });
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
    let decoded_frames = samples.len() as u64;
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

    if container == "isomp4"
        && let Some(edit) = audio_edit_window(bytes, track.id, rate)
    {
        let skip = (edit.skip as usize).min(samples.len());
        samples.drain(..skip);
        if let Some(keep) = edit.keep {
            samples.truncate(keep as usize);
        }
        if edit.lead_silence > 0 {
            samples.splice(0..0, std::iter::repeat_n(0.0, edit.lead_silence as usize));
        }
    }
    Ok(NativeAudio {
        samples,
        rate,
        channels,
        codec,
    })
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
