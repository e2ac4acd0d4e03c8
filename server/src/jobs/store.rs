//! The durable job store: one folder per job under `<data_dir>/jobs/<id>/` holding its inputs
//! (stored under generated names), its `job.json` record and, once done, `output.mp4`.
//!
//! Every write of `job.json` goes to a temporary file that is synced and then renamed over the
//! old one (and the folder is synced), so after a `kill -9` or a power cut each record is either
//! the old or the new version, never a torn one. A job is acknowledged (202) only after its inputs
//! and record are on disk; a folder without a record is a submission that never got its 202 and
//! is removed on start.

use std::io::Write;
use std::path::{Path, PathBuf};

use app::jobs::JobRecord;

/// The record's file name inside a job's folder.
pub const RECORD_FILE: &str = "job.json";
/// A job's history, a line per change of state (the old API's `POST /api/v1/tasks/{id}/logs`).
pub const TASK_LOG_FILE: &str = "task.log";

/// Errors of the store, each naming the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unreadable job record: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Prefix of a deleted job's folder until its files are removed.
const TRASH_PREFIX: &str = ".deleted-";

/// The folder of every job.
#[derive(Debug, Clone)]
pub struct JobStore {
    root: PathBuf,
}

impl JobStore {
    /// Opens (creating) `<data_dir>/jobs`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("jobs");
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        owner_only(&root).map_err(io(&root))?;
        let store = Self { root };
        store.remove_trash();
        Ok(store)
    }

    /// A job's folder. `id` is always one we generated (a UUID), checked by [`valid_id`].
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Creates the folder of a new job.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        owner_only(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Makes `files` of a job (and their names in its folder) durable: each is fsynced, then
    /// the folder. Called before a job is recorded as queued, for its inputs (the video is
    /// made durable where it is written, `model::media::finish_mp4`).
    pub fn make_durable(&self, id: &str, files: &[&str]) -> Result<(), StoreError> {
        let dir = self.dir(id);
        for name in files {
            let path = dir.join(name);
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
        sync_dir(&dir);
        Ok(())
    }

    /// Writes `job.json` atomically and durably.
    pub fn save(&self, job: &JobRecord) -> Result<(), StoreError> {
        let dir = self.dir(&job.id);
        let path = dir.join(RECORD_FILE);
        let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(job).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&text).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&dir);
        Ok(())
    }

    /// Every stored job, oldest first; folders without a record (never acknowledged) are
    /// removed, unreadable records are reported and left alone.
    pub fn load_all(&self) -> Result<(Vec<JobRecord>, Vec<StoreError>), StoreError> {
        let mut jobs = Vec::new();
        let mut problems = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let dir = entry.path();
            let Some(id) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !valid_id(id) || !dir.is_dir() {
                continue;
            }
            let path = dir.join(RECORD_FILE);
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<JobRecord>(&bytes) {
                    Ok(job) if job.id == id => jobs.push(job),
                    Ok(_) => problems.push(StoreError::Corrupt {
                        path,
                        message: "the id does not match its folder".into(),
                    }),
                    Err(e) => problems.push(StoreError::Corrupt {
                        path,
                        message: e.to_string(),
                    }),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::info!(dir = %dir.display(), "removing an unacknowledged submission");
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e) => problems.push(StoreError::Io { path, source: e }),
            }
        }
        jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok((jobs, problems))
    }

    /// Appends a line to the job's `task.log` (its history: every change of state with the
    /// message of the moment). Best effort: a job never fails for its log.
    pub fn append_log(&self, job: &JobRecord) {
        let path = self.dir(&job.id).join(TASK_LOG_FILE);
        let line = format!("{} {} {}\n", job.updated_at, job.state.name(), job.message);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not write the task log");
        }
    }

    /// The job's `task.log`, if it has one.
    pub fn read_log(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(id).join(TASK_LOG_FILE)).ok()
    }

    /// Moves a job's folder out of the store (one rename: the job is gone for a restart at
    /// once); returns where it went (None: there was no folder). The caller removes it.
    pub fn move_to_trash(&self, id: &str) -> Result<Option<PathBuf>, StoreError> {
        let dir = self.dir(id);
        let trash = self.root.join(format!("{TRASH_PREFIX}{id}"));
        match std::fs::rename(&dir, &trash) {
            Ok(()) => Ok(Some(trash)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                path: dir,
                source: e,
            }),
        }
    }

    /// Removes what deletions interrupted by a crash left behind.
    fn remove_trash(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TRASH_PREFIX)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Removes a job's folder.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io {
                path: dir,
                source: e,
            }),
        }
    }
}

