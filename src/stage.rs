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
use guard_core::{
    lock, now_ms, Batch, FeatureRows, Health, Judgement, Reason, ReasonCode, Record, TopicPartition, Verdict,
    GUARD_VERSION,
};
use guard_kafka::{CleanSink, FlushSignal};
use guard_pipeline::{AckTracker, ByteBudget, BytesHeld, Part};
use guard_quarantine::{
    encode, file_name_alt, stored_offsets, PartitionBuffer, QuarantineRow, QuarantineStore, ReasonEntry, RollPolicy,
};
use guard_validate::Judge;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

/// Quarantined rows of one batch (possibly none), with the batch's coordinates and the part
/// of the batch they acknowledge once durable.
pub struct QuarantineWork {
    pub tp: TopicPartition,
    pub generation: u64,
    pub seq: u64,
    pub first: i64,
    pub last: i64,
    pub rows: Vec<QuarantineRow>,
    /// [`Part::Quarantine`] for a batch's judged rows; [`Part::Clean`] for records the clean
    /// topic refused (their batch's clean part waits for them).
    pub part: Part,
    /// The rows' bytes, taken from the quarantine budget; returned once they are durable.
    pub held: BytesHeld,
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

/// What a worker needs.
pub struct WorkerCtx {
    pub judge: Arc<Judge>,
    pub clean: Option<CleanSink>,
    pub tracker: Arc<Mutex<AckTracker>>,
    pub summary: Arc<Mutex<Summary>>,
    pub out: mpsc::Sender<QuarantineWork>,
    /// Rows of records the clean topic refused for good (from the producer's thread).
    pub late: mpsc::UnboundedSender<QuarantineWork>,
    /// Bytes of quarantine rows waiting to be durable, across all workers.
    pub quarantine_budget: Arc<ByteBudget>,
    /// This worker's drift windows (only topics whose route has a baseline are watched) and
    /// source counts.
    pub drift: guard_drift::DriftWindows,
    /// This worker's scoring sessions (only routes with models).
    pub scoring: Option<crate::score::Scoring>,
    /// Hot-swap: a new generation means "load your sessions again before the next batch".
    pub reloader: Option<Arc<crate::score::Reloader>>,
}

/// What judging one batch decided, per record (indices into the batch).
struct Judged {
    judgements: Vec<Judgement>,
    /// Model decisions of quarantined, scored records (they carry scores into the row).
    decisions: HashMap<usize, crate::score::Decision>,
    /// Sources of records that may be quarantined, for their quarantine row.
    row_sources: HashMap<usize, String>,
}

/// Judge `records` (limits, decoding, schema, drift observation, models). Each record that
/// passes its checks is extracted once into a typed row ([`FeatureRows`]); drift and the
/// models read the rows. A panic in here is a bug in the guard; [`worker`] isolates it.
fn judge_records(ctx: &mut WorkerCtx, tp: &TopicPartition, records: &[Record], breaker_open: bool) -> Judged {
    let mut slowest = Duration::ZERO;
    let judge = &ctx.judge;
    let watched = ctx.drift.watches(&tp.topic);
    let header = ctx.drift.source_header();
    let drift = &mut ctx.drift;
    let models = ctx.scoring.as_mut().and_then(|s| s.route(&tp.topic));
    let schema = judge.schema_for(&tp.topic).map(Arc::clone);
    let mut rows = schema
        .as_ref()
        .map(|s| FeatureRows::new(s.layout(), watched || models.is_some()))
        .unwrap_or_default();
    // Sources of records that will be quarantined, for their quarantine row (schema mode;
    // with a source header it is read from the record itself). Passing records keep theirs
    // in their typed row.
    let mut row_sources: HashMap<usize, String> = HashMap::new();
    let mut judgements: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let t = Instant::now();
            #[cfg(feature = "test-hooks")]
            test_hooks::maybe_panic(r);
            let mut invalid = false;
            let from_header = header.as_deref().map(|h| header_source(r, h));
            let j = judge.judge_row(&tp.topic, r, i, &mut rows, from_header, |schema, value| {
                invalid = true;
                let source =
                    from_header.unwrap_or_else(|| guard_core::cap_source(schema.source(value).unwrap_or("(none)")));
                drift.count_source(source, false);
                if header.is_none() {
                    row_sources.insert(i, source.to_owned());
                }
            });
            if !j.verdict.is_pass() && !invalid {
                drift.count_source(from_header.unwrap_or("(undecoded)"), false);
            }
            slowest = slowest.max(t.elapsed());
            j
        })
        .collect();
    metrics::histogram!("guard_validate_record_max_duration_seconds").record(slowest.as_secs_f64());
    if watched {
        for r in 0..rows.len() {
            let row = rows.row(r);
            if let Some(rec) = records.get(row.index()) {
                drift.observe_row(&tp.topic, tp.partition, rec.offset, row);
            }
        }
    }
    // Scoring: one run per model over the batch's passing records.
    let mut decisions: HashMap<usize, crate::score::Decision> = HashMap::new();
    let keep_source = |flagged: bool| header.is_none() && (flagged || breaker_open);
    match models {
        Some(m) => {
            let gathered = m.gather(&rows);
            for (r, mut d) in m.decide(&gathered, &rows).into_iter().enumerate() {
                let row = rows.row(r);
                let i = row.index();
                let flagged = !d.reasons.is_empty();
                ctx.drift.count_source_outcome(row.source(), false, flagged);
                if keep_source(flagged) {
                    row_sources.insert(i, row.source().to_owned());
                }
                if flagged {
                    if let Some(j) = judgements.get_mut(i) {
                        j.verdict = Verdict::Quarantine(std::mem::take(&mut d.reasons));
                    }
                    // Only quarantined records carry scores into a row.
                    decisions.insert(i, d);
                }
            }
        }
        None => {
            for r in 0..rows.len() {
                let row = rows.row(r);
                ctx.drift.count_source(row.source(), true);
                if keep_source(false) {
                    row_sources.insert(row.index(), row.source().to_owned());
                }
            }
        }
    }
    Judged {
        judgements,
        decisions,
        row_sources,
    }
}

