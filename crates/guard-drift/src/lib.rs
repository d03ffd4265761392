//! Drift monitoring in the running guard.
//!
//! * [`DriftWindows`] (one per judge worker) fills one window per input **partition** from the
//!   records that pass, so poison aimed at one partition is not diluted by the others. A window
//!   closes at the baseline's calibrated size, or on age (`drift.window_max_age_ms`) once it
//!   holds `drift.min_window_fraction` of that size.
//! * [`DriftHub`] (shared) judges each closed window against the route's baseline, keeps the
//!   per-partition alarm states (raised after K firing windows, cleared after quiet ones), the
//!   last window and a sliding view of recent windows, exports `guard_stats_*` metrics, and
//!   hands drift events and partition views to the event and profile tasks without blocking.
//!
//! Memory is fixed by the baselines (bins and sketch buckets per feature) times the partitions
//! assigned, whatever the traffic.

mod alert;
mod floods;
pub use alert::alertmanager_payload;
pub use floods::Floods;

use guard_config::DriftConfig;
use guard_stats::{
    AlarmPolicy, AlarmState, Baseline, Evaluation, FeatureDrift, HeavyHitters, SourceStats, SourceTable, Transition,
    WindowProfile,
};

/// Most partition views kept from the profiles topic (one per partition of the group's
/// monitored topics is all a group needs).
pub const MAX_REMOTE_VIEWS: usize = 65_536;

/// Values tracked per categorical feature among those the baseline never saw (Space-Saving).
const UNSEEN_CAPACITY: usize = 16;
use guard_core::report::{
    CategoricalStats, DriftValues, FeatureKind, FeatureStats, FiringTests, NumericStats, PartitionStats, ProfileStats,
    SourceRow, SourcesReport, TopicStats,
};
use guard_core::{lock, GuardSection, RowRef, StatsReport};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Describe the metrics this crate emits (name, unit, meaning); the binary calls it once
/// after installing the recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        "guard_stats_ks",
        "KS statistic of the last closed window against the baseline, per feature"
    );
    describe_gauge!(
        "guard_stats_psi",
        "Population stability index of the last closed window, per feature"
    );
    describe_gauge!(
        "guard_stats_js",
        "Jensen-Shannon distance of the last closed window, per feature"
    );
    describe_gauge!(
        "guard_stats_variance_ratio",
        "Variance of the last closed window over the baseline's, per numeric feature"
    );
    describe_gauge!("guard_stats_sources", "Sources (producers) in the source table");
    describe_gauge!(
        "guard_flood_blocked_sources",
        "Sources blocked now (flood or quarantine budget)"
    );
    describe_counter!("guard_flood_blocks_total", Unit::Count, "Sources this instance blocked");
    describe_counter!(
        "guard_flood_blocks_refused_total",
        Unit::Count,
        "Blocks not made because 10,000 sources are blocked already"
    );
    describe_counter!(
        "guard_flood_releases_total",
        Unit::Count,
        "Source blocks released by a reviewer on this instance"
    );
    describe_counter!(
        "guard_flood_flagged_total",
        Unit::Count,
        "Records quarantined as part of a near-duplicate flood"
    );
    describe_counter!(
        "guard_stats_profiles_ignored_total",
        Unit::Count,
        "Partition views from the profiles topic ignored (another baseline or group)"
    );
    describe_gauge!(
        "guard_stats_alarm",
        Unit::Count,
        "1 while a drift alarm is raised on any partition of the topic"
    );
    describe_counter!("guard_stats_windows_total", Unit::Count, "Drift windows judged");
    describe_counter!("guard_stats_alarms_raised_total", Unit::Count, "Drift alarms raised");
    describe_counter!(
        "guard_stats_events_dropped_total",
        Unit::Count,
        "Drift events dropped because the event queue was full"
    );
    describe_gauge!(
        "guard_stats_breaker_open",
        Unit::Count,
        "1 while the breaker quarantines every record"
    );
    describe_counter!(
        "guard_stats_breaker_trips_total",
        Unit::Count,
        "Times the breaker tripped"
    );
}

/// Why a baseline cannot watch a route.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriftError {
    /// The baseline file cannot be read.
    #[error("reading baseline {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a baseline.
    #[error("baseline {path} is not a baseline file: {source}")]
    NotABaseline {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The baseline does not belong to the route's schema (the message names both).
    #[error("{0}")]
    Mismatch(String),
}

/// `Err(Mismatch)` unless `ok`.
macro_rules! ensure {
    ($ok:expr, $($fmt:tt)+) => {
        if !$ok {
            return Err(DriftError::Mismatch(format!($($fmt)+)));
        }
    };
}

/// A drift alarm that rose or cleared, as written to the events topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEvent {
    /// `drift_raised` or `drift_cleared`.
    pub event: String,
    /// Input topic.
    pub topic: String,
    /// Input partition whose window decided it.
    pub partition: i32,
    /// Feature (or `label`).
    pub feature: String,
    /// Tests that fired in the deciding window (`ks`, `psi`, `variance`).
    pub tests: Vec<String>,
    /// The deciding window's statistics.
    pub drift: FeatureDrift,
    /// Rows in the deciding window.
    pub window_records: u64,
    /// First and last input offsets of the deciding window.
    pub first_offset: i64,
    /// Last input offset of the deciding window.
    pub last_offset: i64,
    /// Schema and baseline identity.
    pub schema_id: String,
    /// SHA-256 of the baseline's data.
    pub baseline_sha256: String,
    /// Consumer group and instance that saw it.
    pub group: String,
    /// Instance name.
    pub instance: String,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else if x > 0.0 {
        f64::MAX
    } else {
        0.0
    }
}

