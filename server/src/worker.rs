//! The worker: a dedicated OS thread that loads the model stage by stage and then owns it (as in
//! mistral.rs's engine thread). It is the only place tensors are touched; handlers talk to it
//! through [`Backend`] and its command channel.
//!
//! Stages, in order: `resolve → download → verify → face_analysis → audio_encoder → vae →
//! reference_unet → denoising_unet → heads → warmup → ready`. `download` runs only for the Hub
//! source, `warmup` only when the config asks for it.
//! `verify`, `vae`, `reference_unet`, `denoising_unet` and `heads` are `model::loader::load`'s own
//! events; `face_analysis` and `audio_encoder` are built when `verify` reports done.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use app::types::LoadStage;
use candle_core::{DType, Device};
use model::ModelError;
use model::config::{InferenceConfig, WeightsLayout};
use model::device::parse_dtype;
use model::face::FaceDetector;
use model::hallo2::Hallo2;
use model::loader::{self, LoadEvent, LoadOptions};
use model::pipeline::{Observer, Progress, Stage};

use app::jobs::{JobProgress, JobState, MadeWith};

use crate::backend::{Backend, Command};
use crate::clock::rfc3339_now;
use crate::config::{DeviceChoice, ServerConfig, WeightsSource, parse_device};
use crate::jobs::Jobs;
use crate::jobs::run::{
    FRAME_FILE, RunError, RunOutput, RunReporter, RunSettings, StopFlags, VIDEO_FILE, run_job,
};
use crate::jobs::transition::JobChange;
use crate::lifecycle::Signal;
use crate::timings::{Timings, timings_key};
use crate::weights::{self, DownloadProgress, WeightsError};

/// The stages this build runs for `config`, in order.
pub fn stages_for(config: &ServerConfig) -> Vec<LoadStage> {
    LoadStage::ALL
        .into_iter()
        .filter(|s| match s {
            LoadStage::Download => config.weights.source == WeightsSource::Hub,
            LoadStage::Warmup => config.warmup.enabled,
            LoadStage::VocalSeparator => config.vocal_separation,
            _ => true,
        })
        .collect()
}

/// The files this build reads (relative to `pretrained_models/`).
pub fn files_for(config: &ServerConfig) -> Vec<String> {
    weights::files_with_separator(config.vocal_separation)
}

/// The device name a config will load on (`cpu`, `cuda:0`, `metal`), before creating it.
pub fn device_name(config: &ServerConfig) -> String {
    match parse_device(&config.device) {
        Ok(DeviceChoice::Auto) => {
            if cfg!(feature = "cuda") {
                "cuda:0".into()
            } else if cfg!(feature = "metal") {
                "metal".into()
            } else {
                "cpu".into()
            }
        }
        Ok(choice) => choice.label(),
        Err(_) => "cpu".into(),
    }
}

/// The dtype name a config will load with (`auto`: f32 on CPU, the yaml's on a GPU).
pub fn dtype_name(config: &ServerConfig, device: &str, yaml: Option<DType>) -> String {
    match config.dtype.as_str() {
        "auto" if device == "cpu" => "f32".into(),
        "auto" => yaml.map_or("f16".into(), |d| d.as_str().to_string()),
        other => other.to_string(),
    }
}

/// The timings store for a config (device, dtype and weights fingerprint).
pub fn timings_for(config: &ServerConfig) -> Timings {
    let device = device_name(config);
    let yaml = InferenceConfig::from_yaml_file(&config.inference)
        .ok()
        .map(|c| c.weight_dtype.dtype());
    let dtype = dtype_name(config, &device, yaml);
    let key = timings_key(config, &device, &dtype, &files_for(config));
    Timings::new(&config.cache_dir, key)
}

/// The running worker thread.
pub struct WorkerHandle {
    thread: std::thread::JoinHandle<()>,
}

impl WorkerHandle {
    /// Waits up to `timeout` for the thread to end (a load in progress finishes its current
    /// stage first); returns whether it ended.
    pub fn join_timeout(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.thread.join().is_ok()
    }
}

/// A cluster worker's link: where it takes jobs from, and the slot its status report reads
/// the running job from.
#[derive(Clone)]
pub struct ClusterWork {
    pub cluster: Arc<crate::cluster::Cluster>,
    pub current: Arc<std::sync::Mutex<Option<String>>>,
}

