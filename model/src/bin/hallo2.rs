//! `hallo2`: run the Hallo2 pipeline on a weights folder and prepared tensors, without the studio.
//!
//! ```text
//! hallo2 --weights model/tests/fixtures/hallo2-tiny/pretrained_models \
//!        --config configs/inference/long_tiny.yaml \
//!        --inputs model/tests/fixtures/hallo2-tiny/cases/inputs.safetensors \
//!        --audio-features model/tests/fixtures/hallo2-tiny/cases/wav2vec.safetensors \
//!        --out video.safetensors
//! ```
//! `--inputs` holds `source_image_pixels (3,H,W)`, `source_image_face_region (3,H,W)`,
//! `face_emb (D)`, `{full,face,lip}_mask.{0..3} (1,h·w)`; `--audio-features` holds
//! `audio_emb_windowed (T,5,L,C)` and `audio_length [frames]`. The output holds `video (3,F,H,W)`
//! in [0, 1], trimmed to the audio length.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::{DType, Device, Tensor};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use model::config::{InferenceConfig, WeightsLayout};
use model::loader::{self, LoadEvent, LoadOptions};
use model::pipeline::{Observer, PreparedInputs, Progress, Stage};

#[derive(Parser)]
#[command(about = "Run Hallo2 on prepared tensors and write the video frames")]
struct Args {
    /// The official `pretrained_models/` folder.
    #[arg(long)]
    weights: PathBuf,
    /// Inference settings in the shape of hallo2's configs/inference/long.yaml.
    #[arg(long, default_value = "configs/inference/long.yaml")]
    config: PathBuf,
    #[arg(long)]
    inputs: PathBuf,
    #[arg(long)]
    audio_features: PathBuf,
    /// Output safetensors file with `video (3, frames, H, W)`.
    #[arg(long)]
    out: PathBuf,
    /// Folder for the safetensors copy of net.pth (default: `<weights>/../.cache/hallo2-studio`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    cfg: Option<f64>,
    #[arg(long)]
    pose_weight: Option<f64>,
    #[arg(long)]
    face_weight: Option<f64>,
    #[arg(long)]
    lip_weight: Option<f64>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = InferenceConfig::from_yaml_file(&args.config)?;
    let layout = WeightsLayout::new(&args.weights);
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| args.weights.join("..").join(".cache/hallo2-studio"));
    // CPU runs in f32 (candle's f16 CPU kernels are slower and bf16 convs are missing).
    let options = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        cache_dir,
    };
    let loaded = loader::load(&layout, &config, &options, &mut |event| {
        if let LoadEvent::Done { stage, elapsed } = event {
            eprintln!("loaded {:<15} {:>8.2?}", stage.name(), elapsed);
        }
    })?;

    let inputs = read_inputs(&args)?;
    let mut params = config.generation_params();
    params.seed = args.seed.unwrap_or(params.seed);
    params.steps = args.steps.unwrap_or(params.steps);
    params.cfg_scale = args.cfg.unwrap_or(params.cfg_scale);
    params.motion_scale = [
        args.pose_weight.unwrap_or(params.motion_scale[0]),
        args.face_weight.unwrap_or(params.motion_scale[1]),
        args.lip_weight.unwrap_or(params.motion_scale[2]),
    ];
    let clips = inputs.audio_windows.dim(0)?.div_ceil(params.clip_frames);
    let bar = ProgressBar::new((clips * params.steps) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{msg:>14} [{bar:40}] {pos}/{len} steps, eta {eta}",
    )?);
    let mut observer = Bar { bar: bar.clone() };
    let video = loaded.pipeline.generate(&inputs, &params, &mut observer)?;
    bar.finish_with_message("done");
    candle_core::safetensors::save(
        &HashMap::from([("video".to_string(), video.clone())]),
        &args.out,
    )?;
    eprintln!(
        "wrote {} frames (seed {}) to {}",
        video.dim(1)?,
        params.seed,
        args.out.display()
    );
    Ok(())
}

fn read_inputs(args: &Args) -> Result<PreparedInputs, Box<dyn std::error::Error>> {
    let inputs = candle_core::safetensors::load(&args.inputs, &Device::Cpu)?;
    let audio = candle_core::safetensors::load(&args.audio_features, &Device::Cpu)?;
    let get =
        |map: &HashMap<String, Tensor>, file: &PathBuf, name: &str| -> Result<Tensor, String> {
            map.get(name)
                .cloned()
                .ok_or_else(|| format!("{} has no tensor {name:?}", file.display()))
        };
    let levels = |kind: &str| -> Result<[Tensor; 4], String> {
        let v: Vec<Tensor> = (0..4)
            .map(|l| get(&inputs, &args.inputs, &format!("{kind}_mask.{l}")))
            .collect::<Result<_, _>>()?;
        Ok(v.try_into().expect("four levels"))
    };
    let audio_length = get(&audio, &args.audio_features, "audio_length")?
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    Ok(PreparedInputs {
        source_pixels: get(&inputs, &args.inputs, "source_image_pixels")?,
        face_region: get(&inputs, &args.inputs, "source_image_face_region")?,
        face_emb: get(&inputs, &args.inputs, "face_emb")?,
        full_mask: levels("full")?,
        face_mask: levels("face")?,
        lip_mask: levels("lip")?,
        audio_windows: get(&audio, &args.audio_features, "audio_emb_windowed")?,
        audio_length: audio_length.first().copied().unwrap_or(0).max(0) as usize,
    })
}

/// Shows denoising steps over all clips on a terminal progress bar.
struct Bar {
    bar: ProgressBar,
}

impl Observer for Bar {
    fn progress(&mut self, p: Progress) {
        let stage = match p.stage {
            Stage::Reference => "reference",
            Stage::Denoise => "denoise",
            Stage::Decode => "decode",
        };
        self.bar
            .set_message(format!("clip {}/{} {stage}", p.clip + 1, p.clips));
        self.bar.set_position((p.clip * p.steps + p.step) as u64);
    }
}
