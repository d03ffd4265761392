//! Quarantine review: reviewers see why each record was held, decide, and put false positives
//! back into the stream without losing or duplicating anything.
//!
//! * [`index`]: the in-memory index of the quarantine files (filter columns only), queried by
//!   the explorer; a record's full row is read from its file by row selection.
//! * [`audit`]: the append-only, fsynced audit log, which is also the review state.
//! * [`auth`]: reviewers, sessions and CSRF tokens.
//! * [`Review::release`]: produces the original record (key, headers, payload) to the clean
//!   topic exactly once per record: one release at a time, the audit log says whether it is
//!   done, and a release interrupted between producing and logging is looked for in the clean
//!   topic (from the end offsets logged when it began) before it is produced again.
//! * [`http`]: the dashboard's pages and JSON API.

pub mod audit;
pub mod auth;
pub mod export;
pub mod http;
pub mod index;

use audit::{Action, AuditEntry, AuditLog, Landed};
use auth::Auth;
use guard_quarantine::RawRecord;
use index::{Index, RecordKey};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Errors of the review service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// Filesystem failure.
    #[error("review i/o error on {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A quarantine file could not be read.
    #[error(transparent)]
    Quarantine(#[from] guard_quarantine::QuarantineError),
    /// The audit log is damaged or could not be written.
    #[error("audit log: {0}")]
    Audit(String),
    /// The index is full.
    #[error("the review index is full")]
    Full,
    /// No such record in the quarantine.
    #[error("no quarantined record {0}")]
    NotFound(String),
    /// The request cannot be carried out (read-only, truncated payload, no clean topic...).
    #[error("{0}")]
    Refused(String),
    /// Producing to the clean topic failed.
    #[error("release failed: {0}")]
    Publish(String),
}

impl ReviewError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Produces released records to the clean topic (the binary implements it with the Kafka
/// producer). Blocking; called off the async workers.
pub trait Publisher: Send + Sync {
    /// The topic's end offsets per partition now.
    fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, String>;
    /// Produce `record` to `topic` with `extra` headers added, and wait for the broker's
    /// acknowledgement: where it landed.
    fn publish(&self, topic: &str, record: &RawRecord, extra: &[(String, String)]) -> Result<(i32, i64), String>;
    /// Look in `topic` from `since` (end offsets logged before a release) to the end for a
    /// record whose `header` equals `value`: where it is.
    fn find(&self, topic: &str, since: &[(i32, i64)], header: &str, value: &str) -> Result<Option<(i32, i64)>, String>;
}

/// Header naming the released record's quarantine identity (`topic/partition/offset`).
pub const RELEASE_ID_HEADER: &str = "x-guard-release-id";
/// Header naming the reviewer who released it.
pub const RELEASED_BY_HEADER: &str = "x-guard-released-by";
/// Header with the release time (RFC 3339 is not needed by consumers: ms since epoch).
pub const RELEASED_AT_HEADER: &str = "x-guard-released-at-ms";

/// Live facts of a running guard the dashboard shows (absent in `serve`).
#[derive(Clone, Default)]
pub struct Live {
    /// `/api/stats`-style drift statistics (`local` scope).
    pub stats: Option<Arc<dyn Fn() -> guard_core::StatsReport + Send + Sync>>,
    /// Facts: mode, scoring provider, version...
    pub facts: serde_json::Map<String, serde_json::Value>,
    /// Records in, passed and quarantined per reason so far (the pipeline's counters).
    pub counters: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    /// Drift test values of recent windows, per topic and feature, over time.
    pub history: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    /// The pipeline's counters sampled over time (`[{at_ms, counters}]`).
    pub counter_history: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    /// A record's numeric features against its topic's baseline (topic, decoded payload).
    pub features_of: Option<FeaturesOf>,
    /// The guard's blocked sources, to show and release.
    pub blocks: Option<Arc<dyn guard_core::SourceBlocks>>,
}

/// See [`Live::features_of`].
pub type FeaturesOf = Arc<dyn Fn(&str, &serde_json::Value) -> Option<serde_json::Value> + Send + Sync>;

/// Settings of the review service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the quarantine files are (a folder or a URL), for messages; the files are read
    /// through the store given to [`Review::open`].
    pub quarantine: String,
    /// Audit log folder.
    pub audit_dir: PathBuf,
    /// Refuse decisions and releases.
    pub read_only: bool,
    /// Clean topic for releases (`None`: release is refused).
    pub release_topic: Option<String>,
    /// Header naming sources in files without a `source` column.
    pub source_header: Option<String>,
    /// Index capacity in rows.
    pub max_indexed_rows: usize,
    /// Header added to released records with their provenance, like the clean sink's.
    pub provenance_header: Option<String>,
}

