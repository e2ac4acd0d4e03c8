//! Scale-out through NATS JetStream: any number of web processes (pages, API, SSE) and worker
//! processes (each owning one model on one device) share one NATS account. JetStream holds what
//! a single studio keeps in its data folder:
//!
//! | what                          | where                                   |
//! |-------------------------------|-----------------------------------------|
//! | job records                   | KV `<P>_RECORDS`, key = job id           |
//! | cancel requests               | KV `<P>_CONTROL`, key = job id           |
//! | worker status (load, job)     | KV `<P>_WORKERS`, key = worker name      |
//! | inputs, videos, checkpoints   | object store `<P>_FILES`, `<id>/<file>`  |
//! | the work queue                | stream `<P>_JOBS` (work-queue retention), one durable pull consumer shared by the workers |
//! | per-step progress, cancel     | core subjects `<p>.progress.<id>`, `<p>.cancel.<id>` |
//!
//! Who writes a record: the web node creates it (and may cancel it while it waits, by a
//! compare-and-set on its revision); the worker that takes the job's message owns it from its
//! first compare-and-set on, and every later write is a compare-and-set on the revision it last
//! wrote. A second worker given the same job (the first stopped heartbeating) takes it over by
//! the same rule, and the first then loses every write and stops: one completion per job.
//!
//! `records.rs` is the web side, `runner.rs` the worker side, `workers.rs` the workers' status
//! and the web node's view of them.

pub mod records;
pub mod runner;
pub mod workers;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};

use crate::config::ClusterConfig;

/// Name of the durable consumer every worker pulls from.
pub const CONSUMER: &str = "workers";

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
#[error("NATS: {0}")]
pub struct ClusterError(pub String);

impl ClusterError {
    pub fn new(what: &str, e: impl std::fmt::Display) -> Self {
        Self(format!("{what}: {e}"))
    }
}

/// One process's connection to the cluster and its streams, buckets and subjects.
pub struct Cluster {
    pub config: ClusterConfig,
    /// This process's name among the workers.
    pub name: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub records: kv::Store,
    pub control: kv::Store,
    pub workers: kv::Store,
    pub files: object_store::ObjectStore,
    /// The work queue's stream, and the consumer every worker pulls from.
    pub stream: stream::Stream,
    pub queue: consumer::PullConsumer,
}

impl Cluster {
    /// Connects and makes (or opens) the streams and buckets; fails with what to do when NATS
    /// cannot be reached or has no JetStream.
    pub async fn connect(config: &ClusterConfig) -> Result<Self, ClusterError> {
        let name = config.name.clone().unwrap_or_else(default_name);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("hallo2-studio {name} ({})", config.role.name()))
            .connection_timeout(Duration::from_secs(5));
        if let Some(creds) = &config.credentials {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| ClusterError::new(&format!("reading {}", creds.display()), e))?;
        }
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        let client = options.connect(config.nats.as_str()).await.map_err(|e| {
            ClusterError(format!(
                "cannot reach {}: {e} (start `nats-server -js`, or fix [cluster] nats)",
                config.nats
            ))
        })?;
        let js = jetstream::new(client.clone());
        // Processes that start together race to make the streams (each make is idempotent),
        // and a loaded server may answer late: a failed set-up is tried again before giving up.
        let mut attempt = 1;
        let layout = loop {
            match Layout::open(&js, config).await {
                Ok(layout) => break layout,
                Err(e) if attempt < SETUP_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "setting up the cluster's streams; trying again");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(nats = %config.nats, name = %name, role = config.role.name(), "joined the cluster");
        Ok(Self {
            config: config.clone(),
            name,
            client,
            js,
            records: layout.records,
            control: layout.control,
            workers: layout.workers,
            files: layout.files,
            stream: layout.stream,
            queue: layout.queue,
        })
    }

    /// Subject of the work queue.
    pub fn run_subject(&self) -> String {
        format!("{}.jobs.run", self.config.prefix)
    }

    /// Subject of a running job's per-step progress (`*`: every job's).
    pub fn progress_subject(&self, id: &str) -> String {
        format!("{}.progress.{id}", self.config.prefix)
    }

    /// Subject that tells the worker running `id` to stop at its next step.
    pub fn cancel_subject(&self, id: &str) -> String {
        format!("{}.cancel.{id}", self.config.prefix)
    }

    /// Subject of JetStream's advisory for a job given to workers `max_deliver` times.
    pub fn dead_letter_subject(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}_JOBS.{CONSUMER}",
            self.config.prefix
        )
    }

    /// Subject that asks every worker to load its model again.
    pub fn reload_subject(&self) -> String {
        format!("{}.control.reload", self.config.prefix)
    }

    /// Object name of a job's file (`work/…` for its checkpoints).
    pub fn object(id: &str, file: &str) -> String {
        format!("{id}/{file}")
    }

    /// Stores a local file as a job's object.
    pub async fn put_file(
        &self,
        id: &str,
        file: &str,
        path: &std::path::Path,
    ) -> Result<(), ClusterError> {
        let mut reader = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClusterError::new(&format!("reading {}", path.display()), e))?;
        self.files
            .put(Self::object(id, file).as_str(), &mut reader)
            .await
            .map_err(|e| ClusterError::new(&format!("storing {id}/{file}"), e))?;
        Ok(())
    }

    /// Copies a job's object to `path` (written under a temporary name, then renamed);
    /// Ok(false) when there is no such object.
    pub async fn get_file(
        &self,
        id: &str,
        file: &str,
        path: &std::path::Path,
    ) -> Result<bool, ClusterError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        let mut object = match self.files.get(Self::object(id, file)).await {
            Ok(object) => object,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(ClusterError::new(&format!("fetching {id}/{file}"), e)),
        };
        let io = |e: std::io::Error| ClusterError::new(&format!("writing {}", path.display()), e);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        // Its own temporary name: two readers may fetch the same file at once.
        let tmp = path.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
        tokio::io::copy(&mut object, &mut out).await.map_err(io)?;
        out.sync_all().await.map_err(io)?;
        tokio::fs::rename(&tmp, path).await.map_err(io)?;
        Ok(true)
    }

    /// Names (after `<id>/`) of a job's objects.
    pub async fn list_files(&self, id: &str) -> Result<Vec<String>, ClusterError> {
        use futures::StreamExt;
        let prefix = format!("{id}/");
        let mut list = self
            .files
            .list()
            .await
            .map_err(|e| ClusterError::new("listing files", e))?;
        let mut names = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| ClusterError::new("listing files", e))?;
            if !info.deleted
                && let Some(rest) = info.name.strip_prefix(&prefix)
            {
                names.push(rest.to_string());
            }
        }
        Ok(names)
    }

    /// Removes a job's objects whose names (after `<id>/`) satisfy `which`.
    pub async fn delete_files(
        &self,
        id: &str,
        which: impl Fn(&str) -> bool,
    ) -> Result<(), ClusterError> {
        for name in self.list_files(id).await? {
            if which(&name) {
                self.files
                    .delete(Self::object(id, &name))
                    .await
                    .map_err(|e| ClusterError::new(&format!("deleting {id}/{name}"), e))?;
            }
        }
        Ok(())
    }
}

