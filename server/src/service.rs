//! The studio's operations, once: submit, the two pre-flights, job record and list, cancel,
//! delete, re-run, backend state and reload. The Leptos server functions (`app::api`) and the
//! old system's REST routes (`jobs_api`, `routes`) are thin adapters over this layer; job
//! creation, admission, parameter validation ([`JobParams::validate`] against the config's
//! bounds) and the refusal table ([`Refusal`]) live here and nowhere else.

use std::path::Path;
use std::time::Duration;

use app::api::ssr::{Failure, Form, Operations, Reply};
use app::jobs::{AudioPreview, JobFiles, JobParams, JobProgress, JobRecord, PreflightView};
use app::settings::GenerationSettings;
use app::types::{BackendState, BackendStatus};
use model::audio_io::AudioLimits;
use model::face::masks::MaskConfig;
use model::image_io::ImageLimits;

use crate::backend::LoadRequestError;
use crate::clock::rfc3339_now;
use crate::config::LoadMode;
use crate::error::{ApiError, Refusal};
use crate::jobs::preview::{check_audio, check_portrait};
use crate::jobs::transition::{JobChange, apply};
use crate::jobs::upload::{drain_form, finalise_names, read_form, validate};
use crate::jobs::{JobsError, free_bytes, valid_id};
use crate::lifecycle::TransitionError;
use crate::routes::AppState;

/// `Retry-After` when the queue is full.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_secs(30);

/// What `POST /api/v1/inference/hallo2/config` set (the old API's three keys): the defaults of
/// old-API submissions that leave these fields out. None: the profile's. In memory, as there.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LegacyConfig {
    pub guidance_scale: Option<f64>,
    pub inference_steps: Option<usize>,
    pub enable_cache: Option<bool>,
}

/// How long a request waits for a permit of heavy work before it is answered 429.
pub const HEAVY_WAIT: Duration = Duration::from_secs(2);

/// The parameters a submission starts from (its fields override them).
fn fresh_params() -> JobParams {
    JobParams {
        use_cache: true,
        ..JobParams::default()
    }
}

/// The operations, over the shared state.
#[derive(Clone)]
pub struct Service {
    state: AppState,
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::QueueFull { .. } => ApiError::Busy {
                message: e.to_string(),
                retry_after: Some(QUEUE_FULL_RETRY),
            },
            JobsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            JobsError::NotFinished { .. }
            | JobsError::AlreadyFinal { .. }
            | JobsError::Transition(_) => ApiError::Conflict(e.to_string()),
            JobsError::Store(e) => ApiError::Internal(e.to_string()),
            // NATS unreachable: 503, retried later.
            JobsError::Cluster(message) => ApiError::NotReady {
                message: format!("the cluster's store did not answer ({message}); try again"),
                retry_after: Some(Duration::from_secs(5)),
            },
        }
    }
}

impl Service {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The profile's defaults, bounds and limits (what the pages are built from).
    pub fn settings(&self) -> &GenerationSettings {
        &self.state.settings
    }

    /// The job `id` names (checked before it is looked up), or the old API's 404.
    pub fn job(&self, id: &str) -> Result<JobRecord, ApiError> {
        let missing = || ApiError::NotFound(format!("Task {id} not found"));
        if !valid_id(id) {
            return Err(missing());
        }
        self.state.jobs.get(id).ok_or_else(missing)
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.state.jobs.list()
    }

    pub fn backend(&self) -> BackendStatus {
        let mut status = self.state.backend.status();
        if let Some(view) = &self.state.cluster {
            status.workers = view.workers();
        }
        status
    }

    /// Whether a submission can be taken at all (before its body is read).
    pub fn admit(&self) -> Result<(), ApiError> {
        if self.state.config.disable_backend {
            return Err(ApiError::NotReady {
                message: "the backend is disabled (DISABLE_BACKEND); nothing can be generated"
                    .into(),
                retry_after: None,
            });
        }
        if self.state.jobs.is_full() {
            return Err(JobsError::QueueFull {
                capacity: self.state.jobs.capacity(),
            }
            .into());
        }
        self.check_disk(self.state.config.limits.upload_bytes)
    }

    /// 507 when the data disk would keep less than `min_free_bytes` after `incoming` more bytes.
    fn check_disk(&self, incoming: u64) -> Result<(), ApiError> {
        let Some(free) = free_bytes(&self.state.config.data_dir) else {
            return Ok(());
        };
        let keep = self.state.config.limits.min_free_bytes;
        if free < keep.saturating_add(incoming) {
            return Err(Refusal::DiskFull { free, keep }.into());
        }
        Ok(())
    }