/// The outcome of a release.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Released {
    /// Where the record is in the clean topic.
    pub landed: Landed,
    /// It had been released before (this request produced nothing).
    pub already: bool,
}

/// The outcome of a source release.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceReleased {
    /// The block released.
    pub block: guard_core::BlockedSource,
    /// It had been released before (this request wrote no audit line).
    pub already: bool,
}

/// The review service.
pub struct Review {
    settings: Settings,
    store: Arc<dyn guard_quarantine::QuarantineStore>,
    index: RwLock<Index>,
    audit: AuditLog,
    auth: Auth,
    publisher: Option<Arc<dyn Publisher>>,
    live: Live,
}

impl std::fmt::Debug for Review {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Review")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Review counts per reason code (or model) and the share of false positives.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Rates {
    /// Records reviewed (latest verdict counts).
    pub reviewed: u64,
    /// Judged false positives (released counts as false positive).
    pub false_positive: u64,
    /// Confirmed poison.
    pub confirmed_poison: u64,
    /// `false_positive / reviewed`.
    pub false_positive_rate: f64,
}

/// A threshold suggestion for one score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suggestion {
    /// `anomaly` or `label`.
    pub score: &'static str,
    /// Reviewed records that carried this score.
    pub reviewed: usize,
    /// The lowest threshold at which at most `target` of the reviewed records at or above
    /// it were false positives (`None`: no threshold reaches it).
    pub threshold: Option<f32>,
    /// Reviewed records at or above it that were confirmed poison (still caught).
    pub poison_kept: usize,
    /// Reviewed false positives at or above it (still held).
    pub false_positives_kept: usize,
}

impl Review {
    /// Open the audit log and index the quarantine files in `store`.
    pub fn open(
        settings: Settings,
        store: Arc<dyn guard_quarantine::QuarantineStore>,
        auth: Auth,
        publisher: Option<Arc<dyn Publisher>>,
        live: Live,
    ) -> Result<Self, ReviewError> {
        let audit = AuditLog::open(&settings.audit_dir)?;
        let mut index = Index::new(settings.source_header.clone(), settings.max_indexed_rows);
        let n = index.refresh(store.as_ref())?;
        tracing::info!(rows = n, files = index.files().len(), quarantine = %settings.quarantine, "review index built");
        Ok(Self {
            settings,
            store,
            index: RwLock::new(index),
            audit,
            auth,
            publisher,
            live,
        })
    }

    /// Where the quarantine files are read from.
    pub fn store(&self) -> &dyn guard_quarantine::QuarantineStore {
        self.store.as_ref()
    }

    /// Settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Credentials.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Live facts.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Read access to the index.
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pick up new quarantine files. The folder is listed without the index lock, and the
    /// write lock is taken one file at a time, so queries are not held up by a big catch-up.
    pub fn refresh(&self) -> Result<usize, ReviewError> {
        self.reconcile_blocks();
        let listed = guard_quarantine::list_files(self.store.as_ref())?;
        let write = || self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        {
            let mut w = write();
            if w.stale(&listed) {
                w.reset();
            }
            w.start_pass();
        }
        let mut added = 0;
        for f in &listed {
            if self.index().wants(f) {
                added += write().add_listed(self.store.as_ref(), f);
            }
        }
        Ok(added)
    }

