//! The video track on disk: H.264 samples appended to a data file as they are encoded, with an
//! index of sizes and key flags beside it, so a video of any length never sits in memory and a
//! writer can be reopened at a committed length after a crash.
//!
//! Frames are encoded in groups ([`H264Track::encode_group`]): each group gets a fresh OpenH264
//! encoder and so starts with an IDR frame. The bytes therefore depend only on the frames of the
//! group, which is what lets a resumed job write exactly the bytes an uninterrupted one would.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
    VuiConfig,
};
use openh264::formats::YUVSlices;
use serde::{Deserialize, Serialize};

use super::yuv::{Yuv420, rgb_planar_to_yuv420};
use super::{MediaError, Mp4Options};

/// Bytes of one index entry: size (u32 LE) and flags (u32 LE, bit 0 = keyframe).
const INDEX_ENTRY: u64 = 8;

/// Where a video track lives and what its frames are.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoTrack {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// Length-prefixed (AVCC) H.264 samples, one after the other.
    pub data: PathBuf,
    /// [`SampleEntry`]s, 8 bytes each.
    pub index: PathBuf,
}

impl VideoTrack {
    /// `dir/video.h264` and `dir/video.idx`.
    pub fn in_dir(dir: &Path, width: usize, height: usize, fps: u32) -> Self {
        Self {
            width,
            height,
            fps,
            data: dir.join("video.h264"),
            index: dir.join("video.idx"),
        }
    }

    /// Every sample entry of the first `len.samples` (the index file is read in full).
    pub fn entries(&self, len: TrackLength) -> Result<Vec<SampleEntry>, MediaError> {
        let mut bytes = Vec::new();
        File::open(&self.index)
            .and_then(|f| f.take(len.samples * INDEX_ENTRY).read_to_end(&mut bytes))
            .map_err(|source| MediaError::Io {
                path: self.index.clone(),
                source,
            })?;
        if bytes.len() as u64 != len.samples * INDEX_ENTRY {
            return Err(MediaError::Mux {
                detail: format!(
                    "{} holds {} samples, {} expected",
                    self.index.display(),
                    bytes.len() as u64 / INDEX_ENTRY,
                    len.samples
                ),
            });
        }
        Ok(bytes
            .chunks_exact(INDEX_ENTRY as usize)
            .map(|e| SampleEntry {
                size: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                keyframe: e[4] & 1 == 1,
            })
            .collect())
    }
}

/// One encoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleEntry {
    pub size: u32,
    pub keyframe: bool,
}

/// How much of a track is durable: samples and data bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackLength {
    pub samples: u64,
    pub bytes: u64,
}

/// Appends encoded groups of frames to a [`VideoTrack`].
pub struct H264Track {
    track: VideoTrack,
    options: Mp4Options,
    data: BufWriter<File>,
    index: BufWriter<File>,
    len: TrackLength,
    keyframes: usize,
}

impl H264Track {
    /// Opens `track` keeping its first `at` (anything after it, from an interrupted group, is cut
    /// off); `TrackLength::default()` starts an empty track.
    pub fn open(
        track: VideoTrack,
        options: &Mp4Options,
        at: TrackLength,
    ) -> Result<Self, MediaError> {
        check_frame_size(track.width, track.height)?;
        check_options(options)?;
        let open = |path: &Path, keep: u64| -> Result<File, MediaError> {
            let io = |source| MediaError::Io {
                path: path.to_path_buf(),
                source,
            };
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
                .map_err(io)?;
            let have = f.metadata().map_err(io)?.len();
            if have < keep {
                return Err(MediaError::Mux {
                    detail: format!("{} has {have} bytes, {keep} were committed", path.display()),
                });
            }
            f.set_len(keep).map_err(io)?;
            f.seek(SeekFrom::Start(keep)).map_err(io)?;
            Ok(f)
        };
        let data = open(&track.data, at.bytes)?;
        let index = open(&track.index, at.samples * INDEX_ENTRY)?;
        let keyframes = if at.samples == 0 {
            0
        } else {
            track.entries(at)?.iter().filter(|e| e.keyframe).count()
        };
        Ok(Self {
            track,
            options: options.clone(),
            data: BufWriter::new(data),
            index: BufWriter::new(index),
            len: at,
            keyframes,
        })
    }

    pub fn track(&self) -> &VideoTrack {
        &self.track
    }

    pub fn len(&self) -> TrackLength {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len.samples == 0
    }

    /// Key (IDR) frames written so far.
    pub fn keyframes(&self) -> usize {
        self.keyframes
    }

