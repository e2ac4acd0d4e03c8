//! `encode_bench`: how fast the MP4 export runs on the CPU for Hallo2-sized output (512×512,
//! 25 fps): RGB → YUV 4:2:0 alone, and the whole `write_mp4` (YUV + OpenH264 + Opus + mux),
//! for 1 encoder thread and OpenH264's automatic choice.
//!
//! ```text
//! cargo build --release -p model --bin encode_bench
//! target/release/encode_bench [--frames 100] [--size 512] [--repeats 3]
//! ```

use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Parser;
use model::media::{Mp4Options, Yuv420, rgb_planar_to_yuv420, write_mp4};

#[derive(Parser)]
#[command(about = "Time the MP4 export (OpenH264 + Opus + muxide) on the CPU")]
struct Args {
    /// Frames to encode (25 per second of video).
    #[arg(long, default_value_t = 100)]
    frames: usize,
    /// Width and height of the frames (even).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Runs per setting; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// A moving, textured picture so that the encoder has real work: (3, F, S, S) in [0, 1].
fn frames(n: usize, s: usize) -> Vec<f32> {
    let mut data = vec![0f32; 3 * n * s * s];
    for c in 0..3 {
        for f in 0..n {
            for y in 0..s {
                for x in 0..s {
                    let t = f as f32 * 0.15 + c as f32;
                    let v =
                        0.5 + 0.25 * ((x as f32 * 0.05 + t).sin() + (y as f32 * 0.031 - t).cos());
                    data[((c * n + f) * s + y) * s + x] = v;
                }
            }
        }
    }
    data
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (n, s) = (args.frames, args.size);
    let data = frames(n, s);
    let video = Tensor::from_vec(data.clone(), (3, n, s, s), &Device::Cpu)?;
    let seconds = n as f64 / 25.0;
    let audio: Vec<f32> = (0..(seconds * 16_000.0) as usize)
        .map(|i| 0.3 * (i as f32 * 2.0 * std::f32::consts::PI * 220.0 / 16_000.0).sin())
        .collect();
    println!(
        "{n} frames of {s}×{s} ({seconds:.1} s), best of {}",
        args.repeats
    );

    // YUV conversion alone (one frame's planes copied out of the tensor as write_mp4 does).
    let plane = s * s;
    let mut yuv = Yuv420 {
        width: s,
        height: s,
        y: Vec::new(),
        u: Vec::new(),
        v: Vec::new(),
    };
    let mut rgb = vec![0f32; 3 * plane];
    let mut best = f64::INFINITY;
    for _ in 0..args.repeats {
        let start = Instant::now();
        for f in 0..n {
            for c in 0..3 {
                let from = (c * n + f) * plane;
                rgb[c * plane..(c + 1) * plane].copy_from_slice(&data[from..from + plane]);
            }
            rgb_planar_to_yuv420(&rgb, s, s, &mut yuv);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "rgb→yuv420 (BT.601 limited): {:.2} ms/frame, {:.0} fps",
        1e3 * best / n as f64,
        n as f64 / best
    );

    let dir = std::env::temp_dir().join(format!("encode_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.mp4");
    for threads in [1u16, 0] {
        let opts = Mp4Options {
            encoder_threads: threads,
            ..Mp4Options::default()
        };
        let mut best = f64::INFINITY;
        let mut summary = None;
        for _ in 0..args.repeats {
            let start = Instant::now();
            summary = Some(write_mp4(&path, &video, &audio, 16_000, &opts)?);
            best = best.min(start.elapsed().as_secs_f64());
        }
        let summary = summary.ok_or("no run")?;
        println!(
            "write_mp4 (threads {}): {:.2} s, {:.1} fps, {:.2}× real time; {} B ({:.0} kb/s video), \
             {} keyframes",
            if threads == 0 {
                "auto".to_string()
            } else {
                threads.to_string()
            },
            best,
            n as f64 / best,
            seconds / best,
            summary.file_bytes,
            summary.video_bytes as f64 * 8.0 / seconds / 1e3,
            summary.keyframes
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
