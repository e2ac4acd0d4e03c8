//! MP4 export: synthetic frames + a real speech clip → H.264/Opus MP4, checked with the ffmpeg
//! tools (test-only; `scripts/test.sh` installs Debian `ffmpeg`, so a missing `ffprobe` fails
//! the test rather than skipping it).
//!
//! Fixture: `fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav` (LibriVox via Debian
//! pocketsphinx-testdata, public domain / BSD-2, see its README), 16 kHz mono, 2.99 s.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use model::media::{MediaError, Mp4Options, write_mp4};

const W: usize = 64;
const H: usize = 64;
const FRAMES: usize = 50;

fn speech_2s() -> (Vec<f32>, u32) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav");
    let mut reader = hound::WavReader::open(&path).expect("opening the speech fixture");
    let rate = reader.spec().sample_rate;
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| f32::from(s.expect("wav sample")) / 32768.0)
        .take(2 * rate as usize)
        .collect();
    assert_eq!(samples.len(), 2 * rate as usize);
    (samples, rate)
}

/// Smooth colour gradients with a bright square moving across: (3, F, H, W) in [0, 1].
fn synthetic_frames() -> Vec<f32> {
    let mut data = vec![0f32; 3 * FRAMES * H * W];
    for c in 0..3 {
        for f in 0..FRAMES {
            let (sx, sy) = (4 + f % 40, 10 + (f / 2) % 40);
            for y in 0..H {
                for x in 0..W {
                    let base = match c {
                        0 => x as f32 / (W - 1) as f32,
                        1 => y as f32 / (H - 1) as f32,
                        _ => 0.5 + 0.3 * ((x + y + f) as f32 * 0.1).sin(),
                    };
                    let inside = (sx..sx + 16).contains(&x) && (sy..sy + 16).contains(&y);
                    let v = if inside { 0.9 } else { 0.1 + 0.7 * base };
                    data[((c * FRAMES + f) * H + y) * W + x] = v;
                }
            }
        }
    }
    data
}

fn tool(name: &str) -> &'static str {
    let ok = Command::new(name)
        .arg("-version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{name}` is required by this test (Debian package `ffmpeg`; scripts/test.sh installs it)"
    );
    if name == "ffprobe" {
        "ffprobe"
    } else {
        "ffmpeg"
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("running an ffmpeg tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Top-level MP4 box types, in file order.
fn top_level_boxes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size32 = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
        let kind = String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned();
        let size = match size32 {
            1 => u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()),
            0 => (bytes.len() - at) as u64,
            s => s,
        };
        assert!(size >= 8, "box {kind} at {at} has size {size}");
        boxes.push(kind);
        at += size as usize;
    }
    assert_eq!(at, bytes.len(), "boxes do not tile the file");
    boxes
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

