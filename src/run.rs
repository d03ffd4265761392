//! `ingest-guard run`: wiring of source → judge workers → sink stage, plus telemetry and the
//! HTTP server, and graceful shutdown on SIGTERM/SIGINT.

use crate::stage::{worker, QuarantineStage, QuarantineWork, Summary, WorkerCtx};
use anyhow::Context;
use guard_config::{Config, LogFormat, Mode};
use guard_core::lock;
use guard_core::{Batch, Health};
use guard_kafka::{CleanSink, FlushSignal, Source, SourceSettings};
use guard_pipeline::AckTracker;
use guard_quarantine::{LocalDirStore, QuarantineStore};
use guard_validate::{DomainSchema, Judge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info};

/// Time allowed after `pipeline.drain_timeout_ms` for the last quarantine files, profile
/// publication and producer flush; shutdown never takes longer than the two together.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Latency buckets (seconds) for every `*_seconds` histogram.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for anomaly scores (reconstruction errors span orders of magnitude).
const ANOMALY_BUCKETS: &[f64] = &[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0];

/// Buckets for label-consistency scores (1 − p): the interesting part is close to 1.
const LABEL_BUCKETS: &[f64] = &[0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0];

pub fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("guard_score_anomaly".into()), ANOMALY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("guard_score_label".into()), LABEL_BUCKETS)?
        .install_recorder()?;
    describe_metrics();
    Ok(handle)
}

