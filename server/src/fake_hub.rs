//! A small local server speaking the Hub's file-download API, for tests, benches and the
//! end-to-end suite (our machines cannot reach the Hub).
//!
//! `HEAD|GET /{owner}/{name}/resolve/{revision}/{path}` serve the files under `root` (the
//! repository's working tree) with the headers hf-hub reads: `ETag` (content hash),
//! `X-Repo-Commit`, `Content-Length`, `Accept-Ranges`, and `Range` requests (206 +
//! `Content-Range`). Transfers can be throttled (to make loading observable) and the first
//! transfer of each file can be cut after some bytes (to test resuming).
//!
//! With a `layout` (the real repository's file list, [`hub_layout`] of
//! `model/tests/fixtures/hub-layout.md`) it serves exactly that tree: a path outside it is a 404
//! even when `root` has the file, and a listed path `root` lacks is served as a small stand-in
//! (`stand-in for <path>`), so a client that asks for a path the real repository does not have,
//! or reads a file it does not need, is caught.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

/// The commit every revision resolves to.
pub const FAKE_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// Chunk size of streamed bodies.
const CHUNK: usize = 16 * 1024;

/// How the fake hub behaves.
#[derive(Debug, Clone, Default)]
pub struct FakeHubOptions {
    /// The repository's files (paths in URLs are relative to it).
    pub root: PathBuf,
    /// Only this repository id is served (others: 404).
    pub repo: String,
    /// Body bytes per second (None: as fast as possible).
    pub throttle_bytes_per_s: Option<u64>,
    /// Cut the first `GET` of each file after this many bytes (the connection drops).
    pub interrupt_after: Option<u64>,
    /// The repository's whole file list (None: whatever `root` holds).
    pub layout: Option<Vec<String>>,
}

/// The paths of the repository table in a `hub-layout.md` (rows whose first cell is a
/// `` `path` ``), in file order.
pub fn hub_layout(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|line| {
            let cell = line.trim().strip_prefix('|')?.split('|').next()?.trim();
            let path = cell.strip_prefix('`')?.strip_suffix('`')?;
            (!path.is_empty() && !path.contains(' ')).then(|| path.to_string())
        })
        .collect()
}

/// What a listed path serves.
enum Content {
    File(PathBuf),
    StandIn(Bytes),
}

/// The stand-in body of a listed file that `root` does not have.
pub fn stand_in(path: &str) -> Vec<u8> {
    format!("stand-in for {path}\n").into_bytes()
}

/// One request the fake hub answered (for assertions).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

struct HubState {
    options: FakeHubOptions,
    etags: Mutex<BTreeMap<PathBuf, String>>,
    interrupted: Mutex<HashSet<String>>,
    log: Mutex<Vec<Logged>>,
}

