//! The server-rendered pages: each one shows the backend's state at the moment it is rendered
//! (what a browser without JavaScript sees) and embeds that snapshot for hydration.

mod common;

use std::time::Duration;

use app::live::INITIAL_STATUS_ID;
use app::types::{BackendState, BackendStatus};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use server::Studio;

const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The JSON the page embeds for hydration.
fn embedded_status(html: &str) -> BackendStatus {
    let open = format!(r#"id="{INITIAL_STATUS_ID}">"#);
    let start = html.find(&open).expect("snapshot script") + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end].replace("<\\/", "</")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_the_current_state_while_loading_and_when_ready() {
    let scratch = tempfile::tempdir().unwrap();
    let studio = Studio::start(tiny_config(scratch.path())).unwrap();
    let router = studio.router();
    let backend = studio.state.backend.clone();

    // Loading began before `start` returned: the page is served at once and says so.
    let resp = get(&router, "/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = text(resp).await;
    assert!(html.contains("Backend not ready"), "{html}");
    assert!(html.contains(r#"data-state="loading""#), "{html}");
    assert!(
        html.contains(r#"data-stage="denoising_unet""#),
        "every stage is listed"
    );
    assert!(
        html.contains("Queue (starts when the model is ready)"),
        "jobs can be queued while loading"
    );
    // The page loads the wasm cargo-leptos writes (`.cargo/config.toml` gives every build the
    // site's name; without it leptos asks for `hallo2-studio_bg.wasm`, which does not exist).
    assert!(html.contains("/pkg/hallo2-studio.wasm"), "{html}");
    assert!(!html.contains("_bg.wasm"), "{html}");
    let snapshot = embedded_status(&html);
    assert_eq!(snapshot.state.name(), "loading");
    assert!(snapshot.last_seq >= 1);

    wait_for(&backend, LOAD_TIMEOUT, BackendState::is_ready).await;
    let html = text(get(&router, "/").await).await;
    assert!(html.contains(r#"data-state="ready""#), "{html}");
    assert!(html.contains(">Ready<"), "{html}");
    assert!(html.contains("Hallo2 is loaded on cpu (f32)"), "{html}");
    assert!(!html.contains(r#"<fieldset id="generate-controls" disabled"#));
    let snapshot = embedded_status(&html);
    assert_eq!(snapshot.state, backend.state());
    assert_eq!(snapshot.last_seq, backend.status().last_seq);

    // The waterfall lists every stage with its measured time.
    let html = text(get(&router, "/status").await).await;
    assert!(html.contains(r#"id="waterfall""#), "{html}");
    assert!(
        html.contains(r#"data-stage="warmup" data-phase="done" class="wf-row""#),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_shows_cause_hint_and_a_retry_form_that_works_without_javascript() {
    let scratch = tempfile::tempdir().unwrap();
    let (config, vae, good) = config_with_truncated(scratch.path(), VAE_FILE);
    let studio = Studio::start(config).unwrap();
    let router = studio.router();
    let backend = studio.state.backend.clone();
    wait_for(&backend, LOAD_TIMEOUT, |s| {
        matches!(s, BackendState::Failed { .. })
    })
    .await;

    let html = text(get(&router, "/").await).await;
    assert!(html.contains(r#"data-state="failed""#), "{html}");
    assert!(
        html.contains("diffusion_pytorch_model.safetensors"),
        "names the file: {html}"
    );
    assert!(html.contains(r#"id="backend-hint""#));
    assert!(html.contains(r#"action="/api/fn/reload""#));

    // The form's POST to the server function (a browser asks for HTML) starts a new load and
    // goes back to the page.
    std::fs::write(&vae, &good).unwrap();
    let req = Request::post("/api/fn/reload")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .header(header::REFERER, "http://127.0.0.1:8501/status")
        .body(Body::empty())
        .unwrap();
    let resp = call(&router, req).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    // (server_fn strips its error query from the Referer and leaves the `?`.)
    let location = resp.headers()[header::LOCATION].to_str().unwrap();
    assert_eq!(
        location.trim_end_matches('?'),
        "http://127.0.0.1:8501/status"
    );
    wait_for(&backend, LOAD_TIMEOUT, BackendState::is_ready).await;
}

#[tokio::test]
async fn disabled_backend_page_and_unknown_paths() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.disable_backend = true;
    let studio = Studio::start(config).unwrap();
    let router = studio.router();

    let html = text(get(&router, "/").await).await;
    assert!(html.contains("Backend disabled"), "{html}");
    assert!(html.contains(r#"data-state="disabled""#));
    assert!(
        html.contains(r#"<fieldset id="generate-controls" disabled"#),
        "nothing can be generated"
    );

    // An unknown page is the app's 404 page; an unknown API path is the API's JSON 404.
    let resp = get(&router, "/no-such-page").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(text(resp).await.contains("Page not found"));
    let resp = get(&router, "/api/no-such-route").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(resp).await["kind"], "not_found");
}