    /// Release block `id` of `source` on `topic`, exactly once: one `source_released` audit
    /// line (fsynced) per block, then the running guard lifts it and tells the other instances
    /// through the blocks topic. A second request for the same block writes nothing and
    /// answers `already`; a block whose release is audited but still in force (the guard
    /// stopped between the two, or read the block back) is lifted again, still without a line.
    pub fn release_source(
        &self,
        who: &str,
        topic: &str,
        source: &str,
        id: &str,
        note: &str,
    ) -> Result<SourceReleased, ReviewError> {
        if self.settings.read_only {
            return Err(ReviewError::Refused("the review service is read-only".into()));
        }
        let Some(blocks) = &self.live.blocks else {
            return Err(ReviewError::Refused(
                "blocked sources are released through a running guard (run)".into(),
            ));
        };
        let held = self.audit.exclusive()?;
        let audited = self.audit.source_release(id);
        let current = blocks
            .blocked()
            .into_iter()
            .find(|b| b.topic == topic && b.source == source && b.id == id);
        match (current, audited) {
            (None, Some(block)) => Ok(SourceReleased { block, already: true }),
            (None, None) => Err(ReviewError::NotFound(format!(
                "block {id} of source {source} on {topic}"
            ))),
            (Some(block), Some(_)) => {
                blocks.release(topic, source, id, who);
                Ok(SourceReleased { block, already: true })
            }
            (Some(block), None) => {
                let key = RecordKey {
                    topic: block.topic.clone(),
                    partition: block.partition,
                    offset: block.offset,
                };
                let mut e = self.entry_for(who, Action::SourceReleased, &key, note);
                e.block = Some(block.clone());
                self.audit.append_held(&held, e)?;
                blocks.release(topic, source, id, who);
                metrics::counter!("guard_review_source_releases_total").increment(1);
                Ok(SourceReleased { block, already: false })
            }
        }
    }

    /// Lift blocks whose release is audited but which are in force again (the guard stopped
    /// between the audit line and the lift, or read the block back from the blocks topic).
    pub fn reconcile_blocks(&self) {
        let Some(blocks) = &self.live.blocks else { return };
        for b in blocks.blocked() {
            if let Some(r) = self.audit.source_release(&b.id) {
                tracing::info!(topic = %b.topic, source = %b.source, id = %b.id, "lifting a block whose release is audited");
                blocks.release(&r.topic, &r.source, &r.id, "audit-log");
            }
        }
    }

    /// The full stored row of a record.
    pub fn record(&self, key: &RecordKey) -> Result<guard_quarantine::StoredRow, ReviewError> {
        let (name, row) = self.locate(key)?;
        guard_quarantine::read_rows_at(&self.store.get_bytes(&name)?, &[row])?
            .into_iter()
            .next()
            .ok_or_else(|| ReviewError::NotFound(key.to_string()))
    }

    fn locate(&self, key: &RecordKey) -> Result<(String, usize), ReviewError> {
        let idx = self.index();
        let e = idx.find(key).ok_or_else(|| ReviewError::NotFound(key.to_string()))?;
        let name = idx.file_name(e).ok_or_else(|| ReviewError::NotFound(key.to_string()))?;
        Ok((name.to_owned(), e.row as usize))
    }

    fn entry_for(&self, who: &str, action: Action, key: &RecordKey, note: &str) -> AuditEntry {
        let idx = self.index();
        let (reasons, anomaly, label) = idx.find(key).map_or((Vec::new(), None, None), |e| {
            (
                idx.reason_codes(e).into_iter().map(str::to_owned).collect(),
                (!e.anomaly.is_nan()).then_some(e.anomaly),
                (!e.label.is_nan()).then_some(e.label),
            )
        });
        AuditEntry {
            seq: 0,
            at_ms: now_ms(),
            reviewer: who.to_owned(),
            action,
            record: key.clone(),
            note: note.chars().take(2000).collect(),
            reasons,
            anomaly_score: anomaly,
            label_score: label,
            landed: None,
            watermarks: Vec::new(),
            error: None,
            block: None,
        }
    }

    /// Record a verdict (`confirmed_poison` or `false_positive`).
    pub fn decide(&self, who: &str, key: &RecordKey, action: Action, note: &str) -> Result<AuditEntry, ReviewError> {
        if self.settings.read_only {
            return Err(ReviewError::Refused("the review service is read-only".into()));
        }
        if !matches!(action, Action::ConfirmedPoison | Action::FalsePositive) {
            return Err(ReviewError::Refused(
                "a decision is confirmed_poison or false_positive".into(),
            ));
        }
        self.locate(key)?;
        let e = self.audit.append(self.entry_for(who, action, key, note))?;
        let label = match action {
            Action::ConfirmedPoison => "confirmed_poison",
            _ => "false_positive",
        };
        metrics::counter!("guard_review_decisions_total", "decision" => label).increment(1);
        self.export_feedback_metrics();
        Ok(e)
    }