/// The text of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".into())
}

/// Judge a batch; if that panics, judge each record on its own, and quarantine the records
/// that panic alone with `internal.panic` (DESIGN.md 5: one record never stops the guard).
fn judge_isolated(ctx: &mut WorkerCtx, tp: &TopicPartition, records: &[Record], breaker_open: bool) -> Judged {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    match catch_unwind(AssertUnwindSafe(|| judge_records(ctx, tp, records, breaker_open))) {
        Ok(j) => return j,
        Err(p) => {
            tracing::error!(panic = %panic_text(&*p), records = records.len(), "judging a batch panicked; judging its records one by one");
        }
    }
    let mut out = Judged {
        judgements: Vec::with_capacity(records.len()),
        decisions: HashMap::new(),
        row_sources: HashMap::new(),
    };
    for (i, r) in records.iter().enumerate() {
        let one = std::slice::from_ref(r);
        match catch_unwind(AssertUnwindSafe(|| judge_records(ctx, tp, one, breaker_open))) {
            Ok(mut j) => {
                if let Some(d) = j.decisions.remove(&0) {
                    out.decisions.insert(i, d);
                }
                if let Some(s) = j.row_sources.remove(&0) {
                    out.row_sources.insert(i, s);
                }
                out.judgements.extend(j.judgements);
            }
            Err(p) => {
                let msg = panic_text(&*p);
                tracing::error!(topic = %tp.topic, partition = tp.partition, offset = r.offset, panic = %msg, "judging a record panicked; it is quarantined with internal.panic");
                metrics::counter!("guard_pipeline_panics_total").increment(1);
                out.judgements.push(Judgement {
                    verdict: Verdict::reject(Reason::new(ReasonCode::INTERNAL_PANIC, msg)),
                    schema_id: ctx.judge.schema_for(&tp.topic).map(|s| Arc::clone(s.id())),
                });
            }
        }
    }
    out
}

