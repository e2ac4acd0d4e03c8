//! Pipeline output → MP4 file, in-process: H.264 video + Opus audio, fast-start.
//!
//! ```text
//! frames (3, F, H, W) f32 [0,1] ─▶ BT.601 limited-range YUV 4:2:0 ─▶ OpenH264 (Constrained
//!   Baseline, IDR every `keyframe_interval_s`) ─┐
//! original audio (any rate, mono) ─▶ rubato → 48 kHz ─▶ cut/pad to F / fps s ─▶ libopus 20 ms ┤
//!                                          muxide (moov before mdat) ─▶ temp file ─▶ rename ◀┘
//! ```
//!
//! Licences: OpenH264 (BSD-2, compiled from its bundled source), libopus (BSD-3, bundled),
//! muxide (MIT/Apache-2.0). No ffmpeg binary and no non-free encoder (hence Opus, not
//! fdk-aac). Opus in MP4 plays in current Chrome, Firefox and Safari.
//!
//! The video has exactly the frames given, at `fps`; the audio covers the same duration (the
//! input is cut, or padded with silence) and its last 20 ms packet is completed with silence.

pub mod audio;
pub mod yuv;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use muxide::api::{AudioCodec, MuxerBuilder, VideoCodec};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
    VuiConfig,
};
use openh264::formats::YUVSlices;

pub use audio::{OPUS_RATE, resample_to_48k};
pub use yuv::{Yuv420, rgb_planar_to_yuv420};

/// Why an MP4 could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("frames must be a (3, F, H, W) tensor of RGB in [0, 1], got shape {shape:?}")]
    FrameShape { shape: Vec<usize> },
    #[error("no frames to encode (F = 0)")]
    NoFrames,
    #[error(
        "H.264 4:2:0 needs even dimensions, got {width}×{height}; crop or pad the frames to \
         {even_w}×{even_h}",
        even_w = width - width % 2,
        even_h = height - height % 2
    )]
    OddDimensions { width: usize, height: usize },
    #[error("frames of {width}×{height} are larger than the MP4 limit of 65535×65535")]
    TooLarge { width: usize, height: usize },
    #[error("invalid option: {detail}")]
    Options { detail: String },
    #[error("audio sample rate must be positive, got {rate} Hz")]
    AudioRate { rate: u32 },
    #[error("resampling {from_hz} Hz → 48000 Hz for Opus: {detail}")]
    Resample { from_hz: u32, detail: String },
    #[error("H.264 encoder (OpenH264) at frame {frame}: {detail}")]
    H264 { frame: usize, detail: String },
    #[error("Opus encoder: {detail}")]
    Opus { detail: String },
    #[error("MP4 muxer: {detail}")]
    Mux { detail: String },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Encoding settings; the defaults suit Hallo2's 512×512, 25 fps output.
#[derive(Debug, Clone, PartialEq)]
pub struct Mp4Options {
    /// Frames per second (Hallo2 generates 25).
    pub fps: u32,
    /// Video bitrate in bits/s, a target for OpenH264's quality-mode rate control: frame
    /// skipping is off (every frame must be kept), so OpenH264 treats it as a guide, not a cap.
    /// OpenH264 encodes Constrained Baseline only (no CABAC or B-frames), so it needs more than
    /// x264 High: 4 Mb/s keeps a 512×512 talking head clean.
    pub video_bitrate_bps: u32,
    /// Seconds between IDR frames (seek points); 2 s = 50 frames at 25 fps.
    pub keyframe_interval_s: f64,
    /// OpenH264 worker threads; 0 lets it decide.
    pub encoder_threads: u16,
    /// Opus bitrate in bits/s (mono speech: 64 kb/s is transparent in practice).
    pub audio_bitrate_bps: u32,
}

impl Default for Mp4Options {
    fn default() -> Self {
        Self {
            fps: 25,
            video_bitrate_bps: 4_000_000,
            keyframe_interval_s: 2.0,
            encoder_threads: 0,
            audio_bitrate_bps: 64_000,
        }
    }
}

/// What [`write_mp4`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Mp4Summary {
    pub path: PathBuf,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// Video duration, `frames / fps` seconds.
    pub duration_s: f64,
    /// Key (IDR) frames written.
    pub keyframes: usize,
    /// Bytes of H.264 data.
    pub video_bytes: u64,
    /// Opus packets (20 ms each) written.
    pub audio_packets: usize,
    /// Seconds of the input audio kept (the rest of the track is silence).
    pub audio_kept_s: f64,
    /// Size of the MP4 file.
    pub file_bytes: u64,
}

fn mux_error(e: muxide::api::MuxerError) -> MediaError {
    MediaError::Mux {
        detail: e.to_string(),
    }
}

