//! The web side of the cluster: a submission's inputs go to the object store, its record to
//! KV and its id onto the work queue; cancel and delete act on KV; every web node keeps its
//! [`Jobs`] registry as a mirror of the records bucket (and of the workers' per-step progress),
//! so pages, SSE and the API read it exactly as in one process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use app::jobs::JobRecord;
use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use futures::StreamExt;

use super::{Cluster, ClusterError};
use crate::clock::rfc3339_now;
use crate::jobs::transition::{JobChange, apply};
use crate::jobs::{Jobs, JobsError};

/// A record as stored in KV.
pub fn encode(job: &JobRecord) -> bytes::Bytes {
    serde_json::to_vec(job)
        .expect("a job record always serialises")
        .into()
}

pub fn decode(bytes: &[u8]) -> Result<JobRecord, ClusterError> {
    serde_json::from_slice(bytes).map_err(|e| ClusterError::new("reading a job record", e))
}

impl Cluster {
    /// A job's record and its revision (None: no such job).
    pub async fn record(&self, id: &str) -> Result<Option<(JobRecord, u64)>, ClusterError> {
        let entry = self
            .records
            .entry(id)
            .await
            .map_err(|e| ClusterError::new(&format!("reading job {id}"), e))?;
        match entry {
            Some(e) if e.operation == Operation::Put => Ok(Some((decode(&e.value)?, e.revision))),
            _ => Ok(None),
        }
    }

    /// Queues a new job whose inputs are in `dir`: the files first, then the record, then the
    /// message (a worker that takes the message finds both).
    pub async fn submit(&self, dir: &Path, job: &JobRecord) -> Result<(), ClusterError> {
        for file in [&job.files.image, &job.files.audio] {
            self.put_file(&job.id, file, &dir.join(file)).await?;
        }
        self.records
            .create(&job.id, encode(job))
            .await
            .map_err(|e| ClusterError::new(&format!("recording job {}", job.id), e))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", job.id.as_str());
        self.js
            .publish_with_headers(self.run_subject(), headers, job.id.clone().into())
            .await
            .map_err(|e| ClusterError::new("queueing the job", e))?
            .await
            .map_err(|e| ClusterError::new("queueing the job", e))?;
        Ok(())
    }

    /// Cancels a waiting job at once (compare-and-set on its record), or asks the worker
    /// running it to stop at its next step (a cancel request in KV, which the worker checks,
    /// and a message for at once).
    pub async fn cancel(&self, id: &str) -> Result<JobRecord, JobsError> {
        let internal = |e: ClusterError| JobsError::Cluster(e.0);
        loop {
            let (mut job, revision) = self
                .record(id)
                .await
                .map_err(internal)?
                .ok_or_else(|| JobsError::NotFound(id.into()))?;
            if job.state.is_final() {
                return Err(JobsError::AlreadyFinal {
                    id: id.into(),
                    state: job.state.name(),
                });
            }
            let waiting = job.state.is_waiting();
            apply(&mut job, JobChange::CancelRequested)?;
            job.updated_at = rfc3339_now();
            if !waiting {
                self.control
                    .put(id, "cancel".into())
                    .await
                    .map_err(|e| internal(ClusterError::new("requesting the cancel", e)))?;
                self.client
                    .publish(self.cancel_subject(id), bytes::Bytes::new())
                    .await
                    .map_err(|e| internal(ClusterError::new("requesting the cancel", e)))?;
                return Ok(job);
            }
            match self.records.update(id, encode(&job), revision).await {
                Ok(_) => return Ok(job),
                // A worker took it meanwhile: cancel it as a running job.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(internal(ClusterError::new("cancelling", e))),
            }
        }
    }

    /// Deletes a finished job: its files, then its record (every web node's mirror drops it).
    pub async fn delete(&self, id: &str) -> Result<(), JobsError> {
        let internal = |e: ClusterError| JobsError::Cluster(e.0);
        let (job, _) = self
            .record(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| JobsError::NotFound(id.into()))?;
        if !job.state.is_final() {
            return Err(JobsError::NotFinished {
                id: id.into(),
                state: job.state.name(),
            });
        }
        self.delete_files(id, |_| true).await.map_err(internal)?;
        let _ = self.control.purge(id).await;
        self.records
            .purge(id)
            .await
            .map_err(|e| internal(ClusterError::new(&format!("deleting job {id}"), e)))?;
        Ok(())
    }