/// Judge batches, forward passing records, pass quarantine rows on. Runs on its own thread.
pub fn worker(mut rx: mpsc::Receiver<Batch>, mut ctx: WorkerCtx) {
    let mut models_seen = 0;
    while let Some(batch) = rx.blocking_recv() {
        reload_models(&mut ctx, &mut models_seen);
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
        let breaker_open = ctx.drift.hub().breaker().is_open();
        let mut judged = judge_isolated(&mut ctx, &tp, &records, breaker_open);
        apply_breaker(&ctx, &mut judged.judgements, breaker_open);
        // Windows close on age as batches arrive (of any topic this worker judges).
        ctx.drift.tick();
        ctx.drift.flush_sources();
        let passed = forward_clean(&ctx, &tp, generation, seq, &records, &judged.judgements);
        let header = ctx.drift.source_header();
        let (rows, by_reason) = quarantine_rows(&tp, records, judged, header.as_deref());
        count_batch(&ctx, &tp, passed, rows.len() as u64, by_reason);
        metrics::histogram!("guard_pipeline_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        // Back-pressure in bytes: wait while the rows not yet durable fill the budget.
        let held = if rows.is_empty() {
            BytesHeld::none()
        } else {
            ctx.quarantine_budget
                .take(rows.iter().map(QuarantineRow::approx_bytes).sum())
        };
        let work = QuarantineWork {
            tp,
            generation,
            seq,
            first,
            last,
            rows,
            part: Part::Quarantine,
            held,
        };
        if ctx.out.blocking_send(work).is_err() {
            break;
        }
    }
}

/// Hot-swap: when the reloader published new models since `seen`, load this worker's
/// sessions before the next batch (a failure keeps the old ones).
fn reload_models(ctx: &mut WorkerCtx, seen: &mut u64) {
    let Some(r) = &ctx.reloader else { return };
    let g = r.generation();
    if g == *seen {
        return;
    }
    *seen = g;
    match r.load() {
        Ok(s) => ctx.scoring = Some(s),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "worker could not load the new models; keeping the old ones")
        }
    }
}

/// Feed the breaker this batch's outcome; while it is open, what passed the checks is
/// quarantined too (nothing is dropped).
fn apply_breaker(ctx: &WorkerCtx, judgements: &mut [Judgement], breaker_open: bool) {
    let failed = judgements.iter().filter(|j| !j.verdict.is_pass()).count() as u64;
    ctx.drift.hub().breaker().observe(judgements.len() as u64, failed);
    if breaker_open {
        let why = format!("breaker open: {}", ctx.drift.hub().breaker().reason());
        for j in judgements.iter_mut().filter(|j| j.verdict.is_pass()) {
            j.verdict = Verdict::Quarantine(vec![Reason::new(ReasonCode::BREAKER_OPEN, why.clone())]);
        }
    }
}

/// Clean part: hand the passing records to the clean sink; the broker's final result for all
/// of them acknowledges the batch's clean part, and records the clean topic refuses for good
/// come back to be quarantined first (`sink.rejected`). Returns how many passed.
fn forward_clean(
    ctx: &WorkerCtx,
    tp: &TopicPartition,
    generation: u64,
    seq: u64,
    records: &[Record],
    judgements: &[Judgement],
) -> u64 {
    let clean: Vec<&Record> = records
        .iter()
        .zip(judgements)
        .filter(|(_, j)| j.verdict.is_pass())
        .map(|(r, _)| r)
        .collect();
    match &ctx.clean {
        Some(sink) => {
            let tracker = Arc::clone(&ctx.tracker);
            let late = ctx.late.clone();
            let summary = Arc::clone(&ctx.summary);
            let schema_id = ctx.judge.schema_for(&tp.topic).map(|s| Arc::clone(s.id()));
            let tp2 = tp.clone();
            sink.send_batch(
                tp,
                &clean,
                Box::new(move |rejected| {
                    if rejected.is_empty() {
                        lock(&tracker).ack(&tp2, generation, seq, Part::Clean);
                    } else {
                        hand_rejected(&late, &summary, tp2, generation, seq, schema_id, rejected);
                    }
                }),
            );
        }
        None => lock(&ctx.tracker).ack(tp, generation, seq, Part::Clean),
    }
    clean.len() as u64
}

/// Quarantine part: a row per held-back record (reasons, scores, explanation, source), and the
/// count per primary reason.
fn quarantine_rows(
    tp: &TopicPartition,
    records: Vec<Record>,
    judged: Judged,
    header: Option<&str>,
) -> (Vec<QuarantineRow>, HashMap<&'static str, u64>) {
    let Judged {
        judgements,
        mut decisions,
        mut row_sources,
    } = judged;
    let at = now_ms();
    let mut by_reason: HashMap<&'static str, u64> = HashMap::new();
    let mut rows = Vec::new();
    for (i, (record, j)) in records.into_iter().zip(judgements).enumerate() {
        let Verdict::Quarantine(reasons) = j.verdict else {
            continue;
        };
        let scored = decisions.remove(&i).unwrap_or_default();
        let source = match header {
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
            envelope_cut: record.envelope.cut,
        });
    }
    (rows, by_reason)
}

