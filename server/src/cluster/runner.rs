//! The worker side of the cluster: take one job from the work queue, own its record, run it
//! with the loaded model while heartbeating the message, keep its checkpoints in the object
//! store, and end it exactly once.
//!
//! Runs on the worker thread (the model's owner); NATS calls go through the tokio runtime.
//! The record is owned by compare-and-set: every write names the revision this worker wrote
//! last, so a worker that lost the job (it stalled, JetStream gave the job to another) fails
//! its next write and stops without touching the record or the message again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::jobs::{JobProgress, JobRecord, JobState};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::kv::UpdateErrorKind;
use futures::StreamExt;
use model::hallo2::Hallo2;

use super::records::encode;
use super::{Cluster, ClusterError};
use crate::backend::Backend;
use crate::clock::rfc3339_now;
use crate::config::ServerConfig;
use crate::jobs::JobStore;
use crate::jobs::run::{FRAME_FILE, RunReporter, RunSettings, StopFlags, VIDEO_FILE, WORK_DIR};
use crate::jobs::transition::{JobChange, apply};
use crate::worker::{job_end, run_contained};

/// How long one pull waits for a job before the worker thread looks at its commands again.
pub const PULL_WAIT: Duration = Duration::from_secs(1);

/// What the worker thread lends the runner.
pub struct Runner<'a> {
    pub cluster: &'a Cluster,
    pub config: &'a ServerConfig,
    pub backend: &'a Backend,
    pub model: &'a Hallo2,
    pub store: &'a JobStore,
    pub runtime: &'a tokio::runtime::Handle,
    /// The job this worker runs now (its status report shows it).
    pub current: &'a Mutex<Option<String>>,
}

/// The job's record as this worker last wrote it, and its revision.
struct Owned<'a> {
    cluster: &'a Cluster,
    runtime: &'a tokio::runtime::Handle,
    job: JobRecord,
    revision: u64,
    /// A write failed because someone else changed the record: the job is no longer ours.
    lost: &'a AtomicBool,
}

impl Owned<'_> {
    /// Changes the record and writes it (compare-and-set); false when the job was lost.
    fn write(&mut self, change: impl FnOnce(&mut JobRecord)) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        let mut job = self.job.clone();
        change(&mut job);
        job.updated_at = rfc3339_now();
        // Transient errors are retried; a wrong revision is final.
        for attempt in 0..3 {
            let written = self.runtime.block_on(self.cluster.records.update(
                &job.id,
                encode(&job),
                self.revision,
            ));
            match written {
                Ok(revision) => {
                    self.revision = revision;
                    self.job = job;
                    return true;
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => break,
                Err(e) => {
                    tracing::warn!(job = %job.id, attempt, error = %e, "writing the job record failed");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
            }
        }
        tracing::warn!(job = %job.id, "the job's record changed under us: another worker has it");
        self.lost.store(true, Ordering::SeqCst);
        false
    }

    /// A state change ([`apply`]) and what goes with it, written; refused changes are not.
    fn change(&mut self, change: JobChange, then: impl FnOnce(&mut JobRecord)) -> bool {
        let mut probe = self.job.clone();
        if apply(&mut probe, change.clone()).is_err() {
            return false;
        }
        self.write(|job| {
            let _ = apply(job, change);
            then(job);
        })
    }
}