    /// Reads, checks and queues a submission (multipart `image_file`, `audio_file` and the
    /// optional parameters). A refused form is read to its end (bounded), so a client still
    /// sending sees the answer.
    pub async fn submit(&self, form: multer::Multipart<'static>) -> Result<JobRecord, ApiError> {
        self.submit_over(form, fresh_params()).await
    }

    /// [`Self::submit`] for the old API: the fields it leaves out come from what its config
    /// endpoint set.
    pub async fn submit_legacy(
        &self,
        form: multer::Multipart<'static>,
    ) -> Result<JobRecord, ApiError> {
        let set = self.legacy_config();
        let initial = JobParams {
            cfg_scale: set.guidance_scale,
            steps: set.inference_steps,
            use_cache: set.enable_cache.unwrap_or(true),
            ..JobParams::default()
        };
        self.submit_over(form, initial).await
    }

    async fn submit_over(
        &self,
        mut form: multer::Multipart<'static>,
        initial: JobParams,
    ) -> Result<JobRecord, ApiError> {
        if let Err(refused) = self.admit() {
            drain_form(&mut form).await;
            return Err(refused);
        }
        let _permit = self.heavy_permit_for(&mut form).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let store = self.state.jobs.store();
        let dir = store
            .create_dir(&id)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let result = self.accept(&id, &dir, form, initial).await;
        if result.is_err() {
            let _ = store.remove(&id);
        }
        let job = result?;
        self.start_work();
        tracing::info!(job = %job.id, image = %job.image_name, audio = %job.audio_name, "job queued");
        Ok(job)
    }

