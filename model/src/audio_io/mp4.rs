//! The MP4/M4A edit list (`moov/trak/edts/elst`, ISO/IEC 14496-12 §8.6.6), which symphonia 0.6
//! parses but does not apply: AAC encoders put 1024 (or 2112) frames of priming before the audio
//! and record it as the first edit's `media_time`; the edit's `segment_duration` gives the length
//! without the trailing padding.
//!
//! Only what audio files use is supported: optional leading empty edits (a delay, returned as
//! silence to prepend) followed by one normal edit at rate 1. Other lists are ignored (the
//! track is then played from its first sample, as symphonia does).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What the edit list of one audio track asks for, in frames of the track's sample rate. The
/// default asks for nothing (the whole media, no silence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EditWindow {
    /// Silence to insert before the media (leading empty edits).
    pub lead_silence: u64,
    /// Decoded frames to drop at the start (encoder priming).
    pub skip: u64,
    /// Frames to keep after the skip; `None` keeps everything (a zero-length segment, as in
    /// fragmented files).
    pub keep: Option<u64>,
}

impl EditWindow {
    /// The part of `samples` (the next decoded ones) the window keeps, counting the skip and the
    /// keep down as it goes (the leading silence is the caller's to hand out first).
    pub fn apply<'a>(&mut self, samples: &'a [f32]) -> &'a [f32] {
        &samples[self.apply_range(samples.len())]
    }

    /// [`Self::apply`] for `len` frames, as the range it keeps (to cut other arrays of the same
    /// frames alike).
    pub fn apply_range(&mut self, len: usize) -> std::ops::Range<usize> {
        let skip = self.skip.min(len as u64) as usize;
        self.skip -= skip as u64;
        let mut end = len;
        if let Some(keep) = self.keep.as_mut() {
            let n = (*keep).min((len - skip) as u64) as usize;
            *keep -= n as u64;
            end = skip + n;
        }
        skip..end
    }
}

/// Iterates the boxes of `data`: (four-character type, payload). Stops at the first malformed
/// header rather than failing: a broken box only means there is no edit list to apply.
fn boxes(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let size32 = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?);
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let (header, size) = match size32 {
            // 64-bit size follows the type.
            1 => (16, u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)),
            // The box extends to the end of the file.
            0 => (8, rest.len() as u64),
            n => (8, u64::from(n)),
        };
        let size = usize::try_from(size).ok()?;
        if size < header || size > rest.len() {
            return None;
        }
        let payload = &rest[header..size];
        rest = &rest[size..];
        Some((kind, payload))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, p)| p)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// The timescale of an `mvhd` or `mdhd` payload (same layout up to the timescale).
fn header_timescale(payload: &[u8]) -> Option<u32> {
    match payload.first()? {
        0 => be_u32(payload, 12),
        1 => be_u32(payload, 20),
        _ => None,
    }
    .filter(|&t| t > 0)
}

fn tkhd_track_id(payload: &[u8]) -> Option<u32> {
    match payload.first()? {
        0 => be_u32(payload, 12),
        1 => be_u32(payload, 20),
        _ => None,
    }
}

/// One `elst` entry: (segment duration in the movie timescale, media time in the media
/// timescale, −1 for an empty edit; integer part of the rate).
fn elst_entries(payload: &[u8]) -> Option<Vec<(u64, i64, i16)>> {
    let version = *payload.first()?;
    let count = be_u32(payload, 4)? as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    if payload.len() < 8 + count.checked_mul(entry_len)? {
        return None;
    }
    (0..count)
        .map(|i| {
            let at = 8 + i * entry_len;
            let (duration, media_time, rate_at) = if version == 1 {
                (
                    be_u64(payload, at)?,
                    be_u64(payload, at + 8)? as i64,
                    at + 16,
                )
            } else {
                (
                    u64::from(be_u32(payload, at)?),
                    i64::from(be_u32(payload, at + 4)? as i32),
                    at + 8,
                )
            };
            let rate = i16::from_be_bytes(payload.get(rate_at..rate_at + 2)?.try_into().ok()?);
            Some((duration, media_time, rate))
        })
        .collect()
}

/// Converts `value` ticks of `from` Hz to frames at `to` Hz, rounded to nearest.
/// Saturates at `u64::MAX` (a file may declare any duration; the caller's limit refuses it).
fn rescale(value: u64, from: u32, to: u32) -> u64 {
    let frames = (u128::from(value) * u128::from(to) + u128::from(from) / 2) / u128::from(from);
    u64::try_from(frames).unwrap_or(u64::MAX)
}

