//! Wire types of generation jobs: the studio's own (`JobRecord`, job events) and the REST API
//! of the system this replaces (`/api/v1/inference/hallo2`, `/api/v1/tasks*`), field names as
//! there.

use serde::{Deserialize, Serialize};

use crate::settings::{FLOAT_PARAMS, GenerationSettings};

/// Where a job stands. `completed`, `failed` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for the worker.
    Queued,
    /// Accepted while the model loads; starts when it is ready.
    WaitingForModel,
    /// Face and audio preprocessing.
    Preprocessing,
    /// Denoising clips.
    Generating,
    /// Writing the MP4.
    Encoding,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 8] = [
        JobState::WaitingForModel,
        JobState::Queued,
        JobState::Preprocessing,
        JobState::Generating,
        JobState::Encoding,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::WaitingForModel => "waiting_for_model",
            Self::Preprocessing => "preprocessing",
            Self::Generating => "generating",
            Self::Encoding => "encoding",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Waiting in the queue (not started).
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Queued | Self::WaitingForModel)
    }

    /// The worker is on it.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Self::Preprocessing | Self::Generating | Self::Encoding
        )
    }

    /// The status string clients of the old API expect: `queued`, `processing`, `completed`,
    /// `failed`, `cancelled`.
    pub fn legacy_status(self) -> &'static str {
        match self {
            Self::Queued | Self::WaitingForModel => "queued",
            Self::Preprocessing | Self::Generating | Self::Encoding => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What the user chose (None: the inference config's value; `seed` None: a random seed, recorded
/// in [`JobRecord::seed_used`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pose_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lip_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_expand_ratio: Option<f64>,
    /// Reuse cached face and audio preprocessing of the same inputs (the old API's `use_cache`).
    pub use_cache: bool,
    /// Separate the vocals before the audio features, as the official pipeline does (None: the
    /// studio's `vocal_separation` setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separate_vocals: Option<bool>,
}

/// A parameter that cannot be used: the field, and why in a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub field: &'static str,
    pub message: String,
}

impl JobParams {
    /// The form fields that set a parameter (beside the two files), in the form's order.
    pub const FIELDS: &'static [&'static str] = &[
        "use_cache",
        "separate_vocals",
        "pose_weight",
        "face_weight",
        "lip_weight",
        "steps",
        "cfg_scale",
        "seed",
        "face_expand_ratio",
    ];

    /// Sets `field` from a form's text, checking its type only (ranges are [`Self::validate`]'s);
    /// an empty text leaves the default.
    pub fn set_field(&mut self, field: &str, text: &str) -> Result<(), ParamError> {
        let text = text.trim();
        let Some(&field) = Self::FIELDS.iter().find(|f| **f == field) else {
            return Err(ParamError {
                field: "form",
                message: format!("{field} is not a parameter"),
            });
        };
        if text.is_empty() {
            return Ok(());
        }
        let bad = |what: &str| ParamError {
            field,
            message: format!("{field} must be {what} (got {text:?})"),
        };
        let number = || {
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad("a number"))
        };
        // pydantic's lax booleans (the old API's clients send Python's `True`/`False`).
        let flag = || match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(bad("true or false")),
        };
        let whole = || text.parse::<u64>().map_err(|_| bad("a whole number ≥ 0"));
        match field {
            "use_cache" => self.use_cache = flag()?,
            "separate_vocals" => self.separate_vocals = Some(flag()?),
            "pose_weight" => self.pose_weight = Some(number()?),
            "face_weight" => self.face_weight = Some(number()?),
            "lip_weight" => self.lip_weight = Some(number()?),
            "cfg_scale" => self.cfg_scale = Some(number()?),
            "face_expand_ratio" => self.face_expand_ratio = Some(number()?),
            "steps" => self.steps = Some(usize::try_from(whole()?).map_err(|_| bad("smaller"))?),
            _ => self.seed = Some(whole()?),
        }
        Ok(())
    }

    /// Every given value within the studio's bounds, and vocal separation only where the
    /// studio has it; the first that is not, with its field. The one check every entry (form,
    /// REST, re-run) makes.
    pub fn validate(&self, settings: &GenerationSettings) -> Result<(), ParamError> {
        let b = &settings.bounds;
        let values = [
            self.pose_weight,
            self.face_weight,
            self.lip_weight,
            self.cfg_scale,
            self.face_expand_ratio,
        ];
        for ((field, bound), value) in FLOAT_PARAMS.into_iter().zip(b.floats()).zip(values) {
            if let Some(v) = value
                && !(v.is_finite() && bound.contains(v))
            {
                return Err(ParamError {
                    field,
                    message: format!(
                        "{field} must be a number from {} to {} (got {v})",
                        bound.min, bound.max
                    ),
                });
            }
        }
        if let Some(steps) = self.steps
            && !b.steps.contains(steps)
        {
            return Err(ParamError {
                field: "steps",
                message: format!(
                    "steps must be a whole number from {} to {} (got {steps})",
                    b.steps.min, b.steps.max
                ),
            });
        }
        if self.separate_vocals == Some(true) && !settings.vocal_separation {
            return Err(ParamError {
                field: "separate_vocals",
                message:
                    "vocal separation is off in this studio's config (vocal_separation = false)"
                        .into(),
            });
        }
        Ok(())
    }
}

