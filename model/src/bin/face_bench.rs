//! Face-path benchmark: wall time of decode → BlazeFace → FaceMesh → Hallo2 masks + source
//! pixels (512) → InsightFace embedding on one photo, CPU, one thread of control (candle and
//! tract may use their own threads inside kernels).
//!
//! `face_bench [--image PATH] [--runs N]` (default: the 512×512 astronaut fixture, 20 runs)
//! prints the model load time, then min / median / mean per stage over the runs after one
//! warm-up run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::Device;
use clap::Parser;
use model::face::FaceDetector;
use model::face::embedding::FaceAnalysis;
use model::face::masks::{HalloMasks, MaskConfig, source_pixels};
use model::image_io::{ImageLimits, decode_image};

#[derive(Debug, Parser)]
#[command(about = "Time image decode + face detection + face mesh")]
struct Args {
    /// Photo to analyse (PNG, JPEG or WebP).
    #[arg(long, default_value_os_t = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face/astronaut.png"))]
    image: PathBuf,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// `face_analysis/models/` with `scrfd_10g_bnkps.onnx` + `glintr100.onnx`. The default is the
    /// tiny profile's stand-in graphs, whose timing says nothing about the real antelopev2 files.
    #[arg(long, default_value_os_t = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hallo2-tiny/pretrained_models/face_analysis/models"))]
    face_analysis: PathBuf,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, times: &mut [Duration]) {
    times.sort();
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    println!(
        "{name:<8} min {:>8.2} ms   median {:>8.2} ms   mean {:>8.2} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        mean
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let bytes = std::fs::read(&args.image)?;
    let name = args.image.display().to_string();
    let limits = ImageLimits::default();

    let t = Instant::now();
    let detector = FaceDetector::bundled()?;
    println!(
        "model load (bundled BlazeFace + FaceMesh): {:.2} ms",
        ms(t.elapsed())
    );

    let t = Instant::now();
    let analysis = FaceAnalysis::new(&args.face_analysis)?;
    println!(
        "model load (InsightFace from {}): {:.2} ms",
        args.face_analysis.display(),
        ms(t.elapsed())
    );
    let mask_cfg = MaskConfig::hallo2();

    let runs = args.runs.max(1);
    let (mut decode, mut detect, mut mesh, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut masks, mut embed) = (vec![], vec![]);
    for run in 0..=runs {
        let t0 = Instant::now();
        let image = decode_image(&bytes, &name, &limits)?;
        let t1 = Instant::now();
        let faces = detector.detect_faces(&image)?;
        let t2 = Instant::now();
        let face = faces
            .iter()
            .max_by(|a, b| a.area().total_cmp(&b.area()))
            .ok_or("no face found in the benchmark image")?;
        let result = detector.face_mesh(&image, face)?;
        let t3 = Instant::now();
        let (w, h) = (image.width() as usize, image.height() as usize);
        HalloMasks::new(&mask_cfg, &result.landmarks, w, h, &Device::Cpu)?;
        source_pixels(image.as_raw(), w, h, mask_cfg.image_size, &Device::Cpu)?;
        let t4 = Instant::now();
        analysis.embed(&image)?;
        let t5 = Instant::now();
        if run == 0 {
            println!(
                "{}: {}x{}, {} face(s), best score {:.3}, {} landmarks, presence {:.4}",
                args.image.display(),
                image.width(),
                image.height(),
                faces.len(),
                face.score,
                result.landmarks.len(),
                result.presence
            );
            continue; // warm-up
        }
        decode.push(t1 - t0);
        detect.push(t2 - t1);
        mesh.push(t3 - t2);
        masks.push(t4 - t3);
        embed.push(t5 - t4);
        total.push(t5 - t0);
    }
    println!("{runs} runs:");
    summary("decode", &mut decode);
    summary("detect", &mut detect);
    summary("mesh", &mut mesh);
    summary("masks", &mut masks);
    summary("embed", &mut embed);
    summary("total", &mut total);
    Ok(())
}