/// Starts the worker thread and connects it to `backend`. Downloads run on `runtime`. With
/// `cluster`, jobs come from the cluster's queue instead of `jobs`.
pub fn spawn(
    alive: Arc<std::sync::atomic::AtomicBool>,
    config: Arc<ServerConfig>,
    backend: Backend,
    jobs: Jobs,
    detector: Arc<FaceDetector>,
    runtime: tokio::runtime::Handle,
    cluster: Option<ClusterWork>,
) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::channel();
    backend.attach_worker(tx);
    // Raised before the thread exists, so a supervisor never sees a worker starting as dead.
    let alive = AliveFlag::raise(alive);
    let thread = std::thread::Builder::new()
        .name("hallo2-worker".into())
        .spawn(move || {
            let _alive = alive;
            run(
                &config,
                &backend,
                &jobs,
                &detector,
                &runtime,
                cluster.as_ref(),
                rx,
            );
        })?;
    Ok(WorkerHandle { thread })
}

/// True while the worker thread runs, false once it ends (returning or unwinding).
struct AliveFlag(Arc<std::sync::atomic::AtomicBool>);

impl AliveFlag {
    fn raise(flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        Self(flag)
    }
}

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("the worker thread ended");
    }
}

fn run(
    config: &ServerConfig,
    backend: &Backend,
    jobs: &Jobs,
    detector: &Arc<FaceDetector>,
    runtime: &tokio::runtime::Handle,
    cluster: Option<&ClusterWork>,
    commands: mpsc::Receiver<Command>,
) {
    let mut loaded: Option<Hallo2> = None;
    loop {
        // A loaded cluster worker takes jobs between commands; otherwise commands are all.
        let command = match (cluster, &loaded) {
            (Some(work), Some(model)) => match commands.try_recv() {
                Ok(command) => command,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    if *backend.draining().borrow() {
                        std::thread::sleep(Duration::from_millis(50));
                    } else {
                        crate::cluster::runner::Runner {
                            cluster: &work.cluster,
                            config,
                            backend,
                            model,
                            store: jobs.store(),
                            runtime,
                            current: &work.current,
                        }
                        .take_one();
                    }
                    continue;
                }
            },
            _ => match commands.recv() {
                Ok(command) => command,
                Err(_) => break,
            },
        };
        crate::faults::worker_command();
        match command {
            Command::RunJobs => {
                if let Some(model) = &loaded {
                    run_waiting_jobs(config, backend, jobs, model);
                }
            }
            Command::Load => {
                // Free the old model before reading the new one.
                loaded = None;
                jobs.set_model_ready(false);
                let started = Instant::now();
                let loading =
                    contain(|| load(config, backend, detector, runtime)).unwrap_or_else(|panic| {
                        Err(Failure {
                            stage: None,
                            error: format!("internal error while loading: {panic}"),
                            hint: "this is a bug; the log has the details. Reload to try again."
                                .into(),
                        })
                    });
                match loading {
                    Ok(Loaded {
                        model,
                        warmup_step_s,
                        device_note,
                    }) => {
                        let device = device_label(&model.pipeline.device);
                        let dtype = model.pipeline.dtype.as_str().to_string();
                        tracing::info!("Hallo2 model loaded successfully!");
                        // Saved before "ready", so a start that follows it expects these times.
                        let timings = timings_for(config);
                        if let Err(e) =
                            timings.save(&backend.measured_ms(), warmup_step_s, rfc3339_now())
                        {
                            tracing::warn!(error = %e, "could not save the stage timings");
                        }
                        let _ = backend.signal(Signal::Ready {
                            device,
                            dtype,
                            warmup_step_s,
                            device_note,
                        });
                        tracing::info!(
                            load_s = started.elapsed().as_secs_f64(),
                            warmup_step_s,
                            "Backend is ready!"
                        );
                        prune_cache(
                            &config.cache_dir.join(PTH_CACHE_DIR),
                            config.limits.weights_cache_bytes,
                        );
                        jobs.set_model_ready(true);
                        run_waiting_jobs(config, backend, jobs, &model);
                        loaded = Some(model);
                    }
                    Err(failure) => {
                        tracing::error!(
                            stage = failure.stage.map(LoadStage::name),
                            error = %failure.error,
                            hint = %failure.hint,
                            "loading failed"
                        );
                        let _ = backend.signal(Signal::Failed {
                            stage: failure.stage,
                            error: failure.error,
                            hint: failure.hint,
                        });
                    }
                }
            }
            Command::Shutdown => break,
        }
    }
    drop(loaded);
    tracing::info!("worker stopped");
}

/// Folder of the `net.pth` conversions under `cache_dir`.
pub const PTH_CACHE_DIR: &str = "pth";

