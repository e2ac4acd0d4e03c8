//! A fast-start MP4 (ISO BMFF) writer for one H.264 track and one Opus track whose memory does
//! not grow with the video's length: video samples are streamed from the sample file
//! [`super::video`] wrote, only their sizes and key flags are held, and the `moov` box is built
//! before the first byte of `mdat` is written (its size does not depend on the offsets in it).
//!
//! ```text
//! ftyp · moov (mvhd, trak avc1, trak Opus) · mdat: [1 s of video][1 s of audio][1 s of video]…
//! ```
//!
//! Box layouts follow ISO/IEC 14496-12 (containers), 14496-15 (`avc1`/`avcC`) and the Opus in
//! ISOBMFF encapsulation (`Opus`/`dOps`, pre-skip in `dOps` — decoders drop it).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::MediaError;
use super::video::{SampleEntry, VideoTrack};

/// Movie time units per second (`mvhd`, `tkhd` durations).
const MOVIE_TIMESCALE: u32 = 1000;
/// Video media time units per frame: `fps · VIDEO_TICKS` per second.
const VIDEO_TICKS: u32 = 512;

/// The audio track: Opus packets of `packet_samples` at 48 kHz each, `pre_skip` samples of encoder
/// delay at the start.
#[derive(Debug, Clone)]
pub struct OpusPackets<'a> {
    /// The packets' lengths, in order.
    pub sizes: &'a [u32],
    /// The file holding the packets back to back.
    pub data: &'a Path,
    pub packet_samples: u32,
    pub pre_skip: u16,
    /// The rate of the audio before it was resampled (informational, `dOps`).
    pub input_rate: u32,
}

/// Where each sample of one track lands in the file.
struct Layout {
    /// `(first sample, count, byte offset)` per chunk, in file order.
    video_chunks: Vec<(usize, usize, u64)>,
    audio_chunks: Vec<(usize, usize, u64)>,
    mdat_payload: u64,
}

/// Interleaves one second of video and one second of audio per chunk pair, starting at
/// `mdat_start` (the first payload byte).
fn layout(video: &[SampleEntry], fps: u32, audio: &OpusPackets<'_>, mdat_start: u64) -> Layout {
    let per_video_chunk = fps.max(1) as usize;
    let per_audio_chunk = (48_000 / audio.packet_samples.max(1)).max(1) as usize;
    let mut at = mdat_start;
    let (mut v, mut a) = (0usize, 0usize);
    let mut video_chunks = Vec::new();
    let mut audio_chunks = Vec::new();
    while v < video.len() || a < audio.sizes.len() {
        if v < video.len() {
            let n = per_video_chunk.min(video.len() - v);
            video_chunks.push((v, n, at));
            at += video[v..v + n]
                .iter()
                .map(|s| u64::from(s.size))
                .sum::<u64>();
            v += n;
        }
        if a < audio.sizes.len() {
            let n = per_audio_chunk.min(audio.sizes.len() - a);
            audio_chunks.push((a, n, at));
            at += audio.sizes[a..a + n]
                .iter()
                .map(|&p| u64::from(p))
                .sum::<u64>();
            a += n;
        }
    }
    Layout {
        video_chunks,
        audio_chunks,
        mdat_payload: at - mdat_start,
    }
}