fn describe_metrics() {
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
    describe_counter!(
        "guard_source_records_total",
        Unit::Count,
        "Records consumed from input topics"
    );
    describe_counter!("guard_source_bytes_total", Unit::Bytes, "Payload bytes consumed");
    describe_counter!(
        "guard_pipeline_records_passed_total",
        Unit::Count,
        "Records that passed every check"
    );
    describe_counter!(
        "guard_pipeline_records_quarantined_total",
        Unit::Count,
        "Records quarantined, by primary reason"
    );
    describe_histogram!(
        "guard_pipeline_batch_duration_seconds",
        Unit::Seconds,
        "Time to judge one batch"
    );
    describe_histogram!(
        "guard_validate_record_max_duration_seconds",
        Unit::Seconds,
        "Slowest single record judged in each batch"
    );
    describe_gauge!(
        "guard_kafka_uncommitted_records",
        Unit::Count,
        "Records consumed but not yet committed (commit lag held by this instance)"
    );
    describe_counter!("guard_kafka_commits_total", Unit::Count, "Successful offset commits");
    describe_counter!(
        "guard_kafka_commit_failures_total",
        Unit::Count,
        "Failed offset commits (retried)"
    );
    describe_counter!(
        "guard_quarantine_files_written_total",
        Unit::Count,
        "Quarantine files made durable"
    );
    describe_counter!(
        "guard_quarantine_write_failures_total",
        Unit::Count,
        "Failed quarantine writes (retried)"
    );
    describe_counter!(
        "guard_sink_retries_total",
        Unit::Count,
        "Clean records re-sent after a failed delivery"
    );
    describe_gauge!("guard_health_ready", Unit::Count, "1 when /readyz reports ready");
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
    describe_counter!(
        "guard_stats_events_sent_total",
        Unit::Count,
        "Drift events delivered, by destination"
    );
    describe_counter!(
        "guard_stats_events_failed_total",
        Unit::Count,
        "Failed drift event deliveries (webhook attempts are retried)"
    );
    describe_counter!(
        "guard_stats_webhook_dropped_total",
        Unit::Count,
        "Webhook payloads dropped from the full retry queue"
    );
    describe_histogram!(
        "guard_score_anomaly",
        Unit::Count,
        "Anomaly score of every scored record (unitless)"
    );
    describe_histogram!(
        "guard_score_label",
        Unit::Count,
        "Label-consistency score (1 - p(given label)) of every scored record"
    );
    describe_histogram!(
        "guard_score_batch_duration_seconds",
        Unit::Seconds,
        "Model inference time per batch, by role"
    );
    describe_gauge!(
        "guard_score_provider_info",
        Unit::Count,
        "1 for the execution provider really scoring (cpu or cuda)"
    );
    describe_counter!(
        "guard_score_failures_total",
        Unit::Count,
        "Batches whose scoring failed (records held back with score.error)"
    );
    describe_counter!("guard_score_reloads_total", Unit::Count, "Model swaps published");
    describe_counter!(
        "guard_score_reload_failures_total",
        Unit::Count,
        "Model updates refused because the new files did not load"
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
    describe_gauge!(
        "guard_stats_webhook_queue",
        Unit::Count,
        "Webhook payloads waiting for delivery"
    );
    describe_counter!(
        "guard_sink_rejected_records_total",
        Unit::Count,
        "Records the clean topic refused for good, quarantined with sink.rejected"
    );
    describe_counter!(
        "guard_sink_headers_stripped_total",
        Unit::Count,
        "Inbound x-guard-* (and provenance) headers removed before forwarding"
    );
    describe_gauge!(
        "guard_pipeline_workers",
        Unit::Count,
        "Judge worker threads running (pipeline.workers; \"auto\": one per usable core)"
    );
    describe_counter!(
        "guard_pipeline_panics_total",
        Unit::Count,
        "Records whose judging panicked, quarantined with internal.panic"
    );
    describe_counter!(
        "guard_source_errors_total",
        Unit::Count,
        "Consume errors, by kind (unreadable_batch, other)"
    );
    describe_gauge!(
        "guard_source_unreadable_partitions",
        Unit::Count,
        "Partitions stuck on a batch the consumer cannot read (see /readyz)"
    );
    describe_counter!(
        "guard_quarantine_unreadable_files_total",
        Unit::Count,
        "Files in the quarantine folder that are not readable quarantine files (skipped)"
    );
    describe_counter!(
        "guard_stats_profiles_published_total",
        Unit::Count,
        "Partition views published to the profiles topic"
    );
}

pub fn build_judge(cfg: &Config) -> anyhow::Result<Judge> {
    let mut routes = HashMap::new();
    for r in &cfg.routes {
        let schema = DomainSchema::load(&r.schema)?;
        info!(topic = %r.topic, schema = %schema.id(), file = %r.schema.display(), "schema routed");
        routes.insert(r.topic.clone(), Arc::new(schema));
    }
    Ok(Judge::new(cfg.limits.clone(), routes))
}

type EventsRx = Option<mpsc::Receiver<guard_drift::DriftEvent>>;

/// The drift hub (topics with a baseline; sources of every topic), with the receiving end of
/// its event channel.
fn build_hub(cfg: &Config, judge: &Judge) -> anyhow::Result<(Arc<guard_drift::DriftHub>, EventsRx)> {
    let mut topics = HashMap::new();
    for r in &cfg.routes {
        if let (Some(path), Some(schema)) = (&r.baseline, judge.schema_for(&r.topic)) {
            let t = guard_drift::TopicDrift::load(path, schema.guard())?;
            info!(topic = %r.topic, baseline = %path.display(), rows = t.baseline.rows, window = t.baseline.window, "drift monitoring on");
            topics.insert(r.topic.clone(), t);
        }
    }
    let d = &cfg.drift;
    let (tx, rx) = if !topics.is_empty() && (d.events_topic.is_some() || d.webhook_url.is_some()) {
        let (tx, rx) = mpsc::channel(d.webhook_queue.max(16));
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let instance = if d.instance.is_empty() {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    } else {
        d.instance.clone()
    };
    let hub = guard_drift::DriftHub::new(
        topics,
        d,
        &cfg.kafka.group_id,
        &instance,
        guard_drift::HubOutputs { events: tx },
    );
    Ok((Arc::new(hub), rx))
}

/// Panics are logged through `tracing` with their message and location, without a
/// backtrace: resolving one reads the binary's debug information, about 170 MiB of memory
/// (measured), which would break the memory budget, and the judge workers contain a panic per
/// record. Set `INGEST_GUARD_PANIC_BACKTRACE=1` to log one for the first panic.
fn install_panic_hook() {
    static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let backtraces = std::env::var_os("INGEST_GUARD_PANIC_BACKTRACE").is_some_and(|v| v == "1");
    std::panic::set_hook(Box::new(move |info| {
        if backtraces && FIRST.swap(false, Ordering::Relaxed) {
            let backtrace = std::backtrace::Backtrace::force_capture();
            error!(panic = %info, %backtrace, "panic");
        } else {
            error!(panic = %info, "panic");
        }
    }));
}

pub fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    init_tracing(&cfg);
    install_panic_hook();
    for problem in crate::cli::deliverability(&cfg, "config") {
        tracing::warn!(%problem, "records over the producer's limit will be quarantined with sink.rejected (`check` refuses this configuration)");
    }
    let prom = init_metrics()?;
    let judge = Arc::new(build_judge(&cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("guard-rt")
        .build()
        .context("starting tokio runtime")?;
    rt.block_on(run_async(cfg, prom, judge))
}

/// The quarantine store the configuration names: object storage (`quarantine.url`) or the
/// local folder (`quarantine.dir`).
pub fn quarantine_store(cfg: &Config) -> anyhow::Result<Arc<dyn QuarantineStore>> {
    let q = &cfg.quarantine;
    Ok(match &q.url {
        Some(url) => Arc::new(
            guard_quarantine::ObjectStoreQuarantine::open(&guard_quarantine::ObjectSettings {
                url: url.clone(),
                endpoint: q.endpoint.clone(),
                region: q.region.clone(),
                allow_http: q.allow_http,
                request_timeout: Duration::from_millis(q.request_timeout_ms),
                credentials: None,
            })
            .with_context(|| format!("quarantine.url {url}"))?,
        ),
        None => Arc::new(LocalDirStore::new(&q.dir)),
    })
}

/// Where quarantine files go, for logs.
pub fn quarantine_where(cfg: &Config) -> String {
    cfg.quarantine
        .url
        .clone()
        .unwrap_or_else(|| cfg.quarantine.dir.display().to_string())
}

async fn run_async(cfg: Config, prom: PrometheusHandle, judge: Arc<Judge>) -> anyhow::Result<ExitCode> {
    let health = Arc::new(Health::default());
    let tracker = Arc::new(Mutex::new(AckTracker::new()));
    let flush = Arc::new(FlushSignal::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let p = &cfg.pipeline;
    let workers_n = p.workers.count();
    metrics::gauge!("guard_pipeline_workers").set(workers_n as f64);

    let settings = SourceSettings {
        topics: cfg.routes.iter().map(|r| r.topic.clone()).collect(),
        batch_max_records: p.batch_max_records,
        batch_max_bytes: cfg.memory_plan().batch_max_bytes,
        batch_max_wait: Duration::from_millis(p.batch_max_wait_ms),
        commit_interval: Duration::from_millis(cfg.kafka.commit_interval_ms),
        drain_timeout: Duration::from_millis(p.drain_timeout_ms),
        limits: cfg.limits.clone(),
        oversize_prefix_bytes: cfg.quarantine.oversize_prefix_bytes,
    };
    let source = Source::new(
        &guard_kafka::consumer_config(&cfg),
        settings,
        Arc::clone(&tracker),
        Arc::clone(&health),
        Arc::clone(&flush),
    )?;
    let prober = source.prober();
    let clean = match (p.mode, &cfg.kafka.output_topic) {
        (Mode::Enforce, Some(topic)) => Some(CleanSink::new(
            &guard_kafka::producer_config(&cfg),
            guard_kafka::SinkSettings {
                topic: topic.clone(),
                provenance_header: cfg.kafka.provenance_header.clone(),
                backoff: Duration::from_millis(cfg.kafka.retry_backoff_ms),
                give_up: Duration::from_millis(cfg.kafka.sink_give_up_ms),
            },
            Arc::clone(&health),
        )?),
        _ => None,
    };
    let store = quarantine_store(&cfg)?;

    // Stages, joined by bounded channels.
    let summary = Arc::new(Mutex::new(Summary {
        quarantine_dir: store.describe(),
        ..Summary::default()
    }));
    // Quarantine work items are small (rows of suspects only), so this channel is deeper: a
    // file write in progress must not stall the clean path.
    let (q_tx, q_rx) = mpsc::channel::<QuarantineWork>(p.channel_capacity * 16);
    let (late_tx, late_rx) = mpsc::unbounded_channel::<QuarantineWork>();
    let quarantine_budget = guard_pipeline::ByteBudget::new(cfg.memory_plan().quarantine_bytes);
    let (hub, events_rx) = build_hub(&cfg, &judge)?;
    let profile_stop = Arc::new(AtomicBool::new(false));
    let mut profile_task = None;
    if !hub.is_idle() {
        crate::events::ensure_topics(&cfg).await;
        if let Some(rx) = events_rx {
            tokio::spawn(crate::events::dispatch(cfg.clone(), rx));
        }
        crate::events::read_profiles(&cfg, Arc::clone(&hub), Arc::clone(&profile_stop))?;
        profile_task = Some(tokio::spawn(crate::events::publish_profiles(
            cfg.clone(),
            Arc::clone(&hub),
            Arc::clone(&profile_stop),
        )));
    }
    // Scoring: one set of sessions per judge worker (sessions run with &mut).
    let mut provider = None;
    let mut scorings = Vec::new();
    let mut model_set = None;
    if crate::score::configured(&cfg) {
        crate::score::init(&cfg)?;
        // Read (and check the pins of) the model files once; every worker's sessions are
        // built from these bytes.
        let set = Arc::new(crate::score::ModelSet::read(&cfg)?);
        model_set = Some(Arc::clone(&set));
        for i in 0..workers_n {
            let (s, pr) = crate::score::Scoring::from_set(&cfg, &judge, &set)?;
            if i == 0 {
                s.announce();
            }
            provider = pr;
            scorings.push(Some(s));
        }
        let name = provider.map_or("none", |p| p.as_str());
        info!(provider = name, requested = ?cfg.scoring.execution_provider, "scoring on");
        metrics::gauge!("guard_score_provider_info", "provider" => name).set(1.0);
    } else {
        scorings.resize_with(workers_n, || None);
    }
    let reloader = match (scorings.first(), model_set) {
        (Some(Some(first)), Some(set)) => Some(Arc::new(crate::score::Reloader::new(
            &cfg,
            Arc::clone(&judge),
            set,
            first,
        ))),
        _ => None,
    };
    if let (Some(r), true) = (&reloader, cfg.scoring.watch_interval_ms > 0) {
        crate::score::watch(Arc::clone(r), Duration::from_millis(cfg.scoring.watch_interval_ms))?;
    }
    let mut scorings = scorings.into_iter();
    let mut work_txs = Vec::new();
    let mut workers = Vec::new();
    for i in 0..workers_n {
        let (tx, rx) = mpsc::channel::<Batch>(p.channel_capacity);
        work_txs.push(tx);
        let ctx = WorkerCtx {
            judge: Arc::clone(&judge),
            clean: clean.clone(),
            tracker: Arc::clone(&tracker),
            summary: Arc::clone(&summary),
            out: q_tx.clone(),
            late: late_tx.clone(),
            quarantine_budget: Arc::clone(&quarantine_budget),
            drift: guard_drift::DriftWindows::new(Arc::clone(&hub)),
            scoring: scorings.next().flatten(),
            reloader: reloader.clone(),
        };
        workers.push(
            std::thread::Builder::new()
                .name(format!("guard-judge-{i}"))
                .spawn(move || worker(rx, ctx))
                .context("spawning judge worker")?,
        );
    }
    drop(q_tx);
    drop(late_tx);
    let stage = QuarantineStage::new(
        &cfg,
        Arc::clone(&tracker),
        Arc::clone(&health),
        Arc::clone(&flush),
        store,
        Arc::clone(&summary),
        quarantine_budget,
    );
    let quarantine_task = tokio::spawn(stage.run(q_rx, late_rx));

    // Broker probe and metrics upkeep.
    let probe_health = Arc::clone(&health);
    let probe_every = Duration::from_millis(cfg.kafka.probe_interval_ms);
    let prom_upkeep = prom.clone();
    tokio::spawn(async move {
        loop {
            let pr = prober.clone();
            let ok = tokio::task::spawn_blocking(move || pr.probe(Duration::from_secs(2)))
                .await
                .unwrap_or(false);
            probe_health.set_broker_reachable(ok);
            metrics::gauge!("guard_health_ready").set(if probe_health.is_ready() { 1.0 } else { 0.0 });
            prom_upkeep.run_upkeep();
            tokio::time::sleep(probe_every).await;
        }
    });

    // HTTP.
    let addr: std::net::SocketAddr = cfg.server.listen.parse().context("server.listen")?;
    let render: guard_server::RenderMetrics = Arc::new(move || prom.render());
    let mut extras = serde_json::Map::new();
    extras.insert("version".into(), guard_core::GUARD_VERSION.into());
    extras.insert("mode".into(), format!("{:?}", p.mode).to_lowercase().into());
    extras.insert(
        "scoring_provider".into(),
        provider.map_or("none", |p| p.as_str()).into(),
    );
    let facts = extras.clone();
    let mut app = guard_server::router(Arc::clone(&health), render, Arc::new(extras));
    if !cfg.server.metrics_only {
        app = app.merge(operator_routes(&cfg, &hub, reloader.as_ref(), &summary, facts).await?);
    }
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(guard_server::serve(addr, app, async move {
        let _ = http_stop_rx.await;
    }));

    let consumer = source.spawn(work_txs, Arc::clone(&shutdown))?;
    info!(mode = ?p.mode, workers = workers_n, quarantine = %quarantine_where(&cfg), "ingest-guard running");

    // Wait for a signal, or for the consumer or the server to stop on their own.
    let consumer_done = tokio::task::spawn_blocking(move || consumer.join().is_ok());
    tokio::pin!(consumer_done);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut failed = false;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = sigterm.recv() => info!("SIGTERM: shutting down"),
        r = &mut consumer_done => { error!(joined = ?r, "consumer stopped unexpectedly"); failed = true; }
        r = http => { error!(result = ?r, "http server stopped"); failed = true; }
    }
    health.set_shutting_down();
    shutdown.store(true, Ordering::Relaxed);
    // Shutdown is bounded in every state (a broker refusing every record, a full disk): past
    // the drain timeout plus the final flushes, the process exits without waiting. Nothing is
    // lost: what was not durable was not committed, and the next owner reads it again.
    let limit = Duration::from_millis(p.drain_timeout_ms) + SHUTDOWN_GRACE;
    std::thread::Builder::new()
        .name("guard-shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            error!(
                seconds = limit.as_secs(),
                "shutdown did not finish in time; exiting now (uncommitted records will be read again)"
            );
            std::process::exit(1);
        })
        .context("starting the shutdown watchdog")?;
    if !failed {
        let _ = (&mut consumer_done).await;
    }
    // The consumer has drained and committed what was durable: stop retrying deliveries that
    // can no longer be committed from here (a failing clean topic would otherwise hold the
    // workers).
    if let Some(c) = &clean {
        c.abandon();
    }
    for w in workers {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    quarantine_task.await.context("quarantine stage")?;
    // Publish the last partition views, then stop reading the group's.
    profile_stop.store(true, Ordering::Relaxed);
    if let Some(t) = profile_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    if let Some(c) = &clean {
        c.flush(Duration::from_secs(10));
    }
    let summary = lock(&summary).clone();
    let _ = http_stop_tx.send(());
    info!(
        records_in = summary.records_in,
        passed = summary.passed,
        quarantined = summary.quarantined,
        files = summary.quarantine_files,
        "stopped"
    );
    println!("{}", serde_json::to_string(&serde_json::json!({ "summary": summary }))?);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Statistics, operator endpoints and (when enabled) the review dashboard. State-changing
/// operator requests need a reviewer, their CSRF token and a same-origin `Origin`, checked by
/// the same code as the dashboard's own actions.
#[allow(clippy::result_large_err)] // the refusal is the HTTP response itself
async fn operator_routes(
    cfg: &Config,
    hub: &Arc<guard_drift::DriftHub>,
    reloader: Option<&Arc<crate::score::Reloader>>,
    summary: &Arc<Mutex<Summary>>,
    facts: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<axum::Router> {
    let mut app = axum::Router::new();
    let mut review = None;
    if cfg.review.enabled {
        let review_hub = Arc::clone(hub);
        let review_summary = Arc::clone(summary);
        let counters: Arc<dyn Fn() -> serde_json::Value + Send + Sync> =
            Arc::new(move || serde_json::to_value(&*lock(&review_summary)).unwrap_or(serde_json::Value::Null));
        let live = guard_review::Live {
            stats: Some(Arc::new(move || review_hub.stats(false))),
            facts,
            counters: Some(Arc::clone(&counters)),
            counter_history: Some(crate::review::sampler(counters, Duration::from_secs(10), 360)),
            history: Some(crate::review::drift_history(
                Arc::clone(hub),
                Duration::from_secs(10),
                360,
            )),
            features_of: crate::review::features_of(cfg),
        };
        let publisher: Option<Arc<dyn guard_review::Publisher>> = match cfg.kafka.output_topic {
            Some(_) => Some(Arc::new(crate::review::KafkaPublisher::new(cfg)?)),
            None => None,
        };
        let c = cfg.clone();
        let r = tokio::task::spawn_blocking(move || crate::review::open(&c, publisher, live))
            .await
            .context("opening the review service")??;
        crate::review::spawn_refresh(
            Arc::clone(&r),
            Duration::from_millis(cfg.review.refresh_interval_ms.max(100)),
        );
        app = app.merge(guard_review::http::routes(Arc::clone(&r)));
        review = Some(r);
    }
    let authorize: guard_server::Authorize = match review {
        Some(r) => Arc::new(move |h| guard_review::http::check_action(r.auth(), h).map(|id| id.name)),
        None => {
            let auth = Arc::new(crate::review::auth(cfg)?);
            Arc::new(move |h| guard_review::http::check_action(&auth, h).map(|id| id.name))
        }
    };
    let (status_hub, clear_hub) = (Arc::clone(hub), Arc::clone(hub));
    app = app.merge(guard_server::breaker_routes(
        Arc::new(move || status_hub.breaker().status()),
        Arc::new(move || clear_hub.breaker().clear()),
        Arc::clone(&authorize),
    ));
    if let Some(r) = reloader {
        let (status, reload) = (Arc::clone(r), Arc::clone(r));
        app = app.merge(guard_server::model_routes(
            Arc::new(move || status.status()),
            Arc::new(move || reload.reload("POST /api/models/reload")),
            authorize,
        ));
    }
    let stats_hub = Arc::clone(hub);
    app = app.merge(guard_server::stats_routes(Arc::new(move |scope: &str| {
        stats_hub.stats(scope == "group")
    })));
    Ok(app)
}
