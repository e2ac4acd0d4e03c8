//! The studio's binary: config → telemetry → bind → backend + worker → serve (graceful).

// The pages' view types nest deeply (leptos/tachys).
#![recursion_limit = "256"]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use server::Studio;
use server::config::{ENV_CONFIG, ENV_SITE_ADDR, ServerConfig};

/// Hallo2 studio server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The config file (configs/server.toml: real weights from the Hub; configs/tiny.toml: the
    /// tiny fixture weights). Without it, the built-in defaults.
    #[arg(long, env = ENV_CONFIG)]
    config: Option<PathBuf>,
    /// Address to serve on (overrides the config's `bind`).
    #[arg(long, env = ENV_SITE_ADDR)]
    bind: Option<std::net::SocketAddr>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

/// Weight tensors may live in a mapping of the `net.pth` cache (see `model::weights`).
#[global_allocator]
static ALLOCATOR: model::weights::MappedWeightsAllocator = model::weights::MappedWeightsAllocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => {
            ServerConfig::from_file(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    config
        .apply_env(|k| std::env::var(k).ok())
        .context("applying environment overrides")?;
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    // Refuse an unprotected network bind before anything starts.
    config.access_policy()?;
    server::telemetry::init(&config.log_dir, args.log_json)
        .with_context(|| format!("opening {}/backend.log", config.log_dir.display()))?;
    tracing::info!("Starting Hallo2 backend service...");
    // The port first: the UI is up while the model loads.
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let studio = Studio::start_clustered(config)
        .await
        .context("starting the backend (and joining the cluster, with [cluster])")?;
    studio
        .serve(listener, server::shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
