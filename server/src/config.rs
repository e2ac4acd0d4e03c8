//! `ServerConfig`: the studio's own settings, read from `configs/*.toml` (unknown keys are
//! rejected), with a few environment overrides for what operators change.
//!
//! Relative paths are resolved against the working directory (the repository root when started
//! with `cargo run`/`cargo leptos`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use model::device::parse_dtype;
pub use model::device::{DeviceChoice, parse_device};
use serde::Deserialize;

/// Environment variable that overrides [`ServerConfig::bind`] (cargo-leptos sets it).
pub const ENV_SITE_ADDR: &str = "LEPTOS_SITE_ADDR";
/// Environment variable naming the config file (as `--config`).
pub const ENV_CONFIG: &str = "HALLO2_CONFIG";
/// `DISABLE_BACKEND=true` serves the UI without loading a model.
pub const ENV_DISABLE_BACKEND: &str = "DISABLE_BACKEND";
/// `HF_HUB_OFFLINE=1`: use only files already in the HF cache (hf-hub itself ignores it).
pub const ENV_HF_HUB_OFFLINE: &str = "HF_HUB_OFFLINE";

/// Errors reading or checking a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// When to load the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// At process start, on the worker thread (the port is bound first).
    Eager,
    /// When the first job arrives (or on `POST /api/backend/reload`).
    Lazy,
}

/// Where the weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsSource {
    /// `repo` at `revision` through hf-hub into the standard HF cache.
    Hub,
    /// An official `pretrained_models/` folder on disk (`path`), used as is.
    Local,
}

/// `[weights]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightsConfig {
    /// `hub` or `local`.
    pub source: WeightsSource,
    /// Hub repository id (`hub`).
    pub repo: String,
    /// Branch, tag or commit (`hub`). A commit hash makes cached starts fully offline.
    pub revision: String,
    /// Folder inside the repository that holds the `pretrained_models/` tree (`hub`); empty for
    /// the official repository, whose root is that tree (`huggingface-cli download
    /// fudan-generative-ai/hallo2 --local-dir pretrained_models`).
    pub subfolder: String,
    /// The `pretrained_models/` folder (`local`).
    pub path: Option<PathBuf>,
    /// Hub base URL; default `HF_ENDPOINT`, else the public Hub.
    pub endpoint: Option<String>,
    /// HF cache folder (`.../hub`); default `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub hf_cache: Option<PathBuf>,
    /// Use only cached files; default from `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Files downloaded at once.
    pub concurrency: usize,
    /// Whole-transfer retries of one file after an interrupted download (each resumes).
    pub retries: usize,
}

impl WeightsConfig {
    /// `offline` from `HF_HUB_OFFLINE` (read through `env`) unless the config sets it.
    pub fn apply_offline_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        if self.offline.is_none()
            && let Some(v) = env(ENV_HF_HUB_OFFLINE)
        {
            self.offline = Some(truthy(&v));
        }
    }
}

impl Default for WeightsConfig {
    fn default() -> Self {
        Self {
            source: WeightsSource::Hub,
            repo: "fudan-generative-ai/hallo2".into(),
            revision: "main".into(),
            subfolder: String::new(),
            path: None,
            endpoint: None,
            hf_cache: None,
            offline: None,
            concurrency: 4,
            retries: 3,
        }
    }
}

