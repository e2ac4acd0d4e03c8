//! Face-path benchmark: wall time of decode → BlazeFace → FaceMesh on one photo, CPU, one thread
//! of control (candle may use its own threads inside matmuls).
//!
//! `face_bench [--image PATH] [--runs N]` (default: the 512×512 astronaut fixture, 20 runs)
//! prints the model load time, then min / median / mean per stage over the runs after one
//! warm-up run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use model::face::FaceDetector;
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

    let runs = args.runs.max(1);
    let (mut decode, mut detect, mut mesh, mut total) = (vec![], vec![], vec![], vec![]);
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
        total.push(t3 - t0);
    }
    println!("{runs} runs:");
    summary("decode", &mut decode);
    summary("detect", &mut detect);
    summary("mesh", &mut mesh);
    summary("total", &mut total);
    Ok(())
}
