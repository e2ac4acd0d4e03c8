//! Size limits for the on-disk caches (the `net.pth` conversions, the audio features): the
//! least recently used files go first until the folder fits; the most recently used one (the
//! entry in use) always stays. "Used" is the file's modification time, which a cache hit
//! refreshes ([`touch`]).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: Vec<PathBuf>,
    pub freed_bytes: u64,
    /// Bytes left in the folder's cache files.
    pub kept_bytes: u64,
}

/// Marks `path` as used now (its modification time), so pruning keeps it longest.
pub fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used files named `*.{extension}` directly in `dir` until they
/// take at most `limit_bytes`, never the most recently used one. A missing folder is empty.
pub fn prune(dir: &Path, extension: &str, limit_bytes: u64) -> Pruned {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Pruned::default();
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let meta = entry.metadata().ok()?;
            let ours = meta.is_file()
                && path.extension().is_some_and(|e| e == extension)
                && !entry.file_name().to_string_lossy().starts_with('.');
            ours.then(|| {
                (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                    path,
                )
            })
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    // The most recently used file (the entry in use) is never a candidate.
    files.pop();
    let mut pruned = Pruned::default();
    for (_, len, path) in files {
        if total <= limit_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            pruned.freed_bytes += len;
            pruned.removed.push(path);
        }
    }
    pruned.kept_bytes = total;
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(dir: &Path, name: &str, len: usize, age_s: u64) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_s);
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_one_in_use_stays() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = file(dir.path(), "a.safetensors", 100, 300);
        let older = file(dir.path(), "b.safetensors", 100, 200);
        let newest = file(dir.path(), "c.safetensors", 100, 100);
        let other = file(dir.path(), "notes.txt", 1000, 400);
        let partial = file(dir.path(), ".d.safetensors.tmp", 1000, 400);
        let pruned = prune(dir.path(), "safetensors", 250);
        assert_eq!(pruned.removed, vec![oldest.clone()]);
        assert_eq!((pruned.freed_bytes, pruned.kept_bytes), (100, 200));
        assert!(older.exists() && newest.exists() && other.exists() && partial.exists());

        // A hit makes a file the most recent: it stays even past the limit.
        touch(&older);
        let pruned = prune(dir.path(), "safetensors", 0);
        assert_eq!(pruned.removed, vec![newest]);
        assert_eq!(pruned.kept_bytes, 100);
        assert!(older.exists());
        assert_eq!(prune(&dir.path().join("none"), "x", 0), Pruned::default());
    }
}