/// One partition's view, as kept locally and published to the profiles topic: its last
/// closed window, the merge of its recent windows, and its raised alarms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionView {
    /// Consumer group of the instance that judged the partition.
    pub group: String,
    /// Instance (`kafka.client_id` or host) that published the view.
    pub instance: String,
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
    /// Baseline data hash: views of different baselines are never merged.
    pub baseline_sha256: String,
    /// Windows closed on this partition since this instance got it.
    pub windows: u64,
    /// First input offset of the last window.
    pub first_offset: i64,
    /// Last input offset of the last window.
    pub last_offset: i64,
    /// The last closed window's profile.
    pub last: WindowProfile,
    /// The merge of the partition's recent windows.
    pub sliding: WindowProfile,
    /// Features whose alarm is raised on this partition.
    pub alarms: Vec<String>,
    /// Per categorical feature (baseline order), the most frequent values of the last window
    /// that the baseline never saw, with estimated counts.
    #[serde(default)]
    pub unseen: Vec<Vec<(String, u64)>>,
    /// When the view was made (milliseconds since the epoch).
    pub at_ms: i64,
}

impl PartitionView {
    /// The key of this view in the profiles topic.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.topic, self.partition)
    }
}

struct PartitionState {
    states: Vec<AlarmState>,
    last: Option<(WindowProfile, Evaluation)>,
    unseen: Vec<Vec<(String, u64)>>,
    sliding: VecDeque<WindowProfile>,
    windows: u64,
    first_offset: i64,
    last_offset: i64,
    dirty: bool,
}

/// One monitored topic: its baseline and category lookups.
pub struct TopicDrift {
    /// The trusted baseline the topic's windows are judged against.
    pub baseline: Arc<Baseline>,
    /// Category → index per baseline feature (empty for numeric ones).
    cat_index: Vec<HashMap<String, usize>>,
    /// Index of the first categorical feature in the baseline.
    first_cat: usize,
    /// The baseline's near-duplicate profile, expanded (absent in older baselines).
    flood: Option<Arc<guard_stats::FloodReference>>,
}

impl TopicDrift {
    /// Load a baseline and check it belongs to `schema` (same id, same numeric and categorical
    /// features in the same order); a mismatch names both.
    pub fn load(path: &Path, schema: &GuardSection) -> Result<Self, DriftError> {
        let text = std::fs::read(path).map_err(|source| DriftError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let baseline: Baseline = serde_json::from_slice(&text).map_err(|source| DriftError::NotABaseline {
            path: path.display().to_string(),
            source,
        })?;
        ensure!(
            (1..=guard_stats::BASELINE_FORMAT).contains(&baseline.format),
            "baseline {} has format {}, this guard reads 1 to {}",
            path.display(),
            baseline.format,
            guard_stats::BASELINE_FORMAT
        );
        ensure!(
            baseline.schema_id == schema.id.as_str(),
            "baseline {} was built for schema {:?}, the route's schema is {:?}",
            path.display(),
            baseline.schema_id,
            schema.id
        );
        let want: Vec<String> = schema.numeric.iter().map(|f| f.name.clone()).collect();
        let have: Vec<String> = baseline.numeric().map(|f| f.name.clone()).collect();
        ensure!(
            want == have,
            "baseline {} has numeric features {have:?}, schema {} has {want:?}",
            path.display(),
            schema.id
        );
        let have_cat: Vec<String> = baseline.categorical().map(|f| f.name.clone()).collect();
        if baseline.format >= 2 {
            let want_cat = schema.categorical_names();
            ensure!(
                want_cat == have_cat,
                "baseline {} has categorical features {have_cat:?}, schema {} has {want_cat:?} (rebuild it with `ingest-guard baseline`)",
                path.display(),
                schema.id
            );
        }
        ensure!(
            baseline.features.iter().all(|f| f.categories.is_none())
                || baseline.features[have.len()..].iter().all(|f| f.categories.is_some()),
            "baseline {}: numeric features must come before categorical ones",
            path.display()
        );
        ensure!(
            baseline.window >= 2,
            "baseline {} has window {}",
            path.display(),
            baseline.window
        );
        Ok(Self::new(Arc::new(baseline)))
    }

    /// A monitor for an already checked baseline.
    pub fn new(baseline: Arc<Baseline>) -> Self {
        let cat_index = baseline.features.iter().map(|f| f.category_index()).collect();
        let first_cat = baseline.numeric().count();
        let flood = baseline.flood.clone().and_then(|p| match guard_stats::FloodReference::new(p) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::warn!(error = %e, schema = %baseline.schema_id, "the baseline's flood profile is unusable; floods are not judged");
                None
            }
        });
        Self {
            baseline,
            cat_index,
            first_cat,
            flood,
        }
    }

    /// The baseline's near-duplicate profile, if it has one.
    pub fn flood_reference(&self) -> Option<Arc<guard_stats::FloodReference>> {
        self.flood.clone()
    }

    /// Push one record's typed row into `w`; categorical values the baseline never saw also
    /// go to `unseen` (one per categorical feature).
    #[inline]
    fn observe(&self, w: &mut WindowProfile, unseen: &mut [HeavyHitters], row: RowRef<'_>) {
        let features = &self.baseline.features;
        for (i, x) in row.numeric().iter().enumerate().take(self.first_cat) {
            w.push(&features[i].bins, i, *x);
        }
        for j in 0..row.categorical_width() {
            let c = row.categorical(j);
            let i = self.first_cat + j;
            if let (Some(f), Some(index)) = (features.get(i), self.cat_index.get(i)) {
                if let (Some(v), Some(hh)) = (c, unseen.get_mut(j)) {
                    if !index.contains_key(v) {
                        hh.push(v);
                    }
                }
                w.push(&f.bins, i, f.category_value(index, c));
            }
        }
        w.end_row();
    }

    /// Push one typed row into `w`, as a streaming window does (for batch checks such as
    /// `ingest-guard drift`; unseen categories are not tracked).
    pub fn push_row(&self, w: &mut WindowProfile, row: RowRef<'_>) {
        self.observe(w, &mut [], row);
    }

    fn categorical_count(&self) -> usize {
        self.baseline.features.len() - self.first_cat
    }
}

