//! ingest-guard configuration: serde structs with a documented default for every field, layered
//! loading (built-in defaults, then the TOML file, then `GUARD__SECTION__KEY` environment
//! variables), and validation that reports **every** problem at once, each naming the file and key.
//!
//! Unknown keys are rejected. They are collected with `serde_ignored` rather than
//! `deny_unknown_fields`, because the latter stops at the first one and `ingest-guard check` must
//! list all problems in one run. Validation does no I/O; the binary's `check` adds the checks that
//! need it (schema files, broker reachability).

use guard_core::Limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "GUARD__";

/// Default for [`KafkaConfig::brokers`].
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Default for [`KafkaConfig::group_id`].
pub const DEFAULT_GROUP_ID: &str = "ingest-guard";
/// Default for [`KafkaConfig::session_timeout_ms`].
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;
/// Default for [`KafkaConfig::commit_interval_ms`].
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 1_000;
/// Default for [`KafkaConfig::probe_interval_ms`].
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 2_000;
/// Default for [`KafkaConfig::provenance_header`].
pub const DEFAULT_PROVENANCE_HEADER: &str = "x-guard-source";
/// Default for [`KafkaConfig::retry_backoff_ms`].
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 500;
/// Default for [`KafkaConfig::sink_give_up_ms`]: five minutes.
pub const DEFAULT_SINK_GIVE_UP_MS: u64 = 300_000;
/// Default for [`PipelineConfig::batch_max_records`].
pub const DEFAULT_BATCH_MAX_RECORDS: usize = 1_000;
/// Default for [`PipelineConfig::batch_max_wait_ms`].
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 20;
/// Default for [`PipelineConfig::channel_capacity`].
pub const DEFAULT_CHANNEL_CAPACITY: usize = 4;
/// Most judge workers `pipeline.workers = "auto"` starts, however many cores there are.
pub const MAX_AUTO_WORKERS: usize = 64;
/// Default for [`PipelineConfig::drain_timeout_ms`].
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// Default for [`PipelineConfig::shutdown_grace_ms`].
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Default for [`PipelineConfig::memory_budget_mb`].
pub const DEFAULT_MEMORY_BUDGET_MB: usize = 256;
/// Smallest memory budget accepted, in MiB.
pub const MIN_MEMORY_BUDGET_MB: usize = 64;
/// Default for [`QuarantineConfig::request_timeout_ms`].
pub const DEFAULT_OBJECT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default for [`QuarantineConfig::dir`].
pub const DEFAULT_QUARANTINE_DIR: &str = "quarantine";
/// Default for [`QuarantineConfig::roll_max_rows`].
pub const DEFAULT_ROLL_MAX_ROWS: usize = 50_000;
/// Default for [`QuarantineConfig::roll_max_bytes`]: 16 MiB of buffered payload per partition.
pub const DEFAULT_ROLL_MAX_BYTES: usize = 16 << 20;
/// Default for [`QuarantineConfig::roll_max_age_ms`].
pub const DEFAULT_ROLL_MAX_AGE_MS: u64 = 2_000;
/// Default for [`QuarantineConfig::oversize_prefix_bytes`].
pub const DEFAULT_OVERSIZE_PREFIX_BYTES: usize = 64 * 1024;
/// Default for [`QuarantineConfig::zstd_level`].
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default for [`ServerConfig::listen`].
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Kafka connection, consumer group and output topic.
    pub kafka: KafkaConfig,
    /// Hard limits enforced before parsing.
    pub limits: Limits,
    /// Which domain schema judges which input topic; the input topics are exactly these.
    pub routes: Vec<Route>,
    /// Batching, back-pressure and mode.
    pub pipeline: PipelineConfig,
    /// Where and how quarantined records are written.
    pub quarantine: QuarantineConfig,
    /// The HTTP server for metrics and health.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Drift monitoring (for routes with a `baseline`): windows, alarms and where events go.
    pub drift: DriftConfig,
    /// Model scoring (for routes with `anomaly_model` or `label_model`).
    pub scoring: ScoringConfig,
    /// The quarantine review dashboard and API (`/review`, `/api/review/*`).
    pub review: ReviewConfig,
    /// The window scan for poison one record does not give away (routes whose label model
    /// was trained with scan statistics).
    pub scan: ScanConfig,
    /// Near-duplicate floods and per-source blocks (routes whose baseline carries a flood
    /// profile: `ingest-guard baseline` writes one).
    pub flood: FloodConfig,
}

/// Near-duplicate floods and per-source blocks. Each source's last `window_records` records
/// of a route are laid over the trusted data's near-duplicate cells (from the baseline); a
/// record whose cell holds far more of them than the trusted data predicts (p-value at most
/// `alpha`, at least `min_copies` records and `rate` of the window) is quarantined with
/// `flood.near_duplicate`. A source with `block_after_flags` such records, or (when
/// `block_quarantine_share` is set) a quarantined share of at least that over
/// `block_quarantine_records` consecutive records, is blocked: all its records of that route
/// are quarantined with `source.blocked` until a reviewer releases it in the dashboard.
/// Memory: per route, at most `max_sources` sources of `window_records` × 4 bucket ids (8
/// bytes a record: 8 MB at the defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FloodConfig {
    /// Judge floods (routes whose baseline has a flood profile).
    pub enabled: bool,
    /// Recent records kept per source and route.
    pub window_records: usize,
    /// A cell must hold at least this many of a source's recent records to flag.
    pub min_copies: u32,
    /// Largest p-value (Bonferroni over the hash tables) that flags.
    pub alpha: f64,
    /// Smallest share of the source's recent records (of at least `min_window`) in one cell
    /// that flags: how much a source may repeat itself.
    pub rate: f64,
    /// See `rate`.
    pub min_window: usize,
    /// Sources tracked per route (the least recently seen is forgotten beyond this).
    pub max_sources: usize,
    /// Flood flags of one source (per route and instance) that block it (0: never block).
    pub block_after_flags: u32,
    /// Quarantined share over `block_quarantine_records` consecutive records of a source that
    /// blocks it (0: the quarantine budget is off).
    pub block_quarantine_share: f64,
    /// See `block_quarantine_share`.
    pub block_quarantine_records: u64,
    /// Compacted topic where blocks and their releases are published (keyed `topic/source`)
    /// and read back by every instance of the group; unset: blocks stay in this instance's
    /// memory (a restart forgets them).
    pub blocks_topic: Option<String>,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_records: 1_000,
            min_copies: 8,
            alpha: 1e-6,
            rate: 0.2,
            min_window: 100,
            max_sources: 1_024,
            block_after_flags: 10,
            block_quarantine_share: 0.0,
            block_quarantine_records: 1_000,
            blocks_topic: None,
        }
    }
}

/// The window scan: passing records of a route whose label model carries scan statistics are
/// held back (in memory, as part of their unacknowledged batch) until `hold_records` of them
/// wait or the oldest has waited `hold_ms`; then they are scanned per label class together
/// with up to `window_records` records released before, and released: to the clean topic, or
/// to the quarantine with `scan.spectral`. Their offsets are committed only after that, so a
/// crash loses nothing (the records are read and judged again). Memory: the held records'
/// bytes (within the source's in-flight budget) plus `window_records` hidden representations
/// per route and worker (4 bytes per hidden unit each).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanConfig {
    /// Whether the scan runs (off: records pass as soon as they are judged).
    pub enabled: bool,
    /// Held records of a route (per judge worker) that trigger a scan.
    pub hold_records: usize,
    /// Longest a record is held, in milliseconds (a scan runs on what is held by then).
    pub hold_ms: u64,
    /// Released records kept as the context of the next scan (per route and worker).
    pub window_records: usize,
}

