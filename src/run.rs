//! `ingest-guard run`: wiring of source → judge workers → sink stage, plus telemetry and the
//! HTTP server, and graceful shutdown on SIGTERM/SIGINT.

use crate::build::{build_judge, init_metrics, init_tracing, quarantine_store, quarantine_where};
use anyhow::Context;
use guard_config::{Config, Mode, Validated};
use guard_core::lock;
use guard_core::{Batch, Health};
use guard_kafka::{CleanSink, Source, SourceSettings};
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
    )
    .with_floods(&cfg.flood);
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

/// Run a guard on a checked configuration until a signal or a stage stops it.
pub fn run(cfg: Validated) -> anyhow::Result<ExitCode> {
    let cfg = cfg.into_inner();
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

/// What every part of a running guard shares.
struct Shared {
    health: Arc<Health>,
    flush: Arc<FlushSignal>,
    shutdown: Arc<AtomicBool>,
    summary: Arc<Mutex<Summary>>,
}

/// Build the stages from the configuration, start them, wait for a signal (or a stage that
/// stops on its own), then shut down in order: drain the source, stop the workers, write the
/// last quarantine files, flush the clean producer.
async fn run_async(cfg: Config, prom: PrometheusHandle, judge: Arc<Judge>) -> anyhow::Result<ExitCode> {
    let store = quarantine_store(&cfg)?;
    let shared = Shared {
        health: Arc::new(Health::default()),
        flush: Arc::new(FlushSignal::default()),
        shutdown: Arc::new(AtomicBool::new(false)),
        summary: Arc::new(Mutex::new(Summary {
            quarantine_dir: store.describe(),
            ..Summary::default()
        })),
    };
    let source = build_source(&cfg, &shared)?;
    let clean = build_clean(&cfg, &shared.health)?;
    let drift = start_drift(&cfg, &judge).await?;
    let scoring = load_scoring(&cfg, &judge)?;
    // Stages, joined by bounded channels. Quarantine work items are small (rows of suspects
    // only), so that channel is deeper: a file write in progress must not stall the clean path.
    let (q_tx, q_rx) = mpsc::channel::<QuarantineWork>(cfg.pipeline.channel_capacity * 16);
    let (late_tx, late_rx) = mpsc::unbounded_channel::<QuarantineWork>();
    let budget = guard_pipeline::ByteBudget::new(cfg.memory_plan().quarantine_bytes);
    let (work_txs, workers) = spawn_workers(&cfg, scoring.per_worker, || WorkerCtx {
        stages: BatchJudge {
            judge: Arc::clone(&judge),
            drift: guard_drift::DriftWindows::new(Arc::clone(&drift.hub)),
            scoring: None,
            keep_scores: false,
        },
        clean: clean.clone().map(|c| -> Arc<dyn CleanOut> { c }),
        summary: Arc::clone(&shared.summary),
        out: q_tx.clone(),
        late: late_tx.clone(),
        quarantine_budget: Arc::clone(&budget),
        reloader: scoring.reloader.clone(),
        scan: cfg.scan.enabled.then(|| cfg.scan.clone()),
    })?;
    drop((q_tx, late_tx));
    let stage = QuarantineStage::new(
        &cfg,
        Arc::clone(&shared.health),
        Arc::clone(&shared.flush),
        store,
        Arc::clone(&shared.summary),
        budget,
    );
    let quarantine_task = tokio::spawn(stage.run(q_rx, late_rx));
    spawn_probe(source.prober(), Arc::clone(&shared.health), &cfg, prom.clone());
    let (http, http_stop) = start_http(
        &cfg,
        &shared,
        prom,
        scoring.provider,
        &drift.hub,
        scoring.reloader.as_ref(),
    )
    .await?;

    let consumer = source.spawn(work_txs, Arc::clone(&shared.shutdown))?;
    info!(mode = ?cfg.pipeline.mode, workers = workers.len(), quarantine = %quarantine_where(&cfg), "ingest-guard running");
    let consumer_done = tokio::task::spawn_blocking(move || consumer.join().is_ok());
    tokio::pin!(consumer_done);
    let failed = wait_for_stop(&mut consumer_done, http).await?;

    shared.health.set_shutting_down();
    shared.shutdown.store(true, Ordering::Relaxed);
    // Shutdown never takes longer than the drain and the grace together.
    start_watchdog(Duration::from_millis(
        cfg.pipeline
            .drain_timeout_ms
            .saturating_add(cfg.pipeline.shutdown_grace_ms),
    ))?;
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
    drift.stop().await;
    if let Some(c) = &clean {
        c.flush(Duration::from_secs(10));
    }
    let _ = http_stop.send(());
    report(&shared.summary)?;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The consumer-group source: batches by records, bytes and time; commits what is durable.
fn build_source(cfg: &Config, shared: &Shared) -> anyhow::Result<Source> {
    let p = &cfg.pipeline;
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
    Ok(Source::new(
        &guard_kafka::consumer_config(cfg),
        settings,
        Arc::clone(&shared.health),
        Arc::clone(&shared.flush),
    )?)
}

/// The clean topic's producer (enforce mode with an output topic only).
fn build_clean(cfg: &Config, health: &Arc<Health>) -> anyhow::Result<Option<Arc<CleanSink>>> {
    let (Mode::Enforce, Some(topic)) = (cfg.pipeline.mode, &cfg.kafka.output_topic) else {
        return Ok(None);
    };
    let settings = guard_kafka::SinkSettings {
        topic: topic.clone(),
        provenance_header: cfg.kafka.provenance_header.clone(),
        backoff: Duration::from_millis(cfg.kafka.retry_backoff_ms),
        give_up: Duration::from_millis(cfg.kafka.sink_give_up_ms),
    };
    let sink = CleanSink::new(&guard_kafka::producer_config(cfg), settings, Arc::clone(health))?;
    Ok(Some(Arc::new(sink)))
}

/// The drift hub and what carries its state out of the process (events, webhook, profiles).
struct Drift {
    hub: Arc<guard_drift::DriftHub>,
    profile_stop: Arc<AtomicBool>,
    profile_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drift {
    /// Publish the last partition views, then stop reading the group's.
    async fn stop(self) {
        self.profile_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.profile_task {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

async fn start_drift(cfg: &Config, judge: &Judge) -> anyhow::Result<Drift> {
    let (hub, events_rx) = build_hub(cfg, judge)?;
    let profile_stop = Arc::new(AtomicBool::new(false));
    let mut profile_task = None;
    if !hub.is_idle() {
        guard_kafka::side::ensure_topics(cfg).await;
        if let Some(rx) = events_rx {
            tokio::spawn(crate::events::dispatch(cfg.clone(), rx));
        }
        guard_kafka::side::read_side(cfg, Arc::clone(&hub) as _, Arc::clone(&profile_stop))?;
        profile_task = Some(tokio::spawn(guard_kafka::side::publish_side(
            cfg.clone(),
            Arc::clone(&hub) as _,
            Arc::clone(&profile_stop),
        )));
    }
    Ok(Drift {
        hub,
        profile_stop,
        profile_task,
    })
}

/// Every worker's scoring sessions, the provider really in use, and the hot-swap reloader.
struct ScoringSetup {
    per_worker: Vec<Option<guard_score::Scoring>>,
    provider: Option<guard_score::ProviderInUse>,
    reloader: Option<Arc<guard_score::Reloader>>,
}

/// One set of sessions per judge worker (sessions run with `&mut`), built from the model
/// files read (and pin-checked) once.
fn load_scoring(cfg: &Config, judge: &Judge) -> anyhow::Result<ScoringSetup> {
    let workers_n = cfg.pipeline.workers.count();
    if !guard_score::configured(cfg) {
        return Ok(ScoringSetup {
            per_worker: (0..workers_n).map(|_| None).collect(),
            provider: None,
            reloader: None,
        });
    }
    guard_score::init(cfg)?;
    let sections = judge.sections();
    let set = Arc::new(guard_score::ModelSet::read(cfg)?);
    let mut per_worker = Vec::new();
    let mut provider = None;
    for i in 0..workers_n {
        let (s, pr) = guard_score::Scoring::from_set(cfg, &sections, &set)?;
        if i == 0 {
            s.announce();
        }
        provider = pr;
        per_worker.push(Some(s));
    }
    let name = provider.map_or("none", |p| p.as_str());
    info!(provider = name, requested = ?cfg.scoring.execution_provider, "scoring on");
    metrics::gauge!("guard_score_provider_info", "provider" => name).set(1.0);
    let reloader = match per_worker.first() {
        Some(Some(first)) => Some(Arc::new(guard_score::Reloader::new(cfg, sections, set, first))),
        _ => None,
    };
    if let (Some(r), true) = (&reloader, cfg.scoring.watch_interval_ms > 0) {
        guard_score::watch(Arc::clone(r), Duration::from_millis(cfg.scoring.watch_interval_ms))?;
    }
    Ok(ScoringSetup {
        per_worker,
        provider,
        reloader,
    })
}

/// Start one judge thread per set of scoring sessions in `scorings` (`ctx` builds the rest of
/// its context). Returns the workers' inboxes and threads.
#[allow(clippy::type_complexity)]
fn spawn_workers(
    cfg: &Config,
    scorings: Vec<Option<guard_score::Scoring>>,
    ctx: impl Fn() -> WorkerCtx,
) -> anyhow::Result<(Vec<mpsc::Sender<Batch>>, Vec<std::thread::JoinHandle<()>>)> {
    metrics::gauge!("guard_pipeline_workers").set(scorings.len() as f64);
    let mut txs = Vec::new();
    let mut threads = Vec::new();
    for (i, scoring) in scorings.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Batch>(cfg.pipeline.channel_capacity);
        txs.push(tx);
        let mut c = ctx();
        c.stages.scoring = scoring;
        threads.push(
            std::thread::Builder::new()
                .name(format!("guard-judge-{i}"))
                .spawn(move || worker(rx, c))
                .context("spawning judge worker")?,
        );
    }
    Ok((txs, threads))
}

/// Probe the brokers and keep the metrics' upkeep, every `kafka.probe_interval_ms`.
fn spawn_probe(prober: guard_kafka::Prober, health: Arc<Health>, cfg: &Config, prom: PrometheusHandle) {
    let every = Duration::from_millis(cfg.kafka.probe_interval_ms);
    tokio::spawn(async move {
        loop {
            let pr = prober.clone();
            let ok = tokio::task::spawn_blocking(move || pr.probe(Duration::from_secs(2)))
                .await
                .unwrap_or(false);
            health.set_broker_reachable(ok);
            metrics::gauge!("guard_health_ready").set(if health.is_ready() { 1.0 } else { 0.0 });
            prom.run_upkeep();
            tokio::time::sleep(every).await;
        }
    });
}

type HttpTask = tokio::task::JoinHandle<Result<(), guard_server::ServerError>>;

/// The HTTP server: metrics and health, and (unless `server.metrics_only`) the operator and
/// review routes. Returns its task and the sender that stops it.
async fn start_http(
    cfg: &Config,
    shared: &Shared,
    prom: PrometheusHandle,
    provider: Option<guard_score::ProviderInUse>,
    hub: &Arc<guard_drift::DriftHub>,
    reloader: Option<&Arc<guard_score::Reloader>>,
) -> anyhow::Result<(HttpTask, tokio::sync::oneshot::Sender<()>)> {
    let addr: std::net::SocketAddr = cfg.server.listen.parse().context("server.listen")?;
    let render: guard_server::RenderMetrics = Arc::new(move || prom.render());
    let mut extras = serde_json::Map::new();
    extras.insert("version".into(), guard_core::GUARD_VERSION.into());
    extras.insert("mode".into(), format!("{:?}", cfg.pipeline.mode).to_lowercase().into());
    extras.insert(
        "scoring_provider".into(),
        provider.map_or("none", |p| p.as_str()).into(),
    );
    let facts = extras.clone();
    let mut app = guard_server::router(Arc::clone(&shared.health), render, Arc::new(extras));
    if !cfg.server.metrics_only {
        app = app.merge(operator_routes(cfg, hub, reloader, &shared.summary, facts).await?);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(guard_server::serve(addr, app, async move {
        let _ = stop_rx.await;
    }));
    Ok((http, stop_tx))
}

/// Wait for SIGINT or SIGTERM, or for the consumer or the server to stop on their own (then
/// the run failed).
async fn wait_for_stop(
    consumer_done: &mut std::pin::Pin<&mut tokio::task::JoinHandle<bool>>,
    http: HttpTask,
) -> anyhow::Result<bool> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); false }
        _ = sigterm.recv() => { info!("SIGTERM: shutting down"); false }
        r = consumer_done => { error!(joined = ?r, "consumer stopped unexpectedly"); true }
        r = http => { error!(result = ?r, "http server stopped"); true }
    })
}

/// Shutdown is bounded in every state (a broker refusing every record, a full disk): past
/// `limit`, the process exits without waiting. Nothing is lost: what was not durable was not
/// committed, and the next owner reads it again.
fn start_watchdog(limit: Duration) -> anyhow::Result<()> {
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
    Ok(())
}

/// The shutdown summary: logged, and printed as one JSON line.
fn report(summary: &Mutex<Summary>) -> anyhow::Result<()> {
    let summary = lock(summary).clone();
    info!(
        records_in = summary.records_in,
        passed = summary.passed,
        quarantined = summary.quarantined,
        files = summary.quarantine_files,
        "stopped"
    );
    println!("{}", serde_json::to_string(&serde_json::json!({ "summary": summary }))?);
    Ok(())
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
            blocks: Some(Arc::clone(hub) as Arc<dyn guard_core::SourceBlocks>),
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