/// Where hub output goes.
pub struct HubOutputs {
    /// Drift events (events topic and webhook); `None` when neither is configured.
    pub events: Option<mpsc::Sender<DriftEvent>>,
}

/// Shared drift state of this instance.
pub struct DriftHub {
    topics: HashMap<String, TopicDrift>,
    policy: AlarmPolicy,
    sliding_windows: usize,
    quantiles: bool,
    max_age: Option<Duration>,
    min_fraction: f64,
    group: String,
    instance: String,
    partitions: Mutex<BTreeMap<(String, i32), PartitionState>>,
    events: Option<mpsc::Sender<DriftEvent>>,
    /// Latest views from the profiles topic, by key (group scope).
    remote: Mutex<HashMap<String, PartitionView>>,
    /// Per-source counters (this instance's records).
    sources: Mutex<SourceTable>,
    source_header: Option<Arc<str>>,
    breaker: Breaker,
    floods: Floods,
}

impl guard_core::SourceBlocks for DriftHub {
    fn blocked(&self) -> Vec<guard_core::BlockedSource> {
        self.floods.blocked()
    }

    fn release(&self, topic: &str, source: &str, id: &str, by: &str) -> bool {
        self.floods.release(topic, source, id, by)
    }
}

impl guard_core::SideTopics for DriftHub {
    fn take_views(&self) -> Vec<(String, Vec<u8>)> {
        let views = self.take_dirty();
        views
            .iter()
            .filter_map(|v| Some((v.key(), serde_json::to_vec(v).ok()?)))
            .collect()
    }

    fn put_view(&self, key: &str, payload: Option<&[u8]>) {
        let view = match payload.map(serde_json::from_slice::<PartitionView>) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                warn!(key, error = %e, "unreadable partition view skipped");
                metrics::counter!("guard_stats_profiles_unreadable_total").increment(1);
                return;
            }
        };
        self.put_remote(key.to_owned(), view);
    }

    fn take_blocks(&self) -> Vec<(String, Vec<u8>)> {
        let docs = self.floods.take_outbox();
        docs.iter()
            .filter_map(|d| Some((d.key(), serde_json::to_vec(d).ok()?)))
            .collect()
    }

    fn put_back_blocks(&self, docs: Vec<(String, Vec<u8>)>) {
        let docs = docs
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice(b).ok())
            .collect();
        self.floods.put_back(docs);
    }

    fn apply_block(&self, key: &str, payload: Option<&[u8]>) {
        match payload.map(serde_json::from_slice) {
            Some(Ok(doc)) => self.floods.apply(doc),
            _ => warn!(key, "unreadable block document skipped"),
        }
    }
}

/// The quarantine-everything breaker (`drift.breaker`).
pub struct Breaker {
    cfg: guard_config::BreakerConfig,
    open: std::sync::atomic::AtomicBool,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    reason: Option<String>,
    since_ms: Option<i64>,
    trips: u64,
    window: (u64, u64),
}

impl Breaker {
    fn new(cfg: &guard_config::BreakerConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            open: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(BreakerState::default()),
        }
    }

    /// Whether every record must be quarantined now.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why it is open.
    pub fn reason(&self) -> String {
        lock(&self.state).reason.clone().unwrap_or_default()
    }

    fn trip(&self, why: String) {
        if !self.cfg.enabled || self.is_open() {
            return;
        }
        let mut st = lock(&self.state);
        warn!(
            why,
            "breaker tripped: quarantining every record until cleared (POST /api/breaker/clear)"
        );
        st.reason = Some(why);
        st.since_ms = Some(guard_core::now_ms());
        st.trips += 1;
        self.open.store(true, std::sync::atomic::Ordering::Release);
        metrics::gauge!("guard_stats_breaker_open").set(1.0);
        metrics::counter!("guard_stats_breaker_trips_total").increment(1);
    }

    /// Count a batch judged by the checks (not by the open breaker).
    pub fn observe(&self, records: u64, quarantined: u64) {
        if !self.cfg.enabled || records == 0 {
            return;
        }
        let why = {
            let mut st = lock(&self.state);
            st.window.0 += records;
            st.window.1 += quarantined;
            if st.window.0 < self.cfg.window_records {
                return;
            }
            let (n, q) = std::mem::take(&mut st.window);
            let rate = q as f64 / n as f64;
            (rate > self.cfg.max_quarantine_rate).then(|| {
                format!(
                    "quarantine rate {rate:.3} over {n} records exceeds {}",
                    self.cfg.max_quarantine_rate
                )
            })
        };
        if let Some(why) = why {
            self.trip(why);
        }
    }

    /// Operator reset.
    pub fn clear(&self) -> Value {
        {
            let mut st = lock(&self.state);
            if self.is_open() {
                info!(reason = ?st.reason, "breaker cleared by operator");
            }
            st.reason = None;
            st.since_ms = None;
            st.window = (0, 0);
            self.open.store(false, std::sync::atomic::Ordering::Release);
        }
        metrics::gauge!("guard_stats_breaker_open").set(0.0);
        self.status()
    }

    /// `GET /api/breaker`.
    pub fn status(&self) -> Value {
        let st = lock(&self.state);
        serde_json::json!({
            "enabled": self.cfg.enabled,
            "open": self.is_open(),
            "reason": st.reason,
            "since_ms": st.since_ms,
            "trips": st.trips,
            "max_quarantine_rate": self.cfg.max_quarantine_rate,
            "window_records": self.cfg.window_records,
            "on_drift_alarm": self.cfg.on_drift_alarm,
        })
    }
}