/// Set-up tries before a process gives up joining.
const SETUP_ATTEMPTS: u64 = 4;

/// The streams, buckets and consumer of one cluster.
struct Layout {
    records: kv::Store,
    control: kv::Store,
    workers: kv::Store,
    files: object_store::ObjectStore,
    stream: stream::Stream,
    queue: consumer::PullConsumer,
}

impl Layout {
    /// Makes (or opens) every stream and bucket of `config`'s prefix.
    async fn open(js: &jetstream::Context, config: &ClusterConfig) -> Result<Self, ClusterError> {
        let p = &config.prefix;
        let ack_wait = Duration::from_secs_f64(config.ack_wait_s);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("{p}_JOBS"),
                subjects: vec![format!("{p}.jobs.run")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                // A submission published twice (a retry after a lost ack) is one message.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                ClusterError::new(
                    "opening the job stream (is JetStream on: `nats-server -js`?)",
                    e,
                )
            })?;
        let queue = stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    max_deliver: i64::from(config.max_deliver),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ClusterError::new("opening the workers' consumer", e))?;
        let records = bucket(js, format!("{p}_RECORDS"), Duration::ZERO).await?;
        let control = bucket(
            js,
            format!("{p}_CONTROL"),
            Duration::from_secs(7 * 24 * 3600),
        )
        .await?;
        // Reports of workers that vanished age out (the web nodes also drop stale ones).
        let ttl = Duration::from_secs_f64(config.worker_ttl_s * 6.0);
        let workers = bucket(js, format!("{p}_WORKERS"), ttl).await?;
        let files_name = format!("{p}_FILES");
        let files = match js.get_object_store(&files_name).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: files_name.clone(),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError::new(&format!("creating {files_name}"), e))?,
        };
        Ok(Self {
            records,
            control,
            workers,
            files,
            stream,
            queue,
        })
    }
}

/// Opens a KV bucket, making it when it does not exist (`max_age` zero: values never age out).
///
/// The bucket's stream is made here, by the KV conventions (`KV_<bucket>` on `$KV.<bucket>.>`,
/// one value per key, rollups, direct gets), rather than by `create_key_value`: that one first
/// reads the account's info in a shape NATS 2.9 (Debian's) does not send.
async fn bucket(
    js: &jetstream::Context,
    name: String,
    max_age: Duration,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::new(&format!("creating {name}"), e))?;
    js.get_key_value(&name)
        .await
        .map_err(|e| ClusterError::new(&format!("opening {name}"), e))
}

/// `<host>-<pid>`: unique among the processes of one machine.
fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Milliseconds since the Unix epoch (worker reports carry it; the web nodes judge staleness).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
