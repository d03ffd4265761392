//! Where quarantine files live. The local folder implementation makes each file durable and
//! atomically visible; object storage ([`crate::ObjectStoreQuarantine`]) implements the same
//! trait with conditional puts.

use crate::QuarantineError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A place that stores whole files atomically.
pub trait QuarantineStore: Send + Sync {
    /// Durably store `bytes` under the relative `name`; readers see all of it or nothing. A
    /// file is never replaced: when `name` exists, [`QuarantineError::Exists`] is returned and
    /// nothing changes.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), QuarantineError>;
    /// The bytes of a complete file.
    fn get(&self, name: &str) -> Result<Vec<u8>, QuarantineError>;
    /// [`QuarantineStore::get`] as [`bytes::Bytes`] (what the Parquet reader takes).
    fn get_bytes(&self, name: &str) -> Result<bytes::Bytes, QuarantineError> {
        self.get(name).map(bytes::Bytes::from)
    }
    /// Names (relative) of complete files directly under `prefix` (one partition's folder).
    fn list(&self, prefix: &str) -> Result<Vec<String>, QuarantineError>;
    /// Every complete quarantine file (relative name, size in bytes), sorted by name.
    fn list_all(&self) -> Result<Vec<(String, u64)>, QuarantineError>;
    /// Remove leftovers of interrupted writes under `prefix`; returns how many.
    fn clean_partial(&self, prefix: &str) -> Result<usize, QuarantineError>;
    /// Where the files are, for logs and messages (a folder or a URL).
    fn describe(&self) -> String;
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
            // A hard link publishes the whole file atomically and, unlike rename, never
            // replaces an existing one.
            fs::hard_link(&tmp, &path)?;
            fs::remove_file(&tmp)?;
            File::open(&dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(QuarantineError::Exists(name.to_owned()));
            }
            return Err(QuarantineError::io(path.display(), e));
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, QuarantineError> {
        let path = self.root.join(name);
        fs::read(&path).map_err(|e| QuarantineError::io(path.display(), e))
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

    fn list_all(&self) -> Result<Vec<(String, u64)>, QuarantineError> {
        let mut out = Vec::new();
        let topics = match fs::read_dir(&self.root) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(QuarantineError::io(self.root.display(), e)),
        };
        for t in topics.flatten() {
            let tname = t.file_name().to_string_lossy().into_owned();
            if !tname.starts_with("topic=") {
                continue;
            }
            let parts = fs::read_dir(t.path()).map_err(|e| QuarantineError::io(t.path().display(), e))?;
            for p in parts.flatten() {
                let pname = p.file_name().to_string_lossy().into_owned();
                if !pname.starts_with("partition=") {
                    continue;
                }
                let files = fs::read_dir(p.path()).map_err(|e| QuarantineError::io(p.path().display(), e))?;
                for f in files.flatten() {
                    let fname = f.file_name().to_string_lossy().into_owned();
                    let name = format!("{tname}/{pname}/{fname}");
                    if parse_file_name(&name).is_none() {
                        continue;
                    }
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push((name, size));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
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

/// The `n`-th alternative name for a range whose plain name is taken (a replay whose verdicts
/// changed writes its new rows beside the earlier file, never over it).
pub fn file_name_alt(topic: &str, partition: i32, first: i64, last: i64, n: u32) -> String {
    if n == 0 {
        return file_name(topic, partition, first, last);
    }
    format!(
        "{}/{first:020}-{last:020}.{n}.parquet",
        partition_prefix(topic, partition)
    )
}

/// Parse `…/<first>-<last>[.<n>].parquet` back into its offset range.
pub fn parse_file_name(name: &str) -> Option<(i64, i64)> {
    let base = name.rsplit('/').next()?;
    if base.starts_with(TMP_PREFIX) {
        return None;
    }
    let stem = base.strip_suffix(".parquet")?;
    let (a, b) = stem.split_once('-')?;
    let b = match b.split_once('.') {
        Some((b, n)) if n.parse::<u32>().is_ok() => b,
        Some(_) => return None,
        None => b,
    };
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What [`stored_offsets`] found.
#[derive(Debug, Default)]
pub struct Stored {
    /// Offsets held by complete files of the partition.
    pub offsets: std::collections::HashSet<i64>,
    /// Files read.
    pub files: usize,
    /// Files that could not be read as quarantine files (foreign or damaged), with why; they
    /// are skipped, never fatal.
    pub skipped: Vec<(String, String)>,
}

/// The exact input offsets already stored in complete files of a partition whose range ends
/// at or after `from` (the first offset this owner will judge). Interrupted writes are cleaned
/// up first. Unreadable files are listed in [`Stored::skipped`], not fatal: their rows may be
/// written again (a duplicate), never lost.
pub fn stored_offsets(
    store: &dyn QuarantineStore,
    topic: &str,
    partition: i32,
    from: i64,
) -> Result<Stored, QuarantineError> {
    let prefix = partition_prefix(topic, partition);
    store.clean_partial(&prefix)?;
    let mut out = Stored::default();
    for name in store.list(&prefix)? {
        let Some((_, last)) = parse_file_name(&name) else {
            continue;
        };
        if last < from {
            continue;
        }
        let bytes = store.get_bytes(&name)?;
        match crate::read::offsets_in(bytes) {
            Ok(offsets) => {
                out.offsets.extend(offsets);
                out.files += 1;
            }
            Err(e) => out.skipped.push((name, e.to_string())),
        }
    }
    Ok(out)
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
    fn put_never_replaces_and_alternative_names_parse() -> Result<(), QuarantineError> {
        let dir = tempfile::tempdir().map_err(|e| QuarantineError::io("tmp", e))?;
        let store = LocalDirStore::new(dir.path());
        let name = file_name("t", 0, 0, 41);
        store.put(&name, b"x")?;
        assert!(matches!(store.put(&name, b"y"), Err(QuarantineError::Exists(_))));
        assert_eq!(store.get(&name)?, b"x");
        let alt = file_name_alt("t", 0, 0, 41, 1);
        store.put(&alt, b"y")?;
        assert_eq!(parse_file_name(&alt), Some((0, 41)));
        assert_eq!(parse_file_name("topic=t/partition=0/1-2.x.parquet"), None);
        let stale = dir.path().join(partition_prefix("t", 0)).join(".tmp-7-junk.parquet");
        fs::write(&stale, b"partial").map_err(|e| QuarantineError::io("tmp", e))?;
        let stored = stored_offsets(&store, "t", 0, 0)?;
        assert!(!stale.exists(), "partial write cleaned up");
        assert_eq!(stored.skipped.len(), 2, "not Parquet: skipped, not fatal");
        assert!(stored.offsets.is_empty());
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