impl DriftHub {
    /// The hub of this instance: the monitored topics' baselines, the drift settings, the
    /// group and instance names its views carry, and where its events go.
    pub fn new(
        topics: HashMap<String, TopicDrift>,
        cfg: &DriftConfig,
        group: &str,
        instance: &str,
        out: HubOutputs,
    ) -> Self {
        Self {
            topics,
            policy: cfg.alarm,
            sliding_windows: cfg.sliding_windows.max(1),
            quantiles: cfg.quantiles,
            max_age: (cfg.window_max_age_ms > 0).then(|| Duration::from_millis(cfg.window_max_age_ms)),
            min_fraction: cfg.min_window_fraction,
            group: group.to_owned(),
            instance: instance.to_owned(),
            partitions: Mutex::new(BTreeMap::new()),
            events: out.events,
            remote: Mutex::new(HashMap::new()),
            sources: Mutex::new(SourceTable::new(cfg.max_sources)),
            source_header: cfg.source_header.as_deref().map(Arc::from),
            breaker: Breaker::new(&cfg.breaker),
            floods: Floods::off(),
        }
    }

    /// This hub with flood detection and source blocks (`cfg`: the `[flood]` section) for the
    /// monitored topics whose baselines carry a flood profile.
    pub fn with_floods(mut self, cfg: &guard_config::FloodConfig) -> Self {
        let refs = self
            .topics
            .iter()
            .filter_map(|(t, d)| Some((t.clone(), d.flood_reference()?)))
            .collect();
        self.floods = Floods::new(cfg, &self.instance, refs);
        self
    }

    /// Floods and source blocks.
    pub fn floods(&self) -> &Floods {
        &self.floods
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// No topic is monitored (only sources are counted).
    pub fn is_idle(&self) -> bool {
        self.topics.is_empty()
    }

    /// Judge one closed window of `topic`/`partition`.
    fn close(
        &self,
        topic: &str,
        partition: i32,
        window: &WindowProfile,
        unseen: &[HeavyHitters],
        first: i64,
        last: i64,
    ) {
        let Some(t) = self.topics.get(topic) else {
            return;
        };
        let base = &t.baseline;
        let eval = base.evaluate(&self.policy, window);
        let mut parts = lock(&self.partitions);
        let st = parts
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| PartitionState {
                states: vec![AlarmState::default(); base.features.len()],
                last: None,
                unseen: Vec::new(),
                sliding: VecDeque::new(),
                windows: 0,
                first_offset: first,
                last_offset: last,
                dirty: false,
            });
        st.windows += 1;
        st.last_offset = last;
        st.dirty = true;
        tracing::debug!(
            topic,
            partition,
            first,
            last,
            records = window.records,
            "drift window evaluated"
        );
        for (i, f) in base.features.iter().enumerate() {
            let (d, fire) = (&eval.drifts[i], eval.fired[i]);
            let labels = [("topic", topic.to_owned()), ("feature", f.name.clone())];
            metrics::gauge!("guard_stats_ks", &labels).set(d.ks);
            metrics::gauge!("guard_stats_psi", &labels).set(d.psi);
            metrics::gauge!("guard_stats_js", &labels).set(d.js);
            metrics::gauge!("guard_stats_variance_ratio", &labels).set(d.var_ratio);
            let transition = st.states[i].update(&self.policy, fire.any());
            let kind = match transition {
                Transition::Raised => {
                    warn!(topic, partition, feature = %f.name, ks = d.ks, psi = d.psi, variance_ratio = d.var_ratio, ?fire, first, last, "drift alarm raised");
                    metrics::counter!("guard_stats_alarms_raised_total", "topic" => topic.to_owned()).increment(1);
                    if self.breaker.cfg.on_drift_alarm {
                        self.breaker
                            .trip(format!("drift alarm on {topic}/{partition} feature {}", f.name));
                    }
                    "drift_raised"
                }
                Transition::Cleared => {
                    info!(topic, partition, feature = %f.name, first, last, "drift alarm cleared");
                    "drift_cleared"
                }
                Transition::None => continue,
            };
            let tests = [("ks", fire.ks), ("psi", fire.psi), ("variance", fire.variance)]
                .iter()
                .filter(|(_, on)| *on)
                .map(|(n, _)| (*n).to_owned())
                .collect();
            self.emit(DriftEvent {
                event: kind.to_owned(),
                topic: topic.to_owned(),
                partition,
                feature: f.name.clone(),
                tests,
                drift: *d,
                window_records: window.records,
                first_offset: first,
                last_offset: last,
                schema_id: base.schema_id.clone(),
                baseline_sha256: base.data_sha256.clone(),
                group: self.group.clone(),
                instance: self.instance.clone(),
                at_ms: guard_core::now_ms(),
            });
        }
        st.sliding.push_back(window.clone());
        while st.sliding.len() > self.sliding_windows {
            st.sliding.pop_front();
        }
        st.last = Some((window.clone(), eval));
        st.unseen = unseen
            .iter()
            .map(|hh| hh.top().into_iter().map(|(v, c, _)| (v, c)).collect())
            .collect();
        // The topic's alarm gauge is raised while any of its partitions has the alarm.
        for (i, f) in base.features.iter().enumerate() {
            let raised = parts
                .range((topic.to_owned(), i32::MIN)..=(topic.to_owned(), i32::MAX))
                .any(|(_, p)| p.states.get(i).is_some_and(|s| s.raised));
            metrics::gauge!("guard_stats_alarm", "topic" => topic.to_owned(), "feature" => f.name.clone())
                .set(if raised { 1.0 } else { 0.0 });
        }
        metrics::counter!("guard_stats_windows_total", "topic" => topic.to_owned()).increment(1);
    }

