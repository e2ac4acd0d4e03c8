//! The workers' status and the web nodes' view of it. Each worker puts a [`WorkerReport`] (its
//! backend's state, stages, the job it runs) into KV on every backend event and every few
//! seconds; each web node watches them, drops the ones that stopped reporting, and drives its
//! own backend lifecycle from them ([`reconcile`]): "ready" when at least one worker is, else
//! the most advanced load, else the failure. Reload requests go to every worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use app::types::{BackendState, LoadStage, WorkerReport};
use async_nats::jetstream::kv::Operation;
use futures::StreamExt;

use super::{Cluster, now_ms};
use crate::backend::Backend;
use crate::lifecycle::Signal;

/// The cluster as this process sees it: the connection and, on a web node, the workers.
pub struct ClusterView {
    pub cluster: Arc<Cluster>,
    workers: RwLock<Vec<WorkerReport>>,
}

impl ClusterView {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            workers: RwLock::new(Vec::new()),
        }
    }

    /// The workers that report now, by name.
    pub fn workers(&self) -> Vec<WorkerReport> {
        self.workers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_workers(&self, workers: Vec<WorkerReport>) {
        *self.workers.write().unwrap_or_else(|p| p.into_inner()) = workers;
    }
}

/// This worker's report now.
fn report(name: &str, backend: &Backend, job: Option<String>) -> WorkerReport {
    let status = backend.status();
    WorkerReport {
        name: name.to_string(),
        state: status.state,
        progress: status.progress,
        eta_s: status.eta_s,
        stages: status.stages,
        warmup_step_s: status.warmup_step_s,
        job,
        reported_ms: now_ms(),
    }
}

/// Puts this worker's report into KV on each backend event and every `worker_ttl_s / 3`;
/// removes it when the process drains (the web nodes see the worker go at once).
pub fn spawn_reports(cluster: Arc<Cluster>, backend: Backend, current: Arc<Mutex<Option<String>>>) {
    tokio::spawn(async move {
        let mut events = backend.subscribe(None).live;
        let mut draining = backend.draining();
        let every = Duration::from_secs_f64(cluster.config.worker_ttl_s / 3.0);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                event = events.recv() => {
                    if matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        break;
                    }
                }
                _ = tick.tick() => {}
                _ = draining.changed() => break,
            }
            let job = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let value = serde_json::to_vec(&report(&cluster.name, &backend, job))
                .expect("a report always serialises");
            if let Err(e) = cluster.workers.put(&cluster.name, value.into()).await {
                tracing::warn!(error = %e, "cannot report this worker's state");
            }
        }
        let _ = cluster.workers.delete(&cluster.name).await;
    });
}

/// Loads the model again when a web node asks every worker to (`POST /api/backend/reload`).
pub fn spawn_reload_listener(cluster: Arc<Cluster>, backend: Backend) {
    tokio::spawn(async move {
        let Ok(mut requests) = cluster.client.subscribe(cluster.reload_subject()).await else {
            tracing::warn!("cannot listen for reload requests");
            return;
        };
        while requests.next().await.is_some() {
            match backend.request_load() {
                Ok(()) => tracing::info!("reloading at a web node's request"),
                Err(e) => tracing::info!(error = %e, "reload request not taken"),
            }
        }
    });
}

/// Follows the workers' reports: keeps `view`'s list (stale reports dropped) and, with
/// `drive`, drives `backend` (a web node's, which has no worker of its own) with
/// [`reconcile`].
pub fn spawn_view(view: Arc<ClusterView>, backend: Backend, drive: bool) {
    tokio::spawn(async move {
        let ttl_ms = (view.cluster.config.worker_ttl_s * 1000.0) as u64;
        let mut known: HashMap<String, WorkerReport> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let mut watch = match view.cluster.workers.watch_with_history(">").await {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the workers");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(e)) if e.operation == Operation::Put => {
                            if let Ok(report) = serde_json::from_slice::<WorkerReport>(&e.value) {
                                known.insert(e.key.clone(), report);
                            }
                        }
                        Some(Ok(e)) => {
                            known.remove(&e.key);
                        }
                        _ => break,
                    },
                    _ = tick.tick() => {}
                }
                let now = now_ms();
                known.retain(|_, r| now.saturating_sub(r.reported_ms) <= ttl_ms);
                let mut workers: Vec<WorkerReport> = known.values().cloned().collect();
                workers.sort_by(|a, b| a.name.cmp(&b.name));
                if drive {
                    for signal in reconcile(&backend.state(), &workers) {
                        let _ = backend.signal(signal);
                    }
                }
                // Reports repeat every few seconds: only a change of substance is news.
                let substance = |list: &[WorkerReport]| {
                    list.iter()
                        .map(|w| WorkerReport {
                            reported_ms: 0,
                            ..w.clone()
                        })
                        .collect::<Vec<_>>()
                };
                let changed = substance(&workers) != substance(&view.workers());
                view.set_workers(workers.clone());
                if changed {
                    backend.publish_workers(workers);
                }
            }
        }
    });
}