/// The batch's counts into the metrics and the shutdown summary.
fn count_batch(
    ctx: &WorkerCtx,
    tp: &TopicPartition,
    passed: u64,
    quarantined: u64,
    by_reason: HashMap<&'static str, u64>,
) {
    let topic_label = tp.topic.to_string();
    metrics::counter!("guard_pipeline_records_passed_total", "topic" => topic_label.clone()).increment(passed);
    {
        let mut s = lock(&ctx.summary);
        s.records_in += passed + quarantined;
        s.passed += passed;
        s.quarantined += quarantined;
        for (reason, count) in &by_reason {
            *s.by_reason.entry((*reason).to_owned()).or_default() += count;
        }
    }
    for (reason, count) in by_reason {
        metrics::counter!("guard_pipeline_records_quarantined_total", "topic" => topic_label.clone(), "reason" => reason)
            .increment(count);
    }
}

/// Records the clean topic refused for good become quarantine rows (`sink.rejected`); the
/// batch's clean part is acknowledged once they are durable. Runs on the producer's delivery
/// thread, so it never blocks: the late channel is unbounded, and what it holds is bounded by
/// the producer's own queue (`queue.buffering.max.kbytes`).
fn hand_rejected(
    late: &mpsc::UnboundedSender<QuarantineWork>,
    summary: &Mutex<Summary>,
    tp: TopicPartition,
    generation: u64,
    seq: u64,
    schema_id: Option<Arc<str>>,
    rejected: Vec<guard_kafka::Rejected>,
) {
    let at = now_ms();
    let n = rejected.len() as u64;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let rows: Vec<QuarantineRow> = rejected
        .into_iter()
        .map(|r| {
            first = first.min(r.offset);
            last = last.max(r.offset);
            QuarantineRow {
                topic: Arc::clone(&tp.topic),
                partition: tp.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                headers: r.headers,
                payload_len: r.payload.as_ref().map_or(0, Vec::len) as i64,
                payload: r.payload,
                reasons: vec![ReasonEntry::from(&Reason::new(
                    ReasonCode::SINK_REJECTED,
                    format!("the clean topic refused it: {}", r.error),
                ))],
                schema_id: schema_id.clone(),
                guard_version: GUARD_VERSION,
                quarantined_at_ms: at,
                anomaly_score: None,
                label_score: None,
                model_id: None,
                explanation: None,
                source: None,
                envelope_cut: false,
            }
        })
        .collect();
    {
        let mut s = lock(summary);
        s.passed = s.passed.saturating_sub(n);
        s.quarantined += n;
        *s.by_reason
            .entry(ReasonCode::SINK_REJECTED.as_str().to_owned())
            .or_default() += n;
    }
    metrics::counter!("guard_pipeline_records_quarantined_total", "topic" => tp.topic.to_string(), "reason" => ReasonCode::SINK_REJECTED.as_str())
        .increment(n);
    // A closed channel means the stage is gone (shutdown): the batch stays unacknowledged and
    // its records are read again by the next owner.
    let _ = late.send(QuarantineWork {
        tp,
        generation,
        seq,
        first,
        last,
        rows,
        part: Part::Clean,
        held: BytesHeld::none(),
    });
}

#[cfg(feature = "test-hooks")]
mod test_hooks {
    //! Test-only faults, compiled in only with the `test-hooks` feature (the test suite's
    //! build): a record whose key is [`PANIC_KEY`] makes judging panic, to prove that the
    //! panic is contained.

    /// Key that makes judging panic in a `test-hooks` build.
    pub const PANIC_KEY: &[u8] = b"__ingest_guard_test_panic__";

    pub fn maybe_panic(r: &guard_core::Record) {
        if r.key.as_deref() == Some(PANIC_KEY) {
            panic!("deliberate test panic at offset {}", r.offset);
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
            Some(v) => guard_core::cap_source(std::str::from_utf8(v).unwrap_or("(binary)")),
        },
    }
}

/// What a buffered batch waits for: its sequence number, the part it acknowledges, and the
/// budget bytes its rows hold until they are durable.
type Ticket = (u64, Part, BytesHeld);