    fn emit(&self, event: DriftEvent) {
        if let Some(tx) = &self.events {
            if tx.try_send(event).is_err() {
                metrics::counter!("guard_stats_events_dropped_total").increment(1);
            }
        }
    }

    fn view(&self, topic: &str, partition: i32, st: &PartitionState) -> Option<PartitionView> {
        let t = self.topics.get(topic)?;
        let (last, _) = st.last.as_ref()?;
        let mut sliding = WindowProfile::for_baseline(&t.baseline, self.quantiles);
        for w in &st.sliding {
            sliding.merge(w).ok()?;
        }
        Some(PartitionView {
            group: self.group.clone(),
            instance: self.instance.clone(),
            topic: topic.to_owned(),
            partition,
            baseline_sha256: t.baseline.data_sha256.clone(),
            windows: st.windows,
            first_offset: st.first_offset,
            last_offset: st.last_offset,
            last: last.clone(),
            sliding,
            alarms: t
                .baseline
                .features
                .iter()
                .zip(&st.states)
                .filter(|(_, s)| s.raised)
                .map(|(f, _)| f.name.clone())
                .collect(),
            unseen: st.unseen.clone(),
            at_ms: guard_core::now_ms(),
        })
    }

    /// Views of this instance's partitions that changed since the last call.
    pub fn take_dirty(&self) -> Vec<PartitionView> {
        let mut parts = lock(&self.partitions);
        let mut out = Vec::new();
        for ((topic, partition), st) in parts.iter_mut() {
            if std::mem::take(&mut st.dirty) {
                out.extend(self.view(topic, *partition, st));
            }
        }
        out
    }

    /// Record a view read from the profiles topic (`None`: the key was deleted). The topic is
    /// shared, so only views of this group and of monitored topics, under their own key, are
    /// kept, and at most [`MAX_REMOTE_VIEWS`] of them: whatever else is written there cannot
    /// grow this instance's memory.
    pub fn put_remote(&self, key: String, view: Option<PartitionView>) {
        let mut remote = lock(&self.remote);
        match view {
            Some(v) => {
                let ours = v.group == self.group && self.topics.contains_key(&v.topic) && v.key() == key;
                if ours && (remote.contains_key(&key) || remote.len() < MAX_REMOTE_VIEWS) {
                    remote.insert(key, v);
                } else {
                    metrics::counter!("guard_stats_profiles_ignored_total").increment(1);
                }
            }
            None => {
                remote.remove(&key);
            }
        }
    }

    /// `GET /api/stats`: per topic, the current windows and the sliding view merged over
    /// this instance's partitions (`group = false`) or over every partition the group has
    /// published (`group = true`), each compared with the baseline.
    pub fn stats(&self, group: bool) -> StatsReport {
        let views: Vec<PartitionView> = if group {
            // put_remote keeps only this group's views.
            lock(&self.remote).values().cloned().collect()
        } else {
            let parts = lock(&self.partitions);
            parts.iter().filter_map(|((t, p), st)| self.view(t, *p, st)).collect()
        };
        let mut topics = Vec::new();
        let mut names: Vec<&String> = self.topics.keys().collect();
        names.sort();
        for name in names {
            let t = &self.topics[name];
            let mine: Vec<&PartitionView> = views
                .iter()
                .filter(|v| &v.topic == name && v.baseline_sha256 == t.baseline.data_sha256)
                .collect();
            topics.push(self.topic_stats(name, t, &mine));
        }
        let sources = {
            let t = lock(&self.sources);
            let row = |(source, s): (String, SourceStats)| SourceRow {
                source,
                records: s.records,
                rejected: s.rejected,
                quarantined: s.quarantined,
                reject_rate: finite(s.reject_rate()),
                quarantine_rate: finite(s.quarantine_rate()),
            };
            SourcesReport {
                tracked: t.len() as u64,
                evicted: t.evicted(),
                top_by_volume: t.top_by_volume(20).into_iter().map(row).collect(),
                top_by_quarantine_rate: t.top_by_quarantine_rate(20, 100).into_iter().map(row).collect(),
            }
        };
        StatsReport {
            scope: if group { "group" } else { "local" }.to_owned(),
            group: self.group.clone(),
            instance: self.instance.clone(),
            topics,
            sources,
        }
    }