/// Default for [`ScanConfig::hold_records`].
pub const DEFAULT_SCAN_HOLD_RECORDS: usize = 500;
/// Default for [`ScanConfig::hold_ms`].
pub const DEFAULT_SCAN_HOLD_MS: u64 = 2_000;
/// Default for [`ScanConfig::window_records`].
pub const DEFAULT_SCAN_WINDOW_RECORDS: usize = 1_500;

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            hold_records: DEFAULT_SCAN_HOLD_RECORDS,
            hold_ms: DEFAULT_SCAN_HOLD_MS,
            window_records: DEFAULT_SCAN_WINDOW_RECORDS,
        }
    }
}

/// One reviewer allowed to read and act in the review dashboard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reviewer {
    /// Name recorded in the audit log and in release headers.
    pub name: String,
    /// SHA-256 of the password, lowercase hex (`printf %s 'secret' | sha256sum`).
    pub password_sha256: String,
}

/// Default for [`ReviewConfig::refresh_interval_ms`].
pub const DEFAULT_REVIEW_REFRESH_MS: u64 = 2_000;
/// Default for [`ReviewConfig::max_indexed_rows`].
pub const DEFAULT_REVIEW_MAX_ROWS: usize = 20_000_000;
/// Default for [`ReviewConfig::session_ttl_s`].
pub const DEFAULT_REVIEW_SESSION_TTL_S: u64 = 8 * 3600;

/// The quarantine review dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReviewConfig {
    /// Serve the dashboard and review API from `run` (`serve` always does).
    pub enabled: bool,
    /// Reviewers (HTTP basic auth, or the dashboard's sign-in). None: every review request
    /// is refused with 401.
    pub reviewers: Vec<Reviewer>,
    /// Refuse every decision and release (browse and export only).
    pub read_only: bool,
    /// Folder of the append-only audit log; unset: `<quarantine.dir>/_review`. Relative to
    /// the config file.
    pub audit_dir: Option<PathBuf>,
    /// How often the quarantine folder is scanned for new files, in milliseconds.
    pub refresh_interval_ms: u64,
    /// Most quarantined rows kept in the in-memory index (about 48 bytes each); older files
    /// beyond it are left out of the explorer, and the overview says so.
    pub max_indexed_rows: usize,
    /// Sign-in sessions expire after this many seconds.
    pub session_ttl_s: u64,
    /// Topic released records go to; unset: `kafka.output_topic`.
    pub release_topic: Option<String>,
    /// Header naming a record's source in the quarantine index, for records written before
    /// the `source` column existed; unset: `drift.source_header`.
    pub source_header: Option<String>,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reviewers: Vec::new(),
            read_only: false,
            audit_dir: None,
            refresh_interval_ms: DEFAULT_REVIEW_REFRESH_MS,
            max_indexed_rows: DEFAULT_REVIEW_MAX_ROWS,
            session_ttl_s: DEFAULT_REVIEW_SESSION_TTL_S,
            release_topic: None,
            source_header: None,
        }
    }
}

/// Which ONNX Runtime execution provider scores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// CUDA when it loads, else CPU, announced in the log, `/readyz` and metrics.
    #[default]
    Auto,
    /// CUDA or refuse to start.
    Cuda,
    /// CPU only.
    Cpu,
}

/// Model scoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// `auto`, `cuda` or `cpu`.
    pub execution_provider: ExecutionProvider,
    /// ONNX Runtime shared library; unset: `$ORT_DYLIB_PATH`. Relative to the config file.
    pub library: Option<PathBuf>,
    /// Intra-op threads per inference session (each judge worker has its own sessions).
    pub intra_threads: usize,
    /// On CUDA, let matrix products use TensorFloat-32 (Ampere and later): faster on large
    /// models, but results move by about 1e-3 relative, so records near a threshold can be
    /// decided differently than on CPU, where thresholds were calibrated. Off by default.
    pub cuda_tf32: bool,
    /// How often model and metadata files are checked for changes, in milliseconds; a
    /// change that loads cleanly is swapped in at each worker's next batch (0: only
    /// `POST /api/models/reload`).
    pub watch_interval_ms: u64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            execution_provider: ExecutionProvider::Auto,
            library: None,
            intra_threads: 1,
            cuda_tf32: false,
            watch_interval_ms: 5_000,
        }
    }
}

/// Default for [`DriftConfig::min_window_fraction`].
pub const DEFAULT_MIN_WINDOW_FRACTION: f64 = 0.25;
/// Default for [`DriftConfig::sliding_windows`].
pub const DEFAULT_SLIDING_WINDOWS: usize = 10;
/// Default for [`DriftConfig::webhook_queue`].
pub const DEFAULT_WEBHOOK_QUEUE: usize = 256;
/// Default for [`DriftConfig::webhook_timeout_ms`].
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 2_000;
/// Default for [`DriftConfig::webhook_backoff_ms`].
pub const DEFAULT_WEBHOOK_BACKOFF_MS: u64 = 500;
/// Default for [`DriftConfig::profiles_interval_ms`].
pub const DEFAULT_PROFILES_INTERVAL_MS: u64 = 5_000;

/// Drift monitoring. Windows are per input partition (so poison aimed at one partition is not
/// diluted by the others); each closed window is compared with the route's baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DriftConfig {
    /// Close a partition's window after this long even if it holds fewer rows than the
    /// baseline's window, in milliseconds (0: windows close by row count only).
    pub window_max_age_ms: u64,
    /// A window closed by age is judged only once it holds at least this fraction of the
    /// baseline's window (calibration bands are rescaled to its size); until then it stays open.
    pub min_window_fraction: f64,
    /// Closed windows per partition kept in the sliding view (`/api/stats`, group profiles).
    pub sliding_windows: usize,
    /// Keep a DDSketch per feature for quantiles (p50, p90, p99 within 1 % relative error).
    pub quantiles: bool,
    /// When a feature fires and how alarms rise and clear.
    pub alarm: guard_core::AlarmPolicy,
    /// Topic that receives every drift event (raised, cleared) as JSON; unset: none.
    pub events_topic: Option<String>,
    /// `http://` URL that receives drift events as Alertmanager webhook payloads (version 4);
    /// unset: none. Delivery is retried from a bounded queue and never blocks the pipeline.
    pub webhook_url: Option<String>,
    /// Most webhook payloads waiting for delivery; the oldest is dropped (and counted) beyond.
    pub webhook_queue: usize,
    /// Timeout of one webhook request, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// First back-off after a failed webhook delivery, in milliseconds (doubles up to 30 s).
    pub webhook_backoff_ms: u64,
    /// Compacted topic where each instance publishes its partitions' sliding views, keyed by
    /// group, topic and partition; `GET /api/stats?scope=group` merges them. Unset: group
    /// scope is off.
    pub profiles_topic: Option<String>,
    /// How often changed partition views are published to `profiles_topic`, in milliseconds.
    pub profiles_interval_ms: u64,
    /// Name this instance gives itself in events and profiles; empty: `hostname-pid`.
    pub instance: String,
    /// Kafka header naming a record's producer; unset: the schema's `x-guard.source` field
    /// (records that cannot be decoded then count as `(undecoded)`).
    pub source_header: Option<String>,
    /// Most sources tracked (volume, reject and quarantine rate); the least recently seen
    /// half is evicted when full.
    pub max_sources: usize,
    /// Quarantine-everything breaker (off by default).
    pub breaker: BreakerConfig,
}

/// The breaker: when the quarantine rate or a drift alarm passes its budget, every record is
/// quarantined (reason `breaker.open`) until an operator clears it with
/// `POST /api/breaker/clear`. Nothing is dropped: records keep flowing into the quarantine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Whether the breaker can trip at all.
    pub enabled: bool,
    /// Trip when more than this share of a budget window's records is quarantined by the
    /// checks (records quarantined by the open breaker itself do not count).
    pub max_quarantine_rate: f64,
    /// Records per budget window (tumbling) for the quarantine rate.
    pub window_records: u64,
    /// Trip when any drift alarm is raised.
    pub on_drift_alarm: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_quarantine_rate: DEFAULT_BREAKER_MAX_QUARANTINE_RATE,
            window_records: DEFAULT_BREAKER_WINDOW_RECORDS,
            on_drift_alarm: true,
        }
    }
}

