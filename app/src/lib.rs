//! The studio's web app: the Leptos pages and components (rendered on the server, hydrated in
//! the browser by `frontend`), and the wire types shared with the server.
//!
//! This crate is compiled for the server (`ssr`) and for wasm (`hydrate`), so it must never depend
//! on `model`, candle or anything that does not build for `wasm32-unknown-unknown`. The server
//! converts its own state into the types of [`types`]; the browser only deserialises them.

// The pages' view types nest deeply (leptos/tachys).
#![recursion_limit = "256"]

pub mod api;
pub mod browser;
pub mod components;
pub mod format;
pub mod jobs;
pub mod live;
pub mod pages;
pub mod settings;
pub mod status;
pub mod types;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use crate::components::status_panel::StatusPanel;
use crate::live::{
    INITIAL_JOBS_ID, INITIAL_SETTINGS_ID, INITIAL_STATUS_ID, LiveBackend, Snapshot, embed_json,
};
use crate::pages::history::HistoryPage;
use crate::pages::job::JobPage;
use crate::pages::status::StatusPage;
use crate::pages::studio::StudioPage;

/// Name of the site's assets: `/pkg/hallo2-studio.{js,wasm,css}` (the `name` in the workspace's
/// `[[workspace.metadata.leptos]]`).
pub const SITE_NAME: &str = "hallo2-studio";

/// The HTML document. The server renders it per request with the backend's current status in
/// the context; that snapshot goes into the head as JSON so the browser hydrates from the very
/// state the server rendered.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let initial = use_context::<Snapshot>().unwrap_or_default();
    let status_json = embed_json(&initial.status);
    let jobs_json = embed_json(&initial.jobs);
    let settings_json = embed_json(&initial.settings);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <script type="application/json" id=INITIAL_STATUS_ID inner_html=status_json></script>
                <script type="application/json" id=INITIAL_JOBS_ID inner_html=jobs_json></script>
                <script type="application/json" id=INITIAL_SETTINGS_ID inner_html=settings_json></script>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App initial/>
            </body>
        </html>
    }
}

/// The app: the backend panel on every page, then the routed page.
#[component]
pub fn App(initial: Snapshot) -> impl IntoView {
    provide_meta_context();
    let live = LiveBackend::new(initial);
    provide_context(live);
    live.connect();
    view! {
        <Stylesheet id="leptos" href=format!("/pkg/{SITE_NAME}.css")/>
        <Title text="Hallo2 Studio"/>
        <Router>
            <header class="topbar">
                <a class="brand" href="/">"Hallo2 Studio"</a>
                <nav>
                    <A href="/">"Generate"</A>
                    <A href="/jobs">"History"</A>
                    <A href="/status">"Status"</A>
                </nav>
            </header>
            <main>
                <StatusPanel/>
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("/") view=StudioPage/>
                    <Route path=path!("/status") view=StatusPage/>
                    <Route path=path!("/jobs") view=HistoryPage/>
                    <Route path=path!("/jobs/:id") view=JobPage/>
                </Routes>
            </main>
        </Router>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <section class="panel">
            <h1>"Page not found"</h1>
            <p><a href="/">"Back to the studio"</a></p>
        </section>
    }
}