    fn topic_stats(&self, name: &str, t: &TopicDrift, views: &[&PartitionView]) -> TopicStats {
        let base = &t.baseline;
        let (mut current, mut sliding) = (
            WindowProfile::for_baseline(base, self.quantiles),
            WindowProfile::for_baseline(base, self.quantiles),
        );
        let mut merge_failures = 0u32;
        let mut partitions = Vec::new();
        let mut views = views.to_vec();
        views.sort_by_key(|v| v.partition);
        for v in &views {
            // A view from elsewhere is decoded data: a bad one is skipped, never trusted.
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut c = current.clone();
                let mut s = sliding.clone();
                c.merge(&v.last).and_then(|()| s.merge(&v.sliding)).map(|()| (c, s))
            }));
            match ok {
                Ok(Ok((c, s))) => (current, sliding) = (c, s),
                _ => merge_failures += 1,
            }
            partitions.push(PartitionStats {
                partition: v.partition,
                instance: v.instance.clone(),
                windows: v.windows,
                first_offset: v.first_offset,
                last_offset: v.last_offset,
                alarms: v.alarms.clone(),
            });
        }
        let alarms: Vec<&String> = views.iter().flat_map(|v| &v.alarms).collect();
        // Unseen categories of the current windows, summed over partitions (estimates).
        let mut unseen: Vec<BTreeMap<&str, u64>> = vec![BTreeMap::new(); t.categorical_count()];
        for v in &views {
            for (j, top) in v.unseen.iter().enumerate().take(unseen.len()) {
                for (value, count) in top {
                    *unseen[j].entry(value.as_str()).or_default() += count;
                }
            }
        }
        let unseen: Vec<Vec<(String, u64)>> = unseen
            .into_iter()
            .map(|m| {
                let mut v: Vec<(&str, u64)> = m.into_iter().collect();
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                v.truncate(UNSEEN_CAPACITY);
                v.into_iter().map(|(s, n)| (s.to_owned(), n)).collect()
            })
            .collect();
        TopicStats {
            topic: name.to_owned(),
            schema_id: base.schema_id.clone(),
            baseline_sha256: base.data_sha256.clone(),
            baseline_rows: base.rows,
            window: base.window as u64,
            partitions,
            skipped_views: merge_failures,
            current: self.profile_stats(base, &current, &alarms, Some(&unseen)),
            sliding: self.profile_stats(base, &sliding, &alarms, None),
        }
    }

    fn profile_stats(
        &self,
        base: &Baseline,
        w: &WindowProfile,
        alarms: &[&String],
        unseen: Option<&[Vec<(String, u64)>]>,
    ) -> ProfileStats {
        let first_cat = base.numeric().count();
        let eval = base.evaluate(&self.policy, w);
        let features = base
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let m = &w.features[i].moments;
                let q = |p: f64| w.quantiles.get(i).and_then(|s| s.quantile(p)).map(finite);
                let nz = |x: f64| if m.count() > 0 { Some(finite(x)) } else { None };
                let d = eval.drifts.get(i).copied().unwrap_or_else(FeatureDrift::none);
                let fired = eval.fired.get(i).copied().unwrap_or_default();
                FeatureStats {
                    name: f.name.clone(),
                    kind: if f.categories.is_some() {
                        FeatureKind::Categorical
                    } else {
                        FeatureKind::Numeric
                    },
                    count: m.count(),
                    missing: m.missing(),
                    drift: DriftValues {
                        ks: finite(d.ks),
                        ks_p: finite(d.ks_p),
                        psi: finite(d.psi),
                        chi2_p: finite(d.chi2_p),
                        js: finite(d.js),
                        wasserstein: finite(d.wasserstein),
                        var_ratio: finite(d.var_ratio),
                        var_p: finite(d.var_p),
                    },
                    firing: FiringTests {
                        ks: fired.ks,
                        psi: fired.psi,
                        variance: fired.variance,
                    },
                    alarm: alarms.iter().any(|a| **a == f.name),
                    counts: w.features[i].counts.clone(),
                    baseline_counts: f.profile.counts.clone(),
                    numeric: f.categories.is_none().then(|| NumericStats {
                        edges: f.bins.edges().iter().map(|e| finite(*e)).collect(),
                        mean: nz(m.mean()),
                        std: nz(m.variance().sqrt()),
                        min: nz(m.min()),
                        max: nz(m.max()),
                        p50: q(0.5),
                        p90: q(0.9),
                        p99: q(0.99),
                    }),
                    categorical: f.categories.as_ref().map(|c| CategoricalStats {
                        categories: c.clone(),
                        unseen_top: unseen.and_then(|u| u.get(i - first_cat)).cloned(),
                    }),
                }
            })
            .collect();
        ProfileStats {
            records: w.records,
            features,
        }
    }
}

struct OpenWindow {
    w: WindowProfile,
    unseen: Vec<HeavyHitters>,
    opened: Instant,
    first: i64,
    last: i64,
}

impl OpenWindow {
    fn clear(&mut self) {
        self.w.clear();
        self.unseen
            .iter_mut()
            .for_each(|h| *h = HeavyHitters::new(UNSEEN_CAPACITY));
    }
}

