//! A local stand-in for the Hub's file API, serving a folder as a repository (for the end-to-end
//! suite and manual runs with `HF_ENDPOINT`):
//!
//! ```text
//! cargo run -p server --bin fake_hub -- --root model/tests/fixtures/hallo2-tiny/pretrained_models \
//!     --layout model/tests/fixtures/hub-layout.md \
//!     --repo fudan-generative-ai/hallo2 --port 8502 --throttle-bytes-per-s 2000000
//! HF_ENDPOINT=http://127.0.0.1:8502 HF_HOME=/tmp/hf cargo run -p server -- --config configs/server.toml
//! ```

use std::path::PathBuf;

use clap::Parser;
use server::fake_hub::{FakeHub, FakeHubOptions};

#[derive(Debug, Parser)]
#[command(about = "Serve a folder with the Hub's /{repo}/resolve/{revision}/{path} API")]
struct Args {
    /// The repository's files (e.g. model/tests/fixtures/hallo2-tiny/pretrained_models).
    #[arg(long)]
    root: PathBuf,
    /// Serve exactly the tree listed in this hub-layout.md (files `root` lacks as stand-ins).
    #[arg(long)]
    layout: Option<PathBuf>,
    /// The repository id to answer for.
    #[arg(long, default_value = "fudan-generative-ai/hallo2")]
    repo: String,
    /// Port on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Body bytes per second (0: unthrottled).
    #[arg(long, default_value_t = 0)]
    throttle_bytes_per_s: u64,
    /// Cut the first transfer of each file after this many bytes (to exercise resuming).
    #[arg(long)]
    interrupt_after: Option<u64>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let layout = match &args.layout {
        Some(path) => Some(server::fake_hub::hub_layout(&std::fs::read_to_string(
            path,
        )?)),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let hub = FakeHub::serve(
        listener,
        FakeHubOptions {
            root: args.root,
            repo: args.repo,
            throttle_bytes_per_s: (args.throttle_bytes_per_s > 0)
                .then_some(args.throttle_bytes_per_s),
            interrupt_after: args.interrupt_after,
            layout,
        },
    )?;
    // The one line a test harness reads to find the endpoint.
    println!("HF_ENDPOINT={}", hub.endpoint());
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
