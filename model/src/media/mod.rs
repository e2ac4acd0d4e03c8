//! Pipeline output → MP4 file, in-process: H.264 video + Opus audio, fast-start.
//!
//! ```text
//! frames (3, F, H, W) f32 [0,1] ─▶ BT.601 limited-range YUV 4:2:0 ─▶ OpenH264 (Constrained
//!   Baseline, IDR at each group and every `keyframe_interval_s`) ─▶ samples file on disk ─┐
//! original audio (any rate, mono) ─▶ rubato → 48 kHz ─▶ cut/pad to F / fps s ─▶ libopus 20 ms ┤
//!                                  mux (moov before mdat, streamed) ─▶ temp file ─▶ rename ◀┘
//! ```
//!
//! Nothing here holds a whole video: frames are encoded a group at a time into a sample file
//! ([`video`]), the audio is resampled and encoded in a stream ([`audio`]), and the MP4 is
//! written from the sample file with only the sample table in memory ([`mux`]).
//!
//! Licences: OpenH264 (BSD-2, compiled from its bundled source), libopus (BSD-3, bundled). No
//! ffmpeg binary and no non-free encoder (hence Opus, not fdk-aac). Opus in MP4 plays in current
//! Chrome, Firefox and Safari.
//!
//! The video has exactly the frames given, at `fps`; the audio covers the same duration (the
//! input is cut, or padded with silence) and its last 20 ms packet is completed with silence.

pub mod audio;
pub mod mux;
pub mod video;
pub mod yuv;

use std::path::{Path, PathBuf};

use candle_core::Tensor;

pub use audio::{OPUS_RATE, OpusTrack, OpusWriter, encode_opus_track};
pub use video::{H264Track, SampleEntry, TrackLength, VideoTrack, frames_to_yuv};
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

/// Writes `frames` (`(3, F, H, W)`, RGB in [0, 1], as [`crate::pipeline::Pipeline::generate`]
/// returns) and mono `audio` at `audio_rate` Hz to an MP4 at `path`.
///
/// The file is written next to `path` under a temporary name and renamed when complete, so a
/// reader never sees a partial file. `H` and `W` must be even. For videos produced a piece at a
/// time, use [`H264Track`] and [`finish_mp4`] directly (what this does, in one group).
pub fn write_mp4(
    path: &Path,
    frames: &Tensor,
    audio: &[f32],
    audio_rate: u32,
    opts: &Mp4Options,
) -> Result<Mp4Summary, MediaError> {
    let (f, h, w) = video::frame_dims(frames)?;
    if f == 0 {
        return Err(MediaError::NoFrames);
    }
    video::check_options(opts)?;
    if audio_rate == 0 {
        return Err(MediaError::AudioRate { rate: audio_rate });
    }
    let scratch = tmp_path(path).with_extension("parts");
    let io = |source| MediaError::Io {
        path: scratch.clone(),
        source,
    };
    std::fs::create_dir_all(&scratch).map_err(io)?;
    let result = (|| {
        // Audio first: it is cheap, and a failure here should not cost a video encode.
        let track_audio = audio::encode_opus_track(
            audio,
            audio_rate,
            opus_target(f, opts.fps),
            opts.audio_bitrate_bps,
            &scratch.join("audio.opus"),
        )?;
        let mut track = H264Track::open(
            VideoTrack::in_dir(&scratch, w, h, opts.fps),
            opts,
            TrackLength::default(),
        )?;
        track.encode_group(&frames_to_yuv(frames)?)?;
        finish_mp4(path, &track, &track_audio)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Audio samples at 48 kHz that `frames` frames at `fps` last.
pub fn opus_target(frames: usize, fps: u32) -> usize {
    (frames as u64 * u64::from(OPUS_RATE) / u64::from(fps.max(1))) as usize
}

/// Muxes `track`'s committed samples and `audio` into a fast-start MP4 at `path` (written under a
/// temporary name and renamed).
pub fn finish_mp4(
    path: &Path,
    track: &H264Track,
    audio: &OpusTrack,
) -> Result<Mp4Summary, MediaError> {
    let video = track.track();
    let entries = video.entries(track.len())?;
    if entries.is_empty() {
        return Err(MediaError::NoFrames);
    }
    let tmp = tmp_path(path);
    let written = mux::write_mp4_file(&tmp, video, &entries, &audio.mux_packets());
    let file_bytes = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(|source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // The file was fsynced before the rename; the rename itself is durable once its folder is.
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(folder)
            .and_then(|d| d.sync_all())
            .map_err(|source| MediaError::Io {
                path: folder.to_path_buf(),
                source,
            })?;
    }
    let frames = entries.len();
    Ok(Mp4Summary {
        path: path.to_path_buf(),
        frames,
        width: video.width,
        height: video.height,
        fps: video.fps,
        duration_s: frames as f64 / f64::from(video.fps),
        keyframes: entries.iter().filter(|e| e.keyframe).count(),
        video_bytes: track.len().bytes,
        audio_packets: audio.sizes.len(),
        audio_kept_s: audio.kept_samples as f64 / f64::from(OPUS_RATE),
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