/// Keeps a cache folder within its size limit (least recently used first).
pub(crate) fn prune_cache(dir: &std::path::Path, limit_bytes: u64) {
    let pruned = model::cache_prune::prune(dir, "safetensors", limit_bytes);
    if !pruned.removed.is_empty() {
        tracing::info!(
            folder = %dir.display(),
            removed = pruned.removed.len(),
            freed_mb = pruned.freed_bytes / 1_000_000,
            kept_mb = pruned.kept_bytes / 1_000_000,
            limit_mb = limit_bytes / 1_000_000,
            "pruned a cache"
        );
    }
}

/// Runs `work`, turning a panic inside it into its message: a fault in one job (or one load)
/// ends that job with its reason, and the worker carries on with the next.
fn contain<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Runs waiting jobs one after another until none is left or the server drains.
fn run_waiting_jobs(config: &ServerConfig, backend: &Backend, jobs: &Jobs, model: &Hallo2) {
    while !*backend.draining().borrow() {
        let Some((job, cancel)) = jobs.start_next() else {
            break;
        };
        let id = job.id.clone();
        let started = Instant::now();
        let span = tracing::info_span!("job", job = %id);
        let _in_job = span.enter();
        tracing::info!("job started");
        let dir = jobs.store().dir(&id);
        let mut reporter = JobUpdates { jobs, id: &id };
        let settings = RunSettings {
            cache_dir: &config.cache_dir,
            checkpoint_seconds: config.checkpoint_seconds,
        };
        let draining = backend.draining();
        let suspend = move || *draining.borrow();
        let stop = StopFlags {
            cancel: &cancel,
            suspend: &suspend,
        };
        let (result, panicked) = run_contained(model, &job, &dir, &settings, &stop, &mut reporter);
        let end = job_end(model, result, panicked);
        crate::metrics::job_ended(end.how, started.elapsed().as_secs_f64());
        let outcome = match end.completion {
            Some(completion) => jobs.change_then(&id, end.change, |record| completion.fill(record)),
            None => jobs.change(&id, end.change),
        };
        match outcome {
            Ok(record) => tracing::info!(job = %id, state = record.state.name(), "job ended"),
            Err(e) => tracing::error!(job = %id, error = %e, "could not record the job's end"),
        }
        jobs.finish_running(&id);
        prune_cache(
            &config.cache_dir.join(model::hallo2::FEATURE_CACHE_DIR),
            config.limits.feature_cache_bytes,
        );
    }
}

/// [`run_job`] with a panic inside it turned into the job's failure; also says whether it
/// panicked.
pub(crate) fn run_contained(
    model: &Hallo2,
    job: &app::jobs::JobRecord,
    dir: &std::path::Path,
    settings: &RunSettings<'_>,
    stop: &StopFlags<'_>,
    reporter: &mut dyn RunReporter,
) -> (Result<RunOutput, RunError>, bool) {
    match contain(|| run_job(model, job, dir, settings, stop, reporter)) {
        Ok(result) => (result, false),
        Err(panic) => {
            tracing::error!(panic = %panic, "the job panicked");
            (
                Err(RunError::Failed(format!(
                    "internal error while generating: {panic}"
                ))),
                true,
            )
        }
    }
}

/// What a run means for the job's record.
pub(crate) struct JobEnd {
    /// How it ended, for the metrics: completed, cancelled, suspended, panicked or failed.
    pub how: &'static str,
    pub change: JobChange,
    /// What a completion records besides its state.
    pub completion: Option<Completion>,
}

/// The seed, timings and provenance of a finished video.
pub(crate) struct Completion {
    seed: u64,
    timings: Vec<(String, f64)>,
    made_with: MadeWith,
}

impl Completion {
    pub fn fill(self, record: &mut app::jobs::JobRecord) {
        record.seed_used = Some(self.seed);
        record.timings = self.timings;
        record.files.video = Some(VIDEO_FILE.into());
        record.made_with = Some(self.made_with);
    }
}

