//! The studio's server: config, telemetry, the backend lifecycle (a pure state machine behind a
//! shared handle), the worker thread that loads and owns the model, and the non-UI routes.
//!
//! This is the only crate that links both `app` (wire types, later the UI) and `model` (Hallo2 in
//! candle). The binary (`main.rs`) binds the port first, then starts the worker, then serves.
//! `server/README.md` explains the lifecycle and why it is shaped this way.

// The pages' view types nest deeply (leptos/tachys).
#![recursion_limit = "256"]

pub mod backend;
pub mod clock;
pub mod config;
pub mod error;
pub mod fake_hub;
pub mod guard;
pub mod jobs;
pub mod jobs_api;
pub mod lifecycle;
pub mod routes;
pub mod service;
pub mod site;
pub mod telemetry;
pub mod timings;
pub mod weights;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::config::{LoadMode, ServerConfig};
use crate::jobs::{JobStore, Jobs};
use crate::lifecycle::Signal;
use crate::routes::{AppState, GpuInfo};
use crate::worker::WorkerHandle;

/// Default interval of SSE keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long shutdown waits for the worker to finish what it is doing.
pub const WORKER_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The backend and its worker, ready to be served.
pub struct Studio {
    pub state: AppState,
    pub access: Arc<guard::AccessPolicy>,
    pub worker: Option<WorkerHandle>,
}

impl Studio {
    /// Creates the backend for `config` and, unless it is disabled, the worker thread; with
    /// `load = "eager"` loading starts now. Call this after binding the port. Must run inside a
    /// tokio runtime (downloads use it).
    pub fn start(config: ServerConfig) -> std::io::Result<Self> {
        let access = Arc::new(config.access_policy().map_err(std::io::Error::other)?);
        let settings = Arc::new(
            config
                .generation_settings()
                .map_err(std::io::Error::other)?,
        );
        let config = Arc::new(config);
        let stages = worker::stages_for(&config);
        let expected = worker::timings_for(&config).expected();
        let backend = Backend::new(&stages, expected, config.event_buffer);
        let store = JobStore::open(&config.data_dir).map_err(std::io::Error::other)?;
        let jobs =
            Jobs::open(store, config.limits.queue_capacity).map_err(std::io::Error::other)?;
        spawn_retention(jobs.clone(), config.limits.retention_hours);
        let publisher = backend.clone();
        jobs.set_listener(Arc::new(move |job| publisher.publish_job(job)));
        let detector =
            Arc::new(model::face::FaceDetector::bundled().map_err(std::io::Error::other)?);
        let state = AppState {
            backend: backend.clone(),
            config: config.clone(),
            gpu: GpuInfo::detect(),
            keep_alive: KEEP_ALIVE,
            started: Instant::now(),
            jobs: jobs.clone(),
            detector: detector.clone(),
            settings,
            legacy_config: Default::default(),
        };
        if config.disable_backend {
            tracing::info!("backend disabled (DISABLE_BACKEND); serving without a model");
            let _ = backend.signal(Signal::Disabled);
            return Ok(Self {
                state,
                access,
                worker: None,
            });
        }
        let worker = worker::spawn(
            config.clone(),
            backend.clone(),
            jobs.clone(),
            detector,
            tokio::runtime::Handle::current(),
        )?;
        if config.load == LoadMode::Eager
            && let Err(e) = backend.request_load()
        {
            tracing::error!(error = %e, "could not start loading");
        }
        Ok(Self {
            state,
            access,
            worker: Some(worker),
        })
    }

    /// The router of everything the server serves: the API and health routes, then the pages
    /// and the site's files.
    pub fn router(&self) -> axum::Router {
        let options = site::leptos_options(self.state.config.bind, |k| std::env::var(k).ok());
        let login = axum::Router::new()
            .route(
                "/login",
                axum::routing::get(guard::login_page).post(guard::login),
            )
            .with_state(self.access.clone());
        routes::router(self.state.clone())
            .merge(jobs_api::router(self.state.clone()))
            .merge(login)
            .merge(site::pages_router(
                service::Service::new(self.state.clone()),
                options,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.access.clone(),
                guard::guard,
            ))
    }

    /// Serves on `listener` until `shutdown` completes, then drains: event streams end, the
    /// server finishes open requests, and the worker is joined (for at most
    /// [`WORKER_JOIN_TIMEOUT`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let backend = self.state.backend.clone();
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: draining");
                backend.drain();
            })
            .await?;
        if let Some(worker) = self.worker {
            let joined =
                tokio::task::spawn_blocking(move || worker.join_timeout(WORKER_JOIN_TIMEOUT))
                    .await
                    .unwrap_or(false);
            if !joined {
                tracing::warn!("the worker did not stop in time (a load stage was running)");
            }
        }
        Ok(())
    }
}

/// How often finished jobs past their retention are removed.
pub const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// Removes finished jobs older than `hours`, now and every [`RETENTION_SWEEP`].
fn spawn_retention(jobs: Jobs, hours: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_SWEEP);
        loop {
            tick.tick().await;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let cutoff = clock::rfc3339_from_unix_ms(now_ms.saturating_sub(hours * 3_600_000));
            let removed = jobs.prune(&cutoff);
            if removed > 0 {
                tracing::info!(removed, retention_hours = hours, "removed old jobs");
            }
        }
    });
}

/// Completes on Ctrl-C or SIGTERM (TGI's `shutdown_signal`).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