/// Progress of a running job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// 1-based clip being computed, and the clip count (0 before generation).
    pub clip: usize,
    pub clips: usize,
    /// Denoising steps done in this clip, of `steps`.
    pub step: usize,
    pub steps: usize,
    /// Fraction of the whole job, 0..1.
    pub fraction: f32,
    /// Seconds left, from the measured time per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
}

/// The files a job keeps (names inside its folder; never the client's names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFiles {
    pub image: String,
    pub audio: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    /// The last frame of the latest finished clip (PNG), while and after generating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// Which clip that frame ends (1-based), so pages can refresh it.
    #[serde(default)]
    pub frame_clip: usize,
}

/// One job, as `job.json` stores it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub params: JobParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_used: Option<u64>,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub updated_at: String,
    /// A line for people ("Generating clip 2/5, step 13/40").
    pub message: String,
    pub progress: JobProgress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The client's file names, for display only (sanitised).
    pub image_name: String,
    pub audio_name: String,
    /// Length of the audio (and so of the video), seconds.
    pub audio_seconds: f64,
    pub files: JobFiles,
    /// How often the job was started (a restart re-runs an interrupted job once).
    #[serde(default)]
    pub attempts: u32,
    /// The clip (1-based) the last run continued from after an interruption, from the job's
    /// checkpoint; None when it ran from the first clip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_clip: Option<usize>,
    /// Seconds spent per stage (`preprocess`, `denoise`, `decode`, `encode`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<(String, f64)>,
    /// Device, dtype and weight fingerprints the video was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_with: Option<MadeWith>,
}

/// What produced a video (the `job.json` sidecar's provenance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MadeWith {
    pub device: String,
    pub dtype: String,
    /// Weight file → fingerprint (size + mtime + name hash).
    pub weights: Vec<(String, String)>,
    /// The separator the audio features were computed after (None: from the raw mix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocal_separator: Option<String>,
}

/// A job changed (on `/api/events` as `event: job`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub seq: u64,
    pub at: String,
    pub job: JobRecord,
}

/// `POST /api/v1/inference/hallo2` → 202.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub task_id: String,
    /// `queued`.
    pub status: String,
    pub message: String,
}

impl SubmitResponse {
    /// The old API's answer for a job just queued.
    pub fn queued(id: &str) -> Self {
        Self {
            task_id: id.to_string(),
            status: "queued".into(),
            message: "Inference task queued successfully".into(),
        }
    }
}

/// `GET /api/v1/tasks/{id}`: the old API's fields plus `eta_s`, `state` and `job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: String,
    /// [`JobState::legacy_status`].
    pub status: String,
    /// 0–100.
    pub progress: u32,
    pub status_message: String,
    /// `{video_path, task_id, video_url}` when completed.
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub eta_s: Option<f64>,
    /// Our finer state ([`JobState::name`]).
    pub state: String,
}

impl TaskStatus {
    pub fn from_record(job: &JobRecord) -> Self {
        let result = (job.state == JobState::Completed).then(|| {
            serde_json::json!({
                "task_id": job.id,
                "video_path": format!("jobs/{}/{}", job.id, job.files.video.as_deref().unwrap_or("output.mp4")),
                "video_url": format!("/api/v1/tasks/{}/video", job.id),
            })
        });
        Self {
            task_id: job.id.clone(),
            status: job.state.legacy_status().into(),
            progress: if job.state == JobState::Completed {
                100
            } else {
                (job.progress.fraction.clamp(0.0, 1.0) * 100.0).floor() as u32
            },
            status_message: job.message.clone(),
            result,
            error: job.error.clone(),
            created_at: job.created_at.clone(),
            updated_at: job.updated_at.clone(),
            eta_s: job.progress.eta_s,
            state: job.state.name().into(),
        }
    }
}

