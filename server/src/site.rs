//! The Leptos side of the server: the site's options, the server-rendered pages of `app` and the
//! site's static files (`/pkg/*` from cargo-leptos' build, `public/`).
//!
//! Each page is rendered with the backend's current status in the context (the page shows it
//! without JavaScript, and the browser hydrates from it).

use std::net::SocketAddr;

use app::live::Snapshot;
use app::{App, SITE_NAME, shell};
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, file_and_error_handler_with_context, generate_route_list};

use std::sync::Arc;

use app::api::ssr::Studio;
use app::api::{PreflightAudio, PreflightImage, SubmitJob};
use leptos::server_fn::ServerFn;

use crate::error::{ApiError, Refusal};
use crate::service::Service;

/// Where cargo-leptos puts the site, relative to the repository root (its `site-root`).
pub const DEFAULT_SITE_ROOT: &str = "target/site";

/// The site's options: cargo-leptos' `LEPTOS_*` variables where set (it sets them for `watch`
/// and `serve`), else the workspace's `[[workspace.metadata.leptos]]` values, so the binary also
/// runs on its own from the repository root. The address is the one the server binds.
pub fn leptos_options(bind: SocketAddr, env: impl Fn(&str) -> Option<String>) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name(env("LEPTOS_OUTPUT_NAME").unwrap_or_else(|| SITE_NAME.into()))
        .site_root(env("LEPTOS_SITE_ROOT").unwrap_or_else(|| DEFAULT_SITE_ROOT.into()))
        .site_pkg_dir(env("LEPTOS_SITE_PKG_DIR").unwrap_or_else(|| "pkg".into()))
        .site_addr(bind)
        .reload_port(
            env("LEPTOS_RELOAD_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(8502),
        )
        .build()
}

/// The pages (every route of `app`), the server functions (`app::api`) and, for any other path,
/// the site's files or the app's not-found page.
pub fn pages_router(service: Service, options: LeptosOptions) -> Router {
    let routes = generate_route_list(|| view! { <App initial=Snapshot::default()/> });
    let studio = Studio(Arc::new(service.clone()));
    // Pages and server functions alike get the operations and the snapshot.
    let context = move || {
        provide_context(studio.clone());
        provide_context(Snapshot {
            status: service.backend(),
            jobs: service.jobs(),
            settings: service.settings().clone(),
        })
    };
    let render = {
        let options = options.clone();
        move || shell(options.clone())
    };
    Router::<LeptosOptions>::new()
        .leptos_routes_with_context(&options, routes, context.clone(), render)
        .fallback(file_and_error_handler_with_context(context, shell))
        .layer(axum::middleware::from_fn(multipart_guard))
        .with_state(options)
}

/// The upload server functions, whose multipart decoding (server_fn's) panics on a body
/// without a boundary.
fn takes_multipart(path: &str) -> bool {
    [SubmitJob::PATH, PreflightImage::PATH, PreflightAudio::PATH].contains(&path)
}

/// Refuses (400 `bad_form`) a request to an upload server function whose body is not a
/// multipart form, before server_fn reads it.
async fn multipart_guard(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if takes_multipart(request.uri().path()) {
        let boundary = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(multer::parse_boundary);
        if !matches!(boundary, Some(Ok(_))) {
            let refusal = Refusal::BadForm("the body is not a multipart/form-data form".into());
            crate::jobs::upload::drain_body(request.into_body()).await;
            return ApiError::from(refusal).into_response();
        }
    }
    next.run(request).await
}
