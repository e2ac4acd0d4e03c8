//! `hallo2`: Hallo2 without the studio.
//!
//! `hallo2 generate`: portrait + speech → MP4, through [`Hallo2::generate`] (the studio's own
//! path: same frames for the same inputs, parameters and seed):
//!
//! ```text
//! hallo2 generate [--weights pretrained_models] --config configs/inference/long.yaml \
//!        --image portrait.jpg --audio speech.mp3 --out video.mp4 \
//!        [--steps 40] [--cfg 3.5] [--seed 42] [--pose-weight 1] [--face-weight 1] [--lip-weight 1] \
//!        [--face-expand-ratio 1.2]
//! ```
//! Without `--weights` the files come from the Hub (`--repo`, default
//! `fudan-generative-ai/hallo2`, `--revision`) through the studio's own downloader: the standard
//! HF cache (`HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`), resumable
//! transfers, a byte progress bar, only the files inference reads. (That downloader is why the
//! CLI lives in the server crate: `model` has no network code.)
//!
//! An interrupted `generate` run with the same arguments continues from its last checkpoint
//! (in `<out>.work/`).
//!
//! `hallo2 frames`: the pipeline alone on prepared tensors, writing the frames:
//!
//! ```text
//! hallo2 frames --weights model/tests/fixtures/hallo2-tiny/pretrained_models \
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

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use model::audio_features::AudioFeatures;
use model::audio_io::{
    AudioLimits, CacheKey, FeatureCache, decode_audio_bytes, weights_fingerprint,
};
use model::config::{InferenceConfig, WeightsLayout};
use model::device::{parse_device, parse_dtype};
use model::face::FaceDetector;
use model::hallo2::{
    GenerateObserver, GenerateRequest, Hallo2, Phase, VideoOutput, checkpoint_clips,
};
use model::image_io::{ImageLimits, read_image};
use model::loader::{self, LoadEvent, LoadOptions};
use model::media::Mp4Options;
use model::pipeline::{
    AudioConditioning, Observer, ParamOverrides, PreparedInputs, Progress, Stage,
};
use model::wav2vec2::{Wav2Vec2Config, Wav2Vec2Model};
use server::config::{WeightsConfig, WeightsSource};
use server::weights;

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`).
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

#[derive(Parser)]
#[command(about = "Hallo2: portrait + speech → talking-head video")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Portrait + speech → MP4 (H.264 + Opus).
    Generate(GenerateArgs),
    /// The pipeline on prepared tensors → frames (safetensors).
    Frames(Args),
}

/// The weights, the settings and the per-run choices both commands share.
#[derive(clap::Args)]
struct Common {
    /// The official `pretrained_models/` folder (`huggingface-cli download
    /// fudan-generative-ai/hallo2 --local-dir pretrained_models`); without it, the Hub.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Hub repository of the weights (when `--weights` is not given).
    #[arg(long, default_value_t = WeightsConfig::default().repo)]
    repo: String,
    /// Branch, tag or commit of `--repo`.
    #[arg(long, default_value_t = WeightsConfig::default().revision)]
    revision: String,
    /// Inference settings in the shape of hallo2's configs/inference/long.yaml.
    #[arg(long, default_value = "configs/inference/long.yaml")]
    config: PathBuf,
    /// Folder for the safetensors copy of net.pth and the feature caches (default:
    /// `<weights>/../.cache/hallo2-studio`, or `$XDG_CACHE_HOME/hallo2-studio` (else
    /// `~/.cache/hallo2-studio`) for Hub weights).
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
    /// Feed wav2vec2 the raw mix instead of the vocals Kim_Vocal_2 separates from it (the
    /// official pipeline separates; the separator's files are then not needed).
    #[arg(long)]
    no_vocal_separation: bool,
    /// `cpu`, `cuda`, `cuda:N` or `metal` (GPUs need a build with `--features cuda`/`metal`);
    /// unlike the studio's `auto`, a GPU that does not come up is an error, never the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `f32`, `f16` or `bf16` for the model's weights and activations (the CPU wants f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

impl Common {
    fn device(&self) -> Result<Device, String> {
        let choice = parse_device(&self.device)?;
        choice.open().map_err(|e| {
            let hint = if cfg!(any(feature = "cuda", feature = "metal")) {
                "is the driver there and the device free?"
            } else {
                "a GPU needs a build with `--features cuda` (scripts/gpu-build.sh) or `metal`"
            };
            format!("opening {}: {e} ({hint})", choice.label())
        })
    }

    fn dtype(&self) -> Result<DType, String> {
        parse_dtype(&self.dtype).map_err(|e| format!("--dtype: {e}"))
    }

    fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        match &self.weights {
            Some(weights) => weights.join("..").join(".cache/hallo2-studio"),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("hallo2-studio"),
        }
    }

    /// The `pretrained_models/` folder: `--weights`, or the Hub snapshot (fetching what the HF
    /// cache lacks, with a progress bar).
    fn weights_root(&self) -> Result<PathBuf, Box<dyn std::error::Error>> {
        if let Some(dir) = &self.weights {
            return Ok(dir.clone());
        }
        let mut cfg = WeightsConfig {
            source: WeightsSource::Hub,
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            ..WeightsConfig::default()
        };
        cfg.apply_offline_env(|name| std::env::var(name).ok());
        let files = weights::files_with_separator(!self.no_vocal_separation);
        let runtime = tokio::runtime::Runtime::new()?;
        let hub = |e: weights::WeightsError| format!("{} ({})", e.error, e.hint);
        runtime.block_on(async {
            let resolved = weights::resolve(&cfg, &files).await.map_err(hub)?;
            if let (Some(root), true) = (&resolved.root, resolved.missing.is_empty()) {
                eprintln!("weights: {}@{} from the HF cache", cfg.repo, cfg.revision);
                return Ok(root.clone());
            }
            eprintln!(
                "weights: fetching {} of {} files of {}@{}",
                resolved.missing.len(),
                files.len(),
                cfg.repo,
                cfg.revision
            );
            let bar = ProgressBar::new(0);
            bar.set_style(ProgressStyle::with_template(
                "{msg:>28} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}, eta {eta}",
            )?);
            let shown = bar.clone();
            let on_progress = Arc::new(move |p: weights::DownloadProgress| {
                shown.set_length(p.total);
                shown.set_position(p.done);
                shown.set_message(p.file);
            });
            let root = weights::download(&cfg, &files, &resolved.missing, on_progress)
                .await
                .map_err(hub)?;
            bar.finish_with_message("weights");
            Ok::<_, Box<dyn std::error::Error>>(root)
        })
    }

    fn overrides(&self) -> ParamOverrides {
        ParamOverrides {
            steps: self.steps,
            cfg_scale: self.cfg,
            pose_weight: self.pose_weight,
            face_weight: self.face_weight,
            lip_weight: self.lip_weight,
            seed: self.seed,
        }
    }

    /// The model on `--device` in `--dtype` (the CPU's default f32: candle's f16 CPU kernels
    /// are slower and bf16 convs are missing).
    fn load_options(&self) -> Result<LoadOptions, String> {
        Ok(LoadOptions {
            dtype: self.dtype()?,
            device: self.device()?,
            cache_dir: self.cache_dir(),
            vocal_separator: !self.no_vocal_separation,
        })
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    common: Common,
    /// The portrait (PNG, JPEG, WebP).
    #[arg(long)]
    image: PathBuf,
    /// The speech (wav, mp3, m4a/AAC, ogg/Vorbis, flac).
    #[arg(long)]
    audio: PathBuf,
    /// The MP4 to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    face_expand_ratio: Option<f64>,
    /// Seconds of video between checkpoints (whole clips).
    #[arg(long, default_value_t = 2.5)]
    checkpoint_seconds: f64,
}