/// One worker's open windows, one per partition it judges, and its batch's source counts.
pub struct DriftWindows {
    hub: Arc<DriftHub>,
    open: HashMap<(Arc<str>, i32), OpenWindow>,
    sources: HashMap<String, SourceStats>,
}

impl DriftWindows {
    /// One worker's windows, reporting to `hub`.
    pub fn new(hub: Arc<DriftHub>) -> Self {
        Self {
            hub,
            open: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// The shared hub.
    pub fn hub(&self) -> &DriftHub {
        &self.hub
    }

    /// The header that names sources, if configured.
    pub fn source_header(&self) -> Option<Arc<str>> {
        self.hub.source_header.clone()
    }

    /// Count one record of `source` (allocates only for a source new to this batch).
    #[inline]
    pub fn count_source(&mut self, source: &str, passed: bool) {
        self.count_source_outcome(source, !passed, !passed);
    }

    /// Count one record of `source` with its final outcome (e.g. after model scoring).
    pub fn count_source_outcome(&mut self, source: &str, rejected: bool, quarantined: bool) {
        let source = guard_core::cap_source(source);
        let s = match self.sources.get_mut(source) {
            Some(s) => s,
            None => self.sources.entry(source.to_owned()).or_default(),
        };
        s.records += 1;
        s.rejected += u64::from(rejected);
        s.quarantined += u64::from(quarantined);
    }

    /// Hand this batch's source counts to the shared table.
    pub fn flush_sources(&mut self) {
        if self.sources.is_empty() {
            return;
        }
        let mut t = lock(&self.hub.sources);
        for (name, counts) in self.sources.drain() {
            t.add(&name, counts);
        }
        metrics::gauge!("guard_stats_sources").set(t.len() as f64);
    }

    /// Whether `topic` is monitored.
    pub fn watches(&self, topic: &str) -> bool {
        self.hub.topics.contains_key(topic)
    }

    /// Add one passing record of `topic`/`partition` at `offset` (extracts its row; the judge
    /// uses [`DriftWindows::observe_row`] with the row it already has).
    #[cfg(test)]
    pub fn observe(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        layout: &guard_core::FeatureLayout,
        value: &Value,
    ) {
        let mut rows = guard_core::FeatureRows::new(layout, true);
        rows.push(layout, 0, value, None);
        self.observe_row(topic, partition, offset, rows.row(0));
    }

    /// Observe one record's typed row (extracted once by the judge).
    pub fn observe_row(&mut self, topic: &Arc<str>, partition: i32, offset: i64, row: RowRef<'_>) {
        let Some(t) = self.hub.topics.get(&**topic) else {
            return;
        };
        let quantiles = self.hub.quantiles;
        let ow = self
            .open
            .entry((Arc::clone(topic), partition))
            .or_insert_with(|| OpenWindow {
                w: WindowProfile::for_baseline(&t.baseline, quantiles),
                unseen: vec![HeavyHitters::new(UNSEEN_CAPACITY); t.categorical_count()],
                opened: Instant::now(),
                first: offset,
                last: offset,
            });
        if ow.w.records == 0 {
            ow.first = offset;
            ow.opened = Instant::now();
        }
        ow.last = offset;
        t.observe(&mut ow.w, &mut ow.unseen, row);
        if ow.w.records >= t.baseline.window as u64 {
            self.hub.close(topic, partition, &ow.w, &ow.unseen, ow.first, ow.last);
            ow.clear();
        }
    }

    /// Close windows that are old enough and large enough (after each batch).
    pub fn tick(&mut self) {
        let Some(max_age) = self.hub.max_age else {
            return;
        };
        for ((topic, partition), ow) in self.open.iter_mut() {
            let Some(t) = self.hub.topics.get(&**topic) else {
                continue;
            };
            let min = ((t.baseline.window as f64 * self.hub.min_fraction).ceil() as u64).max(2);
            if ow.w.records >= min && ow.opened.elapsed() >= max_age {
                self.hub.close(topic, *partition, &ow.w, &ow.unseen, ow.first, ow.last);
                ow.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guard_core::FeatureLayout;
    use guard_stats::BaselineBuilder;

    fn schema(_dir: &Path) -> FeatureLayout {
        let g: GuardSection =
            serde_json::from_str(r#"{"id":"t-v1","label":"/y","numeric":[{"name":"x","pointer":"/x"}]}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        FeatureLayout::new(&g).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn hub(cfg: &DriftConfig) -> Arc<DriftHub> {
        let mut b = BaselineBuilder::new(vec!["x".into()]).with_categorical(vec!["label".into()]);
        for i in 0..2000 {
            b.push_row(&[f64::from(i % 100)], &[Some(if i % 2 == 0 { "a" } else { "b" })], None);
        }
        let base = b.build("t-v1", "00", 10, 100, 50).unwrap_or_else(|e| panic!("{e}"));
        let topics = HashMap::from([("t".to_owned(), TopicDrift::new(Arc::new(base)))]);
        Arc::new(DriftHub::new(topics, cfg, "g", "i", HubOutputs { events: None }))
    }

    fn windows(h: &DriftHub) -> u64 {
        lock(&h.partitions).values().map(|p| p.windows).sum()
    }

    #[test]
    fn windows_close_by_count_per_partition_and_by_age_once_large_enough() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = schema(dir.path());
        let cfg = DriftConfig {
            window_max_age_ms: 1,
            ..DriftConfig::default()
        };
        let h = hub(&cfg);
        let mut w = DriftWindows::new(Arc::clone(&h));
        let topic: Arc<str> = Arc::from("t");
        let row = |i: i64| serde_json::json!({"x": i % 100, "y": if i % 2 == 0 { "a" } else { "b" }});
        // 150 rows on partition 0 and 60 on partition 1: one full window on 0 only.
        for i in 0..150 {
            w.observe(&topic, 0, i, &s, &row(i));
        }
        for i in 0..60 {
            w.observe(&topic, 1, i, &s, &row(i));
        }
        assert_eq!(windows(&h), 1);
        // Age: partition 0 holds 50 rows (≥ 25 % of 100) and closes; partition 1 holds 60 and
        // closes too; nothing closes twice.
        std::thread::sleep(Duration::from_millis(5));
        w.tick();
        assert_eq!(windows(&h), 3);
        w.tick();
        assert_eq!(windows(&h), 3);
        // A window below the minimum stays open however old.
        for i in 60..70 {
            w.observe(&topic, 1, i, &s, &row(i));
        }
        std::thread::sleep(Duration::from_millis(5));
        w.tick();
        assert_eq!(windows(&h), 3);
        let stats = serde_json::to_value(h.stats(false)).unwrap_or_default();
        let t = &stats["topics"][0];
        assert_eq!(t["current"]["records"], 110, "last windows: 50 + 60 rows");
        assert_eq!(t["sliding"]["records"], 210);
        assert_eq!(t["current"]["features"][1]["name"], "label");
        assert_eq!(t["current"]["features"][1]["kind"], "categorical");
        assert_eq!(t["current"]["features"][1]["unseen_top"], serde_json::json!([]));
        // Labels the baseline never saw are named in the next window's report.
        for i in 0..150 {
            let y = if i % 3 == 0 { "zz-new" } else { "a" };
            w.observe(&topic, 0, 1000 + i, &s, &serde_json::json!({"x": i % 100, "y": y}));
        }
        let stats = serde_json::to_value(h.stats(false)).unwrap_or_default();
        let label = &stats["topics"][0]["current"]["features"][1];
        assert_eq!(label["unseen_top"], serde_json::json!([["zz-new", 34]]), "{label}");
        let parts: Vec<i64> = t["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["first_offset"].as_i64())
            .collect();
        assert_eq!(parts, vec![0, 0]);
    }

    #[test]
    fn remote_views_of_other_groups_topics_or_keys_are_not_kept() {
        let h = hub(&DriftConfig::default());
        let base = &h.topics["t"].baseline;
        let view = |group: &str, topic: &str| PartitionView {
            group: group.into(),
            instance: "x".into(),
            topic: topic.into(),
            partition: 0,
            baseline_sha256: base.data_sha256.clone(),
            windows: 1,
            first_offset: 0,
            last_offset: 0,
            last: WindowProfile::for_baseline(base, false),
            sliding: WindowProfile::for_baseline(base, false),
            alarms: Vec::new(),
            unseen: Vec::new(),
            at_ms: 0,
        };
        h.put_remote("other/t/0".into(), Some(view("other", "t")));
        h.put_remote("g/unmonitored/0".into(), Some(view("g", "unmonitored")));
        h.put_remote("g/t/99".into(), Some(view("g", "t")));
        assert!(lock(&h.remote).is_empty());
        h.put_remote("g/t/0".into(), Some(view("g", "t")));
        assert_eq!(lock(&h.remote).len(), 1);
        h.put_remote("g/t/0".into(), None);
        assert!(lock(&h.remote).is_empty());
    }

    #[test]
    fn sources_are_counted_and_breaker_trips_on_budget() {
        let cfg = DriftConfig {
            breaker: guard_config::BreakerConfig {
                enabled: true,
                max_quarantine_rate: 0.2,
                window_records: 100,
                on_drift_alarm: true,
            },
            ..DriftConfig::default()
        };
        let h = hub(&cfg);
        let mut w = DriftWindows::new(Arc::clone(&h));
        for i in 0..90 {
            w.count_source("good", true);
            w.count_source("bad", i % 3 != 0);
        }
        w.flush_sources();
        let s = serde_json::to_value(h.stats(false)).unwrap_or_default();
        assert_eq!(
            s["sources"]["top_by_quarantine_rate"],
            serde_json::json!([]),
            "below 100 records: not ranked"
        );
        assert_eq!(s["sources"]["tracked"], 2);
        for _ in 0..20 {
            w.count_source("good", true);
            w.count_source("bad", false);
        }
        w.flush_sources();
        let s = serde_json::to_value(h.stats(false)).unwrap_or_default();
        let top = &s["sources"]["top_by_quarantine_rate"];
        assert_eq!(
            (top[0]["source"].as_str(), top[0]["records"].as_u64()),
            (Some("bad"), Some(110))
        );
        assert_eq!(top[0]["rejected"], 50);
        assert_eq!(top[1]["reject_rate"], 0.0);
        h.breaker().observe(90, 10);
        assert!(!h.breaker().is_open(), "budget window not full");
        h.breaker().observe(10, 15);
        assert!(h.breaker().is_open(), "25 % > 20 %");
        assert!(h.breaker().reason().contains("quarantine rate"));
        assert_eq!(h.breaker().clear()["open"], false);
        assert!(!h.breaker().is_open());
    }
}