/// `[limits]`: what a job may ask for (enforced by the job admission).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted upload (image + audio), bytes.
    pub upload_bytes: u64,
    /// Longest accepted driving audio, seconds.
    pub audio_seconds: f64,
    /// Largest accepted source image, pixels (width × height).
    pub image_pixels: u64,
    /// Jobs waiting at most; more get 429.
    pub queue_capacity: usize,
    /// Finished jobs and their files are kept this long, hours.
    pub retention_hours: u64,
    /// Submissions are refused (507) when the data folder's disk would have less free space
    /// than this after the upload, bytes.
    pub min_free_bytes: u64,
    /// Requests doing CPU-heavy checks (pre-flights, upload validation) at once; more get 429.
    pub heavy_requests: usize,
    /// Open connections at most; more wait to be accepted.
    pub connections: usize,
    /// Seconds a client may take to send a request's headers, or pause while sending its body,
    /// before the connection is closed.
    pub read_timeout_s: f64,
    /// Bytes the `net.pth` conversions in `cache_dir/pth` may take (the least recently used go
    /// first; the one in use always stays).
    pub weights_cache_bytes: u64,
    /// Bytes the audio feature cache (`cache_dir/audio-features`) may take, pruned the same way
    /// after each job.
    pub feature_cache_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            upload_bytes: 50 * 1024 * 1024,
            audio_seconds: 600.0,
            image_pixels: 4096 * 4096,
            queue_capacity: 8,
            retention_hours: 7 * 24,
            min_free_bytes: 2_000_000_000,
            heavy_requests: 2,
            connections: 512,
            read_timeout_s: 30.0,
            weights_cache_bytes: 12_000_000_000,
            feature_cache_bytes: 2_000_000_000,
        }
    }
}

/// `[security]`: who else may reach the studio (see `guard.rs`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Host names (besides the loopback names on a loopback bind) requests may be addressed to,
    /// e.g. `["studio.lan"]`.
    pub allowed_hosts: Vec<String>,
    /// Other origins (`https://tools.example`) whose pages may send requests that change state.
    pub allowed_origins: Vec<String>,
}

/// `[auth]`: the access token a non-loopback bind requires.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The token (`HALLO2_TOKEN` overrides). API clients send `Authorization: Bearer <token>`;
    /// browsers log in at `/login`.
    pub token: Option<String>,
}

/// `[warmup]`: the tiny real pipeline pass that ends loading.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmupConfig {
    /// Run it (off: ready right after the heads; no seconds-per-step figure).
    pub enabled: bool,
    /// Denoising steps of the pass (at the smallest size: 64×64, one clip).
    pub steps: usize,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            steps: 1,
        }
    }
}

/// What a process of a cluster does (`[cluster] role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    /// Pages, REST, server functions and SSE; no model.
    Web,
    /// Loads the model and takes jobs; serves only health, metrics and the backend API.
    Worker,
    /// Both.
    All,
}

impl ClusterRole {
    pub fn serves_pages(self) -> bool {
        matches!(self, Self::Web | Self::All)
    }

    pub fn runs_jobs(self) -> bool {
        matches!(self, Self::Worker | Self::All)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Worker => "worker",
            Self::All => "all",
        }
    }
}

/// `[cluster]`: share jobs, files and progress with other studio processes through NATS
/// JetStream (`cluster/`). Absent: one process, the local durable store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Server URL(s), comma-separated (`nats://127.0.0.1:4222`); `HALLO2_NATS` overrides.
    pub nats: String,
    pub role: ClusterRole,
    /// This process's name among the workers (default: host name and process id).
    pub name: Option<String>,
    /// Prefix of every stream, bucket and subject: clusters sharing a NATS account apart.
    pub prefix: String,
    /// A `.creds` file (JWT + NKey), or user and password, or a token (`HALLO2_NATS_TOKEN`).
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Seconds without a heartbeat before JetStream gives a running job to another worker.
    pub ack_wait_s: f64,
    /// Deliveries of one job at most (each counts as an attempt).
    pub max_deliver: u32,
    /// Seconds a worker's status stays without a refresh before the others count it gone.
    pub worker_ttl_s: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats: "nats://127.0.0.1:4222".into(),
            role: ClusterRole::All,
            name: None,
            prefix: "hallo2".into(),
            credentials: None,
            user: None,
            password: None,
            token: None,
            ack_wait_s: 30.0,
            max_deliver: 5,
            worker_ttl_s: 10.0,
        }
    }
}

/// Environment variable that overrides `device` (`./scripts/run.sh --gpu` sets `cuda`).
pub const ENV_DEVICE: &str = "HALLO2_DEVICE";
/// Environment variable that overrides `[cluster] nats`.
pub const ENV_NATS: &str = "HALLO2_NATS";
/// Environment variable that overrides `[cluster] token`.
pub const ENV_NATS_TOKEN: &str = "HALLO2_NATS_TOKEN";