    /// Release a record to the clean topic, exactly once (see the crate docs).
    pub fn release(&self, who: &str, key: &RecordKey, note: &str) -> Result<Released, ReviewError> {
        if self.settings.read_only {
            return Err(ReviewError::Refused("the review service is read-only".into()));
        }
        let (Some(topic), Some(publisher)) = (&self.settings.release_topic, &self.publisher) else {
            return Err(ReviewError::Refused(
                "release needs a clean topic and a broker (run, or serve --config)".into(),
            ));
        };
        // One release at a time, across every process sharing this audit log.
        let held = self.audit.exclusive()?;
        let state = self.audit.state(key);
        if let Some(landed) = state.landed {
            metrics::counter!("guard_review_releases_total", "outcome" => "already").increment(1);
            return Ok(Released { landed, already: true });
        }
        let release_id = key.to_string();
        if let Some(since) = &state.pending_release {
            // Interrupted before: is it in the clean topic already?
            match publisher.find(topic, since, RELEASE_ID_HEADER, &release_id) {
                Ok(Some((partition, offset))) => {
                    let landed = Landed {
                        topic: topic.clone(),
                        partition,
                        offset,
                    };
                    let mut e = self.entry_for(
                        who,
                        Action::Released,
                        key,
                        "found in the clean topic after an interrupted release",
                    );
                    e.landed = Some(landed.clone());
                    self.audit.append_held(&held, e)?;
                    metrics::counter!("guard_review_releases_total", "outcome" => "recovered").increment(1);
                    return Ok(Released { landed, already: true });
                }
                Ok(None) => {}
                Err(err) => return Err(ReviewError::Publish(format!("checking an interrupted release: {err}"))),
            }
        }
        let (name, row) = self.locate(key)?;
        let mut raw = guard_quarantine::read_raw_at(&self.store.get_bytes(&name)?, row)?;
        if raw.truncated {
            return Err(ReviewError::Refused(
                "only a prefix of this payload was kept (it was over limits.max_bytes): it cannot be released".into(),
            ));
        }
        if raw.envelope_cut {
            return Err(ReviewError::Refused(
                "only part of this record's key or headers was kept (over an envelope limit, or a header key that is not UTF-8): it cannot be released".into(),
            ));
        }
        // Inbound x-guard-* headers (and the provenance header) are the producer's forgeries:
        // only the release headers below speak for the guard.
        let provenance = self.settings.provenance_header.as_deref();
        raw.headers
            .retain(|h| !guard_core::is_guard_header(&h.key) && Some(h.key.as_str()) != provenance);
        let watermarks = publisher.end_offsets(topic).map_err(ReviewError::Publish)?;
        let mut started = self.entry_for(who, Action::ReleaseStarted, key, note);
        started.watermarks = watermarks;
        self.audit.append_held(&held, started)?;
        let mut extra = vec![
            (RELEASE_ID_HEADER.to_owned(), release_id.clone()),
            (RELEASED_BY_HEADER.to_owned(), who.to_owned()),
            (RELEASED_AT_HEADER.to_owned(), now_ms().to_string()),
        ];
        if let Some(h) = &self.settings.provenance_header {
            extra.push((h.clone(), release_id.clone()));
        }
        match publisher.publish(topic, &raw, &extra) {
            Ok((partition, offset)) => {
                let landed = Landed {
                    topic: topic.clone(),
                    partition,
                    offset,
                };
                let mut e = self.entry_for(who, Action::Released, key, note);
                e.landed = Some(landed.clone());
                self.audit.append_held(&held, e)?;
                metrics::counter!("guard_review_releases_total", "outcome" => "released").increment(1);
                self.export_feedback_metrics();
                Ok(Released { landed, already: false })
            }
            Err(err) => {
                let mut e = self.entry_for(who, Action::ReleaseFailed, key, note);
                e.error = Some(err.clone());
                self.audit.append_held(&held, e)?;
                metrics::counter!("guard_review_releases_total", "outcome" => "failed").increment(1);
                Err(ReviewError::Publish(err))
            }
        }
    }

