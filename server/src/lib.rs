//! The studio's server: config, telemetry, the backend lifecycle (a pure state machine behind a
//! shared handle), the worker thread that loads and owns the model, and the non-UI routes.
//!
//! This is the only crate that links both `app` (wire types, later the UI) and `model` (Hallo2 in
//! candle). The binary (`main.rs`) binds the port first, then starts the worker, then serves.
//! `server/README.md` explains the lifecycle and why it is shaped this way.

// The pages' view types nest deeply (leptos/tachys).
#![recursion_limit = "256"]

pub mod backend;
pub mod body;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fake_hub;
pub mod faults;
pub mod fuzzing;
pub mod guard;
pub mod jobs;
pub mod jobs_api;
pub mod lifecycle;
pub mod metrics;
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
/// How long shutdown waits for open requests to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// tokio runtime (downloads use it). A config with `[cluster]` goes through
    /// [`Self::start_clustered`].
    pub fn start(config: ServerConfig) -> std::io::Result<Self> {
        Self::start_with(config, None)
    }

    /// Joins the cluster of `[cluster]` (NATS must answer), then starts what the process's
    /// role runs: a web node serves without a model and follows the workers; a worker loads
    /// its model at once and takes jobs from the cluster's queue.
    pub async fn start_clustered(config: ServerConfig) -> std::io::Result<Self> {
        let Some(settings) = &config.cluster else {
            return Self::start(config);
        };
        let cluster = cluster::Cluster::connect(settings)
            .await
            .map_err(std::io::Error::other)?;
        Self::start_with(config, Some(Arc::new(cluster)))
    }

    fn start_with(
        config: ServerConfig,
        cluster: Option<Arc<cluster::Cluster>>,
    ) -> std::io::Result<Self> {
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
        let capacity = config.limits.queue_capacity;
        let (jobs, view) = match &cluster {
            None => {
                let store = JobStore::open(&config.data_dir).map_err(std::io::Error::other)?;
                let jobs = Jobs::open(store, capacity).map_err(std::io::Error::other)?;
                spawn_retention(jobs.clone(), config.limits.retention_hours);
                (jobs, None)
            }
            // The records live in the cluster; the data folder only caches their files.
            Some(c) => {
                let store = JobStore::open(&config.data_dir.join("cluster"))
                    .map_err(std::io::Error::other)?;
                let view = Arc::new(cluster::workers::ClusterView::new(c.clone()));
                (Jobs::open_mirror(store, capacity), Some(view))
            }
        };
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
            heavy: Arc::new(tokio::sync::Semaphore::new(config.limits.heavy_requests)),
            worker_alive: Default::default(),
            cluster: view.clone(),
        };
        let runs_jobs = state.runs_jobs();
        if let (Some(c), Some(view)) = (&cluster, &view)
            && c.config.role.serves_pages()
        {
            cluster::records::spawn_mirror(c.clone(), jobs.clone());
            cluster::records::spawn_dead_letters(c.clone());
            cluster::records::spawn_retention(
                c.clone(),
                jobs.clone(),
                config.limits.retention_hours,
                RETENTION_SWEEP,
            );
            // A web node's backend is the cluster's; an `all` node's is its own worker's.
            cluster::workers::spawn_view(view.clone(), backend.clone(), !runs_jobs);
        }
        if config.disable_backend || !runs_jobs {
            if config.disable_backend {
                tracing::info!("backend disabled (DISABLE_BACKEND); serving without a model");
                let _ = backend.signal(Signal::Disabled);
            }
            return Ok(Self {
                state,
                access,
                worker: None,
            });
        }
        let work = cluster.as_ref().map(|c| worker::ClusterWork {
            cluster: c.clone(),
            current: Default::default(),
        });
        if let Some(work) = &work {
            cluster::workers::spawn_reports(
                work.cluster.clone(),
                backend.clone(),
                work.current.clone(),
            );
            cluster::workers::spawn_reload_listener(work.cluster.clone(), backend.clone());
        }
        let spawn_worker = {
            let (alive, config, backend, jobs) = (
                state.worker_alive.clone(),
                config.clone(),
                backend.clone(),
                jobs.clone(),
            );
            let runtime = tokio::runtime::Handle::current();
            move || {
                worker::spawn(
                    alive.clone(),
                    config.clone(),
                    backend.clone(),
                    jobs.clone(),
                    detector.clone(),
                    runtime.clone(),
                    work.clone(),
                )
            }
        };
        let worker = spawn_worker()?;
        spawn_supervisor(state.clone(), spawn_worker);
        // A cluster worker loads at once: no job reaches it before it is ready.
        let eager = config.load == LoadMode::Eager || cluster.is_some();
        if eager && let Err(e) = backend.request_load() {
            tracing::error!(error = %e, "could not start loading");
        }
        Ok(Self {
            state,
            access,
            worker: Some(worker),
        })
    }

    /// The bound of every request body: the upload limit plus the form's own bytes.
    fn body_limits(&self) -> body::BodyLimits {
        let limits = &self.state.config.limits;
        body::BodyLimits {
            limit: limits.upload_bytes + jobs::upload::FORM_OVERHEAD_BYTES,
            idle: Duration::from_secs_f64(limits.read_timeout_s),
        }
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
        let serves_pages = self
            .state
            .config
            .cluster
            .as_ref()
            .is_none_or(|c| c.role.serves_pages());
        // A cluster worker serves health, metrics and its backend, for probes and operators.
        let routes = if serves_pages {
            routes::router(self.state.clone())
                .merge(jobs_api::router(self.state.clone()))
                .merge(login)
                .merge(site::pages_router(
                    service::Service::new(self.state.clone()),
                    options,
                ))
        } else {
            routes::router(self.state.clone())
        };
        routes
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(self.body_limits()),
                body::bound_bodies,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.access.clone(),
                guard::guard,
            ))
    }

    /// Serves on `listener` until `shutdown` completes, then drains: event streams end, the
    /// server finishes open requests (for at most [`DRAIN_TIMEOUT`]), and the worker is joined
    /// (for at most [`WORKER_JOIN_TIMEOUT`]).
    ///
    /// The accept loop is ours rather than `axum::serve`'s for what that one cannot set: the
    /// header read timeout (a client that never finishes its headers is cut off) and the
    /// connection cap (`[limits] connections`; more wait in the listen backlog).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use tower::ServiceExt;

        let backend = self.state.backend.clone();
        let limits = &self.state.config.limits;
        let connections = Arc::new(tokio::sync::Semaphore::new(limits.connections));
        // HTTP/1.1 only: browsers speak HTTP/2 over TLS alone, and cleartext HTTP/2 would
        // bypass the header read timeout (an HTTP/1 setting).
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs_f64(limits.read_timeout_s));
        let service = self
            .router()
            .map_request(|r: axum::http::Request<hyper::body::Incoming>| {
                r.map(axum::body::Body::new)
            });
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then accept again.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let hyper_service = hyper_util::service::TowerToHyperService::new(service.clone());
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        tracing::info!("shutting down: draining");
        drop(listener);
        backend.drain();
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("open requests did not finish in time");
        }
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

