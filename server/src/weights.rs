//! Finding the weights (`resolve`) and fetching what is missing from the Hub (`download`).
//!
//! The Hub path keeps the standard HF cache layout (shared with Python tools) through hf-hub 1.0:
//! `HFClient` reads `HF_HOME`/`HF_HUB_CACHE`, `HF_ENDPOINT` and `HF_TOKEN`; `HF_HUB_OFFLINE`,
//! which hf-hub ignores, is honoured here (`local_files_only`). hf-hub 1.0 restarts an
//! interrupted download from byte 0, so the bytes of a missing file are transferred here into the
//! very `blobs/<etag>.incomplete` file hf-hub and Python use, resuming with `Range` after an
//! interruption; hf-hub then finds the blob and links it into `snapshots/<commit>/` and
//! `refs/<revision>` as usual.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError};
use model::config::WeightsLayout;

use crate::config::{WeightsConfig, WeightsSource};

/// The wav2vec2 weights the audio encoder reads (relative to `pretrained_models/`; its
/// `config.json` is among the model's own required files, the heads' shapes need it).
pub const WAV2VEC_FILES: [&str; 1] = ["wav2vec/wav2vec2-base-960h/model.safetensors"];

/// The InsightFace files the face analysis reads (relative to `pretrained_models/`).
pub const FACE_ANALYSIS_FILES: [&str; 2] = [
    "face_analysis/models/scrfd_10g_bnkps.onnx",
    "face_analysis/models/glintr100.onnx",
];

/// [`required_files`], with the vocal separator's when `vocal_separation` is on.
pub fn files_with_separator(vocal_separation: bool) -> Vec<String> {
    let mut files = required_files();
    if vocal_separation {
        files.extend(WeightsLayout::VOCAL_SEPARATOR_FILES.map(String::from));
    }
    files
}

/// Every file the studio reads without the vocal separator, relative to `pretrained_models/`.
pub fn required_files() -> Vec<String> {
    let mut files: Vec<String> = WeightsLayout::required_files()
        .iter()
        .map(|f| f.to_string())
        .collect();
    files.extend(WAV2VEC_FILES.iter().map(|f| f.to_string()));
    files.extend(FACE_ANALYSIS_FILES.iter().map(|f| f.to_string()));
    files
}

/// A failure of `resolve` or `download`, with what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct WeightsError {
    pub error: String,
    pub hint: String,
}

impl WeightsError {
    fn new(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            hint: hint.into(),
        }
    }
}

/// Where `resolve` found the files.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The `pretrained_models/` folder, when every file is there.
    pub root: Option<PathBuf>,
    /// Files (relative to `pretrained_models/`) still to fetch.
    pub missing: Vec<String>,
    /// Bytes of the files found.
    pub present_bytes: u64,
}

/// Progress of a download, in bytes: the stage's totals and the file that moved.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadProgress {
    pub done: u64,
    pub total: u64,
    pub file: String,
    pub file_done: u64,
    pub file_total: u64,
}