/// Writes `frames` (`(3, F, H, W)`, RGB in [0, 1], as [`crate::pipeline::Pipeline::generate`]
/// returns) and mono `audio` at `audio_rate` Hz to an MP4 at `path`.
///
/// The file is written next to `path` under a temporary name and renamed when complete, so a
/// reader never sees a partial file. `H` and `W` must be even.
pub fn write_mp4(
    path: &Path,
    frames: &Tensor,
    audio: &[f32],
    audio_rate: u32,
    opts: &Mp4Options,
) -> Result<Mp4Summary, MediaError> {
    let &[c, f, h, w] = frames.dims() else {
        return Err(MediaError::FrameShape {
            shape: frames.dims().to_vec(),
        });
    };
    if c != 3 {
        return Err(MediaError::FrameShape {
            shape: frames.dims().to_vec(),
        });
    }
    if f == 0 {
        return Err(MediaError::NoFrames);
    }
    if w % 2 != 0 || h % 2 != 0 {
        return Err(MediaError::OddDimensions {
            width: w,
            height: h,
        });
    }
    if w > usize::from(u16::MAX) || h > usize::from(u16::MAX) {
        return Err(MediaError::TooLarge {
            width: w,
            height: h,
        });
    }
    if opts.fps == 0 || !opts.keyframe_interval_s.is_finite() || opts.keyframe_interval_s <= 0.0 {
        return Err(MediaError::Options {
            detail: format!(
                "fps ({}) and keyframe_interval_s ({}) must be positive",
                opts.fps, opts.keyframe_interval_s
            ),
        });
    }
    if audio_rate == 0 {
        return Err(MediaError::AudioRate { rate: audio_rate });
    }

    // Audio first: it is cheap, and a failure here should not cost a video encode.
    let target = (f as u64 * u64::from(OPUS_RATE) / u64::from(opts.fps)) as usize;
    let samples_48k = resample_to_48k(audio, audio_rate)?;
    let track = audio::encode_opus(samples_48k, target, opts.audio_bitrate_bps)?;

    let gop = (opts.keyframe_interval_s * f64::from(opts.fps))
        .round()
        .max(1.0) as u32;
    let config = EncoderConfig::new()
        .max_frame_rate(FrameRate::from_hz(opts.fps as f32))
        .bitrate(BitRate::from_bps(opts.video_bitrate_bps))
        .rate_control_mode(RateControlMode::Quality)
        // Never drop frames: the video must have exactly the frames given.
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(gop))
        .num_threads(opts.encoder_threads)
        .vui(VuiConfig::bt601());
    let mut encoder =
        Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| {
            MediaError::H264 {
                frame: 0,
                detail: e.to_string(),
            }
        })?;

    let tmp = tmp_path(path);
    let io_err = |source| MediaError::Io {
        path: tmp.clone(),
        source,
    };
    let file = File::create(&tmp).map_err(io_err)?;
    let result = (|| {
        let mut muxer = MuxerBuilder::new(BufWriter::new(file))
            .video(VideoCodec::H264, w as u32, h as u32, f64::from(opts.fps))
            .audio(AudioCodec::Opus, OPUS_RATE, 1)
            .with_fast_start(true)
            .build()
            .map_err(mux_error)?;

        let frames = frames.to_dtype(DType::F32)?;
        let mut yuv = Yuv420 {
            width: w,
            height: h,
            y: Vec::new(),
            u: Vec::new(),
            v: Vec::new(),
        };
        let mut annexb = Vec::new();
        let (mut keyframes, mut video_bytes, mut next_packet) = (0usize, 0u64, 0usize);
        let packet_s = audio::PACKET_SAMPLES as f64 / f64::from(OPUS_RATE);
        for i in 0..f {
            let rgb = frames.narrow(1, i, 1)?.flatten_all()?.to_vec1::<f32>()?;
            rgb_planar_to_yuv420(&rgb, w, h, &mut yuv);
            let source = YUVSlices::new((&yuv.y, &yuv.u, &yuv.v), (w, h), (w, w / 2, w / 2));
            let h264_err = |e: openh264::Error| MediaError::H264 {
                frame: i,
                detail: e.to_string(),
            };
            let bitstream = encoder.encode(&source).map_err(h264_err)?;
            let is_key = matches!(bitstream.frame_type(), FrameType::IDR);
            annexb.clear();
            bitstream.write_vec(&mut annexb);
            if annexb.is_empty() {
                return Err(MediaError::H264 {
                    frame: i,
                    detail: format!("no output ({:?} frame)", bitstream.frame_type()),
                });
            }
            keyframes += usize::from(is_key);
            video_bytes += annexb.len() as u64;
            let pts = i as f64 / f64::from(opts.fps);
            muxer.write_video(pts, &annexb, is_key).map_err(mux_error)?;
            // Interleave: the audio packets that start before the next frame.
            let until = (i + 1) as f64 / f64::from(opts.fps);
            while next_packet < track.packets.len() && next_packet as f64 * packet_s < until {
                let packet = &track.packets[next_packet];
                muxer
                    .write_audio(next_packet as f64 * packet_s, packet)
                    .map_err(mux_error)?;
                next_packet += 1;
            }
        }
        for (j, packet) in track.packets.iter().enumerate().skip(next_packet) {
            muxer
                .write_audio(j as f64 * packet_s, packet)
                .map_err(mux_error)?;
        }
        muxer.finish().map_err(mux_error)?;
        Ok((keyframes, video_bytes))
    })();
    let (keyframes, video_bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(|source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file_bytes = std::fs::metadata(path)
        .map_err(|source| MediaError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok(Mp4Summary {
        path: path.to_path_buf(),
        frames: f,
        width: w,
        height: h,
        fps: opts.fps,
        duration_s: f as f64 / f64::from(opts.fps),
        keyframes,
        video_bytes,
        audio_packets: track.packets.len(),
        audio_kept_s: track.kept_samples as f64 / f64::from(OPUS_RATE),
        file_bytes,
    })
}

/// `dir/.name.tmp` next to `path`, so the rename stays on one filesystem.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out.mp4".to_string());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}
