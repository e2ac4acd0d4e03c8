//! The shared handle on the backend: the [`Lifecycle`] behind a lock, the ring buffer of recent
//! events for `Last-Event-ID` replay, the broadcast channel that feeds `/api/events`, and the
//! command channel of the worker thread.
//!
//! Events are numbered, logged and broadcast under one lock, so a subscriber that takes its
//! replay and its receiver together sees every event exactly once, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use app::types::{BackendEvent, BackendState, BackendStatus, LoadStage, Readiness};
use tokio::sync::{broadcast, watch};

use crate::clock::rfc3339_now;
use crate::lifecycle::{Lifecycle, Now, Signal, TransitionError};

/// What the worker thread is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Load (or reload) the model; the lifecycle is already in `loading`.
    Load,
    /// Jobs are waiting: run them if the model is loaded.
    RunJobs,
    /// Drop the model and exit.
    Shutdown,
}

/// Recent events, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<BackendEvent>,
    capacity: usize,
}

/// What a new subscriber gets: the events to send first, then the live receiver.
pub struct Subscription {
    pub replay: Vec<BackendEvent>,
    pub live: broadcast::Receiver<BackendEvent>,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, event: BackendEvent) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Events after `last_id`, or None when some of them have left the buffer (or `last_id`
    /// is from another run of the process).
    pub fn since(&self, last_id: u64, last_seq: u64) -> Option<Vec<BackendEvent>> {
        if last_id > last_seq {
            return None;
        }
        let oldest = self.events.front().map_or(last_seq + 1, BackendEvent::seq);
        if last_id + 1 < oldest {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|e| e.seq() > last_id)
                .cloned()
                .collect(),
        )
    }
}

struct Shared {
    lifecycle: Lifecycle,
    log: EventLog,
}

struct Inner {
    shared: Mutex<Shared>,
    events: broadcast::Sender<BackendEvent>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    started: Instant,
    draining: watch::Sender<bool>,
}

/// Cheap to clone; every clone is the same backend.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

/// Why a load request was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadRequestError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the worker thread is not running")]
    NoWorker,
}

impl Backend {
    /// A backend in `starting` that runs `stages`, with `expected` durations from the last load.
    pub fn new(
        stages: &[LoadStage],
        expected: HashMap<LoadStage, u64>,
        event_buffer: usize,
    ) -> Self {
        let mut lifecycle = Lifecycle::new(stages);
        lifecycle.set_expected(expected);
        let (events, _) = broadcast::channel(event_buffer.clamp(16, 4096));
        let (draining, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                shared: Mutex::new(Shared {
                    lifecycle,
                    log: EventLog::new(event_buffer),
                }),
                events,
                commands: Mutex::new(None),
                started: Instant::now(),
                draining,
            }),
        }
    }

    /// Connects the worker thread's command channel.
    pub fn attach_worker(&self, commands: mpsc::Sender<Command>) {
        *lock(&self.inner.commands) = Some(commands);
    }

    /// The time now, for the lifecycle.
    pub fn now(&self) -> Now {
        Now {
            mono_ms: self.inner.started.elapsed().as_millis() as u64,
            at: rfc3339_now(),
        }
    }

    /// Applies a worker signal; numbered events go to the log and the subscribers.
    pub fn signal(&self, signal: Signal) -> Result<(), TransitionError> {
        let now = self.now();
        let mut shared = lock(&self.inner.shared);
        let events = shared.lifecycle.apply(signal, &now)?;
        for event in events {
            shared.log.push(event.clone());
            // No subscribers is fine.
            let _ = self.inner.events.send(event);
        }
        Ok(())
    }

    /// Starts a load (eager start, lazy first job, or `POST /api/backend/reload`): the state
    /// moves to `loading` here, atomically, so two requests cannot start two loads.
    pub fn request_load(&self) -> Result<(), LoadRequestError> {
        let commands = lock(&self.inner.commands).clone();
        let Some(commands) = commands else {
            // Disabled and draining backends have no worker: say why, not "no worker".
            let state = self.state();
            return Err(match state {
                BackendState::Disabled | BackendState::Draining => TransitionError::Invalid {
                    action: "load",
                    state: state.name(),
                }
                .into(),
                _ => LoadRequestError::NoWorker,
            });
        };
        self.signal(Signal::LoadBegun)?;
        if commands.send(Command::Load).is_err() {
            let _ = self.signal(Signal::Failed {
                stage: None,
                error: "the worker thread has stopped".into(),
                hint: "restart the server; see logs/backend.log for why the worker ended".into(),
            });
            return Err(LoadRequestError::NoWorker);
        }
        Ok(())
    }

    /// Numbers a job change and sends it to the event subscribers (`event: job`).
    pub fn publish_job(&self, job: &app::jobs::JobRecord) {
        let now = self.now();
        let mut shared = lock(&self.inner.shared);
        let event = BackendEvent::Job(Box::new(app::jobs::JobEvent {
            seq: shared.lifecycle.next_seq(),
            at: now.at,
            job: job.clone(),
        }));
        shared.log.push(event.clone());
        let _ = self.inner.events.send(event);
    }

    /// Numbers the cluster's worker list and sends it to the event subscribers
    /// (`event: workers`).
    pub fn publish_workers(&self, workers: Vec<app::types::WorkerReport>) {
        let now = self.now();
        let mut shared = lock(&self.inner.shared);
        let event = BackendEvent::Workers(app::types::WorkersEvent {
            seq: shared.lifecycle.next_seq(),
            at: now.at,
            workers,
        });
        shared.log.push(event.clone());
        let _ = self.inner.events.send(event);
    }

    /// Wakes the worker for waiting jobs (it runs them once the model is loaded).
    pub fn run_jobs(&self) {
        if let Some(commands) = lock(&self.inner.commands).as_ref() {
            let _ = commands.send(Command::RunJobs);
        }
    }

    /// Enters `draining`, ends the event streams and tells the worker to stop.
    pub fn drain(&self) {
        let _ = self.signal(Signal::Draining);
        self.inner.draining.send_replace(true);
        if let Some(commands) = lock(&self.inner.commands).take() {
            let _ = commands.send(Command::Shutdown);
        }
    }

    /// A receiver that turns true when the backend drains.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.inner.draining.subscribe()
    }

    /// Events after `last_event_id` (or the current state when it is None or too old), and the
    /// live stream after them.
    pub fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        let now = self.now();
        let shared = lock(&self.inner.shared);
        let live = self.inner.events.subscribe();
        let last_seq = shared.lifecycle.last_seq();
        let replay = last_event_id
            .and_then(|id| shared.log.since(id, last_seq))
            .unwrap_or_else(|| vec![shared.lifecycle.state_event(&now)]);
        Subscription { replay, live }
    }

    pub fn state(&self) -> BackendState {
        lock(&self.inner.shared).lifecycle.state().clone()
    }

    /// The stages this build runs.
    pub fn stages(&self) -> Vec<LoadStage> {
        lock(&self.inner.shared).lifecycle.stage_list()
    }

    /// Durations of the stages finished in the current load.
    pub fn measured_ms(&self) -> HashMap<LoadStage, u64> {
        lock(&self.inner.shared).lifecycle.measured_ms()
    }

    /// The whole picture for `/api/backend`.
    pub fn status(&self) -> BackendStatus {
        let now = self.now();
        let shared = lock(&self.inner.shared);
        let l = &shared.lifecycle;
        BackendStatus {
            state: l.state().clone(),
            progress: l.progress(),
            eta_s: l.eta_s(now.mono_ms),
            stages: l.summaries(now.mono_ms),
            last_seq: l.last_seq(),
            attempts: l.attempts(),
            warmup_step_s: l.warmup_step_s(),
            workers: Vec::new(),
        }
    }

    /// The body of `/health/ready`.
    pub fn readiness(&self, verbose: bool) -> Readiness {
        let now = self.now();
        let shared = lock(&self.inner.shared);
        let l = &shared.lifecycle;
        let state = l.state();
        let (error, hint) = match state {
            BackendState::Failed { error, hint, .. } => (Some(error.clone()), Some(hint.clone())),
            _ => (None, None),
        };
        Readiness {
            state: state.name().to_string(),
            stage: state.stage(),
            progress: l.progress(),
            eta_s: l.eta_s(now.mono_ms),
            error,
            hint,
            stages: verbose.then(|| l.summaries(now.mono_ms)),
            workers: Vec::new(),
        }
    }
}