impl Runner<'_> {
    /// Waits up to [`PULL_WAIT`] for a job and runs it; returns whether one came.
    pub fn take_one(&self) -> bool {
        let pulled = self.runtime.block_on(async {
            let mut batch = self
                .cluster
                .queue
                .fetch()
                .max_messages(1)
                .expires(PULL_WAIT)
                .messages()
                .await
                .map_err(|e| ClusterError::new("pulling a job", e))?;
            match batch.next().await {
                Some(Ok(message)) => Ok(Some(message)),
                Some(Err(e)) => Err(ClusterError::new("pulling a job", e)),
                None => Ok(None),
            }
        });
        let message = match pulled {
            Ok(Some(message)) => Arc::new(message),
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take jobs");
                std::thread::sleep(PULL_WAIT);
                return false;
            }
        };
        let id = String::from_utf8_lossy(&message.payload).into_owned();
        let delivered = message.info().map_or(1, |i| i.delivered);
        let span = tracing::info_span!("job", job = %id, delivered);
        let _in_job = span.enter();
        let ack = |kind: AckKind| {
            let result = match kind {
                AckKind::Ack => self.runtime.block_on(message.double_ack()),
                kind => self.runtime.block_on(message.ack_with(kind)),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "acknowledging the job's message failed");
            }
        };
        if !crate::jobs::valid_id(&id) {
            tracing::warn!("dropping a work message that names no job");
            ack(AckKind::Term);
            return true;
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        let ended = self.run_delivery(&id, &message);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match ended {
            Delivery::Done => ack(AckKind::Ack),
            Delivery::Again => ack(AckKind::Nak(None)),
            // Another worker owns it now: its message is theirs to acknowledge.
            Delivery::Lost => {}
        }
        true
    }

    fn run_delivery(&self, id: &str, message: &Arc<async_nats::jetstream::Message>) -> Delivery {
        let lost = AtomicBool::new(false);
        let Some(mut owned) = self.claim(id, &lost) else {
            return Delivery::Done;
        };
        if owned.job.state.is_final() {
            // A second delivery of a job that ended (a publish repeated, an ack lost).
            tracing::info!(
                state = owned.job.state.name(),
                "already ended; delivery acknowledged"
            );
            return Delivery::Done;
        }
        let dir = self.store.dir(id);
        if let Err(e) = self.runtime.block_on(self.fetch_inputs(&owned.job, &dir)) {
            tracing::error!(error = %e, "cannot fetch the job's files");
            owned.change(
                JobChange::Failed(format!("its files could not be fetched: {e}")),
                |_| {},
            );
            return Delivery::Done;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let _heartbeat = AbortOnDrop(self.runtime.spawn(heartbeat(
            self.cluster_handle(id),
            message.clone(),
            id.to_string(),
            cancel.clone(),
            Duration::from_secs_f64(self.cluster.config.ack_wait_s / 3.0),
        )));
        let started = Instant::now();
        let draining = self.backend.draining();
        let lost_ref = &lost;
        let suspend = move || *draining.borrow() || lost_ref.load(Ordering::SeqCst);
        let stop = StopFlags {
            cancel: &cancel,
            suspend: &suspend,
        };
        let settings = RunSettings {
            cache_dir: &self.config.cache_dir,
            checkpoint_seconds: self.config.checkpoint_seconds,
        };
        let job = owned.job.clone();
        let mut reporter = ClusterReporter {
            owned,
            dir: &dir,
            synced: Synced::default(),
        };
        let (result, panicked) =
            run_contained(self.model, &job, &dir, &settings, &stop, &mut reporter);
        let (mut owned, mut synced) = (reporter.owned, reporter.synced);
        let end = job_end(self.model, result, panicked);
        crate::metrics::job_ended(end.how, started.elapsed().as_secs_f64());
        let delivery = if lost.load(Ordering::SeqCst) {
            tracing::warn!("stopped: another worker took the job over");
            Delivery::Lost
        } else {
            self.finish(&mut owned, &mut synced, &dir, end)
        };
        let _ = self.store.remove(id);
        crate::worker::prune_cache(
            &self.config.cache_dir.join(model::hallo2::FEATURE_CACHE_DIR),
            self.config.limits.feature_cache_bytes,
        );
        delivery
    }

    fn cluster_handle(&self, id: &str) -> ClusterRef {
        ClusterRef {
            control: self.cluster.control.clone(),
            client: self.cluster.client.clone(),
            cancel_subject: self.cluster.cancel_subject(id),
        }
    }

    /// Takes the job's record: a job another worker was running (it died) is interrupted
    /// first, then started; None when the job is gone.
    fn claim<'a>(&'a self, id: &str, lost: &'a AtomicBool) -> Option<Owned<'a>> {
        for _ in 0..5 {
            let read = self.runtime.block_on(self.cluster.record(id));
            let (mut job, revision) = match read {
                Ok(Some(found)) => found,
                Ok(None) => {
                    tracing::info!("the job was deleted before it ran");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the job's record");
                    std::thread::sleep(PULL_WAIT);
                    continue;
                }
            };
            let owned = |job, revision| Owned {
                cluster: self.cluster,
                runtime: self.runtime,
                job,
                revision,
                lost,
            };
            if job.state.is_final() {
                return Some(owned(job, revision));
            }
            if job.state.is_running() {
                let max_attempts = self.cluster.config.max_deliver;
                let _ = apply(&mut job, JobChange::Interrupted { max_attempts });
                job.message = format!("{} (its worker stopped)", job.message);
            }
            if job.state.is_waiting() {
                let _ = apply(&mut job, JobChange::Started);
                job.message = format!("{} on {}", job.message, self.cluster.name);
            }
            job.updated_at = rfc3339_now();
            match self
                .runtime
                .block_on(self.cluster.records.update(id, encode(&job), revision))
            {
                Ok(revision) => {
                    tracing::info!(
                        state = job.state.name(),
                        attempts = job.attempts,
                        "job taken"
                    );
                    return Some(owned(job, revision));
                }
                // Cancelled (or taken) meanwhile: read it again.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the job");
                    std::thread::sleep(PULL_WAIT);
                }
            }
        }
        None
    }

    /// The job's inputs and its checkpoint (if an earlier worker left one) in `dir`, fresh.
    async fn fetch_inputs(&self, job: &JobRecord, dir: &Path) -> Result<(), ClusterError> {
        let _ = tokio::fs::remove_dir_all(dir).await;
        self.store
            .create_dir(&job.id)
            .map_err(|e| ClusterError::new("making the job's folder", e))?;
        for file in [&job.files.image, &job.files.audio] {
            if !self
                .cluster
                .get_file(&job.id, file, &dir.join(file))
                .await?
            {
                return Err(ClusterError(format!("{file} is missing from the store")));
            }
        }
        for name in self.cluster.list_files(&job.id).await? {
            if let Some(work) = name.strip_prefix(&format!("{WORK_DIR}/"))
                && !work.contains('/')
                && !work.is_empty()
            {
                self.cluster
                    .get_file(&job.id, &name, &dir.join(&name))
                    .await?;
            }
        }
        Ok(())
    }

    /// Stores what the run made and records its end (once: a completion is written only over
    /// the revision this worker owns).
    fn finish(
        &self,
        owned: &mut Owned<'_>,
        synced: &mut Synced,
        dir: &Path,
        end: crate::worker::JobEnd,
    ) -> Delivery {
        let id = owned.job.id.clone();
        let cluster = self.cluster;
        match end.change {
            JobChange::Suspended => {
                // Paused by this worker's shutdown: its checkpoint goes to the store and the
                // job to another worker at once.
                if let Err(e) = self.runtime.block_on(sync_work(cluster, &id, dir, synced)) {
                    tracing::warn!(error = %e, "could not store the job's checkpoint");
                }
                owned.change(JobChange::Suspended, |_| {});
                return Delivery::Again;
            }
            JobChange::Completed { .. } => {
                if let Err(e) =
                    self.runtime
                        .block_on(cluster.put_file(&id, VIDEO_FILE, &dir.join(VIDEO_FILE)))
                {
                    // The message comes back; the next try continues from the checkpoint.
                    tracing::error!(error = %e, "cannot store the video");
                    owned.change(JobChange::Suspended, |_| {});
                    return Delivery::Again;
                }
            }
            _ => {}
        }
        let completion = end.completion;
        let written = owned.change(end.change, |record| {
            if let Some(completion) = completion {
                completion.fill(record);
            }
        });
        if !written && owned.lost.load(Ordering::SeqCst) {
            return Delivery::Lost;
        }
        tracing::info!(state = owned.job.state.name(), "job ended");
        let _ = self.runtime.block_on(async {
            let _ = cluster.control.purge(&id).await;
            cluster
                .delete_files(&id, |name| name.starts_with(&format!("{WORK_DIR}/")))
                .await
        });
        Delivery::Done
    }
}