/// Writes `video` (its samples read from `track`'s data file) and `audio` as a fast-start MP4 at
/// `out` (created or truncated). Returns the file's size.
pub fn write_mp4_file(
    out: &Path,
    track: &VideoTrack,
    video: &[SampleEntry],
    audio: &OpusPackets<'_>,
) -> Result<u64, MediaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MediaError::Io {
            path: path.clone(),
            source,
        }
    };
    let first_key = video
        .first()
        .filter(|s| s.keyframe)
        .ok_or(MediaError::NoFrames)?;
    // The parameter sets of the first keyframe (OpenH264 repeats identical ones at every IDR).
    let mut reader = BufReader::new(File::open(&track.data).map_err(io(&track.data))?);
    let mut first = vec![0u8; first_key.size as usize];
    reader.read_exact(&mut first).map_err(io(&track.data))?;
    let (sps, pps) = parameter_sets(&first).ok_or_else(|| MediaError::Mux {
        detail: "the first H.264 sample carries no SPS/PPS".into(),
    })?;
    drop(reader);

    let ftyp = ftyp();
    // The moov's size is the same whatever the offsets; 64-bit offsets once they could pass 4 GiB.
    let unplaced = layout(video, track.fps, audio, 0);
    let wide = unplaced.mdat_payload + (1 << 20) > u64::from(u32::MAX);
    let probe = moov(track, video, audio, &sps, &pps, &unplaced, wide);
    let mdat_start = (ftyp.len() + probe.len()) as u64 + 16;
    let placed = layout(video, track.fps, audio, mdat_start);
    let moov = moov(track, video, audio, &sps, &pps, &placed, wide);
    debug_assert_eq!(moov.len(), probe.len());

    let file = File::create(out).map_err(io(out))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&ftyp).map_err(io(out))?;
    w.write_all(&moov).map_err(io(out))?;
    // mdat with a 64-bit size (header of 16 bytes, as counted in `mdat_start`).
    w.write_all(&1u32.to_be_bytes()).map_err(io(out))?;
    w.write_all(b"mdat").map_err(io(out))?;
    w.write_all(&(placed.mdat_payload + 16).to_be_bytes())
        .map_err(io(out))?;
    let mut samples = BufReader::new(File::open(&track.data).map_err(io(&track.data))?);
    let mut packets = BufReader::new(File::open(audio.data).map_err(io(audio.data))?);
    let mut audio_chunks = placed.audio_chunks.iter().peekable();
    let mut written = mdat_start;
    for &(first, count, offset) in &placed.video_chunks {
        // Audio chunks placed before this video chunk.
        while let Some(&&(a, n, at)) = audio_chunks.peek() {
            if at > offset {
                break;
            }
            debug_assert_eq!(at, written);
            let sizes = audio.sizes[a..a + n].iter();
            written += copy_exactly(&mut packets, &mut w, sizes, audio.data, out)?;
            audio_chunks.next();
        }
        debug_assert_eq!(offset, written);
        let sizes = video[first..first + count].iter().map(|s| &s.size);
        written += copy_exactly(&mut samples, &mut w, sizes, &track.data, out)?;
    }
    for &(a, n, _) in audio_chunks {
        let sizes = audio.sizes[a..a + n].iter();
        copy_exactly(&mut packets, &mut w, sizes, audio.data, out)?;
    }
    let file = w.into_inner().map_err(|e| MediaError::Io {
        path: out.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(out))?;
    Ok(file.metadata().map_err(io(out))?.len())
}

/// The SPS and PPS NAL units of a length-prefixed (AVCC, 4-byte) sample.
fn parameter_sets(sample: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (mut sps, mut pps) = (None, None);
    let mut at = 0usize;
    while at + 4 <= sample.len() {
        let len = u32::from_be_bytes(sample[at..at + 4].try_into().ok()?) as usize;
        let nal = sample.get(at + 4..at + 4 + len)?;
        match nal.first().map(|b| b & 0x1f) {
            Some(7) if sps.is_none() => sps = Some(nal.to_vec()),
            Some(8) if pps.is_none() => pps = Some(nal.to_vec()),
            _ => {}
        }
        at += 4 + len;
    }
    Some((sps?, pps?))
}

