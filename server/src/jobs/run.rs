//! One job → one MP4, on the worker thread with the loaded model: preprocess the face and the
//! audio (through the content-hash caches when `use_cache`), denoise every clip with progress
//! and cancellation between steps, decode, encode H.264 + Opus, and record what was made.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use app::jobs::{JobProgress, JobRecord};
use candle_core::{DType, Device};
use model::ModelError;
use model::audio_features::AudioFeatures;
use model::audio_io::{
    AudioError, AudioLimits, CacheKey, FeatureCache, decode_audio_bytes, weights_fingerprint,
};
use model::face::masks::MaskConfig;
use model::face::preflight::FacePreprocessor;
use model::image_io::{ImageLimits, decode_image};
use model::media::{Mp4Options, write_mp4};
use model::pipeline::{ClipOutput, Observer, ParamOverrides, PreparedInputs, Progress, Stage};

use crate::worker::LoadedBackend;

/// Name of the video in a job's folder.
pub const VIDEO_FILE: &str = "output.mp4";
/// The last frame of the latest finished clip (the live job view shows it).
pub const FRAME_FILE: &str = "last_frame.png";

/// Why a job did not produce a video.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str) -> impl FnOnce(String) -> RunError + '_ {
    move |e| RunError::Failed(format!("{what}: {e}"))
}

/// What the runner reports while working.
pub trait RunReporter {
    /// A new phase (`preprocessing`, `generating`, `encoding`) with a message.
    fn phase(&mut self, state: app::jobs::JobState, message: String);
    fn progress(&mut self, progress: JobProgress, message: String);
    /// A clip is done and its last frame is in [`FRAME_FILE`] (1-based clip number).
    fn frame(&mut self, clip: usize);
}

/// The finished video and how it was made.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub seed: u64,
    pub frames: usize,
    pub timings: Vec<(String, f64)>,
}

/// Runs `job` whose inputs are in `dir`; writes `dir/output.mp4`.
pub fn run_job(
    loaded: &LoadedBackend,
    job: &JobRecord,
    dir: &Path,
    cache_dir: &Path,
    cancel: &AtomicBool,
    report: &mut dyn RunReporter,
) -> Result<RunOutput, RunError> {
    let mut timings = Vec::new();
    let started = Instant::now();
    let inference = &loaded.inference;
    let p = &job.params;
    // A re-run of an interrupted job keeps the seed it drew.
    let seed = job
        .seed_used
        .or(p.seed)
        .unwrap_or_else(|| rand::random::<u32>() as u64);
    let params = inference
        .generation_params()
        .with_overrides(&ParamOverrides {
            steps: p.steps,
            cfg_scale: p.cfg_scale,
            pose_weight: p.pose_weight,
            face_weight: p.face_weight,
            lip_weight: p.lip_weight,
            seed: Some(seed),
        });

    // Face.
    let image_bytes = std::fs::read(dir.join(&job.files.image))
        .map_err(|e| RunError::Failed(format!("reading the stored portrait: {e}")))?;
    let image = decode_image(&image_bytes, &job.image_name, &ImageLimits::default())
        .map_err(|e| RunError::Failed(e.to_string()))?;
    let masks = MaskConfig {
        image_size: inference.data.source_image.width,
        face_expand_ratio: p.face_expand_ratio.unwrap_or(inference.face_expand_ratio),
    };
    let faces = FacePreprocessor::new(&loaded.face_detector, &loaded.face_analysis, masks);
    let face = if p.use_cache {
        faces
            .prepare_cached(&image, &cache_dir.join("face"))
            .map(|(f, _)| f)
    } else {
        faces.prepare(&image)
    }
    .map_err(|e| RunError::Failed(e.to_string()))?;
    check(cancel)?;

    // Audio.
    let audio_bytes = std::fs::read(dir.join(&job.files.audio))
        .map_err(|e| RunError::Failed(format!("reading the stored audio: {e}")))?;
    let extension = Path::new(&job.files.audio)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_string);
    let limits = AudioLimits {
        max_duration_s: f64::INFINITY,
        ..AudioLimits::default()
    };
    let audio = decode_audio_bytes(&audio_bytes, extension.as_deref(), &limits)
        .map_err(|e| RunError::Failed(e.to_string()))?;
    let compute = || -> Result<AudioFeatures, AudioError> {
        Ok(AudioFeatures::compute(
            &loaded.audio_encoder,
            &audio.samples_16k,
            params.clip_frames,
        )?)
    };
    let features = if p.use_cache {
        let weights = loaded.layout.wav2vec_dir().join("model.safetensors");
        let fingerprint =
            weights_fingerprint(&weights).map_err(|e| RunError::Failed(e.to_string()))?;
        let cache = FeatureCache::new(cache_dir.join("audio-features"));
        let key = CacheKey::new(&audio_bytes, &fingerprint, params.clip_frames);
        cache
            .get_or_compute(&key, &Device::Cpu, DType::F32, compute)
            .map(|(f, _)| f)
            .map_err(|e| RunError::Failed(e.to_string()))?
    } else {
        compute().map_err(|e| failed("audio features")(e.to_string()))?
    };
    let inputs = PreparedInputs {
        source_pixels: face.source_pixels.clone(),
        face_region: face.masks.face_region.clone(),
        face_emb: face.face_emb.clone(),
        full_mask: face.masks.full_mask.clone(),
        face_mask: face.masks.face_mask.clone(),
        lip_mask: face.masks.lip_mask.clone(),
        audio_windows: features
            .windows_f32()
            .map_err(|e| failed("audio windows")(e.to_string()))?,
        audio_length: features.audio_length,
    };
    timings.push(("preprocess".to_string(), started.elapsed().as_secs_f64()));
    check(cancel)?;

    // Denoise and decode.
    let clips = features.seq_len.div_ceil(params.clip_frames).max(1);
    report.phase(
        app::jobs::JobState::Generating,
        format!("Generating clip 1/{clips}"),
    );
    let mut observer = JobObserver {
        cancel,
        report,
        frame_path: dir.join(FRAME_FILE),
        started: Instant::now(),
        steps: params.steps,
        clips,
        denoise_s: 0.0,
        decode_s: 0.0,
        phase_started: Instant::now(),
        last_stage: None,
    };
    let video = loaded
        .pipeline
        .generate(&inputs, &params, &mut observer)
        .map_err(|e| match e {
            ModelError::Cancelled => RunError::Cancelled,
            other => RunError::Failed(format!("generation: {other}")),
        })?;
    observer.close_phase();
    timings.push(("denoise".to_string(), observer.denoise_s));
    timings.push(("decode".to_string(), observer.decode_s));
    let report = observer.report;
    check(cancel)?;

    // Encode.
    report.phase(
        app::jobs::JobState::Encoding,
        "Writing the MP4 (H.264 + Opus)".into(),
    );
    let encode_started = Instant::now();
    let options = Mp4Options {
        fps: inference.data.export_video.fps,
        ..Mp4Options::default()
    };
    let summary = write_mp4(
        &dir.join(VIDEO_FILE),
        &video,
        &audio.samples_16k,
        16_000,
        &options,
    )
    .map_err(|e| failed("encoding the MP4")(e.to_string()))?;
    timings.push(("encode".to_string(), encode_started.elapsed().as_secs_f64()));
    Ok(RunOutput {
        seed: params.seed,
        frames: summary.frames,
        timings,
    })
}