    /// A permit for CPU-heavy request work (decoding and checking uploads): waits
    /// [`HEAVY_WAIT`] at most, then 429 with Retry-After.
    async fn heavy_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let permits = self.state.heavy.clone();
        match tokio::time::timeout(HEAVY_WAIT, permits.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Busy {
                message: format!(
                    "the server is checking {} other uploads; try again in a moment",
                    self.state.config.limits.heavy_requests
                ),
                retry_after: Some(HEAVY_WAIT),
            }),
        }
    }

    /// [`Self::heavy_permit`] for the request whose form this is; when refused, the form is
    /// read to its end (bounded) first, so the client sees the 429.
    async fn heavy_permit_for(
        &self,
        form: &mut multer::Multipart<'static>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        match self.heavy_permit().await {
            Ok(permit) => Ok(permit),
            Err(busy) => {
                drain_form(form).await;
                Err(busy)
            }
        }
    }

    /// A lazy backend loads on its first job; a loaded one runs it now (a cluster's workers
    /// pull their jobs themselves).
    fn start_work(&self) {
        if self.state.cluster.is_some() {
            return;
        }
        let backend = &self.state.backend;
        if self.state.config.load == LoadMode::Lazy && backend.state().name() == "starting" {
            let _ = backend.request_load();
        }
        backend.run_jobs();
    }

    async fn accept(
        &self,
        id: &str,
        dir: &Path,
        form: multer::Multipart<'static>,
        initial: JobParams,
    ) -> Result<JobRecord, ApiError> {
        let limits = &self.state.config.limits;
        let (image, audio, params) = read_form(form, dir, limits.upload_bytes, initial).await?;
        params.validate(self.settings()).map_err(Refusal::from)?;
        let mut image = image.ok_or(Refusal::MissingField("image_file"))?;
        let mut audio = audio.ok_or(Refusal::MissingField("audio_file"))?;
        let (image_limits, audio_limits) = (self.image_limits(), self.audio_limits());
        let detector = self.state.detector.clone();
        let folder = dir.to_path_buf();
        let store = self.state.jobs.store().clone();
        let job_id = id.to_string();
        let (image, audio, checked) = tokio::task::spawn_blocking(move || {
            let checked = validate(
                &folder,
                &image,
                &audio,
                &image_limits,
                &audio_limits,
                &detector,
            )?;
            finalise_names(&folder, &mut image, &mut audio, &checked)?;
            store
                .make_durable(&job_id, &[&image.stored, &audio.stored])
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok::<_, ApiError>((image, audio, checked))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("validation task: {e}")))??;
        let job = self.new_job(
            id,
            params,
            (image.client_name, audio.client_name),
            checked.audio.duration_s,
            JobFiles {
                image: image.stored,
                audio: audio.stored,
                ..JobFiles::default()
            },
        );
        self.enqueue(dir, job).await
    }

    /// Queues a new job whose inputs are in `dir`: in this process's queue, or on the
    /// cluster's (the record then shows on this node at once, and on the others through KV).
    async fn enqueue(&self, dir: &Path, job: JobRecord) -> Result<JobRecord, ApiError> {
        let Some(view) = &self.state.cluster else {
            return Ok(self.state.jobs.submit(job)?);
        };
        view.cluster
            .submit(dir, &job)
            .await
            .map_err(|e| JobsError::Cluster(e.0))?;
        if self.state.jobs.get(&job.id).is_none() {
            self.state.jobs.mirror(job.clone());
        }
        Ok(job)
    }

    /// The local path of a job's file; on a cluster node it is fetched from the cluster's
    /// store first when this node does not have it (`refresh`: always, for files that change
    /// while the job runs).
    pub async fn job_file(
        &self,
        job: &JobRecord,
        name: &str,
        refresh: bool,
    ) -> Result<std::path::PathBuf, ApiError> {
        let dir = self.state.jobs.store().dir(&job.id);
        if let Some(view) = &self.state.cluster {
            let found = view
                .cluster
                .local_file(&job.id, name, &dir, refresh)
                .await
                .map_err(|e| ApiError::from(JobsError::Cluster(e.0)))?;
            if !found {
                return Err(ApiError::NotFound(format!("{name} is not stored")));
            }
        }
        Ok(dir.join(name))
    }

    fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_pixels: self.state.config.limits.image_pixels,
            ..ImageLimits::default()
        }
    }

    fn audio_limits(&self) -> AudioLimits {
        AudioLimits {
            max_duration_s: self.state.config.limits.audio_seconds,
            ..AudioLimits::default()
        }
    }

    /// A new job record: `queued` when the model is ready, else `waiting_for_model`.
    fn new_job(
        &self,
        id: &str,
        params: JobParams,
        (image_name, audio_name): (String, String),
        audio_seconds: f64,
        files: JobFiles,
    ) -> JobRecord {
        let now = rfc3339_now();
        let mut job = JobRecord {
            id: id.to_string(),
            state: app::jobs::JobState::Queued,
            params,
            seed_used: None,
            created_at: now.clone(),
            updated_at: now,
            message: String::new(),
            progress: JobProgress::default(),
            error: None,
            image_name,
            audio_name,
            audio_seconds,
            files,
            attempts: 0,
            resumed_from_clip: None,
            timings: Vec::new(),
            made_with: None,
        };
        let ready = self.state.backend.state().is_ready();
        apply(&mut job, JobChange::Created { model_ready: ready })
            .expect("a new job can always be created");
        job
    }

    /// Runs a finished job again from its stored inputs: the same parameters and seed, or
    /// `params` (checked like any submission; `seed` absent: a new random seed).
    pub async fn rerun(&self, id: &str, params: Option<JobParams>) -> Result<JobRecord, ApiError> {
        let old = self.job(id)?;
        let id = old.id.as_str();
        self.admit()?;
        let params = params.unwrap_or_else(|| JobParams {
            seed: old.seed_used.or(old.params.seed),
            ..old.params.clone()
        });
        params.validate(self.settings()).map_err(Refusal::from)?;
        let new_id = uuid::Uuid::new_v4().to_string();
        let store = self.state.jobs.store();
        let from = store.dir(id);
        let to = store
            .create_dir(&new_id)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut copied = Ok(());
        for file in [&old.files.image, &old.files.audio] {
            // A cluster node may not have them yet; a missing one fails the copy below.
            let _ = self.job_file(&old, file, false).await;
            copied =
                copied.and_then(|()| std::fs::copy(from.join(file), to.join(file)).map(|_| ()));
        }
        if let Err(e) = copied {
            let _ = store.remove(&new_id);
            return Err(ApiError::Conflict(format!(
                "the inputs of job {id} are gone ({e}); upload them again"
            )));
        }
        let job = self.new_job(
            &new_id,
            params,
            (old.image_name.clone(), old.audio_name.clone()),
            old.audio_seconds,
            JobFiles {
                image: old.files.image.clone(),
                audio: old.files.audio.clone(),
                ..JobFiles::default()
            },
        );
        let job = self.enqueue(&to, job).await.inspect_err(|_| {
            let _ = store.remove(&new_id);
        })?;
        self.start_work();
        Ok(job)
    }

    /// Cancels a waiting job at once or a running one at its next step (409 when finished).
    pub async fn cancel(&self, id: &str) -> Result<JobRecord, ApiError> {
        let job = self.job(id)?;
        match &self.state.cluster {
            Some(view) => Ok(view.cluster.cancel(&job.id).await?),
            None => Ok(self.state.jobs.cancel(&job.id)?),
        }
    }

    /// Deletes a finished job and its files (409 while it waits or runs).
    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        let job = self.job(id)?;
        match &self.state.cluster {
            Some(view) => {
                view.cluster.delete(&job.id).await?;
                self.state.jobs.forget(&job.id);
                Ok(())
            }
            None => Ok(self.state.jobs.delete(&job.id)?),
        }
    }

    /// Runs the face detector and mesh on an uploaded portrait and computes Hallo2's masks for
    /// the form's `face_expand_ratio` (the official 1.2 when absent); nothing is stored.
    pub async fn preflight_image(
        &self,
        mut form: multer::Multipart<'static>,
    ) -> Result<PreflightView, ApiError> {
        let _permit = self.heavy_permit_for(&mut form).await?;
        let scratch = tempfile::tempdir().map_err(|e| ApiError::Internal(e.to_string()))?;
        let limit = self.state.config.limits.upload_bytes;
        let (image, _, params) = read_form(form, scratch.path(), limit, fresh_params()).await?;
        params.validate(self.settings()).map_err(Refusal::from)?;
        let image = image.ok_or(Refusal::MissingField("image_file"))?;
        let limits = self.image_limits();
        let ratio = params
            .face_expand_ratio
            .unwrap_or(MaskConfig::hallo2().face_expand_ratio);
        let detector = self.state.detector.clone();
        tokio::task::spawn_blocking(move || {
            let path = scratch.path().join(&image.stored);
            check_portrait(&path, &image.client_name, &limits, &detector, ratio)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("preflight task: {e}")))?
    }

    /// Decodes uploaded speech as a submission would (same limits, same refusals) and outlines
    /// its waveform; nothing is stored.
    pub async fn preflight_audio(
        &self,
        mut form: multer::Multipart<'static>,
    ) -> Result<AudioPreview, ApiError> {
        let _permit = self.heavy_permit_for(&mut form).await?;
        let scratch = tempfile::tempdir().map_err(|e| ApiError::Internal(e.to_string()))?;
        let limit = self.state.config.limits.upload_bytes;
        let (_, audio, _) = read_form(form, scratch.path(), limit, fresh_params()).await?;
        let audio = audio.ok_or(Refusal::MissingField("audio_file"))?;
        let limits = self.audio_limits();
        tokio::task::spawn_blocking(move || {
            let extension = Path::new(&audio.client_name)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let path = scratch.path().join(&audio.stored);
            check_audio(&path, extension.as_deref(), &limits)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("preflight task: {e}")))?
    }

    /// What the old API's config endpoint set.
    pub fn legacy_config(&self) -> LegacyConfig {
        *self
            .state
            .legacy_config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The old API's `POST /api/v1/inference/hallo2/config`: a JSON object whose
    /// `guidance_scale`, `inference_steps` and `enable_cache` become the defaults of later old-API
    /// submissions (`null`: the profile's again); other keys are ignored, as there. Values are
    /// checked against the studio's bounds, all before any is applied.
    pub fn configure_legacy(&self, body: &serde_json::Value) -> Result<LegacyConfig, ApiError> {
        let bad = |field: &'static str, message: String| -> ApiError {
            Refusal::BadParameter { field, message }.into()
        };
        let object = body
            .as_object()
            .ok_or_else(|| bad("body", "the configuration must be a JSON object".into()))?;
        let bounds = self.settings().bounds;
        let mut next = self.legacy_config();
        if let Some(v) = object.get("guidance_scale") {
            next.guidance_scale = match v {
                serde_json::Value::Null => None,
                v => Some(
                    v.as_f64()
                        .filter(|g| bounds.cfg_scale.contains(*g))
                        .ok_or_else(|| {
                            bad(
                                "guidance_scale",
                                format!(
                                    "guidance_scale must be a number from {} to {} (got {v})",
                                    bounds.cfg_scale.min, bounds.cfg_scale.max
                                ),
                            )
                        })?,
                ),
            };
        }
        if let Some(v) = object.get("inference_steps") {
            next.inference_steps = match v {
                serde_json::Value::Null => None,
                v => Some(
                    v.as_u64()
                        .and_then(|s| usize::try_from(s).ok())
                        .filter(|s| bounds.steps.contains(*s))
                        .ok_or_else(|| {
                            bad(
                                "inference_steps",
                                format!(
                                    "inference_steps must be a whole number from {} to {} (got {v})",
                                    bounds.steps.min, bounds.steps.max
                                ),
                            )
                        })?,
                ),
            };
        }
        if let Some(v) = object.get("enable_cache") {
            next.enable_cache = match v {
                serde_json::Value::Null => None,
                v => Some(v.as_bool().ok_or_else(|| {
                    bad(
                        "enable_cache",
                        format!("enable_cache must be true or false (got {v})"),
                    )
                })?),
            };
        }
        *self
            .state
            .legacy_config
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = next;
        Ok(next)
    }

    /// A job's history (`task.log`); None for an id that names no stored job.
    pub fn task_log(&self, id: &str) -> Option<String> {
        let job = self.job(id).ok()?;
        self.state.jobs.store().read_log(&job.id)
    }

    /// Retries loading without a restart (also the way to load with `load = "lazy"`).
    pub async fn reload(&self) -> Result<BackendState, ApiError> {
        if let Some(view) = &self.state.cluster {
            let cluster = &view.cluster;
            cluster
                .client
                .publish(cluster.reload_subject(), bytes::Bytes::new())
                .await
                .map_err(|e| ApiError::from(JobsError::Cluster(e.to_string())))?;
            return Ok(self.state.backend.state());
        }
        match self.state.backend.request_load() {
            Ok(()) => Ok(self.state.backend.state()),
            Err(LoadRequestError::Transition(TransitionError::Busy { state })) => Err(
                ApiError::Conflict(format!("a load is already running (state {state})")),
            ),
            Err(LoadRequestError::Transition(TransitionError::Invalid { state, .. })) => {
                Err(ApiError::NotReady {
                    message: format!("the backend cannot load while {state}"),
                    retry_after: None,
                })
            }
            Err(e @ LoadRequestError::NoWorker) => Err(ApiError::Internal(e.to_string())),
        }
    }
}