    /// False-positive rates per reason code and per model, from the latest verdicts.
    pub fn feedback(&self) -> (BTreeMap<String, Rates>, BTreeMap<String, Rates>) {
        let mut by_reason: BTreeMap<String, Rates> = BTreeMap::new();
        let mut by_model: BTreeMap<String, Rates> = BTreeMap::new();
        let latest = self.latest_verdicts();
        for (fp, e) in latest.values() {
            let bump = |r: &mut Rates| {
                r.reviewed += 1;
                if *fp {
                    r.false_positive += 1;
                } else {
                    r.confirmed_poison += 1;
                }
            };
            for code in &e.reasons {
                bump(by_reason.entry(code.clone()).or_default());
            }
            if e.anomaly_score.is_some() {
                bump(by_model.entry(format!("{}:anomaly", e.record.topic)).or_default());
            }
            if e.label_score.is_some() {
                bump(by_model.entry(format!("{}:label", e.record.topic)).or_default());
            }
        }
        for r in by_reason.values_mut().chain(by_model.values_mut()) {
            r.false_positive_rate = if r.reviewed == 0 {
                0.0
            } else {
                r.false_positive as f64 / r.reviewed as f64
            };
        }
        (by_reason, by_model)
    }

    /// The latest verdict per record: (is a false positive, the entry that decided it).
    fn latest_verdicts(&self) -> BTreeMap<RecordKey, (bool, AuditEntry)> {
        let mut latest: BTreeMap<RecordKey, (bool, AuditEntry)> = BTreeMap::new();
        for e in self.audit.entries() {
            match e.action {
                Action::ConfirmedPoison => {
                    latest.insert(e.record.clone(), (false, e));
                }
                Action::FalsePositive | Action::Released => {
                    latest.insert(e.record.clone(), (true, e));
                }
                _ => {}
            }
        }
        latest
    }

    /// Threshold suggestions per topic and score for a target false-positive share among the
    /// records a threshold would still hold.
    pub fn suggestions(&self, target: f64) -> BTreeMap<String, Vec<Suggestion>> {
        let mut per: BTreeMap<(String, &'static str), Vec<(f32, bool)>> = BTreeMap::new();
        for (fp, e) in self.latest_verdicts().values() {
            if let Some(s) = e.anomaly_score.filter(|s| s.is_finite()) {
                per.entry((e.record.topic.clone(), "anomaly"))
                    .or_default()
                    .push((s, *fp));
            }
            if let Some(s) = e.label_score.filter(|s| s.is_finite()) {
                per.entry((e.record.topic.clone(), "label")).or_default().push((s, *fp));
            }
        }
        let mut out: BTreeMap<String, Vec<Suggestion>> = BTreeMap::new();
        for ((topic, score), mut v) in per {
            v.sort_by(|a, b| b.0.total_cmp(&a.0));
            // Walk from the highest score down; the lowest threshold that keeps the share of
            // false positives at or above it within the target wins.
            let (mut fps, mut n) = (0usize, 0usize);
            let mut best: Option<(f32, usize, usize)> = None;
            for (s, fp) in &v {
                n += 1;
                fps += usize::from(*fp);
                if (fps as f64) <= target * n as f64 {
                    best = Some((*s, n - fps, fps));
                }
            }
            out.entry(topic).or_default().push(Suggestion {
                score,
                reviewed: v.len(),
                threshold: best.map(|b| b.0),
                poison_kept: best.map_or(0, |b| b.1),
                false_positives_kept: best.map_or(0, |b| b.2),
            });
        }
        out
    }

    fn export_feedback_metrics(&self) {
        let (by_reason, by_model) = self.feedback();
        for (code, r) in by_reason {
            metrics::gauge!("guard_review_false_positive_ratio", "reason" => code).set(r.false_positive_rate);
        }
        // Models are `topic:role`, bounded by the configured routes.
        for (model, r) in by_model {
            metrics::gauge!("guard_review_model_false_positive_ratio", "model" => model).set(r.false_positive_rate);
        }
    }
}

/// Describe the metrics this crate emits (name, unit, help text), next to the code that
/// emits them; the binary calls it once when it installs the recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "guard_review_decisions_total",
        Unit::Count,
        "Review verdicts recorded (confirmed_poison, false_positive)"
    );
    describe_counter!(
        "guard_review_releases_total",
        Unit::Count,
        "Release requests by outcome (released, already, recovered, failed)"
    );
    describe_counter!(
        "guard_review_source_releases_total",
        Unit::Count,
        "Blocked sources released by a reviewer (one audit line each)"
    );
    describe_gauge!(
        "guard_review_false_positive_ratio",
        "Share of reviewed records judged false positives, per reason code"
    );
    describe_gauge!(
        "guard_review_model_false_positive_ratio",
        "Share of reviewed records judged false positives, per model (topic:role)"
    );
    describe_histogram!(
        "guard_review_query_duration_seconds",
        Unit::Seconds,
        "Time to answer an explorer query"
    );
}