/// Default for [`BreakerConfig::max_quarantine_rate`].
pub const DEFAULT_BREAKER_MAX_QUARANTINE_RATE: f64 = 0.5;
/// Default for [`BreakerConfig::window_records`].
pub const DEFAULT_BREAKER_WINDOW_RECORDS: u64 = 10_000;

/// Default for [`DriftConfig::max_sources`].
pub const DEFAULT_MAX_SOURCES: usize = 1_000;

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            window_max_age_ms: 0,
            min_window_fraction: DEFAULT_MIN_WINDOW_FRACTION,
            sliding_windows: DEFAULT_SLIDING_WINDOWS,
            quantiles: true,
            alarm: guard_core::AlarmPolicy::default(),
            events_topic: None,
            webhook_url: None,
            webhook_queue: DEFAULT_WEBHOOK_QUEUE,
            webhook_timeout_ms: DEFAULT_WEBHOOK_TIMEOUT_MS,
            webhook_backoff_ms: DEFAULT_WEBHOOK_BACKOFF_MS,
            profiles_topic: None,
            profiles_interval_ms: DEFAULT_PROFILES_INTERVAL_MS,
            instance: String::new(),
            source_header: None,
            max_sources: DEFAULT_MAX_SOURCES,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Kafka settings shared by the consumer and the clean-record producer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated `host:port`.
    pub brokers: String,
    /// Consumer group; instances with the same group split the partitions.
    pub group_id: String,
    /// Topic that receives records that pass; required in `enforce` mode.
    pub output_topic: Option<String>,
    /// librdkafka properties for both clients (TLS, SASL, ...), passed through verbatim.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    pub producer_properties: BTreeMap<String, String>,
    /// Group session timeout in milliseconds.
    pub session_timeout_ms: u64,
    /// How often durable progress is committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// How often the broker is probed for `/readyz`, in milliseconds.
    pub probe_interval_ms: u64,
    /// Bound on prefetched, not yet processed messages, in KiB (`queued.max.messages.kbytes`);
    /// unset: a sixteenth of `pipeline.memory_budget_mb` ([`MemoryPlan`]).
    pub queued_max_kbytes: Option<u64>,
    /// Header added to each forwarded record with its source `topic/partition/offset`; empty
    /// disables it.
    pub provenance_header: String,
    /// Back-off between retries of a failed produce, in milliseconds.
    pub retry_backoff_ms: u64,
    /// How long the clean topic may refuse records for sink-wide reasons (not authorized,
    /// unknown topic) before they are quarantined with `sink.rejected` instead of retried, in
    /// milliseconds. Records the broker refuses for their own sake (too large, invalid) are
    /// quarantined at once; transient errors are retried without limit.
    pub sink_give_up_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: DEFAULT_BROKERS.into(),
            group_id: DEFAULT_GROUP_ID.into(),
            output_topic: None,
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS,
            probe_interval_ms: DEFAULT_PROBE_INTERVAL_MS,
            queued_max_kbytes: None,
            provenance_header: DEFAULT_PROVENANCE_HEADER.into(),
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS,
            sink_give_up_ms: DEFAULT_SINK_GIVE_UP_MS,
        }
    }
}

/// An input topic and the schema that judges it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Route {
    /// Input topic name.
    pub topic: String,
    /// Domain schema file; relative paths are resolved against the config file's folder.
    pub schema: PathBuf,
    /// Trusted baseline (`ingest-guard baseline`) to test this topic's windows against for
    /// drift; none disables drift monitoring for the topic. Relative to the config file.
    pub baseline: Option<PathBuf>,
    /// Anomaly model (`.onnx`, with its `.json` metadata beside it) scoring this topic's
    /// passing records; none disables it. Relative to the config file.
    pub anomaly_model: Option<PathBuf>,
    /// Label-consistency model (`.onnx` + `.json`); none disables it.
    pub label_model: Option<PathBuf>,
    /// Adversarial-example model (feature squeezing, `.onnx` + `.json`, `ingest-guard train`
    /// writes it for schemas with a tensor and a label); none disables it.
    pub adversarial_model: Option<PathBuf>,
    /// Anomaly score above which a record is quarantined (`score.anomaly`); unset: the
    /// model's calibrated threshold from its metadata.
    pub anomaly_threshold: Option<f64>,
    /// Label-consistency score (1 − p(given label)) above which a record is quarantined
    /// (`score.label`); unset: the model's calibrated threshold.
    pub label_threshold: Option<f64>,
    /// Adversarial score (the largest rise of log p(given label) under a squeezer) above
    /// which a record is quarantined (`score.adversarial`); unset: the calibrated threshold.
    pub adversarial_threshold: Option<f64>,
    /// SHA-256 the anomaly model's graph and metadata must hash to, together
    /// (`cat model.onnx model.json | sha256sum`); a file that does not match is refused at
    /// start and on every reload. Unset: not pinned.
    pub anomaly_model_sha256: Option<String>,
    /// As `anomaly_model_sha256`, for the label model.
    pub label_model_sha256: Option<String>,
    /// As `anomaly_model_sha256`, for the adversarial model.
    pub adversarial_model_sha256: Option<String>,
}

/// What the guard does with records that pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Forward passing records to `kafka.output_topic`, quarantine the rest.
    #[default]
    Enforce,
    /// Forward nothing; quarantine copies of suspects only (observe before enforcing).
    Monitor,
}

/// Batching and back-pressure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// `enforce` or `monitor`.
    pub mode: Mode,
    /// Most records in one per-partition batch.
    pub batch_max_records: usize,
    /// Longest a partial batch waits before it is dispatched, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// Batches that may wait between stages; when full the consumer pauses.
    pub channel_capacity: usize,
    /// Judge threads; partitions are sharded over them so per-partition order holds.
    /// `"auto"` (the default): one per core this process may use, as the kernel reports it
    /// (CPU affinity and cgroup CPU quota, so a pod limited to 4 CPUs gets 4), at most
    /// [`MAX_AUTO_WORKERS`]; or a number.
    pub workers: Workers,
    /// Longest a rebalance or shutdown waits for in-flight records to become durable, in ms.
    /// Shutdown as a whole never takes more than this plus `shutdown_grace_ms`.
    pub drain_timeout_ms: u64,
    /// Time allowed after `drain_timeout_ms` for the last quarantine files, profile
    /// publication and the producer's flush, in ms; past both the process exits 1 without
    /// waiting (what was not durable was not committed). Keep the two together under the
    /// orchestrator's grace period (Kubernetes' `terminationGracePeriodSeconds`).
    pub shutdown_grace_ms: u64,
    /// Memory the guard plans for, in MiB: librdkafka's fetch and queue sizes, batch and
    /// quarantine-queue sizes and the clean producer's queue are derived from it
    /// ([`Config::memory_plan`]; README "Memory" gives the formula for peak memory).
    pub memory_budget_mb: usize,
}

/// How many judge workers run ([`PipelineConfig::workers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per usable core ([`Workers::count`]).
    Auto,
    /// Exactly this many.
    Count(usize),
}

impl Workers {
    /// The number of workers to start: for `Auto`, [`std::thread::available_parallelism`]
    /// (which honours CPU affinity and the cgroup's CPU quota), capped at
    /// [`MAX_AUTO_WORKERS`]; 1 when the kernel does not say.
    pub fn count(self) -> usize {
        match self {
            Workers::Count(n) => n,
            Workers::Auto => std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(MAX_AUTO_WORKERS),
        }
    }
}