fn failure(e: ApiError) -> Failure {
    Failure {
        status: e.status().as_u16(),
        body: e.body(),
    }
}

/// The server functions' side of the service (`app::api`).
impl Operations for Service {
    fn submit(&self, form: Form) -> Reply<JobRecord> {
        let service = self.clone();
        Box::pin(async move { service.submit(form).await.map_err(failure) })
    }

    fn preflight_image(&self, form: Form) -> Reply<PreflightView> {
        let service = self.clone();
        Box::pin(async move { service.preflight_image(form).await.map_err(failure) })
    }

    fn preflight_audio(&self, form: Form) -> Reply<AudioPreview> {
        let service = self.clone();
        Box::pin(async move { service.preflight_audio(form).await.map_err(failure) })
    }

    fn job(&self, id: &str) -> Result<JobRecord, Failure> {
        Service::job(self, id).map_err(failure)
    }

    fn jobs(&self) -> Vec<JobRecord> {
        Service::jobs(self)
    }

    fn cancel(&self, id: &str) -> Reply<JobRecord> {
        let (service, id) = (self.clone(), id.to_string());
        Box::pin(async move { Service::cancel(&service, &id).await.map_err(failure) })
    }

    fn delete(&self, id: &str) -> Reply<()> {
        let (service, id) = (self.clone(), id.to_string());
        Box::pin(async move { Service::delete(&service, &id).await.map_err(failure) })
    }

    fn rerun(&self, id: &str, params: Option<JobParams>) -> Reply<JobRecord> {
        let (service, id) = (self.clone(), id.to_string());
        Box::pin(async move { Service::rerun(&service, &id, params).await.map_err(failure) })
    }

    fn backend(&self) -> BackendStatus {
        Service::backend(self)
    }

    fn reload(&self) -> Reply<BackendState> {
        let service = self.clone();
        Box::pin(async move { Service::reload(&service).await.map_err(failure) })
    }
}
