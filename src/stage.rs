//! The two stages after the source.
//!
//! * [`worker`] (one thread per shard of partitions): judges a batch, hands the passing records
//!   to the clean sink (the broker's acknowledgement of the whole batch acknowledges its
//!   [`Part::Clean`]), turns the rest into quarantine rows and passes them on.
//! * [`QuarantineStage`] (one async task): buffers rows per partition, writes quarantine files
//!   durably, and acknowledges [`Part::Quarantine`] of each batch only once its rows are in a
//!   fsynced file. A failing store is retried with back-off; meanwhile nothing is acknowledged,
//!   the bounded channels fill and the source pauses.

use guard_config::Config;
use guard_core::{Batch, Health, Reason, ReasonCode, Record, TopicPartition, Verdict, GUARD_VERSION};
use guard_kafka::{CleanSink, FlushSignal};
use guard_pipeline::{AckTracker, Part};
use guard_quarantine::{
    covered_until, encode, file_name, PartitionBuffer, QuarantineRow, QuarantineStore, ReasonEntry, RollPolicy,
};
use guard_validate::Judge;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

/// Quarantined rows of one batch (possibly none), with the batch's coordinates.
pub struct QuarantineWork {
    pub tp: TopicPartition,
    pub generation: u64,
    pub seq: u64,
    pub first: i64,
    pub last: i64,
    pub rows: Vec<QuarantineRow>,
}

/// Totals for the shutdown summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub records_in: u64,
    pub passed: u64,
    pub quarantined: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub quarantine_files: u64,
    pub quarantine_dir: String,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a worker needs.
pub struct WorkerCtx {
    pub judge: Arc<Judge>,
    pub clean: Option<CleanSink>,
    pub tracker: Arc<Mutex<AckTracker>>,
    pub summary: Arc<Mutex<Summary>>,
    pub out: mpsc::Sender<QuarantineWork>,
    /// This worker's drift windows (only topics whose route has a baseline are watched) and
    /// source counts.
    pub drift: crate::drift::DriftWindows,
    /// This worker's scoring sessions (only routes with models).
    pub scoring: Option<crate::score::Scoring>,
    /// Hot-swap: a new generation means "load your sessions again before the next batch".
    pub reloader: Option<Arc<crate::score::Reloader>>,
}