impl Serialize for Workers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => s.serialize_str("auto"),
            Workers::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of workers")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Workers, E> {
                usize::try_from(v).map(Workers::Count).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Workers, E> {
                usize::try_from(v)
                    .map(Workers::Count)
                    .map_err(|_| E::custom("workers must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Workers, E> {
                let v = v.trim();
                if v.eq_ignore_ascii_case("auto") {
                    return Ok(Workers::Auto);
                }
                v.parse::<usize>()
                    .map(Workers::Count)
                    .map_err(|_| E::custom(format!("expected \"auto\" or a number of workers, found {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            batch_max_records: DEFAULT_BATCH_MAX_RECORDS,
            batch_max_wait_ms: DEFAULT_BATCH_MAX_WAIT_MS,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            workers: Workers::Auto,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            memory_budget_mb: DEFAULT_MEMORY_BUDGET_MB,
        }
    }
}

/// The Parquet quarantine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct QuarantineConfig {
    /// Folder for quarantine files (`topic=…/partition=…/…parquet`); relative to the config file.
    /// With `url` set, it holds only the review audit log (`_review`).
    pub dir: PathBuf,
    /// Object storage for quarantine files instead of `dir`: `s3://bucket` or
    /// `s3://bucket/prefix`, on AWS S3 or an S3-compatible service (`endpoint`). Credentials come
    /// from the environment as the AWS SDKs read them (`AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, web identity / IRSA, container credentials), never from this
    /// file. Every write is a conditional put (`If-None-Match: *`): a file is never replaced.
    /// Unset (the default): the local folder `dir`.
    pub url: Option<String>,
    /// Endpoint of an S3-compatible service, e.g. `http://minio.storage:9000`; unset: AWS (or
    /// `AWS_ENDPOINT` from the environment).
    pub endpoint: Option<String>,
    /// Region of the bucket; unset: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Allow an `http://` endpoint (a service inside the cluster network, tests); off: TLS only.
    pub allow_http: bool,
    /// Longest one object storage request may take, retries included, in milliseconds. A
    /// request that runs out is a failed write: retried, not committed, reported not-ready.
    pub request_timeout_ms: u64,
    /// A partition's open file is written once it holds this many rows.
    pub roll_max_rows: usize,
    /// ... or this many payload bytes.
    pub roll_max_bytes: usize,
    /// ... or its oldest row is this old, in milliseconds (bounds commit latency).
    pub roll_max_age_ms: u64,
    /// Payload bytes kept for a record over `limits.max_bytes` (the rest is dropped, the
    /// original length is recorded).
    pub oversize_prefix_bytes: usize,
    /// zstd compression level.
    pub zstd_level: i32,
    /// Back-off between retries of a failed write, in milliseconds.
    pub retry_backoff_ms: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_QUARANTINE_DIR),
            url: None,
            endpoint: None,
            region: None,
            allow_http: false,
            request_timeout_ms: DEFAULT_OBJECT_REQUEST_TIMEOUT_MS,
            roll_max_rows: DEFAULT_ROLL_MAX_ROWS,
            roll_max_bytes: DEFAULT_ROLL_MAX_BYTES,
            roll_max_age_ms: DEFAULT_ROLL_MAX_AGE_MS,
            oversize_prefix_bytes: DEFAULT_OVERSIZE_PREFIX_BYTES,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS,
        }
    }
}

