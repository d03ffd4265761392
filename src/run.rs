//! `ingest-guard run`: wiring of source → judge workers → sink stage, plus telemetry and the
//! HTTP server, and graceful shutdown on SIGTERM/SIGINT.

use crate::build::{build_judge, init_metrics, init_tracing, quarantine_store, quarantine_where};
use anyhow::Context;
use guard_config::{Config, Mode};
use guard_core::lock;
use guard_core::{Batch, Health};
use guard_kafka::{CleanSink, Source, SourceSettings};
use guard_pipeline::AckTracker;
use guard_pipeline::{worker, BatchJudge, CleanOut, FlushSignal, QuarantineStage, QuarantineWork, Summary, WorkerCtx};
use guard_validate::Judge;
use metrics_exporter_prometheus::PrometheusHandle;
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
    for problem in crate::build::deliverability(&cfg, "config") {
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
        (Mode::Enforce, Some(topic)) => Some(Arc::new(CleanSink::new(
            &guard_kafka::producer_config(&cfg),
            guard_kafka::SinkSettings {
                topic: topic.clone(),
                provenance_header: cfg.kafka.provenance_header.clone(),
                backoff: Duration::from_millis(cfg.kafka.retry_backoff_ms),
                give_up: Duration::from_millis(cfg.kafka.sink_give_up_ms),
            },
            Arc::clone(&health),
        )?)),
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
    let sections = judge.sections();
    if guard_score::configured(&cfg) {
        guard_score::init(&cfg)?;
        // Read (and check the pins of) the model files once; every worker's sessions are
        // built from these bytes.
        let set = Arc::new(guard_score::ModelSet::read(&cfg)?);
        model_set = Some(Arc::clone(&set));
        for i in 0..workers_n {
            let (s, pr) = guard_score::Scoring::from_set(&cfg, &sections, &set)?;
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
        (Some(Some(first)), Some(set)) => Some(Arc::new(guard_score::Reloader::new(&cfg, sections, set, first))),
        _ => None,
    };
    if let (Some(r), true) = (&reloader, cfg.scoring.watch_interval_ms > 0) {
        guard_score::watch(Arc::clone(r), Duration::from_millis(cfg.scoring.watch_interval_ms))?;
    }
    let mut scorings = scorings.into_iter();
    let mut work_txs = Vec::new();
    let mut workers = Vec::new();
    for i in 0..workers_n {
        let (tx, rx) = mpsc::channel::<Batch>(p.channel_capacity);
        work_txs.push(tx);
        let ctx = WorkerCtx {
            stages: BatchJudge {
                judge: Arc::clone(&judge),
                drift: guard_drift::DriftWindows::new(Arc::clone(&hub)),
                scoring: scorings.next().flatten(),
                keep_scores: false,
            },
            clean: clean.clone().map(|c| -> Arc<dyn CleanOut> { c }),
            tracker: Arc::clone(&tracker),
            summary: Arc::clone(&summary),
            out: q_tx.clone(),
            late: late_tx.clone(),
            quarantine_budget: Arc::clone(&quarantine_budget),
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
    reloader: Option<&Arc<guard_score::Reloader>>,
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
            Arc::new(move || serde_json::to_value(status.status()).unwrap_or_default()),
            Arc::new(move || {
                reload
                    .reload("POST /api/models/reload")
                    .map(|s| serde_json::to_value(s).unwrap_or_default())
            }),
            authorize,
        ));
    }
    let stats_hub = Arc::clone(hub);
    app = app.merge(guard_server::stats_routes(Arc::new(move |scope: &str| {
        stats_hub.stats(scope == "group")
    })));
    Ok(app)
}