/// The edit window of track `track_id` in the MP4 file `data`, in frames at `sample_rate`, or
/// `None` when the file is not MP4, the track has no edit list, or the list is not one of the
/// supported shapes (see the module docs).
pub fn audio_edit_window(data: &[u8], track_id: u32, sample_rate: u32) -> Option<EditWindow> {
    let moov = child(data, b"moov")?;
    let movie_timescale = header_timescale(child(moov, b"mvhd")?)?;
    let trak = boxes(moov)
        .filter(|(k, _)| k == b"trak")
        .map(|(_, p)| p)
        .find(|trak| child(trak, b"tkhd").and_then(tkhd_track_id) == Some(track_id))?;
    let media_timescale = header_timescale(child(child(trak, b"mdia")?, b"mdhd")?)?;
    let entries = elst_entries(child(child(trak, b"edts")?, b"elst")?)?;

    let mut lead_silence = 0;
    let mut normal = entries.iter().skip_while(|&&(duration, media_time, _)| {
        if media_time == -1 {
            lead_silence =
                rescale(duration, movie_timescale, sample_rate).saturating_add(lead_silence);
            true
        } else {
            false
        }
    });
    let &(duration, media_time, rate) = normal.next()?;
    if normal.next().is_some() || rate != 1 || media_time < 0 {
        return None;
    }
    Some(EditWindow {
        lead_silence,
        skip: rescale(media_time as u64, media_timescale, sample_rate),
        keep: (duration > 0).then(|| rescale(duration, movie_timescale, sample_rate)),
    })
}

/// Largest `moov` box read for the edit list of an MP4 file (sample tables of hours of AAC fit).
const MAX_MOOV_BYTES: u64 = 64 << 20;

/// The whole `moov` box (header included) of the MP4 file at `path`, if it has one no larger
/// than [`MAX_MOOV_BYTES`].
pub fn read_moov(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut at = 0u64;
    while at + 8 <= len {
        file.seek(SeekFrom::Start(at))?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8])?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let size = match size32 {
            1 => {
                file.read_exact(&mut header[8..16])?;
                u64::from_be_bytes(header[8..16].try_into().unwrap_or_default())
            }
            0 => len - at,
            n => u64::from(n),
        };
        if size < 8 || at + size > len {
            return Ok(None);
        }
        if &header[4..8] == b"moov" {
            if size > MAX_MOOV_BYTES {
                return Ok(None);
            }
            let mut moov = vec![0u8; size as usize];
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(&mut moov)?;
            return Ok(Some(moov));
        }
        at += size;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    fn full_header_v0(fields: &[u32]) -> Vec<u8> {
        let mut out = vec![0u8; 4];
        for f in fields {
            out.extend_from_slice(&f.to_be_bytes());
        }
        out
    }

    /// A skeleton file: movie timescale 1000, one track (id 1) at media timescale 48000 with
    /// the given edit entries `(duration, media_time)`.
    fn file(entries: &[(u32, i32)]) -> Vec<u8> {
        let mvhd = mp4_box(b"mvhd", &full_header_v0(&[0, 0, 1000, 0]));
        let tkhd = mp4_box(b"tkhd", &full_header_v0(&[0, 0, 1]));
        let mdhd = mp4_box(b"mdhd", &full_header_v0(&[0, 0, 48_000, 0]));
        let mut elst = full_header_v0(&[entries.len() as u32]);
        for &(duration, media_time) in entries {
            elst.extend_from_slice(&duration.to_be_bytes());
            elst.extend_from_slice(&media_time.to_be_bytes());
            elst.extend_from_slice(&[0, 1, 0, 0]);
        }
        let edts = mp4_box(b"edts", &mp4_box(b"elst", &elst));
        let mdia = mp4_box(b"mdia", &mdhd);
        let trak = mp4_box(b"trak", &[tkhd, edts, mdia].concat());
        let mut out = mp4_box(b"ftyp", b"M4A \0\0\0\0");
        out.extend(mp4_box(b"moov", &[mvhd, trak].concat()));
        out
    }

    #[test]
    fn priming_and_length_come_from_the_first_edit() {
        // ffmpeg's AAC: 1024 frames of priming, 3000 ms of audio.
        let window = audio_edit_window(&file(&[(3000, 1024)]), 1, 48_000);
        assert_eq!(
            window,
            Some(EditWindow {
                lead_silence: 0,
                skip: 1024,
                keep: Some(144_000)
            })
        );
        // Expressed at another rate (media timescale 48 kHz, decoder at 24 kHz).
        let window = audio_edit_window(&file(&[(3000, 1024)]), 1, 24_000).unwrap();
        assert_eq!((window.skip, window.keep), (512, Some(72_000)));
    }

    #[test]
    fn leading_empty_edits_become_silence() {
        let window = audio_edit_window(&file(&[(500, -1), (3000, 2112)]), 1, 48_000).unwrap();
        assert_eq!(window.lead_silence, 24_000);
        assert_eq!(window.skip, 2112);
    }

    #[test]
    fn unsupported_lists_and_other_files_are_ignored() {
        assert_eq!(
            audio_edit_window(&file(&[(1000, 0), (1000, 48_000)]), 1, 48_000),
            None
        );
        assert_eq!(audio_edit_window(&file(&[(3000, 1024)]), 2, 48_000), None);
        assert_eq!(audio_edit_window(b"RIFF\0\0\0\0WAVE", 1, 48_000), None);
        assert_eq!(audio_edit_window(&[], 1, 48_000), None);
        // A truncated moov box is not an error, just no edit list.
        let mut bytes = file(&[(3000, 1024)]);
        bytes.truncate(bytes.len() - 10);
        assert_eq!(audio_edit_window(&bytes, 1, 48_000), None);
    }
}
