//! The job path's metrics, process-wide (like a Prometheus client's default registry): job and
//! denoising-step durations as histograms, how jobs ended, refusals by kind, open event streams.
//! `/metrics` renders them next to the backend's own ([`crate::telemetry::render_metrics`]) and
//! the jobs' current states.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use app::jobs::{JobRecord, JobState};

/// A cumulative histogram with fixed bucket bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds (atomics hold integers).
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        family(out, name, "histogram", help);
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Seconds a job ran, start to end (completed, failed or cancelled).
pub static JOB_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(&[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0]));
/// Seconds of one denoising step (the UNet call(s) of one step, CFG included).
pub static STEP_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 20.0, 60.0]));

static JOB_ENDS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());
static REFUSALS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
static SSE_SUBSCRIBERS: AtomicI64 = AtomicI64::new(0);
static WORKER_RESTARTS: AtomicU64 = AtomicU64::new(0);

/// The worker thread died and is started again.
pub fn worker_restarted() {
    WORKER_RESTARTS.fetch_add(1, Ordering::Relaxed);
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

/// A job ended: `how` is `completed`, `failed`, `panicked`, `cancelled` or `suspended`.
pub fn job_ended(how: &'static str, seconds: f64) {
    bump(&JOB_ENDS, how);
    JOB_SECONDS.observe(seconds);
}

/// A request was answered with an error of this kind (`busy`, `too_large`, `cross_site`, …).
pub fn refused(kind: &str) {
    bump(&REFUSALS, kind.to_string());
}

/// An event stream is open while this lives.
pub struct Subscriber(());

impl Subscriber {
    pub fn open() -> Self {
        SSE_SUBSCRIBERS.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        SSE_SUBSCRIBERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A cluster's workers as the web node sees them: how many are in each backend state, and
/// each one's readiness and load progress.
pub fn render_workers(workers: &[app::types::WorkerReport], out: &mut String) {
    family(
        out,
        "hallo_cluster_workers",
        "gauge",
        "Workers of the cluster by backend state.",
    );
    for state in [
        "starting", "loading", "warming", "ready", "failed", "draining",
    ] {
        let n = workers.iter().filter(|w| w.state.name() == state).count();
        let _ = writeln!(out, "hallo_cluster_workers{{state=\"{state}\"}} {n}");
    }
    type PerWorker = fn(&app::types::WorkerReport) -> f32;
    let per_worker: [(&str, &str, PerWorker); 3] = [
        (
            "hallo_cluster_worker_ready",
            "Whether each worker's model is ready.",
            |w| f32::from(u8::from(w.state.is_ready())),
        ),
        (
            "hallo_cluster_worker_load_progress",
            "Each worker's load, 0..1.",
            |w| w.progress,
        ),
        (
            "hallo_cluster_worker_busy",
            "Whether each worker runs a job now.",
            |w| f32::from(u8::from(w.job.is_some())),
        ),
    ];
    for (name, help, value) in per_worker {
        family(out, name, "gauge", help);
        for w in workers {
            let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", w.name, value(w));
        }
    }
}

/// The job metrics in Prometheus text format: `jobs` are the current records, `capacity` the
/// queue's, `worker_alive` whether the worker thread runs.
pub fn render(jobs: &[JobRecord], capacity: usize, worker_alive: bool, out: &mut String) {
    family(out, "hallo_jobs", "gauge", "Jobs by state.");
    for state in JobState::ALL {
        let n = jobs.iter().filter(|j| j.state == state).count();
        let _ = writeln!(out, "hallo_jobs{{state=\"{}\"}} {n}", state.name());
    }
    let waiting = jobs.iter().filter(|j| j.state.is_waiting()).count();
    let restarts = WORKER_RESTARTS.load(Ordering::Relaxed);
    let subscribers = SSE_SUBSCRIBERS.load(Ordering::Relaxed);
    for (name, kind, help, value) in [
        (
            "hallo_queue_depth",
            "gauge",
            "Jobs waiting to run.",
            waiting as i64,
        ),
        (
            "hallo_queue_capacity",
            "gauge",
            "Jobs that may wait at most.",
            capacity as i64,
        ),
        (
            "hallo_worker_alive",
            "gauge",
            "Whether the worker thread runs.",
            i64::from(worker_alive),
        ),
        (
            "hallo_worker_restarts_total",
            "counter",
            "Times the worker thread died and was restarted.",
            restarts as i64,
        ),
        (
            "hallo_sse_subscribers",
            "gauge",
            "Open event streams.",
            subscribers,
        ),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "hallo_jobs_ended_total",
        "counter",
        "Jobs ended, by how.",
    );
    for (how, n) in JOB_ENDS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "hallo_jobs_ended_total{{how=\"{how}\"}} {n}");
    }
    family(
        out,
        "hallo_refusals_total",
        "counter",
        "Requests refused, by kind.",
    );
    for (kind, n) in REFUSALS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "hallo_refusals_total{{kind=\"{kind}\"}} {n}");
    }
    JOB_SECONDS.render("hallo_job_seconds", "Seconds a job ran, start to end.", out);
    STEP_SECONDS.render("hallo_step_seconds", "Seconds of one denoising step.", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        for s in [0.5, 2.0, 20.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render("x", "help", &mut out);
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 22.5\n"), "{out}");
    }
}