fn check(cancel: &AtomicBool) -> Result<(), RunError> {
    if cancel.load(Ordering::SeqCst) {
        Err(RunError::Cancelled)
    } else {
        Ok(())
    }
}

/// Turns the pipeline's progress into job progress with an ETA from the measured step time.
struct JobObserver<'a> {
    cancel: &'a AtomicBool,
    report: &'a mut dyn RunReporter,
    frame_path: std::path::PathBuf,
    started: Instant,
    steps: usize,
    clips: usize,
    denoise_s: f64,
    decode_s: f64,
    phase_started: Instant,
    last_stage: Option<Stage>,
}

impl JobObserver<'_> {
    /// Adds the time since the last stage change to that stage's total.
    fn close_phase(&mut self) {
        let s = self.phase_started.elapsed().as_secs_f64();
        match self.last_stage {
            Some(Stage::Decode) => self.decode_s += s,
            Some(_) => self.denoise_s += s,
            None => {}
        }
        self.phase_started = Instant::now();
    }
}

impl Observer for JobObserver<'_> {
    fn progress(&mut self, p: Progress) {
        if self.last_stage != Some(p.stage) {
            self.close_phase();
            self.last_stage = Some(p.stage);
        }
        // Each clip: the reference pass, `steps` denoising steps, decoding (≈ one step each).
        let per_clip = self.steps + 2;
        let done_in_clip = match p.stage {
            Stage::Reference => 0,
            Stage::Denoise => 1 + p.step,
            Stage::Decode => 1 + self.steps,
        };
        let units_total = (self.clips * per_clip) as f64;
        let units_done = (p.clip * per_clip + done_in_clip) as f64;
        let fraction = (units_done / units_total).clamp(0.0, 1.0);
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta_s = (units_done >= 2.0).then(|| elapsed / units_done * (units_total - units_done));
        let what = match p.stage {
            Stage::Reference => "reference pass".to_string(),
            Stage::Denoise => format!("step {}/{}", p.step, p.steps),
            Stage::Decode => "decoding".to_string(),
        };
        self.report.progress(
            JobProgress {
                clip: p.clip + 1,
                clips: p.clips,
                step: p.step,
                steps: p.steps,
                fraction: fraction as f32,
                eta_s,
            },
            format!("Generating clip {}/{}, {what}", p.clip + 1, p.clips),
        );
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn clip_done(&mut self, clip: usize, output: &ClipOutput) {
        match save_last_frame(&output.frames, &self.frame_path) {
            Ok(()) => self.report.frame(clip + 1),
            // A preview is a nicety: the video does not depend on it.
            Err(e) => tracing::warn!(error = %e, "could not write the clip's last frame"),
        }
    }
}

/// The last frame of `(3, F, H, W)` frames in [0, 1] as a PNG, written under a temporary name
/// and renamed (a reader never sees half a file).
fn save_last_frame(frames: &candle_core::Tensor, path: &Path) -> anyhow::Result<()> {
    let (_, f, h, w) = frames.dims4()?;
    let last = frames.narrow(1, f - 1, 1)?.squeeze(1)?; // (3, H, W)
    let rgb: Vec<u8> = last
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let image = image::RgbImage::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| anyhow::anyhow!("frame buffer of the wrong size"))?;
    let tmp = path.with_extension("png.tmp");
    image.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