/// Stops the heartbeat however the run ends (a heartbeat that outlived its job would keep the
/// job from ever going to another worker).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What happens to the job's message.
enum Delivery {
    /// Acknowledged: the job ended (or needs nothing more).
    Done,
    /// Given back for another worker at once (a shutdown paused it).
    Again,
    /// Left alone: another worker owns the job.
    Lost,
}

/// What the heartbeat task needs of the cluster (owned: it outlives the borrow).
struct ClusterRef {
    control: async_nats::jetstream::kv::Store,
    client: async_nats::Client,
    cancel_subject: String,
}

/// While the job runs: tells JetStream the job is alive (so it is not given to another
/// worker), and raises `cancel` on a cancel request (a message, or the request in KV).
async fn heartbeat(
    cluster: ClusterRef,
    message: Arc<async_nats::jetstream::Message>,
    id: String,
    cancel: Arc<AtomicBool>,
    every: Duration,
) {
    let mut requests = match cluster
        .client
        .subscribe(cluster.cancel_subject.clone())
        .await
    {
        Ok(sub) => sub.boxed(),
        Err(_) => futures::stream::pending().boxed(),
    };
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        let asked = tokio::select! {
            _ = tick.tick() => None,
            got = requests.next() => Some(got.is_some()),
        };
        match asked {
            None => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(job = %id, error = %e, "heartbeat failed");
                }
                if let Ok(Some(_)) = cluster.control.get(&id).await {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
            Some(true) => cancel.store(true, Ordering::SeqCst),
            Some(false) => requests = futures::stream::pending().boxed(),
        }
    }
}