fn bx(kind: &[u8; 4], parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = 8 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(kind);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

fn full(kind: &[u8; 4], version: u8, flags: u32, parts: &[&[u8]]) -> Vec<u8> {
    let mut head = flags.to_be_bytes();
    head[0] = version;
    let mut all: Vec<&[u8]> = vec![&head];
    all.extend_from_slice(parts);
    bx(kind, &all)
}

fn ftyp() -> Vec<u8> {
    bx(
        b"ftyp",
        &[
            b"isom",
            &512u32.to_be_bytes(),
            b"isom",
            b"iso2",
            b"avc1",
            b"mp41",
        ],
    )
}

/// The unity transformation matrix of `mvhd`/`tkhd`.
fn matrix() -> Vec<u8> {
    [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

/// Copies the next `Σ sizes` bytes of `from` (the data file at `path`) to `to` (the MP4 at
/// `out`); a data file that ends before its index does is an error.
fn copy_exactly<'a>(
    from: &mut impl Read,
    to: &mut impl Write,
    sizes: impl Iterator<Item = &'a u32>,
    path: &Path,
    out: &Path,
) -> Result<u64, MediaError> {
    let bytes: u64 = sizes.map(|&s| u64::from(s)).sum();
    let copied = std::io::copy(&mut from.take(bytes), to).map_err(|source| MediaError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    if copied != bytes {
        return Err(MediaError::Mux {
            detail: format!(
                "{} ends before its index does ({copied} of {bytes} bytes)",
                path.display()
            ),
        });
    }
    Ok(bytes)
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn moov(
    track: &VideoTrack,
    video: &[SampleEntry],
    audio: &OpusPackets<'_>,
    sps: &[u8],
    pps: &[u8],
    placed: &Layout,
    wide: bool,
) -> Vec<u8> {
    let fps = track.fps.max(1);
    let video_ms = video.len() as u64 * u64::from(MOVIE_TIMESCALE) / u64::from(fps);
    let audio_samples = audio.sizes.len() as u64 * u64::from(audio.packet_samples);
    let audio_ms = audio_samples * u64::from(MOVIE_TIMESCALE) / 48_000;
    let mut mvhd = u32s(&[0, 0, MOVIE_TIMESCALE, video_ms.max(audio_ms) as u32]);
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd.extend_from_slice(&[0; 10]);
    mvhd.extend_from_slice(&matrix());
    mvhd.extend_from_slice(&[0; 24]);
    mvhd.extend_from_slice(&3u32.to_be_bytes()); // next track id
    let mvhd = full(b"mvhd", 0, 0, &[&mvhd]);
    let video_trak = video_trak(track, video, sps, pps, placed, video_ms, wide);
    let audio_trak = audio_trak(audio, placed, audio_ms, audio_samples, wide);
    bx(b"moov", &[&mvhd, &video_trak, &audio_trak])
}

fn tkhd(id: u32, duration_ms: u64, volume: u16, width: u32, height: u32) -> Vec<u8> {
    let mut p = u32s(&[0, 0, id, 0, duration_ms as u32]);
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&0u16.to_be_bytes()); // layer
    p.extend_from_slice(&0u16.to_be_bytes()); // alternate group
    p.extend_from_slice(&volume.to_be_bytes());
    p.extend_from_slice(&[0; 2]);
    p.extend_from_slice(&matrix());
    p.extend_from_slice(&u32s(&[width << 16, height << 16]));
    // Enabled, in movie, in preview.
    full(b"tkhd", 0, 3, &[&p])
}

fn mdhd(timescale: u32, duration: u64) -> Vec<u8> {
    let mut p = u32s(&[0, 0, timescale, duration as u32]);
    p.extend_from_slice(&0x55c4u16.to_be_bytes()); // language "und"
    p.extend_from_slice(&[0; 2]);
    full(b"mdhd", 0, 0, &[&p])
}

fn hdlr(kind: &[u8; 4], name: &str) -> Vec<u8> {
    let mut p = vec![0; 4];
    p.extend_from_slice(kind);
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    full(b"hdlr", 0, 0, &[&p])
}

fn dinf() -> Vec<u8> {
    let url = full(b"url ", 0, 1, &[]);
    let dref = full(b"dref", 0, 0, &[&1u32.to_be_bytes(), &url]);
    bx(b"dinf", &[&dref])
}

/// `stsc` with runs of equal chunk lengths collapsed, and `stco`/`co64`.
fn chunk_boxes(chunks: &[(usize, usize, u64)], wide: bool) -> (Vec<u8>, Vec<u8>) {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (i, &(_, n, _)) in chunks.iter().enumerate() {
        if runs.last().is_none_or(|&(_, last)| last != n as u32) {
            runs.push((i as u32 + 1, n as u32));
        }
    }
    let mut stsc = u32s(&[runs.len() as u32]);
    for (first, n) in runs {
        stsc.extend_from_slice(&u32s(&[first, n, 1]));
    }
    let mut offsets = u32s(&[chunks.len() as u32]);
    for &(_, _, at) in chunks {
        if wide {
            offsets.extend_from_slice(&at.to_be_bytes());
        } else {
            offsets.extend_from_slice(&(at as u32).to_be_bytes());
        }
    }
    let stco = if wide {
        full(b"co64", 0, 0, &[&offsets])
    } else {
        full(b"stco", 0, 0, &[&offsets])
    };
    (full(b"stsc", 0, 0, &[&stsc]), stco)
}

fn video_trak(
    track: &VideoTrack,
    video: &[SampleEntry],
    sps: &[u8],
    pps: &[u8],
    placed: &Layout,
    duration_ms: u64,
    wide: bool,
) -> Vec<u8> {
    let (w, h) = (track.width as u32, track.height as u32);
    let timescale = track.fps.max(1) * VIDEO_TICKS;
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let avcc = bx(b"avcC", &[&avcc]);
    let mut avc1 = vec![0; 6];
    avc1.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    avc1.extend_from_slice(&[0; 16]);
    avc1.extend_from_slice(&(w as u16).to_be_bytes());
    avc1.extend_from_slice(&(h as u16).to_be_bytes());
    avc1.extend_from_slice(&u32s(&[0x0048_0000, 0x0048_0000, 0]));
    avc1.extend_from_slice(&1u16.to_be_bytes()); // frame count
    avc1.extend_from_slice(&[0; 32]); // compressor name
    avc1.extend_from_slice(&0x0018u16.to_be_bytes());
    avc1.extend_from_slice(&(-1i16).to_be_bytes());
    let avc1 = bx(b"avc1", &[&avc1, &avcc]);
    let stsd = full(b"stsd", 0, 0, &[&1u32.to_be_bytes(), &avc1]);
    let stts = full(
        b"stts",
        0,
        0,
        &[&u32s(&[1, video.len() as u32, VIDEO_TICKS])],
    );
    let keys: Vec<u32> = video
        .iter()
        .enumerate()
        .filter(|(_, s)| s.keyframe)
        .map(|(i, _)| i as u32 + 1)
        .collect();
    let mut stss = u32s(&[keys.len() as u32]);
    stss.extend_from_slice(&u32s(&keys));
    let stss = full(b"stss", 0, 0, &[&stss]);
    let mut stsz = u32s(&[0, video.len() as u32]);
    stsz.extend(video.iter().flat_map(|s| s.size.to_be_bytes()));
    let stsz = full(b"stsz", 0, 0, &[&stsz]);
    let (stsc, stco) = chunk_boxes(&placed.video_chunks, wide);
    let stbl = bx(b"stbl", &[&stsd, &stts, &stss, &stsc, &stsz, &stco]);
    let vmhd = full(b"vmhd", 0, 1, &[&[0; 8]]);
    let minf = bx(b"minf", &[&vmhd, &dinf(), &stbl]);
    let media_duration = video.len() as u64 * u64::from(VIDEO_TICKS);
    let mdia = bx(
        b"mdia",
        &[
            &mdhd(timescale, media_duration),
            &hdlr(b"vide", "VideoHandler"),
            &minf,
        ],
    );
    bx(b"trak", &[&tkhd(1, duration_ms, 0, w, h), &mdia])
}

fn audio_trak(
    audio: &OpusPackets<'_>,
    placed: &Layout,
    duration_ms: u64,
    samples: u64,
    wide: bool,
) -> Vec<u8> {
    let mut dops = vec![0, 1]; // version 0, one output channel
    dops.extend_from_slice(&audio.pre_skip.to_be_bytes());
    dops.extend_from_slice(&audio.input_rate.to_be_bytes());
    dops.extend_from_slice(&0i16.to_be_bytes()); // output gain
    dops.push(0); // channel mapping family 0 (mono/stereo)
    let dops = bx(b"dOps", &[&dops]);
    let mut entry = vec![0; 6];
    entry.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    entry.extend_from_slice(&[0; 8]);
    entry.extend_from_slice(&1u16.to_be_bytes()); // channels
    entry.extend_from_slice(&16u16.to_be_bytes()); // sample size
    entry.extend_from_slice(&[0; 4]);
    entry.extend_from_slice(&(48_000u32 << 16).to_be_bytes());
    let opus = bx(b"Opus", &[&entry, &dops]);
    let stsd = full(b"stsd", 0, 0, &[&1u32.to_be_bytes(), &opus]);
    let stts = full(
        b"stts",
        0,
        0,
        &[&u32s(&[1, audio.sizes.len() as u32, audio.packet_samples])],
    );
    let mut stsz = u32s(&[0, audio.sizes.len() as u32]);
    stsz.extend(audio.sizes.iter().flat_map(|p| p.to_be_bytes()));
    let stsz = full(b"stsz", 0, 0, &[&stsz]);
    let (stsc, stco) = chunk_boxes(&placed.audio_chunks, wide);
    let stbl = bx(b"stbl", &[&stsd, &stts, &stsc, &stsz, &stco]);
    let smhd = full(b"smhd", 0, 0, &[&[0; 4]]);
    let minf = bx(b"minf", &[&smhd, &dinf(), &stbl]);
    let mdia = bx(
        b"mdia",
        &[
            &mdhd(48_000, samples),
            &hdlr(b"soun", "SoundHandler"),
            &minf,
        ],
    );
    bx(b"trak", &[&tkhd(2, duration_ms, 0x0100, 0, 0), &mdia])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sets_are_found_among_the_nal_units() {
        let mut sample = Vec::new();
        for nal in [
            &[0x67u8, 0x42, 0xc0, 0x1e][..],
            &[0x68, 0xce, 0x3c],
            &[0x65, 1, 2],
        ] {
            sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            sample.extend_from_slice(nal);
        }
        let (sps, pps) = parameter_sets(&sample).unwrap();
        assert_eq!(sps, vec![0x67, 0x42, 0xc0, 0x1e]);
        assert_eq!(pps, vec![0x68, 0xce, 0x3c]);
        assert!(parameter_sets(&sample[11..]).is_none());
    }

    #[test]
    fn chunks_interleave_one_second_of_each_track() {
        let video: Vec<SampleEntry> = (0..60)
            .map(|i| SampleEntry {
                size: 10,
                keyframe: i == 0,
            })
            .collect();
        let sizes = vec![3u32; 120];
        let audio = OpusPackets {
            sizes: &sizes,
            data: Path::new("unused"),
            packet_samples: 960,
            pre_skip: 312,
            input_rate: 16_000,
        };
        let l = layout(&video, 25, &audio, 100);
        assert_eq!(
            l.video_chunks,
            vec![
                (0, 25, 100),
                (25, 25, 100 + 250 + 150),
                (50, 10, 100 + 2 * 400)
            ]
        );
        assert_eq!(l.audio_chunks[0], (0, 50, 350));
        assert_eq!(l.audio_chunks.len(), 3);
        assert_eq!(l.mdat_payload, 600 + 360);
    }
}
