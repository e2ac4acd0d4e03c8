//! Generation jobs: the durable store, the bounded queue, cancellation and restart recovery.
//! Handlers submit and read; the worker thread takes the next job and reports on it
//! (`run.rs` turns one job into a video with the loaded model).
//!
//! Every change of state goes through [`Jobs::update`], which persists the record before anyone
//! is told about it. Per-step progress ([`Jobs::progress`]) is only published: a restart resets
//! progress anyway, and an fsync per denoising step would sit in the hot loop.
//!
//! Two locks: changes are serialised by the registry's own lock, which is held across their
//! disk writes (so records reach the disk in the order they changed); readers (`get`, `list`,
//! the queue length: every page, SSE snapshot and health probe) read a published view whose
//! lock is only ever held to copy a record in or out, never across disk I/O.

pub mod preview;
pub mod run;
pub mod store;
pub mod transition;
pub mod upload;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use app::jobs::JobRecord;

use crate::clock::rfc3339_now;
use crate::jobs::transition::{JobChange, apply};
pub use store::{JobStore, StoreError, free_bytes, valid_id};

/// Told about every change of a job (the backend numbers it and puts it on `/api/events`).
pub type JobListener = Arc<dyn Fn(&JobRecord) + Send + Sync>;

/// Why a job could not be submitted, cancelled or deleted.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("the queue is full ({capacity} jobs waiting); try again later")]
    QueueFull { capacity: usize },
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {id} is {state}; only a finished job can be deleted")]
    NotFinished { id: String, state: &'static str },
    #[error("job {id} has already finished ({state})")]
    AlreadyFinal { id: String, state: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] transition::TransitionError),
    /// The cluster's store could not be reached or refused the change.
    #[error("{0}")]
    Cluster(String),
}

/// The job registry shared by the handlers and the worker.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
    view: Arc<RwLock<View>>,
    store: JobStore,
    capacity: usize,
}

/// What readers see: the records as last saved (or progressed) and the queue's length.
#[derive(Default)]
struct View {
    records: HashMap<String, JobRecord>,
    waiting: usize,
}

struct Inner {
    records: HashMap<String, JobRecord>,
    /// Waiting jobs, oldest first.
    queue: VecDeque<String>,
    /// Cancel flags of running jobs (checked between denoising steps).
    running: HashMap<String, Arc<AtomicBool>>,
    listener: Option<JobListener>,
}

/// A restart found a job that was running: it runs again once; a second interruption fails it.
pub const MAX_ATTEMPTS: u32 = 2;

