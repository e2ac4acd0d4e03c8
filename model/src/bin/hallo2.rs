//! `hallo2`: run the Hallo2 pipeline on a weights folder and prepared tensors, without the studio.
//!
//! ```text
//! hallo2 --weights model/tests/fixtures/hallo2-tiny/pretrained_models \
//!        --config configs/inference/long_tiny.yaml \
//!        --inputs model/tests/fixtures/hallo2-tiny/cases/inputs.safetensors \
//!        --audio-features model/tests/fixtures/hallo2-tiny/cases/wav2vec.safetensors \
//!        --out video.safetensors
//! ```
//! or `--audio speech.wav` (wav, mp3, m4a/AAC, ogg/Vorbis, flac) instead of `--audio-features`:
//! the audio is decoded, resampled to 16 kHz and run through `<weights>/wav2vec/
//! wav2vec2-base-960h`; the features are cached under `<cache-dir>/audio-features`.
//! `--inputs` holds `source_image_pixels (3,H,W)`, `source_image_face_region (3,H,W)`,
//! `face_emb (D)`, `{full,face,lip}_mask.{0..3} (1,h·w)`; `--audio-features` holds
//! `audio_emb_windowed (T,5,L,C)` and `audio_length [frames]`. The output holds `video (3,F,H,W)`
//! in [0, 1], trimmed to the audio length.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use model::audio_features::AudioFeatures;
use model::audio_io::{
    AudioLimits, CacheKey, FeatureCache, decode_audio_bytes, weights_fingerprint,
};
use model::config::{InferenceConfig, WeightsLayout};
use model::loader::{self, LoadEvent, LoadOptions};
use model::pipeline::{Observer, ParamOverrides, PreparedInputs, Progress, Stage};
use model::wav2vec2::{Wav2Vec2Config, Wav2Vec2Model};

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`).
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

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
    /// Precomputed audio windows (see above).
    #[arg(long, required_unless_present = "audio", conflicts_with = "audio")]
    audio_features: Option<PathBuf>,
    /// A driving audio file, turned into windows with the weights' wav2vec2.
    #[arg(long)]
    audio: Option<PathBuf>,
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
    let cache_dir = options.cache_dir.clone();
    let loaded = loader::load(&layout, &config, &options, &mut |event| {
        if let LoadEvent::Done { stage, elapsed } = event {
            eprintln!("loaded {:<15} {:>8.2?}", stage.name(), elapsed);
        }
        std::ops::ControlFlow::Continue(())
    })?;

    let params = config.generation_params().with_overrides(&ParamOverrides {
        steps: args.steps,
        cfg_scale: args.cfg,
        pose_weight: args.pose_weight,
        face_weight: args.face_weight,
        lip_weight: args.lip_weight,
        seed: args.seed,
    });
    let inputs = read_inputs(&args, &layout, &cache_dir, params.clip_frames)?;
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

fn read_inputs(
    args: &Args,
    layout: &WeightsLayout,
    cache_dir: &Path,
    clip_frames: usize,
) -> Result<PreparedInputs, Box<dyn std::error::Error>> {
    let inputs = candle_core::safetensors::load(&args.inputs, &Device::Cpu)?;
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
    let (audio_windows, audio_length) = match (&args.audio, &args.audio_features) {
        (Some(audio), _) => audio_windows(audio, layout, cache_dir, clip_frames)?,
        (None, Some(file)) => {
            let audio = candle_core::safetensors::load(file, &Device::Cpu)?;
            let length = get(&audio, file, "audio_length")?
                .to_dtype(DType::I64)?
                .flatten_all()?
                .to_vec1::<i64>()?;
            let length = length.first().copied().unwrap_or(0).max(0) as usize;
            (get(&audio, file, "audio_emb_windowed")?, length)
        }
        (None, None) => return Err("give --audio or --audio-features".into()),
    };
    Ok(PreparedInputs {
        source_pixels: get(&inputs, &args.inputs, "source_image_pixels")?,
        face_region: get(&inputs, &args.inputs, "source_image_face_region")?,
        face_emb: get(&inputs, &args.inputs, "face_emb")?,
        full_mask: levels("full")?,
        face_mask: levels("face")?,
        lip_mask: levels("lip")?,
        audio_windows,
        audio_length,
    })
}

/// Decodes `path`, runs the weights' wav2vec2 on it (or reuses cached features of the same
/// bytes, weights and clip length) and returns the windows `(T, 5, L, C)` in f32 and the number
/// of video frames the audio covers.
fn audio_windows(
    path: &Path,
    layout: &WeightsLayout,
    cache_dir: &Path,
    clip_frames: usize,
) -> Result<(Tensor, usize), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let dir = layout.wav2vec_dir();
    let weights = dir.join("model.safetensors");
    let cache = FeatureCache::new(cache_dir.join("audio-features"));
    let key = CacheKey::new(&bytes, &weights_fingerprint(&weights)?, clip_frames);
    let (features, outcome) = cache.get_or_compute(&key, &Device::Cpu, DType::F32, || {
        let extension = path.extension().and_then(|e| e.to_str());
        let audio = decode_audio_bytes(&bytes, extension, &AudioLimits::default())?;
        eprintln!(
            "audio: {} {} Hz × {} ch, {:.2} s",
            audio.codec, audio.source_rate, audio.channels, audio.duration_s
        );
        let cfg = Wav2Vec2Config::from_file(&dir.join("config.json"))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        // SAFETY: the file is mapped read-only and not modified while the model is built.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu)? };
        let model = Wav2Vec2Model::new(&cfg, vb)?;
        Ok(AudioFeatures::compute(
            &model,
            &audio.samples_16k,
            clip_frames,
        )?)
    })?;
    eprintln!(
        "audio features: {} frames ({:?}, {:.2?})",
        features.audio_length,
        outcome,
        start.elapsed()
    );
    Ok((features.windows_f32()?, features.audio_length))
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