fn json_f64(v: &serde_json::Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn writes_h264_opus_mp4_that_ffmpeg_reads_back() {
    let ffprobe = tool("ffprobe");
    let ffmpeg = tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mp4");
    let data = synthetic_frames();
    let frames = Tensor::from_vec(data.clone(), (3, FRAMES, H, W), &Device::Cpu).unwrap();
    let (speech, rate) = speech_2s();

    let summary = write_mp4(&path, &frames, &speech, rate, &Mp4Options::default()).unwrap();
    println!("{summary:?}");
    assert_eq!(summary.frames, FRAMES);
    assert_eq!((summary.width, summary.height), (W, H));
    assert!((summary.duration_s - 2.0).abs() < 1e-9);
    assert!((summary.audio_kept_s - 2.0).abs() < 1e-9);
    // 2 s + 312 samples of pre-skip at 48 kHz → 101 packets of 20 ms.
    assert_eq!(summary.audio_packets, 101);
    assert!(summary.keyframes >= 1);
    // Only the final file remains (the temporary one was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out.mp4")]);

    // Fast start: moov before mdat.
    let boxes = top_level_boxes(&path);
    println!("top-level boxes: {boxes:?}");
    let moov = boxes.iter().position(|b| b == "moov").expect("no moov box");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("no mdat box");
    assert!(
        moov < mdat,
        "moov must precede mdat (fast start): {boxes:?}"
    );

    let probe = run(Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(&path));
    let probe: serde_json::Value = serde_json::from_slice(&probe).unwrap();
    let streams = probe["streams"].as_array().unwrap();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("no video stream");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("no audio stream");
    println!(
        "video: {video}\naudio: {audio}\nformat: {}",
        probe["format"]
    );
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["pix_fmt"], "yuv420p");
    assert_eq!(video["r_frame_rate"], "25/1");
    assert_eq!(video["width"], W as u64);
    assert_eq!(video["height"], H as u64);
    assert_eq!(video["nb_frames"], "50");
    assert_eq!(video["nb_read_frames"], "50");
    assert_eq!(audio["codec_name"], "opus");
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["channels"], 1);
    let video_s = json_f64(&video["duration"]);
    let audio_s = json_f64(&audio["duration"]);
    let format_s = json_f64(&probe["format"]["duration"]);
    for (what, s) in [("video", video_s), ("audio", audio_s), ("format", format_s)] {
        assert!(
            (s - 2.0).abs() <= 0.040,
            "{what} duration {s} s, not 2.0 ± 0.04 s"
        );
    }

    // First frame back as RGB vs the input.
    let decoded = run(Command::new(ffmpeg)
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]));
    assert_eq!(decoded.len(), H * W * 3);
    let input: Vec<u8> = (0..H * W)
        .flat_map(|p| {
            let data = &data;
            (0..3).map(move |c| (data[c * FRAMES * H * W + p] * 255.0).round() as u8)
        })
        .collect();
    let db = psnr(&decoded, &input);
    println!("first frame PSNR {db:.2} dB");
    assert!(db > 30.0, "first frame PSNR {db:.2} dB");

    // Audio back at 16 kHz: as long as the video, and in sync with the input (best lag 0).
    let pcm = run(Command::new(ffmpeg)
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-vn", "-f", "f32le", "-ac", "1", "-ar", "16000", "-"]));
    let back: Vec<f32> = pcm
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let back_s = back.len() as f64 / 16_000.0;
    println!("decoded audio {back_s:.4} s");
    assert!((back_s - 2.0).abs() <= 0.040, "decoded audio {back_s} s");
    let corr = |lag: i64| -> f64 {
        let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for (i, &x) in speech.iter().enumerate() {
            let j = i as i64 + lag;
            if j < 0 || j as usize >= back.len() {
                continue;
            }
            let y = back[j as usize];
            xy += f64::from(x) * f64::from(y);
            xx += f64::from(x).powi(2);
            yy += f64::from(y).powi(2);
        }
        xy / (xx * yy).sqrt()
    };
    let (best_lag, best) = (-80..=80)
        .map(|lag| (lag, corr(lag)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    println!("audio correlation {best:.4} at lag {best_lag} samples (16 kHz)");
    assert!(
        best_lag.abs() <= 1,
        "audio is {best_lag} samples out of sync"
    );
    assert!(best > 0.9, "audio correlation {best:.3}");
}

#[test]
fn short_audio_is_padded_and_long_audio_cut() {
    let dir = tempfile::tempdir().unwrap();
    let frames = Tensor::from_vec(
        synthetic_frames()[..].to_vec(),
        (3, FRAMES, H, W),
        &Device::Cpu,
    )
    .unwrap();
    let (speech, rate) = speech_2s();
    let short = write_mp4(
        &dir.path().join("short.mp4"),
        &frames,
        &speech[..rate as usize / 2],
        rate,
        &Mp4Options::default(),
    )
    .unwrap();
    assert!((short.audio_kept_s - 0.5).abs() < 1e-9);
    assert_eq!(short.audio_packets, 101);
    let first_20 = frames.narrow(1, 0, 20).unwrap();
    let long = write_mp4(
        &dir.path().join("long.mp4"),
        &first_20,
        &speech,
        rate,
        &Mp4Options::default(),
    )
    .unwrap();
    // 20 frames = 0.8 s: 38 400 + 312 samples → 41 packets.
    assert!((long.audio_kept_s - 0.8).abs() < 1e-9);
    assert_eq!(long.audio_packets, 41);
    assert_eq!(long.frames, 20);
}

#[test]
fn bad_frames_are_rejected_with_specific_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mp4");
    let (speech, rate) = speech_2s();
    let odd = Tensor::zeros((3, 2, 64, 63), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = write_mp4(&path, &odd, &speech, rate, &Mp4Options::default()).unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::OddDimensions {
                width: 63,
                height: 64
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("63×64"), "{err}");
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let gray = Tensor::zeros((1, 2, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = write_mp4(&path, &gray, &speech, rate, &Mp4Options::default()).unwrap_err();
    assert!(matches!(err, MediaError::FrameShape { .. }), "{err:?}");
    let empty = Tensor::zeros((3, 0, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = write_mp4(&path, &empty, &speech, rate, &Mp4Options::default()).unwrap_err();
    assert!(matches!(err, MediaError::NoFrames), "{err:?}");
    let frames = Tensor::zeros((3, 2, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = write_mp4(&path, &frames, &speech, 0, &Mp4Options::default()).unwrap_err();
    assert!(matches!(err, MediaError::AudioRate { rate: 0 }), "{err:?}");
}