/// Judge batches, forward passing records, pass quarantine rows on. Runs on its own thread.
pub fn worker(mut rx: mpsc::Receiver<Batch>, mut ctx: WorkerCtx) {
    let mut generation = 0;
    while let Some(batch) = rx.blocking_recv() {
        if let Some(r) = &ctx.reloader {
            let g = r.generation();
            if g != generation {
                generation = g;
                match r.load() {
                    Ok(s) => ctx.scoring = Some(s),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "worker could not load the new models; keeping the old ones")
                    }
                }
            }
        }
        let Batch {
            tp,
            seq,
            generation,
            records,
        } = batch;
        let (first, last) = (
            records.first().map_or(-1, |r| r.offset),
            records.last().map_or(-1, |r| r.offset),
        );
        let span = info_span!("judge", topic = %tp.topic, partition = tp.partition, first, last);
        let _entered = span.enter();
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        let judge = &ctx.judge;
        let breaker_open = ctx.drift.hub().breaker().is_open();
        let watched = ctx.drift.watches(&tp.topic);
        let header = ctx.drift.source_header();
        let drift = &mut ctx.drift;
        let mut models = ctx.scoring.as_mut().and_then(|s| s.route(&tp.topic));
        let mut gathered = crate::score::Gathered::default();
        // Sources of scored records are counted after scoring (the models may quarantine them).
        let mut scored_sources: Vec<String> = Vec::new();
        // Sources of records that will be quarantined, for their quarantine row (schema mode;
        // with a source header it is read from the record itself). Scored records' sources
        // are taken from `scored_sources` once the models have decided, so a passing record
        // costs no second copy.
        let mut row_sources: HashMap<usize, String> = HashMap::new();
        let mut judgements: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = Instant::now();
                let mut decoded = false;
                let mut deferred = false;
                let j = judge.judge_visit(&tp.topic, r, |schema, value, passed| {
                    decoded = true;
                    if passed && watched {
                        drift.observe(&tp.topic, tp.partition, r.offset, schema, value);
                    }
                    if let (true, Some(m)) = (passed, models.as_deref_mut()) {
                        m.gather(&mut gathered, i, schema, value);
                        deferred = true;
                    }
                    if header.is_none() {
                        let source = schema.source(value).unwrap_or("(none)");
                        if !passed || (breaker_open && !deferred) {
                            row_sources.insert(i, source.to_owned());
                        }
                        if deferred {
                            scored_sources.push(source.to_owned());
                        } else {
                            drift.count_source(source, passed);
                        }
                    }
                });
                match &header {
                    Some(h) if deferred => scored_sources.push(header_source(r, h).to_owned()),
                    Some(h) => drift.count_source(header_source(r, h), j.verdict.is_pass()),
                    None if !decoded => drift.count_source("(undecoded)", false),
                    None => {}
                }
                slowest = slowest.max(t.elapsed());
                j
            })
            .collect();
        metrics::histogram!("guard_validate_record_max_duration_seconds").record(slowest.as_secs_f64());
        // Scoring: one run per model over the batch's passing records.
        let mut decisions: HashMap<usize, crate::score::Decision> = HashMap::new();
        if let Some(m) = models {
            for ((i, d), source) in gathered.idx.iter().zip(m.decide(&gathered)).zip(scored_sources) {
                let flagged = !d.reasons.is_empty();
                ctx.drift.count_source_outcome(&source, false, flagged);
                if header.is_none() && (flagged || breaker_open) {
                    row_sources.insert(*i, source);
                }
                if flagged {
                    if let Some(j) = judgements.get_mut(*i) {
                        j.verdict = Verdict::Quarantine(d.reasons.clone());
                    }
                    // Only quarantined records carry scores into a row.
                    decisions.insert(*i, d);
                }
            }
        }
        let failed = judgements.iter().filter(|j| !j.verdict.is_pass()).count() as u64;
        ctx.drift.hub().breaker().observe(judgements.len() as u64, failed);
        if breaker_open {
            // Open breaker: what passed the checks is quarantined too (nothing is dropped).
            let why = format!("breaker open: {}", ctx.drift.hub().breaker().reason());
            for j in judgements.iter_mut().filter(|j| j.verdict.is_pass()) {
                j.verdict = Verdict::Quarantine(vec![Reason::new(ReasonCode::BREAKER_OPEN, why.clone())]);
            }
        }
        // Windows close on age as batches arrive (of any topic this worker judges).
        ctx.drift.tick();
        ctx.drift.flush_sources();

        // Clean part: the broker's acknowledgement of the whole batch acknowledges it.
        let clean: Vec<&Record> = records
            .iter()
            .zip(&judgements)
            .filter(|(_, j)| j.verdict.is_pass())
            .map(|(r, _)| r)
            .collect();
        let passed = clean.len() as u64;
        match &ctx.clean {
            Some(sink) => {
                let tracker = Arc::clone(&ctx.tracker);
                let tp2 = tp.clone();
                sink.send_batch(
                    &tp,
                    &clean,
                    Box::new(move || lock(&tracker).ack(&tp2, generation, seq, Part::Clean)),
                );
            }
            None => lock(&ctx.tracker).ack(&tp, generation, seq, Part::Clean),
        }
        drop(clean);

        // Quarantine part.
        let at = now_ms();
        let mut by_reason: HashMap<&'static str, u64> = HashMap::new();
        let mut rows = Vec::new();
        for (i, (record, j)) in records.into_iter().zip(judgements).enumerate() {
            let Verdict::Quarantine(reasons) = j.verdict else {
                continue;
            };
            let scored = decisions.remove(&i).unwrap_or_default();
            let source = match &header {
                Some(h) => Some(header_source(&record, h).to_owned()),
                None => Some(row_sources.remove(&i).unwrap_or_else(|| "(undecoded)".to_owned())),
            };
            let primary = reasons.first().map_or("unknown", |r| r.code.as_str());
            *by_reason.entry(primary).or_default() += 1;
            rows.push(QuarantineRow {
                topic: Arc::clone(&tp.topic),
                partition: tp.partition,
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key,
                headers: record.headers,
                payload: record.payload,
                payload_len: record.payload_len as i64,
                reasons: reasons.iter().map(ReasonEntry::from).collect(),
                schema_id: j.schema_id,
                guard_version: GUARD_VERSION,
                quarantined_at_ms: at,
                anomaly_score: scored.anomaly_score,
                label_score: scored.label_score,
                model_id: scored.model_id,
                explanation: scored.explanation,
                source,
            });
        }
        let topic_label = tp.topic.to_string();
        metrics::counter!("guard_pipeline_records_passed_total", "topic" => topic_label.clone()).increment(passed);
        {
            let mut s = lock(&ctx.summary);
            s.records_in += passed + rows.len() as u64;
            s.passed += passed;
            s.quarantined += rows.len() as u64;
            for (reason, count) in &by_reason {
                *s.by_reason.entry((*reason).to_owned()).or_default() += count;
            }
        }
        for (reason, count) in by_reason {
            metrics::counter!("guard_pipeline_records_quarantined_total", "topic" => topic_label.clone(), "reason" => reason)
                .increment(count);
        }
        metrics::histogram!("guard_pipeline_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        if ctx
            .out
            .blocking_send(QuarantineWork {
                tp,
                generation,
                seq,
                first,
                last,
                rows,
            })
            .is_err()
        {
            break;
        }
    }
}