/// HTTP server for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on; loopback by default. Off loopback, `run` needs reviewers
    /// (`[[review.reviewers]]`, who authorize operator actions) or `metrics_only`.
    pub listen: String,
    /// Serve only `/metrics`, `/healthz` and `/readyz`: no dashboard, statistics or operator
    /// endpoints (for a port exposed to a scraper and nothing else).
    pub metrics_only: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            metrics_only: false,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `ingest_guard=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// What `pipeline.memory_budget_mb` buys, part by part. Every size that holds records
/// (compressed on the wire, decompressed in librdkafka's queue, copied into batches, waiting
/// for the quarantine, waiting in the producer) is a fixed share of the budget, so peak memory
/// follows from one number (README "Memory"). librdkafka properties set explicitly in
/// `kafka.consumer_properties` / `kafka.producer_properties` still win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The budget in bytes.
    pub budget: usize,
    /// `fetch.max.bytes` and `max.partition.fetch.bytes`: budget / 65536 (4 KiB to 1 MiB).
    /// Compressed bytes per fetch (at least one batch); what they expand to inside librdkafka,
    /// before the guard sees a byte, is bounded by the codec's ratio. Small fetches cost no
    /// throughput here: the guard, not the fetch, is the bottleneck (BENCHMARKS.md).
    pub fetch_max_bytes: usize,
    /// `receive.message.max.bytes`: three times `limits.max_record_bytes` plus 64 KiB. Room
    /// for the largest batch a broker may send; librdkafka also caps a zstd batch's
    /// decompressed size at it, and when a producer did not record that size it grows its
    /// buffer threefold at a time, so a batch of one `max_record_bytes` needs up to three
    /// times that here.
    pub receive_message_max_bytes: usize,
    /// `queued.max.messages.kbytes`: budget / 16 of decompressed messages.
    pub queued_max_kbytes: u64,
    /// Records per batch are also cut at this many bytes: budget / 64.
    pub batch_max_bytes: usize,
    /// Quarantine rows waiting to be durable (queued and buffered): budget / 16.
    pub quarantine_bytes: usize,
    /// The clean producer's `queue.buffering.max.kbytes`: budget / 16.
    pub producer_queue_kbytes: u64,
}

/// One configuration problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or `environment`) the problem comes from.
    pub file: String,
    /// Dotted key, e.g. `kafka.brokers` or `routes[1].schema`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.message)
    }
}

/// Loading failed; every problem found is listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One or more problems; see the list.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
        }
    }
}

/// A loaded config and the problems found so far (empty when valid).
#[derive(Debug)]
pub struct Loaded {
    /// The config (defaults where the file could not be read).
    pub config: Config,
    /// Every problem found; `check` prints them all.
    pub problems: Vec<Problem>,
}

/// A configuration that passed every check: what [`Config::load`] and [`Config::validated`]
/// return and what the run path takes, so a guard cannot start on an unchecked one. Read
/// through `Deref`; [`Validated::into_inner`] gives the plain config back (changing it then
/// means checking it again).
#[derive(Debug, Clone)]
pub struct Validated(Config);

impl std::ops::Deref for Validated {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

impl Validated {
    /// The checked configuration, for parts that take it by value.
    pub fn into_inner(self) -> Config {
        self.0
    }
}

impl Config {
    /// Load `path` with environment overrides from the process and validate it.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let loaded = Self::load_lenient(path, std::env::vars());
        if loaded.problems.is_empty() {
            Ok(Validated(loaded.config))
        } else {
            Err(ConfigError::Invalid(loaded.problems))
        }
    }

    /// Check a configuration built in code (paths already resolved): every problem, or the
    /// validated configuration.
    pub fn validated(self, file: &str) -> Result<Validated, ConfigError> {
        let problems = self.validate(file);
        if problems.is_empty() {
            Ok(Validated(self))
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Load and validate, collecting problems instead of stopping at the first one.
    pub fn load_lenient(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Loaded {
        let file = path.display().to_string();
        let mut problems = Vec::new();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem {
                    file,
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                });
                return Loaded {
                    config: Config::default(),
                    problems,
                };
            }
        };
        let mut config = Self::parse_str(&text, &file, env, &mut problems);
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        problems.extend(config.read_secret_files(base, &file));
        problems.extend(config.validate(&file));
        Loaded { config, problems }
    }

    /// Parse TOML text plus environment overrides; problems are appended.
    pub fn parse_str(
        text: &str,
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
        problems: &mut Vec<Problem>,
    ) -> Config {
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem {
                    file: file.into(),
                    key: String::new(),
                    message: e.to_string(),
                });
                return Config::default();
            }
        };
        // Environment overrides: a value becomes a TOML number, boolean or array only where
        // the key is not a string (a password of digits stays a string).
        let defaults = toml::Value::try_from(Config::default()).ok();
        let mut overrides: Vec<(Vec<String>, String, String)> = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            if path.iter().any(String::is_empty) {
                problems.push(Problem {
                    file: "environment".into(),
                    key: name,
                    message: "empty key segment".into(),
                });
                continue;
            }
            overrides.push((path, value, name));
        }
        let mut secrets: Vec<String> = Vec::new();
        for (path, value, _) in &overrides {
            if is_secret_key(&path.join(".")) && !value.is_empty() {
                secrets.push(value.clone());
            }
        }
        collect_file_secrets(&table, &mut Vec::new(), &mut secrets);
        let from_env: Vec<String> = overrides.iter().map(|(p, _, _)| p.join(".")).collect();
        let mut as_string: Vec<bool> = overrides
            .iter()
            .map(|(path, _, _)| string_typed(defaults.as_ref(), &table, path))
            .collect();
        let base = table;
        let mut attempt = 0;
        let (result, unknown) = loop {
            let mut table = base.clone();
            for ((path, value, _), string) in overrides.iter().zip(&as_string) {
                let v = if *string {
                    toml::Value::String(value.clone())
                } else {
                    parse_env_value(value)
                };
                set_path(&mut table, path, v);
            }
            let mut unknown = Vec::new();
            let result: Result<Config, _> =
                serde_ignored::deserialize(toml::Value::Table(table), |p| unknown.push(p.to_string()));
            // A key whose type is not known from the defaults (an unset option) was guessed
            // from its text; if that guess fails to deserialize, try it as a string once.
            let guessed: Vec<usize> = as_string
                .iter()
                .enumerate()
                .filter(|(i, s)| !**s && !matches!(parse_env_value(&overrides[*i].1), toml::Value::String(_)))
                .map(|(i, _)| i)
                .collect();
            if result.is_err() && attempt == 0 && !guessed.is_empty() {
                for i in guessed {
                    if lookup(defaults.as_ref(), &overrides[i].0).is_none() {
                        as_string[i] = true;
                    }
                }
                attempt += 1;
                continue;
            }
            break (result, unknown);
        };
        for key in unknown {
            let origin = if from_env.iter().any(|e| e == &key) {
                "environment"
            } else {
                file
            };
            problems.push(Problem {
                file: origin.into(),
                key,
                message: "unknown key".into(),
            });
        }
        let config = match result {
            Ok(c) => c,
            Err(e) => {
                problems.push(Problem {
                    file: file.into(),
                    key: String::new(),
                    message: e.to_string(),
                });
                Config::default()
            }
        };
        for p in problems.iter_mut() {
            p.message = redact(&p.message, &secrets);
        }
        config
    }

    /// Resolve relative schema and quarantine paths against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for r in &mut self.routes {
            if r.schema.is_relative() && !r.schema.as_os_str().is_empty() {
                r.schema = base.join(&r.schema);
            }
            for p in [
                &mut r.baseline,
                &mut r.anomaly_model,
                &mut r.label_model,
                &mut r.adversarial_model,
            ] {
                if let Some(b) = p.as_mut().filter(|b| b.is_relative()) {
                    *b = base.join(&*b);
                }
            }
        }
        if let Some(l) = self.scoring.library.as_mut().filter(|l| l.is_relative()) {
            *l = base.join(&*l);
        }
        if self.quarantine.dir.is_relative() {
            self.quarantine.dir = base.join(&self.quarantine.dir);
        }
        if let Some(d) = self.review.audit_dir.as_mut().filter(|d| d.is_relative()) {
            *d = base.join(&*d);
        }
    }

    /// Replace every librdkafka property `K_file = "path"` (in `kafka.properties`,
    /// `kafka.consumer_properties` or `kafka.producer_properties`) by `K` = the file's text,
    /// one trailing newline removed: secrets mounted as files (a Kubernetes `Secret`, systemd
    /// credentials) never sit in the TOML. Relative paths are resolved against `base`.
    /// Problems name the key and the path, never the content.
    pub fn read_secret_files(&mut self, base: &Path, file: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let k = &mut self.kafka;
        for (table, map) in [
            ("kafka.properties", &mut k.properties),
            ("kafka.consumer_properties", &mut k.consumer_properties),
            ("kafka.producer_properties", &mut k.producer_properties),
        ] {
            let keys: Vec<String> = map
                .keys()
                .filter(|k| k.ends_with(SECRET_FILE_SUFFIX))
                .cloned()
                .collect();
            for key in keys {
                let Some(path) = map.remove(&key) else { continue };
                let target = key.trim_end_matches(SECRET_FILE_SUFFIX).to_owned();
                let mut bad = |message: String| {
                    out.push(Problem {
                        file: file.into(),
                        key: format!("{table}.{key}"),
                        message,
                    });
                };
                if target.is_empty() {
                    bad("names no property".into());
                    continue;
                }
                if map.contains_key(&target) {
                    bad(format!("{target:?} is set as well: set one of the two"));
                    continue;
                }
                let full = base.join(&path);
                match read_secret_file(&full) {
                    Ok(v) => {
                        map.insert(target, v);
                    }
                    Err(e) => bad(format!("{}: {e}", full.display())),
                }
            }
        }
        out
    }

    /// The sizes derived from `pipeline.memory_budget_mb` ([`MemoryPlan`]).
    pub fn memory_plan(&self) -> MemoryPlan {
        let budget = self.pipeline.memory_budget_mb.max(MIN_MEMORY_BUDGET_MB) << 20;
        let fetch_max_bytes = (budget / 65_536).clamp(4 << 10, 1 << 20);
        let receive_message_max_bytes = self
            .limits
            .max_record_bytes
            .saturating_mul(3)
            .saturating_add(64 << 10)
            .max(fetch_max_bytes + 512)
            .min(1_000_000_000);
        MemoryPlan {
            budget,
            fetch_max_bytes,
            receive_message_max_bytes,
            queued_max_kbytes: self.kafka.queued_max_kbytes.unwrap_or((budget / 16 / 1024) as u64),
            batch_max_bytes: batch_max_bytes(budget, self.pipeline.workers.count(), self.pipeline.channel_capacity),
            quarantine_bytes: budget / 16,
            producer_queue_kbytes: (budget / 16 / 1024) as u64,
        }
    }

    /// The `[flood]` section's ranges.
    fn check_flood(&self, bad: &mut impl FnMut(&str, String)) {
        let f = &self.flood;
        if f.window_records == 0 || f.window_records > 100_000 {
            bad("flood.window_records", "must be 1 … 100000".into());
        }
        if f.min_copies < 2 {
            bad("flood.min_copies", "must be at least 2".into());
        }
        if !(f.alpha > 0.0 && f.alpha < 1.0) {
            bad("flood.alpha", "must be in (0, 1)".into());
        }
        if !(f.rate > 0.0 && f.rate <= 1.0) {
            bad("flood.rate", "must be in (0, 1]".into());
        }
        if f.max_sources == 0 || f.max_sources > 100_000 {
            bad("flood.max_sources", "must be 1 … 100000".into());
        }
        if !(0.0..=1.0).contains(&f.block_quarantine_share) {
            bad("flood.block_quarantine_share", "must be in [0, 1]".into());
        }
        if f.block_quarantine_records == 0 {
            bad("flood.block_quarantine_records", "must be at least 1".into());
        }
        if f.blocks_topic.as_deref().is_some_and(str::is_empty) {
            bad(
                "flood.blocks_topic",
                "must not be empty (leave it unset instead)".into(),
            );
        }
    }

    /// Cross-field checks without I/O. Returns every problem found, each naming the file
    /// and the key.
    pub fn validate(&self, file: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(Problem {
                file: file.into(),
                key: key.into(),
                message,
            });
        };
        self.check_kafka(&mut bad);
        self.check_routes(&mut bad);
        if self.scan.hold_records == 0 || self.scan.hold_records > 1_000_000 {
            bad("scan.hold_records", "must be 1 … 1000000".into());
        }
        if self.scan.hold_ms == 0 || self.scan.hold_ms > 3_600_000 {
            bad("scan.hold_ms", "must be 1 … 3600000 (an hour)".into());
        }
        if self.scan.window_records > 1_000_000 {
            bad("scan.window_records", "must be at most 1000000".into());
        }
        self.check_flood(&mut bad);
        self.check_sizes(&mut bad);
        self.check_server(&mut bad);
        self.check_quarantine(&mut bad);
        self.check_drift(&mut bad);
        self.check_review(&mut bad);
        out
    }

    /// Brokers, group, and librdkafka properties the guard cannot honour.
    fn check_kafka(&self, bad: &mut impl FnMut(&str, String)) {
        for (i, b) in self.kafka.brokers.split(',').enumerate() {
            if let Err(m) = check_broker(b.trim()) {
                bad("kafka.brokers", format!("entry {i} {b:?}: {m}"));
            }
        }
        if self.kafka.group_id.trim().is_empty() {
            bad("kafka.group_id", "must not be empty".into());
        }
        for (table, props) in [
            ("kafka.properties", &self.kafka.properties),
            ("kafka.consumer_properties", &self.kafka.consumer_properties),
        ] {
            if props
                .get("group.protocol")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("consumer"))
            {
                bad(
                    &format!("{table}.group.protocol"),
                    "the KIP-848 consumer group protocol is not supported: it is untested here (the test broker does not speak it); use the classic protocol, with partition.assignment.strategy = \"cooperative-sticky\" for incremental rebalances (tested)".into(),
                );
            }
        }
    }

    /// Routes (topics, schemas, model pins) and the output topic against them.
    fn check_routes(&self, bad: &mut impl FnMut(&str, String)) {
        if self.routes.is_empty() {
            bad(
                "routes",
                "at least one [[routes]] entry (topic and schema) is required".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if let Err(m) = check_topic(&r.topic) {
                bad(&format!("routes[{i}].topic"), m);
            }
            if !seen.insert(r.topic.clone()) {
                bad(
                    &format!("routes[{i}].topic"),
                    format!("topic {:?} is routed twice", r.topic),
                );
            }
            if r.schema.as_os_str().is_empty() {
                bad(&format!("routes[{i}].schema"), "missing schema file".into());
            }
            for (key, pin, model) in [
                ("anomaly_model_sha256", &r.anomaly_model_sha256, &r.anomaly_model),
                ("label_model_sha256", &r.label_model_sha256, &r.label_model),
                (
                    "adversarial_model_sha256",
                    &r.adversarial_model_sha256,
                    &r.adversarial_model,
                ),
            ] {
                if let Some(pin) = pin {
                    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bad(&format!("routes[{i}].{key}"), "must be 64 hex digits (sha256)".into());
                    }
                    if model.is_none() {
                        bad(
                            &format!("routes[{i}].{key}"),
                            "pins a model the route does not have".into(),
                        );
                    }
                }
            }
        }
        match (&self.pipeline.mode, &self.kafka.output_topic) {
            (Mode::Enforce, None) => bad("kafka.output_topic", "required when pipeline.mode = \"enforce\"".into()),
            (_, Some(t)) => {
                if let Err(m) = check_topic(t) {
                    bad("kafka.output_topic", m);
                }
                if self.routes.iter().any(|r| &r.topic == t) {
                    bad(
                        "kafka.output_topic",
                        format!("{t:?} is also an input topic (records would loop)"),
                    );
                }
            }
            (Mode::Monitor, None) => {}
        }
    }

    /// Limits, batch and file sizes, the memory budget, timeouts.
    fn check_sizes(&self, bad: &mut impl FnMut(&str, String)) {
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_bytes", l.max_bytes),
            ("limits.max_depth", l.max_depth),
            ("limits.max_fields", l.max_fields),
            ("limits.max_array_len", l.max_array_len),
            ("limits.max_string_len", l.max_string_len),
            ("limits.max_record_bytes", l.max_record_bytes),
            ("pipeline.batch_max_records", self.pipeline.batch_max_records),
            ("pipeline.channel_capacity", self.pipeline.channel_capacity),
            ("pipeline.workers", self.pipeline.workers.count()),
            ("quarantine.roll_max_rows", self.quarantine.roll_max_rows),
            ("quarantine.roll_max_bytes", self.quarantine.roll_max_bytes),
        ] {
            if v == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        if self.quarantine.roll_max_rows as i64 > guard_core::limits::MAX_ROWS_PER_QUARANTINE_FILE {
            bad(
                "quarantine.roll_max_rows",
                format!("at most {}", guard_core::limits::MAX_ROWS_PER_QUARANTINE_FILE),
            );
        }
        if self.pipeline.memory_budget_mb < MIN_MEMORY_BUDGET_MB {
            bad("pipeline.memory_budget_mb", format!("at least {MIN_MEMORY_BUDGET_MB}"));
        }
        if l.max_depth > guard_core::limits::MAX_CONFIGURABLE_DEPTH {
            bad(
                "limits.max_depth",
                format!("at most {}", guard_core::limits::MAX_CONFIGURABLE_DEPTH),
            );
        }
        if self.kafka.session_timeout_ms < 1_000 {
            bad("kafka.session_timeout_ms", "at least 1000".into());
        }
        if !(1..=22).contains(&self.quarantine.zstd_level) {
            bad("quarantine.zstd_level", "between 1 and 22".into());
        }
    }

    /// The listen address, and who may act on it.
    fn check_server(&self, bad: &mut impl FnMut(&str, String)) {
        match self.server.listen.parse::<std::net::SocketAddr>() {
            Err(_) => bad(
                "server.listen",
                format!("{:?} is not an ip:port address", self.server.listen),
            ),
            Ok(a) if !a.ip().is_loopback() && self.review.reviewers.is_empty() && !self.server.metrics_only => bad(
                "server.listen",
                format!(
                    "{a} is reachable from other machines, but no [[review.reviewers]] are configured to authorize operator actions (breaker clear, model reload) and the dashboard: add reviewers, or set server.metrics_only = true to serve only /metrics and the health routes"
                ),
            ),
            Ok(_) => {}
        }
    }

    /// Where quarantine files go (folder or object storage).
    fn check_quarantine(&self, bad: &mut impl FnMut(&str, String)) {
        if let Some(url) = &self.quarantine.url {
            let ok = url
                .strip_prefix("s3://")
                .is_some_and(|rest| !rest.split('/').next().unwrap_or("").is_empty());
            if !ok {
                bad(
                    "quarantine.url",
                    format!("{url:?}: expected s3://bucket or s3://bucket/prefix"),
                );
            }
        }
        if let Some(e) = &self.quarantine.endpoint {
            if e.starts_with("http://") && !self.quarantine.allow_http {
                bad(
                    "quarantine.endpoint",
                    format!("{e:?} is plain http: set quarantine.allow_http = true to allow it"),
                );
            } else if !e.starts_with("http://") && !e.starts_with("https://") {
                bad("quarantine.endpoint", format!("{e:?}: expected an http(s):// URL"));
            }
        }
        if self.quarantine.request_timeout_ms == 0 {
            bad("quarantine.request_timeout_ms", "must be greater than 0".into());
        }
        if self.quarantine.dir.as_os_str().is_empty() {
            bad("quarantine.dir", "must not be empty".into());
        }
    }

    /// Drift windows, alarms, the breaker, events and webhook.
    fn check_drift(&self, bad: &mut impl FnMut(&str, String)) {
        let d = &self.drift;
        if !(d.min_window_fraction > 0.0 && d.min_window_fraction <= 1.0) {
            bad("drift.min_window_fraction", "between 0 (exclusive) and 1".into());
        }
        for (key, v) in [
            ("drift.sliding_windows", d.sliding_windows),
            ("drift.webhook_queue", d.webhook_queue),
            ("drift.max_sources", d.max_sources),
            ("scoring.intra_threads", self.scoring.intra_threads),
            ("review.max_indexed_rows", self.review.max_indexed_rows),
            ("drift.alarm.consecutive", d.alarm.consecutive as usize),
            ("drift.alarm.clear_after", d.alarm.clear_after as usize),
        ] {
            if v == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        if !(d.breaker.max_quarantine_rate > 0.0 && d.breaker.max_quarantine_rate <= 1.0) {
            bad(
                "drift.breaker.max_quarantine_rate",
                "between 0 (exclusive) and 1".into(),
            );
        }
        if d.breaker.window_records == 0 {
            bad("drift.breaker.window_records", "must be greater than 0".into());
        }
        if !(d.alarm.fdr > 0.0 && d.alarm.fdr < 1.0) {
            bad("drift.alarm.fdr", "between 0 and 1 (exclusive)".into());
        }
        for (key, t) in [
            ("drift.events_topic", &d.events_topic),
            ("drift.profiles_topic", &d.profiles_topic),
        ] {
            if let Some(t) = t {
                if let Err(m) = check_topic(t) {
                    bad(key, m);
                }
                if self.routes.iter().any(|r| &r.topic == t) || self.kafka.output_topic.as_ref() == Some(t) {
                    bad(key, format!("{t:?} is also an input or output topic"));
                }
            }
        }
        if let Some(u) = &d.webhook_url {
            if !u.starts_with("http://") || u.len() <= "http://".len() {
                bad(
                    "drift.webhook_url",
                    format!(
                        "{u:?}: only http:// URLs are supported (put a TLS proxy or Alertmanager in front for https)"
                    ),
                );
            }
        }
    }

    /// Reviewers and the release topic.
    fn check_review(&self, bad: &mut impl FnMut(&str, String)) {
        for (i, r) in self.review.reviewers.iter().enumerate() {
            if r.name.trim().is_empty() || r.name.contains(|c: char| c == ':' || c.is_control()) {
                bad(
                    &format!("review.reviewers[{i}].name"),
                    "must be non-empty, without ':' or control characters".into(),
                );
            }
            if r.password_sha256.len() != 64 || !r.password_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                bad(
                    &format!("review.reviewers[{i}].password_sha256"),
                    "must be 64 hex digits (the SHA-256 of the password)".into(),
                );
            }
        }
        if let Some(t) = &self.review.release_topic {
            if let Err(m) = check_topic(t) {
                bad("review.release_topic", m);
            }
        }
    }
}

fn check_broker(b: &str) -> Result<(), String> {
    let (host, port) = b.rsplit_once(':').ok_or("expected host:port")?;
    let host = host.trim_start_matches("PLAINTEXT://").trim_start_matches("SSL://");
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err("bad host".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("bad port {port:?}")),
    }
}

fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 249 || t == "." || t == ".." {
        return Err(format!("{t:?} is not a valid topic name"));
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{t:?} may only contain ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Bytes of one batch: the batches that can be in flight at once (each worker's queue of
/// `channel_capacity`, the one it judges and the one being handed on) share 6/64 of the
/// budget, so the bound does not grow with the number of workers. At least 64 KiB.
fn batch_max_bytes(budget: usize, workers: usize, channel_capacity: usize) -> usize {
    let in_flight = workers.max(1).saturating_mul(channel_capacity.saturating_add(2));
    (budget / 64 * 6 / in_flight).max(64 << 10)
}

/// Suffix of a librdkafka property whose value is read from a file
/// ([`Config::read_secret_files`]).
pub const SECRET_FILE_SUFFIX: &str = "_file";

/// Largest secret file read, in bytes.
const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    f.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read as UTF-8 text: {}", e.kind()))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!("larger than {MAX_SECRET_FILE_BYTES} bytes"));
    }
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err("is empty".into());
    }
    Ok(text.to_owned())
}

fn parse_env_value(v: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_owned()))
}

/// True for keys whose values are secrets: they are never printed in errors or logs.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "sasl.",
        "ssl.key",
        "token",
        "credential",
        "password_sha256",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// librdkafka properties whose values are secrets (passwords, private keys, tokens). Narrower
/// than [`is_secret_key`]: a mechanism or a user name is not one.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "ssl.key.pem",
        "ssl_key",
        "ssl.keystore",
        "sasl.oauthbearer.config",
        "jaas",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Secrets written in the configuration text itself (librdkafka properties tables): `check`
/// and `run` warn about each, naming the environment variable or the `*_file` key to use.
pub fn plaintext_secrets(text: &str, file: &str) -> Vec<Problem> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(kafka) = table.get("kafka").and_then(toml::Value::as_table) else {
        return out;
    };
    for section in ["properties", "consumer_properties", "producer_properties"] {
        let Some(props) = kafka.get(section).and_then(toml::Value::as_table) else {
            continue;
        };
        for (k, v) in props {
            if is_secret_property(k) && !k.ends_with(SECRET_FILE_SUFFIX) && v.as_str().is_some_and(|s| !s.is_empty()) {
                out.push(Problem {
                    file: file.into(),
                    key: format!("kafka.{section}.{k}"),
                    message: format!(
                        "a secret written in the file: give it in the environment ({ENV_PREFIX}KAFKA__{}__{}) or as \"{k}{SECRET_FILE_SUFFIX}\" = \"/path/to/file\"",
                        section.to_ascii_uppercase(),
                        k.to_ascii_uppercase()
                    ),
                });
            }
        }
    }
    out
}

/// `text` with every secret value replaced by `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// String values of secret keys in the file (their text may surface in parse errors).
fn collect_file_secrets(table: &toml::Table, path: &mut Vec<String>, out: &mut Vec<String>) {
    for (k, v) in table {
        path.push(k.clone());
        match v {
            toml::Value::Table(t) => collect_file_secrets(t, path, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        collect_file_secrets(t, path, out);
                    }
                }
            }
            toml::Value::String(s) if is_secret_key(&path.join(".")) && !s.is_empty() => out.push(s.clone()),
            toml::Value::Integer(i) if is_secret_key(&path.join(".")) => out.push(i.to_string()),
            _ => {}
        }
        path.pop();
    }
}