impl Jobs {
    /// Opens the store and recovers what a previous process left: waiting jobs queue again in
    /// their order; a job that was running is queued again (or failed with the reason after
    /// [`MAX_ATTEMPTS`]); finished jobs stay as they are.
    pub fn open(store: JobStore, capacity: usize) -> Result<Self, StoreError> {
        let (jobs, problems) = store.load_all()?;
        for p in &problems {
            tracing::warn!(error = %p, "skipping a job record");
        }
        let mut records = HashMap::new();
        let mut queue = VecDeque::new();
        for mut job in jobs {
            if apply(
                &mut job,
                JobChange::Interrupted {
                    max_attempts: MAX_ATTEMPTS,
                },
            )
            .is_ok()
            {
                job.updated_at = rfc3339_now();
                // A full disk must not keep the studio from starting: the change stands in
                // memory and goes to disk with the job's next one.
                match store.save(&job) {
                    Ok(()) => store.append_log(&job),
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "could not save a recovered job")
                    }
                }
            }
            if job.state.is_waiting() {
                queue.push_back(job.id.clone());
            }
            records.insert(job.id.clone(), job);
        }
        if !queue.is_empty() {
            tracing::info!(jobs = queue.len(), "resuming queued jobs");
        }
        let view = View {
            records: records.clone(),
            waiting: queue.len(),
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                records,
                queue,
                running: HashMap::new(),
                listener: None,
            })),
            view: Arc::new(RwLock::new(view)),
            store,
            capacity,
        })
    }

    /// An empty registry for a cluster node: the records come from the cluster
    /// ([`Self::mirror`]) and `store` is only this node's cache of their files.
    pub fn open_mirror(store: JobStore, capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                records: HashMap::new(),
                queue: VecDeque::new(),
                running: HashMap::new(),
                listener: None,
            })),
            view: Arc::new(RwLock::new(View::default())),
            store,
            capacity,
        }
    }

    /// A record as the cluster has it now: stored in memory, published, told to the listener.
    /// The waiting count is the cluster's (records waiting), as a mirror has no queue.
    pub fn mirror(&self, job: JobRecord) {
        let mut inner = self.lock();
        inner.records.insert(job.id.clone(), job.clone());
        self.publish_mirror(&inner, Some(&job));
        notify(&inner, &job);
    }

    /// A running job's per-step progress from its worker; ignored unless the mirror has the
    /// job in the same running state (progress that arrives after a state change is stale).
    pub fn mirror_progress(&self, job: JobRecord) {
        let mut inner = self.lock();
        let current = inner.records.get(&job.id).map(|j| j.state);
        if current != Some(job.state) || !job.state.is_running() {
            return;
        }
        inner.records.insert(job.id.clone(), job.clone());
        self.publish_mirror(&inner, Some(&job));
        notify(&inner, &job);
    }

    /// A job deleted from the cluster: gone from the mirror and from this node's cache.
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if inner.records.remove(id).is_some() {
            self.write().records.remove(id);
            self.publish_mirror(&inner, None);
        }
        drop(inner);
        if valid_id(id) {
            let _ = self.store.remove(id);
        }
    }

    fn publish_mirror(&self, inner: &Inner, job: Option<&JobRecord>) {
        let mut view = self.write();
        view.waiting = inner
            .records
            .values()
            .filter(|j| j.state.is_waiting())
            .count();
        if let Some(job) = job {
            view.records.insert(job.id.clone(), job.clone());
        }
    }

    pub fn store(&self) -> &JobStore {
        &self.store
    }

    /// Routes every later change to `listener`.
    pub fn set_listener(&self, listener: JobListener) {
        self.lock().listener = Some(listener);
    }

    /// Jobs waiting now.
    pub fn waiting(&self) -> usize {
        self.read().waiting
    }

    /// Jobs that may wait at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether a submission would be refused now (checked before reading the upload).
    pub fn is_full(&self) -> bool {
        self.waiting() >= self.capacity
    }

    /// Queues a new job whose folder and inputs are already written; its record is saved
    /// before this returns (the job is then durable and will run).
    pub fn submit(&self, job: JobRecord) -> Result<JobRecord, JobsError> {
        let mut inner = self.lock();
        if inner.queue.len() >= self.capacity {
            return Err(JobsError::QueueFull {
                capacity: self.capacity,
            });
        }
        self.store.save(&job)?;
        self.store.append_log(&job);
        inner.queue.push_back(job.id.clone());
        inner.records.insert(job.id.clone(), job.clone());
        self.publish(&inner, Some(&job));
        notify(&inner, &job);
        Ok(job)
    }

    /// Marks every queued job `waiting_for_model` (or back to `queued` when `ready`).
    pub fn set_model_ready(&self, ready: bool) {
        let ids: Vec<String> = self.lock().queue.iter().cloned().collect();
        for id in ids {
            let _ = self.change(&id, JobChange::ModelReady(ready));
        }
    }

    /// The next waiting job, now `preprocessing`, with its cancel flag (the worker calls this).
    pub fn start_next(&self) -> Option<(JobRecord, Arc<AtomicBool>)> {
        let id = {
            let mut inner = self.lock();
            let id = inner.queue.pop_front()?;
            inner
                .running
                .insert(id.clone(), Arc::new(AtomicBool::new(false)));
            self.publish(&inner, None);
            id
        };
        let job = self.change(&id, JobChange::Started).ok()?;
        let flag = self.lock().running.get(&id).cloned()?;
        Some((job, flag))
    }

    /// Jobs the worker had started when it ended without finishing them (its thread died):
    /// each is queued again (or failed after [`MAX_ATTEMPTS`]), as after a restart; returns
    /// how many.
    pub fn requeue_interrupted(&self) -> usize {
        let ids: Vec<String> = self.lock().running.drain().map(|(id, _)| id).collect();
        for id in &ids {
            let changed = self.change(
                id,
                JobChange::Interrupted {
                    max_attempts: MAX_ATTEMPTS,
                },
            );
            if let Ok(job) = changed
                && job.state.is_waiting()
            {
                let mut inner = self.lock();
                inner.queue.push_back(job.id.clone());
                self.publish(&inner, None);
            }
        }
        ids.len()
    }

    /// The worker is done with a job (whatever its final state).
    pub fn finish_running(&self, id: &str) {
        self.lock().running.remove(id);
    }

    /// Applies `change` to a job, stamps `updated_at`, saves it and tells the listener.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut JobRecord),
    ) -> Result<JobRecord, JobsError> {
        let mut inner = self.lock();
        let job = inner
            .records
            .get_mut(id)
            .ok_or_else(|| JobsError::NotFound(id.into()))?;
        change(job);
        job.updated_at = rfc3339_now();
        let job = job.clone();
        self.store.save(&job)?;
        self.publish(&inner, Some(&job));
        notify(&inner, &job);
        Ok(job)
    }

    /// Applies a state change ([`transition::apply`]), then saves and publishes it like
    /// [`Self::update`]; a change the job's state does not allow leaves it as it is.
    pub fn change(&self, id: &str, change: JobChange) -> Result<JobRecord, JobsError> {
        self.change_then(id, change, |_| {})
    }

    /// [`Self::change`], then `then` on the changed record (what goes with the new state, in
    /// the same save and the same event); `then` does not run when the change is refused.
    pub fn change_then(
        &self,
        id: &str,
        change: JobChange,
        then: impl FnOnce(&mut JobRecord),
    ) -> Result<JobRecord, JobsError> {
        let mut refused = None;
        let job = self.update(id, |job| match apply(job, change) {
            Ok(()) => then(job),
            Err(e) => refused = Some(e),
        })?;
        match refused {
            Some(e) => Err(JobsError::Transition(e)),
            None => {
                self.store.append_log(&job);
                Ok(job)
            }
        }
    }

    /// Applies a progress change in memory and tells the listener, without writing `job.json`.
    pub fn progress(&self, id: &str, change: impl FnOnce(&mut JobRecord)) {
        let mut inner = self.lock();
        let Some(job) = inner.records.get_mut(id) else {
            return;
        };
        change(job);
        job.updated_at = rfc3339_now();
        let job = job.clone();
        self.publish(&inner, Some(&job));
        notify(&inner, &job);
    }

    /// Cancels a waiting job at once, or a running one at its next denoising step.
    pub fn cancel(&self, id: &str) -> Result<JobRecord, JobsError> {
        let state = self
            .get(id)
            .ok_or_else(|| JobsError::NotFound(id.into()))?
            .state;
        if state.is_final() {
            return Err(JobsError::AlreadyFinal {
                id: id.into(),
                state: state.name(),
            });
        }
        if state.is_waiting() {
            let mut inner = self.lock();
            inner.queue.retain(|q| q != id);
            self.publish(&inner, None);
        } else if let Some(flag) = self.lock().running.get(id) {
            flag.store(true, Ordering::SeqCst);
        }
        self.change(id, JobChange::CancelRequested)
    }

    /// Deletes finished jobs last changed before `cutoff` (RFC 3339 UTC, compared as text: every
    /// stamp has the same format); returns how many went.
    pub fn prune(&self, cutoff: &str) -> usize {
        let old = self.finished_before(cutoff);
        old.iter().filter(|id| self.delete(id).is_ok()).count()
    }

    /// Finished jobs last changed before `cutoff` (RFC 3339 UTC).
    pub fn finished_before(&self, cutoff: &str) -> Vec<String> {
        self.read()
            .records
            .values()
            .filter(|j| j.state.is_final() && j.updated_at.as_str() < cutoff)
            .map(|j| j.id.clone())
            .collect()
    }

    /// Deletes a finished job and its files: its folder is moved aside at once (one rename),
    /// and removed after the registry's lock is released.
    pub fn delete(&self, id: &str) -> Result<(), JobsError> {
        let trash = {
            let mut inner = self.lock();
            let state = inner
                .records
                .get(id)
                .ok_or_else(|| JobsError::NotFound(id.into()))?
                .state;
            if !state.is_final() {
                return Err(JobsError::NotFinished {
                    id: id.into(),
                    state: state.name(),
                });
            }
            let trash = self.store.move_to_trash(id)?;
            inner.records.remove(id);
            self.write().records.remove(id);
            trash
        };
        if let Some(trash) = trash
            && let Err(e) = std::fs::remove_dir_all(&trash)
        {
            tracing::warn!(path = %trash.display(), error = %e, "could not remove a deleted job's files");
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<JobRecord> {
        self.read().records.get(id).cloned()
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobRecord> {
        let mut jobs: Vec<JobRecord> = self.read().records.values().cloned().collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        jobs
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies a changed record (and the queue's length) into the readers' view; called with the
    /// registry locked, so the view changes in the same order as the registry.
    fn publish(&self, inner: &Inner, job: Option<&JobRecord>) {
        let mut view = self.write();
        view.waiting = inner.queue.len();
        if let Some(job) = job {
            view.records.insert(job.id.clone(), job.clone());
        }
    }
}

fn notify(inner: &Inner, job: &JobRecord) {
    if let Some(listener) = &inner.listener {
        listener(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::store::tests::record;
    use app::jobs::JobState;

    fn open(dir: &std::path::Path, capacity: usize) -> Jobs {
        Jobs::open(JobStore::open(dir).unwrap(), capacity).unwrap()
    }

    fn submit(jobs: &Jobs, n: u32) -> JobRecord {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        jobs.store().create_dir(&id).unwrap();
        jobs.submit(record(&id, &format!("2026-01-01T00:00:{n:02}Z")))
            .unwrap()
    }

    #[test]
    fn jobs_started_by_a_worker_that_died_are_queued_again() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = open(tmp.path(), 3);
        let a = submit(&jobs, 1);
        submit(&jobs, 2);
        let (running, _) = jobs.start_next().unwrap();
        assert_eq!((running.id.as_str(), jobs.waiting()), (a.id.as_str(), 1));
        assert_eq!(jobs.requeue_interrupted(), 1);
        assert_eq!(jobs.waiting(), 2);
        assert!(jobs.get(&a.id).unwrap().state.is_waiting());
        assert_eq!(jobs.requeue_interrupted(), 0);
        // It runs again, after the one that was waiting.
        let (next, _) = jobs.start_next().unwrap();
        assert_ne!(next.id, a.id);
        assert_eq!(jobs.start_next().unwrap().0.id, a.id);
    }

    #[test]
    fn a_record_that_cannot_be_written_at_start_does_not_stop_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = open(tmp.path(), 3);
        let job = submit(&jobs, 1);
        let (running, _) = jobs.start_next().unwrap();
        drop(jobs);
        // Writing its record fails now (as on a full disk): the temporary name is taken.
        std::fs::create_dir(tmp.path().join("jobs").join(&job.id).join("job.json.tmp")).unwrap();
        let jobs = open(tmp.path(), 3);
        let recovered = jobs.get(&running.id).unwrap();
        assert!(recovered.state.is_waiting(), "{:?}", recovered.state);
        assert_eq!(jobs.waiting(), 1);
    }

    #[test]
    fn bounded_queue_cancel_and_restart_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = open(tmp.path(), 3);
        let a = submit(&jobs, 1);
        let b = submit(&jobs, 2);
        let c = submit(&jobs, 3);
        assert!(jobs.is_full());
        let id = "00000000-0000-4000-8000-000000000004";
        jobs.store().create_dir(id).unwrap();
        assert!(matches!(
            jobs.submit(record(id, "2026-01-01T00:00:04Z")),
            Err(JobsError::QueueFull { capacity: 3 })
        ));

        let (running, flag) = jobs.start_next().unwrap();
        assert_eq!(running.id, a.id);
        assert_eq!(running.state, JobState::Preprocessing);
        assert_eq!(running.attempts, 1);
        // Cancelling a waiting job is immediate; a running one is flagged for its next step.
        assert_eq!(jobs.cancel(&c.id).unwrap().state, JobState::Cancelled);
        jobs.cancel(&a.id).unwrap();
        assert!(flag.load(Ordering::SeqCst));
        assert!(matches!(
            jobs.cancel(&c.id),
            Err(JobsError::AlreadyFinal { .. })
        ));
        assert!(matches!(
            jobs.delete(&b.id),
            Err(JobsError::NotFinished { .. })
        ));

        // kill -9 now: a is running, b is queued, c cancelled.
        drop(jobs);
        let jobs = open(tmp.path(), 3);
        let a2 = jobs.get(&a.id).unwrap();
        assert_eq!(a2.state, JobState::Queued, "re-run after the restart");
        assert!(a2.message.contains("restart"));
        assert_eq!(jobs.get(&b.id).unwrap().state, JobState::Queued);
        assert_eq!(jobs.get(&c.id).unwrap().state, JobState::Cancelled);
        // The order is kept: b was waiting before a went back to the queue, a is older.
        assert_eq!(jobs.start_next().unwrap().0.id, a.id);

        // Interrupted again: the second restart fails it with the reason.
        drop(jobs);
        let jobs = open(tmp.path(), 3);
        let a3 = jobs.get(&a.id).unwrap();
        assert_eq!(a3.state, JobState::Failed);
        assert!(a3.error.unwrap().contains("interrupted 2 times"));
        assert_eq!(jobs.start_next().unwrap().0.id, b.id);
        jobs.delete(&c.id).unwrap();
        assert!(jobs.get(&c.id).is_none());
        assert!(!jobs.store().dir(&c.id).exists());

        // Retention: only finished jobs older than the cutoff go.
        assert_eq!(jobs.prune("2000-01-01T00:00:00.000Z"), 0);
        assert_eq!(
            jobs.prune("9999-01-01T00:00:00.000Z"),
            1,
            "a (failed); b is running"
        );
        assert!(jobs.get(&a.id).is_none());
        assert!(jobs.get(&b.id).is_some());
    }
}