pub(crate) fn job_end(
    model: &Hallo2,
    result: Result<RunOutput, RunError>,
    panicked: bool,
) -> JobEnd {
    let end = |how, change| JobEnd {
        how,
        change,
        completion: None,
    };
    match result {
        Ok(out) => {
            let message = match out.resumed_from {
                Some(clip) => format!(
                    "Completed: {} frames (resumed from clip {})",
                    out.frames,
                    clip + 1
                ),
                None => format!("Completed: {} frames", out.frames),
            };
            JobEnd {
                how: "completed",
                change: JobChange::Completed { message },
                completion: Some(Completion {
                    seed: out.seed,
                    timings: out.timings,
                    made_with: MadeWith {
                        device: device_label(&model.pipeline.device),
                        dtype: model.pipeline.dtype.as_str().to_string(),
                        weights: weight_fingerprints(&model.layout),
                        vocal_separator: out.vocal_separator,
                    },
                }),
            }
        }
        Err(RunError::Cancelled) => end("cancelled", JobChange::Stopped),
        // Not a failure: it waits for the next start and continues from its checkpoint.
        Err(RunError::Suspended) => end("suspended", JobChange::Suspended),
        Err(RunError::Failed(error)) if panicked => end("panicked", JobChange::Failed(error)),
        Err(RunError::Failed(error)) => end("failed", JobChange::Failed(error)),
    }
}

/// Size and modification time of each weight file the pipeline reads, hashed (provenance for
/// `job.json`; cheap: no file content is read).
fn weight_fingerprints(layout: &WeightsLayout) -> Vec<(String, String)> {
    weights::required_files()
        .iter()
        .filter_map(|rel| {
            let meta = std::fs::metadata(layout.root.join(rel)).ok()?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let mut h = blake3::Hasher::new();
            h.update(rel.as_bytes());
            h.update(&meta.len().to_le_bytes());
            h.update(&mtime.to_le_bytes());
            Some((rel.to_string(), h.finalize().to_hex()[..16].to_string()))
        })
        .collect()
}

/// Reports a running job: phases and frames are saved, per-step progress only published.
struct JobUpdates<'a> {
    jobs: &'a Jobs,
    id: &'a str,
}

impl RunReporter for JobUpdates<'_> {
    fn phase(&mut self, state: JobState, message: String) {
        let _ = self
            .jobs
            .change(self.id, JobChange::Phase { state, message });
    }

    fn progress(&mut self, progress: JobProgress, message: String) {
        self.jobs.progress(self.id, |job| {
            job.progress = progress;
            job.message = message;
        });
    }

    fn frame(&mut self, clip: usize) {
        let _ = self.jobs.update(self.id, |job| {
            job.files.frame = Some(FRAME_FILE.into());
            job.files.frame_clip = clip;
        });
    }

    fn seed(&mut self, seed: u64) {
        let _ = self.jobs.update(self.id, |job| job.seed_used = Some(seed));
    }

    fn resumed(&mut self, clip: usize) {
        let _ = self.jobs.update(self.id, |job| {
            job.resumed_from_clip = Some(clip + 1);
            job.message = format!("Resumed from clip {}", clip + 1);
        });
    }
}

/// A failed load: the stage (None: the running one), what went wrong, what to do.
#[derive(Debug)]
struct Failure {
    stage: Option<LoadStage>,
    error: String,
    hint: String,
}

impl From<WeightsError> for Failure {
    fn from(e: WeightsError) -> Self {
        Self {
            stage: None,
            error: e.error,
            hint: e.hint,
        }
    }
}

fn model_failure(e: &ModelError, config: &ServerConfig) -> Failure {
    let hint = match e {
        ModelError::Weights { path, .. } => match config.weights.source {
            WeightsSource::Hub => format!(
                "{} is damaged or incomplete: delete it (and its blob in the HF cache) and POST /api/backend/reload to fetch it again",
                path.display()
            ),
            WeightsSource::Local => format!(
                "replace {} with the file from {} (huggingface-cli download {} --local-dir <dir>), then POST /api/backend/reload",
                path.display(),
                config.weights.repo,
                config.weights.repo
            ),
        },
        ModelError::Config { path, .. } => {
            format!("fix {}, then POST /api/backend/reload", path.display())
        }
        ModelError::Io { .. } => {
            "check that the file exists and is readable, and that the cache folder is writable"
                .into()
        }
        _ => "see logs/backend.log; POST /api/backend/reload retries".into(),
    };
    Failure {
        stage: None,
        error: e.to_string(),
        hint,
    }
}

/// One stage's clock, logging its duration at INFO (STYLE §5.7).
fn begin(backend: &Backend, stage: LoadStage) -> Instant {
    tracing::info!(stage = stage.name(), "stage started");
    let _ = backend.signal(Signal::StageStarted(stage));
    Instant::now()
}

