//! `stage_bench`: the costly stages of one Hallo2 clip on full-size weights, each timed on its
//! own, for the side-by-side with the official PyTorch code (`scripts/bench-official.sh` runs
//! both on the same files and prints the ratios):
//!
//! - `reference`: VAE encode of the reference and motion images, the reference UNet on the
//!   guidance rows, the audio projection (once per clip);
//! - `unet_step`: one denoising step: the 3-D UNet on the guidance rows × the clip's frames,
//!   guidance and the DDIM update (the median of the steps after the first);
//! - `decode`: the VAE decode of the clip's frames, one frame at a time;
//! - `wav2vec2`: the audio features of `--audio-seconds` of 16 kHz audio.
//!
//! The clip runs through the product's own `Pipeline::generate` on zero conditioning at
//! `--size`² (a pass costs the same whatever the values); the stages are cut by the observer's
//! progress reports. Prints one JSON object on stdout.
//!
//! ```text
//! cargo run --release -p model --bin stage_bench -- --weights DIR/pretrained_models --size 128
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use clap::Parser;
use model::audio_features::AudioFeatures;
use model::config::{InferenceConfig, WeightsLayout};
use model::device::{parse_device, parse_dtype};
use model::hallo2::{build_audio_encoder, zero_inputs};
use model::loader::{LoadOptions, load};
use model::pipeline::{Guidance, Observer, Progress, Stage};

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`).
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

#[derive(Parser)]
#[command(about = "Seconds per stage of one full-size Hallo2 clip (for the official side-by-side)")]
struct Args {
    /// A `pretrained_models` folder in the Hub layout.
    #[arg(long)]
    weights: PathBuf,
    /// Inference settings (default: the official long.yaml's).
    #[arg(long)]
    inference: Option<PathBuf>,
    /// Image side in pixels (a multiple of 64).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Denoising steps of the clip (the first one is not counted: it warms the caches).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Seconds of audio for wav2vec2.
    #[arg(long, default_value_t = 10.0)]
    audio_seconds: f64,
    /// `cpu`, `cuda`, `cuda:N` or `metal` (a GPU build: `cargo build -p model --features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `f32`, `f16` or `bf16` (wav2vec2 stays f32, as in the official code).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Folder for the safetensors copy of net.pth.
    #[arg(long, default_value = "/tmp/hallo2-stage-bench-cache")]
    cache_dir: PathBuf,
}

/// When each part of the clip began (the device's queued work done first, so a GPU's
/// asynchronous kernels count in the stage that launched them).
struct Marks {
    device: Device,
    reference: Option<Instant>,
    steps: Vec<Instant>,
    decode: Option<Instant>,
}

impl Observer for Marks {
    fn progress(&mut self, p: Progress) {
        self.device.synchronize().expect("the device answers");
        let now = Instant::now();
        match p.stage {
            Stage::Reference => self.reference = Some(now),
            Stage::Denoise => self.steps.push(now),
            Stage::Decode => self.decode = Some(now),
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.steps < 2 {
        return Err("--steps must be at least 2".into());
    }
    if args.size == 0 || args.size % 64 != 0 {
        return Err("--size must be a multiple of 64".into());
    }
    let inference = match &args.inference {
        Some(path) => InferenceConfig::from_yaml_file(path)?,
        None => InferenceConfig::hallo2(),
    };
    let layout = WeightsLayout::new(args.weights.clone());
    let device = parse_device(&args.device)?.open()?;
    let dtype = parse_dtype(&args.dtype)?;
    let options = LoadOptions {
        dtype,
        device: device.clone(),
        cache_dir: args.cache_dir.clone(),
        vocal_separator: false,
    };
    let started = Instant::now();
    let pipeline = load(&layout, &inference, &options, &mut |_| {
        ControlFlow::Continue(())
    })?
    .pipeline;
    let encoder = build_audio_encoder(&layout, &device)?;
    eprintln!("loaded in {:.1} s", started.elapsed().as_secs_f64());

    let mut params = inference.generation_params();
    params.steps = args.steps;
    let inputs = zero_inputs(&pipeline.net.heads, params.clip_frames, args.size)?;
    let mut marks = Marks {
        device: device.clone(),
        reference: None,
        steps: Vec::new(),
        decode: None,
    };
    pipeline.generate(&inputs, &params, &mut marks)?;
    device.synchronize()?;
    let done = Instant::now();
    let (Some(reference), Some(decode)) = (marks.reference, marks.decode) else {
        return Err("the clip reported no reference or decode stage".into());
    };
    let mut bounds = marks.steps.clone();
    bounds.push(decode);
    let step_s: Vec<f64> = bounds
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();

    let rate = f64::from(inference.data.driving_audio.sample_rate);
    let samples = (args.audio_seconds * rate) as usize;
    // A speech-like signal: its values do not change the cost either.
    let audio: Vec<f32> = (0..samples)
        .map(|i| 0.1 * (i as f32 * 0.07).sin())
        .collect();
    let t = Instant::now();
    let features = AudioFeatures::compute(&encoder, &audio, params.clip_frames)?;
    device.synchronize()?;
    let wav2vec2_s = t.elapsed().as_secs_f64();

    let report = serde_json::json!({
        "size": args.size,
        "frames": params.clip_frames,
        "motion_frames": params.motion_frames,
        "cfg_rows": Guidance::new(params.cfg_scale).rows(),
        "audio_seconds": args.audio_seconds,
        "audio_frames": features.seq_len,
        "reference_s": (marks.steps[0] - reference).as_secs_f64(),
        "unet_step_s": median(step_s[1..].to_vec()),
        "first_step_s": step_s[0],
        "decode_s": (done - decode).as_secs_f64(),
        "wav2vec2_s": wav2vec2_s,
        "threads": candle_core::utils::get_num_threads(),
        "device": args.device,
        "dtype": args.dtype,
    });
    println!("{report}");
    Ok(())
}