/// The source named by header `name`: its UTF-8 value, `(none)` when absent or null,
/// `(binary)` when not UTF-8.
fn header_source<'r>(r: &'r Record, name: &str) -> &'r str {
    match r.headers.iter().find(|h| h.key == name) {
        None => "(none)",
        Some(h) => match h.value.as_deref() {
            None => "(none)",
            Some(v) => std::str::from_utf8(v).unwrap_or("(binary)"),
        },
    }
}

pub struct QuarantineStage {
    tracker: Arc<Mutex<AckTracker>>,
    health: Arc<Health>,
    flush: Arc<FlushSignal>,
    store: Arc<dyn QuarantineStore>,
    buffers: HashMap<TopicPartition, (u64, PartitionBuffer)>,
    policy: RollPolicy,
    zstd_level: i32,
    backoff: Duration,
    summary: Arc<Mutex<Summary>>,
}

impl QuarantineStage {
    pub fn new(
        cfg: &Config,
        tracker: Arc<Mutex<AckTracker>>,
        health: Arc<Health>,
        flush: Arc<FlushSignal>,
        store: Arc<dyn QuarantineStore>,
        summary: Arc<Mutex<Summary>>,
    ) -> Self {
        let q = &cfg.quarantine;
        Self {
            tracker,
            health,
            flush,
            store,
            buffers: HashMap::new(),
            policy: RollPolicy {
                max_rows: q.roll_max_rows,
                max_bytes: q.roll_max_bytes,
                max_age: Duration::from_millis(q.roll_max_age_ms),
            },
            zstd_level: q.zstd_level,
            backoff: Duration::from_millis(q.retry_backoff_ms.max(10)),
            summary,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<QuarantineWork>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(w) => self.handle(w).await,
                    None => break,
                },
                _ = tick.tick() => {
                    let all = self.flush.requested();
                    self.roll(all).await;
                }
            }
        }
        self.roll(true).await;
    }

    async fn handle(&mut self, w: QuarantineWork) {
        let QuarantineWork {
            tp,
            generation,
            seq,
            first,
            last,
            rows,
        } = w;
        if lock(&self.tracker).generation(&tp) != Some(generation) {
            metrics::counter!("guard_pipeline_stale_batches_total").increment(1);
            return;
        }
        let policy = self.policy;
        let Some(buf) = self.buffer_for(&tp, generation).await else {
            return;
        };
        let waits = buf.add(seq, first, last, rows, Instant::now());
        let roll = buf.should_roll(&policy, Instant::now());
        if !waits {
            lock(&self.tracker).ack(&tp, generation, seq, Part::Quarantine);
        }
        if roll {
            let span = info_span!("quarantine", topic = %tp.topic, partition = tp.partition, first, last);
            self.write(&tp).instrument(span).await;
        }
    }

    /// The open buffer of `tp` in `generation`, created by scanning which offsets existing
    /// files already cover. Retries while the store is failing.
    async fn buffer_for(&mut self, tp: &TopicPartition, generation: u64) -> Option<&mut PartitionBuffer> {
        let fresh = self.buffers.get(tp).is_none_or(|(g, _)| *g != generation);
        if fresh {
            let covered = loop {
                let store = Arc::clone(&self.store);
                let result = tokio::task::block_in_place(|| covered_until(store.as_ref(), &tp.topic, tp.partition));
                match result {
                    Ok(c) => {
                        self.health.set_quarantine_failing(false);
                        break c;
                    }
                    Err(e) => {
                        self.store_failed(&e.to_string());
                        tokio::time::sleep(self.backoff).await;
                        if lock(&self.tracker).generation(tp) != Some(generation) {
                            return None;
                        }
                    }
                }
            };
            if covered >= 0 {
                info!(topic = %tp.topic, partition = tp.partition, covered_until = covered, "existing quarantine files cover offsets up to here; replayed records are not written again");
            }
            self.buffers
                .insert(tp.clone(), (generation, PartitionBuffer::new(covered)));
        }
        self.buffers.get_mut(tp).map(|(_, b)| b)
    }

    fn store_failed(&self, error: &str) {
        warn!(error, "quarantine store failing; not committing, retrying");
        metrics::counter!("guard_quarantine_write_failures_total").increment(1);
        self.health.set_quarantine_failing(true);
        self.health.note_error(format!("quarantine: {error}"));
    }

    /// Write every buffer that is due (or, with `all`, every non-empty one).
    async fn roll(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .buffers
            .iter()
            .filter(|(_, (_, b))| !b.is_empty() && (all || b.should_roll(&self.policy, now)))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.write(&tp).await;
        }
    }

    /// Write `tp`'s open file, retrying until it is durable or the partition is gone.
    async fn write(&mut self, tp: &TopicPartition) {
        loop {
            let Some((generation, buf)) = self.buffers.get(tp) else {
                return;
            };
            let generation = *generation;
            if lock(&self.tracker).generation(tp) != Some(generation) {
                // Revoked while failing: these rows were never committed; the next owner re-reads them.
                self.buffers.remove(tp);
                return;
            }
            let Some((first, last, rows)) = buf.pending() else {
                return;
            };
            let name = file_name(&tp.topic, tp.partition, first, last);
            let n = rows.len();
            let store = Arc::clone(&self.store);
            let level = self.zstd_level;
            let started = Instant::now();
            let result = tokio::task::block_in_place(|| {
                let bytes = encode(rows, level)?;
                store.put(&name, &bytes)?;
                Ok::<usize, guard_quarantine::QuarantineError>(bytes.len())
            });
            match result {
                Ok(bytes) => {
                    metrics::counter!("guard_quarantine_files_written_total").increment(1);
                    metrics::counter!("guard_quarantine_rows_written_total").increment(n as u64);
                    metrics::counter!("guard_quarantine_bytes_written_total").increment(bytes as u64);
                    metrics::histogram!("guard_quarantine_write_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    self.health.set_quarantine_failing(false);
                    lock(&self.summary).quarantine_files += 1;
                    let seqs = self.buffers.get_mut(tp).map(|(_, b)| b.committed()).unwrap_or_default();
                    let mut t = lock(&self.tracker);
                    for seq in seqs {
                        t.ack(tp, generation, seq, Part::Quarantine);
                    }
                    tracing::debug!(file = %name, rows = n, "quarantine file durable");
                    return;
                }
                Err(e) => {
                    if e.domain() == guard_core::ErrorDomain::Internal {
                        // Encoding failed: a bug, not the disk. Retrying keeps the no-loss
                        // promise (nothing is committed) while an operator looks.
                        tracing::error!(error = %e, file = %name, "cannot encode quarantine file");
                    }
                    self.store_failed(&e.to_string());
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }
}