    /// A job's file in this node's cache folder `dir`, fetched from the object store when it
    /// is not there yet (or always, for `refresh`: the live frame changes while the job runs).
    pub async fn local_file(
        &self,
        id: &str,
        file: &str,
        dir: &Path,
        refresh: bool,
    ) -> Result<bool, ClusterError> {
        let path = dir.join(file);
        if !refresh && tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(true);
        }
        self.get_file(id, file, &path).await
    }
}

/// Keeps `jobs` a mirror of the cluster's records and of the workers' progress, reconnecting
/// after errors, until the process ends.
pub fn spawn_mirror(cluster: Arc<Cluster>, jobs: Jobs) {
    let (c, j) = (cluster.clone(), jobs.clone());
    tokio::spawn(async move {
        loop {
            match c.records.watch_with_history(">").await {
                Ok(mut watch) => {
                    while let Some(entry) = watch.next().await {
                        match entry {
                            Ok(e) if e.operation == Operation::Put => match decode(&e.value) {
                                Ok(job) => j.mirror(job),
                                Err(err) => {
                                    tracing::warn!(key = %e.key, error = %err, "skipping a job record")
                                }
                            },
                            Ok(e) => j.forget(&e.key),
                            Err(e) => {
                                tracing::warn!(error = %e, "the records watch failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the job records"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    tokio::spawn(async move {
        loop {
            match cluster
                .client
                .subscribe(cluster.progress_subject("*"))
                .await
            {
                Ok(mut progress) => {
                    while let Some(message) = progress.next().await {
                        if let Ok(job) = decode(&message.payload) {
                            jobs.mirror_progress(job);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow the workers' progress"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Fails the jobs JetStream stopped delivering (`max_deliver` workers died running them): the
/// advisory names the message, whose payload is the job; its record becomes failed with the
/// reason (compare-and-set: one web node writes it) and the message leaves the queue.
pub fn spawn_dead_letters(cluster: Arc<Cluster>) {
    #[derive(serde::Deserialize)]
    struct Advisory {
        stream_seq: u64,
        deliveries: u64,
    }
    tokio::spawn(async move {
        let Ok(mut advisories) = cluster
            .client
            .subscribe(cluster.dead_letter_subject())
            .await
        else {
            tracing::warn!("cannot follow the jobs JetStream stops delivering");
            return;
        };
        while let Some(message) = advisories.next().await {
            let Ok(advisory) = serde_json::from_slice::<Advisory>(&message.payload) else {
                continue;
            };
            let Ok(queued) = cluster.stream.get_raw_message(advisory.stream_seq).await else {
                continue;
            };
            let id = String::from_utf8_lossy(&queued.payload).into_owned();
            let reason = format!(
                "its worker stopped {} times while running it (max_deliver); not retried again",
                advisory.deliveries
            );
            match give_up(&cluster, &id, &reason).await {
                Ok(true) => {
                    tracing::warn!(job = %id, deliveries = advisory.deliveries, "job failed: its workers kept stopping")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "could not fail a job no worker finished")
                }
            }
            let _ = cluster.stream.delete_message(advisory.stream_seq).await;
        }
    });
}

/// Marks a job that has not ended as failed with `reason`; false when it had ended (or another
/// node was first).
async fn give_up(cluster: &Cluster, id: &str, reason: &str) -> Result<bool, ClusterError> {
    let Some((mut job, revision)) = cluster.record(id).await? else {
        return Ok(false);
    };
    if job.state.is_final() {
        return Ok(false);
    }
    if job.state.is_waiting() {
        // Taken and interrupted, then never started again: failed all the same.
        let _ = apply(&mut job, JobChange::Started);
    }
    apply(&mut job, JobChange::Failed(reason.to_string()))
        .map_err(|e| ClusterError::new("failing the job", e))?;
    job.updated_at = rfc3339_now();
    match cluster.records.update(id, encode(&job), revision).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(ClusterError::new("failing the job", e)),
    }
}

/// Deletes finished jobs older than `hours` from the cluster, now and every `every` (each web
/// node does; a job another node deleted first is simply gone).
pub fn spawn_retention(cluster: Arc<Cluster>, jobs: Jobs, hours: u64, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let cutoff = crate::clock::rfc3339_from_unix_ms(
                super::now_ms().saturating_sub(hours * 3_600_000),
            );
            for id in jobs.finished_before(&cutoff) {
                match cluster.delete(&id).await {
                    Ok(()) => {
                        tracing::info!(job = %id, retention_hours = hours, "removed an old job")
                    }
                    Err(e) => tracing::debug!(job = %id, error = %e, "not removed"),
                }
            }
        }
    });
}