/// `POST /api/preflight`: what the face path found in a portrait, for the overlay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreflightView {
    pub width: u32,
    pub height: u32,
    /// `[x0, y0, x1, y1]` in image pixels.
    pub face_box: [f32; 4],
    pub score: f32,
    /// 468 mesh landmarks `[x, y]` in image pixels.
    pub landmarks: Vec<[f32; 2]>,
    pub faces_found: usize,
    pub yaw_degrees: f32,
    pub warnings: Vec<String>,
    pub masks: MaskPreview,
}

/// The regions Hallo2 weights, for the face expand ratio the pre-flight was asked about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskPreview {
    pub face_expand_ratio: f64,
    /// The face region (face outline box × ratio), `[x0, y0, x1, y1]` in image pixels.
    pub face_region: [u32; 4],
    /// The lip region (lip box × 2).
    pub lip_region: [u32; 4],
    /// The soft masks the attention layers get (64×64 grey PNG `data:` URLs, stretched over
    /// the whole image): the pose weight acts on `pose`, the face weight on `face` (face minus
    /// lips), the lip weight on `lip`.
    pub pose_png: String,
    pub face_png: String,
    pub lip_png: String,
}

/// `POST /api/preflight/audio`: the speech as the generator will decode it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioPreview {
    pub duration_s: f64,
    /// Frames of video it drives (25 fps).
    pub frames: usize,
    pub sample_rate: u32,
    pub channels: usize,
    pub codec: String,
    pub peak_dbfs: f64,
    /// Loudest |sample| of equal slices, in [0, 1], for the waveform.
    pub waveform: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_status_strings_are_the_old_clients() {
        let all = [
            (JobState::Queued, "queued"),
            (JobState::WaitingForModel, "queued"),
            (JobState::Preprocessing, "processing"),
            (JobState::Generating, "processing"),
            (JobState::Encoding, "processing"),
            (JobState::Completed, "completed"),
            (JobState::Failed, "failed"),
            (JobState::Cancelled, "cancelled"),
        ];
        for (state, legacy) in all {
            assert_eq!(state.legacy_status(), legacy);
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.name());
        }
    }

    #[test]
    fn fields_are_parsed_for_type_then_validated_against_the_bounds() {
        let settings = GenerationSettings::default();
        let mut p = JobParams::default();
        p.set_field("steps", "25").unwrap();
        p.set_field("lip_weight", " 1.5 ").unwrap();
        p.set_field("use_cache", "false").unwrap();
        p.set_field("separate_vocals", "off").unwrap();
        p.set_field("seed", "").unwrap();
        assert_eq!(
            (
                p.steps,
                p.lip_weight,
                p.use_cache,
                p.seed,
                p.separate_vocals
            ),
            (Some(25), Some(1.5), false, None, Some(false))
        );
        assert_eq!(p.validate(&settings), Ok(()));
        for (field, text) in [
            ("steps", "-1"),
            ("cfg_scale", "NaN"),
            ("use_cache", "maybe"),
        ] {
            assert_eq!(p.clone().set_field(field, text).unwrap_err().field, field);
        }
        let b = settings.bounds;
        let outside = [
            ("steps", (b.steps.max + 1).to_string()),
            ("lip_weight", (b.lip_weight.max + 0.5).to_string()),
            ("cfg_scale", (b.cfg_scale.min - 0.5).to_string()),
        ];
        for (field, text) in outside {
            let mut q = JobParams::default();
            q.set_field(field, &text).unwrap();
            assert_eq!(q.validate(&settings).unwrap_err().field, field);
        }
        let off = GenerationSettings {
            vocal_separation: false,
            ..GenerationSettings::default()
        };
        let asks = JobParams {
            separate_vocals: Some(true),
            ..JobParams::default()
        };
        assert_eq!(asks.validate(&off).unwrap_err().field, "separate_vocals");
        assert_eq!(asks.validate(&settings), Ok(()));
    }
}
