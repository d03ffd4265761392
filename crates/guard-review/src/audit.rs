//! The audit log: every review decision, one JSON object per line, appended and fsynced before
//! the decision is acknowledged. It is the review state too: replaying it at start gives each
//! record's latest decision and its release, so decisions survive restarts and a record is
//! never released twice.

use crate::index::RecordKey;
use crate::ReviewError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a reviewer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The record is poison: it stays quarantined.
    ConfirmedPoison,
    /// The record was held wrongly (it is not released by this alone).
    FalsePositive,
    /// A release began: the record is being produced to the clean topic.
    ReleaseStarted,
    /// The clean topic acknowledged the released record.
    Released,
    /// Producing the released record failed; it may or may not have been written.
    ReleaseFailed,
    /// A blocked source was released (`block` names the block; `record` is the record that
    /// tripped it).
    SourceReleased,
}

/// Where a released record landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landed {
    /// Clean topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When (ms since epoch).
    pub at_ms: i64,
    /// Reviewer.
    pub reviewer: String,
    /// What.
    pub action: Action,
    /// Which record.
    pub record: RecordKey,
    /// Why (the reviewer's note).
    #[serde(default)]
    pub note: String,
    /// The record's reason codes when decided.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Its anomaly score when decided.
    #[serde(default)]
    pub anomaly_score: Option<f32>,
    /// Its label score when decided.
    #[serde(default)]
    pub label_score: Option<f32>,
    /// Where the released record landed (`released`).
    #[serde(default)]
    pub landed: Option<Landed>,
    /// The clean topic's end offsets when a release began (`release_started`), to look for
    /// the record there if the guard stopped before `released` was written.
    #[serde(default)]
    pub watermarks: Vec<(i32, i64)>,
    /// The failure (`release_failed`).
    #[serde(default)]
    pub error: Option<String>,
    /// The released block (`source_released`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<guard_core::BlockedSource>,
}

/// The review state of one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecordState {
    /// Latest verdict: `confirmed_poison` or `false_positive`.
    pub verdict: Option<Action>,
    /// Where it was released to, once released.
    pub landed: Option<Landed>,
    /// A release began (or failed) and did not finish: the watermarks of its start.
    pub pending_release: Option<Vec<(i32, i64)>>,
}

impl RecordState {
    /// The state name the explorer filters on.
    pub fn name(&self) -> &'static str {
        if self.landed.is_some() {
            "released"
        } else {
            match self.verdict {
                Some(Action::ConfirmedPoison) => "confirmed_poison",
                Some(Action::FalsePositive) => "false_positive",
                _ => "undecided",
            }
        }
    }
}

struct Inner {
    file: File,
    entries: Vec<AuditEntry>,
    state: HashMap<RecordKey, RecordState>,
    /// Bytes of the file applied so far (other processes may append after it).
    pos: u64,
}

/// The append-only audit log. Several processes may share it (a shared quarantine folder):
/// every append and every release holds an exclusive lock on `audit.lock` beside it and first
/// applies what the others appended.
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
    lock_file: File,
    exclusive: Mutex<()>,
}

/// Holds the audit log's exclusive lock (this process and every other); see [`AuditLog::exclusive`].
pub struct Exclusive<'a> {
    file: &'a File,
    _in_process: std::sync::MutexGuard<'a, ()>,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn apply(state: &mut HashMap<RecordKey, RecordState>, e: &AuditEntry) {
    if e.action == Action::SourceReleased {
        return; // not a record decision
    }
    let s = state.entry(e.record.clone()).or_default();
    match e.action {
        Action::ConfirmedPoison | Action::FalsePositive => s.verdict = Some(e.action),
        Action::ReleaseStarted => {
            if s.landed.is_none() {
                s.pending_release = Some(e.watermarks.clone());
            }
        }
        Action::ReleaseFailed | Action::SourceReleased => {}
        Action::Released => {
            s.landed = e.landed.clone();
            s.pending_release = None;
            // A released record was judged a false positive.
            s.verdict = Some(Action::FalsePositive);
        }
    }
}