/// What of the work folder this worker last stored: the checkpoint record's bytes and the
/// other files, so a sync stores only a changed checkpoint and removes the files it no longer
/// has without listing the store.
#[derive(Default)]
struct Synced {
    record: Option<Vec<u8>>,
    files: Vec<String>,
}

/// Copies the work folder's checkpoint to the store when it changed since `synced`: the files
/// it names first, the record last, so a worker that takes the job over never finds a record
/// naming files it cannot fetch.
async fn sync_work(
    cluster: &Cluster,
    id: &str,
    dir: &Path,
    synced: &mut Synced,
) -> Result<(), ClusterError> {
    let work = dir.join(WORK_DIR);
    let Ok(record) = tokio::fs::read(work.join("checkpoint.json")).await else {
        return Ok(());
    };
    if synced.record.as_deref() == Some(record.as_slice()) {
        return Ok(());
    }
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(&work)
        .await
        .map_err(|e| ClusterError::new("listing the work folder", e))?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().await.is_ok_and(|t| t.is_file());
        if is_file && name != "checkpoint.json" && !name.ends_with(".tmp") {
            names.push(name);
        }
    }
    for name in &names {
        cluster
            .put_file(id, &format!("{WORK_DIR}/{name}"), &work.join(name))
            .await?;
    }
    let tmp = work.join("checkpoint.json.sync");
    tokio::fs::write(&tmp, &record)
        .await
        .map_err(|e| ClusterError::new("copying the checkpoint", e))?;
    cluster
        .put_file(id, &format!("{WORK_DIR}/checkpoint.json"), &tmp)
        .await?;
    let _ = tokio::fs::remove_file(&tmp).await;
    // Checkpoint files the folder no longer has (the record names newer ones).
    for gone in synced.files.iter().filter(|f| !names.contains(f)) {
        cluster
            .files
            .delete(Cluster::object(id, &format!("{WORK_DIR}/{gone}")))
            .await
            .map_err(|e| ClusterError::new(&format!("deleting {id}/{WORK_DIR}/{gone}"), e))?;
    }
    *synced = Synced {
        record: Some(record),
        files: names,
    };
    Ok(())
}

/// Reports a running job to the cluster: phases, frames and seed are written to its record,
/// per-step progress is only published; each finished clip also stores the live frame and,
/// when it changed, the checkpoint.
struct ClusterReporter<'a> {
    owned: Owned<'a>,
    dir: &'a Path,
    synced: Synced,
}

impl RunReporter for ClusterReporter<'_> {
    fn phase(&mut self, state: JobState, message: String) {
        self.owned
            .change(JobChange::Phase { state, message }, |_| {});
    }

    fn progress(&mut self, progress: JobProgress, message: String) {
        let mut job = self.owned.job.clone();
        job.progress = progress;
        job.message = message;
        job.updated_at = rfc3339_now();
        let cluster = self.owned.cluster;
        let subject = cluster.progress_subject(&job.id);
        let _ = self
            .owned
            .runtime
            .block_on(cluster.client.publish(subject, encode(&job)));
        // Kept for the next write, so a phase change does not wind the progress back.
        self.owned.job.progress = job.progress;
        self.owned.job.message = job.message;
    }

    fn frame(&mut self, clip: usize) {
        let cluster = self.owned.cluster;
        let id = self.owned.job.id.clone();
        let dir = self.dir;
        let synced = &mut self.synced;
        let stored = self.owned.runtime.block_on(async {
            sync_work(cluster, &id, dir, synced).await?;
            cluster
                .put_file(&id, FRAME_FILE, &dir.join(FRAME_FILE))
                .await
        });
        match stored {
            Ok(()) => {
                self.owned.write(|job| {
                    job.files.frame = Some(FRAME_FILE.into());
                    job.files.frame_clip = clip;
                });
            }
            Err(e) => tracing::warn!(error = %e, "could not store the clip's frame or checkpoint"),
        }
    }

    fn seed(&mut self, seed: u64) {
        self.owned.write(|job| job.seed_used = Some(seed));
    }

    fn resumed(&mut self, clip: usize) {
        self.owned.write(|job| {
            job.resumed_from_clip = Some(clip + 1);
            job.message = format!("Resumed from clip {}", clip + 1);
        });
    }
}
