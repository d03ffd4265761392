//! Where quarantine files live. The local folder implementation makes each file durable and
//! atomically visible; object storage can implement the same trait.

use crate::QuarantineError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A place that stores whole files atomically.
pub trait QuarantineStore: Send + Sync {
    /// Durably store `bytes` under the relative `name`; readers see all of it or nothing.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), QuarantineError>;
    /// Names (relative) of complete files under `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>, QuarantineError>;
    /// Remove leftovers of interrupted writes under `prefix`; returns how many.
    fn clean_partial(&self, prefix: &str) -> Result<usize, QuarantineError>;
}

/// Prefix marking temporary files; never matched by [`parse_file_name`].
const TMP_PREFIX: &str = ".tmp-";

/// Quarantine files in a local folder.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl QuarantineStore for LocalDirStore {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), QuarantineError> {
        let path = self.root.join(name);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| QuarantineError::io(dir.display(), e))?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{file_name}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(QuarantineError::io(path.display(), e));
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, QuarantineError> {
        let dir = self.root.join(prefix);
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(|e| QuarantineError::io(dir.display(), e))?;
                    if let Some(n) = e.file_name().to_str() {
                        if n.ends_with(".parquet") && !n.starts_with(TMP_PREFIX) {
                            out.push(format!("{prefix}/{n}"));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(QuarantineError::io(dir.display(), e)),
        }
        out.sort();
        Ok(out)
    }

    fn clean_partial(&self, prefix: &str) -> Result<usize, QuarantineError> {
        let dir = self.root.join(prefix);
        let mut n = 0;
        let Ok(entries) = fs::read_dir(&dir) else { return Ok(0) };
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|s| s.starts_with(TMP_PREFIX)) {
                fs::remove_file(e.path()).map_err(|err| QuarantineError::io(e.path().display(), err))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The folder (relative) holding one partition's files, Hive-style so query engines see
/// `topic` and `partition` as columns.
pub fn partition_prefix(topic: &str, partition: i32) -> String {
    format!("topic={topic}/partition={partition}")
}

/// Relative name of the file covering input offsets `first..=last`.
pub fn file_name(topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("{}/{first:020}-{last:020}.parquet", partition_prefix(topic, partition))
}

/// Parse `…/<first>-<last>.parquet` back into its offset range.
pub fn parse_file_name(name: &str) -> Option<(i64, i64)> {
    let base = name.rsplit('/').next()?;
    if base.starts_with(TMP_PREFIX) {
        return None;
    }
    let stem = base.strip_suffix(".parquet")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Highest input offset covered by complete files of a partition (-1 when none). Interrupted
/// writes are cleaned up first.
pub fn covered_until(store: &dyn QuarantineStore, topic: &str, partition: i32) -> Result<i64, QuarantineError> {
    let prefix = partition_prefix(topic, partition);
    store.clean_partial(&prefix)?;
    Ok(store
        .list(&prefix)?
        .iter()
        .filter_map(|n| parse_file_name(n))
        .map(|(_, last)| last)
        .max()
        .unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_offset() {
        let a = file_name("t.x", 3, 5, 99);
        let b = file_name("t.x", 3, 100, 1000);
        assert_eq!(parse_file_name(&a), Some((5, 99)));
        assert!(a < b);
        assert_eq!(parse_file_name("topic=t/partition=0/.tmp-1-0-1.parquet"), None);
    }

    #[test]
    fn put_is_atomic_and_covered_until_scans() -> Result<(), QuarantineError> {
        let dir = tempfile::tempdir().map_err(|e| QuarantineError::io("tmp", e))?;
        let store = LocalDirStore::new(dir.path());
        assert_eq!(covered_until(&store, "t", 0)?, -1);
        store.put(&file_name("t", 0, 0, 41), b"x")?;
        store.put(&file_name("t", 0, 42, 99), b"y")?;
        let stale = dir.path().join(partition_prefix("t", 0)).join(".tmp-7-junk.parquet");
        fs::write(&stale, b"partial").map_err(|e| QuarantineError::io("tmp", e))?;
        assert_eq!(covered_until(&store, "t", 0)?, 99);
        assert!(!stale.exists(), "partial write cleaned up");
        assert_eq!(store.list(&partition_prefix("t", 0))?.len(), 2);
        Ok(())
    }

    #[test]
    fn put_fails_cleanly_when_folder_is_a_file() {
        let dir = tempfile::tempdir().map_err(|e| QuarantineError::io("tmp", e));
        let Ok(dir) = dir else { return };
        let root = dir.path().join("q");
        let _ = fs::write(&root, b"not a folder");
        let store = LocalDirStore::new(&root);
        assert!(store.put(&file_name("t", 0, 0, 1), b"x").is_err());
    }
}