/// Job ids are lowercase hyphenated UUIDs; anything else in a request is rejected before it
/// comes near the filesystem.
pub fn valid_id(id: &str) -> bool {
    id.len() == 36
        && id.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

/// Free bytes for an unprivileged user on the filesystem holding `path` (None where unknown).
pub fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a writable statvfs; the
        // struct is read only when the call reports success.
        let stat = unsafe {
            if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
                return None;
            }
            stat.assume_init()
        };
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Only the server's user may list or read a folder of uploads and videos (the files inside
/// inherit nothing, but nobody else can reach them).
fn owner_only(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Makes a rename inside `dir` durable (best effort: not every filesystem supports it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use app::jobs::{JobFiles, JobParams, JobProgress, JobState};

    pub(crate) fn record(id: &str, created_at: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            state: JobState::Queued,
            params: JobParams::default(),
            seed_used: None,
            created_at: created_at.into(),
            updated_at: created_at.into(),
            message: "Queued".into(),
            progress: JobProgress::default(),
            error: None,
            image_name: "me.png".into(),
            audio_name: "me.wav".into(),
            audio_seconds: 1.0,
            files: JobFiles::default(),
            attempts: 0,
            resumed_from_clip: None,
            timings: Vec::new(),
            made_with: None,
        }
    }

    #[test]
    fn job_folders_are_owner_only_and_a_deletion_leaves_nothing_after_a_restart() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = tempfile::tempdir().unwrap();
        let store = JobStore::open(scratch.path()).unwrap();
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let dir = store.create_dir(id).unwrap();
        for folder in [scratch.path().join("jobs"), dir.clone()] {
            let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", folder.display());
        }
        std::fs::write(dir.join("output.mp4"), b"video").unwrap();
        store.make_durable(id, &["output.mp4"]).unwrap();
        assert!(store.make_durable(id, &["missing.mp4"]).is_err());
        // A crash between the rename and the removal: the next open clears it.
        let trash = store.move_to_trash(id).unwrap().unwrap();
        assert!(!dir.exists() && trash.exists());
        JobStore::open(scratch.path()).unwrap();
        assert!(!trash.exists());
        assert_eq!(store.move_to_trash(id).unwrap(), None);
    }

    #[test]
    fn free_space_is_reported() {
        let free = free_bytes(Path::new("/")).unwrap();
        assert!(free > 0);
        assert_eq!(free_bytes(Path::new("/no/such/folder")), None);
    }

    #[test]
    fn ids_are_uuids_only() {
        assert!(valid_id("0f8fad5b-d9cb-469f-a165-70867728950e"));
        for bad in [
            "../etc/passwd",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b/d9cb-469f-a165-70867728950e",
            "",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_and_unacknowledged_folders_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = JobStore::open(tmp.path()).unwrap();
        let a = record(
            "00000000-0000-4000-8000-000000000002",
            "2026-01-01T00:00:02Z",
        );
        let b = record(
            "00000000-0000-4000-8000-000000000001",
            "2026-01-01T00:00:01Z",
        );
        for job in [&a, &b] {
            store.create_dir(&job.id).unwrap();
            store.save(job).unwrap();
        }
        let orphan = store
            .create_dir("00000000-0000-4000-8000-000000000003")
            .unwrap();
        std::fs::write(orphan.join("image.png"), b"x").unwrap();
        let broken = store
            .create_dir("00000000-0000-4000-8000-000000000004")
            .unwrap();
        std::fs::write(broken.join(RECORD_FILE), b"{\"id\":").unwrap();

        let (jobs, problems) = store.load_all().unwrap();
        assert_eq!(jobs, vec![b, a], "oldest first");
        assert!(!orphan.exists());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            broken.exists(),
            "a corrupt record is kept for a person to look at"
        );
    }
}