fn lookup<'a>(root: Option<&'a toml::Value>, path: &[String]) -> Option<&'a toml::Value> {
    let mut cur = root?;
    for p in path {
        cur = cur.as_table()?.get(p)?;
    }
    Some(cur)
}

/// Whether an environment override at `path` is a string: the default (or the file's value)
/// there is a string, or its parent is a table of strings (librdkafka properties).
fn string_typed(defaults: Option<&toml::Value>, file: &toml::Table, path: &[String]) -> bool {
    let file_root = toml::Value::Table(file.clone());
    for root in [defaults, Some(&file_root)] {
        match lookup(root, path) {
            Some(toml::Value::String(_)) => return true,
            Some(_) => return false,
            None => {}
        }
    }
    // kafka.properties, kafka.consumer_properties, kafka.producer_properties: maps of strings.
    matches!(path, [a, b, ..] if a == "kafka" && b.ends_with("properties"))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(t) => cur = t,
            _ => return,
        }
    }
    cur.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
output_topic = "clean"
[[routes]]
topic = "in"
schema = "s.json"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> (Config, Vec<Problem>) {
        let mut problems = Vec::new();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::parse_str(text, "test.toml", env, &mut problems);
        problems.extend(c.validate("test.toml"));
        (c, problems)
    }

    #[test]
    fn good_config_has_no_problems() {
        let (c, p) = parse(GOOD, &[]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.pipeline.batch_max_records, DEFAULT_BATCH_MAX_RECORDS);
        assert_eq!(c.pipeline.workers, Workers::Auto);
    }

    #[test]
    fn workers_auto_uses_the_usable_cores_and_keeps_batches_within_the_budget() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(Workers::Auto.count(), cores.min(MAX_AUTO_WORKERS));
        for (text, want) in [
            ("\"auto\"", Workers::Auto),
            ("\"AUTO\"", Workers::Auto),
            ("4", Workers::Count(4)),
        ] {
            let (c, p) = parse(&format!("{GOOD}\n[pipeline]\nworkers = {text}\n"), &[]);
            assert!(p.is_empty(), "{p:?}");
            assert_eq!(c.pipeline.workers, want);
        }
        let (_, p) = parse(&format!("{GOOD}\n[pipeline]\nworkers = \"many\"\n"), &[]);
        assert!(p.iter().any(|p| p.message.contains("\"auto\" or a number")), "{p:?}");
        let (c, p) = parse(GOOD, &[("GUARD__PIPELINE__WORKERS", "auto")]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.pipeline.workers, Workers::Auto);
        // The bytes of all batches in flight stay the same share of the budget.
        let budget = 256usize << 20;
        assert_eq!(batch_max_bytes(budget, 1, 4), budget / 64);
        let total = |w: usize| batch_max_bytes(budget, w, 4) * w * 6;
        assert!(total(16) <= total(1) && total(16) > total(1) * 9 / 10);
    }

    #[test]
    fn reports_every_problem_with_key() {
        let text = format!("{GOOD}\n[pipeline]\nbogus = 1\nworkers = 0\n");
        let text = text.replace("127.0.0.1:9092", "not a host:99999");
        let (_, p) = parse(&text, &[]);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"pipeline.bogus"), "{p:?}");
        assert!(keys.contains(&"kafka.brokers"), "{p:?}");
        assert!(keys.contains(&"pipeline.workers"), "{p:?}");
        assert!(p.iter().all(|p| p.file == "test.toml"));
    }

    #[test]
    fn secrets_written_in_the_file_are_named_without_their_value() {
        let text = format!(
            "{GOOD}\n[kafka.properties]\n\"sasl.password\" = \"hunter2-x\"\n\"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"u\"\n\"ssl.key.password_file\" = \"k\"\n"
        );
        let w = plaintext_secrets(&text, "t.toml");
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].key, "kafka.properties.sasl.password");
        assert!(
            w[0].message.contains("GUARD__KAFKA__PROPERTIES__SASL.PASSWORD"),
            "{w:?}"
        );
        assert!(!format!("{w:?}").contains("hunter2"), "{w:?}");
        assert!(plaintext_secrets(GOOD, "t.toml").is_empty());
    }

    #[test]
    fn secrets_are_read_from_files_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("guard-secret-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("pw"), "s3cr3t-from-file\n");
        let text = format!(
            "{GOOD}\n[kafka.properties]\n\"sasl.password_file\" = \"pw\"\n[kafka.producer_properties]\n\"ssl.key.password_file\" = \"missing\"\n"
        );
        let (mut c, p) = parse(&text, &[]);
        assert!(p.is_empty(), "{p:?}");
        let p = c.read_secret_files(&dir, "test.toml");
        assert_eq!(
            c.kafka.properties.get("sasl.password").map(String::as_str),
            Some("s3cr3t-from-file")
        );
        assert!(!c.kafka.properties.contains_key("sasl.password_file"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "kafka.producer_properties.ssl.key.password_file");
        assert!(p[0].message.contains("missing"), "{p:?}");
        // Both forms at once is ambiguous.
        let text = format!("{GOOD}\n[kafka.properties]\n\"sasl.password_file\" = \"pw\"\n\"sasl.password\" = \"x\"\n");
        let (mut c, _) = parse(&text, &[]);
        let p = c.read_secret_files(&dir, "test.toml");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(!format!("{p:?}").contains("s3cr3t"), "{p:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_overrides_win_and_unknown_env_keys_are_named() {
        let (c, p) = parse(
            GOOD,
            &[("GUARD__KAFKA__GROUP_ID", "g2"), ("GUARD__PIPELINE__WORKERS", "3")],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.kafka.group_id, "g2");
        assert_eq!(c.pipeline.workers, Workers::Count(3));
        let (_, p) = parse(GOOD, &[("GUARD__KAFKA__NOPE", "1")]);
        assert_eq!(
            p,
            vec![Problem {
                file: "environment".into(),
                key: "kafka.nope".into(),
                message: "unknown key".into()
            }]
        );
    }

    #[test]
    fn env_strings_stay_strings_and_secrets_are_never_printed() {
        let (c, p) = parse(
            GOOD,
            &[
                ("GUARD__KAFKA__PROPERTIES__SASL.PASSWORD", "12345678"),
                ("GUARD__KAFKA__GROUP_ID", "4711"),
                ("GUARD__KAFKA__OUTPUT_TOPIC", "2024"),
                ("GUARD__PIPELINE__WORKERS", "2"),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c.kafka.properties.get("sasl.password").map(String::as_str),
            Some("12345678")
        );
        assert_eq!(c.kafka.group_id, "4711");
        assert_eq!(c.kafka.output_topic.as_deref(), Some("2024"));
        assert_eq!(c.pipeline.workers, Workers::Count(2));
        // A secret in a broken file never shows up in the problems.
        let text = format!("{GOOD}\n[kafka.properties]\n\"sasl.password\" = 99887766\n");
        let (_, p) = parse(&text, &[]);
        assert!(!p.is_empty());
        assert!(p.iter().all(|p| !p.message.contains("99887766")), "{p:?}");
        let (_, p) = parse(
            GOOD,
            &[
                ("GUARD__PIPELINE__WORKERS", "hunter2-secret"),
                ("GUARD__KAFKA__PROPERTIES__SSL.KEY.PASSWORD", "hunter2-secret"),
            ],
        );
        assert!(!p.is_empty());
        assert!(p.iter().all(|p| !p.message.contains("hunter2")), "{p:?}");
    }

    #[test]
    fn off_loopback_needs_reviewers_or_metrics_only() {
        let open = format!("{GOOD}\n[server]\nlisten = \"0.0.0.0:9898\"\n");
        let (_, p) = parse(&open, &[]);
        assert!(
            p.iter()
                .any(|p| p.key == "server.listen" && p.message.contains("metrics_only")),
            "{p:?}"
        );
        let (_, p) = parse(&format!("{open}metrics_only = true\n"), &[]);
        assert!(p.is_empty(), "{p:?}");
        let hash = "0".repeat(64);
        let (_, p) = parse(
            &format!("{open}\n[[review.reviewers]]\nname = \"ops\"\npassword_sha256 = \"{hash}\"\n"),
            &[],
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn the_untested_kip_848_protocol_is_refused() {
        let text = format!("{GOOD}\n[kafka.consumer_properties]\n\"group.protocol\" = \"consumer\"\n");
        let (_, p) = parse(&text, &[]);
        assert!(
            p.iter().any(|p| p.key == "kafka.consumer_properties.group.protocol"),
            "{p:?}"
        );
        let text = format!(
            "{GOOD}\n[kafka.consumer_properties]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"\n"
        );
        let (_, p) = parse(&text, &[]);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn enforce_needs_output_topic_that_is_not_an_input() {
        let (_, p) = parse(&GOOD.replace("output_topic = \"clean\"", ""), &[]);
        assert!(p.iter().any(|p| p.key == "kafka.output_topic"));
        let (_, p) = parse(&GOOD.replace("\"clean\"", "\"in\""), &[]);
        assert!(p
            .iter()
            .any(|p| p.key == "kafka.output_topic" && p.message.contains("loop")));
    }

    #[test]
    fn every_shipped_config_is_valid() {
        let dir = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
        )
        .join("../../config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let loaded = Config::load_lenient(&path, std::iter::empty());
                assert!(loaded.problems.is_empty(), "{}: {:?}", path.display(), loaded.problems);
                n += 1;
            }
        }
        assert!(n >= 1, "config/ has no .toml files");
    }
}
