//! Wire types of the studio's HTTP API and event stream (serde only).
//!
//! Field names are part of the API: `/api/events` (SSE), `/health/*`, `/api/backend`, and the
//! compatibility endpoints `/health` and `/api/v1/health` of the system this replaces.

use serde::{Deserialize, Serialize};

/// Load stages, in the order they run. Names are stable (they appear in events, metrics and the
/// status page). A stage whose component the running build does not have is not reported at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStage {
    /// Find every file: local folder or HF cache.
    Resolve,
    /// Fetch the missing files from the Hub (bytes done/total per file, resumable).
    Download,
    /// Sizes, key sets and dtypes against the model (no weight data read).
    Verify,
    /// Face detector and recogniser (InsightFace files).
    FaceAnalysis,
    /// wav2vec2.
    AudioEncoder,
    /// Kim_Vocal_2, the MDX vocal separator (only with `vocal_separation` on).
    VocalSeparator,
    Vae,
    ReferenceUnet,
    DenoisingUnet,
    /// Face locator, image and audio projections.
    Heads,
    /// One tiny real pipeline pass; measures seconds per denoising step.
    Warmup,
}

impl LoadStage {
    /// Every stage, in order.
    pub const ALL: [LoadStage; 11] = [
        Self::Resolve,
        Self::Download,
        Self::Verify,
        Self::FaceAnalysis,
        Self::AudioEncoder,
        Self::VocalSeparator,
        Self::Vae,
        Self::ReferenceUnet,
        Self::DenoisingUnet,
        Self::Heads,
        Self::Warmup,
    ];

    /// The stable name (the serde spelling).
    pub fn name(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Download => "download",
            Self::Verify => "verify",
            Self::FaceAnalysis => "face_analysis",
            Self::AudioEncoder => "audio_encoder",
            Self::VocalSeparator => "vocal_separator",
            Self::Vae => "vae",
            Self::ReferenceUnet => "reference_unet",
            Self::DenoisingUnet => "denoising_unet",
            Self::Heads => "heads",
            Self::Warmup => "warmup",
        }
    }

    /// The stage called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Where the backend (the model behind the UI) stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BackendState {
    /// The process is up; loading has not begun (or waits for the first job with `load = lazy`).
    #[default]
    Starting,
    Loading {
        stage: LoadStage,
    },
    /// The warmup pass is running.
    Warming,
    Ready {
        /// e.g. `cpu`, `cuda:0`.
        device: String,
        /// e.g. `f32`.
        dtype: String,
        /// Seconds from the start of loading to ready.
        load_s: f64,
        /// Why the model runs on this device rather than a GPU (`device = "auto"` that found
        /// none, with the reason); shown in the status panel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_note: Option<String>,
    },
    /// Loading failed; `POST /api/backend/reload` retries.
    Failed {
        stage: LoadStage,
        /// What went wrong, with the file or value at fault.
        error: String,
        /// What to do about it.
        hint: String,
    },
    /// `DISABLE_BACKEND=true`: the UI runs without a model.
    Disabled,
    /// Shutting down.
    Draining,
}

impl BackendState {
    /// The state's name (the serde tag).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Loading { .. } => "loading",
            Self::Warming => "warming",
            Self::Ready { .. } => "ready",
            Self::Failed { .. } => "failed",
            Self::Disabled => "disabled",
            Self::Draining => "draining",
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }

    /// The stage being loaded (or that failed), if any.
    pub fn stage(&self) -> Option<LoadStage> {
        match self {
            Self::Loading { stage } | Self::Failed { stage, .. } => Some(*stage),
            Self::Warming => Some(LoadStage::Warmup),
            _ => None,
        }
    }
}

/// What happened to a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Started,
    Progress,
    Done,
    Failed,
}

/// One event of a load stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageEvent {
    /// Position in the backend's event stream (also the SSE event id).
    pub seq: u64,
    /// RFC 3339 UTC time, millisecond precision.
    pub at: String,
    pub stage: LoadStage,
    pub status: StageStatus,
    /// Fraction of the stage done, 0..1 (bytes where known, else time against `expected_ms`).
    pub progress: f32,
    /// Bytes processed so far in this stage, all files together (downloads, conversions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// The file that moved (download events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileProgress>,
    /// Time since the stage started.
    pub elapsed_ms: u64,
    /// How long the stage took in the last successful load on this device and weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Bytes of one file within a stage (the `download` stage reports each file it fetches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProgress {
    /// Relative to the weights root, e.g. `hallo2/net.pth`.
    pub name: String,
    pub done: u64,
    pub total: u64,
}

/// The backend entered a new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEvent {
    pub seq: u64,
    /// RFC 3339 UTC time, millisecond precision.
    pub at: String,
    pub state: BackendState,
}

/// An event of `/api/events`; the SSE `event:` field is [`BackendEvent::event_name`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackendEvent {
    Stage(StageEvent),
    State(StateEvent),
    /// A generation job changed (its whole record).
    Job(Box<crate::jobs::JobEvent>),
    /// In a cluster: the workers changed (each one's state and load; the whole list).
    Workers(WorkersEvent),
}

/// The workers of a cluster as the web node sees them now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkersEvent {
    pub seq: u64,
    /// RFC 3339 UTC time, millisecond precision.
    pub at: String,
    pub workers: Vec<WorkerReport>,
}