/// Finds every required file: in the local folder, or in the HF cache (no network).
pub async fn resolve(cfg: &WeightsConfig, files: &[String]) -> Result<Resolved, WeightsError> {
    match cfg.source {
        WeightsSource::Local => {
            let root = cfg.path.clone().unwrap_or_default();
            let mut missing = Vec::new();
            let mut present_bytes = 0;
            for f in files {
                match std::fs::metadata(root.join(f)) {
                    Ok(m) if m.is_file() => present_bytes += m.len(),
                    _ => missing.push(f.clone()),
                }
            }
            if !missing.is_empty() {
                return Err(WeightsError::new(
                    format!(
                        "{} of {} weight files are missing in {}: {}",
                        missing.len(),
                        files.len(),
                        root.display(),
                        missing.join(", ")
                    ),
                    format!(
                        "put the official pretrained_models tree there (huggingface-cli download {} --local-dir <dir>), or set [weights] source = \"hub\"",
                        cfg.repo
                    ),
                ));
            }
            Ok(Resolved {
                root: Some(root),
                missing,
                present_bytes,
            })
        }
        WeightsSource::Hub => {
            let client = hub_client(cfg)?;
            let (owner, name) = split_repo(&cfg.repo);
            let repo = client.model(owner, name);
            let mut missing = Vec::new();
            let mut roots = Vec::new();
            let mut present_bytes = 0;
            for f in files {
                let in_repo = repo_path(cfg, f);
                let found = repo
                    .download_file()
                    .filename(in_repo.clone())
                    .revision(cfg.revision.clone())
                    .local_files_only(true)
                    .send()
                    .await;
                match found {
                    Ok(path) => {
                        present_bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
                        roots.push(strip_suffix(&path, f));
                    }
                    Err(_) => missing.push(f.clone()),
                }
            }
            let offline = cfg.offline.unwrap_or(false);
            if offline && !missing.is_empty() {
                return Err(WeightsError::new(
                    format!(
                        "offline (HF_HUB_OFFLINE) and {} files of {}@{} are not in the HF cache {}: {}",
                        missing.len(),
                        cfg.repo,
                        cfg.revision,
                        client.cache_dir().display(),
                        missing.join(", ")
                    ),
                    format!(
                        "unset HF_HUB_OFFLINE to download them, or fetch them elsewhere: huggingface-cli download {} {}",
                        cfg.repo,
                        missing
                            .iter()
                            .map(|f| repo_path(cfg, f))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
            }
            roots.dedup();
            // Files cached under different commits are re-linked into one snapshot by download.
            let root = (missing.is_empty() && roots.len() == 1)
                .then(|| roots.pop())
                .flatten();
            if root.is_none() && missing.is_empty() {
                missing = files.to_vec();
            }
            Ok(Resolved {
                root,
                missing,
                present_bytes,
            })
        }
    }
}

/// Fetches `missing` (several at once, each resumable), then links every required file into
/// one snapshot; returns the `pretrained_models/` folder.
pub async fn download(
    cfg: &WeightsConfig,
    files: &[String],
    missing: &[String],
    on_progress: Arc<dyn Fn(DownloadProgress) + Send + Sync>,
) -> Result<PathBuf, WeightsError> {
    let client = hub_client(cfg)?;
    let transfer = Transfer::new(cfg, &client)?;
    // Sizes first, so the stage's byte total is known from the start.
    let mut heads = Vec::new();
    for f in missing {
        heads.push(transfer.head(&repo_path(cfg, f)).await?);
    }
    let totals: BTreeMap<String, u64> = missing
        .iter()
        .zip(&heads)
        .map(|(f, h)| (f.clone(), h.size))
        .collect();
    let total: u64 = totals.values().sum();
    let done_by_file: Arc<Mutex<BTreeMap<String, u64>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let results: Vec<Result<(), WeightsError>> = futures::stream::iter(missing.iter().zip(heads))
        .map(|(f, head)| {
            let transfer = &transfer;
            let done_by_file = done_by_file.clone();
            let on_progress = on_progress.clone();
            let file = f.clone();
            async move {
                let report = |file_done: u64| {
                    let done = {
                        let mut map = done_by_file.lock().unwrap_or_else(|p| p.into_inner());
                        map.insert(file.clone(), file_done);
                        map.values().sum()
                    };
                    on_progress(DownloadProgress {
                        done,
                        total,
                        file: file.clone(),
                        file_done,
                        file_total: head.size,
                    });
                };
                transfer.fetch(&head, cfg.retries, &report).await
            }
        })
        .buffer_unordered(cfg.concurrency)
        .collect()
        .await;
    for r in results {
        r?;
    }
    // Link every file (downloaded now or cached earlier) into the snapshot of the revision.
    let (owner, name) = split_repo(&cfg.repo);
    let repo = client.model(owner, name);
    let mut root = None;
    for f in files {
        let path = repo
            .download_file()
            .filename(repo_path(cfg, f))
            .revision(cfg.revision.clone())
            .progress(HubProgress)
            .send()
            .await
            .map_err(|e| hub_error(cfg, f, &e))?;
        root = Some(strip_suffix(&path, f));
    }
    root.ok_or_else(|| WeightsError::new("no files to download", "check [weights]"))
}

/// hf-hub's own events (the finalising requests only report completion; bytes come from
/// [`Transfer`]).
struct HubProgress;

impl ProgressHandler for HubProgress {
    fn on_progress(&self, event: &ProgressEvent) {
        if let ProgressEvent::Download(DownloadEvent::Progress { files }) = event {
            for f in files {
                tracing::debug!(file = %f.filename, bytes = f.bytes_completed, "hf-hub");
            }
        }
    }
}

fn hub_client(cfg: &WeightsConfig) -> Result<HFClient, WeightsError> {
    let mut builder = HFClient::builder();
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.endpoint(endpoint.clone());
    }
    if let Some(cache) = &cfg.hf_cache {
        builder = builder.cache_dir(cache.clone());
    }
    builder.build().map_err(|e| {
        WeightsError::new(
            format!("setting up the Hub client: {e}"),
            "check HF_ENDPOINT / [weights] endpoint (a URL such as https://huggingface.co)",
        )
    })
}

fn split_repo(repo: &str) -> (&str, &str) {
    repo.split_once('/').unwrap_or(("", repo))
}

/// The path of a `pretrained_models/` file inside the repository.
fn repo_path(cfg: &WeightsConfig, file: &str) -> String {
    if cfg.subfolder.is_empty() {
        file.to_string()
    } else {
        format!("{}/{file}", cfg.subfolder.trim_end_matches('/'))
    }
}

/// `…/pretrained_models/hallo2/net.pth` minus `hallo2/net.pth`.
fn strip_suffix(path: &Path, rel: &str) -> PathBuf {
    let depth = Path::new(rel).components().count();
    path.ancestors()
        .nth(depth)
        .map_or_else(|| path.to_owned(), Path::to_owned)
}

fn hub_error(cfg: &WeightsConfig, file: &str, e: &HFError) -> WeightsError {
    let error = format!(
        "fetching {} from {}@{}: {e}",
        repo_path(cfg, file),
        cfg.repo,
        cfg.revision
    );
    let hint = match e {
        HFError::Forbidden { .. } => "set HF_TOKEN to a token that can read the repository",
        HFError::RepoNotFound { .. } | HFError::EntryNotFound { .. } => {
            "check [weights] repo, revision and subfolder"
        }
        _ => "check the network and HF_ENDPOINT, then POST /api/backend/reload",
    };
    WeightsError::new(error, hint)
}

/// What a `HEAD` on the resolve URL says about a file.
#[derive(Debug, Clone)]
pub struct Head {
    pub url: String,
    pub etag: String,
    pub size: u64,
    pub commit: Option<String>,
}

/// Resumable byte transfer into the HF cache's `blobs/<etag>.incomplete`.
struct Transfer {
    head_client: reqwest::Client,
    get_client: reqwest::Client,
    endpoint: String,
    repo: String,
    revision: String,
    blobs: PathBuf,
    token: Option<String>,
}

impl Transfer {
    fn new(cfg: &WeightsConfig, client: &HFClient) -> Result<Self, WeightsError> {
        let build = |redirects: bool| {
            let mut b = reqwest::Client::builder()
                .user_agent(concat!("hallo2-studio/", env!("CARGO_PKG_VERSION")));
            if !redirects {
                b = b.redirect(reqwest::redirect::Policy::none());
            }
            b.build().map_err(|e| {
                WeightsError::new(
                    format!("building the HTTP client: {e}"),
                    "this is a bug; see logs/backend.log",
                )
            })
        };
        let (owner, name) = split_repo(&cfg.repo);
        Ok(Self {
            head_client: build(false)?,
            get_client: build(true)?,
            endpoint: client.endpoint().to_string(),
            repo: cfg.repo.clone(),
            revision: cfg.revision.clone(),
            blobs: client
                .cache_dir()
                .join(format!("models--{owner}--{name}"))
                .join("blobs"),
            token: hf_token(),
        })
    }

    fn url(&self, file: &str) -> String {
        let file: Vec<String> = file.split('/').map(percent_encode).collect();
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            self.repo,
            percent_encode(&self.revision),
            file.join("/")
        )
    }

    fn authorise(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn head(&self, file: &str) -> Result<Head, WeightsError> {
        let url = self.url(file);
        let net = |e: reqwest::Error| {
            WeightsError::new(
                format!("asking the Hub about {file} ({url}): {e}"),
                "check the network, HF_ENDPOINT and proxies; or set HF_HUB_OFFLINE=1 with a filled HF cache",
            )
        };
        let resp = self
            .authorise(self.head_client.head(&url))
            .send()
            .await
            .map_err(net)?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(WeightsError::new(
                format!("the Hub refused {file} ({status})"),
                "set HF_TOKEN to a token that can read the repository",
            ));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(WeightsError::new(
                format!("{file} is not in {}@{} ({url})", self.repo, self.revision),
                "check [weights] repo, revision and subfolder (fudan-generative-ai/hallo2 keeps its files at its root, e.g. hallo2/net.pth: subfolder = \"\")",
            ));
        }
        if !(status.is_success() || status.is_redirection()) {
            return Err(WeightsError::new(
                format!("the Hub answered {status} for {file} ({url})"),
                "retry later with POST /api/backend/reload",
            ));
        }
        let header = |names: &[&str]| {
            names.iter().find_map(|n| {
                resp.headers()
                    .get(*n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
        };
        let etag = header(&["x-linked-etag", "etag"])
            .map(|e| {
                e.strip_prefix("W/")
                    .unwrap_or(&e)
                    .trim_matches('"')
                    .to_string()
            })
            .ok_or_else(|| {
                WeightsError::new(
                    format!("the Hub sent no ETag for {file} ({url})"),
                    "HF_ENDPOINT must point at a Hub (or a mirror that sends ETag and X-Repo-Commit)",
                )
            })?;
        let size = header(&["x-linked-size", "content-length"])
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                WeightsError::new(
                    format!("the Hub sent no size for {file} ({url})"),
                    "HF_ENDPOINT must point at a Hub (or a mirror that sends Content-Length)",
                )
            })?;
        Ok(Head {
            url,
            etag,
            size,
            commit: header(&["x-repo-commit"]),
        })
    }

    /// Transfers one file into its blob, resuming from the `.incomplete` file, retrying
    /// interrupted transfers `retries` times.
    async fn fetch(
        &self,
        head: &Head,
        retries: usize,
        report: &(dyn Fn(u64) + Sync),
    ) -> Result<(), WeightsError> {
        let blob = self.blobs.join(&head.etag);
        if blob.is_file() {
            report(head.size);
            return Ok(());
        }
        std::fs::create_dir_all(&self.blobs).map_err(|e| {
            WeightsError::new(
                format!("creating {}: {e}", self.blobs.display()),
                "check that the HF cache (HF_HOME) is writable",
            )
        })?;
        let partial = self.blobs.join(format!("{}.incomplete", head.etag));
        let mut last_error = None;
        for attempt in 0..=retries {
            match self.fetch_once(head, &partial, report).await {
                Ok(()) => {
                    std::fs::rename(&partial, &blob).map_err(|e| {
                        WeightsError::new(
                            format!("moving {} into place: {e}", blob.display()),
                            "check that the HF cache (HF_HOME) is writable",
                        )
                    })?;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(url = %head.url, attempt, error = %e.error, "download interrupted; resuming");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| WeightsError::new("download failed", "retry")))
    }

    async fn fetch_once(
        &self,
        head: &Head,
        partial: &Path,
        report: &(dyn Fn(u64) + Sync),
    ) -> Result<(), WeightsError> {
        let io = |what: &str, e: std::io::Error| {
            WeightsError::new(
                format!("{what} {}: {e}", partial.display()),
                "check free space and permissions of the HF cache (HF_HOME)",
            )
        };
        let mut offset = std::fs::metadata(partial).map_or(0, |m| m.len());
        if offset > head.size {
            offset = 0;
        }
        if offset == head.size && offset > 0 {
            report(offset);
            return Ok(());
        }
        let mut req = self.authorise(self.get_client.get(&head.url));
        if offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().await.map_err(|e| {
            WeightsError::new(
                format!("downloading {}: {e}", head.url),
                "check the network; POST /api/backend/reload resumes where it stopped",
            )
        })?;
        let status = resp.status();
        let append = match status {
            reqwest::StatusCode::PARTIAL_CONTENT => true,
            s if s.is_success() => false,
            s => {
                return Err(WeightsError::new(
                    format!("downloading {}: the server answered {s}", head.url),
                    "retry later with POST /api/backend/reload",
                ));
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(partial)
            .map_err(|e| io("opening", e))?;
        let mut done = if append { offset } else { 0 };
        if append {
            tracing::info!(url = %head.url, offset, "resuming download");
        }
        report(done);
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                WeightsError::new(
                    format!(
                        "downloading {}: interrupted after {done} of {} bytes: {e}",
                        head.url, head.size
                    ),
                    "POST /api/backend/reload resumes where it stopped",
                )
            })?;
            file.write_all(&chunk).map_err(|e| io("writing", e))?;
            done += chunk.len() as u64;
            report(done);
        }
        file.flush().map_err(|e| io("writing", e))?;
        if done != head.size {
            return Err(WeightsError::new(
                format!(
                    "downloading {}: got {done} bytes, expected {}",
                    head.url, head.size
                ),
                "POST /api/backend/reload resumes where it stopped",
            ));
        }
        Ok(())
    }
}

/// `HF_TOKEN`, else the token file `huggingface-cli login` writes (`$HF_HOME/token`).
fn hf_token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let home = std::env::var_os("HF_HOME").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface"))
    })?;
    let t = std::fs::read_to_string(home.join("token")).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_encoding() {
        assert_eq!(percent_encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(percent_encode("net.pth"), "net.pth");
        let p = Path::new("/c/snapshots/abc/pretrained_models/hallo2/net.pth");
        assert_eq!(
            strip_suffix(p, "hallo2/net.pth"),
            Path::new("/c/snapshots/abc/pretrained_models")
        );
        // The official repository's root is the pretrained_models tree.
        let mut cfg = WeightsConfig::default();
        assert_eq!(repo_path(&cfg, "hallo2/net.pth"), "hallo2/net.pth");
        cfg.subfolder = "mirror/".into();
        assert_eq!(repo_path(&cfg, "hallo2/net.pth"), "mirror/hallo2/net.pth");
        let files = required_files();
        assert!(files.contains(&"hallo2/net.pth".to_string()));
        assert!(files.contains(&WAV2VEC_FILES[0].to_string()));
        assert!(files.contains(&FACE_ANALYSIS_FILES[1].to_string()));
    }
}
