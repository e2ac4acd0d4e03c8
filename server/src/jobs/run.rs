//! One job → one MP4, on the worker thread with the loaded model: [`Hallo2::generate`] with the
//! job's stored inputs and choices, progress and cancellation between steps, checkpoints in the
//! job's `work/` folder (a job interrupted by a crash or a shutdown continues from its last
//! checkpoint), and a record of what was made.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use app::jobs::{JobProgress, JobRecord};
use candle_core::DType;
use model::ModelError;
use model::hallo2::{
    GenerateObserver, GenerateRequest, Hallo2, Phase, VideoOutput, checkpoint_clips,
};
use model::image_io::{ImageLimits, decode_image};
use model::media::Mp4Options;
use model::pipeline::{ClipOutput, Observer, ParamOverrides, Progress, Stage};

/// Name of the video in a job's folder.
pub const VIDEO_FILE: &str = "output.mp4";
/// The last frame of the latest finished clip (the live job view shows it).
pub const FRAME_FILE: &str = "last_frame.png";

/// Why a job did not produce a video.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cancelled")]
    Cancelled,
    /// Stopped by a shutdown; it continues from its checkpoint when the server starts again.
    #[error("suspended by a shutdown")]
    Suspended,
    #[error("{0}")]
    Failed(String),
}

/// What the runner reports while working.
pub trait RunReporter {
    /// A new phase (`preprocessing`, `generating`, `encoding`) with a message.
    fn phase(&mut self, state: app::jobs::JobState, message: String);
    fn progress(&mut self, progress: JobProgress, message: String);
    /// A clip is done and its last frame is in [`FRAME_FILE`] (1-based clip number).
    fn frame(&mut self, clip: usize);
    /// The seed the job runs with (kept, so a resumed or re-run job draws the same noise).
    fn seed(&mut self, _seed: u64) {}
    /// The job continues from its checkpoint at `clip` (0-based) instead of clip 0.
    fn resumed(&mut self, _clip: usize) {}
}

/// The finished video and how it was made.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub seed: u64,
    pub frames: usize,
    pub timings: Vec<(String, f64)>,
    /// The clip the last run continued from (None: it ran from clip 0).
    pub resumed_from: Option<usize>,
    /// The separator the features were computed after (None: the raw mix).
    pub vocal_separator: Option<String>,
}

/// Name of the folder in a job's folder that holds the encoded samples and checkpoints while the
/// job runs (emptied when the MP4 is written).
pub const WORK_DIR: &str = "work";

/// What stops a running job at its next step.
pub struct StopFlags<'a> {
    /// The user cancelled it.
    pub cancel: &'a AtomicBool,
    /// The server is shutting down: the job stops and resumes from its checkpoint next start.
    pub suspend: &'a dyn Fn() -> bool,
}

impl StopFlags<'_> {
    fn stopped(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || (self.suspend)()
    }

    fn error(&self) -> RunError {
        if self.cancel.load(Ordering::SeqCst) {
            RunError::Cancelled
        } else {
            RunError::Suspended
        }
    }
}

/// Runs `job` whose inputs are in `dir`; writes `dir/output.mp4`, continuing from the job's
/// checkpoint in `dir/work` when an earlier run was interrupted.
pub fn run_job(
    model: &Hallo2,
    job: &JobRecord,
    dir: &Path,
    settings: &RunSettings<'_>,
    stop: &StopFlags<'_>,
    report: &mut dyn RunReporter,
) -> Result<RunOutput, RunError> {
    let started = Instant::now();
    let inference = &model.inference;
    let p = &job.params;
    // A re-run of an interrupted job keeps the seed it drew.
    let seed = job
        .seed_used
        .or(p.seed)
        .unwrap_or_else(|| rand::random::<u32>() as u64);
    report.seed(seed);
    crate::faults::job_started(seed);
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
    let image_bytes = std::fs::read(dir.join(&job.files.image))
        .map_err(|e| RunError::Failed(format!("reading the stored portrait: {e}")))?;
    let image = decode_image(&image_bytes, &job.image_name, &ImageLimits::default())
        .map_err(|e| RunError::Failed(e.to_string()))?;
    drop(image_bytes);
    let audio = dir.join(&job.files.audio);
    let request = GenerateRequest {
        image: &image,
        audio: &audio,
        params: params.clone(),
        face_expand_ratio: p.face_expand_ratio.unwrap_or(inference.face_expand_ratio),
        cache_dir: p.use_cache.then_some(settings.cache_dir),
        separate_vocals: p.separate_vocals.unwrap_or(model.vocal_separator.is_some()),
    };
    let out = VideoOutput {
        path: &dir.join(VIDEO_FILE),
        work_dir: &dir.join(WORK_DIR),
        mp4: Mp4Options {
            fps: inference.data.export_video.fps,
            ..Mp4Options::default()
        },
        checkpoint_clips: checkpoint_clips(
            settings.checkpoint_seconds,
            inference.data.export_video.fps,
            params.clip_frames,
        ),
    };
    let mut observer = JobObserver {
        stop,
        report,
        frame_path: dir.join(FRAME_FILE),
        started: Instant::now(),
        steps: params.steps,
        clips: 1,
        first_clip: 0,
        phase: None,
        phase_started: Instant::now(),
        timings: Vec::new(),
        last_stage: None,
        last_report: Instant::now(),
    };
    let summary = model
        .generate(&request, &out, &mut observer)
        .map_err(|e| match e {
            ModelError::Cancelled => stop.error(),
            other => RunError::Failed(other.to_string()),
        })?;
    observer.close_phase();
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "job generated");
    Ok(RunOutput {
        seed: summary.seed,
        frames: summary.mp4.frames,
        timings: observer.timings,
        resumed_from: summary.resumed_from,
        vocal_separator: request
            .separate_vocals
            .then(|| model.vocal_separator.as_ref().map(|s| s.name()))
            .flatten(),
    })
}

