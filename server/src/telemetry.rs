//! Logging set-up (stdout and `logs/backend.log`, level from `RUST_LOG`, else `LOG_LEVEL`, else
//! info) and the Prometheus text of `/metrics`. Metric names are consts with unit suffixes, and
//! each is described once, in [`METRICS`].

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use app::types::{BackendState, BackendStatus, LoadStage, StagePhase};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

pub const BACKEND_STATE: &str = "hallo_backend_state";
pub const LOAD_STAGE_SECONDS: &str = "hallo_backend_load_stage_seconds";
pub const LOAD_STAGE_EXPECTED_SECONDS: &str = "hallo_backend_load_stage_expected_seconds";
pub const LOAD_PROGRESS_RATIO: &str = "hallo_backend_load_progress_ratio";
pub const LOAD_ATTEMPTS_TOTAL: &str = "hallo_backend_load_attempts_total";
pub const WARMUP_STEP_SECONDS: &str = "hallo_backend_warmup_step_seconds";
pub const EVENTS_TOTAL: &str = "hallo_backend_events_total";
pub const UPTIME_SECONDS: &str = "hallo_process_uptime_seconds";

/// `(name, type, help)` of every metric: the one place each is described.
pub const METRICS: [(&str, &str, &str); 8] = [
    (
        BACKEND_STATE,
        "gauge",
        "1 for the backend's current lifecycle state, 0 for the others",
    ),
    (
        LOAD_STAGE_SECONDS,
        "gauge",
        "Time spent in each load stage of the current or last load",
    ),
    (
        LOAD_STAGE_EXPECTED_SECONDS,
        "gauge",
        "Duration of each load stage in the last successful load on this device and weights",
    ),
    (
        LOAD_PROGRESS_RATIO,
        "gauge",
        "Fraction of the current load done",
    ),
    (
        LOAD_ATTEMPTS_TOTAL,
        "counter",
        "Loads started since the process started (reloads included)",
    ),
    (
        WARMUP_STEP_SECONDS,
        "gauge",
        "Seconds per denoising step measured by the last warmup",
    ),
    (
        EVENTS_TOTAL,
        "counter",
        "Backend events emitted since the process started",
    ),
    (UPTIME_SECONDS, "gauge", "Seconds since the process started"),
];

const STATES: [&str; 7] = [
    "starting", "loading", "warming", "ready", "failed", "disabled", "draining",
];

/// Installs the global subscriber: stdout plus `log_dir/backend.log` (appended), filtered by
/// `RUST_LOG`, else `LOG_LEVEL` (as the old launcher), else `info`. `json` switches both to
/// JSON lines.
pub fn init(log_dir: &Path, json: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(log_dir)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("backend.log"))?;
    let filter = || {
        std::env::var("RUST_LOG")
            .ok()
            .or_else(|| std::env::var("LOG_LEVEL").ok().map(|l| l.to_lowercase()))
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new("info"))
    };
    let (stdout, to_file) = if json {
        (
            fmt::layer().json().boxed(),
            fmt::layer().json().with_writer(Mutex::new(file)).boxed(),
        )
    } else {
        (
            fmt::layer()
                .with_ansi(std::io::stdout().is_terminal())
                .boxed(),
            fmt::layer()
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .boxed(),
        )
    };
    tracing_subscriber::registry()
        .with(stdout.with_filter(filter()))
        .with(to_file.with_filter(filter()))
        .try_init()
        .map_err(std::io::Error::other)
}

/// The Prometheus text exposition of the backend's state.
pub fn render_metrics(status: &BackendStatus, uptime_s: f64) -> String {
    let mut out = String::new();
    let describe = |name: &str, out: &mut String| {
        if let Some((_, kind, help)) = METRICS.iter().find(|(n, _, _)| *n == name) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
    };
    describe(BACKEND_STATE, &mut out);
    let current = status.state.name();
    for s in STATES {
        let _ = writeln!(
            out,
            "{BACKEND_STATE}{{state=\"{s}\"}} {}",
            u8::from(s == current)
        );
    }
    describe(LOAD_STAGE_SECONDS, &mut out);
    for st in &status.stages {
        if st.phase != StagePhase::Pending
            && let Some(ms) = st.elapsed_ms
        {
            let _ = writeln!(
                out,
                "{LOAD_STAGE_SECONDS}{{stage=\"{}\"}} {}",
                st.stage.name(),
                ms as f64 / 1000.0
            );
        }
    }
    describe(LOAD_STAGE_EXPECTED_SECONDS, &mut out);
    for st in &status.stages {
        if let Some(ms) = st.expected_ms {
            let _ = writeln!(
                out,
                "{LOAD_STAGE_EXPECTED_SECONDS}{{stage=\"{}\"}} {}",
                st.stage.name(),
                ms as f64 / 1000.0
            );
        }
    }
    describe(LOAD_PROGRESS_RATIO, &mut out);
    let _ = writeln!(out, "{LOAD_PROGRESS_RATIO} {}", status.progress);
    describe(LOAD_ATTEMPTS_TOTAL, &mut out);
    let _ = writeln!(out, "{LOAD_ATTEMPTS_TOTAL} {}", status.attempts);
    if let Some(s) = status.warmup_step_s {
        describe(WARMUP_STEP_SECONDS, &mut out);
        let _ = writeln!(out, "{WARMUP_STEP_SECONDS} {s}");
    }
    describe(EVENTS_TOTAL, &mut out);
    let _ = writeln!(out, "{EVENTS_TOTAL} {}", status.last_seq);
    describe(UPTIME_SECONDS, &mut out);
    let _ = writeln!(out, "{UPTIME_SECONDS} {uptime_s:.3}");
    out
}

/// Whether a stage name appears in the metrics (for tests).
pub fn stage_label(stage: LoadStage) -> String {
    format!("stage=\"{}\"", stage.name())
}

/// Whether the state is one the metrics list.
pub fn is_known_state(state: &BackendState) -> bool {
    STATES.contains(&state.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::types::StageSummary;

    #[test]
    fn every_metric_is_described_once_and_states_are_one_hot() {
        let status = BackendStatus {
            state: BackendState::Loading {
                stage: LoadStage::Vae,
            },
            progress: 0.5,
            eta_s: None,
            stages: vec![StageSummary {
                stage: LoadStage::Verify,
                phase: StagePhase::Done,
                progress: 1.0,
                elapsed_ms: Some(1500),
                expected_ms: Some(2000),
                bytes_done: None,
                bytes_total: None,
                message: None,
                files: Vec::new(),
            }],
            last_seq: 9,
            attempts: 1,
            warmup_step_s: Some(0.25),
            workers: Vec::new(),
        };
        let text = render_metrics(&status, 3.0);
        for (name, _, _) in METRICS {
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}\n{text}"
            );
        }
        assert!(text.contains("hallo_backend_state{state=\"loading\"} 1"));
        assert!(text.contains("hallo_backend_state{state=\"ready\"} 0"));
        assert!(text.contains(&format!(
            "{LOAD_STAGE_SECONDS}{{{}}} 1.5",
            stage_label(LoadStage::Verify)
        )));
        assert!(text.contains("hallo_backend_load_stage_expected_seconds{stage=\"verify\"} 2"));
        assert!(is_known_state(&status.state));
    }
}