/// The signals that bring a web node's lifecycle (in `web`) to the cluster's state: ready when
/// a worker is ready; else loading at the most advanced worker's stage; else failed when every
/// worker failed; with no worker at all, loading (waiting for one).
pub fn reconcile(web: &BackendState, workers: &[WorkerReport]) -> Vec<Signal> {
    let loading = matches!(web, BackendState::Loading { .. } | BackendState::Warming);
    if matches!(web, BackendState::Disabled | BackendState::Draining) {
        return Vec::new();
    }
    let begin = |mut then: Vec<Signal>| {
        if !loading {
            then.insert(0, Signal::LoadBegun);
        }
        then
    };
    if let Some(ready) = workers.iter().find(|w| w.state.is_ready()) {
        if web.is_ready() {
            return Vec::new();
        }
        let (device, dtype, device_note) = match &ready.state {
            BackendState::Ready {
                device,
                dtype,
                device_note,
                ..
            } => (device.clone(), dtype.clone(), device_note.clone()),
            _ => unreachable!("is_ready"),
        };
        return begin(vec![Signal::Ready {
            device,
            dtype,
            warmup_step_s: ready.warmup_step_s,
            device_note,
        }]);
    }
    let order = |stage: LoadStage| LoadStage::ALL.iter().position(|s| *s == stage);
    let ahead = workers
        .iter()
        .filter_map(|w| match &w.state {
            BackendState::Loading { stage } => Some(*stage),
            BackendState::Warming => Some(LoadStage::Warmup),
            _ => None,
        })
        .max_by_key(|stage| order(*stage));
    if let Some(stage) = ahead {
        let current = match web {
            BackendState::Loading { stage } => Some(*stage),
            BackendState::Warming => Some(LoadStage::Warmup),
            _ => None,
        };
        // Forward only: a load shown further along does not go back when a worker leaves.
        if current.is_some_and(|c| order(c) >= order(stage)) {
            return Vec::new();
        }
        return begin(vec![Signal::StageStarted(stage)]);
    }
    let failed = workers.iter().find_map(|w| match &w.state {
        BackendState::Failed { stage, error, hint } => Some((*stage, error, hint)),
        _ => None,
    });
    let all_failed = !workers.is_empty()
        && workers
            .iter()
            .all(|w| matches!(w.state, BackendState::Failed { .. }));
    if all_failed && let Some((stage, error, hint)) = failed {
        if matches!(web, BackendState::Failed { .. }) {
            return Vec::new();
        }
        return begin(vec![Signal::Failed {
            stage: Some(stage),
            error: format!("{} ({} workers)", error, workers.len()),
            hint: hint.clone(),
        }]);
    }
    if workers.is_empty() && web.is_ready() {
        // The last ready worker left: not ready until one is back.
        return vec![Signal::LoadBegun];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str, state: BackendState) -> WorkerReport {
        WorkerReport {
            name: name.into(),
            state,
            ..WorkerReport::default()
        }
    }

    fn loading(stage: LoadStage) -> BackendState {
        BackendState::Loading { stage }
    }

    fn ready() -> BackendState {
        BackendState::Ready {
            device: "cpu".into(),
            dtype: "f32".into(),
            load_s: 1.0,
            device_note: None,
        }
    }

    fn failed(error: &str) -> BackendState {
        BackendState::Failed {
            stage: LoadStage::Vae,
            error: error.into(),
            hint: "fix it".into(),
        }
    }

    #[test]
    fn ready_when_one_worker_is_and_loading_follows_the_most_advanced() {
        let two_loading = [
            worker("a", loading(LoadStage::Vae)),
            worker("b", loading(LoadStage::Resolve)),
        ];
        assert_eq!(
            reconcile(&BackendState::Starting, &two_loading),
            [Signal::LoadBegun, Signal::StageStarted(LoadStage::Vae)]
        );
        assert_eq!(reconcile(&loading(LoadStage::Vae), &two_loading), []);
        // A worker further along that leaves does not wind the load back.
        let behind = [worker("b", loading(LoadStage::Verify))];
        assert_eq!(reconcile(&loading(LoadStage::Vae), &behind), []);
        let one_ready = [worker("a", ready()), worker("b", failed("bad file"))];
        assert!(matches!(
            reconcile(&loading(LoadStage::Vae), &one_ready).as_slice(),
            [Signal::Ready { device, .. }] if device == "cpu"
        ));
        assert_eq!(reconcile(&ready(), &one_ready), []);
        assert!(matches!(
            reconcile(&BackendState::Starting, &one_ready).as_slice(),
            [Signal::LoadBegun, Signal::Ready { .. }]
        ));
    }

    #[test]
    fn failed_only_when_every_worker_failed_and_not_ready_without_workers() {
        let one_failed = [
            worker("a", failed("bad file")),
            worker("b", BackendState::Starting),
        ];
        assert_eq!(reconcile(&BackendState::Starting, &one_failed), []);
        let all_failed = [
            worker("a", failed("bad file")),
            worker("b", failed("no GPU")),
        ];
        assert!(matches!(
            reconcile(&loading(LoadStage::Vae), &all_failed).as_slice(),
            [Signal::Failed { error, .. }] if error.contains("bad file") && error.contains("2 workers")
        ));
        assert_eq!(reconcile(&failed("x"), &all_failed), []);
        assert_eq!(reconcile(&ready(), &[]), [Signal::LoadBegun]);
        assert_eq!(reconcile(&BackendState::Starting, &[]), []);
        assert_eq!(reconcile(&BackendState::Draining, &all_failed), []);
    }
}