    /// Encodes `frames` with a fresh encoder (the first is an IDR frame), appends them and makes
    /// them durable (fsync); returns the new committed length.
    pub fn encode_group(&mut self, frames: &[Yuv420]) -> Result<TrackLength, MediaError> {
        let opts = &self.options;
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
        let first = self.len.samples as usize;
        let h264_err = |frame: usize, detail: String| MediaError::H264 { frame, detail };
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| h264_err(first, e.to_string()))?;
        let (w, h) = (self.track.width, self.track.height);
        let mut annexb = Vec::new();
        let mut sample = Vec::new();
        for (i, yuv) in frames.iter().enumerate() {
            let frame = first + i;
            if (yuv.width, yuv.height) != (w, h) {
                return Err(MediaError::FrameShape {
                    shape: vec![3, 1, yuv.height, yuv.width],
                });
            }
            let source = YUVSlices::new((&yuv.y, &yuv.u, &yuv.v), (w, h), (w, w / 2, w / 2));
            let bitstream = encoder
                .encode(&source)
                .map_err(|e| h264_err(frame, e.to_string()))?;
            let keyframe = matches!(bitstream.frame_type(), FrameType::IDR);
            annexb.clear();
            bitstream.write_vec(&mut annexb);
            annexb_to_avcc(&annexb, &mut sample);
            if sample.is_empty() {
                return Err(h264_err(
                    frame,
                    format!("no output ({:?} frame)", bitstream.frame_type()),
                ));
            }
            let io = |source| MediaError::Io {
                path: self.track.data.clone(),
                source,
            };
            self.data.write_all(&sample).map_err(io)?;
            let mut entry = [0u8; INDEX_ENTRY as usize];
            entry[..4].copy_from_slice(&(sample.len() as u32).to_le_bytes());
            entry[4] = u8::from(keyframe);
            self.index.write_all(&entry).map_err(io)?;
            self.len.samples += 1;
            self.len.bytes += sample.len() as u64;
            self.keyframes += usize::from(keyframe);
        }
        self.sync()?;
        Ok(self.len)
    }

    fn sync(&mut self) -> Result<(), MediaError> {
        for (w, path) in [
            (&mut self.data, &self.track.data),
            (&mut self.index, &self.track.index),
        ] {
            w.flush()
                .and_then(|()| w.get_ref().sync_data())
                .map_err(|source| MediaError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Annex B (start codes) → 4-byte length-prefixed NAL units, into `out` (cleared first).
pub fn annexb_to_avcc(annexb: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= annexb.len() {
        if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(annexb.len(), |&n| n - 3);
        // A 4-byte start code's leading zero belongs to the next start code, not this NAL.
        while end > s && k + 1 < starts.len() && annexb[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            out.extend_from_slice(&((end - s) as u32).to_be_bytes());
            out.extend_from_slice(&annexb[s..end]);
        }
    }
}

/// `(F, H, W)` of `(3, F, H, W)` RGB frames an MP4 can hold (even sides within its limits).
pub fn frame_dims(frames: &Tensor) -> Result<(usize, usize, usize), MediaError> {
    let shape_error = || MediaError::FrameShape {
        shape: frames.dims().to_vec(),
    };
    let &[c, f, h, w] = frames.dims() else {
        return Err(shape_error());
    };
    if c != 3 {
        return Err(shape_error());
    }
    check_frame_size(w, h)?;
    Ok((f, h, w))
}

/// `(3, F, H, W)` RGB frames in [0, 1] → one I420 frame each.
pub fn frames_to_yuv(frames: &Tensor) -> Result<Vec<Yuv420>, MediaError> {
    let (f, h, w) = frame_dims(frames)?;
    let frames = frames.to_dtype(DType::F32)?;
    (0..f)
        .map(|i| {
            let rgb = frames.narrow(1, i, 1)?.flatten_all()?.to_vec1::<f32>()?;
            let mut yuv = Yuv420 {
                width: w,
                height: h,
                y: Vec::new(),
                u: Vec::new(),
                v: Vec::new(),
            };
            rgb_planar_to_yuv420(&rgb, w, h, &mut yuv);
            Ok(yuv)
        })
        .collect()
}

pub(crate) fn check_frame_size(w: usize, h: usize) -> Result<(), MediaError> {
    if !w.is_multiple_of(2) || !h.is_multiple_of(2) {
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
    Ok(())
}

pub(crate) fn check_options(opts: &Mp4Options) -> Result<(), MediaError> {
    if opts.fps == 0 || !opts.keyframe_interval_s.is_finite() || opts.keyframe_interval_s <= 0.0 {
        return Err(MediaError::Options {
            detail: format!(
                "fps ({}) and keyframe_interval_s ({}) must be positive",
                opts.fps, opts.keyframe_interval_s
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_codes_become_length_prefixes() {
        let annexb = [
            0, 0, 0, 1, 0x67, 9, 0, 0, 1, 0x68, 8, 0, 0, 0, 1, 0x65, 7, 7,
        ];
        let mut out = Vec::new();
        annexb_to_avcc(&annexb, &mut out);
        assert_eq!(
            out,
            vec![
                0, 0, 0, 2, 0x67, 9, 0, 0, 0, 2, 0x68, 8, 0, 0, 0, 3, 0x65, 7, 7
            ]
        );
    }
}