/// How often the supervisor looks at the worker thread.
pub const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// Restarts the worker thread if it dies (a fault outside any job, which `contain` would
/// have caught): the jobs it had started are queued again, and the model loads again, which
/// readiness and the status panel show. Stops when the server drains.
fn spawn_supervisor(
    state: AppState,
    spawn: impl Fn() -> std::io::Result<worker::WorkerHandle> + Send + 'static,
) {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let draining = state.backend.draining();
        let mut tick = tokio::time::interval(SUPERVISE_EVERY);
        loop {
            tick.tick().await;
            if *draining.borrow() {
                return;
            }
            if state.worker_alive.load(Ordering::SeqCst) {
                continue;
            }
            metrics::worker_restarted();
            tracing::error!("the worker thread ended; restarting it");
            // A load it was running ends as failed (then loads again below).
            let _ = state.backend.signal(Signal::Failed {
                stage: None,
                error: "the worker thread ended during the load".into(),
                hint: "it was restarted and loads again".into(),
            });
            state.jobs.set_model_ready(false);
            let requeued = state.jobs.requeue_interrupted();
            if let Err(e) = spawn() {
                tracing::error!(error = %e, "could not restart the worker thread");
                continue;
            }
            if let Err(e) = state.backend.request_load() {
                tracing::error!(error = %e, "could not load again after the worker restart");
            }
            tracing::info!(requeued, "worker restarted");
        }
    });
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
