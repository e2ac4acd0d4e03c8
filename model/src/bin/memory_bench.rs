//! `memory_bench`: peak memory of a whole generation (portrait + speech → MP4 through
//! [`Hallo2::generate`]) against the audio's length, on the tiny profile at 1 step.
//!
//! Each length runs in a child process of its own (`--one SECONDS`), which reports its peak
//! resident set (`VmHWM`); the parent prints the table and each peak's ratio to the first. The
//! speech is the LibriVox fixture looped to the length, as a 16 kHz 16-bit WAV (10 min = 19 MB,
//! inside the real profile's 50 MB upload limit).
//!
//! ```text
//! cargo run --release -p model --bin memory_bench            # 10, 60, 120 and 600 s
//! cargo run --release -p model --bin memory_bench -- --seconds 10 --seconds 60
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use clap::Parser;
use model::config::{InferenceConfig, WeightsLayout};
use model::face::FaceDetector;
use model::hallo2::{GenerateObserver, GenerateRequest, Hallo2, VideoOutput};
use model::image_io::{ImageLimits, read_image};
use model::loader::LoadOptions;
use model::media::Mp4Options;
use model::pipeline::Observer;

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`).
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

#[derive(Parser)]
#[command(about = "Peak RSS of a tiny-profile generation against the audio's length")]
struct Args {
    /// Audio lengths to measure, in seconds.
    #[arg(long = "seconds", default_values_t = [10.0, 60.0, 120.0, 600.0])]
    seconds: Vec<f64>,
    /// Run one generation of this length and print `peak_kb seconds_taken frames`.
    #[arg(long)]
    one: Option<f64>,
    /// Denoising steps per clip.
    #[arg(long, default_value_t = 1)]
    steps: usize,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.one {
        Some(seconds) => one(seconds, args.steps),
        None => all(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn all(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    println!("audio s   frames   peak RSS MB   × first   wall s");
    let mut first = None;
    for &seconds in &args.seconds {
        let out = Command::new(&exe)
            .args([
                "--one",
                &seconds.to_string(),
                "--steps",
                &args.steps.to_string(),
            ])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{seconds} s: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        let line = String::from_utf8(out.stdout)?;
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let [peak_kb, wall_s, frames] = fields[..] else {
            return Err(format!("unexpected child output {line:?}").into());
        };
        let base = *first.get_or_insert(peak_kb);
        println!(
            "{seconds:>7.0} {frames:>8.0} {:>13.1} {:>9.3} {wall_s:>8.1}",
            peak_kb / 1024.0,
            peak_kb / base
        );
    }
    Ok(())
}

/// `VmHWM` of this process, in kB.
fn peak_rss_kb() -> Result<f64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad VmHWM line")?
        .parse()?)
}

/// Writes the speech fixture looped to `seconds` as a 16 kHz mono 16-bit WAV file at `path`,
/// a second at a time (the bench must not hold the file it measures the studio not holding).
fn write_speech_wav(path: &Path, seconds: f64) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let wav =
        std::fs::read(fixtures().join("speech/sense_and_sensibility_01_austen_64kb-0880.wav"))?;
    if wav.len() < 44 || &wav[36..40] != b"data" {
        return Err("the speech fixture is not a canonical 44-byte-header WAV".into());
    }
    let pcm = &wav[44..];
    let bytes = (seconds * 16_000.0) as usize * 2;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(b"RIFF")?;
    out.write_all(&(36 + bytes as u32).to_le_bytes())?;
    out.write_all(&wav[8..40])?;
    out.write_all(&(bytes as u32).to_le_bytes())?;
    let mut left = bytes;
    for piece in pcm.chunks(32_000).cycle() {
        if left == 0 {
            break;
        }
        let n = piece.len().min(left);
        out.write_all(&piece[..n])?;
        left -= n;
    }
    out.flush()?;
    Ok(())
}

/// A folder removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Quiet;
impl Observer for Quiet {}
impl GenerateObserver for Quiet {}

fn one(seconds: f64, steps: usize) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let inference =
        InferenceConfig::from_yaml_file(&root.join("configs/inference/long_tiny.yaml"))?;
    let scratch = ScratchDir(
        std::env::temp_dir().join(format!("hallo2-memory-bench-{}", std::process::id())),
    );
    std::fs::create_dir_all(scratch.path())?;
    let audio = scratch.path().join("speech.wav");
    write_speech_wav(&audio, seconds)?;
    let model = Hallo2::load(
        &WeightsLayout::new(fixtures().join("hallo2-tiny/pretrained_models")),
        &inference,
        &LoadOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            cache_dir: scratch.path().join("cache"),
            vocal_separator: true,
        },
        Arc::new(FaceDetector::bundled()?),
        &mut |_| std::ops::ControlFlow::Continue(()),
    )?;
    let image = read_image(
        &fixtures().join("face/astronaut.png"),
        &ImageLimits::default(),
    )?;
    let mut params = inference.generation_params();
    params.steps = steps;
    let request = GenerateRequest {
        image: &image,
        audio: &audio,
        params,
        face_expand_ratio: inference.face_expand_ratio,
        cache_dir: None,
        separate_vocals: true,
    };
    let out = scratch.path().join("out.mp4");
    let summary = model.generate(
        &request,
        &VideoOutput {
            path: &out,
            work_dir: &scratch.path().join("work"),
            mp4: Mp4Options {
                fps: inference.data.export_video.fps,
                ..Mp4Options::default()
            },
            checkpoint_clips: 16,
        },
        &mut Quiet,
    )?;
    println!(
        "{} {:.2} {}",
        peak_rss_kb()?,
        started.elapsed().as_secs_f64(),
        summary.mp4.frames
    );
    Ok(())
}