#[derive(clap::Args)]
struct Args {
    #[command(flatten)]
    common: Common,
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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Generate(args) => generate(args),
        Command::Frames(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_load(event: LoadEvent) -> std::ops::ControlFlow<()> {
    if let LoadEvent::Done { stage, elapsed } = event {
        eprintln!("loaded {:<15} {:>8.2?}", stage.name(), elapsed);
    }
    std::ops::ControlFlow::Continue(())
}

fn generate(args: GenerateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let common = &args.common;
    let config = InferenceConfig::from_yaml_file(&common.config)?;
    let layout = WeightsLayout::new(common.weights_root()?);
    let detector = Arc::new(FaceDetector::bundled()?);
    let model = Hallo2::load(
        &layout,
        &config,
        &common.load_options()?,
        detector,
        &mut print_load,
    )?;
    let params = config
        .generation_params()
        .with_overrides(&common.overrides());
    let image = read_image(&args.image, &ImageLimits::default())?;
    let cache_dir = common.cache_dir();
    let request = GenerateRequest {
        image: &image,
        audio: &args.audio,
        params: params.clone(),
        face_expand_ratio: args.face_expand_ratio.unwrap_or(config.face_expand_ratio),
        cache_dir: Some(&cache_dir),
        separate_vocals: !common.no_vocal_separation,
    };
    let fps = config.data.export_video.fps;
    let mut work_dir = args.out.clone().into_os_string();
    work_dir.push(".work");
    let out = VideoOutput {
        path: &args.out,
        work_dir: Path::new(&work_dir),
        mp4: Mp4Options {
            fps,
            ..Mp4Options::default()
        },
        checkpoint_clips: checkpoint_clips(args.checkpoint_seconds, fps, params.clip_frames),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{msg:>18} [{bar:40}] {pos}/{len} steps, eta {eta}",
    )?);
    let mut observer = Bar::new(bar.clone());
    let summary = model.generate(&request, &out, &mut observer)?;
    bar.finish_with_message("done");
    let _ = std::fs::remove_dir(&work_dir);
    eprintln!(
        "wrote {} ({} frames, {:.2} s, seed {}{})",
        args.out.display(),
        summary.mp4.frames,
        summary.mp4.duration_s,
        summary.seed,
        summary
            .resumed_from
            .map(|c| format!(", resumed from clip {}", c + 1))
            .unwrap_or_default()
    );
    Ok(())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let common = &args.common;
    let config = InferenceConfig::from_yaml_file(&common.config)?;
    let layout = WeightsLayout::new(common.weights_root()?);
    let options = common.load_options()?;
    let cache_dir = options.cache_dir.clone();
    let loaded = loader::load(&layout, &config, &options, &mut print_load)?;

    let params = config
        .generation_params()
        .with_overrides(&common.overrides());
    let inputs = read_inputs(&args, &layout, &cache_dir, params.clip_frames)?;
    let clips = model::pipeline::Pipeline::clip_count(&inputs, &params)?;
    let bar = ProgressBar::new((clips * params.steps) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{msg:>14} [{bar:40}] {pos}/{len} steps, eta {eta}",
    )?);
    let mut observer = Bar::new(bar.clone());
    let started = std::time::Instant::now();
    let video = loaded.pipeline.generate(&inputs, &params, &mut observer)?;
    // Reading the frames back waits for the device: the time covers the whole generation.
    let video = video.to_device(&Device::Cpu)?;
    let took = started.elapsed();
    bar.finish_with_message("done");
    eprintln!(
        "generated {clips} clips × {} steps in {took:.2?} on {} ({}): {:.1} ms per denoising step with the rest",
        params.steps,
        common.device,
        common.dtype,
        took.as_secs_f64() * 1000.0 / (clips * params.steps).max(1) as f64
    );
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
    let (audio, audio_length) = match (&args.audio, &args.audio_features) {
        (Some(audio), _) => audio_embedding(audio, layout, cache_dir, clip_frames)?,
        (None, Some(file)) => {
            let audio = candle_core::safetensors::load(file, &Device::Cpu)?;
            let length = get(&audio, file, "audio_length")?
                .to_dtype(DType::I64)?
                .flatten_all()?
                .to_vec1::<i64>()?;
            let length = length.first().copied().unwrap_or(0).max(0) as usize;
            (
                AudioConditioning::Windows(get(&audio, file, "audio_emb_windowed")?),
                length,
            )
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
        audio,
        audio_length,
    })
}

/// Decodes `path`, runs the weights' wav2vec2 on it (or reuses cached features of the same
/// bytes, weights and clip length) and returns the features `(T, L, C)` in f32 and the number
/// of video frames the audio covers.
fn audio_embedding(
    path: &Path,
    layout: &WeightsLayout,
    cache_dir: &Path,
    clip_frames: usize,
) -> Result<(AudioConditioning, usize), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let dir = layout.wav2vec_dir();
    let weights = dir.join("model.safetensors");
    let cache = FeatureCache::new(cache_dir.join(model::hallo2::FEATURE_CACHE_DIR));
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
    Ok((
        AudioConditioning::Embedding(features.audio_emb_f32()?),
        features.audio_length,
    ))
}

/// Shows denoising steps over all clips on a terminal progress bar.
struct Bar {
    bar: ProgressBar,
    /// When the clip in progress began (the generation's start for the first).
    clip_started: std::time::Instant,
}

impl Bar {
    fn new(bar: ProgressBar) -> Self {
        Self {
            bar,
            clip_started: std::time::Instant::now(),
        }
    }
}

impl GenerateObserver for Bar {
    fn phase(&mut self, phase: Phase) {
        match phase {
            Phase::Preprocess => self.bar.set_message("face + audio"),
            Phase::Generate { .. } => {
                self.bar.set_message("generating");
                self.clip_started = std::time::Instant::now();
            }
            Phase::Mux => self.bar.set_message("writing the MP4"),
        }
    }

    fn resumed(&mut self, clip: usize) {
        self.bar.println(format!(
            "continuing from the checkpoint at clip {}",
            clip + 1
        ));
    }
}

impl Observer for Bar {
    fn progress(&mut self, p: Progress) {
        if self.bar.length() != Some((p.clips * p.steps) as u64) {
            self.bar.set_length((p.clips * p.steps) as u64);
        }
        let stage = match p.stage {
            Stage::Reference => "reference",
            Stage::Denoise => "denoise",
            Stage::Decode => "decode",
        };
        self.bar
            .set_message(format!("clip {}/{} {stage}", p.clip + 1, p.clips));
        self.bar.set_position((p.clip * p.steps + p.step) as u64);
    }

    /// Each clip's wall time (reference pass, denoising steps, VAE decode; its frames are on
    /// the host by now, so a GPU's queue is done with it).
    fn clip_done(&mut self, clip: usize, _output: &model::pipeline::ClipOutput) {
        let line = format!("clip {}: {:.2?}", clip + 1, self.clip_started.elapsed());
        // A bar that is not drawn (stderr is no terminal) prints nothing of its own.
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        self.clip_started = std::time::Instant::now();
    }
}