/// The studio's settings (`configs/server.toml`, `configs/tiny.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server binds; `LEPTOS_SITE_ADDR` overrides.
    pub bind: SocketAddr,
    /// `eager` (load at start) or `lazy` (load on the first job).
    pub load: LoadMode,
    /// `cpu`, `cuda`, `cuda:N`, `metal`, or `auto` (the first GPU the build supports, else CPU).
    pub device: String,
    /// `auto` (f32 on CPU, the yaml's `weight_dtype` on a GPU), `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// The inference yaml (hallo2's `configs/inference/long.yaml` shape).
    pub inference: PathBuf,
    /// Our cache: the safetensors copy of `net.pth` and the per-stage load timings.
    pub cache_dir: PathBuf,
    /// Folder of `backend.log`.
    pub log_dir: PathBuf,
    /// Jobs: their inputs, records and videos (`<data_dir>/jobs/<id>/`).
    pub data_dir: PathBuf,
    /// Backend events kept for `Last-Event-ID` replay.
    pub event_buffer: usize,
    /// Seconds of video between a job's checkpoints (rounded to whole clips, at least one): a
    /// job interrupted by a crash or a shutdown continues from its last checkpoint. Each
    /// checkpoint also starts a new H.264 group (an IDR frame).
    pub checkpoint_seconds: f64,
    pub weights: WeightsConfig,
    pub limits: LimitsConfig,
    pub warmup: WarmupConfig,
    /// What job parameters may be (every entry checks them against these).
    pub bounds: app::settings::ParamBounds,
    pub security: SecurityConfig,
    pub auth: AuthConfig,
    /// Separate the vocals before the audio features (Kim_Vocal_2, as the official pipeline
    /// does): the separator is loaded at start and each job may turn it off. Off: neither.
    pub vocal_separation: bool,
    /// Serve without a model (also `DISABLE_BACKEND=true`).
    pub disable_backend: bool,
    /// Scale out through NATS JetStream; None: one process.
    pub cluster: Option<ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8501)),
            load: LoadMode::Eager,
            device: "auto".into(),
            dtype: "auto".into(),
            inference: "configs/inference/long.yaml".into(),
            cache_dir: "cache".into(),
            log_dir: "logs".into(),
            data_dir: "data".into(),
            event_buffer: 1024,
            checkpoint_seconds: 2.5,
            weights: WeightsConfig::default(),
            limits: LimitsConfig::default(),
            warmup: WarmupConfig::default(),
            bounds: app::settings::ParamBounds::default(),
            security: SecurityConfig::default(),
            auth: AuthConfig::default(),
            vocal_separation: true,
            disable_backend: false,
            cluster: None,
        }
    }
}