/// A running fake hub.
pub struct FakeHub {
    pub addr: SocketAddr,
    state: Arc<HubState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHub {
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub async fn start(options: FakeHubOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::serve(listener, options)
    }

    /// Serves on `listener` until dropped.
    pub fn serve(
        listener: tokio::net::TcpListener,
        options: FakeHubOptions,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(HubState {
            options,
            etags: Mutex::new(BTreeMap::new()),
            interrupted: Mutex::new(HashSet::new()),
            log: Mutex::new(Vec::new()),
        });
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:PORT` (what `HF_ENDPOINT` / `[weights] endpoint` takes).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fake hub's router.
fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route(
            "/{owner}/{name}/resolve/{revision}/{*path}",
            get(resolve).head(resolve),
        )
        .with_state(state)
}

async fn resolve(
    State(state): State<Arc<HubState>>,
    method: Method,
    UrlPath((owner, name, _revision, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = answer(
        &state,
        &method,
        &format!("{owner}/{name}"),
        &path,
        range.as_deref(),
    )
    .await;
    if let Ok(mut log) = state.log.lock() {
        log.push(Logged {
            method: method.to_string(),
            path: path.clone(),
            range,
            status: response.status().as_u16(),
        });
    }
    response
}

async fn answer(
    state: &HubState,
    method: &Method,
    repo: &str,
    path: &str,
    range: Option<&str>,
) -> Response {
    let not_found = |what: &str| {
        let mut r = (StatusCode::NOT_FOUND, what.to_string()).into_response();
        r.headers_mut()
            .insert("x-repo-commit", HeaderValue::from_static(FAKE_COMMIT));
        r.headers_mut()
            .insert("x-error-code", HeaderValue::from_static("EntryNotFound"));
        r
    };
    if repo != state.options.repo {
        return (StatusCode::NOT_FOUND, "repository not found").into_response();
    }
    if path.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return not_found("bad path");
    }
    let listed = state
        .options
        .layout
        .as_ref()
        .map(|paths| paths.iter().any(|p| p == path));
    if listed == Some(false) {
        return not_found("entry not found");
    }
    let file = state.options.root.join(path);
    let content = match tokio::fs::metadata(&file).await {
        Ok(meta) if meta.is_file() => Content::File(file),
        _ if listed == Some(true) => Content::StandIn(Bytes::from(stand_in(path))),
        _ => return not_found("entry not found"),
    };
    let (size, etag) = match &content {
        Content::File(file) => {
            let size = match tokio::fs::metadata(file).await {
                Ok(meta) => meta.len(),
                Err(_) => return not_found("entry not found"),
            };
            let Ok(etag) = etag(state, file).await else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "reading file").into_response();
            };
            (size, etag)
        }
        Content::StandIn(bytes) => (bytes.len() as u64, blake3::hash(bytes).to_hex().to_string()),
    };
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    h.insert("x-repo-commit", HeaderValue::from_static(FAKE_COMMIT));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let (status, start, end) = match range.map(|r| parse_range(r, size)) {
        None => (StatusCode::OK, 0, size),
        Some(Some((s, e))) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{}/{size}", e - 1)) {
                h.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, s, e)
        }
        Some(None) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            return (StatusCode::RANGE_NOT_SATISFIABLE, h).into_response();
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if *method == Method::HEAD {
        return (status, h).into_response();
    }
    let cut = state.options.interrupt_after.filter(|_| {
        range.is_none()
            && state
                .interrupted
                .lock()
                .map(|mut seen| seen.insert(path.to_string()))
                .unwrap_or(false)
    });
    let body = match content {
        Content::File(file) => {
            stream_file(file, start, end, state.options.throttle_bytes_per_s, cut)
        }
        Content::StandIn(bytes) => Body::from(bytes.slice(start as usize..end as usize)),
    };
    (status, h, body).into_response()
}

/// `bytes=N-` or `bytes=N-M` → `[start, end)`; None when unsatisfiable.
pub fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        size
    } else {
        b.trim().parse::<u64>().ok()?.saturating_add(1).min(size)
    };
    (start < end).then_some((start, end))
}

async fn etag(state: &HubState, file: &Path) -> std::io::Result<String> {
    if let Some(e) = state.etags.lock().ok().and_then(|m| m.get(file).cloned()) {
        return Ok(e);
    }
    let bytes = tokio::fs::read(file).await?;
    let e = blake3::hash(&bytes).to_hex().to_string();
    if let Ok(mut m) = state.etags.lock() {
        m.insert(file.to_owned(), e.clone());
    }
    Ok(e)
}

/// The bytes `[start, end)` of `file`, in chunks, at most `rate` bytes/s; with `cut`, the
/// stream fails after that many bytes (the client sees the connection drop).
fn stream_file(file: PathBuf, start: u64, end: u64, rate: Option<u64>, cut: Option<u64>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = match tokio::fs::File::open(&file).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if let Err(e) = f.seek(std::io::SeekFrom::Start(start)).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        let mut sent = 0u64;
        let total = end - start;
        let started = tokio::time::Instant::now();
        while sent < total {
            let mut n = CHUNK.min((total - sent) as usize);
            if let Some(cut) = cut {
                if sent >= cut {
                    let _ = tx
                        .send(Err(std::io::Error::other("fake hub: transfer cut")))
                        .await;
                    return;
                }
                n = n.min((cut - sent) as usize);
            }
            let mut buf = vec![0u8; n];
            if let Err(e) = f.read_exact(&mut buf).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
            sent += n as u64;
            if let Some(rate) = rate.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(started + due).await;
            }
            if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                return;
            }
        }
    });
    Body::from_stream(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_table_lists_every_path_of_the_real_repository() {
        let md = include_str!("../../model/tests/fixtures/hub-layout.md");
        let paths = hub_layout(md);
        assert!(paths.contains(&"hallo2/net.pth".to_string()), "{paths:?}");
        assert!(paths.iter().all(|p| !p.starts_with("pretrained_models/")));
        // Every file the studio reads is a path of the real repository.
        for f in crate::weights::required_files() {
            assert!(paths.contains(&f), "{f} is not in the real repository");
        }
        let unique: HashSet<&String> = paths.iter().collect();
        assert_eq!(unique.len(), paths.len());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 10)));
        assert_eq!(parse_range("bytes=4-", 10), Some((4, 10)));
        assert_eq!(parse_range("bytes=2-5", 10), Some((2, 6)));
        assert_eq!(parse_range("bytes=2-50", 10), Some((2, 10)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("items=1-2", 10), None);
    }
}