impl AuditLog {
    /// Open (or create) `dir/audit.jsonl` and replay it. A torn last line (a crash while
    /// appending) is cut off; a damaged line elsewhere is an error.
    pub fn open(dir: &Path) -> Result<Self, ReviewError> {
        std::fs::create_dir_all(dir).map_err(|e| ReviewError::io(dir, e))?;
        let path = dir.join("audit.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| ReviewError::io(&path, e))?;
        let mut entries = Vec::new();
        let mut state = HashMap::new();
        let mut good_len = 0u64;
        {
            let mut reader = BufReader::new(&file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| ReviewError::io(&path, e))?;
                if n == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    break; // a torn tail: cut below
                }
                let e: AuditEntry = serde_json::from_slice(&line).map_err(|err| {
                    ReviewError::Audit(format!("{} line {}: {err}", path.display(), entries.len() + 1))
                })?;
                apply(&mut state, &e);
                entries.push(e);
                good_len += n as u64;
            }
        }
        let len = file.metadata().map_err(|e| ReviewError::io(&path, e))?.len();
        if len > good_len {
            tracing::warn!(path = %path.display(), cut = len - good_len, "audit log: cutting a torn last line");
            file.set_len(good_len).map_err(|e| ReviewError::io(&path, e))?;
            file.sync_all().map_err(|e| ReviewError::io(&path, e))?;
            file.seek(std::io::SeekFrom::End(0))
                .map_err(|e| ReviewError::io(&path, e))?;
        }
        let lock_path = dir.join("audit.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ReviewError::io(&lock_path, e))?;
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                file,
                entries,
                state,
                pos: good_len,
            }),
            lock_file,
            exclusive: Mutex::new(()),
        })
    }

    /// Take the exclusive lock (waits for other holders, in this process or another).
    pub fn exclusive(&self) -> Result<Exclusive<'_>, ReviewError> {
        let in_process = self.exclusive.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.lock_file.lock().map_err(|e| ReviewError::io(&self.path, e))?;
        Ok(Exclusive {
            file: &self.lock_file,
            _in_process: in_process,
        })
    }

    /// Apply what other processes appended since we last looked (complete lines only).
    fn catch_up(&self, g: &mut Inner) -> Result<(), ReviewError> {
        use std::os::unix::fs::FileExt;
        let len = g.file.metadata().map_err(|e| ReviewError::io(&self.path, e))?.len();
        if len <= g.pos {
            return Ok(());
        }
        let mut buf = vec![0u8; usize::try_from(len - g.pos).map_err(|_| ReviewError::Audit("log too large".into()))?];
        g.file
            .read_exact_at(&mut buf, g.pos)
            .map_err(|e| ReviewError::io(&self.path, e))?;
        let mut used = 0usize;
        for line in buf.split_inclusive(|b| *b == b'\n') {
            if line.last() != Some(&b'\n') {
                break;
            }
            let e: AuditEntry = serde_json::from_slice(line)
                .map_err(|err| ReviewError::Audit(format!("{}: an appended line: {err}", self.path.display())))?;
            apply(&mut g.state, &e);
            g.entries.push(e);
            used += line.len();
        }
        g.pos += used as u64;
        Ok(())
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Append `entry` (its `seq` is assigned) and fsync it; only then is it part of the state.
    pub fn append(&self, entry: AuditEntry) -> Result<AuditEntry, ReviewError> {
        let held = self.exclusive()?;
        self.append_held(&held, entry)
    }

    /// [`AuditLog::append`] while the caller holds the exclusive lock.
    pub fn append_held(&self, _held: &Exclusive<'_>, mut entry: AuditEntry) -> Result<AuditEntry, ReviewError> {
        let mut g = self.lock();
        self.catch_up(&mut g)?;
        entry.seq = g.entries.last().map_or(1, |e| e.seq + 1);
        let mut line = serde_json::to_vec(&entry).map_err(|e| ReviewError::Audit(e.to_string()))?;
        line.push(b'\n');
        g.file.write_all(&line).map_err(|e| ReviewError::io(&self.path, e))?;
        g.file.sync_data().map_err(|e| ReviewError::io(&self.path, e))?;
        g.pos += line.len() as u64;
        apply(&mut g.state, &entry);
        g.entries.push(entry.clone());
        Ok(entry)
    }

    /// The state of a record, with what other processes appended applied first.
    pub fn state(&self, key: &RecordKey) -> RecordState {
        self.current().state.get(key).cloned().unwrap_or_default()
    }

    /// Run `f` over every record's state.
    pub fn with_states<R>(&self, f: impl FnOnce(&HashMap<RecordKey, RecordState>) -> R) -> R {
        f(&self.current().state)
    }

    /// The state with other processes' appends applied (a failure to read them is logged).
    fn current(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut g = self.lock();
        if let Err(e) = self.catch_up(&mut g) {
            tracing::warn!(error = %e, "audit log: reading other processes' entries");
        }
        g
    }

    /// Entries, newest first, optionally for one record or one reviewer.
    pub fn page(
        &self,
        record: Option<&RecordKey>,
        reviewer: Option<&str>,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<AuditEntry>) {
        let g = self.current();
        let matching: Vec<&AuditEntry> = g
            .entries
            .iter()
            .rev()
            .filter(|e| record.is_none_or(|r| &e.record == r) && reviewer.is_none_or(|r| e.reviewer == r))
            .collect();
        let total = matching.len();
        (total, matching.into_iter().skip(skip).take(take).cloned().collect())
    }

    /// The audited release of source block `id`, if any (scanned in place, newest first).
    pub fn source_release(&self, id: &str) -> Option<guard_core::BlockedSource> {
        let g = self.current();
        g.entries
            .iter()
            .rev()
            .filter(|e| e.action == Action::SourceReleased)
            .find_map(|e| e.block.as_ref().filter(|b| b.id == id).cloned())
    }

    /// Every entry (for feedback).
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.current().entries.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(action: Action, offset: i64) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_ms: 1,
            reviewer: "alice".into(),
            action,
            record: RecordKey {
                topic: "t".into(),
                partition: 0,
                offset,
            },
            note: "n".into(),
            reasons: vec!["score.anomaly".into()],
            anomaly_score: Some(2.0),
            label_score: None,
            landed: None,
            watermarks: vec![],
            error: None,
            block: None,
        }
    }

    #[test]
    fn state_survives_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path()).unwrap();
            log.append(entry(Action::FalsePositive, 1)).unwrap();
            log.append(entry(Action::ConfirmedPoison, 2)).unwrap();
            log.append(entry(Action::ReleaseStarted, 1)).unwrap();
            let mut done = entry(Action::Released, 1);
            done.landed = Some(Landed {
                topic: "clean".into(),
                partition: 0,
                offset: 9,
            });
            log.append(done).unwrap();
            log.append(entry(Action::ReleaseStarted, 3)).unwrap();
        }
        // A crash in the middle of an append.
        let path = dir.path().join("audit.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":6,\"at_ms\":").unwrap();
        drop(f);
        let log = AuditLog::open(dir.path()).unwrap();
        let k = |o| RecordKey {
            topic: "t".into(),
            partition: 0,
            offset: o,
        };
        assert_eq!(log.state(&k(1)).name(), "released");
        assert_eq!(log.state(&k(2)).name(), "confirmed_poison");
        assert_eq!(log.state(&k(3)).pending_release, Some(vec![]));
        assert_eq!(log.state(&k(4)).name(), "undecided");
        let next = log.append(entry(Action::FalsePositive, 4)).unwrap();
        assert_eq!(next.seq, 6, "the torn line was cut and numbering continues");
        let (total, newest) = log.page(None, None, 0, 2);
        assert_eq!((total, newest[0].seq, newest[1].seq), (6, 6, 5));
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit.jsonl"), "not json\n{}\n").unwrap();
        assert!(matches!(AuditLog::open(dir.path()), Err(ReviewError::Audit(_))));
    }
}