impl BackendEvent {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Stage(e) => e.seq,
            Self::State(e) => e.seq,
            Self::Job(e) => e.seq,
            Self::Workers(e) => e.seq,
        }
    }

    /// `stage`, `state`, `job` or `workers`.
    pub fn event_name(&self) -> &'static str {
        match self {
            Self::Stage(_) => "stage",
            Self::State(_) => "state",
            Self::Job(_) => "job",
            Self::Workers(_) => "workers",
        }
    }
}

/// Where a stage stands in the current load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StagePhase {
    Pending,
    Running,
    Done,
    Failed,
}

/// One stage of the current (or last) load, for `/health/ready?verbose` and `/api/backend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    pub stage: LoadStage,
    pub phase: StagePhase,
    pub progress: f32,
    /// Time spent so far (running) or in total (done, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-file bytes, in the order the files started (download stage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileProgress>,
}

/// Body of `GET /health/ready` (200 when ready, else 503 with `Retry-After`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// [`BackendState::name`].
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<LoadStage>,
    /// Fraction of the whole load done, 0..1.
    pub progress: f32,
    /// Expected seconds until ready (from the last load's timings), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Every stage, with `?verbose`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageSummary>>,
    /// In a cluster: each worker's state (ready when one is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerReport>,
}

/// Body of `GET /api/backend`: the whole picture, for the status page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub state: BackendState,
    pub progress: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    pub stages: Vec<StageSummary>,
    /// Seq of the last event sent (resume `/api/events` from here with `Last-Event-ID`).
    pub last_seq: u64,
    /// Loads attempted since the process started (reloads included).
    pub attempts: u32,
    /// Seconds per denoising step measured by the last warmup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_step_s: Option<f64>,
    /// In a cluster: each worker's own load (the state above is the cluster's: ready when one
    /// worker is). Empty for one process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerReport>,
}

/// One worker of a cluster as it last reported: its backend, the job it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's name (`[cluster] name`, else host and process id).
    pub name: String,
    pub state: BackendState,
    /// Fraction of its load done.
    pub progress: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    pub stages: Vec<StageSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_step_s: Option<f64>,
    /// The job it runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When it reported (ms since the Unix epoch).
    pub reported_ms: u64,
}

/// `GET /health` and `GET /api/v1/health`, with the field names of the system this replaces
/// (`status` stays `healthy` while the process runs, as there) plus our `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyHealth {
    pub status: String,
    pub gpu_available: bool,
    pub gpu_count: u32,
    pub gpu_name: Option<String>,
    /// `["hallo2"]` when the model is ready, else empty.
    pub loaded_models: Vec<String>,
    /// ISO-8601 UTC with a `Z`.
    pub timestamp: String,
    /// [`BackendState::name`].
    pub state: String,
}

/// The one JSON error shape of the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The same message under FastAPI's name (the old system's clients read `detail`).
    #[serde(default)]
    pub detail: String,
    /// Machine-readable: `busy`, `invalid`, `not_ready`, `not_found`, `internal`, ….
    pub kind: String,
    /// The form field at fault (uploads), so the page can show the message next to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_match_serde_and_round_trip() {
        for stage in LoadStage::ALL {
            let json = serde_json::to_string(&stage).unwrap();
            assert_eq!(json, format!("\"{}\"", stage.name()));
            assert_eq!(LoadStage::from_name(stage.name()), Some(stage));
        }
        assert_eq!(LoadStage::from_name("ready"), None);
    }

    #[test]
    fn backend_state_is_tagged_by_state() {
        let failed = BackendState::Failed {
            stage: LoadStage::Verify,
            error: "weights x: file not found".into(),
            hint: "download it".into(),
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["stage"], "verify");
        assert_eq!(failed.name(), "failed");
        let back: BackendState = serde_json::from_value(json).unwrap();
        assert_eq!(back, failed);
        let loading = serde_json::to_string(&BackendState::Loading {
            stage: LoadStage::DenoisingUnet,
        })
        .unwrap();
        assert_eq!(loading, r#"{"state":"loading","stage":"denoising_unet"}"#);
    }

    #[test]
    fn events_round_trip_with_type_tag() {
        let stage = BackendEvent::Stage(StageEvent {
            seq: 7,
            at: "2025-01-01T00:00:00.000Z".into(),
            stage: LoadStage::Download,
            status: StageStatus::Progress,
            progress: 0.5,
            bytes_done: Some(5),
            bytes_total: Some(10),
            file: Some(FileProgress {
                name: "hallo2/net.pth".into(),
                done: 3,
                total: 4,
            }),
            elapsed_ms: 12,
            expected_ms: None,
            message: None,
        });
        let json = serde_json::to_value(&stage).unwrap();
        assert_eq!(json["type"], "stage");
        assert_eq!(json["status"], "progress");
        assert!(json.get("expected_ms").is_none());
        assert_eq!(json["file"]["name"], "hallo2/net.pth");
        assert_eq!(serde_json::from_value::<BackendEvent>(json).unwrap(), stage);
        assert_eq!(stage.seq(), 7);
        assert_eq!(stage.event_name(), "stage");

        let state = BackendEvent::State(StateEvent {
            seq: 8,
            at: "2025-01-01T00:00:00.000Z".into(),
            state: BackendState::Warming,
        });
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["type"], "state");
        assert_eq!(json["state"]["state"], "warming");
        assert_eq!(serde_json::from_value::<BackendEvent>(json).unwrap(), state);
    }
}