impl ServerConfig {
    /// Parses TOML text (unknown keys are errors) and checks it.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and checks a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Applies `LEPTOS_SITE_ADDR`, `DISABLE_BACKEND`, `HF_HUB_OFFLINE`, `HALLO2_DEVICE`,
    /// `HALLO2_TOKEN` and the cluster's, read through `env` (`std::env::var` in production; a
    /// map in tests).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(addr) = env(ENV_SITE_ADDR) {
            self.bind = addr.parse().map_err(|e| {
                ConfigError::Invalid(format!("{ENV_SITE_ADDR}={addr} is not an address: {e}"))
            })?;
        }
        if env(ENV_DISABLE_BACKEND).is_some_and(|v| truthy(&v)) {
            self.disable_backend = true;
        }
        self.weights.apply_offline_env(&env);
        if let Some(device) = env(ENV_DEVICE) {
            parse_device(&device)
                .map_err(|e| ConfigError::Invalid(format!("{ENV_DEVICE}={device}: {e}")))?;
            self.device = device;
        }
        if let Some(token) = env(crate::guard::ENV_TOKEN) {
            self.auth.token = Some(token);
        }
        if let Some(cluster) = &mut self.cluster {
            if let Some(url) = env(ENV_NATS) {
                cluster.nats = url;
            }
            if let Some(token) = env(ENV_NATS_TOKEN) {
                cluster.token = Some(token);
            }
        }
        Ok(())
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(self.checkpoint_seconds.is_finite() && self.checkpoint_seconds > 0.0) {
            return bad(format!(
                "checkpoint_seconds must be a positive number of seconds, got {}",
                self.checkpoint_seconds
            ));
        }
        if self.weights.source == WeightsSource::Local && self.weights.path.is_none() {
            return bad(
                "weights.source = \"local\" needs weights.path (the pretrained_models folder)"
                    .into(),
            );
        }
        if self.weights.source == WeightsSource::Hub && !self.weights.repo.contains('/') {
            return bad(format!(
                "weights.repo must be `owner/name`, got `{}`",
                self.weights.repo
            ));
        }
        if self.weights.concurrency == 0 {
            return bad("weights.concurrency must be at least 1".into());
        }
        if self.dtype != "auto" && parse_dtype(&self.dtype).is_err() {
            return bad(format!(
                "dtype must be auto, f32, f16 or bf16, got `{}`",
                self.dtype
            ));
        }
        parse_device(&self.device).map_err(ConfigError::Invalid)?;
        if self.warmup.enabled && self.warmup.steps == 0 {
            return bad("warmup.steps must be at least 1 (or set warmup.enabled = false)".into());
        }
        if self.limits.heavy_requests == 0 || self.limits.connections == 0 {
            return bad("limits.heavy_requests and limits.connections must be at least 1".into());
        }
        if !(self.limits.read_timeout_s.is_finite() && self.limits.read_timeout_s > 0.0) {
            return bad(format!(
                "limits.read_timeout_s must be a positive number of seconds, got {}",
                self.limits.read_timeout_s
            ));
        }
        if self.event_buffer == 0 {
            return bad("event_buffer must be at least 1".into());
        }
        self.bounds.check().map_err(ConfigError::Invalid)?;
        if let Some(cluster) = &self.cluster {
            let ok = |v: f64| v.is_finite() && v > 0.0;
            if !ok(cluster.ack_wait_s) || !ok(cluster.worker_ttl_s) || cluster.max_deliver == 0 {
                return bad(
                    "cluster.ack_wait_s and cluster.worker_ttl_s must be positive seconds, cluster.max_deliver at least 1"
                        .into(),
                );
            }
            let name_ok = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if !name_ok(&cluster.prefix) || cluster.name.as_deref().is_some_and(|n| !name_ok(n)) {
                return bad(
                    "cluster.prefix and cluster.name may hold letters, digits, `-` and `_` only"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Who may drive the studio; a non-loopback bind without a token is refused.
    pub fn access_policy(&self) -> Result<crate::guard::AccessPolicy, crate::guard::NoToken> {
        crate::guard::AccessPolicy::new(
            self.bind,
            &self.security.allowed_hosts,
            &self.security.allowed_origins,
            self.auth.token.clone(),
        )
    }

    /// What the pages and every entry work from: the inference yaml's defaults and frame rate,
    /// the bounds, the separation switch and the upload limits. Fails when the yaml cannot be
    /// read or one of its defaults is outside the bounds (the studio's own form would be
    /// refused).
    pub fn generation_settings(&self) -> Result<app::settings::GenerationSettings, ConfigError> {
        let yaml = model::config::InferenceConfig::from_yaml_file(&self.inference)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", self.inference.display())))?;
        let settings = app::settings::GenerationSettings {
            defaults: app::settings::ParamDefaults {
                pose_weight: yaml.pose_weight,
                face_weight: yaml.face_weight,
                lip_weight: yaml.lip_weight,
                steps: yaml.inference_steps,
                cfg_scale: yaml.cfg_scale,
                face_expand_ratio: yaml.face_expand_ratio,
                seed: app::settings::ParamDefaults::OFFICIAL.seed,
            },
            bounds: self.bounds,
            fps: yaml.data.export_video.fps,
            vocal_separation: self.vocal_separation,
            upload_bytes: self.limits.upload_bytes,
            audio_seconds: self.limits.audio_seconds,
        };
        settings
            .check()
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", self.inference.display())))?;
        Ok(settings)
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn repo_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    #[test]
    fn shipped_profiles_parse() {
        let server = ServerConfig::from_file(&repo_file("configs/server.toml")).unwrap();
        assert_eq!(server.weights.source, WeightsSource::Hub);
        assert_eq!(server.weights.repo, "fudan-generative-ai/hallo2");
        assert_eq!(server.bind.port(), 8501);
        let tiny = ServerConfig::from_file(&repo_file("configs/tiny.toml")).unwrap();
        assert_eq!(tiny.weights.source, WeightsSource::Local);
        assert!(
            repo_file(tiny.weights.path.as_ref().unwrap().to_str().unwrap())
                .join("hallo2/net.pth")
                .is_file()
        );
        assert!(repo_file(tiny.inference.to_str().unwrap()).is_file());
        // Both profiles' inference defaults lie inside their bounds (the pages start from them).
        for mut config in [server, tiny] {
            config.inference = repo_file(config.inference.to_str().unwrap());
            let settings = config.generation_settings().unwrap();
            assert_eq!(settings.bounds, config.bounds);
        }
    }

    #[test]
    fn bounds_are_checked_and_partial_ones_keep_the_other_defaults() {
        let c = ServerConfig::from_toml(
            "[bounds]\nsteps = { min = 2, max = 50 }",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.bounds.steps, app::settings::Bound::new(2, 50));
        assert_eq!(
            c.bounds.cfg_scale,
            app::settings::ParamBounds::default().cfg_scale
        );
        let err = ServerConfig::from_toml(
            "[bounds]\ncfg_scale = { min = 5.0, max = 2.0 }",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bounds.cfg_scale"), "{err}");
        let err = ServerConfig::from_toml(
            "[bounds]\nsteps = { min = 1, max = 9, step = 1 }",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("step"), "{err}");
        // A profile whose yaml default lies outside the bounds does not start.
        let mut c = ServerConfig::from_toml(
            "[bounds]\nsteps = { min = 1, max = 10 }",
            Path::new("x.toml"),
        )
        .unwrap();
        c.inference = repo_file("configs/inference/long.yaml");
        let err = c.generation_settings().unwrap_err();
        assert!(err.to_string().contains("40 steps"), "{err}");
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = ServerConfig::from_toml("", Path::new("x.toml")).unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.bind.to_string(), "127.0.0.1:8501");
        assert_eq!(c.load, LoadMode::Eager);
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        let err = ServerConfig::from_toml("bnd = \"0.0.0.0:1\"", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("bnd"), "{err}");
        let err =
            ServerConfig::from_toml("[weights]\nrepoo = \"a/b\"", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("repoo"), "{err}");
    }

    #[test]
    fn invalid_values_are_reported() {
        let err = ServerConfig::from_toml("[weights]\nsource = \"local\"", Path::new("x.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("weights.path"), "{err}");
        let err = ServerConfig::from_toml("device = \"gpu\"", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("gpu"), "{err}");
        assert_eq!(parse_device("cuda:1"), Ok(DeviceChoice::Cuda(1)));
    }

    #[test]
    fn env_overrides() {
        let env: HashMap<&str, &str> = [
            (ENV_SITE_ADDR, "0.0.0.0:3000"),
            (ENV_DISABLE_BACKEND, "true"),
            (ENV_HF_HUB_OFFLINE, "1"),
            (ENV_DEVICE, "cuda:1"),
        ]
        .into();
        let mut c = ServerConfig::default();
        c.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:3000");
        assert!(c.disable_backend);
        assert_eq!(c.weights.offline, Some(true));
        assert_eq!(c.device, "cuda:1");
        let err = c
            .apply_env(|k| (k == ENV_DEVICE).then(|| "gpu".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("HALLO2_DEVICE=gpu"), "{err}");
        let mut c = ServerConfig::default();
        let err = c
            .apply_env(|k| (k == ENV_SITE_ADDR).then(|| "nope".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("LEPTOS_SITE_ADDR=nope"), "{err}");
    }
}