fn end(backend: &Backend, stage: LoadStage, started: Instant, message: Option<String>) {
    tracing::info!(
        stage = stage.name(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stage done"
    );
    let _ = backend.signal(Signal::StageDone { stage, message });
}

/// A loaded model and what its load learnt.
struct Loaded {
    model: Hallo2,
    /// Seconds per denoising step of the warm-up pass.
    warmup_step_s: Option<f64>,
    /// Why the model is not on a GPU (see [`Placement`]).
    device_note: Option<String>,
}

fn load(
    config: &ServerConfig,
    backend: &Backend,
    detector: &Arc<FaceDetector>,
    runtime: &tokio::runtime::Handle,
) -> Result<Loaded, Failure> {
    tracing::info!("Loading Hallo2 model...");
    let stages = backend.stages();
    let files = files_for(config);

    // resolve
    let t = begin(backend, LoadStage::Resolve);
    let inference = InferenceConfig::from_yaml_file(&config.inference)
        .map_err(|e| model_failure(&e, config))?;
    let Placement {
        device,
        note: device_note,
    } = place(config)?;
    if let Some(note) = &device_note {
        tracing::warn!(device = %device_label(&device), "{note}");
    }
    let dtype = parse_dtype(&dtype_name(
        config,
        &device_label(&device),
        Some(inference.weight_dtype.dtype()),
    ))
    .unwrap_or(DType::F32);
    let resolved = runtime.block_on(weights::resolve(&config.weights, &files))?;
    end(
        backend,
        LoadStage::Resolve,
        t,
        Some(format!(
            "{} files found ({} bytes), {} to download; on {}{}",
            files.len() - resolved.missing.len(),
            resolved.present_bytes,
            resolved.missing.len(),
            device_label(&device),
            device_note
                .as_deref()
                .map(|note| format!(" ({note})"))
                .unwrap_or_default(),
        )),
    );

    // download
    let root = if stages.contains(&LoadStage::Download) {
        let t = begin(backend, LoadStage::Download);
        let root = match resolved.root {
            Some(root) if resolved.missing.is_empty() => root,
            _ => {
                let b = backend.clone();
                let on_progress = Arc::new(move |p: DownloadProgress| {
                    let _ = b.signal(Signal::StageProgress {
                        stage: LoadStage::Download,
                        done: p.done,
                        total: p.total,
                        file: Some(app::types::FileProgress {
                            name: p.file,
                            done: p.file_done,
                            total: p.file_total,
                        }),
                        message: None,
                    });
                });
                runtime.block_on(weights::download(
                    &config.weights,
                    &files,
                    &resolved.missing,
                    on_progress,
                ))?
            }
        };
        end(
            backend,
            LoadStage::Download,
            t,
            Some(format!("{} files fetched", resolved.missing.len())),
        );
        root
    } else {
        resolved.root.unwrap_or_default()
    };
    let layout = WeightsLayout::new(root);

    // verify, face_analysis, audio_encoder, vae, reference_unet, denoising_unet, heads
    let options = LoadOptions {
        dtype,
        device: device.clone(),
        cache_dir: config.cache_dir.join(PTH_CACHE_DIR),
        vocal_separator: config.vocal_separation,
    };
    let mut running = None;
    let mut on_event = |event: LoadEvent| {
        match event {
            LoadEvent::Started(stage) => {
                let stage = map_stage(stage);
                running = Some(stage);
                tracing::info!(stage = stage.name(), "stage started");
                let _ = backend.signal(Signal::StageStarted(stage));
            }
            LoadEvent::Progress { stage, done, total } => {
                let _ = backend.signal(Signal::StageProgress {
                    stage: map_stage(stage),
                    done,
                    total,
                    file: None,
                    message: None,
                });
            }
            LoadEvent::Done { stage, elapsed } => {
                let stage = map_stage(stage);
                tracing::info!(
                    stage = stage.name(),
                    elapsed_ms = elapsed.as_millis() as u64,
                    "stage done"
                );
                let _ = backend.signal(Signal::StageDone {
                    stage,
                    message: None,
                });
            }
        }
        ControlFlow::Continue(())
    };
    let model = Hallo2::load(
        &layout,
        &inference,
        &options,
        detector.clone(),
        &mut on_event,
    )
    .map_err(|e| {
        let mut failure = model_failure(&e, config);
        if running == Some(LoadStage::FaceAnalysis) {
            failure.stage = Some(LoadStage::FaceAnalysis);
            failure.hint = format!(
                "{} must hold scrfd_10g_bnkps.onnx and glintr100.onnx from {}",
                layout.root.join("face_analysis/models").display(),
                config.weights.repo
            );
        }
        failure
    })?;

    // warmup
    let mut warmup_step_s = None;
    if stages.contains(&LoadStage::Warmup) {
        let t = begin(backend, LoadStage::Warmup);
        let steps = config.warmup.steps;
        let per_step = model
            .warmup(steps, &mut WarmupObserver { backend, steps })
            .map_err(|e| model_failure(&e, config))?;
        warmup_step_s = Some(per_step);
        end(
            backend,
            LoadStage::Warmup,
            t,
            Some(format!("{per_step:.3} s per denoising step at 64×64")),
        );
    }
    Ok(Loaded {
        model,
        warmup_step_s,
        device_note,
    })
}

fn map_stage(stage: loader::LoadStage) -> LoadStage {
    match stage {
        loader::LoadStage::Verify => LoadStage::Verify,
        loader::LoadStage::FaceAnalysis => LoadStage::FaceAnalysis,
        loader::LoadStage::AudioEncoder => LoadStage::AudioEncoder,
        loader::LoadStage::VocalSeparator => LoadStage::VocalSeparator,
        loader::LoadStage::Vae => LoadStage::Vae,
        loader::LoadStage::ReferenceUnet => LoadStage::ReferenceUnet,
        loader::LoadStage::DenoisingUnet => LoadStage::DenoisingUnet,
        loader::LoadStage::Heads => LoadStage::Heads,
    }
}

/// The device the model loads on, and why it is not a GPU when `auto` fell back to the CPU.
struct Placement {
    device: Device,
    note: Option<String>,
}

/// Opens the configured device. A GPU asked for by name that does not open fails the load with
/// the reason; `auto` takes the first GPU the build supports and otherwise runs on the CPU,
/// saying why (the real model there takes hours per second of video).
fn place(config: &ServerConfig) -> Result<Placement, Failure> {
    let fail = |error: String, hint: &str| Failure {
        stage: Some(LoadStage::Resolve),
        error,
        hint: hint.into(),
    };
    let choice = parse_device(&config.device).map_err(|e| fail(e, "fix `device` in the config"))?;
    let gpu = match choice {
        DeviceChoice::Auto if cfg!(feature = "cuda") => DeviceChoice::Cuda(0),
        DeviceChoice::Auto if cfg!(feature = "metal") => DeviceChoice::Metal,
        DeviceChoice::Auto => {
            return Ok(Placement {
                device: Device::Cpu,
                note: Some(cpu_fallback(
                    "this build has no GPU support (`./scripts/run.sh --gpu` builds it with CUDA)",
                )),
            });
        }
        named => named,
    };
    match gpu.open() {
        Ok(device) => Ok(Placement { device, note: None }),
        Err(e) => {
            let why = format!("{} did not open: {}", gpu.label(), reason(e));
            if choice == DeviceChoice::Auto {
                Ok(Placement {
                    device: Device::Cpu,
                    note: Some(cpu_fallback(&why)),
                })
            } else {
                let hint = if gpu == DeviceChoice::Metal {
                    "build with `--features metal` on macOS, or set device = \"cpu\""
                } else {
                    "start it with `./scripts/run.sh --gpu` (a CUDA build) on a machine with an \
                     NVIDIA driver, or set device = \"cpu\""
                };
                Err(fail(format!("device = \"{}\": {why}", config.device), hint))
            }
        }
    }
}

/// The note of `device = "auto"` running on the CPU because of `why`.
fn cpu_fallback(why: &str) -> String {
    format!(
        "device = \"auto\" fell back to the CPU: {why}; the real model takes hours per second of \
         video there"
    )
}

/// A device error's message without the backtrace candle attaches under `RUST_BACKTRACE`.
fn reason(error: candle_core::Error) -> String {
    match error {
        candle_core::Error::WithBacktrace { inner, .. } => reason(*inner),
        other => other.to_string(),
    }
}

/// `cpu`, `cuda:N`, `metal`.
pub fn device_label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Shows the warm-up pass's steps on the `warmup` stage.
struct WarmupObserver<'a> {
    backend: &'a Backend,
    steps: usize,
}

impl Observer for WarmupObserver<'_> {
    fn progress(&mut self, p: Progress) {
        let done = if p.stage == Stage::Reference {
            0
        } else {
            p.step
        };
        let _ = self.backend.signal(Signal::StageProgress {
            stage: LoadStage::Warmup,
            done: done as u64,
            total: self.steps as u64 + 1,
            file: None,
            message: Some(format!("step {}/{}", p.step, p.steps)),
        });
    }
}