pub struct QuarantineStage {
    tracker: Arc<Mutex<AckTracker>>,
    health: Arc<Health>,
    flush: Arc<FlushSignal>,
    store: Arc<dyn QuarantineStore>,
    buffers: HashMap<TopicPartition, (u64, PartitionBuffer<Ticket>)>,
    budget: Arc<ByteBudget>,
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
        budget: Arc<ByteBudget>,
    ) -> Self {
        let q = &cfg.quarantine;
        Self {
            budget,
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

    /// Take judged rows from `rx` and refused clean records from `late` until both close.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<QuarantineWork>,
        mut late: mpsc::UnboundedReceiver<QuarantineWork>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut late_open = true;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(w) => self.handle(w).await,
                    None => break,
                },
                msg = late.recv(), if late_open => match msg {
                    Some(w) => self.handle(w).await,
                    None => late_open = false,
                },
                _ = tick.tick() => {
                    let all = self.flush.requested();
                    self.roll(all).await;
                }
            }
        }
        while let Ok(w) = late.try_recv() {
            self.handle(w).await;
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
            part,
            held,
        } = w;
        if lock(&self.tracker).generation(&tp) != Some(generation) {
            metrics::counter!("guard_pipeline_stale_batches_total").increment(1);
            return;
        }
        let policy = self.policy;
        let Some(buf) = self.buffer_for(&tp, generation, first).await else {
            return;
        };
        let waits = buf.add((seq, part, held), first, last, rows, Instant::now());
        let roll = buf.should_roll(&policy, Instant::now());
        if !waits {
            lock(&self.tracker).ack(&tp, generation, seq, part);
        }
        if roll {
            let span = info_span!("quarantine", topic = %tp.topic, partition = tp.partition, first, last);
            self.write(&tp).instrument(span).await;
        }
        // Rows waiting to be durable hold half the budget: write every open file now rather
        // than let the workers wait for the roll thresholds.
        if self.budget.used() >= self.budget.cap() / 2 {
            self.roll(true).await;
        }
    }

    /// The open buffer of `tp` in `generation`, created by reading which exact offsets the
    /// partition's existing files hold from `from` (this owner's first offset) on. Retries
    /// while the store is failing.
    async fn buffer_for(
        &mut self,
        tp: &TopicPartition,
        generation: u64,
        from: i64,
    ) -> Option<&mut PartitionBuffer<Ticket>> {
        let fresh = self.buffers.get(tp).is_none_or(|(g, _)| *g != generation);
        if fresh {
            let stored = loop {
                let store = Arc::clone(&self.store);
                let result =
                    tokio::task::block_in_place(|| stored_offsets(store.as_ref(), &tp.topic, tp.partition, from));
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
            for (file, why) in &stored.skipped {
                warn!(topic = %tp.topic, partition = tp.partition, file, why, "not a readable quarantine file; skipped (its rows may be written again, never lost)");
                metrics::counter!("guard_quarantine_unreadable_files_total").increment(1);
            }
            if !stored.offsets.is_empty() {
                info!(topic = %tp.topic, partition = tp.partition, from, files = stored.files, offsets = stored.offsets.len(), "existing quarantine files hold some of these offsets; replayed records at exactly those offsets are not written again");
            }
            self.buffers
                .insert(tp.clone(), (generation, PartitionBuffer::new(stored.offsets)));
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

    /// Write `tp`'s open file, retrying until it is durable or the partition is gone. A name
    /// that is taken (a replay writing rows beside an earlier file of the same range) gets the
    /// next alternative name; a file is never replaced.
    async fn write(&mut self, tp: &TopicPartition) {
        let mut alt = 0u32;
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
            let name = file_name_alt(&tp.topic, tp.partition, first, last, alt);
            let n = rows.len();
            let store = Arc::clone(&self.store);
            let level = self.zstd_level;
            let started = Instant::now();
            let result = tokio::task::block_in_place(|| {
                let bytes = encode(rows, level)?;
                match store.put(&name, &bytes) {
                    // Our own earlier attempt that failed after publishing the file.
                    Err(guard_quarantine::QuarantineError::Exists(_)) if store.get(&name).is_ok_and(|b| b == bytes) => {
                    }
                    other => other?,
                }
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
                    let tickets = self.buffers.get_mut(tp).map(|(_, b)| b.committed()).unwrap_or_default();
                    let mut t = lock(&self.tracker);
                    for (seq, part, held) in tickets {
                        t.ack(tp, generation, seq, part);
                        drop(held);
                    }
                    tracing::debug!(file = %name, rows = n, "quarantine file durable");
                    return;
                }
                Err(guard_quarantine::QuarantineError::Exists(_)) => {
                    alt += 1;
                    info!(file = %name, "a quarantine file of this range exists; writing beside it");
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