/// Studio-wide settings of every job.
pub struct RunSettings<'a> {
    /// Face and audio-feature caches.
    pub cache_dir: &'a Path,
    /// Video seconds per checkpoint (and per H.264 group).
    pub checkpoint_seconds: f64,
}

/// Turns the generation's progress into job progress with an ETA from the measured step time.
struct JobObserver<'a> {
    stop: &'a StopFlags<'a>,
    report: &'a mut dyn RunReporter,
    frame_path: std::path::PathBuf,
    started: Instant,
    steps: usize,
    clips: usize,
    /// The clip this run started at (a resumed run's ETA counts only what it does).
    first_clip: usize,
    phase: Option<&'static str>,
    phase_started: Instant,
    timings: Vec<(String, f64)>,
    last_stage: Option<Stage>,
    /// When the last progress came (a denoising step's time is the gap to the one before).
    last_report: Instant,
}

impl JobObserver<'_> {
    /// Adds the time since the last phase change to that phase's total.
    fn close_phase(&mut self) {
        let s = self.phase_started.elapsed().as_secs_f64();
        if let Some(name) = self.phase {
            match self.timings.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += s,
                None => self.timings.push((name.to_string(), s)),
            }
        }
        self.phase_started = Instant::now();
    }

    fn enter(&mut self, phase: &'static str) {
        if self.phase != Some(phase) {
            self.close_phase();
            self.phase = Some(phase);
        }
    }
}

impl GenerateObserver for JobObserver<'_> {
    fn phase(&mut self, phase: Phase) {
        match phase {
            Phase::Preprocess => {
                self.enter("preprocess");
            }
            Phase::Generate { clips } => {
                self.clips = clips;
                self.started = Instant::now();
                self.enter("denoise");
                let at = self.first_clip + 1;
                self.report.phase(
                    app::jobs::JobState::Generating,
                    format!("Generating clip {at}/{clips}"),
                );
            }
            Phase::Mux => {
                self.enter("encode");
                self.report.phase(
                    app::jobs::JobState::Encoding,
                    "Writing the MP4 (H.264 + Opus)".into(),
                );
            }
        }
    }

    fn resumed(&mut self, clip: usize) {
        self.first_clip = clip;
        self.report.resumed(clip);
    }
}

impl Observer for JobObserver<'_> {
    fn progress(&mut self, p: Progress) {
        if p.stage == Stage::Denoise {
            crate::metrics::STEP_SECONDS.observe(self.last_report.elapsed().as_secs_f64());
            tracing::debug!(clip = p.clip + 1, step = p.step, "denoising step done");
        }
        self.last_report = Instant::now();
        if self.last_stage != Some(p.stage) {
            self.enter(if p.stage == Stage::Decode {
                "decode"
            } else {
                "denoise"
            });
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
        // The ETA from this run's own pace (a resumed run did not make the clips before it).
        let done_here = units_done - (self.first_clip * per_clip) as f64;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta_s = (done_here >= 2.0).then(|| elapsed / done_here * (units_total - units_done));
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
        self.stop.stopped()
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