/// Locks a mutex; a poisoned lock only means a panic elsewhere, and the data (events, state)
/// stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_after_last_event_id_and_gap_detection() {
        let backend = Backend::new(&[LoadStage::Resolve, LoadStage::Verify], HashMap::new(), 4);
        let (tx, _rx) = mpsc::channel();
        backend.attach_worker(tx);
        backend.request_load().unwrap(); // seq 1: loading
        backend
            .signal(Signal::StageStarted(LoadStage::Resolve))
            .unwrap(); // 2: started
        backend
            .signal(Signal::StageStarted(LoadStage::Verify))
            .unwrap(); // 3 resolve done, 4 verify started, 5 loading(verify)
        let seqs = |s: Subscription| s.replay.iter().map(BackendEvent::seq).collect::<Vec<_>>();
        assert_eq!(seqs(backend.subscribe(Some(3))), [4, 5]);
        assert_eq!(seqs(backend.subscribe(Some(5))), Vec::<u64>::new());
        // seq 1 has left the 4-event buffer: a snapshot of the current state instead.
        let snapshot = backend.subscribe(Some(0)).replay;
        assert_eq!(snapshot.len(), 1);
        assert!(matches!(&snapshot[0], BackendEvent::State(s) if s.seq == 5));
        // An id from a previous run of the process: snapshot too.
        assert_eq!(backend.subscribe(Some(99)).replay.len(), 1);
        assert_eq!(backend.subscribe(None).replay.len(), 1);
    }

    #[test]
    fn a_second_load_request_is_refused_while_loading() {
        let backend = Backend::new(&[LoadStage::Resolve], HashMap::new(), 16);
        assert!(matches!(
            backend.request_load(),
            Err(LoadRequestError::NoWorker)
        ));
        let (tx, rx) = mpsc::channel();
        backend.attach_worker(tx);
        backend.request_load().unwrap();
        assert!(matches!(
            backend.request_load(),
            Err(LoadRequestError::Transition(TransitionError::Busy { .. }))
        ));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [Command::Load]);
        backend.drain();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [Command::Shutdown]);
        assert_eq!(backend.state(), BackendState::Draining);
        assert!(*backend.draining().borrow());
    }
}
