//! Per-stage load durations of the last successful load, persisted in the cache folder
//! (`stage_timings.json`) and keyed by device, dtype and a fingerprint of the weights, so the
//! next start can say how long each stage should take (`expected_ms`, `eta_s`, `Retry-After`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use app::types::LoadStage;
use serde::{Deserialize, Serialize};

use crate::config::{ServerConfig, WeightsSource};

/// File name in the cache folder.
pub const TIMINGS_FILE: &str = "stage_timings.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TimingsFile {
    /// Key → the last successful load with that key.
    entries: BTreeMap<String, TimingsEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TimingsEntry {
    /// Stage name → milliseconds.
    stages_ms: BTreeMap<String, u64>,
    #[serde(default)]
    warmup_step_s: Option<f64>,
    recorded_at: String,
}

/// The timings store for one key.
#[derive(Debug, Clone)]
pub struct Timings {
    path: PathBuf,
    key: String,
}

impl Timings {
    pub fn new(cache_dir: &Path, key: String) -> Self {
        Self {
            path: cache_dir.join(TIMINGS_FILE),
            key,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The durations recorded for this key (empty when none or when the file is unreadable).
    pub fn expected(&self) -> HashMap<LoadStage, u64> {
        self.read()
            .entries
            .get(&self.key)
            .map(|e| {
                e.stages_ms
                    .iter()
                    .filter_map(|(name, ms)| Some((LoadStage::from_name(name)?, *ms)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a successful load's durations (atomically: write a temporary file, rename).
    pub fn save(
        &self,
        measured: &HashMap<LoadStage, u64>,
        warmup_step_s: Option<f64>,
        recorded_at: String,
    ) -> std::io::Result<()> {
        let mut file = self.read();
        file.entries.insert(
            self.key.clone(),
            TimingsEntry {
                stages_ms: measured
                    .iter()
                    .map(|(s, ms)| (s.name().to_string(), *ms))
                    .collect(),
                warmup_step_s,
                recorded_at,
            },
        );
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &self.path)
    }

    fn read(&self) -> TimingsFile {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// `device|dtype|fingerprint`: the fingerprint hashes the weights' identity (local folder and
/// the sizes of its files, or Hub repo and revision), the inference yaml's bytes and the set of
/// files read, so a change of any of them starts without expectations.
pub fn timings_key(config: &ServerConfig, device: &str, dtype: &str, files: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    match config.weights.source {
        WeightsSource::Local => {
            let root = config.weights.path.clone().unwrap_or_default();
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            h.update(b"local\0");
            h.update(root.to_string_lossy().as_bytes());
            for f in files {
                h.update(f.as_bytes());
                let len = std::fs::metadata(root.join(f)).map_or(u64::MAX, |m| m.len());
                h.update(&len.to_le_bytes());
            }
        }
        WeightsSource::Hub => {
            h.update(b"hub\0");
            h.update(config.weights.repo.as_bytes());
            h.update(b"@");
            h.update(config.weights.revision.as_bytes());
            h.update(config.weights.subfolder.as_bytes());
            for f in files {
                h.update(f.as_bytes());
            }
        }
    }
    h.update(&std::fs::read(&config.inference).unwrap_or_default());
    format!("{device}|{dtype}|{}", &h.finalize().to_hex()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_expected_round_trips_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Timings::new(dir.path(), "cpu|f32|aaaa".into());
        let b = Timings::new(dir.path(), "cuda:0|f16|aaaa".into());
        assert!(a.expected().is_empty());
        let measured: HashMap<LoadStage, u64> =
            [(LoadStage::Verify, 120), (LoadStage::Warmup, 3400)].into();
        a.save(&measured, Some(0.25), "now".into()).unwrap();
        assert_eq!(a.expected(), measured);
        assert!(
            b.expected().is_empty(),
            "another device has no expectations"
        );
        b.save(&[(LoadStage::Vae, 7)].into(), None, "now".into())
            .unwrap();
        assert_eq!(a.expected(), measured, "saving b keeps a");
        // A corrupt file means no expectations, not an error.
        std::fs::write(dir.path().join(TIMINGS_FILE), b"{not json").unwrap();
        assert!(a.expected().is_empty());
    }

    #[test]
    fn key_changes_with_device_and_revision() {
        let mut c = ServerConfig::default();
        let files = vec!["hallo2/net.pth".to_string()];
        let k1 = timings_key(&c, "cpu", "f32", &files);
        assert!(k1.starts_with("cpu|f32|"));
        assert_ne!(k1, timings_key(&c, "cuda:0", "f32", &files));
        c.weights.revision = "0123456789abcdef0123456789abcdef01234567".into();
        assert_ne!(k1, timings_key(&c, "cpu", "f32", &files));
    }
}
